"""CLIP image preprocessing as data, known before any weights are loaded.

Decode workers need the CLIP input size and resize rule to scale frames inside the decoder;
the CLIP stage needs mean/std to normalise on the device. Both read ``preprocess_spec``, which
follows open_clip's own precedence: defaults < pretrained tag config (or ``local-dir:``
``open_clip_config.json``) < the model's vision ``image_size``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from extract.config import ClipModelConfig


@dataclass(frozen=True)
class PreprocessSpec:
    """open_clip ``PreprocessCfg`` fields we use. ``image_size`` in pixels (square)."""

    image_size: int
    interpolation: str  # "bicubic" | "bilinear" | "nearest"
    resize_mode: str  # "shortest" (resize shorter side, center crop) | "longest" | "squash"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_REGISTERED_CONFIGS: set[Path] = set()  # model config files already added to open_clip's registry


def register_model_config(clip: ClipModelConfig) -> None:
    """Register ``clip.model_config`` (a JSON file) with open_clip, once per process.

    open_clip names the architecture after the file's stem (``tiny-clip-vit.json`` ->
    ``tiny-clip-vit``), so ``models.clip.name`` must equal that stem.
    """
    if clip.model_config:
        import open_clip

        path = Path(clip.model_config).resolve()
        if not path.is_file():
            raise FileNotFoundError(
                f"models.clip.model_config: {path} does not exist; run `extract models make-tiny DIR` "
                "or point the key at an open_clip model config JSON"
            )
        if path not in _REGISTERED_CONFIGS:
            # add_model_config appends to a search path and rescans it all: calling it per batch
            # would grow that path without bound.
            open_clip.add_model_config(path)
            _REGISTERED_CONFIGS.add(path)


def preprocess_spec(clip: ClipModelConfig) -> PreprocessSpec:
    """The preprocessing open_clip would build for ``clip`` (no weights are read)."""
    import open_clip
    from open_clip.transform import PreprocessCfg

    register_model_config(clip)
    cfg: dict = {}
    if clip.name.startswith("local-dir:"):
        local = json.loads((Path(clip.name[len("local-dir:"):]) / "open_clip_config.json").read_text())
        model_cfg = local["model_cfg"]
        cfg.update(local.get("preprocess_cfg", {}))
    else:
        model_cfg = open_clip.get_model_config(clip.name)
        if model_cfg is None:
            raise ValueError(
                f"models.clip.name: unknown open_clip architecture {clip.name!r}; "
                "see open_clip.list_models() or set models.clip.model_config"
            )
        if clip.pretrained:
            tag_cfg = open_clip.get_pretrained_cfg(clip.name, clip.pretrained) or {}
            cfg.update({k: v for k, v in tag_cfg.items() if k in PreprocessCfg.__dataclass_fields__})
    base = PreprocessCfg(**{k: v for k, v in cfg.items() if k in PreprocessCfg.__dataclass_fields__})
    size = model_cfg.get("vision_cfg", {}).get("image_size", base.size)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return PreprocessSpec(
        image_size=int(size), interpolation=base.interpolation, resize_mode=base.resize_mode,
        mean=tuple(base.mean), std=tuple(base.std),
    )
