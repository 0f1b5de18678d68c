"""``extract migrate DST``: convert the previous plain-Parquet layout into Delta tables, in place.

The old layout kept each table as Hive folders of Parquet files (``DST/<table>/dt=<dt>/*.parquet``)
whose live set was named by the run manifests ``DST/_runs/*.json`` (``files_added`` minus
``files_removed``). ``migrate`` writes each table's live rows, unchanged, as a Delta table in
the same folder (one commit per table: embeddings become ``list<float32>`` with their width in
the schema metadata, ``dt`` a column), deletes the old files, and records a ``migrate`` run that
pins the new versions. Old files of an older schema version (lacking nullable columns added
since) are read under the union of the files' schemas, the columns none has becoming nulls,
as a run evolves an older Delta table (``extract.tables.evolution``); Polars decodes them
(``_read_old_file``: the old embeddings are ``fixed_size_list``, null where a stage failed, which
pyarrow 25's Parquet reader cannot read back). The old run manifests stay as history (their
``forget`` lists still keep forgotten ids forgotten). A crash part way is finished by running
``migrate`` again: tables that already have a Delta log are kept (a later run evolves them if
they are of an older schema version).
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from extract.config import StorageConfig
from extract.tables.catalog import DELTA_LOG, Catalog
from extract.tables.schemas import TABLES, get_table_schema, table_description
from extract.tables.session import RunSession


def old_live_files(catalog: Catalog, table: str) -> list[str]:
    """Absolute paths of ``table``'s live files in the old layout (every Parquet file under
    the table when no manifest lists files)."""
    runs = [r for r in catalog.all_runs if "files_added" in r]
    if any(r.get("files_added") for r in runs):
        live: dict[str, None] = {}
        for run in runs:
            for rel in run.get("files_removed", ()):
                live.pop(rel, None)
            for rel in run.get("files_added", ()):
                if rel.startswith(f"{table}/"):
                    live[rel] = None
        return [f"{catalog.root}/{rel}" for rel in live]
    selector = pafs.FileSelector(f"{catalog.root}/{table}", recursive=True, allow_not_found=True)
    return sorted(i.path for i in catalog.fs.get_file_info(selector)
                  if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


def _read_old_file(catalog: Catalog, path: str) -> pa.Table:
    """One old-layout file's rows, with ``dt`` from its ``dt=<dt>`` folder.

    Decoded by Polars from a ``catalog.fs`` file handle (local or object store): pyarrow 25.0.1's
    Parquet reader fails on a null entry of a ``fixed_size_list`` column ("ArrowInvalid: Expected
    all lists to be of size=D but index i had size=0"; 26 reads it), and pyarrow stays at 25 for
    Daft (docs/QUERIES.md). Strings, binaries and lists come back large; ``_column`` casts them."""
    import polars as pl

    folder = posixpath.basename(posixpath.dirname(path))
    if not folder.startswith("dt="):
        raise ValueError(f"{path}: an old-layout file outside a dt=YYYY-MM-DD folder; move it away")
    with catalog.fs.open_input_file(path) as handle:
        data = pl.read_parquet(handle).to_arrow()
    return data.append_column("dt", pa.array([folder[len("dt="):]] * data.num_rows, pa.string()))


def _column(table: str, data: pa.Table, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    """``field`` of the old rows ``data``, cast to the Delta type; nulls when no old file has it
    (a nullable column of a later schema version). Raises ValueError for a lacking required column."""
    if field.name in data.column_names:
        return data[field.name].cast(field.type)
    if not field.nullable:
        raise ValueError(f"table {table}: the old files lack column {field.name}, which is not nullable; "
                         "they were not written by this pipeline: move them away")
    return pa.nulls(data.num_rows, field.type)


def migrate(dst: str, run_id: str | None = None, storage: StorageConfig | None = None) -> dict[str, Any]:
    """Convert ``dst`` in place (see module doc), recording run ``run_id``; returns the
    ``migrate`` run record with the rows per table."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    from extract.tables.catalog import APP_ID, RUN_ID_KEY
    from extract.tables.writer import TABLE_CONFIGURATION, writer_properties

    catalog = Catalog(dst, storage or StorageConfig())
    session = RunSession.open(catalog, "migrate", run_id, legacy_layout=True)
    run_id, seq = session.run_id, session.seq
    rows: dict[str, int] = {}
    versions: dict[str, int] = {}
    old_files: list[str] = []
    dims = set()
    sources = {}
    for table in TABLES:
        files = old_live_files(catalog, table)
        sources[table] = files
        if files:
            schema = ds.dataset(files[:1], filesystem=catalog.fs, format="parquet").schema
            dims |= {f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)}
    if len(dims) > 1:
        raise ValueError(f"{dst}: the old tables hold embeddings of several widths {sorted(dims)}; cannot migrate")
    dim = dims.pop() if dims else 0
    for table in TABLES:
        if catalog.fs.get_file_info(f"{catalog.root}/{table}/{DELTA_LOG}").type == pafs.FileType.Directory:
            delta = catalog.open_table(table)
            versions[table], rows[table] = delta.version(), 0
            continue
        files = sources[table]
        schema = get_table_schema(table).delta_schema(dim)
        if files:
            # Files of older schema versions lack later columns: concatenated under the union of
            # their schemas, then columns none of them has become nulls (the evolution rule).
            data = pa.concat_tables([_read_old_file(catalog, f) for f in files], promote_options="default")
            data = pa.Table.from_arrays([_column(table, data, f) for f in schema], schema=schema)
        else:
            data = schema.empty_table()
        write_deltalake(catalog.table_uri(table), data, partition_by=["dt"], mode="append",
                        description=table_description(get_table_schema(table)),
                        configuration=TABLE_CONFIGURATION, storage_options=catalog.options,
                        writer_properties=writer_properties(),
                        commit_properties=CommitProperties(custom_metadata={RUN_ID_KEY: run_id},
                                                           app_transactions=[Transaction(APP_ID, seq)]))
        versions[table], rows[table] = catalog.open_table(table).version(), data.num_rows
        old_files += files
    for path in old_files:
        catalog.fs.delete_file(path)
    for table in TABLES:  # leftovers no manifest named (crashed runs of the old layout)
        selector = pafs.FileSelector(f"{catalog.root}/{table}", recursive=True, allow_not_found=True)
        live = {f"{catalog.root}/{table}/{p}" for p in
                pa.table(catalog.open_table(table).get_add_actions())["path"].to_pylist()}
        for info in catalog.fs.get_file_info(selector):
            if (info.type == pafs.FileType.File and info.path.endswith(".parquet") and info.path not in live
                    and f"/{DELTA_LOG}/" not in info.path and posixpath.basename(posixpath.dirname(info.path))
                    .startswith("dt=")):
                catalog.fs.delete_file(info.path)
    return session.publish(session.record(counts={"migrated_rows": sum(rows.values())}, rows=rows), versions)
