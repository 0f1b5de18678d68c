"""Which manifest rows a run processes and which it skips because their outcome is committed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from extract.rows import is_failed
from extract.tables.records import parse_ts

log = logging.getLogger("extract")


@dataclass
class RunPlan:
    """Which manifest rows this run processes, which it skips and why."""

    todo: list[dict[str, Any]] = field(default_factory=list)  # rows for the stages
    failed: list[dict[str, Any]] = field(default_factory=list)  # manifest rows already failed
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    why: Counter = field(default_factory=Counter)  # why rows are processed -> count


def same_input(row: Mapping[str, Any], prev: Mapping[str, Any]) -> bool:
    """Whether the store lists ``row``'s input as the one ``prev`` was committed from: the same
    size and modification time (an object's ``Last-Modified``). Unknown on either side is not
    the same: the bytes decide (``extract.pipeline.reuse``)."""
    size, mtime = row.get("source_bytes"), parse_ts(row.get("source_mtime"))
    return (size is not None and mtime is not None and size == prev.get("source_bytes")
            and mtime == prev.get("source_mtime"))


def plan_run(rows: list[dict[str, Any]], outcomes: dict[str, dict[str, Any]], feature_hash: str,
             overwrite: bool = False, retry_errors: bool = False) -> RunPlan:
    """Decide per manifest row: process, or skip because its outcome is already committed.

    - default (incremental): skip ids committed as ``ok`` with the same feature hash and the
      same input (``same_input``), ids committed as errors whose input is not known to have
      changed, and forgotten ids whose uri is unchanged; an ``ok`` id whose listing changed or
      is unknown is processed, and its bytes decide whether its committed features are reused;
    - ``overwrite``: process every row (its old rows are replaced in the same commit);
    - ``retry_errors``: process only ids whose latest outcome is a retryable error.

    ``RunPlan.why`` counts the processed rows by reason (``new``, ``input_changed``,
    ``features_changed``, ``overwrite``, ``retry``, ``forgotten_uri_changed``).
    """
    plan = RunPlan()
    for row in rows:
        prev = outcomes.get(row["video_id"])
        if retry_errors:
            process = bool(prev and prev["status"] == "error" and prev.get("retryable"))
            reason, why = "not_retryable_error", "retry"
        elif prev is None:
            process, why = True, "new"
        elif overwrite:
            process, why = True, "overwrite"
        elif prev["status"] == "ok":
            if prev.get("feature_hash") != feature_hash:
                process, why = True, "features_changed"
            else:
                process, reason, why = not same_input(row, prev), "already_committed", "input_changed"
        elif prev["status"] == "forgotten":
            process, reason, why = prev.get("uri") != row["uri"], "forgotten", "forgotten_uri_changed"
        else:
            changed = (row.get("source_bytes") is not None and prev.get("source_bytes") is not None
                       and not same_input(row, prev))
            process, reason, why = changed, "committed_error", "input_changed"
        if not process:
            plan.skipped[reason] += 1
            continue
        plan.why[why] += 1
        if is_failed(row):
            plan.failed.append(row)
        else:
            plan.todo.append(row)
    return plan
