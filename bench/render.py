"""Rendering of bench results: bench/RESULTS.md (the generated part) and bench/throughput.png.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu import TARGETS as GPU_TARGETS


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


HAND_WRITTEN_MARKER = "<!-- hand-written below this line: `python -m bench.run` keeps it -->"


# ours / naive on a 2-core CPU (issues 10 and 27); utilisation: CPU-seconds / (wall x cores)
TARGETS = {"end_to_end": 2.0, "speech_alone": 1.5, "decode": 3.0, "utilisation": 0.85, "wer_margin": 0.01}
STAGE_CPU = ("decode", "ocr", "whisper", "clip")  # our stages' CPU-seconds (naive: its steps mapped onto them)
NAIVE_CPU = {"decode": ("decode", "preprocess"), "ocr": (), "whisper": ("whisper",), "clip": ("clip", "text")}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def cpu_lines(c: dict[str, Any]) -> list[str]:
    """Per-stage CPU-seconds of both sides, the utilisation, and each kind of audio alone."""
    ours, naive = c["ours"], c["naive"]
    if "stage_cpu_s" not in ours:
        return []
    videos = max(ours["videos"], 1)
    lines = ["### CPU-seconds per stage and core utilisation", "",
             "CPU-seconds of every thread of the stage's processes and their children (ours: summed over workers, "
             "model loading excluded; naive: `time.process_time` around its steps). Utilisation = CPU-seconds of "
             "every process of the run (Ray's included) ÷ (wall × cores).", "",
             "| stage | ours CPU-s | naive CPU-s | ours CPU-s per video | naive CPU-s per video | naive ÷ ours |",
             "|---|---:|---:|---:|---:|---:|"]
    for stage in STAGE_CPU:
        o = float(ours["stage_cpu_s"].get(stage, 0.0))
        n = sum(float(naive["stage_cpu_s"].get(k, 0.0)) for k in NAIVE_CPU[stage])
        ratio = f"{n / o:.2f}x" if o > 0 and n > 0 else "–"
        lines.append(f"| {stage} | {o:.1f} | {n:.1f} | {o / videos:.2f} | {n / videos:.2f} | {ratio} |")
    lines += [
        f"| everything (whole run, start-up included) | {ours['tree_cpu_s']:.1f} | {naive['tree_cpu_s']:.1f} | | | |",
        "",
        *([f"Ours' CPU-seconds by process (`bench.machine.TreeCpu`): "
           + ", ".join(f"`{name}` {cpu:.1f}" for name, cpu in ours["cpu_by_process"].items() if cpu >= 0.5), ""]
          if ours.get("cpu_by_process") else []),
        f"Core utilisation on {ours['cores']} cores: ours {_pct(ours['utilisation'])}, naive "
        f"{_pct(naive['utilisation'])} (target ≥ {_pct(TARGETS['utilisation'])} for ours: "
        f"{'**met**' if ours['utilisation'] >= TARGETS['utilisation'] else '**not met**'}).", ""]
    subsets = c.get("subsets") or {}
    if subsets:
        lines += ["### Each kind of audio alone", "",
                  "Ours ran on each subset alone (a fresh process, start-up included). Naive's time for a subset is its "
                  "model load plus its per-video loop time for those clips plus their share of its write, from its one "
                  "run over the whole set.", "",
                  "| subset | clips | audio s | ours wall (s) | naive wall (s) | speed-up | ours utilisation | "
                  "ours CPU-s decode / whisper / clip | load before → after |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for kind, sub in subsets.items():
            cpu = sub["ours_stage_cpu_s"]
            lines.append(f"| {kind} | {sub['clips']} | {sub['audio_s']:.0f} | {sub['ours_wall_s']:.1f} | "
                         f"{sub['naive_wall_s']:.1f} | {sub['speedup']:.2f}x | {_pct(sub['ours_utilisation'])} | "
                         + " / ".join(f"{float(cpu.get(k, 0.0)):.1f}" for k in ("decode", "whisper", "clip"))
                         + f" | {sub['load_avg'][0]} → {sub['load_avg'][1]} |")
        lines.append("")
    return lines


def signal_lines(results: dict[str, Any]) -> list[str]:
    """Each signal's CPU per video (``bench.bench_signals``) and its share of the comparison run
    with OCR on (else the run without), both per second of video; none without those figures."""
    from bench.bench_signals import markdown as signals_markdown

    entry = results.get("micro", {}).get("bench_signals", {})
    c = results["comparison"]
    run = c.get("ours_ocr") or c["ours"]
    if "result" not in entry or not c.get("video_s"):
        return []
    label = "the comparison run" + (" with OCR on" if c.get("ours_ocr") else " (OCR off)")
    table = signals_markdown(entry["result"], run["tree_cpu_s"] / c["video_s"], label, c.get("signals_on") or {})
    return ["### Signal costs per video and share of the run", "", table, ""]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def met(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "not measured"
    return f"**met** ({ratio:.2f}x ≥ {target}x)" if ratio >= target else f"**not met** ({ratio:.2f}x < {target}x)"


def render_markdown(results: dict[str, Any]) -> str:
    """The generated part of RESULTS.md from ``results`` (one run of this harness)."""
    m, v, c = results["machine"], results["versions"], results["comparison"]
    ours, naive = c["ours"], c["naive"]
    lines = [
        "# Benchmark results", "",
        f"Generated by {results['command']} on {results['started_at']} in {results['elapsed_s'] / 60:.1f} min "
        f"(revision {results['revision']}). Every figure below is from this run.", "",
    ]
    if results["models"]["note"]:
        lines += [f"> **{results['models']['note']}**", ""]
    speech = (c.get("subsets") or {}).get("speech")
    if speech:
        lines += [f"**Headline: on speech alone ours is {speech['speedup']:.2f}x the naive loop** "
                  f"({speech['clips']} clips with recorded speech); the whole set "
                  f"{naive['wall_s'] / ours['wall_s']:.2f}x; core utilisation {_pct(ours.get('utilisation'))}.", ""]
    lines += [
        "## Machine and versions", "",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; GPU: {m['gpu'] or 'none'}; {m['os']}",
        f"- Load average (1 min) at start {results['load_avg_start']}, at end {results['load_avg_end']} "
        "(other work shares this machine; a load above the core count slows every figure)",
        "- " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Models: CLIP {results['models']['clip']}; Whisper: {results['models']['whisper']}",
        f"- Job config: {', '.join(Path(f).name for f in results['config']['files'])}"
        + (f" with `--set {' '.join(results['config']['overrides'])}`" if results["config"]["overrides"] else ""),
        "",
        "## Ours vs naive (same clips, same run)", "",
        f"Clips: {c['description']}. Each pipeline ran in a fresh process on the same "
        "files (page cache warmed first); wall time is from the start of work (Ray start / model imports "
        "included) to the last Parquet file written.", "",
        "| | ours | naive | speed-up (naive ÷ ours time) |", "|---|---:|---:|---:|",
        f"| wall time (s) | {ours['wall_s']:.1f} | {naive['wall_s']:.1f} | {naive['wall_s'] / ours['wall_s']:.2f}x |",
        f"| videos/s | {ours['videos_per_s']:.3f} | {naive['videos_per_s']:.3f} | |",
        f"| audio-seconds/s | {ours['audio_s_per_s']:.2f} | {naive['audio_s_per_s']:.2f} | |",
        f"| frames/s (sampled frames embedded) | {ours['frames_per_s']:.2f} | {naive['frames_per_s']:.2f} | |",
        f"| videos / frames / audio s | {ours['videos']} / {ours['frames']} / {ours['audio_s']:.0f} | "
        f"{naive['videos']} / {naive['frames']} / {naive['audio_s']:.0f} | |",
        f"| process peak RSS (MB) | {ours['driver_peak_rss_mb']:.0f} (driver only) | "
        f"{naive['driver_peak_rss_mb']:.0f} (everything) | |",
        f"| load average before → after | {ours['load_avg_before']} → {ours['load_avg_after']} | "
        f"{naive['load_avg_before']} → {naive['load_avg_after']} | |",
        "",
        f"Ours: Ray start {ours.get('ray_start_s', 0):.1f} s of the wall time; naive: model load "
        f"(imports included) {naive['timings_s'].get('load', 0):.1f} s.", "",
        "### Per-stage time", "",
        "Seconds of work per stage (ours: summed over workers, model loading excluded, stages overlap in "
        "time; naive: sequential). Naive steps mapped to our stages: decode = decode every frame + PIL "
        "`preprocess_val`; clip + text = `encode_image` + text features. Ours' write is the run manifest's "
        "`write` (buffered appends, the final flush and publishing the files).", "",
        "| stage | ours (s) | naive (s) | speed-up | ours videos/s | naive videos/s | ours frames/s | naive frames/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in c["stages"]:
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "–"
        lines.append(f"| {row['stage']} | {fmt(row['ours_s'])} | {fmt(row['naive_s'])} | {speedup} | "
                     f"{fmt(row['ours_videos_per_s'], 3)} | {fmt(row['naive_videos_per_s'], 3)} | "
                     f"{fmt(row['ours_frames_per_s'], 1)} | {fmt(row['naive_frames_per_s'], 1)} |")
    lines += ["", "Naive steps (s): " + ", ".join(f"{k} {val:.2f}" for k, val in naive["timings_s"].items()),
              "Our stages (s): " + ", ".join(f"{k} {val:.2f}" for k, val in ours["timings_s"].items()), ""]
    d = c["decode_alone"]
    lines += [
        "### Decode alone", "",
        "Nothing else of the pipeline running. Per clip: both decode paths in one process, one clip after the "
        "other (alternating which goes first): ours = `extract.media.video.decode_video` (what a decode child runs), "
        "naive = decode every frame + PIL `preprocess_val` + the same audio decode. FFmpeg threads: "
        f"`runtime.decode_threads={d['decode_threads']}` for ours, PyAV's default (every core) for naive. Whole "
        f"machine: ours = `DecodeStage` with {d['machine']['processes']} decode processes (one per core; fetch "
        "and sha256 included, process start-up apart) on all clips in one call, as a decode actor runs it, "
        "before and after the per-clip runs (mean of " + " and ".join(f"{w:.2f}" for w in d["machine"]["wall_s_runs"])
        + " s); naive = the same per-clip run (it decodes one video after another on every core).", "",
        "| | ours | naive | speed-up |", "|---|---:|---:|---:|",
        f"| wall, whole machine (s) | {d['machine']['wall_s']:.2f} | {d['naive']['wall_s']:.2f} | "
        f"{d['speedup_machine']:.2f}x |",
        f"| wall, one clip at a time (s) | {d['ours']['wall_s']:.2f} | {d['naive']['wall_s']:.2f} | "
        f"{d['speedup_wall']:.2f}x |",
        f"| CPU, all threads (s) | {d['ours']['cpu_s']:.2f} | {d['naive']['cpu_s']:.2f} | {d['speedup_cpu']:.2f}x |",
        f"| frames kept | {d['ours']['frames']} ({d['machine']['frames']} whole machine) | {d['naive']['frames']} | |",
        f"| load average before → after | {d['load_avg_before']} → {d['load_avg_after']} | | |", "",
    ]
    lines += cpu_lines(c)
    lines += signal_lines(results)
    ratios = c["ratios"]
    e = c["equivalence"]
    wer_gap = (None if e.get("wer_ours_vs_spoken") is None or e.get("wer_naive_vs_spoken") is None
               else e["wer_ours_vs_spoken"] - e["wer_naive_vs_spoken"])
    lines += [
        "### Targets (2-core CPU)", "",
        f"- end to end ≥ {TARGETS['end_to_end']}x naive: {met(ratios['end_to_end'], TARGETS['end_to_end'])}",
        *([f"- speech alone ≥ {TARGETS['speech_alone']}x naive: "
           f"{met(ratios['speech_alone'], TARGETS['speech_alone'])}"] if "speech_alone" in ratios else []),
        *([f"- word error rate within +{TARGETS['wer_margin']} of naive's: "
           + (f"**met** ({wer_gap:+.3f})" if wer_gap <= TARGETS["wer_margin"] else f"**not met** ({wer_gap:+.3f})")]
          if wer_gap is not None else []),
        *_defaults_lines(c),
        f"- decode ≥ {TARGETS['decode']}x naive (decode alone, wall, whole machine): "
        f"{met(ratios['decode'], TARGETS['decode'])}; one clip at a time in one process: "
        f"{met(ratios['decode_one_process'], TARGETS['decode'])}; inside the pipeline (stage seconds, sharing "
        "the cores with the models): "
        f"{met(ratios['decode_in_pipeline'], TARGETS['decode'])}",
        f"- H100 targets (CLIP ViT-B-32 ≥ {GPU_TARGETS['clip_vit_b32_frames_per_s']:,} frames/s, Whisper base ≥ "
        f"{GPU_TARGETS['whisper_base_audio_s_per_s']:,} audio-s/s, ≥ {GPU_TARGETS['videos_per_gpu_hour']:,} 30-s "
        "720p videos per GPU-hour; `bench/gpu_check.sh` measures them, into bench/RESULTS-gpu.md): "
        + ("see the micro-benchmarks" if m["gpu"] else "**not measured** (no GPU on this machine)"),
        "",
    ]
    lines += [
        "### Same outputs", "",
        f"- {e['n_frames_equal']} of {e['videos_compared']} videos have the same number of sampled frames; "
        f"{e['frames_compared']} frames compared, largest frame-time difference {fmt(e['frame_time_max_diff_s'], 4)} s",
        f"- frame embedding cosine ours vs naive: mean {fmt(e['frame_cosine_mean'], 4)}, min "
        f"{fmt(e['frame_cosine_min'], 4)} (libswscale vs PIL bicubic resize of the same frame)",
        f"- word error rate against the spoken text: ours {fmt(e['wer_ours_vs_spoken'], 3)}, naive "
        f"{fmt(e['wer_naive_vs_spoken'], 3)}; ours against naive {fmt(e['wer_ours_vs_naive'], 3)}",
        "",
    ]
    lines += ["## Scaling (ours)", "", f"Clips: {results['scaling_description']}.", "",
              "| clips | wall (s) | videos/s | frames/s | audio-s/s | decode s | whisper s | clip s | write s | "
              "driver peak RSS (MB) | load avg |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in results["scaling"]:
        t = p["timings_s"]
        lines.append(f"| {p['clips']} | {p['wall_s']:.1f} | {p['videos_per_s']:.3f} | {p['frames_per_s']:.2f} | "
                     f"{p['audio_s_per_s']:.2f} | {t.get('decode', 0):.1f} | {t.get('whisper', 0):.1f} | "
                     f"{t.get('clip', 0):.1f} | {t.get('write', 0):.2f} | {p['driver_peak_rss_mb']:.0f} | "
                     f"{p['load_avg_before']} → {p['load_avg_after']} |")
    fit = results["scaling_fit"]
    if fit:
        lines += ["", f"Linear fit: wall = {fit['fixed_s']:.1f} s + {fit['per_video_s']:.3f} s × clips "
                      f"(steady state {fmt(fit['steady_videos_per_s'], 3)} videos/s; largest deviation from the line "
                      f"{fit['max_residual_pct']:.1f} %). Driver peak RSS across the runs: "
                      f"{', '.join(f'{x:.0f}' for x in fit['driver_rss_mb'])} MB."]
    lines += ["", "![throughput](throughput.png)", "", "## Micro-benchmarks", ""]
    for name, entry in results["micro"].items():
        if "error" in entry:
            lines.append(f"- `{name}`: failed after {entry['seconds']} s: {entry['error']}")
        else:
            args = ", ".join(f"{k}={val}" for k, val in entry.get("kwargs", {}).items())
            lines += [f"### {name} (`run(out_dir{', ' + args if args else ''})`, {entry['seconds']} s)", ""]
            lines.append(entry["markdown"])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_results_md(path: Path, generated: str) -> None:
    """Write ``generated`` to ``path``, keeping the hand-written part of an existing file."""
    tail = ""
    if path.is_file():
        old = path.read_text()
        if HAND_WRITTEN_MARKER in old:
            tail = old[old.index(HAND_WRITTEN_MARKER):]
    path.write_text(generated + "\n" + (tail or HAND_WRITTEN_MARKER + "\n"))


def plot(results: dict[str, Any], path: Path) -> None:
    """``throughput.png``: videos/s and frames/s by stage (ours vs naive) and by clip count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = results["comparison"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    # Ours' write time is not comparable (see RESULTS.md): the plot shows the model stages and decode.
    stages = [row for row in c["stages"] if not row["stage"].startswith("write")]
    labels = [row["stage"].split(" (")[0] for row in stages]
    x = np.arange(len(labels))
    for ax, key, title in ((axes[0, 0], "videos_per_s", "videos/s by stage"),
                           (axes[0, 1], "frames_per_s", "frames/s by stage")):
        ours = [row[f"ours_{key}"] or 0 for row in stages]
        naive = [row[f"naive_{key}"] or 0 for row in stages]
        ax.bar(x - 0.2, ours, 0.4, label="ours")
        ax.bar(x + 0.2, naive, 0.4, label="naive")
        ax.set_xticks(x, labels)
        ax.set_yscale("log")
        ax.set_title(f"{title} ({c['ours']['videos']} comparison clips)")
        ax.legend()
    points = results["scaling"]
    n = [p["clips"] for p in points]
    ax = axes[1, 0]
    ax.plot(n, [p["videos_per_s"] for p in points], "o-", label="videos/s")
    ax.plot(n, [p["frames_per_s"] for p in points], "s-", label="frames/s")
    ax.plot(n, [p["audio_s_per_s"] for p in points], "^-", label="audio-s/s")
    ax.set_xscale("log")
    ax.set_xticks(n, [str(k) for k in n])
    ax.set_xlabel("clips")
    ax.set_ylim(bottom=0)
    ax.set_title("ours, end to end, by clip count")
    ax.legend()
    ax = axes[1, 1]
    ax.plot(n, [p["wall_s"] for p in points], "o-", label="wall time (s)")
    ax.set_xticks(n, [str(k) for k in n])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("clips")
    ax.set_ylabel("seconds")
    twin = ax.twinx()
    twin.plot(n, [p["driver_peak_rss_mb"] for p in points], "s--", color="tab:red", label="driver peak RSS (MB)")
    twin.set_ylabel("MB")
    twin.set_ylim(bottom=0)
    ax.set_title("ours: wall time and driver memory by clip count")
    ax.legend(loc="upper left")
    twin.legend(loc="lower right")
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['cores']} cores; {results['started_at']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _defaults_lines(c: dict[str, Any]) -> list[str]:
    """Defaults vs the per-stage layout, what the defaults resolved to, and OCR's own cost."""
    ours, tuned, with_ocr = c["ours"], c.get("ours_tuned"), c.get("ours_ocr")
    if not tuned:
        return []
    defaults = (ours.get("resources") or {}).get("defaults") or {}
    lines = [f"- machine-fitted defaults (fused model workers) {ours['wall_s']:.1f} s, core utilisation "
             f"{_pct(ours.get('utilisation'))}, vs the per-stage layout that was the default before "
             f"(bench/tuned.yaml) {tuned['wall_s']:.1f} s, utilisation {_pct(tuned.get('utilisation'))}: "
             f"the per-stage run takes {tuned['wall_s'] / ours['wall_s']:.2f}x the defaults' time"]
    if with_ocr:
        ocr_cpu = float((with_ocr.get("stage_cpu_s") or {}).get("ocr", 0.0))
        lines.append(f"- OCR (on in production, off in the comparison above): {ocr_cpu / max(with_ocr['videos'], 1):.2f} "
                     f"CPU-s per video in the OCR stage; the run with OCR took {with_ocr['wall_s']:.1f} s "
                     f"({with_ocr['wall_s'] - ours['wall_s']:+.1f} s)")
    if defaults:
        lines.append("- the defaults resolved on this machine to: "
                     + "; ".join(f"`{k}` = {v}" for k, v in defaults.items()))
    return lines
