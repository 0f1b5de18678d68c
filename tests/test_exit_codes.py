"""Every process of ours exits with its documented code, every time: `extract inspect`, an
`extract run` on a committed output and a script reading through `Catalog`, 50 processes each.

Reading through deltalake's pyarrow path (``DeltaTable.to_pyarrow_dataset``) made 15-20 % of
processes abort at exit (SIGABRT, "terminate called without an active exception", exit 134:
delta-rs's filesystem handler keeps runtime threads past interpreter shutdown; delta-rs #2184,
apache/arrow #34314). ``extract.tables.catalog.snapshot_dataset`` reads the snapshot's files
through pyarrow's own filesystem instead; these tests keep it so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO
from test_queries import committed_tiny_run

RUNS = 50
CATALOG_SCRIPT = """
import sys
from extract.tables.catalog import Catalog
from extract.tables.schemas import TABLES

catalog = Catalog(sys.argv[1])
print({table: catalog.read(table).num_rows for table in TABLES})
"""


def exit_codes(argv: list[str], runs: int = RUNS) -> list[tuple[int, str]]:
    """``(exit code, last stderr line)`` of ``runs`` processes of ``argv``, two at a time
    (readers only: two runs at once on one output would race for its commit)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def one(_: int) -> tuple[int, str]:
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(runs)))


@pytest.fixture(scope="module")
def output(small_samples, tiny_config, tmp_path_factory):
    dst, _ = committed_tiny_run(small_samples, tiny_config, tmp_path_factory)
    return dst


def _assert_all_zero(codes: list[tuple[int, str]]) -> None:
    bad = [(rc, line) for rc, line in codes if rc != 0]
    assert not bad, f"{len(bad)} of {len(codes)} exited non-zero: {bad[:5]}"


@pytest.mark.slow
def test_inspect_exits_0_every_time(output):
    _assert_all_zero(exit_codes([sys.executable, "-m", "extract", "inspect", str(output)]))


@pytest.mark.slow
def test_a_catalog_read_script_exits_0_every_time(output):
    _assert_all_zero(exit_codes([sys.executable, "-c", CATALOG_SCRIPT, str(output)]))


@pytest.mark.slow
def test_a_rerun_with_nothing_to_do_exits_0_every_time(output, small_samples, tiny_config, tmp_path):
    """`extract run` over a committed output (a copy): planning reads the tables, nothing to
    process, an empty commit, the run report; 50 runs one after another, each exit 0."""
    import json
    import shutil

    dst = tmp_path / "out"
    shutil.copytree(output, dst)
    allowed = json.dumps([str(small_samples.parent), str(output.parent)])
    argv = [sys.executable, "-m", "extract", "run", "--input", str(output.parent / "manifest.jsonl"),
            "--output", str(dst), "--config", "jobs/configs/local.yaml", "--config", str(tiny_config),
            "--no-progress", "--set", f"input.allowed_uris={allowed}"]
    codes = []
    for _ in range(RUNS):
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
        codes.append((proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]))
    _assert_all_zero(codes)
    assert len(list((dst / "_runs").glob("*.json"))) == RUNS + 1
