"""Running rows through the stages on some backend, whatever it is: completion and crash re-runs.

*What* runs is the stages (``extract.stages.registry``); *where* is a ``Backend``: how to map
rows through the stages (``execute``) and which exceptions mean a worker process died
(``is_worker_crash``) or a stage could not start (``start_failure``). The Ray backend
(``extract.pipeline.ray_backend.backend``) is the production one; tests run the stages in
this process. ``run_stages`` owns what every backend needs: each video's result once, and
the bisection that pins a repeating worker crash on its video.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from extract.config import Config
from extract.rows import batch_to_rows, mark_failed

log = logging.getLogger("extract")

# Runs rows through the stages: (rows, config, stage classes or None) -> (finished batches, pools used).
Executor = Callable[[list[dict[str, Any]], Config, "dict[str, type] | None"],
                    tuple[Iterator[dict[str, np.ndarray]], dict[str, Any]]]

class StageEvents(Protocol):
    """What a backend may tell the driver while the stages run (``extract.pipeline.console.RunProgress``):
    ``phase`` what it is doing (``starting Ray``), ``stage_done`` that a stage finished a batch of
    ``n_rows`` rows, ``failed_ids`` of them carrying an error (called from any thread)."""

    def phase(self, text: str) -> None: ...

    def stage_done(self, stage: str, n_rows: int, failed_ids: Iterable[str]) -> None: ...


# Re-runs that pin a repeating worker crash on its video cost about 2 * log2(unfinished videos)
# each; this pins a few such videos even in a million-video run, and stops a crash that is not
# one video's (every batch crashes) from re-running forever.
MAX_CRASH_RERUNS = 48


def largest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` by ``source_bytes``, largest first (unknown sizes last; ties keep their order).

    Longest-processing-time first: a video's cost grows with its length, and a long upload that
    starts last is worked on alone while the other workers idle. Bytes are what the listing
    already has: a proxy for length among uploads of one resolution and bitrate, not across them."""
    return sorted(rows, key=lambda row: -(row.get("source_bytes") or -1))


def _no_crash(exc: BaseException) -> bool:
    return False


def _no_start_failure(exc: BaseException) -> BaseException | None:
    return None


@dataclass(frozen=True)
class Backend:
    """Where the stages run. ``execute`` maps rows through them and returns the finished
    batches (an iterator: a crash may surface while iterating) and the pools it used;
    ``is_worker_crash(exc)``: ``exc`` means a worker process died after the backend's own
    retries (its videos are re-run); ``start_failure(exc)``: the error to raise instead when a
    stage could not start on a worker, or None."""

    execute: Executor
    is_worker_crash: Callable[[BaseException], bool] = _no_crash
    start_failure: Callable[[BaseException], BaseException | None] = _no_start_failure


class StageRun:
    """The finished rows of one ``run_stages`` call, a list per batch as they arrive, each
    video at most once. After iterating: ``resources`` (the pools the backend used),
    ``crash_reruns`` (groups re-run after worker crashes) and ``lost`` (rows of ``todo``
    without a result)."""

    def __init__(self, todo: list[dict[str, Any]], config: Config, stages: dict[str, type] | None,
                 backend: Backend):
        self.todo = todo
        self.config = config
        self.stages = stages
        self.backend = backend
        self.resources: dict[str, Any] = {}
        self.crash_reruns = 0
        self.finished: set[str] = set()

    @property
    def lost(self) -> list[dict[str, Any]]:
        return [r for r in self.todo if r["video_id"] not in self.finished]

    def _once(self, rows: list[dict[str, Any]], expected: set[str]) -> list[dict[str, Any]]:
        """Keep each expected id once (a retried task can emit a row twice)."""
        out = []
        for row in rows:
            vid = row["video_id"]
            if vid in expected and vid not in self.finished:
                self.finished.add(vid)
                out.append(row)
        return out

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        """When worker crashes outlast the backend's retries the group fails; its videos
        without a result then run again in two halves, recursively, so a video that crashes
        its worker every time ends alone and comes back as a ``Crash`` error row while every
        other video finishes. While splitting, groups of several videos run without retries
        (a crash only splits them further); a single video gets the configured retries again
        before it is convicted. Past ``MAX_CRASH_RERUNS`` the crash is not one video's and the
        error is raised. Other failures are raised at once."""
        config, backend = self.config, self.backend
        expected = {r["video_id"] for r in self.todo}
        splitting = config.replace(**{"runtime.max_task_retries": 0})
        groups = deque([largest_first(self.todo)])
        while groups:
            group = groups.popleft()
            group_config = splitting if self.crash_reruns and len(group) > 1 else config
            try:
                batches, plan = backend.execute(group, group_config, self.stages)
                if not self.resources:
                    self.resources = dict(plan)
                for batch in batches:
                    yield self._once(batch_to_rows(batch), expected)
            except Exception as exc:  # noqa: BLE001 - only worker crashes are handled, the rest re-raised
                if not backend.is_worker_crash(exc):
                    failure = backend.start_failure(exc)
                    if failure is not None:
                        raise failure from exc
                    raise
                left = [r for r in group if r["video_id"] not in self.finished]
                if len(group) == 1 and left:
                    log.warning("video %r crashed its worker on every attempt: recorded as a Crash error",
                                left[0]["video_id"])
                    yield self._once([crash_row(left[0], exc, config.runtime.max_task_retries)], expected)
                    continue
                if not left:
                    continue
                half = (len(left) + 1) // 2
                parts = [left[:half], left[half:]] if len(left) > 1 else [left]
                if self.crash_reruns + len(parts) > MAX_CRASH_RERUNS:
                    raise RuntimeError(
                        f"worker processes kept crashing: {MAX_CRASH_RERUNS} re-runs did not pin the crash on "
                        f"single videos ({len(left)} videos still unfinished); last error: {exc}") from exc
                self.crash_reruns += len(parts)
                log.warning("a worker died past runtime.max_task_retries=%d (%s); re-running the %d unfinished "
                            "videos in %d group(s) to find the video that causes it",
                            group_config.runtime.max_task_retries, type(exc).__name__, len(left), len(parts))
                groups.extendleft(reversed(parts))


def run_stages(todo: list[dict[str, Any]], config: Config, stages: dict[str, type] | None,
               backend: Backend) -> StageRun:
    """The rows of ``todo`` through ``stages`` (None: the registry's) on ``backend``: iterate
    the result for the finished rows (see ``StageRun``)."""
    return StageRun(todo, config, stages, backend)


def crash_row(row: dict[str, Any], exc: BaseException, retries: int) -> dict[str, Any]:
    """``row`` as a ``pipeline/Crash`` error: its worker died on each of ``retries + 1`` attempts."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mark_failed(dict(row), "pipeline", "Crash", (
        f"{row['video_id']!r}: a worker process died each time it processed this video "
        f"({retries + 1} attempts; {type(exc).__name__}: {reason}); the other videos of its batch were re-run "
        "without it"), retryable=False)
