"""Whisper stage with a tiny random model: windows, decoding plumbing, batching, the stage contract.

Real-speech accuracy against ``whisper.transcribe`` lives in ``test_transcribe_quality.py``
(marked ``weights``).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extract.config import Config, WhisperConfig, WhisperModelConfig
from extract.media.audio import AUDIO_RATE
from extract.media.windows import AudioWindow, is_silent, plan_windows
from extract.tools.tiny import TINY_WHISPER_DIMS, make_tiny_whisper
import extract.models.whisper as whisper_module
from extract.models.whisper import (
    MIN_RESUME_S,
    RESUME_LEAD_IN_S,
    WhisperTranscriber,
    deferred_at,
    is_no_speech,
    is_unintelligible,
    needs_fallback,
    split_timestamped,
)
from extract.models.whisper_decoder import decode_encoded
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.transcribe import OUTPUT_COLUMNS, TranscribeStage
from extract.tools.whisper_eval import word_edits, word_error_rate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREEDY = WhisperConfig(temperatures=(0.0,), engine="torch")  # these tests reach into the torch model




@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> str:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def greedy(tiny_whisper) -> WhisperTranscriber:
    return WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")


def full_window_mel(transcriber: WhisperTranscriber, clip: np.ndarray):
    """``clip``'s window as ``whisper.transcribe`` feeds the encoder: zero-padded to 3000 frames
    (openai-whisper's own encoder and decoding task take nothing shorter)."""
    from whisper.audio import N_FRAMES

    return transcriber._window_mel(clip, N_FRAMES)


def noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    """Gaussian noise bursts (speech-like on/off envelope), ``(seconds * 16000,) float32``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * AUDIO_RATE)
    envelope = (np.sin(np.arange(n) / AUDIO_RATE * 2 * np.pi * 0.7 + seed) > -0.3).astype(np.float32)
    return (level * rng.standard_normal(n) * envelope).astype(np.float32)


# ---- windows ---------------------------------------------------------------------------------


def test_short_audio_is_one_window():
    audio = noise(29.9, 0)
    assert plan_windows(audio) == [AudioWindow(0, len(audio))]
    assert plan_windows(np.zeros(0, np.float32)) == []


@settings(max_examples=40, deadline=None)
@given(seconds=st.floats(0.01, 140.0), seed=st.integers(0, 2**31 - 1), search=st.sampled_from([0.0, 1.0, 3.0]))
def test_windows_cover_audio_exactly_once(seconds, seed, search):
    rng = np.random.default_rng(seed)
    n = int(seconds * AUDIO_RATE)
    audio = (rng.standard_normal(n) * rng.uniform(0, 1, size=n // 1600 + 1).repeat(1600)[:n]).astype(np.float32)
    windows = plan_windows(audio, 30.0, search)
    covered = np.zeros(n, np.int32)
    for w in windows:
        covered[w.start:w.end] += 1
        assert 0 < w.n_samples <= 30 * AUDIO_RATE
    assert (covered == 1).all()
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))
    assert all(w.n_samples >= (30.0 - search) * AUDIO_RATE - 1 for w in windows[:-1])


def test_cut_falls_in_the_pause_before_the_boundary():
    audio = noise(70.0, 1, level=0.2)
    audio[:] = np.abs(audio) + 0.05  # loud everywhere ...
    pauses = [(28.2, 28.5), (56.0, 56.4)]  # ... except two pauses inside the search spans
    for a, b in pauses:
        audio[int(a * AUDIO_RATE):int(b * AUDIO_RATE)] = 0.0
    windows = plan_windows(audio, 30.0, 3.0)
    assert len(windows) == 3
    for (a, b), w in zip(pauses, windows):
        assert a * AUDIO_RATE <= w.end <= b * AUDIO_RATE


def test_silence_is_judged_by_the_loudest_stretch():
    assert is_silent(np.zeros(AUDIO_RATE * 5, np.float32), 0.003)
    assert is_silent(noise(5, 2, level=0.001), 0.003)
    quiet_with_word = np.zeros(AUDIO_RATE * 30, np.float32)
    quiet_with_word[AUDIO_RATE * 10:AUDIO_RATE * 10 + 4000] = noise(0.25, 3, level=0.05)
    # The whole-window RMS is far below the threshold, but one stretch is audible.
    assert np.sqrt(np.mean(quiet_with_word ** 2)) < 0.003
    assert not is_silent(quiet_with_word, 0.003)


# ---- pure decisions ------------------------------------------------------------------------------


def test_gating_follows_whisper_transcribe():
    cfg = WhisperConfig()  # no_speech 0.6, logprob -1.0, compression 2.4
    assert is_no_speech(0.9, -1.5, 1.2, cfg)  # whisper.transcribe's rule
    assert is_no_speech(0.9, -0.5, 3.0, cfg)  # ... extended to repetitive text
    assert not is_no_speech(0.9, -0.5, 1.2, cfg)  # confident text despite a high no-speech probability
    assert not is_no_speech(0.3, -1.5, 3.0, cfg)
    assert needs_fallback(2.5, -0.2, 0.1, cfg)  # repetitive
    assert needs_fallback(1.2, -1.2, 0.1, cfg)  # improbable
    assert not needs_fallback(1.2, -0.2, 0.1, cfg)
    # Fell back through the whole ladder and still fails: no text (the short-music case, -4.1 at 1.0).
    assert is_unintelligible(-4.1, 1.2, 1.0, cfg)
    assert is_unintelligible(-0.3, 2.6, 1.0, cfg)
    assert not is_unintelligible(-0.4, 1.2, 1.0, cfg)  # the last temperature found probable text
    assert not is_unintelligible(-1.2, 1.2, 0.0, cfg)  # greedy text keeps Whisper's own gating only
    assert not is_unintelligible(-1.2, 1.2, 0.8, WhisperConfig(temperatures=(0.0, 0.4, 0.8, 1.0)))
    assert not needs_fallback(1.2, -1.2, 0.9, cfg)  # silence: not retried
    assert not needs_fallback(2.5, -0.2, 0.9, cfg)


def test_split_timestamped_pairs_and_unfinished_text():
    eot, ts = 100, 200
    tokens = [ts + 0, 1, 2, ts + 50, ts + 50, 3, ts + 120, ts + 130, 4, 5]
    assert split_timestamped(tokens, eot, ts) == [(0, 50, [1, 2]), (50, 120, [3]), (130, None, [4, 5])]
    # Special tokens between eot and the timestamps are not text; a lone trailing timestamp ends nothing.
    assert split_timestamped([ts, 7, eot + 3, ts + 10, ts + 20], eot, ts) == [(0, 10, [7])]
    assert split_timestamped([8, 9], eot, ts) == [(None, None, [8, 9])]
    assert split_timestamped([ts, ts + 5], eot, ts) == []


def test_deferred_at_follows_whisper_transcribe():
    ts = 200
    # Ends with a single timestamp, or has no pair: the window is done.
    assert deferred_at([ts, 1, 2, ts + 50, ts + 50, 3, ts + 120], ts) is None
    assert deferred_at([ts, 1, 2, ts + 50], ts) is None
    assert deferred_at([1, 2], ts) is None and deferred_at([], ts) is None
    # Ends with a pair, or with unfinished text after a pair: go on from that pair.
    assert deferred_at([ts, 1, ts + 50, ts + 50, 3, ts + 120, ts + 120], ts) == 120
    assert deferred_at([ts, 1, ts + 50, ts + 50, 3, 4], ts) == 50


def fake_decoder(monkeypatch, transcriber, scripts):
    """Replace ``transcriber._decode_windows`` (for this test) by one that answers each window of
    video v with the next token list of ``scripts[v]`` (as a speech-like greedy result); records
    the windows."""
    from types import SimpleNamespace

    calls = []

    def decode(chunk, audios, languages):
        for w in chunk:
            calls.append((w.video, w.window))
            languages.setdefault(w.video, ("en", 0.9))
            w.no_speech_prob, w.language = 0.1, "en"
            w.result = SimpleNamespace(tokens=scripts[w.video].pop(0), avg_logprob=-0.2, compression_ratio=1.2,
                                       temperature=0.0)

    monkeypatch.setattr(transcriber, "_decode_windows", decode)
    return calls


def test_deferred_segment_is_decoded_again_in_the_next_window(greedy, monkeypatch):
    tr = greedy
    tok, ts = tr.tokenizer, tr.tokenizer.timestamp_begin
    a, b, c, lost = (tok.encode(f" {word}") for word in ("alpha", "bravo", "charlie", "unfinished"))
    audio = noise(20.0, 90)
    audio[int(9.6 * AUDIO_RATE):int(10.0 * AUDIO_RATE)] = 0.0  # a pause just before the deferred segment
    quiet_tail = np.concatenate([noise(10.0, 91), np.zeros(10 * AUDIO_RATE, np.float32)])
    calls = fake_decoder(monkeypatch, tr, {
        # 'alpha' 0-5 s, 'bravo' 5-10 s, then a segment the model hands on (pair at 10 s, unfinished text).
        0: [[ts, *a, ts + 250, ts + 250, *b, ts + 500, ts + 500, *lost], [ts, *c, ts + 150]],
        # The same deferral, but nothing audible follows it: the window is done.
        1: [[ts, *a, ts + 500, ts + 500]],
    })
    deferred, quiet = tr.transcribe_batch([audio, quiet_tail], batch_size=4)
    windows = {v: [w for u, w in calls if u == v] for v in (0, 1)}
    first, second = windows[0]
    assert (first.start, first.end, second.end) == (0, len(audio), len(audio))
    # The second window starts in the pause up to RESUME_LEAD_IN_S before the deferred 10 s.
    assert 10.0 - RESUME_LEAD_IN_S <= second.start_s < 10.0 and second.start_s >= 9.6 - 1e-9
    assert deferred.text == "alpha bravo charlie"
    # Segments stay in time order: the resumed window's first one starts where 'bravo' ended.
    assert [(s["start_s"], s["end_s"]) for s in deferred.segments] == [
        (0.0, 5.0), (5.0, 10.0), (10.0, pytest.approx(second.start_s + 3.0))]
    assert len(windows[1]) == 1 and quiet.text == "alpha"


def test_deferral_must_make_progress(greedy, monkeypatch):
    tr = greedy
    tok, ts = tr.tokenizer, tr.tokenizer.timestamp_begin
    step = int(MIN_RESUME_S / 0.02) - 1  # a deferral before MIN_RESUME_S would loop forever
    calls = fake_decoder(monkeypatch, tr, {0: [[ts, *tok.encode(" hi"), ts + step, ts + step, *tok.encode(" there")]]})
    (out,) = tr.transcribe_batch([noise(6.0, 92)])
    assert len(calls) == 1 and out.text == "hi there"  # the unfinished text is kept, up to the window end
    assert out.segments[-1]["end_s"] == pytest.approx(6.0)


def test_deferrals_are_bounded(greedy, monkeypatch):
    tr = greedy
    ts = tr.tokenizer.timestamp_begin
    step = int(1.5 / 0.02)  # every window defers 1.5 s in: 40 s of audio would take ~27 windows
    calls = fake_decoder(monkeypatch, tr, {0: [[ts, *tr.tokenizer.encode(" again"), ts + step, ts + step]] * 100})
    (out,) = tr.transcribe_batch([noise(40.0, 93)])
    windows = [w for _, w in calls]
    followed = sum(b.start < a.end for a, b in zip(windows, windows[1:]))
    assert followed == 2 * 2 + 1  # two per started 30 s, plus one; then windows run to their ends
    assert windows[-1].end == 40 * AUDIO_RATE and len(windows) <= followed + 3 and out.text


class EndEarly:
    """Logit filter: a row samples end-of-text after 2 + (its second sampled token % 9) tokens (the
    first is a timestamp), so rows of one batch end at different steps (the random model never
    ends by itself)."""

    def __init__(self, sample_begin: int, eot: int):
        self.sample_begin, self.eot = sample_begin, eot

    def apply(self, logits, tokens):
        sampled = tokens.shape[1] - self.sample_begin
        if sampled < 2:
            return
        for row in range(tokens.shape[0]):
            if sampled >= 2 + int(tokens[row, self.sample_begin + 1]) % 9:
                keep = logits[row, self.eot].clone()
                logits[row] = -float("inf")
                logits[row, self.eot] = keep


def test_cached_decoder_computes_whisper_text_decoder_logits(greedy):
    """``CachedDecoder`` (per-head cross-attention, preallocated self-attention cache) gives the
    logits of whisper's ``TextDecoder`` run on the whole sequence: token by token, several tokens
    after cached ones, the first-token pass, and after rows leave the batch."""
    import torch

    from extract.models.whisper_decoder import CachedDecoder, CrossAttention, first_token_logits

    model = greedy.model
    clips = [noise(s, 200 + k) for k, s in enumerate((2, 9, 25))]
    with torch.no_grad():
        features = model.encoder(torch.stack([full_window_mel(greedy, c) for c in clips]))
        tokens = torch.randint(0, model.dims.n_vocab, (3, 8), generator=torch.Generator().manual_seed(0))
        whole = model.decoder(tokens, features)  # (3, 8, n_vocab), no cache
        cross = CrossAttention.compute(model, features)
        ours = CachedDecoder(model, 3, cross)
        steps = [ours.logits(tokens[:, :end], features) for end in (3, 5, 6)]
        torch.testing.assert_close(torch.cat(steps, dim=1), whole[:, :6], rtol=1e-4, atol=1e-4)
        keep = torch.tensor([2, 0])
        ours.keep(keep)
        torch.testing.assert_close(ours.logits(tokens[keep, :7], features)[:, 0], whole[keep, 6], rtol=1e-4, atol=1e-4)
        sot = torch.full((3, 1), greedy.tokenizer.sot)
        torch.testing.assert_close(first_token_logits(model, cross, greedy.tokenizer.sot),
                                   model.logits(sot, features)[:, 0], rtol=1e-4, atol=1e-4)


def _scaled_features(greedy):
    """Encoded windows of five noise clips, scaled apart so the random model's texts differ."""
    import torch

    clips = [noise(s, 100 + k, level=lv) for k, (s, lv) in enumerate([(3, 0.1), (8, 0.3), (20, 0.05), (1, 0.5), (12, 0.02)])]
    with torch.no_grad():
        features = greedy.model.encoder(torch.stack([full_window_mel(greedy, c) for c in clips]))
        return clips, features * torch.tensor([0.25, 1.0, 4.0, 16.0, 64.0])[:, None, None]


def test_compacting_decoder_matches_whisper_decode(greedy):
    import torch
    import whisper
    from whisper.decoding import DecodingTask

    from extract.models.whisper_decoder import CrossAttention, _compacting_task_type

    _, features = _scaled_features(greedy)
    options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=False, fp16=False)
    results = {}
    tasks = {"whisper": lambda: DecodingTask(greedy.model, options),
             "ours": lambda: _compacting_task_type()(greedy.model, options,
                                                     CrossAttention.compute(greedy.model, features))}
    for name, make_task in tasks.items():
        task = make_task()
        task.logit_filters.append(EndEarly(task.sample_begin, greedy.tokenizer.eot))
        results[name] = task.run(features)
    lengths = [len(r.tokens) for r in results["whisper"]]
    assert len(set(lengths)) > 2  # rows really leave the batch at different steps
    for theirs, ours in zip(results["whisper"], results["ours"]):
        assert ours.tokens == theirs.tokens
        assert ours.avg_logprob == pytest.approx(theirs.avg_logprob, abs=1e-4)
        assert ours.no_speech_prob == pytest.approx(theirs.no_speech_prob, abs=1e-6)


