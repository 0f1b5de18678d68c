"""Reliability of the job as a whole: hostile manifests, crashes, kills, failing stores, full
disks, broken checkpoints, memory. The cases and their status are in tests/RELIABILITY.md.

Three kinds of test:

- in-process, no Ray: the driver (``run_job``) with an ``execute`` of its own (``run_job(backend=...)``): a replay of
  real stage outputs computed once in this process (``replay``), so its writing and commit can
  be faulted at every file operation through a ``pyarrow.fs.PyFileSystem`` wrapper (a kill, a
  full disk) or a fault-injecting HTTP proxy in front of the S3 test server;
- ``extract run`` as a subprocess on the tiny models (the hostile manifest, a broken checkpoint);
- slow (``make test``; not ``make check``): real Ray runs through a harness script that wraps the real model
  stages to crash on a video, record actor pids for ``kill -9`` or push a payload through the
  driver for the memory measurement.
"""

from __future__ import annotations

import errno
import http.client
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import media
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_cli
from extract.tables import catalog as catalog_module
from extract.tables import writer as writer_module
from extract.tables.catalog import DELTA_LOG, RUNS_DIR, STAGING_DIR, Catalog
from extract.tables.writer import CommitIncompleteError
from extract.config import StorageConfig, load_config
from extract.pipeline import ray_backend
from extract.pipeline.job import run_job
from extract.pipeline.manifest import read_source
from extract.pipeline.executor import MAX_CRASH_RERUNS, Backend, run_stages
from extract.pipeline.ray_backend import StageStartError, TimedStage
from extract.rows import batch_to_rows, rows_to_batch
from extract.stages.registry import stage_classes
from extract.tables.schemas import TABLES

LOCAL_YAML = REPO / "jobs" / "configs" / "local.yaml"
# Files of a Delta table: data files under dt= partitions (delta-rs names them part-<n>-<uuid>)
# and the log; nothing is named after a video id.
DELTA_FILE = re.compile(r"^(%s)/(dt=\d{4}-\d{2}-\d{2}/part-[0-9]+-[0-9a-f-]+-c000\.zstd\.parquet|_delta_log/"
                        r"([0-9]{20}\.(json|checkpoint\.parquet)|_last_checkpoint))$" % "|".join(TABLES))


# --------------------------------------------------------------------------- shared helpers


def _write_jsonl(path: Path, records: list) -> Path:
    """One JSON value per line; a ``str`` record is written as is (for broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def visible_state(dst: str, storage: StorageConfig | None = None) -> dict[str, list[tuple[str, str]]]:
    """What a ``Catalog`` reader sees: per table, sorted ``(video_id, run_id)`` of its rows."""
    catalog = Catalog(dst, storage or StorageConfig())
    state = {}
    for table in TABLES:
        data = catalog.read(table, ["video_id", "run_id"])
        state[table] = sorted(zip(data["video_id"].to_pylist(), data["run_id"].to_pylist())) if data else []
    return state


def logged_files(catalog: Catalog, table: str) -> set[str]:
    """Every data file any commit of ``table``'s Delta log added (absolute paths)."""
    selector = pafs.FileSelector(f"{catalog.root}/{table}/{DELTA_LOG}", allow_not_found=True)
    added = set()
    for info in catalog.fs.get_file_info(selector):
        if info.path.endswith(".json") and not info.path.endswith("_last_checkpoint"):
            with catalog.fs.open_input_stream(info.path) as fh:
                for line in fh.read().decode().splitlines():
                    action = json.loads(line) if line.strip() else {}
                    if "add" in action:
                        added.add(f"{catalog.root}/{table}/{action['add']['path']}")
    return added


def assert_exactly_once(dst: str, ids: list[str], storage: StorageConfig | None = None) -> None:
    """Every id in exactly one of videos/errors, frame rows match n_frames, no pending commit,
    and no data file that no Delta commit added (a leftover no reader could account for)."""
    catalog = Catalog(dst, storage or StorageConfig())
    videos = catalog.read("videos")
    errors = catalog.read("errors")
    got = (videos["video_id"].to_pylist() if videos is not None else []) + \
          (errors["video_id"].to_pylist() if errors is not None else [])
    assert sorted(got) == sorted(ids), Counter(got) - Counter(ids) or Counter(ids) - Counter(got)
    if videos is not None:
        frames = catalog.read("frame_embeddings")
        assert (frames.num_rows if frames is not None else 0) == sum(videos["n_frames"].to_pylist())
    for table in TABLES:
        logged = logged_files(catalog, table)
        selector = pafs.FileSelector(f"{catalog.root}/{table}", recursive=True, allow_not_found=True)
        for info in catalog.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and f"/{DELTA_LOG}/" not in info.path:
                assert info.path in logged, f"stray file {info.path}"
    staged = catalog.fs.get_file_info(pafs.FileSelector(f"{catalog.root}/{STAGING_DIR}", recursive=True,
                                                        allow_not_found=True))
    assert not [i.path for i in staged if i.path.endswith(writer_module.COMMIT_MARKER)], "a commit left pending"


# --------------------------------------------------------------------------- replayed stages


@dataclass
class Replay:
    """Real stage outputs of ``manifest`` (tiny models, computed once in this process) and an
    ``execute`` stand-in for ``ray_backend.execute`` that hands them back in batches."""

    manifest: Path
    config: Any
    ids: list[str]
    finished: dict[str, dict[str, Any]]

    def execute(self, rows, config, stages=None, events=None, *, batch_size: int = 2):
        """``ray_backend.execute``'s parameters (the CLI's backend passes ``events`` fourth)."""
        def batches():
            for start in range(0, len(rows), batch_size):
                yield rows_to_batch([dict(self.finished[r["video_id"]]) for r in rows[start:start + batch_size]])

        return batches(), {"replayed": True}


