"""Tables, staging, the Delta commit protocol, catalog, re-processing, time travel, forget,
bad outputs, maintenance — no Ray, no models."""

import json
import re
import threading
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract.tables import writer as writer_module
from extract.tables.catalog import Catalog, OutputLayoutError
from extract.rows import mark_failed
from extract.tables.schemas import TABLES, get_table_schema
from extract.tables.records import TableContext, rows_to_tables
from extract.tables.forget import forget_videos
from extract.tables.writer import (COMMIT_ORDER, CommitIncompleteError, ConcurrentRunError, RunWriter, commit_run,
                                   ensure_tables, reprocessing_predicate, roll_forward)

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


def prepare(dst, rows, run_id, max_rows_per_file=200_000):
    """What ``run_job`` does before the commit: roll forward, plan against the tables, stage."""
    catalog = Catalog(str(dst))
    catalog.check()
    roll_forward(catalog)
    base = ensure_tables(catalog, D)
    outcomes = catalog.outcomes(rows)
    writer = RunWriter(catalog, run_id, D, base, catalog.next_seq, max_rows_per_file)
    writer.write(rows_to_tables(rows, ctx(run_id)))
    predicate = reprocessing_predicate(outcomes, {r["video_id"] for r in rows}, writer.dts)
    return writer, predicate


def write_run(dst, rows, run_id, record=None):
    writer, predicate = prepare(dst, rows, run_id)
    record = record or {"run_id": run_id, "kind": "run", "status": "committed"}
    return commit_run(writer, record, predicate), Catalog(str(dst))


def every_video_once(catalog):
    """Ids of videos ∪ errors (asserting none twice) and frames per video (matching n_frames)."""
    videos, errors = catalog.read("videos"), catalog.read("errors")
    ids = (videos["video_id"].to_pylist() if videos else []) + (errors["video_id"].to_pylist() if errors else [])
    assert len(ids) == len(set(ids)), Counter(ids)
    frames = Counter(catalog.read("frame_embeddings")["video_id"].to_pylist()) if videos else Counter()
    assert frames == Counter({v["video_id"]: v["n_frames"] for v in videos.to_pylist() if v["n_frames"]}) \
        if videos else not frames
    return sorted(ids)


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



def test_commit_writes_every_delta_table_and_the_run_record(tmp_path):
    from deltalake import DeltaTable

    record, catalog = write_run(tmp_path, [finished_row("a"), finished_row("b", dt="2026-11-23")], "r1")
    saved = json.loads((tmp_path / "_runs" / "r1.json").read_text())
    assert saved["seq"] == 1 and set(saved["delta_versions"]) == set(TABLES)
    assert not (tmp_path / "_staging" / "r1").exists()
    for table in TABLES:
        delta = DeltaTable(str(tmp_path / table))
        assert delta.metadata().partition_columns == ["dt"]
        assert delta.version() == saved["delta_versions"][table]
        assert delta.transaction_version("extract") == 1
        schema = pa.schema(delta.schema().to_arrow())
        assert get_table_schema(table).schema_problem(schema) is None
    emb = pa.schema(DeltaTable(str(tmp_path / "frame_embeddings")).schema().to_arrow()).field("embedding")
    assert pa.types.is_list(emb.type) and emb.metadata[b"extract.embedding_dim"] == str(D).encode()
    files = list((tmp_path / "videos").rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"dt=2026-11-23", "dt=2026-11-24"}
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert sorted(catalog.read("videos")["dt"].to_pylist()) == ["2026-11-23", "2026-11-24"]
    frames = catalog.read("frame_embeddings")
    assert frames.schema.field("embedding").type == pa.list_(pa.float32(), D)  # fixed width on read


