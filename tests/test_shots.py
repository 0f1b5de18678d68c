"""Shots with TransNetV2's real weights (``extract.models.shots``) on clips assembled from different
real peer-media clips: cuts are found within one frame, a long handheld take is one shot, and a
dissolve is one transition between two shots (fades: see ``extract.models.shots``). The 48x27 frames come from the decode
child's every-frame pass (``extract.media.pace``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from extract.config import Config
from extract.tools.samples import dissolve, read_frames, write_frames
from extract.models.shots import Shot, ShotDetector, pacing
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.decode import DecodeStage

PEER = REPO.parent / "shared" / "peer-media"
FPS = 25.0
CONFIG = Config().replace(**{"models.clip.pretrained": None, "runtime.device": "cpu", "ocr.enabled": False,
                             "output.thumbnails": 0, "signals.motion": False,
                             "signals.shots": True})  # off by default (CPU cost); the child's 48x27 frames
# (clip, start s, frames): four single-take pieces of different real videos
PIECES = (("decord-flipping_a_pancake.mkv", 1.0, 30), ("mmaction2-test_mp4.mp4", 0.5, 25),
          ("mmaction2-test_avi.avi", 0.0, 20), ("torchcodec-nasa_13013.mp4", 2.0, 20))


@pytest.fixture(scope="module")
def detector() -> ShotDetector:
    return ShotDetector("cpu")


@pytest.fixture(scope="module")
def pieces():
    if not PEER.is_dir():
        pytest.skip(f"{PEER} missing (the shared peer media)")
    return [read_frames(PEER / name, start, n, 320, 180) for name, start, n in PIECES]


def shot_frames(tmp_path, name: str, frames: np.ndarray):
    """Encode ``frames`` and decode them through the confined decode child: its shot frames and times."""
    clip = write_frames(tmp_path / f"{name}.mp4", frames, FPS)
    stage = DecodeStage(CONFIG)
    try:
        (row,) = batch_to_rows(stage(rows_to_batch([{"video_id": name, "uri": str(clip)}])))
    finally:
        stage.close()
    assert row["shot_frames"].shape == (len(frames), 27, 48, 3)
    return row["shot_frames"], row["shot_pts_s"]


def test_cuts_between_real_clips_are_found_within_one_frame(tmp_path, detector, pieces):
    frames, pts = shot_frames(tmp_path, "cuts", np.concatenate(pieces))
    shots = detector.detect(frames, pts)
    cuts_s = np.cumsum([len(p) for p in pieces])[:-1] / FPS
    assert len(shots) == len(pieces), shots
    for shot, cut_s in zip(shots[1:], cuts_s):
        assert abs(shot.start_s - cut_s) <= 1 / FPS + 1e-3, (shot, cut_s)
    for before, after in zip(shots, shots[1:]):
        assert before.end_s == pytest.approx(after.start_s, abs=1e-3)  # hard cuts: no frame in between


@pytest.mark.slow
def test_a_long_handheld_take_is_one_shot(tmp_path, detector):
    take = read_frames(PEER / "decord-flipping_a_pancake.mkv", 0.0, 150, 320, 180)
    frames, pts = shot_frames(tmp_path, "take", take)
    shots = detector.detect(frames, pts)
    assert len(shots) == 1 and shots[0].start_s == 0.0 and shots[0].end_s == pytest.approx(150 / FPS, abs=1e-3)


@pytest.mark.slow
def test_a_dissolve_is_one_transition(tmp_path, detector, pieces):
    a, b = pieces[0], pieces[1]
    middle = dissolve(a[-1], b[0], 25)  # one second cross-fade
    frames, pts = shot_frames(tmp_path, "dissolve", np.concatenate([a, middle, b]))
    shots = detector.detect(frames, pts)
    assert len(shots) == 2, shots
    start_s, end_s = len(a) / FPS, (len(a) + len(middle)) / FPS
    # the transition lies between the shots: the first ends in it, the second starts in it
    assert start_s - 1 / FPS <= shots[0].end_s <= shots[1].start_s <= end_s + 1 / FPS, shots


def test_pacing_columns():
    shots = [Shot(0.0, 2.0), Shot(2.0, 3.0), Shot(3.0, 6.0)]
    assert pacing(shots, 6.0) == {"shot_count": 3, "cuts_per_minute": 20.0, "mean_shot_s": 2.0}
    assert pacing([], 6.0) == {"shot_count": None, "cuts_per_minute": None, "mean_shot_s": None}


def test_shot_rows_become_the_shots_table():
    from datetime import datetime, timezone

    from extract.tables.records import TableContext, build_table, video_records

    ctx = TableContext("run-1", datetime.now(timezone.utc), "hash", 4)
    row = {"video_id": "v", "dt": "2026-01-02", "shots_json": '[{"start_s": 0.0, "end_s": 2.0}, '
                                                             '{"start_s": 2.0, "end_s": 3.5}]'}
    records = video_records(row, ctx)["shots"]
    assert [r["shot_index"] for r in records] == [0, 1] and records[1]["start_s"] == 2.0
    table = build_table(records, ctx.schema("shots"))
    assert table.num_rows == 2 and table.column("end_s").to_pylist() == [2.0, 3.5]
