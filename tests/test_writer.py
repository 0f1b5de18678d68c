"""Tables, staged writing, commit protocol, catalog, supersede and forget — no Ray, no models."""

import json
from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest

from extract.rows import mark_failed
from extract.tables.catalog import Catalog
from extract.tables.records import TableContext, rows_to_tables
from extract.tables.schemas import TABLES, get_table_schema
from extract.tables.writer import RunWriter, commit_run, file_metadata, forget_videos, supersede

D = 8


def finished_row(video_id, n_frames=3, dt="2026-11-24", tags=("fyp",), failed=False):
    """A row as the last stage emits it (see extract.rows)."""
    rng = np.random.default_rng(abs(hash(video_id)) % 2**32)
    emb = rng.normal(size=(n_frames, D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    row = {
        "video_id": video_id, "uri": f"/v/{video_id}.mp4", "caption": "hi " + " ".join("#" + t for t in tags),
        "upload_ts": f"{dt}T10:00:00Z", "dt": dt, "error_stage": None, "error_type": None,
        "error_message": None, "retryable": None, "content_sha256": "ab" * 32, "file_bytes": 1000,
        "container": "mov,mp4", "video_codec": "h264", "audio_codec": None, "duration_s": 3.0,
        "width": 320, "height": 240, "rotation": 0, "fps": 15.0, "bitrate": 1000, "has_audio": False,
        "audio_s": 0.0, "n_frames": n_frames, "sampling_policy": "uniform", "pts_s": np.arange(n_frames, dtype=np.float32),
        "frame_embeddings": emb, "clip_embedding": emb.mean(0) / np.linalg.norm(emb.mean(0)), "clip_model": "tiny#abc",
        "frame_cos_mean": 0.5, "frame_cos_min": 0.1, "thumbnail_similarity": 0.7,
        "transcript_text": "", "language": None, "language_prob": None, "no_speech_prob": 1.0,
        "whisper_model": "tiny#def", "segments_json": json.dumps([
            {"start_s": 0.0, "end_s": 1.5, "text": "hello", "avg_logprob": -0.2, "no_speech_prob": 0.1,
             "compression_ratio": 1.0, "temperature": 0.0}]),
        "caption_length": 10, "n_hashtags": len(tags), "n_mentions": 0, "n_urls": 0, "n_emoji": 0,
        "hashtags": list(tags), "hashtag_ids": [123] * len(tags), "caption_embedding": np.zeros(0, np.float32),
        "caption_truncated": False, "hashtags_embedding": emb[0], "transcript_embedding": np.zeros(0, np.float32),
        "transcript_truncated": False, "hashtag_frame_similarity": 0.3, "caption_frame_similarity": None,
        "transcript_frame_similarity": None,
        "hashtags_json": json.dumps([{"position": i, "raw": t, "tag": t, "tag_id": 123, "source": "caption",
                                      "frame_similarity": 0.3, "tag_in_transcript": False} for i, t in enumerate(tags)]),
    }
    if failed:
        mark_failed(row, "decode", "DecodeError", f"{video_id!r}: broken", retryable=False)
    return row


def ctx(run_id="r1"):
    return TableContext(run_id=run_id, processed_at=datetime(2026, 11, 25, tzinfo=timezone.utc),
                        feature_hash="fh", embedding_dim=D)


def write_run(dst, rows, run_id, removed_ids=()):
    catalog = Catalog(str(dst))
    writer = RunWriter(catalog, run_id, lambda t: file_metadata(t, run_id=run_id, config_hash="c",
                                                                 feature_hash="fh", models={"clip": "tiny"}))
    writer.write(rows_to_tables(rows, ctx(run_id)))
    removed = supersede(catalog, writer, set(removed_ids))
    return commit_run(writer, {"run_id": run_id, "kind": "run", "status": "committed"}, removed), catalog


def test_rows_split_into_tables_with_registry_schemas():
    tables = rows_to_tables([finished_row("a"), finished_row("b", failed=True)], ctx())
    assert set(tables) == {("videos", "2026-11-24"), ("frame_embeddings", "2026-11-24"),
                           ("transcript_segments", "2026-11-24"), ("hashtags", "2026-11-24"),
                           ("errors", "2026-11-24")}
    for (name, _), tbl in tables.items():
        assert tbl.schema.equals(get_table_schema(name).arrow_schema(D))
    videos = tables[("videos", "2026-11-24")].to_pylist()
    assert [v["video_id"] for v in videos] == ["a"]
    assert videos[0]["caption_embedding"] is None  # empty array = null
    assert len(videos[0]["clip_embedding"]) == D and videos[0]["n_segments"] == 1
    frames = tables[("frame_embeddings", "2026-11-24")]
    assert frames.num_rows == 3 and frames["frame_index"].to_pylist() == [0, 1, 2]
    err = tables[("errors", "2026-11-24")].to_pylist()[0]
    assert (err["video_id"], err["stage"], err["error_type"], err["retryable"]) == ("b", "decode", "DecodeError", False)


def test_row_that_does_not_fit_becomes_an_error_not_a_crash():
    bad = finished_row("bad")
    bad["clip_embedding"] = np.ones(D + 1, np.float32)  # wrong width
    tables = rows_to_tables([finished_row("good"), bad], ctx())
    assert [v["video_id"] for v in tables[("videos", "2026-11-24")].to_pylist()] == ["good"]
    err = tables[("errors", "2026-11-24")].to_pylist()
    assert err[0]["video_id"] == "bad" and err[0]["stage"] == "write" and "clip_embedding" in err[0]["message"]


def test_commit_publishes_files_and_manifest(tmp_path):
    record, catalog = write_run(tmp_path, [finished_row("a"), finished_row("b", dt="2026-11-23")], "r1")
    assert (tmp_path / "_runs" / "r1.json").exists()
    assert not (tmp_path / "_staging" / "r1").exists()
    for rel in record["files_added"]:
        assert (tmp_path / rel).is_file()
        table = rel.split("/")[0]
        f = pq.ParquetFile(tmp_path / rel)
        assert f.schema_arrow.remove_metadata().equals(get_table_schema(table).arrow_schema(D))
        meta = f.schema_arrow.metadata
        assert meta[b"extract.schema_version"] == b"1" and meta[b"extract.run_id"] == b"r1"
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    assert sorted(catalog.read("videos")["dt"].to_pylist()) == ["2026-11-23", "2026-11-24"]


def test_write_timing_includes_final_flush_and_publish(tmp_path, monkeypatch):
    """Buffered rows are encoded in commit_run's flush; the manifest's write time counts it."""
    import time

    catalog = Catalog(str(tmp_path))
    writer = RunWriter(catalog, "r1", lambda t: file_metadata(t, run_id="r1", config_hash="c",
                                                               feature_hash="fh", models={}))
    writer.write(rows_to_tables([finished_row("a")], ctx("r1")))
    assert writer.files == {}  # below a row group: nothing written yet
    real_flush = RunWriter._flush

    def slow_flush(self, key):
        time.sleep(0.05)
        real_flush(self, key)

    monkeypatch.setattr(RunWriter, "_flush", slow_flush)
    record = commit_run(writer, {"run_id": "r1", "timings_s": {"write": 0.01, "decode": 1.0}}, [])
    n_files = len(record["files_added"])
    assert n_files >= 2
    assert record["timings_s"]["write"] >= 0.01 + 0.05 * n_files
    assert record["timings_s"]["decode"] == 1.0
    assert json.loads((tmp_path / "_runs" / "r1.json").read_text())["timings_s"] == record["timings_s"]
    # a manifest without timings (e.g. a forget) gets none
    assert "timings_s" not in write_run(tmp_path / "other", [finished_row("b")], "r2")[0]


def test_superseding_keeps_one_row_per_video(tmp_path):
    write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    record, catalog = write_run(tmp_path, [finished_row("a", n_frames=5)], "r2", removed_ids={"a"})
    videos = catalog.read("videos")
    assert sorted(videos["video_id"].to_pylist()) == ["a", "b"]
    per_video = {}
    for vid in catalog.read("frame_embeddings")["video_id"].to_pylist():
        per_video[vid] = per_video.get(vid, 0) + 1
    assert per_video == {"a": 5, "b": 3}  # only the new run's frames for a
    assert record["files_removed"] and all(not (tmp_path / p).exists() for p in record["files_removed"])


def test_error_then_success_replaces_error_row(tmp_path):
    write_run(tmp_path, [finished_row("a", failed=True)], "r1")
    _, catalog = write_run(tmp_path, [finished_row("a")], "r2", removed_ids={"a"})
    assert catalog.read("errors") is None
    assert catalog.outcomes()["a"]["status"] == "ok"


def test_crash_before_commit_publishes_nothing_and_is_cleaned(tmp_path):
    write_run(tmp_path, [finished_row("a")], "r1")
    catalog = Catalog(str(tmp_path))
    writer = RunWriter(catalog, "r2", lambda t: {})
    writer.write(rows_to_tables([finished_row("z")], ctx("r2")))
    writer.close()
    # Simulate a crash after publishing one file but before the manifest.
    orphan = tmp_path / "videos" / "dt=2026-11-24" / "part-r2-0.parquet"
    (tmp_path / "_staging" / "r2" / "videos" / "dt=2026-11-24" / "part-r2-0.parquet").rename(orphan)
    fresh = Catalog(str(tmp_path))
    assert fresh.read("videos")["video_id"].to_pylist() == ["a"]  # readers following _runs/
    removed = fresh.cleanup()
    assert not orphan.exists() and not (tmp_path / "_staging" / "r2").exists()
    assert any("part-r2-0" in r for r in removed)


def test_forget_removes_rows_everywhere_and_is_recorded(tmp_path):
    write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    catalog = Catalog(str(tmp_path))
    record = forget_videos(catalog, {"a", "nope"}, "r2")
    assert record["counts"] == {"forgotten": 2, "found": 1}
    for table in TABLES:
        data = catalog.read(table)
        assert data is None or "a" not in data["video_id"].to_pylist()
    assert catalog.outcomes()["a"]["status"] == "forgotten"
    assert catalog.outcomes()["b"]["status"] == "ok"


def test_abort_removes_staging(tmp_path):
    catalog = Catalog(str(tmp_path))
    writer = RunWriter(catalog, "r9", lambda t: {})
    writer.write(rows_to_tables([finished_row("a")], ctx("r9")))
    writer.close()
    assert (tmp_path / "_staging" / "r9").exists()
    writer.abort()
    assert not (tmp_path / "_staging" / "r9").exists()
    assert Catalog(str(tmp_path)).read("videos") is None


@pytest.mark.parametrize("max_rows", [2, 1000])
def test_files_roll_over(tmp_path, max_rows):
    catalog = Catalog(str(tmp_path))
    writer = RunWriter(catalog, "r1", lambda t: {}, max_rows_per_file=max_rows)
    for i in range(3):  # frames flush per row group only at close; force flushes per write
        writer.write(rows_to_tables([finished_row(f"v{i}")], ctx()))
        writer._flush(("frame_embeddings", "2026-11-24"))
    files = [f for f in writer.close() if f.startswith("frame_embeddings/")]
    assert len(files) == (3 if max_rows == 2 else 1)
