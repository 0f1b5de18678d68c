"""Scheduled jobs (jobs.daily, jobs.backfill, jobs.retry_failures) on per-date upload folders.

Fast checks plan dates, inputs and exit codes without Ray (a stub cluster; runs with nothing
to decode never start Ray actors). Two runs with the tiny models: a backfill killed (SIGKILL,
whole process group) during its second date and then resumed, and a daily run submitted to a
separately started local Ray cluster (``ray start --head`` on 127.0.0.1, ``RAY_ADDRESS``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentTypeError, Namespace
from datetime import date
from pathlib import Path

import pytest
from conftest import REPO, free_port

import jobs.backfill
import jobs.daily
import jobs.retry_failures
from extract.pipeline.outcome import EXIT_ERROR_RATE, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from extract.config import ConfigError, load_config
from extract.models.weights import weights_digests
from extract.tables.catalog import Catalog
from jobs.common import daily_tasks, finished_run, parse_day, plan_dates, upload_source

D1, D2 = "2026-03-01", "2026-03-02"


def _upload(samples_manifest: Path, root: Path, day: str, video_id: str) -> None:
    """Put one sample clip and its sidecar (caption, upload_ts on ``day``) into ``root/day/``."""
    samples = samples_manifest.parent
    folder = root / day
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(samples / f"{video_id}.mp4", folder)
    sidecar = json.loads((samples / f"{video_id}.json").read_text())
    (folder / f"{video_id}.json").write_text(json.dumps({**sidecar, "upload_ts": f"{day}T12:00:00Z"}))


def _job_argv(uploads: Path, dst: Path, tiny_config: Path, *extra: str) -> list[str]:
    return ["--uploads", f"{uploads}/{{date}}", "--output", str(dst), "--config", "jobs/configs/local.yaml",
            "--config", str(tiny_config), *extra]


def _job(name: str, argv: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"jobs.{name}", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _committed_ids(dst: Path) -> list[str]:
    videos = Catalog(str(dst)).read("videos", ["video_id"])
    return sorted(videos["video_id"].to_pylist())


# --------------------------------------------------------------------------- no Ray


def test_entrypoints_start_light_and_explain_themselves():
    light = subprocess.run(
        [sys.executable, "-c", "import sys, jobs.daily, jobs.backfill, jobs.retry_failures; "
         "print(sorted({'torch', 'ray', 'av', 'open_clip', 'whisper'} & set(sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "[]", light.stdout + light.stderr
    helps = _job("daily", ["--help"], timeout=60)
    assert helps.returncode == 0 and "--date DAY" in helps.stdout and "limits.max_error_rate" in helps.stdout
    assert "--keep-going" in jobs.backfill.build_parser().format_help()
    assert "--keep-going" not in jobs.retry_failures.build_parser().format_help()
    bad = _job("backfill", ["--start", "2026-02-30"], timeout=60)
    assert bad.returncode == 2 and "is not a date" in bad.stderr


def test_dates_and_inputs(tmp_path):
    today = date(2026, 3, 2)
    assert parse_day("yesterday", today) == date(2026, 3, 1) and parse_day("today", today) == today
    assert parse_day("2024-02-29") == date(2024, 2, 29)
    with pytest.raises(ArgumentTypeError):
        parse_day("03/01/2026")
    config = load_config([], [f"schedule.input={tmp_path}/{{date:%Y/%m/%d}}/manifest.jsonl", "schedule.lookback_days=2"])
    assert upload_source(config, date(2026, 3, 1)) == f"{tmp_path}/2026/03/01/manifest.jsonl"
    tasks = daily_tasks(config, Namespace(date=date(2026, 3, 1)))
    assert [(str(t.day), t.required) for t in tasks] == [("2026-02-27", False), ("2026-02-28", False), ("2026-03-01", True)]
    relative = load_config([], ["schedule.input=uploads/{date}"])
    assert upload_source(relative, date(2026, 3, 1)) == os.path.abspath("uploads/2026-03-01")
    assert upload_source(load_config([], ["schedule.input=s3://up/{date}/"]), date(2026, 3, 1)) == "s3://up/2026-03-01/"
    for bad in ("s3://up/manifest.jsonl", "s3://up/{day}/", "s3://up/{date}/{n}"):
        with pytest.raises(ConfigError, match="schedule.input"):
            load_config([], [f"schedule.input={bad}"])


def test_a_date_is_finished_by_a_complete_run_over_its_input(tmp_path):
    config = load_config([], [f"schedule.input={tmp_path}/up/{{date}}", f"schedule.output={tmp_path}/out"])
    src = {d: upload_source(config, date.fromisoformat(d)) for d in (D1, D2, "2026-03-03")}
    for d in (D1, D2):
        os.makedirs(src[d])
    features = config.feature_hash_of(weights_digests(config))  # what run_job records: the weights counted by content
    runs = [
        {"run_id": "r1", "kind": "run", "status": "committed", "input": src[D1],
         "feature_hash": features, "options": {"retry_errors": False}},
        {"run_id": "r2", "kind": "run", "status": "committed", "input": src[D2],
         "feature_hash": features, "options": {"retry_errors": True}},  # retry-only
        {"run_id": "r3", "kind": "run", "status": "committed", "input": src[D2],
         "feature_hash": "0000000000000000", "options": {"retry_errors": False}},  # other features
    ]
    assert finished_run(runs, src[D1], features) == "r1"
    assert finished_run(runs, src[D2], features) is None
    (tmp_path / "out" / "_runs").mkdir(parents=True)
    for run in runs:
        (tmp_path / "out" / "_runs" / f"{run['run_id']}.json").write_text(json.dumps(run))
    tasks = jobs.backfill.SPEC.tasks(config, Namespace(start=date(2026, 3, 1), end=date(2026, 3, 3)))
    plan = plan_dates(jobs.backfill.SPEC, config, tasks)
    assert [(p.status, p.code) for p in plan] == [("finished", 0), ("run", 0), ("missing", EXIT_USAGE)]
    retry = plan_dates(jobs.retry_failures.SPEC, config,
                       jobs.retry_failures.SPEC.tasks(config, Namespace(start=date(2026, 3, 1), end=date(2026, 3, 3))))
    assert [p.status for p in retry] == ["run", "run", "no-input"]


def test_exit_codes_retries_and_skips_without_ray(tmp_path, monkeypatch, capsys):
    """Manifest rows that fail validation never reach Ray: error rate, missing input, retry, skip."""
    monkeypatch.setattr("jobs.common.connect_cluster", lambda config: {"address": "stub", "CPU": 2.0, "GPU": 0.0})
    uploads, dst = tmp_path / "up", tmp_path / "out"
    (uploads / D1).mkdir(parents=True)
    (uploads / D1 / "manifest.jsonl").write_text(
        json.dumps({"video_id": "no_uri"}) + "\n" + json.dumps({"video_id": "ftp", "uri": "ftp://host/a.mp4"}) + "\n")
    # output.sounds off: the daily job's sounds step would add runs that this test does not count
    argv = ["--uploads", f"{uploads}/{{date}}/manifest.jsonl", "--output", str(dst), "--set", "output.sounds=false"]

    assert jobs.daily.main(["--date", D1, *argv]) == EXIT_ERROR_RATE  # 2 of 2 rows are errors
    out = capsys.readouterr().out
    assert "ray: stub (cluster CPU 2, GPU 0)" in out and "stages: decode -> models" in out
    assert "ray data: max_errored_blocks=0" in out
    [run] = Catalog(str(dst)).runs
    assert run["counts"]["errors"] == 2 and run["error_rate"] == 1.0
    # as `extract run`: the run's HTML report, named in the summary
    report = dst / "_runs" / f"{run['run_id']}.html"
    assert report.is_file() and f"run report: {report}" in out and "error rate" in report.read_text()

    # D2 has no input: the look-back date D1 runs (nothing new), the job still fails with 2.
    assert jobs.daily.main(["--date", D2, *argv]) == EXIT_USAGE
    assert f"input {uploads}/{D2}/manifest.jsonl does not exist" in capsys.readouterr().out
    catalog = Catalog(str(dst))
    assert len(catalog.runs) == 2 and catalog.runs[-1]["counts"]["skipped_by_reason"] == {"committed_error": 2}

    # The errors are not retryable: a retry run processes nothing; D2 has nothing to retry.
    assert jobs.retry_failures.main(["--start", D1, "--end", D2, *argv]) == EXIT_OK
    retry = Catalog(str(dst)).runs[-1]
    assert retry["options"]["retry_errors"] is True
    assert retry["counts"]["skipped_by_reason"] == {"not_retryable_error": 2}
    capsys.readouterr()

    # D1 is finished (by the daily runs; the retry run does not count): backfill skips it.
    assert jobs.backfill.main(["--start", D1, *argv]) == EXIT_OK
    assert "finished" in capsys.readouterr().out and len(Catalog(str(dst)).runs) == 3
    assert jobs.backfill.main(["--start", D1, *argv, "--set", "sampling.fps=2"]) == EXIT_OK  # new features
    assert len(Catalog(str(dst)).runs) == 4
    capsys.readouterr()

    # A backfill stops at a failed date (D2: no input) unless --keep-going; most severe code wins.
    shutil.copytree(uploads / D1, uploads / "2026-03-03")
    assert jobs.backfill.main(["--start", D2, "--end", "2026-03-03", *argv]) == EXIT_USAGE
    assert "2026-03-03  not-started" in capsys.readouterr().out and len(Catalog(str(dst)).runs) == 4
    assert jobs.backfill.main(["--start", D2, "--end", "2026-03-03", "--keep-going", *argv]) == EXIT_USAGE
    assert "2026-03-03  committed" in capsys.readouterr().out and len(Catalog(str(dst)).runs) == 5

    assert jobs.daily.main(["--date", D1, "--uploads", f"{uploads}/{{date}}/manifest.jsonl"]) == EXIT_USAGE
    assert "schedule.output" in capsys.readouterr().err


# --------------------------------------------------------------------------- with the tiny models


def test_backfill_resumes_after_a_crash(tmp_path, small_samples, tiny_config):
    uploads, dst = tmp_path / "up", tmp_path / "out"
    _upload(small_samples, uploads, D1, "beach_day")
    _upload(small_samples, uploads, D2, "portrait_dance")
    argv = ["--start", D1, "--end", D2, *_job_argv(uploads, dst, tiny_config)]

    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "jobs.backfill", *argv], cwd=REPO, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((dst / "_runs").glob("*.json")):
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1.0)  # the second date's run is under way
        assert first.poll() is None, log.read_text()
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the job, its in-process Ray and its workers
        first.wait()
    [run] = Catalog(str(dst)).runs
    assert run["input"] == str(uploads / D1)
    assert _committed_ids(dst) == ["beach_day"]

    resumed = _job("backfill", argv)
    assert resumed.returncode == EXIT_OK, resumed.stdout + resumed.stderr
    assert f"{D1}  finished" in resumed.stdout and "stages: decode -> models" in resumed.stdout
    catalog = Catalog(str(dst))
    assert [r["input"] for r in catalog.runs] == [str(uploads / D1), str(uploads / D2)]
    assert _committed_ids(dst) == ["beach_day", "portrait_dance"]  # each exactly once
    assert catalog.read("videos", ["dt"])["dt"].to_pylist().count(D2) == 1
    # the killed run never reached its commit: no pending commit; `extract maintain` deletes its
    # abandoned staging after storage.retention_hours
    assert not list((dst / "_staging").glob("*/_commit.json"))


def test_daily_runs_on_a_separate_ray_cluster(tmp_path, small_samples, tiny_config):
    uploads, dst = tmp_path / "up", tmp_path / "out"
    _upload(small_samples, uploads, D2, "portrait_dance")  # D1 (the look-back date) has no folder
    port = free_port()
    # Own token and short temp dir (Unix socket paths); no fixed ports shared with other clusters.
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    log = tmp_path / "ray.log"
    ray = Path(sys.executable).parent / "ray"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--include-dashboard=false", f"--dashboard-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}",
             f"--temp-dir={temp_dir}", "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        argv = ["--date", D2, *_job_argv(uploads, dst, tiny_config)]

        no_gpu = _job("daily", [*argv, "--set", "runtime.device=cuda", "--set", "schedule.gpu_wait_s=0"], env)
        assert no_gpu.returncode == EXIT_FAILED and "no GPU joined the Ray cluster" in no_gpu.stderr, no_gpu.stderr

        daily = _job("daily", argv, env)
        assert daily.returncode == EXIT_OK, daily.stdout + daily.stderr
        assert f"ray: 127.0.0.1:{port} (cluster CPU 2, GPU 0)" in daily.stdout
        assert f"{D1}  no-input" in daily.stdout and "stages: decode -> models" in daily.stdout
        assert _committed_ids(dst) == ["portrait_dance"]
        [run] = [r for r in Catalog(str(dst)).runs if r["kind"] == "run"]  # then its search and upkeep runs
        assert run["resources"]["decode"]["actors"] == 1 and run["resources"]["models"]["num_gpus"] == 0
        # The drivers ran against this cluster: their logs are in its session folder.
        assert len(list(Path(temp_dir).glob("session_*/logs/python-core-driver-*"))) >= 2
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
