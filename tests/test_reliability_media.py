"""Hostile and broken media through ``DecodeStage`` (no Ray): cases of tests/RELIABILITY.md.

Every file, whatever it is, must end in exactly one row: an error row (``error_stage`` decode,
a known ``error_type``, a short readable message naming the input) or a correct feature row,
within the per-video time limit, with the decode process's memory bounded. Playlists and
concat lists must never be followed: the files they name are FIFOs nobody writes to (a reader
would block in ``open`` until a writer comes, and the test's poller, which opens the write end
without blocking, succeeds exactly when a reader is there), and their ``http://`` entries point
at a loopback server that counts requests.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import media
import numpy as np
import pytest

from extract.config import Config
from extract.media.isolation import KILL_GRACE_S
from extract.tools.samples import write_clip
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.decode import DECODE_COLUMNS, DecodeStage

TIMEOUT_S = 20.0  # limits.timeout_s for these cases
MEMORY_LIMIT = 2 * 1024**3  # limits.max_memory_bytes: RLIMIT_AS of the decode process
PEAK_RSS_BOUND = 256 * 1024**2  # the decode process's peak resident memory over all cases (about 100 MiB seen)
CONFIG = Config().replace(**{"models.clip.pretrained": None, "limits.timeout_s": TIMEOUT_S,
                             "limits.max_memory_bytes": MEMORY_LIMIT})
DECODE_ERRORS = {"UnsupportedFormat", "UnsupportedCodec", "DecodeError", "LimitExceeded", "NoVideoStream", "NotAFile",
                 "Timeout"}


# --------------------------------------------------------------------------- MP4 box surgery


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """``(type, offset, size, header_size)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        yield kind.decode("latin-1"), pos, size, header
        pos += size


def _child(data: bytes, parent_offset: int, parent_header: int, parent_size: int, kind: str):
    for box in _boxes(data, parent_offset + parent_header, parent_offset + parent_size):
        if box[0] == kind:
            return box
    raise KeyError(kind)


def mp4_with_many_tracks(src: Path, dst: Path, n_tracks: int) -> Path:
    """``src`` (moov after mdat) with its last ``trak`` repeated until there are ``n_tracks``
    (new track ids, same samples): thousands of streams in a few hundred KB."""
    data = bytearray(Path(src).read_bytes())
    _, moov_at, moov_size, moov_header = next(b for b in _boxes(data) if b[0] == "moov")
    assert moov_at + moov_size == len(data), "moov must be the last box"
    traks = [b for b in _boxes(data, moov_at + moov_header, moov_at + moov_size) if b[0] == "trak"]
    _, trak_at, trak_size, trak_header = traks[-1]
    template = bytes(data[trak_at:trak_at + trak_size])
    _, tkhd_at, _, tkhd_header = _child(template, 0, trak_header, trak_size, "tkhd")
    version = template[tkhd_at + tkhd_header]
    id_at = tkhd_at + tkhd_header + 4 + (16 if version == 1 else 8)  # after version/flags and two times
    copies = []
    for track_id in range(len(traks) + 1, n_tracks + 1):
        trak = bytearray(template)
        trak[id_at:id_at + 4] = struct.pack(">I", track_id)
        copies.append(bytes(trak))
    data += b"".join(copies)
    data[moov_at:moov_at + 4] = struct.pack(">I", moov_size + len(template) * len(copies))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def mp4_declaring_size(src: Path, dst: Path, width: int, height: int) -> Path:
    """``src`` whose video track header and sample entry claim ``width`` x ``height``."""
    data = bytearray(Path(src).read_bytes())
    for kind in ("avc1",):
        at = data.find(kind.encode())
        # VisualSampleEntry: 6 reserved + 2 index + 16 predefined/reserved bytes, then width, height
        data[at + 4 + 24:at + 4 + 28] = struct.pack(">HH", width, height)
    at = data.find(b"tkhd")
    version = data[at + 4]
    wh_at = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8 + 36  # times, id, reserved, layer.., matrix
    data[wh_at:wh_at + 8] = struct.pack(">II", width << 16, height << 16)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# --------------------------------------------------------------------------- other builders


