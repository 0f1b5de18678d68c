"""Actor pools and torch threads per stage (``resource_plan``, ``TimedStage``): no Ray started."""

from __future__ import annotations

import pytest

from extract.config import Config
from extract.pipeline import TimedStage, resource_plan


def test_cpu_model_actors_get_one_torch_thread_by_default():
    plan = resource_plan(Config().replace(**{"runtime.device": "cpu"}), cluster_cpus=2, cluster_gpus=0)
    assert plan["decode"]["actors"] == 1 and "torch_threads" not in plan["decode"]
    for stage in ("whisper", "clip"):
        assert plan[stage]["num_cpus"] == 0.5 and plan[stage]["torch_threads"] == 1


def test_torch_threads_follow_the_config_key():
    config = Config().replace(**{"runtime.device": "cpu", "runtime.torch_threads": 3})
    plan = resource_plan(config, cluster_cpus=8, cluster_gpus=0)
    assert plan["whisper"]["torch_threads"] == plan["clip"]["torch_threads"] == 3


def test_gpu_model_actors_follow_their_cpus():
    plan = resource_plan(Config().replace(**{"runtime.device": "cuda"}), cluster_cpus=16, cluster_gpus=2)
    assert plan["clip"]["num_cpus"] == 1.0 and plan["clip"]["torch_threads"] == 1


class _Echo:
    def __init__(self, config):
        import torch

        self.threads_at_load = torch.get_num_threads()

    def __call__(self, batch):
        return batch


def test_timed_stage_sets_torch_threads_before_the_model_loads():
    import torch

    before = torch.get_num_threads()
    try:
        stage = TimedStage(_Echo, "clip", Config(), torch_threads=2)
        assert stage.stage.threads_at_load == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_negative_torch_threads_is_rejected():
    from extract.config import ConfigError

    with pytest.raises(ConfigError, match="runtime.torch_threads"):
        Config().replace(**{"runtime.torch_threads": -1})
