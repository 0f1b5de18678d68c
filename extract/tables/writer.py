"""Staging a run's rows and committing them to the Delta tables as one logical commit.

A run streams its rows into ``DST/_staging/<run_id>/<table>/part-<n>.parquet`` (zstd, the
Delta table's schema, ``dt`` a column). ``commit_run`` then:

1. takes the lease on its staging folder (``CommitLease``: one finisher at a time), then writes
   ``DST/_staging/<run_id>/_commit.json`` (the pending commit: the run's sequence number
   ``seq``, the tables' versions when it planned, the replace predicate, its record);
2. commits each table in ``COMMIT_ORDER`` (child tables first, ``errors``, then ``videos``), one
   Delta commit per table carrying the app transaction ``(APP_ID, seq)`` and the run id in its
   commit metadata: an append, or (when the run re-processes committed videos) an overwrite
   whose predicate covers those videos' ids and partitions, so their old rows are replaced in
   the same commit (rows the new output no longer has, e.g. fewer frames, go with them);
3. writes ``DST/_runs/<run_id>.json`` with each table's resulting Delta version (what
   ``Catalog`` pins), then deletes the staging folder.

Exactly once: the first table of ``COMMIT_ORDER`` is committed without retries on the version
the run planned against, so of two runs planned on the same state only one commits; the other
fails with ``ConcurrentRunError`` having published nothing. A crash after step 1 is rolled
forward by the next run, ``extract maintain`` or ``extract forget`` (``roll_forward``, which
waits while the lease's owner is alive and takes a stale lease over): each table is checked
(its app transaction, then the run id in its log) and committed on the version just checked
without retries (``commit_table_once``), so two finishers of one pending commit never both
append. A crash before step 1 published nothing; ``extract maintain`` deletes such staging
older than ``storage.retention_hours``.

Between a run's first table commit and its ``videos`` commit, a reader of the tables' latest
versions sees the run's child rows (and error rows) but none of its ``videos`` rows: joining
children to ``videos`` on ``(video_id, run_id)`` excludes them (docs/QUERIES.md). ``Catalog``
readers see the run only once its record is written.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extract import __version__
from extract.tables.catalog import APP_ID, RUN_ID_KEY, RUNS_DIR, STAGING_DIR, Catalog
from extract.tables.evolution import check_width
from extract.tables.schemas import TABLES, get_table_schema, table_description

COMMIT_MARKER = "_commit.json"
# Children first, ``videos`` last: a latest-version reader that starts from ``videos`` meets a
# new video only once its frames, segments, hashtags and OCR lines are committed. ``errors``
# before ``videos``: a retried error leaves ``errors`` before its video appears (in neither for
# a moment, never in both). The first table is the run's serialization point.
COMMIT_ORDER = tuple(t for t in TABLES if t not in ("videos", "errors")) + ("errors", "videos")
COMMIT_ATTEMPTS = 20  # commits of one table lost to concurrent writers before giving up
LEASE_FILE = "_lease.json"
LEASE_HEARTBEAT_S = 5.0  # how often the owner of a pending commit rewrites its lease
LEASE_STALE_S = 60.0  # a lease not rewritten for this long (or whose pid is gone on this host) is taken over
LEASE_SETTLE_S = 0.2  # write, wait, read back: a racing taker's write lands inside this
LEASE_POLL_S = 0.25  # how often a waiting finisher looks again
LEASE_WAIT_S = 1800.0  # the longest roll_forward waits for a live owner to finish
# Rows per row group of staged files: frame embeddings are scanned in bulk, video rows are wide.
ROW_GROUP_ROWS = {
    "videos": 8_192,
    "frame_embeddings": 32_768,
    "transcript_segments": 32_768,
    "hashtags": 65_536,
    "ocr_text": 65_536,
    "shots": 65_536,
    "duplicates": 65_536,
    "sound_matches": 65_536,
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
        """Add ``{(table, dt): table}`` (``extract.tables.records.rows_to_tables``); full row groups
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
    """Delete a folder and its contents; a missing one is fine, and so is another process
    deleting it at the same time (two finishers of one commit)."""
    for _ in range(3):
        try:
            fs.delete_dir_contents(path, missing_dir_ok=True)
            break
        except FileNotFoundError:  # a part went while this walked the folder: walk it again
            continue
    try:
        fs.delete_dir(path)
    except OSError:
        pass


