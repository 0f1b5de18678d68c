"""What every model loader shares: the load error, device choice, weight hashes and lineage.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


INIT_SEED = 0  # torch seed for random initialisation, so every actor builds the same random model


LINEAGE_HASH_CHARS = 12  # hex characters of the weights' sha256 kept in the lineage string


class ModelLoadError(RuntimeError):
    """The configured CLIP model cannot be loaded; the message names the key, path and fix."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; ``cuda`` without CUDA raises."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("runtime.device: 'cuda' was requested but CUDA is not available; "
                             "use 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ModelLoadError(f"runtime.device: {device!r} is not one of auto, cpu, cuda")
    return device


# Exceptions torch.load / open_clip / Whisper.load_state_dict raise for unreadable or mismatched checkpoints.
CHECKPOINT_ERRORS = (RuntimeError, OSError, ValueError, TypeError, EOFError, KeyError,
                     pickle.UnpicklingError, zipfile.BadZipFile)


def lineage(source: str, state_dict: Mapping[str, Any]) -> str:
    """``"<source>|sha256:<12 hex>"``: where weights came from and a hash of their contents."""
    return f"{source}|sha256:{weights_sha256(state_dict)[:LINEAGE_HASH_CHARS]}"


def weights_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 (hex) over a state dict's names, dtypes, shapes and raw bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
