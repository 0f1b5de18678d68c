"""The output tables' schemas, loaded from ``schemas/<table>.json`` (the only definition).

A schema file holds ``name``, ``version``, ``description``, ``partitioning`` (Hive columns that
live in the path, not in the files) and ``columns`` (name, Arrow type string, nullable,
description). The type ``embedding`` is ``fixed_size_list<float32|float16>[D]`` with D taken
from the CLIP model at write time.

Evolution rule: a new version may only add nullable columns at the end, so files written
under an older version stay readable beside newer ones through a unified dataset schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

# The top-level schemas/ folder is the one definition; a checkout reads it in place and the
# wheel ships a copy of it as extract/_schemas (pyproject: force-include).
_CHECKOUT_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_DIR = _CHECKOUT_SCHEMAS if _CHECKOUT_SCHEMAS.is_dir() else Path(__file__).resolve().parents[1] / "_schemas"
TABLES = ("videos", "frame_embeddings", "transcript_segments", "hashtags", "errors")

_SIMPLE_TYPES = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
    "list<int64>": pa.list_(pa.int64()),
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

    def arrow_schema(self, embedding_dim: int, embedding_dtype: str = "float32") -> pa.Schema:
        """The file schema (partition columns excluded) for embeddings of ``embedding_dim``."""
        value_type = pa.float16() if embedding_dtype == "float16" else pa.float32()
        fields = []
        for col in self.columns:
            if col["type"] == "embedding":
                tp = pa.list_(value_type, embedding_dim)
            else:
                tp = _SIMPLE_TYPES[col["type"]]
            fields.append(pa.field(col["name"], tp, nullable=col["nullable"]))
        return pa.schema(fields)

    def markdown(self) -> str:
        """Column documentation as a Markdown section."""
        lines = [f"### `{self.name}` (schema version {self.version})", "", self.description, "",
                 "| column | type | nullable | description |", "|---|---|---|---|"]
        for col in self.partitioning:
            lines.append(f"| `{col['name']}` | {col['type']} (Hive partition) | no | {col['description']} |")
        for col in self.columns:
            tp = "fixed_size_list<float32>[D]" if col["type"] == "embedding" else col["type"]
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


def all_table_schemas() -> list[TableSchema]:
    """Every table's schema, in TABLES order."""
    return [get_table_schema(name) for name in TABLES]