def random_bytes(path: Path, n: int = 64 * 1024, seed: int = 9) -> Path:
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return Path(path)


def corrupt_middle(src: Path, dst: Path, start: float = 0.35, end: float = 0.65, seed: int = 3) -> Path:
    """``src`` with the bytes between the ``start`` and ``end`` fractions replaced by noise
    (in an MP4 with moov at the end, that is frame data in the middle of the video)."""
    data = bytearray(Path(src).read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def _encode_into(out, encoder, stream, frames) -> None:
    """Encode ``frames`` with ``encoder`` (a stream, or a codec context writing into ``stream``),
    mux the packets into ``stream`` of ``out``, then flush the encoder."""
    for frame in frames:
        for packet in encoder.encode(frame):
            packet.stream = stream
            out.mux(packet)
    for packet in encoder.encode():
        packet.stream = stream
        out.mux(packet)


def _encode_gray(out, stream, n: int, step: int, first_pts: int = 0) -> None:
    """Encode ``n`` 64x48 grey frames (level ``step * i``) with pts from ``first_pts`` into ``stream``."""
    import av

    def frames():
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), step * i, np.uint8), format="rgb24")
            frame.pts = first_pts + i
            yield frame

    _encode_into(out, stream, stream, frames())


def _encode_silence(out, encoder, stream, n: int, layout: str, rate: int, start: int = 0) -> None:
    """Encode ``n`` silent 1024-sample ``fltp`` frames of ``layout`` at ``rate`` Hz with pts from
    ``start`` by ``encoder`` into ``stream`` (``_encode_into``)."""
    import av

    channels = 2 if layout == "stereo" else 1

    def frames():
        for i in range(n):
            chunk = av.AudioFrame.from_ndarray(np.zeros((channels, 1024), np.float32), format="fltp", layout=layout)
            chunk.sample_rate, chunk.pts = rate, start + i * 1024
            yield chunk

    _encode_into(out, encoder, stream, frames())


def growing_ts(path: Path, big: int = 4096, n_big: int = 5) -> Path:
    """MPEG-TS H.264 at 10 fps whose first 10 frames are 64x48 and whose last ``n_big`` are ``big``
    x ``big`` (a new SPS mid-stream): the header, and so a probe, shows a small video, while
    the frames sampled after 1 s would need huge buffers (the "198 KB file, 1 GB of frames" trap)."""
    import av

    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        _encode_gray(out, stream, 10, 20)
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = big, big, "yuv420p"
        encoder.time_base = stream.codec_context.time_base
        encoder.options = {"preset": "ultrafast"}
        encoder.open()

        def big_frames():
            for i in range(10, 10 + n_big):
                frame = av.VideoFrame(big, big, "yuv420p")
                for plane in frame.planes:
                    plane.update(bytes(plane.buffer_size))
                frame.pts = i
                yield frame

        _encode_into(out, encoder, stream, big_frames())
    return Path(path)


def _ts_segment(path: Path, rate: int, layout: str, n_audio: int, start_s: float) -> bytes:
    """Bytes of an MPEG-TS with 1 s of 64x48 video at 10 fps and ``n_audio`` silent AAC frames
    of ``rate`` Hz ``layout``, both starting at ``start_s`` seconds."""
    import av

    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = layout
        _encode_gray(out, video, 10, 10, round(start_s * 10))
        _encode_silence(out, audio, audio, n_audio, layout, rate, round(start_s * rate))
    return Path(path).read_bytes()


def audio_switch_ts(path: Path) -> Path:
    """MPEG-TS with 2 s of video and an AAC track that switches from 16 kHz mono to 48 kHz
    stereo after 1.024 s, as broadcast recordings do: two TS segments back to back (TS
    concatenates), each AAC frame's header stating its own rate; about 1.9 s of audio in all."""
    first = _ts_segment(path.with_suffix(".1.ts"), 16000, "mono", 16, 0.0)
    second = _ts_segment(path.with_suffix(".2.ts"), 48000, "stereo", 40, 1.024)
    path.write_bytes(first + second)
    return Path(path)


