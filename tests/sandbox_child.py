"""Test helper (run as a script): a process that confines itself as a decode child does, then runs checks.

Protocol: stdin is the child end of ``sandbox.job_channel()``; stdout carries one JSON line per
message. The first message is ``{"limits": ChildLimits fields}``; the child applies them,
calls ``confine`` and answers ``{"ready": true, "seccomp": ..., "landlock_abi": ...}``. Each
further message is ``{"check": name, ...}`` (an open file may ride along) and is answered with
the check's JSON result. Exits at end of input.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
from typing import Any, Callable

import av
import numpy as np

from extract.config import Config
from extract.media.video import decode_video
from extract.media import sandbox
from extract.media.geometry import PreprocessSpec

CONFIG = Config().replace(**{"models.clip.pretrained": None})
SPEC = PreprocessSpec(64, "bicubic", "shortest", (0.48145466, 0.4578275, 0.40821073),
                      (0.26862954, 0.26130258, 0.27577711))
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
                        "AZURE_STORAGE_KEY", "HF_TOKEN", "HTTPS_PROXY", "https_proxy", "RAY_ADDRESS")
MAX_MESSAGE_BYTES = 1 << 16


def _failure(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None)}


def _attempt(action: Callable[[], Any]) -> dict[str, Any]:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the check reports whatever stopped the action
        return _failure(exc)
    return {"ok": True}


def check_environment(job: dict, fd: int | None) -> dict:
    return {"keys": sorted(os.environ), "credentials": {k: os.environ.get(k) for k in CREDENTIAL_VARIABLES},
            "home": os.environ.get("HOME")}


def check_connect(job: dict, fd: int | None) -> dict:
    def connect(family: int, host: str) -> None:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect((host, job["port"]))

    def connect_unix() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(job["unix_path"])

    return {"tcp4": _attempt(lambda: connect(socket.AF_INET, "127.0.0.1")),
            "tcp6": _attempt(lambda: connect(socket.AF_INET6, "::1")),
            "udp": _attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
            "unix_connect": _attempt(connect_unix)}


def check_files(job: dict, fd: int | None) -> dict:
    def reopen_handed_file() -> None:  # a path to the descriptor it holds is still a path
        with open(f"/proc/self/fd/{fd}", "rb") as fh:
            fh.read(1)

    def write_new_file() -> None:
        with open(job["write_path"], "wb") as fh:
            fh.write(b"x")

    return {"passwd": _attempt(lambda: open("/etc/passwd").read()),
            "listdir": _attempt(lambda: os.listdir("/")),
            "write": _attempt(write_new_file),
            "unlink": _attempt(lambda: os.unlink(job["victim_path"])),
            "exec": _attempt(lambda: os.execv("/bin/true", ["true"])),
            "signal_init": _attempt(lambda: os.kill(1, 0)),
            "signal_parent": _attempt(lambda: os.kill(os.getppid(), 0)),
            "proc_fd_reopen": _attempt(reopen_handed_file),
            "handed_fd_read": len(os.pread(fd, 16, 0))}


def check_memory(job: dict, fd: int | None) -> dict:
    result = _attempt(lambda: bytearray(job["allocate_bytes"]))
    result["still_computes"] = float(np.arange(1000, dtype=np.float64).sum())  # the child goes on afterwards
    return result


def check_cpu(job: dict, fd: int | None) -> dict:
    sandbox.cpu_budget(job["seconds"])
    x = 0
    while True:  # SIGXCPU ends this process once the budget is spent
        x += 1


def check_decode(job: dict, fd: int | None) -> dict:
    """The real ``decode_video``, reading the handed descriptor (what ``probe.open_input``
    does once it opens ``descriptor_input(fd)``: only the URL and two options differ)."""
    real_open = av.open

    def open_descriptor(url: str, mode: str = "r", container_options: dict | None = None, **kwargs: Any) -> Any:
        fd_url, fd_options = sandbox.descriptor_input(fd)
        options = {**(container_options or {}), "protocol_whitelist": sandbox.FFMPEG_PROTOCOL, **fd_options}
        return real_open(fd_url, mode, container_options=options, **kwargs)

    av.open = open_descriptor
    try:
        out = decode_video("received-upload", CONFIG, SPEC)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        return {**_failure(exc), "message": str(exc)}
    finally:
        av.open = real_open
    return {"ok": True, "frames_shape": list(out.frames.shape), "frames_sum": int(out.frames.astype(np.int64).sum()),
            "pts_s": out.pts_s.tolist(), "audio_n": len(out.audio), "audio_sum": float(out.audio.astype(np.float64).sum()),
            "video_codec": out.probe.video_codec}


def check_threads(job: dict, fd: int | None) -> dict:
    started = threading.Event()
    t = threading.Thread(target=started.set)
    t.start()
    t.join()
    return {"thread_ran": started.is_set(), "files_in_thread": _attempt_in_thread(lambda: open("/etc/passwd"))}


def _attempt_in_thread(action: Callable[[], Any]) -> dict[str, Any]:
    box: list[dict[str, Any]] = []
    t = threading.Thread(target=lambda: box.append(_attempt(action)))
    t.start()
    t.join()
    return box[0]


CHECKS = {"environment": check_environment, "connect": check_connect, "files": check_files,
          "memory": check_memory, "cpu": check_cpu, "decode": check_decode, "threads": check_threads}


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    jobs = socket.socket(fileno=0)
    message, _ = sandbox.receive_job(jobs, MAX_MESSAGE_BYTES)
    init = json.loads(message)
    if init.get("start_thread_first"):  # to prove confine refuses a threaded process
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    sandbox.apply_limits(sandbox.ChildLimits(**init["limits"]))
    try:
        confinement = sandbox.confine()
    except RuntimeError as exc:
        reply({"ready": False, "message": str(exc)})
        return
    reply({"ready": True, **dataclasses.asdict(confinement)})
    while True:
        try:
            message, fd = sandbox.receive_job(jobs, MAX_MESSAGE_BYTES)
        except EOFError:
            return
        job = json.loads(message)
        reply(CHECKS[job["check"]](job, fd))
        if fd is not None:
            os.close(fd)


if __name__ == "__main__":
    main()
