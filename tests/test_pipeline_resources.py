"""Actor pools and torch threads per stage (``resource_plan``, ``TimedStage``): no Ray started."""

from __future__ import annotations

import pytest

from extract.config import Config
from extract.pipeline import TimedStage, check_plan_fits, resource_plan


def test_cpu_model_actors_get_one_torch_thread_by_default():
    plan = resource_plan(Config().replace(**{"runtime.device": "cpu"}), cluster_cpus=2, cluster_gpus=0)
    assert plan["decode"]["actors"] == 1 and "torch_threads" not in plan["decode"]
    for stage in ("whisper", "clip"):
        assert plan[stage]["num_cpus"] == 0.5 and plan[stage]["torch_threads"] == 1


def test_the_plan_fits_one_and_two_cores():
    """One actor of every pool must fit at once (the pools start together)."""
    for cpus in (1, 2, 4):
        plan = resource_plan(Config().replace(**{"runtime.device": "cpu"}), cluster_cpus=cpus, cluster_gpus=0)
        check_plan_fits(plan, cpus, 0)
        assert plan["whisper"]["torch_threads"] == plan["clip"]["torch_threads"] == 1
        assert sum(p["num_cpus"] for p in plan.values()) <= cpus
    assert resource_plan(Config().replace(**{"runtime.device": "cpu"}), 1, 0)["decode"]["num_cpus"] == 0.5


def test_a_plan_that_cannot_fit_names_the_fix():
    config = Config().replace(**{"runtime.device": "cuda", "runtime.num_gpus_per_actor": 1.0})
    with pytest.raises(RuntimeError, match=r"need 2 GPUs .* has 1; set runtime.num_gpus_per_actor=0.5"):
        check_plan_fits(resource_plan(config, cluster_cpus=16, cluster_gpus=1), 16, 1)
    check_plan_fits(resource_plan(config.replace(**{"runtime.num_gpus_per_actor": 0.5}), 16, 1), 16, 1)
    with pytest.raises(RuntimeError, match="needs 3 CPUs .* has 2"):
        check_plan_fits(resource_plan(config, cluster_cpus=2, cluster_gpus=2), 2, 2)


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
