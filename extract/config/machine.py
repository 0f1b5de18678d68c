"""Defaults that fit the machine: the ``runtime`` keys a config leaves null, resolved at plan time.

A run plans for what it has: the CPU cores, memory and GPUs of the Ray cluster (summed over its
nodes, so a cluster run plans for its nodes, not for the driver's laptop) or of this machine.
``resolve_runtime`` fills every null key of ``AUTO_RUNTIME_KEYS`` and says why; keys a config
sets are kept as they are. The rules, and the measurements behind them (bench/RESULTS.md):

On GPUs (``runtime.device`` ``auto`` or ``cuda`` and a GPU present):

- ``num_gpus_per_actor`` 0.5 and one CLIP plus one Whisper actor per GPU: the two models share
  each GPU (ViT-B-32 and Whisper small together take a few GB), so every GPU runs both stages;
- ``clip_batch_size`` 256 / 512 / 1024 frames and ``whisper_batch_size`` 16 / 32 / 64 windows
  for under 24 / under 48 / at least 48 GiB per GPU (fp16 activations scale with the batch);
  ``videos_per_batch`` 32, ``decode_batch_size`` 4: a model call holds about 1,000 frames;
- OCR actors (rapidocr on onnxruntime's CPU provider) on 30 % of the CPUs: at 4 frames OCR is
  about 0.7 CPU-s per video, the CPU work that must keep up with the GPUs;
- decode actors: every CPU the model actors (1 CPU each) leave, one FFmpeg thread each.

On CPUs only (``runtime.model_layout`` ``auto``): one fused pool of model workers
(``extract.stages.models``), one per core, each holding every model (OCR, Whisper, CLIP) and
taking a batch through all of them, plus decode actors for about ``DECODE_CPU_SHARE`` of the
cores. The operating system shares the cores among whatever is runnable, so whichever stage
has a backlog gets every free core: no core waits while another stage's queue grows.
``videos_per_batch`` 2 keeps the last batch short (one worker runs alone at the end for at most
one batch), one torch thread per worker (a second thread per model costs more CPU than it
saves at these sizes). Workers are bounded by memory (``FUSED_WORKER_BYTES`` each).

Measured on 2 cores (bench/RESULTS.md): the per-stage layout before it (one Whisper and one CLIP
actor of half a CPU each, one decode actor) left a core idle while the longest stage ran alone:
about 55 % of the cores used on real uploads. ``runtime.model_layout=per_stage`` keeps that
layout (the cores split by the stages' measured share of the CPU work from 4 cores up:
Whisper about 50 %, CLIP about 20 %, OCR about 10 %, decode the rest).

Decode actors are also bounded by memory: ``DECODE_ACTOR_BYTES`` each after the model workers.

Nothing here imports Ray or torch: ``Machine.from_ray`` takes what ``ray.cluster_resources()``
returns, ``Machine.local`` reads this machine's facts from the OS.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from extract.config.sections import AUTO_RUNTIME_KEYS, Config

GIB = 1024**3
DECODE_ACTOR_BYTES = 3 * GIB // 4  # a decode actor and its FFmpeg child, typical peak on 1080p uploads
MODEL_ACTOR_BYTES = 3 * GIB // 2  # a CPU model actor: torch, the weights (Whisper small ~1 GB) and activations
FUSED_WORKER_BYTES = 2 * GIB  # a fused CPU model worker: Whisper (base ~0.3, small ~1 GB), CLIP, OCR, activations
DECODE_CPU_SHARE = 0.2  # decode's share of the CPU work on the bench clips (17 % in the 2-core run)
FUSED_VIDEOS_PER_BATCH = 2  # CPU-only fused layout: a short last batch (see the module doc)
WHISPER_CPU_SHARE = 0.5  # Whisper's share of the CPU work on the bench clips (decode+OCR+Whisper+CLIP)
CLIP_CPU_SHARE = 0.2
OCR_CPU_SHARE = 0.1  # rapidocr at 4 frames: ~0.7 CPU-s per video (bench/RESULTS.md)
OCR_GPU_NODE_SHARE = 0.3  # on GPU nodes OCR is CPU work that keeps up with the GPUs' videos
# GPU memory by the accelerator type Ray reports (``accelerator_type:<name>``), GiB; the
# smallest variant where a name covers several (A100 40/80 GB: 40).
GPU_MEMORY_GIB = {"H200": 141, "H100": 80, "GH200": 96, "B200": 180, "A100": 40, "A100-40G": 40, "A100-80G": 80,
                  "L40S": 48, "L40": 48, "A40": 48, "A10G": 24, "A10": 24, "L4": 24, "T4": 16, "V100": 16,
                  "RTX": 24}
GPU_SHARE = 0.5  # num_gpus_per_actor on GPUs: a CLIP and a Whisper actor share each GPU
UNKNOWN_GPU_GIB = 16  # plan conservatively when the GPU's memory is not known


@dataclass(frozen=True)
class Machine:
    """What a run has: CPU cores, memory (bytes), GPUs, the memory of one GPU (bytes, 0 = not
    known) and the number of nodes, summed over a Ray cluster; ``accelerators`` is the total of
    the custom resource ``runtime.accelerator_resource`` names (0 when it is not set)."""

    cpus: float
    memory_bytes: float
    gpus: float = 0.0
    gpu_memory_bytes: float = 0.0
    nodes: int = 1
    gpu_type: str | None = None
    accelerators: float = 0.0

    @classmethod
    def from_ray(cls, resources: Mapping[str, float], nodes: int = 1,
                 accelerator_resource: str | None = None) -> "Machine":
        """From ``ray.cluster_resources()`` (``CPU``, ``GPU``, ``memory`` in bytes,
        ``accelerator_type:<name>`` keys that name the GPU model, and custom resources, of which
        ``accelerator_resource`` is counted)."""
        types = [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
        gpu_type = min(types, key=lambda t: GPU_MEMORY_GIB.get(t, UNKNOWN_GPU_GIB), default=None)
        gib = GPU_MEMORY_GIB.get(gpu_type, 0) if gpu_type else 0
        accelerators = float(resources.get(accelerator_resource, 0.0)) if accelerator_resource else 0.0
        return cls(cpus=float(resources.get("CPU", 1.0)), memory_bytes=float(resources.get("memory", 0.0)),
                   gpus=float(resources.get("GPU", 0.0)), gpu_memory_bytes=gib * GIB, nodes=nodes, gpu_type=gpu_type,
                   accelerators=accelerators)

    @classmethod
    def local(cls) -> "Machine":
        """This machine: cores this process may use, physical memory, NVIDIA GPUs the driver lists."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        gpus_dir = Path("/proc/driver/nvidia/gpus")
        gpus = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            gpus = min(gpus, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
        return cls(cpus=float(cpus), memory_bytes=float(memory), gpus=float(gpus))

    def describe(self) -> str:
        gpu = ""
        if self.gpus:
            mem = f", {self.gpu_memory_bytes / GIB:.0f} GiB each" if self.gpu_memory_bytes else ""
            gpu = f", {self.gpus:g} GPU{'s' if self.gpus != 1 else ''}{f' ({self.gpu_type})' if self.gpu_type else ''}{mem}"
        nodes = f" on {self.nodes} nodes" if self.nodes > 1 else ""
        accel = f", {self.accelerators:g} accelerator resource units" if self.accelerators else ""
        return f"{self.cpus:g} CPUs, {self.memory_bytes / GIB:.0f} GiB{gpu}{accel}{nodes}"


def uses_gpus(config: Config, machine: Machine) -> bool:
    """Whether the model actors run on GPUs: ``cuda``, or ``auto`` with a GPU present."""
    return config.runtime.device != "cpu" and machine.gpus > 0


def fused_models(config: Config, machine: Machine) -> bool:
    """Whether the model stages run as one fused pool: ``model_layout`` ``auto`` on a CPU-only run
    without ``accelerator_resource`` (that key places the model stages' own pools on chosen nodes)."""
    rt = config.runtime
    return rt.model_layout == "auto" and not rt.accelerator_resource and not uses_gpus(config, machine)


def model_actor_cpus(machine: Machine, on_gpu: bool) -> float:
    """CPUs a model actor reserves: 1 beside a GPU or from 4 cores up; on 2-3 cores half a CPU
    (a quarter on one core), so all three pools fit a laptop."""
    if on_gpu or machine.cpus >= 4:
        return 1.0
    return min(0.5, machine.cpus / 4)


def resolve_runtime(config: Config, machine: Machine) -> tuple[Config, dict[str, str]]:
    """``config`` with every null ``runtime`` key resolved for ``machine``, and per resolved key
    (``runtime.<key>``) why, in a few words (``unused: ...`` for a key this layout does not
    use). Keys the config sets are kept."""
    rt = config.runtime
    on_gpu = uses_gpus(config, machine)
    chosen: dict[str, tuple[Any, str]] = {}
    cpu_share_reason = (f"of {rt.accelerator_resource} per Whisper or CLIP actor: two share one unit"
                        if rt.accelerator_resource else "unused: no GPU")
    if on_gpu:
        gib = machine.gpu_memory_bytes / GIB if machine.gpu_memory_bytes else UNKNOWN_GPU_GIB
        known = "" if machine.gpu_memory_bytes else " (memory not known: planned as 16)"
        tier = 0 if gib < 24 else 1 if gib < 48 else 2
        per_gpu = f"{gib:.0f} GiB per GPU{known}"
        actors = max(1, int(machine.gpus))
        chosen.update(
            num_gpus_per_actor=(GPU_SHARE, "a CLIP and a Whisper actor share each GPU"),
            clip_actors=(actors, f"one per GPU ({machine.gpus:g})"),
            whisper_actors=(actors, f"one per GPU ({machine.gpus:g})"),
            clip_batch_size=((256, 512, 1024)[tier], per_gpu),
            whisper_batch_size=((16, 32, 64)[tier], per_gpu),
            ocr_actors=(max(1, round(machine.cpus * OCR_GPU_NODE_SHARE)),
                        f"{OCR_GPU_NODE_SHARE:.0%} of {machine.cpus:g} CPUs: OCR runs on CPUs beside the GPUs"),
            videos_per_batch=(32, "about 1,000 frames per CLIP call on a GPU"),
            decode_batch_size=(4, "a steady stream of decoded videos for the GPUs"),
            torch_threads=(1, "the model runs on the GPU; one CPU per model actor"),
        )
    elif fused_models(config, machine):
        decode = max(1, round(machine.cpus * DECODE_CPU_SHARE))
        why_decode = f"{DECODE_CPU_SHARE:.0%} of {machine.cpus:g} cores (decode's share of the CPU work)"
        if machine.memory_bytes:  # when memory binds, decode keeps its share of the workers that fit
            fit = max(1, min(int(machine.cpus), int(machine.memory_bytes // FUSED_WORKER_BYTES)))
            by_memory = max(1, round(fit * DECODE_CPU_SHARE / (1 - DECODE_CPU_SHARE)))
            if by_memory < decode:
                decode, why_decode = by_memory, (f"memory: {machine.memory_bytes / GIB:.0f} GiB holds {fit} model "
                                                  f"workers; decode actors in proportion")
        left = machine.memory_bytes - (rt.decode_workers or decode) * DECODE_ACTOR_BYTES
        by_memory = max(1, int(left // FUSED_WORKER_BYTES)) if machine.memory_bytes else 1 << 30
        workers = max(1, min(int(machine.cpus), by_memory))
        why_workers = (f"one per core ({machine.cpus:g}): whichever stage has work gets a free core"
                       if workers == max(1, int(machine.cpus)) else
                       f"memory: {machine.memory_bytes / GIB:.0f} GiB at {FUSED_WORKER_BYTES / GIB:g} GiB per worker")
        unused = "unused: the fused model workers (runtime.model_workers) run every model stage"
        chosen.update(
            num_gpus_per_actor=(GPU_SHARE, cpu_share_reason),
            model_workers=(workers, why_workers),
            clip_actors=(1, unused), whisper_actors=(1, unused), ocr_actors=(1, unused),
            clip_batch_size=(64, "CPU: throughput flat from 8 frames up; bounded memory"),
            whisper_batch_size=(8, "CPU: a call of a few videos up to 2 minutes never splits"),
            videos_per_batch=(FUSED_VIDEOS_PER_BATCH, "CPU: a short last batch, while only one worker is left"),
            decode_batch_size=(2, "CPU: decoded videos reach the models soon"),
            torch_threads=(1, "one core per model worker"),
            decode_workers=(decode, why_decode),
        )
    elif machine.cpus < 4:
        chosen.update(
            num_gpus_per_actor=(GPU_SHARE, cpu_share_reason),
            clip_actors=(1, f"{machine.cpus:g} cores: one actor per model"),
            whisper_actors=(1, f"{machine.cpus:g} cores: one actor per model"),
            ocr_actors=(1, f"{machine.cpus:g} cores: one actor per model"),
            clip_batch_size=(64, "CPU: throughput flat from 8 frames up; bounded memory"),
            whisper_batch_size=(8, "CPU: a call of 4 videos up to 60 s never splits"),
            videos_per_batch=(4, "CPU: short fill and drain of the pipeline, full Whisper batches"),
            decode_batch_size=(2, "CPU: decoded videos reach the models soon"),
            torch_threads=(1, "half a CPU per model actor"),
        )
    else:
        whisper = max(1, round(machine.cpus * WHISPER_CPU_SHARE))
        clip = max(1, round(machine.cpus * CLIP_CPU_SHARE))
        ocr = max(1, round(machine.cpus * OCR_CPU_SHARE))
        chosen.update(
            num_gpus_per_actor=(GPU_SHARE, cpu_share_reason),
            clip_actors=(clip, f"{CLIP_CPU_SHARE:.0%} of {machine.cpus:g} cores (CLIP's share of the CPU work)"),
            whisper_actors=(whisper, f"{WHISPER_CPU_SHARE:.0%} of {machine.cpus:g} cores "
                                     "(Whisper's share of the CPU work)"),
            ocr_actors=(ocr, f"{OCR_CPU_SHARE:.0%} of {machine.cpus:g} cores (OCR's share of the CPU work)"),
            clip_batch_size=(64, "CPU: throughput flat from 8 frames up; bounded memory"),
            whisper_batch_size=(8, "CPU: a call of 4 videos up to 60 s never splits"),
            videos_per_batch=(4, "CPU: short fill and drain of the pipeline, full Whisper batches"),
            decode_batch_size=(2, "CPU: decoded videos reach the models soon"),
            torch_threads=(1, "one core per model actor"),
        )
    chosen["decode_threads"] = (1, "a second FFmpeg thread costs more CPU than it saves")
    chosen.setdefault("model_workers", (1, "unused: one actor pool per model stage"))
    if "decode_workers" not in chosen:  # per-stage pools: decode on the CPUs the model actors leave
        model_actors = ((rt.clip_actors or chosen["clip_actors"][0]) + (rt.whisper_actors or chosen["whisper_actors"][0])
                        + ((rt.ocr_actors or chosen["ocr_actors"][0]) if config.ocr.enabled else 0))
        free_cpus = machine.cpus - model_actors * model_actor_cpus(machine, on_gpu)
        by_cpu = max(1, int(free_cpus))
        why = f"the {max(free_cpus, 0):g} CPU{'' if free_cpus == 1 else 's'} the model actors leave"
        if machine.memory_bytes:
            by_memory = max(1, int((machine.memory_bytes - model_actors * MODEL_ACTOR_BYTES) // DECODE_ACTOR_BYTES))
            if by_memory < by_cpu:
                by_cpu, why = by_memory, f"memory: {machine.memory_bytes / GIB:.0f} GiB at {DECODE_ACTOR_BYTES / GIB:g} GiB per decode actor"
        chosen["decode_workers"] = (by_cpu, why)

    updates, reasons = {}, {}
    for key in AUTO_RUNTIME_KEYS:
        if getattr(rt, key) is None:
            value, why = chosen[key]
            updates[key] = value
            reasons[f"runtime.{key}"] = why
    resolved = dataclasses.replace(config, runtime=dataclasses.replace(rt, **updates))
    assert resolved.runtime.resolved
    return resolved, reasons


def explained(config: Config, reasons: Mapping[str, str]) -> dict[str, str]:
    """``resolve_runtime``'s ``reasons`` as the run manifest keeps them (``resources.defaults``):
    ``runtime.<key>`` -> ``"<value> (<why>)"`` with the value of the resolved ``config``."""
    return {key: f"{getattr(config.runtime, key.split('.', 1)[1])} ({why})" for key, why in reasons.items()}


def resolved_here(config: Config) -> Config:
    """``config`` resolved for this machine when it is not yet (a stage built outside a run)."""
    if config.runtime.resolved:
        return config
    return resolve_runtime(config, Machine.local())[0]

