"""Open untrusted media safely and describe it: container, streams, size, rotation, limits.

Every input is opened through ``open_input``, which restricts FFmpeg to what an uploaded
video legitimately needs:

- ``format_whitelist``: only real container demuxers (``ALLOWED_FORMATS``). Playlists (HLS,
  DASH), ``concat``, image sequences and every other demuxer are refused before they can open
  anything. Without this, FFmpeg opens a ``.m3u8`` "video" whose segment is ``file:///other``
  and decodes the other file's frames.
- ``protocol_whitelist=file``, and the path is passed as ``file:<abs path>``, so neither the
  file name nor anything inside the file can reach a network protocol or ``concat:``/``subfile:``.
- ``max_streams`` (``limits.max_streams`` + 1: a demuxer stops adding streams there, and one
  more than the limit is enough to reject), an open/read timeout, and the video decoder's
  ``max_pixels`` (twice ``limits.max_pixels``), which makes FFmpeg refuse far larger pictures
  before allocating them even when a stream changes size mid-file.

``probe`` and ``read_probe`` report the fields of the ``videos`` table plus what the decoder
needs (stream start, key-frame positions); ``check_limits`` turns a limit breach into a
``VideoError`` whose message names the ``limits.*`` key. It also holds the codec allow-list
(``limits.video_codecs``/``limits.audio_codecs``), checked on the probe before PyAV opens a
stream's decoder (it does so at the first decoded packet). FFmpeg's own stream-info scan inside
``av.open`` (``avformat_find_stream_info``) opens decoders over the first packets of a stream
whose headers lack parameters, before any probe exists: ``open_input`` passes FFmpeg's
``codec_whitelist`` option (``codec_whitelist()``: every decoder of the allowed codecs), so that scan can
open no decoder outside the allow-list (FFmpeg logs "Codec (ffv1) not on whitelist" and leaves
the stream's parameters unset; ``check_limits`` then names the codec and the key).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Iterator, Sequence

from extract.config import LimitsConfig
from extract.media import sandbox
from extract.media.sampling import KeyFrame
from extract.rows import VideoError

# FFmpeg demuxer short names (av_match_list matches any name of "mov,mp4,m4a,3gp,3g2,mj2").
ALLOWED_FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "mpegts", "flv")
PROTOCOLS = "file"
MAX_OPEN_TIMEOUT_S = 30.0  # FFmpeg I/O timeout per open/read call (local files: never near it)
DECODER_THREAD_TYPE = "AUTO"  # frame and slice threads (runtime.decode_threads of them)


def codec_allowed(codec: str, allowed: Sequence[str]) -> bool:
    """Whether FFmpeg codec name ``codec`` matches an entry of ``allowed`` (exact, or a ``prefix*``;
    ``limits.video_codecs`` / ``limits.audio_codecs``)."""
    return any(codec == entry or (entry.endswith("*") and codec.startswith(entry[:-1])) for entry in allowed)


@dataclass(frozen=True)
class Probe:
    """What the container says about a video, before (or without) decoding it.

    ``container``: FFmpeg demuxer name (first of its aliases, e.g. ``mov`` for MP4/MOV).
    ``width``/``height``: display size in pixels, after rotation and sample aspect ratio (a
    portrait phone video reports portrait); ``coded_width``/``coded_height``: as stored.
    ``rotation``: clockwise degrees a player turns the stored picture, one of 0/90/180/270
    (the MP4 ``rotate`` convention). ``duration_s``: of the container; ``video_duration_s``:
    of the video stream (its header duration, or Matroska's ``DURATION`` tag, else the
    container's), what uniform sampling spreads over. ``fps``: average frame rate, None
    when unknown. ``bitrate``: container bits/s, None when unknown. ``video_start_s``: the video
    stream's first timestamp (``pts_s`` and sampling times count from it). ``keyframes``: the
    seekable key frames from the container index, None when there is no index.
    ``video_stream_index`` / ``audio_stream_index``: the container's index of the streams read
    (FFmpeg's best streams, ``video_stream``/``audio_stream``; audio None without one);
    ``n_video_streams`` / ``n_audio_streams``: how many of each kind the file has (attached
    pictures included), out of ``n_streams`` of every kind.
    """

    container: str
    video_codec: str
    audio_codec: str | None
    duration_s: float
    video_duration_s: float
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    sample_aspect_ratio: float
    fps: float | None
    bitrate: int | None
    has_audio: bool
    n_streams: int
    video_start_s: float
    keyframes: tuple[KeyFrame, ...] | None
    video_stream_index: int = 0
    audio_stream_index: int | None = None
    n_video_streams: int = 1
    n_audio_streams: int = 0


@contextmanager
def ffmpeg_log_capture() -> Iterator[list[tuple[int, str, str]]]:
    """Collect FFmpeg's error messages, ``(level, context name, message)``, within the block.

    PyAV forwards libav logs to Python only while a level is set, and forwarding from a codec
    thread can deadlock on the GIL (PyAV issue #751), so it is switched on only around opening
    a file (no decoder threads exist yet) and restored afterwards.
    """
    import av.logging

    previous_level, previous_skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # each open must see its own reasons, even repeated ones
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_skip_repeated(previous_skip)
        av.logging.set_level(previous_level)


@lru_cache(maxsize=8)
def codec_whitelist(video_codecs: tuple[str, ...], audio_codecs: tuple[str, ...]) -> str:
    """FFmpeg's ``codec_whitelist`` value for the allow-lists: the names of every decoder this
    FFmpeg has for an allowed codec (``av1`` -> ``libdav1d,libaom-av1,av1``; ``pcm_*`` -> each PCM
    decoder), comma-separated. FFmpeg matches decoder names, the allow-lists name codecs."""
    import av

    names = []
    for name in sorted(av.codecs_available):
        try:
            codec = av.Codec(name, "r")
        except (ValueError, av.error.FFmpegError):  # an encoder only
            continue
        allowed = {"video": video_codecs, "audio": audio_codecs}.get(codec.type)
        if allowed and codec_allowed(codec.canonical_name, allowed):
            names.append(codec.name)
    return ",".join(names) or "none"  # an empty whitelist would allow everything


def open_input(path: str, limits: LimitsConfig, decode_threads: int = 1, fd: int | None = None,
               export_motion_vectors: bool = False) -> Any:
    """Open a local media file with the hardening of the module docstring.

    With ``fd`` (an open descriptor of the file, as a confined decode child receives it,
    ``extract.media.sandbox``) FFmpeg reads the descriptor through its ``fd`` protocol, the only
    protocol then allowed, and ``path`` only names the file in messages. ``export_motion_vectors``:
    the video decoder attaches its motion vectors to each frame (``flags2=+export_mvs``, where the
    codec supports it; ``extract.media.pace``).

    Returns an ``av.container.InputContainer``; its video decoder (if any) is configured with
    ``max_pixels`` and ``decode_threads`` frame+slice threads. Raises ``VideoError``:
    ``UnsupportedFormat`` (not an allowed container / not media), ``DecodeError`` (an allowed
    container whose header is broken or truncated), ``LimitExceeded`` (``limits.max_streams``),
    ``NotFound``.
    """
    import av

    options = {
        "format_whitelist": ",".join(ALLOWED_FORMATS),
        "protocol_whitelist": PROTOCOLS,
        "max_streams": str(limits.max_streams + 1),
        "codec_whitelist": codec_whitelist(limits.video_codecs, limits.audio_codecs),
    }
    url = "file:" + os.path.abspath(path)
    if fd is not None:
        url, fd_options = sandbox.descriptor_input(fd)
        options.update(fd_options, protocol_whitelist=sandbox.FFMPEG_PROTOCOL)
    timeout = min(limits.timeout_s, MAX_OPEN_TIMEOUT_S)
    with ffmpeg_log_capture() as logs:
        try:
            container = av.open(url, "r", container_options=options,
                                timeout=(timeout, timeout), metadata_errors="replace")
        except FileNotFoundError as exc:
            raise VideoError("NotFound", f"{path!r} does not exist") from exc
        except av.error.FFmpegError as exc:
            raise _open_error(path, exc, logs, limits) from exc
    if any("max_streams" in message for _, _, message in logs):
        container.close()
        raise _streams_error(path, f"more than {limits.max_streams}", limits)
    for stream in container.streams.video:
        if stream.codec_context is not None:
            # FFmpeg checks the stride-aligned width (up to 63 px wider): twice the limit keeps
            # legal sizes decodable and still stops a stream that grows mid-file far past it
            # before its buffers exist; the decoder checks the exact limit on every frame.
            stream.codec_context.options = {"max_pixels": str(2 * limits.max_pixels),
                                            "codec_whitelist": options["codec_whitelist"],
                                            **({"flags2": "+export_mvs"} if export_motion_vectors else {})}
            stream.codec_context.thread_count = decode_threads
            stream.codec_context.thread_type = DECODER_THREAD_TYPE
    return container


def _open_error(path: str, exc: Exception, logs: list[tuple[int, str, str]], limits: LimitsConfig) -> VideoError:
    reasons = [(name, message.strip()) for _, name, message in logs]
    for name, message in reasons:
        if "max_streams" in message:
            return _streams_error(path, "more than", limits)
        if "not on whitelist" in message:
            return VideoError(
                "UnsupportedFormat",
                f"{path!r}: container format {name} is not allowed (allowed: {', '.join(ALLOWED_FORMATS)}); "
                "playlists, concat lists and image sequences are rejected",
            )
    said = "; ".join(f"[{name}] {message}" for name, message in reasons[-3:]) or str(exc)
    recognised = [name for name, _ in reasons if set(name.split(",")) & set(ALLOWED_FORMATS)]
    if recognised:
        return VideoError("DecodeError", f"{path!r}: broken or truncated {recognised[-1].split(',')[0]} file: {said}")
    return VideoError("UnsupportedFormat", f"{path!r}: not a readable video file ({said})")


def _streams_error(path: str, count: str, limits: LimitsConfig) -> VideoError:
    return VideoError("LimitExceeded", f"{path!r} has {count} streams, over limits.max_streams={limits.max_streams}")


def _is_picture(stream: Any) -> bool:
    """Cover art and other attached pictures: a video stream of one still image, never the video."""
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _best(container: Any, kind: str, usable: Any, related: Any = None) -> Any | None:
    """The stream of ``kind`` FFmpeg would pick (``av_find_best_stream`` through PyAV's
    ``streams.best``: not marked hearing/visual impaired, then the ``default`` disposition, then
    more frames seen while probing, then the higher bitrate; within ``related``'s program), when
    ``usable``; else the first usable stream of that kind; None when none is."""
    best = container.streams.best(kind, related) if related is not None else container.streams.best(kind)
    if best is not None and usable(best):
        return best
    return next((s for s in container.streams if s.type == kind and usable(s)), None)


def video_stream(container: Any, name: str | None = None) -> Any:
    """The video stream FFmpeg would pick (``_best``); attached pictures never count.

    Raises ``VideoError("NoVideoStream")`` naming ``name`` (default: the container's URL, which
    for a descriptor is only ``fd:``) when there is none.
    """
    stream = _best(container, "video", lambda s: not _is_picture(s))
    if stream is not None:
        return stream
    kinds = ", ".join(s.type for s in container.streams) or "none"
    raise VideoError("NoVideoStream", f"{name or container.name!r} has no video stream (streams: {kinds})")


def audio_stream(container: Any) -> Any | None:
    """The audio stream FFmpeg would pick for the video (``_best``, related to ``video_stream``)
    among those with a decoder, or None. Every reader of a file calls these two, so the probe,
    the frames and the audio all come from the same streams."""
    video = _best(container, "video", lambda s: not _is_picture(s))
    return _best(container, "audio", lambda s: s.codec_context is not None, video)


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _codec_name(ctx: Any) -> str:
    """The stream's codec (``av1``), not the decoder FFmpeg picked for it (``libdav1d``)."""
    return ctx.codec.canonical_name


def _positive(value: Fraction | float | int | None) -> float | None:
    return float(value) if value is not None and value > 0 else None


def _tag_seconds(tag: str | None) -> float | None:
    """``HH:MM:SS.fraction`` (the per-track ``DURATION`` tag FFmpeg writes into Matroska) in seconds."""
    try:
        hours, minutes, seconds = (tag or "").split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return value if value > 0 else None


def display_rotation(frame_rotation: float) -> int:
    """PyAV's ``VideoFrame.rotation`` (counter-clockwise degrees) as clockwise 0/90/180/270."""
    return int(round(-frame_rotation / 90.0)) % 4 * 90


def read_keyframes(stream: Any) -> tuple[KeyFrame, ...] | None:
    """Seekable key frames of ``stream`` from the container index (MP4 sample table, MKV cues,
    AVI idx1), None when the index has none (MPEG-TS, most FLV).

    MP4 indexes decode timestamps but seeks by presentation time; the first key frame is
    presented at the stream start, so the difference (the B-frame delay) shifts every index
    time to a presentation time, for planning and for the seek itself.
    """
    tb = stream.time_base
    entries = [e for e in stream.index_entries if e.is_keyframe and not e.is_discard]
    if not entries or tb is None:
        return None
    start = stream.start_time if stream.start_time is not None else entries[0].timestamp
    shift = max(0, start - entries[0].timestamp)
    return tuple(KeyFrame(time_s=float((e.timestamp + shift - start) * tb), seek_ts=e.timestamp + shift)
                 for e in entries)


def read_probe(container: Any, rotation: int = 0, name: str | None = None) -> Probe:
    """``Probe`` of an open container; ``rotation`` (clockwise degrees) comes from a decoded
    frame's display matrix, which the container API does not expose. ``name`` names the file in
    errors (default: the container's URL)."""
    name = name or container.name
    stream = video_stream(container, name)
    audio = audio_stream(container)
    ctx = stream.codec_context
    if ctx is None:
        raise VideoError("UnsupportedFormat", f"{name!r}: no decoder for its video codec")
    container_s = _seconds(container.duration, Fraction(1, 1_000_000))
    stream_s = _seconds(stream.duration, stream.time_base) or _tag_seconds(stream.metadata.get("DURATION"))
    duration_s = container_s or stream_s or 0.0
    start_s = _seconds(stream.start_time, stream.time_base) or 0.0
    sar = _positive(stream.sample_aspect_ratio) or 1.0
    if not 0.1 <= sar <= 10.0:  # absurd aspect metadata: show the stored pixels as they are
        sar = 1.0
    width, height = ctx.width, ctx.height
    display_w, display_h = max(1, round(width * sar)), height
    if rotation in (90, 270):
        display_w, display_h = display_h, display_w
    return Probe(
        container=container.format.name.split(",")[0],
        video_codec=_codec_name(ctx),
        audio_codec=_codec_name(audio.codec_context) if audio is not None else None,
        duration_s=float(duration_s),
        video_duration_s=float(stream_s or duration_s),
        width=display_w, height=display_h, coded_width=width, coded_height=height,
        rotation=rotation, sample_aspect_ratio=sar,
        fps=_positive(stream.average_rate) or _positive(stream.guessed_rate),
        bitrate=int(container.bit_rate) if container.bit_rate else None,
        has_audio=audio is not None,
        n_streams=len(container.streams),
        video_start_s=start_s,
        keyframes=read_keyframes(stream),
        video_stream_index=stream.index,
        audio_stream_index=audio.index if audio is not None else None,
        n_video_streams=len(container.streams.video),
        n_audio_streams=len(container.streams.audio),
    )


def check_limits(probe: Probe, limits: LimitsConfig, name: str = "video") -> None:
    """Raise ``VideoError`` naming the ``limits.*`` key a probe breaks: ``UnsupportedCodec`` for a
    video or audio codec outside ``limits.video_codecs``/``limits.audio_codecs`` (checked first,
    from the container's stream headers, before any decoder has been opened), else
    ``LimitExceeded``. The names are codec names (``av1``), not FFmpeg's decoder names (``libdav1d``)."""
    for kind, codec, key, allowed in (("video", probe.video_codec, "video_codecs", limits.video_codecs),
                                      ("audio", probe.audio_codec, "audio_codecs", limits.audio_codecs)):
        if codec is not None and not codec_allowed(codec, allowed):
            raise VideoError("UnsupportedCodec", f"{name!r}: {kind} codec {codec} is not in limits.{key} "
                                                 f"({', '.join(allowed)})")
    if probe.n_streams > limits.max_streams:
        raise _streams_error(name, str(probe.n_streams), limits)
    if probe.duration_s > limits.max_duration_s:
        raise VideoError("LimitExceeded",
                         f"{name!r} lasts {probe.duration_s:.1f} s, over limits.max_duration_s={limits.max_duration_s}")
    pixels = probe.coded_width * probe.coded_height
    if pixels > limits.max_pixels:
        raise VideoError("LimitExceeded",
                         f"{name!r} frames are {probe.coded_width}x{probe.coded_height} = {pixels} pixels, "
                         f"over limits.max_pixels={limits.max_pixels}")


def probe(path: str, limits: LimitsConfig | None = None) -> Probe:
    """Open ``path`` (hardened), read its ``Probe`` and check ``limits``.

    Decodes the first video frame for the rotation (the display matrix reaches PyAV only on
    frames). Raises ``VideoError`` (see ``open_input``, ``video_stream``, ``check_limits``).
    """
    import av

    limits = limits or LimitsConfig()
    with open_input(path, limits) as container:
        info = read_probe(container)
        check_limits(info, limits, path)
        stream = video_stream(container)
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = display_rotation(frame.rotation)
                break
        except av.error.FFmpegError as exc:
            raise VideoError("DecodeError", f"{path!r}: first video frame does not decode: {exc}") from exc
        return read_probe(container, rotation)
