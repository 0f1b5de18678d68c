"""The weights files a config names, and the run's model lineage resolved from them.

- Whether a configured local file is whole: ``checkpoint_problem`` (headers only),
  ``local_checkpoint_problem`` (the driver's check of the configured files).
- What the weights are by content: ``weights_digests``, the sha256 of each weights file.
- ``resolve_lineage(config)``: the one object a run takes from here (``ModelLineage``), resolved
  once on the driver before the run: CLIP's embedding width D (the tables' embedding columns),
  the weights digests, the feature hash that counts them (``Config.feature_hash_of``: a video is
  re-processed when the weights' bytes change, not when the same file is staged under another
  name or location) and the local checkpoint check.

Where a weights key resolves:
- ``models.clip.pretrained``: a local checkpoint file; a ``local-dir:`` model folder
  (``models.clip.name``; the digest of its files' names and digests); an ``s3://``/``gs://``
  object (the digest ``extract models stage`` wrote beside it as ``<object>.sha256`` when its
  recorded size matches the object's, else the digest of the driver's cached copy); an open_clip
  tag (the file open_clip would load from ``models.clip.cache_dir``: Hugging Face hub cache or
  the URL's file name), when it is there.
- ``models.clip.model_config``: the JSON file.
- ``models.whisper.name``: an official Whisper name counts by the sha256 in its download URL
  (the worker refuses a file that does not match it); a checkpoint path or object as above.

A key that resolves to no file (no weights; a tag not in the cache) is left out and counts by
its value. The digests and the fetching of object-store checkpoints are ``extract.io.storage``.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from extract.config import Config
from extract.io.storage import digest_of, file_digest, folder_digest, is_remote, local_path
from extract.models.preprocess import clip_embed_dim

WHISPER_NAMES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
                 "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")


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


def names_a_file(pretrained: str) -> bool:
    """Whether a ``models.clip.pretrained`` value is a path: open_clip's tags never hold a path
    separator or a weights file suffix."""
    return os.sep in pretrained or Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors", ".npz")


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
    if pretrained and not is_remote(pretrained) and (Path(local_path(pretrained)).is_file()
                                                     or names_a_file(pretrained)):
        files.append(("models.clip.pretrained", pretrained))
    for key, uri in files:
        path = Path(local_path(uri)).expanduser()
        problem = checkpoint_problem(path)
        if problem:
            return (f"{key}: checkpoint {path} {problem}; copy it again (`extract models stage`) "
                    "or point the key at a complete file")
    return None


def _clip_tag_file(name: str, tag: str, cache_dir: str | None) -> str | None:
    """The local file open_clip loads for tag ``tag`` of ``name`` from ``cache_dir``, or None
    when it is not a tag or its file is not there (nothing is downloaded)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        return None
    if cfg.get("file"):
        return cfg["file"] if Path(cfg["file"]).is_file() else None
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename.rsplit(".", 1)[0] + ".safetensors", filename]
        if filename == "open_clip_pytorch_model.bin":
            candidates.insert(0, "open_clip_model.safetensors")
        for candidate in candidates:
            found = try_to_load_from_cache(repo, candidate, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return found
        return None
    if cfg.get("url"):
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        return str(path) if path.is_file() else None
    return None


def weights_digests(config: Config) -> dict[str, str]:
    """``{dotted key: sha256}`` of the weights files ``config`` resolves to (see module doc)."""
    clip, whisper_cfg, storage = config.models.clip, config.models.whisper, config.storage
    out: dict[str, str] = {}
    if clip.name.startswith("local-dir:") and Path(clip.name[len("local-dir:"):]).is_dir():
        out["models.clip.pretrained"] = folder_digest(clip.name[len("local-dir:"):])
    elif clip.pretrained:
        # a file or an object needs no open_clip (and torch: seconds) to look it up as a tag
        is_path = is_remote(clip.pretrained) or names_a_file(clip.pretrained)
        tag_file = None if is_path else _clip_tag_file(clip.name, clip.pretrained, clip.cache_dir)
        digest = file_digest(tag_file) if tag_file else digest_of(clip.pretrained, storage, clip.cache_dir)
        if digest:
            out["models.clip.pretrained"] = digest
    if clip.model_config:
        digest = digest_of(clip.model_config, storage, clip.cache_dir)
        if digest:
            out["models.clip.model_config"] = digest
    if whisper_cfg.name in WHISPER_NAMES:
        import whisper

        url = getattr(whisper, "_MODELS", {}).get(whisper_cfg.name)
        if url:
            out["models.whisper.name"] = url.split("/")[-2]  # the sha256 whisper checks the file against
    else:
        digest = digest_of(whisper_cfg.name, storage, None)
        if digest:
            out["models.whisper.name"] = digest
    return out


@dataclass(frozen=True)
class ModelLineage:
    """What a run's models are (``resolve_lineage``): computed once, before the run opens its output."""

    embedding_dim: int  # D of CLIP's embeddings: the width of every embedding column
    weights: dict[str, str]  # ``weights_digests``: {dotted key: sha256 hex}
    feature_hash: str  # ``Config.feature_hash_of(weights)``
    checkpoint_problem: str | None  # ``local_checkpoint_problem``; None: every local checkpoint file is whole

    def check_checkpoints(self) -> None:
        """Raise ``ModelLoadError`` naming the key, the path and the fix when a configured local
        checkpoint file is missing or cut short (a run with videos to process checks this before
        its backend starts; a run with none needs no model)."""
        if self.checkpoint_problem:
            from extract.models.common import ModelLoadError

            raise ModelLoadError(self.checkpoint_problem)


def resolve_lineage(config: Config) -> ModelLineage:
    """``config``'s models as a run records them (``ModelLineage``); reads the open_clip config
    and hashes the weights files (cached, see module doc), loads no model."""
    embedding_dim = clip_embed_dim(config.models.clip)
    weights = weights_digests(config)
    return ModelLineage(embedding_dim, weights, config.feature_hash_of(weights), local_checkpoint_problem(config))

