"""The schema registry is the only definition: files load, docs are generated from it,
and the evolution rule (add nullable columns only) keeps old files readable."""


import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_cli

from extract.tables.schemas import SCHEMA_DIR, TABLES, all_table_schemas, get_table_schema


def test_every_table_has_a_valid_schema_file():
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.json")) == sorted(TABLES)
    for schema in all_table_schemas():
        names = schema.column_names
        assert len(names) == len(set(names)), schema.name
        assert names[0] == "video_id" and "run_id" in names
        assert schema.partition_names == ["dt"]
        assert all(c["description"] for c in schema.columns), schema.name
        arrow = schema.arrow_schema(16)
        assert arrow.field("video_id").nullable is False


def test_embedding_columns_follow_dim():
    videos = get_table_schema("videos")
    assert videos.arrow_schema(512).field("clip_embedding").type == pa.list_(pa.float32(), 512)
    delta = videos.delta_schema(64)  # Delta has no fixed-size list: the width is metadata
    assert delta.field("clip_embedding").type == pa.list_(pa.float32())
    assert delta.field("clip_embedding").metadata == {b"extract.embedding_dim": b"64"}
    assert delta.names[-1] == "dt" and videos.schema_problem(delta) is None
    assert "expected" in videos.schema_problem(delta.set(0, pa.field("video_id", pa.int64())))


def test_unknown_table_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown table 'video'"):
        get_table_schema("video")


def test_docs_tables_md_is_generated_from_the_registry():
    generated = run_cli("schemas", "--markdown").stdout
    assert (REPO / "docs" / "TABLES.md").read_text() == generated, "run: extract schemas --markdown > docs/TABLES.md"


def test_old_schema_version_stays_readable_beside_a_new_one(tmp_path):
    """Evolution rule: version N+1 may only append nullable columns."""
    v1 = get_table_schema("errors").arrow_schema(8)
    v2 = v1.append(pa.field("worker_host", pa.string(), nullable=True))
    base = dict(video_id="a", uri="u", stage="decode", error_type="E", message="m", retryable=False,
                content_sha256=None, run_id="r", at=None)
    import datetime as _dt
    base["at"] = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    (tmp_path / "dt=2026-01-01").mkdir()
    pq.write_table(pa.Table.from_pylist([base], schema=v1), tmp_path / "dt=2026-01-01" / "old.parquet")
    pq.write_table(pa.Table.from_pylist([dict(base, video_id="b", worker_host="h1")], schema=v2),
                   tmp_path / "dt=2026-01-01" / "new.parquet")
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive", schema=v2).to_table()
    rows = {r["video_id"]: r for r in table.to_pylist()}
    assert rows["a"]["worker_host"] is None and rows["b"]["worker_host"] == "h1"


# The videos columns the driver sets on each record (extract.tables.records), not a stage.
DRIVER_COLUMNS = {"run_id", "feature_hash", "processed_at", "n_segments"}


def test_stage_columns_agree_with_the_schemas():
    """Each stage's declared columns (registry): it reads only what the manifest or an earlier
    stage gave, adds each column once, its ``outputs`` are ``videos`` columns and what it
    ``carries`` is not; every ``videos`` column comes from the manifest, a stage or the driver."""
    from extract.stages.registry import SOURCE_COLUMNS, STAGE_SPECS

    videos = set(get_table_schema("videos").column_names)
    produced = set(SOURCE_COLUMNS)
    for spec in STAGE_SPECS:
        assert set(spec.inputs) <= produced, (spec.name, set(spec.inputs) - produced)
        assert set(spec.outputs) <= videos, (spec.name, set(spec.outputs) - videos)
        assert not set(spec.carries) & videos, (spec.name, set(spec.carries) & videos)
        assert not set(spec.columns) & produced and len(set(spec.columns)) == len(spec.columns), spec.name
        produced |= set(spec.columns)
    assert videos <= produced | DRIVER_COLUMNS, videos - produced - DRIVER_COLUMNS
    assert not DRIVER_COLUMNS & produced


def test_schemas_stages_prints_the_declared_columns():
    proc = run_cli("schemas", "--stages")
    assert proc.returncode == 0, proc.stderr
    assert "- decode (``extract.stages.decode.DecodeStage``, cpu pool" in proc.stdout
    assert "adds to ``videos`` transcript_text" in proc.stdout and "carries ocr_lines_json" in proc.stdout
