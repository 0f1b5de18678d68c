"""Sampling policies and the seek plan: pure functions, exact expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extract.config import SamplingConfig
from extract.media.sampling import (
    KeyFrame,
    SceneDetector,
    histogram_distance,
    keyframe_targets,
    luma_histogram,
    plan_seeks,
    sample_timestamps,
    seek_pays,
    spread_indices,
    uniform_timestamps,
)


@pytest.mark.parametrize("duration, expected", [
    (4.0, [0, 1, 2, 3]),  # 4 s at 1 fps: exactly min_frames
    (4.5, [0, 1, 2, 3, 4]),  # ceil: a partial second still gets its frame
    (10.0, list(range(10))),
    (3.0, [0, 0.75, 1.5, 2.25]),  # short clip: min_frames spread evenly
    (0.4, [0, 0.1, 0.2, 0.3]),
    (60.0, [i * 60 / 32 for i in range(32)]),  # cap binds: 32 spread over the whole video
    (32.0, list(range(32))),
    (32.5, [i * 32.5 / 32 for i in range(32)]),
])
def test_uniform_default_policy(duration, expected):
    np.testing.assert_allclose(sample_timestamps(duration, SamplingConfig()), expected, atol=1e-12)


def test_uniform_other_rates_and_unknown_duration():
    np.testing.assert_allclose(uniform_timestamps(5.0, 2.0, 4, 32), np.arange(10) / 2)
    np.testing.assert_allclose(uniform_timestamps(5.0, 0.5, 1, 32), [0, 2, 4])
    np.testing.assert_array_equal(uniform_timestamps(0.0, 1.0, 4, 32), np.zeros(4))


@settings(max_examples=300, deadline=None)
@given(duration=st.floats(0.01, 7200), fps=st.floats(0.05, 30), min_frames=st.integers(1, 16),
       extra=st.integers(0, 64))
def test_uniform_properties(duration, fps, min_frames, extra):
    max_frames = min_frames + extra
    times = uniform_timestamps(duration, fps, min_frames, max_frames)
    wanted = math.ceil(duration * fps - 1e-6)
    assert len(times) == min(max(wanted, min_frames), max_frames)
    assert times[0] == 0 and np.all(times < duration) and np.all(np.diff(times) > 0)
    steps = np.diff(times)
    if len(times) == wanted:
        np.testing.assert_allclose(steps, 1 / fps, rtol=1e-9)
    elif len(times) > 1:
        np.testing.assert_allclose(steps, duration / len(times), rtol=1e-9)


def test_spread_indices():
    np.testing.assert_array_equal(spread_indices(5, 8), np.arange(5))
    np.testing.assert_array_equal(spread_indices(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(spread_indices(60, 32)[:4], [0, 1, 3, 5])


@given(n=st.integers(0, 5000), cap=st.integers(1, 64))
def test_spread_indices_properties(n, cap):
    idx = spread_indices(n, cap)
    assert len(idx) == min(n, cap)
    if n:
        assert idx[0] == 0 and idx[-1] < n and np.all(np.diff(idx) > 0)


def test_keyframe_targets_capped_evenly():
    kfs = np.arange(60) * 2.0
    np.testing.assert_array_equal(keyframe_targets(kfs, 32), kfs[spread_indices(60, 32)])
    np.testing.assert_array_equal(keyframe_targets([0.0, 4.0], 32), [0.0, 4.0])


def _keyframes(interval_s: float, duration_s: float) -> list[KeyFrame]:
    return [KeyFrame(t, int(t * 1000)) for t in np.arange(0, duration_s, interval_s)]


def test_plan_seeks_sparse_targets_seek_to_the_keyframe_before_each():
    targets = np.arange(0, 60, 10.0) + 3.0  # 3, 13, ..., 53
    plan = plan_seeks(targets, _keyframes(2.0, 60), min_skip_s=0.4)
    assert [k.time_s if k else None for k in plan] == [2.0, 12.0, 22.0, 32.0, 42.0, 52.0]


def test_plan_seeks_dense_targets_read_sequentially_within_a_gop():
    targets = np.arange(0, 30, 0.5)
    plan = plan_seeks(targets, _keyframes(10.0, 30), min_skip_s=0.4)
    sought = {i: k.time_s for i, k in enumerate(plan) if k}
    assert sought == {20: 10.0, 40: 20.0}  # only where a new GOP starts past the position


def test_plan_seeks_decides_from_the_keyframe_interval():
    targets = np.arange(32) * 60 / 32  # default policy on a 60 s video
    short_gop = plan_seeks(targets, _keyframes(1.0, 60), min_skip_s=4 / 30)
    long_gop = plan_seeks(targets, _keyframes(60.0, 60), min_skip_s=4 / 30)
    assert sum(k is not None for k in short_gop) == 31
    assert all(k is None for k in long_gop)
    assert all(k is None for k in plan_seeks(targets, None, 0.1))  # no index: sequential


def test_plan_seeks_skips_seeks_cheaper_to_decode_through():
    targets = [0.0, 1.0, 2.0]
    assert all(k is None for k in plan_seeks(targets, _keyframes(1.0, 3), min_skip_s=1.5))


def test_luma_histogram_and_distance():
    dark = np.zeros((36, 64), np.uint8)
    bright = np.full((36, 64), 255, np.uint8)
    half = np.concatenate([dark[:18], bright[:18]])
    assert luma_histogram(dark).sum() == pytest.approx(1.0)
    assert histogram_distance(luma_histogram(dark), luma_histogram(dark)) == 0.0
    assert histogram_distance(luma_histogram(dark), luma_histogram(bright)) == pytest.approx(1.0)
    assert histogram_distance(luma_histogram(dark), luma_histogram(half)) == pytest.approx(0.5)


def test_scene_detector_marks_first_frame_and_cuts_only():
    rng = np.random.default_rng(0)
    shot_a = [rng.integers(0, 100, (36, 64), dtype=np.uint8) for _ in range(3)]
    shot_b = [rng.integers(150, 255, (36, 64), dtype=np.uint8) for _ in range(3)]
    detector = SceneDetector(threshold=0.3)
    assert [detector.update(f) for f in shot_a + shot_b] == [True, False, False, True, False, False]


def test_seek_pays_only_past_the_read_position_by_more_than_a_seek():
    assert seek_pays(2.0, 1.0, min_skip_s=0.5)
    assert not seek_pays(1.4, 1.0, min_skip_s=0.5)  # skips less than the seek costs
    assert not seek_pays(1.0, 1.0, min_skip_s=0.0)  # already read: a seek would decode it again
    assert not seek_pays(0.5, 1.0, min_skip_s=0.0)  # behind the read position
