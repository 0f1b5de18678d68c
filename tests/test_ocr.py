"""OCR with the real rapidocr models (PP-OCRv4 mobile, inside the rapidocr wheel).

Text is drawn with PIL into frames over moving gradients, shapes and noise, in several fonts
and sizes, Latin and CJK, and must read back with a character error rate of at most 0.05
(spaces ignored, after ``normalize_ocr_text``). Fonts come from Debian: fonts-dejavu-core,
fonts-liberation, fonts-wqy-microhei; a missing one skips its cases with the package name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extract.tools.samples import synthetic_frame
from extract.models.ocr import (
    OcrLine,
    OcrOptions,
    OcrReader,
    character_error_rate,
    choose_ocr_frames,
    merge_lines,
    normalize_ocr_text,
    ocr_model_paths,
    reading_order,
    shrink_to,
)

FONTS = {  # name: (path, Debian package)
    "dejavu_sans": ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
    "dejavu_serif": ("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf", "fonts-dejavu-core"),
    "dejavu_sans_bold": ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    "liberation_sans": ("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", "fonts-liberation"),
    "liberation_serif": ("/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf", "fonts-liberation"),
    "wqy_microhei": ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "fonts-wqy-microhei"),
}


def font(name: str, size: int):
    from PIL import ImageFont

    path, package = FONTS[name]
    if not Path(path).is_file():
        pytest.skip(f"font {path} missing: apt-get install {package}")
    return ImageFont.truetype(path, size)


def background(kind: str, i: int, height: int, width: int) -> np.ndarray:
    """A ``(height, width, 3) uint8`` backdrop that changes with frame ``i``."""
    if kind == "moving":
        return synthetic_frame(i, 10.0, width, height, seed=i)
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = i * 0.7
    img = np.stack([127 + 100 * np.sin(x / width * 6 + phase), 127 + 100 * np.cos(y / height * 5 - phase),
                    np.full_like(x, 80 + 20 * i % 100)], axis=-1)
    if kind == "noisy":
        img = img + rng.normal(0, 25, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def render(lines: list[str], font_name: str, size: int, height: int, width: int, bg: str = "moving",
           i: int = 0, top: float = 0.2) -> np.ndarray:
    """``lines`` drawn centred in white with a dark outline (how captions are burned in), one under
    another from ``top`` of the height, over ``background(bg, i)``: ``(height, width, 3) uint8`` RGB."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(background(bg, i, height, width))
    draw = ImageDraw.Draw(im)
    f = font(font_name, size)
    y = int(top * height)
    for text in lines:
        x0, _, x1, _ = draw.textbbox((0, 0), text, font=f)
        draw.text(((width - (x1 - x0)) // 2, y), text, font=f, fill=(255, 255, 255),
                  stroke_width=max(1, size // 14), stroke_fill=(10, 10, 10))
        y += int(size * 1.7)
    return np.asarray(im)


@pytest.fixture(scope="module")
def reader() -> OcrReader:
    return OcrReader(OcrOptions(threads=1))


def read_text(reader: OcrReader, frame: np.ndarray) -> list[str]:
    return [line.text for line in reader.read(frame[None])[0]]


LATIN = ["Summer sale today only", "Follow for more tips", "Best pasta recipe 2026"]
CJK = ["今天天气很好", "关注我们获取更多", "周末特价活动"]

# (font, text size px, frame height, width, background): portrait phone frames at 720x1280
# and 360x640, with text sizes a caption uses on each.
CASES = [
    ("dejavu_sans", 56, 1280, 720, "moving", LATIN),
    ("dejavu_serif", 44, 1280, 720, "gradient", LATIN),
    ("liberation_sans", 28, 640, 360, "noisy", LATIN),
    ("liberation_serif", 26, 640, 360, "moving", LATIN),
    ("dejavu_sans_bold", 34, 360, 640, "noisy", LATIN),
    ("liberation_serif", 24, 1280, 720, "noisy", LATIN),  # small text, shrunk to 800 px
    ("wqy_microhei", 24, 1280, 720, "gradient", CJK),
    ("wqy_microhei", 56, 1280, 720, "moving", CJK),
    ("wqy_microhei", 30, 640, 360, "noisy", CJK),
]


@pytest.mark.parametrize("font_name,size,height,width,bg,lines", CASES,
                         ids=[f"{c[0]}-{c[1]}px-{c[3]}x{c[2]}-{c[4]}" for c in CASES])
def test_rendered_text_reads_back(reader, font_name, size, height, width, bg, lines):
    frame = render(lines, font_name, size, height, width, bg, i=3)
    got = read_text(reader, frame)
    assert len(got) == len(lines), got
    cer = character_error_rate(" ".join(lines), " ".join(got))
    assert cer <= 0.05, (cer, got)


def test_boxes_are_in_frame_pixels_and_in_reading_order(reader):
    frame = render(LATIN, "dejavu_sans", 56, 1280, 720, "gradient")
    lines = reader.read(frame[None])[0]
    assert [line.text for line in lines] == [line.text for line in reading_order(lines)]
    tops = [line.top for line in lines]
    assert tops == sorted(tops)
    # render() puts the first line at 20 % of the height and one line each 1.7 text heights.
    for k, line in enumerate(lines):
        assert abs(line.top - (0.2 * 1280 + k * 56 * 1.7)) < 30, (k, line.box)
        assert all(0 <= x <= 720 and 0 <= y <= 1280 for x, y in line.box)
        assert 0.5 <= line.score <= 1.0


def test_frame_without_text_has_no_lines(reader):
    frames = np.stack([background("moving", 1, 640, 360), background("noisy", 2, 640, 360),
                       np.zeros((640, 360, 3), np.uint8)])
    assert reader.read(frames) == [[], [], []]


def test_models_load_from_the_wheel_with_the_network_refused(monkeypatch):
    """The models are files inside the rapidocr wheel, named by path: a reader builds and reads
    with every socket connection refused (rapidocr's download-on-first-use never runs)."""
    import socket

    import rapidocr

    def refuse(*args, **kwargs):
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    paths = ocr_model_paths()
    assert set(paths) == {"Det", "Cls", "Rec"}
    assert all(path.parent == Path(rapidocr.__file__).parent / "models" for path in paths.values())
    got = read_text(OcrReader(OcrOptions(threads=1, use_angle_cls=True)),
                    render(LATIN[:1], "dejavu_sans", 56, 1280, 720, "gradient"))
    assert character_error_rate(LATIN[0], " ".join(got)) <= 0.05, got


def test_a_missing_model_names_the_file_and_the_fix(monkeypatch):
    from extract.models import ocr

    monkeypatch.setitem(ocr.OCR_MODELS, "Rec", "no_such_rec.onnx")
    with pytest.raises(FileNotFoundError, match=r"no_such_rec\.onnx.*install the rapidocr wheel"):
        OcrReader()


def test_clip_sized_frame_is_too_small_but_512_reads(reader):
    """What frame size OCR needs: the same caption layout at CLIP's 224x224 centre crop loses
    characters; at 512 px on the long side it reads back."""
    big = render(LATIN, "dejavu_sans", 40, 1280, 720, "gradient")
    crop = big[280:1000]  # the centre square of the portrait frame, as CLIP's crop sees it
    small, _ = shrink_to(crop, 224)
    got_small = " ".join(read_text(reader, small))
    medium, _ = shrink_to(big, 512)
    got_medium = " ".join(read_text(reader, medium))
    assert character_error_rate(" ".join(LATIN), got_medium) <= 0.05, got_medium
    assert character_error_rate(" ".join(LATIN), got_small) > 0.05, got_small


def test_reading_order_rows_then_columns():
    def line(text, x, y, h=20.0):
        return OcrLine(text, 0.9, ((x, y), (x + 50, y), (x + 50, y + h), (x, y + h)))

    lines = [line("c", 10, 100), line("b", 200, 12), line("a", 10, 10), line("d", 200, 104)]
    assert [l.text for l in reading_order(lines)] == ["a", "b", "c", "d"]


def test_merge_lines_deduplicates_across_frames_in_first_appearance_order():
    def line(text, score, y):
        return OcrLine(text, score, ((0, y), (10, y), (10, y + 5), (0, y + 5)))

    frames = [[line("Sale today", 0.8, 0), line("50% off", 0.9, 10)],
              [line("SALE  TODAY", 0.7, 0), line("New line", 0.9, 20)],
              [line("50%off", 0.95, 10), line("Sale today", 0.99, 0)]]
    assert merge_lines(frames) == ["Sale today", "50%off", "New line"]
    assert merge_lines([]) == [] and merge_lines([[], []]) == []


def test_normalize_ocr_text():
    assert normalize_ocr_text("  Ｆｏｌｌｏｗ\u200b  me\t\nnow ") == "Follow me now"
    assert normalize_ocr_text("\u3000") == ""
    assert character_error_rate("Follow me", "Followme") == 0.0
    assert character_error_rate("abcd", "abed") == 0.25
    assert character_error_rate("", "") == 0.0 and character_error_rate("", "x") == 1.0


def test_choose_ocr_frames_spreads_and_skips_repeats():
    moving = np.stack([background("moving", i, 64, 48) for i in range(20)])
    assert choose_ocr_frames(moving, 4) == [2, 7, 12, 17]
    assert choose_ocr_frames(moving, 1) == [9]
    assert choose_ocr_frames(moving[:3], 4) == [0, 1, 2]
    static = np.repeat(moving[:1], 12, axis=0)
    assert choose_ocr_frames(static, 4) == [1]
    # Two scenes: the repeats of each are skipped, one frame per scene is read.
    scenes = np.concatenate([np.repeat(moving[:1], 8, axis=0), np.repeat(moving[10:11], 8, axis=0)])
    assert choose_ocr_frames(scenes, 4) == [1, 9]
    assert choose_ocr_frames(moving[:0], 4) == []
    with pytest.raises(ValueError, match="ocr.max_frames"):
        choose_ocr_frames(moving, 0)


@pytest.mark.parametrize("kwargs,key", [({"min_score": 1.5}, "ocr.min_score"),
                                        ({"languages": ("fr",)}, "ocr.languages"), ({"max_side": 8}, "ocr.max_side"),
                                        ({"threads": 0}, "ocr.threads"), ({"device": "tpu"}, "ocr.device")])
def test_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        OcrOptions(**kwargs)


def test_read_rejects_wrong_frames(reader):
    with pytest.raises(ValueError, match="uint8 RGB"):
        reader.read(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        reader.read(np.zeros((1, 32, 32, 3), np.float32))


def test_video_frames_read_into_distinct_lines(reader):
    """A 12-frame clip over a moving background: one caption throughout, a second one from the
    middle on. The chosen frames read back as the two captions once each, in order."""
    first, second = ["Link in bio"], ["限时优惠 50% OFF"]
    frames = np.stack([render(first + (second if i >= 6 else []), "wqy_microhei", 30, 640, 360, "moving", i=i)
                       for i in range(12)])
    chosen = choose_ocr_frames(frames, 4)
    assert len(chosen) == 4
    merged = merge_lines(reader.read(frames[chosen]))
    assert len(merged) == 2, merged
    assert character_error_rate(first[0], merged[0]) <= 0.05, merged
    assert character_error_rate(second[0], merged[1]) <= 0.05, merged


def test_text_area_ratio_counts_overlapping_boxes_once():
    from extract.models.ocr import text_area_ratio

    def box(x0, y0, x1, y1):
        return OcrLine("text", 0.9, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))

    assert text_area_ratio([], 100, 50) == 0.0
    quarter = text_area_ratio([box(0, 0, 50, 25)], 100, 50)
    assert abs(quarter - 0.25) < 0.02
    assert text_area_ratio([box(0, 0, 50, 25), box(10, 5, 40, 20)], 100, 50) == quarter  # inside: once
    assert abs(text_area_ratio([box(0, 0, 50, 25), box(50, 25, 100, 50)], 100, 50) - 0.5) < 0.03
    assert text_area_ratio([box(-10, -10, 200, 200)], 100, 50) == 1.0  # clipped to the frame
