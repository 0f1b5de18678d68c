"""Video reading: probe, sampling targets, seeks and the frames that reach CLIP (``decode_video``).

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

Thumbnails (``output.thumbnails``): up to that many of the sampled frames, spread over the
video, are also kept as small JPEGs of the whole picture (display orientation and pixel aspect
applied, long side ``THUMB_SIDE``), scaled from the same decoded frames as the CLIP crops, so
the run report shows pictures without any process but a decode child parsing the upload.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from extract.config import Config, LimitsConfig, OcrConfig
from extract.config.machine import resolved_here
from extract.media.audio import AUDIO_RATE, decode_audio
from extract.media.fingerprint import fingerprint
from extract.media.geometry import ClipFrameScaler, OcrFrameScaler, PreprocessSpec
from extract.media.limits import MAX_BAD_PACKETS, TRUNCATION_SLACK_S, Deadline
from extract.media.pace import VECTOR_CODECS, Pace, PaceMeter, read_pace
from extract.media.probe import Probe, check_limits, open_input, read_probe
from extract.media.sampling import (
    SCENE_SIZE,
    TIME_EPS_S,
    KeyFrame,
    SceneDetector,
    keyframe_targets,
    plan_seeks,
    sample_timestamps,
    seek_pays,
    spread_indices,
)
from extract.rows import VideoError

# A seek pays only when its key frame lies more than this many frames past the read position:
# decoding on through them costs their reference frames (about half of an x264 stream's), a
# seek costs a decoder flush and the frame threads refilling from the I-frame.
SEEK_COST_FRAMES = 4


FALLBACK_FPS = 30.0  # frame rate assumed when the container states none (seek costing only)




SCENE_STORE_FACTOR = 4  # scene frames kept in memory up to this many times max_frames, else a 2nd pass


THUMB_SIDE = 160  # long side of a thumbnail, pixels (never enlarged)
THUMB_QUALITY = 75  # JPEG quality of a thumbnail (libjpeg scale; 75: a few kB at 160 px)


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
    pace_s: float = 0.0  # of decode_s: the every-frame pass for motion and shot frames (extract.media.pace)


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
    # Frames for OCR (``config.ocr``): ``(k, h, w, 3) uint8`` whole pictures with the long side at
    # most ``ocr.max_side``, taken from the same decode as ``frames``; ``ocr_index`` ``(k,) int32``:
    # the position of each in ``frames``. Empty when OCR is off.
    ocr_frames: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    ocr_index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    # Thumbnails (``output.thumbnails``): JPEG files (bytes) of whole pictures, long side at most
    # ``THUMB_SIDE``; ``thumbnail_index`` ``(t,) int32``: the position of each in ``frames``.
    thumbnails: tuple[bytes, ...] = ()
    thumbnail_index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    # Landmark codes of ``audio`` (``extract.media.fingerprint``) ``(l,) int64``; empty when
    # ``output.sounds`` is off or the audio is silent.
    sound_fingerprint: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    # Motion and shot-detection frames from one pass over every frame (``signals.motion``/``.shots``).
    pace: Pace = dataclasses.field(default_factory=Pace)

    @property
    def audio_s(self) -> float:
        return len(self.audio) / AUDIO_RATE


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

    def __init__(self, container: Any, info: Probe, deadline: Deadline, skip_nonref: bool, max_pixels: int,
                 meter: PaceMeter | None = None):
        self.container = container
        self.meter = meter  # fed every decoded frame (motion vectors on the way; ``restart`` at seeks)
        self.max_pixels = max_pixels
        self.stream = container.streams[info.video_stream_index]  # the probe's pick (``video_stream``)
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
        if self.meter is not None:
            self.meter.restart()
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
                if self.meter is not None:
                    self.meter.feed(frame, t)
                yield frame, t
            if packet is None:
                return


def frames_at(reader: VideoReader, targets: np.ndarray, plan: Sequence[KeyFrame | None],
               scale: Callable[[Any], np.ndarray],
               keep: Callable[[int, Any], None] | None = None) -> tuple[list[np.ndarray], list[float]]:
    """For each target (sorted seconds) the scaled first frame at or after it, and its time.

    ``keep(i, frame)``, when given, also sees the decoded frame that serves target ``i`` (the
    OCR frames are scaled from it: one decode for both).

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
                if keep is not None:
                    keep(len(images), frame)
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
            if keep is not None:
                keep(len(images), frame)
            images.append(image)
            times.append(t_last)
    return images, times


