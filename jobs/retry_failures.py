"""Retry failures: re-process the videos whose last outcome is a retryable error.

    ray job submit --address http://HEAD:8265 -- python -m jobs.retry_failures \\
        --start 2026-01-01 --end 2026-01-07 --config jobs/configs/prod.yaml --config ...

For each date of the range, one run with ``retry_errors`` over that date's input: only
videos whose latest ``errors`` row is retryable (store errors, timeouts, lost rows) are
processed; their error rows are superseded by the new outcome. Non-retryable errors (corrupt
files, limits) stay. A date without an input has nothing to retry. Exit codes as
``jobs.daily``.
"""

from __future__ import annotations

from jobs.common import JobSpec, entrypoints, retry_tasks

SPEC = JobSpec(
    name="retry_failures",
    description="Re-process the retryable errors of the upload dates --start..--end.",
    date_args="range",
    tasks=retry_tasks,
    retry_errors=True,
    epilog=__doc__,
)


build_parser, main = entrypoints(SPEC)

if __name__ == "__main__":
    raise SystemExit(main())
