"""Defaults that fit the machine (``extract.config.machine``) and the actor pools they give
(``resource_plan``, ``TimedStage``): no Ray started."""

from __future__ import annotations

import pytest

from extract.config import AUTO_RUNTIME_KEYS, Config, ConfigError
from extract.config.machine import DECODE_ACTOR_BYTES, FUSED_WORKER_BYTES, GIB, Machine, resolve_runtime
from extract.pipeline.ray_backend import TimedStage
from extract.pipeline.resources import check_plan_fits, plan_lines, plan_resources

CPU = Config().replace(**{"runtime.device": "cpu"})


def laptop(cpus: float, gpus: float = 0, gpu_gib: float = 0) -> Machine:
    return Machine(cpus=cpus, memory_bytes=24 * GIB, gpus=gpus, gpu_memory_bytes=gpu_gib * GIB)


@pytest.mark.parametrize("cpus, memory_gib", [(1, 8), (2, 24), (16, 64), (16, 24)])
def test_cpu_plans_for_1_2_16_cores_are_work_conserving(cpus, memory_gib):
    """CPU only: one fused model pool (every worker holds every model), a worker per core unless
    memory binds, decode actors for a fifth of the cores; all of them placed at once."""
    machine = Machine(cpus=cpus, memory_bytes=memory_gib * GIB)
    config, plan, reasons = plan_resources(Config(), machine)
    check_plan_fits(plan, machine)
    rt = config.runtime
    assert rt.resolved and set(reasons) == {f"runtime.{k}" for k in AUTO_RUNTIME_KEYS}
    assert list(plan) == ["decode", "models"]  # OCR, Whisper and CLIP run inside the model workers
    models, decode = plan["models"], plan["decode"]
    assert models["num_gpus"] == decode["num_gpus"] == 0.0 and models["torch_threads"] == rt.torch_threads == 1
    assert rt.decode_threads == 1 and rt.videos_per_batch == models["videos_per_batch"] == 2
    assert rt.decode_workers == max(1, round(cpus * 0.2)) == decode["actors"]
    memory_left = memory_gib * GIB - rt.decode_workers * DECODE_ACTOR_BYTES
    assert models["actors"] == rt.model_workers == min(cpus, int(memory_left // FUSED_WORKER_BYTES))
    assert ("memory" in reasons["runtime.model_workers"]) == (rt.model_workers < cpus)
    assert "unused" in reasons["runtime.clip_actors"] and "unused" in reasons["runtime.whisper_actors"]
    # every model worker and every decode actor fit at once; with a worker per core they ask
    # for the whole machine (Ray places them; the OS shares the cores among what is runnable)
    placed = models["actors"] * models["num_cpus"] + decode["actors"] * decode["num_cpus"]
    assert placed <= cpus + 1e-9
    if rt.model_workers == cpus:
        assert placed == pytest.approx(cpus)


def test_per_stage_layout_on_cpus_keeps_one_pool_per_model():
    """``runtime.model_layout=per_stage``: the layout before the fused pool (for comparison)."""
    per_stage = Config().replace(**{"runtime.model_layout": "per_stage"})
    for cpus in (2, 16):
        config, plan, _ = plan_resources(per_stage, laptop(cpus))
        check_plan_fits(plan, laptop(cpus))
        rt = config.runtime
        assert list(plan) == ["decode", "ocr", "whisper", "clip"]
        reserved = sum(plan[s]["actors"] * plan[s]["num_cpus"] for s in ("clip", "whisper", "ocr"))
        if cpus < 4:
            assert rt.clip_actors == rt.whisper_actors == 1 and plan["clip"]["num_cpus"] == 0.5
            assert rt.decode_workers == max(1, int(cpus - reserved))
        else:
            assert rt.whisper_actors > rt.clip_actors >= rt.ocr_actors >= 1 and plan["whisper"]["num_cpus"] == 1.0
            assert reserved + rt.decode_workers == cpus
    with pytest.raises(ConfigError, match=r"runtime.model_layout.*auto.*per_stage"):
        Config().replace(**{"runtime.model_layout": "fused"})


@pytest.mark.parametrize("gpus, gib, clip_batch", [(1, 16, 256), (8, 80, 1024), (1, 0, 256)])
def test_gpu_plans_for_1_and_8_gpus(gpus, gib, clip_batch):
    """GPUs: separate CLIP and Whisper actors sharing each GPU (never the fused CPU pool)."""
    machine = Machine(cpus=24 * gpus, memory_bytes=240 * GIB * gpus, gpus=gpus, gpu_memory_bytes=gib * GIB)
    config, plan, reasons = plan_resources(Config(), machine)  # device auto: the GPUs are used
    check_plan_fits(plan, machine)
    rt = config.runtime
    assert rt.clip_actors == rt.whisper_actors == gpus and rt.num_gpus_per_actor == 0.5
    assert plan["clip"]["num_gpus"] == 0.5 and plan["clip"]["num_cpus"] == 1.0
    assert rt.clip_batch_size == clip_batch and rt.videos_per_batch == 32
    assert plan["ocr"]["num_gpus"] == 0.0 and rt.ocr_actors >= 1  # OCR runs on the CPUs beside the GPUs
    assert rt.decode_workers == machine.cpus - 2 * gpus - rt.ocr_actors
    assert "16 GiB per GPU" in reasons["runtime.clip_batch_size"] or gib == 80
    assert ("not known" in reasons["runtime.clip_batch_size"]) == (gib == 0)
    assert list(plan) == ["decode", "ocr", "whisper", "clip"] and "unused" in reasons["runtime.model_workers"]
    # the same machine with device=cpu plans for its cores only: the fused CPU pool
    cpu_config, cpu_plan, _ = plan_resources(CPU, machine)
    assert list(cpu_plan) == ["decode", "models"] and cpu_plan["models"]["num_gpus"] == 0.0
    assert cpu_config.runtime.clip_batch_size == 64


def test_explicit_keys_are_kept_and_not_explained():
    config, reasons = resolve_runtime(CPU.replace(**{"runtime.clip_batch_size": 7, "runtime.torch_threads": 3,
                                                     "runtime.model_layout": "per_stage"}), laptop(8))
    assert config.runtime.clip_batch_size == 7 and config.runtime.torch_threads == 3
    assert "runtime.clip_batch_size" not in reasons and "runtime.torch_threads" not in reasons
    _, plan, _ = plan_resources(config, laptop(8))
    assert plan["whisper"]["torch_threads"] == plan["clip"]["torch_threads"] == 3


def test_decode_actors_are_bounded_by_memory():
    small = Machine(cpus=64, memory_bytes=16 * GIB)
    config, reasons = resolve_runtime(CPU, small)
    assert config.runtime.decode_workers < 64 - 35 and "memory" in reasons["runtime.decode_workers"]
    # the fused CPU pool: 8 workers' worth of memory keeps decode in proportion (2), and the
    # workers that fit beside it (7)
    assert (config.runtime.decode_workers, config.runtime.model_workers) == (2, 7)
    assert "memory" in reasons["runtime.model_workers"]
    per_stage, reasons = resolve_runtime(CPU.replace(**{"runtime.model_layout": "per_stage"}), small)
    assert per_stage.runtime.decode_workers < 64 - 35 and "memory" in reasons["runtime.decode_workers"]


def test_machine_from_ray_resources():
    m = Machine.from_ray({"CPU": 96.0, "GPU": 8.0, "memory": 500 * GIB, "accelerator_type:H100": 8.0}, nodes=2)
    assert (m.cpus, m.gpus, m.gpu_memory_bytes, m.nodes, m.gpu_type) == (96.0, 8.0, 80 * GIB, 2, "H100")
    assert "8 GPUs (H100), 80 GiB each on 2 nodes" in m.describe()
    assert Machine.from_ray({"CPU": 4.0}).gpus == 0.0
    local = Machine.local()
    assert local.cpus >= 1 and local.memory_bytes > GIB


def test_many_model_actors_on_two_cores_still_fit():
    many = CPU.replace(**{"runtime.clip_actors": 4, "runtime.whisper_actors": 4, "runtime.model_layout": "per_stage"})
    _, plan, _ = plan_resources(many, laptop(2))
    # what one actor of each of the three model pools leaves (2 - 3 x 0.5), never negative
    assert plan["decode"]["num_cpus"] == 0.5
    check_plan_fits(plan, laptop(2))


def test_a_plan_that_cannot_fit_names_the_fix():
    config = Config().replace(**{"runtime.device": "cuda", "runtime.num_gpus_per_actor": 1.0})
    with pytest.raises(RuntimeError, match=r"need 2 GPUs .* has 1; set runtime.num_gpus_per_actor=0.5"):
        check_plan_fits(plan_resources(config, laptop(16, gpus=1))[1], laptop(16, gpus=1))
    check_plan_fits(plan_resources(config.replace(**{"runtime.num_gpus_per_actor": 0.5}), laptop(16, 1))[1],
                    laptop(16, 1))
    with pytest.raises(RuntimeError, match="needs 4 CPUs .* has 2"):
        check_plan_fits(plan_resources(config, laptop(2, gpus=2))[1], laptop(2, gpus=2))


def test_stages_built_outside_a_run_resolve_for_this_machine():
    from extract.config.machine import resolved_here

    config = resolved_here(Config())
    assert config.runtime.resolved and resolved_here(config) is config


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
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: next(seen))
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: requests.append(bundles))
    monkeypatch.setattr(pipeline, "GPU_POLL_S", 0.0)
    config = Config().replace(**{"runtime.device": "cuda", "runtime.num_gpus_per_actor": 1.0,
                                 "schedule.gpu_wait_s": 60.0})
    assert pipeline.connect_cluster(config)["GPU"] == 2.0
    assert requests == [[{"GPU": 1.0}, {"GPU": 1.0}], []]


