"""Audio: the video's audio stream (FFmpeg's best, ``probe.audio_stream``) as 16 kHz mono float32, on the video's timeline (``decode_audio``).

``AUDIO_RATE`` is the one definition of the rate Whisper takes. A mid-stream change of rate or
layout starts a new resampler; where the codec headers state a rate that the stream's
timestamps consistently contradict, the timestamps win (``AudioRateCheck``), so the audio spans
what the container says. ``align_to_video`` places a late-starting track after silence, so
transcript times are video times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from extract.config import LimitsConfig
from extract.media.limits import MAX_BAD_PACKETS, TRUNCATION_SLACK_S, Deadline
from extract.media.probe import Probe, audio_stream, open_input
from extract.rows import VideoError

AUDIO_RATE = 16_000  # Hz, what Whisper takes


def align_to_video(audio: np.ndarray, offset_s: float, video_s: float) -> np.ndarray:
    """16 kHz ``audio`` whose first sample is ``offset_s`` seconds after the video's first
    frame time, on the video's timeline: silence before a track that starts late (a screen
    recording, an edit), its samples before the video's start dropped, so transcript times
    are video times. An offset larger than the video (``video_s`` seconds) is a broken
    timestamp, not a delay: the audio is left as it is."""
    if not np.isfinite(offset_s) or abs(offset_s) > video_s:
        return audio
    n = int(round(abs(offset_s) * AUDIO_RATE))
    if offset_s > 0:
        return np.concatenate([np.zeros(n, np.float32), audio])
    return audio[n:]


# Audio whose codec headers contradict the container's timestamps (an encoder switched
# configuration but the headers kept the first one): the timestamps win, judged over a few frames.
STANDARD_AUDIO_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)  # Hz


RATE_WINDOW_FRAMES = 4  # consecutive audio frames whose timestamps judge their sample rate


RATE_AGREES = 0.05  # the header's rate stands when the timestamps' rate is within 5 % of it


RATE_SNAP = 0.01  # the timestamps' rate replaces it only within 1 % of a standard rate


RATE_STEADY = 0.1  # ... and only when every frame of the window implies it within 10 %


class AudioRateCheck:
    """The sample rate to read each decoded audio frame at: its header's, unless the stream's
    timestamps say otherwise.

    For frame ``i`` the timestamps' rate is the samples of frames ``i .. i+W-1`` over the time
    from frame ``i`` to frame ``i+W`` (``W = RATE_WINDOW_FRAMES``), counted only when the
    header rate, layout and format are the same throughout and each frame's own step implies
    that rate within ``RATE_STEADY`` (so a window across a change, or one lost packet, has no
    rate). Within ``RATE_AGREES`` of the header's rate: the header stands; within
    ``RATE_SNAP`` of a standard rate: that rate; anything else (no single rate, no
    timestamps): the previous frame's choice when its header was the same. FFmpeg follows
    the headers, so a track whose packets are 48 kHz behind 16 kHz headers would otherwise
    last three times its real length and drift from the video. ``push`` returns decided
    frames ``W`` frames late; ``flush`` the rest.
    """

    def __init__(self, time_base: Any) -> None:
        """``time_base``: the stream's (a ``Fraction``; None: no timestamps to judge by)."""
        self._tb = (time_base.numerator, time_base.denominator) if time_base else None  # ints: no Fraction per frame
        self._pending: deque[_PendingAudio] = deque()
        self._last: tuple[tuple, int] | None = None  # (configuration, rate) chosen for the previous frame
        self.first_s: float | None = None  # the first timestamped frame's time, s of the container's timeline

    def push(self, frame: Any) -> list[tuple[Any, tuple, int]]:
        """``(frame, configuration, rate)`` for the frames now decided; configuration is
        ``(header rate, layout name, format name)``."""
        entry = _PendingAudio(frame, (frame.sample_rate, frame.layout.name, frame.format.name), frame.samples,
                              frame.pts * self._tb[0] / self._tb[1] if frame.pts is not None and self._tb else None)
        if entry.t_s is not None and self.first_s is None:
            self.first_s = entry.t_s
        if self._pending:
            previous = self._pending[-1]
            if previous.configuration == entry.configuration and previous.t_s is not None and entry.t_s is not None:
                previous.step_s = entry.t_s - previous.t_s  # a step only within one configuration
        self._pending.append(entry)
        return [self._decide(ended=False) for _ in range(len(self._pending) - RATE_WINDOW_FRAMES)]

    def flush(self) -> list[tuple[Any, tuple, int]]:
        return [self._decide(ended=True) for _ in range(len(self._pending))]

    def _timestamp_rate(self) -> float | None:
        window = [self._pending[k] for k in range(RATE_WINDOW_FRAMES)]
        if any(e.step_s is None or e.step_s <= 0 for e in window):
            return None
        rate = sum(e.samples for e in window) / sum(e.step_s for e in window)
        if any(abs(e.samples / e.step_s / rate - 1) > RATE_STEADY for e in window):
            return None  # a window across a change of rate, or a gap: no single rate
        return rate

    def _decide(self, ended: bool) -> tuple[Any, tuple, int]:
        entry = self._pending[0]  # the window of _timestamp_rate starts at this frame
        header = entry.configuration[0]
        measured = None if ended else self._timestamp_rate()
        self._pending.popleft()
        snapped = _standard_rate(measured)
        if measured is not None and abs(measured / header - 1) <= RATE_AGREES:
            rate = header
        elif snapped is not None:
            rate = snapped
        elif self._last is not None and self._last[0] == entry.configuration:
            rate = self._last[1]  # no clear rate here: as the previous frame of this configuration
        else:
            rate = header
        self._last = (entry.configuration, rate)
        return entry.frame, entry.configuration, rate


