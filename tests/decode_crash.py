"""Test-only crash injection for decode children (the package itself reads no test switch).

Two entry points, both run as scripts:

- ``python tests/decode_crash.py child IDS [MODE]``: a decode child (``isolation.serve_decode_requests``)
  that, for a job whose ``video_id`` is in the comma-separated ``IDS``, calls ``os.abort()``
  (MODE ``abort``, the default), sleeps past every limit (``stall``), or tries what a decoder
  taken over by a crafted file would try (``escape``: read credential variables, connect to the
  loopback TCP port ``PORT``, open ``/etc/passwd``, allocate past its address-space limit) and
  answers with a ``SandboxReport`` error whose message is the JSON of what happened.
  Select it with ``crashing_child_args(ids, mode)`` as ``isolation.CHILD_ARGS``.
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


MODES = ("abort", "stall")


CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_KEY", "HF_TOKEN", "HTTPS_PROXY", "RAY_ADDRESS")


def crashing_child_args(video_ids: Iterable[str], mode: str = "abort", port: int = 0) -> tuple[str, ...]:
    """``isolation.CHILD_ARGS`` for a child that aborts, stalls or tries to escape on ``video_ids``."""
    if mode not in MODES + ("escape",):
        raise ValueError(f"mode {mode!r} is not one of {MODES + ('escape',)}")
    return (SCRIPT, "child", ",".join(video_ids), mode, str(port))


def _attempt(action) -> dict:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the report says whatever stopped the action
        return {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None)}
    return {"ok": True}


def escape_report(config, fd: int, port: int) -> dict:
    """What a hijacked decoder could get at from inside this child (see the module docstring)."""
    import socket

    def connect() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(("127.0.0.1", port))

    return {"credentials": {k: os.environ.get(k) for k in CREDENTIAL_VARIABLES}, "environment": sorted(os.environ),
            "connect": _attempt(connect), "passwd": _attempt(lambda: open("/etc/passwd").read()),
            "allocate": _attempt(lambda: bytearray(config.limits.max_memory_bytes)),
            "input_head": os.pread(fd, 8, 0).hex()}


def serve_crashing(video_ids: set[str], mode: str = "abort", port: str = "0") -> None:
    import json
    import time

    from extract.media import isolation
    from extract.rows import VideoError

    answer = isolation.answer_job

    def answer_or_abort(job, config, spec, fd):
        if job["video_id"] in video_ids:
            if mode == "escape":
                report = json.dumps(escape_report(config, fd, int(port)))
                return [isolation._error_message(VideoError("SandboxReport", report))]
            if mode == "stall":
                time.sleep(3600)
            os.abort()
        return answer(job, config, spec, fd)

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
        serve_crashing(ids, *sys.argv[3:5])
    else:
        sys.exit(run_cli(ids, sys.argv[3:]))
