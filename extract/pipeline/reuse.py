"""Identical bytes reuse committed features: candidates at planning, copies at writing.

A manifest row that is processed (new, or its input's identity changed) may hold bytes that a
committed video already has: a re-upload, the same file under a second id, or the same id whose
listing changed (copied, touched) while its bytes did not. Such a row is not decoded again:

1. ``attach_candidates`` (driver, planning): each row gets ``reuse_candidates``, a JSON list of
   the committed videos computed with the same feature hash whose ``file_bytes`` equals the
   size the store listed for the row (uploaded within ``input.reuse_days`` of the manifest's
   dates: the scan reads those partitions only, a few narrow columns), plus the row's own
   committed version, each with its ``content_sha256``.
2. The decode stage hashes the bytes as it fetches them (it always does). When the sha256
   equals a candidate's (``extract.rows.matching_candidate``), it decodes nothing, reads the
   candidate's text inputs (``clip_embedding``, ``transcript_text``, ``ocr_text``) from the
   table at the version planning read, and sets ``reused_from``, ``reused_dt`` and
   ``reused_inputs``; the Whisper, OCR and CLIP stages run no model for the row, and the CLIP
   stage computes its caption's text features from the candidate's inputs (the caption and
   hashtags are the row's own; the text tower is the only model that sees the row).
3. ``reused_records`` (driver, writing): the original's committed rows at the run's pinned
   versions, which ``extract.tables.records.rows_to_tables`` turns into the row's records:
   the ``videos`` record is the original's with the row's ``OWN_COLUMNS`` over it, and the
   original's frames, transcript segments and OCR lines are copied under the new id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, timedelta
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from extract.tables.catalog import Catalog
from extract.tables.records import COPIED_TABLES, ReusedVideo
from extract.text.features import TEXT_FEATURE_COLUMNS

MAX_CANDIDATES = 8  # committed videos of one size a row is compared with (earliest first)

# videos columns a reused row keeps from itself: who and where it is, its caption and what is
# computed from the caption; every other column is the original's (computed from the bytes).
OWN_COLUMNS = ("video_id", "upload_ts", "uri", "caption", "content_sha256", "file_bytes", "source_bytes",
               "source_mtime", "reused_from", "feature_hash", "processed_at", "run_id") + TEXT_FEATURE_COLUMNS


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


def reused_records(catalog: Catalog, rows: list[dict[str, Any]]) -> dict[str, ReusedVideo]:
    """``{video_id: ReusedVideo}`` for the rows of a finished batch that reuse a committed video:
    the original's committed records of ``videos`` and of ``COPIED_TABLES`` (read at the run's
    pinned versions, in the original's partition only)."""
    wanted = {row["video_id"]: (row["reused_from"], row["reused_dt"]) for row in rows if row.get("reused_from")}
    if not wanted:
        return {}
    originals = sorted({vid for vid, _ in wanted.values()})
    dts = {dt for _, dt in wanted.values()}
    where = pc.field("video_id").isin(pa.array(originals, pa.string()))
    per_table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table in ("videos", *COPIED_TABLES):
        data = catalog.read(table, None, where, dts)
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rec in ([] if data is None else data.drop_columns(["dt"]).to_pylist()):
            grouped[rec["video_id"]].append(rec)
        per_table[table] = grouped
    out = {}
    for vid, (original, _) in wanted.items():
        video = per_table["videos"].get(original)
        if video:  # the original was committed when the run planned, so it is there at the pinned version
            out[vid] = ReusedVideo(video=video[0], children={t: per_table[t].get(original, []) for t in COPIED_TABLES},
                                   own_columns=OWN_COLUMNS)
    return out
