"""Input manifests: ``.jsonl``, ``.csv``, ``.parquet`` or a directory/prefix of videos.

Every manifest row becomes exactly one *source row* (see ``extract.rows``). Rows that cannot
be processed (missing column, bad id, duplicate id) become source rows that already carry an
error (stage ``manifest``), so they still end in the ``errors`` table.

Rules (documented in the README):
- ``video_id`` (required, string, at most 512 characters, no control characters) and ``uri``
  (required) must be present; ``caption`` and ``upload_ts`` are optional; extra columns are
  ignored.
- Text must be valid Unicode: JSON can spell lone surrogates (``"\\ud800"``), which no Parquet
  file can store. An id or uri holding one is an invalid row; in a caption each becomes U+FFFD.
  Stored strings are always the cleaned ones, so a bad row still fits the ``errors`` table.
- Relative ``uri`` values resolve against the manifest's folder (or prefix).
- Rows are confined (``input.allowed_uris``; default: the manifest's own folder or prefix, or
  SRC itself when it is a folder): a ``uri`` outside every allowed prefix (``/etc/passwd``,
  another bucket, a ``..`` escape, a local symlink whose target lies outside) is an error row
  (``InputNotAllowed``) before anything is fetched. A prefix matches whole path components;
  a local path is judged by its real path (what the kernel opens), an object key both as
  written and with ``..`` collapsed (stores differ on whether they collapse it).
- Duplicate ``video_id``: the first row in manifest order wins, later ones are error rows.
- ``upload_ts``: ISO-8601 (``Z`` or offset; naive means UTC) or a Unix timestamp in seconds;
  ``dt`` (the Hive partition) is its UTC date. Missing or invalid values give ``upload_ts``
  null and ``dt`` = the run's UTC date; an invalid value is noted in ``ts_warning``.
- Every valid row gets its input's identity from the store's listing (``source_bytes``,
  ``source_mtime``; no content is read), which a rerun compares with the committed one.
- A directory lists video files by extension (``VIDEO_EXTENSIONS``), ``video_id`` = file stem,
  with ``caption``/``upload_ts`` from an optional sidecar ``<stem>.json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from datetime import date, datetime, timezone
from typing import Any, Iterator, Sequence

import pyarrow.fs as pafs

from extract.config import StorageConfig
from extract.rows import VideoError, mark_failed
from extract.io.storage import check_scheme, filesystem_for, is_remote, local_path, source_identities

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".ts", ".flv", ".3gp")
MANIFEST_EXTENSIONS = (".jsonl", ".csv", ".parquet")
MAX_ID_CHARS = 512
MAX_SIDECAR_BYTES = 4 * 1024 * 1024


class ManifestError(ValueError):
    """The manifest as a whole cannot be read; the message names the source and the fix."""


def read_source(src: str, storage: StorageConfig | None = None, today: date | None = None,
                allowed_uris: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Source rows for a manifest file or a directory/prefix of videos, in manifest order.

    ``allowed_uris``: ``input.allowed_uris`` (None: the manifest's folder or prefix, or ``src``
    itself when it is a folder); rows pointing elsewhere are ``InputNotAllowed`` error rows.
    """
    today = today or datetime.now(timezone.utc).date()
    fs, path = filesystem_for(src, storage)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ManifestError(f"input {src!r} does not exist; pass a manifest ({'/'.join(MANIFEST_EXTENSIONS)}) "
                            "or a folder of videos")
    base = _parent_uri(src) if info.type == pafs.FileType.File else src.rstrip("/")
    if info.type == pafs.FileType.Directory:
        records = list(_directory_records(fs, path, src))
    else:
        records = list(_manifest_records(fs, path, src))
    rows = normalize_records(records, base, today, allowed_uris)
    check_some_row_allowed(rows, src)
    add_source_identity(rows, storage)
    return rows


def check_some_row_allowed(rows: list[dict[str, Any]], src: str) -> None:
    """Raise ManifestError when no row is valid and some lie outside ``input.allowed_uris``:
    a manifest kept apart from its uploads (``s3://manifests/`` listing ``s3://uploads/``), the
    usual first run, would otherwise end as one ``InputNotAllowed`` row per video. The message
    names the ``--set`` that admits the refused rows (their common folder per store)."""
    refused = [row["uri"] for row in rows if row["error_type"] == "InputNotAllowed"]
    if not refused or any(row["error_stage"] is None for row in rows):
        return
    prefixes = _common_folders(refused)
    listed = ",".join(prefixes)
    value = f"[{listed}]" if not any(ch in listed for ch in " \t'\"[]{}#&*!|>%@`") else json.dumps(prefixes)
    raise ManifestError(f"input {src!r}: all {len(refused)} rows point outside input.allowed_uris (unset: the "
                        f"manifest's own folder); nothing was read. To read them, allow their folder: "
                        f"--set input.allowed_uris={value}")


