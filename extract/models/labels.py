"""Zero-shot label scores: CLIP frame embeddings against prompt-ensembled label sets.

A *label set* (``topic``, ``safety``, ...) is a list of labels, each described by one or more
prompts. ``embed_label_sets`` embeds every prompt once with the CLIP text tower and, per
label, averages the unit prompt embeddings and re-normalises the mean (the prompt ensemble of
the CLIP paper, Radford et al. 2021, sec. 3.1.4): one ``(n_labels, D)`` unit matrix per set,
computed once per CLIP actor. ``label_scores`` turns a video's unit frame embeddings
``(n_frames, D)`` into, per frame, a softmax over the set's labels of
``logit_scale * cosine`` (``logit_scale = model.logit_scale.exp()``, 100 for trained
ViT-B-32, about 14.3 for an untrained model), then the mean and the max over frames, and the
top label by mean.

What the scores mean: with real CLIP weights a score is the share of the set's probability
that this label's captions win against the set's other captions, for how the frames *look*.
It is relative to the set (adding a label changes every score), says nothing about audio or
speech, and inherits CLIP's biases and blind spots. These are zero-shot similarity scores for
ranking features and for routing to human review; they are not moderation decisions. The
``safety`` set of ``jobs/configs/labels.yaml`` has a neutral ``none`` label so an ordinary
video's mass has somewhere to go. With random (tiny test) weights the numbers are arbitrary;
only the mechanics hold.

Config data (``labels`` section, e.g. ``jobs/configs/labels.yaml``)::

    labels:
      topic:
        prompts: {food: ["a photo of food", "a video of someone cooking"], sports: [...]}
      animals:                       # template form: every template once per label
        labels: [cat, dog]
        templates: ["a photo of a {label}", "a video of a {label}"]

``label_sets_hash`` is a stable hash of the expanded sets (names, label order, prompts): it
changes when any prompt changes and is what the feature hash should include.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from extract.config import DEFAULT_LABEL_FILE
from extract.text.features import EncodeTexts

SET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # becomes part of a column name: videos.labels_<set>
LABEL_FIELD = "{label}"


@dataclass(frozen=True)
class LabelSet:
    """One label set: ``labels`` in config order, ``prompts[i]`` the prompts of ``labels[i]``."""

    name: str
    labels: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class LabelMatrix:
    """A set's embedded labels: ``matrix`` ``(n_labels, D) float32``, unit rows, in label order."""

    name: str
    labels: tuple[str, ...]
    matrix: np.ndarray


@dataclass(frozen=True)
class LabelScores:
    """Scores of one video for one set (label order of the set).

    ``per_frame`` ``(n_frames, n_labels) float32`` softmax rows (each sums to 1); ``mean`` and
    ``max`` ``(n_labels,) float32`` over frames; ``top_label`` / ``top_score`` the label with the
    highest mean (first in set order on a tie). Without frames: empty arrays and None.
    """

    labels: tuple[str, ...]
    per_frame: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    top_label: str | None
    top_score: float | None

    def as_maps(self) -> tuple[list[tuple[str, float]] | None, list[tuple[str, float]] | None]:
        """``(mean, max)`` as ``[(label, score), ...]`` (Arrow ``map<string, float32>`` values); None without frames."""
        if self.top_label is None:
            return None, None
        return ([(l, float(s)) for l, s in zip(self.labels, self.mean)],
                [(l, float(s)) for l, s in zip(self.labels, self.max)])


def parse_label_sets(data: Mapping[str, Any] | None, key: str = "labels") -> dict[str, LabelSet]:
    """Config data ``{set: {"prompts": {label: [prompt, ...]}}}`` (or ``{"labels": [...],
    "templates": [...]}``) -> ``{set: LabelSet}`` in the data's order.

    Raises ValueError naming the key (``labels.topic.prompts.food``) for: a set name that is not
    ``[a-z][a-z0-9_]*``, fewer than two labels, a label without prompts, an empty or non-string
    prompt, a template without ``{label}``, a set with both or neither form.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{key}: expected a mapping of label sets, got {type(data).__name__}")
    sets: dict[str, LabelSet] = {}
    for name, spec in data.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not SET_NAME.match(name):
            raise ValueError(f"{where}: set names must match [a-z][a-z0-9_]* (they name columns labels_<set>)")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a mapping with 'prompts' or 'labels' + 'templates'")
        has_prompts, has_templates = "prompts" in spec, "labels" in spec or "templates" in spec
        if has_prompts == has_templates or set(spec) - {"prompts", "labels", "templates"}:
            raise ValueError(f"{where}: give either 'prompts' ({{label: [prompt, ...]}}) or 'labels' and "
                             f"'templates', got keys {sorted(spec)}")
        pairs = _prompt_form(spec["prompts"], where) if has_prompts else _template_form(spec, where)
        if len(pairs) < 2:
            raise ValueError(f"{where}: a set needs at least two labels (its scores are a softmax over them)")
        sets[name] = LabelSet(name, tuple(label for label, _ in pairs), tuple(p for _, p in pairs))
    return sets


def _prompt_form(prompts: Any, where: str) -> list[tuple[str, tuple[str, ...]]]:
    if not isinstance(prompts, Mapping):
        raise ValueError(f"{where}.prompts: expected {{label: [prompt, ...]}}")
    pairs = []
    for label, texts in prompts.items():
        if isinstance(texts, str):
            texts = [texts]
        pairs.append((_label(label, f"{where}.prompts"), _prompts(texts, f"{where}.prompts.{label}")))
    return pairs


def _template_form(spec: Mapping[str, Any], where: str) -> list[tuple[str, tuple[str, ...]]]:
    labels, templates = spec.get("labels"), spec.get("templates")
    if not isinstance(labels, Sequence) or isinstance(labels, str) or not labels:
        raise ValueError(f"{where}.labels: expected a list of labels")
    templates = _prompts(templates, f"{where}.templates")
    for template in templates:
        if LABEL_FIELD not in template:
            raise ValueError(f"{where}.templates: {template!r} must contain {LABEL_FIELD}")
    return [(_label(label, f"{where}.labels"), tuple(t.replace(LABEL_FIELD, label) for t in templates))
            for label in labels]


def _label(label: Any, where: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: labels must be non-empty strings, got {label!r}")
    return label


def _prompts(texts: Any, where: str) -> tuple[str, ...]:
    if not isinstance(texts, Sequence) or isinstance(texts, str) or not texts:
        raise ValueError(f"{where}: expected a non-empty list of prompts")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: prompts must be non-empty strings, got {text!r}")
    if len(set(texts)) != len(texts):
        raise ValueError(f"{where}: a prompt is listed twice (it would weigh double in the ensemble)")
    return tuple(texts)


def load_label_file(path: str | Path = DEFAULT_LABEL_FILE) -> dict[str, LabelSet]:
    """The label sets of a YAML file whose top-level key is ``labels`` (as ``jobs/configs/labels.yaml``)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if "labels" not in data:
        raise ValueError(f"{path}: expected a top-level 'labels' section")
    return parse_label_sets(data["labels"])


