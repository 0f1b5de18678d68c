"""CLIP model: embed sampled frames and short texts with one open_clip model (``ClipEmbedder``).

Frames arrive from decoding as ``(n, S, S, 3) uint8`` already scaled and cropped to the model's
input size ``S`` (``preprocess.preprocess_spec``). ``ClipEmbedder.embed_frames`` packs the
frames of many videos into batches of up to ``runtime.clip_batch_size`` (one video may span two
batches), moves them to the device as uint8 (through reused pinned buffers on CUDA, so the CPU
fills batch k+1 while the GPU encodes batch k), converts and normalises them there exactly as
torchvision's ``ToTensor`` + ``Normalize`` do, and encodes under ``torch.inference_mode`` with
fp16 autocast on CUDA (fp32 on CPU). Embeddings are L2-normalised float32.

``encode_texts`` uses the same model's text tower and tokenizer, and reports which texts were
cut at the context length.

Per-video features (``temporal_features``, written by ``extract.stages.clip``) (see ``temporal_features``):

- ``clip_embedding``: mean of the unit frame embeddings, re-normalised, ``(D,) float32``
  (``(0,)`` when a video has no frames).
- ``frame_cos_mean`` / ``frame_cos_min``: mean / minimum cosine of consecutive frame
  embeddings; 1 for a static video, low values mark cuts. None with fewer than two frames.
- ``thumbnail_similarity``: cosine of the first frame (the usual thumbnail) to
  ``clip_embedding``; how representative the opening frame is. None without frames.

"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from extract.config import ClipModelConfig, StorageConfig
from extract.io.storage import local_checkpoint
from extract.models.common import (CHECKPOINT_ERRORS, INIT_SEED, ModelLoadError, lineage, resolve_device,
                                   run_in_batches)
from extract.models.preprocess import PreprocessSpec, preprocess_spec, register_model_config
from extract.rows import VideoError
from extract.io.storage import is_remote, local_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


TEXT_BATCH_SIZE = 256  # texts per text-tower forward pass


class ClipEmbedder:
    """One open_clip model on one device: image and text embeddings, L2-normalised float32.

    Attributes: ``device`` (``cpu``/``cuda``), ``spec`` (``PreprocessSpec``; frames must be
    ``spec.image_size`` square), ``embed_dim`` (D), ``context_length`` (text tokens),
    ``lineage`` (``"<arch>|<tag, path or random-init>|sha256:<12 hex of the weights>"``),
    ``model``, ``tokenizer``, ``preprocess_val`` (open_clip's PIL reference transform).

    ``clip_cfg.pretrained``: an open_clip tag (weights looked up in ``clip_cfg.cache_dir``),
    a local checkpoint path, an object-store URI (copied once into ``cache_dir`` or the temp
    folder), or None for a random initialisation seeded with ``INIT_SEED``. A ``local-dir:``
    name carries its own weights. Any load failure raises ``ModelLoadError`` naming the source.
    """

    def __init__(self, clip_cfg: ClipModelConfig, device: str = "auto",
                 storage: StorageConfig | None = None):
        import torch

        clip_cfg = with_trained_activation(clip_cfg)
        self.clip_cfg = clip_cfg
        self.device = resolve_device(device)
        try:
            self.spec: PreprocessSpec = preprocess_spec(clip_cfg)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from exc
        source, checkpoint = _resolve_weights(clip_cfg, storage)
        model, preprocess_val = _create_model(clip_cfg, checkpoint, source)
        self.lineage = lineage(f"{clip_cfg.name}|{source}", model.state_dict())
        _check_spec(self.spec, model, clip_cfg)
        self.model = model.to(self.device).eval()
        self.preprocess_val = preprocess_val
        self.tokenizer = _load_tokenizer(clip_cfg)
        self.context_length = int(self.tokenizer.context_length)
        self._trim_text = _text_tower_is_causal(model, self.tokenizer)
        self._mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._stager = _FrameStager(self.device, (self.spec.image_size, self.spec.image_size, 3))
        # One forward pass now: a model that cannot run on this device fails before any video.
        size = self.spec.image_size
        probe = self._encode_images(torch.zeros((1, size, size, 3), dtype=torch.uint8, device=self.device))
        self.embed_dim = int(probe.shape[1])
        log.info("CLIP %s loaded on %s (D=%d, input %d px)", self.lineage, self.device, self.embed_dim, size)

    # ---- images ---------------------------------------------------------------------------

    def check_frames(self, frames: Any) -> np.ndarray:
        """``frames`` as ``(n, S, S, 3) uint8``; raise ``VideoError('InvalidInput')`` otherwise.

        An empty array of any shape means a video without frames: ``(0, S, S, 3)``.
        """
        size = self.spec.image_size
        if not isinstance(frames, np.ndarray):
            raise VideoError("InvalidInput", f"frames: expected a numpy array, got {type(frames).__name__}")
        if frames.size == 0:
            return np.zeros((0, size, size, 3), np.uint8)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
            raise VideoError("InvalidInput", f"frames: expected (n, {size}, {size}, 3) uint8 for "
                             f"{self.clip_cfg.name}, got {frames.shape} {frames.dtype}")
        return frames

    def embed_frames(self, frames_list: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
        """Embed the frames of several videos: ``[(n_i, S, S, 3) uint8]`` -> ``[(n_i, D) float32]``.

        Frames are packed across videos into batches of at most ``batch_size``; rows are unit
        length. A frame equal to the one before it (a still image, a slideshow, a frozen screen:
        several sampling times served by one decoded frame) is embedded once and its row copied.
        When a batch runs out of memory the batch size halves (down to 1) and the embedding
        continues from that batch; a CUDA error that poisons the context raises
        ``DeviceLostError`` (``extract.models.common.run_in_batches``). Raises ``VideoError``
        for a malformed array.
        """
        checked = []
        for i, frames in enumerate(frames_list):
            try:
                checked.append(self.check_frames(frames))
            except VideoError as exc:
                raise VideoError(exc.error_type, f"video {i} of {len(frames_list)}: {exc}") from exc
        distinct = [_repeats_dropped(frames) for frames in checked]
        embedded = self._embed_packed([frames for frames, _ in distinct], batch_size)
        return [rows[index] for rows, (_, index) in zip(embedded, distinct)]

    def _embed_packed(self, frames_list: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
        """``embed_frames`` without the checks and the repeats: every frame goes to the model."""
        import torch

        counts = [len(f) for f in frames_list]
        total = sum(counts)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        embedded: list[torch.Tensor] = []

        def embed(begin: int, end: int) -> None:
            batch = self._stager.to_device(_slice_packed(frames_list, starts, begin, end))
            embedded.append(self._encode_images(batch))

        with torch.inference_mode():
            run_in_batches(total, batch_size, embed, "CLIP frames", self.device)
            if embedded:
                flat = torch.cat(embedded).cpu().numpy()
            else:
                flat = np.zeros((0, self.embed_dim), np.float32)
        return [flat[starts[i]:starts[i + 1]] for i in range(len(frames_list))]

    def _encode_images(self, frames: "torch.Tensor") -> "torch.Tensor":
        """``(b, S, S, 3) uint8`` on the device -> ``(b, D) float32`` unit rows on the device."""
        import torch
        import torch.nn.functional as F

        # Same ops as torchvision ToTensor + Normalize, so inputs match preprocess_val bit for bit.
        x = frames.permute(0, 3, 1, 2).float().div_(255).sub_(self._mean).div_(self._std)
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(x)
        return F.normalize(features.float(), dim=-1)

    def _autocast(self):
        import torch

        if self.device == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # ---- texts ----------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embed texts with the model's tokenizer and text tower.

        Returns ``(embeddings (k, D) float32 unit rows, truncated (k,) bool)``; ``truncated[i]``
        is True when text ``i`` had more tokens (with start/end tokens) than
        ``context_length`` and was cut by the tokenizer.
        """
        import torch
        import torch.nn.functional as F

        texts = list(texts)
        truncated = np.array([self._token_count(t) > self.context_length for t in texts], dtype=bool)
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        if not texts:
            return out, truncated
        with torch.inference_mode():
            tokens = torch.cat([self.tokenizer(texts[i:i + TEXT_BATCH_SIZE])
                                for i in range(0, len(texts), TEXT_BATCH_SIZE)])
            # Texts of similar length share a forward pass, cut after their longest end token
            # (``_encode_tokens``): a caption or a hashtag prompt costs its ~10 tokens, not 77.
            ends = tokens.argmax(dim=-1) if self._trim_text else torch.full((len(texts),), tokens.shape[1] - 1)
            order = torch.argsort(ends)
            for bucket in _length_buckets(ends[order].tolist(), TEXT_BATCH_SIZE):
                index = order[bucket]
                with self._autocast():
                    features = self._encode_tokens(tokens[index].to(self.device))
                out[index.numpy()] = F.normalize(features.float(), dim=-1).cpu().numpy()
        return out, truncated

    def _encode_tokens(self, tokens: "torch.Tensor") -> "torch.Tensor":
        """``model.encode_text`` of ``(k, context_length)`` tokens, on the tokens up to the
        batch's last end token when the text tower allows it (``_trim_text``: open_clip's
        ``CLIP`` with a causal mask, pooled at the end token, which is the largest id): no
        position attends to a later one, so the padding after the end token changes nothing
        (tested against ``encode_text``)."""
        import torch
        from open_clip.transformer import text_global_pool

        model = self.model
        if not self._trim_text:
            return model.encode_text(tokens)

        length = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        projection = model.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection

    def _token_count(self, text: str) -> int:
        """Tokens ``text`` needs including start/end tokens, before any truncation."""
        from open_clip.tokenizer import SimpleTokenizer

        if isinstance(self.tokenizer, SimpleTokenizer):
            return len(self.tokenizer.encode(text)) + 2
        # HFTokenizer / SigLipTokenizer wrap a Hugging Face tokenizer that adds its own specials.
        return len(self.tokenizer.tokenizer(text)["input_ids"])


def _text_tower_is_causal(model, tokenizer) -> bool:
    """Whether ``ClipEmbedder._encode_tokens`` may cut the padding: open_clip's ``CLIP`` text
    tower with a causal attention mask, pooled at the end token (``argmax``: the end token has
    the largest id of open_clip's ``SimpleTokenizer``, whose padding is 0)."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    import torch

    mask = getattr(model, "attn_mask", None)
    if not (type(model) is open_clip.model.CLIP and getattr(model, "text_pool_type", None) == "argmax"
            and isinstance(tokenizer, SimpleTokenizer) and isinstance(mask, torch.Tensor) and mask.ndim == 2):
        return False
    above = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isinf(mask[above]).all()) and not bool(mask[~above].any())


def _length_buckets(ends: list[int], max_batch: int) -> list[slice]:
    """Slices of texts sorted by end-token position ``ends`` that share one forward pass: a
    new pass starts where the length would more than double (bounded padding) or at
    ``max_batch`` texts."""
    buckets, start = [], 0
    for i in range(1, len(ends) + 1):
        if i == len(ends) or i - start >= max_batch or ends[i] + 1 > 2 * (ends[start] + 1):
            buckets.append(slice(start, i))
            start = i
    return buckets


def _repeats_dropped(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct, index)``: ``frames`` ``(n, S, S, 3)`` without each frame equal to the one
    before it, and for every original frame the row of ``distinct`` that holds it."""
    repeat = np.zeros(len(frames), bool)
    for k in range(1, len(frames)):
        repeat[k] = np.array_equal(frames[k], frames[k - 1])
    if not repeat.any():  # the usual case: no copy of the frames
        return frames, np.arange(len(frames))
    return frames[~repeat], np.cumsum(~repeat) - 1


def _slice_packed(frames_list: Sequence[np.ndarray], starts: np.ndarray, begin: int, end: int) -> list[np.ndarray]:
    """Pieces of the videos' frames covering packed positions ``[begin, end)``, in order."""
    pieces = []
    first = int(np.searchsorted(starts, begin, side="right")) - 1
    for i in range(first, len(frames_list)):
        lo, hi = max(begin, starts[i]), min(end, starts[i + 1])
        if lo >= end:
            break
        if hi > lo:
            pieces.append(frames_list[i][lo - starts[i]:hi - starts[i]])
    return pieces


class _FrameStager:
    """Copies packed uint8 frame pieces into one device tensor ``(b, S, S, 3) uint8``.

    On CUDA the host side is two pinned buffers used in turn: the copy to the device is
    asynchronous, and a buffer is refilled only after its previous copy has finished.
    On CPU the pieces are concatenated into a fresh array (inputs may be read-only views).
    """

    def __init__(self, device: str, frame_shape: tuple[int, int, int]):
        self.device = device
        self.frame_shape = frame_shape
        self._buffers: list = []  # pinned uint8 host tensors
        self._events: list = []  # CUDA event of each buffer's last copy, or None
        self._turn = 0

    def to_device(self, pieces: list[np.ndarray]) -> "torch.Tensor":
        import torch

        n = sum(len(p) for p in pieces)
        if self.device != "cuda":
            return torch.from_numpy(np.concatenate(pieces))
        if not self._buffers or self._buffers[0].shape[0] < n:
            self._buffers = [torch.empty((n, *self.frame_shape), dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._events = [None, None]
        slot = self._turn
        self._turn = 1 - self._turn
        if self._events[slot] is not None:
            self._events[slot].synchronize()
        host = self._buffers[slot][:n]
        np.concatenate(pieces, out=host.numpy())
        on_device = host.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._events[slot] = event
        return on_device


def with_trained_activation(clip_cfg: ClipModelConfig) -> ClipModelConfig:
    """``clip_cfg`` naming the architecture its tagged weights were trained with.

    Some open_clip tags were trained with QuickGELU (``openai``, ``laion400m_*``,
    ``metaclip_*``); on a plain name (``ViT-B-32``) open_clip only warns and builds GELU, which
    gives subtly wrong embeddings. Such a pair becomes ``ViT-B-32-quickgelu`` (open_clip has a
    ``-quickgelu`` variant of every such architecture). A checkpoint *file* cannot say how it
    was trained: name the ``-quickgelu`` architecture yourself for those weights
    (``extract models stage`` does it when it stages a tag).
    """
    import dataclasses

    import open_clip

    name, tag = clip_cfg.name, clip_cfg.pretrained
    if not tag or name.endswith("-quickgelu"):
        return clip_cfg
    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    if tag_cfg and tag_cfg.get("quick_gelu") and f"{name}-quickgelu" in open_clip.list_models():
        log.info("models.clip: %s weights %r were trained with QuickGELU; using %s-quickgelu", name, tag, name)
        return dataclasses.replace(clip_cfg, name=f"{name}-quickgelu")
    return clip_cfg


def _resolve_weights(clip_cfg: ClipModelConfig, storage: StorageConfig | None) -> tuple[str, str | None]:
    """``(source for lineage, what to pass open_clip as pretrained)``; checks paths exist."""
    import open_clip


    name, pretrained = clip_cfg.name, clip_cfg.pretrained
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:"):])
        if not folder.is_dir():
            raise ModelLoadError(f"models.clip.name: model folder {folder} does not exist")
        return str(folder.resolve()), None
    if not pretrained:
        return "random-init", None
    if open_clip.get_pretrained_cfg(name, pretrained):
        return pretrained, pretrained
    if is_remote(pretrained):
        try:
            return pretrained, local_checkpoint(pretrained, storage, clip_cfg.cache_dir)
        except (VideoError, OSError) as exc:
            raise ModelLoadError(f"models.clip.pretrained: cannot copy checkpoint {pretrained}: {exc}") from exc
    path = Path(local_path(pretrained)).resolve()
    if not path.is_file():
        raise ModelLoadError(
            f"models.clip.pretrained: checkpoint {path} does not exist and {pretrained!r} is not an "
            f"open_clip tag of {name} (tags: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'})"
        )
    return str(path), str(path)



def _create_model(clip_cfg: ClipModelConfig, checkpoint: str | None, source: str):
    """``(model on CPU in eval mode, preprocess_val)``, random parts seeded with ``INIT_SEED``."""
    import open_clip
    import torch

    register_model_config(clip_cfg)  # a models.clip.model_config architecture, for open_clip's loaders
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            model, _, preprocess_val = open_clip.create_model_and_transforms(
                clip_cfg.name, pretrained=checkpoint, device="cpu", cache_dir=clip_cfg.cache_dir)
    except CHECKPOINT_ERRORS as exc:
        what = f"checkpoint {source}" if checkpoint or clip_cfg.name.startswith("local-dir:") else "architecture"
        raise ModelLoadError(
            f"models.clip: cannot load {clip_cfg.name} {what}: {type(exc).__name__}: {exc}. "
            "Check that the file is a complete open_clip checkpoint of this architecture "
            "(`extract models stage` copies tagged weights; `extract models make-tiny` writes test ones)"
        ) from exc
    return model.eval(), preprocess_val


def _check_spec(spec: PreprocessSpec, model, clip_cfg: ClipModelConfig) -> None:
    """Decoders size frames from ``spec``; it must be what open_clip attached to the model."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size")
    size = size[0] if isinstance(size, (list, tuple)) else size
    actual = (int(size), cfg.get("interpolation"), cfg.get("resize_mode"),
              tuple(map(float, cfg.get("mean"))), tuple(map(float, cfg.get("std"))))
    expected = (spec.image_size, spec.interpolation, spec.resize_mode,
                tuple(map(float, spec.mean)), tuple(map(float, spec.std)))
    if actual != expected:
        raise ModelLoadError(f"models.clip: preprocessing of {clip_cfg.name} is {actual} but "
                             f"preprocess_spec gave {expected}; frames would be sized wrongly")


def _load_tokenizer(clip_cfg: ClipModelConfig):
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = open_clip.get_tokenizer(clip_cfg.name, cache_dir=clip_cfg.cache_dir)
    if not isinstance(tokenizer, SimpleTokenizer) and not hasattr(tokenizer, "tokenizer"):
        raise ModelLoadError(f"models.clip.name: tokenizer {type(tokenizer).__name__} of {clip_cfg.name} "
                             "is not supported (cannot count tokens for the truncation flag)")
    return tokenizer


def temporal_features(frame_embeddings: np.ndarray) -> dict[str, Any]:
    """Per-video features from unit frame embeddings ``(n, D) float32`` (see module doc).

    Returns ``clip_embedding`` ``(D,) float32`` (``(0,)`` when n == 0), ``frame_cos_mean``,
    ``frame_cos_min`` (None when n < 2) and ``thumbnail_similarity`` (None when n == 0).
    """
    emb = np.asarray(frame_embeddings, dtype=np.float32)
    if len(emb) == 0:
        return {"clip_embedding": np.zeros((0,), np.float32), "frame_cos_mean": None,
                "frame_cos_min": None, "thumbnail_similarity": None}
    pooled = emb.mean(axis=0)
    norm = float(np.linalg.norm(pooled))
    pooled = (pooled / norm if norm > 0 else pooled).astype(np.float32)
    consecutive = np.einsum("ij,ij->i", emb[1:], emb[:-1])
    return {
        "clip_embedding": pooled,
        "frame_cos_mean": float(consecutive.mean()) if len(consecutive) else None,
        "frame_cos_min": float(consecutive.min()) if len(consecutive) else None,
        "thumbnail_similarity": float(emb[0] @ pooled),
    }
