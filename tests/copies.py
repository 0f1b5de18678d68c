"""Transformed copies of a generated clip, made with PyAV (FFmpeg), for the pHash and
near-duplicate tests; and structured frames of many distinct clips without video files.

``shapes_frame(seed, t_s, width, height)`` draws a clip-specific scene: a gradient in a
random direction and six coloured rectangles and discs moving with random velocities, so
clips of different seeds differ in layout, not only in colour (``samples.synthetic_frame``
moves the same shapes in every clip). ``make_copies`` writes the original (H.264 CRF 18, 720p)
and its transformed copies, each re-encoded with libx264:

- ``reupload``: the original's bytes copied (an untouched re-upload);
- ``crf35``: decoded and re-encoded at CRF 35;
- ``scale360``: scaled 1280x720 -> 640x360 in libswscale (``VideoFrame.reformat``);
- ``crop5``: 5 % of the width cut from the left and 5 % of the height from the top;
- ``banner``: a black band over the bottom 15 % with white text;
- ``speed2x``: every other frame at the same frame rate (twice as fast, half as long);
- ``mirrored``: flipped left to right.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from extract.tools.samples import write_clip

WIDTH, HEIGHT = 1280, 720
FPS = 5.0
DURATION_S = 8.0
TRANSFORMS = ("reupload", "crf35", "scale360", "crop5", "banner", "speed2x", "mirrored")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def shapes_frame(seed: int, t_s: float, width: int, height: int) -> np.ndarray:
    """Frame at ``t_s`` seconds of clip ``seed``: ``(height, width, 3) uint8``."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi)
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = (low + ramp[..., None] * (high - low)).astype(np.uint8)
    for _ in range(6):
        colour = rng.integers(0, 256, 3)
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        vx, vy = rng.uniform(-0.08, 0.08) * width, rng.uniform(-0.08, 0.08) * height  # px per second
        half_w, half_h = rng.uniform(0.05, 0.18) * width, rng.uniform(0.05, 0.18) * height
        cx, cy = (cx + vx * t_s) % width, (cy + vy * t_s) % height
        if rng.uniform() < 0.5:
            img[int(max(cy - half_h, 0)):int(cy + half_h), int(max(cx - half_w, 0)):int(cx + half_w)] = colour
        else:
            img[((x - cx) / half_w) ** 2 + ((y - cy) / half_h) ** 2 < 1] = colour
    return img


def _decoded_rgb(path: Path, width: int | None = None, height: int | None = None) -> list[np.ndarray]:
    """Every frame of ``path`` as RGB, scaled by libswscale when a size is given."""
    import av

    with av.open(str(path)) as container:
        return [frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                for frame in container.decode(video=0)]


def _banner(frame: np.ndarray) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    h, w = frame.shape[:2]
    top = int(h * 0.85)
    draw.rectangle([0, top, w, h], fill=(0, 0, 0))
    font = ImageFont.truetype(FONT, int(h * 0.08)) if Path(FONT).exists() else ImageFont.load_default(int(h * 0.08))
    draw.text((int(w * 0.05), top + int(h * 0.03)), "FOLLOW @copycat FOR MORE", fill=(255, 255, 255), font=font)
    return np.asarray(image)


def _encode(path: Path, frames: list[np.ndarray], crf: int) -> Path:
    h, w = frames[0].shape[:2]
    return write_clip(path, duration_s=len(frames) / FPS, width=w, height=h, fps=FPS, audio=None,
                      frame_source=lambda i, t: frames[i],
                      encoder_options={"crf": str(crf), "preset": "veryfast"})


def make_copies(folder: Path, seed: int = 7) -> dict[str, Path]:
    """Write ``original.mp4`` and one file per name in ``TRANSFORMS`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    original = write_clip(folder / "original.mp4", DURATION_S, WIDTH, HEIGHT, FPS, audio=None,
                          frame_source=lambda i, t: shapes_frame(seed, t, WIDTH, HEIGHT),
                          encoder_options={"crf": "18", "preset": "veryfast"})
    frames = _decoded_rgb(original)
    cut_w, cut_h = int(WIDTH * 0.05) // 2 * 2, int(HEIGHT * 0.05) // 2 * 2
    paths = {"original": original}
    paths["reupload"] = Path(shutil.copyfile(original, folder / "reupload.mp4"))
    paths["crf35"] = _encode(folder / "crf35.mp4", frames, 35)
    paths["scale360"] = _encode(folder / "scale360.mp4", _decoded_rgb(original, WIDTH // 2, HEIGHT // 2), 23)
    paths["crop5"] = _encode(folder / "crop5.mp4", [np.ascontiguousarray(f[cut_h:, cut_w:]) for f in frames], 23)
    paths["banner"] = _encode(folder / "banner.mp4", [_banner(f) for f in frames], 23)
    paths["speed2x"] = _encode(folder / "speed2x.mp4", frames[::2], 23)
    paths["mirrored"] = _encode(folder / "mirrored.mp4", [np.ascontiguousarray(f[:, ::-1]) for f in frames], 23)
    return paths
