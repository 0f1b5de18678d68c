"""Job configuration: frozen dataclasses built from YAML files and ``--set key=value`` overrides.

- ``extract.config.sections``: one dataclass per section (``Config.sampling``, ``Config.limits``, ...)
  with every key's default and allowed values and the check that enforces them, the ``Config``
  they make up, and the feature hash (``Config.feature_hash_of``).
- ``extract.config.loading``: YAML files merged in order, dotted overrides, and the coercion
  of plain data into the sections (``ConfigError`` messages name the key).
- ``extract.config.machine``: the ``runtime`` keys a config leaves null, resolved for the
  machine or cluster a run has.

The names below are the package's public interface, each defined once in the module named.
"""

from extract.config.loading import ConfigError, parse_override
from extract.config.sections import (
    AUDIO_CODECS,
    AUTO_RUNTIME_KEYS,
    DEFAULT_LABEL_FILE,
    OCR_LANGUAGES,
    RUNTIME_UNITS,
    VIDEO_CODECS,
    WHISPER_CONTEXT_S,
    ClipModelConfig,
    Config,
    InputConfig,
    LabelsConfig,
    LimitsConfig,
    ModelsConfig,
    OcrConfig,
    OutputConfig,
    RuntimeConfig,
    SamplingConfig,
    ScheduleConfig,
    SignalsConfig,
    StorageConfig,
    TextConfig,
    WhisperConfig,
    WhisperModelConfig,
    check_window_config,
    config_from_dict,
    load_config,
)

__all__ = [
    "AUDIO_CODECS", "AUTO_RUNTIME_KEYS", "DEFAULT_LABEL_FILE", "OCR_LANGUAGES", "RUNTIME_UNITS", "VIDEO_CODECS", "WHISPER_CONTEXT_S",
    "ClipModelConfig", "Config", "ConfigError", "InputConfig", "LabelsConfig", "LimitsConfig", "ModelsConfig",
    "OcrConfig", "OutputConfig", "RuntimeConfig", "SamplingConfig", "ScheduleConfig", "SignalsConfig",
    "StorageConfig", "TextConfig", "WhisperConfig", "WhisperModelConfig", "check_window_config",
    "config_from_dict", "load_config", "parse_override",
]
