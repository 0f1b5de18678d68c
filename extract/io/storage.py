"""File systems through ``pyarrow.fs``: local paths, ``file://``, ``s3://`` and ``gs://``.

Only local files and the configured object stores are ever read: there is no HTTP, FTP or
other URL scheme. S3 credentials and region come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``); the endpoint from
``storage.s3_endpoint`` or ``AWS_ENDPOINT_URL`` (for S3-compatible stores such as MinIO).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

from extract.config import StorageConfig
from extract.rows import VideoError

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://")
CHUNK_BYTES = 1 << 20  # 1 MiB read size for streaming hashes and copies


def is_remote(uri: str) -> bool:
    """True for object-store URIs."""
    return uri.startswith(REMOTE_SCHEMES)


def check_scheme(uri: str) -> None:
    """Raise VideoError for URIs we never read (http, ftp, data, ...)."""
    if "://" in uri and not uri.startswith(REMOTE_SCHEMES + ("file://",)):
        scheme = uri.split("://", 1)[0]
        raise VideoError(
            "UnsupportedURI",
            f"{uri!r}: scheme {scheme}:// is not read by this job; use a local path, file://, s3:// or gs://",
        )


def local_path(uri: str) -> str:
    """A local path for a local path or ``file://`` URI."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def filesystem_for(uri: str, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a URI; the path is what the filesystem's methods take."""
    check_scheme(uri)
    storage = storage or StorageConfig()
    if uri.startswith("s3://"):
        return _s3(storage.s3_endpoint, storage.s3_region), uri[len("s3://"):].rstrip("/")
    if uri.startswith(("gs://", "gcs://")):
        return _gcs(), uri.split("://", 1)[1].rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(local_path(uri))


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5)}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def delta_uri(uri: str) -> str:
    """The URI delta-rs opens for a local path, ``file://``, ``s3://`` or ``gs://`` location."""
    check_scheme(uri)
    if uri.startswith("gcs://"):
        return "gs://" + uri[len("gcs://"):].rstrip("/")
    if is_remote(uri):
        return uri.rstrip("/")
    return os.path.abspath(local_path(uri))


def delta_storage_options(uri: str, storage: StorageConfig | None = None) -> dict[str, str]:
    """delta-rs (object_store) options for ``uri`` from our ``storage.*`` keys and the standard
    environment, so Delta tables and ``pyarrow.fs`` reach the same store.

    S3: the endpoint (``storage.s3_endpoint`` / ``AWS_ENDPOINT_URL``; ``http://`` endpoints such
    as a local MinIO or test server get ``AWS_ALLOW_HTTP``), the region, and conditional-put
    commits (``aws_conditional_put=etag``: a commit is a PUT with ``If-None-Match``, so two
    writers can never both create the same log version). Credentials come from the AWS
    variables, read by delta-rs itself. GCS: ``GOOGLE_APPLICATION_CREDENTIALS`` when set (GCS
    writes are conditional natively). Local paths: none.
    """
    storage = storage or StorageConfig()
    if uri.startswith("s3://"):
        options = {"aws_conditional_put": "etag"}
        endpoint = storage.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        region = storage.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint:
            options["aws_endpoint_url"] = endpoint
            if endpoint.startswith("http://"):
                options["aws_allow_http"] = "true"
        if region:
            options["aws_region"] = region
        return options
    if uri.startswith(("gs://", "gcs://")):
        creds = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        return {"google_application_credentials": creds} if creds else {}
    return {}


@lru_cache(maxsize=1)
def _gcs() -> pafs.GcsFileSystem:
    return pafs.GcsFileSystem()


STAT_CHUNK = 256  # paths per get_file_info call when listing identities
STAT_THREADS = 16  # concurrent calls: object stores answer one HEAD per path


