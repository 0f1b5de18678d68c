"""Confinement of a decode child: what it may read, reach and use once it decodes untrusted media.

A decode child (``DecodePool``) parses uploads with FFmpeg. If a crafted file takes control of
it, it must find nothing worth stealing and reach nothing. The parent and the child share the
work as follows:

- **Environment** (parent, at spawn): ``child_environment`` is an allow-list (``PATH``,
  ``LANG``/``LANGUAGE``/``LC_*``, ``TZ``, ``PYTHONPATH`` with the package root,
  ``PYTHONHOME``/``LD_LIBRARY_PATH`` where set, thread counts forced to 1, ``HOME`` and
  ``TMPDIR`` an empty folder). Everything else is dropped: cloud credentials (``AWS_*``,
  ``GOOGLE_*``, ``AZURE_*``), tokens, proxies, ``RAY_*``, and variables nobody has thought of.
- **Input** (parent, per job): the parent opens the fetched file and hands the child the open
  descriptor over a ``SOCK_SEQPACKET`` socket pair (``send_job`` / ``receive_job``: one message
  per job, the descriptor attached as ``SCM_RIGHTS``). The child opens no path and needs no
  storage credentials; FFmpeg reads the descriptor through its ``fd`` protocol
  (``descriptor_input``).
- **Resource limits** (child, ``apply_limits``): ``RLIMIT_AS`` (address space), ``RLIMIT_CPU``
  (a lifetime hard limit; ``cpu_budget`` sets the soft limit per job, whose excess sends
  ``SIGXCPU``), ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE`` (the only regular file it writes is its
  stderr file) and ``RLIMIT_CORE`` = 0. ``RLIMIT_NPROC`` is left alone: it counts every process
  and thread of the user on the machine, not the child's, so in a container where the Ray
  workers share the uid any useful value would break FFmpeg's thread creation at random.
- **Confinement** (child, ``confine``, after every import and before the first job):

  * *seccomp* (always; a BPF filter installed with ``PR_SET_NO_NEW_PRIVS`` and
    ``seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)``). It checks the architecture (x86_64 or
    aarch64, the filter is built from that machine's syscall numbers; any other ABI, e.g.
    32-bit compat calls or x32, is refused) and then: ``socket()`` fails with ``EPERM`` for
    every family but ``AF_UNIX``; ``connect``/``bind``/``listen``/``accept`` fail with ``EPERM``
    for every socket (so not even a Unix socket such as a container runtime's or the raylet's
    can be reached; the child's only socket is the one it inherited); the ``open`` family
    (``open``, ``openat``, ``openat2``, ``creat``, ``open_by_handle_at``) and the path-changing
    calls (unlink, rename, mkdir, link, chmod, chown, mknod, truncate) fail with ``EACCES``;
    ``execve`` fails; io_uring (which would bypass the filter), ptrace, ``process_vm_*``, bpf,
    perf events, userfaultfd, mounts, namespaces, keyrings and kernel modules fail with
    ``EPERM``; signals may go only to the child's own process (or its own process group, which
    ``start_new_session`` makes its own).
  * *Landlock* (where the kernel offers it, Linux >= 5.13 with the LSM enabled; ABI 7 on this
    machine's 6.18 kernel): a ruleset that handles every file-system right of the kernel's ABI
    with no rule at all, so no path can be read, written, executed or listed (including
    ``/proc/self/fd/N`` re-opens); from ABI 4 TCP bind/connect too, from ABI 6 abstract Unix
    sockets and signals to processes outside the sandbox. It covers calls the seccomp list
    does not name (any new path-taking syscall); where it is missing, seccomp still blocks
    opening, exec and path changes.

Why seccomp and not a network namespace: ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` needs
unprivileged user namespaces, which Kubernetes pods (the default seccomp profile of containerd
and Docker refuses ``unshare`` and ``clone`` with namespace flags), hardened distributions
(``kernel.unprivileged_userns_clone=0``, Ubuntu 24.04's AppArmor restriction) and many managed
node images forbid. A seccomp filter under ``no_new_privs`` needs no privilege on any Linux
with ``CONFIG_SECCOMP_FILTER`` (every distribution kernel), applies to root too, and filters
a process that is already running. Landlock is likewise unprivileged, and the container
runtimes' default profiles allow its syscalls; it is added when present rather than required.

Limits of this: the child keeps what it was handed (its input descriptor, its pipes, its
stderr file) and may compute for its CPU and memory budget; reading, writing and connecting
elsewhere are what it loses. Filters and Landlock apply to the calling thread and its future
threads; ``confine`` therefore refuses to run once the process has more than one thread
(import numpy with its thread variables at 1, as ``child_environment`` sets).
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import math
import os
import pkgutil
import platform
import resource
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

# --------------------------------------------------------------------------- environment

ENV_ALLOWED = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONHOME", "LD_LIBRARY_PATH")
ENV_ALLOWED_PREFIXES = ("LC_",)
# One decode per core: no BLAS/OpenMP thread pools (they would also start threads before
# ``confine``); few malloc arenas keep the address space (RLIMIT_AS) honest.
ENV_FORCED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONNOUSERSITE": "1",
              "PYTHONDONTWRITEBYTECODE": "1"}


def package_root() -> str:
    """The folder that holds the ``extract`` package (put first on the child's ``PYTHONPATH``)."""
    return str(Path(__file__).resolve().parent.parent.parent)


def child_environment(parent_env: Mapping[str, str], home: str) -> dict[str, str]:
    """The environment of a decode child: the allow-list of the module docstring.

    ``home`` is an empty folder (the parent makes one per pool) that becomes ``HOME`` and
    ``TMPDIR``, so no library finds the user's dotfiles or credentials files there.
    """
    env = {k: v for k, v in parent_env.items()
           if k in ENV_ALLOWED or any(k.startswith(p) for p in ENV_ALLOWED_PREFIXES)}
    paths = [package_root()] + [p for p in parent_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(ENV_FORCED, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), HOME=home, TMPDIR=home)
    env.setdefault("PATH", os.defpath)
    return env


# --------------------------------------------------------------------------- resource limits


@dataclass(frozen=True)
class ChildLimits:
    """Resource limits of one decode child.

    ``address_space_bytes``: ``RLIMIT_AS`` (bytes, all mappings together). ``cpu_s``: the
    lifetime hard ``RLIMIT_CPU`` in CPU seconds (None: unlimited; the per-job soft limit comes
    from ``cpu_budget``). ``open_files``: ``RLIMIT_NOFILE``. ``file_size_bytes``:
    ``RLIMIT_FSIZE``, the largest regular file the child may write (its stderr file).
    """

    address_space_bytes: int
    cpu_s: float | None = None
    open_files: int = 64
    file_size_bytes: int = 64 * 1024**2

    def __post_init__(self) -> None:
        self._verify()

    def _verify(self) -> None:
        if self.address_space_bytes < 64 * 1024**2:
            raise ValueError(f"address_space_bytes must be >= 64 MiB, got {self.address_space_bytes}")
        if self.cpu_s is not None and not self.cpu_s > 0:
            raise ValueError(f"cpu_s must be > 0 or None, got {self.cpu_s}")
        if self.open_files < 16:  # stdio, the job socket, the result pipe, the input and FFmpeg's dup of it
            raise ValueError(f"open_files must be >= 16, got {self.open_files}")
        if self.file_size_bytes < 1024**2:
            raise ValueError(f"file_size_bytes must be >= 1 MiB, got {self.file_size_bytes}")


def apply_limits(limits: ChildLimits) -> None:
    """Apply ``limits`` to this process (soft = hard, so the child cannot raise them; the CPU
    soft limit starts at the hard one until ``cpu_budget`` lowers it)."""
    cpu = resource.RLIM_INFINITY if limits.cpu_s is None else math.ceil(limits.cpu_s)
    for which, value in ((resource.RLIMIT_AS, limits.address_space_bytes), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_NOFILE, limits.open_files),
                         (resource.RLIMIT_FSIZE, limits.file_size_bytes), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


def cpu_used_s() -> float:
    """CPU seconds (user + system) this process has used so far, all threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_budget(seconds: float) -> int:
    """Let this process use ``seconds`` more CPU seconds (all threads) before ``SIGXCPU``.

    Sets the soft ``RLIMIT_CPU`` to the CPU used so far plus ``seconds`` (whole seconds,
    rounded up, at most the hard limit); call it before each job. Returns the new soft limit.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(cpu_used_s() + seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return soft


# --------------------------------------------------------------------------- passing the input

JOB_SOCKET_TYPE = socket.SOCK_SEQPACKET  # message boundaries kept, a descriptor rides with its job
FFMPEG_PROTOCOL = "fd"  # what probe.open_input's protocol_whitelist must allow for a descriptor


def job_channel() -> tuple[socket.socket, socket.socket]:
    """A connected ``(parent end, child end)`` pair for job messages with descriptors.

    The child end becomes the child's stdin (``Popen(stdin=child_end)``); the parent closes
    its copy of the child end after the spawn. A message must fit the socket's send buffer
    (about 200 KiB by default), which a job header and the init message do.
    """
    return socket.socketpair(socket.AF_UNIX, JOB_SOCKET_TYPE)


def send_job(sock: socket.socket, message: bytes, fd: int | None = None) -> None:
    """Send one message, with the open descriptor ``fd`` attached (the receiver gets its own
    copy; the sender may close ``fd`` right after)."""
    if not message:
        raise ValueError("a job message must not be empty (an empty message means end of jobs)")
    if fd is None:
        sock.sendall(message)
    else:
        socket.send_fds(sock, [message], [fd])


def receive_job(sock: socket.socket, max_bytes: int) -> tuple[bytes, int | None]:
    """One message from ``send_job`` and its descriptor (None if it came without one).

    Raises ``EOFError`` when the sender closed the socket and ``ValueError`` for a message
    longer than ``max_bytes`` or with more than one descriptor (those are closed).
    """
    message, fds, flags, _ = socket.recv_fds(sock, max_bytes, 2)
    if not message and not fds:
        raise EOFError("the job socket was closed")
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) > 1:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"malformed job message (over {max_bytes} bytes or several descriptors)")
    return message, (fds[0] if fds else None)