def test_fallback_sampling_depends_only_on_the_window(greedy):
    """At a temperature above 0 each window samples from its own seeded stream: the same tokens
    in any batch, in any order, alone, and rerun; the global torch generator is left alone."""
    import dataclasses

    import torch
    import whisper

    from extract.models.whisper_decoder import CrossAttention, _compacting_task_type, decode_encoded, sampling_seed

    clips, features = _scaled_features(greedy)
    options = whisper.DecodingOptions(language="en", temperature=0.7, without_timestamps=False, fp16=False)
    seeds = [sampling_seed(c, 0.7) for c in clips]

    def sample(rows: list[int]) -> list[list[int]]:
        index = torch.tensor(rows)
        task = _compacting_task_type()(greedy.model, options, CrossAttention.compute(greedy.model, features[index]),
                                       [seeds[r] for r in rows])
        task.logit_filters.append(EndEarly(task.sample_begin, greedy.tokenizer.eot))
        return [r.tokens for r in task.run(features[index])]

    state = torch.random.get_rng_state()
    batch = sample([0, 1, 2, 3, 4])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len({len(t) for t in batch}) > 2  # rows leave the batch at different steps
    assert sample([0, 1, 2, 3, 4]) == batch
    assert sample([4, 2, 0]) == [batch[4], batch[2], batch[0]]
    assert [sample([r])[0] for r in (1, 3)] == [batch[1], batch[3]]
    greedy_tokens = [r.tokens for r in decode_encoded(greedy.model, features, dataclasses.replace(options, temperature=0.0))]
    assert batch != greedy_tokens  # it does sample
    assert sampling_seed(clips[0], 0.7) != sampling_seed(clips[0], 0.8) != sampling_seed(clips[1], 0.8)
    with pytest.raises(ValueError, match="one seed per window"):
        decode_encoded(greedy.model, features, options)


