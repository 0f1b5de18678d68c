"""Test-only crash injection for decode children (the package itself reads no test switch).

Two entry points, both run as scripts:

- ``python tests/decode_crash.py child IDS``: a decode child (``isolation.serve_decode_requests``)
  that calls ``os.abort()`` instead of answering a job whose ``video_id`` is in the
  comma-separated ``IDS``. Select it with ``crashing_child_args(ids)`` as ``isolation.CHILD_ARGS``.
- ``python tests/decode_crash.py cli IDS ARGS...``: ``python -m extract ARGS`` whose decode stage
  starts such children (a ``DecodeStage`` subclass defined here, so Ray ships it by value to the
  decode actors, where it sets ``CHILD_ARGS`` before its pool starts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

SCRIPT = str(Path(__file__).resolve())


def crashing_child_args(video_ids: Iterable[str]) -> tuple[str, ...]:
    """``isolation.CHILD_ARGS`` for a child that aborts on ``video_ids``."""
    return (SCRIPT, "child", ",".join(video_ids))


def serve_crashing(video_ids: set[str]) -> None:
    from extract.media import isolation

    answer = isolation.answer_job

    def answer_or_abort(job, config, spec):
        if job["video_id"] in video_ids:
            os.abort()
        return answer(job, config, spec)

    isolation.answer_job = answer_or_abort
    isolation.serve_decode_requests()


def run_cli(video_ids: set[str], argv: list[str]) -> int:
    from extract import cli
    from extract.media import isolation
    from extract.pipeline import ray_backend
    from extract.stages.decode import DecodeStage
    from extract.stages.registry import stage_classes

    child_args = crashing_child_args(video_ids)

    class CrashingDecodeStage(DecodeStage):
        def __init__(self, *args, **kwargs):
            isolation.CHILD_ARGS = child_args
            super().__init__(*args, **kwargs)

    ray_backend.stage_classes = lambda: dict(stage_classes(), decode=CrashingDecodeStage)
    return cli.main(argv)


if __name__ == "__main__":
    role, ids = sys.argv[1], {i for i in sys.argv[2].split(",") if i}
    if role == "child":
        serve_crashing(ids)
    else:
        sys.exit(run_cli(ids, sys.argv[3:]))