def test_embedding_width_is_checked_on_write_and_on_read(tmp_path):
    write_run(tmp_path, [finished_row("a")], "r1")
    with pytest.raises(OutputLayoutError, match=f"table videos holds embeddings of {D} values but this run.s CLIP model makes {D + 4}"):
        ensure_tables(Catalog(str(tmp_path)), D + 4)
    # A foreign writer appends a wrong-width embedding: Catalog refuses to hand it back.
    from deltalake import write_deltalake

    bad = Catalog(str(tmp_path)).read("frame_embeddings").slice(0, 1)
    bad = bad.set_column(bad.column_names.index("embedding"), "embedding",
                         pa.array([[0.0] * (D - 1)], pa.list_(pa.float32())))
    write_deltalake(str(tmp_path / "frame_embeddings"), bad, mode="append")
    from deltalake import DeltaTable

    catalog = Catalog(str(tmp_path))
    catalog.versions["frame_embeddings"] = DeltaTable(str(tmp_path / "frame_embeddings")).version()
    with pytest.raises(ValueError, match=f"embeddings of {D - 1} values; the table's width is {D}"):
        catalog.read("frame_embeddings")


def test_write_timing_includes_the_commit(tmp_path, monkeypatch):
    """The record's write time counts the final flush and the table commits."""
    import time

    writer, predicate = prepare(tmp_path, [finished_row("a")], "r1")
    assert writer.files == {}  # below a row group: nothing staged yet
    real = writer_module._commit_table

    def slow(*args, **kwargs):
        time.sleep(0.05)
        real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "_commit_table", slow)
    record = commit_run(writer, {"run_id": "r1", "timings_s": {"write": 0.01, "decode": 1.0}}, predicate)
    assert record["timings_s"]["write"] >= 0.01 + 0.05 * len(TABLES)
    assert record["timings_s"]["decode"] == 1.0
    assert json.loads((tmp_path / "_runs" / "r1.json").read_text())["timings_s"] == record["timings_s"]
    assert "timings_s" not in write_run(tmp_path / "other", [finished_row("b")], "r2")[0]


def test_reprocessing_replaces_a_videos_rows_in_one_commit_per_table(tmp_path):
    from deltalake import DeltaTable

    write_run(tmp_path, [finished_row("a", tags=("x", "y")), finished_row("b")], "r1")
    before = {t: DeltaTable(str(tmp_path / t)).version() for t in TABLES}
    record, catalog = write_run(tmp_path, [finished_row("a", n_frames=5, tags=("x",))], "r2")
    assert every_video_once(catalog) == ["a", "b"]
    assert Counter(catalog.read("frame_embeddings")["video_id"].to_pylist()) == {"a": 5, "b": 3}
    assert Counter(catalog.read("hashtags")["video_id"].to_pylist()) == {"a": 1, "b": 1}  # "y" is gone
    assert {t: v - before[t] for t, v in record["delta_versions"].items()} == {t: 1 for t in TABLES}
    assert set(catalog.read("videos", ["run_id"])["run_id"].to_pylist()) == {"r1", "r2"}


def test_error_then_success_replaces_the_error_row(tmp_path):
    write_run(tmp_path, [finished_row("a", failed=True)], "r1")
    _, catalog = write_run(tmp_path, [finished_row("a")], "r2")
    assert catalog.read("errors").num_rows == 0
    assert catalog.outcomes()["a"]["status"] == "ok"
    _, catalog = write_run(tmp_path, [finished_row("a", failed=True)], "r3")  # and back again
    assert catalog.read("videos").num_rows == 0 and every_video_once(catalog) == ["a"]


def test_an_undated_video_committed_on_another_run_date_is_found_and_replaced(tmp_path):
    """Rows without upload_ts get dt = the run date: planning looks for their ids everywhere."""
    old = finished_row("u", dt="2026-11-20")
    old["upload_ts"] = None
    write_run(tmp_path, [old], "r1")
    new = finished_row("u", dt="2026-11-24", n_frames=2)
    new["upload_ts"] = None
    catalog = Catalog(str(tmp_path))
    assert catalog.outcomes([new])["u"]["dt"] == "2026-11-20"
    _, catalog = write_run(tmp_path, [new], "r2")
    assert every_video_once(catalog) == ["u"] and catalog.read("videos")["dt"].to_pylist() == ["2026-11-24"]


