"""OCR stage: burned-in text of a few sampled frames per video (``OcrStage``, rapidocr PP-OCRv4).

Consumes ``ocr_frames`` ``(k, h, w, 3) uint8`` and ``ocr_frame_index`` ``(k,) int32`` from the
decode stage (whole pictures, long side at most ``ocr.max_side``; dropped from the output)
and the row's ``pts_s``; adds

- ``ocr_text``: the video's distinct lines in reading order, deduplicated across frames
  (``extract.models.ocr.merge_lines``), NFKC-normalised like captions; ``[]`` without text;
- ``ocr_lines_json``: a JSON list with one object per detected line, the ``ocr_text`` table's
  columns (``frame_index`` into the sampled frames, ``pts_s``, ``line_index``, ``text``, ``score``,
  ``box`` as x0,y0..x3,y3 in the OCR frame's pixels, ``frame_width``, ``frame_height``);
- ``text_area_ratio``: the share of the frame covered by text boxes (``extract.models.ocr.text_area_ratio``),
  mean over the frames read (text-free ones count 0), in [0, 1]; None with ``signals.text_area`` off;
- ``ocr_error``: why OCR failed for this video (None when it did not). A failure costs the
  video its OCR only: the row keeps its other features, it is not an error row.

Frames that repeat an earlier chosen one (a still, a slideshow) are read once
(``choose_ocr_frames``); text-free frames end after detection, before recognition.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from extract.config import Config
from extract.config.machine import resolved_here
from extract.models.ocr import OcrOptions, OcrReader, choose_ocr_frames, merge_lines, text_area_ratio
from extract.rows import batch_to_rows, is_failed, is_reused, rows_to_batch
from extract.stages.registry import OCR

STAGE = OCR.name
OUTPUT_COLUMNS = OCR.columns  # declared on the registry entry


class OcrStage:
    """Rows with ``ocr_frames`` -> rows with the OCR columns (module doc); one reader per actor."""

    def __init__(self, config: Config):
        config = self.config = resolved_here(config)
        ocr = config.ocr
        self.reader = (OcrReader(OcrOptions(min_score=ocr.min_score, languages=ocr.languages, max_side=ocr.max_side))
                       if ocr.enabled else None)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_to_rows(batch)
        for row in rows:
            frames = row.pop("ocr_frames", None)
            index = row.pop("ocr_frame_index", None)
            row.update(ocr_text=[], ocr_lines_json="[]", text_area_ratio=None, ocr_error=None)
            if is_failed(row) or is_reused(row) or self.reader is None or frames is None or len(frames) == 0:
                continue
            try:
                row.update(self.read_video(np.asarray(frames), np.asarray(index), row.get("pts_s")))
            except Exception as exc:  # noqa: BLE001 - OCR failing costs this video its OCR only
                row["ocr_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return rows_to_batch(rows)

    def read_video(self, frames: np.ndarray, index: np.ndarray, pts_s: Any) -> dict[str, Any]:
        """The OCR columns of one video from its OCR frames ``(k, h, w, 3) uint8``."""
        chosen = choose_ocr_frames(frames, self.config.ocr.max_frames, self.config.ocr.min_change)
        per_frame = self.reader.read(frames[chosen])
        times = np.asarray(pts_s if pts_s is not None else [], np.float64)
        height, width = frames.shape[1:3]
        records = []
        for k, lines in zip(chosen, per_frame):
            frame_index = int(index[k])
            for line_index, line in enumerate(lines):
                records.append({
                    "frame_index": frame_index,
                    "pts_s": float(times[frame_index]) if frame_index < len(times) else None,
                    "line_index": line_index, "text": line.text, "score": float(line.score),
                    "box": [float(v) for point in line.box for v in point],
                    "frame_width": int(width), "frame_height": int(height),
                })
        area = (float(np.mean([text_area_ratio(lines, width, height) for lines in per_frame]))
                if self.config.signals.text_area and per_frame else None)
        return {"ocr_text": merge_lines(per_frame), "ocr_lines_json": json.dumps(records, ensure_ascii=False),
                "text_area_ratio": area}
