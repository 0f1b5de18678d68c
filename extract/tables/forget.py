"""``extract forget``: delete videos' rows from every table and the files that held them.

One ``forget`` run (a ``RunSession``): a Delta DELETE per table in one logical commit, then
every Parquet file under DST that still holds the ids (``purge_ids``). Its record lists the ids
with their last uri, so incremental runs do not bring them back from the same upload (a new
uri is processed).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extract.tables.catalog import Catalog, OutputLayoutError
from extract.tables.schemas import TABLES
from extract.tables.session import RunSession, table_embedding_dim
from extract.io.storage import parquet_files
from extract.tables.writer import ensure_tables, in_predicate, read_json


def forget_videos(catalog: Catalog, ids: set[str], run_id: str | None = None) -> dict[str, Any]:
    """Delete every row of ``ids`` from every table, then the files that still hold them;
    returns the run record (kind ``forget``). Raises OutputLayoutError when DST has no tables."""
    session = RunSession.open(catalog, "forget", run_id)
    if catalog.open_table("videos") is None:
        raise OutputLayoutError(f"{catalog.dst}: no tables to forget from (no committed run)")
    ensure_tables(catalog, table_embedding_dim(catalog))  # a table added since DST was written (empty): one DELETE each
    outcomes = catalog.outcomes([{"video_id": vid, "dt": "", "upload_ts": None} for vid in ids]) if ids else {}
    record = session.record(
        forgotten=[{"video_id": vid, "uri": (outcomes.get(vid) or {}).get("uri")} for vid in sorted(ids)],
        counts={"forgotten": len(ids), "found": sum(1 for vid in ids if vid in outcomes)},
        # runs whose rows (and so run reports) showed these videos
        runs_with_rows=sorted({o["run_id"] for o in outcomes.values() if o.get("run_id")}),
    )
    predicate = in_predicate("video_id", ids) if ids else "false"
    # a forgotten video is gone as a copy and as the original others copied
    per_table = {t: predicate for t in TABLES}
    per_table["duplicates"] = f"{predicate} OR {in_predicate('duplicate_of', ids)}" if ids else "false"
    # ... and as a sound's first video: the others of its sound lose their row (each its own sound
    # again) until `extract sounds --since` their first date groups them under the next earliest
    per_table["sound_matches"] = f"{predicate} OR {in_predicate('sound_id', ids)}" if ids else "false"
    record = session.commit_delete(record, per_table)
    record["files_deleted"] = purge_ids(catalog, ids)
    return record


def purge_ids(catalog: Catalog, ids: set[str]) -> list[str]:
    """Delete every Parquet file under ``dst`` that still holds any of ``ids``: table files no
    longer in the latest version (older versions' files, uncommitted leftovers), old Delta
    checkpoints whose file statistics name an id, staged files. A fresh checkpoint is written
    first, so each table's log stays readable. Returns the deleted paths."""
    if not ids:
        return []
    live: set[str] = set()
    for table in TABLES:
        delta = catalog.open_table(table)
        if delta is not None:
            delta.create_checkpoint()
            live.update(f"{catalog.root}/{table}/{p}" for p in pa.table(delta.get_add_actions())["path"].to_pylist())
    newest_checkpoints = set()
    for table in TABLES:
        last = f"{catalog.root}/{table}/_delta_log/_last_checkpoint"
        if catalog.fs.get_file_info(last).type == pafs.FileType.File:
            version = int(read_json(catalog.fs, last)["version"])
            newest_checkpoints.add(f"{catalog.root}/{table}/_delta_log/{version:020d}.checkpoint.parquet")
    deleted = []
    for path in parquet_files(catalog.fs, catalog.root):
        if path in live or path in newest_checkpoints:
            continue
        if file_mentions(catalog.fs, path, ids):
            catalog.fs.delete_file(path)
            deleted.append(path)
    return deleted


def file_mentions(fs: pafs.FileSystem, path: str, ids: set[str]) -> bool:
    """True when any string value of the Parquet file ``path`` is, or contains, one of ``ids``."""
    import pyarrow.compute as pc

    with fs.open_input_file(path) as fh:
        data = pq.read_table(fh)
    if "video_id" in data.column_names:
        # as string: a file delta-rs rewrote (a DELETE) may hold string_view, which is_in has no kernel for
        column = data["video_id"].cast(pa.string())
        return pc.any(pc.is_in(column, value_set=pa.array(sorted(ids), pa.string()))).as_py() or False
    text = json.dumps(data.to_pylist(), default=str)  # Delta checkpoints: ids in file statistics
    return any(json.dumps(vid)[1:-1] in text for vid in ids)
