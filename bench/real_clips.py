"""The realistic comparison set: real video with real recorded speech, some music, some silence.

``real_specs`` lists 20 distinct clips (no two share their bytes or their content): 14 with
recorded human speech, 3 music-only, 3 silent; 5-120 s; portrait and landscape sizes up to
1080p; 30 fps H.264 ``veryfast`` + AAC; key frames every 1 s, 2 s or x264's default.

Where each part comes from (``SOURCES`` is recorded in every manifest row's ``source``):

- **Pictures**: real videos of other projects' test suites in ``../shared/peer-media/``
  (``README.md`` there names each file's repository and licence): each clip reads one of them
  from its own start offset, scaled to cover the clip's size and centre-cropped, looped when
  the clip is longer than what is left of the source.
- **Speech**: real recordings from the ``pocketsphinx`` 5.1.1 source distribution on PyPI
  (``test/data``: five LibriVox audiobook readings of *Sense and Sensibility* with their
  transcripts, five spoken card names, "go forward ten meters") and the 11 s of
  ``whisper-jfk.mp4`` in peer-media (openai/whisper's ``jfk.flac``). ``ensure_speech_sources``
  downloads the sdist into ``.build/`` with pip (``pip download --no-binary``; set-up time
  only, never at test time). Each speech clip strings recordings together in its own order,
  with pauses, to fill about 85 % of the clip; the manifest's ``spoken_text`` is what was said.
- **Music**: real recorded music, the game score of Debian's ``drascula-music`` (``make
  sounds-media`` installs it; ``MUSIC_TRACKS``), each clip from its own track and offset; the
  tracks stay on this machine (the clips are built locally, never committed).
- **Silence**: an audio track of digital silence (what a muted phone recording uploads).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.clips import CACHE_DIR, FPS, REPO, SPEECH_FILL, UPLOAD_DATE

REAL_CLIPS_VERSION = 2  # bump when the way clips are written changes
PEER_MEDIA = REPO.parent / "shared" / "peer-media"
SPEECH_DIR = REPO / ".build" / "speech-sources"
POCKETSPHINX_SDIST = "pocketsphinx==5.1.1"
SDIST_NAME = "pocketsphinx-5.1.1.tar.gz"
# pip prepares an sdist's metadata even to download it; pocketsphinx's build backend is
# scikit-build-core, installed into a throwaway venv beside it (nothing is built).
BUILD_BACKEND = "scikit-build-core==1.1.2"
RATE = 16_000
PAUSE_S = (0.4, 0.8, 1.2)  # pauses between recordings, in turn
MUSIC_DIR = Path("/usr/share/scummvm/drascula/audio")  # Debian drascula-music (`make sounds-media`)
MUSIC_TRACKS = ("track3.ogg", "track11.ogg", "track23.ogg")  # 98-148 s each: every music clip fits in one

# name -> (member of the sdist or peer-media file, transcript)
SPEECH = {
    "austen-0870": ("test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav", None),
    "austen-0880": ("test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav", None),
    "austen-0890": ("test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav", None),
    "austen-0920": ("test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav", None),
    "austen-0930": ("test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav", None),
    "cards-001": ("test/data/cards/001.wav", "ten of clubs"),
    "cards-002": ("test/data/cards/002.wav", "four queen of clubs"),
    "cards-003": ("test/data/cards/003.wav", "seven of clubs"),
    "cards-004": ("test/data/cards/004.wav", "five five"),
    "cards-005": ("test/data/cards/005.wav", "eight of spades four of clubs seven of hearts"),
    "goforward": ("test/data/goforward.raw", "go forward ten meters"),
    "jfk": ("peer-media:whisper-jfk.mp4", "and so my fellow americans ask not what your country can do for you "
                                          "ask what you can do for your country"),
}
# Picture sources: peer-media files (size and length of each in the comments).
VIDEOS = {
    "video2dataset": "video2dataset-test_video.mp4",  # 1920x1080, 122 s
    "datajuicer1": "datajuicer-video1.mp4",  # 640x360, 12 s
    "datajuicer2": "datajuicer-video2.mp4",  # 480x640 portrait, 23 s
    "datajuicer3": "datajuicer-video3.mp4",  # 362x640 portrait, 50 s
    "pancake": "decord-flipping_a_pancake.mkv",  # 426x240, 10 s
    "mmaction2": "mmaction2-test_mp4.mp4",  # 340x256, 10 s
    "nasa": "torchcodec-nasa_13013.mp4",  # 320x180, 13 s
}
SIZES = ((720, 1280), (1280, 720), (540, 960), (640, 360), (1080, 1920), (1920, 1080))  # portrait first: phones
GOPS = (30, 60, None)


@dataclass(frozen=True)
class RealClipSpec:
    """One clip: ``kind`` ``speech``/``music``/``silence``; pictures from ``video`` (a ``VIDEOS``
    key) from ``video_start_s`` on; ``speech`` the ``SPEECH`` recordings said in order."""

    video_id: str
    kind: str
    duration_s: float
    width: int
    height: int
    gop: int | None
    video: str
    video_start_s: float
    speech: tuple[str, ...] = ()
    seed: int = 0


SPEECH_DURATIONS = (5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 22, 30, 120)
MUSIC_DURATIONS = (10, 20, 40)
SILENT_DURATIONS = (6, 12, 25)


def real_specs(n: int | None = None) -> tuple[RealClipSpec, ...]:
    """The 20 clips (module doc), speech first, then music, then silence; with ``n``, the
    shortest ``n`` of them in the set's mix (at least one music and one silent clip from 3 on)."""
    specs = _all_real_specs()
    if n is None or n >= len(specs):
        return specs
    if n < 1:
        raise ValueError(f"real clip count must be >= 1, got {n}")
    by_kind = {k: [s for s in specs if s.kind == k] for k in ("speech", "music", "silence")}
    others = 0 if n < 3 else max(1, round(n * len(by_kind["music"]) / len(specs)))
    return tuple(by_kind["speech"][:n - 2 * others] + by_kind["music"][:others] + by_kind["silence"][:others])


