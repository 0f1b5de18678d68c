"""Human-readable run summaries: a terminal summary and a self-contained HTML report per run.

``summarize(record, dst)`` is the few lines ``extract run`` prints. ``write_run_report(dst,
run_id)`` writes ``DST/_runs/<run_id>.html`` next to the run manifest: run summary (outcome,
counts, config hash, models), per-stage time and throughput (matplotlib bar charts), the error
breakdown by stage and type with example messages, the near copies and re-uploads found for this
run's videos (or by this ``duplicates`` run) with both videos' thumbnails side by side, and a
contact sheet of a few videos (thumbnails at their ``pts_s``, duration, hashtags, transcript
snippet).

The page is one file with no external assets: CSS inline, images as base64 PNG ``data:`` URIs,
no scripts, and a Content-Security-Policy that forbids loading anything else. Everything that
came from input or from decoding (ids, uris, captions, hashtags, transcripts, error messages)
is escaped with ``html.escape``; captions are untrusted.

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
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

from extract.config import LimitsConfig, StorageConfig
from extract.tables.catalog import RUNS_DIR, Catalog
from extract.tables.schemas import TABLES
from extract.io.storage import join

MAX_DUPLICATES = 20  # duplicate pairs shown
SNIPPET_CHARS = 240  # transcript characters shown per video
CAPTION_CHARS = 200  # caption characters shown per video
OCR_LINES = 6  # on-screen text lines shown per video
ERROR_EXAMPLES = 3  # example messages per (stage, error type)
MESSAGE_CHARS = 300  # characters shown per example error message
CHART_DPI = 96
COUNT_ORDER = ("manifest_rows", "processed", "ok", "errors", "skipped", "invalid_upload_ts")
THROUGHPUT_LABELS = {"videos_per_s": "videos / s", "frames_per_s": "frames / s", "audio_s_per_s": "audio s / s"}


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


# --------------------------------------------------------------------------- the HTML report


def write_run_report(dst: str, run_id: str, storage: StorageConfig | None = None, max_videos: int = 6) -> str:
    """Write ``DST/_runs/<run_id>.html`` for a committed run (its rows still in the latest
    tables: forgotten or re-processed videos are not shown); returns its URI.

    ``max_videos``: videos on the contact sheet (the run's committed videos, by ``video_id``).
    Raises ``ValueError`` when ``run_id`` has no committed manifest under ``dst``.
    """
    storage = storage or StorageConfig()
    catalog = Catalog(dst, storage)
    page = build_run_report(catalog, run_id, max_videos)
    with catalog.fs.open_output_stream(f"{catalog.root}/{RUNS_DIR}/{run_id}.html") as fh:
        fh.write(page.encode("utf-8"))
    return join(dst, RUNS_DIR, f"{run_id}.html")


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


def build_run_report(catalog: Catalog, run_id: str, max_videos: int = 6) -> str:
    """The report page of one committed run of ``catalog`` as an HTML string."""
    record = next((r for r in catalog.runs if r.get("run_id") == run_id), None)
    if record is None:
        raise ValueError(f"run {run_id!r} has no committed manifest under {catalog.dst}/{RUNS_DIR}/; "
                         f"committed runs: {', '.join(r['run_id'] for r in catalog.runs[-5:]) or 'none'}")
    sections = [
        _summary_section(record),
        _timings_section(record),
        _errors_section(record, _committed_rows(catalog, "errors", run_id,
                                                ["video_id", "stage", "error_type", "message", "retryable"])),
        _duplicates_section(catalog, run_id),
        _sounds_section(catalog, run_id),
        _contact_sheet_section(catalog, run_id, max_videos),
    ]
    title = f"extract run {run_id}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>" + "".join(sections) + "</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;"
    "text-align:left;vertical-align:top;font-size:.9em}th{background:#f4f4f4}"
    ".num{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{color:#17692a;font-weight:bold}.bad{color:#a4161a;font-weight:bold}"
    ".video{border:1px solid #ddd;padding:.6em;margin:.8em 0}.frames{display:flex;gap:6px;flex-wrap:wrap}"
    ".pair{display:flex;gap:1.5em;flex-wrap:wrap}.pair>div{flex:1 1 0;min-width:300px}"
    "figure{margin:0;text-align:center;font-size:.8em;color:#555}.muted{color:#777}"
    "code,pre{font-size:.85em;white-space:pre-wrap;word-break:break-all}"
)


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; every cell is escaped. ``numeric``: column indices aligned right."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _clip_text(text: str | None, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis when cut."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut + " …"


def _run_limits(record: dict[str, Any]) -> LimitsConfig:
    """The run's ``limits`` (from its recorded config)."""
    from extract.config import ConfigError, config_from_dict

    try:
        return config_from_dict(record.get("config") or {}).limits
    except ConfigError:
        return LimitsConfig()  # a manifest from another pipeline version: default limits


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


def _outcome(record: dict[str, Any]) -> tuple[str, bool]:
    """One line on how the run ended and whether it is healthy (error rate within the limit)."""
    if record.get("kind", "run") != "run":
        return f"{record.get('kind')} {record.get('status', '')}".strip(), True
    rate = float(record.get("error_rate") or 0.0)
    limit = _run_limits(record).max_error_rate
    if rate > limit:
        return f"{record.get('status', 'committed')}, error rate {rate:.1%} over limits.max_error_rate={limit} (exit 3)", False
    return f"{record.get('status', 'committed')}, error rate {rate:.1%} (limit {limit:.0%})", True


def _summary_section(record: dict[str, Any]) -> str:
    outcome, healthy = _outcome(record)
    counts = record.get("counts", {})
    about = [
        ("input", record.get("input")), ("output", record.get("output")),
        ("started", record.get("started_at")), ("ended", record.get("ended_at")),
        ("committed", record.get("committed_at")), ("wall time (s)", record.get("wall_s")),
        ("pipeline version", record.get("pipeline_version")), ("config hash", record.get("config_hash")),
        ("feature hash", record.get("feature_hash")),
        ("options", ", ".join(f"{k}={v}" for k, v in (record.get("options") or {}).items())),
    ] + [(f"model: {k}", v) for k, v in sorted((record.get("models") or {}).items())]
    count_rows = [(k, counts[k]) for k in _ordered(counts, COUNT_ORDER) if not isinstance(counts[k], dict)]
    count_rows += [(f"skipped: {k}", v) for k, v in sorted((counts.get("skipped_by_reason") or {}).items())]
    table_rows = [(t, (record.get("tables") or {}).get(t, 0)) for t in TABLES]
    versions = record.get("delta_versions") or {}
    files = f"run {record.get('seq', '-')}; Delta versions " + ", ".join(f"{t} {versions[t]}" for t in TABLES if t in versions)
    config = json.dumps(record.get("config") or {}, indent=2, sort_keys=True)
    return (
        "<h2>Summary</h2>"
        f"<p>outcome: <span class=\"{'ok' if healthy else 'bad'}\">{_e(outcome)}</span>; {_e(files)}</p>"
        + _table(("run", ""), [(k, "-" if v in (None, "") else v) for k, v in about])
        + "<div class=\"frames\">"
        + _table(("count", "videos"), count_rows, numeric=(1,))
        + _table(("table", "rows written"), table_rows, numeric=(1,))
        + "</div>"
        + f"<details><summary>config</summary><pre>{_e(config)}</pre></details>"
    )


def _ordered(keys: Iterable[str], first: Sequence[str]) -> list[str]:
    """``keys`` with those in ``first`` leading in that order, the rest sorted."""
    keys = list(keys)
    return [k for k in first if k in keys] + sorted(k for k in keys if k not in first)


def _timings_section(record: dict[str, Any]) -> str:
    from extract.stages.registry import STAGES

    raw_timings = record.get("timings_s") or {}
    timings = {k: float(raw_timings[k]) for k in _ordered(raw_timings, STAGES)}
    raw_tp = record.get("throughput") or {}
    throughput = {THROUGHPUT_LABELS.get(k, k): float(raw_tp[k])
                  for k in _ordered(raw_tp, tuple(THROUGHPUT_LABELS)) if raw_tp[k] is not None}
    if not timings and not throughput:
        return "<h2>Timings</h2><p class=\"muted\">no timings recorded for this run</p>"
    processed = (record.get("counts") or {}).get("processed") or 0
    total = sum(timings.values()) or 1.0
    rows = [(stage, f"{s:.3f}", f"{s / processed:.3f}" if processed else "-", f"{s / total:.0%}")
            for stage, s in timings.items()]
    chart = _timings_chart(timings, throughput)
    return (
        "<h2>Timings and throughput</h2>"
        f"<img alt=\"per-stage time and throughput\" src=\"{chart}\">"
        "<p class=\"muted\">stage time is summed over workers (stages overlap in a streaming run); "
        f"wall time {_e(record.get('wall_s'))} s</p>"
        + _table(("stage", "seconds", "seconds per video", "share"), rows, numeric=(1, 2, 3))
        + _table(("throughput", "per wall second"), [(k, v) for k, v in throughput.items()], numeric=(1,))
    )


def _timings_chart(timings: dict[str, float], throughput: dict[str, float]) -> str:
    """Bar charts of seconds per stage and of throughput, as a PNG data URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: an automatic layout engine costs more than drawing the chart itself.
    fig = Figure(figsize=(9, 2.8), dpi=CHART_DPI)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.9, wspace=0.45)
    FigureCanvasAgg(fig)
    panels = [(timings, "seconds per stage (summed over workers)", "{:.2f} s"),
              (throughput, "throughput (per wall second)", "{:.2f}")]
    axes = fig.subplots(1, len(panels))
    for ax, (values, title, fmt) in zip(axes, panels):
        names = list(values)[::-1]
        bars = ax.barh(names, [values[n] for n in names], color="#4c72b0")
        ax.bar_label(bars, labels=[fmt.format(values[n]) for n in names], padding=3, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.25)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _png_uri(buf.getvalue())


def _errors_section(record: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Counts by stage/type from the run manifest; examples from the run's committed error rows
    (a later run that re-processed a video supersedes its error row, so examples can be fewer)."""
    counts = Counter(record.get("errors_by_stage_type") or {})
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[f"{row['stage']}/{row['error_type']}"].append(row)
    for key, group in by_key.items():
        counts[key] = max(counts[key], len(group))
    if not counts:
        return "<h2>Errors</h2><p class=\"ok\">no errors</p>"
    body = []
    for key, n in counts.most_common():
        stage, _, error_type = key.partition("/")
        group = sorted(by_key.get(key, []), key=lambda r: r["video_id"])
        retryable = sum(1 for r in group if r["retryable"])
        examples = "".join(
            f"<li><code>{_e(r['video_id'])}</code>: {_e(_clip_text(r['message'], MESSAGE_CHARS))}</li>"
            for r in group[:ERROR_EXAMPLES])
        examples = f"<ul>{examples}</ul>" if examples else "<span class=\"muted\">no live rows (superseded)</span>"
        body.append(f"<tr><td>{_e(stage)}</td><td>{_e(error_type)}</td><td class=\"num\">{n}</td>"
                    f"<td class=\"num\">{retryable} of {len(group)}</td><td>{examples}</td></tr>")
    return ("<h2>Errors</h2><table><tr><th>stage</th><th>error type</th><th>videos</th>"
            "<th>retryable (live rows)</th><th>examples</th></tr>" + "".join(body) + "</table>")


# --------------------------------------------------------------------------- duplicates


def _duplicates_section(catalog: Catalog, run_id: str) -> str:
    """Near copies and re-uploads: the ``duplicates`` rows this run wrote (a ``duplicates`` run)
    or found for this run's videos (a processing run, once a ``duplicates`` run searched them),
    each new video's thumbnails beside those of the committed video it copies."""
    import pyarrow.compute as pc

    columns = ["video_id", "duplicate_of", "kind", "match_frames", "clip_cosine", "mirrored", "run_id"]
    rows = _committed_rows(catalog, "duplicates", run_id, columns)
    own = [v["video_id"] for v in _committed_rows(catalog, "videos", run_id, ["video_id"])]
    if own:
        seen = {r["video_id"] for r in rows}
        rows += [r for r in _committed_rows(catalog, "duplicates", None, columns, own,
                                            where=pc.field("run_id") != run_id) if r["video_id"] not in seen]
    if not rows:
        return "<h2>Duplicates</h2><p class=\"muted\">no near copies or re-uploads found for this run</p>"
    rows.sort(key=lambda r: (r["kind"] != "exact", r["video_id"]))
    shown = rows[:MAX_DUPLICATES]
    thumbs = _thumbnails(catalog, sorted({r["video_id"] for r in shown} | {r["duplicate_of"] for r in shown}))
    cards = []
    for r in shown:
        facts = (f"{r['kind']}: matching frames {_fmt(r['match_frames'])}, CLIP cosine {_fmt(r['clip_cosine'])}"
                 + (", mirrored" if r.get("mirrored") else "") + f"; found by run {r['run_id']}")
        cards.append(
            f"<div class=\"video\"><p>{_e(facts)}</p><div class=\"pair\">"
            f"<div><h3>new: <code>{_e(r['video_id'])}</code></h3>"
            f"<div class=\"frames\">{_strip(thumbs.get(r['video_id'], []))}</div></div>"
            f"<div><h3>copy of: <code>{_e(r['duplicate_of'])}</code></h3>"
            f"<div class=\"frames\">{_strip(thumbs.get(r['duplicate_of'], []))}</div></div>"
            "</div></div>")
    more = len(rows) - len(shown)
    note = f"<p class=\"muted\">{len(rows)} duplicates" + (f" ({more} more not shown)" if more else "") + "</p>"
    return "<h2>Duplicates</h2>" + note + "".join(cards)


# --------------------------------------------------------------------------- contact sheet


def _contact_sheet_section(catalog: Catalog, run_id: str, max_videos: int) -> str:
    columns = ["video_id", "uri", "duration_s", "width", "height", "n_frames",
               "caption", "hashtags", "transcript_text", "language", "no_speech_prob", "audio_kind", "speech_ratio",
               "ocr_text", "ocr_error", "top_topic", "top_topic_score", "top_safety", "top_safety_score",
               *SIGNAL_COLUMNS]
    videos = sorted(_committed_rows(catalog, "videos", run_id, columns), key=lambda v: v["video_id"])
    if not videos or max_videos <= 0:
        return "<h2>Contact sheet</h2><p class=\"muted\">no committed videos from this run</p>"
    shown = videos[:max_videos]
    thumbs = _thumbnails(catalog, [v["video_id"] for v in shown], run_id)
    cards = [_video_card(video, thumbs.get(video["video_id"], [])) for video in shown]
    more = len(videos) - len(shown)
    note = f"<p class=\"muted\">{len(shown)} of {len(videos)} videos of this run" + \
        (f" ({more} more not shown)" if more else "") + "</p>"
    return "<h2>Contact sheet</h2>" + note + "".join(cards)


def _video_card(video: dict[str, Any], thumbnails: list[tuple[float, bytes]]) -> str:
    """One video: facts, caption, hashtags, transcript snippet and its stored thumbnails."""
    strip = _strip(thumbnails)
    transcript = _clip_text(video["transcript_text"], SNIPPET_CHARS)
    if transcript:
        language = video.get("language")
        speech = f"“{_e(transcript)}”" + (f" <span class=\"muted\">({_e(language)})</span>" if language else "")
    else:
        speech = (f"<span class=\"muted\">no speech (no-speech probability "
                  f"{_e(_fmt(video.get('no_speech_prob')))})</span>")
    tags = " ".join(f"#{t}" for t in video.get("hashtags") or []) or "-"
    caption = _e(_clip_text(video.get("caption"), CAPTION_CHARS)) or "<span class=\"muted\">none</span>"
    facts = (f"{video['duration_s']:.1f} s, {video['width']}×{video['height']}, "
             f"{video['n_frames']} sampled frames")
    audio = video.get("audio_kind") or "-"
    if video.get("speech_ratio") is not None:
        audio += f", speech {100 * video['speech_ratio']:.0f} % of the audio"
    lines = list(video.get("ocr_text") or [])
    on_screen = (" / ".join(f"“{_e(_clip_text(line, CAPTION_CHARS))}”" for line in lines[:OCR_LINES])
                 + (f" <span class=\"muted\">(+{len(lines) - OCR_LINES} more)</span>" if len(lines) > OCR_LINES else ""))
    if not lines:
        on_screen = (f"<span class=\"bad\">OCR failed: {_e(_clip_text(video['ocr_error'], MESSAGE_CHARS))}</span>"
                     if video.get("ocr_error") else "<span class=\"muted\">none read</span>")
    labels = " · ".join(f"{name}: {_e(video[f'top_{name}'])} ({_fmt(video.get(f'top_{name}_score'))})"
                        for name in ("topic", "safety") if video.get(f"top_{name}"))
    signals = _signals_line(video)
    return (
        f"<div class=\"video\"><h3><code>{_e(video['video_id'])}</code></h3>"
        f"<p>{_e(facts)} · hashtags: {_e(tags)}</p>"
        f"<p>caption: {caption}</p>"
        f"<p>audio: {_e(audio)} · transcript: {speech}</p>"
        f"<p>on-screen text: {on_screen}</p>"
        + (f"<p>signals: {signals}</p>" if signals else "")
        + (f"<p>top labels (zero-shot similarity, not moderation): {labels}</p>" if labels else "") +
        f"<div class=\"frames\">{strip}</div>"
        f"<p class=\"muted\">{_e(video['uri'])}</p></div>"
    )


SIGNAL_COLUMNS = ("caption_language", "caption_language_prob", "ocr_language", "ocr_language_prob", "text_area_ratio",
                  "motion_score", "motion_source", "shot_count", "cuts_per_minute", "mean_shot_s")


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


def _sounds_section(catalog: Catalog, run_id: str) -> str:
    """Sound groups: each sound that the ``sound_matches`` rows of this run (a ``sounds`` run) or
    of this run's videos (a processing run, once a ``sounds`` run searched them) name, with a
    thumbnail of its first video and of the other committed videos carrying it."""
    import pyarrow as pa
    import pyarrow.compute as pc

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
