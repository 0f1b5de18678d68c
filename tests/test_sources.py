"""Manifest reading: formats, directory + sidecars, validation rows, uri resolution, timestamps."""

import json
import re
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


def _confined(got):
    return {r["video_id"]: (r["error_stage"], r["error_type"], r["error_message"] or "") for r in got}


def test_rows_outside_the_manifest_folder_are_error_rows(tmp_path):
    """Default confinement: the manifest's own folder. Absolute paths elsewhere, ``..`` escapes,
    ``file://`` elsewhere, another scheme's bucket and symlinks leaving the folder are rejected at
    the manifest stage naming the row, the uri and the key; paths inside (also through an
    inside symlink, and a ``..`` that stays inside) pass."""
    uploads, outside = tmp_path / "uploads", tmp_path / "outside"
    (uploads / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    (uploads / "a.mp4").write_bytes(b"x")
    (uploads / "leak.mp4").symlink_to(outside / "secret.mp4")
    (uploads / "leakdir").symlink_to(outside)
    (uploads / "alias.mp4").symlink_to(uploads / "a.mp4")
    (tmp_path / "uploads-evil").mkdir()  # shares the folder's name as a string prefix
    rows = [
        {"video_id": "ok", "uri": "a.mp4"},
        {"video_id": "ok-abs", "uri": str(uploads / "sub" / ".." / "a.mp4")},
        {"video_id": "ok-alias", "uri": "alias.mp4"},
        {"video_id": "passwd", "uri": "/etc/passwd"},
        {"video_id": "dotdot", "uri": "../outside/secret.mp4"},
        {"video_id": "deep-dotdot", "uri": "sub/../../outside/secret.mp4"},
        {"video_id": "file-uri", "uri": f"file://{outside}/secret.mp4"},
        {"video_id": "bucket", "uri": "s3://other-bucket/v.mp4"},
        {"video_id": "symlink", "uri": "leak.mp4"},
        {"video_id": "symlink-dir", "uri": "leakdir/secret.mp4"},
        {"video_id": "name-prefix", "uri": str(tmp_path / "uploads-evil" / "v.mp4")},
    ]
    got = _confined(read_source(str(_write_jsonl(uploads / "m.jsonl", rows)), today=TODAY))
    assert [vid for vid, (stage, _, _) in got.items() if stage is None] == ["ok", "ok-abs", "ok-alias"]
    for i, row in enumerate(rows[3:], start=4):
        stage, kind, message = got[row["video_id"]]
        assert (stage, kind) == ("manifest", "InputNotAllowed"), row
        assert f"manifest row {i}" in message and "input.allowed_uris" in message and str(uploads) in message
        assert row["uri"].split("/")[-1] in message
    # A directory SRC confines to itself (its symlink to a file elsewhere is refused).
    by_dir = _confined(read_source(str(uploads), today=TODAY))
    assert by_dir["a"][0] is None and by_dir["alias"][0] is None and by_dir["leak"][1] == "InputNotAllowed"


def test_allowed_uris_widen_and_narrow_confinement(tmp_path):
    """``input.allowed_uris`` replaces the default: listing the other folder admits it (and only
    it); an object prefix admits its keys, not a sibling bucket or prefix, nor a ``..`` escape."""
    from extract.config import Config, ConfigError
    from extract.pipeline.manifest import normalize_records

    other = tmp_path / "other"
    other.mkdir()
    rows = [{"video_id": "here", "uri": "a.mp4"}, {"video_id": "there", "uri": str(other / "b.mp4")}]
    manifest = str(_write_jsonl(tmp_path / "m.jsonl", rows))
    got = _confined(read_source(manifest, today=TODAY, allowed_uris=[str(other)]))
    assert got["here"][1] == "InputNotAllowed" and got["there"][0] is None
    assert f"outside input.allowed_uris: {other};" in got["here"][2]

    s3 = [{"video_id": "ok", "uri": "v.mp4"}, {"video_id": "ok-abs", "uri": "s3://uploads/day1/x/v.mp4"},
          {"video_id": "sibling", "uri": "s3://uploads/day10/v.mp4"},
          {"video_id": "bucket", "uri": "s3://uploads-private/day1/v.mp4"},
          {"video_id": "dotdot", "uri": "s3://uploads/day1/../day2/v.mp4"},
          {"video_id": "into", "uri": "s3://uploads/day2/../day1/v.mp4"},
          {"video_id": "gs", "uri": "gs://uploads/day1/v.mp4"}, {"video_id": "local", "uri": "/etc/passwd"}]
    got = _confined(normalize_records(s3, "s3://uploads/day1", TODAY))
    assert [vid for vid, (stage, _, _) in got.items() if stage is None] == ["ok", "ok-abs"]
    assert {got[vid][1] for vid in ("sibling", "bucket", "dotdot", "into", "gs", "local")} == {"InputNotAllowed"}
    got = _confined(normalize_records(s3, "s3://uploads/day1", TODAY, ["s3://uploads/day1/", "gs://uploads"]))
    assert got["gs"][0] is None and got["dotdot"][1] == "InputNotAllowed"

    for bad, words in (([], "at least one"), (["relative/dir"], "input.allowed_uris[0]"),
                       (["/ok", "http://host/x"], "input.allowed_uris[1]")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            Config().replace(**{"input.allowed_uris": bad})
    assert Config().replace(**{"input.allowed_uris": ["s3://b/p/", "/data"]}).input.allowed_uris == ("s3://b/p/", "/data")