def test_crash_after_two_table_commits_is_rolled_forward(tmp_path, monkeypatch):
    write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    writer, predicate = prepare(tmp_path, [finished_row("b", n_frames=4), finished_row("c")], "r2")
    real, calls = writer_module._commit_table, []

    def crash_on_third(catalog, delta, table, marker, retries):
        if len(calls) == 2:
            raise OSError("driver killed")
        calls.append(table)
        real(catalog, delta, table, marker, retries)

    monkeypatch.setattr(writer_module, "_commit_table", crash_on_third)
    with pytest.raises(CommitIncompleteError, match="driver killed") as failure:
        commit_run(writer, {"run_id": "r2", "kind": "run", "status": "committed"}, predicate)
    monkeypatch.setattr(writer_module, "_commit_table", real)
    assert calls == failure.value.published == list(COMMIT_ORDER[:2])
    catalog = Catalog(str(tmp_path))
    assert catalog.run["run_id"] == "r1" and every_video_once(catalog) == ["a", "b"]  # still pinned at r1
    # The next run (another video, and b again) finishes r2 first, each table exactly once.
    record, catalog = write_run(tmp_path, [finished_row("d"), finished_row("b", n_frames=2)], "r3")
    assert record["seq"] == 3 and [r["run_id"] for r in catalog.runs] == ["r1", "r2", "r3"]
    assert every_video_once(catalog) == ["a", "b", "c", "d"]
    assert Counter(catalog.read("frame_embeddings")["video_id"].to_pylist())["b"] == 2
    for table in TABLES:
        from deltalake import DeltaTable

        history = DeltaTable(str(tmp_path / table)).history()
        assert Counter(h.get("extract.run_id") for h in history)["r2"] == 1, table
    assert every_video_once(Catalog(str(tmp_path), as_of="r2")) == ["a", "b", "c"]


def test_crash_before_the_commit_publishes_nothing(tmp_path):
    write_run(tmp_path, [finished_row("a")], "r1")
    writer, _ = prepare(tmp_path, [finished_row("z")], "r2")
    writer.close()
    assert (tmp_path / "_staging" / "r2").exists()
    assert roll_forward(Catalog(str(tmp_path))) == []  # no pending commit: nothing to finish
    assert every_video_once(Catalog(str(tmp_path))) == ["a"]
    writer.abort()
    assert not (tmp_path / "_staging" / "r2").exists()


