"""What the scheduled jobs share: date arguments, per-date inputs, planning, running, exit codes.

A job is a ``JobSpec`` (which dates it covers, whether it retries errors, skips dates that are
already finished, stops at the first failed date). ``job_main`` parses the command line,
loads the config, prints the plan (the dates, the stages, the resource plan and the Ray Data
settings) and then runs each date as one committed run through ``extract.runner.run_once``,
as ``extract run`` does (summary, HTML run report, error-rate alert).

Dates are UTC calendar dates (``YYYY-MM-DD``, or ``today``/``yesterday``). The uploads of a
date are ``schedule.input`` formatted with it (``--uploads`` overrides), e.g.
``s3://uploads/{date}/manifest.jsonl``; every date writes to ``schedule.output``
(``--output``). Within a date the run is incremental: videos with a committed outcome are
skipped, so re-running a date only processes what is new (late uploads).

A date is *finished* when ``DST/_runs/`` (read through ``extract.tables.catalog.Catalog``) holds a committed run over exactly that date's input
with the current feature hash that was not a retry-only run (``finished_run``). A crash
publishes nothing, so a crashed date is not finished and the next backfill runs it again.

Exit codes (as ``extract run``): 0 every date committed; 1 a date's run failed (nothing of
it was published); 2 bad usage or config, or a required input is missing; 3 every run
committed but one passed ``limits.max_error_rate``. Over several dates the most severe wins:
1, then 2, then 3.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable, Iterable, Sequence

from extract.config import Config, ConfigError, StorageConfig, load_config
from extract.models.weights import weights_digests
from extract.pipeline.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, worst
from extract.pipeline.ray_backend import connect_cluster
from extract.runner import find_duplicates_step, find_sounds_step, maintain_step, run_once

log = logging.getLogger("extract.jobs")


@dataclass(frozen=True)
class DateTask:
    """One upload date of a job and where its uploads are."""

    day: date
    src: str  # the date's manifest or folder/prefix (schedule.input formatted with the date)
    required: bool = True  # a missing input fails the date; else the date has nothing to do


@dataclass
class DateOutcome:
    """What happened (or will happen) to one date: ``status`` is ``run`` (planned),
    ``finished`` / ``no-input`` (skipped), ``missing``, ``committed``, ``failed`` or
    ``not-started``; ``code`` is the date's exit code."""

    task: DateTask
    status: str
    code: int = EXIT_OK
    detail: str = ""
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job, declared: what it runs over and how."""

    name: str  # module under jobs/ (python -m jobs.<name>)
    description: str
    date_args: str  # "date": --date DAY; "range": --start DAY [--end DAY]
    tasks: Callable[[Config, argparse.Namespace], list[DateTask]]  # the dates and their inputs
    retry_errors: bool = False  # process only videos whose last outcome is a retryable error
    skip_finished: bool = False  # skip dates with a committed run over their input
    stop_on_failure: bool = False  # stop at the first failed date (then --keep-going is offered)
    maintains: bool = False  # after committing: `extract duplicates` / `extract sounds` / `extract maintain`
    # (schedule.duplicates / output.sounds / schedule.maintain)
    epilog: str = ""  # the module docstring: --help shows it from its second paragraph on


# --------------------------------------------------------------------------- dates and inputs


def parse_day(text: str, today: date | None = None) -> date:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC) -> date; argparse-friendly errors."""
    today = today or datetime.now(timezone.utc).date()
    keywords = {"today": today, "yesterday": today - timedelta(days=1)}
    if text in keywords:
        return keywords[text]
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD, today or yesterday") from None


def date_range(start: date, end: date) -> list[date]:
    """Every date from ``start`` to ``end``, both included."""
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def upload_source(config: Config, day: date) -> str:
    """The uploads of ``day``: ``schedule.input`` formatted with it; local paths made absolute."""
    from extract.io.storage import is_remote

    template = config.schedule.input
    if template is None:
        raise ConfigError("schedule.input: not set; pass --uploads TEMPLATE (e.g. s3://uploads/{date}/manifest.jsonl) "
                          "or set it in the job config")
    src = template.format(date=day)
    if is_remote(src) or src.startswith("file://"):
        return src
    return os.path.abspath(src)


