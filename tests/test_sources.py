"""Manifest reading: formats, directory + sidecars, validation rows, uri resolution, timestamps."""

import json
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract.pipeline.manifest import ManifestError, parse_upload_ts, read_source

TODAY = date(2026, 11, 25)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_csv_parquet_agree(tmp_path):
    rows = [{"video_id": "a", "uri": "a.mp4", "caption": "hi #x", "upload_ts": "2026-11-01T10:00:00Z", "extra": 1},
            {"video_id": "b", "uri": "sub/b.mp4", "caption": None, "upload_ts": None}]
    j = read_source(str(_write_jsonl(tmp_path / "m.jsonl", rows)), today=TODAY)
    (tmp_path / "m.csv").write_text("video_id,uri,caption,upload_ts\na,a.mp4,hi #x,2026-11-01T10:00:00Z\nb,sub/b.mp4,,\n")
    c = read_source(str(tmp_path / "m.csv"), today=TODAY)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in ("video_id", "uri", "caption", "upload_ts")} for r in rows]),
                   tmp_path / "m.parquet")
    p = read_source(str(tmp_path / "m.parquet"), today=TODAY)
    for got in (j, c, p):
        assert [r["video_id"] for r in got] == ["a", "b"]
        assert got[0]["uri"] == str(tmp_path / "a.mp4")
        assert got[1]["uri"] == str(tmp_path / "sub" / "b.mp4")
        assert got[0]["dt"] == "2026-11-01" and got[0]["upload_ts"] == "2026-11-01T10:00:00Z"
        assert got[1]["dt"] == TODAY.isoformat() and got[1]["upload_ts"] is None
        assert all(r["error_stage"] is None for r in got)
        assert "extra" not in got[0]
    assert c[1]["caption"] in (None, "")


def test_directory_with_sidecars(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"")
    (tmp_path / "y.MOV").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "x.json").write_text(json.dumps({"caption": "#tag", "upload_ts": 1767225600, "video_id": "evil"}))
    rows = read_source(str(tmp_path), today=TODAY)
    assert [r["video_id"] for r in rows] == ["x", "y"]  # sidecar cannot rename the video
    assert rows[0]["caption"] == "#tag" and rows[0]["dt"] == "2026-01-01"
    assert rows[1]["caption"] is None


def test_invalid_rows_become_error_rows(tmp_path):
    rows = [
        {"video_id": "ok", "uri": "ok.mp4"},
        {"uri": "no_id.mp4"},
        {"video_id": "no_uri"},
        {"video_id": "ok", "uri": "dup.mp4"},
        {"video_id": "bad\x00id", "uri": "x.mp4"},
        {"video_id": "w" * 600, "uri": "x.mp4"},
        {"video_id": "web", "uri": "http://example.com/v.mp4"},
        {"video_id": "../../etc", "uri": "x.mp4"},
    ]
    path = _write_jsonl(tmp_path / "m.jsonl", rows)
    path.write_text(path.read_text() + "{not json\n")
    got = read_source(str(path), today=TODAY)
    assert len(got) == len(rows) + 1  # every manifest line is accounted for
    by_pos = [(r["video_id"], r["error_stage"], r["error_message"] or "") for r in got]
    assert by_pos[0][1] is None
    assert "no 'video_id'" in by_pos[1][2] and "row 2" in by_pos[1][2]
    assert "no 'uri'" in by_pos[2][2]
    assert "duplicate video_id 'ok'" in by_pos[3][2]
    assert "control characters" in by_pos[4][2]
    assert "over 512" in by_pos[5][2]
    assert "http://" in by_pos[6][2]
    assert by_pos[7][1] is None  # ids are values, never paths: '../..' is allowed
    assert "not valid JSON" in by_pos[8][2]
    assert all(r["error_stage"] == "manifest" for r in got[1:7])


def test_missing_input_and_unknown_type(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_source(str(tmp_path / "nope.jsonl"))
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="unknown manifest type"):
        read_source(str(tmp_path / "m.txt"))


@pytest.mark.parametrize("value, expected", [
    ("2026-11-24T23:30:00-02:00", "2026-11-25T01:30:00+00:00"),
    ("2026-11-24T08:00:00", "2026-11-24T08:00:00+00:00"),
    ("2026-11-24", "2026-11-24T00:00:00+00:00"),
    (1767225600, "2026-01-01T00:00:00+00:00"),
    ("1767225600.5", "2026-01-01T00:00:00.500000+00:00"),
])
def test_upload_ts_parsing(value, expected):
    ts, problem = parse_upload_ts(value)
    assert problem is None and ts.isoformat() == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-40", [1, 2], 1e20])
def test_invalid_upload_ts_is_reported_not_fatal(value):
    ts, problem = parse_upload_ts(value)
    assert ts is None and problem