@pytest.fixture(scope="module")
def replay(tmp_path_factory, small_samples, tiny_config) -> Replay:
    d = tmp_path_factory.mktemp("replay")
    # Two of the sample clips: one with speech (transcript segments), one silent; plus a missing file.
    records = [json.loads(line) for line in small_samples.read_text().splitlines()]
    records = [r for r in records if r["video_id"] in ("portrait_dance", "silent_loop")]
    for record in records:
        record["uri"] = str((small_samples.parent / record["uri"]).resolve())
    records.append({"video_id": "gone", "uri": str(d / "gone.mp4"), "caption": "lost #gone"})
    manifest = _write_jsonl(d / "manifest.jsonl", records)
    # The manifest sits apart from the sample clips it names: allow both folders.
    allowed = json.dumps([str(small_samples.parent.resolve()), str(d)])
    config = load_config([LOCAL_YAML, tiny_config], ["limits.max_error_rate=1.0", f"input.allowed_uris={allowed}"])
    rows = read_source(str(manifest), config.storage, allowed_uris=config.input.allowed_uris)
    stages = [TimedStage(cls, name, config) for name, cls in stage_classes().items()]
    try:
        batch = rows_to_batch(rows)
        for stage in stages:
            batch = stage(batch)
    finally:
        stages[0].stage.close()
    finished = {row["video_id"]: row for row in batch_to_rows(batch)}
    assert finished["gone"]["error_type"] == "NotFound" and finished["portrait_dance"]["error_stage"] is None
    return Replay(manifest, config, [r["video_id"] for r in rows], finished)


# --------------------------------------------------------------------------- a faulty file system


class Killed(BaseException):
    """The simulated ``kill -9`` of the driver: not an Exception, so no handler swallows it."""


class FaultyFileSystem(pafs.FileSystemHandler):
    """Local files with object-store semantics (a written file appears whole at close, like an
    S3 PUT), counting changes, and able to fail: after ``die_at`` changes every call raises
    ``Killed`` (the process is gone, so its own clean-up cannot run either); past
    ``quota_bytes`` of written data a write raises ``OSError(ENOSPC)``."""

    def __init__(self, die_at: int | None = None, quota_bytes: int | None = None):
        self.local = pafs.LocalFileSystem()
        self.die_at = die_at
        self.quota_bytes = quota_bytes
        self.changes = 0
        self.written = 0
        self.dead = False

    def _alive(self) -> None:
        if self.dead:
            raise Killed("the driver is dead")

    def _change(self) -> None:
        self._alive()
        self.changes += 1
        if self.die_at is not None and self.changes >= self.die_at:
            self.dead = True
            raise Killed(f"killed at file-system change {self.changes}")

    def charge(self, n_bytes: int) -> None:
        self._alive()
        if self.quota_bytes is not None and self.written + n_bytes > self.quota_bytes:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self.written += n_bytes

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self):
        return "faulty-local"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        self._alive()
        return self.local.get_file_info(paths)

    get_file_info_selector = get_file_info  # pyarrow's get_file_info takes paths or a FileSelector

    def create_dir(self, path, recursive):
        self._change()
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self._change()
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._change()
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the root")

    def delete_file(self, path):
        self._change()
        self.local.delete_file(path)

    def move(self, src, dest):
        self._change()
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self._change()
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        self._alive()
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        self._alive()
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self._change()
        return pa.PythonFile(_AtomicSink(self, path), mode="w")

    def open_append_stream(self, path, metadata):
        raise OSError("append is not used by the writer")


class _AtomicSink(io.RawIOBase):
    """Buffers a file; at close it appears whole (temp file + rename) or not at all."""

    def __init__(self, fs: FaultyFileSystem, path: str):
        super().__init__()
        self.fs, self.path, self.buffer = fs, path, io.BytesIO()

    def writable(self):
        return True

    def write(self, data):
        self.fs.charge(len(data))
        return self.buffer.write(data)

    def close(self):
        if self.closed:
            return
        try:
            self.fs._change()
            if not os.path.isdir(os.path.dirname(self.path)):
                return  # its folder was deleted meanwhile (an aborted run): the file goes with it
            tmp = f"{self.path}.partial-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(self.buffer.getvalue())
            os.replace(tmp, self.path)
        finally:
            super().close()


_REAL_COMMIT_TABLE = writer_module._commit_table


def _use_filesystem(monkeypatch, handler: FaultyFileSystem) -> None:
    """Make ``Catalog`` (and so the writer) of a local DST go through ``handler``; each Delta
    table commit (delta-rs writes on its own, not through pyarrow) counts as a change just
    before and just after it, so a kill can land on either side of every table commit."""
    from extract.io.storage import filesystem_for as real

    def filesystem_for(uri, storage=None):
        fs, path = real(uri, storage)
        return (pafs.PyFileSystem(handler), path) if isinstance(fs, pafs.LocalFileSystem) else (fs, path)

    def commit_table(*args, **kwargs):
        handler._change()
        _REAL_COMMIT_TABLE(*args, **kwargs)
        handler._change()

    monkeypatch.setattr(catalog_module, "filesystem_for", filesystem_for)
    monkeypatch.setattr(writer_module, "_commit_table", commit_table)


# --------------------------------------------------------------------------- a faulty object store


HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of the S3 test server that fails chosen requests.

    ``plan(method, path, n)`` (``n``: earlier requests with this method and path) returns None
    to forward the request, ``("status", code, s3_code)`` to answer with an S3 error,
    ``("reset",)`` to drop the connection, or ``("stall", seconds)`` to answer nothing for that
    long. ``log`` holds ``(method, path, monotonic time, action)`` per request.
    """

    def __init__(self, upstream: str, plan: Callable[[str, str, int], tuple | None]):
        host, port = upstream.split("://", 1)[1].split(":")
        self.plan = plan
        self.log: list[tuple[str, str, float, tuple | None]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body()
                with outer._lock:
                    n = sum(1 for m, p, _, _ in outer.log if (m, p) == (self.command, self.path))
                    action = outer.plan(self.command, self.path, n)
                    outer.log.append((self.command, self.path, time.monotonic(), action))
                if action is not None and action[0] == "status":
                    payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{action[2]}</Code>"
                               "<Message>injected by the test proxy</Message></Error>").encode()
                    self.send_response(action[1])
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action is not None:
                    if action[0] == "stall":
                        time.sleep(action[1])
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                upstream_conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS | {"content-length"}}
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    # A HEAD answer keeps the object's Content-Length; bodies get their own.
                    if key.lower() not in HOP_HEADERS and (key.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self, method: str, path_part: str = "") -> list[tuple[str, str, float, tuple | None]]:
        return [entry for entry in self.log if entry[0] == method and path_part in entry[1]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_factory(s3_server):
    proxies = []

    def make(plan):
        proxies.append(FaultProxy(s3_server, plan))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def _bucket(endpoint: str, name: str):
    """A boto3 client of the S3 test server, with bucket ``name`` created if missing."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    if name not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=name)
    return client


