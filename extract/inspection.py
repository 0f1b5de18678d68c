"""``extract inspect``: what an output location holds, and everything known about one video.

Two forms of the same facts: ``output_facts`` / ``video_facts`` return plain JSON-ready data
(``extract inspect --json``), and ``describe_output`` / ``describe_video`` render it for a person:
one fact per line, every line cut to ``width`` characters, dates as ISO strings, floats to a few
significant digits, binary columns as ``<jpeg 1.8 kB>`` and embeddings as
``<512 floats, norm 1.00>``.
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from datetime import date, datetime
from typing import Any

import pyarrow.compute as pc
import pyarrow.fs as pafs

from extract.config import StorageConfig
from extract.tables.catalog import RUNS_DIR, AsOf, Catalog
from extract.tables.schemas import TABLES, get_table_schema

DEFAULT_WIDTH = 100  # characters per line when the caller gives none (a pipe, a log)
MAX_ROWS_SHOWN = 50  # rows of one table shown per video; the count says how many there are
TEXT_CHARS = 200  # characters of one text value kept in the JSON form's summaries
EMBEDDING_MIN = 8  # a float list this long or longer is an embedding: shown by length and norm


def output_facts(dst: str, storage: StorageConfig | None = None, last_runs: int = 5, as_of: AsOf = None) -> dict:
    """Tables (Delta version, rows, files, partitions), the last ``last_runs`` runs (kind, start,
    duration, counts that fit the kind, report path) and the error summary, as of ``as_of``."""
    catalog = Catalog(dst, storage or StorageConfig(), as_of=as_of)
    catalog.check()
    facts: dict[str, Any] = {"output": dst, "committed_runs": len(catalog.runs), "as_of": None, "tables": {},
                             "runs": [], "errors": None}
    if not catalog.runs:
        return facts
    run = catalog.run
    facts["as_of"] = {"run_id": run["run_id"], "seq": run.get("seq"), "kind": run.get("kind", "run"),
                      "committed_at": run.get("committed_at")}
    for table in TABLES:
        files = catalog.file_actions(table)
        if files is None:
            facts["tables"][table] = None
            continue
        parts = sorted(set(files["partition.dt"].to_pylist())) if files.num_rows else []
        facts["tables"][table] = {
            "version": catalog.versions.get(table), "rows": sum(files["num_records"].to_pylist()),
            "files": files.num_rows, "bytes": sum(files["size_bytes"].to_pylist()),
            "partitions": len(parts), "first_dt": parts[0] if parts else None, "last_dt": parts[-1] if parts else None}
    reports = _report_names(catalog)
    facts["runs"] = [_run_facts(r, reports) for r in catalog.runs[-last_runs:]]
    errors = catalog.read("errors", ["stage", "error_type", "retryable"])
    if errors is not None and errors.num_rows:
        by = Counter(zip(errors["stage"].to_pylist(), errors["error_type"].to_pylist()))
        facts["errors"] = {"rows": errors.num_rows, "retryable": sum(errors["retryable"].to_pylist()),
                           "by_stage_type": [{"stage": s, "error_type": t, "rows": n} for (s, t), n in by.most_common()]}
    return facts


def _report_names(catalog: Catalog) -> set[str]:
    selector = pafs.FileSelector(f"{catalog.root}/{RUNS_DIR}", allow_not_found=True)
    return {info.base_name for info in catalog.fs.get_file_info(selector) if info.base_name.endswith(".html")}


# The counts a person wants per kind of run, in order (missing ones are left out).
RUN_COUNTS = {
    "run": ("processed", "ok", "errors", "skipped", "reused"),
    "duplicates": ("searched", "history", "duplicates"),
    "sounds": ("searched", "history", "matched", "sounds"),
    "forget": ("forgotten",),
    "maintain": (),
    "migrate": (),
}


def _run_facts(run: dict, reports: set[str]) -> dict:
    kind = run.get("kind", "run")
    counts = run.get("counts", {})
    keys = RUN_COUNTS.get(kind, tuple(counts))
    report = f"{run['run_id']}.html"
    return {"run_id": run["run_id"], "seq": run.get("seq"), "kind": kind, "status": run.get("status"),
            "started_at": run.get("started_at"), "wall_s": run.get("wall_s"),
            "counts": {k: counts[k] for k in keys if k in counts},
            "error_rate": run.get("error_rate") if kind == "run" else None,
            "report": f"{RUNS_DIR}/{report}" if report in reports else None}


def describe_output(dst: str, storage: StorageConfig | None = None, last_runs: int = 5, as_of: AsOf = None,
                    width: int = DEFAULT_WIDTH) -> str:
    """``output_facts`` for a person, each line at most ``width`` characters."""
    facts = output_facts(dst, storage, last_runs, as_of)
    if not facts["committed_runs"]:
        return fit([f"{dst}: no committed runs"], width)
    at = facts["as_of"]
    lines = [f"{dst}", f"  committed runs: {facts['committed_runs']}",
             f"  as of: run {at['run_id']} (seq {at['seq']}, {at['kind']}, committed {_when(at['committed_at'])})",
             "tables:"]
    name_w = max(len(t) for t in TABLES)
    for table, t in facts["tables"].items():
        if t is None:
            lines.append(f"  {table:<{name_w}}  (no table)")
            continue
        span = "" if not t["first_dt"] else f" {t['first_dt']}" + (
            f"..{t['last_dt']}" if t["last_dt"] != t["first_dt"] else "")
        lines.append(f"  {table:<{name_w}}  v{t['version']:<3} {t['rows']:>9,} rows {t['files']:>5} files "
                     f"{_size(t['bytes']):>8}  dt{span}" + (f" ({t['partitions']} partitions)" if t["partitions"] > 1 else ""))
    lines.append(f"recent runs (last {len(facts['runs'])}):")
    kind_w = max([len("kind")] + [len(r["kind"]) for r in facts["runs"]])
    lines.append(f"  {'seq':>4}  {'kind':<{kind_w}}  {'started':<25}  {'took':>9}  run")
    for r in facts["runs"]:
        wall = f"{r['wall_s']:.1f} s" if r["wall_s"] is not None else "-"
        lines.append(f"  {r['seq'] if r['seq'] is not None else '-':>4}  {r['kind']:<{kind_w}}  "
                     f"{_when(r['started_at']):<25}  {wall:>9}  {r['run_id']}"
                     + ("" if r["status"] == "committed" else f" ({r['status']})"))
        counts = ", ".join(f"{k} {v:,}" for k, v in r["counts"].items())
        rate = f", error rate {r['error_rate']:.1%}" if r["error_rate"] else ""
        indent = " " * (10 + kind_w)  # under the start time
        if counts or rate:
            lines.append(f"{indent}{counts}{rate}")
        if r["report"]:
            lines.append(f"{indent}report: {r['report']}")
    if facts["errors"]:
        e = facts["errors"]
        lines.append(f"errors: {e['rows']:,} rows ({e['retryable']:,} retryable)")
        lines += [f"  {x['stage']}/{x['error_type']}: {x['rows']:,}" for x in e["by_stage_type"]]
    return fit(lines, width)


def video_facts(dst: str, video_id: str, storage: StorageConfig | None = None, as_of: AsOf = None) -> dict:
    """Every committed row of one video, table by table, with values summarised (see
    ``summarize``); ``copies`` lists the videos recorded as near copies or re-uploads of it,
    ``sound_group`` the videos that share its sound (when the output has same-sound matches:
    ``sound_matches`` rows or ``videos.sound_id``), ``status`` ``ok``, ``error`` or ``absent``."""
    catalog = Catalog(dst, storage or StorageConfig(), as_of=as_of)
    tables: dict[str, Any] = {}
    for table in TABLES:
        data = catalog.read(table, filter=pc.field("video_id") == video_id)
        if data is None or data.num_rows == 0:
            continue
        rows = [{k: summarize(v) for k, v in rec.items() if k != "video_id"}
                for rec in data.slice(0, MAX_ROWS_SHOWN).to_pylist()]
        tables[table] = {"rows": data.num_rows, "shown": rows}
    copies = []
    if "duplicates" in TABLES:
        found = catalog.read("duplicates", ["video_id", "kind", "match_frames", "clip_cosine"],
                             filter=pc.field("duplicate_of") == video_id)
        if found is not None:
            copies = sorted(({k: summarize(v) for k, v in rec.items()} for rec in found.to_pylist()),
                            key=lambda c: c["video_id"])
    status = "ok" if "videos" in tables else "error" if "errors" in tables else "absent"
    return {"video_id": video_id, "output": dst, "found": bool(tables), "status": status, "tables": tables,
            "copies": copies, "sound_group": _sound_group(catalog, video_id, tables)}


def _sound_group(catalog: Catalog, video_id: str, tables: dict[str, Any]) -> dict | None:
    """The other videos that share ``video_id``'s sound: by its ``sound_matches`` rows' ``sound_id``
    or its ``videos.sound_id``; None when the output records no sounds or the video has none."""
    sound_ids = {row.get("sound_id") for row in tables.get("sound_matches", {}).get("shown", [])}
    sound_ids |= {row.get("sound_id") for row in tables.get("videos", {}).get("shown", [])}
    sound_ids.discard(None)
    if not sound_ids:
        return None
    ids = sorted(sound_ids)
    others: dict[str, dict] = {}
    for table in ("sound_matches", "videos"):
        if table not in TABLES or "sound_id" not in get_table_schema(table).column_names:
            continue
        columns = [c for c in ("video_id", "sound_id", "offset_s", "matched_s", "score")
                   if c in get_table_schema(table).column_names]
        found = catalog.read(table, columns, filter=pc.field("sound_id").isin(ids) & (pc.field("video_id") != video_id))
        for rec in [] if found is None else found.to_pylist():
            others.setdefault(rec["video_id"], {}).update({k: summarize(v) for k, v in rec.items() if v is not None})
    return {"sound_ids": ids, "videos": sorted(others.values(), key=lambda r: r["video_id"])}


def describe_video(dst: str, video_id: str, storage: StorageConfig | None = None, as_of: AsOf = None,
                   width: int = DEFAULT_WIDTH) -> str:
    """``video_facts`` for a person: its status (and error), the ``videos`` (or ``errors``) row one
    column per line, the per-frame, per-segment and per-line tables one row per line, then the
    video's copies and its sound group."""
    facts = video_facts(dst, video_id, storage, as_of)
    lines = [f"video {video_id!r} in {dst}"]
    if not facts["found"]:
        lines.append("  no committed rows (never processed, skipped, or forgotten)")
    elif facts["status"] == "error":
        err = facts["tables"]["errors"]["shown"][0]
        lines.append(f"  status: error at {err.get('stage')}: {err.get('error_type')}"
                     f"{' (retryable)' if err.get('retryable') else ''}: {_text(err.get('message'))}")
    else:
        lines.append("  status: ok")
    for table, t in facts["tables"].items():
        more = f" (first {len(t['shown'])} shown)" if t["rows"] > len(t["shown"]) else ""
        lines.append(f"{table}: {t['rows']} row{'s' if t['rows'] != 1 else ''}{more}")
        if table in ("videos", "errors") and t["rows"] == 1:
            row = t["shown"][0]
            key_w = max(len(k) for k in row)
            lines += [f"  {k:<{key_w}}  {_text(v)}" for k, v in row.items() if v is not None]
        else:  # a line per row; values every row shares (run_id, dt, ...) said once
            rows = t["shown"]
            same = {k for k in rows[0] if len(rows) > 1 and all(r.get(k) == rows[0][k] for r in rows)}
            if same:
                lines.append("  every row: " + "  ".join(f"{k}={_text(rows[0][k])}" for k in rows[0]
                                                       if k in same and rows[0][k] is not None))
            lines += ["  " + "  ".join(f"{k}={_text(v)}" for k, v in row.items() if v is not None and k not in same)
                      for row in rows]
    if facts["copies"]:
        lines.append(f"copies of it (later near copies and re-uploads): {len(facts['copies'])}")
        lines += [f"  {c['video_id']}  {c['kind']}  frames {_text(c['match_frames'])}  "
                  f"clip cosine {_text(c['clip_cosine'])}" for c in facts["copies"]]
    group = facts["sound_group"]
    if group is not None:
        lines.append(f"sound group {', '.join(map(str, group['sound_ids']))}: {len(group['videos'])} other "
                     f"video{'s' if len(group['videos']) != 1 else ''}")
        said = ("video_id", "sound_id") if len(group["sound_ids"]) == 1 else ("video_id",)
        lines += ["  " + "  ".join([v["video_id"]] + [f"{k}={_text(x)}" for k, x in v.items() if k not in said])
                  for v in group["videos"]]
    return fit(lines, width)


