"""A video's audio embedding: Whisper's encoder output mean-pooled over the frames of real audio.

Whisper encodes every window as 30 s: the log-Mel of the window's audio is zero-padded to
3000 frames, and the encoder (stride-2 convolution) turns that into ``n_audio_ctx`` = 1500
frames of 20 ms. Only the first ``ceil(real_s / 0.02)`` frames of a window hold its audio;
the rest encode the padding and are left out of the mean, so a 5 s clip and the same 5 s
inside a longer one pool over the same kind of frames.

The mean runs over all real frames of all the video's windows (each frame counts once, so a
short last window weighs by its length), then the vector is L2-normalised. The work splits in
two so a stage can pool inside its encoder batches (windows of several videos together) and
combine per video afterwards: ``window_frame_sums`` per batch, ``pooled_embedding`` per video.
``audio_embedding`` does both for one video's windows.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

ENCODER_FRAME_S = 0.02  # seconds of audio per Whisper encoder output frame (10 ms hop, stride 2)


def real_audio_frames(real_s: Sequence[float] | np.ndarray, n_audio_ctx: int = 1500) -> np.ndarray:
    """Encoder frames holding real audio for windows with ``real_s`` seconds of audio each:
    ``(n_windows,) int64``, ``ceil(real_s / 0.02)`` clipped to ``[0, n_audio_ctx]``."""
    seconds = np.asarray(real_s, dtype=np.float64).reshape(-1)
    if not np.isfinite(seconds).all():
        raise ValueError("real_s: seconds of audio per window must be finite")
    # The small slack keeps 5.0 s (250.0000001 frames in binary) at 250.
    frames = np.ceil(seconds / ENCODER_FRAME_S - 1e-6)
    return np.clip(frames, 0, n_audio_ctx).astype(np.int64)


def window_frame_sums(features: Any, real_s: Sequence[float] | np.ndarray,
                      skip_s: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-window sums of the encoder ``features`` over their real-audio frames.

    ``features``: ``(n_windows, n_audio_ctx, d_model)`` torch tensor (any device/dtype; the
    sums are computed on its device) or numpy array, the Whisper encoder's output; ``real_s``:
    seconds of real audio in each window (the rest is padding); ``skip_s``: seconds at the start of each window to leave
    out (audio an earlier window already pooled, as when transcription resumes a window
    early), None for none. Frames with a NaN or infinite value (a float16 overflow) are left
    out. Returns ``(sums (n_windows, d_model) float64, counts (n_windows,) int64)``: the sum
    over the kept frames and how many were kept.
    """
    import torch

    n_windows, n_ctx, _ = features.shape
    frames = real_audio_frames(real_s, n_ctx)
    if len(frames) != n_windows:
        raise ValueError(f"real_s: {len(frames)} values for {n_windows} windows")
    first = np.zeros(n_windows, np.int64) if skip_s is None else real_audio_frames(skip_s, n_ctx)
    if len(first) != n_windows:
        raise ValueError(f"skip_s: {len(first)} values for {n_windows} windows")
    width = int(frames.max(initial=0))
    # The masked sum runs where the features are (the GPU): only (n_windows, d_model) sums and
    # the counts come back; float32 frames summed in float64 (a float16 sum could overflow).
    head = torch.as_tensor(features)[:, :width].float()
    positions = torch.arange(width, device=head.device)[None, :]
    keep = ((positions >= torch.as_tensor(first, device=head.device)[:, None])
            & (positions < torch.as_tensor(frames, device=head.device)[:, None])
            & torch.isfinite(head).all(dim=-1))
    sums = torch.where(keep[..., None], head, 0.0).sum(dim=1, dtype=torch.float64)
    return sums.cpu().numpy(), keep.sum(dim=1).cpu().numpy().astype(np.int64)


def pooled_embedding(sums: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    """One video's embedding from its windows' ``window_frame_sums``: the mean over all kept
    frames, L2-normalised, ``(d_model,) float32``; None when no frame holds audio (or the mean
    is the zero vector)."""
    total = int(np.sum(counts))
    if total == 0:
        return None
    mean = np.asarray(sums, dtype=np.float64).sum(axis=0) / total
    norm = math.sqrt(float(mean @ mean))
    if not norm > 0.0 or not math.isfinite(norm):
        return None
    return (mean / norm).astype(np.float32)


def audio_embedding(features: Any, real_s: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """The audio embedding of one video from the encoder output of its windows.

    ``features``: ``(n_windows, n_audio_ctx, d_model)`` torch or numpy (Whisper's encoder
    output; 1500 frames = 30 s, 20 ms each); ``real_s``: ``(n_windows,)`` seconds of real audio
    per window. Returns the L2-normalised mean over the real-audio frames, ``(d_model,)
    float32`` without NaN, or None when there is no audio.
    """
    return pooled_embedding(*window_frame_sums(features, real_s))
