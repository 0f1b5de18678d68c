"""The weights files a config names, and the run's model lineage resolved from them.

- Where a worker reads a checkpoint: ``local_checkpoint`` (an object-store checkpoint is fetched
  once into one local cache; local paths pass).
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
its value. Hashing a multi-GB file takes seconds, so digests are cached in
``$EXTRACT_DIGEST_CACHE`` (default ``$XDG_CACHE_HOME/extract/digests``, else
``~/.cache/extract/digests``), one small JSON per file keyed by (resolved path, size, mtime_ns):
a file rewritten in place gets a new mtime and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from extract.config import Config, StorageConfig
from extract.io.storage import fetch, filesystem_for, is_remote, local_path
from extract.models.preprocess import clip_embed_dim

WHISPER_NAMES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
                 "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo")
SIDECAR_SUFFIX = ".sha256"  # beside a staged object: {"sha256": ..., "size": bytes}


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


def digest_cache_dir() -> Path:
    """Where file digests are cached (see module doc)."""
    if os.environ.get("EXTRACT_DIGEST_CACHE"):
        return Path(os.environ["EXTRACT_DIGEST_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "extract" / "digests"


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of the file at ``path``, from the cache when its (path, size, mtime_ns) is
    unchanged; a cache that cannot be written only costs the next run a rehash."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    key = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = digest_cache_dir() / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(resolved)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**key, "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        pass
    return digest


def folder_digest(folder: str | Path) -> str:
    """sha256 over the relative names and digests of every file under ``folder``."""
    folder = Path(folder)
    lines = [f"{p.relative_to(folder).as_posix()}\0{file_digest(p)}\n"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def remote_digest(uri: str, storage: StorageConfig | None = None, cache_dir: str | None = None) -> str:
    """sha256 of the object ``uri``: its stage-time sidecar when the sizes agree, else the digest
    of the local copy (fetched once, ``local_checkpoint``)."""
    fs, path = filesystem_for(uri, storage)
    size = fs.get_file_info(path).size
    try:
        with fs.open_input_stream(path + SIDECAR_SUFFIX) as fh:
            recorded = json.loads(fh.read())
        if recorded.get("size") == size and isinstance(recorded.get("sha256"), str):
            return recorded["sha256"]
    except (OSError, ValueError):
        pass
    return file_digest(local_checkpoint(uri, storage, cache_dir))


def write_sidecar(dest_uri: str, digest: str, size: int, storage: StorageConfig | None = None) -> None:
    """Record a staged file's digest and size beside it (``remote_digest`` reads it)."""
    fs, path = filesystem_for(dest_uri + SIDECAR_SUFFIX, storage)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps({"sha256": digest, "size": size}).encode())


def _file_or_object(value: str, storage: StorageConfig | None, cache_dir: str | None) -> str | None:
    """The digest of a local file or an object-store URI; None when ``value`` is neither a file
    nor an object (a name)."""
    if is_remote(value):
        return remote_digest(value, storage, cache_dir)
    path = Path(local_path(value)).expanduser()
    return file_digest(path) if path.is_file() else None


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
        digest = file_digest(tag_file) if tag_file else _file_or_object(clip.pretrained, storage, clip.cache_dir)
        if digest:
            out["models.clip.pretrained"] = digest
    if clip.model_config:
        digest = _file_or_object(clip.model_config, storage, clip.cache_dir)
        if digest:
            out["models.clip.model_config"] = digest
    if whisper_cfg.name in WHISPER_NAMES:
        import whisper

        url = getattr(whisper, "_MODELS", {}).get(whisper_cfg.name)
        if url:
            out["models.whisper.name"] = url.split("/")[-2]  # the sha256 whisper checks the file against
    else:
        digest = _file_or_object(whisper_cfg.name, storage, None)
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

