"""The job: read the manifest, plan, run the stages through a backend, write and commit the tables.

``run_job`` goes down each layer once per phase: the manifest (``read_source``), the models'
lineage (``extract.models.weights.resolve_lineage``), planning through the run's session
(``RunSession.plan_manifest``), the stages, and the commit (``RunSession.commit_processed``).
A run's bookkeeping lives here (``RunStats``: counts, timings, models; the record's run fields);
*where* the stages run is the executor it is given (``extract.pipeline.ray_backend`` by
default), so tests pass their own.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

from extract.config import Config
from extract.models.weights import resolve_lineage
from extract.pipeline import ray_backend
from extract.pipeline.console import RunProgress
from extract.pipeline.executor import Backend, run_stages
from extract.pipeline.manifest import read_source
from extract.pipeline.resources import peak_rss_mb
from extract.pipeline.reuse import reused_records
from extract.rows import is_failed, mark_failed
from extract.stages.registry import STAGES
from extract.tables.catalog import Catalog
from extract.tables.planning import RunPlan
from extract.tables.records import TableContext, count_records, rows_to_tables
from extract.tables.schemas import TABLES
from extract.tables.session import RunSession

log = logging.getLogger("extract")


@dataclass
class RunStats:
    """What a run counts as its rows are written: records per table, errors per stage and type,
    seconds per stage (summed over workers), audio seconds, and the models' lineage."""

    rows: Counter = field(default_factory=Counter)  # table -> records written
    reused: int = 0  # videos whose bytes were committed: features copied, nothing decoded
    errors_by: Counter = field(default_factory=Counter)  # "stage/error_type" -> error rows
    timings: Counter = field(default_factory=Counter)  # stage or step -> seconds
    cpu: Counter = field(default_factory=Counter)  # stage -> CPU seconds (its processes and children)
    audio_s: float = 0.0
    models: dict[str, str] = field(default_factory=dict)  # clip/whisper -> lineage string
    crash_reruns: int = 0  # re-runs of videos whose worker died (``run_stages``)

    def add(self, rows: list[dict[str, Any]], tables: dict[tuple[str, str], Any]) -> None:
        """Count one written batch: its ``rows`` and the Arrow ``tables`` they became."""
        self.rows.update(count_records(tables))
        self.reused += sum(1 for row in rows if row.get("reused_from") and not is_failed(row))
        for row in rows:
            for stage in STAGES:
                self.timings[stage] += float(row.get(f"time_{stage}_s") or 0.0)
                self.cpu[stage] += float(row.get(f"cpu_{stage}_s") or 0.0)
            self.audio_s += float(row.get("audio_s") or 0.0)
            if not is_failed(row):
                for key, col in (("clip", "clip_model"), ("whisper", "whisper_model")):
                    if row.get(col) and key not in self.models:
                        self.models[key] = row[col]
        for (name, _), table in tables.items():
            if name == "errors":
                for stage, etype in zip(table["stage"].to_pylist(), table["error_type"].to_pylist()):
                    self.errors_by[f"{stage}/{etype}"] += 1


    def record_fields(self, rows: list[dict[str, Any]], plan: RunPlan, wall: float) -> dict[str, Any]:
        """The run record's wall time, counts, tables, errors, timings and throughput for a run
        over the manifest ``rows`` with ``plan`` (``RunSession.plan_manifest``) that has taken ``wall``
        seconds (rounded to ms as ``wall_s``: the throughput is over that)."""
        n_errors = self.rows["errors"]
        n_done = len(plan.todo) + len(plan.failed)
        wall = round(wall, 3)
        return {
            "wall_s": wall,
            "audio_s": round(self.audio_s, 3),  # the total itself: throughput.audio_s_per_s is rounded
            "models": self.models,
            "counts": {
                "manifest_rows": len(rows), "processed": n_done, "ok": self.rows["videos"],
                "errors": n_errors, "skipped": sum(plan.skipped.values()),
                "skipped_by_reason": dict(plan.skipped),
                "processed_by_reason": dict(plan.why),
                "reused": self.reused,
                "invalid_upload_ts": sum(1 for r in rows if r.get("ts_warning")),
                "crash_reruns": self.crash_reruns,
            },
            "tables": {t: self.rows[t] for t in TABLES},
            "errors_by_stage_type": dict(self.errors_by),
            "error_rate": round(n_errors / n_done, 4) if n_done else 0.0,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "cpu_s": {k: round(v, 3) for k, v in self.cpu.items()},
            "throughput": {
                "videos_per_s": round(n_done / wall, 3) if wall else None,
                "frames_per_s": round(self.rows["frame_embeddings"] / wall, 2) if wall else None,
                "audio_s_per_s": round(self.audio_s / wall, 2) if wall else None,
            },
            # Peak memory of this driver process, which streams results
            "driver_max_rss_mb": round(peak_rss_mb(), 1),
        }