def write_json(fs: pafs.FileSystem, path: str, data: Any) -> None:
    """Write JSON so readers never see a partial file (temp + rename locally, one PUT remotely)."""
    payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"  # unique: two writers of one file (a lease) never share it
        with fs.open_output_stream(tmp) as fh:
            fh.write(payload)
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as fh:
            fh.write(payload)


def read_json(fs: pafs.FileSystem, path: str, attempts: int = 3) -> Any:
    """A JSON file; a read that fails part way (an object replaced or deleted while another
    process reads it) is tried again, up to ``attempts`` times. FileNotFoundError when absent."""
    for attempt in range(attempts):
        try:
            with fs.open_input_stream(path) as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


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
    committed first, CommitIncompleteError (naming the tables published) when the commit stops
    part way; on any failure before the pending commit is written the staging is deleted.
    """
    started = time.perf_counter()
    try:
        staged = writer.close()
    except BaseException:
        writer.abort()
        raise
    marker = {"run_id": writer.run_id, "seq": writer.seq, "operation": "write", "predicate": predicate,
              "base_versions": writer.base_versions, "embedding_dim": writer.embedding_dim,
              "files": staged, "metadata": dict(metadata or {}), "record": record}
    return publish(writer.catalog, marker, started, abort=writer.abort)


def publish(catalog: Catalog, marker: dict[str, Any], started: float | None = None,
            abort: Callable[[], None] | None = None) -> dict[str, Any]:
    """Lease the run's staging folder, write the pending commit ``marker`` into it, and finish
    it (``finish_commit``); ``abort`` deletes the staging when the marker cannot be written."""
    lease = CommitLease(catalog, marker["run_id"])
    try:
        # The lease before the marker: whoever finds the marker finds its owner alive.
        if not lease.try_acquire():
            raise ConcurrentRunError(f"{catalog.dst}: the staging folder of run {marker['run_id']} is leased by "
                                     f"{lease.describe_holder()}; run {marker['run_id']} published nothing")
        write_json(catalog.fs, f"{catalog.root}/{STAGING_DIR}/{marker['run_id']}/{COMMIT_MARKER}", marker)
    except BaseException:
        lease.release()
        if abort is not None:
            abort()
        raise
    try:
        return finish_commit(catalog, marker, lease, started)
    finally:
        lease.release()


class CommitIncompleteError(RuntimeError):
    """A pending commit stopped part way; ``published`` lists the tables whose commit landed.

    Those tables hold the run's rows at their latest version (child tables first: a reader
    starting from ``videos`` does not see them yet unless ``videos`` is among them); ``Catalog``
    readers see nothing of the run until its record is written. The next run, ``extract
    maintain`` or ``extract forget`` on the same output finishes it (``roll_forward``).
    """

    def __init__(self, dst: str, run_id: str, published: list[str], cause: BaseException):
        self.run_id, self.published = run_id, list(published)
        self.unpublished = [t for t in COMMIT_ORDER if t not in published]
        self.dst = dst
        super().__init__(f"{type(cause).__name__}: {cause}")  # what_was_published(self) says the rest


def what_was_published(exc: BaseException) -> str:
    """What a failed command left visible, for its failure message: exactly the tables a
    CommitIncompleteError names, else nothing (every other failure happens before a table commit)."""
    if not isinstance(exc, CommitIncompleteError):
        return "nothing was published"
    if not exc.published:
        return (f"nothing was published; its pending commit (run {exc.run_id}) stays staged and the next run, "
                "`extract maintain` or `extract forget` on this output commits it")
    if not exc.unpublished:
        return (f"run {exc.run_id} published every table, but its run record was not written (Catalog readers "
                "do not see it yet); the next run, `extract maintain` or `extract forget` writes it")
    return (f"run {exc.run_id} published tables {', '.join(exc.published)} (visible at their latest versions; "
            f"not {', '.join(exc.unpublished)}, not to Catalog readers); the next run, `extract maintain` or "
            "`extract forget` on this output commits the rest")


def finish_commit(catalog: Catalog, marker: dict[str, Any], lease: "CommitLease",
                  started: float | None = None) -> dict[str, Any]:
    """Commit the tables of a pending commit that are not yet committed, in ``COMMIT_ORDER``,
    then write its record and delete its staging folder (``commit_run`` and ``roll_forward``;
    ``lease``: held by the caller, released before the staging is deleted).

    Each table is committed at most once whoever finishes (``commit_table_once``). Raises
    ConcurrentRunError (nothing published, staging deleted) when the pending commit's first
    table was taken by another run, CommitIncompleteError on any other failure.
    """
    started = time.perf_counter() if started is None else started
    run_id, seq = marker["run_id"], marker["seq"]
    staging = f"{catalog.root}/{STAGING_DIR}/{run_id}"
    versions: dict[str, int] = {}
    try:
        for table in COMMIT_ORDER:
            versions[table] = commit_table_once(catalog, table, marker, first=table == COMMIT_ORDER[0])
        record = dict(marker["record"], seq=seq, delta_versions={t: versions[t] for t in TABLES},
                      committed_at=datetime.now(timezone.utc).isoformat())
        if "timings_s" in record:
            write_s = record["timings_s"].get("write", 0.0) + time.perf_counter() - started
            record["timings_s"] = dict(record["timings_s"], write=round(write_s, 3))
        write_json(catalog.fs, f"{catalog.root}/{RUNS_DIR}/{run_id}.json", record)
    except ConcurrentRunError:  # raised by the first table only: nothing of this run was published
        lease.release()
        delete_dir(catalog.fs, staging)
        raise
    except Exception as exc:
        raise CommitIncompleteError(catalog.dst, run_id, list(versions), exc) from exc
    lease.release()  # its heartbeat must not write into the folder after it is deleted
    delete_dir(catalog.fs, staging)
    catalog.reload()
    return record


def commit_table_once(catalog: Catalog, table: str, marker: dict[str, Any], first: bool) -> int:
    """Commit ``table`` for the pending commit ``marker`` unless it already holds it; returns
    the Delta version holding the run's commit (or the latest, for a DELETE of nothing).

    Check and commit are one step: the table's app transaction ``(APP_ID, seq)`` and the run id
    in the commit metadata say whether the run's commit landed, and the commit is made on the
    version just checked, without delta-rs's retries, so a concurrent finisher of the same
    commit fails instead of appending twice; then it checks again (bounded). The ``first``
    table is committed on the version the run planned against: a table that moved since then
    was taken by another run (ConcurrentRunError, nothing published).
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    run_id, seq = marker["run_id"], marker["seq"]
    base = marker["base_versions"].get(table, -1)
    for attempt in range(COMMIT_ATTEMPTS):
        delta = catalog.open_table(table)
        landed = landed_version(catalog, table, delta, run_id, seq, base)
        if landed is not None:
            return landed
        taken = (delta.transaction_version(APP_ID) or 0) >= seq
        if first and (taken or delta.version() > max(base, 0)):
            raise ConcurrentRunError(
                f"{catalog.dst}: another run committed table {table} after run {run_id} planned; run {run_id} "
                "published nothing (run one job per output location at a time; rerun to process what is left)")
        if taken:  # only a writer outside this protocol can get here: the first table admits one run per seq
            raise RuntimeError(f"{catalog.dst}: table {table} holds a commit of sequence number {seq} that is not run "
                               f"{run_id}'s; another program wrote to it")
        pinned = DeltaTable(catalog.table_uri(table), version=max(base, 0), storage_options=catalog.options) \
            if first else delta
        try:
            _commit_table(catalog, pinned, table, marker, retries=0)
        except CommitFailedError:
            time.sleep(min(0.05 * 2 ** attempt, 2.0))  # another finisher or writer committed first: check again
            continue
        except Exception:
            # Its staged files may have gone with a finisher that completed the whole commit.
            after = catalog.open_table(table)
            if landed_version(catalog, table, after, run_id, seq, base) is None:
                raise
            continue
        after = catalog.open_table(table)
        landed = landed_version(catalog, table, after, run_id, seq, base)
        return after.version() if landed is None else landed  # a DELETE of nothing makes no commit
    raise RuntimeError(f"{catalog.dst}: table {table}: {COMMIT_ATTEMPTS} commits of run {run_id} lost to "
                       "concurrent writers; is another program writing to it?")


