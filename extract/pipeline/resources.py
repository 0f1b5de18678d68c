"""The actor pools a run asks Ray for: size, CPUs, GPUs and batch size per stage (no Ray import),
and the driver's own peak memory.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import Any

from extract.config import RUNTIME_UNITS, Config
from extract.config.machine import DECODE_CPU_SHARE, Machine, fused_models, model_actor_cpus, resolve_runtime
from extract.stages.registry import DECODE, layout_specs, spec_named

log = logging.getLogger("extract")


def resolve_gpus(config: Config, cluster_gpus: float) -> float:
    """GPUs per model actor: ``num_gpus_per_actor`` on CUDA, 0 on CPU (``auto`` asks the cluster)."""
    device = config.runtime.device
    if device == "cpu" or (device == "auto" and cluster_gpus <= 0):
        return 0.0
    if device == "cuda" and cluster_gpus <= 0:
        raise RuntimeError("runtime.device=cuda but the Ray cluster has no GPUs; use runtime.device=auto or cpu")
    return config.runtime.num_gpus_per_actor


def fused_cpu_shares(machine: Machine, model_workers: int, decode_workers: int) -> tuple[float, float]:
    """Ray CPUs per fused model worker and per decode actor, so that all of them fit at once.

    Ray only places actors by these numbers; the cores themselves are shared by the operating
    system among whatever is runnable (work-conserving). Decode gets ``DECODE_CPU_SHARE`` of the
    cores (at most one CPU per actor), the model workers split the rest."""
    decode = min(1.0, machine.cpus * DECODE_CPU_SHARE / max(decode_workers, 1))
    model = min(1.0, max(machine.cpus - decode * decode_workers, 0.0) / max(model_workers, 1))
    return max(model, 0.01), max(decode, 0.01)


def plan_resources(config: Config, machine: Machine) -> tuple[Config, dict[str, dict[str, Any]], dict[str, str]]:
    """``(config with the runtime defaults resolved, the pools, why each default resolved so)``
    (``resolve_runtime``, ``resource_plan``)."""
    resolved, reasons = resolve_runtime(config, machine)
    return resolved, resource_plan(resolved, machine), reasons


def resource_plan(config: Config, machine: Machine) -> dict[str, dict[str, Any]]:
    """Per stage (or the fused ``models`` pool on CPU-only runs, ``extract.stages.registry.layout_specs``)
    of a resolved ``config``: actor pool size, CPUs and GPUs per actor, custom Ray
    ``resources`` per actor (``runtime.accelerator_resource``: ``num_gpus_per_actor`` of it for
    the GPU stages, on a GPU run or not), ``videos_per_batch`` (videos per call of the pool's
    stage: ``runtime.decode_batch_size`` or ``runtime.videos_per_batch``; not the frames or
    windows of one forward pass), and for the model stages torch's CPU threads."""
    if not config.runtime.resolved:
        raise ValueError("resource_plan needs a config resolved by extract.config.machine.resolve_runtime")
    rt = config.runtime
    gpus = resolve_gpus(config, machine.gpus)
    fused = fused_models(config, machine)
    specs = [spec for spec in layout_specs(fused) if spec.enabled(config)]
    models = [spec for spec in specs if spec.pool == "model"]
    if fused:  # every model worker and decode actor placed at once; the OS shares the cores
        model_cpus, cpu_share = fused_cpu_shares(machine, rt.model_workers, rt.decode_workers)
    else:
        # On a 2-core laptop the model actors share the cores with decode: fractional CPUs keep
        # all three pools schedulable (a quarter each on a single core).
        model_cpus = model_actor_cpus(machine, gpus > 0)
        # What one actor of each model pool leaves (the pools' minimum; more model actors queue).
        cpu_share = 1.0 if gpus > 0 else max(min(1.0, machine.cpus - len(models) * model_cpus), 0.25)
    accel = {rt.accelerator_resource: rt.num_gpus_per_actor} if rt.accelerator_resource else {}
    plan: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if spec.pool == "cpu":
            plan[spec.name] = {"actors": getattr(rt, spec.actors_key), "num_cpus": cpu_share, "num_gpus": 0.0,
                               "resources": {}, "videos_per_batch": rt.decode_batch_size}
        else:
            plan[spec.name] = {"actors": getattr(rt, spec.actors_key), "num_cpus": model_cpus,
                               "num_gpus": gpus if spec.uses_gpu else 0.0,
                               "resources": dict(accel) if spec.uses_gpu else {},
                               "videos_per_batch": rt.videos_per_batch, "torch_threads": rt.torch_threads}
    return plan


