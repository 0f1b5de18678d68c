"""Media fixtures for tests, written with PyAV (``extract.tools.samples.write_clip``) in a few ms to a
few seconds each: rotated, VFR, long-GOP, key frames at chosen frames, audio-less, audio-only,
5-channel, odd-sized, scene cuts, huge frames, many streams, and broken or hostile files
(truncated, zero-byte, text, an HLS playlist and a concat list that point at another file).

Import from a test module as ``import media`` (pytest puts ``tests/`` on ``sys.path``).
Each ``*_clip`` helper takes the output path first and returns it. ``reference_frames`` is an
independent decode-everything reader to check sampled frames against.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from extract.tools.samples import synthetic_frame, tone, write_clip
from extract.rows import ERROR_COLUMNS


def small_clip(path: Path, duration_s: float = 4.0, width: int = 160, height: int = 96, fps: float = 10.0,
               **kwargs) -> Path:
    """A short H.264/AAC clip (tone audio unless ``audio=None``); extra kwargs go to ``write_clip``."""
    return write_clip(path, duration_s, width, height, fps, **kwargs)


def portrait_clip(path: Path, duration_s: float = 2.0, rotation: int = 90) -> Path:
    """Stored 192x108 landscape with display rotation ``rotation`` (clockwise): shows 108x192."""
    return write_clip(path, duration_s, 192, 108, 10.0, rotation=rotation)


def vfr_clip(path: Path, frame_times_s: Sequence[float] = (0.0, 0.1, 0.15, 0.6, 1.3, 1.35, 1.4, 2.2, 2.9, 3.5),
             width: int = 160, height: int = 96) -> Path:
    """Variable frame rate: frames at exactly ``frame_times_s`` (ms time base), no audio."""
    return write_clip(path, width=width, height=height, audio=None, frame_times_s=frame_times_s)


def long_gop_clip(path: Path, duration_s: float = 20.0, fps: float = 10.0, gop: int | None = None) -> Path:
    """One key frame for the whole clip by default (``gop`` frames otherwise)."""
    return write_clip(path, duration_s, 128, 72, fps, audio=None, gop=gop or int(duration_s * fps) + 1)


def forced_keyframes_clip(path: Path, keyframe_indices: Sequence[int], n_frames: int, fps: int = 30,
                          width: int = 64, height: int = 36) -> Path:
    """H.264 (x264 defaults: B-frames, no audio) with IDR key frames at exactly the frames
    ``keyframe_indices`` (frame 0 always) and nowhere else: no scene-cut or interval key frames."""
    from fractions import Fraction

    import av
    from av.video.frame import PictureType

    forced = set(keyframe_indices) | {0}
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = Fraction(1, fps)
        vs.codec_context.gop_size = n_frames + 1
        vs.codec_context.options = {"sc_threshold": "0", "keyint_min": str(n_frames + 1), "forced_idr": "1"}
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, fps, width, height, 0), format="rgb24")
            frame.pts, frame.time_base = i, vs.codec_context.time_base
            frame.pict_type = PictureType.I if i in forced else PictureType.NONE
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return Path(path)


def audio_only_clip(path: Path, duration_s: float = 2.0) -> Path:
    """An M4A with one AAC stream and no video."""
    return write_clip(path, duration_s, audio="tone", video=False)


def five_channel_clip(path: Path, duration_s: float = 3.0, freq: float = 440.0) -> Path:
    """Video plus 5.0 AAC at 48 kHz, the same ``freq`` Hz tone in every channel."""
    return write_clip(path, duration_s, 160, 96, 10.0, audio=tone(duration_s, 48_000, freq, channels=5))


def late_audio_clip(path: Path, delay_s: float = 1.0, duration_s: float = 4.0, freq: float = 440.0) -> Path:
    """An MP4 whose video starts at 0 and whose AAC track starts ``delay_s`` later (a screen
    recording, an edit): a ``freq`` Hz tone from ``delay_s`` to the end."""
    return write_clip(path, duration_s, 160, 96, 10.0, audio=tone(duration_s - delay_s, 16_000, freq),
                      audio_rate=16_000, audio_start_s=delay_s)


def odd_size_clip(path: Path, width: int = 161, height: int = 91, duration_s: float = 2.0) -> Path:
    """Odd dimensions (H.264 4:4:4, which allows them)."""
    return write_clip(path, duration_s, width, height, 10.0, audio=None, pix_fmt="yuv444p")


def scene_clip(path: Path, cut_times_s: Sequence[float] = (2.0, 4.5), duration_s: float = 6.0,
               fps: float = 10.0, width: int = 128, height: int = 72) -> Path:
    """Shots separated by hard cuts at ``cut_times_s`` (each a frame time): alternating dark and
    bright versions of the moving-shapes picture, so luma histograms jump at each cut only."""
    cuts = np.asarray(cut_times_s)

    def picture(i: int, t: float) -> np.ndarray:
        shot = int(np.searchsorted(cuts, t + 1e-9, side="right"))
        img = synthetic_frame(i, fps, width, height, seed=shot).astype(np.float32)
        img = img * 0.3 if shot % 2 == 0 else 150 + img * 0.4
        return img.clip(0, 255).astype(np.uint8)

    return write_clip(path, duration_s, width, height, fps, audio=None, frame_source=picture, gop=int(fps))


def big_frame_clip(path: Path, width: int = 4096, height: int = 4096) -> Path:
    """One MPEG-4 Part 2 frame of ``width`` x ``height`` in AVI: its decoder needs 72-150 MB."""
    return write_clip(path, 0.25, width, height, 4.0, audio=None, codec="mpeg4")


def many_streams_clip(path: Path, n_audio: int = 9) -> Path:
    """Matroska with one video and ``n_audio`` PCM audio streams."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audios = [out.add_stream("pcm_s16le", rate=8000) for _ in range(n_audio)]
        for stream in audios:
            stream.layout = "mono"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, 10, 64, 48), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
            for stream in audios:
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
                chunk.sample_rate, chunk.pts = 8000, i * 800
                for packet in stream.encode(chunk):
                    out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``src``'s bytes."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def zero_byte_file(path: Path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def text_file(path: Path) -> Path:
    """Not media: a few lines of text under a video name."""
    Path(path).write_text("this is not a video\n" * 50)
    return Path(path)


