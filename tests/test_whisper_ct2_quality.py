"""The CTranslate2 int8 engine on real recorded speech with real Whisper base weights.

Optional tier (markers ``weights`` and ``slow``): needs ``extract.models.whisper.base_weights_path()``
(``make weights`` builds ``.build/whisper-base.pt``). The speech is real recordings with known
text: ``tests/data/speech`` (a LibriVox reading and a spoken command, from pocketsphinx's test
data; see its README) and ``../shared/peer-media/whisper-jfk.mp4`` when present. Nothing is
downloaded here.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from extract.config import WhisperConfig, WhisperModelConfig
from extract.media.audio import AUDIO_RATE
from extract.models.whisper import WhisperTranscriber
from extract.tools.whisper_eval import base_weights_path, word_error_rate

pytestmark = [pytest.mark.weights, pytest.mark.slow]
pytest.importorskip("ctranslate2")

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "tests" / "data" / "speech"
JFK = REPO.parent / "shared" / "peer-media" / "whisper-jfk.mp4"
JFK_TEXT = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LADDER = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def real_speech() -> list[tuple[str, np.ndarray]]:
    """``[(reference text, (m,) float32 16 kHz)]`` of the recorded clips."""
    from extract.media.audio import decode_audio

    clips = []
    for name, text in json.loads((SPEECH / "references.json").read_text()).items():
        with wave.open(str(SPEECH / name)) as w:
            assert w.getframerate() == AUDIO_RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
            clips.append((text, np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768))
    if JFK.is_file():
        clips.append((JFK_TEXT, decode_audio(str(JFK))))
    return clips


@pytest.fixture(scope="module")
def engines() -> dict[str, WhisperTranscriber]:
    path = base_weights_path()
    if not path.is_file():
        pytest.skip(f"real Whisper base weights not found at {path}: `make weights` builds them")
    model = WhisperModelConfig(name=str(path))
    return {engine: WhisperTranscriber(model, WhisperConfig(temperatures=LADDER, engine=engine), device="cpu")
            for engine in ("torch", "ctranslate2")}


def test_ctranslate2_wer_within_a_point_of_whisper_transcribe(engines):
    import whisper

    clips = real_speech()
    texts, audios = [t for t, _ in clips], [a for _, a in clips]
    ct2 = engines["ctranslate2"].transcribe_batch(audios, 8)
    reference = [whisper.transcribe(engines["torch"].model, a, temperature=LADDER, fp16=False)["text"] for a in audios]
    wer_ct2, wer_ref = word_error_rate(texts, [t.text for t in ct2]), word_error_rate(texts, reference)
    print(f"\nWER ctranslate2 int8 {wer_ct2:.3f}  whisper.transcribe {wer_ref:.3f} ({len(clips)} clips)")
    assert wer_ct2 <= wer_ref + 0.01
    for (_, audio), t in zip(clips, ct2):
        assert t.language == "en" and t.language_prob > 0.5 and t.no_speech_prob < 0.5
        assert t.segments and all(0 <= s["start_s"] <= s["end_s"] <= len(audio) / AUDIO_RATE + 1e-6
                                  for s in t.segments)


def test_shorter_encoder_windows_keep_the_words_and_the_languages(engines):
    """The default ``whisper.encoder_step_s`` (the encoder sees a window's audio rounded up to
    15 s) against Whisper's full 30 s windows, on the same real speech: the WER within a point,
    the same languages, and the language confidence lower by at most 0.02 on average (these
    clips: 0.004 higher; a clip under 2 s can lose more, README ``whisper.encoder_step_s``)."""
    clips = real_speech()
    texts, audios = [t for t, _ in clips], [a for _, a in clips]
    stepped = engines["ctranslate2"]
    assert stepped.cfg.encoder_step_s == WhisperConfig().encoder_step_s > 0
    full = WhisperTranscriber(WhisperModelConfig(name=str(base_weights_path())),
                              WhisperConfig(temperatures=LADDER, engine="ctranslate2", encoder_step_s=0), device="cpu")
    ours, theirs = stepped.transcribe_batch(audios, 8), full.transcribe_batch(audios, 8)
    wer_ours, wer_full = word_error_rate(texts, [t.text for t in ours]), word_error_rate(texts, [t.text for t in theirs])
    drop = float(np.mean([y.language_prob - x.language_prob for x, y in zip(ours, theirs)]))
    print(f"\nWER {stepped.cfg.encoder_step_s:g} s steps {wer_ours:.3f}, 30 s windows {wer_full:.3f}; "
          f"language confidence lower by {drop:.3f} on average")
    assert wer_ours <= wer_full + 0.01
    assert [t.language for t in ours] == [t.language for t in theirs]
    assert drop <= 0.02


def test_audio_embedding_matches_the_torch_engines(engines):
    audios = [a for _, a in real_speech()]
    spans = [[] for _ in audios]  # encoder only: the embedding does not need the decoder
    ours = engines["ctranslate2"].transcribe_batch(audios, 8, spans)
    theirs = engines["torch"].transcribe_batch(audios, 8, spans)
    cosines = [float(x.audio_embedding @ y.audio_embedding) for x, y in zip(ours, theirs)]
    print("\ncosine ctranslate2 int8 vs torch:", np.round(cosines, 4))
    assert min(cosines) >= 0.99
    assert all(t.text == "" for t in ours)  # no speech spans: encoded, not decoded