def landed_version(catalog: Catalog, table: str, delta, run_id: str, seq: int, base: int) -> int | None:
    """The version of ``table`` (after ``base``) whose commit metadata names ``run_id``, or None.

    None at once when the table's app transaction ``APP_ID`` is below ``seq`` (delta-rs reads
    it from the snapshot). Otherwise reads the commits' ``commitInfo`` from
    ``_delta_log/<version>.json`` (the Delta protocol's log files) through pyarrow: a few small
    reads, newest first.
    """
    from extract.tables.catalog import DELTA_LOG

    if delta is None or (delta.transaction_version(APP_ID) or 0) < seq:
        return None
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


_LIVE_TOKENS: set[str] = set()  # tokens of the leases this process holds (their heartbeats run)


class CommitLease:
    """The right to finish one pending commit: ``_staging/<run_id>/_lease.json`` holding the
    owner's host, pid, a token and a heartbeat (Unix seconds, rewritten every
    ``LEASE_HEARTBEAT_S`` by a thread while held).

    A lease is stale when its heartbeat is older than ``LEASE_STALE_S`` or its owner's pid is
    gone on this host; a stale lease is taken over. Taking it is a write then a read-back
    after ``LEASE_SETTLE_S`` (the file is replaced whole: a rename locally, one PUT on an
    object store, which has no create-if-absent through ``pyarrow.fs``), so two takers racing
    inside that window may both win: the lease spares a second finisher's work and keeps the
    staging from being deleted under a live owner; that each row lands once rests on the Delta
    commits themselves (``commit_table_once``).
    """

    def __init__(self, catalog: Catalog, run_id: str):
        self.fs = catalog.fs
        self.run_id = run_id
        self.path = f"{catalog.root}/{STAGING_DIR}/{run_id}/{LEASE_FILE}"
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.holder: dict[str, Any] | None = None  # the lease as last read

    @property
    def held(self) -> bool:
        return self._heartbeat is not None

    def read(self) -> dict[str, Any] | None:
        try:
            self.holder = read_json(self.fs, self.path)
        except FileNotFoundError:
            self.holder = None
        return self.holder

    def stale(self, lease: Mapping[str, Any] | None) -> bool:
        if lease is None:
            return True
        if lease.get("host") == self.owner["host"]:
            pid = int(lease.get("pid", 0))
            if pid == self.owner["pid"]:  # this process knows which of its leases are alive
                return lease.get("token") not in _LIVE_TOKENS
            if not pid_alive(pid):
                return True
        return time.time() - float(lease.get("heartbeat", 0)) > LEASE_STALE_S

    def describe_holder(self) -> str:
        lease = self.holder or {}
        return (f"{lease.get('host')} pid {lease.get('pid')} (heartbeat "
                f"{time.time() - float(lease.get('heartbeat', 0)):.0f} s ago)")

    def try_acquire(self) -> bool:
        """Take the lease when it is free, stale or ours; False while another owner is alive."""
        current = self.read()
        if current is not None and current.get("token") != self.owner["token"] and not self.stale(current):
            return False
        self._write()
        time.sleep(LEASE_SETTLE_S)
        if (self.read() or {}).get("token") != self.owner["token"]:
            return False
        if self._heartbeat is None:
            _LIVE_TOKENS.add(self.owner["token"])
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name=f"lease-{self.run_id}", daemon=True)
            self._heartbeat.start()
        return True

    def release(self) -> None:
        """Stop the heartbeat (the file goes with the staging folder, or is taken over as stale
        by the next finisher: a released but unfinished commit has no live owner)."""
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join()
            self._heartbeat = None
            _LIVE_TOKENS.discard(self.owner["token"])
            try:
                current = self.read()
                if current is not None and current.get("token") == self.owner["token"]:
                    self.fs.delete_file(self.path)
            except OSError:  # gone already, or the store failed: the lease is stale either way
                pass

    def _write(self) -> None:
        write_json(self.fs, self.path, dict(self.owner, heartbeat=time.time()))

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_HEARTBEAT_S):
            try:
                self._write()
            except OSError:  # a store hiccup: the next beat tries again; a long outage makes it stale
                pass


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pending_commits(catalog: Catalog) -> list[dict[str, Any]]:
    """Pending commits under ``_staging/`` (runs that crashed after step 1), by seq."""
    out = []
    selector = pafs.FileSelector(f"{catalog.root}/{STAGING_DIR}", allow_not_found=True)
    for info in catalog.fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory:
            continue
        path = f"{info.path}/{COMMIT_MARKER}"
        try:
            out.append(read_json(catalog.fs, path))
        except FileNotFoundError:
            continue  # a run still staging, or a folder a finisher is deleting
    return sorted(out, key=lambda m: m["seq"])