def audio_header_disagrees_ts(path: Path) -> Path:
    """MPEG-TS whose AAC track changes from 16 kHz mono to 48 kHz stereo packets after 1.024 s
    while every frame header still states 16 kHz (the muxer writes the first configuration's
    ADTS header for all packets); only the timestamps say 48 kHz. About 1.9 s by timestamps."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        _encode_gray(out, video, 20, 10)
        stereo = av.CodecContext.create("aac", "w")
        stereo.sample_rate, stereo.layout, stereo.format = 48000, "stereo", "fltp"
        stereo.time_base = Fraction(1, 48000)
        stereo.open()
        _encode_silence(out, audio, audio, 16, "mono", 16000)
        _encode_silence(out, stereo, audio, 40, "stereo", 48000, 49152)
    return Path(path)


def zero_frame_video(path: Path) -> Path:
    """An MP4 with a video track that holds no samples, next to a real audio track."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        _encode_silence(out, audio, audio, 20, "mono", 16000)
    return Path(path)


def unknown_codec_avi(src: Path, dst: Path) -> Path:
    """An AVI whose video FourCC (stream header and format block) names no known codec."""
    data = Path(src).read_bytes()
    for fourcc in (b"FMP4", b"fmp4", b"mp4v", b"XVID", b"DIVX"):
        data = data.replace(fourcc, b"QQZ9")
    Path(dst).write_bytes(data)
    return Path(dst)


def latin1_metadata(src: Path, dst: Path) -> Path:
    """``src`` whose encoder tag (``Lavf...`` in the MP4 ``udta``) holds a byte that is not UTF-8,
    as a tag written in Latin-1 by some phone or editor would."""
    data = bytearray(Path(src).read_bytes())
    at = data.rfind(b"Lavf")
    assert at > 0, "no encoder tag to alter"
    data[at + 4] = 0xE9  # 'é' in Latin-1
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def playlist(path: Path, text: str) -> Path:
    Path(path).write_text(text)
    return Path(path)


def hls(entries: list[str]) -> str:
    body = "".join(f"#EXTINF:2,\n{entry}\n" for entry in entries)
    return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n{body}#EXT-X-ENDLIST\n"


def dash(base_url: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S" '
            'minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
            '<Period><AdaptationSet mimeType="video/mp4" segmentAlignment="true">'
            '<Representation id="v" bandwidth="100000" width="160" height="96" codecs="avc1.64000c">'
            f'<BaseURL>{base_url}</BaseURL><SegmentBase indexRange="0-100"/></Representation>'
            '</AdaptationSet></Period></MPD>\n')


# --------------------------------------------------------------------------- canaries


