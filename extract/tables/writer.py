"""Staging a run's rows and committing them to the five Delta tables as one logical commit.

A run streams its rows into ``DST/_staging/<run_id>/<table>/part-<n>.parquet`` (zstd, the
Delta table's schema, ``dt`` a column). ``commit_run`` then:

1. writes ``DST/_staging/<run_id>/_commit.json`` (the pending commit: the run's sequence
   number ``seq``, the tables' versions when it planned, the replace predicate, its record);
2. commits each table in ``TABLES`` order, one Delta commit per table carrying the app
   transaction ``(APP_ID, seq)`` and the run id in its commit metadata: an append, or (when
   the run re-processes committed videos) an overwrite whose predicate covers those videos'
   ids and partitions, so their old rows are replaced in the same commit (rows the new output
   no longer has, e.g. fewer frames, go with them);
3. writes ``DST/_runs/<run_id>.json`` with each table's resulting Delta version (what
   ``Catalog`` pins), then deletes the staging folder.

Exactly once: the first table (``videos``) is committed without retries on the version the
run planned against, so of two runs planned on the same state only one commits; the other
fails with ``ConcurrentRunError`` having published nothing. A crash after step 1 is rolled
forward by the next run (``roll_forward``): tables whose log already holds the run's commit
are skipped (the app transaction and run id say so), the others are committed from the
staged files, then the record is written. A crash before step 1 published nothing; ``extract
maintain`` deletes such staging older than ``storage.retention_hours``.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extract import __version__
from extract.tables.catalog import APP_ID, RUN_ID_KEY, RUNS_DIR, STAGING_DIR, Catalog, OutputLayoutError
from extract.tables.evolution import check_width
from extract.tables.schemas import TABLES, get_table_schema, table_description
from extract.tables.storage import parquet_files

COMMIT_MARKER = "_commit.json"
# Rows per row group of staged files: frame embeddings are scanned in bulk, video rows are wide.
ROW_GROUP_ROWS = {
    "videos": 8_192,
    "frame_embeddings": 32_768,
    "transcript_segments": 32_768,
    "hashtags": 65_536,
    "ocr_text": 65_536,
    "shots": 65_536,
    "duplicates": 65_536,
    "errors": 8_192,
}
TABLE_CONFIGURATION = {
    # A checkpoint every 20 commits keeps opening a table cheap after a year of daily runs.
    "delta.checkpointInterval": "20",
}


class ConcurrentRunError(RuntimeError):
    """Another run committed to the same DST after this one planned; this run published nothing."""


def writer_properties():
    from deltalake import WriterProperties

    return WriterProperties(compression="ZSTD")


def sql_string(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def in_predicate(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in sorted(set(values)))})"


def replace_predicate(ids: Iterable[str], dts: Iterable[str]) -> str:
    """The overwrite predicate that replaces every row of ``ids`` in partitions ``dts``."""
    return f"{in_predicate('dt', dts)} AND {in_predicate('video_id', ids)}"


def reprocessing_predicate(outcomes: Mapping[str, Mapping[str, Any]], touched: Iterable[str],
                           dts: Iterable[str]) -> str | None:
    """The commit predicate of a run that writes ``touched`` ids into partitions ``dts``: None
    (append) when none of them has committed rows, else ``replace_predicate`` over all of them
    in their old partitions (``outcomes[id]["dt"]``) and ``dts`` (an upload without a time may
    move partition)."""
    touched = set(touched)
    old = {outcomes[v]["dt"] for v in touched if (outcomes.get(v) or {}).get("status") in ("ok", "error")}
    return replace_predicate(touched, old | set(dts)) if old else None


def ensure_tables(catalog: Catalog, embedding_dim: int) -> dict[str, int]:
    """Create missing tables (empty, version 0) and check every table's embedding width is
    ``embedding_dim``; returns each table's latest version. Raises OutputLayoutError naming a
    table of another width (before any video is read). Run after ``evolve_tables``."""
    from deltalake import DeltaTable

    versions = {}
    for table in TABLES:
        delta = catalog.open_table(table)
        if delta is None:
            schema = get_table_schema(table)
            DeltaTable.create(catalog.table_uri(table), schema=schema.delta_schema(embedding_dim),
                              partition_by=schema.partition_names, mode="ignore",
                              configuration=TABLE_CONFIGURATION, storage_options=catalog.options,
                              description=table_description(schema))
            delta = catalog.open_table(table)
        check_width(catalog, table, delta, embedding_dim)
        versions[table] = delta.version()
    return versions


class RunWriter:
    """Buffers one run's Arrow tables and writes them as staged Parquet files (see module doc).

    ``base_versions``: each table's latest Delta version when the run planned (``ensure_tables``);
    ``seq``: the run's sequence number (``Catalog.next_seq``).
    """

    def __init__(self, catalog: Catalog, run_id: str, embedding_dim: int, base_versions: Mapping[str, int],
                 seq: int, max_rows_per_file: int = 200_000):
        self.catalog = catalog
        self.fs = catalog.fs
        self.run_id = run_id
        self.embedding_dim = embedding_dim
        self.base_versions = dict(base_versions)
        self.seq = seq
        self.max_rows_per_file = max_rows_per_file
        self.staging = f"{catalog.root}/{STAGING_DIR}/{run_id}"
        self.schemas = {t: get_table_schema(t).delta_schema(embedding_dim) for t in TABLES}
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._buffered_rows: dict[str, int] = defaultdict(int)
        self._open: dict[str, tuple[pq.ParquetWriter, str, int]] = {}
        self._counter: dict[str, int] = defaultdict(int)
        self.files: dict[str, int] = {}  # staged path relative to the staging folder -> rows
        self.rows: dict[str, int] = defaultdict(int)  # table -> rows written
        self.ids: set[str] = set()  # video ids with staged rows
        self.dts: set[str] = set()  # partitions with staged rows

    def write(self, tables: Mapping[tuple[str, str], pa.Table]) -> None:
        """Add ``{(table, dt): table}`` (``extract.tables.rows_to_tables``); full row groups
        are flushed to staged files."""
        for (table, dt), data in tables.items():
            if data.num_rows == 0:
                continue
            self._buffers[table].append(self._to_delta(table, dt, data))
            self._buffered_rows[table] += data.num_rows
            self.rows[table] += data.num_rows
            self.ids.update(data["video_id"].to_pylist())
            self.dts.add(dt)
            if self._buffered_rows[table] >= ROW_GROUP_ROWS[table]:
                self._flush(table)

    def _to_delta(self, table: str, dt: str, data: pa.Table) -> pa.Table:
        """Records -> the Delta schema: embeddings as ``list<float32>``, ``dt`` appended."""
        schema = self.schemas[table]
        columns = [data[f.name].cast(f.type) if f.name in data.column_names else pa.array([dt] * data.num_rows)
                   for f in schema]
        return pa.Table.from_arrays(columns, schema=schema)

    def _flush(self, table: str) -> None:
        parts = self._buffers.pop(table, [])
        self._buffered_rows.pop(table, None)
        if not parts:
            return
        data = pa.concat_tables(parts).combine_chunks()
        writer, rel, rows = self._open.get(table, (None, "", 0))
        if writer is not None and rows + data.num_rows > self.max_rows_per_file:
            writer.close()
            writer = None
        if writer is None:
            n = self._counter[table]
            self._counter[table] += 1
            rel = f"{table}/part-{n}.parquet"
            path = f"{self.staging}/{rel}"
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            writer, rows = pq.ParquetWriter(path, self.schemas[table], filesystem=self.fs, compression="zstd"), 0
            # Tracked before the first write: if that write fails (disk full), ``abort`` still
            # closes the file instead of leaving it to the garbage collector, which would close
            # it after the staging folder is gone (on an object store: upload it again).
            self._open[table] = (writer, rel, rows)
        writer.write_table(data, row_group_size=ROW_GROUP_ROWS[table])
        rows += data.num_rows
        self._open[table] = (writer, rel, rows)
        self.files[rel] = rows

    def close(self) -> dict[str, list[str]]:
        """Flush and close every staged file; returns ``{table: [staged paths]}``."""
        for table in list(self._buffers):
            self._flush(table)
        for writer, _, _ in self._open.values():
            writer.close()
        self._open.clear()
        staged: dict[str, list[str]] = {t: [] for t in TABLES}
        for rel in sorted(self.files):
            staged[rel.split("/", 1)[0]].append(f"{self.staging}/{rel}")
        return staged

    def abort(self) -> None:
        """Close open files and delete this run's staging folder (nothing was published)."""
        for writer, _, _ in self._open.values():
            try:
                writer.close()
            except OSError:
                pass
        self._open.clear()
        delete_dir(self.fs, self.staging)


