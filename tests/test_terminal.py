"""What a person sees of `extract run`: one progress bar, the plan, the summary; Ray's own
output (token warning, core-worker lines, Ray Data notes) only in the run's log file."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli

RAY_NOISE = re.compile(r"core_worker|raylet|WARNING|INFO|Token authentication|Progress bars disabled|"
                       r"streaming_executor|\(MapWorker|ray\.data", re.IGNORECASE)


def test_a_run_shows_one_bar_and_keeps_ray_logs_in_the_run_log(tmp_path, small_samples, tiny_config):
    dst = tmp_path / "out"
    proc = run_cli("run", "--input", str(small_samples), "--output", str(dst), "--config", "jobs/configs/local.yaml",
                   "--config", str(tiny_config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    segments = [s.strip() for s in re.split(r"[\r\n]", proc.stderr) if s.strip()]
    assert segments, "no progress bar"
    noise = [s for s in segments if RAY_NOISE.search(s)]
    assert not noise, noise
    others = [s for s in segments if not s.startswith(("extract:", "plan for "))]
    assert not others, others
    assert sum(1 for s in segments if s.startswith("plan for ")) == 1  # the resolved defaults, once
    finals = [s for s in segments if s.startswith("extract: 100%")]
    assert len(finals) == 1 and "3/3 videos" in finals[0] and "0 errors" in finals[0], segments
    assert not any(RAY_NOISE.search(line) for line in proc.stdout.splitlines()), proc.stdout

    log_line = [line for line in proc.stdout.splitlines() if line.strip().startswith("log (Ray and workers):")]
    assert len(log_line) == 1, proc.stdout
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
