"""One way to run: what ``extract`` and the scheduled jobs (``jobs/``) do around a run.

``run_once`` is one committed run of ``extract.pipeline.job.run_job`` with what a person and a
scheduler see of it: Ray's output in the run's log (``RunConsole``), the summary, the HTML run
report, the exit code (``extract.pipeline.outcome``) and the error-rate alert. ``run_step``
does the same for the runs that follow a commit (the duplicate and sound searches,
maintenance) and the other table commands: a failure is one line and exit 1, a committed step
prints its summary and writes its report (every kind of run has one, ``extract.report``).
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from typing import Any, Callable

from extract.config import Config, StorageConfig
from extract.pipeline.outcome import EXIT_ERROR_RATE, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Outcome, run_outcome

log = logging.getLogger("extract")


def run_once(src: str, dst: str, config: Config, *, name: str = "extract", overwrite: bool = False,
             retry_errors: bool = False, progress: bool = True, verbose: bool = False) -> Outcome:
    """Process ``src`` into ``dst`` as one committed run; ``name`` prefixes what goes to
    standard error (``extract``, ``jobs.daily: 2026-11-24``). Exit codes: 0 committed, 1 the run
    failed (``what_was_published`` says what it left visible), 2 the manifest cannot be read or the output
    written (no log is left), 3 committed over
    ``limits.max_error_rate``."""
    from extract.pipeline.console import RunConsole, nearest_existing, remove_empty_dirs, run_log_path
    from extract.pipeline.job import run_job
    from extract.pipeline.manifest import ManifestError
    from extract.report import summarize, write_report
    from extract.tables.session import new_run_id

    run_id = new_run_id()
    console = RunConsole(run_log_path(dst, run_id), verbose=verbose)
    log_note = "" if verbose else f" (log: {console.log_path})"
    kept_folder = nearest_existing(console.log_path.parent)  # what a run that never starts leaves as it was
    opened = ExitStack()
    try:
        opened.enter_context(console)
    except OSError as exc:  # the output cannot be written: the run never starts, and has no log to name
        remove_empty_dirs(console.log_path.parent, kept_folder)
        detail = f"output {dst}: cannot be written ({exc.strerror or exc}: {exc.filename or console.log_path})"
        print(f"{name}: {detail}; pass a writable --output", file=sys.stderr)
        return Outcome("failed", EXIT_USAGE, detail)
    try:
        with opened:
            try:
                record = run_job(src, dst, config, overwrite=overwrite, retry_errors=retry_errors,
                                 progress=progress, terminal=console.terminal, run_id=run_id)
            except ManifestError:
                raise
            except Exception:
                log.exception("run failed")  # the traceback, in the log
                raise
    except ManifestError as exc:  # the run never started (nothing read, nothing planned): no log of it
        console.log_path.unlink(missing_ok=True)
        remove_empty_dirs(console.log_path.parent, kept_folder)
        print(f"{name}: {exc}", file=sys.stderr)
        return Outcome("failed", EXIT_USAGE, str(exc))
    except Exception as exc:  # noqa: BLE001 - report any run-level failure and what it left published
        from extract.tables.writer import what_was_published

        detail = f"{type(exc).__name__}: {exc}"
        print(f"{name}: run failed, {what_was_published(exc)}: {detail}{log_note}", file=sys.stderr)
        return Outcome("failed", EXIT_FAILED, detail)
    outcome = run_outcome(record, config.limits.max_error_rate)
    print(summarize(outcome, dst), flush=True)
    write_report(name, dst, record, config.storage)
    if not verbose:
        print(f"  log (Ray and workers): {console.log_path}", flush=True)
    if outcome.code == EXIT_ERROR_RATE:
        print(f"{name}: {outcome.detail}", file=sys.stderr)
    return outcome


def run_step(name: str, what: str, step: Callable[[], dict[str, Any]], describe: Callable[[dict[str, Any]], str],
             report: tuple[str, StorageConfig],
             expected: tuple[type[BaseException], ...] = (Exception,)) -> Outcome:
    """Run one table command ``step`` (returns its record) and print ``describe(record)``, then
    write its HTML report (``report``: ``(dst, storage)``) when the record was published (a
    ``maintain`` of an output without tables publishes none). An ``expected`` exception is one
    line and exit 1 (the runs committed before stay so); others propagate."""
    from extract.report import write_report

    try:
        record = step()
    except expected as exc:
        log.debug("%s failed", what, exc_info=True)
        print(f"{name}: {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Outcome("failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}")
    print(describe(record), flush=True)
    if record.get("committed_at"):
        write_report(name, report[0], record, report[1])
    return Outcome("committed", EXIT_OK, "", record)


def find_duplicates_step(name: str, dst: str, config: Config, since: str | None = None, options=None,
                         expected: tuple[type[BaseException], ...] = (Exception,)) -> Outcome:
    """``extract duplicates``: the near-copy search over ``dst``'s videos of ``dt >= since``,
    committed, summarised and reported."""
    from extract.index.near_duplicates import DuplicateOptions
    from extract.pipeline.duplicates import describe_duplicates, find_duplicates

    return run_step(name, f"duplicate search on {dst}",
                    lambda: find_duplicates(dst, config, None, since, options or DuplicateOptions()),
                    describe_duplicates, (dst, config.storage), expected)


def find_sounds_step(name: str, dst: str, config: Config, since: str | None = None, options=None,
                     expected: tuple[type[BaseException], ...] = (Exception,)) -> Outcome:
    """``extract sounds``: the same-sound search over ``dst``'s videos of ``dt >= since``,
    committed, summarised and reported."""
    from extract.index.sounds import SoundOptions
    from extract.pipeline.sounds import describe_sounds, find_sounds

    return run_step(name, f"sound search on {dst}",
                    lambda: find_sounds(dst, config, None, since, options or SoundOptions()),
                    describe_sounds, (dst, config.storage), expected)


def maintain_step(name: str, dst: str, config: Config,
                  expected: tuple[type[BaseException], ...] = (Exception,)) -> Outcome:
    """``extract maintain`` on ``dst`` (``extract.tables.maintenance``)."""
    from extract.tables.catalog import Catalog
    from extract.tables.maintenance import describe_maintenance, maintain

    return run_step(name, f"maintenance of {dst}",
                    lambda: maintain(Catalog(dst, config.storage), config.storage.retention_hours),
                    describe_maintenance, (dst, config.storage), expected)
