"""OCR through the pipeline's own path: text burned into an encoded video is decoded once (the
OCR frames come from the same decode as CLIP's), read by the OCR stage with the real PP-OCRv4
weights, and a failure costs the video its OCR only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from extract.config import Config
from extract.tools.samples import synthetic_frame, write_clip
from extract.models.ocr import character_error_rate
from extract.rows import batch_to_rows, is_failed, rows_to_batch
from extract.stages.decode import DecodeStage
from extract.stages.ocr import OcrStage

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
CAPTION = "SUMMER SALE 50% OFF"
CONFIG = Config().replace(**{"models.clip.pretrained": None, "runtime.device": "cpu"})


def _captioned(i: int, t: float) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    frame = Image.fromarray(synthetic_frame(i, 15.0, 640, 360))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((40, 280, 600, 340), fill=(10, 10, 10))
    draw.text((60, 290), CAPTION, font=ImageFont.truetype(str(FONT), 36), fill=(255, 255, 255))
    return np.asarray(frame)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    if not FONT.is_file():
        pytest.skip("fonts-dejavu-core is not installed")
    folder = tmp_path_factory.mktemp("ocr-clips")
    text = write_clip(folder / "text.mp4", duration_s=4.0, width=640, height=360, frame_source=_captioned)
    plain = write_clip(folder / "plain.mp4", duration_s=4.0, width=640, height=360)
    rows = [{"video_id": "text", "uri": str(text)}, {"video_id": "plain", "uri": str(plain)}]
    stage = DecodeStage(CONFIG)
    try:
        return batch_to_rows(stage(rows_to_batch(rows)))
    finally:
        stage.close()


@pytest.fixture(scope="module")
def ocr_stage():
    return OcrStage(CONFIG)


def test_decode_hands_whole_frames_for_ocr(decoded):
    text, plain = decoded
    assert text["ocr_frames"].shape == (4, 360, 640, 3) and text["frames"].shape[1:] == (224, 224, 3)
    assert list(text["ocr_frame_index"]) == [0, 1, 2, 3] and text["n_frames"] == 4


def test_burned_in_text_is_read_and_a_plain_video_has_none(decoded, ocr_stage):
    out = batch_to_rows(ocr_stage(rows_to_batch([dict(r) for r in decoded])))
    text, plain = out
    assert "ocr_frames" not in text and text["ocr_error"] is None
    assert len(text["ocr_text"]) == 1, text["ocr_text"]  # the same line on every frame, once
    assert character_error_rate(CAPTION, text["ocr_text"][0]) <= 0.05, text["ocr_text"]
    lines = json.loads(text["ocr_lines_json"])
    assert [line["frame_index"] for line in lines] == [0, 1, 2, 3]  # a moving background: every frame read
    assert [line["pts_s"] for line in lines] == pytest.approx(list(text["pts_s"]))
    assert {"frame_index", "pts_s", "line_index", "text", "score", "box", "frame_width", "frame_height"} <= set(lines[0])
    xs, ys = lines[0]["box"][0::2], lines[0]["box"][1::2]
    assert 30 <= min(xs) and max(xs) <= 620 and 270 <= min(ys) and max(ys) <= 350
    assert list(plain["ocr_text"]) == [] and plain["ocr_lines_json"] == "[]"


def test_an_ocr_failure_keeps_the_video(decoded, monkeypatch):
    stage = OcrStage(CONFIG)

    def broken(frames):
        raise RuntimeError("onnxruntime: bad input")

    monkeypatch.setattr(stage.reader, "read", broken)
    text, _ = batch_to_rows(stage(rows_to_batch([dict(r) for r in decoded])))
    assert not is_failed(text) and "onnxruntime: bad input" in text["ocr_error"] and list(text["ocr_text"]) == []


def test_ocr_off_means_no_ocr_frames():
    stage = DecodeStage(CONFIG.replace(**{"ocr.enabled": False}))
    try:
        clip = write_clip(Path(__import__("tempfile").mkdtemp()) / "a.mp4", duration_s=2.0)
        (row,) = batch_to_rows(stage(rows_to_batch([{"video_id": "a", "uri": str(clip)}])))
    finally:
        stage.close()
    assert row["ocr_frames"].shape[0] == 0 and row["frames"].shape[0] == 4


def test_text_area_ratio_is_the_share_under_the_text(decoded, ocr_stage):
    from PIL import Image, ImageDraw, ImageFont

    out = batch_to_rows(ocr_stage(rows_to_batch([dict(row) for row in decoded])))
    text, plain = out
    # The rendered caption's ink box over the frame: OCR's line box hugs it with a few pixels of margin.
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (640, 360))).textbbox(
        (60, 290), CAPTION, font=ImageFont.truetype(str(FONT), 36))
    ink = (x1 - x0) * (y1 - y0) / (640 * 360)
    assert 0.8 * ink <= text["text_area_ratio"] <= 1.6 * ink, (text["text_area_ratio"], ink)
    assert plain["text_area_ratio"] == 0.0
    off = OcrStage(CONFIG.replace(**{"signals.text_area": False}))
    assert batch_to_rows(off(rows_to_batch([dict(decoded[0])])))[0]["text_area_ratio"] is None