def _all_real_specs() -> tuple[RealClipSpec, ...]:
    names = list(SPEECH)
    videos = list(VIDEOS)
    specs: list[RealClipSpec] = []
    kinds = ([("speech", d) for d in SPEECH_DURATIONS] + [("music", d) for d in MUSIC_DURATIONS]
             + [("silence", d) for d in SILENT_DURATIONS])
    for i, (kind, duration) in enumerate(kinds):
        width, height = SIZES[i % len(SIZES)]
        if duration > 30 and width * height > 1280 * 720:
            width, height = (1280, 720) if width > height else (720, 1280)  # long clips at 720p: phones' default
        video = "video2dataset" if duration >= 100 else videos[i % len(videos)]
        speech: tuple[str, ...] = ()
        if kind == "speech":
            # A rotation of the recordings from its own start, every other clip in reverse (the
            # other way round once the rotations repeat): no two clips say the same in one order.
            order = names[i % len(names):] + names[:i % len(names)]
            reverse = (i % 2 == 1) != ((i // len(names)) % 2 == 1)
            speech = tuple(order[::-1] if reverse else order)
        specs.append(RealClipSpec(f"real{i:02d}-{kind}", kind, float(duration), width, height,
                                  GOPS[i % len(GOPS)], video, float((i * 1.7) % 7), speech, i))
    return tuple(specs)


def real_set_description(specs: Sequence[RealClipSpec]) -> str:
    """One sentence for RESULTS.md: what the set holds."""
    kinds = {k: [s for s in specs if s.kind == k] for k in ("speech", "music", "silence")}
    total = sum(s.duration_s for s in specs)
    return (f"{len(specs)} distinct clips of {min(s.duration_s for s in specs):.0f}-"
            f"{max(s.duration_s for s in specs):.0f} s ({total:.0f} s in all; `bench/real_clips.py`): "
            f"{len(kinds['speech'])} with real recorded speech (LibriVox audiobook readings, spoken commands and "
            "JFK's inaugural line from the pocketsphinx sdist and peer-media, strung together in a different "
            f"order per clip), {len(kinds['music'])} music-only (real recorded music: Debian drascula-music's game "
            "score), "
            f"{len(kinds['silence'])} silent; pictures from 7 real peer-media videos, portrait and landscape "
            "360p-1080p, 30 fps H.264 veryfast + AAC, key frames every 1 s / 2 s / 250 frames; each clip's "
            "sources are in its manifest row")


def ensure_speech_sources(folder: Path = SPEECH_DIR) -> Path:
    """The pocketsphinx sdist in ``folder`` (downloaded with pip when absent); returns its path."""
    sdist = folder / SDIST_NAME
    if sdist.is_file():
        return sdist
    folder.mkdir(parents=True, exist_ok=True)
    venv = folder / "fetch-venv"
    pip = venv / "bin" / "pip"
    if not pip.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(pip), "install", "-q", BUILD_BACKEND], check=True, timeout=600)
    subprocess.run([str(pip), "download", "-q", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                    POCKETSPHINX_SDIST, "-d", str(folder)], check=True, timeout=900)
    if not sdist.is_file():
        raise RuntimeError(f"pip did not write {sdist}")
    return sdist


