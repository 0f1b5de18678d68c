"""Text features of a batch of videos: caption counts, hashtags, CLIP text embeddings, alignment.

``add_text_features`` runs inside the CLIP stage (which owns the text tower) after the frame
embeddings exist: it parses each caption (``extract.text.captions``), embeds the caption, one prompt
per hashtag and the transcript with a single ``encode_texts`` call per batch, and compares
them with the video's pooled frame embedding.

Using the similarities as mismatch / spam signals
-------------------------------------------------
All similarities are cosines between a CLIP text embedding and ``clip_embedding`` (the pooled
frames), so a text that describes what is on screen scores higher than one that does not:
``#puppy`` on a dog video beats ``#crypto`` on the same video. CLIP text-image cosines are
small and model dependent (roughly 0.1 to 0.35 for ViT-B-32), so compare them within one
``clip_model`` with percentiles or z-scores, never fixed thresholds:

- ``hashtag_frame_similarity`` in the bottom percentiles of its model: the tags as a whole do
  not describe the video (hashtag stuffing, trend-jacking).
- ``hashtags.frame_similarity`` per tag minus the video's best tag (``max(...) over
  (partition by video_id)``): a tag far below its siblings and with ``tag_in_transcript``
  false is probably unrelated to the video; generic tags (``#fyp``) sit in the middle.
- ``caption_frame_similarity`` low: caption/video mismatch (clickbait, copy-pasted captions).
- ``transcript_frame_similarity`` low: speech unrelated to the visuals (e.g. a voice-over ad);
  a weaker signal, since speech often talks about things that are not shown.

A null similarity means one side is missing (no caption text, no tags, no speech, no frames).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from extract.config import Config
from extract.rows import is_failed, mark_exception
from extract.text.captions import ParsedCaption, TranscriptMatcher, parse_caption, tag_id, tag_words
from extract.text.language import language_columns

EncodeTexts = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
"""``encode_texts(texts) -> (embeddings (n, D) float32, truncated (n,) bool)``: CLIP text
embeddings (L2-normalised) and whether each text was cut at the model's context length."""

STAGE = "text"  # errors.stage of a row whose text features failed
HASHTAG_SOURCE = "caption"
EMBEDDING_COLUMNS = ("caption_embedding", "hashtags_embedding", "transcript_embedding", "ocr_embedding")
TEXT_FEATURE_COLUMNS = (
    "caption_length", "n_hashtags", "n_mentions", "n_urls", "n_emoji", "hashtags", "hashtag_ids",
    "caption_embedding", "caption_truncated", "hashtags_embedding", "transcript_embedding",
    "transcript_truncated", "hashtag_frame_similarity", "caption_frame_similarity",
    "transcript_frame_similarity", "hashtags_json", "ocr_embedding", "ocr_frame_similarity",
    "caption_language", "caption_language_prob", "ocr_language", "ocr_language_prob",
)
DetectLanguage = Callable[[str], "tuple[str, float] | None"]
"""``detect(text) -> (ISO 639-1 code, confidence) | None`` (``extract.text.language.LanguageDetector.detect``)."""


def empty_embedding() -> np.ndarray:
    """The null embedding: ``(0,) float32`` (tensors are never None, see ``extract.rows``)."""
    return np.zeros(0, dtype=np.float32)


@dataclass
class _RowTexts:
    """What one row asks the text encoder for (indices into the batch's text list)."""

    parsed: ParsedCaption
    caption_cut: bool
    caption_index: int | None
    tag_indices: dict[str, int]  # normalised tag -> prompt index, in first-appearance order
    transcript: str
    transcript_index: int | None
    ocr: str
    ocr_index: int | None


