"""The run report page (``DST/_runs/<run_id>.html``): self-contained, escaped, right frames.

Fast tests build a committed output with ``extract.tables.writer`` from fabricated rows that point at
real PyAV-made clips; the end-to-end test reports on a real tiny ``extract run`` (shared with
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

import numpy as np
import pytest
from PIL import Image

from extract.tables.catalog import Catalog
from extract.config import Config, LimitsConfig, StorageConfig
from extract.report import THUMB_PX, read_frames_at, sampled_thumbnails, write_run_report
from extract.rows import VideoError
from extract.media.samples import synthetic_frame, write_clip
from test_queries import committed_tiny_run
from test_writer import finished_row, write_run


FPS = 12.0
HOSTILE = "<script>alert(1)</script>#x"
IMG_SRC = re.compile(r"<img[^>]*\ssrc=\"([^\"]*)\"")


def _clip(path: Path, duration_s: float = 3.0, width: int = 192, height: int = 108, rotation: int = 0,
          seed: int = 0) -> Path:
    return write_clip(path, duration_s, width, height, FPS, audio=None, rotation=rotation, gop=6, seed=seed)


def _video_row(video_id: str, uri: str, path: Path | None, pts: list[float], failed: bool = False,
               **over) -> dict:
    row = finished_row(video_id, n_frames=len(pts), failed=failed)
    row["pts_s"] = np.asarray(pts, np.float32)
    row["uri"] = uri
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
    a video whose file is gone, and a failed video with a hostile error message."""
    root = tmp_path_factory.mktemp("report")
    clips = root / "clips"
    land = _clip(clips / "land.mp4")
    portrait = _clip(clips / "portrait.mp4", width=160, height=96, rotation=90, seed=1)
    gone = _clip(clips / "gone.mp4", seed=2)
    rows = [
        _video_row("land", str(land), land, [0.0, 0.75, 1.5, 2.25, 2.5], hashtags=["beach", "fyp"],
                   transcript_text="the waves are calm today " * 30),
        _video_row("portrait", f"file://{portrait}", portrait, [0.0, 1.0, 2.0], caption=HOSTILE,
                   hashtags=["x"], transcript_text=HOSTILE),
        _video_row("gone<&>", str(gone), gone, [0.0, 1.0]),
        _video_row("broken", str(root / "broken.mp4"), None, [0.0], failed=True),
    ]
    rows[3]["error_message"] = "'broken': <img src=x onerror=alert(2)> moov atom not found"
    gone.unlink()
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
    out = []
    for src in IMG_SRC.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG"
        img.load()
        out.append(img)
    return out


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
    assert html.escape("gone<&>") in page and "gone<&>" not in page
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


def test_contact_sheet_frames(synthetic_page):
    page, _ = synthetic_page
    images = _images(page)
    chart, thumbs = images[0], images[1:]
    assert chart.width > 400
    # land: 5 sampled frames -> 4 shown (landscape); portrait: 3 (portrait); gone: a placeholder.
    assert len(thumbs) == 4 + 3
    assert all(max(t.size) == THUMB_PX for t in thumbs)
    assert all(t.width > t.height for t in thumbs[:4])
    assert all(t.height > t.width for t in thumbs[4:])
    assert "frames not shown: NotFound" in page


def test_report_is_fast(synthetic_page):
    # CPU seconds of this process (matplotlib import included): wall time on a shared CI box
    # measures the neighbours.
    _, elapsed = synthetic_page
    assert elapsed < 3.0, f"report took {elapsed:.2f} CPU s"


def test_unknown_run_is_refused(synthetic_output):
    with pytest.raises(ValueError, match="no committed manifest"):
        write_run_report(str(synthetic_output), "nope")


def _best_match(thumb: np.ndarray, n_frames: int, width: int, height: int, seed: int) -> int:
    """Index of the synthetic frame that ``thumb`` (a downscaled decoded frame) looks most like."""
    h, w = thumb.shape[:2]
    errs = [np.abs(np.asarray(Image.fromarray(synthetic_frame(i, FPS, width, height, seed)).resize((w, h)),
                              np.float32) - thumb).mean() for i in range(n_frames)]
    return int(np.argmin(errs))


