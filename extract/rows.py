"""Rows and batches passed between stages, and how a per-video failure travels.

A *batch* is what Ray Data hands a ``map_batches`` UDF with ``batch_format="numpy"``: a dict of
column name -> numpy array (object arrays for strings, None and ragged tensors). Stages convert
it to a list of per-video *rows* (plain dicts), work per row or across rows, and convert back.

Columns by stage (every stage keeps the columns it received and adds its own) are declared
once, on each stage's registry entry (``extract.stages.registry``: ``SOURCE_COLUMNS``, then per
stage its ``inputs``, the ``videos`` columns it adds as ``outputs`` and the tensors and JSON it
``carries`` for later stages or the driver); ``extract schemas --stages`` prints them. A row
whose bytes equal a committed video's gets ``reused_from`` at decode: then nothing was decoded
and later stages run no model for it (``is_reused``, ``extract.pipeline.reuse``).

A failed row keeps flowing: ``error_stage`` etc. are set, tensors are empty arrays, and later
stages pass it through untouched. Tensors are never None so Ray can store them as columns.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any, Callable, Iterable, Mapping

import numpy as np

log = logging.getLogger("extract")

ERROR_COLUMNS = ("error_stage", "error_type", "error_message", "retryable")


def batch_to_rows(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Column batch -> list of row dicts (numpy scalars become Python values)."""
    columns = list(batch)
    if not columns:
        return []
    n = len(batch[columns[0]])
    rows = [{} for _ in range(n)]
    for name in columns:
        values = batch[name]
        for i in range(n):
            rows[i][name] = _to_python(values[i])
    return rows


def _to_python(value: Any) -> Any:
    # Ray Data stores None in numeric columns as NaN; features are never NaN, so NaN means null.
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def rows_to_batch(rows: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """List of row dicts -> column batch of numpy arrays.

    Scalar columns become typed arrays when every value has the same plain type; everything
    else (strings with None, ragged ndarrays) becomes an object array, which Ray Data stores
    as a variable-shaped tensor or Python-object column.
    """
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns.append(name)
    batch = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        arr = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            arr[i] = v
        batch[name] = arr
    return batch


def is_failed(row: Mapping[str, Any]) -> bool:
    """True when an earlier stage recorded an error for this row."""
    return row.get("error_stage") is not None


REUSED_INPUTS = ("clip_embedding", "transcript_text", "ocr_text")  # what a reused row's text features read


def is_reused(row: Mapping[str, Any]) -> bool:
    """True when the decode stage found the row's bytes committed under ``reused_from``."""
    return row.get("reused_from") is not None


def matching_candidate(row: Mapping[str, Any], content_sha256: str) -> dict[str, Any] | None:
    """The entry of ``row["reuse_candidates"]`` (a JSON list of committed videos with
    ``video_id``, ``dt``, ``content_sha256``, ``table``, ``version``) whose bytes hash to
    ``content_sha256``; None when there is none."""
    for candidate in json.loads(row.get("reuse_candidates") or "[]"):
        if candidate["content_sha256"] == content_sha256:
            return candidate
    return None


def mark_failed(row: dict[str, Any], stage: str, error_type: str, message: str,
                retryable: bool = False) -> dict[str, Any]:
    """Record a per-video failure on ``row`` (in place) and return it."""
    row["error_stage"] = stage
    row["error_type"] = error_type
    row["error_message"] = message
    row["retryable"] = retryable
    return row


def mark_exception(row: dict[str, Any], stage: str, exc: BaseException) -> dict[str, Any]:
    """Record an unexpected exception: type name, message, and the last traceback frame.

    Errors that are not ``VideoError`` are unexpected, so they are marked retryable: a rerun
    after a fix (or on a healthier worker) may succeed.
    """
    if isinstance(exc, VideoError):
        return mark_failed(row, stage, exc.error_type, str(exc), exc.retryable)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    message = f"{row.get('video_id')!r}: {type(exc).__name__}: {exc}{where}"
    return mark_failed(row, stage, type(exc).__name__, message, retryable=True)


def thumbnails_of(row: dict[str, Any]) -> dict[int, bytes]:
    """A row's thumbnails (the decode columns above) as ``{frame index: JPEG file}``."""
    jpeg, sizes, index = row.get("thumbnail_jpeg"), row.get("thumbnail_bytes"), row.get("thumbnail_index")
    if jpeg is None or sizes is None or index is None or not len(index):
        return {}
    data = np.asarray(jpeg, np.uint8).tobytes()
    ends = np.cumsum(np.asarray(sizes, np.int64))
    return {int(i): data[end - n:end] for i, n, end in zip(index, sizes, ends)}


class VideoError(Exception):
    """An expected per-video failure with a short type and a readable message.

    ``error_type`` is machine-readable (``LimitExceeded``, ``DecodeError``, ``Timeout``,
    ``NotFound``, ``InvalidInput``...); the message names the input and, where one exists,
    the fix.
    """

    def __init__(self, error_type: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


class DeviceLostError(RuntimeError):
    """The accelerator failed in a way that leaves this process's CUDA context unusable (an
    illegal memory access, a device-side assert): every later batch in the process would fail
    too, so it is no video's fault. It is never turned into error rows; it ends the worker, and
    the Ray backend lets Ray restart the actor and retry its batch (``extract.pipeline.ray_backend``).
    """


def process_isolated(pending: list[tuple[dict[str, Any], Any]], process: Callable[[list[Any]], list[Any]],
                     stage: str, what: str) -> list[Any]:
    """Run ``process`` on all pending inputs at once (one packed batch); if that raises, run it
    on each input alone so one bad video fails only itself.

    ``pending`` is ``[(row, input)]``; returns one result per entry, None where that row was
    marked failed (stage ``stage``). ``what`` names the work in the log, e.g. ``"CLIP"``.
    A ``DeviceLostError`` is raised, never blamed on a video.
    """
    if not pending:
        return []
    try:
        return list(process([item for _, item in pending]))
    except DeviceLostError:
        raise
    except Exception as exc:  # noqa: BLE001 - isolated below, per video
        log.warning("%s batch of %d videos failed (%s: %s); processing videos one by one",
                    what, len(pending), type(exc).__name__, exc)
    results: list[Any] = []
    for row, item in pending:
        try:
            results.append(process([item])[0])
        except DeviceLostError:
            raise
        except Exception as row_exc:  # noqa: BLE001 - becomes this video's error row
            mark_exception(row, stage, row_exc)
            results.append(None)
    return results
