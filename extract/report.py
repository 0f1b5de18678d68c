"""Human-readable run summaries: a terminal summary and a self-contained HTML report per run.

``summarize(record, dst)`` is the few lines ``extract run`` prints. ``write_run_report(dst,
run_id)`` writes ``DST/_runs/<run_id>.html`` next to the run manifest: run summary (outcome,
counts, config hash, models), per-stage time and throughput (matplotlib bar charts), the error
breakdown by stage and type with example messages, and a contact sheet of a few videos
(sampled frames at their ``pts_s``, duration, hashtags, transcript snippet).

The page is one file with no external assets: CSS inline, images as base64 PNG ``data:`` URIs,
no scripts, and a Content-Security-Policy that forbids loading anything else. Everything that
came from input or from decoding (ids, uris, captions, hashtags, transcripts, error messages)
is escaped with ``html.escape``; captions are untrusted.

Contact-sheet frames are decoded again from each video's ``uri`` (object-store URIs are fetched
to a temporary folder first) with the decode stage's own hardened open and frame reader
(``extract.media.probe.open_input``, ``extract.media.video``), under the run's ``limits``. Only files whose bytes still hash to the committed
``content_sha256`` are shown; a video that cannot be read again gets a placeholder line saying
why, never a failed report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from extract.config import LimitsConfig, StorageConfig
from extract.media.probe import display_rotation
from extract.rows import VideoError
from extract.tables.catalog import RUNS_DIR, Catalog
from extract.tables.schemas import TABLES
from extract.tables.storage import fetch, is_remote, join

FRAMES_PER_VIDEO = 4  # contact-sheet frames per video, spread over its sampled frames
THUMB_PX = 160  # longer side of a contact-sheet frame, pixels
PTS_TOLERANCE_S = 1e-3  # seconds; pts_s is stored as float32, so the sampled frame may lie this far below it
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
    limits = _run_limits(record)
    sections = [
        _summary_section(record),
        _timings_section(record),
        _errors_section(record, _committed_rows(catalog, "errors", run_id,
                                                ["video_id", "stage", "error_type", "message", "retryable"])),
        _contact_sheet_section(catalog, run_id, max_videos, limits),
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
    """The run's ``limits`` (from its recorded config), so re-decoding obeys what the run obeyed."""
    from extract.config import ConfigError, config_from_dict

    try:
        return config_from_dict(record.get("config") or {}).limits
    except ConfigError:
        return LimitsConfig()  # a manifest from another pipeline version: default limits


