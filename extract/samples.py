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
from pathlib import Path

import numpy as np

SPEECH_RATE = 16_000  # Hz, what we ask espeak-ng for (it writes 22.05 kHz; we resample)


def synthetic_frame(i: int, fps: float, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Frame ``i`` of a moving-shapes animation, ``(height, width, 3) uint8``."""
    t = i / fps
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=3)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = (x / max(width, 1)) * 255 * 0.6 + base[0] * 0.4
    img[..., 1] = (y / max(height, 1)) * 255 * 0.6 + base[1] * 0.4
    img[..., 2] = (0.5 + 0.5 * np.sin(t + seed)) * 255
    # A bright square circling the centre and a dark disc crossing left to right.
    cx = width / 2 + np.cos(t * 1.3) * width / 4
    cy = height / 2 + np.sin(t * 1.3) * height / 4
    s = max(4, min(width, height) // 6)
    img[int(max(cy - s, 0)):int(cy + s), int(max(cx - s, 0)):int(cx + s)] = (250, 240, 30)
    dx = (t * width / 5) % width
    disc = (x - dx) ** 2 + (y - height / 3) ** 2 < (s * 0.8) ** 2
    img[disc] = (20, 30, 60)
    return img.clip(0, 255).astype(np.uint8)


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


def write_clip(path: str | Path, duration_s: float = 5.0, width: int = 320, height: int = 240,
               fps: float = 15.0, audio: np.ndarray | None | str = "tone", audio_rate: int = 48_000,
               rotation: int = 0, gop: int | None = None, codec: str = "libx264",
               container: str | None = None, seed: int = 0) -> Path:
    """Encode a synthetic clip; returns ``path``.

    ``audio``: ``"tone"``, None (no audio stream), or ``(channels, n) float32`` at ``audio_rate``
    (padded with silence or cut to ``duration_s``). ``rotation``: degrees written as display
    rotation metadata (a phone's portrait video is stored landscape with rotation 90/270).
    ``gop``: key-frame interval in frames (default: encoder's). Sizes must be even for H.264.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_frames = max(1, int(round(duration_s * fps)))
    with av.open(str(path), "w", format=container) as out:
        vs = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        vs.width, vs.height = width, height
        vs.pix_fmt = "yuv420p"
        if gop:
            vs.codec_context.gop_size = gop
            if codec == "libx264":
                vs.codec_context.options = {"keyint_min": str(gop), "sc_threshold": "0"}
        if rotation:
            vs.metadata["rotate"] = str(rotation)
        a_stream = None
        if isinstance(audio, str) and audio == "tone":
            audio = tone(duration_s, audio_rate)
        if audio is not None:
            a_stream = out.add_stream("aac", rate=audio_rate)
            a_stream.layout = "mono" if audio.shape[0] == 1 else ("stereo" if audio.shape[0] == 2 else f"{audio.shape[0]}.0" if audio.shape[0] != 5 else "5.0")
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, fps, width, height, seed), format="rgb24")
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if a_stream is not None:
            _encode_audio(out, a_stream, audio, audio_rate, duration_s)
    if rotation:
        _set_display_rotation(path, rotation)
    return path


def _encode_audio(out, stream, audio: np.ndarray, rate: int, duration_s: float) -> None:
    import av

    n = int(duration_s * rate)
    buf = np.zeros((audio.shape[0], n), np.float32)
    buf[:, : min(n, audio.shape[1])] = audio[:, :n]
    frame_size = stream.codec_context.frame_size or 1024
    layout = stream.layout.name
    pts = 0
    for start in range(0, n, frame_size):
        chunk = np.ascontiguousarray(buf[:, start:start + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = pts
        pts += chunk.shape[1]
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def _set_display_rotation(path: Path, rotation: int) -> None:
    """Rewrite the MP4 with a display matrix for ``rotation`` (stream-copy, no re-encode)."""
    import av

    tmp = path.with_suffix(".rot" + path.suffix)
    with av.open(str(path)) as src, av.open(str(tmp), "w", format="mp4") as dst:
        mapping = {}
        for s in src.streams:
            mapping[s.index] = dst.add_stream_from_template(s)
        vs = mapping[src.streams.video[0].index]
        # FFmpeg's mov muxer turns the "rotate" tag into the tkhd display matrix.
        vs.metadata["rotate"] = str(rotation)
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            dst.mux(packet)
    tmp.replace(path)


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
