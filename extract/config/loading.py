"""From YAML files and ``--set key=value`` overrides to checked, typed data.

``read_config_data`` merges several YAML files in order (relative checkpoint and label paths
resolved against each file's folder), then the dotted overrides, into one nested dict;
``build`` turns nested plain data into the section dataclasses, coercing each leaf to its
annotated type (a YAML ``1`` for a float key becomes ``1.0``, a list becomes a tuple) and
refusing unknown keys and wrong types with a ``ConfigError`` that names the key. The
sections check their values themselves (``extract.config.sections``). Nothing here knows a
section's keys but ``_resolve_relative_paths``, which knows the keys that hold paths.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


def build(cls: type, data: Mapping, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from nested plain ``data`` (keys missing from it take
    their defaults); ``prefix`` is the dotted key of ``cls``'s section, for messages."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; allowed here: {', '.join(sorted(names))}"
        )
    hints = get_type_hints(cls)
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(key, hints[name], data[name])
    return cls(**kwargs)


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check/convert one leaf value against its annotated type; raise ConfigError naming key."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is None and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return build(tp, value, key)
    if type(None) in args:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, inner[0], value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key`` ``"a.b"``, making sections on the way."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=1"`` -> ``("a.b", 1)``; the value is parsed as YAML (``null``, lists, numbers)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set runtime.device=cpu")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def read_config_data(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> dict[str, Any]:
    """YAML ``files`` merged in order, then ``key=value`` ``overrides``, as nested plain data.

    Relative checkpoint paths in a file (``models.*``, ``labels.file``) resolve against that
    file's folder, so a config next to its checkpoints works from any working directory.
    """
    data: dict[str, Any] = {}
    for path in files:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"config file {path} is a folder; pass a YAML file") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (a YAML file)") from exc
        except OSError as exc:  # permissions, a path through a regular file, ...
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
        _resolve_relative_paths(loaded, path.parent)
        data = _deep_merge(data, loaded)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    return data


def _resolve_relative_paths(data: dict, base: Path) -> None:
    """Make relative paths (``./``, ``../``) in the ``models.*`` checkpoint keys and
    ``labels.file`` absolute, against ``base``."""
    models = data.get("models") or {}
    for section, key in (("clip", "pretrained"), ("clip", "model_config"), ("clip", "cache_dir"),
                         ("whisper", "name"), ("whisper", "download_root")):
        value = (models.get(section) or {}).get(key)
        if isinstance(value, str) and (value.startswith("./") or value.startswith("../")):
            models[section][key] = str((base / value).resolve())
    labels = data.get("labels") or {}
    if isinstance(labels.get("file"), str) and labels["file"].startswith(("./", "../")):
        labels["file"] = str((base / labels["file"]).resolve())