@pytest.fixture
def decode_from_store(proxy_factory, s3_server, tmp_path):
    """``decode(bucket, video_ids, plan)``: upload a 2 s silent clip as ``s3://<bucket>/<id>.mp4``
    per id, then run the decode stage on those ids through a ``FaultProxy`` following ``plan``;
    returns the decoded rows (in ``video_ids`` order), the stage's wall seconds and the proxy."""
    from extract.stages.decode import DecodeStage

    clip = media.small_clip(tmp_path / "clip.mp4", 2.0, audio=None)

    def decode(bucket: str, video_ids: tuple[str, ...], plan: Callable[[str, str, int], tuple | None]):
        client = _bucket(s3_server, bucket)
        for vid in video_ids:
            client.upload_file(str(clip), bucket, f"{vid}.mp4")
        proxy = proxy_factory(plan)
        config = load_config([], [f"storage.s3_endpoint={proxy.endpoint}", "models.clip.pretrained=null"])
        stage = DecodeStage(config)
        try:
            start = time.monotonic()
            rows = batch_to_rows(stage(rows_to_batch([media.source_row(vid, f"s3://{bucket}/{vid}.mp4")
                                                      for vid in video_ids])))
            elapsed = time.monotonic() - start
        finally:
            stage.close()
        return rows, elapsed, proxy

    return decode


# =========================================================================== fast tests


def test_hostile_manifest_values_never_break_the_run(tmp_path):
    """Manifest-level cases that need no decoding: each row is a source row, the invalid ones
    carry a readable error naming the row and column, and every string can be stored."""
    big_caption = ("ab\x00\x1b[31m\u202e #tag " * 90_000)[:1_000_000]
    records = [
        {"video_id": "a/b/../../c", "uri": "a.mp4", "caption": big_caption, "upload_ts": "yesterday"},
        {"video_id": "surrogate\ud800", "uri": "b.mp4"},
        {"video_id": "bad-uri", "uri": "x\udc80.mp4"},
        {"video_id": "cap", "uri": "c.mp4", "caption": "half \ud83d emoji", "upload_ts": 1e30},
        {"video_id": "a/b/../../c", "uri": "dup.mp4"},
        {"video_id": "nul\x00", "uri": "d.mp4"},
        {"video_id": "w" * 513, "uri": "e.mp4"},
        {"video_id": "", "uri": "f.mp4"},
        {"video_id": None, "uri": "g.mp4"},
        {"caption": "no id, no uri"},
        "[1, 2, 3]",
        "{\"video_id\": \"truncated",
        {"video_id": 42, "uri": "h.mp4", "upload_ts": "2026-02-30T00:00:00Z"},
    ]
    raw = _write_jsonl(tmp_path / "m.jsonl", records).read_bytes()
    (tmp_path / "m.jsonl").write_bytes(raw + b'{"video_id": "latin1-\xe9", "uri": "i.mp4"}\n')
    rows = read_source(str(tmp_path / "m.jsonl"))
    assert len(rows) == len(records) + 1
    by_line = {i + 1: row for i, row in enumerate(rows)}
    assert by_line[1]["error_stage"] is None and by_line[1]["video_id"] == "a/b/../../c"
    assert by_line[1]["caption"] == big_caption and by_line[1]["upload_ts"] is None and by_line[1]["ts_warning"]
    assert "not valid UTF-8" in by_line[2]["error_message"] and by_line[2]["video_id"] == "surrogate\ufffd"
    assert "uri" in by_line[3]["error_message"] and "not valid UTF-8" in by_line[3]["error_message"]
    assert by_line[4]["error_stage"] is None and by_line[4]["caption"] == "half \ufffd emoji"
    assert "duplicate video_id" in by_line[5]["error_message"] and "row 5" in by_line[5]["error_message"]
    assert "control characters" in by_line[6]["error_message"]
    assert "over 512" in by_line[7]["error_message"]
    for line in (8, 9, 10):
        assert "no 'video_id'" in by_line[line]["error_message"] and f"row {line}" in by_line[line]["error_message"]
    assert "not a JSON object" in by_line[11]["error_message"]
    assert "not valid JSON" in by_line[12]["error_message"]
    assert by_line[13]["video_id"] == "42" and by_line[13]["ts_warning"]
    assert by_line[14]["video_id"] == "latin1-\ufffd" and by_line[14]["error_stage"] is None
    for row in rows:
        for key in ("video_id", "uri", "caption", "error_message"):
            if row[key] is not None:
                row[key].encode("utf-8")  # storable in Parquet
        assert row["error_stage"] in (None, "manifest")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_missing_a_required_column_names_row_and_column(tmp_path, fmt):
    if fmt == "csv":
        (tmp_path / "m.csv").write_text("video_id,caption\nv1,hello\nv2,\n")
    else:
        pq.write_table(pa.table({"uri": ["a.mp4", "b.mp4"], "caption": ["x", None]}), tmp_path / "m.parquet")
    rows = read_source(str(tmp_path / f"m.{fmt}"))
    missing = "uri" if fmt == "csv" else "video_id"
    assert [r["error_type"] for r in rows] == ["InvalidInput", "InvalidInput"]
    for n, row in enumerate(rows, start=1):
        assert f"row {n}" in row["error_message"] and f"no {missing!r}" in row["error_message"]


class _Exited(BaseException):
    """Stands in for the process ending (``os._exit``) in the test below."""


def test_a_poisoned_cuda_context_ends_the_worker_other_errors_propagate(monkeypatch):
    """``TimedStage`` (the Ray actor's body) ends its process on a CUDA error that poisons the
    context, whether the stage raised ``DeviceLostError`` or the raw error: Ray counts that as a
    crashed worker, restarts it and retries the batch. Other exceptions propagate unchanged."""
    from extract.rows import DeviceLostError

    exits = []

    def fake_exit(code):
        exits.append(code)
        raise _Exited

    monkeypatch.setattr(ray_backend.os, "_exit", fake_exit)
    for error in (DeviceLostError("CLIP frames failed on cuda ..."),
                  RuntimeError("CUDA error: an illegal memory access was encountered")):
        class Failing:
            def __init__(self, config):
                pass

            def __call__(self, batch, _error=error):
                raise _error

        with pytest.raises(_Exited):
            ray_backend.TimedStage(Failing, "clip", None)({"video_id": ["a"]})
    assert exits == [ray_backend.DEVICE_LOST_EXIT_CODE] * 2

    class Buggy:
        def __init__(self, config):
            pass

        def __call__(self, batch):
            raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        ray_backend.TimedStage(Buggy, "clip", None)({"video_id": ["a"]})
    assert len(exits) == 2