def hls_playlist(path: Path, target: Path) -> Path:
    """An HLS playlist whose only segment is ``file://<target>``: an unrestricted FFmpeg opens
    it and decodes the other file's frames."""
    Path(path).write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n"
                          f"file://{Path(target).resolve()}\n#EXT-X-ENDLIST\n")
    return Path(path)


def concat_list(path: Path, target: Path) -> Path:
    """An ffconcat list naming ``target``."""
    Path(path).write_text(f"ffconcat version 1.0\nfile '{Path(target).resolve()}'\n")
    return Path(path)


def keyframe_times(path: Path) -> list[float]:
    """Presentation times (s from the video stream's start) of key-frame packets, by demuxing."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return sorted(float((p.pts - start) * stream.time_base)
                      for p in container.demux(stream) if p.is_keyframe and p.pts is not None)


def reference_frames(path: Path, targets_s: Sequence[float]) -> tuple[list, np.ndarray]:
    """Decode every frame; for each target the first frame at or after it (else the last).

    Returns ``(frames, times)``: PyAV ``VideoFrame`` objects and their times, seconds from the
    video stream's start.
    """
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = float((stream.start_time or 0) * stream.time_base)
        decoded = [(frame.time - start, frame) for frame in container.decode(stream)]
    picked, times = [], []
    for target in targets_s:
        after = [(t, f) for t, f in decoded if t >= target - 1e-6]
        t, frame = after[0] if after else decoded[-1]
        picked.append(frame)
        times.append(t)
    return picked, np.asarray(times)


class FifoCanary:
    """A FIFO that records whether any process opened it for reading.

    Nobody writes to it, so a reader's ``open`` blocks until a writer appears; a poller thread
    opens the write end with ``O_NONBLOCK``, which fails with ``ENXIO`` unless a reader is
    there. A successful open is an access: it is recorded and the reader gets end-of-file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        os.mkfifo(self.path)
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            else:
                self.opened += 1
                os.close(fd)
            self._stop.wait(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def source_row(video_id: str, uri: str | Path) -> dict:
    """A manifest row as the decode stage receives it (no caption or upload time, no error)."""
    return {"video_id": video_id, "uri": str(uri), "caption": None, "upload_ts": None, "dt": "2026-01-01",
            **{c: None for c in ERROR_COLUMNS}}


def read_audio(path: Path) -> np.ndarray:
    """A trusted local audio file as 16 kHz mono float32 (plain PyAV; ``.raw``: 16-bit PCM at 16 kHz)."""
    import av

    from extract.media.audio import AUDIO_RATE

    if path.suffix == ".raw":
        return np.fromfile(path, "<i2").astype(np.float32) / 32768.0
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(container.streams.best("audio"))
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)