def descriptor_input(fd: int) -> tuple[str, dict[str, str]]:
    """``(url, container options)`` for ``av.open`` to read the open file ``fd``.

    FFmpeg's ``fd`` protocol reads a duplicate of ``fd``, which shares its file offset, so the
    descriptor is rewound here: call this before every open, and keep one container open on a
    descriptor at a time. Merge the options with the others (``protocol_whitelist`` must be
    ``FFMPEG_PROTOCOL``).
    """
    os.lseek(fd, 0, os.SEEK_SET)
    return "fd:", {"fd": str(fd)}


# --------------------------------------------------------------------------- seccomp

# Syscall numbers: (x86_64, aarch64); None where the architecture lacks the call (aarch64 has
# only the *at forms). From <asm/unistd_64.h> and <asm-generic/unistd.h>; tests/test_sandbox.py
# checks them against those headers where they are installed.
SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    "socket": (41, 198), "connect": (42, 203), "bind": (49, 200), "listen": (50, 201), "accept": (43, 202),
    "accept4": (288, 242),
    "open": (2, None), "creat": (85, None), "openat": (257, 56), "openat2": (437, 437),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264),
    "unlink": (87, None), "unlinkat": (263, 35), "rename": (82, None), "renameat": (264, 38),
    "renameat2": (316, 276), "mkdir": (83, None), "mkdirat": (258, 34), "rmdir": (84, None),
    "link": (86, None), "linkat": (265, 37), "symlink": (88, None), "symlinkat": (266, 36),
    "truncate": (76, 45), "chmod": (90, None), "fchmod": (91, 52), "fchmodat": (268, 53),
    "fchmodat2": (452, 452), "chown": (92, None), "lchown": (94, None), "fchown": (93, 55),
    "fchownat": (260, 54), "mknod": (133, None), "mknodat": (259, 33),
    "execve": (59, 221), "execveat": (322, 281),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "fsopen": (430, 430), "fsmount": (432, 432), "move_mount": (429, 429), "open_tree": (428, 428),
    "unshare": (272, 97), "setns": (308, 268),
    "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106), "kexec_load": (246, 104),
    "pidfd_open": (434, 434), "pidfd_getfd": (438, 438), "pidfd_send_signal": (424, 424), "tkill": (200, 130),
    "kill": (62, 129), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240),
    "seccomp": (317, 277), "landlock_create_ruleset": (444, 444), "landlock_add_rule": (445, 445),
    "landlock_restrict_self": (446, 446),
}
ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}  # machine -> (column, AUDIT_ARCH_*)
X32_SYSCALL_BIT = 0x40000000  # x86_64: syscalls of the x32 ABI carry this bit

