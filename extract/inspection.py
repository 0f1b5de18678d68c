"""``extract inspect``: what an output location holds, and everything known about one video."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.compute as pc

from extract.tables.catalog import AsOf, Catalog
from extract.config import StorageConfig
from extract.tables.schemas import TABLES


def describe_output(dst: str, storage: StorageConfig | None = None, last_runs: int = 5, as_of: AsOf = None) -> str:
    """Tables (Delta version, partitions, files, rows), recent runs, error summary; ``as_of``
    (see ``Catalog``) shows them as of an earlier run."""
    catalog = Catalog(dst, storage or StorageConfig(), as_of=as_of)
    catalog.check()
    if not catalog.runs:
        return f"{dst}: no committed runs"
    run = catalog.run
    lines = [f"{dst}: {len(catalog.runs)} committed runs; as of run {run['run_id']} (seq {run.get('seq')}, "
             f"{run.get('kind', 'run')}, committed {run.get('committed_at')})"]
    for table in TABLES:
        files = catalog.file_actions(table)
        if files is None:
            lines.append(f"  {table:<20} (no table)")
            continue
        parts = sorted(set(files["partition.dt"].to_pylist())) if files.num_rows else []
        rows = sum(files["num_records"].to_pylist()) if files.num_rows else 0
        lines.append(f"  {table:<20} version {catalog.versions[table]:>4}  rows {rows:>8}  files {files.num_rows:>4}"
                     f"  partitions {len(parts):>3}" + (f"  ({parts[0]} .. {parts[-1]})" if parts else ""))
    lines.append("  recent runs:")
    for run in catalog.runs[-last_runs:]:
        c = run.get("counts", {})
        lines.append(f"    {run['run_id']}  seq {run.get('seq', '-'):>3}  {run.get('kind', 'run'):<8} {run.get('status')}"
                     f"  processed {c.get('processed', c.get('forgotten', 0))} ok {c.get('ok', '-')}"
                     f" errors {c.get('errors', '-')} skipped {c.get('skipped', '-')}"
                     + (f" reused {c['reused']}" if c.get("reused") else ""))
    errors = catalog.read("errors", ["stage", "error_type", "retryable"])
    if errors is not None and errors.num_rows:
        by = Counter(zip(errors["stage"].to_pylist(), errors["error_type"].to_pylist()))
        retryable = sum(errors["retryable"].to_pylist())
        lines.append(f"  errors: {errors.num_rows} ({retryable} retryable): "
                     + ", ".join(f"{s}/{t}={n}" for (s, t), n in by.most_common()))
    return "\n".join(lines)


def describe_video(dst: str, video_id: str, storage: StorageConfig | None = None, as_of: AsOf = None) -> str:
    """Every committed row of one video, table by table (embeddings shown by shape and norm)."""
    catalog = Catalog(dst, storage or StorageConfig(), as_of=as_of)
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