def daily_tasks(config: Config, args: argparse.Namespace) -> list[DateTask]:
    """``--date`` plus ``schedule.lookback_days`` earlier dates re-scanned for late uploads.

    Only the date itself must have an input; a look-back date without one has nothing to do.
    """
    back = config.schedule.lookback_days
    days = [args.date - timedelta(days=k) for k in range(back, -1, -1)]
    return [DateTask(day, upload_source(config, day), required=day == args.date) for day in days]


def range_tasks(config: Config, args: argparse.Namespace, require_input: bool = True) -> list[DateTask]:
    """Every date of ``--start``..``--end``; ``require_input`` decides if a missing input fails."""
    return [DateTask(day, upload_source(config, day), require_input)
            for day in date_range(args.start, args.end or args.start)]


retry_tasks = partial(range_tasks, require_input=False)  # no input, nothing to retry


# --------------------------------------------------------------------------- command line


def job_parser(spec: JobSpec) -> argparse.ArgumentParser:
    """The job's argparse parser: date arguments plus the config options shared by all jobs."""
    epilog = spec.epilog.split("\n\n", 1)[-1].replace("``", "")
    parser = argparse.ArgumentParser(prog=f"python -m jobs.{spec.name}", description=spec.description,
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    if spec.date_args == "date":
        parser.add_argument("--date", required=True, type=parse_day, metavar="DAY",
                            help="upload date: YYYY-MM-DD, today or yesterday (UTC)")
    else:
        parser.add_argument("--start", required=True, type=parse_day, metavar="DAY", help="first upload date (YYYY-MM-DD)")
        parser.add_argument("--end", type=parse_day, metavar="DAY", help="last upload date, included (default: --start)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="job config; repeat to merge in order (later wins); local or s3:// / gs://")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one config key, e.g. --set runtime.clip_actors=16")
    parser.add_argument("--uploads", metavar="TEMPLATE",
                        help="uploads of a date, with {date} (overrides schedule.input), e.g. s3://uploads/{date}/")
    parser.add_argument("--output", metavar="DST", help="output folder or prefix (overrides schedule.output)")
    if spec.stop_on_failure:
        parser.add_argument("--keep-going", action="store_true",
                            help="run the remaining dates after a failed one (default: stop; a rerun resumes)")
    parser.add_argument("--progress", action="store_true", help="a progress bar per date on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def load_job_config(args: argparse.Namespace) -> Config:
    """Merge ``--config`` files (object-store ones are fetched first), ``--set``, ``--uploads``
    and ``--output``. Relative model paths in a remote file would resolve against a temporary
    folder, so remote config files must use absolute paths or URIs (``models.yaml`` does)."""
    from extract.rows import VideoError
    from extract.io.storage import fetch, is_remote

    with tempfile.TemporaryDirectory(prefix="jobs-config-") as tmp:
        files = []
        for path in args.config:
            if is_remote(path):
                try:
                    path, _, _ = fetch(path, tmp, StorageConfig())
                except VideoError as exc:
                    raise ConfigError(f"config file {path}: {exc}") from exc
            files.append(path)
        config = load_config(files, args.overrides)
    flags = {"schedule.input": args.uploads, "schedule.output": args.output}
    config = config.replace(**{key: value for key, value in flags.items() if value is not None})
    if config.schedule.output is None:
        raise ConfigError("schedule.output: not set; pass --output DST or set it in the job config")
    return config


# --------------------------------------------------------------------------- planning


def finished_run(runs: Iterable[dict[str, Any]], src: str, feature_hash: str) -> str | None:
    """Run id of a committed run that processed all of ``src`` with these features, or None.

    Retry-only runs do not count (they skip new videos); a run with other features does not
    either (its videos are re-processed by the next run anyway).
    """
    for run in runs:
        if (run.get("kind") == "run" and run.get("status") == "committed" and run.get("input") == src
                and run.get("feature_hash") == feature_hash
                and not (run.get("options") or {}).get("retry_errors")):
            return run["run_id"]
    return None


def input_exists(src: str, storage: StorageConfig) -> bool:
    """True when the manifest file or folder/prefix ``src`` exists."""
    import pyarrow.fs as pafs

    from extract.io.storage import filesystem_for

    fs, path = filesystem_for(src, storage)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def plan_dates(spec: JobSpec, config: Config, tasks: Sequence[DateTask]) -> list[DateOutcome]:
    """Per date: ``run``, or skipped as ``finished``/``no-input``, or ``missing`` (a failure)."""
    from extract.tables.catalog import Catalog

    runs = Catalog(config.schedule.output, config.storage).runs if spec.skip_finished else []
    # as the runs record it: the weights counted by content
    features = config.feature_hash_of(weights_digests(config)) if spec.skip_finished else None
    plan = []
    for task in tasks:
        run_id = finished_run(runs, task.src, features) if spec.skip_finished else None
        if run_id:
            plan.append(DateOutcome(task, "finished", detail=f"committed by run {run_id}"))
        elif not input_exists(task.src, config.storage):
            plan.append(DateOutcome(task, "missing", EXIT_USAGE, f"input {task.src} does not exist")
                        if task.required else DateOutcome(task, "no-input", detail="no uploads"))
        else:
            plan.append(DateOutcome(task, "run"))
    return plan


# --------------------------------------------------------------------------- reports


def describe_dates(spec: JobSpec, config: Config, plan: Sequence[DateOutcome]) -> str:
    """The job's header and one line per date: its input and what the job will do with it."""
    lines = [f"jobs.{spec.name}: {len(plan)} date(s) -> {config.schedule.output} "
             f"(config {config.config_hash}, features {config.feature_hash_of(weights_digests(config))}"
             f"{', retryable errors only' if spec.retry_errors else ''})"]
    for item in plan:
        note = f"  ({item.detail})" if item.detail else ""
        lines.append(f"  {item.task.day}  {item.status:<9} {item.task.src}{note}")
    return "\n".join(lines)


def describe_resources(config: Config, cluster: dict[str, Any], resources: dict[str, dict[str, Any]],
                       settings: dict[str, Any]) -> str:
    """The stages in order with their actor pools, model batch sizes and the Ray Data settings."""
    from extract.stages.registry import MODELS, STAGES

    names = [name for name in (*STAGES, MODELS.name) if name in resources]  # MODELS: the fused CPU pool
    rt = config.runtime
    lines = [f"ray: {cluster['address']} (cluster CPU {cluster['CPU']:g}, GPU {cluster['GPU']:g}); "
             f"device {rt.device}",
             f"stages: {' -> '.join(names)}",
             f"  {'stage':<8} {'actors':>6} {'CPU/actor':>9} {'GPU/actor':>9} {'videos/call':>11}"]
    for name in names:
        p = resources[name]
        extra = "".join(f"  {key} {amount:g}/actor" for key, amount in p["resources"].items())
        lines.append(f"  {name:<8} {p['actors']:>6} {p['num_cpus']:>9g} {p['num_gpus']:>9g} {p['videos_per_batch']:>11}"
                     + extra)
    lines.append(f"  model batches: clip {rt.clip_batch_size} frames/forward, whisper {rt.whisper_batch_size} "
                 f"windows/decode; decode {rt.decode_threads} FFmpeg thread(s)/video")
    lines.append("ray data: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return "\n".join(lines)


def describe_outcomes(spec: JobSpec, outcomes: Sequence[DateOutcome], code: int) -> str:
    """The closing summary: one line per date with its run, counts and problem."""
    lines = [f"jobs.{spec.name}: exit {code}"]
    for item in outcomes:
        text = item.detail
        if item.record is not None:
            counts = item.record["counts"]
            text = (f"run {item.record['run_id']}: processed {counts['processed']} (ok {counts['ok']}, "
                    f"errors {counts['errors']}, error rate {item.record['error_rate']:.1%}), "
                    f"skipped {counts['skipped']}" + (f"; {item.detail}" if item.detail else ""))
        lines.append(f"  {item.task.day}  {item.status:<11} {text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


def run_date(spec: JobSpec, config: Config, task: DateTask, progress: bool) -> DateOutcome:
    """One committed run over the date's input (``extract.runner.run_once``: summary, report,
    error-rate alert); a run-level failure becomes a ``failed`` outcome."""
    print(f"== {task.day}: {task.src}", flush=True)
    outcome = run_once(task.src, config.schedule.output, config, name=f"jobs.{spec.name}: {task.day}",
                       retry_errors=spec.retry_errors, progress=progress, verbose=log.isEnabledFor(logging.INFO))
    return DateOutcome(task, outcome.status, outcome.code, outcome.detail, outcome.record)


def run_plan(spec: JobSpec, config: Config, plan: list[DateOutcome], keep_going: bool, progress: bool) -> int:
    """Run the planned dates in order; returns the job's exit code (``worst`` of the dates)."""
    from extract.config.machine import Machine
    from extract.pipeline.ray_backend import configure_data_context
    from extract.pipeline.resources import plan_resources

    pending = [item for item in plan if item.status == "run"]
    if pending:
        try:
            cluster = connect_cluster(config)
            resolved, resources, _ = plan_resources(config, Machine.from_ray(cluster, cluster.get("nodes", 1),
                                                                         config.runtime.accelerator_resource))
        except Exception as exc:  # noqa: BLE001 - no cluster, no run: report and alert
            log.exception("cannot start on Ray")
            print(f"jobs.{spec.name}: cannot start on Ray: {type(exc).__name__}: {exc}", file=sys.stderr)
            for item in pending:
                item.status, item.code, item.detail = "not-started", EXIT_FAILED, "cannot start on Ray (see above)"
        else:
            print(describe_resources(resolved, cluster, resources, configure_data_context(config)), flush=True)
    stopped_by: DateOutcome | None = None
    for i, item in enumerate(plan):
        if item.status not in ("run", "missing"):
            continue
        if stopped_by is not None:
            item.status, item.code = "not-started", EXIT_OK
            item.detail = f"stopped after {stopped_by.task.day} failed; rerun to resume or pass --keep-going"
            continue
        if item.status == "run":
            plan[i] = item = run_date(spec, config, item.task, progress)
        if item.code in (EXIT_FAILED, EXIT_USAGE) and spec.stop_on_failure and not keep_going:
            stopped_by = item
    codes = [item.code for item in plan]
    committed = sorted(str(item.task.day) for item in plan if item.status == "committed")
    name, dst = f"jobs.{spec.name}", config.schedule.output
    if spec.maintains and config.schedule.duplicates and committed:
        codes.append(find_duplicates_step(name, dst, config, since=committed[0]).code)
    if spec.maintains and config.output.sounds and committed:
        codes.append(find_sounds_step(name, dst, config, since=committed[0]).code)
    if spec.maintains and config.schedule.maintain and committed:
        codes.append(maintain_step(name, dst, config).code)
    code = worst(codes)
    print(describe_outcomes(spec, plan, code), flush=True)
    return code


def job_main(spec: JobSpec, argv: Sequence[str] | None = None) -> int:
    """Parse, load the config, plan and print, run; returns the exit code (see module doc)."""
    args = job_parser(spec).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_job_config(args)
        tasks = spec.tasks(config, args)
    except ConfigError as exc:
        print(f"jobs.{spec.name}: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan = plan_dates(spec, config, tasks)
    except Exception as exc:  # noqa: BLE001 - e.g. the output store is unreachable
        log.exception("planning failed")
        print(f"jobs.{spec.name}: cannot plan the dates: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(describe_dates(spec, config, plan), flush=True)
    return run_plan(spec, config, plan, getattr(args, "keep_going", False), args.progress)


def entrypoints(spec: JobSpec) -> tuple[Callable[[], argparse.ArgumentParser], Callable[..., int]]:
    """A job module's ``build_parser()`` (for --help and for checking entrypoints) and
    ``main(argv=None) -> exit code``, both bound to ``spec``."""
    return partial(job_parser, spec), partial(job_main, spec)
