"""Whisper throughput: audio seconds transcribed per second, batched across videos vs one by one.

The same short spoken clips (espeak-ng, several voices, 3-15 s) and the same weights go through

- ``WhisperTranscriber.transcribe_batch`` (``extract.models.whisper``): windows of all clips packed
  into batches of ``runtime.whisper_batch_size``;
- ``whisper.transcribe`` called once per clip (openai-whisper's own loop), with the same
  temperature ladder and thresholds;
- faster-whisper (CTranslate2), once per clip with greedy decoding, as the outside reference,
  only when it is installed and a CTranslate2 copy of the weights exists (``--ct2-dir`` of
  ``../shared/tools/whisper_base_weights.py``, looked up next to the base checkpoint as
  ``whisper-base-ct2``). It is not a dependency of the project.

Weights: real Whisper base from ``extract.tools.whisper_eval.base_weights_path()`` when present, else
the tiny random model (then only the speed numbers mean anything, and the table says so).
Every method gets one warm-up clip first. Word error rates are against the spoken text.

``python -m bench.bench_whisper [OUT_DIR] [--clips N] [--threads T]`` prints a Markdown table
and writes ``OUT_DIR/bench_whisper.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.clips import SENTENCES
from bench.machine import device_name, load_average, machine_info
from bench.naive import transcribe_one

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
LEAD_IN_S = 0.5  # silence before the speech, seconds, as in a recorded clip
N_CLIPS = 24
BATCH_SIZE = 16  # runtime.whisper_batch_size default


def make_clips(n: int = N_CLIPS) -> list[tuple[str, np.ndarray]]:
    """``n`` spoken clips ``(text, (m,) float32 16 kHz)``: 1-3 sentences, voices cycling.

    Raises RuntimeError without espeak-ng (the benchmark needs speech).
    """
    from extract.tools.samples import speech
    from extract.media.audio import AUDIO_RATE

    clips = []
    for i in range(n):
        k = 1 + i % 3
        text = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(k))
        audio = speech(text, voice=VOICES[i % len(VOICES)], words_per_minute=150 + 10 * (i % 3))
        if audio is None:
            raise RuntimeError("espeak-ng is not installed: the Whisper benchmark needs speech (make speech)")
        lead_in = np.zeros(int(LEAD_IN_S * AUDIO_RATE), np.float32)
        clips.append((text, np.concatenate([lead_in, audio[0]])))
    return clips


def _timed(fn: Callable[[], list[str]]) -> tuple[float, float, list[str]]:
    """``(wall seconds, CPU seconds of this process, fn())``. CPU seconds are what a shared,
    oversubscribed machine still measures fairly; wall seconds are the number that counts."""
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    texts = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start, texts


def _faster_whisper(ct2_dir: Path, device: str, threads: int):
    """A faster-whisper transcribe function on the CTranslate2 weights, or None when unavailable."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        return None
    if not (ct2_dir / "model.bin").is_file():
        return None
    compute_type = "float16" if device == "cuda" else "float32"
    model = WhisperModel(str(ct2_dir), device=device, compute_type=compute_type, cpu_threads=threads)

    def transcribe(audio: np.ndarray, temperatures: Sequence[float]) -> str:
        segments, _ = model.transcribe(audio, beam_size=1, best_of=1, temperature=list(temperatures))
        return "".join(s.text for s in segments).strip()

    return transcribe, f"faster-whisper one by one ({compute_type}, greedy)"


def run(out_dir: str | Path, n_clips: int = N_CLIPS, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Time the three methods on the same clips; write ``out_dir/bench_whisper.json``; return the result."""
    import torch

    from extract.config import WhisperConfig, WhisperModelConfig
    from extract.media.audio import AUDIO_RATE
    from extract.tools.tiny import make_tiny_whisper
    from extract.models.whisper import WhisperTranscriber
    from extract.tools.whisper_eval import base_weights_path, word_error_rate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = base_weights_path()
    real = base.is_file()
    weights = str(base) if real else make_tiny_whisper(out_dir)
    cfg = WhisperConfig()
    transcriber = WhisperTranscriber(WhisperModelConfig(name=weights), cfg)
    clips = make_clips(n_clips)
    texts = [t for t, _ in clips]
    audios = [a for _, a in clips]
    audio_s = sum(len(a) for a in audios) / AUDIO_RATE
    threads = torch.get_num_threads()

    def ours(batch: list[np.ndarray]) -> list[str]:
        return [t.text for t in transcriber.transcribe_batch(batch, batch_size)]

    # whisper.transcribe needs openai-whisper's torch model; the CTranslate2 engine keeps none.
    import whisper

    naive_model = transcriber.model or whisper.load_model(weights, device=transcriber.device)
    naive_fp16 = transcriber.device == "cuda"

    def openai_one_by_one(batch: list[np.ndarray]) -> list[str]:
        return [transcribe_one(naive_model, a, cfg, naive_fp16)["text"].strip() for a in batch]

    methods: list[tuple[str, Callable[[list[np.ndarray]], list[str]]]] = [
        (f"extract batched (batch {batch_size}, {transcriber.engine.precision})", ours),
        ("whisper.transcribe one by one", openai_one_by_one),
    ]
    fw = _faster_whisper(base.parent / "whisper-base-ct2", transcriber.device, threads) if real else None
    if fw is not None:
        fw_transcribe, fw_label = fw
        methods.append((fw_label, lambda batch: [fw_transcribe(a, cfg.temperatures) for a in batch]))

    rows = []
    for label, method in methods:
        method(audios[:1])  # warm-up: first-call allocations, kernel selection
        seconds, cpu_seconds, hypotheses = _timed(lambda: method(audios))
        rows.append({"method": label, "seconds": seconds, "cpu_seconds": cpu_seconds,
                     "audio_s_per_s": audio_s / seconds, "wer": word_error_rate(texts, hypotheses)})
    reference = rows[1]
    for row in rows:
        row["speedup_vs_whisper_transcribe"] = reference["seconds"] / row["seconds"]
        row["cpu_speedup_vs_whisper_transcribe"] = reference["cpu_seconds"] / row["cpu_seconds"]
    result = {
        "benchmark": "whisper_transcription",
        "weights": f"{transcriber.lineage}" + ("" if real else " (tiny random: speed only, WER meaningless)"),
        "device": transcriber.device,
        "device_name": device_name(transcriber.device),
        "precision": transcriber.engine.precision,
        "torch_threads": threads,
        "load_avg_1m": load_average(),
        "machine": machine_info(),
        "clips": len(clips),
        "audio_s": round(audio_s, 1),
        "rows": rows,
    }
    (out_dir / "bench_whisper.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as a Markdown table."""
    lines = [f"Whisper {result['weights']} on {result['device']} ({result['device_name']}, {result['precision']}, "
             f"{result['torch_threads']} threads, load {result['load_avg_1m']}): {result['clips']} spoken clips, "
             f"{result['audio_s']} s of audio", "",
             "| method | wall s | audio s/s | speed-up vs whisper.transcribe | CPU s | CPU speed-up | WER |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['method']} | {row['seconds']:.1f} | {row['audio_s_per_s']:.2f} | "
                     f"{row['speedup_vs_whisper_transcribe']:.2f}x | {row['cpu_seconds']:.1f} | "
                     f"{row['cpu_speedup_vs_whisper_transcribe']:.2f}x | {100 * row['wer']:.1f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="bench/out")
    parser.add_argument("--clips", type=int, default=N_CLIPS, help="number of spoken clips")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="windows per Whisper decode")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(markdown(run(args.out_dir, args.clips, args.batch_size)))


if __name__ == "__main__":
    main()