def source_identities(uris: list[str], storage: StorageConfig | None = None
                      ) -> dict[str, tuple[int | None, datetime | None]]:
    """``{uri: (size_bytes, mtime UTC)}`` from the store's listing, without reading any content.

    This is the input's identity a rerun compares (an object's size and ``Last-Modified``, a
    file's size and modification time): one ``get_file_info`` per 256 paths, 16 at a time, so
    the cost grows with the manifest only. URIs that are missing, not files, or whose store
    cannot be reached are left out (their rows are processed and fail or succeed on their own).
    """
    by_fs: dict[int, tuple[pafs.FileSystem, list[tuple[str, str]]]] = {}
    for uri in uris:
        try:
            fs, path = filesystem_for(uri, storage)
        except VideoError:
            continue
        by_fs.setdefault(id(fs), (fs, []))[1].append((uri, path))
    jobs = [(fs, pairs[i:i + STAT_CHUNK]) for fs, pairs in by_fs.values() for i in range(0, len(pairs), STAT_CHUNK)]

    def stat(job: tuple[pafs.FileSystem, list[tuple[str, str]]]) -> list[tuple[str, pafs.FileInfo]]:
        fs, pairs = job
        try:
            return list(zip([u for u, _ in pairs], fs.get_file_info([p for _, p in pairs])))
        except OSError:  # one unreachable path fails the call: ask for each alone
            out = []
            for uri, path in pairs:
                try:
                    out.append((uri, fs.get_file_info(path)))
                except OSError:
                    continue
            return out

    identities: dict[str, tuple[int | None, datetime | None]] = {}
    with ThreadPoolExecutor(min(STAT_THREADS, max(1, len(jobs)))) as pool:
        for results in pool.map(stat, jobs):
            for uri, info in results:
                if info.type == pafs.FileType.File:
                    mtime = info.mtime
                    if mtime is not None:
                        mtime = (mtime if mtime.tzinfo else mtime.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
                    identities[uri] = (info.size, mtime)
    return identities


def join_uri(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or local path with '/'."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def iter_chunks(uri: str, storage: StorageConfig | None = None, max_bytes: int | None = None) -> Iterator[bytes]:
    """Stream a file's bytes in 1 MiB chunks; VideoError when missing or over ``max_bytes``."""
    fs, path = filesystem_for(uri, storage)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise VideoError("StoreError", f"{uri!r}: cannot stat ({exc}); retry later", retryable=True) from exc
    if info.type == pafs.FileType.NotFound:
        raise VideoError("NotFound", f"{uri!r} does not exist; check the manifest's uri column")
    if info.type != pafs.FileType.File:
        raise VideoError("NotAFile", f"{uri!r} is not a regular file")
    if max_bytes is not None and info.size is not None and info.size > max_bytes:
        raise VideoError(
            "LimitExceeded",
            f"{uri!r} is {info.size} bytes, over limits.max_file_bytes={max_bytes}",
        )
    try:
        with fs.open_input_stream(path) as stream:
            total = 0
            while chunk := stream.read(CHUNK_BYTES):
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise VideoError("LimitExceeded", f"{uri!r} grew over limits.max_file_bytes={max_bytes}")
                yield chunk
    except OSError as exc:
        raise VideoError("StoreError", f"{uri!r}: read failed ({exc}); retry later", retryable=True) from exc


def fetch(uri: str, dest_dir: str | Path, storage: StorageConfig | None = None,
          max_bytes: int | None = None) -> tuple[str, str, int]:
    """Make ``uri`` readable as a local file and hash it in one streaming pass.

    Local files are hashed in place (no copy); remote ones are copied into ``dest_dir``.
    Returns ``(local_path, content_sha256_hex, n_bytes)``.
    """
    digest = hashlib.sha256()
    n = 0
    if not is_remote(uri):
        for chunk in iter_chunks(uri, storage, max_bytes):
            digest.update(chunk)
            n += len(chunk)
        return os.path.abspath(local_path(uri)), digest.hexdigest(), n
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / hashlib.sha256(uri.encode()).hexdigest()[:24]
    with open(out, "wb") as fh:
        for chunk in iter_chunks(uri, storage, max_bytes):
            digest.update(chunk)
            n += len(chunk)
            fh.write(chunk)
    return str(out), digest.hexdigest(), n


def parquet_files(fs: pafs.FileSystem, root: str) -> Iterator[str]:
    """Every ``*.parquet`` file under ``root`` (tables, their logs, staging)."""
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
            yield info.path
