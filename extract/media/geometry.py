"""Frame geometry: open_clip's ``preprocess_val`` resize/crop done by libswscale on decoded frames.

``PreprocessSpec`` is the CLIP input geometry (read from open_clip's config by
``extract.models.preprocess``); ``ClipFrameScaler`` scales a PyAV frame straight to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from extract.media.probe import display_rotation


@dataclass(frozen=True)
class PreprocessSpec:
    """The CLIP input geometry: open_clip ``PreprocessCfg`` fields we use. ``image_size`` in pixels (square)."""

    image_size: int
    interpolation: str  # "bicubic" | "bilinear" | "nearest"
    resize_mode: str  # "shortest" (resize shorter side, center crop) | "longest" | "squash"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "POINT"}


@dataclass(frozen=True)
class ResizePlan:
    """How a display-oriented picture becomes the CLIP input square: resize to
    ``(resize_h, resize_w)``, then take the ``size`` x ``size`` window at ``(top, left)``; a
    negative offset pads with zeros (``longest`` mode)."""

    resize_w: int
    resize_h: int
    top: int
    left: int
    size: int


def resize_plan(width: int, height: int, size: int, resize_mode: str) -> ResizePlan:
    """open_clip's ``preprocess_val`` geometry for a ``width`` x ``height`` picture.

    ``shortest``: torchvision ``Resize(size)`` (short side to ``size``, long side
    ``int(size * long / short)``) then ``CenterCrop(size)`` (offset ``int(round((d - size) / 2))``).
    ``longest``: open_clip ``ResizeKeepRatio(longest=1)`` (``round(d * size / long)``) then
    ``CenterCropOrPad`` (``(size - d) // 2`` of padding before). ``squash``: straight to ``size``.
    """
    if resize_mode == "squash":
        return ResizePlan(size, size, 0, 0, size)
    if resize_mode == "shortest":
        if width <= height:
            rw, rh = size, int(size * height / width)
        else:
            rw, rh = int(size * width / height), size
        return ResizePlan(rw, rh, int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0)), size)
    if resize_mode == "longest":
        ratio = max(width / size, height / size)
        rw, rh = max(1, round(width / ratio)), max(1, round(height / ratio))
        return ResizePlan(rw, rh, -((size - rh) // 2), -((size - rw) // 2), size)
    raise ValueError(f"resize_mode {resize_mode!r} is not one of shortest, longest, squash")


def crop_or_pad(image: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """The ``plan.size`` square of a resized ``(h, w, c)`` image (zero-padded where it is smaller)."""
    size = plan.size
    if plan.top >= 0 and plan.left >= 0:
        return image[plan.top:plan.top + size, plan.left:plan.left + size]
    out = np.zeros((size, size) + image.shape[2:], image.dtype)
    src = image[max(plan.top, 0):, max(plan.left, 0):][:size, :size]
    top, left = max(-plan.top, 0), max(-plan.left, 0)
    out[top:top + src.shape[0], left:left + src.shape[1]] = src
    return out


class ClipFrameScaler:
    """Decoded ``VideoFrame`` -> ``(S, S, 3) uint8`` CLIP input, scaled in libswscale.

    One instance per video keeps one swscale context for all its frames. ``threads``: swscale
    slice threads, output identical for any count; ``decode_video`` passes
    ``runtime.decode_threads``, the cores the decoder's threads use and mostly leave idle
    while a kept frame is scaled. Display geometry: sample aspect ratio, then rotation
    (clockwise degrees from the frame's display matrix), then ``resize_plan``; the resize
    happens in the stored orientation and the small result is rotated with numpy.
    """

    def __init__(self, spec: PreprocessSpec, sample_aspect_ratio: float = 1.0, threads: int = 1):
        from av.video.reformatter import VideoReformatter

        self.spec = spec
        self.threads = max(1, threads)
        self.sar = sample_aspect_ratio
        self.interpolation = INTERPOLATIONS.get(spec.interpolation, "BICUBIC")
        self.reformatter = VideoReformatter()
        self.rotation: int | None = None  # of the first frame scaled

    def __call__(self, frame: Any) -> np.ndarray:
        rotation = display_rotation(frame.rotation)
        if self.rotation is None:
            self.rotation = rotation
        width, height = max(1, round(frame.width * self.sar)), frame.height
        turned = rotation in (90, 270)
        if turned:
            width, height = height, width
        plan = resize_plan(width, height, self.spec.image_size, self.spec.resize_mode)
        out_w, out_h = (plan.resize_h, plan.resize_w) if turned else (plan.resize_w, plan.resize_h)
        rgb = self.reformatter.reformat(frame, width=out_w, height=out_h, format="rgb24",
                                        interpolation=self.interpolation, threads=self.threads).to_ndarray()
        if rotation:
            rgb = np.rot90(rgb, k=-(rotation // 90))
        return np.ascontiguousarray(crop_or_pad(rgb, plan))


class OcrFrameScaler:
    """Decoded ``VideoFrame`` -> ``(h, w, 3) uint8`` RGB for reading text: the whole picture in
    display orientation (sample aspect ratio and rotation applied, no crop), its long side
    shrunk to at most ``max_side`` pixels (never enlarged; area averaging keeps thin strokes)."""

    def __init__(self, max_side: int, sample_aspect_ratio: float = 1.0, threads: int = 1):
        from av.video.reformatter import VideoReformatter

        self.max_side = max_side
        self.sar = sample_aspect_ratio
        self.threads = max(1, threads)
        self.reformatter = VideoReformatter()

    def __call__(self, frame: Any) -> np.ndarray:
        rotation = display_rotation(frame.rotation)
        width, height = max(1, round(frame.width * self.sar)), frame.height
        scale = min(1.0, self.max_side / max(width, height))
        out_w, out_h = max(2, round(width * scale)), max(2, round(height * scale))
        rgb = self.reformatter.reformat(frame, width=out_w, height=out_h, format="rgb24", interpolation="AREA",
                                        threads=self.threads).to_ndarray()
        if rotation:
            rgb = np.rot90(rgb, k=-(rotation // 90))
        return np.ascontiguousarray(rgb)
