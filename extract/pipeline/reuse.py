"""Identical bytes reuse committed features: candidates at planning, copies at writing.

A manifest row that is processed (new, or its input's identity changed) may hold bytes that a
committed video already has: a re-upload, the same file under a second id, or the same id whose
listing changed (copied, touched) while its bytes did not. Such a row is not decoded again:

1. ``extract.tables.planning.attach_candidates`` (driver, planning, run by
   ``RunSession.plan``): each row gets ``reuse_candidates``, a JSON list of the committed
   videos computed with the same feature hash whose ``file_bytes`` equals the size the store
   listed for the row (uploaded within ``input.reuse_days`` of the manifest's dates: the scan
   reads those partitions only, a few narrow columns), plus the row's own committed version,
   each with its ``content_sha256``.
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

from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from extract.tables.catalog import Catalog
from extract.tables.records import COPIED_TABLES, ReusedVideo
from extract.text.features import TEXT_FEATURE_COLUMNS

# videos columns a reused row keeps from itself: who and where it is, its caption and what is
# computed from the caption; every other column is the original's (computed from the bytes).
OWN_COLUMNS = ("video_id", "upload_ts", "uri", "caption", "content_sha256", "file_bytes", "source_bytes",
               "source_mtime", "reused_from", "feature_hash", "processed_at", "run_id") + TEXT_FEATURE_COLUMNS


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