def _scene_frames(reader: VideoReader, scale: Callable[[Any], np.ndarray], threshold: float,
                  max_frames: int, keep: Callable[[int, Any], None] | None = None,
                  ) -> tuple[list[np.ndarray] | None, list[float]]:
    """``scene`` policy in one sequential pass: frames at scene changes (first frame included),
    thinned to ``max_frames``. Returns ``(None, times)`` when there were too many changes to
    keep in memory: the caller then decodes the selected times in a second pass. ``keep(j,
    frame)``, when given, sees every scene-change frame held in memory (``j``: its position
    among the changes, which are thinned by ``spread_indices(changes, max_frames)``)."""
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
                if keep is not None:
                    keep(len(kept), frame)
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
                 deadline: Deadline | None = None, audio: bool = True, fd: int | None = None) -> DecodedVideo:
    """Probe ``path``, sample frames by ``config.sampling`` and decode its audio, in this process.

    ``strategy``: ``auto`` (seek where ``plan_seeks`` proposes and ``seek_pays`` confirms, see
    ``frames_at``) or ``sequential`` (never seek; same frames, for comparison). ``audio=False``
    leaves the audio out (``audio`` empty; the probe still says ``has_audio``): for frame-only
    callers and the decode benchmark. Enforces ``config.limits`` except the address-space
    limit, which only a ``DecodePool`` child applies. Raises ``VideoError`` (``MemoryError``
    when memory runs out, which a child reports as ``LimitExceeded``). ``fd``: read this open
    descriptor of the file (each open rewinds it) instead of opening ``path``, which then only
    names the file in messages (a confined child can open no path).
    """
    if strategy not in ("auto", "sequential"):
        raise ValueError(f"strategy {strategy!r} is not one of auto, sequential")
    started = time.perf_counter()
    limits, sampling = config.limits, config.sampling
    deadline = deadline or Deadline(limits.timeout_s, path)
    threads = resolved_here(config).runtime.decode_threads
    # Motion from the P frames this pass decodes anyway (all of them unless it seeks), so that
    # the every-frame pace pass runs only for shot frames or a codec without motion vectors.
    motion_here = config.signals.motion and not config.signals.shots and sampling.policy != "scene"
    with open_input(path, limits, threads, fd, export_motion_vectors=motion_here) as container:
        info = read_probe(container, name=path)
        motion_meter = PaceMeter(True, False, info.fps, small_frames=False) if motion_here else None
        check_limits(info, limits, path)
        scale = ClipFrameScaler(spec, info.sample_aspect_ratio, threads)
        ocr = _OcrFrames(config.ocr, info.sample_aspect_ratio, threads)
        thumbs = _Thumbnails(config.output.thumbnails, info.sample_aspect_ratio, threads)

        def keep(i: int, frame: Any) -> None:  # the OCR frame and the thumbnail of sampled frame i
            ocr.keep(i, frame)
            thumbs.keep(i, frame)

        keyframes = info.keyframes if strategy == "auto" else None
        reader = VideoReader(container, info, deadline, skip_nonref=sampling.policy == "uniform",
                             max_pixels=limits.max_pixels, meter=motion_meter)
        info = _with_measured_duration(info, reader, limits, path)
        if sampling.policy == "scene":
            images, times = _scene_frames(reader, scale, sampling.scene_threshold, sampling.max_frames,
                                          thumbs.keep_scene if thumbs.wanted else None)
            if images is not None:
                thumbs.adopt_scene(sampling.max_frames)
        else:
            if sampling.policy == "keyframes":
                targets = _keyframe_policy_targets(reader, info, sampling.max_frames)
            else:
                targets = sample_timestamps(info.video_duration_s, sampling)
            ocr.choose(len(targets))
            thumbs.choose(len(targets))
            images, times = frames_at(reader, targets, plan_seeks(targets, keyframes, reader.min_skip_s), scale,
                                      keep)
        stats = DecodeStats("seek" if reader.seeks else "sequential", reader.frames_decoded, reader.seeks,
                            reader.bad_packets, packets_read=reader.packets_read)
    if images is None:  # scene: too many changes to hold while scanning; decode the chosen ones again
        with open_input(path, limits, threads, fd) as container:
            reader = VideoReader(container, info, deadline, skip_nonref=True, max_pixels=limits.max_pixels)
            targets = np.asarray(times)
            ocr.choose(len(targets))
            thumbs.choose(len(targets))
            images, times = frames_at(reader, targets, plan_seeks(targets, keyframes, reader.min_skip_s), scale,
                                      keep)
    elif ocr.wanted and sampling.policy == "scene" and times:  # scene frames held in memory: OCR's few again
        ocr.choose(len(times))
        picked = np.asarray([times[i] for i in ocr.targets])
        with open_input(path, limits, threads, fd) as container:
            reader = VideoReader(container, info, deadline, skip_nonref=True, max_pixels=limits.max_pixels)
            frames_at(reader, picked, plan_seeks(picked, keyframes, reader.min_skip_s), lambda frame: None,
                      lambda i, frame: ocr.keep(ocr.targets[i], frame))
    # A closed container's decoder (its frame threads, their 8 MB stacks, its frame pool) lives
    # as long as a reader or the container is referenced: drop them before the next pass opens
    # one, so that the passes never hold two decoders' address space under RLIMIT_AS.
    reader = container = None
    pace_started = time.perf_counter()
    if motion_meter is not None and motion_meter.has_vectors:
        pace = motion_meter.result()
    else:
        pace = pace_pass(path, config, info, deadline, threads, fd)  # its decoder is gone on return
    pace_s = time.perf_counter() - pace_started
    waveform = (decode_audio(path, limits, deadline, info, fd) if audio and info.has_audio
                else np.zeros(0, np.float32))
    codes = fingerprint(waveform) if config.output.sounds else np.zeros(0, np.int64)
    frames = np.stack(images) if images else np.zeros((0, spec.image_size, spec.image_size, 3), np.uint8)
    stats = dataclasses.replace(stats, decode_s=time.perf_counter() - started, pace_s=pace_s)
    return DecodedVideo(read_probe_rotated(info, scale.rotation or 0), frames, np.asarray(times, np.float32),
                        waveform, sampling.policy, stats, *ocr.arrays(), *thumbs.jpegs(), codes, pace)


