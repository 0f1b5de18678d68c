"""One committed run of any kind on an output: what every table-writing command shares.

``RunSession.open`` checks that DST holds our Delta tables, evolves tables of an older schema
version, rolls forward runs that crashed between their table commits, and creates missing
tables; the command then stages its rows (``write``) and publishes them as one logical commit
(``commit``, ``commit_delete``) or records the versions its own Delta operations produced
(``publish``). Each of these writes the run record ``DST/_runs/<run_id>.json``: the fields
every run has (``record``: id, kind, status, times, version, output) plus the command's own.
A processing run (``run_job``) also plans through its session (``plan_manifest``: the committed outcomes
of the manifest's ids, what to process, reuse candidates) and commits with ``commit_processed``,
which replaces the committed rows of the videos it processed again and counts them.
Leaving a ``with RunSession.open(...)`` block by an exception aborts: the staged rows are
deleted and nothing is published. ``run_job``, ``find_duplicates``, ``find_sounds``, ``forget``, ``maintain``
and ``migrate`` each open one; the commit protocol itself is ``extract.tables.writer``'s.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any, Mapping

import pyarrow as pa

from extract import __version__
from extract.tables.catalog import RUNS_DIR, Catalog
from extract.tables.evolution import evolve_tables
from extract.tables.planning import RunPlan, attach_candidates, plan_run
from extract.tables.schemas import TABLES, embedding_dim_of
from extract.tables.writer import (RunWriter, commit_delete, commit_metadata, commit_run, ensure_tables,
                                   reprocessing_predicate, roll_forward, write_json)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run id: ``YYYYMMDDTHHMMSSZ-<6 hex>``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def table_embedding_dim(catalog: Catalog) -> int:
    """The embedding width D of DST's committed ``videos`` table."""
    return embedding_dim_of(catalog.open_table("videos").schema().to_arrow())


