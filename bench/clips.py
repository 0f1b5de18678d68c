"""The benchmark's clip sets: synthetic uploads written with ``extract.tools.samples.write_clip``.

A folder of MP4 files plus a ``manifest.jsonl`` that ``extract run`` reads (the comparison
set of real video and recorded speech is ``bench.real_clips``):

- ``short_specs``: the scaling set (and ``--quick``'s comparison set). 5 s, 320x180, 30 fps, 1 s key-frame interval; every 4th
  clip is spoken (one sentence at 5 s), the others have a silent audio track (nothing said):
  cheap to make in the hundreds, and a 2-core run of 160 stays within a few minutes.

Without espeak-ng the spoken audio is a tone (the manifest's ``audio_kind`` says which). A set is
cached under ``.build/bench-clips/<name>-<hash>/``, the hash covering every clip parameter,
whether speech was available and ``CLIPS_VERSION``; a folder is used only once its
``manifest.jsonl`` exists (written last), so an interrupted build is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

CLIPS_VERSION = 3  # bump when the way clips are written changes
REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".build" / "bench-clips"
FPS = 30.0  # frames per second of every bench clip, what phones record
WORDS_PER_S = 160 / 60  # espeak-ng's speaking rate at samples.speech's default 160 words/minute
SPEECH_FILL = 0.85  # share of a clip's duration the spoken text is sized to fill
UPLOAD_DATE = "2026-11-24"

SENTENCES = (
    "Today we are making a quick breakfast with eggs, tomatoes and fresh bread.",
    "The view from the top of the hill is even better than I expected.",
    "Follow along as I show you three easy ways to fold a paper plane.",
    "This little dog has been waiting by the door all morning for his walk.",
    "Our team scored in the last minute and the whole stadium went wild.",
    "Here is my honest review of the new running shoes after one month.",
    "Add the garlic first, then the onions, and stir until they turn golden.",
    "The train was late again, so I decided to walk across the bridge.",
    "If you water this plant once a week it will grow twice as fast.",
    "We painted the old fence blue and it completely changed the garden.",
    "Let me know in the comments which song you want me to play next.",
    "The sunset over the harbour tonight was orange, pink and purple.",
)
TOPICS = ("cooking", "travel", "diy", "dogs", "football", "review", "recipe", "commute", "plants", "garden",
          "music", "sunset")


@dataclass(frozen=True)
class ClipSpec:
    """One bench clip: ``duration_s`` seconds, ``width`` x ``height`` pixels at ``fps``,
    ``gop`` frames between key frames (None: encoder default), ``text`` spoken by espeak-ng
    (empty: a silent audio track), ``caption`` for the manifest, ``seed`` of the picture;
    ``music``: the audio is a melody with harmonics and drums (``extract.media.music``)
    instead of speech."""

    video_id: str
    duration_s: float
    width: int
    height: int
    fps: float
    gop: int | None
    text: str
    caption: str
    seed: int
    music: bool = False


def spoken_text(duration_s: float, start: int) -> str:
    """Sentences from ``SENTENCES`` (from index ``start``, cycling) that espeak-ng speaks in
    about ``SPEECH_FILL * duration_s`` seconds; at least one sentence."""
    budget = SPEECH_FILL * duration_s * WORDS_PER_S
    words, picked = 0, []
    while not picked or words + len(SENTENCES[(start + len(picked)) % len(SENTENCES)].split()) <= budget:
        sentence = SENTENCES[(start + len(picked)) % len(SENTENCES)]
        picked.append(sentence)
        words += len(sentence.split())
    return " ".join(picked)


def _caption(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return f"{SENTENCES[i % len(SENTENCES)].split(',')[0].rstrip('.')} #{topic} #fyp #Clip{i}"


def short_specs(n: int = 160, duration_s: float = 5.0, width: int = 320, height: int = 180) -> tuple[ClipSpec, ...]:
    """The scaling set (module doc): ``n`` short low-resolution clips with one sentence each."""
    if n < 1:
        raise ValueError(f"short clip count must be >= 1, got {n}")
    return tuple(ClipSpec(f"short{i:04d}", duration_s, width, height, FPS, int(FPS),
                          spoken_text(duration_s, i // 4) if i % 4 == 0 else "", _caption(i), 1000 + i)
                 for i in range(n))


def _write_one(spec: ClipSpec, path: Path, with_speech: bool) -> dict:
    """Encode one clip; returns its manifest row (``audio_kind`` and ``spoken_text`` extra)."""
    import numpy as np

    from extract.tools.samples import SPEECH_RATE, speech, write_clip

    audio, rate, kind = np.zeros((1, int(spec.duration_s * SPEECH_RATE)), np.float32), SPEECH_RATE, "silence"
    if spec.music:
        from extract.media.music import melody

        notes = [60 + (spec.seed * 5 + k * 7) % 12 for k in range(int(spec.duration_s / 0.3) + 1)]
        audio, rate, kind = melody(notes, timbre=("organ", "brass", "flute")[spec.seed % 3], seed=spec.seed), \
            SPEECH_RATE, "music"
    elif spec.text:
        waveform = speech(spec.text) if with_speech else None
        audio, rate, kind = (waveform, SPEECH_RATE, "speech") if waveform is not None else ("tone", 48_000, "tone")
    write_clip(path, spec.duration_s, spec.width, spec.height, spec.fps, audio=audio, audio_rate=rate,
               gop=spec.gop, seed=spec.seed, encoder_options={"preset": "veryfast"})
    return {"video_id": spec.video_id, "uri": path.name, "caption": spec.caption,
            "upload_ts": f"{UPLOAD_DATE}T12:00:00Z", "duration_s": spec.duration_s,
            "size": f"{spec.width}x{spec.height}", "gop": spec.gop, "audio_kind": kind,
            "spoken_text": spec.text if kind == "speech" else ""}


def set_key(name: str, specs: Sequence[ClipSpec], with_speech: bool) -> str:
    """The cache folder name of a clip set: ``<name>-<16 hex of its parameters>``."""
    data = {"version": CLIPS_VERSION, "speech": with_speech, "specs": [asdict(s) for s in specs]}
    return f"{name}-{hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]}"


def build_set(name: str, specs: Sequence[ClipSpec], cache_dir: Path = CACHE_DIR, workers: int | None = None) -> Path:
    """Write (or reuse from ``cache_dir``) a clip set; returns its ``manifest.jsonl``.

    Clips are encoded by ``workers`` processes (default: one per CPU).
    """
    import os

    with_speech = shutil.which("espeak-ng") is not None
    folder = Path(cache_dir) / set_key(name, specs, with_speech)
    manifest = folder / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build: its files may be partial
    folder.mkdir(parents=True)
    paths = [folder / f"{s.video_id}.mp4" for s in specs]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        rows = list(pool.map(_write_one, specs, paths, [with_speech] * len(specs)))
    tmp = folder / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(manifest)
    return manifest


def subset_manifest(manifest: Path, n: int, out: Path) -> Path:
    """A manifest of the first ``n`` rows of ``manifest`` (uris made absolute); returns ``out``."""
    lines = manifest.read_text().splitlines()
    if n > len(lines):
        raise ValueError(f"{manifest} has {len(lines)} clips, {n} requested")
    rows = []
    for line in lines[:n]:
        row = json.loads(line)
        row["uri"] = str((manifest.parent / row["uri"]).resolve())
        rows.append(json.dumps(row, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n")
    return out
