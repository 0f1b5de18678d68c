"""``extract maintain``: compact small files, checkpoint and vacuum the Delta tables.

One daily run writes a few small files per partition; ``maintain`` rewrites each partition's
small files into larger ones (Delta OPTIMIZE compaction: no data change), writes a checkpoint
of each table's log (opening a table then reads one Parquet file instead of replaying every
commit), and vacuums: deletes files that no version younger than ``storage.retention_hours``
references (time travel reaches back that far) and staging folders of runs abandoned that long
ago. It then records a ``maintain`` run under ``_runs/`` pinning the compacted versions, so
``Catalog`` never pins versions whose files a later vacuum deletes. Run it when no run writes
to DST (the daily job runs it after committing, with ``schedule.maintain: true``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow.fs as pafs

from extract.tables.catalog import STAGING_DIR, Catalog
from extract.tables.schemas import TABLES
from extract.tables.session import RunSession
from extract.tables.writer import delete_dir, writer_properties

# Compacted file size: what the engines that read these tables plan work by. Spark splits input
# at 128 MiB (spark.sql.files.maxPartitionBytes), Ray Data aims at 128 MiB blocks
# (DataContext.target_max_block_size), Daft 0.7.26 reads each file as one task (it does not
# merge small files by default); delta-rs's own default is 100 MB. A day's partition compacts to
# about its size / 128 MiB files, each one read task for those engines; measurements in
# bench/RESULTS.md ("Reading a training set").
COMPACT_TARGET_BYTES = 128 * 1024 * 1024


def maintain(catalog: Catalog, retention_hours: float, run_id: str | None = None) -> dict[str, Any]:
    """Compact, checkpoint and vacuum every table; returns the ``maintain`` run record
    (per table: files compacted and added, versions, files vacuumed; staging folders deleted)."""
    session = RunSession.open(catalog, "maintain", run_id)
    tables: dict[str, dict[str, Any]] = {}
    versions: dict[str, int] = {}
    for table in TABLES:
        delta = catalog.open_table(table)
        if delta is None:
            continue
        before = delta.version()
        metrics = delta.optimize.compact(target_size=COMPACT_TARGET_BYTES, writer_properties=writer_properties())
        delta = catalog.open_table(table)
        delta.create_checkpoint()
        vacuumed = delta.vacuum(retention_hours=int(retention_hours), dry_run=False,
                                enforce_retention_duration=False)
        delta = catalog.open_table(table)
        versions[table] = delta.version()
        tables[table] = {"version_before": before, "version": versions[table],
                         "files_removed": metrics.get("numFilesRemoved", 0),
                         "files_added": metrics.get("numFilesAdded", 0),
                         "partitions_optimized": metrics.get("partitionsOptimized", 0),
                         "files_vacuumed": len(vacuumed)}
    cutoff = datetime.now(timezone.utc) - timedelta(hours=retention_hours)
    stale = []
    for info in catalog.fs.get_file_info(pafs.FileSelector(f"{catalog.root}/{STAGING_DIR}", allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.mtime is not None and info.mtime.replace(
                tzinfo=info.mtime.tzinfo or timezone.utc) < cutoff:
            delete_dir(catalog.fs, info.path)
            stale.append(info.path.rsplit("/", 1)[-1])
    record = session.record(retention_hours=retention_hours, maintenance=tables, staging_deleted=stale)
    if not versions:  # no tables: nothing to pin
        catalog.reload()
        return dict(record, seq=session.seq, delta_versions=versions)
    return session.publish(record, versions)


def describe_maintenance(record: dict[str, Any]) -> str:
    """What ``maintain`` did, one line per table."""
    lines = [f"maintained {len(record['maintenance'])} tables (run {record['run_id']}, "
             f"retention {record['retention_hours']:g} h, {record['wall_s']:.1f} s)"]
    for table, m in record["maintenance"].items():
        lines.append(f"  {table:<20} compacted {m['files_removed']} files into {m['files_added']} "
                     f"({m['partitions_optimized']} partitions), vacuumed {m['files_vacuumed']} files, "
                     f"version {m['version_before']} -> {m['version']}")
    if record["staging_deleted"]:
        lines.append(f"  abandoned staging deleted: {', '.join(record['staging_deleted'])}")
    return "\n".join(lines)
