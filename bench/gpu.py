"""The stage-level GPU benchmark: ``python -m bench.gpu [--dry-run] [--out FILE] [--work DIR]``,
run by ``bench/gpu_check.sh`` on a bare borrowed GPU machine.

Ray and deltalake do not fit on that machine (``bench/gpu_wheels.py``), so the stages and models
run directly, in this process, as the unit tests run them. In a few minutes on one GPU:

1. **decode**: ``DecodeStage`` with one isolated decode child per core (minus two for this
   process) over 30 s 720p clips (``bench.clips.short_specs``: spoken with espeak-ng where it
   exists, else tones): videos/s and seconds of video decoded per second.
2. **CLIP** ViT-B-32 and ViT-L-14 frames/s through ``ClipEmbedder.embed_frames`` (uint8 frames
   copied to the device and normalised there, fp16 autocast). Weights are random
   (``pretrained=None``, open_clip's own initialisation): nothing can be downloaded there, and
   the speed does not depend on the values. CUDA against CPU on the same frames and weights:
   the lowest cosine (target >= 0.999).
3. **Whisper** base and small audio-s/s through ``WhisperTranscriber.transcribe_batch`` over
   30 s windows, ``whisper_batch_size`` windows per pass. Weights are random with the official
   dimensions (``WHISPER_DIMS``), except base when the real checkpoint is at
   ``extract.tools.whisper_eval.base_weights_path()``. A random model never ends its text, so each
   window decodes the full 224 tokens (speech ends near 100: a pessimistic figure), greedy only
   (random text always fails the fallback checks, which would decode it six times). CUDA
   against CPU: the greedy tokens of a few windows, equal or not.
   Every Whisper here runs on the torch engine (``whisper.engine=torch``), the engine ``auto``
   picks on CUDA: the dry run on the CPU takes the GPU path too, not CTranslate2.
4. **End to end**: decode -> whisper (small, as ``jobs/configs/prod.yaml``) -> CLIP (ViT-B-32)
   over 30 s 720p clips, decode in a thread on the machine's cores overlapping the GPU stages in
   this one; the steady rate after the first batch as videos per GPU-hour. Every window is
   decoded (``whisper.vad`` off: the tone clips would otherwise skip the decoder).

Writes Markdown (the figures against ``TARGETS``, the one definition of the GPU targets) and a
JSON of everything measured. ``--dry-run`` runs the same steps on the CPU with the tiny test
models and a few tiny clips: it tests the script, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.clips import REPO, build_set, short_specs
from bench.machine import device_name, machine_info

# The GPU targets per H100-class GPU, defined here only (bench/render.py and RESULTS.md cite them).
# 20,000 videos/GPU-h is 5.6 videos/s: 167 sampled frames/s for CLIP, 167 audio-s/s for Whisper.
TARGETS = {
    "clip_vit_b32_frames_per_s": 10_000,
    "whisper_base_audio_s_per_s": 1_000,
    "videos_per_gpu_hour": 20_000,
    "clip_cuda_cpu_min_cosine": 0.999,
}
TARGET_LABELS = {
    "clip_vit_b32_frames_per_s": "CLIP ViT-B-32 frames/s",
    "whisper_base_audio_s_per_s": "Whisper base audio-s/s",
    "videos_per_gpu_hour": "30 s 720p videos per GPU-hour, end to end",
    "clip_cuda_cpu_min_cosine": "CLIP ViT-B-32 CUDA vs CPU lowest cosine",
}

# openai-whisper ModelDimensions of the official checkpoints (whisper/__init__.py's _MODELS).
WHISPER_DIMS = {
    "base": {"n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 512, "n_audio_head": 8,
             "n_audio_layer": 6, "n_text_ctx": 448, "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6},
    "small": {"n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 768, "n_audio_head": 12,
              "n_audio_layer": 12, "n_text_ctx": 448, "n_text_state": 768, "n_text_head": 12, "n_text_layer": 12},
}

# Sizes: (full run on a GPU, --dry-run on a CPU).
SIZES = {
    "clips": (48, 3), "clip_s": (30.0, 2.0), "clip_px": ((1280, 720), (160, 90)),
    "clip_frames": (4096, 12), "clip_batch": (512, 8),
    "whisper_windows": (64, 2), "whisper_batch": (32, 2),
    "equal_windows": (3, 1), "equal_frames": (16, 4),
    "e2e_batch": (16, 1),
}


class Progress:
    """Prints what the benchmark is doing, with seconds since it started."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {message}", flush=True)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def make_clips(work: Path, n: int, duration_s: float, size: tuple[int, int], log: Progress) -> list[dict[str, Any]]:
    """``n`` synthetic clips as manifest rows (``extract.pipeline.manifest.read_source``)."""
    from extract.pipeline.manifest import read_source

    log(f"writing {n} clips of {duration_s:g} s at {size[0]}x{size[1]} on {os.cpu_count()} cores")
    manifest = build_set("gpu-check", short_specs(n, duration_s=duration_s, width=size[0], height=size[1]),
                         cache_dir=work / "clips")
    return read_source(str(manifest))