def pace_pass(path: str, config: Config, info: Probe, deadline: Deadline, threads: int, fd: int | None) -> Pace:
    """Motion and shot frames (``signals.motion``/``.shots``): every frame once more (every
    reference frame for motion alone where the codec exports vectors), on a decoder
    of its own (``extract.media.pace``) that is released on return, before the audio decode and
    the fingerprint run; an empty ``Pace`` with both off."""
    signals, limits = config.signals, config.limits
    if not (signals.motion or signals.shots):
        return Pace()
    with open_input(path, limits, threads, fd, export_motion_vectors=signals.motion) as container:
        reader = VideoReader(container, info, deadline, skip_nonref=False, max_pixels=limits.max_pixels)
        if not signals.shots and info.video_codec in VECTOR_CODECS:
            reader.ctx.skip_frame = "NONREF"  # motion reads P frames only: B frames need no decoding
        return read_pace(reader, signals.motion, signals.shots, info.fps)


class _Thumbnails:
    """The thumbnails of one decode: up to ``n`` targets spread over the sampled ones, each scaled
    (``OcrFrameScaler``: whole picture, display orientation, long side ``THUMB_SIDE``) from the
    same decoded frame as its CLIP frame, and JPEG-encoded at the end."""

    def __init__(self, n: int, sample_aspect_ratio: float, threads: int):
        self.n = n
        self.wanted = n > 0
        self.scale = OcrFrameScaler(THUMB_SIDE, sample_aspect_ratio, threads) if self.wanted else None
        self.targets: list[int] = []
        self.images: dict[int, np.ndarray] = {}
        self.scene: list[np.ndarray] = []  # ``scene`` policy: one per scene change held in memory

    def choose(self, n_targets: int) -> None:
        self.targets = [int(i) for i in spread_indices(n_targets, self.n)] if self.wanted else []

    def keep(self, i: int, frame: Any) -> None:
        if i in self.targets and i not in self.images:
            self.images[i] = self.scale(frame)

    def keep_scene(self, j: int, frame: Any) -> None:
        self.scene.append(self.scale(frame))

    def adopt_scene(self, max_frames: int) -> None:
        """Targets among the kept scene frames (``spread_indices`` of the changes, as ``_scene_frames``)."""
        kept = spread_indices(len(self.scene), max_frames)
        self.choose(len(kept))
        self.images = {i: self.scene[kept[i]] for i in self.targets}
        self.scene = []

    def jpegs(self) -> tuple[tuple[bytes, ...], np.ndarray]:
        """``(JPEG files, thumbnail_index (t,) int32)`` in frame order."""
        index = sorted(self.images)
        return tuple(encode_jpeg(self.images[i]) for i in index), np.asarray(index, np.int32)


def encode_jpeg(image: np.ndarray, quality: int = THUMB_QUALITY) -> bytes:
    """``(h, w, 3) uint8`` RGB -> a baseline JPEG file (Pillow's libjpeg, 4:2:0)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class _OcrFrames:
    """The OCR frames of one decode: up to ``ocr.max_frames`` targets spread over the sampled ones,
    each scaled (``OcrFrameScaler``) from the same decoded frame as its CLIP frame."""

    def __init__(self, ocr: OcrConfig, sample_aspect_ratio: float, threads: int):
        self.wanted = ocr.enabled and ocr.max_frames > 0
        self.max_frames = ocr.max_frames
        self.scale = OcrFrameScaler(ocr.max_side, sample_aspect_ratio, threads) if self.wanted else None
        self.targets: list[int] = []
        self.images: dict[int, np.ndarray] = {}

    def choose(self, n_targets: int) -> None:
        self.targets = [int(i) for i in spread_indices(n_targets, self.max_frames)] if self.wanted else []

    def keep(self, i: int, frame: Any) -> None:
        if i in self.targets and i not in self.images:
            self.images[i] = self.scale(frame)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ocr_frames (k, h, w, 3) uint8, ocr_index (k,) int32)``, frames of one size."""
        index = sorted(self.images)
        if not index:
            return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.int32)
        shape = self.images[index[0]].shape  # rotation and size are the stream's: the same for all
        index = [i for i in index if self.images[i].shape == shape]
        return np.stack([self.images[i] for i in index]), np.asarray(index, np.int32)


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
