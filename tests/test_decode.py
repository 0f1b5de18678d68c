"""Decode stage: probe fields, exact sampling on real PyAV files, CLIP geometry against open_clip,
audio, hardening against hostile files, every limit, and process isolation (timeout, crash)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av
import media
import numpy as np
import pytest

from decode_crash import crashing_child_args

from extract.config import Config
from extract.media import audio as media_audio
from extract.media import isolation, video
from extract.media.audio import decode_audio
from extract.media.geometry import ClipFrameScaler, crop_or_pad, resize_plan
from extract.media.isolation import DecodeJob, DecodePool
from extract.media.probe import probe
from extract.media.sampling import sample_timestamps, spread_indices
from extract.media.video import decode_video
from extract.models.preprocess import PreprocessSpec
from extract.rows import VideoError, batch_to_rows, rows_to_batch
from extract.stages.decode import DECODE_COLUMNS, DecodeStage

SPEC = PreprocessSpec(224, "bicubic", "shortest", (0.48145466, 0.4578275, 0.40821073),
                      (0.26862954, 0.26130258, 0.27577711))  # ViT-B-32's, as preprocess_spec gives
CONFIG = Config().replace(**{"models.clip.pretrained": None})


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "short": media.small_clip(d / "short.mp4", 4.0),
        "long": media.small_clip(d / "long.mp4", 60.0, 128, 72, gop=10, audio=None),
        "long_gop": media.long_gop_clip(d / "long_gop.mp4"),
        "portrait": media.portrait_clip(d / "portrait.mp4"),
        "vfr": media.vfr_clip(d / "vfr.mp4"),
        "audio_only": media.audio_only_clip(d / "audio_only.m4a"),
        "five_channel": media.five_channel_clip(d / "five_channel.mp4"),
        "odd": media.odd_size_clip(d / "odd.mp4"),
        "no_audio": media.small_clip(d / "no_audio.mp4", 2.0, audio=None),
        "mkv": media.small_clip(d / "short.mkv", 4.0, codec="libvpx-vp9", audio_codec="libopus"),
        "scene": media.scene_clip(d / "scene.mp4"),
    }


def _decode(path, **overrides):
    return decode_video(str(path), CONFIG.replace(**overrides) if overrides else CONFIG, SPEC)


def _error(path, **overrides) -> VideoError:
    with pytest.raises(VideoError) as info:
        _decode(path, **overrides)
    return info.value


# --------------------------------------------------------------------------- probe and sampling


def test_short_clip_probe_frames_and_audio(clips):
    out = _decode(clips["short"])
    p = out.probe
    assert (p.container, p.video_codec, p.audio_codec) == ("mov", "h264", "aac")
    assert (p.width, p.height, p.rotation, p.fps, p.has_audio) == (160, 96, 0, 10.0, True)
    assert p.duration_s == pytest.approx(4.0, abs=0.05) and p.bitrate > 0
    assert out.frames.shape == (4, 224, 224, 3) and out.frames.dtype == np.uint8
    assert out.pts_s.dtype == np.float32
    np.testing.assert_allclose(out.pts_s, [0, 1, 2, 3], atol=1e-6)
    assert out.audio.dtype == np.float32 and out.audio.ndim == 1
    assert out.audio_s == pytest.approx(4.0, abs=0.1)
    assert 0.1 < np.abs(out.audio).max() <= 1.0  # the 0.2-amplitude tone, not silence


def test_audio_can_be_left_out(clips):
    out = decode_video(str(clips["short"]), CONFIG, SPEC, audio=False)
    assert out.probe.has_audio and out.audio.shape == (0,) and out.audio.dtype == np.float32
    np.testing.assert_array_equal(out.frames, _decode(clips["short"]).frames)


@pytest.mark.parametrize("name", ["long", "odd", "portrait"])
def test_scaler_threads_do_not_change_pixels(clips, name):
    frames, _ = media.reference_frames(clips[name], [0.0, 1.0])
    one, three = ClipFrameScaler(SPEC), ClipFrameScaler(SPEC, threads=3)
    for frame in frames:
        np.testing.assert_array_equal(one(frame), three(frame))


def test_long_clip_uniform_frames_equal_decode_everything_reference(clips):
    out = _decode(clips["long"])
    targets = sample_timestamps(out.probe.video_duration_s, CONFIG.sampling)
    assert len(targets) == 32
    ref_frames, ref_times = media.reference_frames(clips["long"], targets)
    np.testing.assert_allclose(out.pts_s, ref_times, atol=1e-5)
    assert np.all(out.pts_s >= targets - 1e-5) and np.all(out.pts_s - targets < 0.1 + 1e-5)
    scale = ClipFrameScaler(SPEC)
    np.testing.assert_array_equal(out.frames, np.stack([scale(f) for f in ref_frames]))


@pytest.mark.parametrize("name, expect_seeks", [("long", True), ("long_gop", False)])
def test_seek_plan_follows_gop_and_matches_sequential(clips, name, expect_seeks):
    auto = _decode(clips[name])
    sequential = decode_video(str(clips[name]), CONFIG, SPEC, strategy="sequential")
    np.testing.assert_array_equal(auto.pts_s, sequential.pts_s)
    np.testing.assert_array_equal(auto.frames, sequential.frames)
    assert (auto.stats.seeks > 0) == expect_seeks
    assert auto.stats.strategy == ("seek" if expect_seeks else "sequential")
    if expect_seeks:  # 1 s GOPs, a target every 1.875 s: seeking skips most frames
        assert auto.stats.frames_decoded < 0.6 * sequential.stats.frames_decoded


class _ReadCounter:
    """Wraps an open container: counts the video packets demuxed and the seeks that go back to
    (or before) a packet already read, i.e. that make the decoder decode something again."""

    def __init__(self, container):
        self._container = container
        self.packets = self.seeks = self.backward_seeks = 0
        self.furthest_pts = None

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._container.__exit__(*exc_info)

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            if packet.size and packet.pts is not None and packet.stream.type == "video":
                self.packets += 1
                self.furthest_pts = max(self.furthest_pts if self.furthest_pts is not None else packet.pts, packet.pts)
            yield packet

    def seek(self, ts, **kwargs):
        self.seeks += 1
        if self.furthest_pts is not None and ts <= self.furthest_pts:
            self.backward_seeks += 1
        self.furthest_pts = None
        return self._container.seek(ts, **kwargs)


@pytest.mark.parametrize("threads", [2, 4])
def test_seeks_never_go_back_to_packets_already_read(tmp_path, monkeypatch, threads):
    # Key frames 5 frames (1/6 s) after each 1 s target: past the seek cost from the kept frame,
    # but the decoder has read ahead of it by its reorder delay and frame threads, so with 4
    # threads those key frames were already read when the target's frame came out. Seeking to
    # one would decode its packets again; with 2 threads it would skip about one frame.
    path = media.forced_keyframes_clip(tmp_path / "kf.mp4", [30 * k + 5 for k in range(10)], n_frames=300, fps=30)
    # the sampling pass's reads only: no every-frame motion pass (extract.media.pace) opening the file again
    config = CONFIG.replace(**{"runtime.decode_threads": threads, "signals.motion": False})
    opened, real_open_input = [], video.open_input

    def counting_open_input(*args, **kwargs):
        opened.append(_ReadCounter(real_open_input(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(video, "open_input", counting_open_input)
    sequential = decode_video(str(path), config, SPEC, strategy="sequential")
    read_sequentially = opened[0].packets
    auto = decode_video(str(path), config, SPEC)
    reader = opened[1]
    np.testing.assert_array_equal(auto.pts_s, sequential.pts_s)
    np.testing.assert_array_equal(auto.frames, sequential.frames)
    np.testing.assert_allclose(auto.pts_s, np.arange(10), atol=1e-6)
    assert reader.backward_seeks == 0
    assert reader.packets <= read_sequentially
    assert auto.stats.frames_decoded <= sequential.stats.frames_decoded
    assert auto.stats.packets_read == reader.packets and sequential.stats.packets_read == read_sequentially


@pytest.mark.parametrize("fps", [0.7, 3.0, 10.0])
@pytest.mark.parametrize("strategy", ["auto", "sequential"])
def test_dropped_frames_never_change_what_is_kept(clips, fps, strategy):
    # B-frames (x264 default) arrive after the frame they are presented after; dropping the
    # non-reference frames that cannot be first at or after a target must keep every pick.
    config = CONFIG.replace(**{"sampling.fps": fps, "sampling.max_frames": 1000})
    out = decode_video(str(clips["long"]), config, SPEC, strategy=strategy)
    targets = sample_timestamps(out.probe.video_duration_s, config.sampling)
    ref_frames, ref_times = media.reference_frames(clips["long"], targets)
    np.testing.assert_allclose(out.pts_s, ref_times, atol=1e-5)
    scale = ClipFrameScaler(SPEC)
    np.testing.assert_array_equal(out.frames, np.stack([scale(f) for f in ref_frames]))


@pytest.mark.parametrize("rotation", [90, 270])
def test_portrait_via_rotation_metadata(tmp_path, rotation):
    path = media.portrait_clip(tmp_path / "p.mp4", rotation=rotation)
    out = _decode(path)
    p = out.probe
    assert (p.rotation, p.width, p.height, p.coded_width, p.coded_height) == (rotation, 108, 192, 192, 108)
    assert probe(str(path)).rotation == rotation
    # Stored picture: red grows left->right, green top->bottom. Turned clockwise (90), red grows
    # top->bottom and green right->left; counter-clockwise (270) the opposite.
    frame = out.frames[0].astype(float)
    red_down = frame[-20:, :, 0].mean() - frame[:20, :, 0].mean()
    green_left = frame[:, :20, 1].mean() - frame[:, -20:, 1].mean()
    sign = 1 if rotation == 90 else -1
    assert sign * red_down > 30 and sign * green_left > 30


def test_vfr_frames_are_the_first_at_or_after_each_target(clips):
    out = _decode(clips["vfr"])
    targets = sample_timestamps(out.probe.video_duration_s, CONFIG.sampling)
    _, ref_times = media.reference_frames(clips["vfr"], targets)
    np.testing.assert_allclose(out.pts_s, ref_times, atol=1e-6)
    assert set(np.round(out.pts_s.astype(float), 3)) <= {0.0, 0.1, 0.15, 0.6, 1.3, 1.35, 1.4, 2.2, 2.9, 3.5}


def test_webm_without_duration_is_measured_from_its_packets(tmp_path):
    """A browser's MediaRecorder WebM (live-muxed: no duration, no cues): uniform sampling
    spreads over its real length, and ``limits.max_duration_s`` applies to that length."""
    path = media.small_clip(tmp_path / "recorded.webm", 6.0, codec="libvpx-vp9", container="webm",
                            audio_codec="libopus", muxer_options={"live": "1"})
    with av.open(str(path)) as container:  # the fixture states no length anywhere
        assert container.duration is None and container.streams.video[0].duration is None
    out = _decode(path)
    assert out.probe.duration_s == out.probe.video_duration_s == pytest.approx(6.0, abs=0.15)
    np.testing.assert_allclose(out.pts_s, [0, 1, 2, 3, 4, 5], atol=1e-6)
    ref_frames, _ = media.reference_frames(path, [0, 1, 2, 3, 4, 5])
    assert len({frame.pts for frame in ref_frames}) == 6 and len({f.tobytes() for f in out.frames}) == 6
    assert out.audio_s == pytest.approx(6.0, abs=0.1)
    err = _error(path, **{"limits.max_duration_s": 3.0})
    assert err.error_type == "LimitExceeded" and "limits.max_duration_s" in str(err)


def test_webm_without_duration_is_scanned_once_for_key_frames(tmp_path, monkeypatch):
    """The ``keyframes`` policy on a file without a duration needs its length and its key
    frames: both come from one demux-only pass (each pass ends with a rewind)."""
    path = media.small_clip(tmp_path / "recorded.webm", 4.0, codec="libvpx-vp9", container="webm",
                            audio=None, gop=10, muxer_options={"live": "1"})
    rewinds = []
    rewind = video.VideoReader.rewind
    monkeypatch.setattr(video.VideoReader, "rewind", lambda reader: rewinds.append(1) or rewind(reader))
    out = _decode(path, **{"sampling.policy": "keyframes"})
    assert len(rewinds) == 1
    np.testing.assert_allclose(out.pts_s, [0, 1, 2, 3], atol=1e-6)


def test_late_audio_is_placed_on_the_video_timeline(tmp_path):
    """A track that starts 1 s after the video: silence first, so the tone (and any transcript
    time) sits at 1 s of video time; the audio-only decode keeps the track as it is."""
    path = media.late_audio_clip(tmp_path / "late.mp4", delay_s=1.0, duration_s=4.0)
    onset = lambda audio: np.argmax(np.abs(audio) > 0.1) / 16_000  # noqa: E731 - first loud sample, s
    out = _decode(path)
    assert onset(out.audio) == pytest.approx(1.0, abs=0.02)
    assert out.audio_s == pytest.approx(4.0, abs=0.1)
    assert onset(decode_audio(str(path))) < 0.1


def test_align_to_video():
    audio = np.ones(16_000, np.float32)
    late = media_audio.align_to_video(audio, 0.5, 10.0)
    assert len(late) == 24_000 and not late[:8000].any() and late[8000:].all()
    early = media_audio.align_to_video(audio, -0.25, 10.0)
    assert len(early) == 12_000
    assert media_audio.align_to_video(audio, 3600.0, 10.0) is audio  # a broken timestamp, not a delay
    assert media_audio.align_to_video(audio, float("nan"), 10.0) is audio


def test_no_audio_stream(clips):
    out = _decode(clips["no_audio"])
    assert out.probe.has_audio is False and out.probe.audio_codec is None
    assert out.audio.shape == (0,) and out.audio.dtype == np.float32 and out.audio_s == 0.0


def test_audio_only_file_has_no_video_but_decodes_audio(clips):
    assert _error(clips["audio_only"]).error_type == "NoVideoStream"
    audio = decode_audio(str(clips["audio_only"]))
    assert audio.dtype == np.float32 and len(audio) == pytest.approx(2 * 16_000, abs=1200)


def test_five_channel_48k_audio_to_16k_mono(clips):
    out = _decode(clips["five_channel"])
    assert out.probe.audio_codec == "aac"
    assert len(out.audio) == pytest.approx(3 * 16_000, abs=1200)
    spectrum = np.abs(np.fft.rfft(out.audio[4000:-4000]))
    peak_hz = np.argmax(spectrum) * 16_000 / len(out.audio[4000:-4000])
    assert peak_hz == pytest.approx(440, abs=3)


def _audio_frames(rate_hz: int, ticks_per_frame: list[float | None], samples: int = 1024, layout: str = "mono",
                  tick_hz: int = 90_000, start: int = 0) -> list[av.AudioFrame]:
    """Silent ``flt`` frames stating ``rate_hz``, at the given pts steps (ticks of 1/tick_hz; None: no pts)."""
    from fractions import Fraction

    frames, pts = [], start
    for step in ticks_per_frame:
        channels = len(av.AudioLayout(layout).channels)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples * channels), np.float32), format="flt", layout=layout)
        frame.sample_rate, frame.time_base = rate_hz, Fraction(1, tick_hz)
        frame.pts = None if step is None else round(pts)
        pts += step or 0
        frames.append(frame)
    return frames


def _rates(frames: list) -> list[int]:
    check = media_audio.AudioRateCheck(frames[0].time_base)
    out = [rate for frame in frames for *_, rate in check.push(frame)] + [rate for *_, rate in check.flush()]
    assert len(out) == len(frames)
    return out


def test_audio_rate_follows_the_timestamps_only_where_they_consistently_disagree():
    at_48k = 1024 * 90_000 / 48_000  # ticks per 1024-sample frame
    at_16k = 1024 * 90_000 / 16_000
    # Headers and timestamps agree: the header stands (also 44.1 kHz, whose ticks are not whole).
    assert _rates(_audio_frames(48_000, [at_48k] * 20)) == [48_000] * 20
    assert _rates(_audio_frames(44_100, [1024 * 90_000 / 44_100] * 20)) == [44_100] * 20
    # One lost packet (a gap of a frame) and timestamps in whole milliseconds (Matroska): no change.
    assert _rates(_audio_frames(48_000, [at_48k] * 8 + [2 * at_48k] + [at_48k] * 8)) == [48_000] * 17
    assert _rates(_audio_frames(48_000, [90 * round(20 * k + 20) - 90 * round(20 * k) for k in range(20)],
                                samples=960)) == [48_000] * 20
    # No timestamps at all: the header.
    assert _rates(_audio_frames(16_000, [None] * 10)) == [16_000] * 10
    # 16 kHz headers on packets whose timestamps advance at 48 kHz, after 16 true 16 kHz frames
    # (the last frames, past the final window, keep the choice before them).
    mixed = _audio_frames(16_000, [at_16k] * 16) + _audio_frames(16_000, [at_48k] * 40, start=16 * at_16k)
    assert _rates(mixed) == [16_000] * 16 + [48_000] * 40


def test_odd_dimensions(clips):
    out = _decode(clips["odd"])
    assert (out.probe.width, out.probe.height) == (161, 91)
    assert out.frames.shape == (4, 224, 224, 3)


def test_matroska_vp9_opus(clips):
    out = _decode(clips["mkv"])
    assert (out.probe.container, out.probe.video_codec, out.probe.audio_codec) == ("matroska", "vp9", "opus")
    np.testing.assert_allclose(out.pts_s, [0, 1, 2, 3], atol=1e-6)


def test_keyframes_policy(clips):
    out = _decode(clips["long"], **{"sampling.policy": "keyframes"})
    kf = np.asarray(media.keyframe_times(clips["long"]))
    assert len(kf) == 60  # one per second
    np.testing.assert_allclose(out.pts_s, kf[spread_indices(60, 32)], atol=1e-6)
    few = _decode(clips["long_gop"], **{"sampling.policy": "keyframes"})
    np.testing.assert_allclose(few.pts_s, [0.0])  # never padded to min_frames


def test_scene_policy_finds_the_cuts(clips):
    out = _decode(clips["scene"], **{"sampling.policy": "scene"})
    np.testing.assert_allclose(out.pts_s, [0.0, 2.0, 4.5], atol=1e-6)
    capped = _decode(clips["scene"], **{"sampling.policy": "scene", "sampling.max_frames": 2,
                                       "sampling.min_frames": 1})
    np.testing.assert_allclose(capped.pts_s, [0.0, 2.0], atol=1e-6)
    np.testing.assert_array_equal(capped.frames, out.frames[:2])


def test_scene_policy_second_pass_when_changes_exceed_memory(clips, monkeypatch):
    monkeypatch.setattr(video, "SCENE_STORE_FACTOR", 0)  # keep nothing: decode the chosen cuts again
    again = _decode(clips["scene"], **{"sampling.policy": "scene"})
    monkeypatch.undo()
    once = _decode(clips["scene"], **{"sampling.policy": "scene"})
    np.testing.assert_array_equal(again.pts_s, once.pts_s)
    np.testing.assert_array_equal(again.frames, once.frames)


# --------------------------------------------------------------------------- CLIP geometry


@pytest.mark.parametrize("w, h", [(320, 180), (180, 320), (161, 91), (224, 224), (1000, 10), (100, 150)])
@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_resize_plan_matches_open_clip_geometry(w, h, mode):
    from open_clip.transform import image_transform
    from PIL import Image

    # An image whose pixel values encode their coordinates, resized with NEAREST by open_clip:
    # the crop/pad offsets must land on the same source pixels.
    plan = resize_plan(w, h, 224, mode)
    transform = image_transform(224, is_train=False, resize_mode=mode, interpolation="bilinear")
    resize = transform.transforms[0]
    resized = resize(Image.new("RGB", (w, h)))
    assert resized.size == (plan.resize_w, plan.resize_h)
    marks = np.zeros((plan.resize_h, plan.resize_w, 3), np.uint8)
    marks[..., 0] = np.arange(plan.resize_w)[None, :] % 251 + 1
    marks[..., 1] = np.arange(plan.resize_h)[:, None] % 251 + 1
    expected = np.asarray(transform.transforms[1](Image.fromarray(marks))) if mode != "squash" else marks
    np.testing.assert_array_equal(crop_or_pad(marks, plan), expected)


@pytest.fixture(scope="module")
def open_clip_preprocess():
    import open_clip

    return open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)[2]


# What phones and platforms upload besides H.264: iPhone HEVC 10-bit in MOV (portrait), AV1.
PHONE_FORMATS = {
    "hevc_10bit_mov": dict(codec="libx265", pix_fmt="yuv420p10le", container="mov",
                           encoder_options={"preset": "ultrafast", "x265-params": "log-level=error"}),
    "av1_mp4": dict(codec="libsvtav1", container="mp4", encoder_options={"preset": "12"}),
}


@pytest.mark.parametrize("name, size, rotation", [("landscape", (640, 360), 0), ("portrait", (400, 300), 270),
                                                  ("odd", None, 0), ("hevc_10bit_mov", (640, 360), 90),
                                                  ("av1_mp4", (640, 360), 0)])
def test_frames_match_open_clip_preprocess_val(tmp_path, clips, open_clip_preprocess, name, size, rotation):
    """Differential check: our swscale path vs open_clip's PIL path on the same decoded frames.

    Tolerance (0-255 scale): mean |diff| < 1.5 and 99th percentile <= 6; the rest are pixels
    at hard colour edges, where swscale scales 4:2:0 chroma at its own resolution.
    """
    from PIL import Image

    extra = PHONE_FORMATS.get(name, {})
    path = clips["odd"] if size is None else media.small_clip(
        tmp_path / f"{name}.{extra.get('container', 'mp4')}", 1.0, *size, rotation=rotation, audio=None, **extra)
    out = _decode(path)
    if extra:
        assert out.probe.video_codec == {"libx265": "hevc", "libsvtav1": "av1"}[extra["codec"]]
        assert (out.probe.width, out.probe.height) == (size[::-1] if rotation in (90, 270) else size)
    ref_frames, _ = media.reference_frames(path, sample_timestamps(out.probe.video_duration_s, CONFIG.sampling))
    mean, std = np.array(SPEC.mean), np.array(SPEC.std)
    diffs = []
    for ours, frame in zip(out.frames, ref_frames):
        rgb = frame.to_ndarray(format="rgb24")
        rgb = np.rot90(rgb, k=-(rotation // 90)) if rotation else rgb
        tensor = open_clip_preprocess(Image.fromarray(np.ascontiguousarray(rgb))).numpy()
        ref = (tensor.transpose(1, 2, 0) * std + mean) * 255
        diffs.append(np.abs(ours.astype(np.float64) - ref))
    diff = np.concatenate([d.ravel() for d in diffs])
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 6, (diff.mean(), np.percentile(diff, 99))


# --------------------------------------------------------------------------- hostile and broken files


def test_hls_playlist_is_refused_though_plain_ffmpeg_would_follow_it(tmp_path):
    other = media.small_clip(tmp_path / "someone_elses.ts", 2.0, audio=None)
    playlist = media.hls_playlist(tmp_path / "evil.m3u8", other)
    with av.open(str(playlist)) as unrestricted:  # the threat: frames of another file
        assert sum(1 for _ in unrestricted.decode(video=0)) == 20
    err = _error(playlist)
    assert err.error_type == "UnsupportedFormat" and "hls" in str(err)


def test_concat_list_and_non_media_are_refused(tmp_path, clips):
    err = _error(media.concat_list(tmp_path / "list.txt", clips["short"]))
    assert err.error_type == "UnsupportedFormat" and "concat" in str(err)
    assert _error(media.text_file(tmp_path / "notes.txt")).error_type == "UnsupportedFormat"
    # Garbage named like an MP4 reaches the mov demuxer, which finds no index: broken MP4.
    assert _error(media.text_file(tmp_path / "fake.mp4")).error_type == "DecodeError"
    assert _error(media.zero_byte_file(tmp_path / "empty.mp4")).error_type == "DecodeError"


def test_truncated_files(tmp_path, clips):
    # MP4 keeps its index at the end: cut in half, nothing is readable.
    err = _error(media.truncated_copy(clips["short"], tmp_path / "half.mp4"))
    assert err.error_type == "DecodeError" and "moov" in str(err)
    # Matroska streams: half a file decodes, but its sampled seconds are missing.
    err = _error(media.truncated_copy(clips["mkv"], tmp_path / "half.mkv"))
    assert err.error_type == "DecodeError" and "truncated" in str(err)
    # A few missing bytes at the end: every target is still served.
    out = _decode(media.truncated_copy(clips["mkv"], tmp_path / "most.mkv", keep=0.97))
    np.testing.assert_allclose(out.pts_s, [0, 1, 2, 3], atol=1e-6)


# --------------------------------------------------------------------------- limits


def test_limit_max_duration(clips):
    err = _error(clips["short"], **{"limits.max_duration_s": 3.0})
    assert err.error_type == "LimitExceeded" and "limits.max_duration_s" in str(err)


def test_limit_max_pixels(clips):
    err = _error(clips["short"], **{"limits.max_pixels": 160 * 96 - 1})
    assert err.error_type == "LimitExceeded" and "limits.max_pixels" in str(err)
    assert _decode(clips["short"], **{"limits.max_pixels": 160 * 96}).frames.shape[0] == 4


def test_limit_max_streams(tmp_path, clips):
    err = _error(media.many_streams_clip(tmp_path / "many.mkv", n_audio=9))
    assert err.error_type == "LimitExceeded" and "limits.max_streams" in str(err)
    err = _error(clips["short"], **{"limits.max_streams": 1})
    assert err.error_type == "LimitExceeded" and "limits.max_streams" in str(err)


def test_limit_timeout_inside_the_decoder(clips):
    err = _error(clips["long"], **{"limits.timeout_s": 0.001})
    assert err.error_type == "Timeout" and err.retryable and "limits.timeout_s" in str(err)


# --------------------------------------------------------------------------- isolation and the stage


@pytest.fixture(scope="module")
def stage():
    s = DecodeStage(CONFIG)
    yield s
    s.close()


def _batch(*rows):
    return rows_to_batch([media.source_row(vid, uri) for vid, uri in rows])


def test_stage_rows_contract_and_failed_passthrough(stage, clips, tmp_path):
    batch = _batch(("ok", clips["short"]), ("missing", tmp_path / "nope.mp4"), ("empty", media.zero_byte_file(
        tmp_path / "empty.mp4")), ("earlier", clips["short"]))
    batch["error_stage"][3], batch["error_type"][3] = "source", "InvalidInput"
    rows = batch_to_rows(stage(batch))
    assert all(set(r) == set(batch) | set(DECODE_COLUMNS) for r in rows)
    ok, missing, empty, earlier = rows
    assert ok["error_stage"] is None
    assert ok["content_sha256"] == hashlib.sha256(clips["short"].read_bytes()).hexdigest()
    assert ok["file_bytes"] == os.path.getsize(clips["short"])
    assert (ok["width"], ok["height"], ok["n_frames"], ok["sampling_policy"]) == (160, 96, 4, "uniform")
    assert ok["frames"].shape == (4, 224, 224, 3) and ok["pts_s"].shape == (4,)
    assert ok["audio_s"] == pytest.approx(4.0, abs=0.1) and ok["has_audio"] is True
    assert (missing["error_stage"], missing["error_type"]) == ("decode", "NotFound")
    assert (empty["error_type"], empty["retryable"]) == ("UnsupportedFormat", False)
    assert (earlier["error_stage"], earlier["content_sha256"]) == ("source", None)
    for failed in (missing, empty, earlier):
        assert failed["frames"].shape == (0, 224, 224, 3) and failed["frames"].dtype == np.uint8
        assert failed["pts_s"].shape == (0,) and failed["audio"].shape == (0,)
        assert failed["n_frames"] is None and failed["width"] is None


def test_crash_costs_only_its_row(clips, monkeypatch):
    """Children that abort on ``boom`` (``tests/decode_crash.py``): only its row is a ``Crash``,
    the next video gets a fresh child; with the package's own child it decodes."""
    monkeypatch.setattr(isolation, "CHILD_ARGS", crashing_child_args(["boom", "other"]))
    crashing = DecodeStage(CONFIG)
    try:
        rows = batch_to_rows(crashing(_batch(("a", clips["short"]), ("boom", clips["short"]), ("b", clips["no_audio"]))))
        monkeypatch.undo()
        crashing.pool.workers[0].kill()  # the next start runs the package's own child
        again = batch_to_rows(crashing(_batch(("boom", clips["short"]))))[0]
    finally:
        crashing.close()
    assert [r["error_type"] for r in rows] == [None, "Crash", None]
    assert rows[1]["retryable"] is False and "SIGABRT" in rows[1]["error_message"]
    assert again["error_type"] is None