def bench_decode(config, rows: list[dict[str, Any]], processes: int, log: Progress) -> dict[str, Any]:
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.decode import DecodeStage

    log(f"decode: {len(rows)} clips on {processes} decode processes")
    stage = DecodeStage(config, processes=processes)
    try:
        stage(rows_to_batch(rows[:processes]))  # warm: children started, codecs loaded
        wall, out = _timed(lambda: batch_to_rows(stage(rows_to_batch(rows))), "cpu")
    finally:
        stage.close()
    failed = [r["video_id"] for r in out if r.get("error_stage")]
    video_s = sum(float(r.get("duration_s") or 0.0) for r in out)
    result = {"clips": len(rows), "processes": processes, "wall_s": round(wall, 2), "failed": failed,
              "videos_per_s": round(len(rows) / wall, 2), "video_s_per_s": round(video_s / wall, 1)}
    log(f"decode: {result['videos_per_s']} videos/s, {result['video_s_per_s']} s of video per second")
    return result


def bench_clip(name: str, clip_cfg, weights: str, device: str, n_frames: int, batch: int, equal_frames: int,
               log: Progress) -> dict[str, Any]:
    """Frames/s of ``clip_cfg`` on ``device`` and, on CUDA, the lowest CUDA-vs-CPU cosine."""
    from extract.models.clip import ClipEmbedder

    log(f"CLIP {name}: loading on {device}")
    embedder = ClipEmbedder(clip_cfg, device=device)
    size = embedder.spec.image_size
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8)
    videos = np.split(frames, range(32, n_frames, 32))  # 32 sampled frames per video, packed
    embedder.embed_frames(videos[:max(1, batch // 32)], batch)  # warm-up: kernels chosen, buffers pinned
    walls = []
    for _ in range(3):
        wall, _ = _timed(lambda: embedder.embed_frames(videos, batch), device)
        walls.append(wall)
    result = {"model": name, "weights": weights, "frames": n_frames, "batch": batch,
              "frames_per_s": round(n_frames / min(walls), 1), "wall_s": [round(w, 3) for w in walls]}
    log(f"CLIP {name}: {result['frames_per_s']:,.0f} frames/s at batch {batch}")
    if device == "cuda" and equal_frames:
        reference = ClipEmbedder(clip_cfg, device="cpu")
        sample = [frames[:equal_frames]]
        cosines = np.sum(reference.embed_frames(sample, batch)[0] * embedder.embed_frames(sample, batch)[0], axis=1)
        result["cuda_cpu_min_cosine"] = round(float(cosines.min()), 5)
        log(f"CLIP {name}: CUDA vs CPU lowest cosine {result['cuda_cpu_min_cosine']}")
    return result


def whisper_checkpoint(work: Path, name: str) -> tuple[str, str]:
    """``(checkpoint path, what its weights are)`` for Whisper ``name`` (``base``/``small``):
    the real base weights when present, else seeded random weights of the official dimensions."""
    from extract.tools.tiny import make_random_whisper
    from extract.tools.whisper_eval import base_weights_path

    if name == "base" and base_weights_path().is_file():
        return str(base_weights_path()), "real base weights"
    return make_random_whisper(work / f"whisper-{name}", WHISPER_DIMS[name], f"whisper-{name}-random.pt"), \
        "random (official dimensions)"


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """``(seconds * 16000,) float32`` noise bursts with a syllable-rate envelope (the random
    model cannot tell speech from noise; real clips' audio is in the end-to-end part)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16_000)
    envelope = (np.sin(np.arange(n) / 16_000 * 2 * np.pi * 3.0 + seed) > -0.2).astype(np.float32)
    return (0.1 * rng.standard_normal(n) * envelope).astype(np.float32)


def bench_whisper(name: str, checkpoint: str, weights: str, device: str, windows: int, batch: int,
                  equal_windows: int, log: Progress) -> dict[str, Any]:
    """Audio-s/s of ``transcribe_batch`` on ``windows`` 30 s windows; on CUDA, whether the
    greedy tokens of ``equal_windows`` windows equal the CPU's."""
    from extract.config import WhisperConfig, WhisperModelConfig
    from extract.models.whisper import WhisperTranscriber, mel_frames

    cfg = WhisperConfig(temperatures=(0.0,), engine="torch")  # the CPU reference below reads the torch model
    log(f"Whisper {name}: loading on {device} ({weights})")
    transcriber = WhisperTranscriber(WhisperModelConfig(name=checkpoint), cfg, device=device)
    window_s = transcriber.cfg.window_s
    audios = [speechlike(window_s, k) for k in range(windows)]
    transcriber.transcribe_batch(audios[:batch], batch)  # warm-up
    wall, out = _timed(lambda: transcriber.transcribe_batch(audios, batch), device)
    audio_s = windows * window_s
    result = {"model": name, "weights": weights, "windows": windows, "batch": batch, "wall_s": round(wall, 2),
              "audio_s_per_s": round(audio_s / wall, 1)}
    log(f"Whisper {name}: {result['audio_s_per_s']:,.0f} audio-s/s ({windows} windows of {window_s:g} s, "
        f"batch {batch})")
    if device == "cuda" and equal_windows:
        import torch
        import whisper

        from extract.models.whisper_decoder import decode_encoded

        cpu = WhisperTranscriber(WhisperModelConfig(name=checkpoint), cfg, device="cpu")
        with torch.no_grad():
            frames = mel_frames(len(audios[0]), cpu.cfg.encoder_step_s)  # equal windows: one length
            mels = torch.stack([cpu._window_mel(a, frames) for a in audios[:equal_windows]])
        same = []
        for model, dev, dtype in ((cpu.model, "cpu", torch.float32), (transcriber.model, "cuda", torch.float16)):
            with torch.no_grad():
                features = model.encoder(mels.to(dev, dtype))
            options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=False,
                                              fp16=dev == "cuda")
            same.append([r.tokens for r in decode_encoded(model, features, options)])
        equal = sum(a == b for a, b in zip(*same))
        first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                 for a, b in zip(*same) if a != b]
        result.update(cuda_cpu_equal_windows=equal, cuda_cpu_windows=equal_windows,
                      first_difference_at_token=first)
        log(f"Whisper {name}: CUDA (fp16) vs CPU (fp32) greedy tokens equal in {equal}/{equal_windows} windows")
    return result


def bench_end_to_end(config, rows: list[dict[str, Any]], batch: int, processes: int,
                     log: Progress) -> dict[str, Any]:
    """decode (a thread, ``processes`` children) -> transcribe -> clip (this thread) over
    ``rows``; the steady rate from the end of the first batch to the end of the last."""
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.clip import ClipStage
    from extract.stages.decode import DecodeStage
    from extract.stages.transcribe import TranscribeStage

    log(f"end to end: loading the stages ({config.models.whisper.name}, {config.models.clip.name})")
    whisper_stage, clip_stage = TranscribeStage(config), ClipStage(config)
    decode = DecodeStage(config, processes=processes)
    batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    decoded: queue.Queue = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for part in batches:
                decoded.put(decode(rows_to_batch(part)))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            decoded.put(exc)

    log(f"end to end: {len(rows)} clips in batches of {batch}, decode on {processes} processes")
    producer = threading.Thread(target=produce, daemon=True)
    t0 = time.perf_counter()
    producer.start()
    ends, out = [], []
    try:
        for _ in batches:
            item = decoded.get()
            if isinstance(item, BaseException):
                raise item
            out += batch_to_rows(clip_stage(whisper_stage(item)))
            _sync(config.runtime.device)
            ends.append(time.perf_counter() - t0)
    finally:
        producer.join()
        decode.close()
    failed = [(r["video_id"], r["error_stage"], r["error_message"]) for r in out if r.get("error_stage")]
    steady = (ends[-1] - ends[0]) / (len(rows) - len(batches[0])) if len(batches) > 1 else ends[0] / len(rows)
    result = {"clips": len(rows), "batch": batch, "processes": processes, "wall_s": round(ends[-1], 2),
              "batch_ends_s": [round(e, 2) for e in ends], "failed": failed,
              "seconds_per_video": round(steady, 4), "videos_per_gpu_hour": round(3600 / steady),
              "whisper": config.models.whisper.name, "clip": config.models.clip.name}
    log(f"end to end: {result['videos_per_gpu_hour']:,} videos per GPU-hour ({len(failed)} failed)")
    return result


def run(work: Path, dry_run: bool, log: Progress, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import torch

    from extract.config import ClipModelConfig, load_config
    from extract.tools.tiny import make_tiny

    device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
    if dry_run:  # CI's shared 2 cores: more threads only oversubscribe them
        torch.set_num_threads(1)
    pick = {key: value[1 if dry_run else 0] for key, value in SIZES.items()}
    cores = os.cpu_count() or 1
    processes = max(1, cores - 2)
    result: dict[str, Any] = {"dry_run": dry_run, "device": device, "device_name": device_name(device),
                              "torch": torch.__version__, "machine": machine_info(), "targets": TARGETS}
    log(f"device {device} ({result['device_name']}), torch {torch.__version__}, {cores} cores")
    rows = make_clips(work, pick["clips"], pick["clip_s"], pick["clip_px"], log)
    overrides = [f"runtime.device={device}", "models.clip.pretrained=null", "whisper.vad=false",
                 "whisper.temperatures=[0.0]", "whisper.engine=torch", "ocr.enabled=false", "output.thumbnails=0"]
    if dry_run:  # the tiny test models stand in for every model
        e2e = load_config([make_tiny(work / "tiny")], [o for o in overrides if not o.startswith("models.")])
        clip_models = {"tiny": (e2e.models.clip, "tiny random")}
        whisper_models = {"tiny": (e2e.models.whisper.name, "tiny random")}
    else:
        clip_models = {name: (ClipModelConfig(name=name, pretrained=None), "random (open_clip init)")
                       for name in ("ViT-B-32", "ViT-L-14")}
        whisper_models = {name: whisper_checkpoint(work, name) for name in ("base", "small")}
        e2e = load_config([], overrides + [f"models.whisper.name={whisper_models['small'][0]}",
                                           f"runtime.clip_batch_size={pick['clip_batch']}",
                                           f"runtime.whisper_batch_size={pick['whisper_batch']}"])
    steps = {
        "decode": lambda: bench_decode(e2e, rows, processes, log),
        # CUDA vs CPU for the first model only: a CPU pass of ViT-L-14 costs more than it adds.
        "clip": lambda: [bench_clip(name, cfg, weights, device, pick["clip_frames"], pick["clip_batch"],
                                    pick["equal_frames"] if k == 0 else 0, log)
                         for k, (name, (cfg, weights)) in enumerate(clip_models.items())],
        "whisper": lambda: [bench_whisper(name, path, weights, device, pick["whisper_windows"], pick["whisper_batch"],
                                          pick["equal_windows"], log) for name, (path, weights) in whisper_models.items()],
        "end_to_end": lambda: bench_end_to_end(e2e, rows, pick["e2e_batch"], processes, log),
    }
    for name, step in steps.items():  # saved after each step: a run cut short keeps what it measured
        result[name] = step()
        save(result)
    return result


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The measured value of each ``TARGETS`` key (None where this run did not measure it)."""
    clip = {r["model"]: r for r in result.get("clip", [])}
    whisper = {r["model"]: r for r in result.get("whisper", [])}
    return {"clip_vit_b32_frames_per_s": clip.get("ViT-B-32", {}).get("frames_per_s"),
            "whisper_base_audio_s_per_s": whisper.get("base", {}).get("audio_s_per_s"),
            "videos_per_gpu_hour": result.get("end_to_end", {}).get("videos_per_gpu_hour"),
            "clip_cuda_cpu_min_cosine": clip.get("ViT-B-32", {}).get("cuda_cpu_min_cosine")}


def markdown(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    got = figures(result)
    lines = ["# GPU check", "",
             f"Generated by `{command}` on {result['started_at']} in {result['elapsed_s']:.0f} s (the benchmark part); "
             f"device {result['device']} ({result['device_name']}), torch {result['torch']}; {m['cpu']}, "
             f"{m['cores']} cores." + (" **Dry run on the CPU with tiny models: these figures mean nothing.**"
                                       if result["dry_run"] else ""), "",
             "Stages run directly (no Ray, no Delta); CLIP and Whisper weights are random with the real "
             "architectures (nothing can be downloaded on the GPU machine) unless a row says otherwise.", "",
             "| figure | measured | target | met |", "|---|---:|---:|---|"]
    for key, target in TARGETS.items():
        value = got[key]
        lines.append(f"| {TARGET_LABELS[key]} | {'n/a' if value is None else f'{value:,}'} | ≥ {target:,} | "
                     f"{'n/a' if value is None else 'yes' if value >= target else 'no'} |")
    if "decode" in result:
        d = result["decode"]
        lines += ["", "## Decode", "",
                  f"{d['clips']} clips on {d['processes']} decode processes: {d['videos_per_s']} videos/s, "
                  f"{d['video_s_per_s']} s of video per second ({d['wall_s']} s; failed: {d['failed'] or 'none'})."]
    if "clip" in result:
        lines += ["", "## CLIP", "", "| model | weights | batch | frames/s | CUDA vs CPU lowest cosine |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['weights']} | {r['batch']} | {r['frames_per_s']:,} | "
                  f"{r.get('cuda_cpu_min_cosine', 'n/a')} |" for r in result["clip"]]
    if "whisper" in result:
        lines += ["", "## Whisper", "",
                  "Greedy only; random weights decode every 30 s window to the full 224 tokens (speech ends near "
                  "100).", "", "| model | weights | windows | batch | audio-s/s | CUDA (fp16) = CPU (fp32) greedy tokens |",
                  "|---|---|---:|---:|---:|---|"]
        for r in result["whisper"]:
            equal = "n/a"
            if "cuda_cpu_windows" in r:
                equal = f"{r['cuda_cpu_equal_windows']}/{r['cuda_cpu_windows']} windows"
                if r["first_difference_at_token"]:
                    equal += f" (first difference at token {r['first_difference_at_token']})"
            lines.append(f"| {r['model']} | {r['weights']} | {r['windows']} | {r['batch']} | "
                         f"{r['audio_s_per_s']:,} | {equal} |")
    if "end_to_end" in result:
        e = result["end_to_end"]
        lines += ["", "## End to end", "",
                  f"{e['clips']} clips, decode ({e['processes']} processes, a thread) -> Whisper "
                  f"{Path(e['whisper']).name} -> CLIP {e['clip']} in batches of {e['batch']}, every window decoded: "
                  f"{e['seconds_per_video']} s per video after the first batch, **{e['videos_per_gpu_hour']:,} videos "
                  f"per GPU-hour** ({e['wall_s']} s in all; failed: {e['failed'] or 'none'})."]
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS-gpu.md"))
    parser.add_argument("--work", default=str(REPO / ".build" / "bench-gpu"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models and clips (tests the script only)")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device visible to torch: run on a GPU machine (or --dry-run to test the script)")
    log = Progress()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "bench/gpu_check.sh" + (" --dry-run" if args.dry_run else "")

    def save(result: dict[str, Any]) -> None:
        result.update(started_at=started, elapsed_s=round(time.perf_counter() - log.start, 1))
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        out.write_text(markdown(result, command))

    run(work, args.dry_run, log, save)
    log(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
