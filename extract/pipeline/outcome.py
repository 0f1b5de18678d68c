"""Exit codes and what one run or step came to, shared by ``extract`` and the scheduled jobs.

0 committed (per-video errors are rows, not failures); 1 the run failed and published nothing;
2 bad usage or config (or a missing input); 3 committed, but the error rate passed
``limits.max_error_rate`` (so a scheduler alerts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR_RATE = 0, 1, 2, 3
SEVERITY = (EXIT_FAILED, EXIT_USAGE, EXIT_ERROR_RATE, EXIT_OK)  # most severe first


def worst(codes: Iterable[int]) -> int:
    """The most severe exit code (``SEVERITY`` order); 0 for none."""
    codes = set(codes)
    return next((code for code in SEVERITY if code in codes), EXIT_OK)


@dataclass
class Outcome:
    """One run or step: ``status`` ``committed`` or ``failed``, its exit ``code``, a one-line
    ``detail`` (the failure or the alert) and the committed run ``record``."""

    status: str
    code: int = EXIT_OK
    detail: str = ""
    record: dict[str, Any] | None = None
