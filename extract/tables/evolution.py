"""Evolving Delta tables written under an older schema version to ours, in place.

A table whose schema only lacks nullable columns of ours, or field metadata keys of our
columns (``TableSchema.diff``), is evolved before a run plans: one Delta commit adds the
columns (``DeltaTable.alter.add_columns``, at the end, nullable, so every old row reads back
null in them through any Delta reader), one sets each lacking column's metadata
(``alter.set_column_metadata``), and one records our schema version in the table description
(``alter.set_table_description``). Each commit carries ``extract.evolved_by`` (the run id) in
its commit metadata, not the run id key of data commits. Re-running after a crash part way
finishes the rest: the diff is computed afresh, and a table already holding every column but
describing an older version only gets its description updated.

Known limit (delta-rs 1.6.6): ``DeltaTable.to_pyarrow_dataset()`` turns the statistics an old
file lacks for an added column into the fragment guarantee ``col >= null and col <= null``,
so a pyarrow (or DuckDB-over-pyarrow) filter on that column, e.g. ``col IS NULL``, prunes the
old files; filter after reading, or read through Polars ``scan_delta`` or ``Catalog``, which
read them right (and, unlike deltalake's pyarrow path, never abort the process at exit:
docs/QUERIES.md).

Any other difference (a changed type, a dropped non-nullable column, a foreign column) is not
evolved; ``Catalog.check`` refuses such a table before any video is read.
"""

from __future__ import annotations

import logging
from typing import Any

from extract.tables.catalog import Catalog, OutputLayoutError, _arrow_schema
from extract.tables.schemas import TABLES, get_table_schema, schema_version_of, table_description

log = logging.getLogger("extract")
EVOLVED_BY_KEY = "extract.evolved_by"  # commit metadata of a schema evolution commit: the run id


def check_width(catalog: Catalog, table: str, delta, embedding_dim: int) -> None:
    """Raise OutputLayoutError when ``table`` (a DeltaTable) holds embeddings of another width."""
    from extract.tables.schemas import embedding_dim_of

    dim = embedding_dim_of(_arrow_schema(delta))
    if get_table_schema(table).embedding_columns and dim is not None and dim != embedding_dim:
        raise OutputLayoutError(
            f"{catalog.dst}: table {table} holds embeddings of {dim} values but this run's CLIP model makes "
            f"{embedding_dim}; write to another output location")


def evolve_tables(catalog: Catalog, embedding_dim: int, run_id: str) -> list[dict[str, Any]]:
    """Evolve every existing table of ``catalog`` whose schema is an older version of ours
    (see module doc); returns one record per evolved table: ``table``, ``columns`` (added),
    ``metadata`` (columns given field metadata), ``from_version`` / ``to_version`` (schema
    versions; None when the table did not name one) and ``delta_version`` (after evolving).
    Logs one line when anything was evolved. Raises OutputLayoutError naming the table and
    the fix for a difference evolution cannot fix, or embeddings of another width, before
    changing any table."""
    from deltalake import CommitProperties, Field

    todo = []
    for table in TABLES:
        delta = catalog.open_table(table)
        if delta is None:
            continue
        schema = get_table_schema(table)
        diff = schema.diff(_arrow_schema(delta), embedding_dim)
        if diff.problems:
            raise OutputLayoutError(
                f"{catalog.dst}: table {table} is a Delta table with another schema ({diff.describe()}); write to "
                f"another output location, or move {table}/ away")
        check_width(catalog, table, delta, embedding_dim)
        old_version = schema_version_of(delta.metadata().description)
        if diff.evolvable or (old_version is not None and old_version < schema.version):
            todo.append((table, delta, diff, old_version))
    records = []
    for table, delta, diff, old_version in todo:
        schema = get_table_schema(table)
        props = CommitProperties(custom_metadata={EVOLVED_BY_KEY: run_id})
        if diff.added:
            delta.alter.add_columns([Field.from_arrow(f) for f in diff.added], commit_properties=props)
        for column, metadata in diff.metadata:
            delta.alter.set_column_metadata(column, metadata, commit_properties=props)
        delta.alter.set_table_description(table_description(schema), commit_properties=props)
        records.append({"table": table, "columns": [f.name for f in diff.added],
                        "metadata": [column for column, _ in diff.metadata],
                        "from_version": old_version, "to_version": schema.version,
                        "delta_version": catalog.open_table(table).version()})
    if records:
        log.info("schema evolution: %s", "; ".join(
            f"{r['table']} v{r['from_version'] if r['from_version'] is not None else '?'} -> v{r['to_version']}"
            f" (+{len(r['columns'])} columns{': ' + ', '.join(r['columns']) if r['columns'] else ''}"
            f"{'; metadata of ' + ', '.join(r['metadata']) if r['metadata'] else ''})" for r in records))
    return records
