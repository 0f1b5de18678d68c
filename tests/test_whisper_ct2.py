"""The CTranslate2 Whisper engine: engine choice and fallback, the converter, and the same
decisions as the torch engine on the tiny checkpoint (float32 token for token, int8 close).

Real-speech accuracy of the int8 engine against ``whisper.transcribe`` is in
``test_whisper_ct2_quality.py`` (marked ``weights``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import extract.models.whisper as whisper_module
from extract.config import Config, ConfigError, WhisperConfig, WhisperModelConfig
from extract.media.audio import AUDIO_RATE
from extract.tools.tiny import TINY_WHISPER_DIMS, make_tiny_whisper
from extract.io.storage import file_digest
from extract.models.whisper import WhisperTranscriber, choose_engine, mel_frames

pytest.importorskip("ctranslate2")

REPO = Path(__file__).resolve().parent.parent
GREEDY = WhisperConfig(temperatures=(0.0,))


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_own_cache(tmp_path_factory):
    """One intra-op thread (a shared test machine) and a converted-model cache of this module's own."""
    import os

    import torch

    before, cache = torch.get_num_threads(), os.environ.get("EXTRACT_CT2_CACHE")
    torch.set_num_threads(1)
    os.environ["EXTRACT_CT2_CACHE"] = str(tmp_path_factory.mktemp("ct2-cache"))
    yield
    torch.set_num_threads(before)
    if cache is None:
        os.environ.pop("EXTRACT_CT2_CACHE", None)
    else:
        os.environ["EXTRACT_CT2_CACHE"] = cache


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> str:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def torch_tr(tiny_whisper) -> WhisperTranscriber:
    return WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), WhisperConfig(temperatures=(0.0,), engine="torch"),
                              device="cpu")


@pytest.fixture(scope="module")
def ct2_f32(torch_tr, tiny_whisper):
    """The tiny checkpoint converted with float32 weights: ctranslate2's arithmetic without int8."""
    from extract.models.whisper_ct2 import load_ct2_engine

    return load_ct2_engine(torch_tr.model, torch_tr.tokenizer, file_digest(tiny_whisper), "cpu", quantization="float32")


def noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * AUDIO_RATE))).astype(np.float32)


# ---- engine choice -----------------------------------------------------------------------------


def test_auto_is_ctranslate2_on_cpu_and_torch_on_cuda():
    assert choose_engine("auto", "cpu") == "ctranslate2"
    assert choose_engine("auto", "cuda") == "torch"
    assert choose_engine("torch", "cpu") == "torch"
    assert choose_engine("ctranslate2", "cuda") == "ctranslate2"