def test_row_seeded_sampler_draws_from_whispers_distribution():
    import torch

    from extract.models.whisper_decoder import _compacting_task_type

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0]])
    temperature, eot, draws = 0.7, 99, 4000
    sampler = _compacting_task_type().sampler_type(temperature, eot, [11], torch.device("cpu"))
    counts = np.zeros(5)
    for _ in range(draws):
        sums = torch.zeros(1)
        tokens, _ = sampler.update(torch.tensor([[1]]), logits.clone(), sums)
        counts[int(tokens[0, -1])] += 1
        # The drawn token's log-prob under the unscaled logits, as whisper's GreedyDecoder adds it.
        assert float(sums) == pytest.approx(float(torch.log_softmax(logits, -1)[0, tokens[0, -1]]), abs=1e-6)
    p = torch.softmax(logits[0] / temperature, -1).numpy()
    sigma = np.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(counts - draws * p) < 4 * sigma + 1), (counts, draws * p)
    # A row past end-of-text stays there and adds nothing.
    sums = torch.zeros(1)
    tokens, done = sampler.update(torch.tensor([[eot]]), logits.clone(), sums)
    assert int(tokens[0, -1]) == eot and bool(done) and float(sums) == 0.0


def test_word_error_rate():
    assert word_edits("The cat sat.", "the cat sat") == (0, 3)
    assert word_edits("Let's go, now!", "lets go now") == (0, 3)
    assert word_edits("a b c d", "a x c") == (2, 4)
    assert word_edits("", "hello") == (1, 0)
    assert word_error_rate(["a b c d", "e f"], ["a b c d", "e g"]) == pytest.approx(1 / 6)
    assert word_error_rate([], []) == 0.0


