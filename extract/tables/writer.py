"""Staged Parquet writing and the commit protocol.

A run writes every file under ``DST/_staging/<run_id>/<table>/dt=<dt>/part-<run_id>-<n>.parquet``
(zstd, statistics and page index on, key-value metadata), buffering rows so row groups are
sized for scans. ``commit_run`` then:

1. moves each staged file to ``DST/<table>/dt=<dt>/...`` (local file systems: ``rename``,
   atomic per file; object stores: server-side copy, then delete of the staged object);
2. writes ``DST/_runs/<run_id>.json`` last (local: temp file + rename; object stores: one PUT,
   which S3 and GCS make visible atomically) — this is the commit point;
3. deletes files the run superseded and the run's staging folder.

Guarantee: readers that follow ``_runs/`` (``extract.tables.catalog.Catalog``) see a run entirely or
not at all, on every file system. A crash before step 2 leaves files no manifest names; the
next run's ``Catalog.cleanup`` deletes them. Plain Hive readers of the table folders may see
published files of a run during the short window between steps 1 and 2 (and superseded files
until step 3), so exactly-once readers should go through the run manifests.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections import defaultdict
from typing import Any, Callable, Mapping

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extract import __version__
from extract.tables.catalog import RUNS_DIR, STAGING_DIR, Catalog
from extract.tables.schemas import TABLES, get_table_schema

# Rows per row group: frame embeddings are scanned in bulk, video rows are wide and fewer.
ROW_GROUP_ROWS = {
    "videos": 8_192,
    "frame_embeddings": 32_768,
    "transcript_segments": 32_768,
    "hashtags": 65_536,
    "errors": 8_192,
}


def file_metadata(table: str, *, run_id: str, config_hash: str, feature_hash: str,
                  models: Mapping[str, str]) -> dict[bytes, bytes]:
    """Key-value metadata stored in every Parquet file footer."""
    meta = {
        "extract.table": table,
        "extract.schema_version": str(get_table_schema(table).version),
        "extract.pipeline_version": __version__,
        "extract.run_id": run_id,
        "extract.config_hash": config_hash,
        "extract.feature_hash": feature_hash,
        "extract.models": json.dumps(dict(models), sort_keys=True),
    }
    return {k.encode(): v.encode() for k, v in meta.items()}


class RunWriter:
    """Buffers Arrow tables per (table, dt) and writes staged Parquet files for one run."""

    def __init__(self, catalog: Catalog, run_id: str, metadata: Callable[[str], Mapping[bytes, bytes]],
                 max_rows_per_file: int = 200_000):
        self.catalog = catalog
        self.fs = catalog.fs
        self.run_id = run_id
        self.metadata = metadata  # table -> footer metadata, asked when a file is opened
        self.max_rows_per_file = max_rows_per_file
        self.staging = f"{catalog.root}/{STAGING_DIR}/{run_id}"
        self._buffers: dict[tuple[str, str], list[pa.Table]] = defaultdict(list)
        self._buffered_rows: dict[tuple[str, str], int] = defaultdict(int)
        self._open: dict[tuple[str, str], tuple[pq.ParquetWriter, str, int]] = {}
        self._counter: dict[tuple[str, str], int] = defaultdict(int)
        self.files: dict[str, int] = {}  # relative path -> rows
        self.rows: dict[str, int] = defaultdict(int)  # table -> rows written

    def write(self, tables: Mapping[tuple[str, str], pa.Table]) -> None:
        """Add ``{(table, dt): table}``; full row groups are flushed to staged files."""
        for key, table in tables.items():
            if table.num_rows == 0:
                continue
            self._buffers[key].append(table)
            self._buffered_rows[key] += table.num_rows
            self.rows[key[0]] += table.num_rows
            if self._buffered_rows[key] >= ROW_GROUP_ROWS[key[0]]:
                self._flush(key)

    def write_file(self, table: str, dt: str, data: pa.Table, suffix: str) -> str:
        """Write one complete staged file (used for rewrites); returns its relative path."""
        rel = f"{table}/dt={dt}/part-{self.run_id}-{suffix}.parquet"
        writer = self._new_writer(table, rel, data.schema, keep_metadata=True)
        writer.write_table(data, row_group_size=ROW_GROUP_ROWS[table])
        writer.close()
        self.files[rel] = data.num_rows
        return rel

    def _new_writer(self, table: str, rel: str, schema: pa.Schema, keep_metadata: bool = False) -> pq.ParquetWriter:
        """A Parquet writer in staging; rewrites keep the metadata of the run that made the rows."""
        path = f"{self.staging}/{rel}"
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        if not (keep_metadata and schema.metadata):
            schema = schema.with_metadata(self.metadata(table))
        return pq.ParquetWriter(path, schema, filesystem=self.fs, compression="zstd",
                                write_statistics=True, write_page_index=True)

    def _flush(self, key: tuple[str, str]) -> None:
        parts = self._buffers.pop(key, [])
        self._buffered_rows.pop(key, None)
        if not parts:
            return
        data = pa.concat_tables(parts).combine_chunks()
        table, dt = key
        writer, rel, rows = self._open.get(key, (None, "", 0))
        if writer is not None and rows + data.num_rows > self.max_rows_per_file:
            writer.close()
            writer = None
        if writer is None:
            n = self._counter[key]
            self._counter[key] += 1
            rel = f"{table}/dt={dt}/part-{self.run_id}-{n}.parquet"
            writer, rows = self._new_writer(table, rel, data.schema), 0
            # Tracked before the first write: if that write fails (disk full), ``abort`` still
            # closes the file instead of leaving it to the garbage collector, which would close
            # it after the staging folder is gone (on an object store: upload it again).
            self._open[key] = (writer, rel, rows)
        writer.write_table(data, row_group_size=ROW_GROUP_ROWS[table])
        rows += data.num_rows
        self._open[key] = (writer, rel, rows)
        self.files[rel] = rows

    def close(self) -> dict[str, int]:
        """Flush every buffer and close every file; returns ``{relative path: rows}``."""
        for key in list(self._buffers):
            self._flush(key)
        for writer, _, _ in self._open.values():
            writer.close()
        self._open.clear()
        return dict(self.files)

    def abort(self) -> None:
        """Close open files and delete this run's staging folder (nothing was published)."""
        for writer, _, _ in self._open.values():
            try:
                writer.close()
            except OSError:
                pass
        self._open.clear()
        self.fs.delete_dir_contents(self.staging, missing_dir_ok=True)
        try:
            self.fs.delete_dir(self.staging)
        except OSError:
            pass


