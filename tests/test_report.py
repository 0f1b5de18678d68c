"""The run report page (``DST/_runs/<run_id>.html``): self-contained, escaped, right pictures.

Fast tests build a committed output with ``extract.tables.writer`` from fabricated rows whose
frames, perceptual hashes and thumbnails come from decoding real PyAV-made clips with the decode
stage's own ``decode_video``; the clips are deleted before the report is written (it reads the
tables only). The end-to-end test reports on a real tiny ``extract run`` (shared with
tests/test_queries.py through ``committed_tiny_run``). ``every_kind`` commits a run of every kind
(run, duplicates, maintain, forget, migrate) to one output; each kind's page is checked against
its record and its Delta commits, and every page is loaded in headless Chromium
(``tests/headless.py``) at two widths; those tests skip only where no Chromium is installed.
"""

from __future__ import annotations

import base64
from collections import Counter
import hashlib
import html
from html.parser import HTMLParser
import io
import json
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from extract.tables.catalog import Catalog
from extract.config import Config, StorageConfig
from extract.report import write_run_report
from extract.tools.samples import write_clip
from extract.media.video import THUMB_SIDE, decode_video
from extract.models.preprocess import preprocess_spec
from extract.stages.decode import decode_columns
from test_queries import committed_tiny_run
from test_writer import finished_row, write_run


FPS = 12.0
HOSTILE = "<script>alert(1)</script>#x"
IMG_SRC = re.compile(r"<img[^>]*\ssrc=\"([^\"]*)\"")
DECODE_CONFIG = Config().replace(**{"models.clip.pretrained": None})
FROM_DECODE = ("pts_s", "phash", "thumbnail_jpeg", "thumbnail_bytes", "thumbnail_index")


def _clip(path: Path, duration_s: float = 3.0, width: int = 192, height: int = 108, rotation: int = 0,
          seed: int = 0) -> Path:
    return write_clip(path, duration_s, width, height, FPS, audio=None, rotation=rotation, gop=6, seed=seed)


def _decoded(path: Path, thumbnails: int) -> dict:
    """The decode stage's pts, hashes and thumbnails of a clip (``decode_video``, in this process)."""
    config = DECODE_CONFIG.replace(**{"output.thumbnails": thumbnails})
    spec = preprocess_spec(config.models.clip)
    columns = decode_columns(decode_video(str(path), config, spec, audio=False), spec.image_size, "uniform")
    return {name: columns[name] for name in FROM_DECODE}


