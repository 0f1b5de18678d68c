"""The Ray backend: the stages as Ray Data actor pools; the only module that imports Ray.

Stages (``DecodeStage``, ``OcrStage``, ``TranscribeStage``, ``ClipStage``; declared in
``extract.stages.registry``) are plain callable classes; here they become ``map_batches``
actor pools (on a CPU-only machine the model stages run as one fused pool, ``extract.stages.models``),
and ``backend()`` hands them to ``extract.pipeline.executor.run_stages``:

    manifest rows -> decode (CPU actors, each with a pool of isolated decode processes)
                  -> ocr (CPU actors: burned-in text on a few frames)
                  -> whisper (GPU actors, 30 s windows batched across videos)
                  -> clip (GPU actors: frames batched across videos + CLIP text features)
                  -> driver: rows -> Arrow tables -> staged Parquet -> commit

Whisper runs before CLIP so the CLIP actor can embed captions, hashtags *and* transcripts with
the same weights (one model copy per actor). Results stream to the driver, which writes them
as they arrive, so driver memory does not grow with the number of videos.

Failures (tests/RELIABILITY.md):

- a configured local checkpoint that is missing or cut short fails the run before Ray starts
  (``extract.models.weights.ModelLineage.check_checkpoints``); any other model that cannot load fails the run
  on its first attempt, naming the path. The pools start together while the first videos
  decode, so model loading and decoding overlap;
- a CUDA error that poisons a model actor's context (``DeviceLostError``) ends the actor's
  process (``end_poisoned_worker``), which Ray handles as the crash below: the batch is
  retried on a restarted actor, not turned into error rows;
- a worker process that dies (segfault, abort, OOM kill, ``kill -9``) is restarted and its
  batch retried up to ``runtime.max_task_retries`` times; when that is not enough the dataset
  fails, and the videos without a result run again in halves (``extract.pipeline.executor``)
  until the crash is pinned on single videos, which become ``Crash`` error rows;
- anything else that fails the run deletes its staging folder: nothing is published.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any, Iterator

import numpy as np

from extract.config import Config
from extract.config.machine import GPU_SHARE, Machine, explained
from extract.models.common import is_device_lost
from extract.pipeline.executor import Backend, StageEvents
from extract.pipeline.resources import check_plan_fits, plan_lines, plan_resources
from extract.stages.registry import spec_named, stage_classes
from extract.stages.timing import timed_call

log = logging.getLogger("extract")
plan_log = logging.getLogger("extract.plan")  # the plan and why (``plan_lines``), printed at start


GPU_POLL_S = 10.0  # how often a job looks for autoscaled GPU nodes while it waits
RAY_START_ATTEMPTS = 3  # Ray gives a new node's raylet a fixed 30 s to register; a loaded machine can miss it
RAY_START_TIMEOUT = "timed out during startup"  # Ray 2.60 raises a bare Exception saying so
REPORTS_POLL_S = 0.5  # how often the driver collects the workers' batch reports for the progress view


class TimedStage:
    """Wraps a stage class for Ray: builds it once per actor and records seconds per video.

    Adds ``time_<name>_s`` and ``cpu_<name>_s`` to every row (the batch's wall and CPU seconds,
    ``extract.stages.timing``, divided by its rows) so the driver can report per-stage time
    without a side channel; the fused ``models`` stage reports each of its parts instead.
    ``torch_threads`` (model stages, from ``resource_plan``) sets torch's CPU threads before
    the model loads; ``parts`` (the fused stage) maps its part names to their classes;
    ``reports`` (a ``StageReports`` actor, or None) hears of every finished batch.
    """

    def __init__(self, stage_cls: type, name: str, config: Config, torch_threads: int | None = None,
                 parts: dict[str, type] | None = None, reports: Any = None):
        logging.basicConfig(level=logging.INFO)
        self.name = name
        self.reports = reports
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.stage = stage_cls(config) if parts is None else stage_cls(config, parts)
        self.times_parts = parts is not None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self.stage(batch) if self.times_parts else timed_call(self.name, self.stage, batch)
        except Exception as exc:
            if is_device_lost(exc):
                end_poisoned_worker(self.name, exc)
            raise
        if self.reports is not None:  # fire and forget: the batch does not wait for the driver
            failed = [str(vid) for vid, stage in zip(out["video_id"], out.get("error_stage", ())) if stage is not None]
            self.reports.put.remote(self.name, len(out["video_id"]), failed)
        return out


class StageReports:
    """A Ray actor (no CPU of its own) that collects the stage workers' batch reports
    ``(stage, rows, failed video ids)`` until the driver takes them (``take``)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, list[str]]] = []

    def put(self, stage: str, n_rows: int, failed_ids: list[str]) -> None:
        self.items.append((stage, n_rows, failed_ids))

    def take(self) -> list[tuple[str, int, list[str]]]:
        items, self.items = self.items, []
        return items


