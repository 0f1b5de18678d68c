"""The model stages fused for CPU-only machines (``ModelStage``): one worker, every model.

Each worker of the ``models`` pool (``extract.stages.registry.MODELS``) loads every enabled
model stage once (OCR, Whisper, CLIP, in the registry's order) and takes each batch through
all of them. With one such worker per core, a core is never left waiting for a stage it does
not hold: whatever a batch needs next runs on the core that holds the batch. The stages are
the same classes the GPU layout runs as separate pools, so rows and errors are identical;
each part's wall and CPU seconds go to its own ``time_<part>_s`` / ``cpu_<part>_s`` columns.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from extract.config import Config
from extract.stages.registry import MODELS, spec_named
from extract.stages.timing import timed_call


class ModelStage:
    """Rows after decode -> rows with every model stage's columns.

    ``parts`` maps a stage name of ``MODELS.parts`` to its class (default: the registry's);
    stages that ``config`` turns off (``ocr.enabled``) are not built.
    """

    name = MODELS.name

    def __init__(self, config: Config, parts: Mapping[str, type] | None = None):
        classes = dict(parts) if parts is not None else {}
        self.parts: list[tuple[str, object]] = []
        for name in MODELS.parts:
            spec = spec_named(name)
            if spec.enabled(config):
                self.parts.append((name, (classes.get(name) or spec.load())(config)))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(batch)
        for name, stage in self.parts:
            out = timed_call(name, stage, out)
        return out
