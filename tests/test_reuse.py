"""A rerun skips on the input's identity; identical bytes reuse committed features, never decoded twice.

The stages are the real ones (tiny models, real decode children) run in this process by an
executor that records what the decode stage produced for each row, so a test can tell a
decoded row (``n_frames`` set) from a reused one (``reused_from`` set, nothing decoded).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import REPO

from extract.config import load_config
from extract.pipeline.job import run_job
from extract.pipeline.executor import Backend
from extract.pipeline.ray_backend import TimedStage
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.registry import stage_classes
from extract.tables.catalog import Catalog
from extract.tables.planning import plan_run, same_input

LOCAL_YAML = REPO / "jobs" / "configs" / "local.yaml"


class LocalStages:
    """The stages built once, run in order in this process; ``decoded`` maps each row the
    decode stage saw (per run) to ``(n_frames, reused_from)``."""

    def __init__(self, config):
        self.stages = [TimedStage(cls, name, config) for name, cls in stage_classes().items()]
        self.decoded: dict[str, tuple] = {}

    def execute(self, rows, config, stages=None):
        self.decoded = {}

        def batches():
            for start in range(0, len(rows), 2):
                batch = rows_to_batch([dict(r) for r in rows[start:start + 2]])
                for stage in self.stages:
                    batch = stage(batch)
                    if stage.name == "decode":
                        for row in batch_to_rows(batch):
                            self.decoded[row["video_id"]] = (row.get("n_frames"), row.get("reused_from"))
                yield batch

        return batches(), {"local": True}

    def close(self):
        self.stages[0].stage.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_samples, tiny_config):
    d = tmp_path_factory.mktemp("reuse")
    clips = d / "clips"
    clips.mkdir()
    for name in ("beach_day", "portrait_dance"):
        shutil.copy(small_samples.parent / f"{name}.mp4", clips / f"{name}.mp4")
    config = load_config([LOCAL_YAML, tiny_config], ["limits.max_error_rate=1.0"])
    stages = LocalStages(config)
    yield d, clips, config, stages
    stages.close()


def _manifest(clips: Path, records: list[dict]) -> str:
    path = clips / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _run(src, dst, config, stages, **kw):
    return run_job(src, str(dst), config, progress=False, backend=Backend(stages.execute), **kw)


def _frames(catalog: Catalog, vid: str) -> np.ndarray:
    data = catalog.read("frame_embeddings", ["frame_index", "embedding", "phash"], pc.field("video_id") == vid)
    data = data.sort_by("frame_index")
    return np.asarray(data["embedding"].to_pylist(), np.float32), data["phash"].to_pylist()


def _video(catalog: Catalog, vid: str) -> dict:
    rows = catalog.read("videos", None, pc.field("video_id") == vid).to_pylist()
    assert len(rows) == 1, f"{vid}: {len(rows)} videos rows"
    return rows[0]


def test_identity_skip_touch_copy_and_new_bytes(setup):
    d, clips, config, stages = setup
    dst = d / "out"
    base = [{"video_id": "beach", "uri": "beach_day.mp4", "caption": "sunny #beach"},
            {"video_id": "dance", "uri": "portrait_dance.mp4", "caption": "moves #dance"}]
    src = _manifest(clips, base)

    first = _run(src, dst, config, stages)
    assert first["counts"]["ok"] == 2 and first["counts"]["reused"] == 0
    assert first["counts"]["processed_by_reason"] == {"new": 2}
    assert all(n and reused is None for n, reused in stages.decoded.values())
    original = _video(Catalog(str(dst)), "beach")
    assert original["source_bytes"] == os.path.getsize(clips / "beach_day.mp4")
    assert original["source_mtime"] is not None and original["reused_from"] is None

    # Same listing, same features: nothing is fetched or decoded.
    again = _run(src, dst, config, stages)
    assert again["counts"]["processed"] == 0 and again["counts"]["skipped_by_reason"] == {"already_committed": 2}

    # Touched (new mtime, same bytes): the listing changed, the bytes decide; nothing decoded.
    st = os.stat(clips / "beach_day.mp4")
    os.utime(clips / "beach_day.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    touched = _run(src, dst, config, stages)
    assert touched["counts"]["processed_by_reason"] == {"input_changed": 1}
    assert touched["counts"]["reused"] == 1 and stages.decoded == {"beach": (None, "beach")}
    catalog = Catalog(str(dst))
    now = _video(catalog, "beach")
    assert now["source_mtime"] != original["source_mtime"] and now["run_id"] == touched["run_id"]
    np.testing.assert_array_equal(np.asarray(now["clip_embedding"]), np.asarray(original["clip_embedding"]))
    assert _run(src, dst, config, stages)["counts"]["processed"] == 0  # the new listing is the committed one

    # Identical bytes under a new id with its own caption: the features are copied, the caption's are its own.
    shutil.copy(clips / "portrait_dance.mp4", clips / "repost.mp4")
    src = _manifest(clips, base + [{"video_id": "repost", "uri": "repost.mp4", "caption": "look at this #cats #fun"}])
    repost_run = _run(src, dst, config, stages)
    assert repost_run["counts"]["processed_by_reason"] == {"new": 1} and repost_run["counts"]["reused"] == 1
    assert stages.decoded == {"repost": (None, "dance")}
    catalog = Catalog(str(dst))
    dance, repost = _video(catalog, "dance"), _video(catalog, "repost")
    assert repost["reused_from"] == "dance" and repost["content_sha256"] == dance["content_sha256"]
    for column in ("n_frames", "duration_s", "video_codec", "transcript_text", "n_segments", "audio_kind",
                   "top_topic", "clip_model", "whisper_model"):
        assert repost[column] == dance[column], column
    np.testing.assert_array_equal(np.asarray(repost["clip_embedding"]), np.asarray(dance["clip_embedding"]))
    emb_dance, phash_dance = _frames(catalog, "dance")
    emb_repost, phash_repost = _frames(catalog, "repost")
    np.testing.assert_array_equal(emb_repost, emb_dance)
    assert phash_repost == phash_dance and len(phash_dance) == dance["n_frames"]
    assert repost["caption"] == "look at this #cats #fun" and repost["hashtags"] == ["cats", "fun"]
    tags = catalog.read("hashtags", ["tag"], pc.field("video_id") == "repost")["tag"].to_pylist()
    assert sorted(tags) == ["cats", "fun"]
    caption = np.asarray(repost["caption_embedding"], np.float64)
    assert not np.allclose(caption, np.asarray(dance["caption_embedding"], np.float64))
    clip = np.asarray(repost["clip_embedding"], np.float64)
    expected = float(caption @ clip / (np.linalg.norm(caption) * np.linalg.norm(clip)))
    assert repost["caption_frame_similarity"] == pytest.approx(expected, abs=1e-5)
    segments = catalog.read("transcript_segments", ["video_id"], pc.field("video_id").isin(["dance", "repost"]))
    counts = {vid: segments["video_id"].to_pylist().count(vid) for vid in ("dance", "repost")}
    assert counts["dance"] == counts["repost"] == dance["n_segments"]

    # New bytes under an existing id: computed again, one row per id.
    shutil.copy(clips / "beach_day.mp4", clips / "portrait_dance.mp4")
    changed = _run(src, dst, config, stages)
    assert changed["counts"]["processed_by_reason"] == {"input_changed": 1}
    n_frames, reused = stages.decoded["dance"]
    assert reused == "beach" and n_frames is None  # those bytes are beach's now: reused from beach
    catalog = Catalog(str(dst))
    assert _video(catalog, "dance")["content_sha256"] == _video(catalog, "beach")["content_sha256"]
    ids = catalog.read("videos", ["video_id"])["video_id"].to_pylist()
    assert sorted(ids) == ["beach", "dance", "repost"]


def test_changed_features_and_overwrite_decode_again(setup, tmp_path):
    d, clips, config, stages = setup
    dst = tmp_path / "out"
    shutil.copy(clips / "beach_day.mp4", tmp_path / "a.mp4")
    src = str(tmp_path / "m.jsonl")
    Path(src).write_text(json.dumps({"video_id": "a", "uri": "a.mp4"}) + "\n")
    _run(src, dst, config, stages)
    forced = _run(src, dst, config, stages, overwrite=True)
    assert forced["counts"]["reused"] == 0 and stages.decoded["a"][0]
    other = config.replace(**{"sampling.max_frames": 6})
    assert other.feature_hash_of({}) != config.feature_hash_of({})
    recomputed = _run(src, dst, other, stages)
    assert recomputed["counts"]["processed_by_reason"] == {"features_changed": 1}
    assert recomputed["counts"]["reused"] == 0 and stages.decoded["a"][0]  # decoded (the stages' own config)
    # A copy under a new id, with input.reuse_days 0: only a row's own committed version is
    # reused, so the copy is decoded.
    shutil.copy(tmp_path / "a.mp4", tmp_path / "b.mp4")
    Path(src).write_text("".join(json.dumps({"video_id": v, "uri": f"{v}.mp4"}) + "\n" for v in "ab"))
    window = other.replace(**{"input.reuse_days": 0})
    assert window.feature_hash_of({}) == other.feature_hash_of({})
    no_window = _run(src, dst, window, stages)
    assert no_window["counts"]["processed_by_reason"] == {"new": 1} and no_window["counts"]["reused"] == 0
    assert stages.decoded["b"][0] and stages.decoded["b"][1] is None


def test_plan_identity_rules():
    from datetime import datetime, timezone

    when = datetime(2026, 12, 1, tzinfo=timezone.utc)
    row = {"video_id": "v", "uri": "v.mp4", "error_stage": None, "source_bytes": 10,
           "source_mtime": "2026-12-01T00:00:00Z"}
    ok = {"status": "ok", "feature_hash": "f", "source_bytes": 10, "source_mtime": when}
    assert same_input(row, ok)
    assert not same_input({**row, "source_bytes": 11}, ok)
    assert not same_input({**row, "source_mtime": None}, ok)  # unknown: the bytes decide
    assert not same_input(row, {**ok, "source_mtime": None})
    plan = plan_run([row], {"v": ok}, "f")
    assert not plan.todo and plan.skipped == {"already_committed": 1}
    plan = plan_run([{**row, "source_bytes": 11}], {"v": ok}, "f")
    assert len(plan.todo) == 1 and plan.why == {"input_changed": 1}
    error = {"status": "error", "retryable": False, "source_bytes": 10, "source_mtime": when}
    assert plan_run([row], {"v": error}, "f").skipped == {"committed_error": 1}
    # An error whose input was replaced is tried again; one committed before identities were
    # recorded (no source_bytes) stays an error until --retry-errors.
    assert plan_run([{**row, "source_bytes": 11}], {"v": error}, "f").why == {"input_changed": 1}
    assert plan_run([{**row, "source_bytes": 11}], {"v": {**error, "source_bytes": None}}, "f").skipped == {
        "committed_error": 1}
