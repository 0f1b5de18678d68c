"""CLIP image throughput: frames/s embedded from uint8 frames with ViT-B-32 (random init).

End to end through ``ClipEmbedder.embed_frames``: packing across videos, host->device copy of
uint8, normalisation on the device, encoding, L2 normalisation and the copy back to numpy.
Random weights run the same arithmetic as trained ones, so the numbers hold for real weights.

CPU runs are kept small (the frame count is a few batches); on CUDA, fp16 autocast with more
frames and larger batches. ``python -m bench.bench_clip [OUT_DIR]`` prints a Markdown table and
writes ``OUT_DIR/bench_clip.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import device_name, load_average, machine_info

MODEL = "ViT-B-32"
CPU_BATCH_SIZES = (1, 8, 32, 128)
CUDA_BATCH_SIZES = (1, 8, 32, 128, 256, 512)
FRAMES_PER_VIDEO = 16  # typical sample of a short video (sampling.max_frames is 32)
CPU_MIN_FRAMES = 16  # frames timed per CPU batch size (at least one batch)
CPU_WARMUP_FRAMES = 8  # a full-size warm-up batch would double the CPU run for little gain
CUDA_FRAMES = 8192  # frames timed per CUDA batch size


def _time_embedding(embedder, videos: list[np.ndarray], batch_size: int) -> float:
    """Seconds for one ``embed_frames`` call, after a warm-up call at this batch size."""
    import torch

    warmup = batch_size if embedder.device == "cuda" else min(batch_size, CPU_WARMUP_FRAMES)
    embedder.embed_frames([videos[0][:1]] * warmup, batch_size)
    if embedder.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    embedder.embed_frames(videos, batch_size)
    if embedder.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_device(device: str) -> dict[str, Any]:
    """Frames/s per batch size on ``device`` (``cpu`` or ``cuda``)."""
    import torch

    from extract.config import ClipModelConfig
    from extract.models.clip import ClipEmbedder

    embedder = ClipEmbedder(ClipModelConfig(name=MODEL, pretrained=None), device=device)
    size = embedder.spec.image_size
    rng = np.random.default_rng(0)
    rows = []
    for batch_size in (CUDA_BATCH_SIZES if device == "cuda" else CPU_BATCH_SIZES):
        n_frames = CUDA_FRAMES if device == "cuda" else max(CPU_MIN_FRAMES, batch_size)
        counts = [FRAMES_PER_VIDEO] * (n_frames // FRAMES_PER_VIDEO) + [n_frames % FRAMES_PER_VIDEO]
        videos = [rng.integers(0, 256, (c, size, size, 3), dtype=np.uint8) for c in counts if c]
        seconds = _time_embedding(embedder, videos, batch_size)
        rows.append({"batch_size": batch_size, "frames": n_frames, "seconds": round(seconds, 4),
                     "frames_per_s": round(n_frames / seconds, 1)})
    # Load average: on a shared machine, busy cores make small batches look much slower.
    return {"device": device, "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
            "load_avg_1m": load_average(), "precision": "fp16 autocast" if device == "cuda" else "fp32",
            "results": rows}


def run(out_dir: str | Path) -> dict[str, Any]:
    """Benchmark on CPU, and on CUDA when available; write ``out_dir/bench_clip.json``."""
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result = {"benchmark": "clip_embed_frames", "model": f"{MODEL} (random init)", "machine": machine_info(),
              "input": "uint8 frames, packed across videos of 16 frames",
              "runs": [bench_device(d) for d in devices]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_clip.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as a Markdown table."""
    lines = [f"CLIP {result['model']}, {result['input']}", "",
             "| device | precision | batch size | frames | seconds | frames/s |",
             "|---|---|---:|---:|---:|---:|"]
    for device_run in result["runs"]:
        label = (f"{device_run['device']} ({device_run['device_name']}, {device_run['torch_threads']} threads, "
                 f"load {device_run['load_avg_1m']})")
        for row in device_run["results"]:
            lines.append(f"| {label} | {device_run['precision']} | {row['batch_size']} | {row['frames']} | "
                         f"{row['seconds']:.2f} | {row['frames_per_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(sys.argv[1] if len(sys.argv) > 1 else "bench/out")))
