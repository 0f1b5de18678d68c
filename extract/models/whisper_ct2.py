"""Whisper on CTranslate2: the CPU engine, int8, with weights converted here from the same checkpoint.

``ctranslate2`` (the engine of faster-whisper) runs Whisper's encoder and decoder with int8
matrix products on the CPU. The weights are not downloaded in its format: ``convert_checkpoint``
builds the CTranslate2 model directory (``model.bin``, ``config.json``, ``vocabulary.json``)
from the openai-whisper model that ``whisper.load_model`` read, through ctranslate2's own spec
API (``ctranslate2.specs.WhisperSpec``). The variable mapping is the one ctranslate2's
Transformers converter (``WhisperLoader``) applies to the Hugging Face port, spelled for
openai-whisper's names:

- self-attention query/key/value are fused into one ``(3d, d)`` linear and cross-attention
  key/value into one ``(2d, d)`` linear; openai-whisper's key projections have no bias, so the
  key part of a fused bias is zeros;
- the decoder's output projection is its token embedding (tied, as in Whisper);
- ``encoder.ln_post`` / ``decoder.ln`` are the stacks' final layer norms, ``mlp.0`` / ``mlp.2``
  the feed-forward linears;
- ``config.json``: ``suppress_ids`` (``suppress_tokens=-1``) are whisper's own
  ``DecodingTask._get_suppress_tokens()`` list, ``suppress_ids_begin`` the blank and
  end-of-text (whisper's ``SuppressBlank``), ``lang_ids`` the tokenizer's language tokens;
- ``vocabulary.json``: every id's token as a string (byte-level BPE tokens in GPT-2's
  printable byte alphabet, special tokens and timestamps by name), which ctranslate2 uses to
  find ``<|startoftranscript|>``, ``<|nospeech|>``, ``<|notimestamps|>`` and the timestamps.

Converted directories are cached by the checkpoint file's sha256 (``extract.io.storage.
file_digest``) under ``ct2_cache_root()``; ``extract models stage`` builds them ahead, and a
worker that finds none converts on first load (seconds for base). Conversions write into a
temporary folder renamed into place, so actors sharing a node never read half a model.

``Ct2Engine`` is the model calls only (encode, language probabilities, decode); the windows,
gating, temperature fallback and segments stay in ``extract.models.whisper``, shared with the
torch engine.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


CPU_COMPUTE_TYPE = "int8"  # weights and matrix products in int8 on the CPU (layer norms, softmax in fp32)
CUDA_COMPUTE_TYPE = "int8_float16"  # the same int8 weights with fp16 activations on a GPU


def ct2_available() -> bool:
    """True when ``ctranslate2`` imports."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def ct2_cache_root() -> Path:
    """Where converted models are kept: ``$EXTRACT_CT2_CACHE``, else ``whisper-ct2`` under
    ``$XDG_CACHE_HOME/extract`` (``~/.cache/extract``)."""
    if os.environ.get("EXTRACT_CT2_CACHE"):
        return Path(os.environ["EXTRACT_CT2_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "extract" / "whisper-ct2"


def converted_dir_name(checkpoint_sha256: str, quantization: str = CPU_COMPUTE_TYPE) -> str:
    """The cache folder name of one conversion: the checkpoint's sha256 (16 hex), the weight type
    and the ctranslate2 version that wrote it."""
    import ctranslate2

    return f"{checkpoint_sha256[:16]}-{quantization}-ct2-{ctranslate2.__version__}"


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters (the form of BPE
    tokens in Hugging Face vocabularies)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def vocabulary(tokenizer, n_vocab: int) -> list[str]:
    """Token strings for ids ``0 .. n_vocab - 1`` of a whisper tokenizer (tiktoken encoding)."""
    encoding = tokenizer.encoding
    alphabet = _byte_alphabet()
    tokens: list[str | None] = [None] * n_vocab
    for piece, rank in encoding._mergeable_ranks.items():
        if rank < n_vocab:
            tokens[rank] = "".join(alphabet[b] for b in piece)
    for name, rank in encoding._special_tokens.items():
        if rank < n_vocab:
            tokens[rank] = name
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        raise ValueError(f"the tokenizer has no token for {len(missing)} of the model's {n_vocab} ids "
                         f"(first: {missing[0]})")
    return tokens  # type: ignore[return-value]


def suppress_tokens(tokenizer) -> list[int]:
    """The ids whisper suppresses for ``suppress_tokens="-1"`` (``DecodingTask._get_suppress_tokens``:
    non-speech symbols and the task/special tokens)."""
    ids = set(tokenizer.non_speech_tokens)
    ids.update([tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm])
    if tokenizer.no_speech is not None:
        ids.add(tokenizer.no_speech)
    return sorted(ids)


def whisper_spec(model, tokenizer):
    """A ``ctranslate2.specs.WhisperSpec`` holding ``model``'s weights (an openai-whisper ``Whisper``
    on any device, any dtype; copied as float32 numpy) and its config and vocabulary."""
    from ctranslate2.specs import whisper_spec as ws

    dims = model.dims
    # Copies: ctranslate2's optimize() quantizes the spec's arrays in place, which must not reach the model.
    state = {name: np.array(t.detach().float().cpu().numpy(), copy=True) for name, t in model.state_dict().items()}
    spec = ws.WhisperSpec(dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head)

    def linear(target, prefix: str, bias: bool = True) -> None:
        target.weight = state[f"{prefix}.weight"]
        if bias:
            target.bias = state[f"{prefix}.bias"]

    def norm(target, prefix: str) -> None:
        target.gamma, target.beta = state[f"{prefix}.weight"], state[f"{prefix}.bias"]

    def fused(target, prefixes: Sequence[str]) -> None:
        """One linear from several (query/key/value); a projection without bias (key) adds zeros."""
        target.weight = np.concatenate([state[f"{p}.weight"] for p in prefixes])
        target.bias = np.concatenate([state.get(f"{p}.bias", np.zeros(state[f"{p}.weight"].shape[0], np.float32))
                                      for p in prefixes])

    def attention(target, prefix: str, cross: bool) -> None:
        if cross:
            fused(target.linear[0], [f"{prefix}.query"])
            fused(target.linear[1], [f"{prefix}.key", f"{prefix}.value"])
        else:
            fused(target.linear[0], [f"{prefix}.query", f"{prefix}.key", f"{prefix}.value"])
        linear(target.linear[-1], f"{prefix}.out")

    def block(target, prefix: str, cross: bool) -> None:
        attention(target.self_attention, f"{prefix}.attn", cross=False)
        norm(target.self_attention.layer_norm, f"{prefix}.attn_ln")
        if cross:
            attention(target.attention, f"{prefix}.cross_attn", cross=True)
            norm(target.attention.layer_norm, f"{prefix}.cross_attn_ln")
        linear(target.ffn.linear_0, f"{prefix}.mlp.0")
        linear(target.ffn.linear_1, f"{prefix}.mlp.2")
        norm(target.ffn.layer_norm, f"{prefix}.mlp_ln")

    encoder, decoder = spec.encoder, spec.decoder
    linear(encoder.conv1, "encoder.conv1")
    linear(encoder.conv2, "encoder.conv2")
    encoder.position_encodings.encodings = state["encoder.positional_embedding"]
    norm(encoder.layer_norm, "encoder.ln_post")
    for i, layer in enumerate(encoder.layer):
        block(layer, f"encoder.blocks.{i}", cross=False)
    decoder.embeddings.weight = state["decoder.token_embedding.weight"]
    decoder.position_encodings.encodings = state["decoder.positional_embedding"]
    norm(decoder.layer_norm, "decoder.ln")
    decoder.projection.weight = state["decoder.token_embedding.weight"]  # tied, as in Whisper
    for i, layer in enumerate(decoder.layer):
        block(layer, f"decoder.blocks.{i}", cross=True)

    config = spec.config
    config.suppress_ids = suppress_tokens(tokenizer)
    config.suppress_ids_begin = [*tokenizer.encode(" "), tokenizer.eot]  # whisper's SuppressBlank
    config.lang_ids = sorted(tokenizer.all_language_tokens) if model.is_multilingual else []
    # Cross-attention heads for word alignment (unused here); the last half of the layers, as
    # ctranslate2's converter defaults.
    config.alignment_heads = [(layer, head) for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
                              for head in range(dims.n_text_head)]
    spec.register_vocabulary(vocabulary(tokenizer, dims.n_vocab))
    return spec


def convert_checkpoint(model, tokenizer, out_dir: str | Path, quantization: str = CPU_COMPUTE_TYPE) -> Path:
    """Write the CTranslate2 model directory of ``model`` (openai-whisper) to ``out_dir``.

    ``quantization``: ctranslate2's weight type (``int8``, ``float32``, ``float16``, ...).
    Built in a temporary sibling folder and renamed into place: when another process finished
    the same directory first, that one is kept. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "model.bin").is_file():
        return out_dir
    spec = whisper_spec(model, tokenizer)
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        spec.save(str(work))
        try:
            os.replace(work, out_dir)
        except OSError:
            if not (out_dir / "model.bin").is_file():  # not a concurrent conversion that won
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def converted_model(model, tokenizer, checkpoint_sha256: str, quantization: str = CPU_COMPUTE_TYPE,
                    cache_root: str | Path | None = None) -> Path:
    """The cached CTranslate2 directory of the checkpoint with ``checkpoint_sha256``, converted
    from ``model`` now when it is not there yet."""
    root = Path(cache_root) if cache_root is not None else ct2_cache_root()
    target = root / converted_dir_name(checkpoint_sha256, quantization)
    if not (target / "model.bin").is_file():
        log.info("converting Whisper %s to CTranslate2 %s in %s", checkpoint_sha256[:12], quantization, target)
        convert_checkpoint(model, tokenizer, target, quantization)
    return target


def convert_file(checkpoint: str | Path, cache_root: str | Path | None = None) -> Path:
    """Convert the openai-whisper checkpoint file ``checkpoint`` into the cache (int8), unless it
    is there already; returns its directory. ``extract models stage`` calls it, so workers on
    this machine find the conversion ready."""
    import whisper
    from whisper.tokenizer import get_tokenizer

    from extract.io.storage import file_digest

    model = whisper.load_model(str(checkpoint), device="cpu")
    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages)
    return converted_model(model, tokenizer, file_digest(checkpoint), CPU_COMPUTE_TYPE, cache_root)


class Ct2Engine:
    """Whisper's encoder and decoder on ctranslate2 (``ctranslate2.models.Whisper``).

    ``model_dir``: a ``convert_checkpoint`` directory; ``compute_type``: ``CPU_COMPUTE_TYPE`` on
    a CPU unless given; ``threads``: intra-op threads (the actor's torch thread count when None).
    Features are ``(n, n_audio_ctx, n_audio_state)`` float32 numpy arrays, so the audio
    embedding pools them as it pools the torch engine's.
    """

    name = "ctranslate2"

    def __init__(self, model_dir: str | Path, dims, tokenizer, multilingual: bool, device: str = "cpu",
                 compute_type: str | None = None, threads: int | None = None):
        import ctranslate2

        if threads is None:
            import torch

            threads = torch.get_num_threads()
        self.compute_type = compute_type or (CUDA_COMPUTE_TYPE if device == "cuda" else CPU_COMPUTE_TYPE)
        self.model = ctranslate2.models.Whisper(str(model_dir), device=device, compute_type=self.compute_type,
                                                inter_threads=1, intra_threads=max(1, int(threads)))
        self.device = device
        self.dims = dims
        self.tokenizer = tokenizer
        self.multilingual = multilingual
        # whisper's suppress list, as the conversion wrote it (building it again from the tokenizer
        # compiles tiktoken's special-token regex: 0.8 CPU-s per worker)
        self._suppress = json.loads((Path(model_dir) / "config.json").read_text())["suppress_ids"]
        self.precision = f"ctranslate2 {self.compute_type}"

    def _storage(self, array: np.ndarray):
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(array, dtype=np.float32))

    def encode(self, mels) -> np.ndarray:
        """``(n, n_mels, frames)`` log-Mel (torch tensor or numpy; ``frames`` even, at most 3000) ->
        ``(n, frames // 2, n_audio_state)`` float32 encoder output (ctranslate2 cuts the positional
        embedding to the input's length). One window per call on a CPU, as the torch engine encodes."""
        mels = mels.cpu().float().numpy() if hasattr(mels, "cpu") else np.asarray(mels, np.float32)
        step = len(mels) if self.device == "cuda" else 1
        parts = [np.array(self.model.encode(self._storage(mels[i:i + step]), to_cpu=True))
                 for i in range(0, len(mels), step)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def prepare(self, features: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """The decoder's input for the windows ``rows`` of ``encode``'s output (their features)."""
        return features if list(rows) == list(range(len(features))) else features[list(rows)]

    def language_probs(self, state: np.ndarray, rows: Sequence[int], language_tokens: Sequence[int]) -> np.ndarray:
        """``(len(rows), len(language_tokens))`` probabilities of each language token after
        ``<|startoftranscript|>`` (softmax over the language tokens, as ``whisper.detect_language``)."""
        order = {token: j for j, token in enumerate(language_tokens)}
        names = {self.tokenizer.encoding.decode_single_token_bytes(t).decode(): t for t in language_tokens}
        out = np.zeros((len(rows), len(language_tokens)), np.float64)
        for i, ranked in enumerate(self.model.detect_language(self._storage(state[list(rows)]))):
            for name, prob in ranked:
                out[i, order[names[name]]] = prob
        return out

    def decode(self, state: np.ndarray, rows: Sequence[int], options, seeds: Sequence[int] | None = None) -> list:
        """``whisper.decode`` of the windows ``rows`` of ``state`` with ``options``
        (``whisper.DecodingOptions``: language, task, temperature; timestamps on, no beams) on
        ctranslate2.

        At a temperature above 0 each window is sampled alone, from ctranslate2's generator seeded
        with its ``seeds`` entry. (ctranslate2 makes that generator once per worker thread, from the seed
        set before its first use, so only a thread's first sampled window is reproducible: a known gap,
        ``tests/test_whisper_ct2.py``.) Returns whisper
        ``DecodingResult``s in ``rows`` order (tokens without the prompt or end-of-text;
        ``avg_logprob`` is the sum of the sampled tokens' log-probs, end-of-text included, over
        their count plus one, as whisper averages; ``no_speech_prob`` at ``<|startoftranscript|>``).
        """
        import ctranslate2
        from whisper.decoding import DecodingResult
        from whisper.utils import compression_ratio

        features = state[list(rows)]
        tokenizer = self.tokenizer
        prompt = list(_sot_sequence(self.multilingual, tokenizer.num_languages, options.language, options.task))
        sample_len = options.sample_len or self.dims.n_text_ctx // 2
        # ctranslate2's Whisper generates at most max_length / 2 tokens after the prompt.
        kwargs = dict(beam_size=1, max_length=2 * sample_len, return_scores=True, return_no_speech_prob=True,
                      max_initial_timestamp_index=int(round((options.max_initial_timestamp or 0) / 0.02)),
                      suppress_blank=options.suppress_blank, suppress_tokens=self._suppress)
        if options.temperature > 0:
            if seeds is None or len(seeds) != len(features):
                raise ValueError(f"temperature {options.temperature} needs one seed per window ({len(features)})")
            results = []
            for i, seed in enumerate(seeds):
                ctranslate2.set_random_seed(int(seed) % (1 << 32))
                results += self.model.generate(self._storage(features[i:i + 1]), [prompt], sampling_topk=0,
                                               sampling_temperature=float(options.temperature), **kwargs)
        else:
            results = self.model.generate(self._storage(features), [prompt] * len(features), **kwargs)
        out = []
        for result in results:
            tokens = [t for t in result.sequences_ids[0] if t != tokenizer.eot]
            # ctranslate2's score is the sum of the log-probs of the sampled tokens (end-of-text
            # included) over the count of the tokens before end-of-text (faster-whisper reads it
            # so); whisper divides that sum by len(tokens) + 1.
            total = result.scores[0] * len(tokens)
            text = tokenizer.decode(tokens).strip()
            out.append(DecodingResult(audio_features=None, language=options.language, tokens=tokens, text=text,
                                      avg_logprob=total / (len(tokens) + 1), no_speech_prob=result.no_speech_prob,
                                      temperature=options.temperature, compression_ratio=compression_ratio(text)))
        return out


@functools.lru_cache(maxsize=None)
def _sot_sequence(multilingual: bool, num_languages: int, language: str | None, task: str) -> tuple[int, ...]:
    """The prompt ``whisper.decode`` starts from (``DecodingTask``'s tokenizer): start of transcript,
    language and task for a multilingual model, start of transcript alone for an English-only one."""
    from whisper.tokenizer import get_tokenizer

    return tuple(get_tokenizer(multilingual, num_languages=num_languages, language=language, task=task).sot_sequence)


def load_ct2_engine(model, tokenizer, checkpoint_sha256: str, device: str, quantization: str = CPU_COMPUTE_TYPE,
                    threads: int | None = None) -> Ct2Engine:
    """The ``Ct2Engine`` for an openai-whisper ``model`` read from the checkpoint with
    ``checkpoint_sha256``: its converted directory (``quantization`` weights) from the cache,
    converted now when absent."""
    model_dir = converted_model(model, tokenizer, checkpoint_sha256, quantization)
    compute_type = quantization if quantization != CPU_COMPUTE_TYPE else (
        CUDA_COMPUTE_TYPE if device == "cuda" else CPU_COMPUTE_TYPE)
    return Ct2Engine(model_dir, model.dims, tokenizer, model.is_multilingual, device, compute_type, threads)
