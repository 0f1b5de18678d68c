"""Best streams: the video and audio FFmpeg would pick, never cover art, on real multi-stream media.

``torchcodec-nasa_13013.mp4`` (torchcodec's own test file) holds two video streams (0: 320x180
at 25 fps, 3: 480x270 at 29.97 fps), two audio streams (1: 8 kHz, 4: 16 kHz) and two subtitle
streams; torchcodec's tests, ``ffprobe`` and PyAV's ``streams.best`` pick 3 and 4.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from extract.config import Config
from extract.media.audio import AUDIO_RATE, decode_audio
from extract.media.isolation import DecodeJob, DecodePool
from extract.media.probe import probe
from extract.models.preprocess import PreprocessSpec

PEER_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "peer-media"
NASA = PEER_MEDIA / "torchcodec-nasa_13013.mp4"
SPEC = PreprocessSpec(224, "bicubic", "shortest", (0.48145466, 0.4578275, 0.40821073),
                      (0.26862954, 0.26130258, 0.27577711))
CONFIG = Config().replace(**{"models.clip.pretrained": None, "ocr.enabled": False})

pytestmark = pytest.mark.skipif(not NASA.is_file(), reason=f"{NASA} not found (../shared/peer-media)")


def _stream_audio(path: Path, index: int) -> np.ndarray:
    """Stream ``index`` of ``path`` as 16 kHz mono float32, decoded plainly with PyAV."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(container.streams[index])
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.abs(a[:n] - b[:n]).mean())


def test_probe_picks_ffmpegs_best_streams():
    info = probe(str(NASA))
    with av.open(str(NASA)) as container:
        assert info.video_stream_index == container.streams.best("video").index == 3
        assert info.audio_stream_index == container.streams.best("audio").index == 4
    assert (info.width, info.height, info.video_codec, info.audio_codec) == (480, 270, "h264", "aac")
    assert info.fps == pytest.approx(30000 / 1001)
    assert info.video_duration_s == pytest.approx(13.013, abs=1e-3)
    assert (info.n_video_streams, info.n_audio_streams, info.n_streams) == (2, 2, 6)


def test_decode_child_reads_the_chosen_streams():
    """Frames and audio come from streams 3 and 4 through the confined decode child: the audio
    is the 16 kHz track (closer to it than to the 8 kHz one, which has nothing above 4 kHz)."""
    with DecodePool(CONFIG, SPEC) as pool:
        result = pool.decode(DecodeJob("nasa", str(NASA)))
    assert (result.probe.video_stream_index, result.probe.audio_stream_index) == (3, 4)
    assert (result.probe.width, result.probe.height) == (480, 270)
    assert result.audio_s == pytest.approx(13.0, abs=0.2)
    wide, narrow = _stream_audio(NASA, 4), _stream_audio(NASA, 1)
    assert _distance(result.audio, wide) < 0.2 * _distance(result.audio, narrow)
    direct = decode_audio(str(NASA), CONFIG.limits)
    assert _distance(direct, wide) < 0.2 * _distance(direct, narrow)


def test_cover_art_is_never_the_video(tmp_path):
    """An MP4 whose first video stream is an attached picture (cover art, marked ``attached_pic``)
    decodes its real video stream."""
    path = tmp_path / "cover.mkv"
    with av.open(str(path), "w") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        real = out.add_stream("h264", rate=25)
        real.width, real.height, real.pix_fmt = 96, 80, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
        for packet in cover.encode(picture.reformat(format="yuvj420p")):
            out.mux(packet)
        for packet in cover.encode(None):
            out.mux(packet)
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((80, 96, 3), i * 8, np.uint8), format="rgb24")
            for packet in real.encode(frame):
                out.mux(packet)
        for packet in real.encode(None):
            out.mux(packet)
    info = probe(str(path))
    assert info.video_stream_index == 1
    assert (info.width, info.height, info.n_video_streams) == (96, 80, 2)
