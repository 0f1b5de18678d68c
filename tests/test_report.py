"""The run report page (``DST/_runs/<run_id>.html``): self-contained, escaped, right pictures.

Fast tests build a committed output with ``extract.tables.writer`` from fabricated rows whose
frames, perceptual hashes and thumbnails come from decoding real PyAV-made clips with the decode
stage's own ``decode_video``; the clips are deleted before the report is written (it reads the
tables only). The end-to-end test reports on a real tiny ``extract run`` (shared with
tests/test_queries.py through ``committed_tiny_run``).
"""

from __future__ import annotations

import base64
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
    assert "error rate 25.0%" in page
    for stage in ("decode", "whisper", "clip"):
        assert f"<td>{stage}</td>" in page
    assert "3.250" in page  # whisper seconds in the timings table
    assert "<td>decode</td><td>DecodeError</td><td class=\"num\">1</td>" in page
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
    videos = Catalog(str(dst)).read("videos", ["audio_kind", "top_topic"]).to_pylist()
    assert page.count("<p>audio: ") == len(ids) and page.count("<p>on-screen text: ") == len(ids)
    assert all(f"<p>audio: {v['audio_kind']}" in page for v in videos)
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
        assert "exact: matching frames" in section and "found by run d1" in section
        new, original_side = section.split("copy of: ", 1)
        assert html.escape(copy_id) in new and html.escape("orig</code>") in original_side
        assert _jpegs(new) == thumbs[copy_id] and _jpegs(original_side) == thumbs["orig</code>"]
        assert "other" not in section
        _assert_markup_is_ours(page, [copy_id, "orig</code>"])
    page = Path(write_run_report(str(dst), "r1")).read_text(encoding="utf-8")
    assert "no near copies or re-uploads found for this run" in page  # r1's videos are originals