def _video_row(video_id: str, uri: str, path: Path | None, failed: bool = False, thumbnails: int = 4,
               **over) -> dict:
    """A finished row; with ``path``, its frames' pts, hashes and thumbnails decoded from the clip."""
    decoded = _decoded(path, thumbnails) if path is not None and not failed else {"pts_s": np.zeros(1, np.float32)}
    row = finished_row(video_id, n_frames=len(decoded["pts_s"]), failed=failed)
    row.update(decoded, uri=uri)
    if path is not None:
        data = path.read_bytes()
        row["content_sha256"], row["file_bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    row.update(over)
    return row


def _record(run_id: str, n_ok: int, n_err: int, errors_by: dict) -> dict:
    config = Config()
    n = n_ok + n_err
    return {
        "run_id": run_id, "kind": "run", "status": "committed", "input": "manifest.jsonl", "output": "out",
        "started_at": "2026-11-25T00:00:00+00:00", "ended_at": "2026-11-25T00:00:09+00:00", "wall_s": 9.0,
        "pipeline_version": "test", "options": {"overwrite": False, "retry_errors": False},
        "config": config.to_dict(), "config_hash": config.config_hash, "feature_hash": config.feature_hash_of({}),
        "models": {"clip": "tiny#abc", "whisper": "tiny#def"},
        "counts": {"manifest_rows": n, "processed": n, "ok": n_ok, "errors": n_err, "skipped": 0,
                   "skipped_by_reason": {}},
        "tables": {"videos": n_ok, "errors": n_err},
        "errors_by_stage_type": errors_by, "error_rate": round(n_err / n, 4),
        "timings_s": {"decode": 1.5, "whisper": 3.25, "clip": 2.0, "write": 0.1, "supersede": 0.0},
        "throughput": {"videos_per_s": 0.9, "frames_per_s": 4.5, "audio_s_per_s": 2.0},
    }


def _commit(dst: str, rows: list[dict], run_id: str, errors_by: dict) -> None:
    n_err = sum(1 for r in rows if r["error_stage"])
    write_run(dst, rows, run_id, _record(run_id, len(rows) - n_err, n_err, errors_by))


@pytest.fixture(scope="module")
def synthetic_output(tmp_path_factory):
    """A committed run: a landscape clip, a portrait (rotation 90) clip with a hostile caption,
    a video decoded with ``output.thumbnails: 0``, and a failed video with a hostile error
    message. The clips are deleted once decoded: the report must not need them."""
    root = tmp_path_factory.mktemp("report")
    clips = root / "clips"
    land = _clip(clips / "land.mp4")
    portrait = _clip(clips / "portrait.mp4", width=160, height=96, rotation=90, seed=1)
    bare = _clip(clips / "bare.mp4", seed=2)
    rows = [
        _video_row("land", str(land), land, hashtags=["beach", "fyp"],
                   transcript_text="the waves are calm today " * 30),
        _video_row("portrait", f"file://{portrait}", portrait, thumbnails=3, caption=HOSTILE,
                   hashtags=["x"], transcript_text=HOSTILE),
        _video_row("bare<&>", str(bare), bare, thumbnails=0),
        _video_row("broken", str(root / "broken.mp4"), None, failed=True),
    ]
    rows[3]["error_message"] = "'broken': <img src=x onerror=alert(2)> moov atom not found"
    for clip in (land, portrait, bare):
        clip.unlink()
    dst = root / "out"
    _commit(str(dst), rows, "r1", {"decode/DecodeError": 1})
    return dst


@pytest.fixture(scope="module")
def synthetic_page(synthetic_output):
    start = time.process_time()
    uri = write_run_report(str(synthetic_output), "r1")
    elapsed = time.process_time() - start
    assert uri == f"{synthetic_output}/_runs/r1.html"
    return Path(uri).read_text(encoding="utf-8"), elapsed


def _images(page: str) -> list[Image.Image]:
    """The page's images: PNG charts and JPEG thumbnails, all inline ``data:`` URIs."""
    out = []
    for src in IMG_SRC.findall(page):
        kind = re.match(r"data:image/(png|jpeg);base64,", src)
        assert kind, src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        img = Image.open(io.BytesIO(data))
        assert img.format == kind.group(1).upper()
        img.load()
        out.append(img)
    return out


def _jpegs(page: str) -> list[bytes]:
    """The JPEG files of the page's thumbnails, in page order."""
    return [base64.b64decode(src.split(",", 1)[1]) for src in IMG_SRC.findall(page)
            if src.startswith("data:image/jpeg;base64,")]


def _assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<iframe" not in page.lower()
    assert "url(" not in page  # no CSS-loaded assets either


def test_page_is_self_contained_and_escaped(synthetic_page):
    page, _ = synthetic_page
    _assert_self_contained(page)
    assert "alert(1)" in page and "<script>alert(1)" not in page
    assert html.escape(HOSTILE) in page  # caption and transcript, escaped
    assert "onerror=alert(2)" in page and "<img src=x" not in page
    assert html.escape("bare<&>") in page and "bare<&>" not in page
    for video_id in ("land", "portrait", "broken"):
        assert video_id in page


def test_page_reports_summary_timings_and_errors(synthetic_page):
    page, _ = synthetic_page
    assert Config().config_hash in page and "tiny#abc" in page and "tiny#def" in page
    # 1 of 4 failed, limit 50 %: healthy
    assert re.search(r'<span class="ok">run committed, error rate <span data-from="record" '
                     r'data-path="\[&quot;error_rate&quot;\]">25.0 %</span> within', page)
    for stage in ("decode", "whisper", "clip"):
        assert f"<td>{stage}</td>" in page
    assert ">3.250</td>" in page  # whisper seconds in the timings table
    assert re.search(r"<td>decode</td><td>DecodeError</td><td class=\"num\"[^>]*>1</td>", page)
    assert "moov atom not found" in page
    assert "the waves are calm today" in page and " …" in page  # transcript snippet, cut


def test_contact_sheet_shows_the_decode_stage_thumbnails(synthetic_output, synthetic_page):
    page, _ = synthetic_page
    images = _images(page)
    chart, thumbs = images[0], images[1:]
    assert chart.width > 400
    # land: 4 thumbnails (landscape); portrait: 3 (portrait, rotation applied); bare: a placeholder.
    assert len(thumbs) == 4 + 3
    assert all(max(t.size) == THUMB_SIDE for t in thumbs)
    assert all(t.width > t.height for t in thumbs[:4])
    assert all(t.height > t.width for t in thumbs[4:])
    assert "no thumbnails stored (the run had output.thumbnails: 0)" in page
    # the very files stored in frame_embeddings, in frame order, with their times
    stored = Catalog(str(synthetic_output)).read("frame_embeddings", ["video_id", "frame_index", "pts_s",
                                                                      "thumbnail_jpeg"]).to_pylist()
    expected = [r for v in ("land", "portrait") for r in sorted(
        (r for r in stored if r["video_id"] == v and r["thumbnail_jpeg"] is not None), key=lambda r: r["frame_index"])]
    assert _jpegs(page) == [r["thumbnail_jpeg"] for r in expected]
    assert all(f"<figcaption>{r['pts_s']:.2f} s</figcaption>" in page for r in expected)


def test_report_is_fast(synthetic_page):
    # CPU seconds of this process (matplotlib import included): wall time on a shared CI box
    # measures the neighbours.
    _, elapsed = synthetic_page
    assert elapsed < 3.0, f"report took {elapsed:.2f} CPU s"


def test_unknown_run_is_refused(synthetic_output):
    with pytest.raises(ValueError, match="no committed manifest"):
        write_run_report(str(synthetic_output), "nope")


def test_report_on_object_store(s3_server, tmp_path):
    """Output on S3: the report is written there, its thumbnails read from the tables there."""
    import boto3

    from extract.io.storage import filesystem_for

    clip = _clip(tmp_path / "s3clip.mp4")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="report-bucket")
    fs, _ = filesystem_for("s3://report-bucket/x")
    with fs.open_output_stream("report-bucket/videos/s3clip.mp4") as out:
        out.write(clip.read_bytes())
    row = _video_row("s3clip", "s3://report-bucket/videos/s3clip.mp4", clip, thumbnails=3)
    _commit("s3://report-bucket/out", [row], "r1", {})
    uri = write_run_report("s3://report-bucket/out", "r1", StorageConfig())
    assert uri == "s3://report-bucket/out/_runs/r1.html"
    with fs.open_input_stream("report-bucket/out/_runs/r1.html") as fh:
        page = fh.read().decode()
    _assert_self_contained(page)
    assert len(_images(page)) == 1 + 3 and "no thumbnails stored" not in page
    assert "no errors" in page
    assert len(Catalog("s3://report-bucket/out").runs) == 1  # the .html is not read as a run


