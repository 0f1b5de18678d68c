"""The pipeline's stages, declared once: name, class, pool kind and pool-size key.

The runner (``extract.pipeline.ray_backend``) maps them onto Ray in this order, the resource
plan (``extract.pipeline.resources``) sizes their pools from ``pool`` and ``actors_key``, and
the report and the jobs list them by ``name``. A stage's ``name`` is also its ``errors.stage``
and the suffix of its ``time_<name>_s`` column.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

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

    def load(self) -> type:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


DECODE = StageSpec("decode", "extract.stages.decode:DecodeStage", "cpu", "decode_workers", "decode")
WHISPER = StageSpec("whisper", "extract.stages.transcribe:TranscribeStage", "model", "whisper_actors", "Whisper")
CLIP = StageSpec("clip", "extract.stages.clip:ClipStage", "model", "clip_actors", "CLIP")
# Whisper runs before CLIP so the CLIP actor embeds transcripts with the same text tower.
STAGE_SPECS: tuple[StageSpec, ...] = (DECODE, WHISPER, CLIP)
STAGES: tuple[str, ...] = tuple(spec.name for spec in STAGE_SPECS)


def stage_classes() -> dict[str, type]:
    """The stage classes by name, in run order (imported now)."""
    return {spec.name: spec.load() for spec in STAGE_SPECS}
