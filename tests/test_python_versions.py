"""Python 3.12 and 3.13 install the project and run the demo: `make py3.12-check`, `make py3.13-check`.

Each builds a venv of that interpreter (pinned dependencies and dev extras from PyPI), runs
`make demo` with it into a fresh folder and must exit 0; its tables are then read here. Skipped
only where that interpreter is absent (the target says so and exits 0).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import REPO


# Slow, and not in `make test` (marker ``interpreters``): the first run downloads and installs several GiB of wheels (torch, Ray, ...) into the new
# venv (minutes), then the demo starts Ray and processes the sample clips (minutes on 2 cores).
@pytest.mark.slow
@pytest.mark.interpreters
@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_demo_runs_on_python(version):
    done = subprocess.run(["make", "--no-print-directory", f"py{version}-check"], cwd=REPO, capture_output=True,
                          text=True, timeout=3600)
    if done.returncode == 0 and f"py{version}-check skipped" in done.stdout:
        pytest.skip(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    ran = re.search(rf"py{re.escape(version)}-check: the demo ran on Python (\S+) into (\S+)", done.stdout)
    assert ran, done.stdout[-4000:]
    assert ran.group(1).startswith(f"{version}."), ran.group(1)

    from deltalake import DeltaTable

    out = REPO / ran.group(2)
    manifest = out.parent / "samples" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    (record,) = [json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")]
    videos = DeltaTable(str(out / "videos")).to_pyarrow_table(columns=["video_id", "clip_embedding"])
    errors = DeltaTable(str(out / "errors")).to_pyarrow_table(columns=["video_id"])
    assert videos.num_rows > 0 and videos.num_rows + errors.num_rows == len(rows), (videos.num_rows, errors.num_rows)
    assert sorted(videos["video_id"].to_pylist() + errors["video_id"].to_pylist()) == sorted(r["video_id"] for r in rows)
    assert all(len(e) > 0 for e in videos["clip_embedding"].to_pylist())
    assert record["counts"]["processed"] == len(rows), record["counts"]
    assert record["delta_versions"]["videos"] == DeltaTable(str(out / "videos")).version(), record["delta_versions"]