def test_missing_ctranslate2_falls_back_to_torch_said_once(tiny_whisper, monkeypatch, caplog):
    from extract.models import whisper as whisper_module

    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` raises ImportError
    whisper_module._warn_no_ct2.cache_clear()
    with caplog.at_level(logging.WARNING, logger="extract.models.whisper"):
        first = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")
        second = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")
    whisper_module._warn_no_ct2.cache_clear()
    assert first.engine_name == second.engine_name == "torch" and first.model is not None
    said = [r for r in caplog.records if "ctranslate2" in r.getMessage()]
    assert len(said) == 1 and "not installed" in said[0].getMessage()
    assert first.transcribe_batch([noise(3.0, 1)])[0].text  # and it still transcribes


def test_engine_key_is_validated_and_in_the_feature_hash():
    with pytest.raises(ConfigError, match="whisper.engine: 'onnx' is not one of auto, torch, ctranslate2"):
        Config().replace(**{"whisper.engine": "onnx"})
    hashes = {engine: Config().replace(**{"whisper.engine": engine}).feature_hash_of({})
              for engine in ("auto", "torch", "ctranslate2")}
    assert len(set(hashes.values())) == 3


def test_encoder_step_is_validated_and_in_the_feature_hash():
    with pytest.raises(ConfigError, match=r"whisper.encoder_step_s: seconds in \[0, 30\]"):
        Config().replace(**{"whisper.encoder_step_s": 31.0})
    hashes = {step: Config().replace(**{"whisper.encoder_step_s": step}).feature_hash_of({}) for step in (0.0, 10.0, 5.0)}
    assert len(set(hashes.values())) == 3


def test_mel_frames_round_the_audio_up_to_the_encoder_step():
    from extract.models.whisper import mel_frames

    second = AUDIO_RATE
    assert [mel_frames(int(s * second), 10.0) for s in (0.5, 6.0, 10.0, 10.5, 19.9, 25.0, 30.0)] == \
        [1000, 1000, 1000, 2000, 2000, 3000, 3000]
    assert mel_frames(6 * second, 0.0) == mel_frames(29 * second, 0.0) == 3000  # whisper.transcribe's padding
    assert all(mel_frames(7 * second, step) % 2 == 0 for step in (0.01, 0.03, 1.23, 7.77))  # stride-2 encoder


@pytest.mark.parametrize("engine", ["ctranslate2", "torch"])
def test_short_windows_are_encoded_at_their_step_not_at_30_s(tiny_whisper, monkeypatch, engine):
    """A 6 s and a 14 s clip: the encoder sees 10 s and 20 s (two batches, one per length) with
    ``whisper.encoder_step_s`` 10; 30 s each in one batch with 0. Same texts' segments stay
    inside each clip; the embedding is the encoder's mean either way."""
    shapes = {}
    for step in (10.0, 0.0):
        tr = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper),
                                WhisperConfig(temperatures=(0.0,), engine=engine, encoder_step_s=step), device="cpu")
        real = tr.engine.encode
        seen = shapes[step] = []

        def spied(mels, _real=real, _seen=seen):
            _seen.append(tuple(mels.shape))
            return _real(mels)

        monkeypatch.setattr(tr.engine, "encode", spied)
        out = tr.transcribe_batch([noise(6.0, 40), noise(14.0, 41)], 4)
        assert all(t.audio_embedding is not None and t.text for t in out)
        assert all(seg["end_s"] <= d + 0.5 for t, d in zip(out, (6.0, 14.0)) for seg in t.segments)
    n_mels = shapes[0.0][0][1]
    assert shapes == {10.0: [(1, n_mels, 2000), (1, n_mels, 1000)], 0.0: [(2, n_mels, 3000)]}


# ---- the converter -----------------------------------------------------------------------------


def float32_dir(tiny_whisper: str) -> Path:
    from extract.models.whisper_ct2 import ct2_cache_root, converted_dir_name

    return ct2_cache_root() / converted_dir_name(file_digest(tiny_whisper), "float32")


def test_converted_directory_holds_whispers_config_and_vocabulary(ct2_f32, torch_tr, tiny_whisper):
    from extract.models.whisper_ct2 import suppress_tokens

    model_dir = float32_dir(tiny_whisper)
    tok = torch_tr.tokenizer
    vocab = json.loads((model_dir / "vocabulary.json").read_text())
    assert len(vocab) == TINY_WHISPER_DIMS["n_vocab"] and len(set(vocab)) == len(vocab)
    assert vocab[tok.sot] == "<|startoftranscript|>" and vocab[tok.eot] == "<|endoftext|>"
    assert vocab[tok.no_speech] == "<|nospeech|>" and vocab[tok.timestamp_begin] == "<|0.00|>"
    assert vocab[tok.encode(" hello")[0]] == "Ġhello"  # GPT-2's byte alphabet, as Hugging Face spells it
    config = json.loads((model_dir / "config.json").read_text())
    assert config["suppress_ids"] == suppress_tokens(tok) and tok.no_speech in config["suppress_ids"]
    assert config["suppress_ids_begin"] == [220, tok.eot]
    assert config["lang_ids"] == sorted(tok.all_language_tokens)


def test_conversion_round_trips_through_the_inverse_tool(ct2_f32, torch_tr, tiny_whisper, tmp_path):
    """Our CTranslate2 directory read back by ``../shared/tools/whisper_base_weights.py`` (which
    rebuilds an openai-whisper checkpoint from one) gives the checkpoint's weights back."""
    import torch

    tool = REPO.parent / "shared" / "tools" / "whisper_base_weights.py"
    if not tool.is_file():
        pytest.skip(f"{tool} not found (the shared tools folder beside the repository)")
    spec = importlib.util.spec_from_file_location("whisper_base_weights", tool)
    inverse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inverse)
    out = tmp_path / "back.pt"
    inverse.main(["--from-ct2", str(float32_dir(tiny_whisper)), str(out), "--dtype", "float32"])
    back = torch.load(out, weights_only=True)
    original = torch_tr.model.state_dict()
    assert back["dims"] == TINY_WHISPER_DIMS
    assert set(back["model_state_dict"]) == set(original)
    for name, tensor in original.items():
        assert torch.equal(back["model_state_dict"][name].float(), tensor.float()), name


def test_conversion_is_cached_by_the_checkpoint_sha256(torch_tr, tiny_whisper, tmp_path):
    from extract.models.whisper_ct2 import converted_dir_name, converted_model

    digest = file_digest(tiny_whisper)
    first = converted_model(torch_tr.model, torch_tr.tokenizer, digest, "int8", cache_root=tmp_path)
    stamp = (first / "model.bin").stat().st_mtime_ns
    again = converted_model(torch_tr.model, torch_tr.tokenizer, digest, "int8", cache_root=tmp_path)
    assert again == first and (again / "model.bin").stat().st_mtime_ns == stamp  # not converted twice
    assert first.name == converted_dir_name(digest, "int8") and first.name.startswith(digest[:16])
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left


# ---- same decisions as the torch engine --------------------------------------------------------


@pytest.mark.parametrize("seconds, frames", [((4.0, 8.0, 12.0), 1500), ((21.0, 25.0, 30.0), 3000)])
def test_float32_engine_matches_the_torch_engine_call_for_call(torch_tr, ct2_f32, seconds, frames):
    """Both engines on windows the encoder sees cut to 15 s (``whisper.encoder_step_s``) and whole."""
    import torch
    import whisper

    clips = [noise(seconds[0], 10), noise(seconds[1], 11, level=0.3), noise(seconds[2], 12)]
    with torch.no_grad():
        assert {mel_frames(len(c), torch_tr.cfg.encoder_step_s) for c in clips} == {frames}
        mels = torch.stack([torch_tr._window_mel(c, frames) for c in clips])
        ours, theirs = ct2_f32.encode(mels), torch_tr.engine.encode(mels)
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
        rows = [0, 2]
        a, b = torch_tr.engine.prepare(theirs, rows), ct2_f32.prepare(ours, rows)
        tokens = torch_tr.tokenizer.all_language_tokens
        np.testing.assert_allclose(ct2_f32.language_probs(b, [0, 1], tokens),
                                   torch_tr.engine.language_probs(a, [0, 1], tokens), atol=1e-5)
        options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=False, fp16=False)
        for x, y in zip(torch_tr.engine.decode(a, [1, 0], options), ct2_f32.decode(b, [1, 0], options)):
            assert y.tokens == x.tokens and len(y.tokens) == TINY_WHISPER_DIMS["n_text_ctx"] // 2
            assert y.avg_logprob == pytest.approx(x.avg_logprob, abs=1e-5)
            assert y.no_speech_prob == pytest.approx(x.no_speech_prob, rel=1e-3, abs=1e-30)
            assert (y.text, y.compression_ratio) == (x.text, x.compression_ratio)


def test_int8_transcripts_are_close_to_the_torch_engines(torch_tr, tiny_whisper):
    ct2 = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")
    assert ct2.engine_name == "ctranslate2" and ct2.engine.compute_type == "int8" and ct2.model is None
    assert ct2.lineage == torch_tr.lineage  # the same weights, whichever engine runs them
    clips = [noise(4.0, 20), noise(38.0, 21), np.zeros(AUDIO_RATE, np.float32)]
    ours, theirs = ct2.transcribe_batch(clips, 2), torch_tr.transcribe_batch(clips, 2)
    for x, y in zip(theirs[:2], ours[:2]):
        assert y.language == x.language and y.text
        assert [s["start_s"] for s in y.segments] == [s["start_s"] for s in x.segments]
        # The random model's flat output distribution makes int8 rounding visible; real weights
        # agree to >= 0.99 (test_whisper_ct2_quality.py).
        assert float(y.audio_embedding @ x.audio_embedding) > 0.97
    assert (ours[2].text, ours[2].no_speech_prob, ours[2].audio_embedding) == ("", 1.0, None)


def test_windows_without_speech_are_encoded_not_decoded(tiny_whisper, monkeypatch):
    ct2 = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")
    calls = {"encode": 0, "decode": 0}
    for name in calls:
        real = getattr(ct2.engine, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(ct2.engine, name, counted)
    music, talk = noise(5.0, 30), noise(5.0, 31)
    out = ct2.transcribe_batch([music, talk], 4, [[], [(0.5, 4.5)]])
    assert calls == {"encode": 1, "decode": 1}
    assert out[0].text == "" and out[0].audio_embedding is not None and out[1].text


@pytest.mark.xfail(reason="ctranslate2 seeds its sampling generator once per worker thread (random.cc: a thread_local "
                          "mt19937 made from the seed at its first use), so set_random_seed before later windows does not "
                          "reseed it and a window's sample depends on what that thread sampled before; not fixed yet",
                   strict=False)
def test_fallback_on_ctranslate2_samples_only_failing_windows_reproducibly(tiny_whisper, monkeypatch):
    clip = noise(5.0, 40)
    ladder = (0.0, 0.5, 1.0)
    model = WhisperModelConfig(name=tiny_whisper)
    # Still failing at the last temperature, the window writes no text (``is_unintelligible``) ...
    assert WhisperTranscriber(model, WhisperConfig(temperatures=ladder), device="cpu").transcribe_batch([clip])[0].text == ""
    # ... which the rest of this test turns off to see the sampled text itself.
    monkeypatch.setattr(whisper_module, "is_unintelligible", lambda *args: False)
    strict = WhisperTranscriber(model, WhisperConfig(temperatures=ladder), device="cpu")
    first = strict.transcribe_batch([clip])[0]
    assert first.segments and {s["temperature"] for s in first.segments} == {1.0}  # walked the ladder
    # A window's sample depends on its audio only: alone or batched with others, the same text.
    assert strict.transcribe_batch([noise(7.0, 41), clip], 2)[1].text == first.text
    lenient = WhisperConfig(temperatures=ladder, compression_ratio_threshold=1e9, logprob_threshold=-1e9)
    kept = WhisperTranscriber(model, lenient, device="cpu").transcribe_batch([clip])[0]
    assert kept.segments and {s["temperature"] for s in kept.segments} == {0.0}


def test_stage_runs_on_ctranslate2_by_default_on_a_cpu(tiny_whisper):
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.transcribe import TranscribeStage

    config = Config().replace(**{"models.whisper.name": tiny_whisper, "runtime.device": "cpu", "whisper.vad": False,
                                 "runtime.whisper_batch_size": 2, "whisper.temperatures": [0.0]})
    stage = TranscribeStage(config)
    assert stage.transcriber.engine_name == "ctranslate2"
    (row,) = batch_to_rows(stage(rows_to_batch([{"video_id": "talk", "has_audio": True, "audio": noise(5.0, 70),
                                                 "error_stage": None}])))
    assert row["transcript_text"] and json.loads(row["segments_json"])
    assert row["audio_embedding"].shape == (TINY_WHISPER_DIMS["n_audio_state"],)


def test_stage_converts_the_checkpoint_ahead(tiny_whisper, tmp_path, monkeypatch):
    from extract.tools.staging import stage_models
    from extract.models.whisper_ct2 import converted_dir_name

    monkeypatch.setenv("EXTRACT_CT2_CACHE", str(tmp_path / "cache"))
    config = Config().replace(**{"models.clip.pretrained": None, "models.whisper.name": tiny_whisper})
    stage_models(config, str(tmp_path / "staged"), whisper_from=tiny_whisper)
    assert (tmp_path / "cache" / converted_dir_name(file_digest(tiny_whisper), "int8") / "model.bin").is_file()