def test_ray_start_is_tried_again_after_its_startup_timeout(monkeypatch):
    """Ray's fixed 30 s wait for a new raylet, missed on a loaded machine, is tried again after
    the failed attempt's processes are killed; three misses, or any other error, are raised
    (stubbed ``ray.init``: no Ray started)."""
    import os
    import subprocess

    import ray

    from extract.pipeline import ray_backend as pipeline

    timeout = Exception("The current node timed out during startup. This could happen because ...")
    calls, started = [], []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            started.append(subprocess.Popen(["sleep", "600"]))  # the raylet that never registered
            raise timeout

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    pipeline.start_local_ray(num_cpus=2)
    assert calls == [{"num_cpus": 2}] * 2
    assert not os.path.exists(f"/proc/{started[0].pid}"), "the failed attempt's process was left running"

    def always(error):
        def init(**kwargs):
            calls.append(kwargs)
            raise error
        return init

    calls.clear()
    monkeypatch.setattr(ray, "init", always(timeout))
    with pytest.raises(Exception, match="timed out during startup"):
        pipeline.start_local_ray(num_cpus=2)
    assert len(calls) == pipeline.RAY_START_ATTEMPTS
    calls.clear()
    monkeypatch.setattr(ray, "init", always(ValueError("num_cpus must be positive")))
    with pytest.raises(ValueError):
        pipeline.start_local_ray(num_cpus=-1)
    assert len(calls) == 1


