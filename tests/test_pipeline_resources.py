"""Actor pools and torch threads per stage (``resource_plan``, ``TimedStage``): no Ray started."""

from __future__ import annotations

import pytest

from extract.config import Config
from extract.pipeline.ray_backend import TimedStage
from extract.pipeline.resources import check_plan_fits, resource_plan


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
    many = Config().replace(**{"runtime.device": "cpu", "runtime.clip_actors": 4, "runtime.whisper_actors": 4})
    plan = resource_plan(many, cluster_cpus=2, cluster_gpus=0)
    assert plan["decode"]["num_cpus"] == 1.0  # what one actor of each model pool leaves, never negative
    check_plan_fits(plan, 2, 0)


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


def test_gpu_wait_asks_for_one_actor_of_each_model(monkeypatch):
    """With fewer GPUs than one CLIP and one Whisper actor take, the job asks the autoscaler for
    both actors' GPUs and waits until they have joined (stubbed Ray: no cluster started)."""
    import ray
    import ray.autoscaler.sdk

    from extract.pipeline import ray_backend as pipeline

    seen = iter([{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}, {"CPU": 16.0, "GPU": 2.0}])
    requests = []
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: next(seen))
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: requests.append(bundles))
    monkeypatch.setattr(pipeline, "GPU_POLL_S", 0.0)
    config = Config().replace(**{"runtime.device": "cuda", "runtime.num_gpus_per_actor": 1.0,
                                 "schedule.gpu_wait_s": 60.0})
    assert pipeline.connect_cluster(config)["GPU"] == 2.0
    assert requests == [[{"GPU": 1.0}, {"GPU": 1.0}], []]
