"""The committed state of an output location, as recorded by its run manifests.

``DST/_runs/<run_id>.json`` files are the source of truth: a table's *live files* are the files
added by committed runs minus those a later run removed (superseded by ``--overwrite``,
re-processing or ``extract forget``). Readers that want exactly-once semantics read through
``Catalog.dataset``/``Catalog.read``; any Parquet file under a table folder that is not live is
an uncommitted leftover of a crashed run and is deleted by the next run's ``cleanup``.

Only one run may write to a DST at a time (a scheduler's job concurrency of 1).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from extract.config import StorageConfig
from extract.tables.schemas import TABLES
from extract.tables.storage import filesystem_for

RUNS_DIR = "_runs"
STAGING_DIR = "_staging"
PARTITIONING = ds.partitioning(pa.schema([("dt", pa.string())]), flavor="hive")


@dataclass
class Catalog:
    """Committed runs and live files of one output location ``dst``."""

    dst: str
    storage: StorageConfig = field(default_factory=StorageConfig)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fs, self.root = filesystem_for(self.dst, self.storage)
        self.reload()

    def reload(self) -> None:
        """Re-read ``_runs/*.json`` in commit order."""
        selector = pafs.FileSelector(f"{self.root}/{RUNS_DIR}", allow_not_found=True)
        runs = []
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.path.endswith(".json"):
                with self.fs.open_input_stream(info.path) as fh:
                    runs.append(json.loads(fh.read()))
        self.runs = sorted(runs, key=lambda r: (r.get("committed_at", ""), r["run_id"]))

    def live_files(self, table: str) -> list[str]:
        """Paths (relative to ``dst``) of the committed files of ``table``."""
        live: dict[str, None] = {}
        for run in self.runs:
            for path in run.get("files_removed", ()):
                live.pop(path, None)
            for path in run.get("files_added", ()):
                if path.startswith(f"{table}/"):
                    live[path] = None
        return list(live)

    def all_live_files(self) -> set[str]:
        return {p for t in TABLES for p in self.live_files(t)}

    def abs(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def dataset(self, table: str) -> ds.Dataset | None:
        """A pyarrow dataset over the live files (``dt`` from the Hive path); None when empty."""
        files = self.live_files(table)
        if not files:
            return None
        return ds.dataset([self.abs(p) for p in files], filesystem=self.fs, format="parquet",
                          partitioning=PARTITIONING, partition_base_dir=f"{self.root}/{table}")

    def read(self, table: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table | None:
        """Committed rows of ``table`` (all live files, ``dt`` included); None when empty."""
        dataset = self.dataset(table)
        return None if dataset is None else dataset.to_table(columns=columns, filter=filter)

    def outcomes(self) -> dict[str, dict[str, Any]]:
        """Latest committed outcome per video_id: ``{"status": "ok"|"error"|"forgotten", ...}``."""
        out: dict[str, dict[str, Any]] = {}
        videos = self.read("videos", ["video_id", "feature_hash", "content_sha256", "uri"])
        if videos is not None:
            for rec in videos.to_pylist():
                out[rec["video_id"]] = {"status": "ok", **rec}
        errors = self.read("errors", ["video_id", "retryable", "stage", "error_type", "uri"])
        if errors is not None:
            for rec in errors.to_pylist():
                out.setdefault(rec["video_id"], {"status": "error", **rec})
        for run in self.runs:
            for rec in run.get("forgotten", ()):
                # A forgotten id that has live rows again was re-processed after the forget.
                out.setdefault(rec["video_id"], {"status": "forgotten", **rec})
        return out

    def files_with_ids(self, table: str, ids: Iterable[str]) -> list[str]:
        """Live files of ``table`` holding any of ``ids`` (reads only the video_id column)."""
        wanted = pa.array(sorted(set(ids)), pa.string())
        hits = []
        for rel in self.live_files(table):
            col = ds.dataset(self.abs(rel), filesystem=self.fs, format="parquet").to_table(columns=["video_id"])
            if pc.any(pc.is_in(col["video_id"], value_set=wanted)).as_py():
                hits.append(rel)
        return hits

    def cleanup(self, keep_run: str | None = None) -> list[str]:
        """Delete uncommitted leftovers: staging of other runs and non-live table files."""
        removed = []
        staging = f"{self.root}/{STAGING_DIR}"
        for info in self.fs.get_file_info(pafs.FileSelector(staging, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and posixpath.basename(info.path) != keep_run:
                self.fs.delete_dir(info.path)
                removed.append(info.path)
        live = self.all_live_files()
        for table in TABLES:
            selector = pafs.FileSelector(f"{self.root}/{table}", recursive=True, allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if info.type != pafs.FileType.File:
                    continue
                rel = info.path[len(self.root) + 1:]
                if rel.endswith(".parquet") and rel not in live:
                    self.fs.delete_file(info.path)
                    removed.append(rel)
        return removed
