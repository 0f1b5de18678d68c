"""Synthetic music-like audio for tests and benchmarks: notes with overtones, envelopes and a beat.

Not a pure tone: each note is a sum of harmonics with an ADSR envelope and a little vibrato,
a bass note an octave below marks every other beat, and a drum-like burst (a decaying
low thump plus filtered noise) hits on each beat. Two renderings of the same notes with a
different ``timbre``, ``tempo_jitter`` and ``noise_db`` are "the same melody played again".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from extract.media.audio import AUDIO_RATE

TIMBRES: dict[str, tuple[float, ...]] = {  # relative amplitude of harmonics 1, 2, 3, ...
    "organ": (1.0, 0.6, 0.45, 0.3, 0.2, 0.1),
    "flute": (1.0, 0.25, 0.08, 0.03),
    "brass": (1.0, 0.8, 0.7, 0.55, 0.4, 0.3, 0.2, 0.1),
}


def midi_hz(note: float) -> float:
    """Frequency of MIDI note ``note`` (69 = A4 = 440 Hz), Hz."""
    return 440.0 * 2.0 ** ((note - 69) / 12)


def _adsr(n: int, rate: int, attack_s: float, decay_s: float, sustain: float, release_s: float) -> np.ndarray:
    """Amplitude envelope of one note, ``(n,) float64`` in [0, 1]."""
    a, d, r = (max(1, int(x * rate)) for x in (attack_s, decay_s, release_s))
    a, d = min(a, n), min(d, max(0, n - a))
    r = min(r, max(0, n - a - d))
    s = n - a - d - r
    return np.concatenate([np.linspace(0, 1, a, endpoint=False), np.linspace(1, sustain, d, endpoint=False),
                           np.full(s, sustain), np.linspace(sustain, 0, r)])


def melody(notes: Sequence[float], beat_s: float = 0.3, timbre: str = "organ", tempo_jitter: float = 0.0,
           noise_db: float | None = None, drums: bool = True, amplitude: float = 0.3, seed: int = 0,
           rate: int = AUDIO_RATE, lead_in_s: float = 0.0) -> np.ndarray:
    """``notes`` (MIDI numbers, one per beat) rendered as ``(1, n) float32`` in [-1, 1] at ``rate`` Hz.

    ``beat_s``: seconds per note; ``tempo_jitter``: each beat's length is scaled by a random
    factor in ``[1 - j, 1 + j]``; ``timbre``: a key of ``TIMBRES``; ``noise_db``: white noise at
    this level relative to the music's RMS (e.g. -20), None for none; ``drums``: a beat-long
    burst on every note; ``lead_in_s``: silence before the first note. Peak-normalised to
    ``amplitude``. Deterministic for a given ``seed``.
    """
    if timbre not in TIMBRES:
        raise ValueError(f"timbre: {timbre!r} is not one of {sorted(TIMBRES)}")
    rng = np.random.default_rng(seed)
    lengths = beat_s * (1.0 + rng.uniform(-tempo_jitter, tempo_jitter, len(notes)))
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]]) + lead_in_s
    total = int(np.ceil((lead_in_s + lengths.sum() + 0.5) * rate))
    out = np.zeros(total, np.float64)
    harmonics = TIMBRES[timbre]
    for i, (note, start_s, length_s) in enumerate(zip(notes, starts, lengths)):
        n = int(length_s * 1.2 * rate)  # notes ring a little into the next beat
        t = np.arange(n) / rate
        f0 = midi_hz(note)
        phase = 2 * np.pi * f0 * (t + 0.002 * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5))  # vibrato
        tone = sum(a * np.sin(k * phase) for k, a in enumerate(harmonics, start=1) if k * f0 < rate / 2)
        tone = tone * _adsr(n, rate, 0.01, 0.08, 0.6, 0.12)
        if i % 2 == 0:
            tone = tone + 0.5 * np.sin(phase / 2) * _adsr(n, rate, 0.005, 0.2, 0.3, 0.1)  # bass
        if drums:
            burst = np.exp(-t / 0.04)
            thump = np.sin(2 * np.pi * (60 + 60 * np.exp(-t / 0.03)) * t) * burst
            hiss = np.convolve(rng.standard_normal(n), np.ones(3) / 3, mode="same") * np.exp(-t / 0.015)
            tone = tone + 1.2 * thump + 0.4 * hiss
        a = int(start_s * rate)
        out[a:a + n] += tone[: total - a]
    first = int(lead_in_s * rate)
    music_rms = np.sqrt(np.mean(out[first:] ** 2))
    if noise_db is not None:
        out[first:] += rng.standard_normal(total - first) * music_rms * 10 ** (noise_db / 20)
    out *= amplitude / max(np.abs(out).max(), 1e-12)
    return out.astype(np.float32)[None, :]