class CountingServer:
    """An HTTP server on 127.0.0.1 that answers 404 and counts every request."""

    def __init__(self):
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.requests.append(self.path)
                self.send_response(404)
                self.end_headers()

            do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(dir, env)`` writes it and returns its path; ``expect`` is the
    set of allowed error types, or ``{"ok"}`` for a file that must give a correct row; ``words``
    must appear in an error message; ``check`` inspects a correct row."""

    name: str
    build: Callable[[Path, dict], Path]
    expect: frozenset
    words: tuple[str, ...] = ()
    check: Callable[[dict], None] | None = None


def _check_video_only(row: dict) -> None:
    assert row["has_audio"] is False and row["audio"].shape == (0,) and row["audio_s"] == 0.0
    assert row["frames"].shape == (4, 224, 224, 3) and row["n_frames"] == 4


def _check_long_tiny(row: dict) -> None:
    assert row["duration_s"] == pytest.approx(2400, abs=2) and row["n_frames"] == 32
    assert row["pts_s"][0] == 0.0 and row["pts_s"][-1] > 2300 and np.all(np.diff(row["pts_s"]) > 0)


def _check_audio_switch(row: dict) -> None:
    assert row["has_audio"] is True and row["audio_s"] == pytest.approx(1.9, abs=0.2) and row["n_frames"] == 4


def _check_corrupt_middle(row: dict) -> None:
    assert row["n_frames"] == 4 and row["frames"].shape == (4, 224, 224, 3)


def _check_header_lies(row: dict) -> None:
    assert (row["width"], row["height"]) == (160, 96) and row["n_frames"] == 4  # the stream's real size


CASES = [
    Case("zero_byte", lambda d, env: media.zero_byte_file(d / "zero.mp4"), frozenset({"UnsupportedFormat"}),
         ("empty",)),
    Case("random_bytes", lambda d, env: random_bytes(d / "random.mp4"),
         frozenset({"UnsupportedFormat", "DecodeError"})),
    Case("text", lambda d, env: media.text_file(d / "text.mp4"), frozenset({"UnsupportedFormat", "DecodeError"})),
    Case("truncated_moov_at_end", lambda d, env: media.truncated_copy(env["clip"], d / "half.mp4"),
         frozenset({"DecodeError"}), ("moov",)),
    Case("truncated_moov_at_start", lambda d, env: media.truncated_copy(env["faststart"], d / "half_fast.mp4"),
         frozenset({"DecodeError"}), ("truncated",)),
    Case("hls_file_entry_named_mp4", lambda d, env: playlist(d / "hls.mp4", hls([f"file://{env['canary']}",
                                                                                 f"file://{env['clip']}"])),
         frozenset({"UnsupportedFormat", "DecodeError"})),
    # Read through a descriptor (``fd:``, no file name), FFmpeg does not even probe HLS for it.
    Case("hls_http_entry_named_m3u8", lambda d, env: playlist(d / "remote.m3u8", hls([f"{env['http']}/seg0.ts"])),
         frozenset({"UnsupportedFormat"}), ("not a readable video file",)),
    Case("hls_relative_entry", lambda d, env: playlist(d / "rel.m3u8", hls([Path(env["canary"]).name])),
         frozenset({"UnsupportedFormat"})),
    Case("dash_manifest_named_mp4", lambda d, env: playlist(d / "dash.mp4", dash(f"{env['http']}/video.mp4")),
         frozenset({"UnsupportedFormat", "DecodeError"})),
    Case("dash_file_base_url", lambda d, env: playlist(d / "dash_file.mpd", dash(f"file://{env['canary']}")),
         frozenset({"UnsupportedFormat", "DecodeError"})),
    Case("ffconcat_named_mp4", lambda d, env: playlist(d / "concat.mp4", f"ffconcat version 1.0\nfile "
                                                                          f"'{env['canary']}'\nfile '{env['clip']}'\n"),
         frozenset({"UnsupportedFormat", "DecodeError"})),
    Case("huge_declared_resolution", lambda d, env: media.big_frame_clip(d / "big.avi", 4096, 2160), frozenset({"LimitExceeded"}),
         ("limits.max_pixels",)),
    Case("resolution_grows_mid_stream", lambda d, env: env["grow"],
         frozenset({"ok", "DecodeError", "LimitExceeded"}), check=lambda row: None),
    Case("header_claims_huge_size", lambda d, env: mp4_declaring_size(env["video_only"], d / "lies.mp4", 40000, 24000),
         frozenset({"ok", "LimitExceeded", "DecodeError"}), ("limits.max_pixels",), check=_check_header_lies),
    Case("ten_hours_declared", lambda d, env: write_clip(d / "gap.mp4", width=16, height=16, audio=None,
                                                         frame_times_s=[0.0, 1.0, 36000.0]),
         frozenset({"LimitExceeded"}), ("limits.max_duration_s",)),
    Case("forty_minutes_at_16x16", lambda d, env: env["long_tiny"], frozenset({"ok"}), check=_check_long_tiny),
    Case("thousands_of_streams", lambda d, env: mp4_with_many_tracks(env["clip"], d / "tracks.mp4", 3000),
         frozenset({"LimitExceeded"}), ("limits.max_streams",)),
    Case("metadata_not_utf8", lambda d, env: latin1_metadata(env["video_only"], d / "latin1.mp4"), frozenset({"ok"}),
         check=_check_video_only),
    Case("corrupt_frames_mid_stream", lambda d, env: corrupt_middle(env["clip"], d / "corrupt.mp4"),
         frozenset({"ok", "DecodeError"}), check=_check_corrupt_middle),
    Case("audio_format_changes_mid_stream", lambda d, env: audio_switch_ts(d / "audio_switch.ts"), frozenset({"ok"}),
         check=_check_audio_switch),
    Case("audio_header_disagrees_with_timestamps", lambda d, env: audio_header_disagrees_ts(d / "audio_header.ts"),
         frozenset({"ok"}), check=_check_audio_switch),
    Case("audio_only", lambda d, env: media.audio_only_clip(d / "audio_only.mp4"), frozenset({"NoVideoStream"}),
         ("no video stream",)),
    Case("video_only", lambda d, env: env["video_only"], frozenset({"ok"}), check=_check_video_only),
    Case("zero_frame_video_stream", lambda d, env: zero_frame_video(d / "no_frames.mp4"),
         frozenset({"DecodeError", "NoVideoStream"})),
    Case("unsupported_codec", lambda d, env: unknown_codec_avi(env["avi"], d / "unknown.avi"),
         frozenset({"UnsupportedFormat", "DecodeError", "NoVideoStream"})),
    Case("fifo_named_mp4", lambda d, env: _fifo(d / "pipe.mp4"), frozenset({"NotAFile"})),
    # Codec allow-list (limits.video_codecs / limits.audio_codecs): real files FFmpeg decodes,
    # refused at probe because no phone or browser records them.
    Case("video_codec_ffv1", lambda d, env: write_clip(d / "ffv1.mkv", 1.0, 64, 48, 10.0, audio=None, codec="ffv1",
                                                       container="matroska"),
         frozenset({"UnsupportedCodec"}), ("video codec ffv1", "limits.video_codecs")),
    Case("video_codec_mjpeg", lambda d, env: write_clip(d / "mjpeg.avi", 1.0, 64, 48, 10.0, audio=None, codec="mjpeg",
                                                        pix_fmt="yuvj420p"),
         frozenset({"UnsupportedCodec"}), ("video codec mjpeg", "limits.video_codecs")),
    Case("audio_codec_ac3", lambda d, env: write_clip(d / "ac3.mp4", 1.0, 64, 48, 10.0, audio_codec="ac3"),
         frozenset({"UnsupportedCodec"}), ("audio codec ac3", "limits.audio_codecs")),
    Case("audio_codec_mp2", lambda d, env: write_clip(d / "mp2.ts", 1.0, 64, 48, 10.0, audio_codec="mp2",
                                                      container="mpegts"),
         frozenset({"UnsupportedCodec"}), ("audio codec mp2", "limits.audio_codecs")),
    Case("audio_pcm_alaw_allowed_by_prefix", lambda d, env: write_clip(d / "alaw.mov", 2.0, 64, 48, 10.0,
                                                                       audio_codec="pcm_alaw"),
         frozenset({"ok"}), check=lambda row: _check_codecs(row, "h264", "pcm_alaw")),
    Case("video_codec_av1_allowed", lambda d, env: write_clip(d / "av1.mp4", 2.0, 64, 64, 10.0, audio=None,
                                                              codec="libsvtav1"),
         frozenset({"ok"}), check=lambda row: _check_codecs(row, "av1", None)),
]


def _check_codecs(row: dict, video_codec: str, audio_codec: str | None) -> None:
    """Probe names the codec (``av1``), not the decoder FFmpeg picked (``libdav1d``)."""
    assert (row["video_codec"], row["audio_codec"]) == (video_codec, audio_codec)
    assert row["n_frames"] == 4 and (row["audio_s"] > 1.5) == (audio_codec is not None)


def test_codec_allow_list_is_configurable(env):
    """An allow-list naming ``pcm_alaw`` alone refuses other PCM; adding ``ac3`` admits AC-3."""
    d = env["dir"]
    s16 = write_clip(d / "s16.mkv", 1.0, 64, 48, 10.0, audio_codec="pcm_s16le")
    ac3 = write_clip(d / "ac3_ok.mp4", 1.0, 64, 48, 10.0, audio_codec="ac3")
    custom = DecodeStage(CONFIG.replace(**{"limits.audio_codecs": ["pcm_alaw", "aac", "ac3"]}))
    try:
        refused, admitted = batch_to_rows(custom(rows_to_batch([_row("s16", s16), _row("ac3", ac3)])))
    finally:
        custom.close()
    assert refused["error_type"] == "UnsupportedCodec" and "pcm_s16le" in refused["error_message"]
    assert "limits.audio_codecs (pcm_alaw, aac, ac3)" in refused["error_message"]
    assert admitted["error_stage"] is None and admitted["audio_codec"] == "ac3"


@pytest.mark.parametrize("codec, suffix, pix_fmt", [("ffv1", "mkv", "yuv420p"), ("mjpeg", "avi", "yuvj420p")])
def test_stream_info_scan_opens_no_decoder_outside_the_allow_list(tmp_path, codec, suffix, pix_fmt):
    """``av.open``'s stream-info scan (``avformat_find_stream_info``) opens a decoder to fill in
    what headers lack; FFmpeg's ``codec_whitelist`` stops it for codecs outside ``limits.video_codecs``:
    the scan leaves the pixel format unknown (it never decoded), while with the codec allowed the
    same scan decodes and knows it."""
    from extract.config import VIDEO_CODECS, LimitsConfig
    from extract.media.probe import open_input

    container = "matroska" if suffix == "mkv" else None
    path = write_clip(tmp_path / f"c.{suffix}", 1.0, 64, 48, 10.0, audio=None, codec=codec, pix_fmt=pix_fmt,
                      **({"container": container} if container else {}))
    with open_input(str(path), LimitsConfig()) as refused:
        assert refused.streams.video[0].codec_context.format is None
    with open_input(str(path), LimitsConfig(video_codecs=VIDEO_CODECS + (codec,))) as admitted:
        assert admitted.streams.video[0].codec_context.format.name == pix_fmt
    stage = DecodeStage(CONFIG)
    try:
        (row,) = batch_to_rows(stage(rows_to_batch([_row(codec, path)])))
    finally:
        stage.close()
    assert row["error_stage"] == "decode" and row["error_type"] == "UnsupportedCodec"
    assert f"video codec {codec} is not in limits.video_codecs" in row["error_message"]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    canary = media.FifoCanary(d / "canary.mp4")
    server = CountingServer()
    clip = media.small_clip(d / "clip.mp4", 4.0)
    values = {
        "dir": d, "canary": canary.path, "http": server.url, "canary_obj": canary, "server": server,
        "clip": clip,
        "faststart": _faststart_clip(clip, d / "fast.mp4"),
        "grow": growing_ts(d / "grow.ts"),
        "video_only": media.small_clip(d / "video_only.mp4", 2.0, audio=None),
        "avi": write_clip(d / "plain.avi", 2.0, 64, 48, 10.0, audio=None, codec="mpeg4"),
        "long_tiny": write_clip(d / "long_tiny.mp4", 2400.0, 16, 16, 1.0, audio=None, gop=60),
    }
    yield values
    canary.close()
    server.close()


def _faststart_clip(src: Path, path: Path) -> Path:
    """``src`` remuxed with its moov index before the frame data (``movflags=faststart``)."""
    import av

    with av.open(str(src)) as inp, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "faststart did not move the index"
    return path


@pytest.fixture(scope="module")
def stage():
    s = DecodeStage(CONFIG)
    yield s
    s.close()


_row = media.source_row


def _peak_rss(stage: DecodeStage) -> int:
    """VmHWM (peak resident bytes) of the stage's decode process, 0 when it is not running."""
    worker = stage.pool.workers[0]
    if not worker.alive:
        return 0
    for line in Path(f"/proc/{worker.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# Fixed gaps (max_streams at open, non-UTF-8 metadata, mid-stream audio format change, AAC
# headers against timestamps) are ordinary cases now; a new known gap goes here as a strict
# xfail so its fix shows as XPASS.
KNOWN_GAPS: dict[str, str] = {}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[c.name]))
                                  if c.name in KNOWN_GAPS else c for c in CASES], ids=[c.name for c in CASES])