NETWORK_CALLS = ("connect", "bind", "listen", "accept", "accept4")  # socket(): only AF_UNIX, see below
FILE_CALLS = ("open", "creat", "openat", "openat2", "open_by_handle_at", "name_to_handle_at",
              "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link",
              "linkat", "symlink", "symlinkat", "truncate", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown",
              "lchown", "fchown", "fchownat", "mknod", "mknodat", "execve", "execveat")
KERNEL_CALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "process_vm_readv",
                "process_vm_writev", "bpf", "perf_event_open", "userfaultfd", "mount", "umount2", "pivot_root",
                "chroot", "fsopen", "fsmount", "move_mount", "open_tree", "unshare", "setns", "add_key",
                "request_key", "keyctl", "init_module", "finit_module", "delete_module", "kexec_load",
                "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "tkill")
SELF_SIGNAL_CALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # first argument: the target

# BPF (linux/filter.h, linux/seccomp.h)
_LD_ABS_W, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; arguments' low words (little-endian)
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _machine() -> str:
    machine = platform.machine()
    if machine not in ARCHES:
        raise OSError(errno.ENOSYS, f"the decode sandbox knows the syscalls of x86_64 and aarch64, not {machine}")
    return machine


def syscall_number(name: str, machine: str | None = None) -> int | None:
    """The number of syscall ``name`` on ``machine`` (default: this one); None if it has none."""
    return SYSCALLS[name][ARCHES[machine or _machine()][0]]