# ---- the tiny model --------------------------------------------------------------------------------


def test_tiny_checkpoint_is_deterministic_and_loads(tmp_path, tiny_whisper):
    import whisper

    again = make_tiny_whisper(tmp_path)
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (tiny_whisper, again)]
    assert digest[0] == digest[1]
    model = whisper.load_model(again, device="cpu")
    assert vars(model.dims) == TINY_WHISPER_DIMS
    assert model.is_multilingual
    pos = model.decoder.positional_embedding.detach()
    assert bool(pos.isfinite().all()) and float(pos.abs().max()) > 0


def test_load_errors_name_the_checkpoint(tmp_path):
    from extract.models.common import ModelLoadError

    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelLoadError, match="nope.pt"):
        WhisperTranscriber(WhisperModelConfig(name=str(missing)), GREEDY, device="cpu")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(ModelLoadError, match="corrupt.pt"):
        WhisperTranscriber(WhisperModelConfig(name=str(corrupt)), GREEDY, device="cpu")
    # An official name whose weights are not staged fails at once instead of downloading.
    with pytest.raises(ModelLoadError, match="not found at .*tiny.pt"):
        WhisperTranscriber(WhisperModelConfig(name="tiny", download_root=str(tmp_path)), GREEDY, device="cpu")
    with pytest.raises(ValueError, match="whisper.language"):
        WhisperTranscriber(WhisperModelConfig(name=make_tiny_whisper(tmp_path)),
                           WhisperConfig(language="klingon"), device="cpu")