def run_job(src: str, dst: str, config: Config, *, overwrite: bool = False, retry_errors: bool = False,
            progress: bool = True, terminal: TextIO | None = None, run_id: str | None = None,
            stages: dict[str, type] | None = None, backend: Backend | None = None) -> dict[str, Any]:
    """Process ``src`` into ``dst`` and commit one run; returns the run manifest.

    ``backend`` runs the stages (default: ``ray_backend.backend``, Ray Data, which reports each
    stage's batches to the progress view); ``progress`` shows what the run is doing and then one
    bar (``RunProgress``) on ``terminal`` (default standard error; ``RunConsole.terminal`` when
    Ray's output goes to a log). Raises on run-level failures (unreadable manifest, an output that is not our Delta
    tables, Ray failure, store failure) after deleting the run's staging folder, so nothing is
    published; a failure between its table commits is rolled forward by the next run.
    """
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    with RunProgress(terminal, enabled=progress) as view:
        view.phase("reading the manifest")
        rows = read_source(src, config.storage, allowed_uris=config.input.allowed_uris)
        catalog = Catalog(dst, config.storage)
        view.phase(f"planning {len(rows)} videos against the committed tables")
        t_plan = time.perf_counter()
        lineage = resolve_lineage(config)  # once, on the driver: the feature hash counts the weights' bytes
        t_lineage = time.perf_counter() - t_plan
        with RunSession.open(catalog, "run", run_id, embedding_dim=lineage.embedding_dim, writes=True,
                             max_rows_per_file=config.output.max_rows_per_file, started=started, clock=t0) as session:
            t_plan = time.perf_counter()
            plan = session.plan_manifest(rows, lineage.feature_hash, overwrite=overwrite, retry_errors=retry_errors,
                                         reuse_days=config.input.reuse_days)
            stats = RunStats(timings=Counter(plan=t_lineage + time.perf_counter() - t_plan))
            log.info("run %s: %d manifest rows, %d to process (%s; %d may reuse committed bytes), %d invalid, "
                     "skipped %s", session.run_id, len(rows), len(plan.todo), dict(plan.why), plan.reusable,
                     len(plan.failed), dict(plan.skipped))
            if plan.todo:
                lineage.check_checkpoints()
            ctx = TableContext(run_id=session.run_id, processed_at=started, feature_hash=lineage.feature_hash,
                               embedding_dim=session.embedding_dim)

            def write_rows(batch_rows: list[dict[str, Any]]) -> None:
                tables = rows_to_tables(batch_rows, ctx, reused_records(catalog, batch_rows))
                t_write = time.perf_counter()
                session.write(tables)
                stats.timings["write"] += time.perf_counter() - t_write
                stats.add(batch_rows, tables)

            write_rows(plan.failed)
            view.start(len(plan.todo))
            finished = run_stages(plan.todo, config, stages, backend or ray_backend.backend(view if progress else None))
            for batch_rows in (finished if plan.todo else ()):  # nothing to do starts no backend (no Ray)
                write_rows(batch_rows)
                view.finished([row["video_id"] for row in batch_rows],
                              [row["video_id"] for row in batch_rows if is_failed(row)])
            stats.crash_reruns = finished.crash_reruns
            lost = [mark_failed(dict(r), "pipeline", "LostRow",
                                f"{r['video_id']!r}: no result came back from the stages; rerun with --retry-errors",
                                retryable=True) for r in finished.lost]
            write_rows(lost)
            view.finished([r["video_id"] for r in lost], [r["video_id"] for r in lost])
            touched = {r["video_id"] for r in plan.todo} | {r["video_id"] for r in plan.failed}
            counted = stats.record_fields(rows, plan, time.perf_counter() - t0)
            fields = {"input": src, "options": {"overwrite": overwrite, "retry_errors": retry_errors},
                      "config": config.to_dict(), "config_hash": config.config_hash,
                      "feature_hash": lineage.feature_hash, "weights": lineage.weights, "resources": finished.resources,
                      "rolled_forward": session.rolled_forward, "schema_evolution": session.evolved, **counted}
            # Committed videos processed again: each table's commit replaces their rows.
            return session.commit_processed(touched, fields, lineage={
                "config_hash": config.config_hash, "feature_hash": lineage.feature_hash, "models": stats.models})
