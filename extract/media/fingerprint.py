"""Audio fingerprints for same-sound search: landmarks (triples of spectral peaks) of 16 kHz audio.

A landmark is three peaks of the log spectrogram, an anchor and two of the ``FANOUT`` later
peaks near it: its 32-bit hash is ``(anchor bin, the two later bins relative to it, the frames
to each)``, its time the anchor's frame. A pair of peaks (Wang's landmark) has 21 bits, too few
to index across history: a day of 20 k new 30 s videos holds ~40 M landmarks, more than the 2 M
pair hashes, so every history landmark would meet ~20 of them by chance (and in 4 minutes of
real music 18 % of pair hashes already repeat; 1.6 % of triple hashes). 32 bits make chance
agreements ~2^11 times rarer. What the triple costs: a landmark needs three peaks to survive, so
a loud voice-over keeps 3-16 % of the landmarks at the offset (pairs: 10-29 %), still >= 53 per
30 s against <= 2 for different music (``extract.media.sound_match``). Two videos carrying the
same recording share many hashes at one constant difference of times (the
offset between the recordings), whatever else is mixed on top; different music shares a few
hashes at scattered offsets. Peaks are local maxima of the log magnitude, so a quieter copy
has the same peaks; a voice-over adds peaks but leaves most of the music's standing; a 5 s
cut keeps the landmarks of those 5 s. (Wang, "An industrial-strength audio search
algorithm", ISMIR 2003.)

Pure numpy, so it runs in the confined decode child on the audio it already decoded
(``extract.media.video.decode_video``), with no library to load and nothing to open.
``fingerprint`` -> ``(n,) int64`` codes ``hash << TIME_BITS | anchor frame``, ordered by
time; ``pack``/``unpack`` store them as little-endian bytes (``videos.sound_fingerprint``).
"""

from __future__ import annotations

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
FANOUT = 4  # later peaks each anchor is paired with; each two of them make a landmark (6 per anchor)
MAX_DT_FRAMES = 31  # a later peak is at most 31 frames (1 s) on; dt takes 5 bits
MAX_DBIN = 63  # and at most 63 bins (1 kHz) up or down; bin - anchor bin + 63 takes 7 bits
TIME_BITS = 24  # anchor frame: up to 2^24 frames (149 h)
HASH_BITS = 8 + 7 + 7 + 5 + 5  # anchor bin - LOW_BIN, two later bins - anchor bin + 63, their two dt


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
    """Codes ``hash << TIME_BITS | anchor frame`` ``(n,) int64`` of peaks ``(t, f)`` (ordered by
    time): each anchor's next ``FANOUT`` peaks within ``MAX_DT_FRAMES`` frames (at least one
    later) and ``MAX_DBIN`` bins, each two of them with the anchor one landmark (module doc)."""
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
    for a in range(FANOUT):
        for b in range(a + 1, FANOUT):
            anchors = np.nonzero(targets[:, b] >= 0)[0]
            first, second = targets[anchors, a], targets[anchors, b]
            h = ((f[anchors] << 24) | ((f[first] - f[anchors] + MAX_DBIN) << 17)
                 | ((f[second] - f[anchors] + MAX_DBIN) << 10) | ((t[first] - t[anchors]) << 5)
                 | (t[second] - t[anchors]))
            out.append((h << TIME_BITS) | t[anchors])
    codes = np.concatenate(out)
    return codes[np.argsort(codes & ((1 << TIME_BITS) - 1), kind="stable")]


def fingerprint(audio: np.ndarray) -> np.ndarray:
    """Landmark codes ``(n,) int64`` of 16 kHz mono ``audio`` ``(m,) float32``, ordered by time;
    empty for silent or too short audio. About 70 codes per second of music."""
    return landmarks(*peaks(spectrogram_db(audio)))


def split(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, frames)`` of landmark codes: ``(n,) int64`` each."""
    codes = np.asarray(codes, np.int64)
    return codes >> TIME_BITS, codes & ((1 << TIME_BITS) - 1)


def pack(codes: np.ndarray) -> bytes:
    """Codes as stored: little-endian int64 bytes."""
    return np.asarray(codes, "<i8").tobytes()


def unpack(blob: bytes | None) -> np.ndarray:
    """Stored bytes -> codes ``(n,) int64`` (empty for None)."""
    return np.frombuffer(blob or b"", "<i8").astype(np.int64)
