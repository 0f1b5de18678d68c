"""What a person sees of a run: what it is doing, one progress bar and a few lines; Ray's own
output in a log file.

``RunProgress`` is the progress view: a spinner naming the phase, then the bar. ``RunConsole``
points the process's standard output and error (file descriptors 1 and 2, so native code and
the Ray processes started in-process land there too) at a log file for the run's duration, and
gives the run a ``terminal`` stream (a copy of the original standard error) for the progress
view and the plan (``extract.plan`` log records, wrapped to the terminal's width). Ray's
warnings, its C++ core-worker lines, Ray Data's progress notes and any worker output end in
the log, whose path the caller prints at the end. With ``verbose`` nothing is redirected.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from extract.io.storage import is_remote, local_path
from extract.stages.registry import DECODE

RUNS_LOG_DIR = "_runs"  # a local output keeps the run's log beside its run manifest
PLAN_LOGGER = "extract.plan"


def run_log_path(dst: str, run_id: str) -> Path:
    """``DST/_runs/<run_id>.log`` for a local output; a temp folder's copy for an object store."""
    folder = (Path(tempfile.gettempdir()) / "extract-runs" if is_remote(dst)
              else Path(local_path(dst)) / RUNS_LOG_DIR)
    return folder / f"{run_id}.log"


def nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (absolute)."""
    folder = folder.absolute()
    while not folder.exists():
        folder = folder.parent
    return folder


def remove_empty_dirs(folder: Path, keep: Path) -> None:
    """Remove ``folder`` and its parents below ``keep`` while they are empty (the folders a run
    that never started created for its log)."""
    folder = folder.absolute()
    while keep in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there
            return
        folder = folder.parent


class RunConsole:
    """Context manager: ``terminal`` for what a person reads, everything else to ``log_path``."""

    def __init__(self, log_path: Path, verbose: bool = False):
        self.log_path = Path(log_path)
        self.verbose = verbose
        self.terminal: TextIO = sys.stderr
        self._saved: tuple[int, int] | None = None
        self._plan_handler: logging.Handler | None = None

    def __enter__(self) -> "RunConsole":
        """Makes the log's folder and opens the log (not when verbose) first: an ``OSError``
        there (an output that cannot be written) leaves the process's streams and loggers as
        they were."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = None if self.verbose else os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._plan_handler = logging.StreamHandler(self)  # writes through self.write (the terminal)
        self._plan_handler.setFormatter(logging.Formatter("%(message)s"))
        plan = logging.getLogger(PLAN_LOGGER)
        plan.addHandler(self._plan_handler)
        plan.setLevel(logging.INFO)
        plan.propagate = self.verbose  # also in the log lines when verbose
        if log_fd is None:
            return self
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.terminal = os.fdopen(os.dup(self._saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        return self

    def write(self, text: str) -> int:
        """Lines for a person (the plan), kept clear of the progress bar and, on a terminal,
        wrapped to its width."""
        from tqdm import tqdm

        if text.strip():
            tqdm.write(wrap_to(text.rstrip("\n"), terminal_width(self.terminal)), file=self.terminal)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger(PLAN_LOGGER).removeHandler(self._plan_handler)
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self.terminal.close()
        self._saved = None
        self.terminal = sys.stderr


def terminal_width(stream: TextIO) -> int | None:
    """Columns of the terminal ``stream`` writes to; None when it is not a terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else None
    except (AttributeError, OSError, ValueError):  # no file descriptor, or a closed one
        return None


def wrap_to(text: str, width: int | None) -> str:
    """``text`` with each line longer than ``width`` wrapped at spaces, the continuation indented
    4 past the line's own indent (a plan line's reason under its value); unchanged for None."""
    if not width:
        return text
    out = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)
    return "\n".join(out)


SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # one per redraw; "|/-\\" on a terminal that is not UTF-8
REDRAW_S = 0.2  # a terminal's line is drawn again this often: the spinner turns, the clock runs
LOG_COUNT_S = 30.0  # off a terminal, a count line at the first finished videos, then at most this often


class RunProgress:
    """What a person sees of a run while it works, on ``stream`` (a context manager).

    On a terminal: one line, first a spinner with what is happening (``phase``: reading the
    manifest, planning, starting Ray, loading the models while the first videos decode, with
    the decoded count and the errors found so far), then, from the first finished video, one
    bar (videos, errors, rate, ETA), redrawn every ``REDRAW_S`` so its clock never stands
    still. Errors count as soon as any stage reports them (``stage_done``: a decode failure
    shows at once, not when its row reaches the driver), each video once. Elsewhere (a pipe,
    a scheduler's log): once there are videos to process (``start``), one line per phase, a
    count when the first videos finish and then at most every ``LOG_COUNT_S`` while videos
    finish (a long scheduled run's log shows it moving), and one at the end. ``enabled=False``:
    nothing.
    Thread-safe: the Ray backend reports ``stage_done`` from its own thread.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.total = 0
        self.done = 0
        self.decoded = 0
        self.failed: set[str] = set()
        self.text = ""
        self._lock = threading.Lock()
        self._bar: Any = None  # tqdm, on a terminal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._counted_at: float | None = None  # off a terminal: when the last count line was written
        utf8 = (getattr(self.stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        self._frames = SPINNER_FRAMES if utf8 else "|/-\\"
        self._frame = 0

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(final=exc_type is None)

    def phase(self, text: str) -> None:
        """What the run is doing now, until the first video finishes (``reading the manifest``)."""
        if not self.enabled:
            return
        with self._lock:
            if text == self.text:
                return
            self.text = text
            if self.tty:
                self._draw()
            elif self.total:  # a log gets the phases of a run with work, not those of one that stops early
                self.stream.write(f"extract: {text}\n")
                self.stream.flush()

    def start(self, total: int) -> None:
        """``total`` videos go through the stages."""
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.total = total

    def stage_done(self, stage: str, n_rows: int, failed_ids: Iterable[str]) -> None:
        """A stage finished a batch of ``n_rows`` rows; ``failed_ids``: its rows that carry an error."""
        with self._lock:
            if not self.enabled:
                return
            if stage == DECODE.name:
                self.decoded += n_rows
            self.failed.update(failed_ids)
            if self.tty:
                self._draw()

    def finished(self, video_ids: Sequence[str], failed_ids: Iterable[str]) -> None:
        """The driver wrote these videos' rows; ``failed_ids``: those that became errors rows."""
        with self._lock:
            if not self.enabled:
                return
            self.done += len(video_ids)
            self.failed.update(failed_ids)
            if self.tty:
                self._draw()
            elif self.done < self.total and (self._counted_at is None
                                             or time.monotonic() - self._counted_at >= LOG_COUNT_S):
                self._counted_at = time.monotonic()
                self.stream.write(f"extract: {self._counts()}\n")
                self.stream.flush()

    def close(self, final: bool = True) -> None:
        """The last line: the final bar (or nothing, when no video ran) on a terminal; one
        summary line elsewhere, unless not ``final`` (the run failed: its own line says so)."""
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._bar is not None:
                if self.done:
                    self._draw()
                else:  # nothing finished (no work, or the run failed): no bar left behind
                    self._bar.leave = False
                self._bar.close()
                self._bar = None
            elif not self.tty and self.total and final:
                self.stream.write(f"extract: {self._counts()} in {time.monotonic() - self._t0:.0f} s\n")
                self.stream.flush()
            self.tty = self.enabled = False

    def _counts(self) -> str:
        errors = len(self.failed)
        return f"{self.done}/{self.total} videos, {errors} error{'' if errors == 1 else 's'}"

    def _draw(self) -> None:
        """Redraw the terminal line (the caller holds the lock)."""
        from tqdm import tqdm

        spinning = not self.done  # until the first video finishes: what is happening, and what was reported
        if spinning:
            errors = len(self.failed)
            seen = ([f"{self.decoded}/{self.total} decoded"] if self.decoded else []) + (
                [f"{errors} error{'' if errors == 1 else 's'}"] if errors else [])
            # the clock and the counts first: a narrow terminal cuts the line's end
            desc = (f"extract: {self._frames[self._frame % len(self._frames)]} "
                    f"[{tqdm.format_interval(time.monotonic() - self._t0)}] "
                    + (f"({', '.join(seen)}) " if seen else "") + self.text)
        if self._bar is None:
            self._bar = tqdm(total=self.total or None, file=self.stream, dynamic_ncols=True, leave=True,
                             unit="video", mininterval=0, desc=desc, bar_format="{desc}")
            self._bar.start_t = self._bar.last_print_t = time.time() - (time.monotonic() - self._t0)
            self._thread = threading.Thread(target=self._redraw_every, name="extract-progress", daemon=True)
            self._thread.start()
        bar = self._bar
        if spinning:
            bar.set_description_str(desc, refresh=False)
            bar.refresh()
            return
        if bar.n == 0:  # the first finished video: from now on the bar
            bar.bar_format = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} videos{postfix} "
                              "[{elapsed}<{remaining}, {rate_fmt}]")
            bar.set_description_str("extract", refresh=False)
        errors = len(self.failed)
        bar.set_postfix_str(f"{errors} error{'' if errors == 1 else 's'}", refresh=False)
        if self.done > bar.n:
            bar.update(self.done - bar.n)
        else:
            bar.refresh()

    def _redraw_every(self) -> None:
        while not self._stop.wait(REDRAW_S):
            with self._lock:
                if self._bar is None:
                    return
                self._frame += 1
                self._draw()