# --------------------------------------------------------------------------- real run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, small_samples, tiny_config):
    return committed_tiny_run(small_samples, tiny_config, tmp_path_factory)


def test_report_of_a_real_run(tiny_run, small_samples):
    dst, run_id = tiny_run
    start = time.process_time()
    uri = write_run_report(str(dst), run_id)
    elapsed = time.process_time() - start
    page = Path(uri).read_text(encoding="utf-8")
    _assert_self_contained(page)
    ids = [json.loads(line)["video_id"] for line in small_samples.read_text().splitlines()]
    for video_id in ids:
        assert f"<code>{html.escape(video_id)}</code>" in page
    record = json.loads((dst / "_runs" / f"{run_id}.json").read_text())
    assert record["config_hash"] in page and record["models"]["clip"] in page
    # per video: its audio kind and speech share, its on-screen text and its top labels
    videos = Catalog(str(dst)).read("videos", ["audio_kind", "has_audio", "top_topic"]).to_pylist()
    assert page.count("<p>audio: ") == len(ids) and page.count("<p>on-screen text: ") == len(ids)
    assert all(f"<p>audio: {v['audio_kind'] if v['has_audio'] else 'no audio track'}" in page for v in videos)
    assert all(f"topic: {v['top_topic']} (" in page for v in videos)
    # the thumbnails the decode children made during the run, 4 per video (output.thumbnails)
    frames = Catalog(str(dst)).read("frame_embeddings", ["video_id", "frame_index", "thumbnail_jpeg"]).to_pylist()
    stored = [r for r in frames if r["thumbnail_jpeg"] is not None]
    shown = sorted(r["video_id"] for r in Catalog(str(dst)).read("videos", ["video_id"]).to_pylist())[:6]
    assert {v: sum(r["video_id"] == v for r in stored) for v in shown} == {
        v: min(4, sum(r["video_id"] == v for r in frames)) for v in shown}
    assert sorted(_jpegs(page)) == sorted(r["thumbnail_jpeg"] for r in stored if r["video_id"] in shown)
    assert len(_images(page)) == 1 + len(_jpegs(page)) and "no thumbnails stored" not in page
    assert elapsed < 3.0, f"report took {elapsed:.2f} CPU s"


def test_forget_rewrites_the_reports_that_showed_the_video(synthetic_output, tmp_path):
    """`extract forget` deletes the rows, then rewrites each run report that showed them."""
    import shutil

    from conftest import run_cli

    dst = tmp_path / "out"
    shutil.copytree(synthetic_output, dst)
    write_run_report(str(dst), "r1")
    page = (dst / "_runs" / "r1.html").read_text(encoding="utf-8")
    assert "<code>land</code>" in page and "the waves are calm" in page
    ids = tmp_path / "ids.txt"
    ids.write_text("land\n")
    proc = run_cli("forget", str(dst), "--ids", str(ids))
    assert proc.returncode == 0, proc.stderr
    assert "forgot 1 of 1 ids" in proc.stdout and "1 run reports rewritten" in proc.stdout
    page = (dst / "_runs" / "r1.html").read_text(encoding="utf-8")
    assert "<code>land</code>" not in page and "the waves are calm" not in page
    assert "<code>portrait</code>" in page


