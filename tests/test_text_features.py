"""Text features (extract.text.features) with a deterministic bag-of-words text encoder."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from extract.config import Config
from extract.rows import mark_failed
from extract.tables.schemas import get_table_schema
from extract.text.captions import tag_id
from extract.text.features import EMBEDDING_COLUMNS, TEXT_FEATURE_COLUMNS, add_text_features, cosine_similarity

DIM = 64
CONTEXT_WORDS = 12  # the fake encoder "truncates" texts longer than this many words


def word_vector(text: str) -> np.ndarray:
    """Hashed bag of words, L2-normalised: texts sharing words have positive cosine."""
    vec = np.zeros(DIM, dtype=np.float64)
    words = re.findall(r"\w+", text.lower()) or [text]
    for word in words[:CONTEXT_WORDS]:
        slot = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % DIM
        vec[slot] += 1.0
    return (vec / np.linalg.norm(vec)).astype(np.float32)


class FakeEncoder:
    """Records every call; returns ``(embeddings (n, DIM) float32, truncated (n,) bool)``."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(list(texts))
        embeddings = np.stack([word_vector(t) for t in texts])
        truncated = np.array([len(re.findall(r"\w+", t)) > CONTEXT_WORDS for t in texts])
        return embeddings, truncated


def make_row(video_id: str, caption: str | None, transcript: str = "",
             frames_text: str | None = "dog") -> dict:
    clip = word_vector(frames_text) if frames_text is not None else np.zeros(0, np.float32)
    return {"video_id": video_id, "caption": caption, "transcript_text": transcript,
            "clip_embedding": clip, "error_stage": None}


@pytest.fixture
def config() -> Config:
    return Config()


def run(rows, config, encoder=None):
    encoder = encoder or FakeEncoder()
    add_text_features(rows, encoder, config)
    return encoder


def test_counts_tags_ids_and_json(config):
    row = make_row("v1", "Walk with @ana 🐕 #Dog #dog #PuppyLove https://x.com/a#frag",
                   transcript="my puppy love is this dog")
    run([row], config)
    assert (row["n_hashtags"], row["n_mentions"], row["n_urls"], row["n_emoji"]) == (3, 1, 1, 1)
    assert row["caption_length"] == len(row["caption"])
    assert row["hashtags"] == ["dog", "puppylove"]
    assert row["hashtag_ids"] == [tag_id("dog"), tag_id("puppylove")]
    records = json.loads(row["hashtags_json"])
    table_columns = set(get_table_schema("hashtags").column_names) - {"video_id", "run_id"}
    assert all(set(r) == table_columns for r in records)
    assert [(r["position"], r["raw"], r["tag"], r["source"]) for r in records] == [
        (0, "Dog", "dog", "caption"), (1, "dog", "dog", "caption"),
        (2, "PuppyLove", "puppylove", "caption")]
    assert [r["tag_id"] for r in records] == [tag_id("dog")] * 2 + [tag_id("puppylove")]
    assert [r["tag_in_transcript"] for r in records] == [True, True, True]
    assert records[0]["frame_similarity"] == records[1]["frame_similarity"]


def test_one_encoder_call_with_deduplicated_texts(config):
    rows = [
        make_row("a", "Sunny beach #beach #sun", transcript="waves"),
        make_row("b", "Sunny beach #beach", transcript="waves"),
        make_row("c", None, transcript=""),
    ]
    encoder = run(rows, config)
    assert len(encoder.calls) == 1
    texts = encoder.calls[0]
    assert len(texts) == len(set(texts))
    assert set(texts) == {"Sunny beach", "a video about beach", "a video about sun", "waves"}


def test_prompts_use_the_tag_words_and_the_configured_template(config):
    cfg = config.replace(**{"text.hashtag_template": "a photo of {tag}."})
    encoder = run([make_row("a", "#NYCSubway #dog_life #NYCsubway")], cfg)
    assert encoder.calls == [["a photo of nyc subway.", "a photo of dog life."]]