def seccomp_program(machine: str, own_pid: int) -> list[tuple[int, int, int, int]]:
    """The BPF filter of the module docstring as ``(code, jt, jf, k)`` instructions.

    ``own_pid``: the only process (besides its own group, 0) that the signal calls may target.
    """
    column, audit_arch = ARCHES[machine]
    prog = [(_LD_ABS_W, 0, 0, _OFF_ARCH), (_JEQ_K, 1, 0, audit_arch), (_RET_K, 0, 0, _RET_KILL_PROCESS),
            (_LD_ABS_W, 0, 0, _OFF_NR)]
    if machine == "x86_64":
        prog += [(_JGE_K, 0, 1, X32_SYSCALL_BIT), (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)]

    def deny(names: tuple[str, ...], code: int) -> None:
        for name in names:
            nr = SYSCALLS[name][column]
            if nr is not None:
                prog.extend([(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, _RET_ERRNO | code)])

    deny(NETWORK_CALLS, errno.EPERM)
    deny(FILE_CALLS, errno.EACCES)
    deny(KERNEL_CALLS, errno.EPERM)
    # socket(family, ...): AF_UNIX only. The accumulator holds the number on every path that
    # reaches the next check, because each branch that loads an argument ends in a return.
    prog += [(_JEQ_K, 0, 4, SYSCALLS["socket"][column]), (_LD_ABS_W, 0, 0, _OFF_ARG0),
             (_JEQ_K, 0, 1, socket.AF_UNIX), (_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)]
    for name in SELF_SIGNAL_CALLS:
        prog += [(_JEQ_K, 0, 5, SYSCALLS[name][column]), (_LD_ABS_W, 0, 0, _OFF_ARG0),
                 (_JEQ_K, 2, 0, own_pid), (_JEQ_K, 1, 0, 0), (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
                 (_RET_K, 0, 0, _RET_ALLOW)]
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    return prog


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def install_seccomp() -> None:
    """Install the filter of ``seccomp_program`` on every thread of this process (irreversible)."""
    machine = _machine()
    insns = seccomp_program(machine, os.getpid())
    program = (_SockFilter * len(insns))(*[_SockFilter(*i) for i in insns])
    fprog = _SockFprog(len(insns), program)
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.syscall(syscall_number("seccomp", machine), _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC,
                         ctypes.byref(fprog)), "seccomp(SECCOMP_SET_MODE_FILTER)")


