"""Decode-child confinement (extract.media.sandbox), checked from inside real confined processes.

Each child is ``tests/sandbox_child.py``, started the way a decode child is: the allow-listed
environment of a parent that holds cloud credentials, a ``SOCK_SEQPACKET`` job socket as stdin,
its own session; it imports numpy, PyAV and the decoder, applies the limits and confines itself,
then runs the checks the test sends it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sandbox_child
from extract.media.video import decode_video
from extract.media import sandbox
from extract.tools.samples import write_clip

CHILD = Path(__file__).resolve().parent / "sandbox_child.py"
SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
           "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp.json", "AZURE_STORAGE_KEY": "key", "HF_TOKEN": "hf_x",
           "HTTPS_PROXY": "http://proxy:3128", "https_proxy": "http://proxy:3128", "RAY_ADDRESS": "10.0.0.1:6379",
           "SOME_NEW_SERVICE_PASSWORD": "pw"}
ADDRESS_SPACE = 1024**3  # the child's RLIMIT_AS: well above its idle size (~210 MiB with av+numpy+decoder)


class ConfinedChild:
    """A running ``sandbox_child.py``; ``ask(check, fd, **fields)`` returns its JSON answer."""

    def __init__(self, home: Path, **init):
        self.jobs, child_end = sandbox.job_channel()
        env = sandbox.child_environment({**os.environ, **SECRETS}, str(home))
        self.proc = subprocess.Popen([sys.executable, str(CHILD)], stdin=child_end.fileno(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        child_end.close()
        init.setdefault("limits", {"address_space_bytes": ADDRESS_SPACE, "cpu_s": 120})
        sandbox.send_job(self.jobs, json.dumps(init).encode())
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise EOFError(f"child ended ({self.proc.returncode}): {self.proc.stderr.read().decode()[-2000:]}")
        return json.loads(line)

    def ask(self, check: str, fd: int | None = None, **fields) -> dict:
        sandbox.send_job(self.jobs, json.dumps({"check": check, **fields}).encode(), fd)
        return self._read()

    def close(self) -> int:
        self.jobs.close()
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    c = ConfinedChild(tmp_path_factory.mktemp("home"))
    yield c
    assert c.close() == 0


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 2.0, 96, 64, 10.0, gop=5)


def _denied(result: dict, errnos: tuple[int, ...] = (1, 13)) -> bool:
    return result["ok"] is False and result["errno"] in errnos


def test_child_reports_its_confinement(child):
    assert child.hello["ready"] and child.hello["seccomp"]
    assert child.hello["landlock_abi"] == sandbox.landlock_abi()  # what this kernel offers (7 on 6.18)


def test_child_environment_holds_no_credentials(child, tmp_path):
    out = child.ask("environment")
    assert all(v is None for v in out["credentials"].values()), out["credentials"]
    allowed = set(sandbox.ENV_FORCED) | {"PATH", "PYTHONPATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "PYTHONHOME",
                                         "LD_LIBRARY_PATH"}
    assert set(out["keys"]) <= allowed | {k for k in out["keys"] if k.startswith("LC_")}
    assert "SOME_NEW_SERVICE_PASSWORD" not in out["keys"]  # an allow-list drops what nobody listed
    assert os.listdir(out["home"]) == []


def test_child_environment_allow_list(tmp_path):
    env = sandbox.child_environment({"PATH": "/bin", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/x", **SECRETS},
                                    str(tmp_path))
    assert env["PATH"] == "/bin" and env["LC_ALL"] == "C.UTF-8" and env["HOME"] == env["TMPDIR"] == str(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [sandbox.package_root(), "/x"]
    assert env["OMP_NUM_THREADS"] == "1" and not set(SECRETS) & set(env)
    assert sandbox.child_environment({}, str(tmp_path))["PATH"] == os.defpath


def test_child_cannot_reach_the_network(child, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix_server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        unix_path = str(tmp_path / "listener.sock")
        unix_server.bind(unix_path)
        unix_server.listen(1)
        out = child.ask("connect", port=server.getsockname()[1], unix_path=unix_path)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing arrived
    assert _denied(out["tcp4"], (1,)) and _denied(out["tcp6"], (1,)) and _denied(out["udp"], (1,)), out
    assert _denied(out["unix_connect"], (1,)), out  # not even the Unix socket of a local service


def test_child_can_open_no_file(child, tmp_path, clip):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    fd = os.open(clip, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = child.ask("files", fd, write_path=str(tmp_path / "new.txt"), victim_path=str(victim))
    finally:
        os.close(fd)
    for name in ("passwd", "listdir", "write", "unlink", "exec", "proc_fd_reopen"):
        assert _denied(out[name], (13,)), (name, out[name])
    assert _denied(out["signal_init"], (1,)) and _denied(out["signal_parent"], (1,)), out
    assert out["handed_fd_read"] == 16  # what it was handed stays readable
    assert victim.read_text() == "keep me" and not (tmp_path / "new.txt").exists()


def test_new_threads_inherit_the_confinement(child):
    out = child.ask("threads")
    assert out["thread_ran"] and _denied(out["files_in_thread"], (13,))


def test_memory_limit_raises_in_the_child_and_it_goes_on(child):
    out = child.ask("memory", allocate_bytes=2 * ADDRESS_SPACE)
    assert out["ok"] is False and out["error"] == "MemoryError"
    assert out["still_computes"] == 499500.0
    assert child.ask("environment")["home"]  # the same child still answers


def test_decode_from_a_received_descriptor(child, clip, tmp_path):
    reference = decode_video(str(clip), sandbox_child.CONFIG, sandbox_child.SPEC)
    copy = tmp_path / "upload.mp4"
    copy.write_bytes(clip.read_bytes())
    fd = os.open(copy, os.O_RDONLY | os.O_CLOEXEC)
    copy.unlink()  # the parent may delete its fetched copy once it holds the descriptor
    try:
        first = child.ask("decode", fd)
        second = child.ask("decode", fd)  # a descriptor left at its end is rewound by descriptor_input
    finally:
        os.close(fd)
    assert first["ok"], first
    assert first["frames_shape"] == list(reference.frames.shape) and reference.frames.shape[1:] == (64, 64, 3)
    assert len(reference.frames) >= 2
    assert first["frames_sum"] == int(reference.frames.astype(np.int64).sum())
    np.testing.assert_allclose(first["pts_s"], reference.pts_s, atol=1e-6)
    assert first["audio_n"] == len(reference.audio) > 30_000
    assert first["audio_sum"] == pytest.approx(float(reference.audio.astype(np.float64).sum()), abs=1e-6)
    assert second == first


def test_cpu_budget_ends_the_child_with_sigxcpu(tmp_path):
    c = ConfinedChild(tmp_path)
    sandbox.send_job(c.jobs, json.dumps({"check": "cpu", "seconds": 1}).encode())
    status = c.close()
    assert status == -signal.SIGXCPU


def test_confine_refuses_a_threaded_process(tmp_path):
    c = ConfinedChild(tmp_path, start_thread_first=True)
    assert c.hello["ready"] is False and "single-threaded" in c.hello["message"]
    c.close()


def test_job_messages_carry_one_descriptor(tmp_path):
    parent, child_end = sandbox.job_channel()
    path = tmp_path / "f.bin"
    path.write_bytes(b"payload")
    with parent, child_end:
        fd = os.open(path, os.O_RDONLY)
        sandbox.send_job(parent, b'{"job": 1}', fd)
        os.close(fd)
        message, received = sandbox.receive_job(child_end, 1024)
        assert message == b'{"job": 1}' and os.pread(received, 7, 0) == b"payload"
        os.close(received)
        sandbox.send_job(parent, b"no descriptor")
        assert sandbox.receive_job(child_end, 1024) == (b"no descriptor", None)
        sandbox.send_job(parent, b"x" * 100)
        with pytest.raises(ValueError, match="malformed"):
            sandbox.receive_job(child_end, 10)
        with pytest.raises(ValueError, match="empty"):
            sandbox.send_job(parent, b"")
        parent.close()
        with pytest.raises(EOFError):
            sandbox.receive_job(child_end, 1024)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="address_space_bytes"):
        sandbox.ChildLimits(1024)
    with pytest.raises(ValueError, match="cpu_s"):
        sandbox.ChildLimits(2**30, cpu_s=0)
    with pytest.raises(ValueError, match="open_files"):
        sandbox.ChildLimits(2**30, open_files=3)


def _header_numbers(path: Path) -> dict[str, int]:
    text = path.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", text)}


@pytest.mark.parametrize("machine,header", [("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
                                            ("aarch64", "/usr/include/asm-generic/unistd.h")])
def test_syscall_numbers_match_the_kernel_headers(machine, header):
    if not Path(header).exists():
        pytest.skip(f"{header} is not installed")
    numbers = _header_numbers(Path(header))
    newest = max(numbers.values())
    for name in sandbox.SYSCALLS:
        ours = sandbox.syscall_number(name, machine)
        if name in numbers or ours is None:
            assert ours == numbers.get(name), name
        else:  # a call newer than these headers (fchmodat2, Linux 6.6) comes after all of theirs
            assert ours > newest, name


@pytest.mark.parametrize("machine", sorted(sandbox.ARCHES))
def test_seccomp_program_is_well_formed(machine):
    prog = sandbox.seccomp_program(machine, 4242)
    assert len(prog) < 4096  # BPF_MAXINSNS
    assert prog[0] == (0x20, 0, 0, 4) and prog[1][3] == sandbox.ARCHES[machine][1]  # the arch is checked first
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:  # a jump lands inside the program
            assert i + 1 + max(jt, jf) < len(prog)
    assert prog[-1] == (0x06, 0, 0, 0x7FFF0000)


def test_a_real_decode_child_holds_nothing_worth_stealing(tmp_path, clip, monkeypatch):
    """Inside a ``DecodeStage``'s own child (the package's spawn, environment, limits and
    confinement; only its job handler swapped by ``tests/decode_crash.py``): credential variables
    set in the parent are absent, a loopback TCP connect and opening ``/etc/passwd`` fail (both
    work from this test process), allocating past ``limits.max_memory_bytes`` fails, the input
    arrives as a descriptor, and the video is one error row; the next video decodes."""
    from decode_crash import CREDENTIAL_VARIABLES, crashing_child_args

    from extract.config import Config
    from extract.media import isolation
    from extract.rows import batch_to_rows, rows_to_batch
    from extract.stages.decode import DecodeStage

    import media

    for name in CREDENTIAL_VARIABLES:
        monkeypatch.setenv(name, f"secret-{name}")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):  # the port is open to an unconfined process
        pass
    assert open("/etc/passwd").read()
    monkeypatch.setattr(isolation, "CHILD_ARGS", crashing_child_args(["escape"], "escape", port))
    stage = DecodeStage(Config().replace(**{"models.clip.pretrained": None, "limits.max_memory_bytes": ADDRESS_SPACE}))
    try:
        escape, after = batch_to_rows(stage(rows_to_batch([media.source_row("escape", clip),
                                                           media.source_row("after", clip)])))
    finally:
        stage.close()
        listener.close()
    assert (escape["error_stage"], escape["error_type"]) == ("decode", "SandboxReport")
    report = json.loads(escape["error_message"])
    assert report["credentials"] == {name: None for name in CREDENTIAL_VARIABLES}
    assert not [k for k in report["environment"] if k.startswith(("AWS_", "GOOGLE_", "AZURE_", "RAY_"))]
    assert report["connect"]["ok"] is False and report["connect"]["errno"] == errno.EPERM
    assert report["passwd"]["ok"] is False and report["passwd"]["errno"] in (errno.EACCES, errno.EPERM)
    assert report["allocate"] == {"ok": False, "error": "MemoryError", "errno": None}
    assert bytes.fromhex(report["input_head"])[4:8] == b"ftyp"  # the MP4 it was handed, read by descriptor
    assert after["error_stage"] is None and after["n_frames"] == 4