def test_stage_limit_max_file_bytes(clips):
    small = DecodeStage(CONFIG.replace(**{"limits.max_file_bytes": 1000}))
    try:
        row = batch_to_rows(small(_batch(("big", clips["short"]))))[0]
    finally:
        small.close()
    assert row["error_type"] == "LimitExceeded" and "limits.max_file_bytes" in row["error_message"]


def test_pool_kills_a_hung_decoder(tmp_path, clips, monkeypatch):
    """A child that stops answering (``tests/decode_crash.py`` stall mode: it sleeps, so neither
    its own deadline nor its CPU budget ends it) is killed ``KILL_GRACE_S`` after the timeout;
    the next video gets a fresh child. A FIFO never reaches a child: the parent refuses it."""
    monkeypatch.setattr(isolation, "KILL_GRACE_S", 0.5)
    monkeypatch.setattr(isolation, "CHILD_ARGS", crashing_child_args(["hang"], "stall"))
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    with DecodePool(CONFIG.replace(**{"limits.timeout_s": 1.0}), SPEC) as pool:
        hung, after = pool.map([DecodeJob("hang", str(clips["short"]))]), pool.map([DecodeJob("ok", str(clips["short"]))])
        (fifo_result,) = pool.map([DecodeJob("fifo", str(fifo))])
    assert hung[0].error_type == "Timeout" and hung[0].retryable and "killed" in str(hung[0])
    assert after[0].frames.shape == (4, 224, 224, 3)
    assert fifo_result.error_type == "NotAFile" and str(fifo) in str(fifo_result)


