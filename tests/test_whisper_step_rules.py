"""The Whisper decoder's per-step logic on the device: ``StepRules`` equals whisper's own logit
filters (``SuppressBlank``, ``SuppressTokens``, ``ApplyTimestampRules``) on random logits and
token histories, and the decoding loop reads the device at most once per step."""

from __future__ import annotations

import numpy as np
import pytest

from extract.models.whisper_decoder import StepRules

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLE_BEGIN = 3  # <|startoftranscript|><|en|><|transcribe|>




@pytest.fixture(scope="module")
def tokenizer():
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(True, num_languages=99, language="en", task="transcribe")


def whisper_filters(tokenizer, max_initial: int | None, timestamps: bool = True) -> list:
    from whisper.decoding import ApplyTimestampRules, SuppressBlank, SuppressTokens

    suppress = sorted({*tokenizer.non_speech_tokens, tokenizer.transcribe, tokenizer.translate, tokenizer.sot,
                       tokenizer.sot_prev, tokenizer.sot_lm, tokenizer.no_speech})
    filters = [SuppressBlank(tokenizer, SAMPLE_BEGIN), SuppressTokens(suppress)]
    if timestamps:
        filters.append(ApplyTimestampRules(tokenizer, SAMPLE_BEGIN, max_initial))
    return filters


def random_logits(rng: np.random.Generator, n: int, tokenizer) -> "torch.Tensor":
    """``(n, n_vocab)`` float32 logits; per row the timestamps as a whole are shifted by a random
    amount, so in some rows they outweigh every text token (each still below the best one)."""
    import torch

    tb = tokenizer.timestamp_begin
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    logits = 2 * torch.randn(n, tb + 1501, generator=generator)
    logits[:, tb:] += torch.from_numpy(rng.uniform(-2, 4, (n, 1)).astype(np.float32))
    return logits


def histories(rng: np.random.Generator, n: int, length: int, tokenizer) -> np.ndarray:
    """``(n, SAMPLE_BEGIN + length)`` token ids: decoding-like rows (rising timestamp pairs around
    text) mixed with rows of random text, timestamps (also falling ones) and special tokens."""
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    out = np.empty((n, SAMPLE_BEGIN + length), np.int64)
    out[:, :SAMPLE_BEGIN] = tokenizer.sot_sequence
    for row in range(n):
        kind = rng.integers(3)
        clock = int(rng.integers(0, 40))
        for pos in range(SAMPLE_BEGIN, SAMPLE_BEGIN + length):
            if kind == 0:  # random mix
                out[row, pos] = rng.choice([rng.integers(0, eot), tb + rng.integers(0, 1501),
                                            rng.integers(eot, tb), tb + clock])
            else:  # timestamps rising by 0-3 steps, text between, pairs and singles
                if rng.random() < 0.45:
                    clock += int(rng.integers(0, 4)) if kind == 1 else 0
                    out[row, pos] = tb + clock
                else:
                    out[row, pos] = rng.integers(0, eot)
    return out


def test_step_rules_equal_whispers_filters(tokenizer):
    """Batch sizes 1-32, 0-9 sampled tokens, with and without max_initial_timestamp, logits where
    the timestamps together outweigh every text token and where they do not: the masked logits
    equal whisper's bit for bit, and every rule fires somewhere."""
    import torch

    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    rng = np.random.default_rng(28)
    fired = {"initial": 0, "pair_closed": 0, "pair_open": 0, "monotonic": 0, "timestamp_wins": 0, "text_kept": 0}
    for trial in range(72):
        max_initial = [None, 50, 0][trial % 3]
        filters = whisper_filters(tokenizer, max_initial)
        rules = StepRules.from_filters(filters)
        n = int(rng.integers(1, 33))
        length = int(rng.integers(0, 10)) if trial % 8 else 0
        tokens = torch.from_numpy(histories(rng, n, length, tokenizer))
        logits = random_logits(rng, n, tokenizer)
        expected, got = logits.clone(), logits.clone()
        for f in filters:
            f.apply(expected, tokens)
        rules.apply(got, tokens)
        assert torch.equal(got, expected), (trial, n, length, max_initial)
        # Which rules shaped this batch (so the test cannot pass on inputs that trigger nothing).
        text_open, ts_open = torch.isfinite(got[:, :eot]).any(1), torch.isfinite(got[:, tb:]).any(1)
        if length == 0:
            fired["initial"] += int((~text_open).all())
            continue
        sampled = tokens[:, SAMPLE_BEGIN:]
        last = sampled[:, -1] >= tb
        penult = sampled[:, -2] >= tb if length >= 2 else torch.ones_like(last)
        fired["pair_closed"] += int((last & penult & ~ts_open).sum())
        fired["pair_open"] += int((last & ~penult & ~text_open).sum())
        fired["monotonic"] += int((ts_open & ~torch.isfinite(got[:, tb]) & torch.isfinite(logits[:, tb])).sum())
        fired["timestamp_wins"] += int((~last & ~text_open & ts_open).sum())
        fired["text_kept"] += int(text_open.sum())
    assert all(count > 0 for count in fired.values()), fired