def _common_folders(uris: Sequence[str]) -> list[str]:
    """The deepest folder holding all of ``uris``, one per store (scheme and bucket), in first-seen
    order; local paths by their real path (what ``uri_allowed`` compares), object prefixes end in ``/``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for uri in uris:
        if is_remote(uri):
            scheme, bucket_key = _object_forms(uri)[1].split("://", 1)
            groups.setdefault((scheme, bucket_key.split("/", 1)[0]), []).append(posixpath.dirname(bucket_key))
        else:
            groups.setdefault(("", ""), []).append(os.path.dirname(os.path.realpath(local_path(uri))))
    return [f"{scheme}://{posixpath.commonpath(folders)}/" if scheme else os.path.commonpath(folders)
            for (scheme, _), folders in groups.items()]


def add_source_identity(rows: list[dict[str, Any]], storage: StorageConfig | None = None) -> None:
    """Set ``source_bytes`` (int) and ``source_mtime`` (ISO-8601 UTC) of every valid row from
    the store's listing (``storage.source_identities``); None where the store gives none."""
    valid = [row for row in rows if row["error_stage"] is None]
    identities = source_identities([row["uri"] for row in valid], storage)
    for row in rows:
        size, mtime = identities.get(row["uri"], (None, None)) if row["error_stage"] is None else (None, None)
        row["source_bytes"] = size
        row["source_mtime"] = None if mtime is None else mtime.isoformat().replace("+00:00", "Z")


def _parent_uri(uri: str) -> str:
    if is_remote(uri) or uri.startswith("file://"):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return posixpath.dirname(posixpath.abspath(uri))


def _manifest_records(fs: pafs.FileSystem, path: str, src: str) -> Iterator[dict[str, Any]]:
    lower = path.lower()
    if not lower.endswith(MANIFEST_EXTENSIONS):
        raise ManifestError(f"input {src!r}: unknown manifest type; use {', '.join(MANIFEST_EXTENSIONS)} "
                            "or a folder of videos")
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open_input_file(path) as fh:
            table = pq.read_table(fh)
        yield from table.to_pylist()
        return
    with fs.open_input_stream(path) as fh:
        text = fh.read().decode("utf-8-sig", errors="replace")
    if lower.endswith(".csv"):
        yield from csv.DictReader(io.StringIO(text))
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            record = {"__invalid__": f"line {lineno} is not valid JSON ({exc.msg})"}
        if not isinstance(record, dict):
            record = {"__invalid__": f"line {lineno} is not a JSON object"}
        record.setdefault("__line__", lineno)
        yield record


def _directory_records(fs: pafs.FileSystem, path: str, src: str) -> Iterator[dict[str, Any]]:
    selector = pafs.FileSelector(path, recursive=False)
    infos = sorted((i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File), key=lambda i: i.path)
    names = {posixpath.basename(i.path) for i in infos}
    for info in infos:
        name = posixpath.basename(info.path)
        stem, ext = posixpath.splitext(name)
        if ext.lower() not in VIDEO_EXTENSIONS:
            continue
        record: dict[str, Any] = {"video_id": stem, "uri": name}
        if f"{stem}.json" in names:
            record.update(_read_sidecar(fs, posixpath.join(path, f"{stem}.json")))
            record["video_id"], record["uri"] = stem, name
        yield record