def test_hostile_media_ends_in_one_row(case: Case, stage, env):
    path = case.build(env["dir"], env)
    start = time.monotonic()
    rows = batch_to_rows(stage(rows_to_batch([_row(case.name, path)])))
    elapsed = time.monotonic() - start
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(_row("x", path)) | set(DECODE_COLUMNS)
    assert elapsed < TIMEOUT_S + KILL_GRACE_S + 5, f"{case.name} took {elapsed:.1f} s"
    if row["error_stage"] is None:
        assert "ok" in case.expect, f"{case.name} decoded but should fail: {row['width']}x{row['height']}"
        assert row["frames"].dtype == np.uint8 and row["frames"].shape[1:] == (224, 224, 3)
        assert len(row["pts_s"]) == row["n_frames"] == len(row["frames"]) > 0
        case.check(row)
    else:
        message = row["error_message"]
        assert row["error_stage"] == "decode" and row["error_type"] in case.expect & DECODE_ERRORS, (
            row["error_type"], message)
        assert isinstance(row["retryable"], bool)
        assert str(path) in message or case.name in message, message
        assert 10 < len(message) < 2000 and "Traceback" not in message, message
        assert all(word in message for word in case.words), message
        assert row["frames"].shape == (0, 224, 224, 3) and row["n_frames"] is None
    assert _peak_rss(stage) < PEAK_RSS_BOUND, f"decode process peak RSS {_peak_rss(stage) / 2**20:.0f} MiB"


