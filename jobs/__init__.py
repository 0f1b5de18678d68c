"""Scheduled entrypoints, meant for ``ray job submit -- python -m jobs.<name> ...``.

- ``jobs.daily``: the nightly run over one upload date (plus a look-back for late uploads);
- ``jobs.backfill``: a date range, resumable (dates with a committed run are skipped);
- ``jobs.retry_failures``: re-processes the retryable errors of a date range.

Each is a declarative ``jobs.common.JobSpec`` run by ``jobs.common.job_main``; the job
configs live in ``jobs/configs/`` (``local.yaml``, ``prod.yaml``). See docs/RUNBOOK.md.
"""
