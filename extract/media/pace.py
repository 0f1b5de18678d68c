"""Motion and the small frames for shot detection (``PaceMeter``, fed decoded frames in order).

Motion reads the P frames' motion vectors. The CLIP sampling pass (``extract.media.video``)
decodes every I and P frame anyway (it drops only non-reference frames, and seeks only over
long stretches), so with its decoder exporting vectors it feeds a ``PaceMeter`` on the way and
motion costs no pass of its own. Shot frames need every frame at the native rate, and so does
motion for a codec without vectors (or a video without P frames): then a second, sequential
pass (``read_pace``) reads the whole video stream in the decode child, non-reference frames too:

- **Motion** (``signals.motion``). Where the decoder exports motion vectors (FFmpeg's
  ``flags2=+export_mvs``: H.264, MPEG-4 part 2 and the other MPEG-family decoders; not HEVC, VP9
  or AV1), each P frame's vectors give its motion: the block-area-weighted mean vector length
  (``motion_x / motion_scale``, pixels) over the frame width, divided by the frames back to the
  previous I or P frame (its reference, B frames in between). B frames do not count: FFmpeg
  exports their direct-mode blocks as zero vectors (MPEG-4 part 2 B frames read all zero), and
  neither do I frames (cuts, key frames), which carry none. ``motion_score`` is the median over the
  P frames, times the frame rate: *frame widths per second*. Without P-frame vectors (``motion_source``
  ``frame_difference``), the score is the median mean absolute difference of consecutive 48x27
  grey frames (0-1 scale) times the frame rate. The two scales differ; compare scores within
  one ``motion_source``. The median keeps a few cuts or flashes from setting the score.
- **Shot frames** (``signals.shots``): every frame scaled by libswscale (area filter) to the
  48x27 RGB that TransNetV2 reads, with its time; at most ``MAX_SHOT_FRAMES`` (10 minutes at
  30 fps), so a long video's shots cover its start.

Cost: motion from the sampling pass adds only the vectors' export and reading. The second
pass for motion alone decodes the reference frames only (``VECTOR_CODECS``: B frames carry no
counted vectors); with shot frames it decodes every frame, roughly a sequential decode of the
file, the 48x27 scale adding little (measured figures in the README's signals section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHOT_SIZE = (48, 27)  # width, height of a shot-detection frame (TransNetV2's input)
MAX_SHOT_FRAMES = 18_000  # shot frames kept per video: 10 minutes at 30 fps, 70 MB
MOTION_VECTORS = "motion_vectors"
FRAME_DIFFERENCE = "frame_difference"
MOTION_SOURCES = (MOTION_VECTORS, FRAME_DIFFERENCE)  # the values of videos.motion_source
# FFmpeg decoders that export P-frame motion vectors (``export_mvs``): the MPEG family
VECTOR_CODECS = ("h264", "mpeg4", "mpeg2video", "mpeg1video", "h263")


@dataclass(frozen=True)
class Pace:
    """What ``read_pace`` found: ``motion_score`` (None with motion off or under two frames),
    ``motion_source`` (``motion_vectors`` | ``frame_difference`` | None), ``shot_frames``
    ``(n, 27, 48, 3) uint8`` and ``shot_pts_s`` ``(n,) float32`` seconds from the stream start
    (empty with shots off), ``frames_read`` (every frame the pass decoded)."""

    motion_score: float | None = None
    motion_source: str | None = None
    shot_frames: np.ndarray = field(default_factory=lambda: np.zeros((0, SHOT_SIZE[1], SHOT_SIZE[0], 3), np.uint8))
    shot_pts_s: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    frames_read: int = 0


def vector_motion(vectors: np.ndarray, width: int) -> float | None:
    """One frame's motion from FFmpeg's ``AVMotionVector`` records (PyAV's ``to_ndarray()``):
    block-area-weighted mean vector length in pixels over ``width``; None without vectors."""
    if len(vectors) == 0:
        return None
    scale = np.maximum(vectors["motion_scale"].astype(np.float64), 1.0)
    length = np.hypot(vectors["motion_x"] / scale, vectors["motion_y"] / scale)
    area = vectors["w"].astype(np.float64) * vectors["h"]
    return float((length * area).sum() / area.sum()) / width


def median(values: Any) -> float:
    """The median of a non-empty sequence (``np.median`` imports ``numpy.ma`` on first use, which a
    confined decode child cannot read from disk)."""
    v = np.sort(np.asarray(values, np.float64))
    mid = len(v) // 2
    return float(v[mid]) if len(v) % 2 else float(v[mid - 1] + v[mid]) / 2


def difference_motion(grey: np.ndarray) -> np.ndarray:
    """Per-frame motion from consecutive grey frames ``(n, h, w)`` uint8: mean absolute difference
    on the 0-1 scale, ``(n - 1,)``."""
    if len(grey) < 2:
        return np.zeros(0, np.float64)
    g = grey.astype(np.int16)
    return np.abs(np.diff(g, axis=0)).mean(axis=(1, 2)) / 255.0


def read_pace(reader: Any, motion: bool, shots: bool, fps: float | None) -> Pace:
    """One pass over every frame ``reader`` (an ``extract.media.video.VideoReader`` at the stream
    start, decoding non-reference frames too, its decoder exporting motion vectors when
    ``motion``) yields (module doc); ``fps``: the stream's frame rate (None: from the frames' times)."""
    meter = PaceMeter(motion, shots, fps)
    for frame, t in reader.frames():
        meter.feed(frame, t)
    return meter.result()


class PaceMeter:
    """The module's signals from decoded frames fed in presentation order (``feed``), as a
    ``Pace`` (``result``); ``fps``: the stream's frame rate (None: from the frames' times).
    ``small_frames=False``: motion vectors only, no 48x27 frames (the
    CLIP sampling pass feeds it the frames it decodes anyway: every I and P frame, so every
    P frame's vectors, unless it seeks; ``restart`` after a seek)."""

    def __init__(self, motion: bool, shots: bool, fps: float | None, small_frames: bool = True):
        from av.video.frame import PictureType
        from av.video.reformatter import VideoReformatter

        self.motion, self.shots, self.small_frames = motion, shots, small_frames
        self._p, self._references = PictureType.P, (PictureType.I, PictureType.P)
        self.small: list[np.ndarray] = []
        self.times: list[float] = []
        self.per_frame: list[float] = []  # P frames' motion, frame widths per frame
        self.frames_read = 0
        self._scale = VideoReformatter() if small_frames else None
        self._last_reference_t: float | None = None
        self.fps = fps
        self._frame_s = 1.0 / fps if fps else None

    @property
    def has_vectors(self) -> bool:
        """Whether a P frame's motion vectors were read (else motion needs the every-frame pass)."""
        return bool(self.per_frame)

    def restart(self) -> None:
        """The next frame does not follow the last one (a seek): no vectors span the jump."""
        self._last_reference_t = None

    def feed(self, frame: Any, t: float) -> None:
        self.frames_read += 1
        kind = frame.pict_type
        if self.motion:
            vectors = frame.side_data.get("MOTION_VECTORS")
            if vectors is not None and kind == self._p and self._last_reference_t is not None:
                # a P frame's vectors span the frames back to its reference (B frames in between)
                frame_s = self._frame_s
                gap = max(1.0, round((t - self._last_reference_t) / frame_s)) if frame_s else 1.0
                value = vector_motion(vectors.to_ndarray(), frame.width)
                if value is not None:
                    self.per_frame.append(value / gap)
        if kind in self._references:
            self._last_reference_t = t
        if (self.small_frames and (self.shots or (self.motion and not self.per_frame))
                and len(self.small) < MAX_SHOT_FRAMES):
            self.small.append(self._scale.reformat(frame, width=SHOT_SIZE[0], height=SHOT_SIZE[1], format="rgb24",
                                                   interpolation="AREA", threads=1).to_ndarray())
            self.times.append(t)

    def result(self) -> Pace:
        small, times, fps = self.small, self.times, self.fps
        if fps is None and len(times) > 1:
            fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
        score, source = None, None
        if self.motion and self.per_frame:  # a codec that exports vectors but sent no P frame: differences below
            score, source = median(self.per_frame) * (fps or 1.0), MOTION_VECTORS
        elif self.motion and len(small) > 1:
            grey = np.stack(small).mean(axis=-1).astype(np.uint8)
            score, source = median(difference_motion(grey)) * (fps or 1.0), FRAME_DIFFERENCE
        if not self.shots or not small:
            return Pace(score, source, frames_read=self.frames_read)
        return Pace(score, source, np.stack(small), np.asarray(times, np.float32), self.frames_read)
