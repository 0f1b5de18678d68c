"""The pipeline's stages, declared once: name, class, resources, and the columns each reads and adds.

The executor (``extract.pipeline.executor`` on ``extract.pipeline.ray_backend``) maps them in
this order, the resource plan (``extract.pipeline.resources``) sizes their pools from ``pool``
and ``actors_key``, and the report and the jobs list them by ``name``. A stage's ``name`` is
also its ``errors.stage`` and the suffix of its ``time_<name>_s`` (wall seconds per video) and
``cpu_<name>_s`` (CPU seconds per video, its process and child processes) columns.

The columns of a row between stages (``extract.rows``; ``extract schemas --stages`` prints
them): the manifest gives ``SOURCE_COLUMNS``; each stage reads its ``inputs`` and adds its
``outputs`` (columns of the ``videos`` table) and ``carries`` (tensors and JSON the later
stages or the driver read: frames, audio, the child tables' rows). A test holds these against
``schemas/*.json`` and against what the stages really add.

Two layouts (``layout_specs``): on GPUs each model stage is its own actor pool (CLIP and
Whisper actors sharing each GPU); on a CPU-only machine the model stages run fused in one pool
(``MODELS``: every worker holds every model and takes a batch through OCR, Whisper and CLIP in
turn), so whichever stage a batch needs gets a free core and no core waits on another stage's
backlog (``extract.config.machine`` has the measurements).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``target`` is ``module:Class`` (imported when a pool starts: stages pull in
    torch or PyAV), ``pool`` ``cpu`` (decode actors on the free cores) or ``model`` (a model
    per actor, a GPU share when there is one), ``actors_key`` the ``runtime`` key bounding its
    actor pool."""

    name: str
    target: str
    pool: str
    actors_key: str
    label: str
    uses_gpu: bool = True  # a model actor takes a GPU share when there is one
    enabled_key: str | None = None  # a config key (``ocr.enabled``) that turns the stage off
    inputs: tuple[str, ...] = ()  # row columns it reads
    outputs: tuple[str, ...] = ()  # ``videos`` columns it adds
    carries: tuple[str, ...] = ()  # other columns it adds, for later stages or the driver
    parts: tuple[str, ...] = ()  # a fused stage: the stages it runs in turn, by name

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the stage adds, outputs first."""
        return self.outputs + self.carries

    def enabled(self, config: Any) -> bool:
        if self.enabled_key is None:
            return True
        section, key = self.enabled_key.split(".")
        return bool(getattr(getattr(config, section), key))

    def load(self) -> type:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


# What ``extract.pipeline.manifest.read_source`` gives each row (``ts_warning``: the row's
# upload_ts was not a time; ``reuse_candidates``: JSON, see ``extract.pipeline.reuse``).
SOURCE_COLUMNS = ("video_id", "uri", "caption", "upload_ts", "dt", "error_stage", "error_type", "error_message",
                  "retryable", "source_bytes", "source_mtime", "ts_warning", "reuse_candidates")

DECODE = StageSpec(
    "decode", "extract.stages.decode:DecodeStage", "cpu", "decode_workers", "decode",
    inputs=("uri", "reuse_candidates"),
    outputs=("content_sha256", "file_bytes", "container", "video_codec", "audio_codec", "duration_s", "width",
             "height", "rotation", "fps", "bitrate", "has_audio", "video_stream_index", "audio_stream_index",
             "n_video_streams", "n_audio_streams", "n_frames", "sampling_policy", "audio_s", "sound_fingerprint",
             "sound_keys", "motion_score", "motion_source", "reused_from"),
    # frames (n, S, S, 3) uint8, pts_s (n,) float32, audio (m,) float32 16 kHz mono, ocr_frames
    # (k, H, W, 3) uint8 and their frame indices, phash and phash_middle (n,) int64 (the latter empty with
    # output.middle_hashes off), phash_zoom (n, len(ZOOMS)) int64 (no rows with output.zoom_hashes off),
    # thumbnails (see rows.thumbnails_of),
    # reused_dt/reused_inputs: where a reused row's features come from
    carries=("frames", "pts_s", "audio", "ocr_frames", "ocr_frame_index", "phash", "phash_middle", "phash_zoom",
             "thumbnail_jpeg", "thumbnail_bytes", "thumbnail_index", "reused_dt", "reused_inputs", "shot_frames",
             "shot_pts_s"))
WHISPER = StageSpec(
    "whisper", "extract.stages.transcribe:TranscribeStage", "model", "whisper_actors", "Whisper",
    inputs=("audio", "has_audio"),
    outputs=("transcript_text", "language", "language_prob", "no_speech_prob", "whisper_model", "speech_s",
             "speech_ratio", "audio_kind", "audio_embedding"),
    carries=("segments_json",))  # the transcript_segments rows, JSON
CLIP = StageSpec(
    "clip", "extract.stages.clip:ClipStage", "model", "clip_actors", "CLIP",
    inputs=("frames", "caption", "transcript_text", "ocr_text", "reused_inputs", "shot_frames", "shot_pts_s"),
    outputs=("clip_model", "clip_embedding", "frame_cos_mean", "frame_cos_min", "thumbnail_similarity",
             "labels_topic", "labels_topic_max", "top_topic", "top_topic_score", "labels_safety",
             "labels_safety_max", "top_safety", "top_safety_score", "caption_length", "n_hashtags", "n_mentions",
             "n_urls", "n_emoji", "hashtags", "hashtag_ids", "caption_embedding", "caption_truncated",
             "hashtags_embedding", "transcript_embedding", "transcript_truncated", "hashtag_frame_similarity",
             "caption_frame_similarity", "transcript_frame_similarity", "ocr_embedding", "ocr_frame_similarity",
             "caption_language", "caption_language_prob", "ocr_language", "ocr_language_prob", "shot_count",
             "cuts_per_minute", "mean_shot_s"),
    carries=("frame_embeddings", "hashtags_json", "shots_json"))  # (n, D) float32; hashtags and shots rows, JSON
# rapidocr runs on onnxruntime's CPU provider (the onnxruntime-gpu wheel is not a dependency).
OCR = StageSpec(
    "ocr", "extract.stages.ocr:OcrStage", "model", "ocr_actors", "OCR", uses_gpu=False, enabled_key="ocr.enabled",
    inputs=("ocr_frames", "ocr_frame_index", "pts_s"),
    outputs=("ocr_text", "text_area_ratio", "ocr_error"),
    carries=("ocr_lines_json",))  # the ocr_text rows, JSON
# OCR and Whisper run before CLIP so the CLIP actor embeds transcripts and on-screen text with
# the same text tower.
STAGE_SPECS: tuple[StageSpec, ...] = (DECODE, OCR, WHISPER, CLIP)
STAGES: tuple[str, ...] = tuple(spec.name for spec in STAGE_SPECS)
# CPU-only machines: one pool of model workers, each running the enabled model stages in the
# order above on its batch (it reports their times under their own names, not its own).
MODELS = StageSpec("models", "extract.stages.models:ModelStage", "model", "model_workers", "OCR + Whisper + CLIP",
                   uses_gpu=False, parts=tuple(spec.name for spec in STAGE_SPECS if spec.pool == "model"))
FUSED_SPECS: tuple[StageSpec, ...] = (DECODE, MODELS)


def layout_specs(fused: bool) -> tuple[StageSpec, ...]:
    """The pools a run maps, in order: ``FUSED_SPECS`` (CPU-only layout) or ``STAGE_SPECS``."""
    return FUSED_SPECS if fused else STAGE_SPECS


def spec_named(name: str) -> StageSpec:
    """The ``StageSpec`` called ``name`` (a stage or the fused ``models`` pool)."""
    for spec in (*STAGE_SPECS, MODELS):
        if spec.name == name:
            return spec
    raise KeyError(name)


def stage_classes() -> dict[str, type]:
    """The stage classes by name, in run order (imported now); the fused ``MODELS`` pool is made
    of these (``extract.stages.models``), so running each in turn is a whole run without Ray."""
    return {spec.name: spec.load() for spec in STAGE_SPECS}


def describe_columns() -> str:
    """The row's columns stage by stage, as Markdown (``extract schemas --stages``)."""
    lines = [f"- source (``extract.pipeline.manifest.read_source``): {', '.join(SOURCE_COLUMNS)}"]
    for spec in STAGE_SPECS:
        module = spec.target.replace(":", ".")
        lines.append(f"- {spec.name} (``{module}``, {spec.pool} pool, ``runtime.{spec.actors_key}``): "
                     f"reads {', '.join(spec.inputs)}; adds to ``videos`` {', '.join(spec.outputs)}; "
                     f"carries {', '.join(spec.carries)}")
    return "\n".join(lines)