def test_limit_max_memory_bytes(tmp_path, clips, stage):
    big = media.big_frame_clip(tmp_path / "big.avi")  # 4096 x 4096: over 72 MB to decode
    # two FFmpeg threads, as the measured 72 MB assumed (one thread needs less)
    config = CONFIG.replace(**{"limits.max_pixels": 4096 * 4096, "runtime.decode_threads": 2})
    assert _decode(big, **{"limits.max_pixels": 4096 * 4096}).probe.width == 4096  # fine without the limit
    baseline = stage.pool.baseline_vm_bytes  # an idle child's address space
    with pytest.raises(ValueError, match="limits.max_memory_bytes"):
        DecodePool(config.replace(**{"limits.max_memory_bytes": baseline}), SPEC)
    tight = config.replace(**{"limits.max_memory_bytes": baseline + 72 * 2**20})
    with DecodePool(tight, SPEC) as pool:
        result, after = pool.map([DecodeJob("big", str(big)), DecodeJob("ok", str(clips["short"]))])
    assert result.error_type == "LimitExceeded" and "limits.max_memory_bytes" in str(result)
    assert after.frames.shape == (4, 224, 224, 3)  # a fresh child took the next video


def test_stage_reads_object_store_uris_and_deletes_the_copies(stage, clips, s3_server, tmp_path, monkeypatch):
    import tempfile

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="decode-test")
    client.put_object(Bucket="decode-test", Key="up/short.mp4", Body=clips["short"].read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the stage copies objects to
    row = batch_to_rows(stage(_batch(("s3", "s3://decode-test/up/short.mp4"))))[0]
    assert row["error_type"] is None and row["n_frames"] == 4
    assert row["content_sha256"] == hashlib.sha256(clips["short"].read_bytes()).hexdigest()
    assert list(scratch.iterdir()) == []


def test_pool_takes_the_next_job_when_a_child_is_idle(tmp_path, clips, monkeypatch):
    """Two children: a hung video holds one while the other decodes the rest; jobs are pulled
    from the iterable only when a child is free; results come back in job order."""
    monkeypatch.setattr(isolation, "KILL_GRACE_S", 0.5)
    monkeypatch.setattr(isolation, "CHILD_ARGS", crashing_child_args(["hang"], "stall"))
    asked, ended = [], []

    def jobs():
        for name, path in (("hang", clips["short"]), ("a", clips["short"]), ("b", clips["no_audio"]), ("c", clips["short"])):
            asked.append((name, list(ended)))
            yield DecodeJob(name, str(path))

    with DecodePool(CONFIG.replace(**{"limits.timeout_s": 2.0}), SPEC, size=2) as pool:
        results = pool.map(jobs(), lambda index, result: ended.append(index))
    assert ended == [1, 2, 3, 0]  # the short videos finished while the hung one held its child
    assert asked == [("hang", []), ("a", []), ("b", [1]), ("c", [1, 2])]  # never more than two in flight
    assert results[0].error_type == "Timeout"
    assert [r.frames.shape[0] for r in results[1:]] == [4, 4, 4]


def test_stage_fetches_each_object_when_a_child_is_idle(clips, s3_server, tmp_path, monkeypatch):
    """Object-store rows through a two-process stage: no more fetched copies on disk than
    children, every copy deleted, rows in input order."""
    import tempfile

    import boto3

    from extract.io import storage

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="decode-jit")
    for key, clip in (("a", "short"), ("b", "no_audio"), ("c", "short"), ("d", "no_audio")):
        client.put_object(Bucket="decode-jit", Key=f"{key}.mp4", Body=clips[clip].read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    copies_seen = []
    fetch = storage.fetch

    def counting_fetch(uri, tmp, *args, **kwargs):
        copies_seen.append(len(list(Path(tmp).iterdir())))
        return fetch(uri, tmp, *args, **kwargs)

    monkeypatch.setattr(storage, "fetch", counting_fetch)
    stage = DecodeStage(CONFIG, processes=2)
    try:
        rows = batch_to_rows(stage(_batch(*[(key, f"s3://decode-jit/{key}.mp4") for key in "abcd"])))
    finally:
        stage.close()
    assert [r["video_id"] for r in rows] == list("abcd")
    assert [(r["error_type"], r["n_frames"], r["has_audio"]) for r in rows] == [
        (None, 4, True), (None, 4, False), (None, 4, True), (None, 4, False)]
    assert len(copies_seen) == 4 and max(copies_seen) <= 1  # a fetch happens for an idle child only
    assert list(scratch.iterdir()) == []


# --------------------------------------------------------------------------- thumbnails


THUMB_FPS = 12.0


def _thumb_clip(path: Path, width: int = 192, height: int = 108, rotation: int = 0) -> Path:
    from extract.tools.samples import write_clip

    return write_clip(path, 3.0, width, height, THUMB_FPS, audio=None, rotation=rotation, gop=6)


def _nearest_frame(jpeg: bytes, width: int, height: int, upright_k: int = 0) -> int:
    """Index of the synthetic frame that a thumbnail (rotated back by ``upright_k`` quarter
    turns) looks most like."""
    import io

    from PIL import Image

    from extract.tools.samples import synthetic_frame

    thumb = np.rot90(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32), k=upright_k)
    h, w = thumb.shape[:2]
    errs = [np.abs(np.asarray(Image.fromarray(synthetic_frame(i, THUMB_FPS, width, height)).resize((w, h)),
                              np.float32) - thumb).mean() for i in range(int(3.0 * THUMB_FPS))]
    return int(np.argmin(errs))