def test_step_rules_without_timestamps_suppress_only(tokenizer):
    import torch

    filters = whisper_filters(tokenizer, None, timestamps=False)
    rules = StepRules.from_filters(filters)
    rng = np.random.default_rng(5)
    for length in (0, 1, 4):
        tokens = torch.from_numpy(histories(rng, 7, length, tokenizer))
        logits = random_logits(rng, 7, tokenizer)
        expected, got = logits.clone(), logits.clone()
        for f in filters:
            f.apply(expected, tokens)
        rules.apply(got, tokens)
        assert torch.equal(got, expected)


def test_step_rules_refuse_unknown_filters():
    class Penalty:
        def apply(self, logits, tokens):
            pass

    with pytest.raises(TypeError, match="Penalty"):
        StepRules.from_filters([Penalty()])


def test_decoding_loop_reads_the_device_once_per_step(tmp_path, monkeypatch):
    """Inside the sampling loop only one device-to-host read happens per step (which rows
    ended), plus one for the no-speech probabilities at the end: no per-row reads, no ``if``
    on a tensor. On a GPU each read waits for the device; whisper's own loop reads every row
    of every step."""
    import torch
    import whisper

    from extract.tools.tiny import make_tiny_whisper
    from extract.models.whisper_decoder import CrossAttention, _compacting_task_type

    model = whisper.load_model(make_tiny_whisper(tmp_path), device="cpu")
    features = torch.randn(6, model.dims.n_audio_ctx, model.dims.n_audio_state,
                           generator=torch.Generator().manual_seed(3))
    options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=False, fp16=False,
                                      sample_len=24)
    task = _compacting_task_type()(model, options, CrossAttention.compute(model, features))
    counts = {"reads": 0, "steps": 0, "in_loop": False}
    step = task.inference.logits

    def counted_step(*args):
        counts["steps"] += 1
        return step(*args)

    monkeypatch.setattr(task.inference, "logits", counted_step)
    for name in ("tolist", "item", "__bool__", "numpy", "cpu", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def reading(self, *args, _original=original, **kwargs):
            counts["reads"] += counts["in_loop"]
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reading)
    loop = task._main_loop

    def counted_loop(*args):
        counts["in_loop"] = True
        try:
            return loop(*args)
        finally:
            counts["in_loop"] = False

    monkeypatch.setattr(task, "_main_loop", counted_loop)
    results = task.run(features)
    assert len(results) == 6 and counts["steps"] >= 2
    assert counts["reads"] <= counts["steps"] + 1, counts


@pytest.mark.gpu
def test_step_rules_on_cuda_equal_whispers_filters_on_cpu(tokenizer):
    """The same random cases with the rules run on the GPU: equal to whisper's filters on the CPU."""
    import torch

    rng = np.random.default_rng(280)
    for trial in range(40):
        filters = whisper_filters(tokenizer, [None, 50][trial % 2])
        rules = StepRules.from_filters(filters)
        n, length = int(rng.integers(1, 33)), int(rng.integers(0, 10))
        tokens = torch.from_numpy(histories(rng, n, length, tokenizer))
        logits = random_logits(rng, n, tokenizer)
        expected = logits.clone()
        for f in filters:
            f.apply(expected, tokens)
        got = logits.cuda()
        rules.apply(got, tokens.cuda())
        assert torch.equal(got.cpu(), expected), (trial, n, length)


@pytest.mark.gpu
def test_cuda_decoding_matches_whisper_decode_on_cuda(tmp_path):
    """Our loop (batched rules, compaction, one read per step) and whisper's own ``decode`` on the
    same CUDA model and features give the same tokens, fp32 and fp16."""
    import torch
    import whisper
    from whisper.decoding import DecodingTask

    from extract.tools.tiny import make_tiny_whisper
    from extract.models.whisper import _to_fp16
    from extract.models.whisper_decoder import decode_encoded

    model = whisper.load_model(make_tiny_whisper(tmp_path), device="cuda")
    features = torch.randn(5, model.dims.n_audio_ctx, model.dims.n_audio_state, device="cuda",
                           generator=torch.Generator(device="cuda").manual_seed(4))
    features = features * torch.tensor([0.25, 1.0, 4.0, 16.0, 64.0], device="cuda")[:, None, None]
    for fp16 in (False, True):
        if fp16:
            _to_fp16(model)  # as WhisperTranscriber runs on CUDA (layer norms stay fp32)
        options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=False, fp16=fp16)
        x = features.half() if fp16 else features
        theirs = DecodingTask(model, options).run(x)
        ours = decode_encoded(model, x, options)
        assert [r.tokens for r in ours] == [r.tokens for r in theirs]