def reporting(batches: Iterator[dict[str, np.ndarray]], reports: Any, events: StageEvents,
              ) -> Iterator[dict[str, np.ndarray]]:
    """``batches``, while a thread hands the ``reports`` actor's batch reports to ``events``
    every ``REPORTS_POLL_S`` (the driver's loop waits on the next finished batch meanwhile);
    the actor ends with the iteration. Progress is a view: a report that cannot be fetched is
    skipped, never a failure of the run."""
    import ray
    import ray.exceptions

    stop = threading.Event()

    def hand_over() -> None:
        try:
            items = ray.get(reports.take.remote(), timeout=10 * REPORTS_POLL_S)
        except ray.exceptions.RayError:  # a timeout, or Ray shutting down: the next poll tries again
            return
        for stage, n_rows, failed in items:
            events.stage_done(stage, n_rows, failed)

    def poll() -> None:
        while not stop.wait(REPORTS_POLL_S):
            hand_over()

    thread = threading.Thread(target=poll, name="extract-stage-reports", daemon=True)
    thread.start()
    try:
        yield from batches
    finally:
        stop.set()
        thread.join()
        ray.kill(reports)


DEVICE_LOST_EXIT_CODE = 75  # EX_TEMPFAIL: the worker ends itself so that Ray restarts it


def end_poisoned_worker(stage: str, exc: BaseException) -> None:
    """End this actor's process after a CUDA error that leaves its context unusable
    (``extract.models.common.is_device_lost``). To Ray it is a crashed worker: the actor is
    restarted with a fresh CUDA context and the batch retried (``runtime.max_task_retries``),
    so the batch's videos are not turned into error rows, nor are the videos after them. A
    deliberate ``exit_actor`` would not be restarted; an exception would fail the run."""
    log.error("%s worker: %s: %s; ending this worker so Ray restarts it and retries the batch",
              stage, type(exc).__name__, exc)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    os._exit(DEVICE_LOST_EXIT_CODE)


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
        start_local_ray(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                        logging_level=logging.WARNING)


def start_local_ray(**init_args: Any) -> None:
    """``ray.init(**init_args)`` starting a new Ray in this process, tried ``RAY_START_ATTEMPTS``
    times: Ray waits a fixed 30 s for the new node's raylet to register and then raises
    ("The current node timed out during startup"), which a loaded machine can miss. The
    processes a failed attempt started are killed before the next (Ray keeps no handle on them).
    Any other error is raised at once."""
    import ray

    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        before = _descendants()
        try:
            ray.init(**init_args)
            return
        except Exception as exc:  # noqa: BLE001 - Ray's start-up timeout is a bare Exception
            if RAY_START_TIMEOUT not in str(exc) or attempt == RAY_START_ATTEMPTS:
                raise
            log.warning("Ray did not start (attempt %d of %d: %s); starting it again", attempt, RAY_START_ATTEMPTS, exc)
            ray.shutdown()
            _kill(_descendants() - before)


def _descendants() -> set[int]:
    """Pids of this process's descendants (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # exited meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _kill(pids: set[int]) -> None:
    """SIGKILL ``pids`` (those still there) and reap the ones that are our children."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # not our child (its parent reaps it), or already reaped
            pass


