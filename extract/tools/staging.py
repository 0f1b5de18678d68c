"""``extract models stage``: put real weights where workers read them, so no worker downloads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from extract.config import Config, StorageConfig
from extract.models.weights import WHISPER_NAMES
from extract.models.common import CHECKPOINT_ERRORS
from extract.io.storage import file_digest, write_sidecar
from extract.io.storage import filesystem_for, is_remote

log = logging.getLogger(__name__)


def _put(src: str, dest_uri: str, storage: StorageConfig) -> str:
    """Copy ``src`` to ``dest_uri``; an object-store copy gets its sha256 recorded beside it
    (``<object>.sha256``), so runs count its content without fetching it."""
    fs, path = filesystem_for(dest_uri, storage)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with open(src, "rb") as fh, fs.open_output_stream(path) as out:
        shutil.copyfileobj(fh, out, 1 << 20)
    if is_remote(dest_uri):
        write_sidecar(dest_uri, file_digest(src), Path(src).stat().st_size, storage)
    return dest_uri


def stage_models(config: Config, dest: str, clip_from: str | None = None,
                 whisper_from: str | None = None) -> dict[str, Any]:
    """Copy (or download, when online) the configured weights to ``dest``; write ``dest/models.yaml``.

    ``clip_from``/``whisper_from`` name local checkpoint files to copy; without them a CLIP tag
    is downloaded with ``open_clip.download_pretrained`` and a Whisper name with whisper's own
    downloader (both need network access to their hubs). Returns the config overrides.
    """
    from extract.models.clip import with_trained_activation

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
        if config.whisper.engine != "torch" and Path(whisper_from).is_file():
            from extract.models.whisper_ct2 import ct2_available, convert_file

            if ct2_available():  # the CPU engine's int8 copy, cached on this machine by the checkpoint's sha256
                try:
                    convert_file(whisper_from)
                except CHECKPOINT_ERRORS as exc:  # a worker that loads it reports the error with the key
                    log.warning("Whisper checkpoint %s not converted for ctranslate2: %s: %s", whisper_from,
                                type(exc).__name__, exc)
    fs, path = filesystem_for(f"{dest.rstrip('/')}/models.yaml", storage)
    with fs.open_output_stream(path) as out:
        out.write(yaml.safe_dump(overrides, sort_keys=True).encode())
    return overrides
