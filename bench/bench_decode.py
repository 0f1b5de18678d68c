"""Decode micro-benchmark: decode-all-then-pick vs the decode stage's strategy, and the cost of
process isolation.

Clips: 60 s, 1280x720, 30 fps H.264 (``veryfast``) + AAC, written with ``write_clip``, with
key frames every 1 s, every 2 s (phone-like) and x264's default (250 frames, 8.3 s). Sampling:
1 frame per second (``sampling.fps = 1``, ``max_frames = 60`` so all 60 are kept), video only:
audio would be decoded the same way by every variant, so it is left out (the stage variants
call ``decode_video(..., audio=False)``; decode-all-then-pick never decodes it).

Variants, each timed ``repeats`` times (best wall time kept), same decoder threads
(``runtime.decode_threads``):

- ``decode all, then pick``: decode every frame, convert each to a full-size RGB array
  (``frame.to_ndarray``), keep the first at or after each timestamp; what a script does.
- ``decode all (no conversion)``: every frame decoded, nothing converted; the floor of any
  decode-everything approach.
- ``stage, sequential``: ``decode_video(strategy="sequential")``: no seeks, but frames before
  the next target that no later frame references are dropped in the decoder and only the
  kept frames are scaled (straight to 224x224).
- ``stage, chosen``: ``decode_video`` as the stage runs it (seeks where ``plan_seeks`` says).

Isolation overhead: the same short clip decoded ``isolation_videos`` times in this process and
through a ``DecodePool`` child (interleaved); the overhead per video is the pool call's wall
time minus the child's own ``decode_video`` time (request, JSON header, copying frames and
audio through the pipe), plus the child's start-up time (once per decode actor). Synthetic pictures compress far better than camera footage, so
absolute decode times are optimistic; the ratios are what the strategies change.

``python -m bench.bench_decode [OUT_DIR]`` prints Markdown tables and writes
``OUT_DIR/bench_decode.json``; ``run(out_dir)`` returns the same dict.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.machine import load_average, machine_info
from extract.config.machine import resolved_here

CLIP_S = 60.0
SIZE = (1280, 720)
FPS = 30.0
GOPS = (30, 60, None)  # frames between key frames; None = x264's default (250)
SAMPLE_FPS = 1.0
ISOLATION_CLIP = (5.0, 320, 180)  # seconds, width, height of the isolation-overhead clip


def _config():
    from extract.config import Config

    return Config().replace(**{"models.clip.pretrained": None, "sampling.fps": SAMPLE_FPS,
                               "sampling.max_frames": int(CLIP_S * SAMPLE_FPS)})


def _spec():
    from extract.config import ClipModelConfig
    from extract.models.preprocess import preprocess_spec

    return preprocess_spec(ClipModelConfig(name="ViT-B-32", pretrained=None))


def bench_clip(clips_dir: Path, gop: int | None) -> Path:
    """The 60 s 720p clip with key-frame interval ``gop`` (cached in ``clips_dir``)."""
    from extract.tools.samples import write_clip

    path = clips_dir / f"decode_{SIZE[0]}x{SIZE[1]}_{int(CLIP_S)}s_gop{gop or 'default'}.mp4"
    if not path.is_file():
        tmp = path.with_suffix(".part.mp4")
        write_clip(tmp, CLIP_S, *SIZE, FPS, gop=gop, encoder_options={"preset": "veryfast"})
        tmp.replace(path)
    return path


def to_rgb(frame: Any) -> np.ndarray:
    """A decoded frame as a full-size ``(H, W, 3) uint8`` RGB array."""
    return frame.to_ndarray(format="rgb24")


def decode_all(path: Path, sampling: Any, threads: int, convert: Callable[[Any], Any]) -> tuple[int, int]:
    """``bench.naive.decode_all_then_pick`` converting every frame: ``(frames kept, frames decoded)``."""
    from bench.naive import decode_all_then_pick

    kept, _, n_decoded = decode_all_then_pick(path, sampling, threads, convert, convert_all=True)
    return len(kept), n_decoded


def _best_of(repeats: int, fn: Callable[[], tuple[int, int]]) -> dict[str, float]:
    """Best wall and matching CPU seconds of ``fn`` (returns (frames kept, frames decoded))."""
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        kept, decoded = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best["wall_s"]:
            best = {"wall_s": wall, "cpu_s": cpu, "frames_kept": kept, "frames_decoded": decoded}
    return best


def bench_strategies(clips_dir: Path, repeats: int) -> list[dict[str, Any]]:
    """One row per (clip, variant): best wall/CPU seconds, frames kept and decoded, speed-up."""
    from extract.media.video import decode_video

    config, spec = _config(), _spec()
    threads = resolved_here(config).runtime.decode_threads
    rows = []
    for gop in GOPS:
        path = bench_clip(clips_dir, gop)

        def stage(strategy: str) -> tuple[int, int]:
            out = decode_video(str(path), config, spec, strategy=strategy, audio=False)
            return len(out.frames), out.stats.frames_decoded

        variants = {
            "decode all, then pick": lambda: decode_all(path, config.sampling, threads, to_rgb),
            "decode all (no conversion)": lambda: decode_all(path, config.sampling, threads, lambda frame: frame),
            "stage, sequential": lambda: stage("sequential"),
            "stage, chosen": lambda: stage("auto"),
        }
        results = {name: _best_of(repeats, fn) for name, fn in variants.items()}
        baseline = results["decode all, then pick"]["wall_s"]
        baseline_cpu = results["decode all, then pick"]["cpu_s"]
        for name, r in results.items():
            rows.append({"gop_frames": gop or 250, "variant": name, "wall_s": round(r["wall_s"], 3),
                         "cpu_s": round(r["cpu_s"], 3), "frames_kept": r["frames_kept"],
                         "frames_decoded": r["frames_decoded"],
                         "sampled_frames_per_s": round(r["frames_kept"] / r["wall_s"], 1),
                         "speedup": round(baseline / r["wall_s"], 2),
                         "speedup_cpu": round(baseline_cpu / r["cpu_s"], 2)})
    return rows


def bench_isolation(clips_dir: Path, n_videos: int) -> dict[str, Any]:
    """Mean per-video seconds in-process vs through a ``DecodePool`` child, and start-up time."""
    from extract.media.isolation import DecodeJob, DecodePool
    from extract.tools.samples import write_clip
    from extract.media.video import decode_video

    config, spec = _config().replace(**{"sampling.max_frames": 32}), _spec()
    duration, width, height = ISOLATION_CLIP
    path = clips_dir / f"isolation_{width}x{height}_{int(duration)}s.mp4"
    if not path.is_file():
        write_clip(path, duration, width, height, FPS, gop=int(FPS), encoder_options={"preset": "veryfast"})
    start = time.perf_counter()
    pool = DecodePool(config, spec, 1)
    startup_s = time.perf_counter() - start
    try:
        pool.decode(DecodeJob("warm", str(path)))
        decode_video(str(path), config, spec)
        inproc, isolated, overhead = [], [], []
        for i in range(n_videos):  # interleaved, so load changes hit both alike
            t = time.perf_counter()
            decode_video(str(path), config, spec)
            inproc.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = pool.decode(DecodeJob(f"v{i}", str(path)))
            isolated.append(time.perf_counter() - t)
            overhead.append(isolated[-1] - result.stats.decode_s)  # round trip minus the child's decode
    finally:
        pool.close()
    return {"clip": f"{duration:.0f} s {width}x{height}, {len(result.frames)} frames + {result.audio_s:.0f} s audio",
            "videos": n_videos, "in_process_ms": round(1000 * statistics.mean(inproc), 2),
            "isolated_ms": round(1000 * statistics.mean(isolated), 2),
            "overhead_ms_mean": round(1000 * statistics.mean(overhead), 2),
            "overhead_ms_median": round(1000 * statistics.median(overhead), 2),
            "worker_startup_s": round(startup_s, 3)}


def run(out_dir: str | Path, repeats: int = 3, isolation_videos: int = 30) -> dict[str, Any]:
    """Both benchmarks; clips cached in ``out_dir/clips``; writes ``out_dir/bench_decode.json``."""
    import av

    out_dir = Path(out_dir)
    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "decode_strategies",
        "clip": f"{CLIP_S:.0f} s {SIZE[0]}x{SIZE[1]} {FPS:.0f} fps H.264 veryfast, sampled at {SAMPLE_FPS:g} fps",
        "machine": {**machine_info(), "load_avg_1m": load_average(), "ffmpeg": av.ffmpeg_version_info,
                    "decode_threads": resolved_here(_config()).runtime.decode_threads},
        "repeats": repeats,
        "strategies": bench_strategies(clips_dir, repeats),
        "isolation": bench_isolation(clips_dir, isolation_videos),
    }
    (out_dir / "bench_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as Markdown tables."""
    m = result["machine"]
    lines = [f"Decode: {result['clip']}; best of {result['repeats']}; {m['cpu']}, {m['cores']} cores, load "
             f"{m['load_avg_1m']}, FFmpeg {m['ffmpeg']}, {m['decode_threads']} decoder threads", "",
             "| key frames every | variant | wall s | CPU s | frames decoded | sampled frames/s | speed-up (wall / CPU) |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["strategies"]:
        lines.append(f"| {r['gop_frames']} frames | {r['variant']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{r['frames_decoded']} | {r['sampled_frames_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x / {r['speedup_cpu']:.2f}x |")
    iso = result["isolation"]
    lines += ["", f"Isolation ({iso['clip']}, {iso['videos']} videos, interleaved; overhead = pool round trip "
              "minus the child's own decode time):", "",
              "| in process ms/video | decode process ms/video | overhead ms (mean / median) | child start-up s |",
              "|---:|---:|---:|---:|",
              f"| {iso['in_process_ms']:.1f} | {iso['isolated_ms']:.1f} | {iso['overhead_ms_mean']:.1f} / "
              f"{iso['overhead_ms_median']:.1f} | {iso['worker_startup_s']:.2f} |"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(sys.argv[1] if len(sys.argv) > 1 else "bench/out")))