class _TagCollector(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer would see them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


INJECTIONS = ('"><img src=x onerror=alert(1)>', "<script>alert(1)</script>", "' onmouseover='alert(1)",
              "<a href=\"https://evil.example/\">x</a>", "</code><iframe src=//evil.example>")


def test_hostile_text_never_becomes_markup(tmp_path):
    """Ids, captions, transcripts, hashtags, uris and error messages made of markup: parsed with
    ``html.parser``, the page has no script, frame, object, link, base or form element, no ``on*``
    attribute, and no ``src``/``href`` other than inline ``data:`` images; the injected text is
    there as text."""
    clip = _clip(tmp_path / "clip.mp4")
    rows = [_video_row(INJECTIONS[0], str(clip), clip, caption=" ".join(INJECTIONS),
                       hashtags=[INJECTIONS[2]], transcript_text=INJECTIONS[1] + INJECTIONS[3]),
            _video_row(INJECTIONS[4], str(tmp_path / INJECTIONS[1]), None, failed=True)]
    rows[1]["error_message"] = " ".join(INJECTIONS)
    dst = tmp_path / "out"
    _commit(str(dst), rows, "r1", {"decode/DecodeError": 1})
    page = Path(write_run_report(str(dst), "r1")).read_text(encoding="utf-8")
    _assert_markup_is_ours(page, INJECTIONS)


def _assert_markup_is_ours(page: str, injected: Sequence[str]) -> None:
    """Parsed with ``html.parser``: no active element, no ``on*`` attribute, no ``src``/``href``
    but inline ``data:`` images, CSP ``default-src 'none'``; each ``injected`` text whole as text."""
    parser = _TagCollector()
    parser.feed(page)
    parser.close()
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "iframe", "frame", "object", "embed", "link", "base", "form", "a", "svg"}, names
    for tag, attrs in parser.tags:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            if name in ("src", "href", "action", "formaction", "srcset", "background"):
                assert tag == "img" and name == "src" and re.match(r"data:image/(png|jpeg);base64,", value), (tag, name)
    (policy,) = [dict(a)["content"] for t, a in parser.tags if t == "meta" and dict(a).get("http-equiv")]
    assert policy.startswith("default-src 'none'")
    text = "".join(parser.text)
    for one in injected:
        assert one in text  # shown as text, whole


def test_duplicates_are_shown_with_both_videos_thumbnails(tmp_path):
    """A re-upload committed by a later run, found by a real ``duplicates`` run: that run's
    report (and the later processing run's) shows the pair, the new video's thumbnails beside
    those of the committed original, read from the tables; the hostile ids stay text."""
    from extract.pipeline.duplicates import find_duplicates

    original = _clip(tmp_path / "orig.mp4", seed=3)
    other = _clip(tmp_path / "other.mp4", seed=4)
    copy_id = INJECTIONS[0]  # an id made of markup
    dst = tmp_path / "out"
    _commit(str(dst), [_video_row("orig</code>", str(original), original),
                       _video_row("other", str(other), other)], "r1", {})
    reupload = _video_row(copy_id, str(original), original, thumbnails=2, dt="2026-11-25",
                          upload_ts="2026-11-25T10:00:00Z")
    _commit(str(dst), [reupload], "r2", {})
    original.unlink()
    other.unlink()
    record = find_duplicates(str(dst), Config(), "d1", since="2026-11-25")
    assert record["counts"]["duplicates"] == 1
    catalog = Catalog(str(dst))
    stored = sorted(catalog.read("frame_embeddings", ["video_id", "frame_index", "thumbnail_jpeg"]).to_pylist(),
                    key=lambda r: r["frame_index"])
    thumbs = {v: [r["thumbnail_jpeg"] for r in stored if r["video_id"] == v and r["thumbnail_jpeg"]]
              for v in (copy_id, "orig</code>")}
    assert len(thumbs[copy_id]) == 2 and len(thumbs["orig</code>"]) == 4
    for run_id in ("d1", "r2"):
        page = Path(write_run_report(str(dst), run_id)).read_text(encoding="utf-8")
        section = page.split("<h2>Duplicates</h2>", 1)[1].split("<h2>", 1)[0]
        assert "exact: frames matching" in section
        assert ("found by the search runs <code>d1</code>" in section) == (run_id == "r2")
        new, original_side = section.split("copy of: ", 1)
        assert html.escape(copy_id) in new and html.escape("orig</code>") in original_side
        assert _jpegs(new) == thumbs[copy_id] and _jpegs(original_side) == thumbs["orig</code>"]
        assert "other" not in section
        _assert_markup_is_ours(page, [copy_id, "orig</code>"])
    # d1 searched the videos of 2026-11-25 (r2's): r1's were compared against, not searched
    page = Path(write_run_report(str(dst), "r1")).read_text(encoding="utf-8")
    assert "not searched yet: no near-copy search has run on this run's videos" in page


