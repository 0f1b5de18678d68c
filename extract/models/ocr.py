"""On-screen text with rapidocr (PP-OCRv4 detection + recognition, Chinese and English).

``OcrReader`` loads the PP-OCRv4 mobile ONNX models that ship inside the ``rapidocr`` wheel
(``OCR_MODELS``, named by path, so rapidocr's download-on-first-use code is never reached and
nothing is fetched from the network) once and reads RGB frames. Each frame is shrunk so its
long side is at most ``max_side`` before detection, and the detector's own resize is set to
only round to multiples of 32 (rapidocr's default scales the *short* side up to 736 px, which
makes a 720x1280 frame a 736x1312 input). RapidOCR returns before recognition when the
detector finds no box, so text-free frames cost the detector only. Boxes come back in the
frame's own pixels.

Pure helpers: ``text_area_ratio`` is the share of a frame its text boxes cover; ``choose_ocr_frames`` picks up to ``max_frames`` frames spread over the video,
skipping near-repeats; ``reading_order`` sorts a frame's lines top-to-bottom, left-to-right;
``merge_lines`` turns per-frame lines into the video's distinct lines; ``normalize_ocr_text``
is the normal form of a line (NFKC, invisible characters removed, whitespace collapsed);
``character_error_rate`` scores a reading against a reference.

Cost on one core of this machine (CPU seconds per 720x1280 frame holding three caption lines;
a text-free frame in brackets): rapidocr's defaults 0.33-0.37 (0.34-0.38); ``max_side`` 1280:
0.32 (0.29); 960: 0.23 (0.19); 800, the default: 0.17 (0.13); 640: 0.12 (0.07).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from extract.config import OCR_LANGUAGES
from extract.text.captions import collapse_text, remove_invisible
from extract.text.metrics import edit_distance

OCR_DEVICES = ("cpu", "cuda")
THUMB_SIDE = 32  # pixels, side of the grey thumbnails that judge repeated frames
# The PP-OCRv4 mobile models inside the rapidocr wheel (its folder rapidocr/models; PaddleOCR's,
# Apache-2.0), by rapidocr's task name: detection, the 0/180 degree classifier, recognition
# (Chinese and English in one model, its character list inside the ONNX file).
OCR_MODELS = {"Det": "ch_PP-OCRv4_det_mobile.onnx", "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
              "Rec": "ch_PP-OCRv4_rec_mobile.onnx"}


@dataclass(frozen=True)
class OcrOptions:
    """Settings of ``OcrReader``; the keys name the ``ocr.*`` config keys."""

    min_score: float = 0.5  # recognised lines scoring below are dropped (rapidocr text_score)
    languages: tuple[str, ...] = OCR_LANGUAGES  # subset of OCR_LANGUAGES
    # Frames are shrunk (never enlarged) to this long side before detection, px. Text needs
    # ~12-15 px of height in the shrunk frame: 24 px text on a 1280 px frame reads at 800
    # (CER 0), loses characters at 640/512 (CER 0.02-0.15).
    max_side: int = 800
    threads: int = 1  # onnxruntime intra-op threads per model
    use_angle_cls: bool = False  # run PP-OCR's 0/180 degree classifier (burned-in text is upright)
    device: str = "cpu"  # "cuda" needs onnxruntime-gpu; rapidocr falls back to the CPU without it

    def __post_init__(self) -> None:
        self._verify()

    def _verify(self) -> None:
        """Raise ValueError naming the key of the first invalid setting."""
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"ocr.min_score: must be in [0, 1], got {self.min_score}")
        if not self.languages or any(lang not in OCR_LANGUAGES for lang in self.languages):
            raise ValueError(f"ocr.languages: must be a non-empty subset of {list(OCR_LANGUAGES)} "
                             f"(the PP-OCRv4 model in the rapidocr wheel), got {list(self.languages)}")
        if not 32 <= self.max_side <= 4096:
            raise ValueError(f"ocr.max_side: must be 32..4096 pixels, got {self.max_side}")
        if not 1 <= self.threads <= 256:
            raise ValueError(f"ocr.threads: must be 1..256, got {self.threads}")
        if self.device not in OCR_DEVICES:
            raise ValueError(f"ocr.device: {self.device!r} is not one of {list(OCR_DEVICES)}")


@dataclass(frozen=True)
class OcrLine:
    """One line of text read in a frame: ``text`` (``normalize_ocr_text``), recognition ``score``
    in [0, 1], and ``box``: its 4 corners ``((x, y), ...)`` clockwise from the top left, in the
    frame's pixels."""

    text: str
    score: float
    box: tuple[tuple[float, float], ...]

    @property
    def top(self) -> float:
        return min(y for _, y in self.box)

    @property
    def bottom(self) -> float:
        return max(y for _, y in self.box)

    @property
    def left(self) -> float:
        return min(x for x, _ in self.box)


