"""Human-readable run summaries from a run manifest (``DST/_runs/<run_id>.json``)."""

from __future__ import annotations

from typing import Any

from extract.schemas import TABLES


def summarize(record: dict[str, Any], dst: str) -> str:
    """A short terminal summary: where the tables are, rows per table, errors, throughput."""
    counts = record.get("counts", {})
    lines = [
        f"run {record['run_id']} committed to {dst}",
        f"  manifest rows {counts.get('manifest_rows', 0)}: processed {counts.get('processed', 0)} "
        f"(ok {counts.get('ok', 0)}, errors {counts.get('errors', 0)}), skipped {counts.get('skipped', 0)}"
        + (f" {counts.get('skipped_by_reason')}" if counts.get("skipped") else ""),
        "  tables (rows written this run):",
    ]
    for table in TABLES:
        lines.append(f"    {table:<20} {record.get('tables', {}).get(table, 0):>8}   {dst.rstrip('/')}/{table}/")
    if record.get("errors_by_stage_type"):
        lines.append("  errors by stage/type: " + ", ".join(
            f"{k}={v}" for k, v in sorted(record["errors_by_stage_type"].items())))
    tp = record.get("throughput", {})
    timings = record.get("timings_s", {})
    lines.append(
        f"  wall {record.get('wall_s', 0):.1f} s; {tp.get('videos_per_s') or 0:.2f} videos/s, "
        f"{tp.get('frames_per_s') or 0:.1f} frames/s, {tp.get('audio_s_per_s') or 0:.1f} audio-s/s"
    )
    if timings:
        lines.append("  stage time (s, summed over workers): " + ", ".join(
            f"{k} {v:.1f}" for k, v in timings.items()))
    if record.get("models"):
        lines.append("  models: " + ", ".join(f"{k}={v}" for k, v in sorted(record["models"].items())))
    lines.append(f"  run manifest: {dst.rstrip('/')}/_runs/{record['run_id']}.json")
    return "\n".join(lines)
