"""The output tables' schemas, loaded from ``schemas/<table>.json`` (the only definition).

A schema file holds ``name``, ``version``, ``description``, ``partitioning`` (Hive columns that
live in the path, not in the files) and ``columns`` (name, Arrow type string, nullable,
description). The type ``embedding`` is stored as ``list<float32>`` (Delta Lake has no
fixed-size list) whose field metadata ``extract.embedding_dim`` holds the width D, taken from the
CLIP model at write time; every write and read checks each value has exactly D floats, and
``extract.tables.catalog`` hands embeddings back as ``fixed_size_list<float32>[D]``.

Evolution rule: a new version may only add nullable columns at the end, so files written
under an older version stay readable beside newer ones through a unified dataset schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

EMBEDDING_DIM_KEY = "extract.embedding_dim"  # field metadata of an embedding column: its width D
# The top-level schemas/ folder is the one definition; a checkout reads it in place and the
# wheel ships a copy of it as extract/_schemas (pyproject: force-include).
_CHECKOUT_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_DIR = _CHECKOUT_SCHEMAS if _CHECKOUT_SCHEMAS.is_dir() else Path(__file__).resolve().parents[1] / "_schemas"
TABLES = ("videos", "frame_embeddings", "transcript_segments", "hashtags", "ocr_text", "duplicates", "errors")

_SIMPLE_TYPES = {
    "string": pa.string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
    "list<int64>": pa.list_(pa.int64()),
    "list<float32>": pa.list_(pa.float32()),  # a variable-width vector (audio_embedding, an OCR box)
    "map<string,float32>": pa.map_(pa.string(), pa.float32()),
}


@dataclass(frozen=True)
class TableSchema:
    """One table's definition as loaded from JSON."""

    name: str
    version: int
    description: str
    columns: tuple[dict, ...]
    partitioning: tuple[dict, ...]

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    @property
    def partition_names(self) -> list[str]:
        return [p["name"] for p in self.partitioning]

    @property
    def embedding_columns(self) -> list[str]:
        return [c["name"] for c in self.columns if c["type"] == "embedding"]

    def arrow_schema(self, embedding_dim: int) -> pa.Schema:
        """The in-memory record schema (partition columns excluded): embeddings are
        ``fixed_size_list<float32>[embedding_dim]``."""
        return pa.schema([
            pa.field(col["name"], pa.list_(pa.float32(), embedding_dim) if col["type"] == "embedding"
                     else _SIMPLE_TYPES[col["type"]], nullable=col["nullable"])
            for col in self.columns])

    def delta_schema(self, embedding_dim: int) -> pa.Schema:
        """The Delta table's schema: the columns, then the partition columns (``dt``, string);
        embeddings are ``list<float32>`` with the width in field metadata ``extract.embedding_dim``."""
        fields = []
        for field in self.arrow_schema(embedding_dim):
            if pa.types.is_fixed_size_list(field.type):
                field = pa.field(field.name, pa.list_(pa.float32()), field.nullable,
                                 metadata={EMBEDDING_DIM_KEY: str(embedding_dim)})
            fields.append(field)
        fields += [pa.field(p["name"], pa.string(), nullable=False) for p in self.partitioning]
        return pa.schema(fields)

    def schema_problem(self, found: pa.Schema) -> str | None:
        """Why a Delta table's schema ``found`` is not this table's (None when it is): columns
        missing, extra or of another type, or embeddings of differing widths."""
        dims = {f.metadata.get(EMBEDDING_DIM_KEY.encode()) if f.metadata else None
                for f in found if f.name in self.embedding_columns}
        want_types = {f.name: f.type for f in self.delta_schema(0)}
        got_types = {f.name: f.type for f in found}
        missing = [n for n in want_types if n not in got_types]
        extra = [n for n in got_types if n not in want_types]
        differ = [f"{n} is {got_types[n]}, expected {t}" for n, t in want_types.items()
                  if n in got_types and not _same_type(got_types[n], t)]
        parts = ([f"missing columns {missing}"] if missing else []) + \
                ([f"unexpected columns {extra}"] if extra else []) + differ
        if self.embedding_columns and not missing and (len(dims) != 1 or None in dims):
            parts.append(f"embedding columns {self.embedding_columns} lack one common {EMBEDDING_DIM_KEY} metadata")
        if parts:
            return "; ".join(parts)
        return None

    def markdown(self) -> str:
        """Column documentation as a Markdown section."""
        lines = [f"### `{self.name}` (schema version {self.version})", "", self.description, "",
                 "| column | type | nullable | description |", "|---|---|---|---|"]
        for col in self.partitioning:
            lines.append(f"| `{col['name']}` | {col['type']} (Hive partition) | no | {col['description']} |")
        for col in self.columns:
            tp = "list<float32> of D values (D in field metadata extract.embedding_dim)" \
                if col["type"] == "embedding" else col["type"]
            lines.append(f"| `{col['name']}` | {tp} | {'yes' if col['nullable'] else 'no'} | {col['description']} |")
        return "\n".join(lines) + "\n"


@lru_cache(maxsize=None)
def get_table_schema(name: str) -> TableSchema:
    """Load ``schemas/<name>.json``; raise ValueError for an unknown table."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    data = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    for col in data["columns"]:
        if col["type"] != "embedding" and col["type"] not in _SIMPLE_TYPES:
            raise ValueError(f"schemas/{name}.json: column {col['name']} has unknown type {col['type']!r}")
    return TableSchema(
        name=data["name"], version=int(data["version"]), description=data["description"],
        columns=tuple(data["columns"]), partitioning=tuple(data.get("partitioning", ())),
    )


def embedding_dim_of(schema: pa.Schema) -> int | None:
    """The width D recorded on the embedding columns of a Delta table schema (None: none)."""
    for field in schema:
        if field.metadata and EMBEDDING_DIM_KEY.encode() in field.metadata:
            return int(field.metadata[EMBEDDING_DIM_KEY.encode()])
    return None


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Arrow types equal up to list field names, string vs large/view string and binary vs
    large/view binary (readers differ)."""
    if pa.types.is_list(a) or pa.types.is_large_list(a) or pa.types.is_list_view(a):
        return (pa.types.is_list(b) or pa.types.is_large_list(b)) and _same_type(a.value_type, b.value_type)
    strings = (pa.string(), pa.large_string(), pa.string_view())
    if a in strings:
        return b in strings
    binaries = (pa.binary(), pa.large_binary(), pa.binary_view())
    if a in binaries:
        return b in binaries
    return a.equals(b)


def all_table_schemas() -> list[TableSchema]:
    """Every table's schema, in TABLES order."""
    return [get_table_schema(name) for name in TABLES]
