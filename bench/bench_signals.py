"""What each per-video signal costs: CPU seconds per video and per second of video, on real clips.

The signals (``signals.*``, ``output.sounds``) and the code each runs, called here as the job
calls it, one clip after the other in this process, CPU time from ``time.process_time`` (every
thread of the process: FFmpeg's, torch's, onnxruntime's):

- ``motion``: what ``signals.motion`` adds to the decode child's ``decode_video`` (the CPU with
  motion alone on, less the CPU with it off): the P frames' vectors read inside the CLIP sampling
  pass, or, where that pass decoded no P frame or the codec exports no vectors, the extra pass of
  ``extract.media.video.pace_pass``;
- ``shots``: the every-frame pass making the 48x27 frames (``pace_pass`` with ``signals.shots``
  alone), plus TransNetV2 on them (``extract.models.shots.ShotDetector.detect``, what the CLIP
  stage runs); the pass and the model are also given apart. With shots on, motion rides on that
  pass instead of the sampling pass;
- ``fingerprint``: the landmarks of the 16 kHz audio (``extract.media.fingerprint.fingerprint``;
  the audio decode itself is Whisper's input, not counted);
- ``languages``: fastText on the caption and on the clip's on-screen text
  (``extract.text.language.LanguageDetector.detect``);
- ``text area``: the OCR boxes' share of the frame (``extract.models.ocr.text_area_ratio``) over
  the lines rapidocr reads on the clip's OCR frames (the OCR itself is the ``ocr`` stage's cost,
  not the signal's).

Clips: the shortest ``n_clips`` of the comparison set (``bench.real_clips``), so the figures sit
beside the job's run over that set: ``bench/render.py`` divides each signal's CPU per second of
video by the run's (``tree_cpu_s`` over the set's seconds of video) for its share of the run.

``python -m bench.bench_signals [OUT_DIR] [--clips N]`` prints a Markdown table and writes
``OUT_DIR/bench_signals.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.machine import load_average, machine_info

SIGNALS = ("motion", "shots", "fingerprint", "languages", "text_area")
PARTS = {"shots": ("shots_pass", "shots_model")}  # a signal measured in parts: the parts, summed
DEFAULT_CLIPS = 6


def _cpu(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the CPU seconds it took (all threads of this process)."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def measure_clip(path: str, caption: str, config: Any, models: dict[str, Any]) -> dict[str, float]:
    """CPU seconds of each signal (and part) on one clip (module doc)."""
    from extract.media.audio import decode_audio
    from extract.media.fingerprint import fingerprint
    from extract.media.limits import Deadline
    from extract.media.probe import open_input, read_probe
    from extract.media.video import decode_video, pace_pass
    from extract.models.ocr import choose_ocr_frames, merge_lines, text_area_ratio
    from extract.models.preprocess import preprocess_spec

    limits = config.limits
    with open_input(path, limits, 1, None) as container:
        info = read_probe(container, name=path)
    cpu: dict[str, float] = {}
    motion_only = config.replace(**{"signals.motion": True, "signals.shots": False})
    shots_only = config.replace(**{"signals.motion": False, "signals.shots": True})

    def deadline() -> Deadline:  # each pass its own limits.timeout_s, as each decode job has
        return Deadline(limits.timeout_s, path)

    spec = preprocess_spec(config.models.clip)
    neither = config.replace(**{"signals.motion": False, "signals.shots": False})
    decoded, without = _cpu(lambda: decode_video(path, neither, spec, audio=False))
    _, with_motion = _cpu(lambda: decode_video(path, motion_only, spec, audio=False))
    cpu["motion"] = max(with_motion - without, 0.0)
    pace, cpu["shots_pass"] = _cpu(lambda: pace_pass(path, shots_only, info, deadline(), 1, None))
    _, cpu["shots_model"] = _cpu(lambda: models["shots"].detect(pace.shot_frames, pace.shot_pts_s))
    waveform = decode_audio(path, limits, deadline(), info)
    _, cpu["fingerprint"] = _cpu(lambda: fingerprint(waveform))
    # The OCR frames the decode stage hands the OCR stage, read as it reads them.
    frames = decoded.ocr_frames
    lines = models["ocr"].read(frames[choose_ocr_frames(frames, config.ocr.max_frames, config.ocr.min_change)])
    height, width = frames.shape[1:3]
    _, cpu["text_area"] = _cpu(lambda: [text_area_ratio(frame_lines, width, height) for frame_lines in lines])
    on_screen = " ".join(merge_lines(lines))
    _, cpu["languages"] = _cpu(lambda: (models["languages"].detect(caption), models["languages"].detect(on_screen)))
    cpu["shots"] = cpu["shots_pass"] + cpu["shots_model"]
    return {**{k: round(v, 4) for k, v in cpu.items()}, "duration_s": round(info.duration_s or 0.0, 2),
            "frames_read": int(pace.frames_read), "ocr_lines": sum(len(f) for f in lines),
            "on_screen_chars": len(on_screen)}


def run(out_dir: str | Path, n_clips: int = DEFAULT_CLIPS) -> dict[str, Any]:
    """Measure each signal on the shortest ``n_clips`` real clips; write ``bench_signals.json``."""
    import torch

    from bench.real_clips import build_real_set, real_specs

    manifest = build_real_set(real_specs(n_clips))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per model worker, as the job's CPU layout runs them
    try:
        return _measure(manifest, out_dir)
    finally:
        torch.set_num_threads(threads)


def _measure(manifest: Path, out_dir: str | Path) -> dict[str, Any]:
    """Load the models once (their CPU apart), measure every clip of ``manifest``, write the result."""
    from extract.config import Config
    from extract.models.ocr import OcrOptions, OcrReader
    from extract.models.shots import ShotDetector
    from extract.text.language import LanguageDetector

    config = Config()
    load_before = load_average()
    started = time.perf_counter()
    models: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    for name, make in (("shots", lambda: ShotDetector("cpu")), ("languages", LanguageDetector),
                       ("ocr", lambda: OcrReader(OcrOptions(min_score=config.ocr.min_score,
                                                            languages=config.ocr.languages,
                                                            max_side=config.ocr.max_side)))):
        models[name], load_s[name] = _cpu(make)
    clips = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        path = str(manifest.parent / row["uri"])
        clips.append({"video_id": row["video_id"], **measure_clip(path, row.get("caption") or "", config, models)})
    total_s = sum(c["duration_s"] for c in clips)
    signals = {}
    for name in SIGNALS + tuple(p for parts in PARTS.values() for p in parts):
        cpu = sum(c[name] for c in clips)
        signals[name] = {"cpu_s": round(cpu, 3), "per_video_ms": round(1000 * cpu / len(clips), 2),
                         "per_video_s_ms": round(1000 * cpu / total_s, 3)}
    result = {"benchmark": "signals", "machine": machine_info(), "clips": len(clips),
              "video_s": round(total_s, 1), "torch_threads": 1, "model_load_cpu_s": {k: round(v, 2) for k, v in
                                                                                  load_s.items()},
              "signals": signals, "per_clip": clips, "wall_s": round(time.perf_counter() - started, 1),
              "load_avg": [load_before, load_average()]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_signals.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


SIGNAL_LABELS = {"motion": "motion (`signals.motion`)", "shots": "shots (`signals.shots`)",
                 "shots_pass": "shots: the 48x27 frame pass", "shots_model": "shots: TransNetV2",
                 "fingerprint": "fingerprint (`output.sounds`)", "languages": "languages (`signals.language`)",
                 "text_area": "text area (`signals.text_area`)"}


def signals_on(config: Any) -> dict[str, bool]:
    """Which of ``SIGNALS`` a run with ``config`` computes."""
    return {"motion": config.signals.motion, "shots": config.signals.shots, "fingerprint": config.output.sounds,
            "languages": config.signals.language, "text_area": config.signals.text_area and config.ocr.enabled}


def markdown(result: dict[str, Any], run_cpu_per_video_s: float | None = None, run_label: str = "",
             on_in_run: dict[str, bool] | None = None) -> str:
    """The result of ``run`` as a Markdown table; with ``run_cpu_per_video_s`` (the job's CPU
    seconds per second of video over a run) and ``on_in_run`` (``signals_on`` of its config),
    each signal's share of that run: its cost over the run's, or over the run's plus its own
    where the run had it off (what turning it on would make it)."""
    share = bool(run_cpu_per_video_s)
    lines = [f"Signal costs: {result['clips']} real clips, {result['video_s']:.0f} s of video, one after the other "
             "in one process (torch on 1 thread, as a CPU model worker); CPU of the signal's own code (module doc "
             "of `bench/bench_signals.py`)."
             + (f" Share: of the job's CPU per second of video in {run_label} ({run_cpu_per_video_s:.2f} s: "
                "every process of the run over the set's seconds of video); a signal that run had off counts "
                "as added to it." if share else ""), "",
             "| signal | on in the run | CPU ms per video | CPU ms per s of video |" + (" share of the run |" if share
                                                                                    else ""),
             "|---|---|---:|---:|" + ("---:|" if share else "")]
    for name, label in SIGNAL_LABELS.items():
        s = result["signals"][name]
        signal = name if name in SIGNALS else next(k for k, parts in PARTS.items() if name in parts)
        on = (on_in_run or {}).get(signal)
        row = (f"| {label} | {'–' if on is None else 'yes' if on else 'no'} | {s['per_video_ms']:.1f} | "
               f"{s['per_video_s_ms']:.2f} |")
        if share:
            row += f" {signal_share(s['per_video_s_ms'] / 1000, run_cpu_per_video_s, on is False):.1%} |"
        lines.append(row)
    return "\n".join(lines)


def signal_share(signal_s: float, run_s: float, off_in_run: bool) -> float:
    """A signal's share of a run's CPU (both per second of video): of the run as measured, or of
    the run plus the signal where the run had it off."""
    return signal_s / (run_s + signal_s if off_in_run else run_s)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="bench/out")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS)
    args = parser.parse_args(argv)
    print(markdown(run(args.out_dir, args.clips)))


if __name__ == "__main__":
    main()