def ray_crashes(execute) -> Backend:
    """``execute`` with the Ray backend's reading of exceptions (worker crash, start failure)."""
    return Backend(execute, ray_backend.is_worker_crash, ray_backend.stage_start_failure)


def test_worker_crashes_are_pinned_on_their_videos(monkeypatch):
    """``run_stages`` without Ray: an ``execute`` that crashes (``ActorDiedError``, as
    Ray raises after its retries) whenever a batch holds a poison video. Every video comes back
    once, each poison video as a ``Crash`` row; groups being split run without Ray retries, a
    lone video with the configured ones; the number of re-runs stays logarithmic."""
    import ray.exceptions

    from extract.config import Config

    poison = {"v13", "v40"}
    calls = []

    def execute(rows, config, stages=None):
        calls.append((len(rows), config.runtime.max_task_retries))

        def batches():
            for start in range(0, len(rows), 4):
                batch = rows[start:start + 4]
                if poison & {r["video_id"] for r in batch}:
                    raise ray.exceptions.ActorDiedError()
                yield rows_to_batch([dict(r, done=True) for r in batch])

        return batches(), {"pools": "fake"}
    todo = [{"video_id": f"v{i}", "uri": f"v{i}.mp4"} for i in range(64)]
    config = Config().replace(**{"runtime.max_task_retries": 2})
    finished = run_stages(todo, config, None, ray_crashes(execute))
    out = [row for rows in finished for row in rows]
    assert sorted(r["video_id"] for r in out) == sorted(r["video_id"] for r in todo)
    crashed = {r["video_id"]: r for r in out if r.get("error_type")}
    assert set(crashed) == poison
    assert all(r["error_stage"] == "pipeline" and r["retryable"] is False and "3 attempts" in r["error_message"]
               for r in crashed.values())
    assert finished.resources == {"pools": "fake"} and finished.crash_reruns == len(calls) - 1 <= 4 * 6
    assert finished.lost == []
    assert calls[0] == (64, 2)
    assert all(retries == (2 if n == 1 else 0) for n, retries in calls[1:])


def test_crash_pinning_is_bounded_and_other_failures_are_not_retried(monkeypatch):
    import ray.exceptions

    from extract.config import Config

    def always_crash(rows, config, stages=None):
        def batches():
            raise ray.exceptions.WorkerCrashedError()
            yield  # pragma: no cover - makes this a generator

        return batches(), {}

    todo = [{"video_id": f"v{i}", "uri": "x"} for i in range(10_000)]
    finished = run_stages(todo, Config(), None, ray_crashes(always_crash))
    with pytest.raises(RuntimeError, match="kept crashing"):
        list(finished)
    assert finished.crash_reruns <= MAX_CRASH_RERUNS

    def bug(rows, config, stages=None):
        raise ValueError("a stage raised")

    finished = run_stages(todo, Config(), None, ray_crashes(bug))
    with pytest.raises(ValueError, match="a stage raised"):
        list(finished)
    assert finished.crash_reruns == 0

    def init_fails(rows, config, stages=None):
        task_error = ray.exceptions.RayTaskError("__init__", "Traceback ...\nextract.models.common.ModelLoadError: models."
                                                 "whisper.name: cannot load Whisper checkpoint /ckpt/w.pt", ValueError())
        raise ray.exceptions.ActorDiedError(task_error)

    with pytest.raises(StageStartError, match="/ckpt/w.pt"):
        list(run_stages(todo, Config(), None, ray_crashes(init_fails)))


# The "dead" driver lives on in this process: its open Parquet writers are garbage-collected
# later and their close fails against the dead file system, which pytest reports as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_at_every_file_operation_publishes_all_or_nothing(replay, tmp_path, monkeypatch):
    """The driver dies (nothing of it runs any more) at each file-system change, and on either
    side of each Delta table commit, of a first run and of an ``--overwrite`` run that replaces
    committed rows. A ``Catalog`` reader sees the state before the run or the whole run, never
    a mix; the next run rolls a half-committed run forward and completes with every manifest
    row exactly once and no leftovers."""
    src = str(replay.manifest)

    def run(dst, run_id, overwrite=False, fs=None):
        _use_filesystem(monkeypatch, fs or FaultyFileSystem())
        try:
            return run_job(src, str(dst), replay.config, overwrite=overwrite, progress=False, backend=Backend(replay.execute), run_id=run_id)
        finally:
            _use_filesystem(monkeypatch, FaultyFileSystem())  # readers after a kill see a healthy disk

    scenarios = []
    for overwrite in (False, True):
        clean = tmp_path / f"clean-{overwrite}"
        if overwrite:
            run(clean, "r1-base")
        before = visible_state(str(clean))
        counter = FaultyFileSystem()
        run(clean, "r2-new", overwrite, counter)
        scenarios.append((overwrite, before, visible_state(str(clean)), counter.changes))
    assert scenarios[0][3] > 10 and scenarios[1][3] >= scenarios[0][3]  # replacing rows is in the commits

    for overwrite, before, after, n_changes in scenarios:
        assert before != after
        for k in range(1, n_changes + 1):
            dst = tmp_path / f"kill-{overwrite}-{k}"
            if overwrite:
                run(dst, "r1-base")
            with pytest.raises(Killed):
                run(dst, "r2-new", overwrite, FaultyFileSystem(die_at=k))
            state = visible_state(str(dst))
            assert state in (before, after), f"kill at change {k} (overwrite={overwrite}) left a mixed state"
            record = run(dst, "r3-next", overwrite=False)
            assert record["status"] == "committed"
            assert_exactly_once(str(dst), replay.ids)


def test_replay_is_called_as_the_ray_backend_is():
    """``Replay.execute`` stands in for ``ray_backend.execute``: the same positional parameters
    (the CLI's backend passes ``events`` fourth; a stand-in that took a batch size there failed
    every CLI run here with a TypeError)."""
    import inspect

    real = list(inspect.signature(ray_backend.execute).parameters)
    stand_in = [name for name, p in inspect.signature(Replay.execute).parameters.items()
                if p.kind is not p.KEYWORD_ONLY]
    assert stand_in[1:] == real  # after ``self``


