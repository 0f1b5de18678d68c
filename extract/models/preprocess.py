"""CLIP image preprocessing and model facts as data, known before any weights are loaded.

Decode workers need the CLIP input size and resize rule to scale frames inside the decoder;
the CLIP stage needs mean/std to normalise on the device; the driver needs the embedding
width for the table schema. All of it is data that open_clip ships next to its code, so it is
read here *without importing open_clip* (its ``__init__`` imports torch, which costs a decode
actor or the driver seconds and hundreds of MiB for three numbers):

- architecture configs: ``open_clip/model_configs/<name>.json`` in the installed package
  (found with ``importlib.util.find_spec``, which does not execute the package), a
  ``models.clip.model_config`` file named after the architecture, ``local-dir:DIR``'s
  ``open_clip_config.json``, or an ``hf-hub:org/repo``'s ``open_clip_config.json`` (fetched
  with ``huggingface_hub`` into ``models.clip.cache_dir``, as open_clip itself does);
- pretrained-tag preprocessing (``mean``/``std``/``interpolation``/``resize_mode``): the
  ``_PRETRAINED`` table of ``open_clip/pretrained.py``, evaluated from its source with only its
  standard-library imports (its optional ``safetensors.torch``/``huggingface_hub`` imports are
  left out; the table does not use them);
- defaults: the field defaults of open_clip's ``PreprocessCfg`` and ``CLIPVisionCfg``, read
  from the source of ``transform.py`` and ``model.py``.

Should open_clip's source ever stop parsing this way, ``open_clip_data`` falls back to
importing open_clip (the slow path) and logs it. ``ClipEmbedder`` compares the result with the
preprocessing open_clip attaches to the loaded model and fails at start-up on any difference,
and ``tests/test_preprocess.py`` checks it against open_clip for several architectures.

``preprocess_spec`` follows ``open_clip.create_model``'s precedence: ``PreprocessCfg`` defaults
< the pretrained tag's config (built-in names only; a checkpoint path adds nothing) or the
``preprocess_cfg`` of a ``local-dir:``/``hf-hub:`` config < the vision tower's ``image_size``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from extract.config import ClipModelConfig
from extract.media.geometry import PreprocessSpec

log = logging.getLogger(__name__)

LOCAL_DIR_PREFIX = "local-dir:"  # open_clip's schema prefixes (factory.parse_model_name)
HF_HUB_PREFIX = "hf-hub:"
HF_CONFIG_NAME = "open_clip_config.json"  # config file of a local-dir / hf-hub model
MODEL_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # open_clip registers only configs with all three


@dataclass(frozen=True)
class OpenClipData:
    """What the specs need from open_clip: built-in configs, tag configs and defaults.

    ``builtin_config(name)`` -> model config dict or None; ``pretrained_cfg(name, tag)`` -> tag
    config dict ({} for an unknown tag); ``preprocess_defaults``: ``PreprocessCfg`` field
    defaults; ``vision_image_size``: ``CLIPVisionCfg.image_size`` default (pixels).
    """

    builtin_config: Callable[[str], dict | None]
    pretrained_cfg: Callable[[str, str], dict]
    preprocess_defaults: dict[str, Any]
    vision_image_size: int
    torch_free: bool


_REGISTERED_CONFIGS: set[Path] = set()  # model config files already added to open_clip's registry


def register_model_config(clip: ClipModelConfig) -> None:
    """Register ``clip.model_config`` (a JSON file) with open_clip, once per process.

    Needed only where open_clip itself loads the model or tokenizer (imports open_clip, so
    torch). open_clip names the architecture after the file's stem (``tiny-clip-vit.json`` ->
    ``tiny-clip-vit``), so ``models.clip.name`` must equal that stem.
    """
    if clip.model_config:
        import open_clip

        path = _model_config_path(clip)
        if path not in _REGISTERED_CONFIGS:
            # add_model_config appends to a search path and rescans it all: calling it per batch
            # would grow that path without bound.
            open_clip.add_model_config(path)
            _REGISTERED_CONFIGS.add(path)


def _model_config_path(clip: ClipModelConfig) -> Path:
    path = Path(clip.model_config).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"models.clip.model_config: {path} does not exist; run `extract models make-tiny DIR` "
            "or point the key at an open_clip model config JSON"
        )
    return path


# --------------------------------------------------------------------------- open_clip's data


def _open_clip_dir() -> Path:
    """The installed open_clip package folder (its ``__init__`` is not run)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed (pip install open_clip_torch)")
    return Path(next(iter(spec.submodule_search_locations)))


