"""Motion (``extract.media.pace``) through the confined decode children, on real peer media: a still
slideshow, a face close-up and a handheld action clip order as expected; a codec without motion
vectors (AV1) falls back to frame differences and says so."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from extract.config import Config
from extract.media.pace import FRAME_DIFFERENCE, MOTION_VECTORS, difference_motion, median, vector_motion
from extract.tools.samples import read_frames, write_frames
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.decode import DecodeStage

PEER = REPO.parent / "shared" / "peer-media"
CONFIG = Config().replace(**{"models.clip.pretrained": None, "runtime.device": "cpu", "ocr.enabled": False,
                             "output.thumbnails": 0, "signals.shots": False})


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    if not PEER.is_dir():
        pytest.skip(f"{PEER} missing (the shared peer media)")
    folder = tmp_path_factory.mktemp("motion")
    # Four stills from different real clips, each held 1.5 s: a slideshow.
    stills = [read_frames(PEER / name, 1.0, 1, 320, 180)[0] for name in
              ("decord-flipping_a_pancake.mkv", "mmaction2-test_mp4.mp4", "torchcodec-nasa_13013.mp4",
               "mmaction2-test_avi.avi")]
    slideshow = write_frames(folder / "slideshow.mp4", np.repeat(np.stack(stills), 38, axis=0), 25.0)
    rows = [{"video_id": "slideshow", "uri": str(slideshow)},
            {"video_id": "face", "uri": str(PEER / "mmaction2-test_avi.avi")},  # a face close-up, a hand moving
            {"video_id": "action", "uri": str(PEER / "decord-flipping_a_pancake.mkv")},  # handheld, flipping
            {"video_id": "av1", "uri": str(PEER / "torchcodec-av1_video.mkv")}]
    stage = DecodeStage(CONFIG)
    try:
        return {row["video_id"]: row for row in batch_to_rows(stage(rows_to_batch(rows)))}
    finally:
        stage.close()


def test_motion_orders_slideshow_face_action(decoded):
    scores = {name: decoded[name]["motion_score"] for name in ("slideshow", "face", "action")}
    assert all(decoded[name]["motion_source"] == MOTION_VECTORS for name in scores), decoded
    assert scores["slideshow"] < 0.002 < scores["face"] < scores["action"], scores


def test_a_codec_without_motion_vectors_uses_frame_differences(decoded):
    av1 = decoded["av1"]
    assert av1["motion_source"] == FRAME_DIFFERENCE and av1["motion_score"] > 0


def test_motion_off_leaves_the_columns_null(tmp_path):
    clip = write_frames(tmp_path / "a.mp4", read_frames(PEER / "decord-flipping_a_pancake.mkv", 0.0, 20, 160, 90), 25.0)
    stage = DecodeStage(CONFIG.replace(**{"signals.motion": False}))
    try:
        (row,) = batch_to_rows(stage(rows_to_batch([{"video_id": "a", "uri": str(clip)}])))
    finally:
        stage.close()
    assert row.get("error_stage") is None and row["n_frames"] > 0 and row["motion_score"] is None and row["motion_source"] is None


def test_vector_motion_weights_blocks_by_area():
    dtype = np.dtype([("source", "<i4"), ("w", "u1"), ("h", "u1"), ("src_x", "<i2"), ("src_y", "<i2"),
                      ("dst_x", "<i2"), ("dst_y", "<i2"), ("flags", "<u8"), ("motion_x", "<i4"),
                      ("motion_y", "<i4"), ("motion_scale", "<u2")])
    vectors = np.zeros(2, dtype)
    vectors["w"], vectors["h"], vectors["motion_scale"] = (16, 8), (16, 8), 4
    vectors["motion_x"] = (40, 0)  # 10 px on a 16x16 block, 0 on an 8x8 one
    assert vector_motion(vectors, 100) == pytest.approx(10 * 256 / (256 + 64) / 100)
    assert vector_motion(vectors[:0], 100) is None


def test_difference_motion_and_median():
    grey = np.zeros((3, 4, 4), np.uint8)
    grey[1] = 255
    assert list(difference_motion(grey)) == [1.0, 1.0]
    assert median([3, 1, 2]) == 2 and median([1, 2, 3, 4]) == 2.5


@pytest.mark.parametrize("name", ["decord-flipping_a_pancake.mkv", "mmaction2-test_avi.avi"])
def test_motion_comes_from_the_sampling_pass_without_a_pace_pass(name, monkeypatch):
    """With shots off, the CLIP sampling pass reads the P frames' vectors on the way: the same
    score as the every-frame pass (it decodes the same P frames), and no second pass runs."""
    from extract.media import video
    from extract.media.probe import open_input, probe
    from extract.media.limits import Deadline
    from extract.models.preprocess import PreprocessSpec
    from extract.media.pace import read_pace

    path = str(PEER / name)
    info = probe(path)
    with open_input(path, CONFIG.limits, 1, export_motion_vectors=True) as container:
        reader = video.VideoReader(container, info, Deadline(60, path), skip_nonref=False,
                                   max_pixels=CONFIG.limits.max_pixels)
        full = read_pace(reader, True, False, info.fps)
    passes = []
    monkeypatch.setattr(video, "pace_pass", lambda *a, **k: passes.append(a) or full)
    spec = PreprocessSpec(224, "bicubic", "shortest", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = video.decode_video(path, CONFIG.replace(**{"runtime.decode_threads": 1}), spec, audio=False)
    assert passes == [] and out.pace.motion_source == MOTION_VECTORS
    assert out.pace.motion_score == pytest.approx(full.motion_score, rel=0.05)
    assert out.pace.frames_read < full.frames_read  # the sampling pass drops non-reference frames


def test_motion_alone_decodes_only_reference_frames_in_its_own_pass(tmp_path, monkeypatch):
    """A key frame every second and one CLIP frame a second: the sampling pass seeks from key frame to
    key frame and decodes no P frame, so motion takes its own pass, which skips the B frames (they carry
    no counted vectors): the same score as decoding every frame, from fewer frames."""
    from extract.media import video
    from extract.media.limits import Deadline
    from extract.media.pace import read_pace
    from extract.media.probe import open_input, probe
    from extract.models.preprocess import PreprocessSpec

    frames = read_frames(PEER / "decord-flipping_a_pancake.mkv", 0.0, 150, 320, 180)
    clip = str(write_frames(tmp_path / "gop25.mp4", frames, 25.0, gop=25))
    info = probe(clip)
    with open_input(clip, CONFIG.limits, 1, export_motion_vectors=True) as container:
        full = read_pace(video.VideoReader(container, info, Deadline(60, clip), skip_nonref=False,
                                           max_pixels=CONFIG.limits.max_pixels), True, False, info.fps)
    spec = PreprocessSpec(224, "bicubic", "shortest", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = video.decode_video(clip, CONFIG.replace(**{"runtime.decode_threads": 1}), spec, audio=False)
    assert out.stats.seeks > 0 and out.pace.motion_source == MOTION_VECTORS
    assert out.pace.motion_score == pytest.approx(full.motion_score, rel=1e-6)
    assert out.pace.frames_read < full.frames_read == len(frames)
