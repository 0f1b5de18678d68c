"""Whisper model: transcribe the audio of many videos at once with one openai-whisper model.

``whisper.transcribe`` walks one audio through 30 s windows one after another. Short videos
allow a better plan, which ``WhisperTranscriber.transcribe_batch`` follows. It works in rounds:
each round takes the next window of every video that has audio left and decodes all of them
together; most videos are one window long, so one round does it.

1. A video's next window starts at its cursor (0 at first) and is at most 30 s long
   (``extract.media.windows.next_window``: to the end of the audio when that is within 30 s, else
   cut at the quietest point of the last ``whisper.boundary_search_s`` seconds). Windows with
   nothing audible (loudest 100 ms below ``whisper.silence_rms``) are skipped.
2. The round's windows, longest first, go in batches of ``runtime.whisper_batch_size`` (windows
   of one encoder length together). Per batch: log-Mel spectrograms as ``whisper.transcribe``
   builds them, padded to the window's audio rounded up to ``whisper.encoder_step_s`` (15 s;
   ``mel_frames``) rather than always to 30 s, one encoder pass (the
   engine's: torch, or CTranslate2 int8 with ``whisper.engine``), the decoder's inputs prepared
   once (torch: the cross-attention keys and values, ``extract.models.whisper_decoder``; every
   decoder pass below reuses them), then, for windows that are their video's first, one decoder
   step over ``<|startoftranscript|>`` for the language distribution. The no-speech probability
   of every window is read at the same position by the greedy decode (step 4; the decoder is
   causal, so it is the number ``whisper.decode`` reports).
3. Language: ``whisper.language``, or (null) detected per video from its first non-silent
   window, as ``whisper.transcribe`` detects it from the first 30 s.
4. Greedy decoding with timestamps (``extract.models.whisper_decoder.decode_encoded``:
   ``whisper.decode``'s tokens for ``DecodingOptions(temperature=0, without_timestamps=False)``
   on the encoded windows, with finished windows leaving the batch; batched beam search is
   broken upstream, so no beams). Windows whose result is too repetitive (gzip ratio above
   ``whisper.compression_ratio_threshold``) or improbable (mean log-prob below
   ``whisper.logprob_threshold``) are decoded again at the next temperature of
   ``whisper.temperatures`` (each window sampling from a generator seeded by its audio, so
   reruns and re-batched windows agree), batched among
   themselves, reusing the encoder output and the cross-attention keys and values; the last
   result is kept, as ``whisper.transcribe`` falls back. A window that counts as silence
   (step 5) is not retried.
5. No-speech gating: a window with no-speech probability above ``whisper.no_speech_threshold``
   whose decode fails a check yields no text. ``whisper.transcribe`` drops only the
   improbable ones (mean log-prob below ``whisper.logprob_threshold``) and samples the
   repetitive ones again at higher temperatures; on music and noise that sampling is where
   hallucinated sentences come from, so a probably-not-speech window whose greedy text is
   repetitive counts as silence here; and a window that fell back to the last temperature and
   still fails a check yields no text (``is_unintelligible``: measured on real music and
   short speech in ``bench/bench_music_speech.py``). Segments come from timestamp-token pairs, shifted into
   video time and clamped to the window's audio.
6. Where the window ends: Whisper hands a segment it cannot finish inside the window (speech
   running into the window's end, even a sentence that ends just before it) on to the next
   window by stopping after a timestamp pair (``deferred_at``). As ``whisper.transcribe``
   does, the unfinished part is dropped and the video's cursor moves to that timestamp (to
   the quiet point up to ``RESUME_LEAD_IN_S`` before it, so the first sound is not cut),
   and the next round decodes from there. Otherwise the cursor moves to the window's end.
   A deferral that would advance less than ``MIN_RESUME_S``, or that leaves only silence,
   ends the window instead (its unfinished text is kept, ending at the window's end), so
   every round makes progress.

Differences from ``whisper.transcribe``, on purpose: windows are decoded independently (no
previous-text prompt, like ``condition_on_previous_text=False``), so a video's transcript
never depends on which videos share its batch (with greedy decoding); windows end at quiet
points rather than at exactly 30 s.

Per-video results (``Transcript``): ``no_speech_prob`` is the lowest no-speech probability of
any of its windows (silent windows count as 1.0): high only when no part of the audio looks
like speech (Whisper base gives music, tones and noise about 0.7-0.8, digital silence is 1.0).
``language``/``language_prob`` are None when no text was produced.

Segment start and end times have Whisper's 20 ms timestamp resolution; a window's first
segment starts at most 1 s after the window does (``DecodingOptions.max_initial_timestamp``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from extract.config import WHISPER_CONTEXT_S, StorageConfig, WhisperConfig, WhisperModelConfig
from extract.media.windows import AUDIO_RATE, AudioWindow, is_silent, next_window, plan_windows, quietest_point
from extract.models.audio_embedding import pooled_embedding, window_frame_sums
from extract.models.common import CHECKPOINT_ERRORS, ModelLoadError, lineage, resolve_device, run_in_batches
from extract.models.vad import windows_with_speech
from extract.models.whisper_decoder import CrossAttention, decode_encoded, first_token_logits, sampling_seed
from extract.rows import VideoError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


TIMESTAMP_STEP_S = 0.02  # seconds per Whisper timestamp token (2 mel frames of 10 ms)


MIN_RESUME_S = 1.0  # a deferred segment is decoded again only when the window advanced at least this far


RESUME_LEAD_IN_S = 0.5  # the next window starts in the pause up to this long before a deferred segment


@dataclass(frozen=True)
class Transcript:
    """One video's transcription.

    ``segments``: dicts with ``start_s``/``end_s`` (video time, seconds), ``text``,
    ``avg_logprob``, ``no_speech_prob``, ``compression_ratio``, ``temperature`` (the window
    decode that produced the segment; floats or None).
    """

    text: str
    language: str | None
    language_prob: float | None
    no_speech_prob: float | None
    segments: list[dict[str, Any]] = field(default_factory=list)
    audio_embedding: np.ndarray | None = None  # (d_model,) float32 L2-normalised; None: nothing audible


def fails_checks(compression_ratio: float, avg_logprob: float, cfg: WhisperConfig) -> bool:
    """True when a decode is too repetitive (gzip ratio) or too improbable (mean token log-prob)."""
    return compression_ratio > cfg.compression_ratio_threshold or avg_logprob < cfg.logprob_threshold


def is_no_speech(no_speech_prob: float, avg_logprob: float, compression_ratio: float, cfg: WhisperConfig) -> bool:
    """True when a decoded window counts as silence and yields no text.

    ``whisper.transcribe``'s rule (no-speech probability above the threshold and mean log-prob
    below its threshold), extended to repetitive decodes: a window the model thinks is
    probably not speech and whose text fails either check is music, noise or silence.
    """
    return no_speech_prob > cfg.no_speech_threshold and fails_checks(compression_ratio, avg_logprob, cfg)


def is_unintelligible(avg_logprob: float, compression_ratio: float, temperature: float, cfg: WhisperConfig) -> bool:
    """True when a window fell back to the last temperature of ``whisper.temperatures`` and that
    decode still fails the checks: text sampled at the highest temperature that the model
    itself finds improbable or repetitive. ``whisper.transcribe`` keeps it; on short music it
    is the invented text. Measured (``bench/bench_music_speech.py``, Whisper base): 14 real speech
    clips of 1-11 s all decode at temperature 0 (final log-prob -0.14 to -0.86); with this rule,
    of 68 4 s excerpts of two game scores only the 2 with sung vocals keep words (temperature 0).
    """
    return temperature >= cfg.temperatures[-1] > 0.0 and fails_checks(compression_ratio, avg_logprob, cfg)


def needs_fallback(compression_ratio: float, avg_logprob: float, no_speech_prob: float,
                   cfg: WhisperConfig) -> bool:
    """True when a window's decode should be retried at the next temperature: it fails the
    checks and does not count as silence (``is_no_speech``)."""
    return fails_checks(compression_ratio, avg_logprob, cfg) and not is_no_speech(
        no_speech_prob, avg_logprob, compression_ratio, cfg)


def split_timestamped(tokens: Sequence[int], eot: int, timestamp_begin: int,
                      ) -> list[tuple[int | None, int | None, list[int]]]:
    """Split a window's sampled tokens (no start sequence, no end-of-text) into segments.

    Returns ``(start, end, text_tokens)`` per segment with ``start``/``end`` in timestamp steps
    (``TIMESTAMP_STEP_S``) from the window start; ``end`` is None for text after the last
    timestamp (unfinished), ``start`` None for text before any timestamp. Text tokens are the
    ids below ``eot``; other special tokens are ignored. Segments without text are dropped.
    """
    segments: list[tuple[int | None, int | None, list[int]]] = []
    start: int | None = None
    text: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            position = token - timestamp_begin
            if text:
                segments.append((start, position, text))
                text = []
                start = None
            else:
                start = position  # a segment start, or the second of a pair <|end|><|start|>
        elif token < eot:
            text.append(token)
    if text:
        segments.append((start, None, text))
    return segments


def deferred_at(tokens: Sequence[int], timestamp_begin: int) -> int | None:
    """Where a window's decode hands its last segment on to the next window, or None.

    Whisper ends a segment it cannot finish inside the window (speech that runs into the
    window's end, or that it would rather see whole) by stopping after a closing timestamp pair
    instead of a single timestamp: ``... <|b|><|b|>`` or ``... <|b|><|b|> unfinished text``.
    ``whisper.transcribe`` then drops the unfinished part and starts the next window at ``b``.
    Returns ``b`` in timestamp steps from the window start; None when the output ends with a
    single timestamp or has no timestamp pair (the window is done). ``tokens``: the sampled
    tokens, without start sequence and end-of-text.
    """
    is_ts = [t >= timestamp_begin for t in tokens]
    pairs = [i for i in range(1, len(tokens)) if is_ts[i - 1] and is_ts[i]]
    if not pairs or is_ts[-2:] == [False, True]:
        return None
    return int(tokens[pairs[-1] - 1]) - timestamp_begin


def as_whisper_audio(audio: Any) -> np.ndarray:
    """``audio`` as ``(m,) float32`` 16 kHz mono; raise ``VideoError('InvalidInput')`` otherwise."""
    if audio is None:
        return np.zeros(0, np.float32)
    try:
        array = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VideoError("InvalidInput", f"audio: not a numeric array ({exc})") from exc
    if array.ndim != 1:
        raise VideoError("InvalidInput", f"audio: expected (m,) float32 16 kHz mono, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise VideoError("InvalidInput", "audio: contains NaN or infinite samples")
    return array


@dataclass
class _Window:
    """A non-silent window of one video on its way through the model."""

    video: int  # index into the transcribe_batch input
    window: AudioWindow
    no_speech_prob: float = 1.0
    language: str | None = None
    result: Any = None  # whisper DecodingResult of the last temperature tried
    deferred: int | None = None  # timestamp step where the decode handed its last segment on (deferred_at)
    speech: bool = True  # voice activity found speech in it (else it is encoded, not decoded)
    skip_s: float = 0.0  # seconds at its start an earlier window of the video already pooled
    emb_sum: Any = None  # (d_model,) float64 sum of its real-audio encoder frames (audio embedding)
    emb_count: int = 0


def choose_engine(requested: str, device: str) -> str:
    """The engine ``whisper.engine`` resolves to on ``device`` (``cpu``/``cuda``): ``auto`` is
    ``ctranslate2`` on a CPU and ``torch`` on CUDA; ``ctranslate2`` when it cannot be imported
    falls back to ``torch``, said once per process in the log."""
    engine = requested if requested != "auto" else ("ctranslate2" if device == "cpu" else "torch")
    if engine == "ctranslate2":
        from extract.models.whisper_ct2 import ct2_available

        if not ct2_available():
            _warn_no_ct2(requested)
            return "torch"
    return engine


@functools.cache
def _warn_no_ct2(requested: str) -> None:
    log.warning("whisper.engine: %s wants ctranslate2, which is not installed; Whisper runs on torch "
                "(pip install ctranslate2 for the faster CPU engine)", requested)


def mel_frames(n_samples: int, step_s: float) -> int:
    """Log-Mel frames (10 ms each) the encoder sees for a window of ``n_samples`` 16 kHz samples:
    the audio's frames rounded up to a multiple of ``step_s`` seconds (``whisper.encoder_step_s``;
    an even count, as the encoder's stride-2 convolution needs), at most Whisper's 3000; 3000
    whatever the length when ``step_s`` is 0 (``whisper.transcribe``'s padding to 30 s).

    The encoder's cost grows with its input (base on one core: 0.34 s for 10 s, 1.57 s for 30 s,
    ctranslate2 int8), and the windows of short clips are mostly padding. The WER on real speech
    stays within +0.01 of ``whisper.transcribe``'s (``tests/test_whisper_ct2_quality.py``)."""
    from whisper.audio import HOP_LENGTH, N_FRAMES

    if step_s <= 0:
        return N_FRAMES
    step = max(2, 2 * round(step_s * AUDIO_RATE / HOP_LENGTH / 2))
    return min(N_FRAMES, max(step, step * math.ceil(n_samples / HOP_LENGTH / step)))


def encode_frames(encoder, mel: "torch.Tensor") -> "torch.Tensor":
    """openai-whisper's ``AudioEncoder.forward`` for ``(n, n_mels, frames)`` log-Mel of any even
    ``frames`` up to 3000: the positional embedding cut to the input's length (what ctranslate2's
    encoder does) instead of asserting 3000 frames. ``-> (n, frames // 2, n_audio_state)``."""
    import torch.nn.functional as F

    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = (x + encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
    for block in encoder.blocks:
        x = block(x)
    return encoder.ln_post(x)


class TorchEngine:
    """Whisper's encoder and decoder on torch (openai-whisper's modules): fp16 on CUDA (linear, conv
    and embedding weights and activations; layer norms in fp32 as whisper computes them), fp32 on
    a CPU. Features are ``(n, n_audio_ctx, n_audio_state)`` tensors on the model's device; the
    decoder reuses one ``CrossAttention`` projection per batch across the language pass and every
    temperature (``extract.models.whisper_decoder``)."""

    name = "torch"

    def __init__(self, model, device: str, sot: int):
        import torch

        self.device = device
        self.fp16 = device == "cuda"
        self.dtype = torch.float16 if self.fp16 else torch.float32
        if self.fp16:
            _to_fp16(model)
        self.model = model.eval()
        self.sot = sot

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def encode(self, mels: "torch.Tensor") -> "torch.Tensor":
        """``(n, n_mels, frames)`` log-Mel (``frames`` even, at most 3000) -> ``(n, frames // 2,
        n_audio_state)`` encoder output. On a CPU one window at a time: its activations stay in
        cache, and batching windows only slows the encoder (base, one thread: 1.59-1.65 s per
        window alone, 1.71-1.81 s in a batch of 16). On a GPU the batch is what keeps it busy."""
        import torch

        mels = mels.to(self.dtype)
        step = len(mels) if self.device == "cuda" else 1
        return torch.cat([encode_frames(self.model.encoder, part) for part in mels.split(step)])

    def prepare(self, features: "torch.Tensor", rows: Sequence[int]) -> tuple["torch.Tensor", CrossAttention]:
        """The decoder's input for the windows ``rows`` of ``features``: their features and
        cross-attention keys and values (projected once)."""
        import torch

        if list(rows) != list(range(len(features))):
            features = features.index_select(0, torch.tensor(list(rows), device=features.device))
        return features, CrossAttention.compute(self.model, features)

    def language_probs(self, state, rows: Sequence[int], language_tokens: Sequence[int]) -> np.ndarray:
        """``(len(rows), len(language_tokens))`` probabilities of the language tokens after
        ``<|startoftranscript|>`` (softmax over them, as ``whisper.detect_language``)."""
        import torch

        features, cross = state
        if list(rows) != list(range(cross.rows)):
            cross = cross.select(torch.tensor(list(rows), device=features.device))
        logits = first_token_logits(self.model, cross, self.sot)
        ids = torch.tensor(list(language_tokens), device=logits.device)
        return logits[:, ids].softmax(dim=-1).cpu().numpy()

    def decode(self, state, rows: Sequence[int], options, seeds: Sequence[int] | None = None) -> list:
        """``whisper.decode``'s ``DecodingResult``s for the windows ``rows`` (``decode_encoded``)."""
        import torch

        features, cross = state
        if list(rows) == list(range(len(features))):
            return decode_encoded(self.model, features, options, cross, seeds)
        index = torch.tensor(list(rows), device=features.device)
        return decode_encoded(self.model, features.index_select(0, index), options, cross.select(index), seeds)


class WhisperTranscriber:
    """One openai-whisper model on one device, transcribing many videos' audio per call.

    ``whisper_model_cfg.name``: an official name (``tiny``, ``base``, ...; its weights must
    already be in ``download_root``, staged by ``extract models stage``: nothing is downloaded)
    or a checkpoint path (local, ``file://``, or in the object store of ``storage``). Loaded
    once through ``whisper.load_model``, then run by the engine ``whisper.engine`` resolves to
    (``choose_engine``): ``TorchEngine`` (fp16 on CUDA, fp32 on CPU) or
    ``extract.models.whisper_ct2.Ct2Engine`` (int8 weights converted from this checkpoint). The
    engine makes the model calls; the windows, language choice, gating, temperature fallback and
    segments below are the same for both. A missing or unreadable checkpoint raises
    ``ModelLoadError`` naming the path.

    Attributes: ``device``, ``engine_name``, ``engine``, ``model`` (the torch model; None on
    ctranslate2), ``dims``, ``lineage`` (``"<name or absolute path>|sha256:<12 hex of the
    weights>"``, whichever engine), ``tokenizer``.
    """

    def __init__(self, whisper_model_cfg: WhisperModelConfig, whisper_cfg: WhisperConfig,
                 device: str = "auto", storage: StorageConfig | None = None):
        from whisper.tokenizer import get_tokenizer

        self.cfg = whisper_cfg
        self.device = resolve_device(device)
        source, path, model = _load_model(whisper_model_cfg, self.device, storage)
        self.lineage = lineage(source, model.state_dict())
        self.dims = model.dims
        self.tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                       task=whisper_cfg.task)
        self._language_codes = list(self.tokenizer.all_language_codes) if model.is_multilingual else []
        if whisper_cfg.language is not None and model.is_multilingual \
                and whisper_cfg.language not in self._language_codes:
            raise ValueError(f"whisper.language: {whisper_cfg.language!r} is not a language code of this "
                             f"model (e.g. en, de, ja); use null to detect it")
        self.engine_name = choose_engine(whisper_cfg.engine, self.device)
        if self.engine_name == "ctranslate2":
            from extract.io.storage import file_digest
            from extract.models.whisper_ct2 import load_ct2_engine

            self.engine = load_ct2_engine(model, self.tokenizer, file_digest(path), self.device)
            self.model = None  # the converted copy serves; the torch weights are freed
        else:
            self.engine = TorchEngine(model, self.device, self.tokenizer.sot)
            self.model = self.engine.model
        log.info("Whisper %s loaded on %s (%s)", self.lineage, self.device, self.engine.precision)

    def plan(self, audio: np.ndarray) -> list[AudioWindow]:
        """The windows ``audio`` ``(m,) float32`` is cut into when no segment is deferred
        (``extract.media.windows.plan_windows``; module doc, step 6)."""
        return plan_windows(audio, self.cfg.window_s, self.cfg.boundary_search_s)

    def transcribe_batch(self, audios: Sequence[np.ndarray], batch_size: int = 16,
                         speech_spans: Sequence[Sequence[tuple[float, float]] | None] | None = None) -> list[Transcript]:
        """Transcribe several videos' audio, ``[(m_i,) float32 16 kHz mono]`` -> ``[Transcript]``.

        Up to ``batch_size`` 30 s windows (from any videos) go through the model at once
        (module doc). ``speech_spans`` (per video, seconds, from ``extract.models.vad``; None =
        no voice activity check) gate the decoder: a window without speech is encoded (its
        frames count in the audio embedding) but neither language-detected nor decoded, so a
        music-only clip costs no decoder pass. A batch that runs out of memory is run again in
        halves (the smaller size kept for the rest of the call; the log says so); a CUDA error
        that poisons the context raises ``DeviceLostError`` (``extract.models.common.run_in_batches``).
        Raises ``VideoError`` for a malformed array.
        """
        audios = [as_whisper_audio(a) for a in audios]
        spans = list(speech_spans) if speech_spans is not None else [None] * len(audios)
        pooled_until = [0] * len(audios)  # per video: audio up to this sample is in the embedding
        cursors = [0] * len(audios)  # per video: first sample not yet transcribed
        decoded: dict[int, list[_Window]] = {}
        languages: dict[int, tuple[str, float | None]] = {}
        size = max(1, int(batch_size))
        while True:
            # One window per unfinished video; longest first, so windows of similar length share
            # a batch (a batch decodes until its longest text ends; finished rows leave early).
            round_windows = [w for v in range(len(audios)) if (w := self._next_window(v, audios, cursors))]
            if not round_windows:
                break
            for w in round_windows:
                w.skip_s = max(0, pooled_until[w.video] - w.window.start) / AUDIO_RATE
                pooled_until[w.video] = max(pooled_until[w.video], w.window.end)
                if spans[w.video] is not None:
                    w.speech = bool(windows_with_speech(spans[w.video], [(w.window.start_s, w.window.end_s)])[0])
            round_windows.sort(key=lambda w: -w.window.n_samples)
            # Windows of one encoder length share a batch (sorted longest first, so each length
            # is one run of the list).
            for _, same in itertools.groupby(round_windows,
                                             key=lambda w: mel_frames(w.window.n_samples, self.cfg.encoder_step_s)):
                same = list(same)
                size = run_in_batches(
                    len(same), size,
                    lambda start, end, same=same: self._decode_windows(same[start:end], audios, languages),
                    "Whisper windows", self.device)
            for w in round_windows:
                done = decoded.setdefault(w.video, [])
                cursors[w.video] = self._resume_sample(w, audios[w.video], sum(d.deferred is not None for d in done))
                done.append(w)
        return [self._assemble(decoded.get(v, []), languages.get(v)) for v in range(len(audios))]

    # ---- internals ----

    def _next_window(self, video: int, audios: list[np.ndarray], cursors: list[int]) -> _Window | None:
        """The next non-silent window of ``video`` from its cursor (silent ones are skipped and
        the cursor moved past them), or None when its audio is done."""
        audio = audios[video]
        while cursors[video] < len(audio):
            window = next_window(audio, cursors[video], self.cfg.window_s, self.cfg.boundary_search_s)
            if not is_silent(audio[window.start:window.end], self.cfg.silence_rms):
                return _Window(video, window)
            cursors[video] = window.end
        return None

    def _resume_sample(self, w: _Window, audio: np.ndarray, followed: int) -> int:
        """Sample where ``w``'s video continues: the window's end, or just before the segment
        the decode deferred (``deferred_at``; recorded in ``w.deferred``). A deferral is followed
        only when it advances at least ``MIN_RESUME_S``, something audible follows it, and fewer
        than two per started 30 s of audio, plus one, were ``followed`` for the video before, so
        no audio can make the model re-decode without end. Whisper's
        timestamp often lands on the speech onset, so the next window starts at the quietest
        point of the ``RESUME_LEAD_IN_S`` before it (``quietest_point``): a word's first sound
        is not cut off."""
        result = w.result
        if result is None:  # not decoded (no speech in it)
            return w.window.end
        limit = 2 * math.ceil(len(audio) / (WHISPER_CONTEXT_S * AUDIO_RATE)) + 1
        if followed >= limit or is_no_speech(w.no_speech_prob, result.avg_logprob, result.compression_ratio,
                                             self.cfg):
            return w.window.end
        step = deferred_at(result.tokens, self.tokenizer.timestamp_begin)
        if step is None or step * TIMESTAMP_STEP_S < MIN_RESUME_S:
            return w.window.end
        resume = w.window.start + int(round(step * TIMESTAMP_STEP_S * AUDIO_RATE))
        if resume >= w.window.end or is_silent(audio[resume:w.window.end], self.cfg.silence_rms):
            return w.window.end
        w.deferred = step
        lead_in = int(RESUME_LEAD_IN_S * AUDIO_RATE)
        return quietest_point(audio, max(resume - lead_in, w.window.start + 1), resume)

    def _window_mel(self, samples: np.ndarray, frames: int) -> "torch.Tensor":
        """``(n_mels, frames)`` log-Mel of one window (``frames = mel_frames(len(samples))``),
        built as ``whisper.transcribe`` builds it: the spectrogram of the audio followed by zeros,
        cut to the audio's frames and zero-padded (to 3000 frames there; here to the window's
        encoder length). ``whisper.transcribe`` appends 30 s of zeros; the frames kept see only
        the first ``N_FFT`` of them and the zeros cannot raise the spectrogram's maximum (its
        clamp), so one ``N_FFT`` of zeros gives the same frames without a 30 s transform."""
        import torch
        from whisper.audio import HOP_LENGTH, N_FFT, log_mel_spectrogram, pad_or_trim

        # A copy: audio from Ray arrives as read-only arrays, which torch.from_numpy warns about.
        mel = log_mel_spectrogram(torch.tensor(samples), self.dims.n_mels, padding=N_FFT, device=self.engine.device)
        return pad_or_trim(mel[:, : len(samples) // HOP_LENGTH], frames)

    def _decode_windows(self, chunk: list[_Window], audios: list[np.ndarray],
                        languages: dict[int, tuple[str, float | None]]) -> None:
        """Encode, detect and decode one batch of windows (in place on ``chunk``); the engine
        (``self.engine``) makes the model calls, this the decisions."""
        import torch
        import whisper

        engine = self.engine
        with torch.no_grad():
            frames = mel_frames(chunk[0].window.n_samples, self.cfg.encoder_step_s)  # one length per batch
            mels = torch.stack([self._window_mel(audios[w.video][w.window.start:w.window.end], frames) for w in chunk])
            features = engine.encode(mels)
            sums, counts = window_frame_sums(features, [w.window.duration_s for w in chunk], [w.skip_s for w in chunk])
            for i, w in enumerate(chunk):
                w.emb_sum, w.emb_count = sums[i], int(counts[i])
            speaking = [i for i, w in enumerate(chunk) if w.speech]
            if not speaking:
                return
            state = engine.prepare(features, speaking)  # windows without speech leave before the decoder
            chunk = [chunk[i] for i in speaking]
            first = [i for i, w in enumerate(chunk) if w.video not in languages]  # the video's first window
            language_probs = None
            if first and self._language_codes:
                language_probs = engine.language_probs(state, first, self.tokenizer.all_language_tokens)
        for j, i in enumerate(first):
            languages[chunk[i].video] = self._choose_language(None if language_probs is None else language_probs[j])
        for w in chunk:
            w.language = languages[w.video][0]

        todo = list(range(len(chunk)))
        temperatures = self.cfg.temperatures
        for k, temperature in enumerate(temperatures):
            groups: dict[str, list[int]] = {}
            for i in todo:
                groups.setdefault(chunk[i].language, []).append(i)
            for language, members in groups.items():
                options = whisper.DecodingOptions(task=self.cfg.task, language=language, temperature=temperature,
                                                  without_timestamps=False, fp16=engine.precision == "fp16")
                seeds = None
                if temperature > 0:  # each window samples from its own stream, whatever it is batched with
                    seeds = [sampling_seed(audios[chunk[i].video][chunk[i].window.start:chunk[i].window.end],
                                           temperature) for i in members]
                for i, result in zip(members, engine.decode(state, members, options, seeds)):
                    chunk[i].result = result
                    if k == 0:  # read at <|startoftranscript|>: the same at every temperature
                        chunk[i].no_speech_prob = float(result.no_speech_prob)
            if k == len(temperatures) - 1:
                break
            todo = [i for i in todo if needs_fallback(chunk[i].result.compression_ratio, chunk[i].result.avg_logprob,
                                                       chunk[i].no_speech_prob, self.cfg)]
            if not todo:
                break

    def _choose_language(self, probs: np.ndarray | None) -> tuple[str, float | None]:
        """``(language, its probability)`` for a video from its first window's language distribution."""
        if probs is None:  # English-only model
            return "en", None
        language = self.cfg.language or self._language_codes[int(np.argmax(probs))]
        return language, float(probs[self._language_codes.index(language)])

    def _assemble(self, decoded: list[_Window],
                  language: tuple[str, float | None] | None) -> Transcript:
        """One video's ``Transcript`` from its decoded windows (in time order)."""
        segments: list[dict[str, Any]] = []
        text_tokens: list[int] = []
        video_end = 0.0  # end of the last segment so far, video time; a resumed window may start before it
        embedding = pooled_embedding(np.array([w.emb_sum for w in decoded if w.emb_sum is not None]).reshape(
            -1, self.dims.n_audio_state), np.array([w.emb_count for w in decoded if w.emb_sum is not None]))
        for w in decoded:
            result = w.result
            if result is None or is_no_speech(w.no_speech_prob, result.avg_logprob, result.compression_ratio, self.cfg) \
                    or is_unintelligible(result.avg_logprob, result.compression_ratio, result.temperature, self.cfg):
                continue
            stats = {"avg_logprob": _finite(result.avg_logprob), "no_speech_prob": _finite(w.no_speech_prob),
                     "compression_ratio": _finite(result.compression_ratio),
                     "temperature": _finite(result.temperature)}
            duration = w.window.duration_s
            pieces = split_timestamped(result.tokens, self.tokenizer.eot, self.tokenizer.timestamp_begin)
            if w.deferred is not None:  # the next window starts at the deferred segment
                duration = w.deferred * TIMESTAMP_STEP_S
                pieces = [(a, b, t) for a, b, t in pieces if b is not None and b <= w.deferred]
            previous_end = max(0.0, video_end - w.window.start_s)
            for start, end, tokens in pieces:
                start_s = previous_end if start is None else min(start * TIMESTAMP_STEP_S, duration)
                start_s = max(start_s, previous_end)
                end_s = duration if end is None else min(end * TIMESTAMP_STEP_S, duration)
                end_s = max(start_s, end_s)
                previous_end = end_s
                text = self.tokenizer.decode(tokens)
                if not text.strip() or end_s == start_s:
                    continue  # whisper.transcribe clears instantaneous or empty segments too
                segments.append({"start_s": w.window.start_s + start_s, "end_s": w.window.start_s + end_s,
                                 "text": text.strip(), **stats})
                video_end = w.window.start_s + end_s
                text_tokens.extend(tokens)
        text = self.tokenizer.decode(text_tokens).strip() if text_tokens else ""
        # Silent windows count as 1.0, which never lowers the minimum.
        no_speech_prob = min([w.no_speech_prob for w in decoded], default=1.0)
        if not text:
            return Transcript("", None, None, no_speech_prob, [], embedding)
        return Transcript(text, language[0], language[1], no_speech_prob, segments, embedding)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _load_model(model_cfg: WhisperModelConfig, device: str, storage: StorageConfig | None):
    """``(source for lineage, local checkpoint file, Whisper model on device)`` through
    ``whisper.load_model``; never downloads.

    A checkpoint in the object store (``s3://``, as ``extract models stage`` may leave it) is
    copied once to a local cache first (``extract.io.storage.local_checkpoint``).
    """
    import whisper

    from extract.io.storage import local_checkpoint, sha256_file
    from extract.io.storage import is_remote

    name = model_cfg.name
    root = model_cfg.download_root or os.path.join(
        os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "whisper")
    official = getattr(whisper, "_MODELS", {})
    if name in official:
        url = official[name]
        path = Path(root) / os.path.basename(url)
        # whisper.load_model would download a missing or mismatched file: workers never do.
        if not path.is_file():
            raise ModelLoadError(
                f"models.whisper.name: weights of {name!r} not found at {path}; stage them with "
                "`extract models stage` (or set models.whisper.download_root / a checkpoint path)")
        if sha256_file(path) != url.split("/")[-2]:
            raise ModelLoadError(f"models.whisper.name: {path} does not match the sha256 of {name!r}; "
                                 "stage the weights again")
        source, target, kwargs = name, name, {"download_root": root}
    else:
        try:
            path = Path(local_checkpoint(name, storage)).expanduser()
        except (VideoError, OSError) as exc:
            raise ModelLoadError(f"models.whisper.name: cannot copy checkpoint {name}: {exc}") from exc
        if not path.is_file():
            raise ModelLoadError(
                f"models.whisper.name: checkpoint {path} does not exist and {name!r} is not a Whisper model "
                f"name ({', '.join(whisper.available_models())}); `extract models make-tiny` writes a test one")
        target = str(path.resolve())
        source = name if is_remote(name) else target
        kwargs = {}
    try:
        model = whisper.load_model(target, device=device, **kwargs)
    except CHECKPOINT_ERRORS as exc:
        raise ModelLoadError(
            f"models.whisper.name: cannot load Whisper checkpoint {path}: {type(exc).__name__}: {exc}. "
            "Expected an openai-whisper file {'dims': ..., 'model_state_dict': ...}") from exc
    return source, path, model


def _to_fp16(model) -> None:
    """Store linear, conv and embedding weights in fp16 (whisper casts them per call otherwise);
    layer norms stay fp32, as whisper.model.LayerNorm computes in fp32."""
    import torch
    from whisper.model import LayerNorm

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
            module.half()
        elif isinstance(module, LayerNorm):
            module.float()
