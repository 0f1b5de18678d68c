"""Reading a training set over many days: the layout we write, and Ray Data / Daft throughput.

    python -m bench.bench_training_read [--days 30] [--videos 300] [--frames 32] [--work DIR]

Builds a synthetic output of ``--days`` upload days the way daily runs write it: per day one
Delta commit of ``videos`` and one of ``frame_embeddings`` (the real schemas, random unit
embeddings of width 512, a 3 kB thumbnail on 4 frames per video), written with the same
``write_deltalake`` call and writer properties as a run's commit, plus a late-upload commit of
5 % more videos into the previous day (what ``schedule.lookback_days`` adds). It then measures:

- the layout: Parquet files per ``dt`` partition, file sizes, row groups per file and their rows
  and bytes, per table;
- the docs/QUERIES.md training-set recipes (Ray Data and Daft, both on a local Ray of 2 CPUs,
  the code executed from the doc): rows and seconds for the window of all days but the first;
- a scan of ``frame_embeddings.embedding`` over the same window by each engine, every batch
  pulled into this process (rows/s, MB/s of float32 embedding data), and how many read tasks
  Daft plans for it (it merges small files into one task);

then runs ``extract maintain``'s ``maintain`` (compaction to ``COMPACT_TARGET_BYTES``) and
measures all of it again. ``run(out_dir)`` writes training_read.json; ``markdown`` renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DIM = 512
FRAMES_WITH_THUMBNAIL = 4
THUMBNAIL_BYTES = 3_000
QUERIES = Path(__file__).resolve().parent.parent / "docs" / "QUERIES.md"
RECIPES = ("training-set-ray-data", "training-set-daft")


def _unit_vectors(rng, n: int, dim: int = DIM):
    import numpy as np
    import pyarrow as pa

    m = rng.standard_normal((n, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)), pa.array(m.ravel()))


def _day_tables(day: int, videos: int, frames: int, prefix: str = "v"):
    """``(videos, frame_embeddings)`` Delta-schema tables of ``videos`` synthetic videos of day ``day``."""
    import numpy as np
    import pyarrow as pa

    from bench.bench_planning import _synthetic_videos
    from extract.media.phash import ZOOMS
    from extract.tables.schemas import get_table_schema

    rng = np.random.default_rng(day * 1000 + len(prefix))
    records, dt = _synthetic_videos(videos, day, DIM, prefix)
    for name in ("clip_embedding", "caption_embedding", "audio_embedding"):
        records = records.set_column(records.schema.get_field_index(name), name, _unit_vectors(rng, videos))
    delta = {t: get_table_schema(t).delta_schema(DIM) for t in ("videos", "frame_embeddings")}
    video_rows = pa.Table.from_arrays([records[f.name].cast(f.type) if f.name != "dt" else pa.array([dt] * videos)
                                       for f in delta["videos"]], schema=delta["videos"])
    n = videos * frames
    index = np.tile(np.arange(frames, dtype=np.int32), videos)
    thumbs = [rng.bytes(THUMBNAIL_BYTES) if i % (frames // FRAMES_WITH_THUMBNAIL) == 0 else None for i in index]
    frame_rows = pa.table({
        "video_id": np.repeat(records["video_id"].to_numpy(zero_copy_only=False), frames),
        "frame_index": index, "pts_s": index.astype(np.float32),
        "embedding": _unit_vectors(rng, n), "run_id": [f"run-{day:04d}"] * n,
        "phash": rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64),
        "phash_middle": rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64), "thumbnail_jpeg": pa.array(thumbs, pa.binary()),
        "phash_zoom": pa.FixedSizeListArray.from_arrays(
            rng.integers(-2**63, 2**63 - 1, n * len(ZOOMS), dtype=np.int64), len(ZOOMS)).cast(pa.list_(pa.int64())),
        "dt": [dt] * n})
    frame_rows = pa.Table.from_arrays([frame_rows[f.name].cast(f.type) for f in delta["frame_embeddings"]],
                                      schema=delta["frame_embeddings"])
    return video_rows, frame_rows, dt


def build(dst: str, days: int, videos: int, frames: int) -> list[str]:
    """Write the synthetic output (see module doc); returns the days (``dt``) written."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    from extract.tables.catalog import APP_ID, Catalog
    from extract.tables.writer import ensure_tables, write_json, writer_properties

    catalog = Catalog(dst)
    versions = ensure_tables(catalog, DIM)
    dts = []
    for day in range(days):
        commits = [_day_tables(day, videos, frames)]
        if day > 0:  # late uploads of the day before, found by the look-back
            commits.append(_day_tables(day - 1, max(1, videos // 20), frames, prefix="late"))
        seq = catalog.next_seq
        props = CommitProperties(app_transactions=[Transaction(APP_ID, seq)])
        for table, index in (("videos", 0), ("frame_embeddings", 1)):
            import pyarrow as pa

            data = pa.concat_tables([c[index] for c in commits])
            write_deltalake(catalog.table_uri(table), data, mode="append", writer_properties=writer_properties(),
                            commit_properties=props)
            versions[table] += 1
        dts.append(commits[0][2])
        run_id = f"run-{day:04d}"
        write_json(catalog.fs, f"{catalog.root}/_runs/{run_id}.json", {
            "run_id": run_id, "kind": "run", "status": "committed", "seq": seq, "delta_versions": dict(versions),
            "committed_at": datetime.now(timezone.utc).isoformat()})
        catalog.reload()
    return dts


def layout(dst: str) -> dict[str, Any]:
    """Per table: files per partition, file MB, row groups per file, rows and MB per row group
    (medians and maxima over the files the latest version lists)."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    out = {}
    for table in ("videos", "frame_embeddings"):
        delta = DeltaTable(f"{dst}/{table}")
        files = delta.file_uris()
        per_partition: Counter = Counter()
        file_mb, groups, group_rows, group_mb = [], [], [], []
        for path in files:
            local = path[len("file://"):] if path.startswith("file://") else path
            per_partition[re.search(r"dt=([^/]+)", local).group(1)] += 1
            meta = pq.ParquetFile(local).metadata
            file_mb.append(os.path.getsize(local) / 2**20)
            groups.append(meta.num_row_groups)
            for g in range(meta.num_row_groups):
                group_rows.append(meta.row_group(g).num_rows)
                group_mb.append(meta.row_group(g).total_byte_size / 2**20)
        counts = list(per_partition.values())
        out[table] = {"partitions": len(counts), "files": len(files),
                      "files_per_partition_median": statistics.median(counts), "files_per_partition_max": max(counts),
                      "file_mb_median": round(statistics.median(file_mb), 2), "file_mb_max": round(max(file_mb), 2),
                      "row_groups_per_file_max": max(groups),
                      "row_group_rows_median": int(statistics.median(group_rows)),
                      "row_group_mb_median": round(statistics.median(group_mb), 2),
                      "row_group_mb_max": round(max(group_mb), 2)}
    return out


def _doc_blocks() -> dict[str, str]:
    blocks = {}
    for match in re.finditer(r"```python\n(# (example: ([\w-]+)|parameters)\n.*?)```", QUERIES.read_text(), re.S):
        blocks[match.group(3) or "parameters"] = match.group(1)
    return blocks


def _scan_figures(seconds: float, rows: int) -> dict[str, Any]:
    return {"seconds": round(seconds, 2), "rows": rows, "rows_per_s": round(rows / seconds),
            "mb_per_s": round(rows * DIM * 4 / 2**20 / seconds, 1)}


def read_throughput(dst: str, first_day: str, last_day: str, labels: str, work: Path) -> dict[str, Any]:
    """Seconds and rows of each doc recipe, and of each engine's scan of frame embeddings in the
    window (every batch pulled into this process; Daft's also with its planned read tasks)."""
    import daft
    import pyarrow.dataset as ds
    import ray
    from ray.data.expressions import col

    blocks = _doc_blocks()
    out: dict[str, Any] = {}
    for name in RECIPES:
        namespace: dict[str, Any] = {}
        exec(compile(blocks["parameters"], "parameters", "exec"), namespace)
        namespace.update(DST=dst, FIRST_DAY=first_day, LAST_DAY=last_day, LABELS=labels,
                         TRAINING_SET=str(work / f"training-{time.monotonic_ns()}"))
        start = time.perf_counter()
        exec(compile(blocks[name], name, "exec"), namespace)
        seconds = time.perf_counter() - start
        rows = ds.dataset(namespace["TRAINING_SET"], format="parquet").count_rows()
        out[name] = {"seconds": round(seconds, 2), "rows": rows, "rows_per_s": round(rows / seconds)}
    start = time.perf_counter()
    frames = (ray.data.read_delta(f"{dst}/frame_embeddings", columns=["dt", "embedding"])
              .filter(expr=(col("dt") >= first_day) & (col("dt") <= last_day)).select_columns(["embedding"]))
    rows = sum(b.num_rows for b in frames.iter_batches(batch_size=None, batch_format="pyarrow"))
    out["scan-ray-data"] = _scan_figures(time.perf_counter() - start, rows)
    start = time.perf_counter()
    frames_daft = (daft.read_deltalake(f"{dst}/frame_embeddings")
                   .where((daft.col("dt") >= first_day) & (daft.col("dt") <= last_day)).select("embedding"))
    rows = sum(b.num_rows for b in frames_daft.to_arrow_iter())
    out["scan-daft"] = {**_scan_figures(time.perf_counter() - start, rows),
                        "read_tasks": frames_daft.num_partitions()}
    return out


def _warm_up() -> None:
    """Start Ray Data's and Daft's workers before any timed read, so the first layout's reads
    do not also carry the engines' start-up."""
    import daft
    import ray

    ray.data.range(8, override_num_blocks=2).map_batches(lambda batch: batch).materialize()
    daft.from_pydict({"x": list(range(8))}).into_partitions(2).collect()


def run(out_dir: str | Path | None = None, days: int = 30, videos: int = 300, frames: int = 32,
        work: str | None = None) -> dict[str, Any]:
    import daft
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from bench.machine import load_average
    from extract.pipeline.ray_backend import start_local_ray
    from extract.tables.catalog import Catalog
    from extract.tables.maintenance import COMPACT_TARGET_BYTES, maintain

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp)
        dst = str(root / "out")
        load_before = load_average()
        start = time.perf_counter()
        dts = build(dst, days, videos, frames)
        build_s = time.perf_counter() - start
        labels = str(root / "labels.parquet")
        ids = pa.concat_tables([pq.read_table(f"{dst}/videos", columns=["video_id"])])["video_id"]
        pq.write_table(pa.table({"video_id": ids, "label": pa.array([i % 2 for i in range(len(ids))])}), labels)
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        daft.set_runner_ray(noop_if_initialized=True)  # the doc's recipe says so too; here before the warm-up
        try:
            _warm_up()
            result: dict[str, Any] = {"days": days, "videos_per_day": videos, "frames_per_video": frames,
                                      "late_videos_per_day": max(1, videos // 20), "build_s": round(build_s, 1),
                                      "window": [dts[1], dts[-1]], "compact_target_mb": COMPACT_TARGET_BYTES / 2**20}
            result["as_written"] = {"layout": layout(dst), "reads": read_throughput(dst, dts[1], dts[-1], labels, root)}
            start = time.perf_counter()
            record = maintain(Catalog(dst), 0, "maintain-bench")
            result["maintain_s"] = round(time.perf_counter() - start, 1)
            result["maintain_files"] = {t: [m["files_removed"], m["files_added"]]
                                        for t, m in record["maintenance"].items() if t in ("videos", "frame_embeddings")}
            result["compacted"] = {"layout": layout(dst), "reads": read_throughput(dst, dts[1], dts[-1], labels, root)}
        finally:
            ray.shutdown()
        result["load_average"] = [load_before, load_average()]
    if out_dir is not None:
        Path(out_dir, "training_read.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['days']} upload days x {result['videos_per_day']} videos x {result['frames_per_video']} frames "
             f"(+{result['late_videos_per_day']} late videos into the day before, per day); window "
             f"{result['window'][0]} .. {result['window'][1]}; load average {result['load_average'][0]} -> "
             f"{result['load_average'][1]} (shared 2-core machine); maintain {result['maintain_s']} s "
             f"(files removed/added {result['maintain_files']}, target {result['compact_target_mb']:g} MB).", "",
             "| table | layout | files/partition (median, max) | file MB (median, max) | row groups/file (max) | "
             "rows/row group (median) | MB/row group (median, max) |", "|---|---|---:|---:|---:|---:|---:|"]
    for state in ("as_written", "compacted"):
        for table, m in result[state]["layout"].items():
            lines.append(f"| {table} | {state.replace('_', ' ')} | {m['files_per_partition_median']:g}, "
                         f"{m['files_per_partition_max']} | {m['file_mb_median']}, {m['file_mb_max']} | "
                         f"{m['row_groups_per_file_max']} | {m['row_group_rows_median']:,} | "
                         f"{m['row_group_mb_median']}, {m['row_group_mb_max']} |")
    lines += ["", "| read | layout | seconds | rows | rows/s | MB/s (embeddings) | read tasks |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for state in ("as_written", "compacted"):
        for name, r in result[state]["reads"].items():
            lines.append(f"| {name} | {state.replace('_', ' ')} | {r['seconds']} | {r['rows']:,} | "
                         f"{r['rows_per_s']:,} | {r.get('mb_per_s', '')} | {r.get('read_tasks', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--videos", type=int, default=300, help="videos per day")
    parser.add_argument("--frames", type=int, default=32, help="frames per video")
    parser.add_argument("--work", help="folder for the synthetic output (default: a temporary one)")
    parser.add_argument("--out", help="write training_read.json here")
    args = parser.parse_args(argv)
    result = run(args.out, args.days, args.videos, args.frames, args.work)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