# --------------------------------------------------------------------------- every kind of run


LOW_TRANSCRIPT = [{"start_s": 0.0, "end_s": 2.0, "text": "uh huh", "avg_logprob": -4.1, "no_speech_prob": 0.3,
                   "compression_ratio": 1.1, "temperature": 1.0}]
OCR_LINES = [{"frame_index": 0, "pts_s": 0.0, "line_index": 0, "text": "SALE", "score": 0.97,
              "box": [0, 0, 10, 0, 10, 5, 0, 5], "frame_width": 192, "frame_height": 108},
             {"frame_index": 1, "pts_s": 1.0, "line_index": 0, "text": "blurry words", "score": 0.55,
              "box": [0, 0, 10, 0, 10, 5, 0, 5], "frame_width": 192, "frame_height": 108}]
CUTS = (1.4, 2.6)  # s: the shots of "talk" start at 0, 1.4 and 2.6
UNBROKEN = "w" * 900  # a transcript without a space: must wrap in its card


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    """One output with a committed run of every kind, each with its report written:
    ``r1`` (run: 3 videos, 2 failed, so its error rate 40 % is near the 50 % limit; "talk" has a
    low-confidence transcript, a low-scoring OCR line, a near-chance label, three shots, motion
    and languages), ``r2`` (run: a re-upload of "talk" and a new clip), ``d1`` (duplicates
    over r2's date), ``m1`` (maintain), ``f1`` (forget a failed id), ``g1`` (migrate of an
    output already in Delta). Returns ``(dst, {run_id: kind})``."""
    from extract.pipeline.duplicates import find_duplicates
    from extract.tables.forget import forget_videos
    from extract.tables.maintenance import maintain
    from extract.tables.migration import migrate

    root = tmp_path_factory.mktemp("kinds")
    talk = _clip(root / "talk.mp4", duration_s=4.0, seed=5)
    plain = _clip(root / "plain.mp4", seed=6)
    extra = _clip(root / "extra.mp4", seed=7)
    fresh = _clip(root / "fresh.mp4", seed=8)
    dst = root / "out"
    rows = [
        _video_row("talk", str(talk), talk, duration_s=4.0, has_audio=True, audio_kind="speech", speech_ratio=0.8,
                   audio_s=4.0, transcript_text="uh huh", language="en", segments_json=json.dumps(LOW_TRANSCRIPT),
                   ocr_text=["SALE", "blurry words"], ocr_lines_json=json.dumps(OCR_LINES),
                   labels_topic=[("food", 0.3), ("sports", 0.3), ("music", 0.4)], top_topic="music",
                   top_topic_score=0.4, shots_json=json.dumps([{"start_s": 0.0, "end_s": CUTS[0]},
                                                               {"start_s": CUTS[0], "end_s": CUTS[1]},
                                                               {"start_s": CUTS[1], "end_s": 4.0}]),
                   shot_count=3, cuts_per_minute=30.0, mean_shot_s=1.33, motion_score=0.123, motion_source="mvs",
                   caption_language="de", caption_language_prob=0.91, ocr_language="en", ocr_language_prob=0.77),
        _video_row("plain", str(plain), plain, transcript_text=UNBROKEN, language="en"),
        _video_row("extra", str(extra), extra, thumbnails=2),
        _video_row("broken1", str(root / "broken1.mp4"), None, failed=True),
        _video_row("broken2", str(root / "broken2.mp4"), None, failed=True),
    ]
    _commit(str(dst), rows, "r1", {"decode/DecodeError": 2})
    assert sorted(Catalog(str(dst)).read("errors", ["video_id"])["video_id"].to_pylist()) == ["broken1", "broken2"]
    _commit(str(dst), [_video_row("talk-copy", str(talk), talk, duration_s=4.0, dt="2026-11-25",
                                  upload_ts="2026-11-25T10:00:00Z"),
                       _video_row("fresh", str(fresh), fresh, dt="2026-11-25", upload_ts="2026-11-25T11:00:00Z")],
            "r2", {})
    find_duplicates(str(dst), Config(), "d1", since="2026-11-25")
    maintain(Catalog(str(dst)), retention_hours=0, run_id="m1")
    forget_videos(Catalog(str(dst)), {"broken2"}, "f1")
    migrate(str(dst), "g1")
    kinds = {"r1": "run", "r2": "run", "d1": "duplicates", "m1": "maintain", "f1": "forget", "g1": "migrate"}
    for run_id in kinds:
        write_run_report(str(dst), run_id)
    return dst, kinds


