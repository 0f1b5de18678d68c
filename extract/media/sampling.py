"""Which frames a video keeps, and how to reach them: pure functions of times, no decoding.

Policies (``sampling.policy``):

- ``uniform``: ``ceil(duration_s * fps)`` timestamps ``i / fps``; when that is fewer than
  ``min_frames`` or more than ``max_frames``, the count is clamped and the timestamps spread
  evenly over the whole video instead, ``i * duration_s / n``. All timestamps lie in
  ``[0, duration_s)``.
- ``keyframes``: the key frames' own times; more than ``max_frames`` are thinned to an evenly
  spread subset (``spread_indices``). Never padded up to ``min_frames``.
- ``scene``: the first frame plus each frame whose luma histogram differs from the previous
  analysed frame by more than ``sampling.scene_threshold`` (``SceneDetector``); thinned the same
  way. Never padded up to ``min_frames``.

The decoder keeps, for each timestamp, the first frame presented at or after it, so the times
here are targets and ``pts_s`` are the frames' real times.

Reaching the targets (``plan_seeks``, ``seek_pays``): decoding must start at a key frame, so
a target's cost is the reference frames from where decoding starts up to it. Decoding on starts
from the *read position*, the furthest packet already sent to the decoder: after a kept frame
that is its reorder delay plus one frame per extra decoder thread past it, not the target.
Seeking starts at the last key frame at or before the target and costs a decoder flush and
restart (``SEEK_COST_FRAMES`` in ``extract.media.video``). So a seek pays only when that key frame
lies more than a seek's cost past the read position: it then skips the reference frames in
between; a key frame at or behind the read position would make the decoder read and decode
again what it has already decoded. The choice is made per target, so a video whose samples
are sparse relative to its key-frame interval is read with one seek per sample, a dense one
sequentially, and a long-GOP one seeks only where a new GOP starts well past the read position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from extract.config import SamplingConfig

TIME_EPS_S = 1e-6  # timestamps closer than this count as equal (float rounding of pts * time_base)
SCENE_BINS = 32  # luma histogram bins of the scene score
SCENE_SIZE = (64, 36)  # (width, height) frames are downscaled to before the histogram


def uniform_timestamps(duration_s: float, fps: float, min_frames: int, max_frames: int) -> np.ndarray:
    """Uniform sampling timestamps, seconds from the video's start, ``(n,) float64`` increasing.

    ``n = clamp(ceil(duration_s * fps), min_frames, max_frames)``; unclamped times are
    ``i / fps``, clamped ones ``i * duration_s / n``. A zero or unknown-length video yields
    ``min_frames`` copies of 0 (the decoder then keeps its first frame for each).
    """
    if not duration_s > 0:
        return np.zeros(min_frames)
    wanted = max(1, math.ceil(duration_s * fps - TIME_EPS_S))
    n = min(max(wanted, min_frames), max_frames)
    if n == wanted:
        return np.arange(n) / fps
    return np.arange(n) * (duration_s / n)


def sample_timestamps(duration_s: float, sampling: SamplingConfig) -> np.ndarray:
    """``uniform_timestamps`` with the config's ``fps``, ``min_frames`` and ``max_frames``."""
    return uniform_timestamps(duration_s, sampling.fps, sampling.min_frames, sampling.max_frames)


def spread_indices(n_items: int, max_items: int) -> np.ndarray:
    """Indices of at most ``max_items`` of ``n_items`` spread evenly, first item always kept.

    All indices when ``n_items <= max_items``; else ``floor(i * n_items / max_items)``, which is
    strictly increasing. ``(k,) int64``.
    """
    if n_items <= max_items:
        return np.arange(n_items)
    return (np.arange(max_items) * n_items) // max_items


def keyframe_targets(keyframe_times_s: Sequence[float], max_frames: int) -> np.ndarray:
    """``keyframes`` policy: key-frame times (seconds, sorted) thinned to ``max_frames``."""
    times = np.asarray(keyframe_times_s, np.float64)
    return times[spread_indices(len(times), max_frames)]


@dataclass(frozen=True)
class KeyFrame:
    """A seekable key frame: ``time_s`` seconds from the stream start (presentation time),
    ``seek_ts`` its presentation timestamp in the stream's time base, what a seek takes."""

    time_s: float
    seek_ts: int


def seek_pays(keyframe_s: float, read_s: float, min_skip_s: float) -> bool:
    """Whether seeking to a key frame presented at ``keyframe_s`` beats decoding on from the read
    position ``read_s`` (presentation time of the furthest packet already sent to the decoder,
    seconds): only when the key frame lies more than ``min_skip_s`` (a seek's cost in seconds of
    stream) past it. Never for a key frame at or behind the read position."""
    return keyframe_s > read_s + min_skip_s


def plan_seeks(targets_s: Sequence[float], keyframes: Sequence[KeyFrame] | None,
               min_skip_s: float) -> list[KeyFrame | None]:
    """For each target, the key frame to seek to before decoding towards it, or None to go on.

    ``targets_s``: sorted seconds. ``keyframes``: sorted seekable key frames, or None/empty
    when the container has no index (then nothing is sought: sequential decoding). Target
    ``i+1`` gets the last key frame at or before it when ``seek_pays`` from ``targets_s[i]``,
    the earliest the read position can be after target ``i`` (the first target: from the
    stream start). The decoder reads further ahead than its kept frame, so this plan is an
    upper bound: ``extract.media.video.frames_at`` seeks only where ``seek_pays`` also holds from
    the reader's actual read position, so it never seeks back to a key frame already read.
    """
    targets = np.asarray(targets_s, np.float64)
    plan: list[KeyFrame | None] = [None] * len(targets)
    if not keyframes:
        return plan
    kf_times = np.array([k.time_s for k in keyframes])
    position = 0.0
    for i, t in enumerate(targets):
        j = int(np.searchsorted(kf_times, t + TIME_EPS_S, side="right")) - 1
        if j >= 0 and seek_pays(kf_times[j], position, min_skip_s):
            plan[i] = keyframes[j]
        position = max(position, t)
    return plan


def luma_histogram(gray: np.ndarray, bins: int = SCENE_BINS) -> np.ndarray:
    """Normalised histogram of an 8-bit luma image, ``(bins,) float64`` summing to 1."""
    counts = np.bincount((gray.ravel().astype(np.int32) * bins) >> 8, minlength=bins)
    return counts / max(counts.sum(), 1)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms: 0 = same, 1 = disjoint."""
    return float(0.5 * np.abs(a - b).sum())


class SceneDetector:
    """Streaming scene-change score: luma-histogram distance to the previous analysed frame.

    ``update(gray)`` takes a ``(h, w) uint8`` luma image (the decoder passes frames scaled to
    ``SCENE_SIZE``) and returns True for the first frame and for a frame whose distance to
    the previous one is above ``threshold`` (in [0, 1]). Cheap and robust to motion within a
    shot; a cut between shots with similar brightness distributions can be missed.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.previous: np.ndarray | None = None
        self.last_score = 0.0

    def update(self, gray: np.ndarray) -> bool:
        hist = luma_histogram(gray)
        first = self.previous is None
        self.last_score = 1.0 if first else histogram_distance(hist, self.previous)
        self.previous = hist
        return first or self.last_score > self.threshold
