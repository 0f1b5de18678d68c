"""A real multi-node Ray cluster on this machine, for the scale-out tests (not the in-process Ray).

Each node is its own ``ray start --block`` (a head, then workers joining with ``--address``),
with its own temp dir, ports and resources, bound to 127.0.0.1. Every node runs in its own
session, so ``Node.kill()`` takes down exactly that node - raylet, object manager, agents and
the worker processes - with SIGKILL, as a machine that loses power would, while the other
nodes live on. ``ray stop`` is never used: it stops every Ray process of the user on the host.

    with LocalCluster(tmp, head_cpus=2) as cluster:
        cluster.add_worker(cpus=2, resources={"accel": 1})
        cluster.wait_for_nodes(2)
        cluster.ray("job", "submit", "--working-dir", REPO, "--", "python", "-m", "jobs.daily", ...)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the venv's `ray`, whatever its shebang says
HOST = "127.0.0.2"  # loopback; Ray turns 127.0.0.1 into the host's public address, not other 127.x
WORKER_PORTS = 40  # worker processes' port range per node


def free_ports(n: int, avoid: set[int] = frozenset()) -> list[int]:
    """``n`` distinct free TCP ports on loopback, none of ``avoid`` (held open together while
    chosen)."""
    socks = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind((HOST, 0))
            if s.getsockname()[1] in avoid:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_range(n: int, avoid: set[int] = frozenset()) -> int:
    """First port of ``n`` consecutive free loopback ports, none of ``avoid`` (Ray refuses a
    worker port range that holds another component's port)."""
    for _ in range(200):
        start = free_ports(1)[0]
        if start + n > 65000 or avoid & set(range(start, start + n)):
            continue
        try:
            socks = []
            for port in range(start, start + n):
                s = socket.socket()
                socks.append(s)
                s.bind((HOST, port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports on {HOST}")


def ray_env(token: str) -> dict[str, str]:
    """The environment of every ``ray`` process of a cluster: its own auth token (not the user's
    ``~/.ray/auth_token``), no inherited cluster address or Ray settings, no usage stats."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    return env


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def process_tree(pid: int) -> list[int]:
    """``pid``, its descendants and every process of its session (a node's processes)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return sorted(set(out) | set(_session_members(pid)))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Node:
    """One ``ray start --block`` process (its own session) and the ports it was given."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    node_manager_port: int
    log: Path
    resources: dict[str, float] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return [p for p in process_tree(self.proc.pid) if alive(p)]

    def kill(self, timeout: float = 30.0) -> list[int]:
        """SIGKILL every process of this node at once (raylet, agents, workers); returns their pids."""
        pids = self.pids()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            try:
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        left = [p for p in pids if alive(p)]
        if left:
            raise RuntimeError(f"node {self.name}: processes {left} survived SIGKILL")
        return pids


class LocalCluster:
    """A head and worker nodes started with ``ray start`` on 127.0.0.1; stopped (every process
    of every node killed) on exit, also when the test failed. ``root`` holds the nodes' temp
    dirs (a short path: Ray's unix sockets live there) and logs."""

    def __init__(self, root: Path | None = None, head_cpus: float = 1, head_resources: dict | None = None,
                 object_store_bytes: int = 150 * 1024**2):
        self.root = Path(tempfile.mkdtemp(prefix="rc", dir=root or "/tmp"))
        self.object_store_bytes = object_store_bytes
        self.token = secrets.token_hex(32)
        self.nodes: list[Node] = []
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.taken = {self.gcs_port, self.dashboard_port, self.client_port}  # every port given to a node
        self.address = f"{HOST}:{self.gcs_port}"
        self.dashboard = f"http://{HOST}:{self.dashboard_port}"
        self._head_args = ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                           f"--ray-client-server-port={self.client_port}", "--include-dashboard=true",
                           f"--dashboard-host={HOST}"]
        self._head_cpus, self._head_resources = head_cpus, head_resources or {}

    def __enter__(self) -> "LocalCluster":
        try:
            self._start("head", self._head_cpus, self._head_resources, self._head_args)
            self.wait_for_dashboard()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def add_worker(self, cpus: float, resources: dict[str, float] | None = None) -> Node:
        """Start a worker node joining the head with ``cpus`` CPUs and custom ``resources``."""
        return self._start(f"worker{len(self.nodes)}", cpus, resources or {}, [f"--address={self.address}"])

    def _start(self, name: str, cpus: float, resources: dict[str, float], role_args: list[str]) -> Node:
        temp_dir = self.root / name[0] / str(len(self.nodes))  # short: AF_UNIX paths are limited to 107 bytes
        temp_dir.mkdir(parents=True)
        nm, om, agent_http, agent_grpc, env_agent, metrics = ports = free_ports(6, self.taken)
        self.taken.update(ports)
        first_worker_port = free_port_range(WORKER_PORTS, self.taken)
        self.taken.update(range(first_worker_port, first_worker_port + WORKER_PORTS))
        # A marker resource (1 unit of the node's name) matches the state API's nodes to Node objects.
        args = [*role_args, f"--node-ip-address={HOST}", f"--num-cpus={cpus:g}", "--num-gpus=0",
                f"--resources={json.dumps({**resources, name: 1})}", f"--temp-dir={temp_dir}",
                f"--node-manager-port={nm}", f"--object-manager-port={om}",
                f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
                f"--min-worker-port={first_worker_port}", f"--max-worker-port={first_worker_port + WORKER_PORTS - 1}",
                f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats", "--block"]
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([*RAY, "start", *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=ray_env(self.token), start_new_session=True, cwd=self.root)
        node = Node(name, proc, temp_dir, nm, log, dict(resources, CPU=cpus))
        self.nodes.append(node)
        return node

    def ray(self, *args: str, timeout: float = 120, cwd: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``ray ARGS`` against this cluster (``RAY_ADDRESS`` = the dashboard); output captured."""
        full_env = dict(ray_env(self.token), RAY_ADDRESS=self.dashboard, **(env or {}))
        result = subprocess.run([*RAY, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or self.root,
                                env=full_env)
        if check and result.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
                               f"\n{self.logs_tail()}")
        return result

    def state(self, kind: str) -> list[dict]:
        """``ray list KIND`` (nodes, actors, ...) as dicts, from the head's state API."""
        out = self.ray("list", kind, "--format=json", "--limit=1000", "--detail").stdout
        return json.loads(out[out.index("["):]) if "[" in out else []  # "No resource in the cluster"

    def alive_nodes(self) -> list[dict]:
        return [n for n in self.state("nodes") if n.get("state") == "ALIVE"]

    def node_by_id(self) -> dict[str, Node]:
        """Ray node id -> the Node it is (by its marker resource)."""
        return {n["node_id"]: node for n in self.state("nodes") for node in self.nodes
                if node.name in n["resources_total"]}

    def wait_until_dead(self, node: Node, timeout: float = 120) -> None:
        """Wait until the head marks ``node`` dead (missed health checks after a kill)."""
        deadline = time.monotonic() + timeout
        while any(node.name in n["resources_total"] for n in self.alive_nodes()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the head still lists {node.name} as alive {timeout:g} s after it was killed")
            time.sleep(2)

    def get(self, path: str, timeout: float = 10) -> dict:
        """GET ``path`` from the head's dashboard (the job and state API) with the cluster's token."""
        request = urllib.request.Request(f"{self.dashboard}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def wait_for_dashboard(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/api/version", timeout=2)
                return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if self.head.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the head's dashboard did not come up at {self.dashboard}\n{self.logs_tail()}")
            time.sleep(1)

    def wait_for_nodes(self, n: int, timeout: float = 180) -> list[dict]:
        """Wait until ``n`` nodes are alive (head included); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.alive_nodes()
            if len(nodes) >= n:
                return nodes
            dead = [node.name for node in self.nodes if node.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{len(nodes)} of {n} Ray nodes alive (exited: {dead})\n{self.logs_tail()}")
            time.sleep(1)

    def logs_tail(self, chars: int = 3000) -> str:
        parts = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            parts.append(f"--- {node.name} ({node.log})\n{text[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Kill every process of every node (workers first), then delete ``root``: nothing of
        this cluster is left."""
        errors = []
        for node in reversed(self.nodes):
            try:
                node.kill()
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))
        shutil.rmtree(self.root, ignore_errors=True)
