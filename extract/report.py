"""Human-readable run summaries: a terminal summary and a self-contained HTML report per run.

``summarize(outcome, dst)`` is the few lines ``extract run`` prints. ``write_run_report(dst,
run_id)`` writes ``DST/_runs/<run_id>.html`` next to the run record, for a run of any kind
(``run``, ``duplicates``, ``maintain``, ``forget``, ``migrate``, and any later kind);
``write_report`` does so after a command's commit and prints where (``extract.runner``). Every page
has the same generic part, built from the run's own record and its own Delta commits only:

- the outcome, coloured by health (an error rate near ``limits.max_error_rate``, at
  ``extract.pipeline.outcome.NEAR_LIMIT`` of it or more, is a warning, over it a failure), the
  record's facts and counts;
- the commits: per table the Delta operations this run made and their row and file counts, read
  from the tables' logs (``_delta_log/<version>.json``);
- timings: the record's per-stage seconds as a chart (one unit, seconds, on its axis), wall time
  and throughput with its unit per line;
- the rest of the record (its dicts as tables, its lists as lists), and the config when it has one.

Every number shown there carries its source: ``data-from`` (``record`` or ``commit``) and
``data-path`` (a JSON list of keys), so a test can check each against the record and the logs.
A kind adds its own sections in ``KIND_SECTIONS``: a processing ``run`` its errors with examples,
the near copies found for its videos (or that the search has not run on them yet) and a contact
sheet of a varied sample of its videos (thumbnails at their ``pts_s``, a strip at the shots'
cut times, transcript, on-screen text and labels with their confidence where it is low);
``duplicates`` its pairs side by side with both videos' facts and the deciding scores, and the
searched videos that matched nothing.

The page is one file with no external assets: CSS inline, images as base64 PNG ``data:`` URIs,
no scripts, and a Content-Security-Policy that forbids loading anything else. Everything that
came from input or from decoding (ids, uris, captions, hashtags, transcripts, error messages)
is escaped with ``html.escape``; captions are untrusted. Long text wraps (``overflow-wrap``)
(in table cells only where a word is longer than the line) and wide tables scroll in their own
box, so the page never scrolls sideways.

Pictures are the thumbnails the decode stage made inside its confined decode children
(``output.thumbnails`` JPEGs per video, ``frame_embeddings.thumbnail_jpeg``), read from the
committed tables: the report parses no upload (it imports no media reader, ``tests/test_layers.py``
checks), and ``forget``, which deletes a video's rows, deletes its pictures with them. A video
without stored thumbnails (a run with ``output.thumbnails: 0``) gets a line saying so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from extract.config import Config, StorageConfig
from extract.pipeline.outcome import EXIT_ERROR_RATE, Outcome, error_rate_health
from extract.tables.catalog import DELTA_LOG, RUNS_DIR, RUN_ID_KEY, Catalog
from extract.tables.schemas import TABLES
from extract.io.storage import join_uri

MAX_DUPLICATES = 20  # duplicate pairs shown
MAX_LISTED = 100  # ids listed (videos not on the contact sheet, searched videos without a copy)
SNIPPET_CHARS = 240  # transcript characters shown per video
CAPTION_CHARS = 200  # caption characters shown per video
OCR_LINES = 6  # on-screen text lines shown per video
ERROR_EXAMPLES = 3  # example messages per (stage, error type)
MESSAGE_CHARS = 300  # characters shown per example error message
CHART_DPI = 96
LOW_OCR_SCORE = 0.8  # an OCR line recognised with a lower score is shown with its score
LOW_LABEL_FACTOR = 2.0  # a top label scoring under this many times chance (1 / labels) is marked low
COUNT_ORDER = ("manifest_rows", "processed", "ok", "errors", "skipped", "invalid_upload_ts")
THROUGHPUT_UNITS = {"videos_per_s": "videos / s", "frames_per_s": "frames / s", "audio_s_per_s": "audio s / s"}
# Record fields the generic part shows in a place of their own (the rest go to "the record").
SHOWN_APART = ("run_id", "kind", "status", "counts", "config", "delta_versions", "timings_s", "cpu_s",
               "throughput", "error_rate", "errors_by_stage_type", "wall_s")


def summarize(outcome: Outcome, dst: str) -> str:
    """A short terminal summary of a committed processing run (``run_outcome``): where the tables
    are, rows per table, errors, throughput, and last its error rate against its limit
    (``error_rate_line``)."""
    record = outcome.record
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
    lines.append(error_rate_line(outcome))
    return "\n".join(lines)


def error_rate_line(outcome: Outcome) -> str:
    """The summary line of a committed run's error rate against its limit (``outcome.health``),
    saying plainly when it is near or over it."""
    rate, counts = outcome.record.get("error_rate", 0.0), outcome.record.get("counts", {})
    line = (f"  error rate {rate:.1%}: {counts.get('errors', 0)} of {counts.get('processed', 0)} processed videos "
            f"(limits.max_error_rate {outcome.max_error_rate:.0%})")
    if outcome.health == "over":
        return f"{line}: OVER the limit, exit code {EXIT_ERROR_RATE}"
    return f"{line}: near the limit" if outcome.health == "near" else line


def error_health(record: Mapping[str, Any]) -> tuple[str, float] | None:
    """How the run's error rate stands against its ``limits.max_error_rate``: ``(health,
    limit)``, health ``ok``, ``near`` or ``over`` (``extract.pipeline.outcome.error_rate_health``);
    None for a record without an error rate."""
    if record.get("error_rate") is None:
        return None
    limit = run_config(record).limits.max_error_rate
    return error_rate_health(float(record["error_rate"]), limit), limit


HEALTH_CLASS = {"ok": "ok", "near": "warn", "over": "bad"}  # the outcome's colour
HEALTH_WORDS = {"ok": "within", "near": "near", "over": "over"}


def run_config(record: Mapping[str, Any]) -> Config:
    """The run's config (from its record); defaults for a record without one or from another
    pipeline version."""
    from extract.config import ConfigError, config_from_dict

    try:
        return config_from_dict(record.get("config") or {})
    except ConfigError:
        return Config()


# --------------------------------------------------------------------------- the HTML report


def write_run_report(dst: str, run_id: str, storage: StorageConfig | None = None, max_videos: int = 6) -> str:
    """Write ``DST/_runs/<run_id>.html`` for a committed run of any kind (its rows still in the
    latest tables: forgotten or re-processed videos are not shown); returns its URI.

    ``max_videos``: videos on a processing run's contact sheet (a varied sample, the rest listed).
    Raises ``ValueError`` when ``run_id`` has no committed record under ``dst``.
    """
    storage = storage or StorageConfig()
    catalog = Catalog(dst, storage)
    page = build_run_report(catalog, run_id, max_videos)
    with catalog.fs.open_output_stream(f"{catalog.root}/{RUNS_DIR}/{run_id}.html") as fh:
        fh.write(page.encode("utf-8"))
    return join_uri(dst, RUNS_DIR, f"{run_id}.html")


def write_report(name: str, dst: str, record: dict[str, Any], storage: StorageConfig) -> None:
    """Write the committed run's HTML report (``write_run_report``) and print where; a failure
    is printed to standard error after ``name``, never raised (the run is committed and stays so)."""
    try:
        print(f"  run report: {write_run_report(dst, record['run_id'], storage)}", flush=True)
    except (OSError, ValueError) as exc:
        print(f"{name}: run committed, but the report could not be written: {exc}", file=sys.stderr)


def rewrite_reports(dst: str, run_ids: Iterable[str], storage: StorageConfig | None = None) -> list[str]:
    """Write again the existing reports ``DST/_runs/<run_id>.html`` of ``run_ids`` from the
    latest tables (after ``forget``: without the forgotten videos); returns their URIs."""
    import pyarrow.fs as pafs

    storage = storage or StorageConfig()
    catalog = Catalog(dst, storage)
    out = []
    for run_id in run_ids:
        if catalog.fs.get_file_info(f"{catalog.root}/{RUNS_DIR}/{run_id}.html").type == pafs.FileType.File:
            out.append(write_run_report(dst, run_id, storage))
    return out


Section = Callable[[Catalog, dict[str, Any], int], str]


def build_run_report(catalog: Catalog, run_id: str, max_videos: int = 6) -> str:
    """The report page of one committed run of ``catalog`` as an HTML string: the generic part
    (summary, commits, timings, the record) and its kind's ``KIND_SECTIONS``."""
    record = next((r for r in catalog.runs if r.get("run_id") == run_id and "delta_versions" in r), None)
    if record is None:
        raise ValueError(f"run {run_id!r} has no committed manifest under {catalog.dst}/{RUNS_DIR}/; "
                         f"committed runs: {', '.join(r['run_id'] for r in catalog.runs[-5:]) or 'none'}")
    kind = record.get("kind", "run")
    sections = [_summary_section(record), _commits_section(run_commits(catalog, record)), _timings_section(record)]
    sections += [section(catalog, record, max_videos) for section in KIND_SECTIONS.get(kind, ())]
    sections.append(_record_section(record))
    title = f"extract {kind} {run_id}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>" + "".join(sections) + "</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px;overflow-wrap:anywhere}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}h3{font-size:1em}"
    ".scroll{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;"
    "text-align:left;vertical-align:top;font-size:.9em;overflow-wrap:break-word}th{background:#f4f4f4}"
    ".num{text-align:right;font-variant-numeric:tabular-nums;overflow-wrap:normal}"
    ".ok{color:#17692a;font-weight:bold}.warn{color:#8a5300;font-weight:bold}.bad{color:#a4161a;font-weight:bold}"
    ".low{color:#8a5300}"
    ".video{border:1px solid #ddd;padding:.6em;margin:.8em 0;overflow-wrap:anywhere}"
    ".frames{display:flex;gap:6px;flex-wrap:wrap}.tables{display:flex;gap:1.5em;flex-wrap:wrap}"
    ".pair{display:flex;gap:1.5em;flex-wrap:wrap}.pair>div{flex:1 1 280px;min-width:0}"
    "img{max-width:100%;height:auto}"
    "figure{margin:0;text-align:center;font-size:.8em;color:#555}.muted{color:#777}"
    "code,pre{font-size:.85em;white-space:pre-wrap;overflow-wrap:anywhere}"
)


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True)
class Num:
    """A number shown with its source: ``source`` ``record`` (the run record's number at
    ``path``, the keys down to it), ``length`` (the length of the record's list at ``path``) or
    ``commit`` (summed over this run's Delta commits of a table: ``path`` ``[table, metric]``);
    ``percent`` shows a share (0.25) as ``25.0 %``."""

    source: str
    path: tuple[Any, ...]
    value: Any
    percent: bool = False

    def text(self) -> str:
        v = self.value
        if v is None:
            return "-"
        if self.percent:
            return f"{100 * v:.1f} %"
        if isinstance(v, bool) or isinstance(v, int):
            return str(v)
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"

    def attrs(self) -> str:
        return f" data-from=\"{self.source}\" data-path=\"{_e(json.dumps(list(self.path)))}\""

    def cell(self) -> str:
        return f"<td class=\"num\"{self.attrs()}>{_e(self.text())}</td>"

    def span(self) -> str:
        return f"<span{self.attrs()}>{_e(self.text())}</span>"


