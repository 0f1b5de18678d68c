"""The job: plan a run, map the stages onto Ray Data, write and commit the tables.

This is the only module that imports Ray. Stages (``DecodeStage``, ``TranscribeStage``,
``ClipStage``) are plain callable classes; here they become ``map_batches`` actor pools:

    manifest rows -> decode (CPU actors, each with a pool of isolated decode processes)
                  -> whisper (GPU actors, 30 s windows batched across videos)
                  -> clip (GPU actors: frames batched across videos + CLIP text features)
                  -> driver: rows -> Arrow tables -> staged Parquet -> one commit per Delta table

Whisper runs before CLIP so the CLIP actor can embed captions, hashtags *and* transcripts with
the same weights (one model copy per actor). Results stream to the driver, which writes them
as they arrive, so driver memory does not grow with the number of videos.

Failures (tests/RELIABILITY.md):

- a configured local checkpoint that is missing or cut short fails the run before Ray starts
  (``extract.models.check_local_checkpoints``); any other model that cannot load fails the run
  on its first attempt, naming the path. The pools start together while the first videos
  decode, so model loading and decoding overlap;
- a worker process that dies (segfault, abort, OOM kill, ``kill -9``) is restarted and its
  batch retried up to ``runtime.max_task_retries`` times; when that is not enough the dataset
  fails, and the videos without a result run again in halves (``stream_finished_rows``) until
  the crash is pinned on single videos, which become ``Crash`` error rows;
- anything else that fails the run before its commit deletes its staging folder: nothing is
  published; a failure between table commits is rolled forward by the next run
  (``extract.writer``).
"""

from __future__ import annotations

import logging
import os
import re
import resource
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import numpy as np

from extract import __version__
from extract.catalog import Catalog
from extract.config import Config
from extract.models import check_local_checkpoints
from extract.rows import batch_to_rows, is_failed, mark_failed
from extract.schemas import TABLES
from extract.sources import read_source
from extract.tables import TableContext, count_records, rows_to_tables
from extract.writer import (RunWriter, commit_metadata, commit_run, ensure_tables, reprocessing_predicate,
                            roll_forward)

log = logging.getLogger("extract")

GPU_POLL_S = 10.0  # how often a job looks for autoscaled GPU nodes while it waits

STAGES = ("decode", "whisper", "clip")
# Re-runs that pin a repeating worker crash on its video cost about 2 * log2(unfinished videos)
# each; this pins a few such videos even in a million-video run, and stops a crash that is not
# one video's (every batch crashes) from re-running forever.
MAX_CRASH_RERUNS = 48


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run id: ``YYYYMMDDTHHMMSSZ-<6 hex>``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class TimedStage:
    """Wraps a stage class for Ray: builds it once per actor and records seconds per video.

    Adds ``time_<name>_s`` to every row (the batch's wall time divided by its rows) so the
    driver can report per-stage time without a side channel. ``torch_threads`` (model stages,
    from ``resource_plan``) sets torch's CPU threads before the model loads.
    """

    def __init__(self, stage_cls: type, name: str, config: Config, torch_threads: int | None = None):
        logging.basicConfig(level=logging.INFO)
        self.name = name
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.stage = stage_cls(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.stage(batch)
        n = len(next(iter(out.values()))) if out else 0
        out[f"time_{self.name}_s"] = np.full(n, (time.perf_counter() - start) / max(n, 1))
        return out


def stage_classes() -> dict[str, type]:
    """The stage classes by name (imported lazily: they pull in torch/av)."""
    from extract.clip import ClipStage
    from extract.decode import DecodeStage
    from extract.transcribe import TranscribeStage

    return {"decode": DecodeStage, "whisper": TranscribeStage, "clip": ClipStage}


# --------------------------------------------------------------------------- planning


@dataclass
class RunPlan:
    """Which manifest rows this run processes, which it skips and why."""

    todo: list[dict[str, Any]] = field(default_factory=list)  # rows for the stages
    failed: list[dict[str, Any]] = field(default_factory=list)  # manifest rows already failed
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def plan_run(rows: list[dict[str, Any]], outcomes: dict[str, dict[str, Any]], feature_hash: str,
             overwrite: bool = False, retry_errors: bool = False) -> RunPlan:
    """Decide per manifest row: process, or skip because its outcome is already committed.

    - default (incremental): skip ids committed as ``ok`` with the same feature hash, ids
      committed as errors, and forgotten ids whose uri is unchanged;
    - ``overwrite``: process every row (its old rows are replaced in the same commit);
    - ``retry_errors``: process only ids whose latest outcome is a retryable error.
    """
    plan = RunPlan()
    for row in rows:
        prev = outcomes.get(row["video_id"])
        if retry_errors:
            process = bool(prev and prev["status"] == "error" and prev.get("retryable"))
            reason = "not_retryable_error"
        elif overwrite or prev is None:
            process, reason = True, ""
        elif prev["status"] == "ok":
            process, reason = prev.get("feature_hash") != feature_hash, "already_committed"
        elif prev["status"] == "forgotten":
            process, reason = prev.get("uri") != row["uri"], "forgotten"
        else:
            process, reason = False, "committed_error"
        if not process:
            plan.skipped[reason] += 1
        elif is_failed(row):
            plan.failed.append(row)
        else:
            plan.todo.append(row)
    return plan


# --------------------------------------------------------------------------- Ray


def init_ray(config: Config) -> None:
    """Connect to ``runtime.ray_address``/``RAY_ADDRESS``, or start Ray in-process."""
    import ray

    if ray.is_initialized():
        return
    address = config.runtime.ray_address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)


