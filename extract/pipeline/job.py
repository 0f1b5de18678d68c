"""The job: read the manifest, plan, run the stages through a backend, write and commit the tables.

``run_job`` is where a run's bookkeeping lives (the manifest counts, timings, lineage and the
run record); *where* the stages run is the executor it is given (``extract.pipeline.ray_backend``
by default), so tests pass their own.
"""

from __future__ import annotations

import logging
import resource
import secrets
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, TextIO

from extract import __version__
from extract.config import Config
from extract.models.checkpoints import check_local_checkpoints
from extract.pipeline.console import progress_bar
from extract.pipeline.manifest import read_source
from extract.pipeline.ray_backend import Executor, stream_finished_rows
from extract.rows import is_failed, mark_failed
from extract.stages.registry import STAGES
from extract.tables.catalog import Catalog
from extract.tables.planning import plan_run
from extract.tables.records import TableContext, count_records, rows_to_tables
from extract.tables.schemas import TABLES
from extract.tables.writer import RunWriter, commit_run, file_metadata, supersede

log = logging.getLogger("extract")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run id: ``YYYYMMDDTHHMMSSZ-<6 hex>``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _lineage(rows: list[dict[str, Any]], models: dict[str, str]) -> None:
    for row in rows:
        if not is_failed(row):
            for key, col in (("clip", "clip_model"), ("whisper", "whisper_model")):
                if row.get(col) and key not in models:
                    models[key] = row[col]


def run_job(src: str, dst: str, config: Config, *, overwrite: bool = False, retry_errors: bool = False,
            progress: bool = True, terminal: TextIO | None = None, run_id: str | None = None,
            stages: dict[str, type] | None = None, executor: Executor | None = None) -> dict[str, Any]:
    """Process ``src`` into ``dst`` and commit one run; returns the run manifest.

    ``progress`` shows one bar on ``terminal`` (default standard error; ``RunConsole.terminal``
    when Ray's output goes to a log). Raises on run-level failures (unreadable manifest, Ray failure, store failure) after
    deleting the run's staging folder, so nothing is published.
    """
    from extract.models.preprocess import clip_embed_dim

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    run_id = run_id or new_run_id(started)
    rows = read_source(src, config.storage, allowed_uris=config.input.allowed_uris)
    catalog = Catalog(dst, config.storage)
    cleaned = catalog.cleanup()
    plan = plan_run(rows, catalog.outcomes(), config.feature_hash, overwrite, retry_errors)
    log.info("run %s: %d manifest rows, %d to process, %d invalid, skipped %s",
             run_id, len(rows), len(plan.todo), len(plan.failed), dict(plan.skipped))
    if plan.todo:
        check_local_checkpoints(config)
    models: dict[str, str] = {}
    ctx = TableContext(run_id=run_id, processed_at=started, feature_hash=config.feature_hash,
                       embedding_dim=clip_embed_dim(config.models.clip),
                       embedding_dtype=config.output.embedding_dtype)
    # Files open after the first results arrive, so the lineage of the models is known by then.
    writer = RunWriter(catalog, run_id, lambda table: file_metadata(
        table, run_id=run_id, config_hash=config.config_hash, feature_hash=config.feature_hash,
        models=models), config.output.max_rows_per_file)
    counts = Counter()
    errors_by = Counter()
    timings = Counter()
    audio_s = 0.0
    resources: dict[str, Any] = {}
    try:
        def write_rows(batch_rows: list[dict[str, Any]]) -> None:
            nonlocal audio_s
            tables = rows_to_tables(batch_rows, ctx)
            t_write = time.perf_counter()
            writer.write(tables)
            timings["write"] += time.perf_counter() - t_write
            for table, n in count_records(tables).items():
                counts[f"rows.{table}"] += n
            for row in batch_rows:
                for stage in STAGES:
                    timings[stage] += float(row.get(f"time_{stage}_s") or 0.0)
                audio_s += float(row.get("audio_s") or 0.0)
            error_tables = [t for (name, _), t in tables.items() if name == "errors"]
            for t in error_tables:
                for stage, etype in zip(t["stage"].to_pylist(), t["error_type"].to_pylist()):
                    errors_by[f"{stage}/{etype}"] += 1

        write_rows(plan.failed)
        expected = {r["video_id"] for r in plan.todo}
        seen: set[str] = set()
        events: Counter = Counter()
        if plan.todo:
            bar = progress_bar(len(plan.todo), progress, terminal)
            for batch_rows in stream_finished_rows(plan.todo, config, stages, seen, resources, events, executor):
                _lineage(batch_rows, models)
                write_rows(batch_rows)
                bar(len(batch_rows), sum(1 for row in batch_rows if is_failed(row)))
            bar(0, close=True)
        lost = [mark_failed(dict(r), "pipeline", "LostRow",
                            f"{r['video_id']!r}: no result came back from the stages; rerun with --retry-errors",
                            retryable=True) for r in plan.todo if r["video_id"] not in seen]
        write_rows(lost)
        touched = expected | {r["video_id"] for r in plan.failed}
        t_sup = time.perf_counter()
        removed = supersede(catalog, writer, touched)
        timings["supersede"] += time.perf_counter() - t_sup
        n_errors = counts["rows.errors"]
        n_done = len(plan.todo) + len(plan.failed)
        ended = datetime.now(timezone.utc)
        wall = time.perf_counter() - t0
        record = {
            "run_id": run_id, "kind": "run", "status": "committed",
            "started_at": started.isoformat(), "ended_at": ended.isoformat(), "wall_s": round(wall, 3),
            "audio_s": round(audio_s, 3),  # the total itself: throughput.audio_s_per_s is rounded
            "input": src, "output": dst, "pipeline_version": __version__,
            "options": {"overwrite": overwrite, "retry_errors": retry_errors},
            "config": config.to_dict(), "config_hash": config.config_hash, "feature_hash": config.feature_hash,
            "models": models,
            "counts": {
                "manifest_rows": len(rows), "processed": n_done, "ok": counts["rows.videos"],
                "errors": n_errors, "skipped": sum(plan.skipped.values()),
                "skipped_by_reason": dict(plan.skipped),
                "invalid_upload_ts": sum(1 for r in rows if r.get("ts_warning")),
                "crash_reruns": events["crash_reruns"],
            },
            "tables": {t: counts[f"rows.{t}"] for t in TABLES},
            "errors_by_stage_type": dict(errors_by),
            "error_rate": round(n_errors / n_done, 4) if n_done else 0.0,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "throughput": {
                "videos_per_s": round(n_done / wall, 3) if wall else None,
                "frames_per_s": round(counts["rows.frame_embeddings"] / wall, 2) if wall else None,
                "audio_s_per_s": round(audio_s / wall, 2) if wall else None,
            },
            "resources": resources, "cleaned_leftovers": len(cleaned),
            # ru_maxrss is KiB on Linux: peak memory of this driver process, which streams results
            "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        return commit_run(writer, record, removed)
    except BaseException:
        writer.abort()
        raise