def _rec(record: Mapping[str, Any], *path: Any, percent: bool = False) -> Num:
    """The record's number at ``path`` (None where absent)."""
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return Num("record", path, value, percent)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table in a box that scrolls sideways when it is wider than the page; every cell
    is escaped but ``Markup``, a ``Num`` cell carries its source."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(c.cell() if isinstance(c, Num) else f"<td>{c}</td>" if isinstance(c, Markup)
                         else f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for row in rows)
    return f"<div class=\"scroll\"><table><tr>{head}</tr>{body}</table></div>"


def _clip_text(text: str | None, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis when cut."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut + " …"


def _committed_rows(catalog: Catalog, table: str, run_id: str | None, columns: list[str],
                    video_ids: Sequence[str] | None = None, where: Any = None) -> list[dict[str, Any]]:
    """Live rows of ``table`` written by ``run_id`` (None: by any run), optionally only those of
    ``video_ids`` and matching the dataset expression ``where``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if run_id is not None:
        where = pc.field("run_id") == run_id if where is None else where & (pc.field("run_id") == run_id)
    if video_ids is not None:
        by_id = pc.field("video_id").isin(pa.array(list(video_ids), pa.string()))
        where = by_id if where is None else where & by_id
    data = catalog.read(table, columns=columns, filter=where)
    return [] if data is None else data.to_pylist()


def _thumbnails(catalog: Catalog, video_ids: Sequence[str], run_id: str | None = None
                ) -> dict[str, list[tuple[float, bytes]]]:
    """The stored thumbnails (``frame_embeddings.thumbnail_jpeg``) of ``video_ids`` as
    ``{video_id: [(pts_s, JPEG file), ...]}`` in frame order; only rows of ``run_id`` when given."""
    import pyarrow.compute as pc

    if not video_ids:
        return {}
    rows = _committed_rows(catalog, "frame_embeddings", run_id, ["video_id", "frame_index", "pts_s", "thumbnail_jpeg"],
                           video_ids, where=pc.field("thumbnail_jpeg").is_valid())
    found: dict[str, list[tuple[int, float, bytes]]] = defaultdict(list)
    for row in rows:
        found[row["video_id"]].append((row["frame_index"], row["pts_s"], row["thumbnail_jpeg"]))
    return {vid: [(pts, jpeg) for _, pts, jpeg in sorted(frames)] for vid, frames in found.items()}


def _strip(thumbnails: list[tuple[float, bytes]]) -> str:
    """A row of thumbnails with their times, or a line saying there are none."""
    if not thumbnails:
        return "<span class=\"muted\">no thumbnails stored (the run had output.thumbnails: 0)</span>"
    return "".join(f"<figure><img alt=\"frame at {pts:.2f} s\" src=\"{_jpeg_uri(jpeg)}\">"
                   f"<figcaption>{pts:.2f} s</figcaption></figure>" for pts, jpeg in thumbnails)


# --------------------------------------------------------------------------- generic part


def _outcome(record: dict[str, Any]) -> str:
    """How the run ended, coloured by its health (``error_health`` where it has an error rate)."""
    status = f"{record.get('kind', 'run')} {record.get('status', 'committed')}"
    health = error_health(record)
    if health is None:
        return f"<span class=\"ok\">{_e(status)}</span>"
    level, limit = health
    recorded = _rec(record, "config", "limits", "max_error_rate")
    shown = recorded.span() if recorded.value is not None else f"{limit:g} (default)"
    return (f"<span class=\"{HEALTH_CLASS[level]}\">{_e(status)}, error rate "
            f"{_rec(record, 'error_rate', percent=True).span()} {HEALTH_WORDS[level]} limits.max_error_rate={shown}"
            + (" (exit 3)" if level == "over" else "") + "</span>")


def _summary_section(record: dict[str, Any]) -> str:
    counts = record.get("counts") or {}
    facts = [(k, _rec(record, k) if _is_number(v) else v)
             for k, v in record.items() if k not in SHOWN_APART and not isinstance(v, (dict, list))]
    count_rows = [(k, _rec(record, "counts", k)) for k in _ordered(counts, COUNT_ORDER)
                  if not isinstance(counts[k], (dict, list))]
    count_rows += [(f"{k}: {sub}", _rec(record, "counts", k, sub)) for k in _ordered(counts, COUNT_ORDER)
                   if isinstance(counts[k], dict) for sub in sorted(counts[k])]
    return (
        "<h2>Summary</h2>"
        f"<p>outcome: {_outcome(record)}</p>"
        "<div class=\"tables\">"
        + _table(("run", ""), [(k, "-" if v in (None, "") else v) for k, v in facts])
        + (_table(("count", ""), count_rows) if count_rows else "")
        + "</div>"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ordered(keys: Iterable[str], first: Sequence[str]) -> list[str]:
    """``keys`` with those in ``first`` leading in that order, the rest sorted."""
    keys = list(keys)
    return [k for k in first if k in keys] + sorted(k for k in keys if k not in first)


def run_commits(catalog: Catalog, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The Delta commits the run made, per table: ``{table: {"version": v, "operations":
    [...], "metrics": {name: summed value}}}``.

    A table's commits are those after the version the previous committed run pinned up to the
    version this run pinned (``delta_versions``); those whose ``commitInfo`` names another run
    (``extract.run_id``) are not this run's. ``metrics`` sums the commits' numeric
    ``operationMetrics`` that count rows or files. A table whose log no longer holds the
    commits (log cleanup) has ``"operations": None``.
    """
    earlier = [r for r in catalog.all_runs if "delta_versions" in r and r.get("seq", -1) < record.get("seq", -1)]
    out: dict[str, dict[str, Any]] = {}
    for table, version in (record.get("delta_versions") or {}).items():
        if version is None or version < 0:
            continue
        before = max([r["delta_versions"].get(table, -1) for r in earlier] + [-1])
        operations: list[str] | None = []
        metrics: Counter = Counter()
        for v in range(before + 1, version + 1):
            info = _commit_info(catalog, table, v)
            if info is None:
                operations = None
                break
            if info.get(RUN_ID_KEY) not in (None, record["run_id"]):
                continue
            operations.append(str(info.get("operation", "?")))
            for name, value in (info.get("operationMetrics") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                        "rows" in name.lower() or "files" in name.lower()):
                    metrics[name] += value
        out[table] = {"version": version, "operations": operations, "metrics": dict(metrics)}
    return out


def _commit_info(catalog: Catalog, table: str, version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` of ``table``'s commit ``version`` (``{}`` when it has none); None when
    the log no longer holds the commit."""
    path = f"{catalog.root}/{table}/{DELTA_LOG}/{version:020d}.json"
    try:
        with catalog.fs.open_input_stream(path) as fh:
            lines = fh.read().decode().splitlines()
    except (FileNotFoundError, OSError):
        return None
    for line in lines:
        if '"commitInfo"' in line:
            return json.loads(line)["commitInfo"]
    return {}


def _commits_section(commits: Mapping[str, Mapping[str, Any]]) -> str:
    """Per table: the version the run pinned, the operations it made there, their row and file
    counts (the metrics the commits report, e.g. ``num_added_rows``)."""
    if not commits:
        return "<h2>Commits</h2><p class=\"muted\">this run pinned no table versions</p>"
    names = sorted({m for c in commits.values() for m in c["metrics"]},
                   key=lambda m: ("rows" not in m.lower(), m))
    rows = []
    for table in _ordered(commits, TABLES):
        c = commits[table]
        ops = c["operations"]
        what = "not in the log any more" if ops is None else (", ".join(ops) or "no commit (nothing to change)")
        rows.append([table, Num("record", ("delta_versions", table), c["version"]), what]
                    + [Num("commit", (table, m), c["metrics"].get(m, 0)) for m in names])
    return ("<h2>Commits</h2><p class=\"muted\">the Delta commits this run made, read from each table's log</p>"
            + _table(["table", "version", "operations", *[m.replace("_", " ") for m in names]], rows))


def _timings_section(record: dict[str, Any]) -> str:
    """Seconds per stage (summed over workers, and CPU seconds where recorded) in one chart whose
    axis is seconds; throughput, each figure with its unit, in a table."""
    from extract.stages.registry import STAGES

    timings = record.get("timings_s") or {}
    cpu = record.get("cpu_s") or {}
    stages = _ordered(set(timings) | set(cpu), STAGES)
    parts = [f"<p>wall time {_rec(record, 'wall_s').span()} s</p>"]
    if stages:
        if (record.get("counts") or {}).get("processed"):  # nothing processed: the table says it
            # all, and drawing (importing matplotlib) would be most of such a run's cost
            parts.append(f"<img alt=\"seconds per stage\" src=\"{_timings_chart(stages, timings, cpu)}\">")
        parts.append("<p class=\"muted\">stage time is summed over workers (stages overlap in a streaming "
                     "run)" + ("; CPU time is the workers' processor seconds" if cpu else "") + "</p>")
        rows = [[stage, _rec(record, "timings_s", stage)] + ([_rec(record, "cpu_s", stage)] if cpu else [])
                for stage in stages]
        parts.append(_table(("stage", "seconds") + (("CPU seconds",) if cpu else ()), rows))
    throughput = record.get("throughput") or {}
    if throughput:
        parts.append(_table(("throughput", "per wall second", "unit"),
                            [(k.replace("_per_s", "").replace("_", " "), _rec(record, "throughput", k),
                              THROUGHPUT_UNITS.get(k, k)) for k in _ordered(throughput, tuple(THROUGHPUT_UNITS))]))
    return "<h2>Timings</h2>" + "".join(parts)


def _timings_chart(stages: Sequence[str], timings: Mapping[str, float], cpu: Mapping[str, float]) -> str:
    """Horizontal bars of seconds per stage (summed over workers, and CPU seconds where
    recorded), one axis in seconds, as a PNG data URI."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: an automatic layout engine costs more than drawing the chart itself.
    fig = Figure(figsize=(7, 0.6 + 0.38 * len(stages) * (2 if cpu else 1)), dpi=CHART_DPI)
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.2, top=0.88)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(stages)[::-1]
    y = np.arange(len(names))
    series = [("summed over workers", timings, "#4c72b0")] + ([("CPU", cpu, "#dd8452")] if cpu else [])
    height = 0.8 / len(series)
    for i, (label, values, colour) in enumerate(series):
        vals = [float(values.get(n) or 0.0) for n in names]
        bars = ax.barh(y + (i - (len(series) - 1) / 2) * height, vals, height, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], padding=3, fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlabel("seconds", fontsize=9)
    ax.set_title("seconds per stage", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.margins(x=0.2)
    if cpu:
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _png_uri(buf.getvalue())


def _record_section(record: dict[str, Any]) -> str:
    """The record's other fields: dicts as tables (a dict of dicts as one table with a column per
    key), lists as lists, and the config (when the run has one) folded."""
    parts = []
    for key, value in record.items():
        if key in SHOWN_APART or not isinstance(value, (dict, list)):
            continue
        parts.append(f"<h3>{_e(key.replace('_', ' '))}</h3>" + _value_block(key, value))
    if record.get("config"):
        config = json.dumps(record["config"], indent=2, sort_keys=True)
        parts.append(f"<details><summary>config</summary><pre>{_e(config)}</pre></details>")
    return "<h2>The record</h2>" + ("".join(parts) or "<p class=\"muted\">nothing else recorded</p>")


def _value_block(key: str, value: Any) -> str:
    """One dict or list field of the record, as a table or a list; numbers carry their source."""
    if not value:
        return "<p class=\"muted\">none</p>"
    if isinstance(value, dict):
        if all(isinstance(v, dict) for v in value.values()):
            cols = list(dict.fromkeys(c for v in value.values() for c in v))
            return _table([key, *cols], [[k, *(_value((key, k, c), v.get(c)) for c in cols)]
                                         for k, v in value.items()])
        return _table([key, ""], [(k, _value((key, k), v)) for k, v in value.items()])
    if all(isinstance(v, dict) for v in value):
        cols = list(dict.fromkeys(c for v in value for c in v))
        shown = value[:MAX_LISTED]
        more = f"<p class=\"muted\">{len(value) - len(shown)} more</p>" if len(value) > len(shown) else ""
        return _table(cols, [[_value((key, i, c), v.get(c)) for c in cols] for i, v in enumerate(shown)]) + more
    return _id_list(value, Num("length", (key,), len(value)).span())


class Markup(str):
    """HTML made here from escaped parts: ``_table`` puts it in a cell as it is."""


def _value(path: tuple[Any, ...], value: Any) -> Any:
    """A record value at ``path`` for a table cell: a number as a ``Num``, a nested dict or list
    as ``key: value`` pairs (numbers as sourced spans), anything else as text."""
    if _is_number(value):
        return Num("record", path, value)
    if isinstance(value, dict):
        return Markup("; ".join(f"{_e(k)}: {_inline(path + (k,), v)}" for k, v in value.items()) or "-")
    if isinstance(value, list):
        return Markup(", ".join(_inline(path + (i,), v) for i, v in enumerate(value)) or "-")
    return "-" if value in (None, "") else value


def _inline(path: tuple[Any, ...], value: Any) -> str:
    shown = _value(path, value)
    return shown.span() if isinstance(shown, Num) else shown if isinstance(shown, Markup) else _e(shown)


def _id_list(values: Sequence[Any], count: str) -> str:
    """Up to ``MAX_LISTED`` values as one wrapped line, after ``count`` (HTML: the number shown)."""
    shown = ", ".join(f"<code>{_e(v)}</code>" for v in values[:MAX_LISTED])
    more = f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else ""
    return f"<p>{count}: {shown}{more}</p>"


# --------------------------------------------------------------------------- run: errors


def _errors_section(catalog: Catalog, record: dict[str, Any], max_videos: int) -> str:
    """Counts by stage/type from the run record; examples from the run's committed error rows
    (a later run that re-processed a video supersedes its error row, so examples can be fewer)."""
    rows = _committed_rows(catalog, "errors", record["run_id"],
                           ["video_id", "stage", "error_type", "message", "retryable"])
    recorded = record.get("errors_by_stage_type") or {}
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[f"{row['stage']}/{row['error_type']}"].append(row)
    keys = sorted(set(recorded) | set(by_key), key=lambda k: (-(recorded.get(k) or 0), k))
    if not keys:
        return "<h2>Errors</h2><p class=\"ok\">no errors</p>"
    body = []
    for key in keys:
        stage, _, error_type = key.partition("/")
        group = sorted(by_key.get(key, []), key=lambda r: r["video_id"])
        retryable = sum(1 for r in group if r["retryable"])
        examples = "".join(
            f"<li><code>{_e(r['video_id'])}</code>: {_e(_clip_text(r['message'], MESSAGE_CHARS))}</li>"
            for r in group[:ERROR_EXAMPLES])
        examples = f"<ul>{examples}</ul>" if examples else "<span class=\"muted\">no live rows (superseded)</span>"
        n = _rec(record, "errors_by_stage_type", key).cell() if key in recorded else "<td class=\"num\">-</td>"
        body.append(f"<tr><td>{_e(stage)}</td><td>{_e(error_type)}</td>{n}"
                    f"<td>{retryable} of {len(group)} live rows</td><td>{examples}</td></tr>")
    return ("<h2>Errors</h2><div class=\"scroll\"><table><tr><th>stage</th><th>error type</th><th>videos</th>"
            "<th>retryable</th><th>examples</th></tr>" + "".join(body) + "</table></div>")


# --------------------------------------------------------------------------- duplicates


DUP_COLUMNS = ["video_id", "duplicate_of", "kind", "match_frames", "clip_cosine", "mirrored", "run_id"]
SIDE_COLUMNS = ["video_id", "duration_s", "file_bytes", "width", "height", "upload_ts"]


def _searched_duplicates_section(catalog: Catalog, record: dict[str, Any], max_videos: int) -> str:
    """A ``duplicates`` run: the pairs it wrote, and the searched videos that matched nothing."""
    import pyarrow.compute as pc

    rows = _committed_rows(catalog, "duplicates", record["run_id"], DUP_COLUMNS)
    matched = {r["video_id"] for r in rows}
    options = record.get("options") or {}
    rule = (f"a near copy shares at least {_rec(record, 'options', 'min_match_fraction').span()} of its frames "
            f"within {_rec(record, 'options', 'max_hamming').span()} bits and has a CLIP cosine of at least "
            f"{_rec(record, 'options', 'min_clip_cosine').span()}") if options else ""
    searched = ""
    if record.get("since") is not None:
        # The searched videos: of dt >= since, committed by the runs before this one (read from
        # the latest tables: a vacuum may have deleted the files of the versions it searched).
        before = [r["run_id"] for r in catalog.runs if r.get("seq", -1) < record.get("seq", -1)]
        found = catalog.read("videos", ["video_id"], filter=(pc.field("dt") >= record["since"])
                             & pc.field("run_id").isin(before))
        unmatched = sorted(set([] if found is None else found["video_id"].to_pylist()) - matched)
        searched = _id_list(unmatched, "searched videos with no earlier copy "
                                       f"{_rec(record, 'counts', 'unmatched').span()}")
    counts = (f"<p>searched {_rec(record, 'counts', 'searched').span()} videos against "
              f"{_rec(record, 'counts', 'history').span()} committed; candidate pairs "
              f"{_rec(record, 'search', 'candidate_pairs').span()}; duplicates "
              f"{_rec(record, 'counts', 'duplicates').span()}</p>")
    return ("<h2>Duplicates</h2>" + counts + (f"<p class=\"muted\">{rule}</p>" if rule else "")
            + _pair_cards(catalog, rows) + searched)


def _found_duplicates_section(catalog: Catalog, record: dict[str, Any], max_videos: int) -> str:
    """A processing run: the near copies later ``duplicates`` runs found for its videos, or that
    no search has covered them yet."""
    import pyarrow.compute as pc

    own = _committed_rows(catalog, "videos", record["run_id"], ["video_id", "dt"])
    if not own:
        return "<h2>Duplicates</h2><p class=\"muted\">no committed videos from this run to search</p>"
    newest = max(str(v["dt"]) for v in own)
    searches = [r for r in catalog.runs if r.get("kind") == "duplicates" and r.get("seq", -1) > record.get("seq", -1)
                and str(r.get("since", "")) <= newest]
    if not searches:
        return ("<h2>Duplicates</h2><p class=\"muted\">not searched yet: no near-copy search has run on this run's "
                "videos (<code>extract duplicates</code>)</p>")
    rows = _committed_rows(catalog, "duplicates", None, DUP_COLUMNS, [v["video_id"] for v in own],
                           where=pc.field("run_id") != record["run_id"])
    by = ", ".join(f"<code>{_e(r['run_id'])}</code>" for r in searches)
    if not rows:
        return f"<h2>Duplicates</h2><p>none found for this run's videos (searched by {by})</p>"
    return f"<h2>Duplicates</h2><p>found by the search runs {by}</p>" + _pair_cards(catalog, rows)


def _pair_cards(catalog: Catalog, rows: list[dict[str, Any]]) -> str:
    """Each pair: the deciding scores, then both videos' facts (duration, size, frame) and
    thumbnails side by side."""
    if not rows:
        return ""
    rows = sorted(rows, key=lambda r: (r["kind"] != "exact", r["video_id"]))
    shown = rows[:MAX_DUPLICATES]
    ids = sorted({r["video_id"] for r in shown} | {r["duplicate_of"] for r in shown})
    thumbs = _thumbnails(catalog, ids)
    facts = {v["video_id"]: v for v in _committed_rows(catalog, "videos", None, SIDE_COLUMNS, ids)}
    cards = []
    for r in shown:
        scores = (f"{r['kind']}: frames matching {_fmt(r['match_frames'])}, CLIP cosine {_fmt(r['clip_cosine'])}"
                  + (", mirrored" if r.get("mirrored") else ""))
        cards.append(
            f"<div class=\"video\"><p>{_e(scores)}</p><div class=\"pair\">"
            + _side("new", r["video_id"], facts.get(r["video_id"]), thumbs)
            + _side("copy of", r["duplicate_of"], facts.get(r["duplicate_of"]), thumbs)
            + "</div></div>")
    more = len(rows) - len(shown)
    note = f"<p class=\"muted\">pairs: {len(rows)}" + (f" ({more} not shown)" if more else "") + "</p>"
    return note + "".join(cards)


def _side(role: str, video_id: str, video: Mapping[str, Any] | None, thumbs: Mapping[str, list]) -> str:
    if video is None:
        about = "not in the latest tables"
    else:
        about = (f"{_seconds(video['duration_s'])}, {_size(video['file_bytes'])}, {video['width']}×{video['height']}"
                 + (f", uploaded {video['upload_ts']:%Y-%m-%d %H:%M}" if video.get("upload_ts") else ""))
    return (f"<div><h3>{_e(role)}: <code>{_e(video_id)}</code></h3><p class=\"muted\">{_e(about)}</p>"
            f"<div class=\"frames\">{_strip(thumbs.get(video_id, []))}</div></div>")


def _seconds(value: float | None) -> str:
    return "- s" if value is None else f"{value:.1f} s"


def _size(n: int | None) -> str:
    """Bytes as kB/MB (powers of 1000)."""
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------- contact sheet


SIGNAL_COLUMNS = ("caption_language", "caption_language_prob", "ocr_language", "ocr_language_prob", "text_area_ratio",
                  "motion_score", "motion_source", "shot_count", "cuts_per_minute", "mean_shot_s")
CARD_COLUMNS = ["video_id", "uri", "duration_s", "width", "height", "n_frames", "content_sha256", "reused_from",
                "caption", "hashtags", "transcript_text", "language", "no_speech_prob", "has_audio", "audio_kind",
                "speech_ratio", "ocr_text", "ocr_error", "top_topic", "top_topic_score", "labels_topic",
                "top_safety", "top_safety_score", "labels_safety", *SIGNAL_COLUMNS]


def _variety(video: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """What a varied sample spreads over: top topic, audio kind, language, trouble (an OCR
    failure, no audio track) and content (the bytes: copies of one clip count once)."""
    trouble = "ocr_error" if video.get("ocr_error") else "no_audio" if video.get("has_audio") is False else None
    content = video.get("reused_from") or video.get("content_sha256") or video["video_id"]
    return [("top_topic", video.get("top_topic")), ("audio_kind", video.get("audio_kind")),
            ("language", video.get("language")), ("trouble", trouble), ("content", content)]


def varied_sample(videos: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """``n`` of ``videos`` chosen greedily, each the one adding the most values not yet covered
    (``_variety``); ties by ``video_id``. Returns them in choice order."""
    left = sorted(videos, key=lambda v: v["video_id"])
    seen: set[tuple[str, Any]] = set()
    chosen = []
    while left and len(chosen) < n:
        best = max(range(len(left)), key=lambda i: (sum(1 for kv in _variety(left[i]) if kv not in seen), -i))
        pick = left.pop(best)
        seen.update(_variety(pick))
        chosen.append(pick)
    return chosen


def _contact_sheet_section(catalog: Catalog, record: dict[str, Any], max_videos: int) -> str:
    run_id = record["run_id"]
    videos = _committed_rows(catalog, "videos", run_id, CARD_COLUMNS)
    if not videos or max_videos <= 0:
        return "<h2>Contact sheet</h2><p class=\"muted\">no committed videos from this run</p>"
    shown = varied_sample(videos, max_videos)
    ids = [v["video_id"] for v in shown]
    thumbs = _thumbnails(catalog, ids, run_id)
    details = _card_details(catalog, run_id, ids)
    threshold = run_config(record).whisper.logprob_threshold
    cards = [_video_card(video, thumbs.get(video["video_id"], []), details.get(video["video_id"], {}), threshold)
             for video in shown]
    on_sheet = set(ids)
    rest = sorted((v for v in videos if v["video_id"] not in on_sheet), key=lambda v: v["video_id"])
    note = (f"<p class=\"muted\">{len(shown)} of {len(videos)} videos of this run, picked to vary in topic, "
            "audio, language, trouble and content</p>")
    listed = ""
    if rest:
        listed = "<h3>Not on the sheet</h3>" + _table(
            ("video", "duration", "audio", "top topic", "uri"),
            [(v["video_id"], _seconds(v["duration_s"]), v.get("audio_kind") or "-", v.get("top_topic") or "-",
              v["uri"]) for v in rest[:MAX_LISTED]])
        if len(rest) > MAX_LISTED:
            listed += f"<p class=\"muted\">and {len(rest) - MAX_LISTED} more</p>"
    return "<h2>Contact sheet</h2>" + note + "".join(cards) + listed


def _card_details(catalog: Catalog, run_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per video: its transcript segments' confidence, its OCR lines' scores and its shots."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"segments": [], "ocr": {}, "shots": []})
    for s in _committed_rows(catalog, "transcript_segments", run_id, ["video_id", "avg_logprob", "temperature"], ids):
        out[s["video_id"]]["segments"].append(s)
    for line in _committed_rows(catalog, "ocr_text", run_id, ["video_id", "text", "score"], ids):
        scores = out[line["video_id"]]["ocr"]
        scores[line["text"]] = max(scores.get(line["text"], 0.0), line["score"] or 0.0)
    for shot in _committed_rows(catalog, "shots", run_id, ["video_id", "shot_index", "start_s", "end_s"], ids):
        out[shot["video_id"]]["shots"].append(shot)
    return out


def _video_card(video: dict[str, Any], thumbnails: list[tuple[float, bytes]], details: Mapping[str, Any],
                logprob_threshold: float) -> str:
    """One video: facts, caption, hashtags, transcript snippet and its confidence, on-screen text,
    signals, labels, its stored thumbnails and a strip at its cut times."""
    tags = " ".join(f"#{t}" for t in video.get("hashtags") or []) or "-"
    caption = _e(_clip_text(video.get("caption"), CAPTION_CHARS)) or "<span class=\"muted\">none</span>"
    facts = (f"{video['duration_s']:.1f} s, {video['width']}×{video['height']}, "
             f"{video['n_frames']} sampled frames")
    labels = " · ".join(_label(video, name) for name in ("topic", "safety") if video.get(f"top_{name}"))
    signals = _signals_line(video)
    shots = details.get("shots") or []
    return (
        f"<div class=\"video\"><h3><code>{_e(video['video_id'])}</code></h3>"
        f"<p>{_e(facts)} · hashtags: {_e(tags)}</p>"
        f"<p>caption: {caption}</p>"
        f"<p>audio: {_audio(video)} · transcript: "
        f"{_speech(video, details.get('segments') or [], logprob_threshold)}</p>"
        f"<p>on-screen text: {_on_screen(video, details.get('ocr') or {})}</p>"
        + (f"<p>signals: {signals}</p>" if signals else "")
        + (f"<p>top labels (zero-shot similarity, not moderation): {labels}</p>" if labels else "") +
        f"<div class=\"frames\">{_strip(thumbnails)}</div>"
        + (_shot_strip(shots, thumbnails) if shots else "") +
        f"<p class=\"muted\">{_e(video['uri'])}</p></div>"
    )


def _audio(video: Mapping[str, Any]) -> str:
    if video.get("has_audio") is False:
        return "no audio track"
    audio = video.get("audio_kind") or "-"
    if video.get("speech_ratio") is not None:
        audio += f", speech {100 * video['speech_ratio']:.0f} % of the audio"
    return _e(audio)


def _speech(video: Mapping[str, Any], segments: Sequence[Mapping[str, Any]], logprob_threshold: float) -> str:
    """The transcript snippet with its language, marked low-confidence when a window needed the
    temperature fallback or its mean log-probability is under ``whisper.logprob_threshold``."""
    transcript = _clip_text(video.get("transcript_text"), SNIPPET_CHARS)
    if not transcript:
        if video.get("has_audio") is False:
            return "<span class=\"muted\">none (no audio)</span>"
        return (f"<span class=\"muted\">no speech (no-speech probability "
                f"{_e(_fmt(video.get('no_speech_prob')))})</span>")
    language = video.get("language")
    out = f"“{_e(transcript)}”" + (f" <span class=\"muted\">({_e(language)})</span>" if language else "")
    low = transcript_confidence(segments, logprob_threshold)
    return out + (f" <span class=\"low\">low confidence: {_e(low)}</span>" if low else "")


def transcript_confidence(segments: Sequence[Mapping[str, Any]], logprob_threshold: float) -> str:
    """Why a transcript is unreliable ('' when it is not): its windows decoded again at a higher
    temperature (the fallback of ``whisper.compression_ratio_threshold``/``logprob_threshold``),
    or a segment's mean token log-probability under ``logprob_threshold`` (the run's config)."""
    why = []
    hottest = max((s.get("temperature") or 0.0 for s in segments), default=0.0)
    if hottest > 0:
        why.append(f"decoded at temperature {hottest:.1f} after the fallback")
    logprobs = [s["avg_logprob"] for s in segments if s.get("avg_logprob") is not None]
    if logprobs and min(logprobs) < logprob_threshold:
        why.append(f"mean token log-probability {min(logprobs):.2f} (under {logprob_threshold:g})")
    return "; ".join(why)


def _on_screen(video: Mapping[str, Any], scores: Mapping[str, float]) -> str:
    """The OCR lines, each read with a score under ``LOW_OCR_SCORE`` followed by its score."""
    lines = list(video.get("ocr_text") or [])
    if not lines:
        return (f"<span class=\"bad\">OCR failed: {_e(_clip_text(video['ocr_error'], MESSAGE_CHARS))}</span>"
                if video.get("ocr_error") else "<span class=\"muted\">none read</span>")

    def one(line: str) -> str:
        score = scores.get(line)
        low = (f" <span class=\"low\">(score {score:.2f}, low)</span>"
               if score is not None and score < LOW_OCR_SCORE else "")
        return f"“{_e(_clip_text(line, CAPTION_CHARS))}”{low}"

    more = len(lines) - OCR_LINES
    return " / ".join(one(line) for line in lines[:OCR_LINES]) + (
        f" <span class=\"muted\">(+{more} more)</span>" if more > 0 else "")


def _label(video: Mapping[str, Any], name: str) -> str:
    """``name: label (score)``, marked low when the score is under ``LOW_LABEL_FACTOR`` times
    chance (one over the set's number of labels)."""
    score = video.get(f"top_{name}_score")
    n_labels = len(video.get(f"labels_{name}") or [])
    text = f"{name}: {_e(video[f'top_{name}'])} ({_fmt(score)})"
    if score is not None and n_labels and score < LOW_LABEL_FACTOR / n_labels:
        text += f" <span class=\"low\">low: chance is {1 / n_labels:.2f}</span>"
    return text


def _shot_strip(shots: Sequence[Mapping[str, Any]], thumbnails: list[tuple[float, bytes]]) -> str:
    """The video's cuts (each shot's start after the first) as thumbnails: the sampled frame
    nearest each cut, captioned with the cut time and the frame's."""
    cuts = [s["start_s"] for s in sorted(shots, key=lambda s: s["shot_index"]) if s["shot_index"] > 0]
    head = f"<p>shots: {len(shots)}, cuts at " + (", ".join(f"{t:.2f} s" for t in cuts) or "none") + "</p>"
    if not cuts or not thumbnails:
        return head
    figures = []
    for t in cuts:
        pts, jpeg = min(thumbnails, key=lambda f: abs(f[0] - t))
        figures.append(f"<figure><img alt=\"cut at {t:.2f} s\" src=\"{_jpeg_uri(jpeg)}\">"
                       f"<figcaption>cut {t:.2f} s<br>frame {pts:.2f} s</figcaption></figure>")
    return head + "<div class=\"frames shots\">" + "".join(figures) + "</div>"


def _signals_line(video: dict[str, Any]) -> str:
    """Languages, text area, motion and pacing of one video (``signals.*``); '' when all are null."""
    parts = [f"{what} language {video[f'{key}_language']} ({_fmt(video.get(f'{key}_language_prob'))})"
             for key, what in (("caption", "caption"), ("ocr", "on-screen")) if video.get(f"{key}_language")]
    if video.get("text_area_ratio") is not None:
        parts.append(f"text covers {100 * video['text_area_ratio']:.1f} % of the frame")
    if video.get("motion_score") is not None:
        parts.append(f"motion {video['motion_score']:.3f} ({video.get('motion_source')})")
    if video.get("shot_count") is not None:
        parts.append(f"{video['shot_count']} shots, {video['cuts_per_minute']:.1f} cuts/min, "
                     f"mean shot {video['mean_shot_s']:.1f} s")
    return _e(" · ".join(parts))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _jpeg_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- sounds

MAX_SOUNDS = 10  # sound groups shown
MAX_SOUND_VIDEOS = 8  # videos shown per sound group


def _sounds_section(catalog: Catalog, record: dict[str, Any], max_videos: int) -> str:
    """Sound groups: each sound that the ``sound_matches`` rows of this run (a ``sounds`` run) or
    of this run's videos (a processing run, once a ``sounds`` run searched them) name, with a
    thumbnail of its first video and of the other committed videos carrying it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    run_id = record["run_id"]
    columns = ["video_id", "sound_id", "offset_s", "score"]
    rows = _committed_rows(catalog, "sound_matches", run_id, columns)
    own = [v["video_id"] for v in _committed_rows(catalog, "videos", run_id, ["video_id"])]
    if own:
        rows += _committed_rows(catalog, "sound_matches", None, columns, own, where=pc.field("run_id") != run_id)
    if not rows:
        return "<h2>Sounds</h2><p class=\"muted\">no video of this run carries an earlier video's sound</p>"
    sounds = sorted({r["sound_id"] for r in rows})
    shown = sounds[:MAX_SOUNDS]
    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _committed_rows(catalog, "sound_matches", None, columns,
                             where=pc.field("sound_id").isin(pa.array(shown, pa.string()))):
        members[r["sound_id"]].append(r)
    listed = {s: sorted(members[s], key=lambda r: r["video_id"])[:MAX_SOUND_VIDEOS - 1] for s in shown}
    thumbs = _thumbnails(catalog, sorted(set(shown) | {r["video_id"] for rs in listed.values() for r in rs}))
    cards = []
    for sound in shown:
        figures = [f"<div><h3>first: <code>{_e(sound)}</code></h3>"
                   f"<div class=\"frames\">{_strip(thumbs.get(sound, [])[:1])}</div></div>"]
        figures += [f"<div><h3><code>{_e(r['video_id'])}</code></h3><p>at {r['offset_s']:.1f} s, score "
                    f"{_fmt(r['score'])}</p>"
                    f"<div class=\"frames\">{_strip(thumbs.get(r['video_id'], [])[:1])}</div></div>"
                    for r in listed[sound]]
        more = len(members[sound]) - len(listed[sound])
        cards.append(f"<div class=\"video\"><p>sound <code>{_e(sound)}</code>: {len(members[sound]) + 1} videos"
                     + (f" ({more} more not shown)" if more else "") + "</p><div class=\"pair\">"
                     + "".join(figures) + "</div></div>")
    note = f"<p class=\"muted\">{len(sounds)} sounds" + \
        (f" ({len(sounds) - len(shown)} more not shown)" if len(sounds) > len(shown) else "") + "</p>"
    return "<h2>Sounds</h2>" + note + "".join(cards)


# A kind's own sections after the generic part; a kind without an entry gets the generic part only.
KIND_SECTIONS: dict[str, tuple[Section, ...]] = {
    "run": (_errors_section, _found_duplicates_section, _sounds_section, _contact_sheet_section),
    "duplicates": (_searched_duplicates_section,),
    "sounds": (_sounds_section,),
}