def connect_cluster(config: Config) -> dict[str, Any]:
    """Connect to Ray (``extract.pipeline.init_ray``) and return the cluster's ``CPU``/``GPU``.

    With ``runtime.device=cuda`` on a cluster with fewer GPUs than one CLIP and one Whisper
    actor take (GPU workers scaled to zero), asks the autoscaler for those two actors' GPUs and
    waits up to ``schedule.gpu_wait_s`` seconds for them to join (the actor pools then keep
    them busy; the request is withdrawn).
    """
    import ray
    from ray.autoscaler.sdk import request_resources

    init_ray(config)
    resources = ray.cluster_resources()
    per_actor = config.runtime.num_gpus_per_actor
    if config.runtime.device == "cuda" and resources.get("GPU", 0) < 2 * per_actor:
        print(f"waiting up to {config.schedule.gpu_wait_s:.0f} s for the autoscaler to add a GPU node", flush=True)
        request_resources(bundles=[{"GPU": per_actor}, {"GPU": per_actor}])
        deadline = time.monotonic() + config.schedule.gpu_wait_s
        try:
            while resources.get("GPU", 0) < 2 * per_actor and time.monotonic() < deadline:
                time.sleep(min(GPU_POLL_S, max(deadline - time.monotonic(), 0.0)))
                resources = ray.cluster_resources()
        finally:
            request_resources(bundles=[])
        if resources.get("GPU", 0) <= 0:
            raise RuntimeError(
                f"runtime.device=cuda but no GPU joined the Ray cluster within schedule.gpu_wait_s="
                f"{config.schedule.gpu_wait_s:.0f} s; check `ray status`, the autoscaler log "
                "(/tmp/ray/session_latest/logs/monitor.*) and the cloud's GPU quota")
    address = config.runtime.ray_address or os.environ.get("RAY_ADDRESS") or "in-process"
    return {"address": address, "CPU": resources.get("CPU", 0.0), "GPU": resources.get("GPU", 0.0)}