def summarize(value: Any) -> Any:
    """A JSON-ready summary of one cell: embeddings as ``<D floats, norm N>``, bytes as
    ``<jpeg 1.8 kB>``, dates as ISO strings, floats to 4 significant digits, long text cut."""
    if isinstance(value, (bytes, bytearray)):
        kind = "jpeg" if value[:3] == b"\xff\xd8\xff" else "png" if value[:8] == b"\x89PNG\r\n\x1a\n" else "bytes"
        return f"<{kind} {_size(len(value))}>"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.4g}")
    if isinstance(value, list):
        if len(value) >= EMBEDDING_MIN and all(isinstance(x, float) for x in value[:EMBEDDING_MIN]):
            norm = math.sqrt(sum(x * x for x in value if x is not None))
            return f"<{len(value)} floats, norm {norm:.2f}>"
        return [summarize(v) for v in value]
    if isinstance(value, tuple):
        return [summarize(v) for v in value]
    if isinstance(value, dict):
        return {k: summarize(v) for k, v in value.items()}
    if isinstance(value, str) and len(value) > TEXT_CHARS:
        return value[: TEXT_CHARS - 3] + "..."
    return value


def to_json_safe(value: Any) -> Any:
    """``summarize``d facts with anything JSON cannot hold (stray bytes) made text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_safe(v) for v in value]
    return value


def _text(value: Any) -> str:
    """One summarised value as a person reads it (no Python reprs, no quotes on plain text)."""
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):  # e.g. label scores: name=score, ...
            return ", ".join(" ".join(_text(x) for x in v.values()) for v in value)
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, str):
        return " ".join(value.split()) if value else '""'
    return str(value)


def _when(iso: str | None) -> str:
    """An ISO timestamp to the second, in its own zone (UTC in our records)."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).isoformat(timespec="seconds")
    except ValueError:
        return iso


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def fit(lines: list[str], width: int) -> str:
    """The lines joined, each cut to ``width`` characters (an ellipsis marks a cut)."""
    width = max(width, 20)
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in lines)
