"""Audio fingerprints for same-sound search: landmarks (quads of spectral peaks) of 16 kHz audio.

A landmark is four peaks of the log spectrogram, an anchor and three of the ``FANOUT`` later
peaks near it: its 41-bit key is ``(anchor bin, then for each later peak its bin relative to the
anchor's and the frames to it halved)``, its time the anchor's frame. Why four peaks: music's
peaks are skewed and correlated (harmonic intervals, tempo-locked gaps), so a key's fields carry
far fewer bits than their width. Measured on 28 real tracks (``drascula-music``, whole tracks,
``bench.bench_sounds.hash_bits``), keys of different tracks agree as often as uniform keys of
22.0 bits would for the first format's triples (32 bits wide) and of 25.4 bits for these quads
(26.5 not counting the stretches two of the tracks really share): a 20 k-video day of 30 s clips
holds ~65 M quads and a history landmark meets ~1.5 of them by chance (a triple: ~10 of ~40 M).
Why the halved gaps: a copy cut half a 32 ms frame off the original's frame grid moves peaks by
a frame, and exact gaps kept only 9-67 of a 10 s copy's quads (halved: 13-201; triples 17-103).
What the quad costs: a landmark needs four peaks to survive, so a loud voice-over keeps fewer of
them (>= 24 per 30 s at the offset, against <= 1 for different music;
``extract.media.sound_match``); ``FANOUT`` 5 makes 10 quads per anchor, ~100 landmarks per
second of music. Two videos carrying the same recording share many keys at one constant
difference of times (the offset between the recordings), whatever else is mixed on top;
different music shares a few keys at scattered offsets. Peaks are local maxima of the log
magnitude, so a quieter copy has the same peaks; a voice-over adds peaks but leaves most of the
music's standing; a 5 s cut keeps the landmarks of those 5 s. (Wang, "An industrial-strength
audio search algorithm", ISMIR 2003.)

The *sample* (``sample``): the landmarks whose key hashes into one ``SAMPLE_RATE``-th of the key
space, about 25 per second. It is chosen by key value, so a copy of a recording (cut, quieter,
under a voice-over) keeps the same landmarks in its sample as the original does: the history
search (``extract.index.sounds``) scans only the samples (``videos.sound_keys``) and lines up
the full fingerprints of the few pairs whose samples agree.

Pure numpy, so it runs in the confined decode child on the audio it already decoded
(``extract.media.video.decode_video``), with no library to load and nothing to open.
``fingerprint`` -> ``(n,) int64`` codes ``key << TIME_BITS | anchor frame``, ordered by time.
Stored (``stored``/``pack``; ``videos.sound_fingerprint`` and ``videos.sound_keys``) as
little-endian int64 after a ``HEADER`` code naming the format (``FORMAT``): a stored value
without it is a fingerprint of the first format (32-bit triple keys, before version 0.4.0), which
``unpack`` reads as no fingerprint, so old and new landmarks never meet.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from numpy.fft import rfft  # imported here, not on first use: a confined decode child can open no file
from numpy.lib.stride_tricks import as_strided

from extract.media.audio import AUDIO_RATE

WINDOW = 1024  # samples per spectrum (64 ms at 16 kHz; 15.6 Hz per bin)
HOP = 512  # samples between spectra: one frame = 32 ms
FRAME_S = HOP / AUDIO_RATE  # seconds per frame
LOW_BIN, HIGH_BIN = 4, 256  # bins kept: 62 Hz .. 4 kHz (where music and phone-mic copies agree)
PEAK_FRAMES, PEAK_BINS = 4, 10  # a peak is the maximum of +-4 frames (128 ms) x +-10 bins (156 Hz)
PEAK_FLOOR_DB = 50.0  # peaks quieter than the clip's loudest by more than this are noise
SILENCE_RMS = 0.003  # frames quieter than this (about -50 dBFS; classify_audio's rule) hold no peaks
PEAKS_PER_S = 12  # the strongest peaks kept per second of audio
FANOUT = 5  # later peaks each anchor is grouped with; each three of them make a landmark (10 per anchor)
TARGETS = 3  # later peaks per landmark
MAX_DT_FRAMES = 31  # a later peak is at most 31 frames (1 s) on
DT_STEP = 2  # frames to the later peak, in steps of 2 (64 ms), so the key takes dt // 2: 4 bits
MAX_DBIN = 63  # and at most 63 bins (1 kHz) up or down; bin - anchor bin + 63 takes 7 bits
TIME_BITS = 22  # anchor frame: up to 2^22 frames (37 h; audio past that holds no landmarks)
KEY_BITS = 8 + TARGETS * (7 + 4)  # anchor bin - LOW_BIN, then each later peak's bin - anchor bin + 63 and dt // 2
SAMPLE_BITS = 2  # one landmark in 2^SAMPLE_BITS (by key) is in the sample
SAMPLE_RATE = 1 << SAMPLE_BITS
FORMAT = 2  # 1: 32-bit triple keys << 24 (before version 0.4.0), stored without a header
HEADER = (0x7F << 56) | FORMAT  # first stored code of a fingerprint; >= 2^56, which no format-1 code reaches
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiply-shift spreads the keys before the sample's cut


def spectrogram_db(audio: np.ndarray) -> np.ndarray:
    """Log magnitude ``(frames, HIGH_BIN - LOW_BIN) float32`` in dB of 16 kHz mono ``audio``
    ``(m,) float32`` (Hann windows of ``WINDOW``, hop ``HOP``); frames quieter than
    ``SILENCE_RMS`` read -inf."""
    audio = np.asarray(audio, np.float32)
    if audio.size < WINDOW:
        return np.zeros((0, HIGH_BIN - LOW_BIN), np.float32)
    n = 1 + (audio.size - WINDOW) // HOP
    frames = as_strided(audio, (n, WINDOW), (audio.strides[0] * HOP, audio.strides[0]))
    window = np.hanning(WINDOW).astype(np.float32)
    power = np.abs(rfft(frames * window, axis=1)[:, LOW_BIN:HIGH_BIN]) ** 2
    db = (10.0 * np.log10(power + 1e-12)).astype(np.float32)
    db[np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) < SILENCE_RMS] = -np.inf
    return db


def _running_max(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Maximum over ``+-radius`` along ``axis`` (edges padded with -inf)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, constant_values=-np.inf)
    out = np.full_like(x, -np.inf)
    length = x.shape[axis]
    for shift in range(2 * radius + 1):
        out = np.maximum(out, np.take(padded, np.arange(shift, shift + length), axis=axis))
    return out


def peaks(db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectral peaks of ``spectrogram_db``: ``(frames, bins)`` int arrays (bin counted from
    ``LOW_BIN``), ordered by frame then bin: local maxima over ``PEAK_FRAMES`` x ``PEAK_BINS``,
    within ``PEAK_FLOOR_DB`` of the loudest, the ``PEAKS_PER_S`` strongest of each second."""
    if db.size == 0 or not np.isfinite(db).any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    local = _running_max(_running_max(db, PEAK_FRAMES, 0), PEAK_BINS, 1)
    is_peak = (db == local) & np.isfinite(db) & (db >= db[np.isfinite(db)].max() - PEAK_FLOOR_DB)
    t, f = np.nonzero(is_peak)
    strength = db[t, f]
    second = (t * FRAME_S).astype(np.int64)
    order = np.lexsort((-strength, second))  # by second, strongest first
    t, f, second = t[order], f[order], second[order]
    first_of_second = np.searchsorted(second, second, side="left")
    keep = np.arange(len(t)) - first_of_second < PEAKS_PER_S
    t, f = t[keep], f[keep]
    order = np.lexsort((f, t))
    return t[order].astype(np.int64), f[order].astype(np.int64)