def test_two_concurrent_writers_one_commits_the_other_publishes_nothing(tmp_path):
    from deltalake import DeltaTable

    write_run(tmp_path, [finished_row("a")], "r0")
    first, p1 = prepare(tmp_path, [finished_row("b")], "r1")
    second, p2 = prepare(tmp_path, [finished_row("b"), finished_row("c")], "r2")  # same seq, same base
    results = {}

    def commit(writer, predicate):
        try:
            results[writer.run_id] = commit_run(writer, {"run_id": writer.run_id, "kind": "run"}, predicate)
        except ConcurrentRunError as exc:
            results[writer.run_id] = exc

    threads = [threading.Thread(target=commit, args=args) for args in ((first, p1), (second, p2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [rid for rid, r in results.items() if isinstance(r, dict)]
    lost = [rid for rid, r in results.items() if isinstance(r, ConcurrentRunError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert "published nothing" in str(results[lost[0]])
    catalog = Catalog(str(tmp_path))
    assert [r["run_id"] for r in catalog.runs] == ["r0", won[0]]
    assert every_video_once(catalog) == (["a", "b"] if won == ["r1"] else ["a", "b", "c"])
    for table in TABLES:
        assert lost[0] not in {h.get("extract.run_id") for h in DeltaTable(str(tmp_path / table)).history()}
    assert not (tmp_path / "_staging" / lost[0]).exists()
    assert roll_forward(Catalog(str(tmp_path))) == []


def test_time_travel_reads_the_tables_as_of_a_run(tmp_path):
    r1, _ = write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    write_run(tmp_path, [finished_row("a", n_frames=6), finished_row("c")], "r2")
    latest = Catalog(str(tmp_path))
    assert every_video_once(latest) == ["a", "b", "c"] and latest.read("frame_embeddings").num_rows == 12
    for as_of in ("r1", 1, "1", r1["committed_at"], datetime.fromisoformat(r1["committed_at"])):
        old = Catalog(str(tmp_path), as_of=as_of)
        assert old.run["run_id"] == "r1", as_of
        assert every_video_once(old) == ["a", "b"] and old.read("frame_embeddings").num_rows == 6
        assert old.outcomes()["a"]["status"] == "ok" and "c" not in old.outcomes()
    with pytest.raises(ValueError, match="no run committed at or before"):
        Catalog(str(tmp_path), as_of="2000-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="no committed run with sequence number 7"):
        Catalog(str(tmp_path), as_of=7)


def test_forget_deletes_the_rows_and_every_file_holding_them(tmp_path):
    write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    write_run(tmp_path, [finished_row("a", n_frames=4)], "r2")  # older files of a stay for time travel
    record = forget_videos(Catalog(str(tmp_path)), {"a", "nope"}, "r3")
    assert record["counts"] == {"forgotten": 2, "found": 1} and record["files_deleted"]
    catalog = Catalog(str(tmp_path))
    assert every_video_once(catalog) == ["b"]
    for table in TABLES:
        assert "a" not in catalog.read(table)["video_id"].to_pylist()
    assert catalog.outcomes()["a"]["status"] == "forgotten" and catalog.outcomes()["b"]["status"] == "ok"
    for path in tmp_path.rglob("*.parquet"):  # data files, staging and the Delta checkpoints
        data = pq.read_table(path)
        if "video_id" in data.column_names:
            assert "a" not in data["video_id"].to_pylist(), path
        else:
            assert '"a"' not in json.dumps(data.to_pylist(), default=str), path
    # the same upload stays forgotten; a new upload of the id is processed again
    row = finished_row("a")
    assert Catalog(str(tmp_path)).outcomes([row])["a"] == {"status": "forgotten", "video_id": "a", "uri": row["uri"]}


def test_outputs_that_are_not_our_tables_fail_before_any_work(tmp_path):
    from deltalake import write_deltalake

    from extract.tables.migration import migrate

    foreign = tmp_path / "foreign"
    write_deltalake(str(foreign / "videos"), pa.table({"video_id": ["x"], "score": [1.0]}))
    with pytest.raises(OutputLayoutError, match=r"table videos is a Delta table with another schema.*missing columns"):
        Catalog(str(foreign)).check()

    corrupt = tmp_path / "corrupt"
    write_run(corrupt, [finished_row("a")], "r1")
    for log in (corrupt / "hashtags" / "_delta_log").glob("*.json"):
        log.write_text("{not json")
    with pytest.raises(OutputLayoutError, match=r"table hashtags: its Delta log cannot be read.*restore"):
        Catalog(str(corrupt)).check()

    old = tmp_path / "old"
    (old / "videos" / "dt=2026-11-24").mkdir(parents=True)
    rows = write_run(tmp_path / "ref", [finished_row("a"), finished_row("b", failed=True)], "r1")[1]
    added, null_embeddings = [], 0
    for table in TABLES:  # the previous layout: Hive folders of plain Parquet plus run manifests
        data = rows.read(table)
        for dt in set(data["dt"].to_pylist()):
            part = old / table / f"dt={dt}"
            part.mkdir(parents=True, exist_ok=True)
            part_rows = data.filter(pa.compute.equal(data["dt"], dt)).drop(["dt"])
            if table == "videos":  # written under an older schema version: without the later nullable columns
                later = [n for n in reversed(part_rows.column_names) if part_rows[n].null_count == part_rows.num_rows]
                part_rows = part_rows.drop(later[:3])
                assert later[:3] and set(later[:3]) <= {c["name"] for c in get_table_schema(table).columns
                                                        if c["nullable"]}
            pq.write_table(part_rows, part / "part-r1-0.parquet")
            added.append(f"{table}/dt={dt}/part-r1-0.parquet")
            null_embeddings += sum(part_rows[f.name].null_count for f in part_rows.schema
                                   if pa.types.is_fixed_size_list(f.type))
    # The old layout's embeddings are fixed_size_list, null where a stage failed (pyarrow 25's
    # Parquet reader cannot read such a null back: migrate decodes the old files with Polars).
    assert null_embeddings
    (old / "videos" / "dt=2026-11-24" / "part-crashed-0.parquet").write_bytes(b"leftover of a crashed run")
    (old / "_runs").mkdir()
    (old / "_runs" / "r1.json").write_text(json.dumps({"run_id": "r1", "kind": "run", "status": "committed",
                                                       "files_added": added, "committed_at": "2026-11-25T00:00:00"}))
    with pytest.raises(OutputLayoutError, match=r"table \w+ holds Parquet files without a Delta log.*extract migrate"):
        Catalog(str(old)).check()
    report = migrate(str(old), "m1")
    catalog = Catalog(str(old))
    catalog.check()
    for table in TABLES:
        assert catalog.read(table).sort_by("video_id").drop(["dt"]).to_pylist() == \
            rows.read(table).sort_by("video_id").drop(["dt"]).to_pylist(), table
    assert report["rows"]["videos"] == 1 and not list((old / "videos").glob("dt=*/part-*-0.parquet"))


def test_maintain_compacts_checkpoints_and_keeps_the_rows(tmp_path):
    from extract.tables.maintenance import maintain

    for i in range(4):
        write_run(tmp_path, [finished_row(f"v{i}")], f"r{i}")
    before = Catalog(str(tmp_path))
    n_files = len(before.file_actions("frame_embeddings"))
    record = maintain(before, retention_hours=0, run_id="m1")
    after = Catalog(str(tmp_path))
    assert after.run["run_id"] == "m1" and after.run["kind"] == "maintain"
    assert len(after.file_actions("frame_embeddings")) < n_files
    assert record["maintenance"]["frame_embeddings"]["files_vacuumed"] >= n_files
    assert every_video_once(after) == ["v0", "v1", "v2", "v3"]
    assert list((tmp_path / "videos" / "_delta_log").glob("*.checkpoint.parquet"))
    # the next run plans and commits on top of the maintained tables
    _, catalog = write_run(tmp_path, [finished_row("v0", n_frames=2)], "r9")
    assert every_video_once(catalog) == ["v0", "v1", "v2", "v3"]


@pytest.mark.parametrize("max_rows", [2, 1000])
def test_staged_files_roll_over(tmp_path, max_rows):
    writer, _ = prepare(tmp_path, [], "r1", max_rows_per_file=max_rows)
    for i in range(3):  # frames flush per row group only at close; force flushes per write
        writer.write(rows_to_tables([finished_row(f"v{i}")], ctx()))
        writer._flush("frame_embeddings")
    staged = writer.close()
    assert len(staged["frame_embeddings"]) == (3 if max_rows == 2 else 1)
    writer.abort()


def test_forgotten_ids_stay_forgotten_unless_their_uri_changes(tmp_path):
    from extract.tables.planning import plan_run

    write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    forget_videos(Catalog(str(tmp_path)), {"a"}, "r2")
    same, moved = finished_row("a"), finished_row("a")
    moved["uri"] = "/v/a-reuploaded.mp4"
    catalog = Catalog(str(tmp_path))
    assert plan_run([same], catalog.outcomes([same]), "fh").skipped == {"forgotten": 1}
    assert [r["uri"] for r in plan_run([moved], catalog.outcomes([moved]), "fh").todo] == [moved["uri"]]
    _, catalog = write_run(tmp_path, [moved], "r3")  # processed again: it has rows, not "forgotten"
    assert catalog.outcomes([moved])["a"]["status"] == "ok" and every_video_once(catalog) == ["a", "b"]


@pytest.mark.parametrize("video_id", ["o'brien", "back\\slash\\'", "日本語 🎬 video", "a\nb", "%_*"])
def test_hostile_ids_are_replaced_and_forgotten_exactly(tmp_path, video_id):
    """Ids go into Delta predicates as SQL string literals: quotes, backslashes, newlines and
    LIKE wildcards match only themselves."""
    write_run(tmp_path, [finished_row(video_id), finished_row("plain")], "r1")
    _, catalog = write_run(tmp_path, [finished_row(video_id, n_frames=2)], "r2")
    assert every_video_once(catalog) == sorted([video_id, "plain"])
    assert Counter(catalog.read("frame_embeddings")["video_id"].to_pylist()) == {video_id: 2, "plain": 3}
    forget_videos(catalog, {video_id}, "r3")
    assert every_video_once(Catalog(str(tmp_path))) == ["plain"]


def test_cli_inspect_as_of_maintain_and_migrate(tmp_path, capsys):
    from extract.cli import main

    write_run(tmp_path, [finished_row("a")], "r1")
    write_run(tmp_path, [finished_row("b"), finished_row("c", failed=True)], "r2")
    assert main(["inspect", str(tmp_path), "--as-of", "r1"]) == 0
    out = capsys.readouterr().out
    assert "as of: run r1 (seq 1" in out and re.search(r"^  videos +v1 +1 rows", out, re.M)
    assert main(["inspect", str(tmp_path)]) == 0
    assert "as of: run r2 (seq 2" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path), "--as-of", "nope"]) == 2
    assert main(["inspect", str(tmp_path), "--video", "a", "--as-of", "1"]) == 0
    assert "videos: 1 row\n" in capsys.readouterr().out
    assert main(["maintain", str(tmp_path), "--set", "storage.retention_hours=0"]) == 0
    assert f"maintained {len(TABLES)} tables" in capsys.readouterr().out
    assert every_video_once(Catalog(str(tmp_path))) == ["a", "b", "c"]
    assert main(["migrate", str(tmp_path)]) == 0  # already Delta: nothing to convert, rows kept
    assert every_video_once(Catalog(str(tmp_path))) == ["a", "b", "c"]


def test_the_run_record_skeleton_is_written_once():
    """Every table-writing command opens a RunSession, which alone builds the fields every run
    record has (issue 29): no other module spells them out."""
    import re
    from pathlib import Path

    package = Path(writer_module.__file__).resolve().parents[1]
    skeleton = re.compile(r"""["']status["']\s*:\s*["']committed["']|status\s*=\s*["']committed["']""")
    found = sorted(p.relative_to(package.parent).as_posix() for p in package.rglob("*.py")
                   if skeleton.search(p.read_text()))
    assert found == ["extract/tables/session.py"]


def test_every_table_command_records_the_common_fields(tmp_path):
    """run (here through the writer), forget, maintain: one skeleton, each its own kind."""
    from extract.tables.maintenance import maintain

    write_run(tmp_path, [finished_row("a"), finished_row("b")], "r1")
    forget_videos(Catalog(str(tmp_path)), {"a"}, "f1")
    maintain(Catalog(str(tmp_path)), retention_hours=0, run_id="m1")
    runs = {r["run_id"]: r for r in Catalog(str(tmp_path)).runs}
    common = {"run_id", "kind", "status", "started_at", "ended_at", "wall_s", "pipeline_version", "output", "seq",
              "delta_versions", "committed_at"}
    for run_id, kind in (("f1", "forget"), ("m1", "maintain")):
        assert common <= set(runs[run_id]), (kind, common - set(runs[run_id]))
        assert runs[run_id]["kind"] == kind and runs[run_id]["status"] == "committed"
        assert runs[run_id]["output"] == str(tmp_path)
    assert runs["m1"]["seq"] == runs["f1"]["seq"] + 1


def test_a_file_with_string_view_ids_is_found_by_forget(tmp_path):
    """delta-rs may rewrite a file (a DELETE) with ``video_id`` as string_view, which pyarrow's
    is_in has no kernel for: such a file mentioning a forgotten id is still found."""
    import pyarrow.fs as pafs

    from extract.tables.forget import file_mentions

    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"video_id": pa.array(["a", "b"], pa.string_view()), "x": [1, 2]}), path)
    fs = pafs.LocalFileSystem()
    assert file_mentions(fs, str(path), {"b"}) and not file_mentions(fs, str(path), {"c"})