def roll_forward(catalog: Catalog, wait_s: float = LEASE_WAIT_S) -> list[str]:
    """Finish every pending commit (a run that crashed between its table commits); a pending
    commit that lost to another run is discarded. A pending commit whose lease is held by a
    live owner (a run between its commits, another ``roll_forward``) is waited for, up to
    ``wait_s`` seconds (then ConcurrentRunError), and left to it. Returns the run ids finished here."""
    done = []
    for marker in pending_commits(catalog):
        run_id = marker["run_id"]
        run_path = f"{catalog.root}/{RUNS_DIR}/{run_id}.json"
        marker_path = f"{catalog.root}/{STAGING_DIR}/{run_id}/{COMMIT_MARKER}"
        lease = CommitLease(catalog, run_id)
        deadline = time.monotonic() + wait_s
        try:
            while True:
                if catalog.fs.get_file_info(run_path).type == pafs.FileType.File:
                    holder = lease.read()
                    if lease.held or lease.stale(holder):  # its finisher crashed in clean-up
                        lease.release()
                        delete_dir(catalog.fs, f"{catalog.root}/{STAGING_DIR}/{run_id}")
                    break  # else its live owner is deleting the staging now
                if catalog.fs.get_file_info(marker_path).type != pafs.FileType.File:
                    break  # finished or discarded by its owner
                if lease.try_acquire():
                    if catalog.fs.get_file_info(run_path).type == pafs.FileType.File:
                        continue  # finished while this waited: clean up above
                    try:
                        finish_commit(catalog, marker, lease)
                        done.append(run_id)
                    except ConcurrentRunError:
                        pass  # its first table was taken by another run: it never published anything
                    break
                if time.monotonic() > deadline:
                    raise ConcurrentRunError(
                        f"{catalog.dst}: run {run_id} is being committed by {lease.describe_holder()} for longer "
                        f"than {wait_s:.0f} s; retry when it has finished")
                time.sleep(LEASE_POLL_S)
        finally:
            lease.release()
    catalog.reload()
    return done


def commit_delete(catalog: Catalog, run_id: str, seq: int, predicates: Mapping[str, str],
                  base_versions: Mapping[str, int], record: dict[str, Any]) -> dict[str, Any]:
    """Delete the rows matching ``predicates[table]`` from each table as one logical commit
    (a Delta DELETE per table, through the pending-commit protocol of the module doc), then
    write ``record``; returns it as written. ``base_versions``: the tables' versions now."""
    marker = {"run_id": run_id, "seq": seq, "operation": "delete", "predicate": dict(predicates),
              "base_versions": dict(base_versions), "files": {}, "metadata": {}, "record": record}
    return publish(catalog, marker)