@dataclass
class _PendingAudio:
    """A decoded audio frame waiting for the frames after it to judge its rate."""

    frame: Any
    configuration: tuple  # (header rate, layout name, format name)
    samples: int
    t_s: float | None  # presentation time, s of the container's timeline
    step_s: float | None = None  # time to the next frame of the same configuration


def _standard_rate(measured: float | None) -> int | None:
    """The standard sample rate within ``RATE_SNAP`` of ``measured`` (Hz), else None."""
    if measured is None:
        return None
    nearest = min(STANDARD_AUDIO_RATES, key=lambda r: abs(measured / r - 1))
    return nearest if abs(measured / nearest - 1) <= RATE_SNAP else None


def _max_audio_samples(limits: LimitsConfig) -> int:
    """The most 16 kHz samples a video's audio may have: ``limits.max_duration_s`` plus slack."""
    return int((limits.max_duration_s + TRUNCATION_SLACK_S) * AUDIO_RATE)


def _decode_audio_stream(container: Any, stream: Any, limits: LimitsConfig,
                         deadline: Deadline) -> tuple[np.ndarray, float | None]:
    """``(audio, first_s)``: 16 kHz mono float32, and the first decoded frame's time in seconds
    of the container's timeline (None without timestamps)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    max_samples = _max_audio_samples(limits)
    chunks: list[np.ndarray] = []
    total = bad = 0
    input_layout: tuple | None = None
    rates = AudioRateCheck(stream.time_base)

    def take(frames: list) -> None:
        nonlocal total
        for out in frames:
            samples = out.to_ndarray().reshape(-1)
            chunks.append(samples)
            total += len(samples)
        if total > max_samples:
            raise VideoError("LimitExceeded", f"{deadline.name!r}: audio lasts over "
                                              f"limits.max_duration_s={limits.max_duration_s}")

    def resample(ready: list[tuple[Any, tuple, int]]) -> None:
        nonlocal resampler, input_layout
        for frame, configuration, rate in ready:
            if rate != configuration[0]:
                frame.sample_rate = rate  # the timestamps' rate, where the header contradicts them
            layout = (rate, *configuration[1:])
            if layout != input_layout:
                # A mid-stream change of rate/layout/format: flush and start a new resampler
                # (PyAV's resampler is bound to its first frame's layout).
                if input_layout is not None:
                    take(resampler.resample(None))
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
                input_layout = layout
            take(resampler.resample(frame))

    try:
        for packet in container.demux(stream):
            deadline.check()
            try:
                frames = stream.codec_context.decode(packet)
            except MemoryError:  # av.error.MemoryError is one too: out of memory is not a bad packet
                raise
            except av.error.FFmpegError as exc:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise VideoError("DecodeError", f"{deadline.name!r}: more than {MAX_BAD_PACKETS} undecodable "
                                                    f"audio packets, last: {exc}") from exc
                continue
            for frame in frames:
                resample(rates.push(frame))
    except MemoryError:  # av.error.MemoryError is one too: out of memory is not a bad packet
        raise
    except av.error.FFmpegError:
        pass  # demuxing stopped early (truncated file): keep the audio that decoded
    resample(rates.flush())
    take(resampler.resample(None))
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return audio, rates.first_s


def decode_audio(path: str, limits: LimitsConfig | None = None, deadline: Deadline | None = None,
                 video: Probe | None = None, fd: int | None = None) -> np.ndarray:
    """The audio stream of ``path`` FFmpeg would pick (``probe.audio_stream``; with ``video``, the
    one its probe chose) as ``(m,) float32`` 16 kHz mono; empty when none.

    Opens with the same hardening as video (``probe.open_input``); raises ``VideoError``.
    With ``video`` (its probe), the audio is placed on that video's timeline (``align_to_video``).
    ``fd``: read this open descriptor of the file instead of opening ``path`` (``open_input``).
    """
    limits = limits or LimitsConfig()
    deadline = deadline or Deadline(limits.timeout_s, path)
    with open_input(path, limits, fd=fd) as container:
        index = video.audio_stream_index if video is not None else None
        stream = container.streams[index] if index is not None else audio_stream(container)
        if stream is None:
            return np.zeros(0, np.float32)
        audio, first_s = _decode_audio_stream(container, stream, limits, deadline)
    if video is None or first_s is None:
        return audio
    aligned = align_to_video(audio, first_s - video.video_start_s, video.video_duration_s)
    return aligned[:_max_audio_samples(limits)]
