"""Music vs short speech: what silero-vad and Whisper base say about real clips, and the rule's confusion counts.

Labelled real audio shipped by Debian packages and PyPI wheels (``make sounds-media`` installs
the Debian ones): speech from ``pocketsphinx-testdata`` (``goforward.raw`` "go forward ten
meters", numbers, cards, LibriVox readings) and whisper's ``jfk.flac`` (``peer-media``);
music from ``drascula-music`` (31 game-score tracks) and ``asc-music`` (3 tracks), each cut
into two 4 s excerpts (short clips are where Whisper invents words). Every clip goes through the Whisper stage as a run does (``TranscribeStage``: VAD,
audio kind, windows, fallback, gating) with real Whisper base weights; per clip the table
records the VAD speech seconds, the no-speech probability, each window's final
``avg_logprob`` and temperature, and the words written.

``python -m bench.bench_music_speech [--root /] [--weights .build/whisper-base.pt] [--out FILE.md]
[--json ROWS.json | --from-json ROWS.json]`` writes a markdown section (confusion counts before
and with the rule, then the per-clip measurements) for the lead to add to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from extract.media.audio import AUDIO_RATE

REPO = Path(__file__).resolve().parents[1]
PEER_MEDIA = REPO.parent / "shared" / "peer-media"
SPEECH_DIR = "usr/share/pocketsphinx/test/data"
MUSIC_DIRS = ("usr/share/scummvm/drascula/audio", "usr/share/games/asc/music")
EXCERPTS_S = (4.0,)  # music excerpt lengths: short clips are where Whisper invents words
MUSIC_STARTS = (0.3, 0.7)  # excerpts start at these fractions of a track
BATCH = 16  # clips per stage call (Whisper batches their windows as a run does)


def read_audio(path: Path) -> np.ndarray:
    """A trusted local audio file (any FFmpeg format; ``.raw`` = 16 kHz int16 mono) as 16 kHz mono float32."""
    if path.suffix == ".raw":
        return np.fromfile(path, "<i2").astype(np.float32) / 32768.0
    import av

    with av.open(str(path)) as container:
        stream = container.streams.best("audio")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(stream)
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


def labelled_clips(root: Path) -> list[tuple[str, str, np.ndarray]]:
    """``(label, name, audio)``: label ``speech`` or ``music``."""
    clips = []
    speech_dir = root / SPEECH_DIR
    for path in sorted([*speech_dir.glob("*.raw"), *speech_dir.glob("cards/*.wav"), *speech_dir.glob("librivox/*.wav")]):
        clips.append(("speech", str(path.relative_to(speech_dir)), read_audio(path)))
    if (PEER_MEDIA / "whisper-jfk.mp4").is_file():
        clips.append(("speech", "whisper-jfk.mp4", read_audio(PEER_MEDIA / "whisper-jfk.mp4")))
    tracks = [p for d in MUSIC_DIRS for p in sorted((root / d).glob("*")) if p.suffix in (".ogg", ".mp3")]
    for path in tracks:
        audio = read_audio(path)
        for length_s in EXCERPTS_S:
            n = int(length_s * AUDIO_RATE)
            for fraction in MUSIC_STARTS:
                start = int(max(0, len(audio) - n) * fraction)
                if len(audio) - start >= n // 2:
                    clips.append(("music", f"{path.name}@{start / AUDIO_RATE:.0f}s+{length_s:.0f}s", audio[start:start + n]))
    return clips


def measure(root: Path, weights: Path) -> list[dict]:
    from extract.config import Config
    from extract.stages.transcribe import TranscribeStage
    from extract.rows import rows_to_batch, batch_to_rows

    config = Config().replace(**{"models.whisper.name": str(weights), "runtime.device": "cpu",
                                 "models.clip.pretrained": None})
    stage = TranscribeStage(config)
    out = []
    clips = labelled_clips(root)
    for first in range(0, len(clips), BATCH):
        chunk = clips[first:first + BATCH]
        rows = [{"video_id": name, "has_audio": True, "audio": audio, "error_stage": None} for _, name, audio in chunk]
        started = time.perf_counter()
        done = batch_to_rows(stage(rows_to_batch(rows)))
        wall_s = (time.perf_counter() - started) / len(chunk)
        for (label, name, audio), row in zip(chunk, done):
            segments = json.loads(row["segments_json"] or "[]")
            out.append({"label": label, "clip": name, "seconds": round(len(audio) / AUDIO_RATE, 2),
                        "speech_s": row["speech_s"], "audio_kind": row["audio_kind"],
                        "no_speech_prob": row["no_speech_prob"],
                        "avg_logprob": [s["avg_logprob"] for s in segments],
                        "temperature": [s["temperature"] for s in segments],
                        "words": len((row["transcript_text"] or "").split()),
                        "text": (row["transcript_text"] or "")[:60], "wall_s": round(wall_s, 2)})
        print(f"{len(out)}/{len(clips)} clips", flush=True)
    return out


def kept_by_rule(row: dict) -> bool:
    """Whether the clip keeps words under ``is_unintelligible`` (no text from a window that fell
    back to the last temperature and still fails the log-prob check), from its measured segments."""
    from extract.config import WhisperConfig
    from extract.models.whisper import is_unintelligible

    cfg = WhisperConfig()
    return any(not is_unintelligible(lp, 0.0, t, cfg) for lp, t in zip(row["avg_logprob"], row["temperature"]))


def render(rows: list[dict]) -> str:
    def confusion(label: str, has_words) -> tuple[int, int]:
        members = [r for r in rows if r["label"] == label]
        return sum(1 for r in members if has_words(r)), sum(1 for r in members if not has_words(r))

    kinds = {label: {k: sum(1 for r in rows if r["label"] == label and r["audio_kind"] == k)
                     for k in sorted({r["audio_kind"] for r in rows})} for label in ("speech", "music")}
    lines = ["## Music vs short speech (real clips, Whisper base)", "",
             "Generated by `python -m bench.bench_music_speech`: every clip through the Whisper stage "
             "(silero-vad, windows, fallback ladder, gating) with real Whisper base weights on the CPU; "
             "speech from Debian `pocketsphinx-testdata` and whisper's jfk.flac, music from Debian "
             "`drascula-music`/`asc-music` (4 s excerpts at 30 % and 70 % of each track). "
             "\"before\": Whisper's gating alone; \"rule\": also no text from a window that fell back to "
             "the last temperature and still fails the log-prob check (`is_unintelligible`), judged from each "
             "segment's measured final log-prob and temperature. Music clips that keep words under the rule are "
             "listed below with their scores (confident greedy text: sung or spoken vocals in the track).", "",
             "| truth | clips | words (before) | no words (before) | words (rule) | no words (rule) | VAD audio_kind |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for label in ("speech", "music"):
        before = confusion(label, lambda r: r["words"] > 0)
        rule = confusion(label, lambda r: r["words"] > 0 and kept_by_rule(r))
        lines.append(f"| {label} | {sum(before)} | {before[0]} | {before[1]} | {rule[0]} | {rule[1]} | "
                     + ", ".join(f"{k} {v}" for k, v in kinds[label].items() if v) + " |")
    lines += ["", "Clips where Whisper wrote words (before the rule), and every speech clip:", "",
              "| truth | clip | s | VAD speech s | audio_kind | no-speech p | final avg_logprob (temperature) per segment | words | rule keeps |",
              "|---|---|---:|---:|---|---:|---|---:|---|"]
    for r in rows:
        if r["label"] == "music" and not r["words"]:
            continue
        lp = ", ".join(f"{a:.2f} ({t:.1f})" for a, t in zip(r["avg_logprob"], r["temperature"])) or "-"
        nsp = "-" if r["no_speech_prob"] is None else f"{r['no_speech_prob']:.2f}"
        lines.append(f"| {r['label']} | {r['clip']} | {r['seconds']:.1f} | {r['speech_s']:.2f} | {r['audio_kind']} | "
                     f"{nsp} | {lp} | {r['words']} | {'yes' if r['words'] and kept_by_rule(r) else 'no'} |")
    music_vad = [r["speech_s"] for r in rows if r["label"] == "music"]
    speech_vad = [r["speech_s"] for r in rows if r["label"] == "speech"]
    lines += ["", f"VAD speech seconds: music clips {min(music_vad):.2f}-{max(music_vad):.2f} s "
              f"(median {np.median(music_vad):.2f}), speech clips {min(speech_vad):.2f}-{max(speech_vad):.2f} s "
              f"(median {np.median(speech_vad):.2f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="where the Debian packages' files are")
    parser.add_argument("--weights", type=Path, default=REPO / ".build" / "whisper-base.pt")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: print)")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-clip rows as JSON")
    parser.add_argument("--from-json", type=Path, default=None, help="render rows measured before (--json)")
    args = parser.parse_args()
    rows = json.loads(args.from_json.read_text()) if args.from_json else measure(args.root, args.weights)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    text = render(rows)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
