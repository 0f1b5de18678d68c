"""The fused model stage of CPU-only runs (``extract.stages.models``) and the per-stage CPU
accounting (``extract.stages.timing``): no Ray, stand-in stages."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from extract.config import Config
from extract.stages.models import ModelStage
from extract.stages.registry import MODELS, layout_specs
from extract.stages.timing import process_tree_cpu_s, timed_call

CALLS: list[str] = []


def _stand_in(name: str) -> type:
    class Stage:
        def __init__(self, config):
            self.config = config

        def __call__(self, batch):
            CALLS.append(name)
            out = dict(batch)
            out[f"{name}_seen"] = np.asarray([f"{v}+{name}" for v in batch["video_id"]], dtype=object)
            return out

    return Stage


def test_fused_stage_runs_every_enabled_model_stage_in_order_and_times_each():
    CALLS.clear()
    parts = {name: _stand_in(name) for name in MODELS.parts}
    batch = {"video_id": np.asarray(["a", "b"], dtype=object)}
    out = ModelStage(Config(), parts)(batch)
    assert CALLS == ["ocr", "whisper", "clip"] == list(MODELS.parts)
    assert out["clip_seen"].tolist() == ["a+clip", "b+clip"]
    for name in MODELS.parts:
        assert out[f"time_{name}_s"].shape == out[f"cpu_{name}_s"].shape == (2,)
        assert (out[f"time_{name}_s"] >= 0).all() and (out[f"cpu_{name}_s"] >= 0).all()
    CALLS.clear()
    ModelStage(Config().replace(**{"ocr.enabled": False}), parts)(batch)
    assert CALLS == ["whisper", "clip"]  # a stage the config turns off is not built


def test_layouts_name_their_pools():
    assert [s.name for s in layout_specs(True)] == ["decode", "models"]
    assert [s.name for s in layout_specs(False)] == ["decode", "ocr", "whisper", "clip"]


def test_stage_cpu_counts_child_processes():
    """A decode stage's FFmpeg work happens in child processes: they count toward its CPU."""
    def spawn_busy_child(batch):
        subprocess.run([sys.executable, "-c", "import time\nt=time.process_time()\n"
                        "while time.process_time() - t < 0.5: pass"], check=True)
        return dict(batch)

    before = process_tree_cpu_s()
    wall = time.perf_counter()
    out = timed_call("decode", spawn_busy_child, {"video_id": np.asarray(["a"], dtype=object)})
    assert out["cpu_decode_s"][0] >= 0.45  # the child's half second of CPU, counted once it was waited for
    assert process_tree_cpu_s() - before >= 0.45 and out["time_decode_s"][0] <= time.perf_counter() - wall