def connect_cluster(config: Config) -> dict[str, Any]:
    """Connect to Ray (``init_ray``) and return the cluster's resources (``CPU``, ``GPU``,
    ``memory``, accelerator types), ``address`` and live ``nodes`` (``Machine.from_ray`` reads it).

    With ``runtime.device=cuda`` on a cluster with fewer GPUs than one CLIP and one Whisper
    actor take (GPU workers scaled to zero), asks the autoscaler for those two actors' GPUs and
    waits up to ``schedule.gpu_wait_s`` seconds for them to join (the actor pools then keep
    them busy; the request is withdrawn).
    """
    import ray
    from ray.autoscaler.sdk import request_resources

    init_ray(config)
    resources = ray.cluster_resources()
    per_actor = config.runtime.num_gpus_per_actor or GPU_SHARE
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
    return {**resources, "address": address, "CPU": resources.get("CPU", 0.0), "GPU": resources.get("GPU", 0.0),
            "nodes": _live_nodes()}


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


def execute(rows: list[dict[str, Any]], config: Config, stages: dict[str, type] | None = None,
            events: StageEvents | None = None) -> tuple[Iterator[dict[str, np.ndarray]], dict[str, Any]]:
    """Run ``rows`` through the stages on Ray Data; yields finished batches as they complete.

    Returns ``(batches, resources)`` where ``resources`` describes the actor pools used.
    ``events`` hears what is happening (starting Ray, loading the models) and, from the
    workers, of every batch each stage finishes.
    """
    import warnings

    import ray
    import ray.data

    # Ray 2.60 has no named parameter for max_restarts/max_task_retries yet; they must be capped
    # (the defaults retry a crashing video forever), so pass them as remote args on purpose.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
    if events is not None:
        events.phase("starting Ray")
    init_ray(config)
    settings = configure_data_context(config)
    stages = stages or stage_classes()
    machine = cluster_machine(config)
    config, plan, defaults = plan_resources(config, machine)
    check_plan_fits(plan, machine)
    plan_log.info("%s", "\n".join(plan_lines(config, plan, defaults, machine)))
    reports = ray.remote(num_cpus=0)(StageReports).remote() if events is not None else None
    retries = config.runtime.max_task_retries
    n_blocks = max(1, min(len(rows), len(rows) // config.runtime.decode_batch_size + 1))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    for name in plan:  # the enabled stages (or the fused model pool), in run order
        p = plan[name]
        parts = {part: stages[part] for part in spec_named(name).parts if part in stages} or None
        # The fused model pool starts every worker at once (their model loading overlaps the
        # first decodes) and hands a worker its next batch only when it is free, so no batch
        # queues behind a busy worker while another one idles.
        pool = (ray.data.ActorPoolStrategy(min_size=p["actors"], max_size=p["actors"], max_tasks_in_flight_per_actor=1)
                if parts else ray.data.ActorPoolStrategy(min_size=1, max_size=p["actors"]))
        ds = ds.map_batches(
            TimedStage, fn_constructor_args=(stages.get(name) or spec_named(name).load(), name, config,
                                             p.get("torch_threads"), parts, reports),
            batch_size=p["videos_per_batch"], batch_format="numpy", zero_copy_batch=False,
            compute=pool,
            num_cpus=p["num_cpus"], num_gpus=p["num_gpus"] or None, resources=p["resources"] or None,
            max_restarts=retries, max_task_retries=retries,
        )
    log.info("ray data settings: %s; pools: %s", settings, plan)
    resources = {**plan, "machine": machine.describe(), "defaults": explained(config, defaults)}
    batches = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)
    if events is None:
        return batches, resources
    events.phase(f"starting {sum(p['actors'] for p in plan.values())} workers, loading the models")
    return reporting(batches, reports, events), resources


def cluster_machine(config: Config) -> Machine:
    """What the connected Ray cluster has, summed over its live nodes (with the total of
    ``runtime.accelerator_resource`` when it is set)."""
    import ray

    return Machine.from_ray(ray.cluster_resources(), _live_nodes(), config.runtime.accelerator_resource)


def _live_nodes() -> int:
    """Live nodes of the connected Ray cluster (at least 1)."""
    import ray

    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


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


def backend(events: StageEvents | None = None) -> Backend:
    """The stages on Ray Data: ``execute`` (looked up when called, so a test may replace it),
    telling ``events`` what happens, with Ray's worker crashes and actor start failures."""
    return Backend(lambda rows, config, stages=None: execute(rows, config, stages, events),
                   is_worker_crash, stage_start_failure)
