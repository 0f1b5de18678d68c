"""The committed state of an output location: its Delta tables read at one run boundary.

``DST/<table>/`` is a Delta Lake table (``_delta_log/`` + Parquet files partitioned by ``dt``)
for each of ``extract.tables.schemas.TABLES``. Every committed run (processing or ``forget``) writes
``DST/_runs/<run_id>.json`` after its table commits; it holds the run's sequence number
``seq`` and ``delta_versions`` (table -> the Delta version its commit produced). ``Catalog``
reads each table at the versions of one such record, the latest by default, or the one chosen
by ``as_of`` (a run id, a run sequence number, or a time: the last run committed at or before
it), so its readers never see a run half-committed across the tables, nor rows of a run that
was still committing. Delta readers (Spark, Trino, Polars, DuckDB, deltalake) that open a
table's latest version see each table committed atomically; docs/QUERIES.md shows how they pin
a run's versions too.

``check`` refuses locations a run must not write to: a table whose Delta log cannot be read, a
Delta table whose schema is not ours nor an older version of ours (which a run evolves, see
``extract.tables.evolution``), or the previous plain-Parquet layout (fix: ``extract migrate DST``).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from extract.config import StorageConfig
from extract.tables.schemas import TABLES, embedding_dim_of, get_table_schema
from extract.io.storage import delta_storage_options, delta_uri, filesystem_for

RUNS_DIR = "_runs"
STAGING_DIR = "_staging"
DELTA_LOG = "_delta_log"
APP_ID = "extract"  # the Delta app-transaction id of this pipeline; its version is a run's seq
RUN_ID_KEY = "extract.run_id"  # commit metadata naming the run that made a Delta commit


class OutputLayoutError(RuntimeError):
    """DST cannot be read or written as this pipeline's tables; the message names the fix."""


AsOf = int | str | datetime | None