class RunSession:
    """A run being written to ``catalog``'s output; build with ``RunSession.open``."""

    def __init__(self, catalog: Catalog, run_id: str, kind: str, started: datetime, clock: float,
                 embedding_dim: int | None = None, evolved: list[dict[str, Any]] | None = None,
                 rolled_forward: list[str] | None = None, writer: RunWriter | None = None):
        self.catalog = catalog
        self.run_id = run_id
        self.kind = kind
        self.started = started
        self.clock = clock  # time.perf_counter() at the start: wall_s counts from it
        self.embedding_dim = embedding_dim
        self.evolved = evolved or []  # schema_evolution records of the tables evolved at open
        self.rolled_forward = rolled_forward or []  # run ids of pending commits finished at open
        self.writer = writer
        self.publishing = False  # from the first step of the commit on, a failure is rolled forward, not aborted
        self.seq = writer.seq if writer is not None else catalog.next_seq
        self.outcomes: dict[str, dict[str, Any]] = {}  # committed outcome per manifest id (``plan_manifest``)

    @classmethod
    def open(cls, catalog: Catalog, kind: str, run_id: str | None = None, *, embedding_dim: int | None = None,
             writes: bool = False, max_rows_per_file: int = 200_000, started: datetime | None = None,
             clock: float | None = None, legacy_layout: bool = False) -> "RunSession":
        """Check, evolve, roll forward and ensure the tables of ``catalog``'s output.

        ``writes``: the run stages rows (``write``/``commit``): its tables are evolved to and
        created with ``embedding_dim`` (default: the committed ``videos`` table's). Otherwise
        (``forget``, ``maintain``) only pending commits are rolled forward. ``legacy_layout``
        (``migrate``): DST is the old plain-Parquet layout; nothing is checked or prepared.
        ``started``/``clock`` (``datetime``, ``time.perf_counter()``) date a run that began
        before its session (reading its manifest). Raises ``OutputLayoutError`` for an output
        that is not ours, before anything is changed.
        """
        started = started or datetime.now(timezone.utc)
        clock = time.perf_counter() if clock is None else clock
        run_id = run_id or new_run_id(started)
        if legacy_layout:
            return cls(catalog, run_id, kind, started, clock)
        catalog.check()
        if not writes:
            return cls(catalog, run_id, kind, started, clock, rolled_forward=roll_forward(catalog))
        dim = table_embedding_dim(catalog) if embedding_dim is None else embedding_dim
        # Before rolling forward: a pending commit staged by this version writes our columns.
        evolved = evolve_tables(catalog, dim, run_id)
        rolled = roll_forward(catalog)
        writer = RunWriter(catalog, run_id, dim, ensure_tables(catalog, dim), catalog.next_seq, max_rows_per_file)
        return cls(catalog, run_id, kind, started, clock, dim, evolved, rolled, writer)

    def __enter__(self) -> "RunSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Once publishing began, a pending commit may hold staged files the next run rolls
        # forward: only the commit itself may delete them.
        if exc_type is not None and not self.publishing:
            self.abort()

    # ------------------------------------------------------------------ writing

    def plan_manifest(self, rows: list[dict[str, Any]], feature_hash: str, *, overwrite: bool = False,
                      retry_errors: bool = False, reuse_days: int = 0) -> RunPlan:
        """Plan a processing run over the manifest ``rows``: read their ids' committed outcomes
        (``Catalog.outcomes``, kept for ``commit_processed``), decide what to process
        (``extract.tables.planning.plan_run``) and attach reuse candidates to those rows
        (``attach_candidates``; none with ``overwrite``, which asks for the features to be
        computed again)."""
        self.outcomes = self.catalog.outcomes(rows)
        plan = plan_run(rows, self.outcomes, feature_hash, overwrite, retry_errors)
        if not overwrite:
            plan.reusable = attach_candidates(self.catalog, plan.todo, self.outcomes, feature_hash, reuse_days)
        return plan

    def write(self, tables: Mapping[tuple[str, str], pa.Table]) -> None:
        """Stage ``{(table, dt): Arrow table}`` (``extract.tables.records.rows_to_tables``)."""
        self.writer.write(tables)

    def abort(self) -> None:
        """Delete the staged rows: the run publishes nothing."""
        if self.writer is not None:
            self.writer.abort()

    # ------------------------------------------------------------------ the record

    def record(self, **fields: Any) -> dict[str, Any]:
        """The run record: the fields every run has, then ``fields`` (the command's own; a
        ``wall_s`` there is the one kept: a processing run's throughput is over its own).
        ``seq``, ``delta_versions`` and ``committed_at`` are added when it is published."""
        return {"run_id": self.run_id, "kind": self.kind, "status": "committed",
                "started_at": self.started.isoformat(), "ended_at": datetime.now(timezone.utc).isoformat(),
                "wall_s": round(time.perf_counter() - self.clock, 3), "pipeline_version": __version__,
                "output": self.catalog.dst, **fields}

    # ------------------------------------------------------------------ publishing

    def commit(self, record: dict[str, Any], predicate: str | Mapping[str, str] | None = None,
               lineage: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Commit the staged rows to every table (``extract.tables.writer.commit_run``: None
        appends, a predicate replaces the rows it matches) with ``record`` (``self.record(...)``);
        ``lineage`` (``config_hash``, ``feature_hash``, ``models``) goes into each table
        commit's metadata. Returns the record as written."""
        self.publishing = True
        return commit_run(self.writer, record, predicate, commit_metadata(**lineage) if lineage else None)

    def commit_processed(self, touched: set[str], fields: Mapping[str, Any],
                         lineage: Mapping[str, Any]) -> dict[str, Any]:
        """Commit a processing run that wrote the ``touched`` ids (``plan_manifest``'s outcomes tell which
        were committed before): each table's commit replaces their committed rows
        (``reprocessing_predicate``; an append when none has any), and the record (``record``
        with ``fields``) counts them as ``counts.replaced``. ``lineage`` as for ``commit``."""
        predicate = reprocessing_predicate(self.outcomes, touched, self.writer.dts)
        record = self.record(**fields)
        record["counts"]["replaced"] = sum(1 for vid in touched if vid in self.outcomes
                                           and self.outcomes[vid]["status"] != "forgotten")
        return self.commit(record, predicate, lineage)

    def commit_delete(self, record: dict[str, Any], predicates: Mapping[str, str]) -> dict[str, Any]:
        """Delete the rows matching each table's predicate, one logical commit
        (``extract.tables.writer.commit_delete``); returns the record as written."""
        self.publishing = True
        return commit_delete(self.catalog, self.run_id, self.seq, predicates, current_versions(self.catalog), record)

    def publish(self, record: dict[str, Any], versions: Mapping[str, int]) -> dict[str, Any]:
        """Write ``record`` pinning ``versions`` (``{table: Delta version}``) that the command's
        own Delta operations produced (``maintain``, ``migrate``); returns it."""
        record = dict(record, seq=self.seq, delta_versions=dict(versions),
                      committed_at=datetime.now(timezone.utc).isoformat())
        write_json(self.catalog.fs, f"{self.catalog.root}/{RUNS_DIR}/{self.run_id}.json", record)
        self.catalog.reload()
        return record


def current_versions(catalog: Catalog) -> dict[str, int]:
    """Each table's latest Delta version (-1 for a table that does not exist)."""
    versions = {}
    for table in TABLES:
        delta = catalog.open_table(table)
        versions[table] = delta.version() if delta is not None else -1
    return versions
