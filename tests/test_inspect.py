"""``extract inspect``: a person's format (one fact per line, within the terminal's width, no
Python reprs) and ``--json`` with the same facts — no Ray, no models."""

import io
import json
import re

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from extract.cli import main
from extract.inspection import describe_output, describe_video, summarize
from extract.tables.catalog import Catalog
from extract.tables.schemas import TABLES, get_table_schema
from extract.tables.session import RunSession
from extract.tables.writer import in_predicate
from test_writer import D, finished_row, write_run

REPR_MARKS = ("b'", 'b"', "datetime.", "ZoneInfo", "array(", "np.float", "\\x")


def jpeg_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def with_thumbnails(row: dict) -> dict:
    """The decode stage's thumbnail columns (see ``extract.rows.thumbnails_of``) for frames 0 and 1."""
    pics = [jpeg_bytes(1), jpeg_bytes(2)]
    row.update(thumbnail_jpeg=np.frombuffer(b"".join(pics), np.uint8), thumbnail_bytes=np.array([len(p) for p in pics]),
               thumbnail_index=np.array([0, 1]))
    return row


def make_output(tmp_path):
    """Run r1: video ``a`` (with thumbnails and a long caption), ``c`` and ``d``, and ``failed``;
    then a duplicates run that finds ``c`` a near copy and ``d`` a re-upload of ``a``."""
    long_caption = "a caption that goes on " * 40 + "#fyp"
    rows = [with_thumbnails(finished_row("a")), finished_row("failed", failed=True), finished_row("c"),
            finished_row("d")]
    rows[0]["caption"] = long_caption
    write_run(tmp_path, rows, "r1", {"run_id": "r1", "kind": "run", "status": "committed", "wall_s": 12.5,
                                     "started_at": "2026-11-25T10:00:00.123456+00:00", "error_rate": 0.25,
                                     "counts": {"processed": 4, "ok": 3, "errors": 1, "skipped": 0}})
    (tmp_path / "_runs" / "r1.html").write_text("<html></html>")
    found = pa.Table.from_pylist(
        [{"video_id": "c", "duplicate_of": "a", "kind": "near", "match_frames": 0.875, "clip_cosine": 0.98765432,
          "mirrored": False, "run_id": "d1"},
         {"video_id": "d", "duplicate_of": "a", "kind": "exact", "match_frames": 1.0, "clip_cosine": 1.0,
          "mirrored": False, "run_id": "d1"}], schema=get_table_schema("duplicates").arrow_schema(D))
    with RunSession.open(Catalog(str(tmp_path)), "duplicates", "d1", writes=True) as session:
        session.write({("duplicates", "2026-11-24"): found})
        session.commit(session.record(counts={"searched": 4, "history": 4, "duplicates": 2}),
                       {"duplicates": in_predicate("video_id", ["a", "failed", "c", "d"])})
    return tmp_path


def assert_readable(text: str, width: int):
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= width, max(lines, key=len)
    for mark in REPR_MARKS:
        assert mark not in text, (mark, text)


def test_video_view_is_one_fact_per_line_within_the_width(tmp_path):
    out = make_output(tmp_path)
    text = describe_video(str(out), "a", width=80)
    assert_readable(text, 80)
    assert re.search(r"^  clip_embedding +<8 floats, norm 1\.00>$", text, re.M)  # D = 8 in the fixture rows
    assert re.search(r"^  processed_at +2026-11-25T00:00:00\+00:00$", text, re.M)
    assert re.search(r"thumbnail_jpeg=<jpeg \d\.\d kB>", text)
    assert "frame_embeddings: 3 rows" in text
    assert text.splitlines()[1] == "  status: ok"
    # an original lists its copies, with how they matched
    assert "copies of it (later near copies and re-uploads): 2" in text
    assert re.search(r"^  c  near  frames 0\.875  clip cosine 0\.9877$", text, re.M)
    assert re.search(r"^  d  exact  frames 1\.0  clip cosine 1\.0$", text, re.M)
    copy = describe_video(str(out), "c", width=80)  # a copy shows what it copies (its duplicates row)
    assert_readable(copy, 80)
    assert re.search(r"^duplicates: 1 row$", copy, re.M) and "duplicate_of=a" in copy and "copies of it" not in copy
    failed = describe_video(str(out), "failed", width=80)  # a failed video: its error first
    assert_readable(failed, 80)
    assert failed.splitlines()[1] == "  status: error at decode: DecodeError: 'failed': broken"
    assert "sound group" not in text  # no sounds recorded: nothing said
    assert describe_video(str(out), "nobody", width=80).endswith("no committed rows (never processed, skipped, or forgotten)")


