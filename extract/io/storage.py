"""File systems through ``pyarrow.fs``: local paths, ``file://``, ``s3://`` and ``gs://``.

Only local files and the configured object stores are ever read: there is no HTTP, FTP or
other URL scheme. S3 credentials and region come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``); the endpoint from
``storage.s3_endpoint`` or ``AWS_ENDPOINT_URL`` (for S3-compatible stores such as MinIO).

Content digests of files and objects, and local copies of object-store checkpoints:

- ``file_digest``: sha256 of a local file. Hashing a multi-GB file takes seconds, so digests are
  cached in ``$EXTRACT_DIGEST_CACHE`` (default ``$XDG_CACHE_HOME/extract/digests``, else
  ``~/.cache/extract/digests``), one small JSON per file keyed by (resolved path, size,
  mtime_ns): a file rewritten in place gets a new mtime and is hashed again.
- ``remote_digest``: sha256 of an object: the sidecar ``extract models stage`` wrote beside it
  (``write_sidecar``, ``<object>.sha256``) when its recorded size matches, else the digest of a
  local copy (``local_checkpoint``: fetched once into one local cache).
- ``digest_of``: either, by what a config value names; ``folder_digest``: a model folder's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
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
SIDECAR_SUFFIX = ".sha256"  # beside a staged object: {"sha256": ..., "size": bytes}


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




def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def local_checkpoint(uri: str, storage: StorageConfig | None = None, cache_dir: str | None = None) -> str:
    """A local path for a checkpoint: local paths pass; object-store URIs are fetched once into
    ``cache_dir`` (default ``$EXTRACT_MODEL_CACHE`` or the temp folder), keeping the file name
    (open_clip picks its loader from the suffix). Each fetch downloads into its own folder and
    renames the finished file into place, so actors sharing a node never read a half-written copy.
    Raises ``VideoError`` / ``OSError`` when the copy fails."""
    if not is_remote(uri):
        return uri[len("file://"):] if uri.startswith("file://") else uri
    cache = Path(cache_dir or os.environ.get("EXTRACT_MODEL_CACHE") or Path(tempfile.gettempdir()) / "extract-models")
    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=target.parent))
        try:
            path, _, _ = fetch(uri, work, storage)
            os.replace(path, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return str(target)


def digest_cache_dir() -> Path:
    """Where file digests are cached (see module doc)."""
    if os.environ.get("EXTRACT_DIGEST_CACHE"):
        return Path(os.environ["EXTRACT_DIGEST_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "extract" / "digests"


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of the file at ``path``, from the cache when its (path, size, mtime_ns) is
    unchanged; a cache that cannot be written only costs the next run a rehash."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    key = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = digest_cache_dir() / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(resolved)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**key, "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        pass
    return digest


def folder_digest(folder: str | Path) -> str:
    """sha256 over the relative names and digests of every file under ``folder``."""
    folder = Path(folder)
    lines = [f"{p.relative_to(folder).as_posix()}\0{file_digest(p)}\n"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def remote_digest(uri: str, storage: StorageConfig | None = None, cache_dir: str | None = None) -> str:
    """sha256 of the object ``uri``: its stage-time sidecar when the sizes agree, else the digest
    of the local copy (fetched once, ``local_checkpoint``)."""
    fs, path = filesystem_for(uri, storage)
    size = fs.get_file_info(path).size
    try:
        with fs.open_input_stream(path + SIDECAR_SUFFIX) as fh:
            recorded = json.loads(fh.read())
        if recorded.get("size") == size and isinstance(recorded.get("sha256"), str):
            return recorded["sha256"]
    except (OSError, ValueError):
        pass
    return file_digest(local_checkpoint(uri, storage, cache_dir))


def write_sidecar(dest_uri: str, digest: str, size: int, storage: StorageConfig | None = None) -> None:
    """Record a staged file's digest and size beside it (``remote_digest`` reads it)."""
    fs, path = filesystem_for(dest_uri + SIDECAR_SUFFIX, storage)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps({"sha256": digest, "size": size}).encode())


def digest_of(value: str, storage: StorageConfig | None, cache_dir: str | None) -> str | None:
    """sha256 of a local file or an object-store URI; None when ``value`` is neither a file nor
    an object (a name)."""
    if is_remote(value):
        return remote_digest(value, storage, cache_dir)
    path = Path(local_path(value)).expanduser()
    return file_digest(path) if path.is_file() else None