# open_clip modules that are pure data, so ``from .<module> import x`` can be read from source
DATA_MODULES = ("constants", "version")


def _module_source_namespace(path: Path, keep: Callable[[ast.stmt], bool] = lambda node: True) -> dict[str, Any]:
    """Execute the top-level statements of an open_clip module that ``keep`` selects, without
    its third-party imports: standard-library imports run, ``from .constants import x`` (a
    ``DATA_MODULES`` sibling) reads the sibling's source the same way; ``try:`` blocks (optional
    imports) and every other import are left out. For data that needs nothing else (constants,
    the pretrained-tag table, dataclass defaults)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    namespace: dict[str, Any] = {"__name__": f"_open_clip_source.{path.stem}", "__file__": str(path)}
    body = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in DATA_MODULES:
            sibling = _module_source_namespace(path.parent / f"{node.module}.py")
            namespace.update({alias.asname or alias.name: sibling[alias.name] for alias in node.names})
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            roots = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if getattr(node, "level", 0) == 0 and all(r.split(".")[0] in sys.stdlib_module_names for r in roots):
                body.append(node)
        elif not isinstance(node, ast.Try) and keep(node):
            body.append(node)
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102 - open_clip's own source
    return namespace


def _dataclass_defaults(path: Path, class_name: str) -> dict[str, Any]:
    """Field defaults of a dataclass in an open_clip module, from its source."""
    namespace = _module_source_namespace(path, lambda node: False)  # just its imports (constants)
    cls = next((n for n in ast.parse(path.read_text(encoding="utf-8")).body
                if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if cls is None:
        raise LookupError(f"{path} defines no class {class_name}")
    return {node.target.id: eval(compile(ast.Expression(node.value), str(path), "eval"), dict(namespace))  # noqa: S307
            for node in cls.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None}


def _torch_free_data() -> OpenClipData:
    root = _open_clip_dir()
    pretrained = _module_source_namespace(root / "pretrained.py")
    if not isinstance(pretrained.get("_PRETRAINED"), dict) or not callable(pretrained.get("get_pretrained_cfg")):
        raise LookupError(f"{root / 'pretrained.py'} has no _PRETRAINED table / get_pretrained_cfg")

    def builtin_config(name: str) -> dict | None:
        path = root / "model_configs" / f"{name}.json"
        return _read_model_config(path) if path.is_file() else None

    return OpenClipData(
        builtin_config=builtin_config,
        pretrained_cfg=lambda name, tag: dict(pretrained["get_pretrained_cfg"](name, tag)),
        preprocess_defaults=_dataclass_defaults(root / "transform.py", "PreprocessCfg"),
        vision_image_size=_dataclass_defaults(root / "model.py", "CLIPVisionCfg")["image_size"],
        torch_free=True,
    )


def _imported_data() -> OpenClipData:
    """The same data through ``import open_clip`` (imports torch)."""
    from dataclasses import asdict

    import open_clip
    from open_clip.model import CLIPVisionCfg
    from open_clip.transform import PreprocessCfg

    return OpenClipData(
        builtin_config=open_clip.get_model_config,
        pretrained_cfg=lambda name, tag: dict(open_clip.get_pretrained_cfg(name, tag) or {}),
        preprocess_defaults=asdict(PreprocessCfg()), vision_image_size=CLIPVisionCfg().image_size,
        torch_free=False,
    )


@functools.lru_cache(maxsize=1)
def open_clip_data() -> OpenClipData:
    """open_clip's configs read from its package files; ``import open_clip`` only if that fails."""
    try:
        return _torch_free_data()
    except ModuleNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, LookupError, NameError, TypeError, AttributeError) as exc:
        log.warning("reading open_clip's configs from its source failed (%s: %s); importing open_clip instead",
                    type(exc).__name__, exc)
        return _imported_data()


