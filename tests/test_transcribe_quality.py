"""Accuracy of the batched Whisper path with real base weights, against ``whisper.transcribe``.

Optional tier (markers ``weights`` and ``slow``): needs the real Whisper base checkpoint at
``extract.tools.whisper_eval.base_weights_path()`` (``$EXTRACT_WHISPER_BASE`` or ``.build/whisper-base.pt``)
and espeak-ng for speech; skipped with the reason when either is missing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from extract.config import WhisperConfig, WhisperModelConfig
from extract.media.audio import AUDIO_RATE
from extract.tools.samples import speech
from extract.models.whisper import WhisperTranscriber
from extract.tools.whisper_eval import base_weights_path, word_error_rate

# Minutes on a small CPU (whisper.transcribe runs too), so also `slow`: `make test` runs it, `make check` does not.
pytestmark = [pytest.mark.weights, pytest.mark.slow]

LADDER = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# (voice, words per minute, text): several voices, 3 s to over 30 s; no digits, so the
# reference spelling and Whisper's number formatting cannot disagree.
SPEECH = (
    ("en-us", 170, "Watch my new dance move and follow for more."),
    ("en-gb", 160, "The waves are calm today and the water is warm. Let us go for a swim."),
    ("en-gb-scotland", 150, "We climbed the hill before sunrise. The mist was thick, but the view from "
                            "the top was worth every step."),
    ("en-029", 150, "This little shop sells fresh bread every morning. Come early, because the "
                    "cinnamon rolls are always gone by lunch time."),
    ("en-us", 140, "First boil the water and add a pinch of salt. Then cook the pasta until it is soft. "
                   "While it cooks, fry the garlic in olive oil. Add the tomatoes and let the sauce "
                   "simmer. Drain the pasta and mix it with the sauce. Serve with fresh basil and "
                   "cheese. That is all it takes to make a simple and tasty dinner. Tomorrow we will "
                   "bake bread together, so buy flour, yeast and a little honey before you come over. After "
                   "dinner we can take a walk along the river and watch the boats come home."),
)


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    path = base_weights_path()
    if not path.is_file():
        pytest.skip(f"real Whisper base weights not found at {path}: set EXTRACT_WHISPER_BASE or build them "
                    "with ../shared/tools/whisper_base_weights.py (see extract.tools.whisper_eval.base_weights_path)")
    # the torch engine: whisper.transcribe needs its model (on a CPU "auto" picks CTranslate2, whose
    # WER tests/test_whisper_ct2_quality.py holds to this one's)
    return WhisperTranscriber(WhisperModelConfig(name=str(path)), WhisperConfig(temperatures=LADDER, engine="torch"),
                              device="auto")


@pytest.fixture(scope="module", params=["torch", "ctranslate2"])
def each_engine(request, transcriber) -> WhisperTranscriber:
    """The torch transcriber, then the CTranslate2 one (what "auto" serves on a CPU)."""
    if request.param == "torch":
        return transcriber
    return WhisperTranscriber(WhisperModelConfig(name=str(base_weights_path())),
                              WhisperConfig(temperatures=LADDER, engine="ctranslate2"), device="cpu")


@pytest.fixture(scope="module")
def spoken() -> list[tuple[str, np.ndarray]]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make speech): no speech to transcribe")
    rng = np.random.default_rng(0)
    clips = []
    for voice, wpm, text in SPEECH:
        audio = speech(text, voice=voice, words_per_minute=wpm)[0]
        # Half a second of lead-in and a faint room noise, as in a phone video.
        audio = np.concatenate([np.zeros(AUDIO_RATE // 2, np.float32), audio])
        clips.append((text, (audio + 0.002 * rng.standard_normal(len(audio))).astype(np.float32)))
    assert max(len(a) for _, a in clips) > 30 * AUDIO_RATE
    return clips


@pytest.fixture(scope="module")
def full_windows(transcriber) -> WhisperTranscriber:
    """The torch transcriber with Whisper's 30 s encoder windows (``encoder_step_s=0``): the
    encoder sees what ``whisper.transcribe``'s does, so a difference is the batching's. What
    the shorter default windows do to the words is measured on real speech
    (``tests/test_whisper_ct2_quality.py``)."""
    return WhisperTranscriber(WhisperModelConfig(name=str(base_weights_path())),
                              WhisperConfig(temperatures=LADDER, engine="torch", encoder_step_s=0), device="auto")


def test_batched_wer_matches_whisper_transcribe(full_windows, spoken):
    import whisper

    transcriber = full_windows
    texts = [t for t, _ in spoken]
    audios = [a for _, a in spoken]
    ours = transcriber.transcribe_batch(audios, batch_size=8)
    theirs = [whisper.transcribe(transcriber.model, a, temperature=LADDER, fp16=transcriber.engine.precision == "fp16")["text"]
              for a in audios]
    wer_ours = word_error_rate(texts, [t.text for t in ours])
    wer_theirs = word_error_rate(texts, theirs)
    print(f"\nWER batched {wer_ours:.3f}  whisper.transcribe {wer_theirs:.3f}")
    assert wer_ours <= wer_theirs + 0.02
    assert wer_ours < 0.15  # sanity: base transcribes clean synthetic speech well
    for (_, audio), t in zip(spoken, ours):
        assert t.language == "en" and t.language_prob > 0.5 and t.no_speech_prob < 0.5
        assert t.segments and all(0 <= s["start_s"] <= s["end_s"] <= len(audio) / AUDIO_RATE + 1e-6
                                  for s in t.segments)
    long_audio, long_transcript = audios[-1], ours[-1]
    windows = transcriber.plan(long_audio)
    assert len(windows) == 2  # both windows contribute text
    assert any(s["start_s"] >= windows[1].start_s for s in long_transcript.segments)
    assert any(s["end_s"] <= windows[0].end_s for s in long_transcript.segments)


def test_sentence_ending_at_a_window_edge_is_kept(transcriber):
    """Speech that ends a moment before the first window's end: Whisper defers the last
    sentence to the next window, which must then start at that sentence (not at the cut)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make speech): no speech to transcribe")
    text = ("Add the garlic first, then the onions, and stir until they turn golden. The train was late "
            "again, so I decided to walk across the bridge. If you water this plant once a week it will "
            "grow twice as fast. We painted the old fence blue and it completely changed the garden. Let me "
            "know in the comments which song you want me to play next. Today we are making a quick "
            "breakfast with eggs, tomatoes and fresh bread.")
    voice = speech(text, voice="en-us", words_per_minute=165)[0]
    voice = voice[: np.flatnonzero(np.abs(voice) > 1e-3)[-1] + 1]
    lead_in = max(0, int(29.6 * AUDIO_RATE) - len(voice))  # the last word ends at about 29.6 s
    assert len(voice) <= 29.6 * AUDIO_RATE, "the spoken text must fit in the first window"
    audio = np.concatenate([np.zeros(lead_in, np.float32), voice, np.zeros(12 * AUDIO_RATE, np.float32)])
    (ours,) = transcriber.transcribe_batch([audio], batch_size=8)
    print(f"\n{ours.text}")
    assert word_error_rate([text], [ours.text]) < 0.15
    assert {"breakfast", "eggs"} <= set(ours.text.lower().replace(",", " ").split())  # the last sentence


