"""Exit codes and what one run or step came to, shared by ``extract`` and the scheduled jobs.

0 committed (per-video errors are rows, not failures); 1 the run failed and published nothing;
2 bad usage or config (or a missing input); 3 committed, but the error rate passed
``limits.max_error_rate`` (so a scheduler alerts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR_RATE = 0, 1, 2, 3
NEAR_LIMIT = 0.8  # an error rate of at least this share of limits.max_error_rate is near the limit
SEVERITY = (EXIT_FAILED, EXIT_USAGE, EXIT_ERROR_RATE, EXIT_OK)  # most severe first


def worst(codes: Iterable[int]) -> int:
    """The most severe exit code (``SEVERITY`` order); 0 for none."""
    codes = set(codes)
    return next((code for code in SEVERITY if code in codes), EXIT_OK)


@dataclass
class Outcome:
    """One run or step: ``status`` ``committed`` or ``failed``, its exit ``code``, a one-line
    ``detail`` (the failure or the alert) and the committed run ``record``; a committed processing
    run (``run_outcome``) also its error rate's ``health`` against ``max_error_rate``."""

    status: str
    code: int = EXIT_OK
    detail: str = ""
    record: dict[str, Any] | None = None
    health: str | None = None  # ``error_rate_health``: ok, near or over; None for a step without an error rate
    max_error_rate: float | None = None  # the ``limits.max_error_rate`` it was held against


def error_rate_health(rate: float, limit: float) -> str:
    """``over`` ``limit`` (``limits.max_error_rate``: exit code 3), ``near`` it (at least
    ``NEAR_LIMIT`` of it, the limit itself included), or ``ok``; rates are shares (0.5 = 50 %)."""
    if rate > limit:
        return "over"
    return "near" if rate > 0 and rate >= NEAR_LIMIT * limit else "ok"


def run_outcome(record: dict[str, Any], limit: float) -> Outcome:
    """The outcome of a committed processing run with ``record``: its error rate's health against
    ``limit`` (``limits.max_error_rate``), and over it exit code 3 with the alert as ``detail``."""
    rate = record["error_rate"]
    health = error_rate_health(rate, limit)
    if health == "over":
        return Outcome("committed", EXIT_ERROR_RATE, f"error rate {rate:.0%} is over limits.max_error_rate={limit}",
                       record, health, limit)
    return Outcome("committed", EXIT_OK, "", record, health, limit)
