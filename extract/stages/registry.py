"""The pipeline's stages, declared once: name, class, pool kind and pool-size key.

The runner (``extract.pipeline.ray_backend``) maps them onto Ray in this order, the resource
plan (``extract.pipeline.resources``) sizes their pools from ``pool`` and ``actors_key``, and
the report and the jobs list them by ``name``. A stage's ``name`` is also its ``errors.stage``
and the suffix of its ``time_<name>_s`` (wall seconds per video) and ``cpu_<name>_s`` (CPU
seconds per video, its process and child processes) columns.

Two layouts (``layout_specs``): on GPUs each model stage is its own actor pool (CLIP and
Whisper actors sharing each GPU); on a CPU-only machine the model stages run fused in one pool
(``MODELS``: every worker holds every model and takes a batch through OCR, Whisper and CLIP in
turn), so whichever stage a batch needs gets a free core and no core waits on another stage's
backlog (``extract.defaults`` has the measurements).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

POOLS = ("cpu", "model")  # cpu: decode actors on the free cores; model: a model per actor, GPU when there is one


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``target`` is ``module:Class`` (imported when a pool starts: stages pull in
    torch or PyAV), ``actors_key`` the ``runtime`` key bounding its actor pool."""

    name: str
    target: str
    pool: str
    actors_key: str
    label: str
    uses_gpu: bool = True  # a model actor takes a GPU share when there is one
    enabled_key: str | None = None  # a config key (``ocr.enabled``) that turns the stage off
    parts: tuple[str, ...] = ()  # a fused stage: the stages it runs in turn, by name

    def enabled(self, config: Any) -> bool:
        if self.enabled_key is None:
            return True
        section, key = self.enabled_key.split(".")
        return bool(getattr(getattr(config, section), key))

    def load(self) -> type:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


DECODE = StageSpec("decode", "extract.stages.decode:DecodeStage", "cpu", "decode_workers", "decode")
WHISPER = StageSpec("whisper", "extract.stages.transcribe:TranscribeStage", "model", "whisper_actors", "Whisper")
CLIP = StageSpec("clip", "extract.stages.clip:ClipStage", "model", "clip_actors", "CLIP")
# rapidocr runs on onnxruntime's CPU provider (the onnxruntime-gpu wheel is not a dependency).
OCR = StageSpec("ocr", "extract.stages.ocr:OcrStage", "model", "ocr_actors", "OCR", uses_gpu=False,
                enabled_key="ocr.enabled")
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
    """The stage classes by name, in run order, and the fused ``models`` class (imported now)."""
    return {spec.name: spec.load() for spec in (*STAGE_SPECS, MODELS)}