def add_text_features(rows: list[dict[str, Any]], encode_texts: EncodeTexts, config: Config,
                      detect_language: DetectLanguage | None = None) -> None:
    """Add the text feature columns (``TEXT_FEATURE_COLUMNS``) to every row, in place.

    Reads ``caption`` (str or None; cut to ``limits.max_caption_chars`` characters, and the cut
    caption is written back so the stored caption is the one the features describe),
    ``transcript_text`` (str), ``ocr_text`` (list of on-screen lines, optional) and ``clip_embedding`` (``(D,)`` float32, ``(0,)`` without frames).

    Adds: counts ``caption_length``, ``n_hashtags`` (occurrences), ``n_mentions``, ``n_urls``,
    ``n_emoji`` (int); ``hashtags`` (normalised, unique, first-appearance order) and
    ``hashtag_ids`` (int64 ``tag_id`` of each); embeddings ``caption_embedding`` (caption with
    hashtags removed), ``hashtags_embedding`` (mean of the unique tags' prompt embeddings,
    re-normalised), ``transcript_embedding``, each ``(D,)`` float32 unit or ``(0,)`` when there
    is no such text; ``caption_truncated`` / ``transcript_truncated`` (the text was cut at the
    encoder's context length, or the caption at ``max_caption_chars``); cosines
    ``hashtag_frame_similarity``, ``caption_frame_similarity``, ``transcript_frame_similarity``
    (float, None when either side is null); ``hashtags_json``, a JSON list with one object per
    occurrence holding the ``hashtags`` table columns (position, raw, tag, tag_id, source,
    frame_similarity, tag_in_transcript); ``ocr_embedding`` (the on-screen lines joined by
    spaces, ``(0,)`` without any) and its cosine ``ocr_frame_similarity``; with ``detect_language``
    (``signals.language``), ``caption_language`` / ``ocr_language`` and their ``*_prob`` (the caption
    without hashtags, and the on-screen lines; None for too little text, ``extract.text.language``),
    else None.

    A tag's prompt is ``text.hashtag_template`` filled with the tag's words from its first
    occurrence (``#NYCSubway`` -> "a video about nyc subway"), which CLIP's tokenizer reads
    far better than the glued tag. Rows that already failed get every column set to its empty
    value (None; ``(0,)`` float32 embeddings); a row whose features raise is marked failed at
    stage ``text`` the same way. ``encode_texts`` is called once with the de-duplicated texts
    of all rows, or not at all when no row has any text; its errors (and wrong output shapes,
    a ``ValueError``) concern the whole batch and propagate.
    """
    texts: dict[str, int] = {}
    plans: list[_RowTexts | None] = []
    for row in rows:
        plan = None
        if not is_failed(row):
            try:
                plan = _plan_row(row, config, texts)
            except Exception as exc:  # one odd row fails itself, not the batch (extract.rows)
                mark_exception(row, STAGE, exc)
        plans.append(plan)
    embeddings, truncated = _encode(encode_texts, list(texts))
    for row, plan in zip(rows, plans):
        features = _empty_features()
        if plan is not None:
            try:
                clip_embedding = np.asarray(row.get("clip_embedding", empty_embedding()))
                features = _row_features(plan, clip_embedding, embeddings, truncated)
                if detect_language is not None:
                    features.update(language_columns("caption", detect_language(plan.parsed.text_without_hashtags)),
                                    **language_columns("ocr", detect_language(plan.ocr)))
            except Exception as exc:
                mark_exception(row, STAGE, exc)
        row.update(features)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine of two ``(D,)`` vectors; None when either is null (size 0) or all zeros."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        return None
    if a.size != b.size:
        raise ValueError(
            f"embedding sizes differ ({a.size} vs {b.size}): text and frame embeddings must come "
            "from the same CLIP model"
        )
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return None
    return float(np.clip(np.dot(a, b) / norm, -1.0, 1.0))


def _plan_row(row: dict[str, Any], config: Config, texts: dict[str, int]) -> _RowTexts:
    def index(text: str) -> int:
        return texts.setdefault(text, len(texts))

    caption = row.get("caption")
    limit = config.limits.max_caption_chars
    cut = caption is not None and len(caption) > limit
    if cut:
        caption = caption[:limit]
        row["caption"] = caption
    parsed = parse_caption(caption)
    tag_indices: dict[str, int] = {}
    for occurrence in parsed.hashtags:
        if occurrence.tag not in tag_indices:
            words = " ".join(tag_words(occurrence.raw)) or occurrence.tag
            tag_indices[occurrence.tag] = index(config.text.hashtag_template.format(tag=words))
    transcript = (row.get("transcript_text") or "").strip()
    lines = row.get("ocr_text")  # the video's on-screen lines in reading order (a list, or an array from Ray)
    ocr = " ".join(str(line) for line in (() if lines is None else lines)).strip()
    return _RowTexts(
        parsed=parsed,
        caption_cut=cut,
        caption_index=index(parsed.text_without_hashtags) if parsed.text_without_hashtags else None,
        tag_indices=tag_indices,
        transcript=transcript,
        transcript_index=index(transcript) if transcript else None,
        ocr=ocr,
        ocr_index=index(ocr) if ocr else None,
    )


