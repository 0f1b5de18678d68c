"""Schema evolution: an output whose Delta tables were written under an older schema version of
ours is evolved in place by the next real run (stages in process, tiny models, no Ray); other
schema differences still fail before any video is read.

The older schemas are rebuilt from ``schemas/*.json``: each table minus its trailing nullable
columns (what the evolution rule lets a new version add), so the test follows the JSON.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import REPO

from extract.config import load_config
from extract.pipeline.job import run_job
from extract.pipeline.executor import Backend
from extract.pipeline.ray_backend import TimedStage
from extract.rows import rows_to_batch
from extract.stages.registry import stage_classes
from extract.tables import schemas as schemas_module
from extract.tables.catalog import Catalog, OutputLayoutError
from extract.tables.schemas import SCHEMA_DIR, TABLES, get_table_schema

LOCAL_YAML = REPO / "jobs" / "configs" / "local.yaml"


def older_schemas(folder: Path) -> dict[str, list[str]]:
    """Write each table's schema JSON without its trailing nullable columns (version one lower
    where columns went) into ``folder``; returns ``{table: dropped columns}``."""
    dropped = {}
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        data = json.loads((SCHEMA_DIR / f"{table}.json").read_text())
        columns = list(data["columns"])
        gone = []
        while columns and columns[-1]["nullable"]:
            gone.insert(0, columns.pop()["name"])
        if gone:
            data["columns"], data["version"] = columns, max(1, int(data["version"]) - 1)
        dropped[table] = gone
        (folder / f"{table}.json").write_text(json.dumps(data))
    return dropped


@pytest.fixture()
def schema_dir(monkeypatch):
    """``use(folder)`` makes every module read the table schemas from ``folder`` (None: ours)."""
    def use(folder: Path | None) -> None:
        monkeypatch.setattr(schemas_module, "SCHEMA_DIR", folder or SCHEMA_DIR)
        get_table_schema.cache_clear()

    yield use
    monkeypatch.undo()
    get_table_schema.cache_clear()


def inline_backend(calls: list[int]) -> Backend:
    """A backend running the real stages in this process, one batch (counts its calls)."""
    def execute(rows, config, stages=None):
        calls.append(len(rows))
        built = [TimedStage(cls, name, config) for name, cls in (stages or stage_classes()).items()]
        batch = rows_to_batch(rows)
        try:
            for stage in built:
                batch = stage(batch)
        finally:
            built[0].stage.close()  # the decode stage's children
        return iter([batch]), {"inline": True}
    return Backend(execute)


def manifest(path: Path, samples: Path, ids: set[str]) -> Path:
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    lines = []
    for record in records:
        if record["video_id"] in ids:
            record["uri"] = str((samples.parent / record["uri"]).resolve())
            lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def config(tiny_config, small_samples, tmp_path):
    allowed = json.dumps([str(small_samples.parent.resolve()), str(tmp_path)])
    return load_config([LOCAL_YAML, tiny_config], ["limits.max_error_rate=1.0", f"input.allowed_uris={allowed}"])


def test_a_run_evolves_older_tables_and_old_rows_read_null(tmp_path, schema_dir, small_samples, config, caplog):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    old_dir = tmp_path / "old_schemas"
    dropped = older_schemas(old_dir)
    assert dropped["videos"] and dropped["frame_embeddings"]  # the JSON has columns added since v1
    dst = tmp_path / "out"
    calls: list[int] = []
    # 1. an output written by the older version: a real run under the older schemas
    schema_dir(old_dir)
    first = run_job(str(manifest(tmp_path / "m1.jsonl", small_samples, {"silent_loop"})), str(dst), config,
                    progress=False, backend=inline_backend(calls), run_id="old")
    for table in ("videos", "frame_embeddings"):
        names = pa.schema(DeltaTable(str(dst / table)).schema().to_arrow()).names
        assert not set(dropped[table]) & set(names), table
    old_versions = {t: get_table_schema(t).version for t in TABLES}
    schema_dir(None)
    assert first["counts"]["ok"] == 1

    # 2. this version's run into it: evolves, then processes the two new videos
    before = {t: DeltaTable(str(dst / t)).version() for t in TABLES}
    caplog.set_level(logging.INFO, logger="extract")
    caplog.clear()
    record = run_job(str(manifest(tmp_path / "m2.jsonl", small_samples, {"beach_day", "portrait_dance"})),
                     str(dst), config, progress=False, backend=inline_backend(calls), run_id="new")
    assert calls == [1, 2] and record["counts"]["ok"] == 2 and record["counts"]["skipped"] == 0
    evolved = {e["table"]: e for e in record["schema_evolution"]}
    assert set(evolved) == {t for t in TABLES if dropped[t]}
    for table, e in evolved.items():
        assert e["columns"] == dropped[table], table
        assert (e["from_version"], e["to_version"]) == (old_versions[table], get_table_schema(table).version)
        assert before[table] < e["delta_version"] < record["delta_versions"][table]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("schema evolution:")]
    assert len(lines) == 1 and all(f"{t} v{old_versions[t]} -> v{get_table_schema(t).version}" in lines[0]
                                   for t in evolved), lines
    saved = json.loads((dst / "_runs" / "new.json").read_text())
    assert saved["schema_evolution"] == record["schema_evolution"]

    catalog = Catalog(str(dst))
    catalog.check()
    for table in TABLES:
        delta = catalog.delta(table)
        assert get_table_schema(table).schema_problem(pa.schema(delta.schema().to_arrow())) is None, table
        assert f"extract schema version {get_table_schema(table).version}" in delta.metadata().description
    videos = catalog.read("videos")
    assert sorted(videos["video_id"].to_pylist()) == ["beach_day", "portrait_dance", "silent_loop"]
    old_rows = pc.equal(videos["run_id"], "old")
    for name in dropped["videos"]:
        assert videos.filter(old_rows)[name].null_count == 1, name
    frames = catalog.read("frame_embeddings")
    old_frames = frames.filter(pc.equal(frames["run_id"], "old"))
    assert old_frames.num_rows > 0 and old_frames["phash"].null_count == old_frames.num_rows
    new_frames = frames.filter(pc.equal(frames["run_id"], "new"))
    assert new_frames.num_rows > 0 and new_frames["phash"].null_count == 0  # written into the evolved table

    # every engine reads the same rows, and the old rows null in the added columns
    for table in TABLES:
        uri = str(dst / table)
        want = catalog.read(table).num_rows
        dataset = DeltaTable(uri).to_pyarrow_dataset()  # noqa: F841 - DuckDB scans it by name
        assert duckdb.sql("SELECT count(*) FROM dataset").fetchall()[0][0] == want, table
        assert pl.scan_delta(uri).select(pl.len()).collect().item() == want, table
        assert DeltaTable(uri).count() == want, table
        for name in dropped[table]:
            want_null = catalog.read(table).filter(pc.equal(catalog.read(table)["run_id"], "old"))[name].null_count
            # (not ``WHERE {name} IS NULL``: delta-rs 1.6.6 turns the missing statistics of old files
            # into a guarantee that prunes them; see extract/tables/evolution.py)
            assert duckdb.sql(f"SELECT count(*) FILTER (WHERE {name} IS NULL) FROM dataset WHERE run_id = 'old'"
                              ).fetchall()[0][0] == want_null, (table, name)
            assert pl.scan_delta(uri).filter((pl.col("run_id") == "old") & pl.col(name).is_null()) \
                .select(pl.len()).collect().item() == want_null, (table, name)
            got = DeltaTable(uri).to_pyarrow_table()
            assert got.filter(pc.equal(got["run_id"], "old"))[name].null_count == want_null, (table, name)

    # the old run's versions still read as they were, our columns null
    pinned = Catalog(str(dst), as_of="old")
    old_videos = pinned.read("videos", ["video_id", dropped["videos"][0]])
    assert old_videos.num_rows == 1 and old_videos[dropped["videos"][0]].null_count == 1

    # the old video again: committed without an input identity, so its bytes decide: the same
    # bytes, so its committed features are reused (nothing decoded) and it gets an identity
    again = run_job(str(manifest(tmp_path / "m3.jsonl", small_samples, {"silent_loop"})), str(dst), config,
                    progress=False, backend=inline_backend(calls), run_id="reuse")
    assert again["counts"]["processed_by_reason"] == {"input_changed": 1} and again["counts"]["reused"] == 1
    row = Catalog(str(dst)).read("videos", ["video_id", "source_bytes", "reused_from"],
                                 pc.field("video_id") == "silent_loop").to_pylist()
    assert row == [{"video_id": "silent_loop", "source_bytes": (small_samples.parent / "silent_loop.mp4").stat().st_size,
                    "reused_from": "silent_loop"}]

    # 3. nothing left to evolve
    again = run_job(str(tmp_path / "m2.jsonl"), str(dst), config, progress=False,
                    backend=inline_backend(calls), run_id="again")
    assert again["schema_evolution"] == [] and calls == [1, 2, 1]


def test_other_schema_differences_fail_before_any_video_is_read(tmp_path, small_samples, config):
    from deltalake import write_deltalake

    calls: list[int] = []
    src = str(manifest(tmp_path / "m.jsonl", small_samples, {"silent_loop"}))
    changed = tmp_path / "changed"
    ours = get_table_schema("hashtags").delta_schema(8)
    retyped = pa.schema([pa.field(f.name, pa.float64(), f.nullable) if f.name == "position" else f for f in ours])
    write_deltalake(str(changed / "hashtags"), retyped.empty_table(), partition_by=["dt"])
    with pytest.raises(OutputLayoutError, match=r"table hashtags is a Delta table with another schema "
                                                r"\(position is double, expected int"):
        run_job(src, str(changed), config, progress=False, backend=inline_backend(calls))

    dropped = tmp_path / "dropped"
    keep = [f for f in get_table_schema("errors").delta_schema(8) if f.name != "message"]
    write_deltalake(str(dropped / "errors"), pa.schema(keep).empty_table(), partition_by=["dt"])
    with pytest.raises(OutputLayoutError, match=r"table errors .*missing columns \['message'\], which are not "
                                                r"nullable.*move errors/ away"):
        run_job(src, str(dropped), config, progress=False, backend=inline_backend(calls))
    assert calls == [] and not (changed / "videos").exists() and not (dropped / "videos").exists()


def test_each_stage_adds_exactly_the_columns_its_registry_entry_declares(config, small_samples, tmp_path):
    """The stages in run order on two real clips (speech; silence), tiny models: each reads
    columns it was given and adds exactly its declared ``outputs`` and ``carries``."""
    from extract.pipeline.manifest import read_source
    from extract.stages.registry import SOURCE_COLUMNS, STAGE_SPECS

    src = manifest(tmp_path / "m.jsonl", small_samples, {"portrait_dance", "silent_loop"})
    rows = read_source(str(src), config.storage, allowed_uris=config.input.allowed_uris)
    for row in rows:
        row["reuse_candidates"] = None  # set by planning (extract.tables.planning.attach_candidates)
    batch = rows_to_batch(rows)
    assert set(batch) == set(SOURCE_COLUMNS)
    for spec in STAGE_SPECS:
        stage = spec.load()(config)
        try:
            out = stage(dict(batch))
        finally:
            getattr(stage, "close", lambda: None)()
        assert set(spec.inputs) <= set(batch), spec.name
        assert set(out) - set(batch) == set(spec.columns), (spec.name, set(out) - set(batch) ^ set(spec.columns))
        batch = out
    assert all(v is None for v in batch["error_stage"]), batch["error_message"]