def landmarks(t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Codes ``key << TIME_BITS | anchor frame`` ``(n,) int64`` of peaks ``(t, f)`` (ordered by
    time): each anchor's next ``FANOUT`` peaks within ``MAX_DT_FRAMES`` frames (at least one
    later) and ``MAX_DBIN`` bins, each ``TARGETS`` of them with the anchor one landmark (module
    doc); anchors at frame ``2^TIME_BITS`` or later hold none."""
    n = len(t)
    targets = np.full((n, FANOUT), -1, np.int64)  # each anchor's later peaks, in time order
    taken = np.zeros(n, np.int64)
    for step in range(1, min(4 * FANOUT, n - 1) + 1):  # later peaks in time order; the first FANOUT that fit
        dt = t[step:] - t[:-step]
        df = f[step:] - f[:-step]
        anchors = np.nonzero((dt >= 1) & (dt <= MAX_DT_FRAMES) & (np.abs(df) <= MAX_DBIN))[0]
        anchors = anchors[taken[anchors] < FANOUT]
        targets[anchors, taken[anchors]] = anchors + step
        taken[anchors] += 1
    out = [np.zeros(0, np.int64)]
    for group in combinations(range(FANOUT), TARGETS):
        anchors = np.nonzero((targets[:, group[-1]] >= 0) & (t < (1 << TIME_BITS)))[0]
        key = f[anchors]
        for g in group:
            later = targets[anchors, g]
            key = (key << 11) | ((f[later] - f[anchors] + MAX_DBIN) << 4) | ((t[later] - t[anchors]) // DT_STEP)
        out.append((key << TIME_BITS) | t[anchors])
    codes = np.concatenate(out)
    return codes[np.argsort(codes & ((1 << TIME_BITS) - 1), kind="stable")]


def fingerprint(audio: np.ndarray) -> np.ndarray:
    """Landmark codes ``(n,) int64`` of 16 kHz mono ``audio`` ``(m,) float32``, ordered by time;
    empty for silent or too short audio. About 100 codes per second of music."""
    return landmarks(*peaks(spectrogram_db(audio)))


def split(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, frames)`` of landmark codes: ``(n,) int64`` each."""
    codes = np.asarray(codes, np.int64)
    return codes >> TIME_BITS, codes & ((1 << TIME_BITS) - 1)


