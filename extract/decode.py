"""Decode stage: probe, sample frames sized for CLIP, 16 kHz mono audio, in isolated processes.

What a row gets (``DecodeStage``; columns in ``extract.rows``):

- the probe (``extract.probe``): container, codecs, display size after rotation, fps, bitrate,
  duration, plus ``content_sha256`` and ``file_bytes`` from the streamed fetch;
- ``frames`` ``(n, S, S, 3) uint8`` and ``pts_s`` ``(n,) float32``: for each sampling target
  (``extract.sampling``) the first frame presented at or after it, with its real time in
  seconds from the video stream's start. Frames are scaled by libswscale (``frame.reformat``)
  straight to open_clip's ``preprocess_val`` geometry: shorter side to ``S`` with the model's
  interpolation, then the centre ``S`` x ``S`` crop (``resize_mode`` ``longest`` pads, ``squash``
  stretches). Rotation metadata is applied, so a portrait phone video gives portrait frames.
  Against open_clip's PIL path on the same decoded picture (``tests/test_decode.py``) the
  tolerance is a mean absolute difference under 1.5 of 255 and a 99th percentile of at most 6
  (measured: about 0.85 and 3-4); the larger differences sit on hard colour edges, where
  swscale scales 4:2:0 chroma at its own resolution while the reference converts to full-size
  RGB first. Normalisation (mean/std) happens later, on the device.
- ``audio`` ``(m,) float32``: the first audio stream resampled by ``av.AudioResampler`` to
  16 kHz mono (no ffmpeg binary); empty with ``has_audio = False`` when there is none. A
  mid-stream change of rate or layout starts a new resampler; where the codec headers state a
  rate that the stream's timestamps consistently contradict, the timestamps win
  (``AudioRateCheck``), so the audio spans what the container says. The audio is placed on
  the video's timeline (``align_to_video``): a track that starts after the first frame is
  preceded by silence, so transcript times are video times.

Reading only what is needed: targets are reached by seeking to the key frame before a target
when that key frame lies more than a seek's cost past the decoder's read position (the
furthest packet already sent to it, which runs ahead of the kept frame by the reorder delay
and the frame threads), else by decoding on (``sampling.plan_seeks`` proposes from the
container index's key-frame positions, ``frames_at`` confirms with ``sampling.seek_pays``
against the real read position; no index, no seeks). So a seek never goes back to a key
frame already read, and never costs more frames than it skips. While decoding towards a
target, frames that are presented before it and are not references for later frames are
dropped inside the decoder (``skip_frame = NONREF`` per packet), and only kept frames are
converted and scaled. A file whose header states no duration (a browser's MediaRecorder WebM)
is measured first by a demux-only pass (``_scan_packets``), so targets span its real length.

Truncated and corrupt files: what decodes is used. Single undecodable packets are skipped
(up to ``MAX_BAD_PACKETS``); a file whose video ends more than ``TRUNCATION_SLACK_S`` before a
sampling target (truncated, or a header that lies about the duration) is rejected as
``DecodeError`` naming how far it got; a target within the slack of the last frame takes the
last frame. A broken header (e.g. an MP4 cut before its ``moov`` index) fails at open.

Isolation: ``DecodeStage`` never decodes in its own process. A ``DecodePool`` of long-lived
child processes (``subprocess`` with fork+exec, never a bare fork of a threaded worker; own
process group; ``RLIMIT_AS`` = ``limits.max_memory_bytes``; no core dumps) does the FFmpeg
work. The parent enforces ``limits.timeout_s`` (the child stops itself at the limit; the
parent kills the process group ``KILL_GRACE_S`` later if it has not), and a child that dies
(segfault, abort, out of memory) costs only its video: the row gets ``Crash`` and the next
video gets a fresh process. Results come back as a JSON header plus raw arrays, never pickle,
so a compromised child cannot run code in the parent.

Test-only hook: when the environment variable ``EXTRACT_TEST_CRASH_VIDEO_IDS`` (comma
separated, read in the parent when a video is submitted) names a row's ``video_id``, the child
calls ``os.abort()`` before decoding it. It exists so tests can prove a crash costs one row;
never set it in production.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from extract.config import Config, LimitsConfig, config_from_dict
from extract.preprocess import PreprocessSpec
from extract.probe import (Probe, audio_stream, check_limits, display_rotation, open_input, read_probe,
                           video_stream)
from extract.rows import VideoError, batch_to_rows, is_failed, mark_exception, rows_to_batch
from extract.sampling import (TIME_EPS_S, KeyFrame, SceneDetector, SCENE_SIZE, keyframe_targets, plan_seeks,
                              sample_timestamps, seek_pays, spread_indices)

STAGE = "decode"
AUDIO_RATE = 16_000  # Hz, what Whisper takes
# A seek pays only when its key frame lies more than this many frames past the read position:
# decoding on through them costs their reference frames (about half of an x264 stream's), a
# seek costs a decoder flush and the frame threads refilling from the I-frame.
SEEK_COST_FRAMES = 4
FALLBACK_FPS = 30.0  # frame rate assumed when the container states none (seek costing only)
TRUNCATION_SLACK_S = 0.5  # a target this close after the last frame takes the last frame (else: truncated)
MAX_BAD_PACKETS = 32  # undecodable packets skipped per stream before the file counts as corrupt
SCENE_STORE_FACTOR = 4  # scene frames kept in memory up to this many times max_frames, else a 2nd pass
INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "POINT"}
CRASH_HOOK_ENV = "EXTRACT_TEST_CRASH_VIDEO_IDS"  # test-only, see module docstring
KILL_GRACE_S = 5.0  # after limits.timeout_s, how long the parent waits before killing the child
WORKER_START_TIMEOUT_S = 120.0  # interpreter + numpy + PyAV import on a busy machine
MAX_JOBS_PER_WORKER = 500  # recycle a child after this many videos (bounds leaks in native code)
MIN_HEADROOM_BYTES = 64 * 1024**2  # address space a child needs above its idle size to decode anything
HEADER_MAX_BYTES = 1 << 20  # largest JSON header the parent accepts from a child
DECODE_COLUMNS = ("content_sha256", "file_bytes", "container", "video_codec", "audio_codec", "duration_s",
                  "width", "height", "rotation", "fps", "bitrate", "has_audio", "frames", "pts_s", "n_frames",
                  "sampling_policy", "audio", "audio_s")
PROBE_COLUMNS = ("container", "video_codec", "audio_codec", "duration_s", "width", "height", "rotation", "fps",
                 "bitrate", "has_audio")


# --------------------------------------------------------------------------- frame geometry


@dataclass(frozen=True)
class ResizePlan:
    """How a display-oriented picture becomes the CLIP input square: resize to
    ``(resize_h, resize_w)``, then take the ``size`` x ``size`` window at ``(top, left)``; a
    negative offset pads with zeros (``longest`` mode)."""

    resize_w: int
    resize_h: int
    top: int
    left: int
    size: int


def resize_plan(width: int, height: int, size: int, resize_mode: str) -> ResizePlan:
    """open_clip's ``preprocess_val`` geometry for a ``width`` x ``height`` picture.

    ``shortest``: torchvision ``Resize(size)`` (short side to ``size``, long side
    ``int(size * long / short)``) then ``CenterCrop(size)`` (offset ``int(round((d - size) / 2))``).
    ``longest``: open_clip ``ResizeKeepRatio(longest=1)`` (``round(d * size / long)``) then
    ``CenterCropOrPad`` (``(size - d) // 2`` of padding before). ``squash``: straight to ``size``.
    """
    if resize_mode == "squash":
        return ResizePlan(size, size, 0, 0, size)
    if resize_mode == "shortest":
        if width <= height:
            rw, rh = size, int(size * height / width)
        else:
            rw, rh = int(size * width / height), size
        return ResizePlan(rw, rh, int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0)), size)
    if resize_mode == "longest":
        ratio = max(width / size, height / size)
        rw, rh = max(1, round(width / ratio)), max(1, round(height / ratio))
        return ResizePlan(rw, rh, -((size - rh) // 2), -((size - rw) // 2), size)
    raise ValueError(f"resize_mode {resize_mode!r} is not one of shortest, longest, squash")


def crop_or_pad(image: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """The ``plan.size`` square of a resized ``(h, w, c)`` image (zero-padded where it is smaller)."""
    size = plan.size
    if plan.top >= 0 and plan.left >= 0:
        return image[plan.top:plan.top + size, plan.left:plan.left + size]
    out = np.zeros((size, size) + image.shape[2:], image.dtype)
    src = image[max(plan.top, 0):, max(plan.left, 0):][:size, :size]
    top, left = max(-plan.top, 0), max(-plan.left, 0)
    out[top:top + src.shape[0], left:left + src.shape[1]] = src
    return out


class ClipFrameScaler:
    """Decoded ``VideoFrame`` -> ``(S, S, 3) uint8`` CLIP input, scaled in libswscale.

    One instance per video keeps one swscale context for all its frames. ``threads``: swscale
    slice threads, output identical for any count; ``decode_video`` passes
    ``runtime.decode_threads``, the cores the decoder's threads use and mostly leave idle
    while a kept frame is scaled. Display geometry: sample aspect ratio, then rotation
    (clockwise degrees from the frame's display matrix), then ``resize_plan``; the resize
    happens in the stored orientation and the small result is rotated with numpy.
    """

    def __init__(self, spec: PreprocessSpec, sample_aspect_ratio: float = 1.0, threads: int = 1):
        from av.video.reformatter import VideoReformatter

        self.spec = spec
        self.threads = max(1, threads)
        self.sar = sample_aspect_ratio
        self.interpolation = INTERPOLATIONS.get(spec.interpolation, "BICUBIC")
        self.reformatter = VideoReformatter()
        self.rotation: int | None = None  # of the first frame scaled

    def __call__(self, frame: Any) -> np.ndarray:
        rotation = display_rotation(frame.rotation)
        if self.rotation is None:
            self.rotation = rotation
        width, height = max(1, round(frame.width * self.sar)), frame.height
        turned = rotation in (90, 270)
        if turned:
            width, height = height, width
        plan = resize_plan(width, height, self.spec.image_size, self.spec.resize_mode)
        out_w, out_h = (plan.resize_h, plan.resize_w) if turned else (plan.resize_w, plan.resize_h)
        rgb = self.reformatter.reformat(frame, width=out_w, height=out_h, format="rgb24",
                                        interpolation=self.interpolation, threads=self.threads).to_ndarray()
        if rotation:
            rgb = np.rot90(rgb, k=-(rotation // 90))
        return np.ascontiguousarray(crop_or_pad(rgb, plan))


# --------------------------------------------------------------------------- decoding


class Deadline:
    """Wall-clock budget of one video (``limits.timeout_s``); ``check`` raises ``Timeout``."""

    def __init__(self, seconds: float, name: str = "video"):
        self.seconds = seconds
        self.name = name
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise VideoError("Timeout", f"{self.name!r}: decoding took longer than limits.timeout_s={self.seconds}",
                             retryable=True)


@dataclass(frozen=True)
class DecodeStats:
    """How a video was read: ``strategy`` ``seek`` (at least one seek) or ``sequential``;
    frames that left the decoder, seeks, packets skipped as undecodable, the seconds
    ``decode_video`` took (in the child, for a pool: the rest of a pool call is isolation cost),
    and video packets sent to the decoder (dropped non-reference ones included)."""

    strategy: str
    frames_decoded: int
    seeks: int
    bad_packets: int
    decode_s: float = 0.0
    packets_read: int = 0


@dataclass(frozen=True)
class DecodedVideo:
    """One decoded video: ``frames`` ``(n, S, S, 3) uint8``, ``pts_s`` ``(n,) float32`` seconds
    from the video stream's start, ``audio`` ``(m,) float32`` 16 kHz mono, ``policy`` the
    sampling policy used, and the ``probe`` (rotation and display size from the frames)."""

    probe: Probe
    frames: np.ndarray
    pts_s: np.ndarray
    audio: np.ndarray
    policy: str
    stats: DecodeStats

    @property
    def audio_s(self) -> float:
        return len(self.audio) / AUDIO_RATE


def _memory_error(name: str, limits: LimitsConfig) -> VideoError:
    return VideoError("LimitExceeded",
                      f"{name!r}: decoding ran out of memory under limits.max_memory_bytes={limits.max_memory_bytes}")


class VideoReader:
    """Frames of one video stream from the current position, with seeks and packet skipping.

    ``aim(target_s, following_s)``: with ``skip_nonref``, non-reference frames that cannot be
    the first frame at or after a target are dropped in the decoder: those presented before
    ``target_s``, and, once a packet presented at or after it has gone to the decoder, those
    presented later than that packet and before ``following_s`` (the next target). A reference
    frame is always decoded, so what the caller keeps is exact. ``read_s``: the read position,
    presentation time (s from the stream start) of the furthest packet sent to the decoder
    since opening or ``rewind``; everything the decoder holds or has output lies at or before
    it, and a key frame after it has not been read (a key frame starts a closed GOP: no packet
    after it in decode order is presented before it). ``packets_read`` counts the packets sent.
    Undecodable packets are skipped up to ``MAX_BAD_PACKETS``; a demuxer error ends the stream
    early and is remembered in ``end_reason``.
    """

    def __init__(self, container: Any, info: Probe, deadline: Deadline, skip_nonref: bool, max_pixels: int):
        self.container = container
        self.max_pixels = max_pixels
        self.stream = video_stream(container)
        self.ctx = self.stream.codec_context
        self.tb = self.stream.time_base
        # Integer numerator and denominator: ``pts * num / den`` rounds once, exactly as
        # ``float(pts * tb)`` does, without a Fraction per packet.
        self._tb_num, self._tb_den = (self.tb.numerator, self.tb.denominator) if self.tb else (None, None)
        self.start_s = info.video_start_s
        self.deadline = deadline
        self.skip_nonref = skip_nonref
        self.frame_s = 1.0 / (info.fps or FALLBACK_FPS)
        self.min_skip_s = SEEK_COST_FRAMES * self.frame_s  # a seek must skip more than it costs
        self.next_target_s = 0.0
        self.following_target_s = float("inf")
        self._candidate_s: float | None = None  # earliest packet at/after next_target_s sent to the decoder
        self.read_s = 0.0  # decoding starts at the stream start
        self.frames_decoded = 0
        self.packets_read = 0
        self.seeks = 0
        self.bad_packets = 0
        self.end_reason = ""
        self.packet_scan: tuple[list[float], float] | None = None  # _scan_packets' result, once per file
        self._last_t = -self.frame_s

    def seek(self, keyframe: KeyFrame) -> None:
        self._seek(keyframe.seek_ts)
        self.seeks += 1

    def rewind(self) -> None:
        self._seek(self.stream.start_time or 0)
        self.read_s = 0.0

    def aim(self, target_s: float, following_s: float = float("inf")) -> None:
        """Decode towards ``target_s`` (seconds); ``following_s``: the target after it."""
        self.next_target_s, self.following_target_s = float(target_s), float(following_s)
        self._candidate_s = None

    def _seek(self, ts: int) -> None:
        import av

        self._candidate_s = None  # the flush discards what the decoder holds
        try:
            self.container.seek(ts, stream=self.stream, backward=True)
        except av.error.FFmpegError as exc:
            raise VideoError("DecodeError", f"{self.deadline.name!r}: seek failed: {exc}") from exc

    def time_of(self, pts: int) -> float:
        """A timestamp of this stream as seconds from its start."""
        return self.seconds(pts) - self.start_s

    def seconds(self, ticks: int) -> float:
        """A length in this stream's time base as seconds."""
        return ticks * self._tb_num / self._tb_den

    def _droppable(self, packet_s: float | None) -> bool:
        """Whether a non-reference frame presented at ``packet_s`` cannot be kept (see ``aim``);
        a packet that can be kept becomes the current target's candidate."""
        if packet_s is None:
            return False
        if packet_s < self.next_target_s - TIME_EPS_S:
            return True
        candidate = self._candidate_s
        if candidate is not None and candidate + TIME_EPS_S < packet_s < self.following_target_s - TIME_EPS_S:
            return True  # a frame presented earlier, and still at or after the target, is coming
        self._candidate_s = packet_s if candidate is None else min(candidate, packet_s)
        return False

    def frames(self) -> Iterator[tuple[Any, float]]:
        """``(frame, t)`` in presentation order; ``t`` seconds from the stream start."""
        import av

        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except MemoryError:  # av.error.MemoryError is one too: out of memory is not a bad packet
                raise
            except av.error.FFmpegError as exc:
                self.end_reason = f" (demuxing stopped: {exc})"
                packet = None  # drain what the decoder holds
            self.deadline.check()
            packet_s = self.time_of(packet.pts) if packet is not None and packet.pts is not None else None
            if packet_s is not None:
                self.packets_read += 1
                self.read_s = max(self.read_s, packet_s)
            if self.skip_nonref:
                self.ctx.skip_frame = "NONREF" if self._droppable(packet_s) else "DEFAULT"
            try:
                decoded = self.ctx.decode(packet)
            except MemoryError:  # av.error.MemoryError is one too: out of memory is not a bad packet
                raise
            except av.error.FFmpegError as exc:
                self.bad_packets += 1
                if self.bad_packets > MAX_BAD_PACKETS:
                    raise VideoError("DecodeError", f"{self.deadline.name!r}: more than {MAX_BAD_PACKETS} "
                                                    f"undecodable video packets, last: {exc}") from exc
                decoded = []
            for frame in decoded:
                self.frames_decoded += 1
                if frame.width * frame.height > self.max_pixels:  # the stream changed size mid-file
                    raise VideoError("LimitExceeded", f"{self.deadline.name!r}: a {frame.width}x{frame.height} "
                                                      f"frame is over limits.max_pixels={self.max_pixels}")
                t = self.time_of(frame.pts) if frame.pts is not None else self._last_t + self.frame_s
                self._last_t = t
                self.read_s = max(self.read_s, t)  # packets without a pts: their frame tells
                yield frame, t
            if packet is None:
                return


def frames_at(reader: VideoReader, targets: np.ndarray, plan: Sequence[KeyFrame | None],
               scale: Callable[[Any], np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """For each target (sorted seconds) the scaled first frame at or after it, and its time.

    ``plan`` (``sampling.plan_seeks``) proposes a key frame per target; it is sought only when
    ``sampling.seek_pays`` from the reader's read position (the plan cannot know how far the
    decoder reads ahead), so no seek re-reads packets and the result equals sequential
    decoding's. A demuxer that lands past the target after a seek (a lying index) switches
    seeking off and restarts from the stream start.
    """
    n = len(targets)
    images: list[np.ndarray] = []
    times: list[float] = []
    frames: Iterator[tuple[Any, float]] | None = None
    last: tuple[Any, float] | None = None
    seeking = True
    while len(images) < n:
        i = len(images)
        keyframe = plan[i] if seeking else None
        sought = None
        if keyframe is not None and seek_pays(keyframe.time_s, reader.read_s, reader.min_skip_s):
            reader.seek(keyframe)
            frames, sought = reader.frames(), keyframe
        elif frames is None:
            frames = reader.frames()
        reader.aim(targets[i], targets[i + 1] if i + 1 < n else float("inf"))
        served = overshot = False
        for frame, t in frames:
            if sought is not None and t > targets[i] + TIME_EPS_S and t > sought.time_s + TIME_EPS_S:
                overshot = True  # the demuxer landed past the target: its index is not to be trusted
                break
            sought = None
            last = (frame, t)
            if t < targets[i] - TIME_EPS_S:
                continue
            image = scale(frame)
            while len(images) < n and targets[len(images)] <= t + TIME_EPS_S:
                images.append(image)
                times.append(t)
            served = True
            break
        if overshot:
            seeking = False
            reader.rewind()
            frames = reader.frames()
            continue
        if not served:
            break
    if len(images) < n:
        name = reader.deadline.name
        if last is None:
            raise VideoError("DecodeError", f"{name!r}: no video frame could be decoded{reader.end_reason}")
        frame, t_last = last
        slack = max(TRUNCATION_SLACK_S, 2 * reader.frame_s)
        if targets[-1] - t_last > slack:
            raise VideoError("DecodeError", f"{name!r}: truncated or corrupt: video frames end at {t_last:.2f} s "
                                            f"but the video declares frames up to {targets[-1]:.2f} s"
                                            f"{reader.end_reason}")
        image = scale(frame)
        while len(images) < n:
            images.append(image)
            times.append(t_last)
    return images, times


def _scene_frames(reader: VideoReader, scale: Callable[[Any], np.ndarray], threshold: float,
                  max_frames: int) -> tuple[list[np.ndarray] | None, list[float]]:
    """``scene`` policy in one sequential pass: frames at scene changes (first frame included),
    thinned to ``max_frames``. Returns ``(None, times)`` when there were too many changes to
    keep in memory: the caller then decodes the selected times in a second pass."""
    from av.video.reformatter import VideoReformatter

    thumbs = VideoReformatter()
    detector = SceneDetector(threshold)
    kept: list[np.ndarray] | None = []
    times: list[float] = []
    for frame, t in reader.frames():
        gray = thumbs.reformat(frame, width=SCENE_SIZE[0], height=SCENE_SIZE[1], format="gray",
                               interpolation="AREA", threads=1).to_ndarray()
        if detector.update(gray):
            times.append(t)
            if kept is not None:
                kept.append(scale(frame))
                if len(kept) > SCENE_STORE_FACTOR * max_frames:
                    kept = None
    if not times:
        raise VideoError("DecodeError", f"{reader.deadline.name!r}: no video frame could be decoded{reader.end_reason}")
    index = spread_indices(len(times), max_frames)
    return ([kept[k] for k in index] if kept is not None else None), [times[k] for k in index]


def _scan_packets(reader: VideoReader) -> tuple[list[float], float]:
    """A demux-only pass over the video stream: key-frame presentation times (sorted) and where
    the last packet ends, both in seconds from the stream start. Rewinds afterwards. Made once
    per reader (a file without a duration that is sampled by key frames needs both answers)."""
    import av

    if reader.packet_scan is not None:
        return reader.packet_scan
    times: list[float] = []
    end_s = 0.0
    try:
        for packet in reader.container.demux(reader.stream):
            reader.deadline.check()
            if packet.pts is None:
                continue
            t = reader.time_of(packet.pts)
            if packet.is_keyframe:
                times.append(t)
            length = reader.seconds(packet.duration) if packet.duration else reader.frame_s
            end_s = max(end_s, t + length)
    except MemoryError:  # av.error.MemoryError is one too: out of memory is not a bad packet
        raise
    except av.error.FFmpegError:
        pass  # a broken tail ends the scan; decoding judges whether the targets are reachable
    reader.rewind()
    reader.packet_scan = (sorted(times), end_s)
    return reader.packet_scan


def _with_measured_duration(info: Probe, reader: VideoReader, limits: LimitsConfig, path: str) -> Probe:
    """``info`` with the video's duration measured from its packets when the header states
    none (a browser's MediaRecorder WebM, live-muxed Matroska): uniform sampling needs it, and
    ``limits.max_duration_s`` is checked against it."""
    if info.video_duration_s > 0:
        return info
    _, end_s = _scan_packets(reader)
    info = dataclasses.replace(info, video_duration_s=end_s, duration_s=info.duration_s or end_s)
    check_limits(info, limits, path)
    return info


def decode_video(path: str, config: Config, spec: PreprocessSpec, *, strategy: str = "auto",
                 deadline: Deadline | None = None, audio: bool = True) -> DecodedVideo:
    """Probe ``path``, sample frames by ``config.sampling`` and decode its audio, in this process.

    ``strategy``: ``auto`` (seek where ``plan_seeks`` proposes and ``seek_pays`` confirms, see
    ``frames_at``) or ``sequential`` (never seek; same frames, for comparison). ``audio=False``
    leaves the audio out (``audio`` empty; the probe still says ``has_audio``): for frame-only
    callers and the decode benchmark. Enforces ``config.limits`` except the address-space
    limit, which only a ``DecodePool`` child applies. Raises ``VideoError`` (``MemoryError``
    when memory runs out, which a child reports as ``LimitExceeded``).
    """
    if strategy not in ("auto", "sequential"):
        raise ValueError(f"strategy {strategy!r} is not one of auto, sequential")
    started = time.perf_counter()
    limits, sampling = config.limits, config.sampling
    deadline = deadline or Deadline(limits.timeout_s, path)
    threads = config.runtime.decode_threads
    with open_input(path, limits, threads) as container:
        info = read_probe(container)
        check_limits(info, limits, path)
        scale = ClipFrameScaler(spec, info.sample_aspect_ratio, threads)
        keyframes = info.keyframes if strategy == "auto" else None
        reader = VideoReader(container, info, deadline, skip_nonref=sampling.policy == "uniform",
                             max_pixels=limits.max_pixels)
        info = _with_measured_duration(info, reader, limits, path)
        if sampling.policy == "scene":
            images, times = _scene_frames(reader, scale, sampling.scene_threshold, sampling.max_frames)
        else:
            if sampling.policy == "keyframes":
                targets = _keyframe_policy_targets(reader, info, sampling.max_frames)
            else:
                targets = sample_timestamps(info.video_duration_s, sampling)
            images, times = frames_at(reader, targets, plan_seeks(targets, keyframes, reader.min_skip_s), scale)
        stats = DecodeStats("seek" if reader.seeks else "sequential", reader.frames_decoded, reader.seeks,
                            reader.bad_packets, packets_read=reader.packets_read)
    if images is None:  # scene: too many changes to hold while scanning; decode the chosen ones again
        with open_input(path, limits, threads) as container:
            reader = VideoReader(container, info, deadline, skip_nonref=True, max_pixels=limits.max_pixels)
            targets = np.asarray(times)
            images, times = frames_at(reader, targets, plan_seeks(targets, keyframes, reader.min_skip_s), scale)
    waveform = (_decode_audio_file(path, limits, deadline, info) if audio and info.has_audio
                else np.zeros(0, np.float32))
    frames = np.stack(images) if images else np.zeros((0, spec.image_size, spec.image_size, 3), np.uint8)
    stats = dataclasses.replace(stats, decode_s=time.perf_counter() - started)
    return DecodedVideo(read_probe_rotated(info, scale.rotation or 0), frames, np.asarray(times, np.float32),
                        waveform, sampling.policy, stats)


def _keyframe_policy_targets(reader: VideoReader, info: Probe, max_frames: int) -> np.ndarray:
    """``keyframes`` policy targets; sets the decoder to output key frames only."""
    if info.container == "mov" and info.keyframes:  # the MP4 sample table lists every key frame
        times = [k.time_s for k in info.keyframes]
    else:  # other indexes (MKV cues) may list only some: read the packets' flags
        times, _ = _scan_packets(reader)
    if not times:
        raise VideoError("DecodeError", f"{reader.deadline.name!r}: the video stream has no key frame")
    reader.ctx.skip_frame = "NONKEY"
    # Half a frame early, so the first frame at or after a target is its key frame even when
    # an index time rounds above the frame's presentation time.
    return np.maximum(keyframe_targets(times, max_frames) - 0.5 * reader.frame_s, 0.0)


def read_probe_rotated(info: Probe, rotation: int) -> Probe:
    """``info`` with ``rotation`` applied to its display size (probes start unrotated)."""
    if rotation == info.rotation:
        return info
    width, height = info.width, info.height
    if (rotation in (90, 270)) != (info.rotation in (90, 270)):
        width, height = height, width
    return dataclasses.replace(info, rotation=rotation, width=width, height=height)


def _decode_audio_file(path: str, limits: LimitsConfig, deadline: Deadline,
                       video: Probe | None = None) -> np.ndarray:
    """The first audio stream as 16 kHz mono; with ``video``, placed on that video's timeline
    (``align_to_video``)."""
    with open_input(path, limits) as container:
        stream = audio_stream(container)
        if stream is None:
            return np.zeros(0, np.float32)
        audio, first_s = _decode_audio_stream(container, stream, limits, deadline)
    if video is None or first_s is None:
        return audio
    aligned = align_to_video(audio, first_s - video.video_start_s, video.video_duration_s)
    return aligned[:_max_audio_samples(limits)]


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


def decode_audio(path: str, limits: LimitsConfig | None = None) -> np.ndarray:
    """The first audio stream of ``path`` as ``(m,) float32`` 16 kHz mono; empty when none.

    Opens with the same hardening as video (``probe.open_input``); raises ``VideoError``.
    """
    limits = limits or LimitsConfig()
    return _decode_audio_file(path, limits, Deadline(limits.timeout_s, path))


# --------------------------------------------------------------------------- isolation


def _probe_to_json(probe: Probe) -> dict[str, Any]:
    data = dataclasses.asdict(probe)
    data["keyframes"] = None  # the parent has no use for the index
    return data


def _result_messages(result: DecodedVideo) -> list[bytes]:
    """A result as wire messages: JSON header, then frames, pts and audio as raw bytes."""
    header = {
        "ok": True, "probe": _probe_to_json(result.probe), "policy": result.policy,
        "stats": dataclasses.asdict(result.stats),
        "frames_shape": list(result.frames.shape), "n_pts": len(result.pts_s), "n_audio": len(result.audio),
    }
    return [json.dumps(header).encode(), result.frames.astype(np.uint8, copy=False).tobytes(),
            result.pts_s.astype(np.float32, copy=False).tobytes(), result.audio.astype(np.float32, copy=False).tobytes()]


def _error_message(error: VideoError, recycle: bool = False) -> bytes:
    return json.dumps({"ok": False, "error_type": error.error_type, "message": str(error),
                       "retryable": error.retryable, "recycle": recycle}).encode()


def _vm_bytes() -> int | None:
    """This process's virtual memory size (Linux ``VmSize``), None where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def serve_decode_requests() -> None:
    """Child-process main loop of ``DecodePool`` (stdin: requests, stdout: results).

    First message: ``{"config": ..., "spec": ...}``; the child applies ``RLIMIT_AS`` and answers
    ``{"ready": true}``. Then per job ``{"video_id", "path"}`` -> ``_result_messages`` or an
    error header. Exits on EOF (the parent closed the pipe or died).
    """
    import faulthandler
    import resource
    import traceback

    import av  # noqa: F401  - imported before the address-space limit is applied

    faulthandler.enable()  # a segfault prints the Python stack to stderr, which the parent reports
    results_fd = os.dup(1)
    os.dup2(2, 1)  # stray writes to stdout by native code must not corrupt the result stream
    requests = Connection(0, writable=False)
    results = Connection(results_fd, readable=False)
    init = json.loads(requests.recv_bytes(HEADER_MAX_BYTES))
    config = config_from_dict(init["config"])
    spec = PreprocessSpec(**{**init["spec"], "mean": tuple(init["spec"]["mean"]), "std": tuple(init["spec"]["std"])})
    limit = config.limits.max_memory_bytes
    baseline = _vm_bytes() or 0
    if baseline + MIN_HEADROOM_BYTES > limit:
        results.send_bytes(json.dumps({"ready": False, "message": (
            f"limits.max_memory_bytes={limit} is too small: a decode process uses {baseline} bytes of address "
            f"space before decoding anything; allow at least {baseline + MIN_HEADROOM_BYTES}")}).encode())
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    results.send_bytes(json.dumps({"ready": True, "pid": os.getpid(), "baseline_vm_bytes": baseline}).encode())
    while True:
        try:
            job = json.loads(requests.recv_bytes(HEADER_MAX_BYTES))
        except EOFError:
            return
        if job.get("test_crash"):
            os.abort()  # test-only crash hook (module docstring)
        name = job["path"]
        try:
            messages = _result_messages(decode_video(job["path"], config, spec, strategy=job.get("strategy", "auto"),
                                                     deadline=Deadline(config.limits.timeout_s, name)))
        except VideoError as exc:
            messages = [_error_message(exc)]
        except MemoryError:
            messages = [_error_message(_memory_error(name, config.limits), recycle=True)]
        except Exception as exc:  # noqa: BLE001 - any other failure is this video's, reported with its origin
            where = traceback.extract_tb(exc.__traceback__)[-1]
            message = f"{name!r}: {type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
            messages = [_error_message(VideoError(type(exc).__name__, message, retryable=True))]
        for message in messages:
            results.send_bytes(message)


@dataclass(frozen=True)
class DecodeJob:
    """One video for the pool: ``path`` is local (already fetched)."""

    video_id: str
    path: str
    strategy: str = "auto"


class _Worker:
    """One decode child: a process group of its own, request/result pipes and a stderr file."""

    def __init__(self, init: bytes, env: dict[str, str]):
        self.init = init
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.requests: Connection | None = None
        self.results: Connection | None = None
        self.stderr = None
        self.jobs_done = 0
        self.baseline_vm_bytes = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        req_read, req_write = os.pipe()
        res_read, res_write = os.pipe()
        self.stderr = tempfile.TemporaryFile()
        fd = self.stderr.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)  # truncation-safe
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from extract.decode import serve_decode_requests; serve_decode_requests()"],
                stdin=req_read, stdout=res_write, stderr=self.stderr, env=self.env, start_new_session=True,
                close_fds=True)
        finally:
            os.close(req_read)
            os.close(res_write)
        self.requests = Connection(req_write, readable=False)
        self.results = Connection(res_read, writable=False)
        self.requests.send_bytes(self.init)
        self.jobs_done = 0

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the child reports ready; RuntimeError/ValueError when it cannot start."""
        if not self.results.poll(timeout_s):
            self.kill()
            raise RuntimeError(f"decode process did not start within {timeout_s:.0f} s")
        try:
            hello = json.loads(self.results.recv_bytes(HEADER_MAX_BYTES))
        except (EOFError, OSError) as exc:
            tail = self.stderr_tail()
            self.kill()
            raise RuntimeError(f"decode process failed to start: {tail}") from exc
        if not hello.get("ready"):
            self.kill()
            raise ValueError(hello.get("message", "decode process refused to start"))
        self.baseline_vm_bytes = int(hello.get("baseline_vm_bytes", 0))

    def submit(self, job: DecodeJob) -> None:
        self.stderr.truncate(0)
        request = dataclasses.asdict(job)
        if job.video_id in os.environ.get(CRASH_HOOK_ENV, "").split(","):
            request["test_crash"] = True  # test-only crash hook (module docstring)
        self.requests.send_bytes(json.dumps(request).encode())

    def receive(self, max_frame_bytes: int, max_audio_bytes: int) -> DecodedVideo | VideoError:
        """The child's answer to the submitted job (call once ``results`` is readable)."""
        header = json.loads(self.results.recv_bytes(HEADER_MAX_BYTES))
        self.jobs_done += 1
        if not header["ok"]:
            if header.get("recycle") or self.jobs_done >= MAX_JOBS_PER_WORKER:
                self.kill()
            return VideoError(str(header["error_type"]), str(header["message"]), bool(header["retryable"]))
        shape = tuple(int(d) for d in header["frames_shape"])
        frames = np.frombuffer(self.results.recv_bytes(max_frame_bytes), np.uint8).reshape(shape)
        pts = np.frombuffer(self.results.recv_bytes(4 * shape[0] + 1), np.float32)
        audio = np.frombuffer(self.results.recv_bytes(max_audio_bytes), np.float32)
        if len(pts) != shape[0] or len(audio) != int(header["n_audio"]):
            raise EOFError("decode process sent inconsistent arrays")
        if self.jobs_done >= MAX_JOBS_PER_WORKER:
            self.kill()
        probe = Probe(**header["probe"])
        stats = DecodeStats(**header["stats"])
        return DecodedVideo(probe, frames, pts, audio, str(header["policy"]), stats)

    def stderr_tail(self, n_bytes: int = 1500) -> str:
        if self.stderr is None:
            return ""
        self.stderr.flush()
        size = self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, size - n_bytes))
        return self.stderr.read().decode("utf-8", "replace").strip()

    def kill(self) -> int | None:
        """Kill the child's process group; returns its exit status (negative: signal)."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            status = self.proc.wait()
        for conn in (self.requests, self.results):
            if conn is not None:
                conn.close()
        self.proc = self.requests = self.results = None
        return status

    def close(self) -> None:
        self.kill()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


def _child_env() -> dict[str, str]:
    import extract

    env = dict(os.environ)
    root = str(Path(extract.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # One decode per core: no BLAS thread pools; few malloc arenas keep the address space (RLIMIT_AS) honest.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    return env


class DecodePool:
    """``size`` reusable decode child processes (see the module docstring).

    ``map(jobs)`` decodes jobs concurrently, one per idle child, and returns per job a
    ``DecodedVideo`` or a ``VideoError`` (``Timeout`` retryable after ``limits.timeout_s``;
    ``Crash`` not retryable when the child died). Children start in ``__init__``; ``close``
    (or garbage collection) kills them.
    """

    def __init__(self, config: Config, spec: PreprocessSpec, size: int = 1):
        if size < 1:
            raise ValueError(f"DecodePool size must be >= 1, got {size}")
        self.config = config
        self.size = size
        init = json.dumps({"config": config.to_dict(), "spec": dataclasses.asdict(spec)}).encode()
        self.workers = [_Worker(init, _child_env()) for _ in range(size)]
        s = spec.image_size
        self.max_frame_bytes = max(config.sampling.max_frames, config.sampling.min_frames) * s * s * 3 + 1
        self.max_audio_bytes = int((config.limits.max_duration_s + 2 * TRUNCATION_SLACK_S) * AUDIO_RATE) * 4 + 1
        self._finalizer = weakref.finalize(self, DecodePool._close_workers, self.workers)
        try:
            for worker in self.workers:
                worker.start()
            for worker in self.workers:
                worker.wait_ready(WORKER_START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    @property
    def baseline_vm_bytes(self) -> int:
        """Address space of an idle child (what ``limits.max_memory_bytes`` must exceed)."""
        return max(w.baseline_vm_bytes for w in self.workers)

    def _ensure_started(self, worker: _Worker) -> None:
        if not worker.alive:
            worker.kill()
            worker.start()
            worker.wait_ready(WORKER_START_TIMEOUT_S)

    def map(self, jobs: Iterable[DecodeJob],
            on_result: Callable[[int, DecodedVideo | VideoError], None] | None = None) -> list[DecodedVideo | VideoError]:
        """Decode ``jobs`` on the children; one result or ``VideoError`` per job, in order.

        The next job is taken from ``jobs`` only when a child is idle, so a generator can fetch
        each file just in time while the other children decode. ``on_result(index, result)``
        runs as each job ends (e.g. to delete its fetched file). Raises only when a child cannot
        be (re)started; children busy at that moment are killed, so no stale result reaches a
        later call.
        """
        busy: dict[int, tuple[int, float]] = {}  # worker index -> (job index, kill time)
        try:
            return self._map(iter(jobs), busy, on_result)
        except BaseException:
            for w in busy:
                self.workers[w].kill()
            raise

    def _map(self, jobs: Iterator[DecodeJob], busy: dict[int, tuple[int, float]],
             on_result: Callable[[int, DecodedVideo | VideoError], None] | None) -> list[DecodedVideo | VideoError]:
        results: dict[int, DecodedVideo | VideoError] = {}
        submitted: list[DecodeJob] = []
        exhausted = False
        hard_s = self.config.limits.timeout_s + KILL_GRACE_S
        while not exhausted or busy:
            for w, worker in enumerate(self.workers):
                if w in busy or exhausted:
                    continue
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                submitted.append(job)
                self._ensure_started(worker)
                worker.submit(job)
                busy[w] = (len(submitted) - 1, time.monotonic() + hard_s)
            if not busy:
                continue
            soonest = min(kill_at for _, kill_at in busy.values())
            ready = wait([self.workers[w].results for w in busy], timeout=max(0.0, soonest - time.monotonic()))
            for w in list(busy):
                worker = self.workers[w]
                index, kill_at = busy[w]
                job = submitted[index]
                if worker.results in ready:
                    result = self._collect(worker, job)
                elif time.monotonic() >= kill_at:
                    worker.kill()
                    result = VideoError(
                        "Timeout", f"{job.video_id!r}: decoding took longer than limits.timeout_s="
                                   f"{self.config.limits.timeout_s}; its process was killed", retryable=True)
                else:
                    continue
                del busy[w]
                results[index] = result
                if on_result is not None:
                    on_result(index, result)
        return [results[i] for i in range(len(submitted))]

    def _collect(self, worker: _Worker, job: DecodeJob) -> DecodedVideo | VideoError:
        try:
            return worker.receive(self.max_frame_bytes, self.max_audio_bytes)
        except (EOFError, OSError, ValueError, TypeError, KeyError) as exc:
            said = worker.stderr_tail()
            status = worker.kill()
            how = f"signal {signal.Signals(-status).name}" if status is not None and status < 0 else f"exit status {status}"
            if not isinstance(exc, (EOFError, OSError)):
                how = f"a malformed result ({type(exc).__name__}: {exc})"
            if status == -signal.SIGKILL:  # nobody here sends SIGKILL before this point: the kernel's OOM killer
                how += f" (out of memory? limits.max_memory_bytes={self.config.limits.max_memory_bytes})"
            fatal = said.find("Fatal Python error")  # faulthandler's report starts with the reason and stack
            said = said[fatal:fatal + 600] if fatal >= 0 else said[-600:]
            return VideoError("Crash", f"{job.video_id!r}: the decode process died with {how}; "
                                       f"stderr: {said or '(empty)'}", retryable=False)

    def decode(self, job: DecodeJob) -> DecodedVideo:
        """One job; raises its ``VideoError``."""
        result = self.map([job])[0]
        if isinstance(result, VideoError):
            raise result
        return result

    @staticmethod
    def _close_workers(workers: list[_Worker]) -> None:
        for worker in workers:
            worker.close()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- the stage


def decode_columns(result: DecodedVideo | None, image_size: int, policy: str,
                   content_sha256: str | None = None, file_bytes: int | None = None) -> dict[str, Any]:
    """The decode columns of a row (``extract.rows``); a failed row (``result`` None) gets empty
    tensors of the right trailing shape and None elsewhere."""
    if result is None:
        row: dict[str, Any] = {name: None for name in DECODE_COLUMNS}
        row.update(frames=np.zeros((0, image_size, image_size, 3), np.uint8), pts_s=np.zeros(0, np.float32),
                   audio=np.zeros(0, np.float32))
        return row
    probe = result.probe
    row = {name: getattr(probe, name) for name in PROBE_COLUMNS}
    row.update(content_sha256=content_sha256, file_bytes=file_bytes, frames=result.frames, pts_s=result.pts_s,
               n_frames=int(len(result.frames)), sampling_policy=policy, audio=result.audio,
               audio_s=float(result.audio_s))
    return {name: row[name] for name in DECODE_COLUMNS}


class DecodeStage:
    """Rows with ``uri`` -> rows with the decode columns (``extract.rows``), stage name ``decode``.

    ``__init__`` resolves the CLIP input size (``preprocess_spec``, no weights) and starts a
    ``DecodePool`` of ``processes`` children (1: a Ray decode actor owns one CPU). Each row's
    file is fetched with ``storage.fetch`` (streamed sha256, size limit, remote objects copied
    to a temporary file that is deleted after decoding) when a child is idle, and decoded
    there, so several children never wait for each other. Failures become error rows;
    already-failed rows pass through.
    """

    def __init__(self, config: Config, processes: int = 1):
        from extract.preprocess import preprocess_spec

        self.config = config
        self.spec = preprocess_spec(config.models.clip)
        self.pool = DecodePool(config, self.spec, processes)

    def _fail(self, row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        mark_exception(row, STAGE, exc)
        row.update(decode_columns(None, self.spec.image_size, self.config.sampling.policy))
        return row

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from extract.storage import fetch

        rows = batch_to_rows(batch)
        size, policy = self.spec.image_size, self.config.sampling.policy
        todo = []
        for row in rows:
            if is_failed(row):
                row.update(decode_columns(None, size, policy))
            else:
                todo.append(row)
        fetched: list[tuple[dict[str, Any], str, str, int]] = []  # (row, local path, sha256, bytes) per job
        with tempfile.TemporaryDirectory(prefix="extract-decode-") as tmp:

            def jobs() -> Iterator[DecodeJob]:  # fetched just in time: a child is idle when asked
                for row in todo:
                    try:
                        path, digest, n_bytes = fetch(row["uri"], tmp, self.config.storage,
                                                      self.config.limits.max_file_bytes)
                        if n_bytes == 0:
                            raise VideoError("UnsupportedFormat", f"{row['uri']!r} is empty (0 bytes)")
                    except Exception as exc:  # noqa: BLE001 - per-video failure, recorded on the row
                        self._fail(row, exc)
                        continue
                    fetched.append((row, path, digest, n_bytes))
                    yield DecodeJob(str(row["video_id"]), path)

            def finish(index: int, result: DecodedVideo | VideoError) -> None:
                row, path, digest, n_bytes = fetched[index]
                if path.startswith(tmp):
                    os.unlink(path)  # a fetched copy lives only while its video decodes
                if isinstance(result, VideoError):
                    self._fail(row, result)
                else:
                    row.update(decode_columns(result, size, policy, digest, n_bytes))

            self.pool.map(jobs(), finish)
        return rows_to_batch(rows)

    def close(self) -> None:
        """Stop the decode processes (also happens when the stage is garbage-collected)."""
        self.pool.close()