def _read_sidecar(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    try:
        with fs.open_input_stream(path) as fh:
            data = json.loads(fh.read(MAX_SIDECAR_BYTES).decode("utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"__invalid__": f"sidecar {posixpath.basename(path)} is unreadable ({exc})"}
    if not isinstance(data, dict):
        return {"__invalid__": f"sidecar {posixpath.basename(path)} is not a JSON object"}
    return {k: data[k] for k in ("caption", "upload_ts") if k in data}


def normalize_records(records: list[dict[str, Any]], base: str, today: date,
                      allowed_uris: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Raw manifest records -> source rows (validated, resolved, confined, de-duplicated).

    ``allowed_uris`` None confines rows to ``base`` (the manifest's folder or prefix).
    """
    allowed = tuple(allowed_uris) if allowed_uris is not None else (base,)
    prefixes = [_prefix_form(prefix) for prefix in allowed]
    seen: set[str] = set()
    rows = []
    for index, record in enumerate(records):
        where = f"manifest row {record.get('__line__', index + 1)}"
        raw_id, raw_uri = _as_str(record.get("video_id")) or "", _as_str(record.get("uri")) or ""
        row = {
            "video_id": valid_text(raw_id),
            "uri": valid_text(raw_uri),
            "caption": valid_text(_as_str(record.get("caption"))),
            "upload_ts": None,
            "dt": today.isoformat(),
            "error_stage": None, "error_type": None, "error_message": None, "retryable": None,
            "ts_warning": None,
        }
        ts, ts_problem = parse_upload_ts(record.get("upload_ts"))
        if ts is not None:
            row["upload_ts"] = ts.isoformat().replace("+00:00", "Z")
            row["dt"] = ts.date().isoformat()
        problem = record.get("__invalid__")
        if problem is None:
            for column in ("video_id", "uri"):
                if not row[column]:
                    problem = f"{where} has no {column!r}; every row needs video_id and uri"
                    break
        if problem is None:
            problem = _id_problem(raw_id, where)
        if problem is None and raw_uri != row["uri"]:
            problem = f"{where}: uri {raw_uri!r} is not valid UTF-8 (lone surrogates)"
        if problem is None:
            try:
                check_scheme(row["uri"])
            except VideoError as exc:
                problem = f"{where}: {exc}"
            else:
                row["uri"] = resolve_uri(row["uri"], base)
                if not uri_allowed(row["uri"], prefixes):
                    key = ("input.allowed_uris" if allowed_uris is not None
                           else "input.allowed_uris (unset: the manifest's own folder)")
                    problem = (f"{where}: uri {row['uri']!r} is outside {key}: {', '.join(allowed)}; "
                               "it was not read")
                    mark_failed(row, "manifest", "InputNotAllowed", problem, retryable=False)
        if problem is None and row["video_id"] in seen:
            problem = (f"{where}: duplicate video_id {row['video_id']!r}; the first row with this id "
                       "is processed, later ones are rejected")
        if problem is not None:
            if row["error_stage"] is None:
                mark_failed(row, "manifest", "InvalidInput", problem, retryable=False)
        else:
            seen.add(row["video_id"])
        if ts_problem and problem is None:
            row["ts_warning"] = f"{where}: {ts_problem}; dt set to the run date"
        rows.append(row)
    return rows


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from CSV/Parquet
        return None
    return value if isinstance(value, str) else str(value)


def valid_text(text: str | None) -> str | None:
    """``text`` with every lone surrogate (invalid Unicode that UTF-8 cannot encode) replaced by
    U+FFFD; surrogate pairs become the character they spell."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _id_problem(video_id: str, where: str) -> str | None:
    if len(video_id) > MAX_ID_CHARS:
        return f"{where}: video_id is {len(video_id)} characters, over {MAX_ID_CHARS}"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in video_id):
        return f"{where}: video_id {video_id!r} contains control characters"
    try:
        video_id.encode("utf-8")
    except UnicodeEncodeError:
        return f"{where}: video_id {video_id!r} is not valid UTF-8 (lone surrogates)"
    return None


def resolve_uri(uri: str, base: str) -> str:
    """Absolute URI: relative paths join ``base`` (the manifest's folder or prefix)."""
    if "://" in uri or uri.startswith("/"):
        return uri
    return f"{base.rstrip('/')}/{uri}"


def _object_forms(uri: str) -> list[str]:
    """An object URI as written and with its key's ``.``/``..`` segments collapsed (``gcs://`` as ``gs://``)."""
    scheme, rest = uri.split("://", 1)
    scheme = "gs" if scheme == "gcs" else scheme
    bucket, _, key = rest.partition("/")
    collapsed = posixpath.normpath("/" + key).lstrip("/") if key else ""
    return [f"{scheme}://{bucket}/{key}", f"{scheme}://{bucket}/{collapsed}"]


def _prefix_form(prefix: str) -> str:
    """An allowed prefix as the form ``uri_allowed`` compares: an object prefix with ``..``
    collapsed, a local folder as its real path; no trailing slash."""
    if is_remote(prefix):
        return _object_forms(prefix)[1].rstrip("/")
    return os.path.realpath(local_path(prefix)).rstrip("/") or "/"


def uri_allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """Whether ``uri`` (absolute, resolved) lies under one of ``prefixes`` (``_prefix_form``s), on
    whole path components. A local path counts by its real path (symlinks and ``..`` resolved,
    as the kernel will open it); an object URI must be inside both as written and collapsed."""
    forms = _object_forms(uri) if is_remote(uri) else [os.path.realpath(local_path(uri))]

    def inside(form: str) -> bool:
        return any(form == prefix or form.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)

    return all(inside(form) for form in forms)


def parse_upload_ts(value: Any) -> tuple[datetime | None, str | None]:
    """``(UTC datetime or None, problem or None)`` for an ISO-8601 string or Unix seconds."""
    if value is None or value == "":
        return None, None
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            ts = datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None, f"upload_ts {value!r} is out of range"
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            try:
                ts = datetime.fromtimestamp(float(text), tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                return None, f"upload_ts {value!r} is not ISO-8601 or Unix seconds"
    else:
        return None, f"upload_ts {value!r} has unsupported type {type(value).__name__}"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc), None