def test_lineage_names_the_file_and_its_weights(greedy, tiny_whisper):
    path, digest = greedy.lineage.split("|sha256:")
    assert path == tiny_whisper and len(digest) == 12 and int(digest, 16) >= 0
    assert str(greedy.model.decoder.token_embedding.weight.dtype) == "torch.float32"  # fp32 on CPU


def check_segments(transcript, duration_s: float) -> None:
    previous_end = 0.0
    for seg in transcript.segments:
        assert set(seg) == {"start_s", "end_s", "text", "avg_logprob", "no_speech_prob", "compression_ratio",
                            "temperature"}
        assert 0.0 <= seg["start_s"] <= seg["end_s"] <= duration_s + 1e-6
        assert seg["start_s"] >= previous_end - 1e-6  # in time order, not overlapping
        assert seg["text"] and seg["text"] == seg["text"].strip()
        previous_end = seg["end_s"]


def test_transcripts_have_the_contracted_shape(greedy):
    clips = [noise(4.0, 10), np.zeros(AUDIO_RATE * 3, np.float32), noise(47.0, 11), np.zeros(0, np.float32)]
    out = greedy.transcribe_batch(clips, batch_size=4)
    assert len(out) == len(clips)
    for clip, t in zip(clips, out):
        check_segments(t, len(clip) / AUDIO_RATE)
    speech, silent, long, empty = out
    assert speech.text and speech.segments and speech.language and 0 < speech.language_prob <= 1
    assert speech.text == greedy.tokenizer.decode(greedy.tokenizer.encode(speech.text)).strip()
    assert 0.0 <= speech.no_speech_prob < 1.0
    for t in (silent, empty):
        assert (t.text, t.language, t.language_prob, t.no_speech_prob, t.segments) == ("", None, None, 1.0, [])
    # The long clip's two windows both produced text; segments of the second start after the cut.
    cut = greedy.plan(clips[2])[0].end_s
    assert any(s["start_s"] >= cut for s in long.segments) and any(s["end_s"] <= cut for s in long.segments)