# --------------------------------------------------------------------------- Landlock

_LANDLOCK_CREATE_RULESET_VERSION = 1
# handled_access_fs by ABI: 13 rights in ABI 1, REFER (2), TRUNCATE (3), IOCTL_DEV (5)
_LANDLOCK_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_LANDLOCK_NET_RIGHTS = 0b11  # BIND_TCP | CONNECT_TCP, ABI 4
_LANDLOCK_SCOPES = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL, ABI 6


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    try:
        nr = syscall_number("landlock_create_ruleset")
    except OSError:
        return 0
    version = _libc.syscall(nr, None, ctypes.c_size_t(0), ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def install_landlock() -> int:
    """Deny this thread (and its future threads and children) every file-system right of the
    kernel's Landlock ABI, plus TCP and outside signals/abstract sockets where the ABI has them.
    Returns the ABI used; 0 (nothing done) where Landlock is unavailable. Needs no_new_privs."""
    abi = landlock_abi()
    if abi == 0:
        return 0
    fs = _LANDLOCK_FS_RIGHTS[max(k for k in _LANDLOCK_FS_RIGHTS if k <= abi)]
    fields = [fs] + ([_LANDLOCK_NET_RIGHTS] if abi >= 4 else []) + ([_LANDLOCK_SCOPES] if abi >= 6 else [])
    attr = ctypes.create_string_buffer(struct.pack(f"<{len(fields)}Q", *fields), 8 * len(fields))
    machine = _machine()
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    ruleset = _check(_libc.syscall(syscall_number("landlock_create_ruleset", machine), attr,
                                   ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        _check(_libc.syscall(syscall_number("landlock_restrict_self", machine), ctypes.c_int(ruleset),
                             ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


PRELOAD_PACKAGES = ("av",)  # imported whole before confinement (see import_submodules)


@dataclass(frozen=True)
class Confinement:
    """What ``confine`` applied: ``landlock_abi`` 0 means seccomp alone guards the files."""

    seccomp: bool
    landlock_abi: int


def thread_count() -> int:
    """Threads of this process (``/proc/self/task``)."""
    return len(os.listdir("/proc/self/task"))


def import_submodules(package: str) -> int:
    """Import ``package`` and every module under it; returns how many modules that was.

    A confined process can import nothing from disk, and PyAV imports some of its modules
    only when a container first needs them (``av.subtitles`` at the first open), so the
    decoder's packages are loaded whole beforehand (PyAV: ~60 modules, ~30 ms, ~3 MB).
    """
    root = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(getattr(root, "__path__", []), package + ".")]
    for name in names:
        importlib.import_module(name)
    return 1 + len(names)


def confine(preload: tuple[str, ...] = PRELOAD_PACKAGES) -> Confinement:
    """Confine this process for good: Landlock where available, then the seccomp filter.

    First imports every module of the ``preload`` packages (``import_submodules``) and PIL's
    common image plugins; every other import the decoding needs must have happened before (nothing can be read from disk
    afterwards; tracebacks then show no source lines). Needs a single-threaded process.
    Raises ``RuntimeError`` with several threads and ``OSError`` when seccomp cannot be
    installed (a child must then refuse to decode).
    """
    for package in preload:
        import_submodules(package)
    from PIL import Image

    Image.preinit()  # PIL's common plugins (JPEG: the thumbnails; PIL also makes the pHash thumbnails)
    threads = thread_count()
    if threads != 1:
        raise RuntimeError(f"confine() needs a single-threaded process, this one has {threads} threads "
                           "(start it with child_environment, which sets the thread pools to 1)")
    abi = install_landlock()
    install_seccomp()
    return Confinement(seccomp=True, landlock_abi=abi)
