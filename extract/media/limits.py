"""Per-video budgets shared by the video and audio readers: wall-clock deadline, memory errors.
"""

from __future__ import annotations

import time

from extract.config import LimitsConfig
from extract.rows import VideoError

MAX_BAD_PACKETS = 32  # undecodable packets skipped per stream before the file counts as corrupt
TRUNCATION_SLACK_S = 0.5  # a target this close after the last frame takes the last frame (else: truncated)


class Deadline:
    """Wall-clock budget of one video (``limits.timeout_s``); ``check`` raises ``Timeout``."""

    def __init__(self, seconds: float, name: str = "video"):
        self.seconds = seconds
        self.name = name
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise VideoError("Timeout", f"{self.name!r}: decoding took longer than limits.timeout_s={self.seconds}",
                             retryable=True)


def memory_error(name: str, limits: LimitsConfig) -> VideoError:
    return VideoError("LimitExceeded",
                      f"{name!r}: decoding ran out of memory under limits.max_memory_bytes={limits.max_memory_bytes}")
