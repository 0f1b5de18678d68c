"""Labelled real audio for the audio-kind rule: speech, music, other sound, silence.

All of it ships in Debian packages (``make sounds-media`` installs them) or in peer-media:

- **speech**: ``pocketsphinx-testdata`` (``goforward.raw`` "go forward ten meters", numbers,
  cards, five LibriVox readings) and whisper's ``jfk.flac`` (``peer-media/whisper-jfk.mp4``).
- **music**: 4 s excerpts (at 30 % and 70 % of each track) of two game scores:
  ``drascula-music`` (31 orchestral/synth tracks) and ``asc-music`` (3 rock/electronic tracks).
- **sound**: ``openttd-opensfx``, recorded sound effects (engines, horns, crashes, wind,
  animals, applause, machinery; CC-BY/CC0, each credited in the catalogue), the ones at least
  ``MIN_SOUND_S`` long, less its two jingles (music) and its crowd "oooh" (voices).
- **silence**: digital silence, and an OpenSFX recording (wind) turned down to -66 dBFS peak.

``held_out``: the rule in ``extract.media.musicality`` was fitted on the other clips;
asc-music and the odd-numbered OpenSFX sounds only check it.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.media.audio import AUDIO_RATE

REPO = Path(__file__).resolve().parents[1]
PEER_MEDIA = REPO.parent / "shared" / "peer-media"
SPEECH_DIR = Path("usr/share/pocketsphinx/test/data")
DRASCULA_DIR = Path("usr/share/scummvm/drascula/audio")
ASC_DIR = Path("usr/share/games/asc/music")
OPENSFX_CAT = Path("usr/share/games/openttd/baseset/opensfx/opensfx.cat")
EXCERPT_S = 4.0  # music excerpt length, seconds: short clips are where Whisper invents words
EXCERPT_AT = (0.3, 0.7)  # excerpts start at these fractions of a track
PREROLL_S = 1.0  # an excerpt is decoded from this much before its start, seconds
MIN_SOUND_S = 1.0  # shorter OpenSFX sounds (clicks, beeps) are left out, seconds
NOT_SOUND = {0: "jingle (music)", 1: "jingle (music)", 30: "crowd voices"}  # OpenSFX ids left out, why
QUIET_PEAK = 10 ** (-66 / 20)  # the quiet recording's peak, -66 dBFS: silence by whisper.silence_rms


@dataclass(frozen=True)
class LabelledClip:
    """One clip: ``label`` (``speech``/``music``/``sound``/``silence``), ``source`` (package),
    ``name``, ``audio`` ``(m,) float32`` 16 kHz mono and whether the rule was fitted without it."""

    label: str
    source: str
    name: str
    audio: np.ndarray
    held_out: bool


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


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 ``samples`` at ``rate`` Hz as 16 kHz (FFmpeg's resampler through PyAV)."""
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32).reshape(1, -1), format="flt",
                                       layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    out = [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    out += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def opensfx_sounds(catalogue: Path) -> list[tuple[int, str, np.ndarray]]:
    """Every sound of OpenSFX's ``opensfx.cat``: ``(id, title, audio)``, 16 kHz mono float32.

    The catalogue (OpenTTD's sound container): a table of ``(offset, size)`` uint32 pairs
    (the first offset is the table's length), each entry a length-prefixed title followed by a
    RIFF WAV file; empty entries (placeholders) are skipped."""
    data = catalogue.read_bytes()
    count = (struct.unpack_from("<I", data)[0] & 0x7FFFFFFF) // 8
    sounds = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= 0x7FFFFFFF  # the high bit flags a WAV entry
        title_len = data[offset]
        title = data[offset + 1:offset + 1 + title_len].rstrip(b"\0").decode("latin-1")
        body = data[offset + 1 + title_len:offset + size]
        if not body:
            continue
        with wave.open(io.BytesIO(body)) as wav:
            if wav.getsampwidth() != 2:
                raise ValueError(f"{catalogue}: sound {i} is {8 * wav.getsampwidth()}-bit, expected 16-bit")
            raw = wav.readframes(wav.getnframes())
            pcm = np.frombuffer(raw[:len(raw) // 2 * 2], "<i2").reshape(-1, wav.getnchannels()).mean(axis=1)
            sounds.append((i, title.split(".")[0].strip('"'), resample(pcm / 32768.0, wav.getframerate())))
    return sounds


def read_excerpts(path: Path) -> list[tuple[float, np.ndarray]]:
    """``(start_s, excerpt)`` of a music track: ``EXCERPT_S`` of 16 kHz mono float32 from each of
    ``EXCERPT_AT`` of its duration, decoded from a seek (not the whole track)."""
    import av

    excerpts = []
    with av.open(str(path)) as container:
        stream = container.streams.best("audio")
        duration_s = float(stream.duration * stream.time_base) if stream.duration else container.duration / av.time_base
        for fraction in EXCERPT_AT:
            start_s = max(0.0, duration_s - EXCERPT_S) * fraction
            # Decode from PREROLL_S earlier: an MP3 frame right after a seek lacks its bit reservoir.
            container.seek(int(max(0.0, start_s - PREROLL_S) / stream.time_base), stream=stream)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            chunks, first_s, have = [], None, 0
            for frame in container.decode(stream):
                first_s = float(frame.pts * frame.time_base) if first_s is None else first_s
                chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
                have += frame.samples / frame.sample_rate
                if first_s + have >= start_s + EXCERPT_S + 0.1:
                    break
            skip = int(round((start_s - first_s) * AUDIO_RATE))
            audio = np.concatenate(chunks)[skip:skip + int(EXCERPT_S * AUDIO_RATE)]
            excerpts.append((start_s, audio.astype(np.float32)))
    return excerpts


def labelled_clips(root: Path = Path("/"), tracks: int | None = None) -> list[LabelledClip]:
    """The labelled set (module doc) of what is installed under ``root``; with ``tracks``, at most
    that many tracks of each score, spread evenly over its track list (a cheaper set for tests).
    Raises FileNotFoundError naming ``make sounds-media`` when a package is missing."""
    needed = [root / SPEECH_DIR / "goforward.raw", root / DRASCULA_DIR / "track1.ogg",
              root / ASC_DIR / "frontiers.mp3", root / OPENSFX_CAT]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"labelled audio not installed ({', '.join(missing)}): run `make sounds-media`")
    clips = []
    speech_dir = root / SPEECH_DIR
    for path in sorted(p for pattern in ("*.raw", "cards/*.wav", "librivox/*.wav") for p in speech_dir.glob(pattern)):
        clips.append(LabelledClip("speech", "pocketsphinx-testdata", str(path.relative_to(speech_dir)),
                                  read_audio(path), False))
    if (PEER_MEDIA / "whisper-jfk.mp4").is_file():
        clips.append(LabelledClip("speech", "peer-media", "whisper-jfk.mp4", read_audio(PEER_MEDIA / "whisper-jfk.mp4"),
                                  False))
    for source, folder, held_out in (("drascula-music", DRASCULA_DIR, False), ("asc-music", ASC_DIR, True)):
        paths = sorted(p for p in (root / folder).glob("*") if p.suffix in (".ogg", ".mp3"))
        if tracks is not None and len(paths) > tracks:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, tracks).astype(int)]
        for path in paths:
            for start_s, audio in read_excerpts(path):
                clips.append(LabelledClip("music", source, f"{path.name}@{start_s:.0f}s", audio, held_out))
    sounds = opensfx_sounds(root / OPENSFX_CAT)
    for i, title, audio in sounds:
        if i not in NOT_SOUND and len(audio) >= MIN_SOUND_S * AUDIO_RATE:
            clips.append(LabelledClip("sound", "openttd-opensfx", f"{i}: {title}", audio, i % 2 == 1))
    wind = next(audio for _, title, audio in sounds if title == "Wind")
    clips += [LabelledClip("silence", "digital", "zeros 4 s", np.zeros(int(4 * AUDIO_RATE), np.float32), False),
              LabelledClip("silence", "openttd-opensfx", "Wind at -66 dBFS",
                           (wind * (QUIET_PEAK / np.abs(wind).max())).astype(np.float32), False)]
    return clips
