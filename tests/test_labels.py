"""Zero-shot labels on the tiny CLIP model: prompt ensembling, softmax over the set, top label,
the label file and the hash that enters the feature hash. (Random weights: mechanics only.)"""

from __future__ import annotations

import numpy as np
import pytest

from extract.config import ClipModelConfig
from extract.models.labels import (DEFAULT_LABEL_FILE, LabelMatrix, embed_label_sets, label_columns, label_scores,
                            label_sets_hash, load_label_file, logit_scale_of, parse_label_sets)

SETS = {"topic": {"prompts": {"food": ["a photo of food", "a video of someone cooking"],
                              "pets": ["a photo of a dog"], "news": ["a news broadcast", "a reporter", "a studio"]}}}


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from extract.models.clip import ClipEmbedder
    from extract.tools.tiny import make_tiny_clip

    keys = make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))["models"]["clip"]
    return ClipEmbedder(ClipModelConfig(**keys), device="cpu")


def test_prompt_ensemble_is_the_renormalised_mean(embedder):
    sets = parse_label_sets(SETS)
    matrix = embed_label_sets(embedder.encode_texts, sets)["topic"]
    assert matrix.labels == ("food", "pets", "news") and matrix.matrix.shape == (3, embedder.embed_dim)
    for label, prompts, row in zip(matrix.labels, sets["topic"].prompts, matrix.matrix):
        emb, _ = embedder.encode_texts(list(prompts))
        mean = emb.mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-5, err_msg=label)
    np.testing.assert_allclose(np.linalg.norm(matrix.matrix, axis=1), 1.0, atol=1e-5)