def ocr_model_paths() -> dict[str, Path]:
    """``OCR_MODELS`` as files of the installed rapidocr package, by task. Raises
    ``FileNotFoundError`` naming the missing files and the fix where the install lacks one (given no
    path, rapidocr would download a model on first use instead)."""
    import rapidocr

    folder = Path(rapidocr.__file__).parent / "models"
    paths = {task: folder / name for task, name in OCR_MODELS.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"rapidocr's PP-OCRv4 models are missing ({', '.join(missing)}): install the "
                                "rapidocr wheel pyproject.toml pins, which ships them")
    return paths


class OcrReader:
    """rapidocr loaded once; ``read(frames)`` returns each frame's lines in reading order.

    ``OcrReader(OcrOptions(min_score=0.5, max_side=960, threads=1))``.
    """

    def __init__(self, options: OcrOptions | None = None):
        from rapidocr import RapidOCR

        self.options = o = options or OcrOptions()
        self._engine = RapidOCR(params={
            "Global.text_score": o.min_score, "Global.use_cls": o.use_angle_cls,
            "Global.log_level": "error",  # not a warning per text-free frame ("detection result is empty")
            # Frames arrive at most max_side long (shrink_to); rapidocr's own bound (2000 px) must not shrink them again.
            "Global.max_side_len": max(o.max_side, 2000),
            "EngineConfig.onnxruntime.intra_op_num_threads": o.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.use_cuda": o.device == "cuda",
            # limit_type "min" with a 32 px floor: the detector input is the frame as given
            # (rounded to multiples of 32); the size is chosen here, by max_side.
            "Det.limit_type": "min", "Det.limit_side_len": 32,
            **{f"{task}.model_path": str(path) for task, path in ocr_model_paths().items()},
        })

    def read(self, frames: np.ndarray) -> list[list[OcrLine]]:
        """Lines of text in each of ``frames`` ``(n, H, W, 3) uint8`` RGB: ``n`` lists of ``OcrLine``
        (empty where there is no text), each in reading order."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames: expected (n, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
        return [self.read_frame(frame) for frame in frames]

    def read_frame(self, frame: np.ndarray) -> list[OcrLine]:
        """Lines of text in one ``(H, W, 3) uint8`` RGB frame, in reading order. A "line" of
        punctuation only (an edge or a dot in the picture read as ``!`` or ``|``) is dropped: it
        says nothing and is the usual false detection on text-free frames."""
        o = self.options
        image, scale = shrink_to(frame, o.max_side)
        # RapidOCR takes numpy images as OpenCV's BGR; its call-time score threshold overrides the configured one.
        result = self._engine(np.ascontiguousarray(image[..., ::-1]), use_cls=o.use_angle_cls, text_score=o.min_score)
        found = () if result.boxes is None else zip(result.boxes, result.txts, result.scores)
        lines = []
        for box, text, score in found:
            text = normalize_ocr_text(text)
            if any(ch.isalnum() for ch in text):
                corners = tuple((float(x) / scale, float(y) / scale) for x, y in box)
                lines.append(OcrLine(text, float(score), corners))
        return reading_order(lines)


def shrink_to(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``frame`` ``(H, W, 3) uint8`` resized (area filter) so its long side is at most ``max_side``,
    and the scale applied (1.0 when it already fits)."""
    import cv2

    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return frame, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), size[0] / w