@dataclass
class Catalog:
    """Committed runs of ``dst`` and its tables at one run's versions (see module doc).

    ``as_of``: None (the latest run), a run id, a run sequence number (``int``, or a string of
    digits) or a time (``datetime`` or ISO-8601 string; naive means UTC).
    """

    dst: str
    storage: StorageConfig = field(default_factory=StorageConfig)
    as_of: AsOf = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # committed run records, in seq order

    def __post_init__(self) -> None:
        self.fs, self.root = filesystem_for(self.dst, self.storage)
        self.uri = delta_uri(self.dst)
        self.options = delta_storage_options(self.dst, self.storage)
        self.reload()

    # ------------------------------------------------------------------ runs

    def reload(self) -> None:
        """Re-read ``_runs/*.json``; pin the tables at the run ``as_of`` selects."""
        selector = pafs.FileSelector(f"{self.root}/{RUNS_DIR}", allow_not_found=True)
        runs = []
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.path.endswith(".json"):
                with self.fs.open_input_stream(info.path) as fh:
                    runs.append(json.loads(fh.read()))
        self.all_runs = sorted(runs, key=lambda r: (r.get("seq", -1), r.get("committed_at", ""), r["run_id"]))
        self.run = self._select(self.as_of)
        # Every record when reading the latest state (also old-layout ones: their forget lists
        # count); up to the pinned run when reading an earlier one.
        self.runs = list(self.all_runs) if self.as_of is None else self.all_runs[: self.all_runs.index(self.run) + 1]
        self.versions: dict[str, int] = dict((self.run or {}).get("delta_versions") or {})
        self._tables: dict[str, Any] = {}

    def _select(self, as_of: AsOf) -> dict[str, Any] | None:
        runs = [r for r in self.all_runs if "delta_versions" in r]
        if as_of is None:
            return runs[-1] if runs else None
        if isinstance(as_of, str):
            match = [r for r in runs if r["run_id"] == as_of]
            if match:
                return match[0]
            if as_of.isdigit():
                as_of = int(as_of)
            else:
                try:
                    as_of = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"as_of {as_of!r} is neither a run id of {self.dst}, a run sequence number "
                                     "nor an ISO-8601 time") from None
        if isinstance(as_of, int):
            match = [r for r in runs if r.get("seq") == as_of]
            if not match:
                raise ValueError(f"{self.dst} has no committed run with sequence number {as_of}; "
                                 f"committed: {', '.join(str(r.get('seq')) for r in runs[-5:]) or 'none'}")
            return match[0]
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
        before = [r for r in runs if datetime.fromisoformat(r["committed_at"]) <= moment]
        if not before:
            raise ValueError(f"{self.dst} has no run committed at or before {moment.isoformat()}")
        return before[-1]

    @property
    def next_seq(self) -> int:
        """The sequence number the next commit to ``dst`` takes."""
        return max([r.get("seq", 0) for r in self.all_runs] + [0]) + 1

    def forgotten(self, ids: Iterable[str] | None = None) -> dict[str, str | None]:
        """``{video_id: uri}`` of ids removed by ``forget`` runs (the uri they had then)."""
        wanted = None if ids is None else set(ids)
        out: dict[str, str | None] = {}
        for run in self.runs:
            for rec in run.get("forgotten", ()):
                if wanted is None or rec["video_id"] in wanted:
                    out[rec["video_id"]] = rec.get("uri")
        return out

    # ------------------------------------------------------------------ tables

    def table_uri(self, table: str) -> str:
        return f"{self.uri}/{table}"

    def delta(self, table: str):
        """The ``deltalake.DeltaTable`` of ``table`` at the pinned version; None before any run."""
        if table not in self.versions:
            return None
        if table not in self._tables:
            self._tables[table] = self.open_table(table, self.versions[table])
        return self._tables[table]

    def open_table(self, table: str, version: int | None = None):
        """``table`` as a ``DeltaTable`` (latest or ``version``); None when it does not exist.

        Raises OutputLayoutError naming the table when its log is unreadable.
        """
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.table_uri(table), version=version, storage_options=self.options)
        except TableNotFoundError:
            if version is not None:
                raise OutputLayoutError(
                    f"{self.dst}: table {table} has no Delta log but run {(self.run or {}).get('run_id')} "
                    f"recorded version {version}; the table was deleted or moved: restore it") from None
            return None
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for a broken log
            raise OutputLayoutError(
                f"{self.dst}: table {table}: its Delta log cannot be read "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                f"restore {table}/_delta_log from a backup, or move {table}/ away and run again") from exc

    def dataset(self, table: str, dts: Iterable[str] | None = None,
                dictionary: Sequence[str] = ()) -> ds.Dataset | None:
        """A pyarrow dataset of ``table``'s files at the pinned version (only the ``dts``
        partitions when given); None before any run. Embeddings are ``list<float32>``; the
        ``dictionary`` columns are read dictionary-encoded (repeated ids: codes, not strings)."""
        delta = self.delta(table)
        if delta is None:
            return None
        if dts is not None and not set(dts):
            return None
        return snapshot_dataset(delta, self.fs, f"{self.root}/{table}", self.table_uri(table), dts, dictionary)

    def read(self, table: str, columns: list[str] | None = None, filter: Any = None,
             dts: Iterable[str] | None = None, dictionary: Sequence[str] = ()) -> pa.Table | None:
        """Committed rows of ``table`` (``dt`` included) at the pinned run; None before any run.
        The ``dictionary`` columns come back dictionary-encoded.

        Embedding columns come back as ``fixed_size_list<float32>[D]`` (D from the table's
        schema metadata); a value of another width raises ValueError naming the column. Columns
        of our schema that the pinned version predates (an older schema version, see
        ``extract.tables.evolution``) come back null.
        """
        dataset = self.dataset(table, dts, dictionary)
        if dataset is None:
            return None
        dim = embedding_dim_of(_arrow_schema(self.delta(table)))
        later = [f for f in get_table_schema(table).arrow_schema(dim or 0)
                 if f.name not in dataset.schema.names and (columns is None or f.name in columns)]
        if later:  # read what the version has, then add the later columns as nulls
            names = {f.name for f in later}
            data = self.read(table, [c for c in (columns or dataset.schema.names) if c not in names], filter, dts)
            for f in later:
                data = data.append_column(f, pa.nulls(data.num_rows, f.type))
            return data.select(columns) if columns is not None else data
        try:
            data = dataset.to_table(columns=columns, filter=filter)
        except pa.ArrowNotImplementedError:
            # Files delta-rs rewrote (DELETE, overwrite) carry string statistics that pyarrow
            # compares as string_view against a string literal and cannot prune with: filter
            # those rows after reading instead.
            data = dataset.to_table(filter=None).filter(filter)
            data = data.select(columns) if columns is not None else data
        return fixed_width_embeddings(table, data, embedding_dim_of(_arrow_schema(self.delta(table))))

    def file_actions(self, table: str) -> pa.Table | None:
        """The table's live files at the pinned version: path, size_bytes, num_records, partition.dt."""
        delta = self.delta(table)
        return None if delta is None else pa.table(delta.get_add_actions(flatten=True))

    # ------------------------------------------------------------------ outcomes

    def outcomes(self, rows: Iterable[Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Committed outcome per video id: ``{"status": "ok"|"error"|"forgotten", ...columns, "dt"}``.

        With ``rows`` (manifest rows: ``video_id``, ``dt``, ``upload_ts``) only those ids are
        looked up, and only in the partitions they can be in: a row with an ``upload_ts`` in
        its own ``dt`` (an upload's time does not change, so neither does its partition); a
        row without one (``dt`` = the run date, see ``extract.pipeline.manifest``) may have been committed
        on any earlier run date, so its id is looked up in every partition (reading only the
        ``video_id`` column and the few below). Without ``rows``: every committed id.
        """
        queries: list[tuple[set[str] | None, set[str] | None]]  # (partitions, ids); None = all
        if rows is None:
            queries, ids = [(None, None)], None
        else:
            rows = list(rows)
            ids = {r["video_id"] for r in rows}
            dated = [r for r in rows if r.get("upload_ts")]
            undated = {r["video_id"] for r in rows if not r.get("upload_ts")}
            queries = [(None, undated)] if undated else []
            if dated:
                queries.append(({r["dt"] for r in dated}, {r["video_id"] for r in dated}))
        out: dict[str, dict[str, Any]] = {}
        identity = ["source_bytes", "source_mtime"]
        for table, status, columns in (
                ("videos", "ok", ["video_id", "feature_hash", "content_sha256", "uri", "dt", "run_id", *identity]),
                ("errors", "error", ["video_id", "retryable", "stage", "error_type", "uri", "dt", "run_id", *identity])):
            for dts, wanted in queries:
                if wanted is not None and not wanted:
                    continue
                where = None if wanted is None else pc.field("video_id").isin(pa.array(sorted(wanted), pa.string()))
                data = self.read(table, columns, where, dts)
                if data is None:
                    continue
                for rec in data.to_pylist():
                    out.setdefault(rec["video_id"], {"status": status, **rec})
        for vid, uri in self.forgotten(ids).items():
            # A forgotten id that has rows again was re-processed after the forget.
            out.setdefault(vid, {"status": "forgotten", "video_id": vid, "uri": uri})
        return out

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        """Raise OutputLayoutError when ``dst`` is not (yet) our Delta tables, naming the table
        and the fix: the old plain-Parquet layout, an unreadable log, a foreign schema. A table
        of an older schema version of ours passes: a run evolves it (``extract.tables.evolution``)."""
        for table in TABLES:
            base = f"{self.root}/{table}"
            if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
                continue
            has_log = self.fs.get_file_info(f"{base}/{DELTA_LOG}").type == pafs.FileType.Directory
            if not has_log:
                if any(i.path.endswith(".parquet") for i in
                       self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))):
                    raise OutputLayoutError(
                        f"{self.dst}: table {table} holds Parquet files without a Delta log: the plain-Parquet "
                        f"layout of an earlier version of this pipeline; convert it in place with "
                        f"`extract migrate {self.dst}`")
                continue
            delta = self.open_table(table)
            if delta is None:
                continue
            diff = get_table_schema(table).diff(_arrow_schema(delta))
            if diff.problems:
                raise OutputLayoutError(
                    f"{self.dst}: table {table} is a Delta table with another schema ({diff.describe()}); write to "
                    f"another output location, or move {table}/ away")


def committed_rows(table_uri: str, version: int, storage: StorageConfig, dt: str, ids: Iterable[str],
                   columns: list[str]) -> list[dict[str, Any]]:
    """``columns`` of the rows of ``ids`` in partition ``dt`` of the Delta table at ``table_uri``,
    at ``version`` (a worker's point read, e.g. of the video a row's bytes equal)."""
    from deltalake import DeltaTable

    delta = DeltaTable(table_uri, version=version, storage_options=delta_storage_options(table_uri, storage))
    fs, path = filesystem_for(table_uri, storage)
    dataset = snapshot_dataset(delta, fs, path, delta_uri(table_uri), [dt])
    where = pc.field("video_id").isin(pa.array(sorted(set(ids)), pa.string()))
    try:
        data = dataset.to_table(columns=columns, filter=where)
    except pa.ArrowNotImplementedError:  # string statistics of rewritten files (see Catalog.read)
        data = dataset.to_table(columns=columns).filter(where)
    return data.to_pylist()


def snapshot_dataset(delta, fs: pafs.FileSystem, table_path: str, table_uri: str, dts: Iterable[str] | None = None,
                     dictionary: Sequence[str] = ()) -> ds.Dataset:
    """A pyarrow dataset of the files of a ``DeltaTable`` snapshot (only the ``dts`` partitions
    when given), read through pyarrow's own filesystem ``fs`` (``table_path``: the table's
    folder on it; ``table_uri``: what delta-rs opened), ``dt`` from the Hive paths; the
    ``dictionary`` columns read dictionary-encoded.

    Not ``DeltaTable.to_pyarrow_dataset``: that reads through delta-rs's filesystem handler,
    whose runtime threads outlive the interpreter's shutdown and abort 15-20 % of processes
    at exit ("terminate called without an active exception", exit 134; delta-rs #2184,
    apache/arrow #34314). Our tables have no deletion vectors nor column mapping, so the
    snapshot's file list is the whole of what it holds.
    """
    filters = None if dts is None else [("dt", "in", sorted(set(dts)))]
    prefix = table_uri.rstrip("/") + "/"
    paths = []
    for uri in delta.file_uris(filters):
        rel = uri[len(prefix):] if uri.startswith(prefix) else uri.split(f"/{posixpath.basename(table_path)}/", 1)[-1]
        paths.append(f"{table_path}/{unquote(rel)}")
    schema = _arrow_schema(delta)
    partition_names = set(delta.metadata().partition_columns)
    partitioning = ds.partitioning(pa.schema([schema.field(n) for n in schema.names if n in partition_names]),
                                   flavor="hive")
    options = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=list(dictionary))) \
        if dictionary else "parquet"
    return ds.dataset(paths, schema=schema, format=options, filesystem=fs, partitioning=partitioning,
                      partition_base_dir=table_path)


def _arrow_schema(delta) -> pa.Schema:
    """A DeltaTable's schema as a pyarrow schema (field metadata included)."""
    return pa.schema(delta.schema().to_arrow())


def fixed_width_embeddings(table: str, data: pa.Table, dim: int | None) -> pa.Table:
    """``data`` with its embedding columns cast from ``list<float32>`` to
    ``fixed_size_list<float32>[dim]``; raises ValueError naming a column with another width."""
    for name in get_table_schema(table).embedding_columns:
        if name not in data.column_names:
            continue
        if dim is None:
            raise ValueError(f"table {table}: column {name} has no embedding width in its schema metadata")
        col = data[name]
        lengths = pc.list_value_length(col)
        bad = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, dim))
        if pc.any(bad).as_py():
            raise ValueError(f"table {table}: column {name} holds embeddings of "
                             f"{pc.min(pc.filter(lengths, bad)).as_py()} values; the table's width is {dim}")
        data = data.set_column(data.column_names.index(name), pa.field(name, pa.list_(pa.float32(), dim)),
                               col.cast(pa.list_(pa.float32(), dim)))
    return data
