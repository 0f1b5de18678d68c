"""What a person sees of a run: one progress bar and a few lines; Ray's own output in a log file.

``RunConsole`` points the process's standard output and error (file descriptors 1 and 2, so
native code and the Ray processes started in-process land there too) at a log file for the
run's duration, and gives the run a ``terminal`` stream (a copy of the original standard
error) for the progress bar and the resolved plan (``extract.plan`` log records). Ray's
warnings, its C++ core-worker lines, Ray Data's progress notes and any worker output end in
the log, whose path the caller prints at the end. With ``verbose`` nothing is redirected.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

from extract.io.storage import is_remote, local_path

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
        self._plan_handler = logging.StreamHandler(self)  # writes through self.write (the terminal)
        self._plan_handler.setFormatter(logging.Formatter("%(message)s"))
        plan = logging.getLogger(PLAN_LOGGER)
        plan.addHandler(self._plan_handler)
        plan.setLevel(logging.INFO)
        plan.propagate = self.verbose  # also in the log lines when verbose
        if self.verbose:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.terminal = os.fdopen(os.dup(self._saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        return self

    def write(self, text: str) -> int:
        """Lines for a person (the plan), kept clear of the progress bar."""
        from tqdm import tqdm

        if text.strip():
            tqdm.write(text.rstrip("\n"), file=self.terminal)
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


def progress_bar(total: int, enabled: bool, stream: TextIO | None = None) -> Callable[..., None]:
    """One tqdm bar (videos done of ``total``, errors so far, throughput, ETA) on ``stream``, or
    a no-op; call ``bar(n_done, n_errors)`` as videos finish and ``bar(0, close=True)`` at the end."""
    if not enabled or total <= 0:
        return lambda n=0, errors=0, close=False: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="video", desc="extract", dynamic_ncols=True, file=stream or sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} videos{postfix} "
                          "[{elapsed}<{remaining}, {rate_fmt}]", postfix="0 errors")
    state = {"errors": 0}

    def update(n: int = 0, errors: int = 0, close: bool = False) -> None:
        if errors:
            state["errors"] += errors
            bar.set_postfix_str(f"{state['errors']} error{'s' if state['errors'] != 1 else ''}", refresh=False)
        if n and bar.n + n >= bar.total:  # the last videos: drawn once, by close
            bar.n = bar.total
            close = True
        elif n:
            bar.update(n)
        if close and not bar.disable:
            bar.close()

    return update
