"""What a person sees of `extract run`: a spinner saying what is happening, then one progress bar
that moves as batches finish and counts errors as they happen, the plan as a short block, the
summary with the error rate; Ray's own output (token warning, core-worker lines, Ray Data
notes) only in the run's log file. Off a terminal: a line per phase and one at the end."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from extract.pipeline.console import REDRAW_S, RunProgress, wrap_to
from extract.pipeline.outcome import error_rate_health, run_outcome

RAY_NOISE = re.compile(r"core_worker|raylet|WARNING|INFO|Token authentication|Progress bars disabled|"
                       r"streaming_executor|\(MapWorker|ray\.data", re.IGNORECASE)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CLOCK = re.compile(r"\s*\[[^\]]*\]\s*$")  # tqdm's [elapsed<remaining, rate]


def open_terminal(cols: int, rows: int = 40) -> tuple[int, int]:
    """A pseudo-terminal ``(master, slave)`` of ``cols`` x ``rows``."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


class TerminalReader:
    """Reads what a program draws on the master side of a pseudo-terminal, with the time of each read."""

    def __init__(self, master: int):
        self.master = master
        self.chunks: list[tuple[float, bytes]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            self.chunks.append((time.monotonic(), data))

    def text(self) -> str:
        return b"".join(data for _, data in self.chunks).decode("utf-8", "replace")

    def segments(self) -> list[str]:
        """What was drawn, one entry per line or carriage-return redraw, escape codes removed."""
        return [s.rstrip() for s in re.split(r"[\r\n]", ANSI.sub("", self.text())) if s.strip()]


def progress_states(segments: list[str]) -> list[str]:
    """The progress line's successive contents without its clock and spinner, repeats dropped."""
    states: list[str] = []
    for seg in segments:
        if not seg.startswith("extract"):
            continue
        state = re.sub(r"^extract: \S \[[^\]]*\] ", "extract: ", CLOCK.sub("", seg))
        if not states or states[-1] != state:
            states.append(state)
    return states


def test_progress_on_a_terminal_spins_then_moves_and_counts_errors_as_they_happen():
    """Without Ray: the phases, decode reports and finished videos a run gives its view, drawn on an
    80-column pseudo-terminal."""
    master, slave = open_terminal(80)
    reader = TerminalReader(master)
    stream = os.fdopen(slave, "w", encoding="utf-8", buffering=1)
    with RunProgress(stream) as view:
        view.phase("reading the manifest")
        view.start(3)
        view.phase("starting 3 workers, loading the models")
        time.sleep(3 * REDRAW_S)  # the spinner turns and the clock runs while nothing reports
        view.stage_done("decode", 2, ["bad"])  # a decode failure: counted before its row is written
        time.sleep(2 * REDRAW_S)
        view.finished(["a"], [])
        time.sleep(2 * REDRAW_S)
        view.finished(["bad", "c"], ["bad"])  # the same failure again: one error
    stream.close()
    reader.thread.join(5)
    os.close(master)
    segments = reader.segments()
    assert segments and max(len(s) for s in segments) <= 80, max(segments, key=len)
    spinner = [s for s in segments if re.match(r"extract: \S \[\d\d:\d\d\] ", s)]
    assert len({s[len("extract: ")] for s in spinner}) >= 2, spinner  # the spinner turned
    assert any(re.match(r"extract: \S \[00:0\d\] \(2/3 decoded, 1 error\) starting 3 work", s) for s in spinner), \
        segments
    states = progress_states(segments)
    bar = [s for s in states if "videos" in s]
    assert re.search(r"extract:  33%\|.*\| 1/3 videos, 1 error$", bar[0]), states
    assert re.search(r"extract: 100%\|.*\| 3/3 videos, 1 error$", bar[-1]) and len(bar) == 2, states
    assert reader.text().endswith("\n")  # the final bar stays


def test_progress_off_a_terminal_is_a_line_per_phase_counts_now_and_then_and_one_at_the_end(monkeypatch):
    import extract.pipeline.console as console

    clock = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    with RunProgress(out) as view:
        view.phase("reading the manifest")  # before there is work to do: nothing (a misuse stays one line)
        view.start(5)
        view.phase("starting Ray")
        view.phase("starting Ray")
        view.stage_done("decode", 2, ["bad"])
        view.finished(["a", "bad"], ["bad"])  # the first count
        clock[0] += console.LOG_COUNT_S - 1
        view.finished(["c"], [])  # too soon for another
        clock[0] += 1
        view.finished(["d"], [])  # LOG_COUNT_S after the first
        view.finished(["e"], [])  # the last: the end line counts it
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["extract: starting Ray", "extract: 2/5 videos, 1 error", "extract: 4/5 videos, 1 error"], lines
    assert re.fullmatch(r"extract: 5/5 videos, 1 error in \d+ s", lines[3]) and len(lines) == 4, lines
    failed = io.StringIO()
    with pytest.raises(RuntimeError), RunProgress(failed) as view:
        view.start(3)
        view.phase("starting Ray")
        raise RuntimeError("Ray did not start")  # the run's own line says so: no count line
    assert failed.getvalue() == "extract: starting Ray\n"
    quiet = io.StringIO()
    with RunProgress(quiet) as view:
        view.phase("reading the manifest")
    with RunProgress(quiet, enabled=False) as view:
        view.start(3)
        view.phase("starting Ray")
        view.finished(["a"], [])
    assert quiet.getvalue() == ""


def test_long_lines_wrap_to_the_terminal_under_their_own_indent():
    line = "  decode_threads        1  FFmpeg threads per video; a second FFmpeg thread costs more CPU than it saves"
    wrapped = wrap_to(f"plan for 2 CPUs, 8 GiB, no GPU:\n{line}", 50).splitlines()
    assert max(len(w) for w in wrapped) <= 50 and wrapped[0] == "plan for 2 CPUs, 8 GiB, no GPU:"
    assert all(w.startswith("      ") for w in wrapped[2:]) and " ".join(w.strip() for w in wrapped[1:]) == line.strip()
    assert wrap_to(line, None) == line


def test_the_summary_says_when_the_error_rate_is_near_or_over_the_limit():
    from extract.report import error_rate_line

    record = {"error_rate": 0.5, "counts": {"errors": 5, "processed": 10}}
    assert error_rate_line(run_outcome(record, 0.5)) == (
        "  error rate 50.0%: 5 of 10 processed videos (limits.max_error_rate 50%): near the limit")
    assert error_rate_line(run_outcome(record, 0.4)).endswith(": OVER the limit, exit code 3")
    assert error_rate_line(run_outcome(record, 0.9)).endswith("(limits.max_error_rate 90%)")
    assert [(o.code, o.detail) for o in (run_outcome(record, 0.5), run_outcome(record, 0.4))] == [
        (0, ""), (3, "error rate 50% is over limits.max_error_rate=0.4")]
    assert [error_rate_health(r, 0.5) for r in (0.0, 0.39, 0.4, 0.5, 0.51)] == ["ok", "ok", "near", "near", "over"]
    assert error_rate_health(0.0, 0.0) == "ok"


def ten_videos(small_samples: Path, folder: Path) -> Path:
    """A manifest of 10 videos in ``folder``: a file that is not a video first (its decode fails
    at once), then the three small samples three times over under their own ids."""
    folder.mkdir()
    clips = sorted(small_samples.parent.glob("*.mp4"))
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    (folder / "broken.mp4").write_bytes(b"not a video at all " * 64)
    rows = [{"video_id": "broken", "uri": "broken.mp4"}]
    rows += [{"video_id": f"{clip.stem}_{i}", "uri": clip.name, "caption": f"take {i} #test"}
             for i in range(3) for clip in clips]
    assert len(rows) == 10
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_a_ten_video_run_on_a_terminal_shows_progress_that_moves(tmp_path, small_samples, tiny_config):
    """`extract run` on a 100-column pseudo-terminal (what a person sees): the progress line
    changes at least three times before the end, the bar passes through a count between 0 and
    10, the broken video counts as an error before the last video is done, the plan and the
    progress fit the width, the summary says the error rate; Ray's lines go to the run's log."""
    cols = 100
    manifest = ten_videos(small_samples, tmp_path / "in")
    dst = tmp_path / "out"
    master, slave = open_terminal(cols)
    reader = TerminalReader(master)
    proc = subprocess.Popen([sys.executable, "-m", "extract", "run", "--input", str(manifest), "--output", str(dst),
                             "--config", "jobs/configs/local.yaml", "--config", str(tiny_config)],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", TERM="xterm"))
    os.close(slave)
    try:
        code = proc.wait(timeout=600)
    finally:
        proc.kill()
    reader.thread.join(10)
    os.close(master)
    text = ANSI.sub("", reader.text())
    assert code == 0, text
    segments = reader.segments()
    states = progress_states(segments)
    end = next(i for i, s in enumerate(states) if "10/10 videos" in s)
    assert end >= 3, states  # three changes before the end at least
    assert any(re.search(r"\| [1-9]/10 videos", s) for s in states[:end]), states  # the bar moved on its way
    assert any("1 error" in s for s in states[:end]), states  # the broken video, before the end
    assert "videos" not in states[0], states  # a spinner saying what happens comes first
    assert re.search(r"10/10 videos, 1 error$", states[end]), states
    plan = [s for s in segments if s.startswith("plan for ")]
    assert len(plan) == 1 and "no GPU" in plan[0], plan
    start = segments.index(plan[0])
    block = [plan[0]] + [s for s in segments[start + 1:start + 30] if s.startswith("  ")][:20]
    assert any(s.split()[0] == "model_workers" for s in block[1:]), block
    assert not any(s.split()[0] in ("num_gpus_per_actor", "clip_actors", "whisper_actors", "ocr_actors")
                   for s in block[1:]), block
    drawn = block + [s for s in segments if s.startswith("extract")]
    assert max(len(s) for s in drawn) <= cols, max(drawn, key=len)
    assert "error rate 10.0%: 1 of 10 processed videos" in text
    assert not [s for s in segments if RAY_NOISE.search(s)]
    log_line = [s for s in segments if s.strip().startswith("log (Ray and workers):")]
    assert len(log_line) == 1, segments
    log_path = Path(log_line[0].split(":", 1)[1].strip())
    assert log_path.parent == dst / "_runs" and log_path.is_file()
    assert RAY_NOISE.search(log_path.read_text()), "Ray's own lines belong in the run log"


def test_a_failed_run_is_one_line_naming_the_cause_and_the_log(tmp_path, small_samples):
    missing = tmp_path / "nowhere.pt"
    proc = run_cli("run", "--input", str(small_samples), "--output", str(tmp_path / "out"),
                   "--config", "jobs/configs/local.yaml", "--set", f"models.whisper.name={missing}",
                   "--set", "models.clip.pretrained=null", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "nothing was published" in lines[0] and str(missing) in lines[0] and "(log: " in lines[0]