def test_output_view_lists_runs_with_kind_start_duration_counts_and_report(tmp_path):
    out = make_output(tmp_path)
    text = describe_output(str(out), width=100)
    assert_readable(text, 100)
    lines = text.splitlines()
    head = lines.index("recent runs (last 2):")
    assert lines[head + 1:head + 7] == [
        "   seq  kind        started                         took  run",
        "     1  run         2026-11-25T10:00:00+00:00     12.5 s  r1",
        "                    processed 4, ok 3, errors 1, skipped 0, error rate 25.0%",
        "                    report: _runs/r1.html",
        f"     2  duplicates  {lines[head + 5][20:45]}  {lines[head + 5][47:56]}  d1",
        "                    searched 4, history 4, duplicates 2"], "\n".join(lines[head:])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", lines[head + 5][20:45])
    assert re.fullmatch(r" *\d+\.\d s", lines[head + 5][47:56])
    assert re.search(r"^  videos +v\d+ +3 rows", text, re.M) and "errors: 1 rows (0 retryable)" in text
    narrow = describe_output(str(out), width=40)
    assert_readable(narrow, 40)
    assert "…" in narrow  # cut, not wrapped


def test_json_carries_the_same_facts(tmp_path, capsys):
    out = make_output(tmp_path)
    assert main(["inspect", str(out), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["tables"]["videos"]["rows"] == 3 and facts["tables"]["errors"]["rows"] == 1
    assert facts["runs"][0] | {"counts": None} == {
        "run_id": "r1", "seq": 1, "kind": "run", "status": "committed", "started_at": "2026-11-25T10:00:00.123456+00:00",
        "wall_s": 12.5, "counts": None, "error_rate": 0.25, "report": "_runs/r1.html"}
    assert facts["runs"][1]["counts"] == {"searched": 4, "history": 4, "duplicates": 2}
    assert main(["inspect", str(out), "--video", "a", "--json"]) == 0
    video = json.loads(capsys.readouterr().out)
    assert video["found"] and video["status"] == "ok" and video["tables"]["videos"]["rows"] == 1
    assert [c["video_id"] for c in video["copies"]] == ["c", "d"]
    assert video["tables"]["frame_embeddings"]["shown"][0]["thumbnail_jpeg"].startswith("<jpeg ")
    assert len(video["tables"]["videos"]["shown"][0]["caption"]) <= 200


def test_summaries():
    assert summarize([0.6, 0.8] + [0.0] * 8) == "<10 floats, norm 1.00>"
    assert summarize(b"\xff\xd8\xff" + b"x" * 1797) == "<jpeg 1.8 kB>"
    assert summarize(0.123456789) == 0.1235 and summarize(1234567.0) == 1235000.0
    assert summarize([1, 2]) == [1, 2] and summarize(None) is None


@pytest.mark.skipif("sound_matches" not in TABLES, reason="the output has no same-sound matches table yet")
def test_video_view_lists_its_sound_group(tmp_path):
    """With same-sound matches (``sound_matches``: one row per video and shared sound), a video's
    view names its sound and the other videos that use it."""
    out = make_output(tmp_path)
    schema = get_table_schema("sound_matches").arrow_schema(D)
    values = {"a": ("s1", 0.0, 3.0, 0.9), "c": ("s1", 1.5, 2.5, 0.8), "d": ("s2", 0.0, 3.0, 0.7)}
    rows = [{name: dict(zip(("sound_id", "offset_s", "matched_s", "score"), v), video_id=vid, run_id="s").get(name)
             for name in schema.names} for vid, v in values.items()]
    with RunSession.open(Catalog(str(out)), "sounds", "s", writes=True) as session:
        session.write({("sound_matches", "2026-11-24"): pa.Table.from_pylist(rows, schema=schema)})
        session.commit(session.record(counts={}), {"sound_matches": in_predicate("video_id", list(values))})
    text = describe_video(str(out), "a", width=80)
    assert_readable(text, 80)
    assert "sound group s1: 1 other video" in text and re.search(r"^  c  .*offset_s=1\.5", text, re.M), text
    assert "  d  " not in text.split("sound group", 1)[1]