def test_disk_full_on_staging_fails_cleanly(replay, tiny_config, tmp_path, monkeypatch, capsys):
    """ENOSPC while staging: ``extract run`` exits 1 saying nothing was published, no run
    record and no table data file exists, staging is gone, and the next run commits everything."""
    from extract.cli import main
    monkeypatch.setattr(ray_backend, "execute", replay.execute)  # the CLI's run_job uses the backend's
    dst = tmp_path / "out"
    full = FaultyFileSystem(quota_bytes=4096)
    _use_filesystem(monkeypatch, full)
    config_args = ["--config", str(LOCAL_YAML), "--config", str(tiny_config), "--set", "limits.max_error_rate=1.0"]
    rc = main(["run", "--input", str(replay.manifest), "--output", str(dst), "--no-progress", *config_args])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing was published" in err and "No space left on device" in err, err
    assert full.written > 0
    assert not list(dst.glob(f"{RUNS_DIR}/*.json")), list(dst.rglob("*"))
    assert not [p for p in dst.rglob("*.parquet") if DELTA_LOG not in p.parts], list(dst.rglob("*"))
    assert not (dst / STAGING_DIR).exists() or not any((dst / STAGING_DIR).iterdir())

    _use_filesystem(monkeypatch, FaultyFileSystem())
    rc = main(["run", "--input", str(replay.manifest), "--output", str(dst), "--no-progress", *config_args])
    assert rc == 0, capsys.readouterr().err
    assert_exactly_once(str(dst), replay.ids)


def test_store_reads_are_retried_with_backoff_then_recorded(decode_from_store):
    """Through a proxy in front of the S3 server: a GET that fails twice (503 SlowDown, then a
    reset connection) is retried and the video decodes; a GET that always fails is tried a
    bounded number of times with growing pauses and becomes a retryable ``StoreError`` row."""

    def plan(method, path, n):
        if method == "GET" and path.startswith("/reads/flaky.mp4"):
            return [("status", 503, "SlowDown"), ("reset",)][n] if n < 2 else None
        if method == "GET" and path.startswith("/reads/down.mp4"):
            return ("status", 503, "SlowDown")
        return None

    (flaky, down), elapsed, proxy = decode_from_store("reads", ("flaky", "down"), plan)
    assert flaky["error_stage"] is None and flaky["n_frames"] == 4
    assert len(proxy.requests("GET", "/reads/flaky.mp4")) == 3
    assert (down["error_stage"], down["error_type"], down["retryable"]) == ("decode", "StoreError", True)
    assert "s3://reads/down.mp4" in down["error_message"] and "retry" in down["error_message"]
    attempts = [t for _, _, t, _ in proxy.requests("GET", "/reads/down.mp4")]
    assert 3 <= len(attempts) <= 10, len(attempts)
    assert attempts[-1] - attempts[0] > 0.3, "no backoff between attempts"
    assert elapsed < 60


def test_store_write_faults_are_retried_or_fail_the_run_unpublished(replay, proxy_factory, s3_server, monkeypatch):
    """Output on S3 behind the proxy. Transient PUT failures are retried and the run commits.
    When the run record cannot be written (every PUT under ``_runs/`` fails) the run fails
    after its table commits: a Catalog reader sees nothing, and the next run rolls it forward
    (writes its record) and commits."""
    client = _bucket(s3_server, "writes")

    def run(proxy, prefix):
        config = replay.config.replace(**{"storage.s3_endpoint": proxy.endpoint})
        return run_job(str(replay.manifest), f"s3://writes/{prefix}", config, progress=False, backend=Backend(replay.execute))

    flaky = proxy_factory(lambda method, path, n: ("status", 503, "SlowDown")
                          if method == "PUT" and n == 0 and ("/videos/" in path or f"/{RUNS_DIR}/" in path) else None)
    record = run(flaky, "flaky")
    storage = StorageConfig(s3_endpoint=s3_server)
    assert record["status"] == "committed"
    assert_exactly_once("s3://writes/flaky", replay.ids, storage)
    failed_puts = [e for e in flaky.requests("PUT") if e[3]]
    assert len(failed_puts) >= 2  # the first PUT of a videos file and of the run record, retried

    broken = proxy_factory(lambda method, path, n: ("status", 500, "InternalError")
                           if method == "PUT" and f"/{RUNS_DIR}/" in path else None)
    with pytest.raises(CommitIncompleteError, match="OSError") as failure:  # every table, no record
        run(broken, "broken")
    assert failure.value.published and not failure.value.unpublished
    assert visible_state("s3://writes/broken", storage) == {t: [] for t in TABLES}
    assert not client.list_objects_v2(Bucket="writes", Prefix=f"broken/{RUNS_DIR}/").get("Contents")
    healthy = proxy_factory(lambda method, path, n: None)
    assert len(run(healthy, "broken")["rolled_forward"]) == 1
    assert_exactly_once("s3://writes/broken", replay.ids, storage)


# --------------------------------------------------------------------------- end to end (subprocess)


def _cli_run(src, dst, tiny_config, *extra, env=None, timeout=600):
    return run_cli("run", "--input", str(src), "--output", str(dst), "--config", str(LOCAL_YAML),
                   "--config", str(tiny_config), "--no-progress", *extra, env=env, timeout=timeout)


def _crashing_cli_run(crash_ids, src, dst, tiny_config, *extra, timeout=600):
    """``_cli_run`` whose decode children abort on ``crash_ids`` (``tests/decode_crash.py``)."""
    args = ["run", "--input", str(src), "--output", str(dst), "--config", str(LOCAL_YAML),
            "--config", str(tiny_config), "--no-progress", *extra]
    return subprocess.run([sys.executable, str(REPO / "tests" / "decode_crash.py"), "cli", ",".join(crash_ids), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO)))


