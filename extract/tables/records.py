"""Final pipeline rows -> Arrow tables of every output table, typed by the schema registry.

``rows_to_tables`` splits each finished row (one per video, see ``extract.rows``) into the
records of every table and builds one Arrow table per (table, dt) with the registry schema.
A row that does not fit its schema becomes an ``errors`` record (stage ``write``) instead of
failing the batch, so one bad value never costs other videos. A row that reuses a committed
video's features (``reused_from``, see ``extract.pipeline.reuse``) gets its records from that
video's committed ones (``ReusedVideo``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from extract.rows import is_failed, mark_failed, thumbnails_of
from extract.tables.schemas import TABLES, get_table_schema


@dataclass(frozen=True)
class TableContext:
    """What every written record shares: run id, time, feature hash and embedding width."""

    run_id: str
    processed_at: datetime
    feature_hash: str
    embedding_dim: int

    def schema(self, table: str) -> pa.Schema:
        return get_table_schema(table).arrow_schema(self.embedding_dim)


# Tables whose rows describe a video's bytes: a reused video gets copies of the original's.
COPIED_TABLES = ("frame_embeddings", "transcript_segments", "ocr_text", "shots")


@dataclass(frozen=True)
class ReusedVideo:
    """A committed video's records that a row with identical bytes reuses: its ``videos``
    record, its records in ``COPIED_TABLES`` (``children``), and the ``videos`` columns the
    row keeps from itself (``own_columns``)."""

    video: dict[str, Any]
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    own_columns: tuple[str, ...] = ()


def parse_ts(value: Any) -> datetime | None:
    """ISO-8601 string (as produced by ``sources``) -> aware UTC datetime; None passes."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, np.ndarray) and value.size == 0)


def video_records(row: Mapping[str, Any], ctx: TableContext,
                  reused: ReusedVideo | None = None) -> dict[str, list[dict[str, Any]]]:
    """The records one finished row contributes to each table (without ``dt``); ``reused``:
    the committed records of the video whose bytes the row shares (``row["reused_from"]``)."""
    common = {"video_id": row["video_id"], "run_id": ctx.run_id}
    if not is_failed(row) and row.get("reused_from") and reused is None:
        row = mark_failed(dict(row), "write", "ReuseLost",
                          f"{row['video_id']!r}: the committed video {row['reused_from']!r} whose bytes it shares "
                          "is no longer readable; rerun with --retry-errors", retryable=True)
    if is_failed(row):
        return {"errors": [{
            **common, "uri": row.get("uri"), "stage": row["error_stage"],
            "error_type": row.get("error_type") or "Error",
            "message": row.get("error_message") or "",
            "retryable": bool(row.get("retryable")),
            "content_sha256": row.get("content_sha256"), "at": ctx.processed_at,
            "source_bytes": row.get("source_bytes"), "source_mtime": parse_ts(row.get("source_mtime")),
        }]}
    tags = json.loads(row.get("hashtags_json") or "[]")
    if reused is not None:
        return _reused_records(row, ctx, reused, common, tags)
    segments = json.loads(row.get("segments_json") or "[]")
    video = {name: row.get(name) for name in get_table_schema("videos").column_names}
    video.update(_run_columns(row, ctx, common), n_segments=len(segments))
    phash, middle, zoom = row.get("phash"), row.get("phash_middle"), row.get("phash_zoom")
    thumbnails = thumbnails_of(row)
    frames = [
        {**common, "frame_index": i, "pts_s": float(pts), "embedding": emb,
         "phash": int(phash[i]) if phash is not None and i < len(phash) else None,
         "phash_middle": int(middle[i]) if middle is not None and i < len(middle) else None,
         "phash_zoom": [int(v) for v in zoom[i]] if zoom is not None and i < len(zoom) else None,
         "thumbnail_jpeg": thumbnails.get(i)}
        for i, (pts, emb) in enumerate(zip(row.get("pts_s", ()), row.get("frame_embeddings", ())))
    ]
    return {
        "videos": [video],
        "frame_embeddings": frames,
        "transcript_segments": [{**common, "segment_index": i, **seg} for i, seg in enumerate(segments)],
        "hashtags": [{**common, **tag} for tag in tags],
        "ocr_text": [{**common, **line} for line in json.loads(row.get("ocr_lines_json") or "[]")],
        "shots": [{**common, "shot_index": i, **shot} for i, shot in enumerate(json.loads(row.get("shots_json") or "[]"))],
        "errors": [],
    }


def _run_columns(row: Mapping[str, Any], ctx: TableContext, common: dict[str, Any]) -> dict[str, Any]:
    """The ``videos`` columns this run sets on every record: id, run, times and feature hash."""
    return {**common, "upload_ts": parse_ts(row.get("upload_ts")), "source_mtime": parse_ts(row.get("source_mtime")),
            "feature_hash": ctx.feature_hash, "processed_at": ctx.processed_at}