# --------------------------------------------------------------------------- model configs


def _read_model_config(path: Path) -> dict | None:
    """A model config file as open_clip's registry reads it (None without the required keys)."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return cfg if all(key in cfg for key in MODEL_CONFIG_KEYS) else None


def _schema_config(clip: ClipModelConfig) -> dict | None:
    """The whole ``open_clip_config.json`` of a ``local-dir:``/``hf-hub:`` name; None for other names."""
    if clip.name.startswith(LOCAL_DIR_PREFIX):
        path = Path(clip.name[len(LOCAL_DIR_PREFIX):]) / HF_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"models.clip.name: {clip.name!r} has no {HF_CONFIG_NAME} ({path})")
    elif clip.name.startswith(HF_HUB_PREFIX):
        path = Path(_hf_config_file(clip.name[len(HF_HUB_PREFIX):], clip.cache_dir))
    else:
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _hf_config_file(repo_id: str, cache_dir: str | None) -> str:
    """open_clip's ``_get_hf_config`` download (a cache hit when the model was fetched before)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise RuntimeError("models.clip.name: an hf-hub: model needs huggingface_hub (pip install huggingface_hub)") from exc
    return hf_hub_download(repo_id=repo_id, filename=HF_CONFIG_NAME, cache_dir=cache_dir)


def _builtin_name(clip: ClipModelConfig) -> str:
    return clip.name.replace("/", "-")  # as open_clip.create_model looks names up


def clip_model_config(clip: ClipModelConfig) -> dict:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) of ``clip``.

    Same answer as ``open_clip.get_model_config`` after ``register_model_config``, without
    importing open_clip. Raises ``ValueError`` for an unknown architecture.
    """
    schema_cfg = _schema_config(clip)
    if schema_cfg is not None:
        return schema_cfg.get("model_cfg", schema_cfg)
    name = _builtin_name(clip)
    cfg = None
    if clip.model_config and _model_config_path(clip).stem == name:
        cfg = _read_model_config(_model_config_path(clip))  # registered later, so it wins over a built-in
    if cfg is None:
        cfg = open_clip_data().builtin_config(name)
    if cfg is None:
        raise ValueError(
            f"models.clip.name: unknown open_clip architecture {clip.name!r}; "
            "see open_clip.list_models() or set models.clip.model_config"
        )
    return cfg


def clip_embed_dim(clip: ClipModelConfig) -> int:
    """Embedding width D of a CLIP model, from its open_clip config (no weights, no torch)."""
    return int(clip_model_config(clip)["embed_dim"])


def preprocess_spec(clip: ClipModelConfig) -> PreprocessSpec:
    """The preprocessing open_clip would build for ``clip`` (no weights read, torch not imported)."""
    data = open_clip_data()
    cfg = dict(data.preprocess_defaults)
    schema_cfg = _schema_config(clip)
    if schema_cfg is not None:
        model_cfg = schema_cfg["model_cfg"] if "model_cfg" in schema_cfg else schema_cfg
        overlay = schema_cfg.get("preprocess_cfg", {})  # open_clip ignores `pretrained` for these names
    else:
        model_cfg = clip_model_config(clip)
        overlay = data.pretrained_cfg(_builtin_name(clip), clip.pretrained) if clip.pretrained else {}
    # merge_preprocess_dict: only PreprocessCfg fields, and a None value does not override
    cfg.update({k: v for k, v in overlay.items() if k in cfg and v is not None})
    size = (model_cfg.get("vision_cfg") or {}).get("image_size", data.vision_image_size)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return PreprocessSpec(
        image_size=int(size), interpolation=str(cfg["interpolation"]), resize_mode=str(cfg["resize_mode"]),
        mean=tuple(float(v) for v in cfg["mean"]), std=tuple(float(v) for v in cfg["std"]),
    )
