"""Synthetic sample clips made with PyAV, for the demo, tests and benchmarks.

``write_clip`` encodes moving shapes over a gradient (H.264 in MP4 by default) with an optional
audio track (a waveform you pass, e.g. espeak-ng speech, or a tone), optional rotation
metadata and a chosen GOP. ``make_samples`` writes a small varied set plus sidecar JSON
captions and a ``manifest.jsonl``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

SPEECH_RATE = 16_000  # Hz, what we ask espeak-ng for (it writes 22.05 kHz; we resample)


def synthetic_frame(i: int, fps: float, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Frame ``i`` of a moving-shapes animation, ``(height, width, 3) uint8``."""
    t = i / fps
    img = _gradient(width, height, seed).copy()
    img[..., 2] = np.float32((0.5 + 0.5 * np.sin(t + seed)) * 255)  # in [0, 255]: cast is exact
    # A bright square circling the centre and a dark disc crossing left to right.
    cx = width / 2 + np.cos(t * 1.3) * width / 4
    cy = height / 2 + np.sin(t * 1.3) * height / 4
    s = max(4, min(width, height) // 6)
    img[int(max(cy - s, 0)):int(cy + s), int(max(cx - s, 0)):int(cx + s)] = (250, 240, 30)
    dx = (t * width / 5) % width
    r = s * 0.8
    # The disc test only inside its bounding box: same pixels as over the whole frame, far cheaper.
    x0, x1 = max(int(dx - r) - 1, 0), min(int(dx + r) + 2, width)
    y0, y1 = max(int(height / 3 - r) - 1, 0), min(int(height / 3 + r) + 2, height)
    if x0 < x1 and y0 < y1:
        y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        disc = (x - dx) ** 2 + (y - height / 3) ** 2 < r ** 2
        img[y0:y1, x0:x1][disc] = (20, 30, 60)
    return img


@lru_cache(maxsize=8)
def _gradient(width: int, height: int, seed: int) -> np.ndarray:
    """The static background of ``synthetic_frame``: ``(height, width, 3) uint8`` (read-only)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.random.default_rng(seed).uniform(0, 255, size=3)
    img = np.zeros((height, width, 3), np.float32)
    img[..., 0] = (x / max(width, 1)) * 255 * 0.6 + base[0] * 0.4
    img[..., 1] = (y / max(height, 1)) * 255 * 0.6 + base[1] * 0.4
    out = img.clip(0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


def tone(duration_s: float, rate: int = 48_000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A quiet sine tone, ``(channels, duration_s * rate) float32`` in [-1, 1]."""
    t = np.arange(int(duration_s * rate)) / rate
    wave_ = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave_[None, :], channels, axis=0)