def test_no_text_at_all_skips_the_encoder(config):
    rows = [make_row("a", None), make_row("b", "  \u200b \n"), make_row("c", "")]
    encoder = run(rows, config)
    assert encoder.calls == []
    for row in rows:
        for name in EMBEDDING_COLUMNS:
            assert row[name].shape == (0,) and row[name].dtype == np.float32
        assert row["hashtag_frame_similarity"] is None
        assert row["hashtags"] == [] and row["hashtag_ids"] == [] and row["hashtags_json"] == "[]"
        assert row["caption_truncated"] is False and row["transcript_truncated"] is False


def test_nulls_and_shapes(config):
    rows = [
        {**make_row("full", "Dogs playing #dog", transcript="look at the dog"), "ocr_text": ["DOG PARK"]},
        make_row("tags_only", "#dog #park"),
        make_row("no_caption", None, transcript="hello"),
        make_row("no_frames", "Dogs playing #dog", transcript="dog", frames_text=None),
    ]
    run(rows, config)
    full, tags_only, no_caption, no_frames = rows
    for name in EMBEDDING_COLUMNS:
        assert full[name].shape == (DIM,) and full[name].dtype == np.float32
        assert np.linalg.norm(full[name]) == pytest.approx(1.0, abs=1e-5)
    for name in ("hashtag_frame_similarity", "caption_frame_similarity", "transcript_frame_similarity",
                 "ocr_frame_similarity"):
        assert isinstance(full[name], float) and -1.0 <= full[name] <= 1.0
        assert no_frames[name] is None
    assert tags_only["caption_embedding"].shape == (0,) and tags_only["caption_frame_similarity"] is None
    assert tags_only["hashtags_embedding"].shape == (DIM,)
    assert tags_only["transcript_embedding"].shape == (0,) and tags_only["transcript_frame_similarity"] is None
    assert no_caption["hashtags_embedding"].shape == (0,) and no_caption["hashtag_frame_similarity"] is None
    assert no_caption["transcript_embedding"].shape == (DIM,)
    assert no_frames["caption_embedding"].shape == (DIM,)
    assert all(r["frame_similarity"] is None for r in json.loads(no_frames["hashtags_json"]))


