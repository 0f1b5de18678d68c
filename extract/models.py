"""Model files: tiny test checkpoints, staging real weights, and model facts known without loading.

- ``make_tiny(DIR)`` writes deterministic tiny CLIP and Whisper checkpoints plus ``DIR/tiny.yaml``
  (``extract run --config DIR/tiny.yaml``), loaded later through the libraries' own loaders.
- ``stage_models(config, DEST)`` puts real weights in one cluster-visible place once (copying
  from a local file, or downloading when the machine is online) and writes ``DEST/models.yaml``
  pointing ``models.*`` at the staged files, so workers never contact a model hub.
- ``local_checkpoint`` turns a staged ``s3://``/``gs://`` checkpoint into a local file (cached
  per worker) for loaders that need a path.
- ``check_local_checkpoints(config)`` runs in the driver before Ray starts: a configured local
  checkpoint that is missing or cut short (an interrupted copy) fails the run before any video
  is read, in milliseconds, instead of in a model actor after decoding has begun.
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
from typing import Any

import yaml

from extract.config import Config, StorageConfig
from extract.storage import fetch, filesystem_for, is_remote, local_path

WHISPER_NAMES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
                 "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")


def make_tiny(out_dir: str | Path) -> Path:
    """Write tiny CLIP + Whisper checkpoints and ``tiny.yaml``; returns the YAML path."""
    from extract.clip import make_tiny_clip
    from extract.transcribe import make_tiny_whisper

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = make_tiny_clip(out_dir)
    data.setdefault("models", {})["whisper"] = {"name": str(make_tiny_whisper(out_dir))}
    path = out_dir / "tiny.yaml"
    header = "# Tiny random models for tests and the offline demo (written by `extract models make-tiny`).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True))
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def local_checkpoint(uri: str, storage: StorageConfig | None = None, cache_dir: str | None = None) -> str:
    """A local path for a checkpoint: local paths pass; object-store URIs are fetched once into
    ``cache_dir`` (default ``$EXTRACT_MODEL_CACHE`` or the temp folder)."""
    if not is_remote(uri):
        return uri[len("file://"):] if uri.startswith("file://") else uri
    cache = Path(cache_dir or os.environ.get("EXTRACT_MODEL_CACHE") or Path(tempfile.gettempdir()) / "extract-models")
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        path, _, _ = fetch(uri, target.parent / "partial", storage)
        os.replace(path, target)
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


def check_local_checkpoints(config: Config) -> None:
    """Raise ``ModelLoadError`` naming the key, the path and the fix when a configured local
    checkpoint file is missing or cut short (``checkpoint_problem``). Whisper model names, open_clip
    tags and object-store URIs are left to the model actors, which resolve and fetch them."""
    from extract.clip import ModelLoadError

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
            raise ModelLoadError(f"{key}: checkpoint {path} {problem}; copy it again (`extract models stage`) "
                                 "or point the key at a complete file")


def _put(src: str, dest_uri: str, storage: StorageConfig) -> str:
    fs, path = filesystem_for(dest_uri, storage)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with open(src, "rb") as fh, fs.open_output_stream(path) as out:
        shutil.copyfileobj(fh, out, 1 << 20)
    return dest_uri


def stage_models(config: Config, dest: str, clip_from: str | None = None,
                 whisper_from: str | None = None) -> dict[str, Any]:
    """Copy (or download, when online) the configured weights to ``dest``; write ``dest/models.yaml``.

    ``clip_from``/``whisper_from`` name local checkpoint files to copy; without them a CLIP tag
    is downloaded with ``open_clip.download_pretrained`` and a Whisper name with whisper's own
    downloader (both need network access to their hubs). Returns the config overrides.
    """
    from extract.clip import with_trained_activation

    storage = config.storage
    # A tag trained with QuickGELU is staged under its -quickgelu architecture: the staged file can't say so.
    clip, whisper_cfg = with_trained_activation(config.models.clip), config.models.whisper
    with tempfile.TemporaryDirectory() as tmp:
        if clip_from is None and clip.pretrained and not Path(clip.pretrained).is_file():
            import open_clip

            tag_cfg = open_clip.get_pretrained_cfg(clip.name, clip.pretrained)
            if not tag_cfg:
                raise ValueError(f"models.clip.pretrained: {clip.pretrained!r} is neither a file nor an "
                                 f"open_clip tag of {clip.name}; pass --clip-from PATH")
            clip_from = open_clip.download_pretrained(tag_cfg, cache_dir=tmp)
        elif clip_from is None:
            clip_from = clip.pretrained
        if whisper_from is None and whisper_cfg.name in WHISPER_NAMES:
            import whisper

            whisper_from = whisper._download(whisper._MODELS[whisper_cfg.name], tmp, False)
        elif whisper_from is None:
            whisper_from = whisper_cfg.name
        overrides: dict[str, Any] = {"models": {"clip": {"name": clip.name}, "whisper": {}}}
        if clip_from:
            name = f"clip-{clip.name}-{Path(clip_from).name}"
            overrides["models"]["clip"]["pretrained"] = _put(clip_from, f"{dest.rstrip('/')}/{name}", storage)
        if clip.model_config:
            overrides["models"]["clip"]["model_config"] = _put(
                clip.model_config, f"{dest.rstrip('/')}/{Path(clip.model_config).name}", storage)
        overrides["models"]["whisper"]["name"] = _put(
            whisper_from, f"{dest.rstrip('/')}/whisper-{Path(whisper_from).name}", storage)
    fs, path = filesystem_for(f"{dest.rstrip('/')}/models.yaml", storage)
    with fs.open_output_stream(path) as out:
        out.write(yaml.safe_dump(overrides, sort_keys=True).encode())
    return overrides