def test_a_disabled_ocr_stage_gets_no_pool():
    per_stage = CPU.replace(**{"runtime.model_layout": "per_stage"})
    _, plan, _ = plan_resources(per_stage.replace(**{"ocr.enabled": False}), laptop(2))
    assert list(plan) == ["decode", "whisper", "clip"]
    _, plan, _ = plan_resources(per_stage, laptop(2))
    assert list(plan) == ["decode", "ocr", "whisper", "clip"]


def test_accelerator_resource_places_the_gpu_stages_on_the_nodes_that_declare_it():
    from extract.config import ConfigError, load_config

    config = CPU.replace(**{"runtime.accelerator_resource": "accel"})
    machine = Machine.from_ray({"CPU": 6.0, "memory": 24 * GIB, "accel": 2.0}, nodes=3, accelerator_resource="accel")
    assert machine.accelerators == 2.0 and "2 accelerator resource units on 3 nodes" in machine.describe()
    resolved, plan, reasons = plan_resources(config, machine)
    check_plan_fits(plan, machine)
    # the CPU layout, but Whisper and CLIP ask for a share of the custom resource, OCR and decode do not
    assert plan["whisper"]["resources"] == plan["clip"]["resources"] == {"accel": 0.5}
    assert plan["ocr"]["resources"] == plan["decode"]["resources"] == {}
    assert plan["clip"]["num_gpus"] == plan["whisper"]["num_gpus"] == 0.0
    assert "of accel per Whisper or CLIP actor" in reasons["runtime.num_gpus_per_actor"]
    # unset: no custom resource asked for, and the reason says the share is unused
    _, plain, plain_reasons = plan_resources(CPU, machine)
    assert all(p["resources"] == {} for p in plain.values())
    assert plain_reasons["runtime.num_gpus_per_actor"] == "unused: no GPU"
    # a cluster without (enough of) the resource fails at plan time, naming the key and the fix
    for units in (0.0, 0.5):
        short = Machine(cpus=6, memory_bytes=24 * GIB, accelerators=units)
        with pytest.raises(RuntimeError, match=r"need 1 of the Ray resource 'accel' \(runtime.accelerator_resource"):
            check_plan_fits(plan_resources(config, short)[1], short)
    # on a GPU run the actors ask for both their GPU share and the resource
    gpu = Machine(cpus=16, memory_bytes=64 * GIB, gpus=2, gpu_memory_bytes=24 * GIB, accelerators=2)
    _, gpu_plan, _ = plan_resources(Config().replace(**{"runtime.accelerator_resource": "accel"}), gpu)
    assert gpu_plan["clip"]["num_gpus"] == 0.5 and gpu_plan["clip"]["resources"] == {"accel": 0.5}
    check_plan_fits(gpu_plan, gpu)
    # the key is validated where configs load
    assert load_config([], ["runtime.accelerator_resource=fake_gpu"]).runtime.accelerator_resource == "fake_gpu"
    for bad in ("GPU", "CPU", "node:127.0.0.1", "two words"):
        with pytest.raises(ConfigError, match="runtime.accelerator_resource"):
            load_config([], [f"runtime.accelerator_resource={bad}"])