def delete_dir(fs: pafs.FileSystem, path: str) -> None:
    """Delete a folder and its contents; a missing one is fine."""
    fs.delete_dir_contents(path, missing_dir_ok=True)
    try:
        fs.delete_dir(path)
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


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as fh:
        return json.loads(fh.read())


def commit_metadata(*, config_hash: str, feature_hash: str, models: Mapping[str, str]) -> dict[str, str]:
    """Lineage stored in each table commit's metadata (with the run id)."""
    return {"extract.pipeline_version": __version__, "extract.config_hash": config_hash,
            "extract.feature_hash": feature_hash, "extract.models": json.dumps(dict(models), sort_keys=True)}


def commit_run(writer: RunWriter, record: dict[str, Any], predicate: str | Mapping[str, str] | None = None,
               metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Commit the staged run to every table, then write its record (see module doc).

    ``predicate``: None appends; otherwise each table's commit overwrites the rows matching it
    (``replace_predicate``: the re-processed ids in their old and new partitions); a mapping
    gives tables their own predicate and the others append (a commit of nothing still records
    the run's app transaction). A record
    with ``timings_s`` gets the commit's seconds added to ``timings_s["write"]``. Returns the
    record as written. Raises ConcurrentRunError (nothing published) when another run
    committed first; on any failure before the first table commit the staging is deleted.
    """
    started = time.perf_counter()
    catalog = writer.catalog
    try:
        staged = writer.close()
        marker = {"run_id": writer.run_id, "seq": writer.seq, "operation": "write", "predicate": predicate,
                  "base_versions": writer.base_versions, "embedding_dim": writer.embedding_dim,
                  "files": staged, "metadata": dict(metadata or {}), "record": record}
        write_json(writer.fs, f"{writer.staging}/{COMMIT_MARKER}", marker)
    except BaseException:
        writer.abort()
        raise
    return finish_commit(catalog, marker, started)


def finish_commit(catalog: Catalog, marker: dict[str, Any], started: float | None = None) -> dict[str, Any]:
    """Commit the tables of a pending commit that are not yet committed, then write its record
    and delete its staging folder (``commit_run`` and ``roll_forward``)."""
    from deltalake.exceptions import CommitFailedError

    started = time.perf_counter() if started is None else started
    run_id, seq = marker["run_id"], marker["seq"]
    staging = f"{catalog.root}/{STAGING_DIR}/{run_id}"
    versions: dict[str, int] = {}
    for i, table in enumerate(TABLES):
        delta = catalog.open_table(table)
        base = marker["base_versions"].get(table, -1)
        landed = landed_version(catalog, table, delta, run_id, base) if delta is not None else None
        if landed is not None:
            versions[table] = landed
            continue
        if i == 0:
            # The serialization point: committed on the planned version, without retries.
            from deltalake import DeltaTable

            pinned = DeltaTable(catalog.table_uri(table), version=max(base, 0), storage_options=catalog.options)
            try:
                _commit_table(catalog, pinned, table, marker, retries=0)
            except CommitFailedError as exc:
                delete_dir(catalog.fs, staging)
                raise ConcurrentRunError(
                    f"{catalog.dst}: another run committed table {table} after run {run_id} planned; run {run_id} "
                    "published nothing (run one job per output location at a time; rerun to process what is left)"
                ) from exc
        else:
            _commit_table(catalog, delta, table, marker, retries=None)
        after = catalog.open_table(table)
        landed = landed_version(catalog, table, after, run_id, base)
        versions[table] = after.version() if landed is None else landed  # a DELETE of nothing makes no commit
    record = dict(marker["record"], seq=seq, delta_versions=versions,
                  committed_at=datetime.now(timezone.utc).isoformat())
    if "timings_s" in record:
        write_s = record["timings_s"].get("write", 0.0) + time.perf_counter() - started
        record["timings_s"] = dict(record["timings_s"], write=round(write_s, 3))
    write_json(catalog.fs, f"{catalog.root}/{RUNS_DIR}/{run_id}.json", record)
    delete_dir(catalog.fs, staging)
    catalog.reload()
    return record


def landed_version(catalog: Catalog, table: str, delta, run_id: str, base: int) -> int | None:
    """The version of ``table`` (after ``base``) whose commit metadata names ``run_id``, or None.

    Reads the commits' ``commitInfo`` from ``_delta_log/<version>.json`` (the Delta protocol's
    log files) through pyarrow: a few small reads, newest first.
    """
    from extract.tables.catalog import DELTA_LOG

    for version in range(delta.version(), base, -1):
        path = f"{catalog.root}/{table}/{DELTA_LOG}/{version:020d}.json"
        try:
            with catalog.fs.open_input_stream(path) as fh:
                lines = fh.read().decode().splitlines()
        except FileNotFoundError:
            return None  # older commits were cleaned up from the log
        for line in lines:
            if '"commitInfo"' in line and json.loads(line)["commitInfo"].get(RUN_ID_KEY) == run_id:
                return version
    return None


def _commit_table(catalog: Catalog, delta, table: str, marker: dict[str, Any], retries: int | None) -> None:
    """One Delta commit of ``table`` for the pending commit ``marker``."""
    import pyarrow.dataset as ds
    from deltalake import CommitProperties, Transaction, write_deltalake

    props = CommitProperties(custom_metadata={RUN_ID_KEY: marker["run_id"], **marker.get("metadata", {})},
                             app_transactions=[Transaction(APP_ID, marker["seq"])], max_commit_retries=retries)
    predicate = marker["predicate"]
    if isinstance(predicate, dict):  # per table: forget, or a run that rewrites some tables only (duplicates)
        predicate = predicate.get(table)
    if marker["operation"] == "delete":
        delta.delete(predicate, writer_properties=writer_properties(), commit_properties=props)
        return
    schema = get_table_schema(table).delta_schema(marker["embedding_dim"])
    files = marker["files"].get(table) or []
    if files:
        staged = ds.dataset(files, filesystem=catalog.fs, format="parquet", schema=schema)
        # A C++ reader (no Python iterator): delta-rs pulls batches from its own threads
        # without taking the GIL per batch, and streams the staged files, whatever their size.
        data = ds.Scanner.from_dataset(staged, batch_size=8_192).to_reader()
    else:
        data = schema.empty_table()  # an empty commit still records the app transaction
    if predicate:
        write_deltalake(delta, data, mode="overwrite", predicate=predicate,
                        writer_properties=writer_properties(), commit_properties=props)
    else:
        write_deltalake(delta, data, mode="append", writer_properties=writer_properties(), commit_properties=props)


def pending_commits(catalog: Catalog) -> list[dict[str, Any]]:
    """Pending commits under ``_staging/`` (runs that crashed after step 1), by seq."""
    out = []
    selector = pafs.FileSelector(f"{catalog.root}/{STAGING_DIR}", allow_not_found=True)
    for info in catalog.fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory:
            continue
        path = f"{info.path}/{COMMIT_MARKER}"
        if catalog.fs.get_file_info(path).type == pafs.FileType.File:
            out.append(read_json(catalog.fs, path))
    return sorted(out, key=lambda m: m["seq"])


def roll_forward(catalog: Catalog) -> list[str]:
    """Finish every pending commit (a run that crashed between its table commits); a pending
    commit that lost to another run is discarded. Returns the run ids finished."""
    done = []
    for marker in pending_commits(catalog):
        run_path = f"{catalog.root}/{RUNS_DIR}/{marker['run_id']}.json"
        if catalog.fs.get_file_info(run_path).type == pafs.FileType.File:
            delete_dir(catalog.fs, f"{catalog.root}/{STAGING_DIR}/{marker['run_id']}")  # crashed in cleanup
            continue
        try:
            finish_commit(catalog, marker)
            done.append(marker["run_id"])
        except ConcurrentRunError:
            pass  # its first table was taken by another run: it never published anything
    catalog.reload()
    return done


# --------------------------------------------------------------------------- forget


def forget_videos(catalog: Catalog, ids: set[str], run_id: str) -> dict[str, Any]:
    """Delete every row of ``ids`` from every table (one Delta DELETE per table, one logical
    commit), then delete every Parquet file under DST that still holds them (``purge_ids``).
    Returns the run record (kind ``forget``); it lists the ids with their last uri, so
    incremental runs do not bring them back from the same upload (a new uri is processed)."""
    roll_forward(catalog)
    outcomes = catalog.outcomes([{"video_id": vid, "dt": "", "upload_ts": None} for vid in ids]) if ids else {}
    started = datetime.now(timezone.utc)
    record = {
        "run_id": run_id, "kind": "forget", "status": "committed",
        "started_at": started.isoformat(), "pipeline_version": __version__,
        "forgotten": [{"video_id": vid, "uri": (outcomes.get(vid) or {}).get("uri")} for vid in sorted(ids)],
        "counts": {"forgotten": len(ids), "found": sum(1 for vid in ids if vid in outcomes)},
        # runs whose rows (and so run reports) showed these videos
        "runs_with_rows": sorted({o["run_id"] for o in outcomes.values() if o.get("run_id")}),
    }
    base = {t: (catalog.open_table(t).version() if catalog.open_table(t) is not None else -1) for t in TABLES}
    if base["videos"] < 0:
        raise OutputLayoutError(f"{catalog.dst}: no tables to forget from (no committed run)")
    predicate = in_predicate("video_id", ids) if ids else "false"
    # a forgotten video is gone as a copy and as the original others copied
    per_table = {t: predicate for t in TABLES}
    per_table["duplicates"] = f"{predicate} OR {in_predicate('duplicate_of', ids)}" if ids else "false"
    marker = {"run_id": run_id, "seq": catalog.next_seq, "operation": "delete",
              "predicate": per_table, "base_versions": base,
              "files": {}, "metadata": {}, "record": record}
    write_json(catalog.fs, f"{catalog.root}/{STAGING_DIR}/{run_id}/{COMMIT_MARKER}", marker)
    record = finish_commit(catalog, marker)
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
        return pc.any(pc.is_in(data["video_id"], value_set=pa.array(sorted(ids), pa.string()))).as_py() or False
    text = json.dumps(data.to_pylist(), default=str)  # Delta checkpoints: ids in file statistics
    return any(json.dumps(vid)[1:-1] in text for vid in ids)