def _encode(encode_texts: EncodeTexts, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One encoder call; checks shapes and L2-normalises the rows (zero rows stay zero)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool)
    embeddings, truncated = encode_texts(texts)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    truncated = np.asarray(truncated, dtype=bool).reshape(-1)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts) or truncated.shape[0] != len(texts):
        raise ValueError(
            f"encode_texts returned embeddings {embeddings.shape} and truncated {truncated.shape} "
            f"for {len(texts)} texts; expected ({len(texts)}, D) and ({len(texts)},)"
        )
    return _unit_rows(embeddings), truncated


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _row_features(plan: _RowTexts, clip_embedding: np.ndarray, embeddings: np.ndarray,
                  truncated: np.ndarray) -> dict[str, Any]:
    parsed = plan.parsed

    def embedding(index: int | None) -> np.ndarray:
        return embeddings[index].copy() if index is not None else empty_embedding()

    caption_embedding = embedding(plan.caption_index)
    transcript_embedding = embedding(plan.transcript_index)
    ocr_embedding = embedding(plan.ocr_index)
    hashtags_embedding = empty_embedding()
    if plan.tag_indices:
        mean = _unit_rows(embeddings[list(plan.tag_indices.values())].mean(axis=0, keepdims=True))[0]
        if np.any(mean):  # tag embeddings that cancel out exactly carry no direction
            hashtags_embedding = mean
    tag_similarity = {tag: cosine_similarity(embeddings[i], clip_embedding)
                      for tag, i in plan.tag_indices.items()}
    matcher = TranscriptMatcher(plan.transcript) if parsed.hashtags else None
    occurrences = [
        {
            "position": o.position, "raw": o.raw, "tag": o.tag, "tag_id": o.tag_id,
            "source": HASHTAG_SOURCE, "frame_similarity": tag_similarity[o.tag],
            "tag_in_transcript": matcher.contains_tag(o.raw),
        }
        for o in parsed.hashtags
    ]
    return {
        "caption_length": parsed.length,
        "n_hashtags": len(parsed.hashtags),
        "n_mentions": len(parsed.mentions),
        "n_urls": len(parsed.urls),
        "n_emoji": parsed.n_emoji,
        "hashtags": list(parsed.unique_tags),
        "hashtag_ids": [tag_id(tag) for tag in parsed.unique_tags],
        "caption_embedding": caption_embedding,
        "caption_truncated": plan.caption_cut or _flag(truncated, plan.caption_index),
        "hashtags_embedding": hashtags_embedding,
        "transcript_embedding": transcript_embedding,
        "transcript_truncated": _flag(truncated, plan.transcript_index),
        "hashtag_frame_similarity": cosine_similarity(hashtags_embedding, clip_embedding),
        "caption_frame_similarity": cosine_similarity(caption_embedding, clip_embedding),
        "transcript_frame_similarity": cosine_similarity(transcript_embedding, clip_embedding),
        "hashtags_json": json.dumps(occurrences, ensure_ascii=False),
        "ocr_embedding": ocr_embedding,
        "ocr_frame_similarity": cosine_similarity(ocr_embedding, clip_embedding),
        **language_columns("caption", None), **language_columns("ocr", None),
    }


def _flag(truncated: np.ndarray, index: int | None) -> bool:
    return bool(truncated[index]) if index is not None else False


def _empty_features() -> dict[str, Any]:
    """Column values of a row that failed earlier: None, and ``(0,)`` float32 embeddings."""
    empty = dict.fromkeys(TEXT_FEATURE_COLUMNS)
    empty.update({name: empty_embedding() for name in EMBEDDING_COLUMNS})
    return empty