def test_max_pixels_stops_frames_that_grow_mid_stream(env):
    """The growing file through a stage with the default ``limits.max_pixels`` and through one
    that allows the big frames: only the latter's decode process grows by the frames' size."""
    path = env["grow"]
    peaks = {}
    for name, config in (("default", CONFIG), ("allowing", CONFIG.replace(**{"limits.max_pixels": 4096 * 4096}))):
        stage = DecodeStage(config)
        try:
            (row,) = batch_to_rows(stage(rows_to_batch([_row(name, path)])))
            peaks[name] = _peak_rss(stage)
        finally:
            stage.close()
        if name == "default":
            assert row["error_type"] in (None, "DecodeError") and (row["width"] in (None, 64)), row["error_message"]
    big_frame = 4096 * 4096 * 3 // 2
    assert peaks["allowing"] - peaks["default"] > 2 * big_frame, {k: v / 2**20 for k, v in peaks.items()}
    assert peaks["default"] < PEAK_RSS_BOUND


def test_playlists_never_opened_what_they_name(stage, env):
    """Runs after the cases above (pytest keeps file order): the FIFO named by the HLS, DASH and
    concat cases was never opened and the loopback server never got a request."""
    playlists = [c for c in CASES if c.name.startswith(("hls", "dash", "ffconcat"))]
    for case in playlists:  # again, in case this test runs alone
        path = env["dir"] / f"again-{case.name}"
        path.mkdir(exist_ok=True)
        stage(rows_to_batch([_row(case.name, case.build(path, env))]))
    time.sleep(0.1)  # the poller checks every 2 ms
    assert env["canary_obj"].opened == 0, "a playlist entry was opened"
    assert env["server"].requests == [], env["server"].requests


def test_canary_detects_a_reader(env):
    """The FIFO canary is able to fail: a plain open for reading is seen."""
    canary = media.FifoCanary(env["dir"] / "self-check.fifo")
    try:
        with open(canary.path, "rb") as fh:  # blocks until the poller opens the write end
            assert fh.read() == b""
        assert canary.opened >= 1
    finally:
        canary.close()


def test_unrestricted_ffmpeg_would_follow_the_concat_list(env, tmp_path):
    """The concat case is a real threat: FFmpeg without the allow-list decodes the named file."""
    import av

    listing = playlist(tmp_path / "list.txt", f"ffconcat version 1.0\nfile '{env['clip']}'\n")
    with av.open(str(listing), format="concat", options={"safe": "0"}) as unrestricted:
        assert sum(1 for _ in unrestricted.decode(video=0)) == 40