def _reused_records(row: Mapping[str, Any], ctx: TableContext, reused: ReusedVideo, common: dict[str, Any],
                    tags: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records of a row that reuses ``reused``: the original's ``videos`` record with the row's
    own columns over it, the original's byte-derived rows under the row's id, its own hashtags."""
    video = dict(reused.video)
    video.update({name: row.get(name) for name in reused.own_columns if name in video})
    video.update(_run_columns(row, ctx, common))
    out = {"videos": [video], "hashtags": [{**common, **tag} for tag in tags], "errors": []}
    for table, records in reused.children.items():
        out[table] = [{**rec, **common} for rec in records]
    return out


def _column(values: list[Any], field: pa.Field) -> pa.Array:
    """One Arrow column; embeddings (ndarrays, empty = null) go through a flat buffer."""
    if pa.types.is_fixed_size_list(field.type):
        dim = field.type.list_size
        mask = np.array([_empty(v) for v in values], dtype=bool)
        flat = np.zeros((len(values), dim), dtype=field.type.value_type.to_pandas_dtype())
        for i, v in enumerate(values):
            if not mask[i]:
                arr = np.asarray(v).reshape(-1)
                if arr.size != dim:
                    raise ValueError(f"column {field.name}: embedding has {arr.size} values, schema says {dim}")
                flat[i] = arr
        storage = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
        if mask.any():
            storage = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim,
                                                        mask=pa.array(mask))
        return storage
    if pa.types.is_map(field.type):  # (key, value) pairs; a Ray batch may hand them back as 2-element arrays
        values = [None if v is None else [(str(k), float(x)) for k, x in v] for v in values]
    elif pa.types.is_list(field.type) and pa.types.is_floating(field.type.value_type):
        values = [None if _empty(v) else v for v in values]  # an empty vector is no vector
    elif pa.types.is_binary(field.type):  # a packed array (videos.sound_fingerprint): empty = null
        values = [None if _empty(v) else v.astype(v.dtype.newbyteorder("<")).tobytes() if isinstance(v, np.ndarray)
                  else v for v in values]
    return pa.array([_plain(v) for v in values], type=field.type)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def build_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Arrow table with exactly ``schema``; raises ValueError/ArrowException naming the column."""
    columns = []
    for field in schema:
        values = [r.get(field.name) for r in records]
        if not field.nullable and any(v is None for v in values):
            raise ValueError(f"column {field.name} is required but missing")
        try:
            columns.append(_column(values, field))
        except (pa.ArrowException, TypeError) as exc:
            raise ValueError(f"column {field.name}: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=schema)


def rows_to_tables(rows: Iterable[dict[str, Any]], ctx: TableContext,
                   reused: Mapping[str, ReusedVideo] | None = None) -> dict[tuple[str, str], pa.Table]:
    """Finished rows -> ``{(table, dt): Arrow table}``; rows that do not fit become error records.

    ``reused``: ``{video_id: ReusedVideo}`` for the rows with ``reused_from``. The fast path
    builds each table from all rows at once; only when that fails are the rows checked one by
    one, so a single bad value costs only its own video.
    """
    rows = list(rows)
    reused = reused or {}
    per_row = [_records_or_error(row, ctx, reused.get(row["video_id"])) for row in rows]
    try:
        return _group_and_build(rows, per_row, ctx)
    except (ValueError, TypeError, pa.ArrowException):
        checked = []
        for row, records in zip(rows, per_row):
            try:
                _group_and_build([row], [records], ctx)
                checked.append(records)
            except (ValueError, TypeError, pa.ArrowException) as exc:
                checked.append(_schema_error(row, exc, ctx))
        return _group_and_build(rows, checked, ctx)


def _group_and_build(rows, per_row, ctx: TableContext) -> dict[tuple[str, str], pa.Table]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row, records in zip(rows, per_row):
        for table, recs in records.items():
            grouped[(table, row["dt"])].extend(recs)
    return {key: build_table(recs, ctx.schema(key[0])) for key, recs in grouped.items() if recs}


def _records_or_error(row: dict[str, Any], ctx: TableContext,
                      reused: ReusedVideo | None = None) -> dict[str, list[dict[str, Any]]]:
    try:
        return video_records(row, ctx, reused)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        return _schema_error(row, exc, ctx)


def _schema_error(row: dict[str, Any], exc: Exception, ctx: TableContext) -> dict[str, list[dict[str, Any]]]:
    failed = mark_failed(dict(row), "write", "SchemaMismatch",
                         f"{row.get('video_id')!r}: output does not fit the table schema: {exc}")
    return video_records(failed, ctx)


def count_records(tables: Mapping[tuple[str, str], pa.Table]) -> dict[str, int]:
    """Rows per table name over a ``rows_to_tables`` result (every table present, 0 when none)."""
    counts = {t: 0 for t in TABLES}
    for (table, _), tbl in tables.items():
        counts[table] += tbl.num_rows
    return counts