@pytest.mark.parametrize("machine, layout", [
    (Machine(cpus=2, memory_bytes=8 * GIB), "fused"),
    (Machine(cpus=2, memory_bytes=8 * GIB), "per_stage"),
    (Machine(cpus=16, memory_bytes=64 * GIB, gpus=2, gpu_memory_bytes=24 * GIB), "gpu"),
    (Machine(cpus=16, memory_bytes=64 * GIB, gpus=2, gpu_memory_bytes=24 * GIB), "gpu unused")])
def test_the_plan_printed_at_start_lists_what_applies_each_with_its_reason(machine, layout):
    """A line per runtime key this machine's pools use, with its value, what it counts and why:
    no GPU share on a CPU-only machine, no per-stage actor counts beside the fused model pool
    (issue 34: ``num_gpus_per_actor=0.5`` and ``clip_actors`` were shown on a CPU-only laptop)."""
    from extract.config import RUNTIME_UNITS
    from extract.config.machine import explained

    config = {"fused": Config(), "per_stage": Config().replace(**{"runtime.model_layout": "per_stage"}),
              "gpu": Config(), "gpu unused": CPU}[layout].replace(**{"runtime.clip_batch_size": 32})
    resolved, plan, reasons = plan_resources(config, machine)
    lines = plan_lines(resolved, plan, reasons, machine)
    shown = {line.split()[0]: line for line in lines[1:]}
    assert lines[0].startswith(f"plan for {machine.describe()}") and "manifest" not in "\n".join(lines)
    expected = {"fused": {"model_workers"}, "per_stage": {"clip_actors", "whisper_actors", "ocr_actors"},
                "gpu": {"clip_actors", "whisper_actors", "ocr_actors", "num_gpus_per_actor"},
                "gpu unused": {"model_workers"}}[layout]
    common = {"decode_workers", "decode_threads", "decode_batch_size", "videos_per_batch", "clip_batch_size",
              "whisper_batch_size", "torch_threads"}
    assert set(shown) == expected | common
    assert ("no GPU" in lines[0]) == (machine.gpus == 0) and ("GPUs unused" in lines[0]) == (layout == "gpu unused")
    for key, line in shown.items():
        value = getattr(resolved.runtime, key)
        why = reasons.get(f"runtime.{key}", "set in the config")
        assert line.split()[1] == f"{value:g}" and line.endswith(f"{RUNTIME_UNITS[key]}; {why}"), line
        assert not why.startswith("unused"), line
    # frames per CLIP pass and videos per call are named apart (a record's pools say videos_per_batch)
    assert "frames per CLIP forward pass; set in the config" in shown["clip_batch_size"]
    assert "videos per model call" in shown["videos_per_batch"]
    assert all("videos_per_batch" in p and "batch_size" not in p for p in plan.values())
    # the run manifest keeps value and reason for every resolved key
    assert explained(resolved, reasons)["runtime.decode_threads"] == f"1 ({reasons['runtime.decode_threads']})"


def test_peak_rss_is_the_process_own_not_its_parents():
    """A child of a large process reports its own peak (``ru_maxrss`` would carry the parent's
    over ``exec``: the benchmark children all read the harness's 2.4 GB that way)."""
    import subprocess
    import sys

    import numpy as np

    from extract.pipeline.resources import peak_rss_mb

    ballast = np.ones(400 * 2**20, np.uint8)  # 400 MiB resident in this process
    child = subprocess.run([sys.executable, "-c", "from extract.pipeline.resources import peak_rss_mb; "
                            "import resource; print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                           capture_output=True, text=True, check=True)
    own_mb, inherited_kib = map(float, child.stdout.split())
    assert peak_rss_mb() > 400 and ballast.sum() == ballast.size
    assert own_mb < 200, own_mb
    assert inherited_kib / 1024 > 400  # what ru_maxrss says, and why it is not used


def test_largest_uploads_start_first():
    """The executor hands the backend the largest uploads first (unknown sizes last, ties in
    manifest order), so a long video does not start last and run alone."""
    from extract.pipeline.executor import Backend, run_stages
    from extract.rows import rows_to_batch

    seen = []

    def execute(rows, config, stages=None):
        seen.extend(row["video_id"] for row in rows)
        return iter([rows_to_batch(rows)]), {}

    todo = [{"video_id": v, "source_bytes": b} for v, b in [("a", 10), ("b", None), ("c", 300), ("d", 20), ("e", 300)]]
    finished = [row["video_id"] for batch in run_stages(todo, Config(), None, Backend(execute)) for row in batch]
    assert seen == ["c", "e", "d", "a", "b"] and sorted(finished) == ["a", "b", "c", "d", "e"]
