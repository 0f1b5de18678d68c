"""Nightly run: process the uploads of one UTC date, incrementally.

    ray job submit --address http://HEAD:8265 -- python -m jobs.daily --date yesterday \\
        --config jobs/configs/prod.yaml --config s3://features/models/models.yaml

Reads ``schedule.input`` formatted with ``--date`` and with each of the
``schedule.lookback_days`` dates before it, so uploads that land in an earlier date's folder
after that date's run are picked up by the next night (already committed videos are skipped).
With ``schedule.maintain: true`` it then runs ``extract maintain`` on the output (compaction,
checkpoints, vacuum of files older than ``storage.retention_hours``) when a date committed.
Exits non-zero when a run failed (1), the date's input is missing (2) or a run's error rate
passed ``limits.max_error_rate`` (3), so the scheduler alerts.
"""

from __future__ import annotations

from jobs.common import JobSpec, daily_tasks, entrypoints

SPEC = JobSpec(
    name="daily",
    description="Process the uploads of one UTC date (and re-scan the look-back dates for late uploads).",
    date_args="date",
    tasks=daily_tasks,
    maintains=True,
    epilog=__doc__,
)


build_parser, main = entrypoints(SPEC)

if __name__ == "__main__":
    raise SystemExit(main())
