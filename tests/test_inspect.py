"""``extract inspect``: a person's format (one fact per line, within the terminal's width, no
Python reprs) and ``--json`` with the same facts — no Ray, no models."""

import io
import json
import re

import numpy as np
from PIL import Image

from extract.cli import main
from extract.inspection import describe_output, describe_video, summarize
from test_writer import finished_row, write_run

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
    long_caption = "a caption that goes on " * 40 + "#fyp"
    rows = [with_thumbnails(finished_row("a")), finished_row("b", failed=True)]
    rows[0]["caption"] = long_caption
    write_run(tmp_path, rows, "r1", {"run_id": "r1", "kind": "run", "status": "committed", "wall_s": 12.5,
                                     "started_at": "2026-11-25T10:00:00.123456+00:00", "error_rate": 0.5,
                                     "counts": {"processed": 2, "ok": 1, "errors": 1, "skipped": 0}})
    (tmp_path / "_runs" / "r1.html").write_text("<html></html>")
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
    assert describe_video(str(out), "nobody", width=80).endswith("no committed rows (never processed, skipped, or forgotten)")


def test_output_view_lists_runs_with_kind_start_duration_counts_and_report(tmp_path):
    out = make_output(tmp_path)
    text = describe_output(str(out), width=100)
    assert_readable(text, 100)
    assert "r1  seq 1  run  committed  started 2026-11-25T10:00:00+00:00  took 12.5 s" in text
    assert "processed 2, ok 1, errors 1, skipped 0, error rate 50.0%" in text
    assert "report: _runs/r1.html" in text
    assert re.search(r"^  videos +v\d+ +1 rows", text, re.M) and "errors: 1 rows (0 retryable)" in text
    narrow = describe_output(str(out), width=40)
    assert_readable(narrow, 40)
    assert "…" in narrow  # cut, not wrapped


def test_json_carries_the_same_facts(tmp_path, capsys):
    out = make_output(tmp_path)
    assert main(["inspect", str(out), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["tables"]["videos"]["rows"] == 1 and facts["tables"]["errors"]["rows"] == 1
    assert facts["runs"][0] | {"counts": None} == {
        "run_id": "r1", "seq": 1, "kind": "run", "status": "committed", "started_at": "2026-11-25T10:00:00.123456+00:00",
        "wall_s": 12.5, "counts": None, "error_rate": 0.5, "report": "_runs/r1.html"}
    assert main(["inspect", str(out), "--video", "a", "--json"]) == 0
    video = json.loads(capsys.readouterr().out)
    assert video["found"] and video["tables"]["videos"]["rows"] == 1
    assert video["tables"]["frame_embeddings"]["shown"][0]["thumbnail_jpeg"].startswith("<jpeg ")
    assert len(video["tables"]["videos"]["shown"][0]["caption"]) <= 200


def test_summaries():
    assert summarize([0.6, 0.8] + [0.0] * 8) == "<10 floats, norm 1.00>"
    assert summarize(b"\xff\xd8\xff" + b"x" * 1797) == "<jpeg 1.8 kB>"
    assert summarize(0.123456789) == 0.1235 and summarize(1234567.0) == 1235000.0
    assert summarize([1, 2]) == [1, 2] and summarize(None) is None