def test_decoding_is_batch_invariant(greedy):
    target = noise(38.0, 20)  # two windows
    others = [noise(6.0, 21), noise(12.0, 22, level=0.3), np.zeros(AUDIO_RATE * 2, np.float32), noise(3.0, 23)]
    alone = greedy.transcribe_batch([target], batch_size=1)[0]
    for batch_size in (2, 3, 8):
        mixed = greedy.transcribe_batch([others[0], others[1], target, others[2], others[3]], batch_size)[2]
        assert mixed.text == alone.text
        assert mixed.language == alone.language
        assert [(s["start_s"], s["end_s"], s["text"]) for s in mixed.segments] == \
               [(s["start_s"], s["end_s"], s["text"]) for s in alone.segments]
        assert mixed.no_speech_prob == pytest.approx(alone.no_speech_prob, rel=1e-3, abs=1e-30)


def test_temperature_fallback_only_for_failing_windows(tiny_whisper, monkeypatch):
    clip = noise(5.0, 30)
    ladder = (0.0, 0.5, 1.0)
    model = WhisperModelConfig(name=tiny_whisper)
    # The random model repeats itself: every window fails the compression check and walks the
    # ladder; still failing at its last temperature, it writes no text (``is_unintelligible``).
    strict_cfg = WhisperConfig(temperatures=ladder, engine="torch")
    blank = WhisperTranscriber(model, strict_cfg, device="cpu").transcribe_batch([clip])[0]
    assert (blank.text, blank.segments) == ("", [])
    monkeypatch.setattr(whisper_module, "is_unintelligible", lambda *args: False)
    strict = WhisperTranscriber(model, strict_cfg, device="cpu").transcribe_batch([clip])[0]
    assert strict.segments and {s["temperature"] for s in strict.segments} == {1.0}
    assert all(s["compression_ratio"] > 2.4 for s in strict.segments)
    lenient = WhisperConfig(temperatures=ladder, compression_ratio_threshold=1e9, logprob_threshold=-1e9)
    kept = WhisperTranscriber(model, lenient, device="cpu").transcribe_batch([clip])[0]
    assert kept.segments and {s["temperature"] for s in kept.segments} == {0.0}


