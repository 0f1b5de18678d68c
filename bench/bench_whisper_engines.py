"""Whisper on a CPU: audio seconds per CPU-second of the torch and CTranslate2 int8 engines.

The same real recorded speech (``tests/data/speech`` and ``../shared/peer-media/whisper-jfk.mp4``),
the same Whisper base checkpoint (``extract.models.whisper.base_weights_path()``) and the same
windows go through ``WhisperTranscriber.transcribe_batch`` with ``whisper.engine`` set to
``torch`` and to ``ctranslate2``, at each thread count asked for, two ways:

- ``transcribe``: every window encoded and decoded (speech);
- ``encode only``: every window encoded, none decoded, as for a window where voice activity
  found no speech (music, noise: only the audio embedding is computed).

Each figure is the best of ``--repeats`` runs after a warm-up, in CPU-seconds of this process
(user + system, all threads), which a shared machine still measures fairly, with the wall time
beside it. Word error rates are against the clips' reference texts.

``python -m bench.bench_whisper_engines [--threads 1 2] [--repeats 2]`` prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "speech"
JFK = REPO.parent / "shared" / "peer-media" / "whisper-jfk.mp4"
JFK_TEXT = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def real_speech() -> list[tuple[str, np.ndarray]]:
    """``[(reference text, (m,) float32 16 kHz)]`` of the recorded clips."""
    from extract.media.audio import decode_audio

    clips = []
    for name, text in json.loads((SPEECH / "references.json").read_text()).items():
        with wave.open(str(SPEECH / name)) as w:
            clips.append((text, np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768))
    if JFK.is_file():
        clips.append((JFK_TEXT, decode_audio(str(JFK))))
    return clips


def _markdown_row(r: dict) -> str:
    return (f"| {r['threads']} | {r['engine']} | {r['mode']} | {r['cpu_s']} | {r['wall_s']} | "
            f"{r['audio_s_per_cpu_s']} | {r['audio_s_per_wall_s']} | {'' if r['wer'] is None else r['wer']} |")


def measure(threads: list[int], repeats: int) -> list[dict]:
    """Time every (threads, engine, path); each row is printed as a Markdown table row when done."""
    import torch

    from extract.config import WhisperConfig, WhisperModelConfig
    from extract.models.whisper import WhisperTranscriber
    from extract.tools.whisper_eval import base_weights_path, word_error_rate

    clips = real_speech()
    texts, audios = [t for t, _ in clips], [a for _, a in clips]
    audio_s = sum(len(a) for a in audios) / 16000
    no_speech = [[] for _ in audios]
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        for engine in ("torch", "ctranslate2"):
            tr = WhisperTranscriber(WhisperModelConfig(name=str(base_weights_path())),
                                    WhisperConfig(engine=engine), device="cpu")
            for mode, spans in (("transcribe", None), ("encode only", no_speech)):
                tr.transcribe_batch(audios[:1], 8, None if spans is None else spans[:1])  # warm-up
                best = None
                for _ in range(repeats):
                    wall, cpu = time.perf_counter(), time.process_time()
                    out = tr.transcribe_batch(audios, 8, spans)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if best is None or cpu < best[1]:
                        best = (wall, cpu, out)
                wall, cpu, out = best
                row = {"threads": n, "engine": f"{engine} ({tr.engine.precision})", "mode": mode,
                             "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                             "audio_s_per_cpu_s": round(audio_s / cpu, 2), "audio_s_per_wall_s": round(audio_s / wall, 2),
                       "wer": None if spans is not None else round(word_error_rate(texts, [t.text for t in out]), 3)}
                rows.append(row)
                print(_markdown_row(row), flush=True)
    return [{"clips": len(clips), "audio_s": round(audio_s, 1), "load_avg_1m": os.getloadavg()[0]}, *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| threads | engine | path | CPU s | wall s | audio s / CPU s | audio s / wall s | WER |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    head = measure(args.threads, args.repeats)[0]
    print(f"\n{head['clips']} real speech clips, {head['audio_s']} s of audio, Whisper base; "
          f"load average at the end {head['load_avg_1m']:.1f}")


if __name__ == "__main__":
    main()
