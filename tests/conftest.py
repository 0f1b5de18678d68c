"""Shared fixtures: tiny models, sample clips, a loopback S3 server, and the `gpu`/`weights` skips."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


# Test files that start Ray in this process or run `extract run`/the jobs (which do): under
# pytest-xdist (`make check`/`make test`: `-n 2 --dist loadgroup`) their tests share one group
# ("ray"), so one worker runs them one after another, and their slow tests (harness runs that
# kill and crash processes, the exit-code runs) a second one ("ray-slow") that the other worker
# runs beside it: at most two in-process Rays of ours at once. The three-node cluster has a group
# of its own. Every other file is a group.
RAY_FILES = {"test_duplicates_run.py", "test_e2e.py", "test_evolution.py", "test_jobs.py",
             "test_pipeline_resources.py", "test_queries.py", "test_report.py", "test_reuse.py", "test_s3.py",
             "test_sounds_run.py",
             "test_terminal.py", "test_reliability_pipeline.py", "test_exit_codes.py",
             "test_python_versions.py"}
# The groups that take longest (`make test`: minutes each), handed to the workers first and in
# this order (the Makefile's `--no-loadscope-reorder` keeps the collection's order; xdist would
# otherwise start with the groups of the most tests, however short), so none starts last.
LONG_GROUPS = ("ray", "ray-slow", "test_cluster_scaleout.py")


def xdist_group(item) -> str:
    """The pytest-xdist group of a test (see RAY_FILES)."""
    name = item.path.name
    if name in RAY_FILES:
        return "ray-slow" if item.get_closest_marker("slow") else "ray"
    return name


def pytest_collection_modifyitems(config, items):
    import torch

    groups = {item.nodeid: xdist_group(item) for item in items}
    for item in items:  # module fixtures made once per group; Ray files in two groups
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    rank = {group: i for i, group in enumerate(LONG_GROUPS)}
    items.sort(key=lambda item: rank.get(groups[item.nodeid], len(LONG_GROUPS)))  # stable: files keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if item.get_closest_marker("gpu"):  # not `"gpu" in item.keywords`: that holds for a checkout in a folder named gpu
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    """``tiny.yaml`` of deterministic tiny CLIP + Whisper checkpoints (made once per session)."""
    from extract.tools.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def small_samples(tmp_path_factory) -> Path:
    """Three short sample clips (speech or tone, portrait, no audio) and their manifest."""
    from extract.tools.samples import SAMPLE_SPECS, make_samples

    specs = tuple(s for s in SAMPLE_SPECS if s.stem in ("beach_day", "portrait_dance", "silent_loop"))
    return make_samples(tmp_path_factory.mktemp("samples"), specs=specs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (a real HTTP S3 API); yields its endpoint URL.

    Sets the standard AWS variables for this process and its children (Ray workers,
    subprocess runs), so pyarrow's S3 client finds the endpoint and credentials.
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import time
    import urllib.error
    import urllib.request

    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # the server answered
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto S3 server did not start on loopback")
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m extract ARGS`` as a subprocess; returns the completed process (never raises on rc)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "extract", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tests: the test machine runs two pytest workers
    (and their Ray) on its cores, and more threads would only oversubscribe them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