def label_sets_hash(sets: Mapping[str, LabelSet]) -> str:
    """sha256 (hex, 16 chars) of the expanded sets: set names (sorted), labels (in order), prompts.

    Equal for equal prompts whether written as prompts or templates; any change of a set, a
    label, a prompt or the label order changes it.
    """
    canonical = {name: [[label, list(prompts)] for label, prompts in zip(s.labels, s.prompts)]
                 for name, s in sets.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def embed_label_sets(encode_texts: EncodeTexts, sets: Mapping[str, LabelSet]) -> dict[str, LabelMatrix]:
    """Embed every set's prompts with one ``encode_texts`` call -> ``{set: LabelMatrix}``.

    ``encode_texts(texts) -> ((n, D) float32 unit rows, (n,) bool truncated)`` is the CLIP text
    tower (``ClipEmbedder.encode_texts``). A label's row is the mean of its prompts' unit
    embeddings, re-normalised. Raises ValueError naming the prompt when one is longer than the
    model's context (its ensemble would silently use a cut prompt).
    """
    texts = [p for s in sets.values() for prompts in s.prompts for p in prompts]
    if not texts:
        return {}
    embeddings, truncated = encode_texts(texts)
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape[0] != len(texts):
        raise ValueError(f"encode_texts: returned {embeddings.shape[0]} rows for {len(texts)} prompts")
    if np.any(truncated):
        cut = [t for t, flag in zip(texts, truncated) if flag]
        raise ValueError(f"labels: {len(cut)} prompts exceed the CLIP context length, e.g. {cut[0]!r}; shorten them")
    out: dict[str, LabelMatrix] = {}
    row = 0
    for name, s in sets.items():
        matrix = np.empty((len(s.labels), embeddings.shape[1]), np.float32)
        for i, prompts in enumerate(s.prompts):
            matrix[i] = _unit(embeddings[row:row + len(prompts)].mean(axis=0))
            row += len(prompts)
        out[name] = LabelMatrix(name, s.labels, matrix)
    return out


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def logit_scale_of(model: Any) -> float:
    """CLIP's learned softmax temperature, ``model.logit_scale.exp()`` (open_clip models)."""
    return float(model.logit_scale.detach().float().exp().cpu())


def label_scores(frame_embeddings: np.ndarray, labels: LabelMatrix, logit_scale: float) -> LabelScores:
    """Per-frame softmax over the set of ``logit_scale * frame @ label`` and its mean / max over frames.

    ``frame_embeddings`` ``(n_frames, D) float32`` unit rows (the CLIP stage's
    ``frame_embeddings``); ``labels`` from ``embed_label_sets``.
    """
    frames = np.asarray(frame_embeddings, np.float32)
    n_labels = len(labels.labels)
    if frames.size == 0:
        empty = np.zeros((0, n_labels), np.float32)
        return LabelScores(labels.labels, empty, np.zeros(0, np.float32), np.zeros(0, np.float32), None, None)
    if frames.ndim != 2 or frames.shape[1] != labels.matrix.shape[1]:
        raise ValueError(f"frame_embeddings: expected (n, {labels.matrix.shape[1]}), got {frames.shape}")
    logits = float(logit_scale) * (frames.astype(np.float64) @ labels.matrix.T.astype(np.float64))
    logits -= logits.max(axis=1, keepdims=True)  # softmax is shift-invariant; avoids overflow
    weights = np.exp(logits)
    per_frame = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    mean, peak = per_frame.mean(axis=0), per_frame.max(axis=0)
    top = int(np.argmax(mean))
    return LabelScores(labels.labels, per_frame, mean, peak, labels.labels[top], float(mean[top]))


def label_columns(frame_embeddings: np.ndarray, matrices: Mapping[str, LabelMatrix],
                  logit_scale: float) -> dict[str, Any]:
    """The ``videos`` columns of every set for one video: ``labels_<set>`` (label -> mean score),
    ``labels_<set>_max`` (label -> max over frames), ``top_<set>`` and ``top_<set>_score``;
    None for a video without frames."""
    row: dict[str, Any] = {}
    for name, matrix in matrices.items():
        scores = label_scores(frame_embeddings, matrix, logit_scale)
        row[f"labels_{name}"], row[f"labels_{name}_max"] = scores.as_maps()
        row[f"top_{name}"], row[f"top_{name}_score"] = scores.top_label, scores.top_score
    return row