def test_no_speech_gating_drops_text(tiny_whisper):
    clip = noise(5.0, 40)
    # Every window counts as silence when any probability exceeds the threshold and any log-prob is
    # low: the ends of the allowed ranges (a no-speech probability above 0, a log-prob below 0).
    gate_all = WhisperConfig(temperatures=(0.0,), no_speech_threshold=0.0, logprob_threshold=0.0)
    t = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), gate_all, device="cpu").transcribe_batch([clip])[0]
    assert (t.text, t.segments, t.language) == ("", [], None)
    assert 0.0 <= t.no_speech_prob < 1.0  # the model's own number, not the silent-window 1.0


def test_configured_language_is_used(tiny_whisper):
    cfg = WhisperConfig(temperatures=(0.0,), language="de")
    t = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), cfg, device="cpu").transcribe_batch([noise(4.0, 50)])[0]
    assert t.language == "de" and 0.0 < t.language_prob < 1.0


def test_fp16_activation_path_runs(tiny_whisper):
    """The CUDA dtype handling (fp16 weights except layer norms, fp16 features), exercised on CPU."""
    import torch

    from extract.models.whisper import _to_fp16

    clip = noise(4.0, 60)
    tr = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")
    fp32 = tr.transcribe_batch([clip])[0]
    _to_fp16(tr.model)
    tr.engine.fp16, tr.engine.dtype = True, torch.float16
    fp16 = tr.transcribe_batch([clip])[0]
    assert tr.model.decoder.ln.weight.dtype == torch.float32
    assert fp16.language == fp32.language
    assert fp16.language_prob == pytest.approx(fp32.language_prob, abs=0.02)
    check_segments(fp16, 4.0)


# ---- the stage ---------------------------------------------------------------------------------


def stage_config(tiny_whisper: str, **overrides) -> Config:
    """The stage on noise standing in for speech (the tiny random model cannot tell): no voice
    activity gate unless a test asks for it (tests/test_vad_gating.py runs it on real speech)."""
    return Config().replace(**{"models.whisper.name": tiny_whisper, "runtime.device": "cpu", "whisper.vad": False,
                               "runtime.whisper_batch_size": 2, "whisper.temperatures": [0.0], **overrides})


def test_stage_adds_columns_and_passes_failures(tiny_whisper):
    stage = TranscribeStage(stage_config(tiny_whisper))
    rows = [
        {"video_id": "talk", "has_audio": True, "audio": noise(5.0, 70), "error_stage": None},
        {"video_id": "mute", "has_audio": False, "audio": np.zeros(0, np.float32), "error_stage": None},
        {"video_id": "quiet", "has_audio": True, "audio": np.zeros(AUDIO_RATE, np.float32), "error_stage": None},
        {"video_id": "broken", "has_audio": None, "audio": None, "error_stage": "decode", "error_type": "DecodeError",
         "error_message": "bad", "retryable": False},
        {"video_id": "stereo", "has_audio": True, "audio": np.zeros((2, 100), np.float32), "error_stage": None},
    ]
    out = batch_to_rows(stage(rows_to_batch(rows)))
    assert [r["video_id"] for r in out] == [r["video_id"] for r in rows]
    assert len({frozenset(r) for r in out}) == 1 and "audio" not in out[0]
    assert set(OUTPUT_COLUMNS) <= set(out[0])
    talk, mute, quiet, broken, stereo = out
    assert talk["transcript_text"] and talk["whisper_model"] == stage.transcriber.lineage
    segments = json.loads(talk["segments_json"])
    assert segments and all(0 <= s["start_s"] <= s["end_s"] <= 5.0 for s in segments)
    assert (mute["transcript_text"], mute["segments_json"], mute["no_speech_prob"], mute["language"]) == ("", "[]", None, None)
    assert (quiet["transcript_text"], quiet["segments_json"], quiet["no_speech_prob"]) == ("", "[]", 1.0)
    assert broken["error_stage"] == "decode" and all(broken[c] is None for c in OUTPUT_COLUMNS)
    assert stereo["error_stage"] == "whisper" and stereo["error_type"] == "InvalidInput"
    assert all(stereo[c] is None for c in OUTPUT_COLUMNS)


