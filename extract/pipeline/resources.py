"""The actor pools a run asks Ray for: size, CPUs, GPUs and batch size per stage (no Ray import).
"""

from __future__ import annotations

import logging
from typing import Any

from extract.config import Config
from extract.stages.registry import STAGE_SPECS

log = logging.getLogger("extract")


def resolve_gpus(config: Config, cluster_gpus: float) -> float:
    """GPUs per model actor: ``num_gpus_per_actor`` on CUDA, 0 on CPU (``auto`` asks the cluster)."""
    device = config.runtime.device
    if device == "cpu" or (device == "auto" and cluster_gpus <= 0):
        return 0.0
    if device == "cuda" and cluster_gpus <= 0:
        raise RuntimeError("runtime.device=cuda but the Ray cluster has no GPUs; use runtime.device=auto or cpu")
    return config.runtime.num_gpus_per_actor


def resource_plan(config: Config, cluster_cpus: float, cluster_gpus: float) -> dict[str, dict[str, Any]]:
    """Per stage: actor pool size, CPUs and GPUs per actor, videos per batch, and for the model
    stages torch's CPU threads (``runtime.torch_threads``, 0 = the actor's CPUs, at least 1)."""
    rt = config.runtime
    gpus = resolve_gpus(config, cluster_gpus)
    # On CPU the model actors share the cores with decode; fractional CPUs keep all three
    # pools schedulable on a 2-core laptop (and, a quarter each, on a single core).
    model_cpus = 1.0 if gpus > 0 else min(0.5, cluster_cpus / 4)
    # Ray's own rule for OMP_NUM_THREADS (floor of the CPUs, at least 1), applied through
    # torch.set_num_threads so an OMP_NUM_THREADS exported in the shell does not give every
    # actor all the cores. Two threads for every worker on 2 cores (OMP_NUM_THREADS=2) did not
    # help (bench/RESULTS.md): the models then fight over the same cores. runtime.torch_threads
    # overrides it (e.g. a CPU machine with few decode_workers and cores to spare).
    threads = rt.torch_threads or max(1, int(model_cpus))
    models = [spec for spec in STAGE_SPECS if spec.pool == "model"]
    reserved = model_cpus * sum(getattr(rt, spec.actors_key) for spec in models)
    # What one actor of each model pool leaves (the pools' minimum; more model actors queue).
    cpu_share = 1.0 if gpus > 0 else min(1.0, cluster_cpus - len(models) * model_cpus)
    plan: dict[str, dict[str, Any]] = {}
    for spec in STAGE_SPECS:
        if spec.pool == "cpu":
            plan[spec.name] = {"actors": getattr(rt, spec.actors_key) or max(1, int(cluster_cpus - reserved)),
                               "num_cpus": cpu_share, "num_gpus": 0.0, "batch_size": rt.decode_batch_size}
        else:
            plan[spec.name] = {"actors": getattr(rt, spec.actors_key), "num_cpus": model_cpus, "num_gpus": gpus,
                               "batch_size": rt.videos_per_batch, "torch_threads": threads}
    return plan


def check_plan_fits(plan: dict[str, dict[str, Any]], cluster_cpus: float, cluster_gpus: float) -> None:
    """Raise when the cluster cannot hold one actor of every pool at once.

    The pools start together and each needs at least one actor; one that can never be placed
    would leave the run waiting forever for its results, so this fails it at once with the fix.
    """
    cpus = sum(p["num_cpus"] for p in plan.values())
    gpus = sum(p["num_gpus"] for p in plan.values())
    if gpus > cluster_gpus + 1e-9:
        raise RuntimeError(
            f"one CLIP and one Whisper actor need {gpus:g} GPUs (runtime.num_gpus_per_actor="
            f"{plan['clip']['num_gpus']:g} each) but the Ray cluster has {cluster_gpus:g}; set "
            "runtime.num_gpus_per_actor=0.5 to share one GPU, or add GPU nodes")
    if cpus > cluster_cpus + 1e-9:
        raise RuntimeError(
            f"one actor of each stage needs {cpus:g} CPUs (decode {plan['decode']['num_cpus']:g}, Whisper "
            f"{plan['whisper']['num_cpus']:g}, CLIP {plan['clip']['num_cpus']:g}) but the Ray cluster has "
            f"{cluster_cpus:g}; run on a machine or cluster with at least {cpus:g} CPUs")