def configure_data_context(config: Config) -> dict[str, Any]:
    """The Ray Data settings this job relies on, set in one place; returns them for the log.

    - ``max_errored_blocks = 0``: a failed block fails the run instead of silently dropping
      its rows (per-video failures never raise out of a stage, so this only trips on bugs).
    - ``actor_task_retry_on_errors = False``: an exception is not retried (it would fail the
      same way); crashed processes are retried ``runtime.max_task_retries`` times.
    - ``wait_for_min_actors_s = -1``: the actor pools start together and data flows at once, so
      the first videos decode while the models load (Ray Data's default; waiting for each pool
      in turn made the first Whisper batch start at 30 s instead of 15 s in the 10-clip bench
      run). ``max_consecutive_actor_init_deaths = 0`` and no constructor retries: a model that
      cannot load fails the run on its first attempt, with its own error.
    - progress bars off: the driver prints one progress bar of its own.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0
    ctx.actor_task_retry_on_errors = False
    ctx.wait_for_min_actors_s = -1
    ctx.max_consecutive_actor_init_deaths = 0
    ctx.actor_init_retry_on_errors = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    return {"max_errored_blocks": ctx.max_errored_blocks,
            "actor_task_retry_on_errors": ctx.actor_task_retry_on_errors,
            "max_task_retries": config.runtime.max_task_retries}


def resolve_gpus(config: Config, cluster_gpus: float) -> float:
    """GPUs per model actor: ``num_gpus_per_actor`` on CUDA, 0 on CPU (``auto`` asks the cluster)."""
    device = config.runtime.device
    if device == "cpu" or (device == "auto" and cluster_gpus <= 0):
        return 0.0
    if device == "cuda" and cluster_gpus <= 0:
        raise RuntimeError("runtime.device=cuda but the Ray cluster has no GPUs; use runtime.device=auto or cpu")
    return config.runtime.num_gpus_per_actor


def resource_plan(config: Config, cluster_cpus: float, cluster_gpus: float) -> dict[str, dict[str, Any]]:
    """Per stage: actor pool size, CPUs and GPUs per actor, videos per batch, and for the model
    stages torch's CPU threads (``runtime.torch_threads``, 0 = the actor's CPUs, at least 1)."""
    rt = config.runtime
    gpus = resolve_gpus(config, cluster_gpus)
    # On CPU the model actors share the cores with decode; fractional CPUs keep all three
    # pools schedulable on a 2-core laptop (and, a quarter each, on a single core).
    model_cpus = 1.0 if gpus > 0 else min(0.5, cluster_cpus / 4)
    # Ray's own rule for OMP_NUM_THREADS (floor of the CPUs, at least 1), applied through
    # torch.set_num_threads so an OMP_NUM_THREADS exported in the shell does not give every
    # actor all the cores. Two threads for every worker on 2 cores (OMP_NUM_THREADS=2) did not
    # help (bench/RESULTS.md): the models then fight over the same cores. runtime.torch_threads
    # overrides it (e.g. a CPU machine with few decode_workers and cores to spare).
    threads = rt.torch_threads or max(1, int(model_cpus))
    reserved = model_cpus * (rt.clip_actors + rt.whisper_actors)
    decode_workers = rt.decode_workers or max(1, int(cluster_cpus - reserved))
    # What one actor of each model pool leaves (the pools' minimum; more model actors queue).
    decode_cpus = 1.0 if gpus > 0 else min(1.0, cluster_cpus - 2 * model_cpus)
    return {
        "decode": {"actors": decode_workers, "num_cpus": decode_cpus, "num_gpus": 0.0,
                   "batch_size": rt.decode_batch_size},
        "whisper": {"actors": rt.whisper_actors, "num_cpus": model_cpus, "num_gpus": gpus,
                    "batch_size": rt.videos_per_batch, "torch_threads": threads},
        "clip": {"actors": rt.clip_actors, "num_cpus": model_cpus, "num_gpus": gpus,
                 "batch_size": rt.videos_per_batch, "torch_threads": threads},
    }


def check_plan_fits(plan: dict[str, dict[str, Any]], cluster_cpus: float, cluster_gpus: float) -> None:
    """Raise when the cluster cannot hold one actor of every pool at once.

    The pools start together and each needs at least one actor; one that can never be placed
    would leave the run waiting forever for its results, so this fails it at once with the fix.
    """
    cpus = sum(p["num_cpus"] for p in plan.values())
    gpus = sum(p["num_gpus"] for p in plan.values())
    if gpus > cluster_gpus + 1e-9:
        raise RuntimeError(
            f"one CLIP and one Whisper actor need {gpus:g} GPUs (runtime.num_gpus_per_actor="
            f"{plan['clip']['num_gpus']:g} each) but the Ray cluster has {cluster_gpus:g}; set "
            "runtime.num_gpus_per_actor=0.5 to share one GPU, or add GPU nodes")
    if cpus > cluster_cpus + 1e-9:
        raise RuntimeError(
            f"one actor of each stage needs {cpus:g} CPUs (decode {plan['decode']['num_cpus']:g}, Whisper "
            f"{plan['whisper']['num_cpus']:g}, CLIP {plan['clip']['num_cpus']:g}) but the Ray cluster has "
            f"{cluster_cpus:g}; run on a machine or cluster with at least {cpus:g} CPUs")


def execute(rows: list[dict[str, Any]], config: Config, stages: dict[str, type] | None = None,
            ) -> tuple[Iterator[dict[str, np.ndarray]], dict[str, Any]]:
    """Run ``rows`` through the stages on Ray Data; yields finished batches as they complete.

    Returns ``(batches, resources)`` where ``resources`` describes the actor pools used.
    """
    import warnings

    import ray
    import ray.data

    # Ray 2.60 has no named parameter for max_restarts/max_task_retries yet; they must be capped
    # (the defaults retry a crashing video forever), so pass them as remote args on purpose.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
    init_ray(config)
    settings = configure_data_context(config)
    stages = stages or stage_classes()
    cluster = ray.cluster_resources()
    plan = resource_plan(config, cluster.get("CPU", 1), cluster.get("GPU", 0))
    check_plan_fits(plan, cluster.get("CPU", 1), cluster.get("GPU", 0))
    retries = config.runtime.max_task_retries
    n_blocks = max(1, min(len(rows), len(rows) // config.runtime.decode_batch_size + 1))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    for name in STAGES:
        p = plan[name]
        ds = ds.map_batches(
            TimedStage, fn_constructor_args=(stages[name], name, config, p.get("torch_threads")),
            batch_size=p["batch_size"], batch_format="numpy", zero_copy_batch=False,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=p["actors"]),
            num_cpus=p["num_cpus"], num_gpus=p["num_gpus"] or None,
            max_restarts=retries, max_task_retries=retries,
        )
    log.info("ray data settings: %s; pools: %s", settings, plan)
    return ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1), plan


# --------------------------------------------------------------------------- the job


def _finish_rows(rows: list[dict[str, Any]], expected: set[str], seen: set[str]) -> list[dict[str, Any]]:
    """Keep each expected id once (a retried task can emit a row twice)."""
    out = []
    for row in rows:
        vid = row["video_id"]
        if vid in expected and vid not in seen:
            seen.add(vid)
            out.append(row)
    return out


def is_worker_crash(exc: BaseException) -> bool:
    """True when ``exc`` means a Ray worker process died (segfault, abort, OOM kill, ``kill -9``)
    after its retries, not that a stage raised or that an actor failed to load its model."""
    import ray.exceptions

    if isinstance(exc, ray.exceptions.RayActorError):
        return not exc.actor_init_failed
    return isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError))


class StageStartError(RuntimeError):
    """A stage could not be built on a worker (e.g. its model checkpoint is missing or corrupt)."""


def stage_start_failure(exc: BaseException) -> StageStartError | None:
    """For an actor that died in its constructor, an error carrying the stage's own last
    exception line (``ModelLoadError: ... <path> ...``); None for any other error."""
    import ray.exceptions

    if not (isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed):
        return None
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return StageStartError(f"a pipeline stage failed to start on a worker: {lines[-1] if lines else exc!r}")


def _crash_row(row: dict[str, Any], exc: BaseException, retries: int) -> dict[str, Any]:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mark_failed(dict(row), "pipeline", "Crash", (
        f"{row['video_id']!r}: a worker process died each time it processed this video "
        f"({retries + 1} attempts; {type(exc).__name__}: {reason}); the other videos of its batch were re-run "
        "without it"), retryable=False)


def stream_finished_rows(todo: list[dict[str, Any]], config: Config, stages: dict[str, type] | None,
                         seen: set[str], resources: dict[str, Any], events: Counter,
                         ) -> Iterator[list[dict[str, Any]]]:
    """Finished rows of ``todo`` as they complete, each video at most once (its id goes into ``seen``).

    When worker crashes outlast Ray's retries the dataset fails; the videos without a result
    then run again in two halves, recursively, so a video that crashes its worker every time
    ends alone and comes back as a ``Crash`` error row while every other video finishes.
    While splitting, groups of several videos run without Ray retries (a crash only splits
    them further); a single video gets the configured retries again before it is convicted.
    Re-runs are counted in ``events["crash_reruns"]``; past ``MAX_CRASH_RERUNS`` the crash is
    not one video's and the error is raised. Other failures are raised at once.
    """
    expected = {r["video_id"] for r in todo}
    splitting = config.replace(**{"runtime.max_task_retries": 0})
    groups = deque([todo])
    while groups:
        group = groups.popleft()
        group_config = splitting if events["crash_reruns"] and len(group) > 1 else config
        try:
            batches, plan = execute(group, group_config, stages)
            if not resources:
                resources.update(plan)
            for batch in batches:
                yield _finish_rows(batch_to_rows(batch), expected, seen)
        except Exception as exc:  # noqa: BLE001 - only worker crashes are handled, the rest re-raised
            if not is_worker_crash(exc):
                failure = stage_start_failure(exc)
                if failure is not None:
                    raise failure from exc
                raise
            left = [r for r in group if r["video_id"] not in seen]
            if len(group) == 1 and left:
                log.warning("video %r crashed its worker on every attempt: recorded as a Crash error",
                            left[0]["video_id"])
                yield _finish_rows([_crash_row(left[0], exc, config.runtime.max_task_retries)], expected, seen)
                continue
            if not left:
                continue
            half = (len(left) + 1) // 2
            parts = [left[:half], left[half:]] if len(left) > 1 else [left]
            if events["crash_reruns"] + len(parts) > MAX_CRASH_RERUNS:
                raise RuntimeError(
                    f"worker processes kept crashing: {MAX_CRASH_RERUNS} re-runs did not pin the crash on single "
                    f"videos ({len(left)} videos still unfinished); last error: {exc}") from exc
            events["crash_reruns"] += len(parts)
            log.warning("a worker died past runtime.max_task_retries=%d (%s); re-running the %d unfinished videos "
                        "in %d group(s) to find the video that causes it", group_config.runtime.max_task_retries,
                        type(exc).__name__, len(left), len(parts))
            groups.extendleft(reversed(parts))


def _lineage(rows: list[dict[str, Any]], models: dict[str, str]) -> None:
    for row in rows:
        if not is_failed(row):
            for key, col in (("clip", "clip_model"), ("whisper", "whisper_model")):
                if row.get(col) and key not in models:
                    models[key] = row[col]


def run_job(src: str, dst: str, config: Config, *, overwrite: bool = False, retry_errors: bool = False,
            progress: bool = True, run_id: str | None = None,
            stages: dict[str, type] | None = None) -> dict[str, Any]:
    """Process ``src`` into ``dst`` and commit one run; returns the run manifest.

    Raises on run-level failures (unreadable manifest, an output that is not our Delta tables,
    Ray failure, store failure) after deleting the run's staging folder, so nothing is
    published; a failure between its table commits is rolled forward by the next run.
    """
    from extract.preprocess import clip_embed_dim

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    run_id = run_id or new_run_id(started)
    rows = read_source(src, config.storage)
    catalog = Catalog(dst, config.storage)
    catalog.check()
    rolled_forward = roll_forward(catalog)
    embedding_dim = clip_embed_dim(config.models.clip)
    base_versions = ensure_tables(catalog, embedding_dim)
    t_plan = time.perf_counter()
    outcomes = catalog.outcomes(rows)
    plan = plan_run(rows, outcomes, config.feature_hash, overwrite, retry_errors)
    plan_s = time.perf_counter() - t_plan
    log.info("run %s: %d manifest rows, %d to process, %d invalid, skipped %s",
             run_id, len(rows), len(plan.todo), len(plan.failed), dict(plan.skipped))
    if plan.todo:
        check_local_checkpoints(config)
    models: dict[str, str] = {}
    ctx = TableContext(run_id=run_id, processed_at=started, feature_hash=config.feature_hash,
                       embedding_dim=embedding_dim)
    writer = RunWriter(catalog, run_id, embedding_dim, base_versions, catalog.next_seq,
                       config.output.max_rows_per_file)
    counts = Counter()
    errors_by = Counter()
    timings = Counter(plan=plan_s)
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
            bar = _progress(len(plan.todo), progress)
            for batch_rows in stream_finished_rows(plan.todo, config, stages, seen, resources, events):
                _lineage(batch_rows, models)
                write_rows(batch_rows)
                bar(len(batch_rows))
            bar(0, close=True)
        lost = [mark_failed(dict(r), "pipeline", "LostRow",
                            f"{r['video_id']!r}: no result came back from the stages; rerun with --retry-errors",
                            retryable=True) for r in plan.todo if r["video_id"] not in seen]
        write_rows(lost)
    except BaseException:
        writer.abort()
        raise
    touched = expected | {r["video_id"] for r in plan.failed}
    # Committed videos processed again: each table's commit replaces their rows.
    predicate = reprocessing_predicate(outcomes, touched, writer.dts)
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
            "crash_reruns": events["crash_reruns"], "replaced": sum(1 for vid in touched if vid in outcomes
                                                                    and outcomes[vid]["status"] != "forgotten"),
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
        "resources": resources, "rolled_forward": rolled_forward,
        # ru_maxrss is KiB on Linux: peak memory of this driver process, which streams results
        "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return commit_run(writer, record, predicate, commit_metadata(
        config_hash=config.config_hash, feature_hash=config.feature_hash, models=models))


def _progress(total: int, enabled: bool) -> Callable[..., None]:
    """A tqdm bar on stderr (or a no-op); call ``bar(n)`` per finished videos, ``bar(0, close=True)``."""
    if not enabled:
        return lambda n, close=False: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="video", desc="extract", dynamic_ncols=True)

    def update(n: int, close: bool = False) -> None:
        bar.update(n)
        if close:
            bar.close()

    return update
