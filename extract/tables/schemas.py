"""The output tables' schemas, loaded from ``schemas/<table>.json`` (the only definition).

A schema file holds ``name``, ``version``, ``description``, ``partitioning`` (Hive columns that
live in the path, not in the files) and ``columns`` (name, Arrow type string, nullable,
description). The type ``embedding`` is stored as ``list<float32>`` (Delta Lake has no
fixed-size list) whose field metadata ``extract.embedding_dim`` holds the width D, taken from the
CLIP model at write time; every write and read checks each value has exactly D floats, and
``extract.tables.catalog`` hands embeddings back as ``fixed_size_list<float32>[D]``.

Evolution rule: a new version may only add nullable columns (at the end) and field metadata.
A Delta table written under an older version is evolved in place by the next run
(``extract.tables.evolution``): ``TableSchema.diff`` says which columns and metadata it lacks,
its rows read back with nulls in the added columns. The version a table was created or last
evolved under is in its Delta table description (``table_description``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

EMBEDDING_DIM_KEY = "extract.embedding_dim"  # field metadata of an embedding column: its width D
# The top-level schemas/ folder is the one definition; a checkout reads it in place and the
# wheel ships a copy of it as extract/_schemas (pyproject: force-include).
_CHECKOUT_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_DIR = _CHECKOUT_SCHEMAS if _CHECKOUT_SCHEMAS.is_dir() else Path(__file__).resolve().parents[1] / "_schemas"
TABLES = ("videos", "frame_embeddings", "transcript_segments", "hashtags", "ocr_text", "shots", "duplicates",
          "sound_matches", "errors")

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
class SchemaDiff:
    """How a Delta table's schema differs from ours (``TableSchema.diff``)."""

    added: tuple[pa.Field, ...] = ()  # our nullable columns the table lacks (Delta types, metadata included)
    metadata: tuple[tuple[str, dict[str, str]], ...] = ()  # (column, field metadata keys it lacks)
    problems: tuple[str, ...] = ()  # differences no evolution can fix (types, dropped or foreign columns)

    @property
    def evolvable(self) -> bool:
        """True when the table only lacks what a run may add (and lacks something)."""
        return not self.problems and bool(self.added or self.metadata)

    def describe(self) -> str:
        """Every difference, for a message: problems, then what evolution would add."""
        parts = list(self.problems)
        if self.added:
            parts.append(f"missing columns {[f.name for f in self.added]}")
        if self.metadata:
            parts.append(f"columns {[name for name, _ in self.metadata]} lack field metadata "
                         f"{sorted({k for _, meta in self.metadata for k in meta})}")
        return "; ".join(parts)


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

    def diff(self, found: pa.Schema, embedding_dim: int | None = None) -> SchemaDiff:
        """How the Delta table schema ``found`` differs from this one.

        Columns of ours it lacks that are nullable, and field metadata keys its columns lack,
        are what a run may add (``SchemaDiff.added``, ``.metadata``); a lacking non-nullable
        column, an extra column, another type, a metadata value that differs or embedding
        columns of differing (or no) widths are ``problems``. The width D of added embedding
        columns is the table's, else ``embedding_dim`` (0 when neither is known).
        """
        dims = {f.name: (f.metadata or {}).get(EMBEDDING_DIM_KEY.encode()) for f in found
                if f.name in self.embedding_columns}
        widths = {v.decode() for v in dims.values() if v is not None}
        problems = []
        if len(widths) > 1:
            problems.append(f"embedding columns {sorted(dims)} have differing widths {sorted(widths)} "
                            f"in {EMBEDDING_DIM_KEY} metadata")
        elif dims and not widths:
            problems.append(f"embedding columns {sorted(dims)} lack {EMBEDDING_DIM_KEY} metadata (their width)")
        dim = int(next(iter(widths))) if len(widths) == 1 else (embedding_dim or 0)
        want = {f.name: f for f in self.delta_schema(dim)}
        got = {f.name: f for f in found}
        added = [f for n, f in want.items() if n not in got and f.nullable]
        required = [n for n, f in want.items() if n not in got and not f.nullable]
        if required:
            problems.append(f"missing columns {required}, which are not nullable (no older schema of ours lacks them)")
        extra = [n for n in got if n not in want]
        if extra:
            problems.append(f"unexpected columns {extra}")
        metadata = []
        for name, field in want.items():
            if name not in got:
                continue
            if not _same_type(got[name].type, field.type):
                problems.append(f"{name} is {got[name].type}, expected {field.type}")
                continue
            have = {k.decode(): v.decode() for k, v in (got[name].metadata or {}).items()}
            lacking = {}
            for key, value in {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}.items():
                if key not in have:
                    lacking[key] = value
                elif have[key] != value and key != EMBEDDING_DIM_KEY:  # widths: checked above and on write
                    problems.append(f"column {name} has field metadata {key}={have[key]!r}, expected {value!r}")
            if lacking and not (EMBEDDING_DIM_KEY in lacking and not widths):
                metadata.append((name, lacking))
        return SchemaDiff(tuple(added), tuple(metadata), tuple(problems))

    def schema_problem(self, found: pa.Schema) -> str | None:
        """Why a Delta table's schema ``found`` is not exactly this table's (None when it is),
        evolvable differences included (``diff``)."""
        diff = self.diff(found)
        return diff.describe() or None

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


_VERSION_NOTE = re.compile(r"\(extract schema version (\d+)\)$")


def table_description(schema: TableSchema) -> str:
    """A Delta table's description: the schema's, with the version it was written under."""
    return f"{schema.description} (extract schema version {schema.version})"


def schema_version_of(description: str | None) -> int | None:
    """The schema version a Delta table description (``table_description``) names; None: none."""
    match = _VERSION_NOTE.search((description or "").strip())
    return int(match.group(1)) if match else None


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
