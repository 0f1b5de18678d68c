"""Every CLI misuse is answered with one line on stderr, no traceback, and the documented exit
code (extract/cli.py's docstring, README "Command line": 2 bad usage, 1 the command failed).

Each case runs ``python -m extract`` as a user would; none reaches Ray or a model, so the walk
takes seconds. As root (CI) permission bits do not stop reads, so "unreadable" is covered by the
paths no user can read either: a folder where a file is expected and a path through a file.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from conftest import run_cli

from extract.pipeline.manifest import ManifestError, check_some_row_allowed, normalize_records, read_source
from extract.tables.schemas import TABLES

USAGE, FAILED = 2, 1


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """A regular file, a folder, a place that does not exist, an output-looking DST, and a DST
    whose ``videos`` table is a regular file (an output that is not our tables)."""
    root = tmp_path_factory.mktemp("misuse")
    (root / "file.txt").write_text("not a folder\n")
    (root / "folder").mkdir()
    (root / "output" / "_runs").mkdir(parents=True)
    (root / "broken").mkdir()
    (root / "broken" / "videos").write_text("a table folder that is a file\n")
    (root / "manifest.jsonl").write_text(json.dumps({"video_id": "a", "uri": "a.mp4"}) + "\n")
    return {"file": str(root / "file.txt"), "folder": str(root / "folder"), "missing": str(root / "nope"),
            "under_file": str(root / "file.txt" / "sub"), "output": str(root / "output"),
            "broken": str(root / "broken"), "manifest": str(root / "manifest.jsonl"), "root": str(root)}


# (case id, argv with {placeholders} from ``paths``, exit code, words the line must hold)
CASES = [
    ("no-command", [], USAGE, "required"),
    ("unknown-option", ["run", "--input", "{manifest}", "--output", "{missing}", "--fast"], USAGE, "--fast"),
    ("run-without-input", ["run", "--output", "{missing}"], USAGE, "--input"),
    ("run-missing-input", ["run", "--input", "{missing}", "--output", "{root}/out1"], USAGE, "does not exist"),
    ("run-input-under-file", ["run", "--input", "{under_file}", "--output", "{root}/out2"], USAGE, "does not exist"),
    ("run-input-scheme", ["run", "--input", "http://host/m.jsonl", "--output", "{root}/out3"], USAGE, "http://"),
    ("run-config-folder", ["run", "--input", "{manifest}", "--output", "{root}/out4", "--config", "{folder}"],
     USAGE, "is a folder"),
    ("run-config-missing", ["run", "--input", "{manifest}", "--output", "{root}/out5", "--config", "{missing}"],
     USAGE, "does not exist"),
    ("run-config-under-file", ["run", "--input", "{manifest}", "--output", "{root}/out6", "--config", "{under_file}"],
     USAGE, "cannot be read"),
    ("run-bad-set", ["run", "--input", "{manifest}", "--output", "{root}/out7", "--set", "sampling.fps"],
     USAGE, "key=value"),
    ("run-output-under-file", ["run", "--input", "{manifest}", "--output", "{under_file}"], USAGE, "is a file"),
    ("run-output-is-file", ["run", "--input", "{manifest}", "--output", "{file}"], USAGE, "is a file"),
    ("make-tiny-under-file", ["models", "make-tiny", "{under_file}"], USAGE, "is a file"),
    ("make-tiny-is-file", ["models", "make-tiny", "{file}"], USAGE, "is a file"),
    ("stage-dest-under-file", ["models", "stage", "--dest", "{under_file}"], USAGE, "is a file"),
    ("stage-clip-from-missing", ["models", "stage", "--dest", "{root}/staged", "--clip-from", "{missing}"],
     USAGE, "does not exist"),
    ("stage-clip-from-folder", ["models", "stage", "--dest", "{root}/staged", "--clip-from", "{folder}"],
     USAGE, "is a folder"),
    ("stage-config-folder", ["models", "stage", "--dest", "{root}/staged", "--config", "{folder}"],
     USAGE, "is a folder"),
    ("samples-under-file", ["samples", "make", "{under_file}"], USAGE, "is a file"),
    ("schemas-unknown-table", ["schemas", "--table", "nosuch"], USAGE, "videos"),
    ("inspect-missing", ["inspect", "{missing}"], USAGE, "no output at"),
    ("inspect-empty-folder", ["inspect", "{folder}"], USAGE, "no output at"),
    ("inspect-file", ["inspect", "{file}"], USAGE, "no output at"),
    ("inspect-config-folder", ["inspect", "{output}", "--config", "{folder}"], USAGE, "is a folder"),
    ("inspect-bad-as-of", ["inspect", "{output}", "--as-of", "no-such-run"], USAGE, "no-such-run"),
    ("forget-missing-dst", ["forget", "{missing}", "--ids", "{file}"], USAGE, "no output at"),
    ("forget-ids-missing", ["forget", "{output}", "--ids", "{root}/missing.txt"], USAGE, "does not exist"),
    ("forget-ids-folder", ["forget", "{output}", "--ids", "{folder}"], USAGE, "is a folder"),
    ("maintain-missing", ["maintain", "{missing}"], USAGE, "no output at"),
    ("maintain-file", ["maintain", "{file}"], USAGE, "no output at"),
    ("maintain-not-our-tables", ["maintain", "{broken}"], FAILED, "videos"),
    ("migrate-missing", ["migrate", "{missing}"], USAGE, "no output at"),
    ("duplicates-missing", ["duplicates", "{missing}"], USAGE, "no output at"),
    ("duplicates-bad-since", ["duplicates", "{output}", "--since", "yesterday"], USAGE, "YYYY-MM-DD"),
    ("duplicates-bad-threshold", ["duplicates", "{output}", "--threshold", "99"], USAGE, "max_hamming"),
    ("sounds-missing", ["sounds", "{missing}"], USAGE, "no output at"),
    ("sounds-bad-since", ["sounds", "{output}", "--since", "yesterday"], USAGE, "YYYY-MM-DD"),
    ("sounds-not-our-tables", ["sounds", "{broken}"], FAILED, "videos"),
]


def test_every_subcommand_is_walked():
    from extract.cli import build_parser

    walked = {case[1][0] for case in CASES if case[1]} | {" ".join(case[1][:2]) for case in CASES if case[1]}
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands <= walked, commands - walked
    assert {"models make-tiny", "models stage", "samples make"} <= walked


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_misuse_is_one_line(case, paths):
    _, argv, code, words = case
    proc = run_cli(*[arg.format(**paths) for arg in argv], timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert lines[0].startswith("extract"), lines[0]
    assert words in lines[0], lines[0]


def test_a_run_that_never_started_leaves_no_log(paths, tmp_path):
    """A missing input (found before the run opens its log) and an unreadable manifest (found
    inside the run): neither leaves ``DST/_runs/<id>.log`` nor the folders made for it."""
    dst = tmp_path / "new-output"
    assert run_cli("run", "--input", paths["missing"], "--output", str(dst)).returncode == USAGE
    assert not dst.exists()
    odd = tmp_path / "manifest.txt"  # exists, but no manifest type
    odd.write_text("video_id,uri\n")
    proc = run_cli("run", "--input", str(odd), "--output", str(dst))
    assert proc.returncode == USAGE and "unknown manifest type" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not dst.exists()
    existing = tmp_path / "existing-output"
    (existing / "_runs").mkdir(parents=True)
    (existing / "_runs" / "keep.json").write_text("{}")
    assert run_cli("run", "--input", str(odd), "--output", str(existing)).returncode == USAGE
    assert sorted(p.name for p in existing.rglob("*")) == ["_runs", "keep.json"]


def test_an_unwritable_output_names_no_log(paths):
    """An output no one can create (as root too: /proc takes no folders) is one line naming the
    output and the fix, exit 2, and no ``_runs/<id>.log`` that could not exist."""
    for verbose in ([], ["-v"]):  # verbose: the log goes to stderr, but the output is checked the same
        proc = run_cli(*verbose, "run", "--input", paths["manifest"], "--output", "/proc/extract-out", timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == USAGE and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "/proc/extract-out: cannot be written" in lines[0] and "--output" in lines[0], lines[0]
        assert "log" not in lines[0] and "_runs" not in lines[0], lines[0]


def _apart(tmp_path: Path) -> Path:
    """A manifest in manifests/ whose rows point into uploads/ (a data engineer's layout)."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "uploads" / "2026-11-24").mkdir(parents=True)
    (tmp_path / "uploads" / "2026-11-25").mkdir(parents=True)
    rows = []
    for i, day in enumerate(("2026-11-24", "2026-11-25")):
        video = tmp_path / "uploads" / day / f"v{i}.mp4"
        video.write_bytes(b"\0" * 16)
        rows.append({"video_id": f"v{i}", "uri": str(video)})
    manifest = tmp_path / "manifests" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_all_rows_refused_names_the_prefix_to_allow(tmp_path):
    """Every row outside ``input.allowed_uris``: one line naming the ``--set`` that admits them,
    before anything is planned (no log, no output); that ``--set`` does admit every row."""
    manifest = _apart(tmp_path)
    dst = tmp_path / "out"
    proc = run_cli("run", "--input", str(manifest), "--output", str(dst))
    assert proc.returncode == USAGE and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    uploads = (tmp_path / "uploads").resolve()
    assert f"--set input.allowed_uris=[{uploads}]" in line, line
    assert not dst.exists()
    setting = shlex.split(line.split("allow their folder: ", 1)[1])[1]
    from extract.config import load_config

    config = load_config([], [setting])
    rows = read_source(str(manifest), config.storage, allowed_uris=config.input.allowed_uris)
    assert [r["error_stage"] for r in rows] == [None, None]


def test_all_rows_refused_in_an_object_store_names_the_bucket_prefix():
    records = [{"video_id": "a", "uri": "s3://uploads/2026-11-24/a.mp4"},
               {"video_id": "b", "uri": "s3://uploads/2026-11-25/b.mp4"}]
    from datetime import date

    rows = normalize_records(records, "s3://manifests/2026-11-24", date(2026, 11, 24))
    with pytest.raises(ManifestError, match=r"--set input\.allowed_uris=\[s3://uploads/\]$"):
        check_some_row_allowed(rows, "s3://manifests/2026-11-24/manifest.jsonl")
    one_valid = normalize_records(records + [{"video_id": "c", "uri": "c.mp4"}], "s3://manifests/2026-11-24",
                                  date(2026, 11, 24))
    check_some_row_allowed(one_valid, "s3://manifests/2026-11-24/manifest.jsonl")  # some rows run: they are rows


def test_schemas_lists_tables_in_the_unknown_table_line():
    proc = run_cli("schemas", "--table", "nosuch")
    assert all(table in proc.stderr for table in TABLES)
