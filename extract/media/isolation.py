"""Isolation: decoding runs in reusable child processes, never in the worker (``DecodePool``).

Isolation: ``DecodeStage`` never decodes in its own process. A ``DecodePool`` of long-lived
child processes (``subprocess`` with fork+exec, never a bare fork of a threaded worker; own
process group) does the FFmpeg work, confined by ``extract.media.sandbox``: an allow-listed
environment (no credentials, tokens or proxies; an empty ``HOME``), resource limits
(``RLIMIT_AS`` = ``limits.max_memory_bytes``, a CPU budget per job of ``limits.timeout_s`` per
decoder thread, 64 open files, no core dumps), and, before its first job, a seccomp filter (no
network sockets, no ``open``, no ``exec``) plus Landlock where the kernel has it. The parent
opens each file and hands the child the descriptor with the job (``open_job_file``; anything
but a regular file is refused there), so the child opens no path and holds no storage
credentials. The parent enforces ``limits.timeout_s`` (the child stops itself at the limit; the
parent kills the process group ``KILL_GRACE_S`` later if it has not), and a child that dies
(segfault, abort, out of memory) costs only its video: the row gets ``Crash`` and the next
video gets a fresh process. Results come back as a JSON header plus raw arrays, never pickle,
so a compromised child cannot run code in the parent.

A child runs ``python CHILD_ARGS``: ``serve_decode_requests``, which answers each job with
``answer_job``. The package reads no test switch; tests that need a child to crash run their
own entry point (``tests/decode_crash.py``) through ``CHILD_ARGS``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from extract.config import Config, config_from_dict
from extract.media import sandbox
from extract.media.audio import AUDIO_RATE
from extract.media.geometry import PreprocessSpec
from extract.media.limits import TRUNCATION_SLACK_S, Deadline, memory_error
from extract.media.pace import MAX_SHOT_FRAMES, MOTION_SOURCES, SHOT_SIZE, Pace
from extract.media.probe import Probe
from extract.media.video import THUMB_SIDE, DecodedVideo, DecodeStats, decode_video
from extract.rows import VideoError

# The decode child's command line after the interpreter (read at each child start).
CHILD_ARGS: tuple[str, ...] = ("-c", "from extract.media.isolation import serve_decode_requests; "
                                     "serve_decode_requests()")


KILL_GRACE_S = 5.0  # after limits.timeout_s, how long the parent waits before killing the child


WORKER_START_TIMEOUT_S = 120.0  # interpreter + numpy + PyAV import on a busy machine


MAX_JOBS_PER_WORKER = 500  # recycle a child after this many videos (bounds leaks in native code)


MIN_HEADROOM_BYTES = 64 * 1024**2  # address space a child needs above its idle size to decode anything


MAX_SHOT_BYTES = MAX_SHOT_FRAMES * SHOT_SIZE[0] * SHOT_SIZE[1] * 3 + 1  # largest shot-frame message
HEADER_MAX_BYTES = 1 << 20  # largest JSON header the parent accepts from a child (and a child from the parent)


CHILD_OPEN_FILES = 64  # RLIMIT_NOFILE of a child: stdio, its sockets and pipes, the input and FFmpeg's dup of it


def _probe_to_json(probe: Probe) -> dict[str, Any]:
    data = dataclasses.asdict(probe)
    data["keyframes"] = None  # the parent has no use for the index
    return data


def _result_messages(result: DecodedVideo) -> list[bytes]:
    """A result as wire messages: JSON header (with each thumbnail's size), then frames, pts,
    audio, OCR frames and their indices as raw bytes, the thumbnails' indices, the thumbnail
    JPEG files back to back, the audio fingerprint's codes, and the shot frames and their times
    (``extract.media.pace``)."""
    header = {
        "ok": True, "probe": _probe_to_json(result.probe), "policy": result.policy,
        "stats": dataclasses.asdict(result.stats),
        "frames_shape": list(result.frames.shape), "n_pts": len(result.pts_s), "n_audio": len(result.audio),
        "ocr_shape": list(result.ocr_frames.shape),
        "thumbnail_bytes": [len(jpeg) for jpeg in result.thumbnails],
        "motion_score": result.pace.motion_score, "motion_source": result.pace.motion_source,
        "frames_read": result.pace.frames_read, "shot_shape": list(result.pace.shot_frames.shape),
    }
    return [json.dumps(header).encode(), result.frames.astype(np.uint8, copy=False).tobytes(),
            result.pts_s.astype(np.float32, copy=False).tobytes(), result.audio.astype(np.float32, copy=False).tobytes(),
            result.ocr_frames.astype(np.uint8, copy=False).tobytes(),
            result.ocr_index.astype(np.int32, copy=False).tobytes(),
            result.thumbnail_index.astype(np.int32, copy=False).tobytes(), b"".join(result.thumbnails),
            result.sound_fingerprint.astype("<i8", copy=False).tobytes(),
            result.pace.shot_frames.astype(np.uint8, copy=False).tobytes(),
            result.pace.shot_pts_s.astype(np.float32, copy=False).tobytes()]


def _error_message(error: VideoError, recycle: bool = False) -> bytes:
    return json.dumps({"ok": False, "error_type": error.error_type, "message": str(error),
                       "retryable": error.retryable, "recycle": recycle}).encode()


def _vm_bytes() -> int | None:
    """This process's virtual memory size (Linux ``VmSize``), None where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def serve_decode_requests() -> None:
    """Child-process main loop of ``DecodePool`` (stdin: the job socket, stdout: results).

    First message: ``{"config": ..., "spec": ...}``; the child applies its resource limits and
    confines itself (``extract.media.sandbox``: seccomp, Landlock where the kernel has it), then
    answers ``{"ready": true, ...}``. Then per job a ``{"video_id", "path", "strategy"}`` message
    carrying the file's open descriptor -> ``answer_job``'s messages. Exits on EOF (the parent
    closed the socket or died).
    """
    import faulthandler
    import socket
    import traceback  # noqa: F401  - answer_job's, imported while imports can still read files

    import av  # noqa: F401  - imported before the address-space limit is applied

    from extract.config.machine import resolved_here

    faulthandler.enable()  # a segfault prints the Python stack to stderr, which the parent reports
    results_fd = os.dup(1)
    os.dup2(2, 1)  # stray writes to stdout by native code must not corrupt the result stream
    jobs = socket.socket(fileno=0)
    results = Connection(results_fd, readable=False)
    init = json.loads(sandbox.receive_job(jobs, HEADER_MAX_BYTES)[0])
    config = resolved_here(config_from_dict(init["config"]))
    spec = PreprocessSpec(**{**init["spec"], "mean": tuple(init["spec"]["mean"]), "std": tuple(init["spec"]["std"])})
    limit = config.limits.max_memory_bytes
    baseline = _vm_bytes() or 0
    if baseline + MIN_HEADROOM_BYTES > limit:
        results.send_bytes(json.dumps({"ready": False, "message": (
            f"limits.max_memory_bytes={limit} is too small: a decode process uses {baseline} bytes of address "
            f"space before decoding anything; allow at least {baseline + MIN_HEADROOM_BYTES}")}).encode())
        return
    sandbox.apply_limits(sandbox.ChildLimits(address_space_bytes=limit, open_files=CHILD_OPEN_FILES))
    try:
        confinement = sandbox.confine()
    except (RuntimeError, OSError) as exc:  # unconfined, a child must not decode uploads
        results.send_bytes(json.dumps({"ready": False, "message": f"decode process cannot confine itself: {exc}"})
                           .encode())
        return
    results.send_bytes(json.dumps({"ready": True, "pid": os.getpid(), "baseline_vm_bytes": baseline,
                                   **dataclasses.asdict(confinement)}).encode())
    # CPU seconds a job may use: its wall-clock budget on every decoder thread (past it, SIGXCPU).
    cpu_s = config.limits.timeout_s * max(1, config.runtime.decode_threads or 1)
    while True:
        try:
            message, fd = sandbox.receive_job(jobs, HEADER_MAX_BYTES)
        except EOFError:
            return
        try:
            sandbox.cpu_budget(cpu_s)
            for reply in answer_job(json.loads(message), config, spec, fd):
                results.send_bytes(reply)
        finally:
            if fd is not None:
                os.close(fd)


def answer_job(job: dict[str, Any], config: Config, spec: PreprocessSpec, fd: int | None) -> list[bytes]:
    """Decode one job (``{"video_id", "path", "strategy"}``, the file read from the open
    descriptor ``fd``) in this child: the wire messages of its result, or one error header
    (``VideoError``; out of memory; any other exception, named with where it was raised)."""
    import traceback

    name = job["path"]
    try:
        return _result_messages(decode_video(job["path"], config, spec, strategy=job.get("strategy", "auto"),
                                             deadline=Deadline(config.limits.timeout_s, name), fd=fd))
    except VideoError as exc:
        return [_error_message(exc)]
    except MemoryError:
        return [_error_message(memory_error(name, config.limits), recycle=True)]
    except Exception as exc:  # noqa: BLE001 - any other failure is this video's, reported with its origin
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{name!r}: {type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
        return [_error_message(VideoError(type(exc).__name__, message, retryable=True))]


@dataclass(frozen=True)
class DecodeJob:
    """One video for the pool: ``path`` is local (already fetched)."""

    video_id: str
    path: str
    strategy: str = "auto"


class _Worker:
    """One decode child: a process group of its own, request/result pipes and a stderr file."""

    def __init__(self, init: bytes, env: dict[str, str]):
        self.init = init
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.requests: socket.socket | None = None
        self.results: Connection | None = None
        self.stderr = None
        self.jobs_done = 0
        self.baseline_vm_bytes = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        jobs, child_jobs = sandbox.job_channel()
        res_read, res_write = os.pipe()
        self.stderr = tempfile.TemporaryFile()
        fd = self.stderr.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)  # truncation-safe
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *CHILD_ARGS],
                stdin=child_jobs, stdout=res_write, stderr=self.stderr, env=self.env, start_new_session=True,
                close_fds=True)
        except BaseException:
            jobs.close()
            raise
        finally:
            child_jobs.close()
            os.close(res_write)
        self.requests = jobs
        self.results = Connection(res_read, writable=False)
        sandbox.send_job(self.requests, self.init)
        self.jobs_done = 0

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the child reports ready; RuntimeError/ValueError when it cannot start."""
        if not self.results.poll(timeout_s):
            self.kill()
            raise RuntimeError(f"decode process did not start within {timeout_s:.0f} s")
        try:
            hello = json.loads(self.results.recv_bytes(HEADER_MAX_BYTES))
        except (EOFError, OSError) as exc:
            tail = self.stderr_tail()
            self.kill()
            raise RuntimeError(f"decode process failed to start: {tail}") from exc
        if not hello.get("ready"):
            self.kill()
            raise ValueError(hello.get("message", "decode process refused to start"))
        self.baseline_vm_bytes = int(hello.get("baseline_vm_bytes", 0))

    def submit(self, job: DecodeJob, fd: int) -> None:
        """Send ``job`` with the open descriptor ``fd`` of its file (the child gets its own copy)."""
        self.stderr.truncate(0)
        sandbox.send_job(self.requests, json.dumps(dataclasses.asdict(job)).encode(), fd)

    def receive(self, max_frame_bytes: int, max_audio_bytes: int, max_ocr_bytes: int,
                max_thumbnail_bytes: int) -> DecodedVideo | VideoError:
        """The child's answer to the submitted job (call once ``results`` is readable)."""
        header = json.loads(self.results.recv_bytes(HEADER_MAX_BYTES))
        self.jobs_done += 1
        if not header["ok"]:
            if header.get("recycle") or self.jobs_done >= MAX_JOBS_PER_WORKER:
                self.kill()
            return VideoError(str(header["error_type"]), str(header["message"]), bool(header["retryable"]))
        shape = tuple(int(d) for d in header["frames_shape"])
        frames = np.frombuffer(self.results.recv_bytes(max_frame_bytes), np.uint8).reshape(shape)
        pts = np.frombuffer(self.results.recv_bytes(4 * shape[0] + 1), np.float32)
        audio = np.frombuffer(self.results.recv_bytes(max_audio_bytes), np.float32)
        ocr_shape = tuple(int(d) for d in header["ocr_shape"])
        ocr_frames = np.frombuffer(self.results.recv_bytes(max_ocr_bytes), np.uint8).reshape(ocr_shape)
        ocr_index = np.frombuffer(self.results.recv_bytes(4 * shape[0] + 1), np.int32)
        thumbnail_index = np.frombuffer(self.results.recv_bytes(4 * shape[0] + 1), np.int32)
        jpegs = self.results.recv_bytes(max_thumbnail_bytes)
        codes = self.results.recv_bytes(max_audio_bytes)  # fewer codes than audio samples (fingerprint.py)
        shot_shape = tuple(int(d) for d in header["shot_shape"])
        if len(shot_shape) != 4 or shot_shape[1:] != (SHOT_SIZE[1], SHOT_SIZE[0], 3) or shot_shape[0] > MAX_SHOT_FRAMES:
            raise ValueError(f"shot frames of shape {shot_shape}")
        shot_frames = np.frombuffer(self.results.recv_bytes(MAX_SHOT_BYTES), np.uint8).reshape(shot_shape)
        shot_pts = np.frombuffer(self.results.recv_bytes(4 * MAX_SHOT_FRAMES + 1), np.float32)
        motion, source = header["motion_score"], header["motion_source"]
        if source not in (None, *MOTION_SOURCES):
            raise ValueError(f"motion source {source!r}")
        pace = Pace(None if motion is None else float(motion), source, shot_frames, shot_pts, int(header["frames_read"]))
        sizes = [int(n) for n in header["thumbnail_bytes"]]
        if (len(pts) != shape[0] or len(audio) != int(header["n_audio"]) or len(ocr_index) != ocr_shape[0]
                or (len(ocr_index) and (ocr_index.min() < 0 or ocr_index.max() >= shape[0]))
                or len(thumbnail_index) != len(sizes) or sum(sizes) != len(jpegs) or min(sizes, default=1) < 1
                or len(codes) % 8
                or (len(thumbnail_index) and (thumbnail_index.min() < 0 or thumbnail_index.max() >= shape[0]))
                or len(shot_pts) != shot_shape[0]):
            raise EOFError("decode process sent inconsistent arrays")
        ends = np.cumsum(sizes)
        thumbnails = tuple(jpegs[end - n:end] for n, end in zip(sizes, ends))
        if self.jobs_done >= MAX_JOBS_PER_WORKER:
            self.kill()
        probe = Probe(**header["probe"])
        stats = DecodeStats(**header["stats"])
        return DecodedVideo(probe, frames, pts, audio, str(header["policy"]), stats, ocr_frames, ocr_index,
                            thumbnails, thumbnail_index, np.frombuffer(codes, "<i8").astype(np.int64), pace)

    def stderr_tail(self, n_bytes: int = 1500) -> str:
        if self.stderr is None:
            return ""
        self.stderr.flush()
        size = self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, size - n_bytes))
        return self.stderr.read().decode("utf-8", "replace").strip()

    def kill(self) -> int | None:
        """Kill the child's process group; returns its exit status (negative: signal)."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            status = self.proc.wait()
        for conn in (self.requests, self.results):
            if conn is not None:
                conn.close()
        self.proc = self.requests = self.results = None
        return status

    def close(self) -> None:
        self.kill()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


def open_job_file(job: DecodeJob) -> int:
    """An open read-only descriptor of ``job.path`` for its child; ``VideoError`` ``NotFound``,
    or ``NotAFile`` for anything but a regular file (a FIFO or device could block or never end)."""
    try:
        fd = os.open(job.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # NONBLOCK: a FIFO must not hang us
    except FileNotFoundError as exc:
        raise VideoError("NotFound", f"{job.path!r} does not exist") from exc
    except OSError as exc:
        raise VideoError("NotFound", f"{job.path!r} cannot be opened: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise VideoError("NotAFile", f"{job.path!r} is not a regular file")
    return fd


class DecodePool:
    """``size`` reusable decode child processes (see the module docstring).

    ``map(jobs)`` decodes jobs concurrently, one per idle child, and returns per job a
    ``DecodedVideo`` or a ``VideoError`` (``Timeout`` retryable after ``limits.timeout_s``;
    ``Crash`` not retryable when the child died). Children start in ``__init__``; ``close``
    (or garbage collection) kills them.
    """

    def __init__(self, config: Config, spec: PreprocessSpec, size: int = 1):
        if size < 1:
            raise ValueError(f"DecodePool size must be >= 1, got {size}")
        self.config = config
        self.size = size
        init = json.dumps({"config": config.to_dict(), "spec": dataclasses.asdict(spec)}).encode()
        self._home = tempfile.TemporaryDirectory(prefix="extract-decode-home-")  # the children's empty HOME
        env = sandbox.child_environment(os.environ, self._home.name)
        self.workers = [_Worker(init, env) for _ in range(size)]
        s = spec.image_size
        self.max_frame_bytes = max(config.sampling.max_frames, config.sampling.min_frames) * s * s * 3 + 1
        self.max_audio_bytes = int((config.limits.max_duration_s + 2 * TRUNCATION_SLACK_S) * AUDIO_RATE) * 4 + 1
        self.max_ocr_bytes = config.ocr.max_frames * config.ocr.max_side ** 2 * 3 + 1
        # a JPEG of a THUMB_SIDE-square picture is far below its raw size
        self.max_thumbnail_bytes = config.output.thumbnails * THUMB_SIDE ** 2 * 3 + 1
        self._finalizer = weakref.finalize(self, DecodePool._close_workers, self.workers, self._home)
        try:
            for worker in self.workers:
                worker.start()
            for worker in self.workers:
                worker.wait_ready(WORKER_START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    @property
    def baseline_vm_bytes(self) -> int:
        """Address space of an idle child (what ``limits.max_memory_bytes`` must exceed)."""
        return max(w.baseline_vm_bytes for w in self.workers)

    def _ensure_started(self, worker: _Worker) -> None:
        if not worker.alive:
            worker.kill()
            worker.start()
            worker.wait_ready(WORKER_START_TIMEOUT_S)

    def map(self, jobs: Iterable[DecodeJob],
            on_result: Callable[[int, DecodedVideo | VideoError], None] | None = None) -> list[DecodedVideo | VideoError]:
        """Decode ``jobs`` on the children; one result or ``VideoError`` per job, in order.

        The next job is taken from ``jobs`` only when a child is idle, so a generator can fetch
        each file just in time while the other children decode. ``on_result(index, result)``
        runs as each job ends (e.g. to delete its fetched file). Raises only when a child cannot
        be (re)started; children busy at that moment are killed, so no stale result reaches a
        later call.
        """
        busy: dict[int, tuple[int, float]] = {}  # worker index -> (job index, kill time)
        try:
            return self._map(iter(jobs), busy, on_result)
        except BaseException:
            for w in busy:
                self.workers[w].kill()
            raise

    def _map(self, jobs: Iterator[DecodeJob], busy: dict[int, tuple[int, float]],
             on_result: Callable[[int, DecodedVideo | VideoError], None] | None) -> list[DecodedVideo | VideoError]:
        results: dict[int, DecodedVideo | VideoError] = {}
        submitted: list[DecodeJob] = []
        exhausted = False
        hard_s = self.config.limits.timeout_s + KILL_GRACE_S
        while not exhausted or busy:
            for w, worker in enumerate(self.workers):
                if w in busy or exhausted:
                    continue
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                submitted.append(job)
                try:
                    fd = open_job_file(job)
                except VideoError as exc:
                    results[len(submitted) - 1] = exc
                    if on_result is not None:
                        on_result(len(submitted) - 1, exc)
                    continue
                try:
                    self._ensure_started(worker)
                    worker.submit(job, fd)
                finally:
                    os.close(fd)
                busy[w] = (len(submitted) - 1, time.monotonic() + hard_s)
            if not busy:
                continue
            soonest = min(kill_at for _, kill_at in busy.values())
            ready = wait([self.workers[w].results for w in busy], timeout=max(0.0, soonest - time.monotonic()))
            for w in list(busy):
                worker = self.workers[w]
                index, kill_at = busy[w]
                job = submitted[index]
                if worker.results in ready:
                    result = self._collect(worker, job)
                elif time.monotonic() >= kill_at:
                    worker.kill()
                    result = VideoError(
                        "Timeout", f"{job.video_id!r}: decoding took longer than limits.timeout_s="
                                   f"{self.config.limits.timeout_s}; its process was killed", retryable=True)
                else:
                    continue
                del busy[w]
                results[index] = result
                if on_result is not None:
                    on_result(index, result)
        return [results[i] for i in range(len(submitted))]

    def _collect(self, worker: _Worker, job: DecodeJob) -> DecodedVideo | VideoError:
        try:
            return worker.receive(self.max_frame_bytes, self.max_audio_bytes, self.max_ocr_bytes,
                                  self.max_thumbnail_bytes)
        except (EOFError, OSError, ValueError, TypeError, KeyError) as exc:
            said = worker.stderr_tail()
            status = worker.kill()
            how = f"signal {signal.Signals(-status).name}" if status is not None and status < 0 else f"exit status {status}"
            if not isinstance(exc, (EOFError, OSError)):
                how = f"a malformed result ({type(exc).__name__}: {exc})"
            if status == -signal.SIGKILL:  # nobody here sends SIGKILL before this point: the kernel's OOM killer
                how += f" (out of memory? limits.max_memory_bytes={self.config.limits.max_memory_bytes})"
            fatal = said.find("Fatal Python error")  # faulthandler's report starts with the reason and stack
            said = said[fatal:fatal + 600] if fatal >= 0 else said[-600:]
            return VideoError("Crash", f"{job.video_id!r}: the decode process died with {how}; "
                                       f"stderr: {said or '(empty)'}", retryable=False)

    def decode(self, job: DecodeJob) -> DecodedVideo:
        """One job; raises its ``VideoError``."""
        result = self.map([job])[0]
        if isinstance(result, VideoError):
            raise result
        return result

    @staticmethod
    def _close_workers(workers: list[_Worker], home: tempfile.TemporaryDirectory) -> None:
        for worker in workers:
            worker.close()
        home.cleanup()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
