"""Audio kinds on labelled real audio: speech, music, other sound, silence through the Whisper stage.

The labelled set is ``bench.labelled_audio`` (Debian ``pocketsphinx-testdata``, ``drascula-music``,
``asc-music``, ``openttd-opensfx``; ``make sounds-media``). Every clip goes through the Whisper
stage as a run does (``TranscribeStage``: silero-vad, audio kind, windows, fallback, gating)
with real Whisper base weights on the CPU. Per clip: the kind written, the words, VAD speech
seconds, Whisper's no-speech probability and each segment's final ``avg_logprob`` and
temperature, and the music rule's features (``extract.media.musicality``) with their cost.

``run(out_dir)`` is the ``make bench`` micro-benchmark (``bench/run.py`` puts ``markdown`` in
RESULTS.md); ``python -m bench.bench_music_speech [--root /] [--weights W] [--out DIR]`` alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.labelled_audio import labelled_clips
from bench.machine import load_average, machine_info
from extract.media.audio import AUDIO_RATE

REPO = Path(__file__).resolve().parents[1]
LABELS = ("speech", "music", "sound", "silence")
KINDS = ("speech", "music", "sound", "silence", "none")
BATCH = 16  # clips per stage call (Whisper batches their windows as a run does)


def measure(root: Path, weights: Path) -> list[dict[str, Any]]:
    """One row per labelled clip (module doc)."""
    from extract.config import Config
    from extract.media.musicality import music_features, sounds_like_music
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.transcribe import TranscribeStage

    if not weights.is_file():
        raise FileNotFoundError(f"real Whisper base weights not found at {weights}: `make bench` builds them")
    config = Config().replace(**{"models.whisper.name": str(weights), "runtime.device": "cpu",
                                 "models.clip.pretrained": None})
    stage = TranscribeStage(config)
    clips = labelled_clips(root)
    out = []
    for first in range(0, len(clips), BATCH):
        chunk = clips[first:first + BATCH]
        rows = [{"video_id": c.name, "has_audio": True, "audio": c.audio, "error_stage": None} for c in chunk]
        started = time.perf_counter()
        done = batch_to_rows(stage(rows_to_batch(rows)))
        stage_s = (time.perf_counter() - started) / len(chunk)
        for clip, row in zip(chunk, done):
            started = time.perf_counter()
            features = music_features(clip.audio)
            features_s = time.perf_counter() - started
            segments = json.loads(row["segments_json"] or "[]")
            out.append({"label": clip.label, "source": clip.source, "clip": clip.name, "held_out": clip.held_out,
                        "seconds": round(len(clip.audio) / AUDIO_RATE, 2), "audio_kind": row["audio_kind"],
                        "speech_s": row["speech_s"], "no_speech_prob": row["no_speech_prob"],
                        "avg_logprob": [s["avg_logprob"] for s in segments],
                        "temperature": [s["temperature"] for s in segments],
                        "words": len((row["transcript_text"] or "").split()),
                        "text": (row["transcript_text"] or "")[:60],
                        "beat": features.beat, "flatness": features.flatness,
                        "pitch_classes": features.pitch_classes,
                        "rule_music": sounds_like_music(clip.audio, config.whisper.silence_rms),
                        "features_ms": round(features_s * 1000, 2), "stage_s": round(stage_s, 2)})
        print(f"{len(out)}/{len(clips)} clips", flush=True)
    return out


def run(out_dir: str | Path, root: str | Path = "/", weights: str | Path | None = None) -> dict[str, Any]:
    """Measure every labelled clip; write ``bench_music_speech.json`` under ``out_dir``."""
    from extract.tools.whisper_eval import base_weights_path

    load_before = load_average()
    rows = measure(Path(root), Path(weights) if weights else base_weights_path())
    result = {"benchmark": "music_speech", "machine": machine_info(), "load_avg_before": load_before,
              "load_avg_after": load_average(), "rows": rows}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_music_speech.json").write_text(json.dumps(result, indent=1))
    return result


def _features(rows: list[dict[str, Any]]) -> str:
    median = {k: np.median([r[k] for r in rows]) for k in ("beat", "flatness", "pitch_classes")}
    return f"beat {median['beat']:.2f}, flatness {median['flatness']:.3f}, pitch classes {median['pitch_classes']:.0f}"


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as Markdown: kinds per true label, words on non-speech, the rule held out."""
    from extract.media.musicality import MAX_FLATNESS, MIN_BEAT, MIN_PITCH_CLASSES

    rows = result["rows"]
    by_label = {label: [r for r in rows if r["label"] == label] for label in LABELS}
    sources = ", ".join(sorted({f"`{r['source']}`" for r in rows}))
    lines = [f"{len(rows)} labelled real clips ({sources}; `bench/labelled_audio.py`) through the Whisper stage "
             f"(silero-vad, audio kind, windows, fallback, gating) with real Whisper base weights on the CPU; "
             f"load average {result['load_avg_before']} → {result['load_avg_after']}.", "",
             "| truth | clips | " + " | ".join(f"→ {k}" for k in KINDS) + " | with words |",
             "|---|---:|" + "---:|" * (len(KINDS) + 1)]
    for label, members in by_label.items():
        lines.append(f"| {label} | {len(members)} | "
                     + " | ".join(str(sum(r["audio_kind"] == k for r in members)) for k in KINDS)
                     + f" | {sum(r['words'] > 0 for r in members)} |")
    lines += ["", f"The music rule alone (`extract.media.musicality`: beat ≥ {MIN_BEAT}, or flatness ≤ "
              f"{MAX_FLATNESS} "
              f"and ≥ {MIN_PITCH_CLASSES} pitch classes; fitted on drascula-music and the even-numbered OpenSFX "
              "sounds), on each clip as the stage applies it (`sounds_like_music`):", "",
              "| clips | music → music | music → sound | sound → sound | sound → music |",
              "|---|---:|---:|---:|---:|"]
    for name, held in (("fitted on", False), ("held out", True)):
        music = [r for r in by_label["music"] if r["held_out"] == held]
        sound = [r for r in by_label["sound"] if r["held_out"] == held]
        lines.append(f"| {name} ({len(music)} music, {len(sound)} sound) | {sum(r['rule_music'] for r in music)} | "
                     f"{sum(not r['rule_music'] for r in music)} | {sum(not r['rule_music'] for r in sound)} | "
                     f"{sum(r['rule_music'] for r in sound)} |")
    per_s = [r["features_ms"] / r["seconds"] for r in rows if r["seconds"]]
    lines += ["", "Median features: " + "; ".join(f"{label} {_features(m)}" for label, m in by_label.items()
                                                   if label != "silence" and m)
              + f". Cost: {np.median(per_s):.1f} ms per second of audio (median; a clip is judged on at most "
                "5 blocks of 4 s).", "",
              "Non-speech clips with words, and speech clips not kept as speech:", "",
              "| truth | clip | s | kind | VAD speech s | no-speech p | final avg_logprob (temperature) | words |",
              "|---|---|---:|---|---:|---:|---|---:|"]
    listed = [r for r in rows if (r["label"] != "speech" and r["words"])
              or (r["label"] == "speech" and r["audio_kind"] != "speech")]
    for r in listed:
        lp = ", ".join(f"{a:.2f} ({t:.1f})" for a, t in zip(r["avg_logprob"], r["temperature"])) or "-"
        nsp = "-" if r["no_speech_prob"] is None else f"{r['no_speech_prob']:.2f}"
        lines.append(f"| {r['label']} | {r['clip']} | {r['seconds']:.1f} | {r['audio_kind']} | {r['speech_s']:.2f} | "
                     f"{nsp} | {lp} | {r['words']} |")
    if not listed:
        lines.append("| - | none | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="where the Debian packages' files are")
    parser.add_argument("--weights", type=Path, default=None, help="Whisper base weights (default: the built ones)")
    parser.add_argument("--out", type=Path, default=REPO / ".build" / "bench-music-speech",
                        help="folder for bench_music_speech.json")
    parser.add_argument("--from-json", type=Path, default=None, help="render a result measured before")
    args = parser.parse_args()
    result = (json.loads(args.from_json.read_text()) if args.from_json
              else run(args.out, args.root, args.weights))
    print(markdown(result))


if __name__ == "__main__":
    main()