def test_hostile_manifest_end_to_end(tmp_path, tiny_config):
    """One ``extract run`` over a manifest of hostile ids, captions and files, with one video
    whose decode process aborts every time (``tests/decode_crash.py``), and rows pointing outside
    the manifest's folder (``input.allowed_uris``). Every manifest row ends in exactly one
    of videos/errors, ids never become paths, nothing outside DST is written, the playlist's
    target is never opened, and the run commits."""
    media_dir, private = tmp_path / "uploads" / "media", tmp_path / "private"
    media_dir.mkdir(parents=True)
    private.mkdir()
    clip = str(media.small_clip(media_dir / "clip.mp4", 2.0, audio=None))
    canary = media.FifoCanary(media_dir / "secret.mp4")
    outside = media.FifoCanary(private / "outside.mp4")  # beside the uploads folder: never to be read
    (media_dir / "link.mp4").symlink_to(outside.path)
    playlist = media_dir / "list.mp4"
    playlist.write_text(f"#EXTM3U\n#EXTINF:2,\nfile://{canary.path}\n#EXT-X-ENDLIST\n")
    big_caption = ("x\x00\x07\u202e #fyp " * 100_000)[:1_000_000]
    records = [
        {"video_id": "../../escape", "uri": clip, "caption": big_caption},
        {"video_id": "a/b/c", "uri": clip, "caption": "#one #two", "upload_ts": "2026-01-02T03:04:05Z"},
        {"video_id": "日本語 🎬 video", "uri": clip, "upload_ts": "yesterday"},
        {"video_id": "L" * 512, "uri": clip, "upload_ts": 1767225600},
        {"video_id": "L" * 513, "uri": clip},
        {"video_id": "nul\x00id", "uri": clip},
        {"video_id": "surrogate\ud800", "uri": clip},
        {"video_id": "a/b/c", "uri": clip},
        {"uri": clip},
        {"video_id": "no-uri"},
        {"video_id": "crash-me", "uri": clip},
        {"video_id": "playlist", "uri": str(playlist)},
        {"video_id": "empty", "uri": str(media.zero_byte_file(media_dir / "empty.mp4"))},
        {"video_id": "web", "uri": "http://127.0.0.1:9/v.mp4"},
        "{not json",
        {"video_id": "caption-surrogate", "uri": clip, "caption": "broken \ud83d emoji"},
        {"video_id": "passwd", "uri": "/etc/passwd"},
        {"video_id": "dotdot", "uri": "../private/outside.mp4"},
        {"video_id": "symlink-out", "uri": "media/link.mp4"},
        {"video_id": "bucket", "uri": "s3://someone-else/v.mp4"},
    ]
    manifest = _write_jsonl(tmp_path / "uploads" / "manifest.jsonl", records)
    dst = tmp_path / "out"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        proc = _crashing_cli_run(["crash-me"], manifest, dst, tiny_config, "--set", "limits.max_error_rate=1.0")
    finally:
        canary.close()
        outside.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert canary.opened == 0, "the playlist's entry was opened"
    assert outside.opened == 0, "a file outside the manifest's folder was opened"

    catalog = Catalog(str(dst))
    (run,) = catalog.runs
    videos = catalog.read("videos").to_pylist()
    errors = catalog.read("errors").to_pylist()
    assert len(videos) + len(errors) == len(records)
    ok = {v["video_id"]: v for v in videos}
    assert set(ok) == {"../../escape", "a/b/c", "日本語 🎬 video", "L" * 512, "caption-surrogate"}
    # A playlist named .mp4 reaches the mov demuxer (broken MP4) or is refused as HLS.
    err = Counter((e["video_id"], e["stage"], "Refused" if e["video_id"] == "playlist" and e["error_type"] in (
        "DecodeError", "UnsupportedFormat") else e["error_type"]) for e in errors)
    assert err == Counter({
        ("L" * 513, "manifest", "InvalidInput"): 1, ("nul\x00id", "manifest", "InvalidInput"): 1,
        ("surrogate\ufffd", "manifest", "InvalidInput"): 1, ("a/b/c", "manifest", "InvalidInput"): 1,
        ("", "manifest", "InvalidInput"): 2, ("no-uri", "manifest", "InvalidInput"): 1,
        ("crash-me", "decode", "Crash"): 1, ("playlist", "decode", "Refused"): 1,
        ("empty", "decode", "UnsupportedFormat"): 1, ("web", "manifest", "InvalidInput"): 1,
        ("passwd", "manifest", "InputNotAllowed"): 1, ("dotdot", "manifest", "InputNotAllowed"): 1,
        ("symlink-out", "manifest", "InputNotAllowed"): 1, ("bucket", "manifest", "InputNotAllowed"): 1})
    assert all("input.allowed_uris" in e["message"] for e in errors if e["error_type"] == "InputNotAllowed")
    crash = next(e for e in errors if e["video_id"] == "crash-me")
    assert "SIGABRT" in crash["message"] and crash["retryable"] is False
    assert ok["../../escape"]["caption"] == big_caption[:10_000] and ok["../../escape"]["caption_truncated"]
    assert ok["caption-surrogate"]["caption"] == "broken \ufffd emoji"
    assert ok["日本語 🎬 video"]["upload_ts"] is None and ok["a/b/c"]["dt"] == "2026-01-02"
    assert run["counts"]["invalid_upload_ts"] == 1 and run["counts"]["errors"] == len(errors)

    for path in dst.rglob("*"):  # ids never became paths
        if path.is_file():
            rel = str(path.relative_to(dst))
            assert DELTA_FILE.match(rel) or rel in (f"{RUNS_DIR}/{run['run_id']}.json",
                                                    f"{RUNS_DIR}/{run['run_id']}.html",
                                                    f"{RUNS_DIR}/{run['run_id']}.log"), rel  # record, report, log
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.is_relative_to(dst))
    assert after == before, set(after) ^ set(before)


