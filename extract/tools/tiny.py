"""Deterministic tiny CLIP and Whisper checkpoints for tests and the offline demo.

They load through the libraries' own loaders (``open_clip.create_model_and_transforms``,
``whisper.load_model``), exactly like real weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from extract.config import ClipModelConfig
from extract.models.common import INIT_SEED, write_atomic
from extract.models.preprocess import register_model_config

log = logging.getLogger(__name__)


TINY_CLIP_NAME = "tiny-clip-vit"


# A real open_clip ViT + text transformer, only small: 64 px input, 16 px patches (4x4 grid).
# The vocabulary stays at 49408 because the standard CLIP tokenizer emits those ids; a short
# context (32 tokens) makes truncation common enough to exercise in tests and the demo.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def make_tiny_clip(out_dir: Path, seed: int = INIT_SEED) -> dict[str, Any]:
    """Write the tiny CLIP model config and its seeded random weights into ``out_dir``.

    Files: ``tiny-clip-vit.json`` (open_clip model config; the stem is the model name) and
    ``tiny-clip-vit.pt`` (a plain state dict). The same ``seed`` gives the same bytes.
    Returns the config keys that select it:
    ``{"models": {"clip": {"name", "pretrained", "model_config"}}}`` with absolute paths.
    """
    import open_clip
    import torch

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{TINY_CLIP_NAME}.json"
    checkpoint_path = out_dir / f"{TINY_CLIP_NAME}.pt"
    write_atomic(config_path, (json.dumps(TINY_CLIP_CONFIG, indent=2, sort_keys=True) + "\n").encode())
    register_model_config(ClipModelConfig(name=TINY_CLIP_NAME, pretrained=None, model_config=str(config_path)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None, device="cpu")
    tmp = checkpoint_path.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(checkpoint_path)
    return {"models": {"clip": {"name": TINY_CLIP_NAME, "pretrained": str(checkpoint_path),
                                "model_config": str(config_path)}}}



TINY_WHISPER_FILE = "whisper-tiny-random.pt"


# openai-whisper ModelDimensions of the tiny random test model. The audio context stays at
# 1500 (30 s of 80-bin log-Mel frames, halved by the encoder's stride-2 conv) and the vocabulary
# at 51865 (the multilingual tokenizer's size) so real audio and the real tokenizer work; a
# 64-token text context keeps decoding to 32 tokens per window, which keeps tests fast.
TINY_WHISPER_DIMS: dict[str, int] = {
    "n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
    "n_audio_layer": 2, "n_text_ctx": 64, "n_text_state": 64, "n_text_head": 2, "n_text_layer": 2,
}


def make_tiny_whisper(out_dir: Path) -> str:
    """Write a seeded random Whisper checkpoint (``TINY_WHISPER_DIMS``) into ``out_dir``.

    The file (``whisper-tiny-random.pt``, float16 like the official checkpoints) holds
    ``{"dims": ..., "model_state_dict": ...}`` and loads with ``whisper.load_model(path)``;
    the same call writes the same bytes. Returns its absolute path.
    """
    return make_random_whisper(out_dir, TINY_WHISPER_DIMS, TINY_WHISPER_FILE)


def make_random_whisper(out_dir: Path, dims: dict[str, int], file_name: str) -> str:
    """Write a Whisper checkpoint of ``dims`` (openai-whisper ``ModelDimensions``) with seeded
    random weights as ``out_dir/file_name`` (float16, the official checkpoints' layout; the
    benchmark uses the official sizes' dimensions where no weights can be fetched). Returns
    its absolute path."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = Whisper(ModelDimensions(**dims))
        # TextDecoder creates its positional embedding with torch.empty: give it values.
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    state = {name: tensor.half() for name, tensor in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"dims": dict(dims), "model_state_dict": state}, tmp)
    tmp.replace(path)
    return str(path)


def make_tiny(out_dir: str | Path) -> Path:
    """Write tiny CLIP + Whisper checkpoints and ``tiny.yaml``; returns the YAML path."""
    from extract.tools.tiny import make_tiny_clip, make_tiny_whisper

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = make_tiny_clip(out_dir)
    data.setdefault("models", {})["whisper"] = {"name": str(make_tiny_whisper(out_dir))}
    # Greedy only: a random model fails every fallback check, so the ladder would only time noise,
    # and a window that still fails at the last temperature gets no text (``is_unintelligible``).
    data["whisper"] = {"temperatures": [0.0]}
    path = out_dir / "tiny.yaml"
    header = "# Tiny random models for tests and the offline demo (written by `extract models make-tiny`).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True))
    return path