def music(seconds: float) -> np.ndarray:
    """A plucked C-major arpeggio over a bass drone, ``(seconds * 16000,) float32``."""
    n = int(seconds * AUDIO_RATE)
    out = 0.1 * np.sin(2 * np.pi * 110 * np.arange(n) / AUDIO_RATE)
    note = AUDIO_RATE // 2
    t = np.arange(note) / AUDIO_RATE
    for k, start in enumerate(range(0, n - note, note)):
        f = (261.6, 329.6, 392.0, 523.3)[k % 4]
        out[start:start + note] += 0.15 * np.exp(-3 * t) * (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(4 * np.pi * f * t))
    return out.astype(np.float32)


def test_no_words_without_speech(each_engine):
    transcriber = each_engine
    t = np.arange(8 * AUDIO_RATE) / AUDIO_RATE
    clips = {
        "silence": np.zeros(6 * AUDIO_RATE, np.float32),
        "tone": (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "music": music(12.0),
        "long music": music(40.0),
        "noise": (0.02 * np.random.default_rng(1).standard_normal(6 * AUDIO_RATE)).astype(np.float32),
    }
    out = transcriber.transcribe_batch(list(clips.values()), batch_size=8)
    for name, transcript in zip(clips, out):
        assert (transcript.text, transcript.segments, transcript.language) == ("", [], None), name
        # The model's own no-speech probability is above the gate (the silent clip never reaches it).
        assert transcript.no_speech_prob > transcriber.cfg.no_speech_threshold, name
    assert out[0].no_speech_prob == 1.0