def test_stage_isolates_a_video_that_breaks_the_batch(tiny_whisper, monkeypatch):
    stage = TranscribeStage(stage_config(tiny_whisper))
    poison_len = 12345
    real = stage.transcriber.transcribe_batch

    def flaky(audios, batch_size=16, speech_spans=None):
        if any(len(a) == poison_len for a in audios):
            raise RuntimeError("stft: window longer than input")
        return real(audios, batch_size, speech_spans)

    monkeypatch.setattr(stage.transcriber, "transcribe_batch", flaky)
    rows = [{"video_id": v, "has_audio": True, "audio": a, "error_stage": None}
            for v, a in (("ok1", noise(3.0, 80)), ("poison", noise(poison_len / AUDIO_RATE, 81)), ("ok2", noise(2.0, 82)))]
    ok1, poison, ok2 = batch_to_rows(stage(rows_to_batch(rows)))
    assert ok1["transcript_text"] and ok2["transcript_text"] and ok1["error_stage"] is None
    assert poison["error_stage"] == "whisper" and poison["retryable"] is True
    assert "window longer than input" in poison["error_message"] and poison["transcript_text"] is None


def test_out_of_memory_halves_the_window_batch(tiny_whisper, monkeypatch, caplog):
    """A batch of windows that runs out of memory is run again in halves (CLIP's fallback,
    ``run_in_batches``); the transcripts equal those of an undisturbed run."""
    import torch

    transcriber = WhisperTranscriber(WhisperModelConfig(name=tiny_whisper), GREEDY, device="cpu")
    audios = [noise(s, 90 + k) for k, s in enumerate((3, 5, 2, 7, 4))]
    expected = transcriber.transcribe_batch(audios, batch_size=8)
    real = transcriber._decode_windows
    seen = []

    def small_batches_only(chunk, *args):
        seen.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real(chunk, *args)

    monkeypatch.setattr(transcriber, "_decode_windows", small_batches_only)
    got = transcriber.transcribe_batch(audios, batch_size=8)
    assert seen[:3] == [5, 4, 2] and max(seen[2:]) <= 2
    assert "Whisper windows: a batch of 5 ran out of memory; retrying with batches of 4" in caplog.text
    assert [t.text for t in got] == [t.text for t in expected] and all(t.text for t in got)
    assert all(np.allclose(a.audio_embedding, b.audio_embedding, atol=1e-6) for a, b in zip(got, expected))


@pytest.mark.parametrize("error", ["CUDA error: an illegal memory access was encountered",
                                   "CUDA error: device-side assert triggered"])
def test_poisoned_cuda_context_fails_the_stage_not_the_videos(tiny_whisper, monkeypatch, error):
    """A CUDA error that leaves the context unusable is no video's fault: the stage raises
    ``DeviceLostError`` (the Ray backend then restarts the actor and retries the batch) instead
    of marking this video and every later one as failed."""
    from extract.rows import DeviceLostError

    stage = TranscribeStage(stage_config(tiny_whisper))

    def broken(*args):
        raise RuntimeError(error)

    monkeypatch.setattr(stage.transcriber, "_decode_windows", broken)
    rows = [{"video_id": v, "has_audio": True, "audio": noise(2.0, 83 + k), "error_stage": None}
            for k, v in enumerate(("a", "b"))]
    with pytest.raises(DeviceLostError, match="illegal memory access|device-side assert"):
        stage(rows_to_batch(rows))
