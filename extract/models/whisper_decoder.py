"""Whisper's text decoder over encoded windows, with the work that batching makes wasteful removed.

``whisper.decode`` (``whisper.decoding.DecodingTask`` over ``PyTorchInference``) is correct but
was written for one window at a time. Decoding a batch of windows on a CPU, a profile shows
where the time goes (base, 16 windows, one thread): reading the cross-attention keys and
values in every decoder step (37 %: they are ``(n, 1500, d)`` tensors viewed per head with a
stride, which the attention kernel reads about 1.6x slower than per-head contiguous ones),
projecting those keys and values from the audio features (16 %, and once more in every
``whisper.decode`` call: the language pass and each temperature fallback recompute them),
and copying every cache whenever a finished row leaves the batch (12 %). Here:

- ``CrossAttention`` projects the keys and values of every decoder block once per window,
  stored ``(n, n_head, n_audio_ctx, d_head)`` contiguous; the language/no-speech pass, greedy
  decoding and every fallback temperature reuse them (``select`` picks rows).
- ``CachedDecoder`` is a ``whisper.decoding.Inference``: the decoder's forward pass exactly as
  ``whisper.model.TextDecoder`` computes it (the model's own modules: embeddings, layer norms,
  projections, MLPs; ``scaled_dot_product_attention`` as whisper calls it), with those
  keys/values and a preallocated self-attention cache instead of one grown by ``torch.cat``.
- ``decode_encoded`` runs ``whisper.decoding.DecodingTask`` on it, except that a row leaves
  the batch as soon as its text ends (``whisper.decode`` steps every row until the longest
  text ends): the last live rows move into the freed places (``CachedDecoder.drop``), so only
  the moved rows' caches are copied.
- Each step's logic stays on the device: ``StepRules`` applies whisper's logit filters
  (suppressed tokens, blank start, the timestamp rules) as batched masks instead of
  ``ApplyTimestampRules``' Python loop over rows (a ``.tolist()`` and tensor ``if``s per row
  per token, each a wait for a GPU), the token update keeps ``completed`` on the device, and
  the loop reads one thing per step: which rows ended (``(n,)`` bools), to let them leave.
- Temperature-fallback sampling draws each row from its own generator, seeded by the caller
  per window (``sampling_seed``: a hash of the window's audio and the temperature), so a
  window's sampled text depends on nothing but its audio, the model and the temperature: not
  on the windows batched with it, their order, or a rerun after a lost worker re-batched it.

Greedy tokens are those of ``whisper.decode`` (tested token for token, and the logits against
``TextDecoder`` with whisper's own cache hooks); sampled ones follow whisper's distribution
(``Categorical(logits / temperature)``) from a different random stream. Shapes:
``n`` windows, ``n_audio_ctx`` (1500) audio frames of ``n_audio_state`` features,
``n_text_ctx`` (448) text positions.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


class CrossAttention:
    """Cross-attention keys and values of every decoder block for ``n`` encoded windows.

    ``keys[b]``/``values[b]``: ``(n, n_head, n_audio_ctx, d_head)`` contiguous, in the audio
    features' dtype, for ``model.decoder.blocks[b]``.
    """

    def __init__(self, keys: list["torch.Tensor"], values: list["torch.Tensor"]):
        self.keys, self.values = keys, values

    @classmethod
    def compute(cls, model, features: "torch.Tensor") -> "CrossAttention":
        """Project ``features`` ``(n, n_audio_ctx, n_audio_state)`` (the encoder's output) as
        each block's ``cross_attn.key``/``value`` does, once."""
        import torch

        keys, values = [], []
        with torch.no_grad():
            for block in model.decoder.blocks:
                attn = block.cross_attn
                keys.append(_heads(attn.key(features), attn.n_head))
                values.append(_heads(attn.value(features), attn.n_head))
        return cls(keys, values)

    @property
    def rows(self) -> int:
        return self.keys[0].shape[0]

    def select(self, index: "torch.Tensor") -> "CrossAttention":
        """The rows ``index`` (a 1-D long tensor), as a new (copied) ``CrossAttention``."""
        return CrossAttention([k.index_select(0, index) for k in self.keys],
                              [v.index_select(0, index) for v in self.values])


def _heads(x: "torch.Tensor", n_head: int) -> "torch.Tensor":
    """``(n, t, n_head * d)`` -> contiguous ``(n, n_head, t, d)``."""
    n, t, _ = x.shape
    return x.view(n, t, n_head, -1).transpose(1, 2).contiguous()


def _attend(attn, q_in: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", causal_from: int | None):
    """``attn.out`` of scaled dot-product attention of ``attn.query(q_in)`` ``(n, L, d)`` over
    per-head ``k``/``v`` ``(n, n_head, T, d_head)``. ``causal_from``: the position of q_in's first
    row among the keys (self-attention: row i sees keys ``0 .. causal_from + i``), or None
    (cross-attention: every key)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    q = _heads(attn.query(q_in), attn.n_head)
    length = q.shape[2]
    if causal_from is None or length == 1:
        a = scaled_dot_product_attention(q, k, v)
    elif causal_from == 0:
        a = scaled_dot_product_attention(q, k, v, is_causal=True)  # as whisper's first pass
    else:
        mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=q.device).tril(causal_from)
        a = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out(a.transpose(1, 2).flatten(start_dim=2))


class CachedDecoder:
    """``whisper.decoding.Inference`` over a ``CrossAttention`` (see the module doc).

    ``logits(tokens, audio_features)``: ``tokens`` ``(n, t)`` are all tokens so far (the first
    call: the initial prompt); only the new ones are run. Returns ``(n, new, n_vocab)`` float32
    logits, as ``TextDecoder.forward`` does. ``audio_features`` is unused (whisper's
    interface): the keys/values, and the dtype, come from ``cross``.
    """

    def __init__(self, model, initial_token_length: int, cross: CrossAttention, max_length: int | None = None):
        self.model = model
        self.initial_token_length = initial_token_length
        # Self-attention cache positions: the decoder's context, or fewer when the caller knows
        # how many tokens it will run (a batch of 32 windows of large-v3 would hold 2.3 GB of
        # fp16 cache for 448 positions).
        self.capacity = min(model.decoder.positional_embedding.shape[0], max_length or 1 << 30)
        self.cross = cross
        self._owns_cross = False  # cross is the caller's until the first keep/drop copies it
        self.self_keys: list[torch.Tensor] = []  # per block (n, n_head, capacity, d_head)
        self.self_values: list[torch.Tensor] = []
        self.length = 0  # positions filled in the self-attention cache

    def logits(self, tokens: "torch.Tensor", audio_features: "torch.Tensor") -> "torch.Tensor":
        import torch

        decoder = self.model.decoder
        new = tokens[:, self.length:]
        n, count = new.shape
        end = self.length + count
        if end > self.capacity:
            raise ValueError(f"{end} tokens exceed this decoder's {self.capacity} cache positions")
        x = decoder.token_embedding(new) + decoder.positional_embedding[self.length:end]
        x = x.to(self.cross.keys[0].dtype)  # the audio features' dtype, as TextDecoder casts
        if not self.self_keys:
            shape = (n, decoder.blocks[0].attn.n_head, self.capacity, x.shape[-1] // decoder.blocks[0].attn.n_head)
            for _ in decoder.blocks:
                self.self_keys.append(torch.empty(shape, dtype=x.dtype, device=x.device))
                self.self_values.append(torch.empty(shape, dtype=x.dtype, device=x.device))
        for b, block in enumerate(decoder.blocks):
            h = block.attn_ln(x)
            self.self_keys[b][:, :, self.length:end] = _heads(block.attn.key(h), block.attn.n_head)
            self.self_values[b][:, :, self.length:end] = _heads(block.attn.value(h), block.attn.n_head)
            x = x + _attend(block.attn, h, self.self_keys[b][:, :, :end], self.self_values[b][:, :, :end],
                            self.length)
            x = x + _attend(block.cross_attn, block.cross_attn_ln(x), self.cross.keys[b], self.cross.values[b], None)
            x = x + block.mlp(block.mlp_ln(x))
        self.length = end
        x = decoder.ln(x)
        return (x @ torch.transpose(decoder.token_embedding.weight.to(x.dtype), 0, 1)).float()

    def keep(self, index: "torch.Tensor") -> None:
        """Keep only the rows ``index`` (1-D long tensor) of every cache, in that order (copies)."""
        self.cross, self._owns_cross = self.cross.select(index), True
        self.self_keys = [self._filled_rows(k, index) for k in self.self_keys]
        self.self_values = [self._filled_rows(v, index) for v in self.self_values]

    def _filled_rows(self, cache: "torch.Tensor", index: "torch.Tensor") -> "torch.Tensor":
        """A new cache buffer holding rows ``index`` of ``cache``; only the filled positions are copied."""
        import torch

        out = torch.empty((len(index), *cache.shape[1:]), dtype=cache.dtype, device=cache.device)
        out[:, :, :self.length] = cache[index, :, :self.length]
        return out

    def drop(self, finished: Sequence[int]) -> list[int]:
        """Remove the rows at positions ``finished`` from the batch. The last live rows move into
        the places they free, so only the moved rows' caches are copied (``keep`` would copy every
        live row). Returns the new batch order: for each new position, its old position."""
        import torch

        n = self.cross.rows
        dead = set(finished)
        live = n - len(dead)
        holes = [p for p in range(live) if p in dead]
        movers = [p for p in range(live, n) if p not in dead]
        order = list(range(live))
        for hole, mover in zip(holes, movers):
            order[hole] = mover
        if not self._owns_cross:  # shared with the caller (reused across calls): copy once
            self.keep(torch.tensor(order, dtype=torch.long, device=self.cross.keys[0].device))
            return order
        if holes:
            dst = torch.tensor(holes, dtype=torch.long, device=self.cross.keys[0].device)
            src = torch.tensor(movers, dtype=torch.long, device=dst.device)
            for t in (*self.cross.keys, *self.cross.values):
                t[dst] = t[src]
            for t in (*self.self_keys, *self.self_values):
                t[dst, :, :self.length] = t[src, :, :self.length]
        self.cross = CrossAttention([k[:live] for k in self.cross.keys], [v[:live] for v in self.cross.values])
        self.self_keys = [k[:live] for k in self.self_keys]
        self.self_values = [v[:live] for v in self.self_values]
        return order

    def rearrange_kv_cache(self, source_indices: Sequence[int]) -> None:
        """Whisper's hook for beam search: row i of every cache becomes row ``source_indices[i]``."""
        import torch

        if list(source_indices) != list(range(len(source_indices))):
            device = self.cross.keys[0].device
            self.keep(torch.tensor(list(source_indices), dtype=torch.long, device=device))

    def cleanup_caching(self) -> None:
        self.self_keys, self.self_values, self.length = [], [], 0


def first_token_logits(model, cross: CrossAttention, sot: int) -> "torch.Tensor":
    """``(n, n_vocab)`` float32 logits after ``<|startoftranscript|>`` for each window: the
    language distribution and the no-speech probability (``whisper.decoding.detect_language``
    reads the same position)."""
    import torch

    tokens = torch.full((cross.rows, 1), sot, dtype=torch.long, device=cross.keys[0].device)
    with torch.no_grad():
        return CachedDecoder(model, 1, cross, max_length=1).logits(tokens, cross.keys[0])[:, 0]


def sampling_seed(samples: np.ndarray, temperature: float) -> int:
    """The generator seed of one window's sampling at ``temperature``: 63 bits of BLAKE2b over
    its audio ``samples`` ``(n,) float32`` and the temperature, the same in every process."""
    digest = hashlib.blake2b(np.ascontiguousarray(samples, np.float32).tobytes(), digest_size=8,
                             person=b"whisper-fallback")
    digest.update(struct.pack("<d", float(temperature)))
    return int.from_bytes(digest.digest(), "little") >> 1


class StepRules:
    """whisper's logit filters of one decoding step (``SuppressBlank``, ``SuppressTokens``,
    ``ApplyTimestampRules``) as batched tensor operations on the logits' device.

    whisper's ``ApplyTimestampRules`` loops over the rows in Python, reading each row's tokens
    with ``.tolist()`` and comparing tensors in ``if``s: on a GPU every row of every step waits
    for the device. Here each rule is a mask over ``(n, n_vocab)`` built from the tokens on the
    device, with no host sync; the masked logits equal whisper's bit for bit (tested on random
    logits and token histories). The token sets are masks built once per device.
    """

    def __init__(self, sample_begin: int, suppress: Sequence[int], blank: Sequence[int] = (),
                 timestamp_begin: int | None = None, eot: int | None = None,
                 max_initial_timestamp_index: int | None = None):
        self.sample_begin = sample_begin
        self.suppress = sorted(set(suppress))  # every step (whisper's SuppressTokens, <|notimestamps|>)
        self.blank = sorted(set(blank))  # first sampled token only (SuppressBlank: " " and <|endoftext|>)
        self.timestamp_begin = timestamp_begin  # None: decoding without timestamps
        self.eot = eot
        self.max_initial_timestamp_index = max_initial_timestamp_index
        self._masks: dict[tuple[str, int], tuple["torch.Tensor", "torch.Tensor"]] = {}

    @classmethod
    def from_filters(cls, filters: Sequence[Any]) -> "StepRules":
        """The rules of a ``whisper.decoding.DecodingTask``'s ``logit_filters`` (the three kinds
        whisper builds; any other filter raises ``TypeError``)."""
        from whisper.decoding import ApplyTimestampRules, SuppressBlank, SuppressTokens

        sample_begin, suppress, blank, timestamps = None, [], [], None
        for f in filters:
            if isinstance(f, SuppressBlank):
                sample_begin, blank = f.sample_begin, f.tokenizer.encode(" ") + [f.tokenizer.eot]
            elif isinstance(f, SuppressTokens):
                suppress += list(f.suppress_tokens)
            elif isinstance(f, ApplyTimestampRules):
                sample_begin, timestamps = f.sample_begin, f
                if f.tokenizer.no_timestamps is not None:
                    suppress.append(f.tokenizer.no_timestamps)
            else:
                raise TypeError(f"StepRules: no batched form of whisper logit filter {type(f).__name__}")
        if timestamps is None:
            return cls(sample_begin or 0, suppress, blank)
        return cls(sample_begin, suppress, blank, timestamps.tokenizer.timestamp_begin, timestamps.tokenizer.eot,
                   timestamps.max_initial_timestamp_index)

    def _token_masks(self, n_vocab: int, device: "torch.device") -> tuple["torch.Tensor", "torch.Tensor"]:
        """``(suppressed, suppressed or blank)``, each ``(n_vocab,) bool`` on ``device``."""
        import torch

        key = (str(device), n_vocab)
        if key not in self._masks:
            suppressed = torch.zeros(n_vocab, dtype=torch.bool)
            suppressed[self.suppress] = True
            first = suppressed.clone()
            first[self.blank] = True
            self._masks[key] = (suppressed.to(device), first.to(device))
        return self._masks[key]

    def apply(self, logits: "torch.Tensor", tokens: "torch.Tensor") -> None:
        """Mask ``logits`` ``(n, n_vocab)`` in place (``-inf``) for the next token after
        ``tokens`` ``(n, t)`` (initial tokens, then the sampled ones), as whisper's filters do."""
        import torch

        inf = float("-inf")
        sampled = tokens.shape[1] - self.sample_begin  # tokens sampled so far (the same in every row)
        suppressed, first = self._token_masks(logits.shape[-1], logits.device)
        logits.masked_fill_(first if sampled == 0 else suppressed, inf)
        tb = self.timestamp_begin
        if tb is None:
            return
        if sampled == 0:  # the first token is a timestamp, at most max_initial_timestamp in
            logits[:, :tb] = inf
            if self.max_initial_timestamp_index is not None:
                logits[:, tb + self.max_initial_timestamp_index + 1:] = inf
        else:
            history = tokens[:, self.sample_begin:]
            is_ts = history >= tb
            last = is_ts[:, -1]
            penultimate = is_ts[:, -2] if sampled >= 2 else torch.ones_like(last)
            # Timestamps come in pairs (except right before <|endoftext|>): after <|a|><|b|> text,
            # after text <|a|> a timestamp or the end.
            closes_pair = last & ~penultimate
            logits[:, :self.eot].masked_fill_(closes_pair[:, None], inf)
            # Timestamps never decrease, and a segment (after text <|a|>) is not empty: the next
            # timestamp is at least the last one (closing a pair) or one past it.
            position = (is_ts * torch.arange(1, sampled + 1, device=tokens.device)).amax(dim=1)  # 0: none
            last_ts = history.gather(1, (position - 1).clamp(min=0)[:, None])[:, 0]
            lowest = torch.where(position > 0, last_ts + (~closes_pair).long(), tb)
            columns = torch.arange(tb, logits.shape[-1], device=logits.device)
            forbidden = (last & penultimate)[:, None] | (columns[None, :] < lowest[:, None])
            logits[:, tb:].masked_fill_(forbidden, inf)
        # A timestamp when all timestamps together are likelier than any single text token.
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        timestamp_wins = logprobs[:, tb:].logsumexp(dim=-1) > logprobs[:, :tb].amax(dim=-1)
        logits[:, :tb].masked_fill_(timestamp_wins[:, None], inf)


def decode_encoded(model, features: "torch.Tensor", options, cross: CrossAttention | None = None,
                   seeds: Sequence[int] | None = None) -> list:
    """``whisper.decode`` of encoded windows ``features`` ``(n, n_audio_ctx, n_audio_state)``:
    same options, same tokens, on a ``CachedDecoder`` over ``cross`` (computed from
    ``features`` when None; pass it to reuse the projections across calls). At a temperature
    above 0, ``seeds`` (one per window, ``sampling_seed``) seed each row's sampling; the global
    torch generator is not used. Returns whisper ``DecodingResult``s in input order.
    """
    cross = cross if cross is not None else CrossAttention.compute(model, features)
    return _compacting_task_type()(model, options, cross, seeds).run(features)  # run is under torch.no_grad


@functools.cache
def _compacting_task_type():
    """``whisper.decoding.DecodingTask`` on a ``CachedDecoder`` whose sampling loop lets finished
    rows leave the batch (``decode_encoded``); defined on first use, so importing this module does
    not import whisper or torch."""
    import torch
    import torch.nn.functional as F
    from whisper.decoding import DecodingTask, GreedyDecoder

    class DeviceGreedy(GreedyDecoder):
        """whisper's ``GreedyDecoder.update`` (same tokens, same log-prob sums) without a host
        sync: ``completed`` comes back as a device tensor, which the loop never reads (it reads
        which rows ended, once per step)."""

        def next_tokens(self, logits: "torch.Tensor") -> "torch.Tensor":
            return logits.argmax(dim=-1)

        def update(self, tokens, logits, sum_logprobs):
            next_tokens = self.next_tokens(logits)
            logprobs = F.log_softmax(logits.float(), dim=-1)
            live = tokens[:, -1] != self.eot  # rows past <|endoftext|> stay there and add nothing
            sum_logprobs += logprobs.gather(1, next_tokens[:, None])[:, 0] * live
            tokens = torch.cat([tokens, torch.where(live, next_tokens, self.eot)[:, None]], dim=-1)
            return tokens, (tokens[:, -1] == self.eot).all()

    class RowSeededSampler(DeviceGreedy):
        """whisper's ``GreedyDecoder`` at a temperature above 0 with one generator per row: row
        ``j`` of a step is input row ``rows[j]`` (the loop keeps ``rows`` as rows leave)."""

        def __init__(self, temperature: float, eot: int, seeds: Sequence[int], device: "torch.device"):
            super().__init__(temperature, eot)
            self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
            self.rows = list(range(len(seeds)))

        def next_tokens(self, logits):
            probs = (logits.float() / self.temperature).softmax(dim=-1)
            return torch.cat([torch.multinomial(probs[j], 1, generator=self.generators[row])
                              for j, row in enumerate(self.rows)])

    class CompactingDecodingTask(DecodingTask):
        def __init__(self, model, options, cross: CrossAttention, seeds: Sequence[int] | None = None):
            super().__init__(model, options)
            # The loop runs at most sample_len steps, each adding one token after the prompt.
            self.inference = CachedDecoder(model, len(self.initial_tokens), cross,
                                           max_length=len(self.initial_tokens) + self.sample_len)
            self.logit_filters = [StepRules.from_filters(self.logit_filters)]
            if options.temperature > 0:
                if self.n_group != 1:
                    raise ValueError("decode_encoded: best_of/beam_size with temperature > 0 is not supported")
                if seeds is None or len(seeds) != cross.rows:
                    raise ValueError(f"decode_encoded: temperature {options.temperature} needs one seed per window "
                                     f"({cross.rows}), got {None if seeds is None else len(seeds)}")
                self.decoder = RowSeededSampler(options.temperature, self.tokenizer.eot, seeds,
                                                cross.keys[0].device)
            elif self.n_group == 1:
                self.decoder = DeviceGreedy(0.0, self.tokenizer.eot)

        def _get_audio_features(self, mel):
            """The windows come encoded, of any length up to ``n_audio_ctx`` frames
            (``whisper.encoder_step_s``); whisper's own check would run the encoder again on
            anything shorter than 1500."""
            return mel.half() if self.options.fp16 else mel

        def _main_loop(self, audio_features, tokens):
            """whisper's loop with finished rows leaving the batch and one host sync per step
            (which rows ended); the logit filters and the token update stay on the device."""
            if self.n_group != 1:  # best-of-n / beams regroup rows: whisper's own loop
                return super()._main_loop(audio_features, tokens)
            n_batch, eot = tokens.shape[0], self.tokenizer.eot
            sum_logprobs = torch.zeros(n_batch, device=audio_features.device)
            no_speech_probs = torch.full((n_batch,), float("nan"))
            rows = list(range(n_batch))  # input row of each live row
            done: dict[int, tuple[Any, Any]] = {}  # input row -> (tokens, sum of log-probs)
            try:
                for i in range(self.sample_len):
                    logits = self.inference.logits(tokens, audio_features)
                    if i == 0 and self.tokenizer.no_speech is not None:
                        probs_at_sot = logits[:, self.sot_index].float().softmax(dim=-1)
                        no_speech_probs = probs_at_sot[:, self.tokenizer.no_speech]
                    logits = logits[:, -1]
                    for logit_filter in self.logit_filters:
                        logit_filter.apply(logits, tokens)
                    tokens, _ = self.decoder.update(tokens, logits, sum_logprobs)
                    ended = (tokens[:, -1] == eot).tolist()  # the step's one host sync
                    if all(ended) or tokens.shape[-1] > self.n_ctx:
                        break
                    if any(ended):
                        finished = [j for j, e in enumerate(ended) if e]
                        for j in finished:
                            done[rows[j]] = (tokens[j], sum_logprobs[j].clone())
                        # audio_features stay as they are: CachedDecoder reads only their dtype.
                        order = self.inference.drop(finished)
                        index = torch.tensor(order, device=tokens.device)
                        rows = [rows[j] for j in order]
                        if isinstance(self.decoder, RowSeededSampler):
                            self.decoder.rows = rows
                        tokens, sum_logprobs = tokens[index], sum_logprobs[index]
            finally:
                self.inference.cleanup_caching()
            for j, row in enumerate(rows):
                done[row] = (tokens[j], sum_logprobs[j])
            # Back in input order, padded with end-of-text as whisper's finalize pads.
            length = max(t.shape[0] for t, _ in done.values())
            out = torch.full((n_batch, length), eot, dtype=tokens.dtype, device=tokens.device)
            sums = torch.zeros(n_batch, device=tokens.device)
            for row, (row_tokens, row_sum) in done.items():
                out[row, : row_tokens.shape[0]] = row_tokens
                sums[row] = row_sum
            return out, sums, no_speech_probs.tolist()

    CompactingDecodingTask.sampler_type = RowSeededSampler
    return CompactingDecodingTask
