"""Voice activity with the real silero-vad model (the ONNX export in the silero-vad wheel).

Speech is espeak-ng's (skipped with the reason when it is not installed); music is
``extract.media.music.melody``: notes with overtones, envelopes, a bass line and a drum-like
burst on every beat, not a pure tone.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from extract.media.audio import AUDIO_RATE
from extract.media.music import melody
from extract.tools.samples import speech
from extract.models.vad import (
    AudioActivity,
    VadOptions,
    VoiceActivity,
    classify_audio,
    speech_seconds,
    windows_with_speech,
)

TUNE = [60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 60, 55]
SENTENCES = ("Watch my new dance move and follow for more.",
             "The waves are calm today and the water is warm. Let us go for a swim.")


@pytest.fixture(scope="module")
def vad() -> VoiceActivity:
    return VoiceActivity()


@pytest.fixture(scope="module")
def spoken() -> list[np.ndarray]:
    """Each sentence spoken, ``(m,) float32`` at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no speech to test with")
    return [speech(text, voice=voice)[0] for text, voice in zip(SENTENCES, ("en-us", "en-gb"))]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * AUDIO_RATE), np.float32)


def room_noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.001, n).astype(np.float32)  # about -60 dBFS


def test_speech_spans_cover_the_spoken_part(vad, spoken):
    for k, words in enumerate(spoken):
        audio = np.concatenate([silence(1.5), words, silence(2.0)])
        audio = audio + room_noise(len(audio), k)
        spans = vad.speech_spans(audio)
        assert spans, "no speech found"
        # espeak leaves ~0.1-0.2 s of quiet at each end of its audio; the spans must cover the rest.
        assert 1.4 <= spans[0][0] <= 1.5 + 0.3, spans
        assert 1.5 + len(words) / AUDIO_RATE - 0.3 <= spans[-1][1] <= 1.5 + len(words) / AUDIO_RATE + 0.2, spans
        covered = speech_seconds(spans, len(audio) / AUDIO_RATE)
        assert covered >= 0.7 * len(words) / AUDIO_RATE
        assert all(a < b for a, b in spans) and all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))


def test_speech_music_and_silence_are_classified(vad, spoken):
    words = np.concatenate([silence(0.5), spoken[1], silence(0.5)])
    songs = [melody(TUNE, seed=1)[0],
             melody(TUNE, timbre="brass", tempo_jitter=0.08, noise_db=-20, seed=2)[0],
             melody([72, 74, 76, 79, 76, 74, 72, 67] * 3, beat_s=0.45, timbre="flute", drums=False, seed=3)[0]]
    got = classify_audio(words, vad.speech_spans(words))
    assert got.kind == "speech" and got.speech_s > 3.0 and 0.5 < got.speech_ratio <= 1.0, got
    for song in songs:
        spans = vad.speech_spans(song)
        got = classify_audio(song, spans)
        assert got.kind == "music", (got, spans)
        assert got.speech_ratio < 0.1
    for quiet in (silence(5.0), room_noise(5 * AUDIO_RATE)):
        assert classify_audio(quiet, vad.speech_spans(quiet)) == AudioActivity("silence", 0.0, 0.0)
    assert classify_audio(np.zeros(0, np.float32), []).kind == "none"


def test_speech_over_music_and_music_with_a_spoken_intro(vad, spoken):
    song = melody(TUNE * 2, seed=4, amplitude=0.15)[0]  # ~10 s
    intro = np.concatenate([spoken[0] * 0.8, song])
    got = classify_audio(intro, vad.speech_spans(intro))
    # ~3 s of speech in ~13 s of sound: speech is there, but the clip is music.
    assert 1.5 < got.speech_s < 4.5 and got.kind == "music", got
    talk = np.concatenate([spoken[1], spoken[0]])
    assert len(song) >= len(talk)
    over = talk + song[: len(talk)] * 0.3
    got = classify_audio(over, vad.speech_spans(over))
    assert got.kind == "speech", got


def test_windows_with_speech(vad, spoken):
    # 0-30 s: music; 30-60 s: speech at 40 s; 60-75 s: music.
    song = np.tile(melody(TUNE, seed=5)[0], 8)
    gap_s = 30 - 10 - len(spoken[0]) / AUDIO_RATE
    audio = np.concatenate([song[: 30 * AUDIO_RATE], silence(10), spoken[0], silence(gap_s), song[: 15 * AUDIO_RATE]])
    windows = [(0.0, 30.0), (30.0, 60.0), (60.0, len(audio) / AUDIO_RATE)]
    assert windows_with_speech(vad.speech_spans(audio), windows).tolist() == [False, True, False]


def test_windows_with_speech_overlap_floor():
    spans = [(1.0, 2.0), (29.95, 30.5)]
    windows = [(0.0, 30.0), (30.0, 60.0), (60.0, 61.0)]
    assert windows_with_speech(spans, windows).tolist() == [True, True, False]
    assert windows_with_speech([(29.95, 30.05)], windows).tolist() == [False, False, False]
    assert windows_with_speech([], windows).tolist() == [False, False, False]
    assert windows_with_speech(spans, []).shape == (0,)


def test_threshold_changes_what_counts(spoken):
    """A stricter threshold finds no more speech (the option reaches silero)."""
    audio = np.concatenate([spoken[0], melody(TUNE, seed=6, amplitude=0.1)[0]])
    loose = speech_seconds(VoiceActivity(VadOptions(threshold=0.2)).speech_spans(audio), 1e9)
    strict = speech_seconds(VoiceActivity(VadOptions(threshold=0.9)).speech_spans(audio), 1e9)
    assert strict < loose


def test_empty_and_bad_audio(vad):
    assert vad.speech_spans(np.zeros(0, np.float32)) == []
    assert vad.speech_spans(silence(0.01)) == []
    with pytest.raises(ValueError, match="shape"):
        vad.speech_spans(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        vad.speech_spans(np.full(1000, np.nan, np.float32))


@pytest.mark.parametrize("kwargs,key", [({"threshold": 1.0}, "whisper.vad_threshold"),
                                        ({"min_speech_s": -1.0}, "whisper.vad_min_speech_s"),
                                        ({"speech_pad_s": float("nan")}, "whisper.vad_speech_pad_s")])
def test_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        VadOptions(**kwargs)


def test_loading_keeps_torch_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        VoiceActivity()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cost_per_audio_minute(vad, spoken):
    """CPU seconds for one minute of speech on one thread: ~0.1 s here, 1-2 % of Whisper base's
    ~6-10 s per minute; the bound leaves room for a slower CI core."""
    minute = np.tile(np.concatenate([spoken[1], silence(0.5)]), 20)[: 60 * AUDIO_RATE]
    vad.speech_spans(minute[:AUDIO_RATE])
    start = time.process_time()
    vad.speech_spans(minute)
    cpu_s = time.process_time() - start
    assert cpu_s < 0.12 * 2, f"{cpu_s:.3f} CPU s per audio minute"
