"""What every model loader shares: the load error, device choice, weight hashes and lineage,
and how a model batch reacts to the device failing (``run_in_batches``).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from extract.rows import DeviceLostError

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


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` is the device (or the host, for CPU tensors) running out of memory."""
    import torch

    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


# Messages of CUDA failures after which the process's CUDA context is unusable: every later
# kernel launch fails with the same error, so only a new process recovers.
_DEVICE_LOST_MARKERS = ("CUDA error", "CUBLAS_STATUS_EXECUTION_FAILED", "CUDNN_STATUS_EXECUTION_FAILED",
                        "CUDNN_STATUS_INTERNAL_ERROR", "device-side assert", "illegal memory access",
                        "unspecified launch failure")


def is_device_lost(exc: BaseException) -> bool:
    """True when ``exc`` is a CUDA error that poisons the process's context (an illegal
    address, a device-side assert, a launch failure), not an out-of-memory error."""
    if isinstance(exc, DeviceLostError):
        return True
    import torch

    if is_out_of_memory(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", ())  # torch >= 2.8 raises CUDA errors as this
    return isinstance(exc, accelerator_error) or (
        isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _DEVICE_LOST_MARKERS))


def run_in_batches(total: int, batch_size: int, run: Callable[[int, int], None], what: str, device: str) -> int:
    """Call ``run(start, end)`` on consecutive batches ``[start, end)`` of ``range(total)``, at
    most ``batch_size`` items each. When a batch runs out of memory the batch size halves
    (down to 1; a batch of one that runs out raises), the log says so, and the work goes on
    from that batch (``run`` must be safe to call again on it). A CUDA error that poisons the
    context raises ``DeviceLostError``: only a new worker process can continue. ``what`` names
    the items in the log (``"CLIP frames"``). Returns the batch size that worked
    last, for the caller's next call.
    """
    import torch

    size = max(1, int(batch_size))
    done = 0
    while done < total:
        end = min(done + size, total)
        try:
            run(done, end)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if is_device_lost(exc):
                raise DeviceLostError(f"{what} failed on {device} with an error that leaves the CUDA context "
                                      f"unusable ({type(exc).__name__}: {exc})") from exc
            if not is_out_of_memory(exc) or size == 1:
                raise
            size = max(1, size // 2)
            if device == "cuda":
                torch.cuda.empty_cache()
            log.warning("%s: a batch of %d ran out of memory; retrying with batches of %d", what, end - done, size)
            continue
        done = end
    return size