def write_json(fs: pafs.FileSystem, path: str, data: Any) -> None:
    """Write JSON so readers never see a partial file (temp + rename locally, one PUT remotely)."""
    payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp"
        with fs.open_output_stream(tmp) as fh:
            fh.write(payload)
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as fh:
            fh.write(payload)


def commit_run(writer: RunWriter, record: dict[str, Any], files_removed: list[str]) -> dict[str, Any]:
    """Publish the staged files, then the run manifest (the commit point), then clean up.

    ``record`` is the run manifest body; ``files_added``/``files_removed``/``committed_at`` are
    filled in here. A record with ``timings_s`` gets the seconds of the final flush (the rows
    still buffered, usually most of a small run's Parquet encoding) and of publishing the files
    added to ``timings_s["write"]``. Returns the manifest as written.
    """
    from datetime import datetime, timezone

    started = time.perf_counter()
    catalog, fs = writer.catalog, writer.fs
    files = writer.close()
    for rel in files:
        dest = catalog.abs(rel)
        fs.create_dir(posixpath.dirname(dest), recursive=True)
        fs.move(f"{writer.staging}/{rel}", dest)
    record = dict(record, files_added=sorted(files), files_removed=sorted(files_removed),
                  committed_at=datetime.now(timezone.utc).isoformat())
    if "timings_s" in record:
        write_s = record["timings_s"].get("write", 0.0) + time.perf_counter() - started
        record["timings_s"] = dict(record["timings_s"], write=round(write_s, 3))
    write_json(fs, f"{catalog.root}/{RUNS_DIR}/{writer.run_id}.json", record)
    for rel in files_removed:
        try:
            fs.delete_file(catalog.abs(rel))
        except FileNotFoundError:
            pass  # already gone: a crashed earlier cleanup
    writer.abort()  # removes the (now empty) staging folder
    catalog.reload()
    return record


def supersede(catalog: Catalog, writer: RunWriter, ids: set[str]) -> list[str]:
    """Rewrite committed files that hold rows of ``ids`` without them; returns files removed.

    Used when a video is processed again (``--overwrite``, a retried error, changed features)
    and by ``extract forget``: the new run's manifest removes the old files and adds the
    rewritten ones in the same commit, so readers never see a video twice.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not ids:
        return []
    removed = []
    value_set = pa.array(sorted(ids), pa.string())
    for table in TABLES:
        for rel in catalog.files_with_ids(table, ids):
            with catalog.fs.open_input_file(catalog.abs(rel)) as fh:
                data = pq.ParquetFile(fh).read()
            kept = data.filter(pc.invert(pc.is_in(data["video_id"], value_set=value_set)))
            if kept.num_rows:
                dt = rel.split("/")[1][len("dt="):]
                writer.write_file(table, dt, kept, suffix=f"rw{len(removed)}")
            removed.append(rel)
    return removed


def forget_videos(catalog: Catalog, ids: set[str], run_id: str) -> dict[str, Any]:
    """Remove every row of ``ids`` from every table in one commit; returns the manifest.

    The manifest (kind ``forget``) lists the ids with their last uri, so incremental runs do not
    bring them back from the same upload; a new upload (another uri) is processed again.
    """
    from datetime import datetime, timezone

    outcomes = catalog.outcomes()
    started = datetime.now(timezone.utc)
    writer = RunWriter(catalog, run_id, lambda table: file_metadata(
        table, run_id=run_id, config_hash="", feature_hash="", models={}))
    try:
        removed = supersede(catalog, writer, ids)
        record = {
            "run_id": run_id, "kind": "forget", "status": "committed",
            "started_at": started.isoformat(), "pipeline_version": __version__,
            "forgotten": [{"video_id": vid, "uri": (outcomes.get(vid) or {}).get("uri")} for vid in sorted(ids)],
            "counts": {"forgotten": len(ids), "found": sum(1 for vid in ids if vid in outcomes)},
        }
        return commit_run(writer, record, removed)
    except BaseException:
        writer.abort()
        raise
