"""CLIP stage: frames -> frame and video embeddings, temporal and text features (``ClipStage``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import numpy as np

from extract.config import Config
from extract.config.machine import resolved_here
from extract.models.clip import ClipEmbedder, temporal_features
from extract.models.labels import embed_label_sets, label_columns, load_label_file, logit_scale_of
from extract.models.shots import ShotDetector, pacing
from extract.rows import (VideoError, batch_to_rows, is_failed, is_reused, mark_exception, process_isolated,
                          rows_to_batch)
from extract.stages.registry import CLIP
from extract.text.language import LanguageDetector

log = logging.getLogger(__name__)


STAGE = CLIP.name


class ClipStage:
    """Pipeline stage: ``frames`` -> frame/video CLIP embeddings, temporal and text features.

    Consumes ``frames``; adds ``frame_embeddings`` ``(n, D) float32``, ``clip_embedding``,
    ``clip_model`` (lineage), ``frame_cos_mean``, ``frame_cos_min``, ``thumbnail_similarity``,
    the zero-shot label columns of every configured set (``extract.models.labels.label_columns``:
    ``labels_<set>``, ``labels_<set>_max``, ``top_<set>``, ``top_<set>_score``; similarity
    scores, not moderation decisions), then the columns of ``text.features.add_text_features``
    using this model's text tower and the caption/OCR languages (``signals.language``); with
    ``signals.shots``, consumes ``shot_frames``/``shot_pts_s`` and adds ``shots_json`` (the ``shots``
    table's rows) and ``shot_count``, ``cuts_per_minute``, ``mean_shot_s`` (``extract.models.shots``).
    Failed rows pass through with empty tensors (``(0, D)``, ``(0,)``) and None features.
    """

    def __init__(self, config: Config):
        config = self.config = resolved_here(config)  # a stage built outside a run plans for this machine
        self.embedder = ClipEmbedder(config.models.clip, config.runtime.device, storage=config.storage)
        self.batch_size = config.runtime.clip_batch_size
        # Label sets embedded once per actor with this model's text tower (prompt ensembles).
        self.label_matrices = (embed_label_sets(self.embedder.encode_texts, load_label_file(config.labels.path))
                               if config.labels.enabled else {})
        self.logit_scale = logit_scale_of(self.embedder.model)
        self.languages = LanguageDetector() if config.signals.language else None  # fastText, once per actor
        # TransNetV2 on the decode child's 48x27 frames, on this actor's device (signals.shots)
        self.shots = ShotDetector(str(self.embedder.device)) if config.signals.shots else None

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from extract.text.features import add_text_features

        rows = batch_to_rows(batch)
        pending: list[tuple[dict[str, Any], np.ndarray]] = []
        for row in rows:
            frames = row.pop("frames", None)
            shot_frames, shot_pts = row.pop("shot_frames", None), row.pop("shot_pts_s", None)
            self._set_empty(row)
            if is_failed(row):
                continue
            if is_reused(row):  # no frames: the text features read the original's inputs
                inputs = json.loads(row.pop("reused_inputs") or "{}")
                row.update(transcript_text=inputs.get("transcript_text") or "", ocr_text=inputs.get("ocr_text") or [],
                           clip_embedding=np.asarray(inputs.get("clip_embedding") or [], np.float32))
                continue
            try:
                pending.append((row, self.embedder.check_frames(frames)))
                self._add_shots(row, shot_frames, shot_pts)
            except VideoError as exc:
                mark_exception(row, STAGE, exc)
            except Exception as exc:  # noqa: BLE001 - shot detection failing fails this video only
                mark_exception(row, STAGE, exc)
        self._embed_rows(pending)
        add_text_features(rows, encode_texts=self.embedder.encode_texts, config=self.config,
                          detect_language=self.languages.detect if self.languages is not None else None)
        return rows_to_batch(rows)

    def _add_shots(self, row: dict[str, Any], frames: np.ndarray | None, pts_s: np.ndarray | None) -> None:
        """``shots_json`` (the ``shots`` table's rows) and the pacing columns from the shot frames."""
        if self.shots is None or frames is None or len(frames) == 0:
            return
        shots = self.shots.detect(np.asarray(frames), np.asarray(pts_s))
        row["shots_json"] = json.dumps([{"start_s": s.start_s, "end_s": s.end_s} for s in shots])
        row.update(pacing(shots, float(row.get("duration_s") or 0.0)))

    def _set_empty(self, row: dict[str, Any]) -> None:
        empty = np.zeros((0, self.embedder.embed_dim), np.float32)
        row.update(shots_json="[]", **pacing([], 0.0))
        row.update(frame_embeddings=empty, clip_model=None, **temporal_features(empty),
                   **label_columns(empty, self.label_matrices, self.logit_scale))

    def _embed_rows(self, pending: list[tuple[dict[str, Any], np.ndarray]]) -> None:
        """Embed all pending rows packed together; if that fails, each row alone, so one bad
        video fails only itself."""
        results = process_isolated(pending, lambda frames: self.embedder.embed_frames(frames, self.batch_size),
                                   STAGE, "CLIP")
        for (row, _), embeddings in zip(pending, results):
            if embeddings is None:
                continue
            row["frame_embeddings"] = embeddings
            row["clip_model"] = self.embedder.lineage
            row.update(temporal_features(embeddings))
            row.update(label_columns(embeddings, self.label_matrices, self.logit_scale))