@pytest.mark.slow
@pytest.mark.stress
def test_corrupt_checkpoint_fails_before_any_video(tmp_path, tiny_config):
    """A truncated Whisper checkpoint (an interrupted copy): the driver's check fails the run
    (exit 1) naming the file before Ray starts, publishes nothing and never reads a video: the
    clip's access time (older than its modification time, so relatime would update it on any
    read) stays where the test set it."""
    clip = media.small_clip(tmp_path / "clip.mp4", 2.0, audio=None)
    manifest = _write_jsonl(tmp_path / "m.jsonl", [{"video_id": "v", "uri": str(clip)}])
    whisper = Path(load_config([tiny_config]).models.whisper.name)
    corrupt = tmp_path / "whisper-corrupt.pt"
    corrupt.write_bytes(whisper.read_bytes()[:1000])
    mtime = os.stat(clip).st_mtime_ns
    stamp = mtime - 3600 * 10**9
    os.utime(clip, ns=(stamp, mtime))
    proc = _cli_run(manifest, tmp_path / "out", tiny_config, "--set", f"models.whisper.name={corrupt}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "nothing was published" in proc.stderr and str(corrupt) in last, proc.stderr[-3000:]
    assert not list((tmp_path / "out").glob(f"{RUNS_DIR}/*.json"))  # no run record (its log is there)
    assert os.stat(clip).st_atime_ns == stamp, "a video was read before the models loaded"
    clip.read_bytes()
    if os.stat(clip).st_atime_ns == stamp:  # the canary is only proof where reads update atime
        pytest.skip("this file system does not record reads in atime")


# =========================================================================== slow: real Ray runs

HARNESS = r'''
"""Runs run_job with the real stages, the CLIP stage wrapped to crash on chosen videos, record its
actor pid and calls, sleep per call, or add a payload column (test harness, see the test module)."""
import json, os, sys, time

import numpy as np

from extract.stages.clip import ClipStage
from extract.config import load_config
from extract.pipeline.job import run_job
from extract.stages.registry import stage_classes

ARGS = json.loads(sys.argv[1])
CRASH = set(ARGS.get("crash_ids", []))
RECORD = ARGS.get("record_dir")
DELAY = float(ARGS.get("delay_s", 0))
PAYLOAD = int(ARGS.get("payload_bytes", 0))
DEVICE_LOST = set(ARGS.get("device_lost_ids", []))


class WrappedClip(ClipStage):
    def __init__(self, config):
        super().__init__(config)
        if RECORD:
            with open(os.path.join(RECORD, f"clip-{os.getpid()}.pid"), "w") as fh:
                fh.write(str(os.getpid()))
        if DEVICE_LOST:  # the first actor's CUDA context "breaks" on these videos' frames; a new process is fine
            encode = self.embedder._encode_images
            poisoned = os.path.join(RECORD, "poisoned")

            def encode_images(frames):
                if os.path.exists(poisoned) or DEVICE_LOST & set(self._batch_ids):
                    open(poisoned, "a").close()
                    if not os.path.exists(poisoned + f".{os.getpid()}.restarted"):
                        raise RuntimeError("CUDA error: an illegal memory access was encountered")
                return encode(frames)

            self.embedder._encode_images = encode_images
            if os.path.exists(poisoned):  # a restarted actor: its context is fresh
                open(poisoned + f".{os.getpid()}.restarted", "a").close()

    def __call__(self, batch):
        ids = self._batch_ids = [str(v) for v in batch["video_id"]]
        if CRASH & set(ids):
            os.abort()
        time.sleep(DELAY)
        out = super().__call__(batch)
        if PAYLOAD:
            n = len(out["video_id"])
            payload = np.empty(n, dtype=object)
            for i in range(n):
                payload[i] = np.full(PAYLOAD, i % 251, np.uint8)
            out["payload"] = payload
        if RECORD:
            with open(os.path.join(RECORD, "clip.calls"), "a") as fh:
                fh.write(json.dumps(ids) + "\n")
        return out


config = load_config(ARGS["configs"], ARGS.get("overrides", []))
record = run_job(ARGS["src"], ARGS["dst"], config, progress=False, stages=dict(stage_classes(), clip=WrappedClip))
print("RESULT " + json.dumps(record, default=str))
'''


def _harness(tmp_path: Path, args: dict, **popen) -> subprocess.Popen:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, dict | None]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _end_group(proc)
    result = next((json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")), None)
    return proc.returncode, out, result


def _end_group(proc: subprocess.Popen) -> None:
    """Stop what is left of a harness's process group (Ray processes it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(30)


def _silent_manifest(tmp_path: Path, n: int, clip: Path | None = None) -> tuple[Path, list[str]]:
    clip = clip or media.small_clip(tmp_path / "clip.mp4", 2.0, audio=None)
    ids = [f"v{i:03d}" for i in range(n)]
    return _write_jsonl(tmp_path / f"manifest-{n}.jsonl", [{"video_id": vid, "uri": str(clip)} for vid in ids]), ids


@pytest.mark.slow
@pytest.mark.stress
def test_model_actor_that_crashes_on_one_video_costs_only_that_video(tmp_path, tiny_config):
    """The CLIP actor aborts whenever its batch holds ``v002``: Ray retries, then the run pins
    the crash on ``v002`` (a ``Crash`` error row) and every other video is committed."""
    manifest, ids = _silent_manifest(tmp_path, 4)
    dst = tmp_path / "out"
    rc, out, record = _finish(_harness(tmp_path, {
        "src": str(manifest), "dst": str(dst), "configs": [str(LOCAL_YAML), str(tiny_config)], "crash_ids": ["v002"],
        "overrides": ["runtime.videos_per_batch=1", "runtime.decode_batch_size=1", "runtime.max_task_retries=1"]}))
    assert rc == 0 and record, out[-5000:]
    assert record["counts"]["ok"] == 3 and record["counts"]["errors"] == 1
    assert record["errors_by_stage_type"] == {"pipeline/Crash": 1}
    (error,) = Catalog(str(dst)).read("errors").to_pylist()
    assert error["video_id"] == "v002" and "2 attempts" in error["message"]
    assert_exactly_once(str(dst), ids)


def _start_slow_run(tmp_path: Path, tiny_config: Path, n: int):
    """Start a harness run of ``n`` silent videos, 2 per batch, each stage call slowed by 2 s and
    recorded under ``tmp_path/record``; returns ``(manifest, ids, record_dir, dst, proc)``."""
    manifest, ids = _silent_manifest(tmp_path, n)
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    dst = tmp_path / "out"
    proc = _harness(tmp_path, {
        "src": str(manifest), "dst": str(dst), "configs": [str(LOCAL_YAML), str(tiny_config)],
        "record_dir": str(record_dir), "delay_s": 2.0, "overrides": ["runtime.videos_per_batch=2"]})
    return manifest, ids, record_dir, dst, proc


@pytest.mark.slow
@pytest.mark.stress
def test_poisoned_cuda_context_restarts_the_actor_and_loses_nothing(tmp_path, tiny_config):
    """A CUDA error that leaves the context unusable (here raised by the CLIP actor's model on
    ``v001``'s batch and on everything after it, until the process is new) ends the actor:
    Ray restarts it and retries the batch, so no video becomes an error row."""
    manifest, ids = _silent_manifest(tmp_path, 4)
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    dst = tmp_path / "out"
    rc, out, record = _finish(_harness(tmp_path, {
        "src": str(manifest), "dst": str(dst), "configs": [str(LOCAL_YAML), str(tiny_config)],
        "record_dir": str(record_dir), "device_lost_ids": ["v001"],
        "overrides": ["runtime.videos_per_batch=1", "runtime.decode_batch_size=1", "runtime.max_task_retries=2"]}))
    assert rc == 0 and record, out[-5000:]
    assert (record_dir / "poisoned").exists(), "the CUDA error was never raised"
    assert len(list(record_dir.glob("clip-*.pid"))) >= 2, "the actor was not restarted"
    assert record["counts"]["ok"] == len(ids) and record["counts"]["errors"] == 0, record
    assert_exactly_once(str(dst), ids)


@pytest.mark.slow
@pytest.mark.stress
def test_model_actor_killed_mid_run_loses_nothing(tmp_path, tiny_config):
    """``kill -9`` of the CLIP actor after its first batch: Ray restarts it and retries the
    batch it held; the run commits with every video exactly once."""
    _, ids, record_dir, dst, proc = _start_slow_run(tmp_path, tiny_config, 8)
    killed = None
    deadline = time.monotonic() + 600
    try:
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            calls = record_dir / "clip.calls"
            pids = sorted(record_dir.glob("clip-*.pid"), key=os.path.getmtime)
            if calls.exists() and calls.read_text().count("\n") >= 1 and pids:
                killed = int(pids[-1].read_text())
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        rc, out, record = _finish(proc)
    assert killed is not None, out[-5000:]
    assert rc == 0 and record, out[-5000:]
    calls = [json.loads(line) for line in (record_dir / "clip.calls").read_text().splitlines()]
    assert len(calls) < len(ids) // 2 + 2, "the kill came after the last batch"
    assert len(list(record_dir.glob("clip-*.pid"))) >= 2, "the actor was not restarted"
    assert record["counts"]["ok"] == len(ids) and record["counts"]["errors"] == 0
    assert_exactly_once(str(dst), ids)


@pytest.mark.slow
@pytest.mark.stress
def test_driver_killed_mid_run_publishes_nothing_and_the_next_run_completes(tmp_path, tiny_config):
    """``kill -9`` of the driver once videos are flowing: no run manifest, no visible rows, its
    Ray processes go away with it; the next run cleans up and commits every video once."""
    manifest, ids, record_dir, dst, proc = _start_slow_run(tmp_path, tiny_config, 6)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None and not (record_dir / "clip.calls").exists():
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # GCS, raylet and workers go within seconds; Ray's dashboard and runtime-env agents
        # notice their raylet is gone after about 70 s here.
        gone = time.monotonic() + 180
        while time.monotonic() < gone:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(1)
        else:
            left = subprocess.run(["ps", "-o", "pid,etime,args", "-g", str(proc.pid)], capture_output=True,
                                  text=True).stdout
            pytest.fail(f"processes of the killed driver still run after 180 s:\n{left}")
    finally:
        _end_group(proc)
    assert not list(dst.glob(f"{RUNS_DIR}/*.json"))  # no run record (its log is there)
    assert visible_state(str(dst)) == {t: [] for t in TABLES}
    proc = _cli_run(manifest, dst, tiny_config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_exactly_once(str(dst), ids)


@pytest.mark.slow
@pytest.mark.stress
def test_driver_memory_does_not_grow_with_the_number_of_videos(tmp_path, tiny_config):
    """Peak RSS of the driver for N and 4N videos, each pushing a 2 MiB payload through it:
    holding results would add >= 3N * 2 MiB; streaming adds little."""
    payload = 2 * 1024**2
    peaks = {}
    for n in (8, 32):
        manifest, ids = _silent_manifest(tmp_path, n)
        dst = tmp_path / f"out-{n}"
        rc, out, record = _finish(_harness(tmp_path, {
            "src": str(manifest), "dst": str(dst), "configs": [str(LOCAL_YAML), str(tiny_config)],
            "payload_bytes": payload, "overrides": ["runtime.videos_per_batch=4"]}))
        assert rc == 0 and record, out[-5000:]
        assert record["counts"]["ok"] == n
        peaks[n] = record["driver_max_rss_mb"]
    growth_mb = peaks[32] - peaks[8]
    held_mb = 24 * payload / 2**20
    assert growth_mb < held_mb / 2, f"driver peak RSS {peaks} MiB grows with the number of videos"


@pytest.mark.slow
@pytest.mark.stress
def test_checkpoint_that_cannot_load_fails_the_run_naming_the_path(tmp_path, tiny_config):
    """A whole file that is not a Whisper checkpoint passes the driver's check; the Whisper
    actor fails to load it while the first videos decode (the pools start together): the run
    fails on that first attempt (no actor restarts), its last line names the file, and nothing
    is published."""
    import torch

    manifest, _ = _silent_manifest(tmp_path, 4)
    wrong = tmp_path / "not-whisper.pt"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, wrong)
    start = time.monotonic()
    proc = _cli_run(manifest, tmp_path / "out", tiny_config, "--set", f"models.whisper.name={wrong}")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and str(wrong) in last and "cannot load Whisper checkpoint" in last, \
        proc.stderr[-3000:]
    assert not list((tmp_path / "out").glob(f"{RUNS_DIR}/*.json"))  # no run record (its log is there)
    assert time.monotonic() - start < 300


@pytest.mark.slow
@pytest.mark.stress
def test_missing_checkpoint_fails_fast_naming_the_path(tmp_path, tiny_config):
    manifest, _ = _silent_manifest(tmp_path, 1)
    missing = tmp_path / "nowhere" / "clip.pt"
    start = time.monotonic()
    proc = _cli_run(manifest, tmp_path / "out", tiny_config, "--set", f"models.clip.pretrained={missing}")
    assert proc.returncode == 1 and str(missing) in proc.stderr.strip().splitlines()[-1], proc.stderr[-3000:]
    assert not list((tmp_path / "out").glob(f"{RUNS_DIR}/*.json"))  # no run record (its log is there)
    assert time.monotonic() - start < 300


@pytest.mark.slow
@pytest.mark.stress
def test_store_that_stalls_is_cut_off(decode_from_store):
    """A GET that never answers: the store client's low-speed limit ends each attempt and the
    video becomes a retryable ``StoreError`` row in bounded time (the decode stage's fetch is
    not under ``limits.timeout_s``; the client's timeouts bound it)."""
    (row,), elapsed, _ = decode_from_store("stalls", ("slow",),
                                           lambda method, path, n: ("stall", 60) if method == "GET" else None)
    assert (row["error_type"], row["retryable"]) == ("StoreError", True)
    assert elapsed < 90
