"""``extract inspect``: what an output location holds, and everything known about one video."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extract.config import StorageConfig
from extract.tables.catalog import Catalog
from extract.tables.schemas import TABLES


def describe_output(dst: str, storage: StorageConfig | None = None, last_runs: int = 5) -> str:
    """Tables (partitions, files, rows, schema versions), recent runs, error summary."""
    catalog = Catalog(dst, storage or StorageConfig())
    if not catalog.runs:
        return f"{dst}: no committed runs"
    lines = [f"{dst}: {len(catalog.runs)} committed runs"]
    for table in TABLES:
        files = catalog.live_files(table)
        parts = sorted({f.split("/")[1] for f in files})
        rows, versions = 0, Counter()
        for rel in files:
            with catalog.fs.open_input_file(catalog.abs(rel)) as fh:
                meta = pq.ParquetFile(fh).metadata
            rows += meta.num_rows
            kv = meta.metadata or {}
            versions[kv.get(b"extract.schema_version", b"?").decode()] += 1
        lines.append(f"  {table:<20} rows {rows:>8}  files {len(files):>4}  partitions {len(parts):>3}"
                     f"  schema versions {dict(versions) or '-'}"
                     + (f"  ({parts[0]} .. {parts[-1]})" if parts else ""))
    lines.append("  recent runs:")
    for run in catalog.runs[-last_runs:]:
        c = run.get("counts", {})
        lines.append(f"    {run['run_id']}  {run.get('kind', 'run'):<6} {run.get('status')}"
                     f"  processed {c.get('processed', c.get('forgotten', 0))} ok {c.get('ok', '-')}"
                     f" errors {c.get('errors', '-')} skipped {c.get('skipped', '-')}")
    errors = catalog.read("errors", ["stage", "error_type", "retryable"])
    if errors is not None and errors.num_rows:
        by = Counter(zip(errors["stage"].to_pylist(), errors["error_type"].to_pylist()))
        retryable = sum(errors["retryable"].to_pylist())
        lines.append(f"  errors: {errors.num_rows} ({retryable} retryable): "
                     + ", ".join(f"{s}/{t}={n}" for (s, t), n in by.most_common()))
    return "\n".join(lines)


def describe_video(dst: str, video_id: str, storage: StorageConfig | None = None) -> str:
    """Every committed row of one video, table by table (embeddings shown by shape and norm)."""
    catalog = Catalog(dst, storage or StorageConfig())
    lines = [f"video {video_id!r} in {dst}"]
    found = False
    for table in TABLES:
        data = catalog.read(table, filter=pc.field("video_id") == video_id)
        if data is None or data.num_rows == 0:
            continue
        found = True
        lines.append(f"  {table}: {data.num_rows} rows")
        for rec in data.to_pylist()[:50]:
            shown = {k: _short(v) for k, v in rec.items() if k != "video_id"}
            lines.append("    " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if not found:
        lines.append("  no committed rows (never processed, skipped, or forgotten)")
    return "\n".join(lines)


def _short(value):
    if isinstance(value, list) and len(value) > 8 and all(isinstance(x, float) for x in value[:8]):
        arr = np.asarray(value, dtype=np.float32)
        return f"<{arr.size} floats, norm {np.linalg.norm(arr):.3f}>"
    if isinstance(value, str) and len(value) > 120:
        return repr(value[:117] + "...")
    return repr(value)