def test_thumbnails_come_from_the_sampled_frames_in_the_child(tmp_path):
    """The decode child sends up to ``output.thumbnails`` JPEGs spread over the sampled frames:
    whole pictures, long side 160 px, each showing the frame at its ``pts_s``; the stage carries
    them on the row (``thumbnails_of``)."""
    import io

    from PIL import Image

    from extract.rows import thumbnails_of

    path = _thumb_clip(tmp_path / "c.mp4")
    config = CONFIG.replace(**{"sampling.fps": 3.0})  # 9 sampled frames, 4 of them thumbnails
    with DecodePool(config, SPEC) as pool:
        (result,) = pool.map([DecodeJob("c", str(path))])
    n = len(result.frames)
    assert n > 4 and list(result.thumbnail_index) == [int(i) for i in spread_indices(n, 4)]
    for i, jpeg in zip(result.thumbnail_index, result.thumbnails):
        img = Image.open(io.BytesIO(jpeg))
        assert img.format == "JPEG" and img.size == (160, 90) and len(jpeg) < 8000
        assert _nearest_frame(jpeg, 192, 108) == round(float(result.pts_s[i]) * THUMB_FPS)
    stage = DecodeStage(config.replace(**{"output.thumbnails": 2}))
    try:
        (row,) = batch_to_rows(stage(rows_to_batch([media.source_row("c", path)])))
    finally:
        stage.close()
    thumbs = thumbnails_of(row)
    assert sorted(thumbs) == [int(i) for i in spread_indices(row["n_frames"], 2)]
    assert all(Image.open(io.BytesIO(j)).format == "JPEG" for j in thumbs.values())


def test_thumbnails_are_upright_for_every_policy_and_can_be_off(tmp_path):
    path = _thumb_clip(tmp_path / "p.mp4", 160, 96, rotation=90)
    for policy in ("uniform", "keyframes", "scene"):
        result = _decode(path, **{"sampling.policy": policy})
        assert len(result.thumbnails) == min(4, len(result.frames)) > 0, policy
        for i, jpeg in zip(result.thumbnail_index, result.thumbnails):
            # Clockwise 90: the stored picture's left column becomes the top row.
            assert _nearest_frame(jpeg, 160, 96, upright_k=1) == round(float(result.pts_s[i]) * THUMB_FPS), policy
    off = _decode(path, **{"output.thumbnails": 0})
    assert off.thumbnails == () and len(off.thumbnail_index) == 0 and len(off.frames) > 0
    # pictures for the report, not features: the setting leaves the feature hash alone
    assert CONFIG.replace(**{"output.thumbnails": 0}).feature_hash_of({}) == CONFIG.feature_hash_of({})