def test_hashtags_embedding_is_the_renormalised_mean_of_tag_prompts(config):
    row = make_row("a", "#dog #cat #dog")
    run([row], config)
    mean = word_vector("a video about dog") + word_vector("a video about cat")  # unique tags
    np.testing.assert_allclose(row["hashtags_embedding"], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(row["caption_embedding"], np.zeros(0))


def test_matching_tag_scores_higher_than_unrelated_tag(config):
    row = make_row("a", "Good boy #dog #crypto #bitcoin", frames_text="dog")
    run([row], config)
    sims = {r["tag"]: r["frame_similarity"] for r in json.loads(row["hashtags_json"])}
    assert sims["dog"] > sims["crypto"] and sims["dog"] > sims["bitcoin"]
    matching, unrelated = make_row("m", "#dog #puppy"), make_row("u", "#crypto #stocks")
    run([matching, unrelated], config)
    assert matching["hashtag_frame_similarity"] > unrelated["hashtag_frame_similarity"]


def test_caption_and_transcript_similarities_follow_content(config):
    on_topic = make_row("a", "my dog", transcript="dog dog dog")
    off_topic = make_row("b", "stock market news", transcript="interest rates rise")
    run([on_topic, off_topic], config)
    assert on_topic["caption_frame_similarity"] > off_topic["caption_frame_similarity"]
    assert on_topic["transcript_frame_similarity"] > off_topic["transcript_frame_similarity"]


def test_truncation_flags(config):
    long_text = " ".join(f"w{i}" for i in range(CONTEXT_WORDS + 5))
    cfg = config.replace(**{"limits.max_caption_chars": 40})
    rows = [
        make_row("encoder_cut", long_text[:39], transcript=long_text),
        make_row("chars_cut", "short caption " + "x" * 100 + " #lost"),
        make_row("short", "short #tag", transcript="short"),
    ]
    run(rows, cfg)
    encoder_cut, chars_cut, short = rows
    assert encoder_cut["caption_truncated"] is True and encoder_cut["transcript_truncated"] is True
    assert chars_cut["caption_truncated"] is True
    assert len(chars_cut["caption"]) == 40 and chars_cut["hashtags"] == []  # the tag was cut off
    assert short["caption_truncated"] is False and short["transcript_truncated"] is False


def test_failed_rows_carry_the_same_columns(config):
    ok = make_row("ok", "Nice #dog", transcript="dog")
    failed = mark_failed(make_row("bad", "Nice #dog"), "decode", "DecodeError", "truncated file")
    failed.pop("clip_embedding")
    failed.pop("transcript_text")
    encoder = run([failed, ok], config)
    assert set(TEXT_FEATURE_COLUMNS) <= set(failed) and set(TEXT_FEATURE_COLUMNS) <= set(ok)
    for name in EMBEDDING_COLUMNS:
        assert isinstance(failed[name], np.ndarray)
        assert failed[name].shape == (0,) and failed[name].dtype == np.float32
    assert all(failed[name] is None for name in set(TEXT_FEATURE_COLUMNS) - set(EMBEDDING_COLUMNS))
    assert "Nice" in encoder.calls[0] and len(encoder.calls[0]) == 3  # only the healthy row's texts


def test_untrusted_caption_is_bounded_by_the_char_limit(config):
    caption = "#a\x00" * 400_000 + "🔥\u200d" * 100_000
    row = make_row("big", caption)
    run([row], config)
    assert len(row["caption"]) == config.limits.max_caption_chars
    assert row["caption_truncated"] is True
    assert row["hashtags"] == ["a"] and row["n_hashtags"] == row["caption"].count("#a")


def test_bad_encoder_output_is_rejected(config):
    def wrong_count(texts):
        return np.zeros((len(texts) + 1, DIM), np.float32), np.zeros(len(texts) + 1, bool)

    with pytest.raises(ValueError, match="expected"):
        add_text_features([make_row("a", "caption")], wrong_count, config)


def test_cosine_similarity():
    a, b = np.array([1.0, 0.0], np.float32), np.array([1.0, 1.0], np.float32)
    assert cosine_similarity(a, b) == pytest.approx(2 ** -0.5)
    assert cosine_similarity(a, np.zeros(0, np.float32)) is None
    assert cosine_similarity(a, np.zeros(2, np.float32)) is None
    with pytest.raises(ValueError, match="same CLIP model"):
        cosine_similarity(a, np.ones(3, np.float32))


def test_a_row_that_breaks_fails_alone(config):
    good = make_row("good", "Nice #dog", transcript="dog")
    wrong_dim = make_row("wrong_dim", "Nice #dog")
    wrong_dim["clip_embedding"] = np.ones(DIM + 1, np.float32)  # not from this CLIP model
    not_text = make_row("not_text", "Nice #dog")
    not_text["caption"] = 12345  # a manifest value that is not a string
    run([good, wrong_dim, not_text], config)
    assert good["error_stage"] is None and good["hashtags"] == ["dog"]
    for row in (wrong_dim, not_text):
        assert row["error_stage"] == "text" and row["retryable"] is True
        assert row["hashtags"] is None and row["caption_embedding"].shape == (0,)
    assert "same CLIP model" in wrong_dim["error_message"]


def test_on_screen_text_is_embedded_beside_caption_and_transcript(config):
    rows = [make_row("a", "beach day #sun"), make_row("b", "nothing on screen")]
    rows[0]["ocr_text"] = np.array(["SUMMER SALE", "50% OFF"], dtype=object)  # as a Ray batch returns it
    rows[1]["ocr_text"] = []
    encoder = run(rows, config)
    assert "SUMMER SALE 50% OFF" in encoder.calls[0]
    np.testing.assert_allclose(rows[0]["ocr_embedding"], word_vector("SUMMER SALE 50% OFF"), atol=1e-6)
    assert rows[0]["ocr_frame_similarity"] == pytest.approx(
        float(word_vector("SUMMER SALE 50% OFF") @ rows[0]["clip_embedding"]), abs=1e-6)
    assert rows[1]["ocr_embedding"].shape == (0,) and rows[1]["ocr_frame_similarity"] is None