def _read_pcm(data: bytes, name: str) -> np.ndarray:
    if name.endswith(".raw"):  # headerless 16 kHz 16-bit mono (pocketsphinx's test convention)
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768
    with wave.open(io.BytesIO(data)) as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{name}: expected 16 kHz mono 16-bit, got {w.getframerate()} Hz "
                             f"x{w.getnchannels()} {8 * w.getsampwidth()}-bit")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def speech_recordings(sdist: Path) -> dict[str, tuple[np.ndarray, str]]:
    """``SPEECH`` name -> (16 kHz mono float32, transcript)."""
    from extract.media.audio import decode_audio

    out: dict[str, tuple[np.ndarray, str]] = {}
    with tarfile.open(sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        for name, (member, text) in SPEECH.items():
            if member.startswith("peer-media:"):
                audio = decode_audio(str(PEER_MEDIA / member.split(":", 1)[1]))
            else:
                audio = _read_pcm(tar.extractfile(f"{root}/{member}").read(), member)
                if text is None:  # the LibriVox readings carry their transcript beside them
                    text = tar.extractfile(f"{root}/{member[:-4]}.txt").read().decode().strip()
            out[name] = (np.asarray(audio, np.float32), " ".join(text.lower().split()))
    return out


def speech_track(spec: RealClipSpec, recordings: dict[str, tuple[np.ndarray, str]]
                 ) -> tuple[np.ndarray, str, list[str]]:
    """The clip's speech (recordings in order, pauses between, about ``SPEECH_FILL`` of the
    clip; the order repeats when the clip is longer than all of them), what is said and the
    recordings used."""
    budget = int(SPEECH_FILL * spec.duration_s * RATE)
    pieces, said, names, used, k = [np.zeros(int(0.5 * RATE), np.float32)], [], [], 0, 0
    while True:
        name = spec.speech[k % len(spec.speech)]
        audio, text = recordings[name]
        if said and used + len(audio) > budget:
            break
        pieces += [audio, np.zeros(int(PAUSE_S[k % len(PAUSE_S)] * RATE), np.float32)]
        said.append(text)
        names.append(name)
        used += len(audio)
        k += 1
        if used >= budget:
            break
    return np.concatenate(pieces), " ".join(said), names


class LoopedPictures:
    """``frame_source`` for ``write_clip``: the source video's picture shown at ``start_s + t``
    (looping to the source's start at its end), scaled to cover ``width`` x ``height`` and
    centre-cropped, ``(height, width, 3) uint8``."""

    def __init__(self, path: Path, start_s: float, width: int, height: int):
        self.path, self.width, self.height = path, width, height
        self.offset = start_s  # source time = t + offset (changes when the source loops)
        self._open()

    def _open(self) -> None:
        import av

        self.container = av.open(str(self.path))
        self.frames = self.container.decode(video=0)
        self.current = next(self.frames)
        self.upcoming = next(self.frames, None)

    def __call__(self, index: int, t_s: float) -> np.ndarray:
        target = t_s + self.offset
        while self.upcoming is not None and self.upcoming.time is not None and self.upcoming.time <= target:
            self.current, self.upcoming = self.upcoming, next(self.frames, None)
        if self.upcoming is None and target > (self.current.time or 0.0) + 0.1:  # past the end: loop
            self.container.close()
            self._open()
            self.offset = -t_s
        return cover(self.current, self.width, self.height)


def cover(frame, width: int, height: int) -> np.ndarray:
    """A PyAV video frame scaled (libswscale) to cover ``width`` x ``height`` and centre-cropped:
    ``(height, width, 3) uint8`` RGB."""
    scale = max(width / frame.width, height / frame.height)
    w, h = max(width, round(frame.width * scale)), max(height, round(frame.height * scale))
    rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    top, left = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(rgb[top:top + height, left:left + width])


def music_track(spec: RealClipSpec) -> np.ndarray:
    """``spec``'s music: ``duration_s`` of a ``MUSIC_TRACKS`` track (by ``seed``) from 10 s in, 16 kHz mono."""
    from bench.labelled_audio import read_audio

    path = MUSIC_DIR / MUSIC_TRACKS[spec.seed % len(MUSIC_TRACKS)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: real music for the bench clips is missing; run `make sounds-media`")
    audio = read_audio(path)[10 * RATE:]
    n = int(spec.duration_s * RATE)
    if len(audio) < n:
        raise ValueError(f"{path}: {len(audio) / RATE:.0f} s from 10 s in, shorter than the {spec.duration_s:.0f} s clip")
    return audio[:n]


def _write_one(spec: RealClipSpec, path: Path, sdist: Path) -> dict:
    from extract.tools.samples import write_clip

    spoken, speech_names = "", []
    if spec.kind == "speech":
        audio, spoken, speech_names = speech_track(spec, speech_recordings(sdist))
    elif spec.kind == "music":
        audio = music_track(spec)
    else:
        audio = np.zeros(int(spec.duration_s * RATE), np.float32)
    pictures = LoopedPictures(PEER_MEDIA / VIDEOS[spec.video], spec.video_start_s, spec.width, spec.height)
    write_clip(path, spec.duration_s, spec.width, spec.height, FPS, audio=audio[None, :], audio_rate=RATE,
               gop=spec.gop, seed=spec.seed, frame_source=pictures, encoder_options={"preset": "veryfast"})
    caption = {"speech": "storytime with me #reading #books #fyp", "music": "vibes #music #fyp",
               "silence": "quiet moment #nature"}[spec.kind]
    return {"video_id": spec.video_id, "uri": path.name, "caption": caption,
            "upload_ts": f"{UPLOAD_DATE}T12:00:00Z", "duration_s": spec.duration_s,
            "size": f"{spec.width}x{spec.height}", "gop": spec.gop, "audio_kind": spec.kind,
            "spoken_text": spoken,
            "source": {"pictures": f"peer-media/{VIDEOS[spec.video]} from {spec.video_start_s:.1f} s",
                       "audio": ({"speech": [SPEECH[n][0] if SPEECH[n][0].startswith("peer-media:")
                                             else f"{SDIST_NAME}:{SPEECH[n][0]}" for n in speech_names],
                                  "music": f"drascula-music:{MUSIC_TRACKS[spec.seed % len(MUSIC_TRACKS)]}",
                                  "silence": "digital silence"}[spec.kind])}}


def clip_key(spec: RealClipSpec) -> str:
    """A clip's cache name: ``<video_id>-<12 hex of its parameters and how clips are written>``."""
    data = {"version": REAL_CLIPS_VERSION, "spec": asdict(spec), "sdist": SDIST_NAME}
    return f"{spec.video_id}-{hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]}"


def _build_cached(spec: RealClipSpec, folder: Path, sdist: Path) -> dict:
    """One clip in ``folder`` (reused when its file and manifest row exist); its manifest row."""
    path, row_path = folder / f"{clip_key(spec)}.mp4", folder / f"{clip_key(spec)}.json"
    if path.is_file() and row_path.is_file():
        return json.loads(row_path.read_text())
    tmp = path.with_name(path.stem + ".tmp.mp4")
    row = _write_one(spec, tmp, sdist)
    tmp.replace(path)  # a clip exists only once it is whole
    row["uri"] = path.name
    row_path.write_text(json.dumps(row, ensure_ascii=False) + "\n")
    return row


def build_real_set(specs: Sequence[RealClipSpec] | None = None, cache_dir: Path = CACHE_DIR,
                   workers: int | None = None) -> Path:
    """Write the clips that are not in ``cache_dir/real`` yet (each clip is cached on its own, so
    a subset or an interrupted build reuses what exists) and a manifest of ``specs`` in order;
    returns the manifest. Checks that no two clips have the same bytes."""
    specs = tuple(specs or real_specs())
    folder = Path(cache_dir) / "real"
    folder.mkdir(parents=True, exist_ok=True)
    sdist = ensure_speech_sources()
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        rows = list(pool.map(_build_cached, specs, [folder] * len(specs), [sdist] * len(specs)))
    digests = {hashlib.sha256((folder / row["uri"]).read_bytes()).hexdigest() for row in rows}
    if len(digests) != len(rows):
        raise RuntimeError(f"{folder}: two clips have the same bytes")
    key = hashlib.sha256("".join(clip_key(s) for s in specs).encode()).hexdigest()[:16]
    manifest = folder / f"manifest-{key}.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return manifest