def test_softmax_over_the_set_and_top_label(embedder):
    matrix = embed_label_sets(embedder.encode_texts, parse_label_sets(SETS))["topic"]
    scale = logit_scale_of(embedder.model)
    assert scale == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's initial temperature
    frames = embedder.embed_frames([np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)], 8)[0]
    scores = label_scores(frames, matrix, scale)
    np.testing.assert_allclose(scores.per_frame.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(scores.mean, scores.per_frame.mean(axis=0), atol=1e-7)
    assert np.all(scores.max >= scores.mean)
    # Constructed case: frames that are the "news" label's own direction (plus noise) pick news.
    noise = np.random.default_rng(1).normal(0, 0.05, (4, matrix.matrix.shape[1])).astype(np.float32)
    news_frames = matrix.matrix[2] + noise
    news_frames /= np.linalg.norm(news_frames, axis=1, keepdims=True)
    picked = label_scores(news_frames, matrix, 100.0)
    assert picked.top_label == "news" and picked.top_score == pytest.approx(float(picked.mean[2]))
    assert np.all(picked.per_frame.argmax(axis=1) == 2)
    # Hand computation of one frame's softmax.
    logits = 100.0 * matrix.matrix @ news_frames[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(picked.per_frame[0], expected, atol=1e-6)


def test_columns_and_no_frames():
    matrix = LabelMatrix("topic", ("a", "b"), np.eye(2, dtype=np.float32))
    row = label_columns(np.array([[1, 0]], np.float32), {"topic": matrix}, 10.0)
    assert row["top_topic"] == "a" and [k for k, _ in row["labels_topic"]] == ["a", "b"]
    assert sum(v for _, v in row["labels_topic"]) == pytest.approx(1.0)
    empty = label_columns(np.zeros((0, 2), np.float32), {"topic": matrix}, 10.0)
    assert empty == {"labels_topic": None, "labels_topic_max": None, "top_topic": None, "top_topic_score": None}


def test_hash_changes_with_any_prompt_and_templates_expand():
    base = label_sets_hash(parse_label_sets(SETS))
    changed = {"topic": {"prompts": dict(SETS["topic"]["prompts"], pets=["a photo of a cat"])}}
    assert label_sets_hash(parse_label_sets(changed)) != base
    assert label_sets_hash(parse_label_sets(SETS)) == base
    templated = parse_label_sets({"animals": {"labels": ["cat", "dog"], "templates": ["a photo of a {label}"]}})
    explicit = parse_label_sets({"animals": {"prompts": {"cat": ["a photo of a cat"], "dog": ["a photo of a dog"]}}})
    assert templated == explicit and label_sets_hash(templated) == label_sets_hash(explicit)


@pytest.mark.parametrize("data, key", [
    ({"Topic": {"prompts": {"a": ["x"], "b": ["y"]}}}, "labels.Topic"),
    ({"topic": {"prompts": {"a": ["x"]}}}, "labels.topic"),
    ({"topic": {"prompts": {"a": [], "b": ["y"]}}}, "labels.topic.prompts.a"),
    ({"topic": {"labels": ["a", "b"], "templates": ["no field"]}}, "labels.topic.templates"),
    ({"topic": {"prompts": {"a": ["x"], "b": ["y"]}, "templates": ["{label}"]}}, "labels.topic"),
])
def test_bad_label_sets_name_the_key(data, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        parse_label_sets(data)


def test_default_label_file(embedder):
    sets = load_label_file(DEFAULT_LABEL_FILE)
    assert list(sets) == ["topic", "safety"]
    assert sets["topic"].labels == ("food", "sports", "music", "pets", "travel", "comedy", "beauty", "gaming",
                                    "education", "news")
    assert set(sets["safety"].labels) == {"none", "violence", "weapons", "nudity", "drugs", "self_harm",
                                          "minors_at_risk"}
    assert all(len(p) >= 3 for s in sets.values() for p in s.prompts)
    matrices = embed_label_sets(embedder.encode_texts, sets)  # every prompt fits the context
    assert matrices["safety"].matrix.shape == (7, embedder.embed_dim)


def test_the_clip_stage_scores_the_configured_sets(tmp_path):
    """ClipStage embeds the label file once and adds each set's columns; a custom file and
    labels.enabled=false change what it writes, and the label file enters the feature hash."""
    from extract.config import Config
    from extract.tools.tiny import make_tiny_clip
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.clip import ClipStage

    keys = make_tiny_clip(tmp_path / "tiny")["models"]["clip"]
    config = Config().replace(**{f"models.clip.{k}": v for k, v in keys.items()}, **{"runtime.device": "cpu"})
    stage = ClipStage(config)
    rng = np.random.default_rng(1)
    rows = [{"video_id": "a", "frames": rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), "caption": None,
             "transcript_text": "", "error_stage": None},
            {"video_id": "none", "frames": np.zeros((0, 64, 64, 3), np.uint8), "caption": None,
             "transcript_text": "", "error_stage": None}]
    a, empty = batch_to_rows(stage(rows_to_batch(rows)))
    topics = load_label_file()["topic"].labels
    scores = dict(a["labels_topic"])  # (label, score) pairs: an Arrow map<string, float32> value
    assert set(scores) == set(topics) and sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert a["top_topic"] in topics and a["top_topic_score"] == pytest.approx(max(scores.values()))
    assert set(dict(a["labels_safety_max"])) == set(load_label_file()["safety"].labels)
    assert empty["labels_topic"] is None and empty["top_topic"] is None

    custom = tmp_path / "labels.yaml"
    custom.write_text("labels:\n  topic:\n    prompts:\n      cats: [a photo of a cat]\n      cars: [a photo of a car]\n")
    assert config.replace(**{"labels.file": str(custom)}).feature_hash_of({}) != config.feature_hash_of({})
    (a,) = batch_to_rows(ClipStage(config.replace(**{"labels.file": str(custom)}))(rows_to_batch(rows[:1])))
    assert set(dict(a["labels_topic"])) == {"cats", "cars"} and "labels_safety" not in a
    (a,) = batch_to_rows(ClipStage(config.replace(**{"labels.enabled": False}))(rows_to_batch(rows[:1])))
    assert not any(key.startswith(("labels_", "top_")) for key in a)
