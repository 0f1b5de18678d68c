"""Cutting a video's audio into Whisper windows, and the energy checks that go with it.

Pure numpy: no model, no torch. The transcription stage (``extract.models.whisper``) decodes the
windows this module plans.

Whisper sees 30 s at a time. Audio up to ``window_s`` long is one window. Longer audio is cut
into consecutive windows that cover every sample exactly once: each cut is placed at the
quietest point (a simple energy VAD) in the last ``boundary_search_s`` seconds before the
window would reach ``window_s``, so a cut falls in a pause between words rather than through
one. The energy VAD: audio is split into 20 ms frames (one Whisper timestamp step), each
frame's mean square is averaged over a 200 ms neighbourhood (a pause is a quiet stretch, not
a single quiet frame), frames within 3 dB of the quietest count as pause, and the cut goes in
the middle of the longest run of pause frames (the latest among equals, keeping windows
long), so both windows keep some of the pause as lead-in and lead-out.

A window is *silent* when the RMS of its loudest 100 ms stretch is below ``silence_rms``:
nothing audible anywhere in it, so it is never sent to the model. This is stricter than the
whole-window RMS being below ``silence_rms`` (it implies it): a short word in a long quiet
window keeps the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.config import WHISPER_CONTEXT_S, check_window_config
from extract.media.audio import AUDIO_RATE

CUT_FRAME_S = 0.02  # energy frame for cut search, seconds (one Whisper timestamp step)
CUT_SMOOTH_S = 0.2  # a pause must be quiet over this span, seconds
PAUSE_DB = 3.0  # frames within this many dB of the quietest frame count as pause
SILENCE_FRAME_S = 0.1  # loudness is judged over stretches of this length, seconds


@dataclass(frozen=True)
class AudioWindow:
    """Samples ``[start, end)`` of a video's 16 kHz audio, decoded as one Whisper window."""

    start: int  # first sample, inclusive
    end: int  # last sample, exclusive

    @property
    def n_samples(self) -> int:
        return self.end - self.start

    @property
    def start_s(self) -> float:
        """Offset of the window in video time, seconds."""
        return self.start / AUDIO_RATE

    @property
    def end_s(self) -> float:
        return self.end / AUDIO_RATE

    @property
    def duration_s(self) -> float:
        return self.n_samples / AUDIO_RATE


def frame_mean_square(audio: np.ndarray, frame: int) -> np.ndarray:
    """Mean square per consecutive ``frame``-sample frame of ``audio`` ``(m,)``; a shorter tail frame counts.

    Returns ``(ceil(m / frame),) float64``.
    """
    audio = np.asarray(audio, dtype=np.float64)
    n_frames = -(-len(audio) // frame)
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[: len(audio)] = audio
    sums = (padded.reshape(n_frames, frame) ** 2).sum(axis=1)
    counts = np.full(n_frames, frame, dtype=np.float64)
    if n_frames and len(audio) % frame:
        counts[-1] = len(audio) % frame
    return sums / counts


def quietest_point(audio: np.ndarray, lo: int, hi: int, rate: int = AUDIO_RATE) -> int:
    """Sample index in ``[lo, hi]`` in the middle of the longest pause of ``audio[lo:hi]``.

    Energy VAD of the module doc: 20 ms frames, mean square smoothed over 200 ms; frames within
    ``PAUSE_DB`` of the quietest are pause frames; the longest run of them wins (the latest
    among equals) and the cut goes at its centre, leaving half the pause on either side.
    """
    if hi <= lo:
        return hi
    frame = max(1, int(round(CUT_FRAME_S * rate)))
    energy = frame_mean_square(audio[lo:hi], frame)
    span = max(1, int(round(CUT_SMOOTH_S / CUT_FRAME_S)))
    if span > 1 and len(energy) > 1:
        kernel = np.ones(span) / span
        # Normalise by the kernel mass inside the region so edge frames are not favoured.
        energy = np.convolve(energy, kernel, mode="same") / np.convolve(np.ones_like(energy), kernel, mode="same")
    pause = energy <= energy.min() * 10 ** (PAUSE_DB / 10) + 1e-12
    # Runs of consecutive pause frames: [starts[i], ends[i]).
    edges = np.diff(np.concatenate([[0], pause.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    longest = np.flatnonzero((ends - starts) == (ends - starts).max())[-1]
    centre = (starts[longest] + ends[longest]) / 2  # in frames
    return min(hi, lo + int(round(centre * frame)))


def next_window(audio: np.ndarray, start: int, window_s: float = WHISPER_CONTEXT_S,
                boundary_search_s: float = 3.0, rate: int = AUDIO_RATE) -> AudioWindow:
    """The window of ``audio`` ``(m,)`` that begins at sample ``start`` (``0 <= start < m``).

    It runs to the end of the audio when that is at most ``window_s`` away, else to the cut
    ``quietest_point`` finds within ``boundary_search_s`` before ``start + window_s`` (module doc).
    """
    n = len(audio)
    window = int(round(window_s * rate))
    if n - start <= window:
        return AudioWindow(start, n)
    hi = start + window
    cut = quietest_point(audio, hi - int(round(boundary_search_s * rate)), hi, rate)
    return AudioWindow(start, max(cut, start + 1))  # always progress, even with a zero search span


def plan_windows(audio: np.ndarray, window_s: float = WHISPER_CONTEXT_S, boundary_search_s: float = 3.0,
                 rate: int = AUDIO_RATE) -> list[AudioWindow]:
    """Consecutive windows covering ``audio`` ``(m,)`` exactly once, each at most ``window_s`` long.

    ``next_window`` from the start, then from each cut (module doc). Empty audio has no windows.
    This is the plan when every window is transcribed to its end; the transcription stage
    starts a window earlier where Whisper defers a segment cut by the previous one.
    """
    check_window_config(window_s, boundary_search_s)
    windows: list[AudioWindow] = []
    start = 0
    while start < len(audio):
        windows.append(next_window(audio, start, window_s, boundary_search_s, rate))
        start = windows[-1].end
    return windows


def loudest_rms(audio: np.ndarray, rate: int = AUDIO_RATE) -> float:
    """RMS of the loudest ``SILENCE_FRAME_S`` stretch of ``audio`` ``(m,)`` (float audio in [-1, 1]); 0 when empty."""
    if len(audio) == 0:
        return 0.0
    frame = max(1, int(round(SILENCE_FRAME_S * rate)))
    return float(np.sqrt(frame_mean_square(audio, frame).max()))


def is_silent(audio: np.ndarray, silence_rms: float, rate: int = AUDIO_RATE) -> bool:
    """True when nothing in ``audio`` ``(m,)`` is louder than ``silence_rms`` (module doc)."""
    return loudest_rms(audio, rate) < silence_rms