def speech(text: str, voice: str = "en", rate: int = SPEECH_RATE, words_per_minute: int = 160) -> np.ndarray | None:
    """``text`` spoken by espeak-ng as ``(1, n) float32`` at ``rate`` Hz; None when espeak-ng is absent."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(wav_path), text],
                       check=True, capture_output=True, timeout=120)
        with wave.open(str(wav_path)) as w:
            src_rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    n_out = int(round(len(pcm) * rate / src_rate))
    out = np.interp(np.linspace(0, len(pcm) - 1, n_out), np.arange(len(pcm)), pcm).astype(np.float32)
    return out[None, :]


AUDIO_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}


def write_clip(path: str | Path, duration_s: float = 5.0, width: int = 320, height: int = 240,
               fps: float = 15.0, audio: np.ndarray | None | str = "tone", audio_rate: int = 48_000,
               rotation: int = 0, gop: int | None = None, codec: str = "libx264",
               container: str | None = None, seed: int = 0, *, pix_fmt: str = "yuv420p",
               frame_times_s: Sequence[float] | None = None, video: bool = True,
               audio_codec: str = "aac", bframes: int | None = None,
               frame_source: Callable[[int, float], np.ndarray] | None = None,
               encoder_options: Mapping[str, str] | None = None,
               muxer_options: Mapping[str, str] | None = None, audio_start_s: float = 0.0) -> Path:
    """Encode a synthetic clip; returns ``path``.

    ``audio``: ``"tone"``, None (no audio stream), or ``(channels, n) float32`` at ``audio_rate``
    (padded with silence or cut to ``duration_s``; 1-6 or 8 channels). ``rotation``: clockwise
    degrees a player turns the picture, written as the stream's display matrix (a phone's
    portrait video is stored landscape with rotation 90 or 270; mov/mp4 only).
    ``gop``: key-frame interval in frames (default: encoder's). ``bframes``: libx264 B-frames
    (default: encoder's). Sizes must be even for H.264 4:2:0; use ``pix_fmt="yuv444p"`` or
    another codec for odd sizes. ``frame_times_s``: presentation time of every frame (seconds,
    increasing) for variable frame rate; frame count and times then ignore ``fps``/``duration_s``.
    ``video=False`` writes an audio-only file. ``frame_source(i, t_s)``: the ``(height, width, 3)
    uint8`` picture of frame ``i`` shown at ``t_s`` (default: ``synthetic_frame``).
    ``encoder_options``: extra video encoder options (e.g. ``{"preset": "veryfast"}``).
    ``muxer_options``: container muxer options (e.g. ``{"live": "1"}`` for Matroska/WebM as a
    browser's MediaRecorder writes it: no duration, no cues). ``audio_start_s``: the audio
    track starts this late (a screen recording, an edit); ``audio`` then fills the rest.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frame_times_s is not None:
        times = np.asarray(frame_times_s, np.float64)
        if times.ndim != 1 or len(times) == 0 or np.any(np.diff(times) <= 0) or times[0] < 0:
            raise ValueError("frame_times_s: need one or more increasing times >= 0")
    else:
        times = np.arange(max(1, int(round(duration_s * fps)))) / fps
    if isinstance(audio, str) and audio == "tone":
        audio = tone(duration_s, audio_rate)
    if audio is not None and audio.shape[0] not in AUDIO_LAYOUTS:
        raise ValueError(f"audio: {audio.shape[0]} channels; supported: {sorted(AUDIO_LAYOUTS)}")
    if not video and audio is None:
        raise ValueError("video=False needs an audio track")
    with av.open(str(path), "w", format=container, options=dict(muxer_options or {})) as out:
        vs = None
        if video:
            rate = Fraction(fps).limit_denominator(1000)
            vs = out.add_stream(codec, rate=rate)
            vs.width, vs.height = width, height
            vs.pix_fmt = pix_fmt
            # Millisecond ticks represent arbitrary (VFR) times; CFR keeps the exact 1/fps grid.
            vs.codec_context.time_base = Fraction(1, 1000) if frame_times_s is not None else 1 / rate
            options = {}
            if gop:
                vs.codec_context.gop_size = gop
                if codec == "libx264":
                    options.update(keyint_min=str(gop), sc_threshold="0")
            if bframes is not None and codec == "libx264":
                options["bf"] = str(bframes)
            options.update(encoder_options or {})
            vs.codec_context.options = options
            if rotation:
                # PyAV takes counter-clockwise degrees; the file's "rotate" convention is clockwise.
                vs.set_display_rotation(-rotation)
        encoder = (_AudioEncoder(out, audio, audio_rate, duration_s, audio_codec, audio_start_s)
                   if audio is not None else None)
        if vs is not None:
            tb = vs.codec_context.time_base
            for i, t in enumerate(times):
                picture = frame_source(i, t) if frame_source else synthetic_frame(i, fps, width, height, seed)
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = int(round(t / tb))
                frame.time_base = tb
                for packet in vs.encode(frame):
                    out.mux(packet)
                if encoder is not None:
                    encoder.encode_until(t)
            for packet in vs.encode():
                out.mux(packet)
        if encoder is not None:
            encoder.encode_until(None)
    return path


class _AudioEncoder:
    """Encodes a waveform in codec-sized frames, interleaved with the video as the file is written."""

    def __init__(self, out, audio: np.ndarray, rate: int, duration_s: float, codec: str, start_s: float = 0.0):
        n = int((duration_s - start_s) * rate)
        self.buf = np.zeros((audio.shape[0], n), np.float32)
        self.buf[:, : min(n, audio.shape[1])] = audio[:, :n]
        self.out, self.rate = out, rate
        self.stream = out.add_stream(codec, rate=rate)
        self.stream.layout = AUDIO_LAYOUTS[audio.shape[0]]
        self.pos = 0
        self.start = int(round(start_s * rate))  # samples before the track's first one

    def encode_until(self, t_s: float | None) -> None:
        """Encode samples up to time ``t_s`` (seconds); None = the rest, then flush."""
        import av

        stream = self.stream
        fmt = stream.format.name
        frame_size = stream.codec_context.frame_size or 1024
        end = self.buf.shape[1] if t_s is None else min(self.buf.shape[1], int(t_s * self.rate) - self.start)
        while self.pos < end and (t_s is None or self.pos + frame_size <= end):
            chunk = self.buf[:, self.pos:self.pos + frame_size]
            if fmt.endswith("p"):
                data = np.ascontiguousarray(chunk)
            else:  # packed sample formats (e.g. s16 for pcm) interleave channels in one plane
                data = np.ascontiguousarray(chunk.T).reshape(1, -1)
            if fmt.startswith("s16"):
                data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=stream.layout.name)
            frame.sample_rate = self.rate
            frame.pts = self.start + self.pos
            self.pos += chunk.shape[1]
            for packet in stream.encode(frame):
                self.out.mux(packet)
        if t_s is None:
            for packet in stream.encode():
                self.out.mux(packet)


@dataclass(frozen=True)
class SampleSpec:
    """One sample clip of ``make_samples``."""

    stem: str
    duration_s: float
    width: int
    height: int
    audio: str  # "speech", "tone" or "none"
    caption: str
    rotation: int = 0
    text: str = ""


SAMPLE_SPECS = (
    SampleSpec("beach_day", 6.0, 320, 180, "speech", "Sunny beach day 🌊 #beach #Summer #fyp",
               text="The waves are calm today and the water is warm. Let us go for a swim."),
    SampleSpec("city_night", 12.0, 256, 144, "tone", "Night lights in the city #citylife #NightVibes @friend"),
    SampleSpec("portrait_dance", 4.0, 240, 136, "speech", "New dance 💃#dance#fyp https://example.com/x",
               rotation=90, text="Watch my new dance move and follow for more."),
    SampleSpec("silent_loop", 3.0, 192, 108, "none", "no sound just vibes #silent"),
    SampleSpec("cooking_long", 45.0, 320, 180, "speech", "Pasta in 45 seconds #cooking #pasta #recipe",
               text=("First boil the water and add a pinch of salt. Then cook the pasta for nine minutes. "
                     "While it cooks, fry the garlic in olive oil. Add the tomatoes and let the sauce "
                     "simmer. Drain the pasta and mix it with the sauce. Serve with fresh basil and "
                     "cheese. That is all it takes to make a simple and tasty dinner.")),
    SampleSpec("tones_only", 8.0, 160, 96, "tone", ""),
)


def make_samples(out_dir: str | Path, specs: tuple[SampleSpec, ...] = SAMPLE_SPECS,
                 fps: float = 12.0, upload_date: str = "2026-11-24") -> Path:
    """Write sample clips, sidecar ``<stem>.json`` captions and ``manifest.jsonl``; returns the manifest path.

    Speech uses espeak-ng when installed, else a tone (the manifest records which in
    ``audio_kind``, an extra column the job ignores).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(specs):
        audio: np.ndarray | str | None = None
        rate = 48_000
        kind = spec.audio
        if spec.audio == "speech":
            audio = speech(spec.text) if spec.text else None
            rate = SPEECH_RATE
            if audio is None:
                audio, rate, kind = "tone", 48_000, "tone"
        elif spec.audio == "tone":
            audio = "tone"
        path = write_clip(out_dir / f"{spec.stem}.mp4", spec.duration_s, spec.width, spec.height, fps,
                          audio=audio, audio_rate=rate, rotation=spec.rotation, seed=i)
        ts = f"{upload_date}T{8 + i:02d}:00:00Z"
        sidecar = {"caption": spec.caption, "upload_ts": ts}
        (out_dir / f"{spec.stem}.json").write_text(json.dumps(sidecar, ensure_ascii=False) + "\n")
        rows.append({"video_id": spec.stem, "uri": path.name, "caption": spec.caption,
                     "upload_ts": ts, "audio_kind": kind, "spoken_text": spec.text if kind == "speech" else ""})
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return manifest


def read_frames(path: str | Path, start_s: float, n: int, width: int, height: int) -> np.ndarray:
    """``n`` consecutive frames of a real video from ``start_s`` on, scaled to ``width`` x ``height``
    (display orientation ignored): ``(n, height, width, 3) uint8``; fewer when the video ends.
    For assembling test clips from trusted media (no sandbox: never call it on uploads)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time < start_s:
                continue
            frames.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
            if len(frames) == n:
                break
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


def dissolve(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames cross-fading from picture ``a`` to picture ``b`` (each ``(h, w, 3) uint8``)."""
    w = (np.arange(1, n + 1, dtype=np.float32) / (n + 1))[:, None, None, None]
    return ((1 - w) * a[None] + w * b[None]).round().astype(np.uint8)


def write_frames(path: str | Path, frames: np.ndarray, fps: float, **options) -> Path:
    """Encode ``frames`` ``(n, h, w, 3) uint8`` as a clip at ``fps`` (``write_clip`` options, no audio)."""
    n, height, width = frames.shape[:3]
    return write_clip(path, duration_s=n / fps, width=width, height=height, fps=fps, audio=None,
                      frame_source=lambda i, t: frames[min(i, n - 1)], **options)
