"""Which manifest rows a run processes and which it skips because their outcome is committed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from extract.rows import is_failed

log = logging.getLogger("extract")


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
