"""Text quality measures shared by the OCR and Whisper checks (CER, WER)."""

from __future__ import annotations

from typing import Any, Sequence


def edit_distance(reference: Sequence[Any], hypothesis: Sequence[Any]) -> int:
    """Levenshtein distance between two sequences (characters, words): insertions, deletions
    and substitutions, each costing one."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]
