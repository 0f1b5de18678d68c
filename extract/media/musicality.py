"""Is audible non-speech audio music or other sound? Signal features and the rule, pure numpy.

Three features of a block of 16 kHz mono audio, from a 1024-point Hann STFT (64 ms) every
256 samples (16 ms), over 31 Hz-4 kHz:

- ``beat``: the onset envelope's periodicity, the highest normalised autocorrelation of the
  positive spectral flux (log-magnitude) at lags of 0.25-1.5 s (40-240 beats per minute).
  Music keeps a pulse; a crash, wind or an engine does not.
- ``flatness``: the median spectral flatness (geometric over arithmetic mean of the power) of
  the frames within 40 dB of the loudest: near 0 for tones, near 1 for noise.
- ``pitch_classes``: how many of the 12 pitch classes are, in some frame, the strongest
  among the spectral peaks that stand 15 dB over their neighbourhood and last at least 0.1 s
  (within one bin): a melody and its chords visit many, a horn or a whistle one or two.

The rule (``is_music``): music when ``beat >= MIN_BEAT``, or when ``flatness <= MAX_FLATNESS``
and ``pitch_classes >= MIN_PITCH_CLASSES``. Fitted on 4 s excerpts of Debian's
``drascula-music`` score and the even-numbered sounds of ``openttd-opensfx`` (recorded engines,
crashes, animals, wind, horns, applause), checked on held-out ``asc-music`` excerpts and the
odd-numbered sounds; ``bench/bench_music_speech.py`` measures both and ``make bench`` writes
the confusion counts to ``bench/RESULTS.md``. ``sounds_like_music`` applies it to a clip of any
length: 4 s blocks (the length it was fitted on), at most ``MAX_BLOCKS`` of them spread over
the clip, music when at least half of the audible blocks are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.media.audio import AUDIO_RATE

FFT_SIZE = 1024  # STFT frame, samples (64 ms at 16 kHz)
HOP = 256  # STFT hop, samples (16 ms at 16 kHz)
LOW_BIN, HIGH_BIN = 2, 256  # analysed bins: 31 Hz up to 4 kHz at 16 kHz
AUDIBLE_DB = 40.0  # frames within this many dB of the loudest frame count for flatness and pitch
PEAK_DB = 15.0  # a spectral peak stands this far above the median of the 33 bins around it
PEAK_FRAMES = 6  # a tonal peak lasts this many frames (~0.1 s) within one bin
BEAT_LAGS_S = (0.25, 1.5)  # onset periodicity is searched at these lags, seconds (240-40 bpm)
BLOCK_S = 4.0  # the rule judges blocks of this length, seconds
MAX_BLOCKS = 5  # at most this many blocks per clip, spread evenly over it

# The rule's thresholds, fitted as the module doc says (bench/bench_music_speech.py).
MIN_BEAT = 0.325
MAX_FLATNESS = 0.025
MIN_PITCH_CLASSES = 6


@dataclass(frozen=True)
class MusicFeatures:
    """``beat`` (autocorrelation in [-1, 1]), ``flatness`` (in [0, 1]) and ``pitch_classes``
    (0-12) of one block of audio; see the module doc."""

    beat: float
    flatness: float
    pitch_classes: int


def music_features(audio: np.ndarray, rate: int = AUDIO_RATE) -> MusicFeatures:
    """The features of ``audio`` ``(m,) float32`` in [-1, 1] at ``rate`` (16 kHz) as one block."""
    if rate != AUDIO_RATE:
        raise ValueError(f"music_features: audio must be {AUDIO_RATE} Hz, got {rate}")
    samples = np.asarray(audio, dtype=np.float64).reshape(-1)
    if samples.size < FFT_SIZE:
        samples = np.pad(samples, (0, FFT_SIZE - samples.size))
    frames = np.lib.stride_tricks.sliding_window_view(samples, FFT_SIZE)[::HOP] * np.hanning(FFT_SIZE)
    power = np.abs(np.fft.rfft(frames, axis=1))[:, LOW_BIN:HIGH_BIN] ** 2 + 1e-12
    energy = power.sum(axis=1)
    audible = power[energy >= energy.max() * 10 ** (-AUDIBLE_DB / 10)]
    flatness = np.exp(np.log(audible).mean(axis=1)) / audible.mean(axis=1)
    return MusicFeatures(beat=_beat(power), flatness=float(np.median(flatness)),
                         pitch_classes=_pitch_classes(audible))


def _beat(power: np.ndarray) -> float:
    """Highest normalised autocorrelation of the positive log-spectral flux in ``BEAT_LAGS_S``."""
    flux = np.maximum(0.0, np.diff(np.log1p(power * 1e4), axis=0)).sum(axis=1)
    flux = flux - flux.mean()
    lo, hi = (int(s * AUDIO_RATE / HOP) for s in BEAT_LAGS_S)
    if flux.size <= hi or not np.any(flux):
        return 0.0
    spectrum = np.fft.rfft(flux, 2 * flux.size)
    corr = np.fft.irfft(spectrum * np.conj(spectrum))[:flux.size]
    return float(corr[lo:hi].max() / corr[0])


def _pitch_classes(power: np.ndarray) -> int:
    """How many pitch classes are the strongest lasting tonal peak's in some frame of ``power``."""
    level = 10 * np.log10(power)
    shifted = [np.roll(level, s, axis=1) for s in (-2, -1, 1, 2)]
    padded = np.pad(level, ((0, 0), (16, 16)), mode="edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(padded, 33, axis=1), axis=2)
    peaks = (level >= np.maximum.reduce(shifted)) & (level > local + PEAK_DB)
    near = np.maximum.reduce([np.roll(peaks, s, axis=1) for s in (-1, 0, 1)])
    lasting = peaks.copy()
    for lag in range(1, PEAK_FRAMES):
        lasting[:-lag] &= near[lag:]
        lasting[-lag:] = False
    hz = np.arange(LOW_BIN, HIGH_BIN) * AUDIO_RATE / FFT_SIZE
    pitch_class = np.round(12 * np.log2(hz / 440.0)).astype(int) % 12
    tonal = power * lasting
    chroma = np.stack([tonal[:, pitch_class == c].sum(axis=1) for c in range(12)], axis=1)
    held = chroma.sum(axis=1) > 0
    return int(np.unique(chroma[held].argmax(axis=1)).size)


def is_music(features: MusicFeatures) -> bool:
    """The rule (module doc) on one block's features."""
    return features.beat >= MIN_BEAT or (features.flatness <= MAX_FLATNESS
                                         and features.pitch_classes >= MIN_PITCH_CLASSES)


def music_blocks(audio: np.ndarray, rate: int = AUDIO_RATE) -> list[np.ndarray]:
    """``audio`` cut into the blocks the rule judges: ``BLOCK_S`` long (one block when shorter),
    at most ``MAX_BLOCKS`` of them, evenly spread, in order."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = int(BLOCK_S * rate)
    if audio.size <= n:
        return [audio]
    count = min(MAX_BLOCKS, audio.size // n)
    starts = np.linspace(0, audio.size - n, count).astype(int)
    return [audio[s:s + n] for s in starts]


def sounds_like_music(audio: np.ndarray, silence_rms: float, rate: int = AUDIO_RATE) -> bool:
    """Whether audible non-speech ``audio`` ``(m,) float32`` at ``rate`` Hz is music: at least
    half of its blocks (``music_blocks``) whose RMS reaches ``silence_rms`` are music by ``is_music``."""
    blocks = [b for b in music_blocks(audio, rate) if b.size and np.sqrt(np.mean(np.square(b))) >= silence_rms]
    votes = [is_music(music_features(b, rate)) for b in blocks]
    return bool(votes) and 2 * sum(votes) >= len(votes)
