"""Audio fingerprints and same-sound matching on real music (Debian ``drascula-music``, game-score
tracks) and real speech (``pocketsphinx-testdata`` LibriVox readings), installed by
``make sounds-media``; the tests skip with the reason when they are absent.

The same recording must match under another video, with a voice-over on top, 12 dB quieter,
starting at another point, or cut to 5 s; different tracks must not; the fingerprint is made
in the confined decode child.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from extract.config import Config
from extract.media.audio import AUDIO_RATE
from extract.media.fingerprint import FRAME_S, HEADER, TIME_BITS, fingerprint, in_sample, pack, sample, split, unpack
from extract.media.isolation import DecodeJob, DecodePool
from extract.tools.samples import write_clip
from extract.media.sound_match import match_fingerprints
from extract.models.preprocess import PreprocessSpec
from media import read_audio

MUSIC = Path("/usr/share/scummvm/drascula/audio")
SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
TRACKS = (1, 2, 3, 5, 6, 9, 11, 14)
SPEC = PreprocessSpec(224, "bicubic", "shortest", (0.48145466, 0.4578275, 0.40821073),
                      (0.26862954, 0.26130258, 0.27577711))

needs_media = pytest.mark.skipif(not (MUSIC / "track1.ogg").is_file() or not SPEECH.is_file(),
                                 reason="real music/speech not installed: `make sounds-media` (Debian drascula-music, "
                                        "pocketsphinx-testdata)")




def excerpt(audio: np.ndarray, start_s: float, length_s: float) -> np.ndarray:
    return audio[int(start_s * AUDIO_RATE):int((start_s + length_s) * AUDIO_RATE)]


def with_voice_over(music: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Speech mixed on top at the music's own RMS level (a loud voice-over)."""
    voice = np.resize(speech, len(music))
    return music + voice * np.sqrt(np.mean(music ** 2) / np.mean(voice ** 2))


def test_fingerprint_codes_roundtrip_and_silence():
    rng = np.random.default_rng(0)
    t = np.arange(5 * AUDIO_RATE) / AUDIO_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220, 330, 440)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)
    codes = fingerprint((0.1 * chord + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    assert len(codes) > 50
    hashes, frames = split(codes)
    assert np.all(np.diff(frames) >= 0) and frames.max() * FRAME_S <= 5.0 and hashes.min() >= 0
    assert np.array_equal(unpack(pack(codes)), codes)
    assert unpack(pack(codes[:0])).size == 0 and pack(codes[:0]) == b""  # none: null, no header
    # the first format (32-bit hash << 24, no header) reads as none: its codes are all below the header
    first_format = (hashes[:10] & 0xFFFFFFFF) << 24 | frames[:10]
    assert first_format.max() < HEADER and unpack(first_format.astype("<i8").tobytes()).size == 0
    # the sample is chosen by key alone: the same key at another frame is in it or out of it alike
    moved = (hashes << TIME_BITS) | (frames + 1000)
    assert np.array_equal(in_sample(codes), in_sample(moved)) and 0.1 < in_sample(codes).mean() < 0.4
    assert np.array_equal(sample(codes), codes[in_sample(codes)])
    assert len(fingerprint(np.zeros(5 * AUDIO_RATE, np.float32))) == 0
    assert len(fingerprint(np.zeros(100, np.float32))) == 0


@needs_media
def test_same_recording_matches_and_different_music_does_not():
    tracks = [read_audio(MUSIC / f"track{i}.ogg") for i in TRACKS]
    speech = read_audio(SPEECH)
    originals = [fingerprint(excerpt(a, 10, 30)) for a in tracks]
    for i, audio in enumerate(tracks):
        variants = {
            "voice-over": (fingerprint(with_voice_over(excerpt(audio, 10, 30), speech)), 0.0),
            "12 dB quieter": (fingerprint(0.25 * excerpt(audio, 10, 30)), 0.0),
            "another offset": (fingerprint(excerpt(audio, 17.3, 20)), 7.3),
            "cut to 5 s": (fingerprint(excerpt(audio, 22.1, 5)), 12.1),
        }
        for name, (codes, offset_s) in variants.items():
            found = match_fingerprints(codes, originals[i])
            assert found.same, (TRACKS[i], name, found)
            assert found.offset_s == pytest.approx(offset_s, abs=2 * FRAME_S), (TRACKS[i], name, found)
        for j in range(len(tracks)):
            if j != i:
                found = match_fingerprints(fingerprint(excerpt(tracks[j], 17.3, 20)), originals[i])
                assert not found.same, (TRACKS[j], TRACKS[i], found)


@needs_media
def test_decode_child_fingerprints_the_videos_audio(tmp_path):
    """Three real videos (PyAV-written H.264/AAC): A carries track 1; B the same recording from
    4 s later, quieter, under a voice-over and other pictures; C another track under A's pictures."""
    music, other, speech = (read_audio(MUSIC / "track1.ogg"), read_audio(MUSIC / "track2.ogg"), read_audio(SPEECH))
    clips = {"a": (excerpt(music, 10, 12), 40), "b": (0.3 * with_voice_over(excerpt(music, 14, 8), speech), 200),
             "c": (excerpt(other, 10, 12), 40)}
    jobs = []
    for name, (audio, grey) in clips.items():
        path = write_clip(tmp_path / f"{name}.mp4", len(audio) / AUDIO_RATE, 64, 48, 5.0, audio=audio[None, :],
                          audio_rate=AUDIO_RATE, frame_source=lambda i, t, g=grey: np.full((48, 64, 3), g, np.uint8))
        jobs.append(DecodeJob(name, str(path)))
    config = Config().replace(**{"models.clip.pretrained": None, "ocr.enabled": False})
    with DecodePool(config, SPEC) as pool:
        started = time.perf_counter()
        a, b, c = (pool.decode(job) for job in jobs)
        elapsed = time.perf_counter() - started
    assert all(len(v.sound_fingerprint) > 100 for v in (a, b, c)), elapsed
    found = match_fingerprints(b.sound_fingerprint, a.sound_fingerprint)
    assert found.same and found.offset_s == pytest.approx(4.0, abs=0.1), found
    assert not match_fingerprints(c.sound_fingerprint, a.sound_fingerprint).same
    off = Config().replace(**{"models.clip.pretrained": None, "ocr.enabled": False, "output.sounds": False})
    with DecodePool(off, SPEC) as pool:
        assert len(pool.decode(jobs[0]).sound_fingerprint) == 0