def _committed_rows(catalog: Catalog, table: str, run_id: str, columns: list[str],
                    video_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Live rows of ``table`` written by ``run_id`` (optionally only ``video_ids``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    where = pc.field("run_id") == run_id
    if video_ids is not None:
        where = where & pc.field("video_id").isin(pa.array(list(video_ids), pa.string()))
    data = catalog.read(table, columns=columns, filter=where)
    return [] if data is None else data.to_pylist()


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


# --------------------------------------------------------------------------- contact sheet


def _contact_sheet_section(catalog: Catalog, run_id: str, max_videos: int, limits: LimitsConfig) -> str:
    columns = ["video_id", "uri", "content_sha256", "file_bytes", "duration_s", "width", "height", "n_frames",
               "caption", "hashtags", "transcript_text", "language", "no_speech_prob", "audio_kind", "speech_ratio",
               "ocr_text", "ocr_error", "top_topic", "top_topic_score", "top_safety", "top_safety_score"]
    videos = sorted(_committed_rows(catalog, "videos", run_id, columns), key=lambda v: v["video_id"])
    if not videos or max_videos <= 0:
        return "<h2>Contact sheet</h2><p class=\"muted\">no committed videos from this run</p>"
    shown = videos[:max_videos]
    frames = _committed_rows(catalog, "frame_embeddings", run_id, ["video_id", "frame_index", "pts_s"],
                             [v["video_id"] for v in shown])
    pts_by_video: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for f in frames:
        pts_by_video[f["video_id"]].append((f["frame_index"], f["pts_s"]))
    cards = []
    with tempfile.TemporaryDirectory(prefix="extract-report-") as tmp:
        for video in shown:
            pts = [p for _, p in sorted(pts_by_video[video["video_id"]])]
            cards.append(_video_card(video, pts, catalog.storage, limits, tmp))
    more = len(videos) - len(shown)
    note = f"<p class=\"muted\">{len(shown)} of {len(videos)} videos of this run" + \
        (f" ({more} more not shown)" if more else "") + "</p>"
    return "<h2>Contact sheet</h2>" + note + "".join(cards)


def _video_card(video: dict[str, Any], pts_s: list[float], storage: StorageConfig, limits: LimitsConfig,
                tmp_dir: str) -> str:
    """One video: facts, caption, hashtags, transcript snippet and a row of sampled frames."""
    from extract.media.sampling import spread_indices

    chosen = [pts_s[i] for i in spread_indices(len(pts_s), FRAMES_PER_VIDEO)]
    try:
        thumbs = sampled_thumbnails(video["uri"], chosen, storage=storage, limits=limits, tmp_dir=tmp_dir,
                                    content_sha256=video["content_sha256"], file_bytes=video["file_bytes"])
        strip = "".join(f"<figure><img alt=\"frame at {t:.2f} s\" src=\"{_png_uri(_encode_png(img))}\">"
                        f"<figcaption>{t:.2f} s</figcaption></figure>" for t, img in zip(chosen, thumbs))
        strip = strip or "<span class=\"muted\">no sampled frames</span>"
    except VideoError as exc:
        strip = f"<p class=\"bad\">frames not shown: {_e(exc.error_type)}: {_e(_clip_text(str(exc), MESSAGE_CHARS))}</p>"
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
    return (
        f"<div class=\"video\"><h3><code>{_e(video['video_id'])}</code></h3>"
        f"<p>{_e(facts)} · hashtags: {_e(tags)}</p>"
        f"<p>caption: {caption}</p>"
        f"<p>audio: {_e(audio)} · transcript: {speech}</p>"
        f"<p>on-screen text: {on_screen}</p>"
        + (f"<p>top labels (zero-shot similarity, not moderation): {labels}</p>" if labels else "") +
        f"<div class=\"frames\">{strip}</div>"
        f"<p class=\"muted\">{_e(video['uri'])}</p></div>"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def sampled_thumbnails(uri: str, pts_s: Sequence[float], *, storage: StorageConfig | None = None,
                       limits: LimitsConfig | None = None, tmp_dir: str | None = None,
                       content_sha256: str | None = None, file_bytes: int | None = None,
                       max_side_px: int = THUMB_PX) -> list[np.ndarray]:
    """The frames of the video at ``uri`` presented at ``pts_s`` (seconds from the video
    stream's start, as in ``frame_embeddings``), as ``(h, w, 3) uint8`` RGB images whose longer
    side is ``max_side_px``, display orientation (rotation and pixel aspect applied).

    Remote URIs are fetched into ``tmp_dir`` (a temporary folder when None). With
    ``content_sha256``, a file whose bytes changed since it was processed is refused, so the
    frames shown are those that were embedded. Raises ``VideoError`` on any failure.
    """
    limits = limits or LimitsConfig()
    if tmp_dir is None:
        with tempfile.TemporaryDirectory(prefix="extract-report-") as tmp:
            return sampled_thumbnails(uri, pts_s, storage=storage, limits=limits, tmp_dir=tmp,
                                      content_sha256=content_sha256, file_bytes=file_bytes, max_side_px=max_side_px)
    path, sha256, _ = fetch(uri, tmp_dir, storage, max_bytes=file_bytes or limits.max_file_bytes)
    try:
        if content_sha256 is not None and sha256 != content_sha256:
            raise VideoError("ContentChanged", f"{uri!r} changed since it was processed (sha256 {sha256[:12]}… "
                                               f"is not the committed {content_sha256[:12]}…)")
        return read_frames_at(path, pts_s, limits, max_side_px)
    finally:
        if is_remote(uri):  # one fetched copy at a time, however many videos the report shows
            os.remove(path)


def read_frames_at(path: str, pts_s: Sequence[float], limits: LimitsConfig, max_side_px: int = THUMB_PX,
                   decode_threads: int = 1) -> list[np.ndarray]:
    """Decode the frames of a local video presented at ``pts_s`` (seconds from the video
    stream's start), in the order given; ``(h, w, 3) uint8`` RGB, longer side ``max_side_px``.

    Uses the decode stage's reader (``extract.media.video``): seeks where ``plan_seeks`` says a seek
    pays, drops non-reference frames before each target inside the decoder, and enforces
    ``limits.timeout_s``. Raises ``VideoError`` (open, decode, timeout, a target past the end).
    """
    import av

    from extract.media.limits import Deadline
    from extract.media.probe import open_input, read_probe
    from extract.media.sampling import plan_seeks
    from extract.media.video import VideoReader, frames_at

    if not len(pts_s):
        return []
    requested = np.asarray(pts_s, np.float64)
    order = np.argsort(requested, kind="stable")
    # The first frame at or after (pts - tolerance) is the frame that was sampled at pts.
    targets = np.maximum(requested[order] - PTS_TOLERANCE_S, 0.0)
    try:
        with open_input(path, limits, decode_threads) as container:
            info = read_probe(container)
            reader = VideoReader(container, info, Deadline(limits.timeout_s, path), skip_nonref=True,
                                  max_pixels=limits.max_pixels)
            sar = info.sample_aspect_ratio

            def thumbnail(frame: Any) -> np.ndarray:
                return _thumbnail(frame, display_rotation(frame.rotation), sar, max_side_px)

            images, _ = frames_at(reader, targets, plan_seeks(targets, info.keyframes, reader.min_skip_s),
                                   thumbnail)
    except av.error.FFmpegError as exc:
        raise VideoError("DecodeError", f"{path!r}: {exc}") from exc
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for rank, i in enumerate(order):
        out[i] = images[rank]
    return out


def _thumbnail(frame: Any, rotation: int, sample_aspect_ratio: float, max_side_px: int) -> np.ndarray:
    """A decoded frame scaled (libswscale) so its displayed longer side is ``max_side_px``."""
    shown_w, shown_h = frame.width * sample_aspect_ratio, frame.height
    scale = max_side_px / max(shown_w, shown_h)
    width, height = max(2, round(shown_w * scale)), max(2, round(shown_h * scale))
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90))) if rotation else rgb


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