def plan_lines(config: Config, plan: dict[str, dict[str, Any]], reasons: dict[str, str],
               machine: Machine) -> list[str]:
    """The plan as a person reads it at start: a line per ``runtime`` key that this run's pools
    use (``plan`` of ``resource_plan``: no GPU share without a GPU, no per-stage actor counts
    beside the fused model pool), each with its value, what it counts (``RUNTIME_UNITS``) and
    why (``reasons`` of ``resolve_runtime``, or set in the config)."""
    rt = config.runtime
    if "models" in plan:
        keys = ["model_workers"]
    else:
        keys = [spec_named(name).actors_key for name in plan if name != DECODE.name]
    if any(p["num_gpus"] or p["resources"] for p in plan.values()):
        keys.append("num_gpus_per_actor")
    keys += ["decode_workers", "decode_threads", "decode_batch_size", "videos_per_batch", "clip_batch_size",
             "whisper_batch_size", "torch_threads"]
    gpus = "" if machine.gpus else ", no GPU"
    if machine.gpus and "num_gpus_per_actor" not in keys:
        gpus = f", GPUs unused (runtime.device={rt.device})"
    key_w = max(len(k) for k in keys)
    lines = [f"plan for {machine.describe()}{gpus} (change one: --set runtime.KEY=VALUE):"]
    for key in keys:
        why = reasons.get(f"runtime.{key}", "set in the config")
        lines.append(f"  {key:<{key_w}} {getattr(rt, key):>4g}  {RUNTIME_UNITS[key]}; {why}")
    return lines


def check_plan_fits(plan: dict[str, dict[str, Any]], machine: Machine) -> None:
    """Raise when the cluster cannot hold one actor of every pool at once (every worker of the
    fused model pool, which starts whole).

    The pools start together and each needs at least one actor; one that can never be placed
    would leave the run waiting forever for its results, so this fails it at once with the fix.
    """
    cpus = sum(p["num_cpus"] * (p["actors"] if name == "models" else 1) for name, p in plan.items())
    per_stage = ", ".join(f"{name} {p['num_cpus']:g}" for name, p in plan.items())
    gpus = sum(p["num_gpus"] for p in plan.values())
    if gpus > machine.gpus + 1e-9:
        raise RuntimeError(
            f"one CLIP and one Whisper actor need {gpus:g} GPUs (runtime.num_gpus_per_actor="
            f"{plan['clip']['num_gpus']:g} each) but the Ray cluster has {machine.gpus:g}; set "
            "runtime.num_gpus_per_actor=0.5 to share one GPU, or add GPU nodes")
    accel = {name for p in plan.values() for name in p["resources"]}  # runtime.accelerator_resource, if set
    for name in accel:
        need = sum(p["resources"].get(name, 0.0) for p in plan.values())
        if need > machine.accelerators + 1e-9:
            raise RuntimeError(
                f"one CLIP and one Whisper actor need {need:g} of the Ray resource {name!r} "
                f"(runtime.accelerator_resource; runtime.num_gpus_per_actor={plan['clip']['resources'][name]:g} each) "
                f"but the Ray cluster has {machine.accelerators:g}; start the model nodes with "
                f"`ray start --resources='{{\"{name}\": 1}}'` or unset runtime.accelerator_resource")
    if cpus > machine.cpus + 1e-9:
        raise RuntimeError(
            f"one actor of each stage needs {cpus:g} CPUs ({per_stage}) but the Ray cluster has "
            f"{machine.cpus:g}; run on a machine or cluster with at least {cpus:g} CPUs")


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``), MB. Not ``ru_maxrss``: Linux carries that
    over ``exec`` from the parent, so a child of a large process (a scheduler, a benchmark
    harness) would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; no /proc elsewhere
