"""Backfill: process a range of upload dates, resumably.

    ray job submit --address http://HEAD:8265 -- python -m jobs.backfill \\
        --start 2026-01-01 --end 2026-03-31 --config jobs/configs/prod.yaml --config ...

Dates run oldest first, each as one committed run. A date is skipped when ``_runs/`` already
holds a committed run over its input with the current features (from a daily run or an
earlier backfill), so a crashed or stopped backfill resumes where it stopped when started
again with the same arguments. By default the job stops at the first failed date;
``--keep-going`` runs the rest. Exit codes as ``jobs.daily``.
"""

from __future__ import annotations

from jobs.common import JobSpec, entrypoints, range_tasks

SPEC = JobSpec(
    name="backfill",
    description="Process every upload date of --start..--end that has no committed run yet.",
    date_args="range",
    tasks=range_tasks,
    skip_finished=True,
    stop_on_failure=True,
    epilog=__doc__,
)


build_parser, main = entrypoints(SPEC)

if __name__ == "__main__":
    raise SystemExit(main())