@pytest.mark.parametrize("pts", [[0.0, 1.0, 2.5], [2.5, 0.5, 0.5], [1.0 / FPS * 7]])
def test_frames_at_pts_are_the_sampled_frames(tmp_path, pts):
    path = _clip(tmp_path / "c.mp4", duration_s=3.0, width=192, height=108)
    thumbs = read_frames_at(str(path), pts, LimitsConfig())
    assert len(thumbs) == len(pts)
    for t, thumb in zip(pts, thumbs):
        assert thumb.dtype == np.uint8 and thumb.shape == (90, 160, 3)
        assert _best_match(thumb, int(3.0 * FPS), 192, 108, seed=0) == round(t * FPS)


def test_rotated_video_is_shown_upright(tmp_path):
    path = _clip(tmp_path / "p.mp4", width=160, height=96, rotation=90)
    (thumb,) = read_frames_at(str(path), [1.0], LimitsConfig())
    assert thumb.shape == (THUMB_PX, 96, 3)
    # Clockwise 90: the stored picture's left column becomes the top row.
    upright = np.rot90(thumb, k=1)
    assert _best_match(upright, 36, 160, 96, seed=0) == 12


def test_unreadable_or_changed_videos_raise_video_error(tmp_path):
    path = _clip(tmp_path / "c.mp4")
    with pytest.raises(VideoError, match="changed since"):
        sampled_thumbnails(str(path), [0.0], content_sha256="0" * 64)
    with pytest.raises(VideoError, match="frames end at") as exc:
        read_frames_at(str(path), [0.0, 9.0], LimitsConfig())
    assert exc.value.error_type == "DecodeError"
    playlist = tmp_path / "x.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXTINF:1,\nfile://{path}\n")
    with pytest.raises(VideoError) as exc:
        sampled_thumbnails(str(playlist), [0.0])
    assert exc.value.error_type == "UnsupportedFormat"


def test_report_on_object_store(s3_server, tmp_path):
    """Output and videos on S3: the report is written there and its frames come from S3."""
    import boto3

    from extract.tables.storage import filesystem_for

    clip = _clip(tmp_path / "s3clip.mp4")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="report-bucket")
    fs, _ = filesystem_for("s3://report-bucket/x")
    with fs.open_output_stream("report-bucket/videos/s3clip.mp4") as out:
        out.write(clip.read_bytes())
    row = _video_row("s3clip", "s3://report-bucket/videos/s3clip.mp4", clip, [0.0, 1.0, 2.0])
    _commit("s3://report-bucket/out", [row], "r1", {})
    uri = write_run_report("s3://report-bucket/out", "r1", StorageConfig())
    assert uri == "s3://report-bucket/out/_runs/r1.html"
    with fs.open_input_stream("report-bucket/out/_runs/r1.html") as fh:
        page = fh.read().decode()
    _assert_self_contained(page)
    assert len(_images(page)) == 1 + 3 and "frames not shown" not in page
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
    frames = Catalog(str(dst)).read("frame_embeddings")
    expected = sum(min(4, frames["video_id"].to_pylist().count(v)) for v in ids)
    assert len(_images(page)) == 1 + expected and "frames not shown" not in page
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
    rows = [_video_row(INJECTIONS[0], str(clip), clip, [0.0, 1.0], caption=" ".join(INJECTIONS),
                       hashtags=[INJECTIONS[2]], transcript_text=INJECTIONS[1] + INJECTIONS[3]),
            _video_row(INJECTIONS[4], str(tmp_path / INJECTIONS[1]), None, [0.0], failed=True)]
    rows[1]["error_message"] = " ".join(INJECTIONS)
    dst = tmp_path / "out"
    _commit(str(dst), rows, "r1", {"decode/DecodeError": 1})
    page = Path(write_run_report(str(dst), "r1")).read_text(encoding="utf-8")
    parser = _TagCollector()
    parser.feed(page)
    parser.close()
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "iframe", "frame", "object", "embed", "link", "base", "form", "a", "svg"}, names
    for tag, attrs in parser.tags:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            if name in ("src", "href", "action", "formaction", "srcset", "background"):
                assert tag == "img" and name == "src" and value.startswith("data:image/png;base64,"), (tag, name)
    (policy,) = [dict(a)["content"] for t, a in parser.tags if t == "meta" and dict(a).get("http-equiv")]
    assert policy.startswith("default-src 'none'")
    text = "".join(parser.text)
    for injected in INJECTIONS:
        assert injected in text  # shown as text, whole
