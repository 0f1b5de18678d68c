"""Whisper stage: 16 kHz audio -> transcript columns, batched across videos (``TranscribeStage``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import numpy as np

from extract.config import Config
from extract.models.whisper import WhisperTranscriber, as_whisper_audio
from extract.rows import VideoError, batch_to_rows, is_failed, mark_exception, process_isolated, rows_to_batch
from extract.stages.registry import WHISPER

log = logging.getLogger(__name__)


STAGE = WHISPER.name


OUTPUT_COLUMNS = ("transcript_text", "language", "language_prob", "no_speech_prob", "whisper_model",
                  "segments_json")


class TranscribeStage:
    """Pipeline stage: ``audio`` -> transcript columns, Whisper batched across the batch's videos.

    Consumes ``audio`` ``(m,) float32`` 16 kHz (dropped from the output); adds
    ``transcript_text`` (str, ``''`` without speech), ``language`` (str|None),
    ``language_prob`` / ``no_speech_prob`` (float|None), ``whisper_model`` (lineage) and
    ``segments_json`` (JSON list of ``Transcript.segments``, ``'[]'`` without speech). A video
    with ``has_audio`` False gets an empty transcript with None probabilities. Failed rows
    pass through with these columns set to None.
    """

    def __init__(self, config: Config):
        self.config = config
        self.transcriber = WhisperTranscriber(config.models.whisper, config.whisper, config.runtime.device,
                                              storage=config.storage)
        self.batch_size = config.runtime.whisper_batch_size

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_to_rows(batch)
        pending: list[tuple[dict[str, Any], np.ndarray]] = []
        for row in rows:
            audio = row.pop("audio", None)
            row.update(dict.fromkeys(OUTPUT_COLUMNS))
            if is_failed(row):
                continue
            has_audio = row.get("has_audio")
            if has_audio is False or (has_audio is None and (audio is None or len(audio) == 0)):
                row.update(transcript_text="", whisper_model=self.transcriber.lineage, segments_json="[]")
                continue
            try:
                pending.append((row, as_whisper_audio(audio)))
            except VideoError as exc:
                mark_exception(row, STAGE, exc)
        self._transcribe_rows(pending)
        return rows_to_batch(rows)

    def _transcribe_rows(self, pending: list[tuple[dict[str, Any], np.ndarray]]) -> None:
        """Transcribe all pending rows together; if that fails, each row alone, so one bad
        video fails only itself."""
        transcripts = process_isolated(
            pending, lambda audios: self.transcriber.transcribe_batch(audios, self.batch_size), STAGE, "Whisper")
        for (row, _), transcript in zip(pending, transcripts):
            if transcript is None:
                continue
            row.update(transcript_text=transcript.text, language=transcript.language,
                       language_prob=transcript.language_prob, no_speech_prob=transcript.no_speech_prob,
                       whisper_model=self.transcriber.lineage,
                       segments_json=json.dumps(transcript.segments, ensure_ascii=False))
