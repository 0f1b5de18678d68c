"""Checkpoint files: one local cache for object-store checkpoints, and the driver's check that a
configured local file is whole (``local_checkpoint_problem``, raised by
``extract.models.weights.ModelLineage.check_checkpoints``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

from extract.config import Config, StorageConfig
from extract.io.storage import fetch, is_remote, local_path

WHISPER_NAMES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
                 "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def local_checkpoint(uri: str, storage: StorageConfig | None = None, cache_dir: str | None = None) -> str:
    """A local path for a checkpoint: local paths pass; object-store URIs are fetched once into
    ``cache_dir`` (default ``$EXTRACT_MODEL_CACHE`` or the temp folder), keeping the file name
    (open_clip picks its loader from the suffix). Each fetch downloads into its own folder and
    renames the finished file into place, so actors sharing a node never read a half-written copy.
    Raises ``VideoError`` / ``OSError`` when the copy fails."""
    if not is_remote(uri):
        return uri[len("file://"):] if uri.startswith("file://") else uri
    cache = Path(cache_dir or os.environ.get("EXTRACT_MODEL_CACHE") or Path(tempfile.gettempdir()) / "extract-models")
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=target.parent))
        try:
            path, _, _ = fetch(uri, work, storage)
            os.replace(path, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return str(target)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint file at ``path`` cannot be whole, or None when nothing is seen wrong.

    Reads headers and directories only (milliseconds at any size): a zip checkpoint
    (``torch.save``'s format, also ``.npz``) must have its central directory (written last, so
    a cut file has none) with every member inside the file; a ``.safetensors`` file must be as
    long as its header says. Other formats (legacy pickles) are only checked for being non-empty.
    """
    path = Path(path)
    if not path.is_file():
        return "does not exist" if not path.exists() else "is not a file"
    size = path.stat().st_size
    if size == 0:
        return "is empty"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if path.suffix == ".safetensors":
            return _safetensors_problem(fh, head, size)
    if head[:4] != b"PK\x03\x04":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"is cut short or damaged: its zip directory, written last, cannot be read ({size} bytes; {exc})"
    outside = [m.filename for m in members if m.header_offset + m.compress_size > size]
    return f"is cut short ({size} bytes; {outside[0]} ends past the end)" if outside else None


def _safetensors_problem(fh, head: bytes, size: int) -> str | None:
    """``checkpoint_problem`` for a safetensors file: 8-byte header length, JSON header, data."""
    if len(head) < 8:
        return f"is cut short ({size} bytes)"
    (header_len,) = struct.unpack("<Q", head)
    if header_len > size - 8:
        return f"is cut short ({size} bytes; the header alone is {header_len})"
    try:
        header = json.loads(fh.read(header_len))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"has a damaged header ({exc})"
    expected = 8 + header_len + end
    return None if expected == size else f"is {size} bytes, its header says {expected}"


def local_checkpoint_problem(config: Config) -> str | None:
    """What is wrong with a configured local checkpoint file (missing or cut short,
    ``checkpoint_problem``): one line naming the key, the path and the fix; None when nothing is
    seen wrong. Whisper model names, open_clip tags and object-store URIs are left to the model
    actors, which resolve and fetch them."""
    clip, whisper_cfg = config.models.clip, config.models.whisper
    files = []
    if whisper_cfg.name not in WHISPER_NAMES and not is_remote(whisper_cfg.name):
        files.append(("models.whisper.name", whisper_cfg.name))
    pretrained = clip.pretrained
    # A tag never holds a path separator or a file suffix; anything that does is meant as a file.
    if pretrained and not is_remote(pretrained) and (
            Path(local_path(pretrained)).is_file() or os.sep in pretrained
            or Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors", ".npz")):
        files.append(("models.clip.pretrained", pretrained))
    for key, uri in files:
        path = Path(local_path(uri)).expanduser()
        problem = checkpoint_problem(path)
        if problem:
            return (f"{key}: checkpoint {path} {problem}; copy it again (`extract models stage`) "
                    "or point the key at a complete file")
    return None
