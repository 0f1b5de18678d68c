"""Whisper stage: 16 kHz audio -> transcript columns, batched across videos (``TranscribeStage``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import numpy as np

from extract.config import Config
from extract.config.machine import resolved_here
from extract.models.vad import NO_AUDIO, VadOptions, VoiceActivity, classify_audio, non_speech_kind
from extract.models.whisper import WhisperTranscriber, as_whisper_audio
from extract.rows import VideoError, batch_to_rows, is_failed, is_reused, mark_exception, process_isolated, rows_to_batch
from extract.stages.registry import WHISPER

log = logging.getLogger(__name__)


STAGE = WHISPER.name


# Declared on the registry entry; audio_embedding is set apart: a row without one gets an empty vector.
OUTPUT_COLUMNS = tuple(c for c in WHISPER.columns if c != "audio_embedding")


class TranscribeStage:
    """Pipeline stage: ``audio`` -> transcript columns, Whisper batched across the batch's videos.

    Consumes ``audio`` ``(m,) float32`` 16 kHz (dropped from the output); adds
    ``transcript_text`` (str, ``''`` without speech), ``language`` (str|None),
    ``language_prob`` / ``no_speech_prob`` (float|None), ``whisper_model`` (lineage) and
    ``segments_json`` (JSON list of ``Transcript.segments``, ``'[]'`` without speech). A video
    with ``has_audio`` False gets an empty transcript with None probabilities. Failed rows
    pass through with these columns set to None.

    With ``whisper.vad`` (default) silero-vad finds the speech first (``extract.models.vad``):
    ``speech_s`` (seconds), ``speech_ratio`` and ``audio_kind`` (``speech``, ``music``, ``sound``,
    ``silence``; ``none`` without an audio track; all None with ``whisper.vad: false``; ``speech``
    needs words too: VAD speech with an empty transcript is ``music`` or ``sound`` by
    ``non_speech_kind``), and
    Whisper decodes only the windows that hold speech. ``audio_embedding`` ``(d_model,) float32``
    is the mean of the Whisper encoder's frames over the real audio (the same encoder pass),
    L2-normalised; ``(0,)`` without audible audio.
    """

    def __init__(self, config: Config):
        config = self.config = resolved_here(config)  # a stage built outside a run plans for this machine
        self.transcriber = WhisperTranscriber(config.models.whisper, config.whisper, config.runtime.device,
                                              storage=config.storage)
        self.batch_size = config.runtime.whisper_batch_size
        self.vad = VoiceActivity(VadOptions(threshold=config.whisper.vad_threshold)) if config.whisper.vad else None
        self._no_embedding = np.zeros(0, np.float32)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_to_rows(batch)
        pending: list[tuple[dict[str, Any], tuple[np.ndarray, Any]]] = []
        for row in rows:
            audio = row.pop("audio", None)
            row.update(dict.fromkeys(OUTPUT_COLUMNS), audio_embedding=self._no_embedding)
            if is_failed(row) or is_reused(row):  # a reused row's transcript is copied at writing
                continue
            has_audio = row.get("has_audio")
            if has_audio is False or (has_audio is None and (audio is None or len(audio) == 0)):
                row.update(transcript_text="", whisper_model=self.transcriber.lineage, segments_json="[]")
                if self.vad is not None:
                    row.update(audio_kind=NO_AUDIO.kind, speech_s=NO_AUDIO.speech_s, speech_ratio=NO_AUDIO.speech_ratio)
                continue
            try:
                audio = as_whisper_audio(audio)
                spans = None
                if self.vad is not None:
                    spans = self.vad.speech_spans(audio)
                    activity = classify_audio(audio, spans, self.config.whisper.silence_rms)
                    row.update(audio_kind=activity.kind, speech_s=activity.speech_s, speech_ratio=activity.speech_ratio)
                pending.append((row, (audio, spans)))
            except (VideoError, ValueError) as exc:
                mark_exception(row, STAGE, exc)
        self._transcribe_rows(pending)
        return rows_to_batch(rows)

    def _transcribe_rows(self, pending: list[tuple[dict[str, Any], tuple[np.ndarray, Any]]]) -> None:
        """Transcribe all pending rows together; if that fails, each row alone, so one bad
        video fails only itself."""
        transcripts = process_isolated(
            pending, lambda items: self.transcriber.transcribe_batch([a for a, _ in items], self.batch_size,
                                                                     [spans for _, spans in items]), STAGE, "Whisper")
        for (row, (audio, _)), transcript in zip(pending, transcripts):
            if transcript is None:
                continue
            if row["audio_kind"] == "speech" and not transcript.text:
                # silero-vad hears speech in some music (bench/bench_music_speech.py); Whisper found none
                row["audio_kind"] = non_speech_kind(audio, self.config.whisper.silence_rms)
            row.update(transcript_text=transcript.text, language=transcript.language,
                       language_prob=transcript.language_prob, no_speech_prob=transcript.no_speech_prob,
                       whisper_model=self.transcriber.lineage,
                       segments_json=json.dumps(transcript.segments, ensure_ascii=False),
                       audio_embedding=(self._no_embedding if transcript.audio_embedding is None
                                        else transcript.audio_embedding))
