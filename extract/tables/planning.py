"""Which manifest rows a run processes and which it skips because their outcome is committed,
and which committed videos the processed rows may reuse (``attach_candidates``; the reuse itself
is ``extract.pipeline.reuse``'s). ``extract.tables.session.RunSession.plan_manifest`` runs both.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from extract.rows import is_failed
from extract.tables.catalog import Catalog
from extract.tables.records import parse_ts

log = logging.getLogger("extract")
MAX_CANDIDATES = 8  # committed videos of one size a row is compared with (earliest first)


@dataclass
class RunPlan:
    """Which manifest rows this run processes, which it skips and why."""

    todo: list[dict[str, Any]] = field(default_factory=list)  # rows for the stages
    failed: list[dict[str, Any]] = field(default_factory=list)  # manifest rows already failed
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    why: Counter = field(default_factory=Counter)  # why rows are processed -> count
    reusable: int = 0  # rows of todo with a reuse candidate (``attach_candidates``)


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


def attach_candidates(catalog: Catalog, todo: list[dict[str, Any]], outcomes: Mapping[str, Mapping[str, Any]],
                      feature_hash: str, reuse_days: int) -> int:
    """Set ``reuse_candidates`` (JSON list or None) on every row of ``todo``; returns how many
    rows have at least one candidate.

    Candidates: committed videos with ``feature_hash`` whose ``file_bytes`` equals the row's
    listed ``source_bytes``, uploaded in the ``reuse_days`` days up to the manifest's newest
    date (partitions ``dt``; the scan reads those partitions only, four narrow columns), and
    the row's own committed version. Each is ``{video_id, dt, content_sha256, table, version}``
    (``table``/``version``: where the decode stage reads its text inputs on a match).
    """
    for row in todo:
        row["reuse_candidates"] = None
    if catalog.delta("videos") is None or not todo:
        return 0
    sizes = sorted({int(r["source_bytes"]) for r in todo if r.get("source_bytes")}) if reuse_days > 0 else []
    own = {r["video_id"]: prev["dt"] for r in todo
           if (prev := outcomes.get(r["video_id"])) and prev["status"] == "ok" and prev.get("feature_hash") == feature_hash}
    if not sizes and not own:
        return 0
    dts = set(own.values())
    match = pc.field("video_id").isin(pa.array(sorted(own), pa.string()))
    if sizes:
        newest = max(date.fromisoformat(r["dt"]) for r in todo)
        oldest = min(date.fromisoformat(r["dt"]) for r in todo) - timedelta(days=reuse_days)
        dts |= {str(oldest + timedelta(days=i)) for i in range((newest - oldest).days + 1)}
        match = match | pc.field("file_bytes").isin(pa.array(sizes, pa.int64()))
    keys = catalog.read("videos", ["video_id", "dt", "content_sha256", "file_bytes", "processed_at"],
                        (pc.field("feature_hash") == feature_hash) & match, dts=dts)
    if keys is None or keys.num_rows == 0:
        return 0
    where = {"table": catalog.table_uri("videos"), "version": catalog.versions["videos"]}
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_id: dict[str, dict[str, Any]] = {}
    for key in keys.sort_by([("processed_at", "ascending"), ("video_id", "ascending")]).to_pylist():
        candidate = {"video_id": key["video_id"], "dt": key["dt"], "content_sha256": key["content_sha256"], **where}
        by_size[key["file_bytes"]].append(candidate)
        by_id[key["video_id"]] = candidate
    attached = 0
    for row in todo:
        chosen = by_size.get(row.get("source_bytes"), [])[:MAX_CANDIDATES]
        mine = by_id.get(row["video_id"]) if row["video_id"] in own else None
        if mine is not None and mine not in chosen:
            chosen = [*chosen, mine]
        if chosen:
            row["reuse_candidates"] = json.dumps(chosen)
            attached += 1
    return attached