class _Sourced(HTMLParser):
    """A page's sourced numbers (elements with ``data-from``: ``[source, path, text]``) and its
    text nodes as ``(h2 section, text, inside a sourced element or <pre>)``."""

    VOID = {"img", "meta", "br", "hr", "input", "link", "source", "wbr"}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.sourced: list[list] = []
        self.texts: list[tuple[str, str, bool]] = []
        self.stack: list[tuple[str, int | None]] = []
        self.section = ""
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        index = None
        if "data-from" in attrs:
            self.sourced.append([attrs["data-from"], json.loads(attrs["data-path"]), ""])
            index = len(self.sourced) - 1
        if tag not in self.VOID:
            self.stack.append((tag, index))
        if tag == "h2":
            self.section = ""

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "h2":
            self.section += data
        open_sourced = [i for _, i in self.stack if i is not None]
        for i in open_sourced:
            self.sourced[i][2] += data
        self.texts.append((self.section, data, bool(open_sourced) or any(t in ("pre", "title", "h1")
                                                                          for t, _ in self.stack)))


GENERIC_SECTIONS = ("Summary", "Commits", "Timings", "The record")


def _history_metrics(dst: Path, record: dict, runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per table, the row and file counts of the Delta commits ``record``'s run made, read with
    deltalake's ``history()``: the commits after the previous run's pinned version up to the
    run's, less those another run's id names."""
    from deltalake import DeltaTable

    out = {}
    for table, version in record["delta_versions"].items():
        before = max([r["delta_versions"].get(table, -1) for r in runs
                      if "delta_versions" in r and r["seq"] < record["seq"]] + [-1])
        metrics: Counter = Counter()
        for commit in DeltaTable(str(dst / table)).history():
            if before < commit["version"] <= version and commit.get("extract.run_id") in (None, record["run_id"]):
                for name, value in (commit.get("operationMetrics") or {}).items():
                    if isinstance(value, (int, float)) and ("rows" in name.lower() or "files" in name.lower()):
                        metrics[name] += value
        out[table] = dict(metrics)
    return out


def _shown_matches(text: str, value) -> bool:
    """Whether ``text`` shows ``value`` to the precision it prints (``25.0 %`` shows 0.25)."""
    text = text.strip()
    if value is None:
        return text == "-"
    number = text.rstrip(" %")
    decimals = len(number.split(".")[1]) if "." in number else 0
    scale = 100 if text.endswith("%") else 1
    return abs(float(number) - scale * value) <= 0.5 * 10 ** -decimals + 1e-9


def _strings(value) -> set[str]:
    """Every string (keys included) inside a record."""
    if isinstance(value, dict):
        return {str(k) for k in value} | {s for v in value.values() for s in _strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in _strings(v)}
    return {value} if isinstance(value, str) else set()


def test_every_kind_shows_the_numbers_of_its_record_and_commits(every_kind):
    """Each kind's page: every number it shows with a source is its record's (or the sum over
    its Delta commits, read here with deltalake's history), and the summary, commits, timings
    and record sections show no number without one."""
    dst, kinds = every_kind
    catalog = Catalog(str(dst))
    runs = catalog.all_runs
    for run_id, kind in kinds.items():
        record = next(r for r in runs if r["run_id"] == run_id)
        page = (dst / "_runs" / f"{run_id}.html").read_text(encoding="utf-8")
        assert f"<title>extract {kind} {run_id}</title>" in page
        metrics = _history_metrics(dst, record, runs)
        parsed = _Sourced(page)
        assert len(parsed.sourced) > 5, kind
        for source, path, text in parsed.sourced:
            if source == "commit":
                value = metrics[path[0]].get(path[1], 0)
            else:
                value = record
                for key in path:  # "-" shows a number the record does not have
                    value = value.get(key) if isinstance(value, dict) else value[key] if value is not None else None
                value = len(value) if source == "length" else value
            assert _shown_matches(text, value), (kind, source, path, text, value)
        known = sorted(_strings(record) | {"(exit 3)"}, key=len, reverse=True)
        for section, text, sourced in parsed.texts:
            if section in GENERIC_SECTIONS and not sourced:
                for s in known:
                    text = text.replace(s, "")
                assert not re.search(r"\d", text), (kind, section, text)
        commits = page.split("<h2>Commits</h2>", 1)[1].split("<h2>", 1)[0]
        assert "num added rows" in commits or kind in ("maintain", "migrate", "forget"), kind
    # the numbers are the real ones: rows the tables hold by each run
    d1 = (dst / "_runs" / "d1.html").read_text(encoding="utf-8")
    written = catalog.read("duplicates", ["run_id"]).num_rows
    assert written == 1 and re.search(r'data-path="\[&quot;duplicates&quot;, &quot;num_added_rows&quot;\]">'
                                      rf"{written}<", d1)
    assert "no timings recorded" not in d1 and "<summary>config</summary>" not in d1
    r1 = (dst / "_runs" / "r1.html").read_text(encoding="utf-8")
    assert re.search(r'data-path="\[&quot;videos&quot;, &quot;num_added_rows&quot;\]">3<', r1)
    f1 = (dst / "_runs" / "f1.html").read_text(encoding="utf-8")
    assert re.search(r'data-path="\[&quot;errors&quot;, &quot;num_deleted_rows&quot;\]">1<', f1)


def test_error_rate_colour_follows_its_health(every_kind):
    """At or over 80 % of limits.max_error_rate a warning, over it a failure."""
    from extract.report import error_health

    config = Config().to_dict()
    assert [error_health({"error_rate": rate, "config": config})[0] for rate in (0.0, 0.39, 0.4, 0.5, 0.51)] == \
        ["ok", "ok", "near", "near", "over"]
    assert error_health({"kind": "maintain"}) is None
    dst, _ = every_kind
    record = next(r for r in Catalog(str(dst)).runs if r["run_id"] == "r1")
    assert record["error_rate"] == 0.4
    page = (dst / "_runs" / "r1.html").read_text(encoding="utf-8")
    assert '<span class="warn">run committed, error rate <span' in page and "near limits.max_error_rate=" in page
    assert '<span class="ok">run committed' in (dst / "_runs" / "r2.html").read_text(encoding="utf-8")


def test_run_report_shows_confidence_shots_and_signals(every_kind):
    dst, _ = every_kind
    page = (dst / "_runs" / "r1.html").read_text(encoding="utf-8")
    talk = page.split("<code>talk</code>", 1)[1].split("<div class=\"video\">", 1)[0]
    assert ("low confidence: decoded at temperature 1.0 after the fallback; mean token log-probability -4.10 "
            "(under -1)") in talk
    assert "“SALE”" in talk and "“SALE” <span" not in talk  # read with a high score: no score shown
    assert "“blurry words” <span class=\"low\">(score 0.55, low)</span>" in talk
    assert "topic: music (0.40) <span class=\"low\">low: chance is 0.33</span>" in talk
    assert "caption language de (0.91) · on-screen language en (0.77)" in talk
    assert "motion 0.123 (mvs)" in talk and "3 shots, 30.0 cuts/min" in talk
    # the strip at the cuts: the thumbnail of the sampled frame nearest each cut
    frames = sorted((r["pts_s"], r["thumbnail_jpeg"]) for r in Catalog(str(dst)).read(
        "frame_embeddings", ["video_id", "pts_s", "thumbnail_jpeg"]).to_pylist()
        if r["video_id"] == "talk" and r["thumbnail_jpeg"])
    assert "shots: 3, cuts at 1.40 s, 2.60 s" in talk
    strip = talk.split("<div class=\"frames shots\">", 1)[1]
    assert _jpegs(strip) == [min(frames, key=lambda f: abs(f[0] - cut))[1] for cut in CUTS]
    plain = page.split("<code>plain</code>", 1)[1].split("<div class=\"video\">", 1)[0]
    assert "low confidence" not in plain and "shots:" not in plain and UNBROKEN[:200] in plain
    assert "<p>audio: no audio track · transcript: <span class=\"muted\">none (no audio)" in page  # extra
    # "not run yet" is not "none found"
    assert "not searched yet: no near-copy search has run on this run's videos" in page
    r2 = (dst / "_runs" / "r2.html").read_text(encoding="utf-8")
    section = r2.split("<h2>Duplicates</h2>", 1)[1].split("<h2>", 1)[0]
    assert "found by the search runs <code>d1</code>" in section and "exact: frames matching" in section
    assert section.count("4.0 s, ") == 2 and section.count(" kB, 320×240") == 2  # duration, size, frame of both


def test_duplicates_report_counts_candidates_and_lists_non_matches(every_kind):
    dst, _ = every_kind
    record = next(r for r in Catalog(str(dst)).runs if r["run_id"] == "d1")
    assert record["counts"]["searched"] == 2 and record["counts"]["matched"] == 1 and record["counts"]["unmatched"] == 1
    page = (dst / "_runs" / "d1.html").read_text(encoding="utf-8")
    section = page.split("<h2>Duplicates</h2>", 1)[1].split("<h2>", 1)[0]
    assert re.search(r"searched videos with no earlier copy <span[^>]*>1</span>: <code>fresh</code></p>", section)
    assert "candidate pairs <span" in section and "new: <code>talk-copy</code>" in section
    assert "copy of: <code>talk</code>" in section and "frames matching 1.00" in section


def test_contact_sheet_picks_a_varied_sample_and_lists_the_rest(every_kind):
    from extract.report import build_run_report, varied_sample

    copies = [{"video_id": f"a{i}", "content_sha256": "same", "top_topic": "dance", "audio_kind": "music"}
              for i in range(6)]
    others = [{"video_id": "z-food", "content_sha256": "f", "top_topic": "food", "audio_kind": "music"},
              {"video_id": "z-ocr", "content_sha256": "o", "top_topic": "dance", "audio_kind": "music",
               "ocr_error": "OcrError"},
              {"video_id": "z-quiet", "content_sha256": "q", "top_topic": "dance", "audio_kind": None,
               "has_audio": False}]
    picked = [v["video_id"] for v in varied_sample(copies + others, 4)]
    assert sum(p.startswith("a") for p in picked) == 1 and set(picked) >= {"z-food", "z-ocr", "z-quiet"}
    dst, _ = every_kind
    page = build_run_report(Catalog(str(dst)), "r1", max_videos=1)
    sheet = page.split("<h2>Contact sheet</h2>", 1)[1]
    assert sheet.count("<div class=\"video\">") == 1 and "1 of 3 videos of this run" in sheet
    rest = sheet.split("<h3>Not on the sheet</h3>", 1)[1]
    assert sum(f"<td>{v}</td>" in rest for v in ("talk", "plain", "extra")) == 2


# --------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def chromium():
    from headless import Chromium, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (`make chromium` installs Debian's chromium)")
    with Chromium(binary) as browser:
        yield browser


WIDTHS = (1400, 700)  # CSS pixels: a desktop window and half of one


def test_every_report_kind_renders_in_chromium(every_kind, synthetic_page, synthetic_output, chromium, tmp_path):
    """Each kind's page (and the hostile synthetic one) in headless Chromium at two widths: no
    horizontal scrolling, every image decodes, nothing asked for outside the file, no console
    message (a Content-Security-Policy refusal would be one); full-page screenshots kept."""
    dst, kinds = every_kind
    pages = {f"{kind} {run_id}": dst / "_runs" / f"{run_id}.html" for run_id, kind in kinds.items()}
    pages["run r1 (hostile)"] = synthetic_output / "_runs" / "r1.html"
    for name, path in pages.items():
        html_text = path.read_text(encoding="utf-8")
        for width in WIDTHS:
            check = chromium.check(path, width)
            assert check.title.startswith("extract "), name
            assert check.scroll_width <= check.client_width == width, (name, width, check.wide)
            assert check.images == html_text.count("<img ") and not check.broken, (name, check.broken)
            assert not check.outside_requests(path.resolve().as_uri()), (name, check.requests)
            assert not check.messages, (name, check.messages)
            shot = Image.open(io.BytesIO(check.screenshot))
            assert shot.width == width and shot.height > 300, (name, shot.size)
            (tmp_path / f"{name.replace(' ', '-')}-{width}.jpg").write_bytes(check.screenshot)


def test_the_browser_check_sees_overflow_broken_images_and_outside_loads(chromium, tmp_path):
    """The checks above can fail: a wide block, an image that does not decode, an image from
    the network, and one the reports' Content-Security-Policy refuses (asked for all the same,
    then blocked, with a console message)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body><div style=\"width:2000px\">wide</div>"
                   "<img alt=\"broken\" src=\"data:image/png;base64,AAAA\">"
                   "<img alt=\"outside\" src=\"http://127.0.0.1:9/x.png\"></body></html>")
    check = chromium.check(bad, 700)
    assert check.scroll_width > check.client_width and check.wide
    assert "broken" in check.broken and check.images == 2
    assert check.outside_requests(bad.resolve().as_uri()) == ["http://127.0.0.1:9/x.png"]
    policy = tmp_path / "policy.html"
    policy.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                      "content=\"default-src 'none'; img-src data:\"><title>p</title></head>"
                      "<body><img alt=\"outside\" src=\"http://127.0.0.1:9/y.png\"></body></html>")
    check = chromium.check(policy, 700)
    assert check.outside_requests(policy.resolve().as_uri()) == ["http://127.0.0.1:9/y.png"]
    assert check.blocked == ["http://127.0.0.1:9/y.png: csp"], check.blocked
    assert any("Content Security Policy" in m for m in check.messages), check.messages


def test_a_run_that_processed_nothing_has_its_timings_table_but_no_chart():
    """A rerun with nothing to do (only planning and the empty commit timed): the numbers in a
    table, no chart (drawing it was most of such a run's CPU)."""
    from extract.report import _timings_section

    record = _record("noop", 1, 0, {}) | {"counts": {"manifest_rows": 6, "processed": 0, "skipped": 6},
                                           "timings_s": {"plan": 0.087, "write": 0.294}, "error_rate": 0.0}
    section = _timings_section(record)
    assert "<td>plan</td>" in section and "<td>write</td>" in section and "<img" not in section
    assert "<img alt=\"seconds per stage\"" in _timings_section(_record("r", 3, 1, {}))