def normalize_ocr_text(text: str) -> str:
    """A read line's normal form: invisible characters removed, NFKC (so full-width letters and
    CJK compatibility forms fold as in captions), whitespace and control runs collapsed to one
    space, trimmed."""
    return collapse_text(remove_invisible(text))


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """``lines`` sorted top-to-bottom, then left-to-right within a row. A line joins the current
    row when its vertical centre lies within the row's first line's top and bottom (so a word
    a few pixels lower than its neighbour still reads after it)."""
    ordered: list[OcrLine] = []
    row: list[OcrLine] = []
    for line in sorted(lines, key=lambda l: (l.top, l.left)):
        if row and not row[0].top <= (line.top + line.bottom) / 2 <= row[0].bottom:
            ordered.extend(sorted(row, key=lambda l: l.left))
            row = []
        row.append(line)
    ordered.extend(sorted(row, key=lambda l: l.left))
    return ordered


def _line_key(text: str) -> str:
    """What makes two readings the same line: case and spacing ignored (the recogniser often drops spaces)."""
    return "".join(text.casefold().split())


def merge_lines(frames_lines: Sequence[Sequence[OcrLine]]) -> list[str]:
    """The video's distinct lines from its frames' lines (each in reading order, frames in time
    order): a line is kept once, where it first appears (frame, then reading order), spelled as
    its best-scoring reading. Readings equal up to case and spaces are one line."""
    best: dict[str, OcrLine] = {}
    for lines in frames_lines:
        for line in lines:
            key = _line_key(line.text)
            if key not in best or line.score > best[key].score:
                best[key] = line  # dict order stays that of the first appearance
    return [line.text for line in best.values()]


def frame_thumbnails(frames: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Grey ``(n, side, side) float32`` thumbnails of ``frames`` ``(n, H, W, 3) uint8`` (area means)."""
    import cv2

    grey = np.asarray(frames, dtype=np.float32).mean(axis=-1)
    return np.stack([cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA) for g in grey]) \
        if len(grey) else np.zeros((0, side, side), np.float32)


def choose_ocr_frames(frames: np.ndarray, max_frames: int = 4, min_change: float = 2.0) -> list[int]:
    """Up to ``max_frames`` indices of ``frames`` ``(n, H, W, 3) uint8`` (time order) to read, ascending.

    The frames are cut into ``max_frames`` equal runs; from each run the frame nearest its
    middle is taken unless it repeats a frame already taken (mean absolute difference of their
    grey 32x32 thumbnails below ``min_change``, on the 0-255 scale), then the next nearest,
    and so on; a run with only repeats gives none. A static video thus costs one OCR call.
    """
    if max_frames < 1:
        raise ValueError(f"ocr.max_frames: must be >= 1, got {max_frames}")
    n = len(frames)
    if n == 0:
        return []
    thumbs = frame_thumbnails(frames)
    chosen: list[int] = []
    for run in np.array_split(np.arange(n), min(max_frames, n)):
        middle = (run[0] + run[-1]) / 2
        for i in sorted(run, key=lambda i: (abs(i - middle), i)):
            if all(np.abs(thumbs[i] - thumbs[j]).mean() >= min_change for j in chosen):
                chosen.append(int(i))
                break
    return sorted(chosen)


def text_area_ratio(lines: Sequence[OcrLine], width: int, height: int) -> float:
    """Share of a ``width`` x ``height`` frame covered by the boxes of ``lines``, in [0, 1]; the boxes
    are filled on a mask in the frame's own pixels, so overlapping boxes count once."""
    from PIL import Image, ImageDraw

    if not lines:
        return 0.0
    mask = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for line in lines:
        draw.polygon([(x, y) for x, y in line.box], fill=1)
    return float(np.count_nonzero(np.asarray(mask))) / (width * height)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character edits over reference characters, both ``normalize_ocr_text``-ed and with all
    whitespace removed (the recogniser's spacing is not judged); 0 for two empty texts."""
    ref = "".join(normalize_ocr_text(reference).split())
    hyp = "".join(normalize_ocr_text(hypothesis).split())
    if not ref:
        return float(bool(hyp))
    return edit_distance(ref, hyp) / len(ref)