def in_sample(codes: np.ndarray) -> np.ndarray:
    """``(n,) bool``: which codes ``(n,) int64`` are in the sample (module doc): their key,
    multiplied by an odd constant, has its top ``SAMPLE_BITS`` bits zero."""
    keys = (np.asarray(codes, np.int64) >> TIME_BITS).astype(np.uint64)
    return (keys * _MIX) >> np.uint64(64 - SAMPLE_BITS) == 0


def sample(codes: np.ndarray) -> np.ndarray:
    """The codes ``(n,) int64`` in the sample, in their order."""
    codes = np.asarray(codes, np.int64)
    return codes[in_sample(codes)]


def stored(codes: np.ndarray) -> np.ndarray:
    """Codes as a row holds them: ``(n + 1,) int64``, ``HEADER`` first; ``(0,)`` for none (null)."""
    codes = np.asarray(codes, np.int64)
    return np.concatenate([[HEADER], codes]).astype(np.int64) if len(codes) else np.zeros(0, np.int64)


def pack(codes: np.ndarray) -> bytes:
    """Codes as stored: ``stored`` as little-endian int64 bytes (empty for none)."""
    return stored(codes).astype("<i8").tobytes()


def unpack(blob: bytes | None) -> np.ndarray:
    """Stored bytes -> codes ``(n,) int64``; empty for None, empty, or a first-format value (no
    ``HEADER``: its landmarks are not comparable with these)."""
    values = np.frombuffer(blob or b"", "<i8").astype(np.int64)
    return values[1:] if len(values) and values[0] == HEADER else np.zeros(0, np.int64)
