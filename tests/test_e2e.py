"""End to end: `extract run` as a subprocess on sample clips with the tiny models.

Checks the output contract of DESIGN.md: every table present with the registry schema, each
input in exactly one of videos/errors, frame rows = n_frames, unit-norm finite embeddings,
no-audio clips with empty transcripts, DuckDB reads the Delta tables, reruns add nothing,
--overwrite keeps one row per video, directory / Parquet manifests give the same videos, and an
output that is not our Delta tables fails the run before any video is read.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from extract.tables.catalog import Catalog
from extract.tables.schemas import TABLES, get_table_schema


def _run(src, dst, tiny_config, *extra):
    proc = run_cli("run", "--input", str(src), "--output", str(dst), "--config", "jobs/configs/local.yaml",
                   "--config", str(tiny_config), "--no-progress", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _manifest_ids(manifest):
    return [json.loads(line)["video_id"] for line in manifest.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, small_samples, tiny_config):
    dst = tmp_path_factory.mktemp("out")
    proc = _run(small_samples, dst, tiny_config)
    return dst, proc


def test_tables_follow_the_contract(first_run, small_samples):
    dst, proc = first_run
    assert "committed" in proc.stdout and "videos" in proc.stdout
    catalog = Catalog(str(dst))
    ids = _manifest_ids(small_samples)
    videos = catalog.read("videos")
    errors = catalog.read("errors")
    got = videos["video_id"].to_pylist() + ([] if errors is None else errors["video_id"].to_pylist())
    assert sorted(got) == sorted(ids), "each input ends in exactly one of videos/errors"
    assert errors.num_rows == 0, errors.to_pylist()
    dim = videos.schema.field("clip_embedding").type.list_size
    for table in TABLES:
        delta = catalog.delta(table)
        assert get_table_schema(table).schema_problem(pa.schema(delta.schema().to_arrow())) is None
        assert delta.metadata().partition_columns == ["dt"]
        for rel in catalog.file_actions(table)["path"].to_pylist():
            assert rel.startswith("dt=") and rel.endswith(".parquet"), rel
    assert catalog.read("videos").schema.field("clip_embedding").type == pa.list_(pa.float32(), dim)

    frames = catalog.read("frame_embeddings")
    per_video = {}
    for vid in frames["video_id"].to_pylist():
        per_video[vid] = per_video.get(vid, 0) + 1
    for rec in videos.to_pylist():
        assert per_video[rec["video_id"]] == rec["n_frames"] >= 4
        emb = np.asarray(rec["clip_embedding"], np.float32)
        assert np.isfinite(emb).all() and abs(np.linalg.norm(emb) - 1) < 1e-3
        assert rec["duration_s"] > 0 and rec["width"] > 0
    emb = np.stack(frames["embedding"].to_numpy(zero_copy_only=False))
    assert np.isfinite(emb).all() and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)

    silent = videos.filter(pa.compute.equal(videos["video_id"], "silent_loop")).to_pylist()[0]
    assert silent["has_audio"] is False and silent["transcript_text"] == ""
    portrait = videos.filter(pa.compute.equal(videos["video_id"], "portrait_dance")).to_pylist()[0]
    assert portrait["hashtags"] == ["dance", "fyp"]

    run = json.loads(next((dst / "_runs").glob("*.json")).read_text())
    assert run["counts"]["processed"] == len(ids) and run["counts"]["ok"] == len(ids)
    audio_durations = [v["duration_s"] for v in videos.to_pylist() if v["has_audio"]]
    assert len(audio_durations) == 2  # silent_loop has none
    # Decoded AAC runs past the stream's end by part of a frame (1024 samples).
    assert run["audio_s"] == pytest.approx(sum(audio_durations), abs=0.05 * len(audio_durations))
    assert run["models"]["clip"] and run["models"]["whisper"]
    assert set(run["timings_s"]) >= {"decode", "whisper", "clip", "write"}


def test_duckdb_reads_the_delta_tables(first_run):
    duckdb = pytest.importorskip("duckdb")
    from deltalake import DeltaTable

    dst, _ = first_run
    con = duckdb.connect()
    videos = DeltaTable(str(dst / "videos")).to_pyarrow_dataset()  # noqa: F841 - DuckDB scans it by name
    frames = DeltaTable(str(dst / "frame_embeddings")).to_pyarrow_dataset()  # noqa: F841
    n, dts = con.execute("select count(*), count(distinct dt) from videos").fetchone()
    assert n == 3 and dts == 1
    (norm,) = con.execute(
        "select max(abs(list_dot_product(embedding::float[], embedding::float[]) - 1)) from frames").fetchone()
    assert norm < 1e-3


def test_rerun_adds_nothing_and_overwrite_keeps_one_row(first_run, small_samples, tiny_config, tmp_path):
    src_dst, _ = first_run
    dst = tmp_path / "out"
    shutil.copytree(src_dst, dst)
    def data_files():
        return sorted(p.relative_to(dst) for p in dst.rglob("*.parquet") if "_delta_log" not in p.parts)

    before = data_files()
    proc = _run(small_samples, dst, tiny_config)
    assert "skipped 3" in proc.stdout
    assert data_files() == before  # an empty commit per table: no data file added

    _run(small_samples, dst, tiny_config, "--overwrite")
    catalog = Catalog(str(dst))
    ids = catalog.read("videos")["video_id"].to_pylist()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    frames = catalog.read("frame_embeddings")
    n_frames = sum(catalog.read("videos")["n_frames"].to_pylist())
    assert frames.num_rows == n_frames  # old frame rows replaced, not duplicated
    live = {f"{t}/{p}" for t in TABLES for p in catalog.file_actions(t)["path"].to_pylist()}
    assert not live & {str(p) for p in before}  # the overwrite replaced every file of those videos
    first = Catalog(str(dst), as_of=1)  # time travel: the first run's rows, still readable
    assert sorted(first.read("videos")["run_id"].to_pylist()) == sorted(Catalog(str(src_dst)).read("videos")["run_id"]
                                                                       .to_pylist())


def test_an_output_that_is_not_our_tables_fails_before_any_video(small_samples, tiny_config, tmp_path):
    old = tmp_path / "old" / "videos" / "dt=2026-11-24"
    old.mkdir(parents=True)
    pq.write_table(pa.table({"video_id": ["x"]}), old / "part-r1-0.parquet")
    proc = run_cli("run", "--input", str(small_samples), "--output", str(tmp_path / "old"),
                   "--config", "jobs/configs/local.yaml", "--config", str(tiny_config), "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "table videos holds Parquet files without a Delta log" in proc.stderr
    assert f"extract migrate {tmp_path / 'old'}" in proc.stderr and "nothing was published" in proc.stderr
    assert "decode" not in proc.stderr.lower()


def test_directory_and_parquet_inputs_give_the_same_videos(first_run, small_samples, tiny_config, tmp_path):
    dst_dir, dst_pq = tmp_path / "from_dir", tmp_path / "from_parquet"
    _run(small_samples.parent, dst_dir, tiny_config)
    rows = [json.loads(line) for line in small_samples.read_text().splitlines()]
    manifest = small_samples.parent / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("video_id", "uri", "caption", "upload_ts")} for r in rows]),
                   manifest)
    _run(manifest, dst_pq, tiny_config)
    ref = Catalog(str(first_run[0])).read("videos").sort_by("video_id")
    for dst in (dst_dir, dst_pq):
        got = Catalog(str(dst)).read("videos").sort_by("video_id")
        assert got["video_id"].to_pylist() == ref["video_id"].to_pylist()
        assert got["caption"].to_pylist() == ref["caption"].to_pylist()
        assert got["n_frames"].to_pylist() == ref["n_frames"].to_pylist()
        a = np.stack(got["clip_embedding"].to_numpy(zero_copy_only=False))
        b = np.stack(ref["clip_embedding"].to_numpy(zero_copy_only=False))
        assert np.abs(a - b).max() < 1e-4  # same video, same features


def test_bad_config_exits_2_naming_the_key(small_samples, tmp_path):
    proc = run_cli("run", "--input", str(small_samples), "--output", str(tmp_path / "o"),
                   "--set", "sampling.policy=fast")
    assert proc.returncode == 2 and "sampling.policy" in proc.stderr


def test_help_on_every_subcommand():
    for args in (["--help"], ["run", "--help"], ["models", "make-tiny", "--help"], ["models", "stage", "--help"],
                 ["samples", "make", "--help"], ["schemas", "--help"], ["inspect", "--help"], ["forget", "--help"],
                 ["maintain", "--help"], ["migrate", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage: extract" in proc.stdout, args
