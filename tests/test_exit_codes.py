"""Every process of ours exits with its documented code, every time: `extract inspect`, an
`extract run` on a committed output, and a script reading every table through `Catalog` and
then running the docs/QUERIES.md examples that read from Python; 50 processes each,
``AT_ONCE`` at a time.

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
AT_ONCE = 4
# The examples of docs/QUERIES.md that read the tables from Python (Polars, deltalake's schema,
# Catalog, DuckDB's delta extension).
QUERY_EXAMPLES = ("published-children", "top-hashtags-pyarrow", "nearest-numpy", "transcripts-pyarrow",
                  "nearest-duckdb-array", "copies-of-a-video", "polars-scan-delta", "delta-duckdb")
# argv: DST, then the examples to run (WORD can be any word: tests/test_queries.py checks the
# examples' answers; here only how the process exits counts; none of them names a sound, so no
# SOUND_ID)
CATALOG_SCRIPT = """
import sys
from extract.tables.catalog import Catalog
from extract.tables.schemas import TABLES

catalog = Catalog(sys.argv[1])
print({table: catalog.read(table).num_rows for table in TABLES})

sys.path.insert(0, "tests")
from test_queries import run_example

for name in sys.argv[2:]:
    run_example(name, {"dst": sys.argv[1], "word": "the", "sound_id": None})
"""


def exit_code(argv: list[str]) -> tuple[int, str]:
    """``(exit code, last stderr line)`` of one process of ``argv``."""
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


def exit_codes(argv: list[str], runs: int = RUNS) -> list[tuple[int, str]]:
    """``(exit code, last stderr line)`` of ``runs`` processes of ``argv``, ``AT_ONCE`` at a time
    (readers only: two runs at once on one output would race for its commit)."""
    with ThreadPoolExecutor(AT_ONCE) as pool:
        return list(pool.map(lambda _: exit_code(argv), range(runs)))


@pytest.fixture(scope="module")
def output(small_samples, tiny_config, tmp_path_factory):
    dst, _ = committed_tiny_run(small_samples, tiny_config, tmp_path_factory)
    return dst


def _assert_all_zero(codes: list[tuple[int, str]]) -> None:
    bad = [(rc, line) for rc, line in codes if rc != 0]
    assert not bad, f"{len(bad)} of {len(codes)} exited non-zero: {bad[:5]}"


@pytest.mark.slow
@pytest.mark.stress
def test_inspect_exits_0_every_time(output):
    _assert_all_zero(exit_codes([sys.executable, "-m", "extract", "inspect", str(output)]))


@pytest.mark.slow
@pytest.mark.stress
def test_a_catalog_read_script_exits_0_every_time(output):
    """Every table read through ``Catalog``, then the reading patterns docs/QUERIES.md shows
    from Python (none through deltalake's ``to_pyarrow_dataset``/``to_pyarrow_table``)."""
    from test_queries import SOUND_EXAMPLES, doc_blocks

    assert set(QUERY_EXAMPLES) <= set(doc_blocks()) and not set(QUERY_EXAMPLES) & set(SOUND_EXAMPLES)
    _assert_all_zero(exit_codes([sys.executable, "-c", CATALOG_SCRIPT, str(output), *QUERY_EXAMPLES]))


@pytest.mark.slow
@pytest.mark.stress
def test_a_rerun_with_nothing_to_do_exits_0_every_time(output, small_samples, tiny_config, tmp_path):
    """`extract run` over a committed output: planning reads the tables, nothing to process, an
    empty commit, the run report; 50 runs, each exit 0: ``AT_ONCE`` copies of the output, the
    runs on each copy one after another (two runs at once on one output would race to commit)."""
    import json
    import shutil

    allowed = json.dumps([str(small_samples.parent), str(output.parent)])
    copies = [tmp_path / f"out-{i}" for i in range(AT_ONCE)]

    def runs_on(dst, n: int) -> list[tuple[int, str]]:
        shutil.copytree(output, dst)
        return [exit_code([sys.executable, "-m", "extract", "run", "--input", str(output.parent / "manifest.jsonl"),
                           "--output", str(dst), "--config", "jobs/configs/local.yaml", "--config", str(tiny_config),
                           "--no-progress", "--set", f"input.allowed_uris={allowed}"]) for _ in range(n)]

    shares = [RUNS // AT_ONCE + (i < RUNS % AT_ONCE) for i in range(AT_ONCE)]
    with ThreadPoolExecutor(AT_ONCE) as pool:
        codes = [code for stream in pool.map(runs_on, copies, shares) for code in stream]
    assert len(codes) == RUNS
    _assert_all_zero(codes)
    for dst, n in zip(copies, shares):
        assert len(list((dst / "_runs").glob("*.json"))) == n + 1
