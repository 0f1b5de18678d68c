"""The Whisper stage behind voice activity (silero-vad, real weights from its wheel): speech is
decoded, music and silence are not, and every audible clip gets an audio embedding from the
same encoder pass. Real speech from espeak-ng, music-like audio with harmonics and rhythm."""

from __future__ import annotations

import numpy as np
import pytest

from extract.config import Config
from extract.media.music import melody
from extract.tools.samples import speech
from extract.models import whisper as whisper_module
from extract.tools.tiny import make_tiny_whisper
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.transcribe import TranscribeStage

SPEECH = speech("The weather is lovely today, so we are going to the beach with the dog.")
pytestmark = pytest.mark.skipif(SPEECH is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    tiny = make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))
    # The torch engine: these tests count calls of its decoder (``decode_encoded``).
    return TranscribeStage(Config().replace(**{"models.whisper.name": tiny, "runtime.device": "cpu",
                                               "whisper.temperatures": [0.0], "whisper.engine": "torch"}))


def _row(video_id, audio):
    return {"video_id": video_id, "has_audio": audio is not None, "error_stage": None,
            "audio": np.zeros(0, np.float32) if audio is None else np.asarray(audio, np.float32).reshape(-1)}


def test_music_skips_the_decoder_speech_does_not_and_both_embed(stage, monkeypatch):
    decoded_batches = []
    real = whisper_module.decode_encoded
    monkeypatch.setattr(whisper_module, "decode_encoded",
                        lambda model, features, *a, **k: decoded_batches.append(len(features)) or real(model, features, *a, **k))
    music = melody([60, 64, 67, 72, 67, 64] * 6, timbre="brass", seed=3)
    rows = [_row("talk", SPEECH), _row("song", music), _row("quiet", np.zeros(16_000 * 3)), _row("mute", None)]
    talk, song, quiet, mute = batch_to_rows(stage(rows_to_batch(rows)))

    assert (talk["audio_kind"], song["audio_kind"], quiet["audio_kind"], mute["audio_kind"]) == (
        "speech", "music", "silence", "none")
    assert 2.0 < talk["speech_s"] <= len(SPEECH.reshape(-1)) / 16_000 + 0.1 and 0.5 < talk["speech_ratio"] <= 1.0
    assert song["speech_s"] < 0.5 and song["transcript_text"] == "" and song["segments_json"] == "[]"
    assert sum(decoded_batches) == 1, "only the speech window reaches the decoder"
    for row in (talk, song):
        emb = row["audio_embedding"]
        assert emb.shape == (stage.transcriber.dims.n_audio_state,) and np.isfinite(emb).all()
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-5
    assert quiet["audio_embedding"].shape == (0,) and mute["audio_embedding"].shape == (0,)
    assert not np.allclose(talk["audio_embedding"], song["audio_embedding"])


def test_without_vad_every_audible_window_is_decoded(tmp_path, monkeypatch):
    tiny = make_tiny_whisper(tmp_path)
    stage = TranscribeStage(Config().replace(**{"models.whisper.name": tiny, "runtime.device": "cpu",
                                                "whisper.vad": False, "whisper.temperatures": [0.0],
                                                "whisper.engine": "torch"}))
    decoded = []
    real = whisper_module.decode_encoded
    monkeypatch.setattr(whisper_module, "decode_encoded",
                        lambda model, features, *a, **k: decoded.append(len(features)) or real(model, features, *a, **k))
    song = melody([60, 64, 67, 72] * 6, seed=4)
    (row,) = batch_to_rows(stage(rows_to_batch([_row("song", song)])))
    assert sum(decoded) == 1 and row["audio_kind"] is None and row["audio_embedding"].shape[0] > 0


def test_vad_settings_change_the_feature_hash():
    base = Config()
    assert base.replace(**{"whisper.vad_threshold": 0.6}).feature_hash_of({}) != base.feature_hash_of({})
    assert base.replace(**{"whisper.vad": False}).feature_hash_of({}) != base.feature_hash_of({})
    assert base.replace(**{"ocr.max_frames": 2}).feature_hash_of({}) != base.feature_hash_of({})
    assert base.replace(**{"runtime.clip_batch_size": 8}).feature_hash_of({}) == base.feature_hash_of({})
