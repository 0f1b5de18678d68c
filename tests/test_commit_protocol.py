"""The commit protocol under concurrency and kills, each on a local output and on the moto S3
server: two processes finishing one pending commit at the same moment, a run killed after each
table commit in turn, and a reader polling the tables' latest versions during a run."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from test_writer import D, ctx, every_video_once, finished_row, prepare

from extract.tables import writer as writer_module
from extract.tables.catalog import APP_ID, RUN_ID_KEY, STAGING_DIR, Catalog, snapshot_dataset
from extract.tables.records import rows_to_tables
from extract.tables.schemas import TABLES
from extract.tables.writer import COMMIT_ORDER, CommitIncompleteError, RunWriter, commit_run, ensure_tables, \
    reprocessing_predicate, roll_forward

# Rounds of the race and kill tests. Locally 20 each. On the moto server (round trips make a
# round slower) the rounds that cover every case once: the race stopped before each table,
# with and without the lease; a kill after each table commit.
ROUNDS = 20
# The race's cases, in the order its rounds take them (then again): the commit stopped before
# table k, both finishers without the lease, then with it.
RACES = [(k, lease) for k in range(len(COMMIT_ORDER)) for lease in (False, True)]


def rounds(dst: str, covering: int) -> int:
    """``ROUNDS`` on a local output, ``covering`` on S3."""
    return covering if dst.startswith("s3://") else ROUNDS


LOCAL_AND_S3 = pytest.mark.parametrize("dst", ["local", "s3"], indirect=True)
# The moto server's round trips make the rounds slow: the S3 variant runs with the slow tier.
LOCAL_AND_SLOW_S3 = pytest.mark.parametrize("dst", ["local", pytest.param("s3", marks=[pytest.mark.slow, pytest.mark.stress])],
                                            indirect=True)


@pytest.fixture
def dst(request, tmp_path) -> str:
    """An empty output location: a local folder, or a prefix in a fresh bucket on moto."""
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_server")
    import boto3

    bucket = f"commit-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/out"


def rows_of(prefix: str, n: int = 2) -> list[dict]:
    """``n`` new videos (frames, a segment, hashtags) and one failed one."""
    return [finished_row(f"{prefix}-{i}", n_frames=2 + i, tags=("fyp", f"t{i}")) for i in range(n)] + \
        [finished_row(f"{prefix}-bad", failed=True)]


def crash_after(k: int):
    """A ``_commit_table`` that dies (an OSError) instead of making the (k+1)-th table commit."""
    real, calls = writer_module._commit_table, []

    def commit(catalog, delta, table, marker, retries):
        if len(calls) == k:
            raise OSError(f"killed after {k} table commits")
        calls.append(table)
        real(catalog, delta, table, marker, retries)

    return commit


def pending_run(dst: str, run_id: str, k: int, monkeypatch) -> None:
    """A run whose commit stopped after ``k`` table commits: its pending commit stays staged."""
    writer, predicate = prepare(dst, rows_of(run_id), run_id)
    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "_commit_table", crash_after(k))
        with pytest.raises(CommitIncompleteError) as failure:
            commit_run(writer, {"run_id": run_id, "kind": "run", "status": "committed"}, predicate)
    assert failure.value.published == list(COMMIT_ORDER[:k])


def staging_entries(catalog: Catalog) -> list[str]:
    selector = pafs.FileSelector(f"{catalog.root}/{STAGING_DIR}", recursive=True, allow_not_found=True)
    return [i.path for i in catalog.fs.get_file_info(selector)]


def assert_each_row_once(dst: str, run_ids: list[str], orphans_allowed: set[str] | None = frozenset()) -> set[str]:
    """Every run's rows once in every table (ids and child rows), each run committed once per
    table, its record written, nothing left staged, no data file outside the latest versions
    but ``orphans_allowed`` (None: any); returns the data files outside them."""
    catalog = Catalog(dst)
    assert [r["run_id"] for r in catalog.runs] == run_ids
    expected = sorted(r["video_id"] for run_id in run_ids for r in rows_of(run_id))
    assert every_video_once(catalog) == expected
    tags = Counter(catalog.read("hashtags")["video_id"].to_pylist())
    segments = Counter(catalog.read("transcript_segments")["video_id"].to_pylist())
    for v in catalog.read("videos").to_pylist():
        assert tags[v["video_id"]] == v["n_hashtags"] and segments[v["video_id"]] == v["n_segments"], v["video_id"]
    orphans = set()
    for table in TABLES:
        delta = catalog.open_table(table)
        commits = Counter(h.get(RUN_ID_KEY) for h in delta.history())
        assert all(commits[run_id] == 1 for run_id in run_ids), (table, commits)
        assert delta.transaction_version(APP_ID) == len(run_ids)
        live = {f"{catalog.root}/{table}/{p}" for p in pa.table(delta.get_add_actions())["path"].to_pylist()}
        files = {i.path for i in catalog.fs.get_file_info(pafs.FileSelector(f"{catalog.root}/{table}", recursive=True))
                 if i.type == pafs.FileType.File and "/_delta_log/" not in i.path}
        orphans |= files - live
    if orphans_allowed is not None:  # append-only runs: no file outside the latest versions
        assert orphans <= orphans_allowed, sorted(orphans - orphans_allowed)
    assert staging_entries(catalog) == []
    return orphans


# --------------------------------------------------------------------------- two finishers


def _finisher(dst: str, env: dict, barrier, commands, results) -> None:
    """A process that rolls forward ``dst`` at the barrier, once per command."""
    os.environ.update(env)
    from extract.tables import writer
    from extract.tables.catalog import Catalog

    take = writer.CommitLease.try_acquire
    while (command := commands.get()) is not None:
        # Without the lease both finishers commit at once: the Delta commits alone must hold.
        writer.CommitLease.try_acquire = take if command == "lease" else (lambda self: True)
        try:
            barrier.wait(timeout=60)
            results.put(("ok", writer.roll_forward(Catalog(dst))))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put(("error", f"{type(exc).__name__}: {exc}"))


@LOCAL_AND_SLOW_S3
def test_two_processes_finishing_one_pending_commit_append_each_row_once(dst, monkeypatch):
    spawn = mp.get_context("spawn")
    barrier, commands, results = spawn.Barrier(2), spawn.Queue(), spawn.Queue()
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    workers = [spawn.Process(target=_finisher, args=(dst, env, barrier, commands, results)) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        run_ids, orphans, both_finished = [], set(), 0
        for i in range(rounds(dst, len(RACES))):
            k, lease = RACES[i % len(RACES)]
            run_id = f"r{i:02d}"
            pending_run(dst, run_id, k, monkeypatch)  # stopped before each table in turn
            run_ids.append(run_id)
            for _ in workers:
                commands.put("lease" if lease else "no-lease")
            outcomes = [results.get(timeout=120) for _ in workers]
            assert all(kind == "ok" for kind, _ in outcomes), outcomes
            finished = [ids for _, ids in outcomes]
            assert [run_id] in finished and all(ids in ([], [run_id]) for ids in finished), finished
            both_finished += finished.count([run_id]) == 2
            if lease:
                assert finished.count([run_id]) == 1, "with the lease, one process finishes, the other waits"
                orphans = assert_each_row_once(dst, run_ids, orphans)  # and no losing commit's file
            else:  # the losing commit of the two may leave its data files (`extract maintain` vacuums them)
                orphans = assert_each_row_once(dst, run_ids, None)
        assert both_finished, "without the lease, the two never finished the same commit at once"
    finally:
        for _ in workers:
            commands.put(None)
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()


# --------------------------------------------------------------------------- kills


def _killed_run(dst: str, env: dict, run_id: str, k: int) -> None:
    """Stage ``run_id`` and commit it, SIGKILLing this process right after its k-th table commit."""
    os.environ.update(env)
    from test_writer import prepare

    from extract.tables import writer

    real, calls = writer._commit_table, []

    def commit_then_die(catalog, delta, table, marker, retries):
        real(catalog, delta, table, marker, retries)
        calls.append(table)
        if len(calls) == k:
            os.kill(os.getpid(), signal.SIGKILL)

    writer._commit_table = commit_then_die
    staged, predicate = prepare(dst, rows_of(run_id), run_id)
    writer.commit_run(staged, {"run_id": run_id, "kind": "run", "status": "committed"}, predicate)


def forked_children() -> mp.context.BaseContext:
    """A multiprocessing context whose children fork from a server that imported this module
    (deltalake, pyarrow, the writer) once and started no thread: a child costs milliseconds,
    not a fresh interpreter's imports."""
    forkserver = mp.get_context("forkserver")
    forkserver.set_forkserver_preload([__name__])
    return forkserver


@pytest.mark.stress
@pytest.mark.slow  # a forked process per round; each round several seconds on a loaded 2-core machine
@LOCAL_AND_S3
def test_a_run_killed_after_each_table_commit_is_finished_once_by_the_next(dst):
    children = forked_children()
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    run_ids: list[str] = []
    for i in range(rounds(dst, len(COMMIT_ORDER))):
        cycle, k = divmod(i, len(COMMIT_ORDER))  # killed right after its (k+1)-th table commit, each in turn
        out = f"{dst}/cycle-{cycle}"  # a fresh output per cycle: a round's reads do not grow with all before it
        run_ids = [] if k == 0 else run_ids
        killed, following = f"killed-{i:02d}-{k + 1}", f"next-{i:02d}"
        child = children.Process(target=_killed_run, args=(out, env, killed, k + 1))
        child.start()
        child.join(timeout=120)
        assert child.exitcode == -signal.SIGKILL, child.exitcode
        catalog = Catalog(out)
        assert killed not in [r["run_id"] for r in catalog.runs]  # Catalog readers see nothing of it yet
        # its lease names a dead process on this host: the next run takes it over at once
        writer, predicate = prepare(out, rows_of(following), following)
        commit_run(writer, {"run_id": following, "kind": "run", "status": "committed"}, predicate)
        run_ids += [killed, following]
        assert_each_row_once(out, run_ids)


# --------------------------------------------------------------------------- latest readers


def latest_rows(catalog: Catalog, table: str, columns: list[str]) -> pa.Table:
    """``columns`` of ``table`` at its latest Delta version (what a plain Delta reader sees)."""
    delta = catalog.open_table(table)
    return snapshot_dataset(delta, catalog.fs, f"{catalog.root}/{table}", catalog.table_uri(table)).to_table(
        columns=columns)


def published_children_sql() -> str:
    """The semi-join of docs/QUERIES.md (example ``published-children``)."""
    from test_queries import doc_blocks

    (sql,) = re.findall(r'"""(.*?)"""', doc_blocks()["published-children"], re.S)
    return sql


@LOCAL_AND_S3
def test_a_latest_version_reader_never_meets_a_video_without_its_frames(dst, monkeypatch):
    catalog = Catalog(dst)
    ensure_tables(catalog, D)
    real = writer_module._commit_table

    def slow(*args, **kwargs):  # room for the reader to look between the table commits
        real(*args, **kwargs)
        time.sleep(0.15)

    monkeypatch.setattr(writer_module, "_commit_table", slow)
    stop, seen, problems = threading.Event(), Counter(), []
    sql = published_children_sql()

    def poll() -> None:
        try:
            look()
        except Exception as exc:  # noqa: BLE001 - a failing reader fails the test
            problems.append(repr(exc))

    def look() -> None:
        import duckdb

        reader = Catalog(dst)
        while not stop.is_set():
            videos = latest_rows(reader, "videos", ["video_id", "run_id", "n_frames", "n_segments"])
            # children after videos: their versions are at least as new as the videos read
            frames = latest_rows(reader, "frame_embeddings", ["video_id", "run_id", "frame_index"])
            segments = latest_rows(reader, "transcript_segments", ["video_id", "run_id"])
            n_frames = Counter(zip(frames["video_id"].to_pylist(), frames["run_id"].to_pylist()))
            n_segments = Counter(zip(segments["video_id"].to_pylist(), segments["run_id"].to_pylist()))
            for v in videos.to_pylist():
                key = (v["video_id"], v["run_id"])
                if n_frames[key] != v["n_frames"] or n_segments[key] != v["n_segments"]:
                    problems.append((key, v["n_frames"], n_frames[key], v["n_segments"], n_segments[key]))
            unpublished = set(n_frames) - set(zip(videos["video_id"].to_pylist(), videos["run_id"].to_pylist()))
            seen["polls"] += 1
            seen["unpublished children"] += bool(unpublished)
            joined = duckdb.sql(sql).fetchall()  # over the arrow tables `videos` and `frames` read above
            assert not {vid for vid, _ in joined} & {vid for vid, _ in unpublished}, "an unpublished frame joined"
            assert len(joined) == sum(n for key, n in n_frames.items() if key not in unpublished)

    for i in range(2):
        reader = threading.Thread(target=poll)
        reader.start()
        try:
            writer = RunWriter(catalog, f"r{i}", D, ensure_tables(catalog, D), catalog.next_seq)
            writer.write(rows_to_tables(rows_of(f"r{i}", 4), ctx(f"r{i}")))
            commit_run(writer, {"run_id": f"r{i}", "kind": "run", "status": "committed"},
                       reprocessing_predicate({}, [], writer.dts))
            catalog.reload()
        finally:
            stop.set()
            reader.join()
            stop.clear()
    assert not problems, problems[:5]
    assert seen["polls"] >= 5 and seen["unpublished children"] >= 1, seen  # it did look mid-run
    assert roll_forward(catalog) == []
    assert every_video_once(Catalog(dst)) == sorted(r["video_id"] for i in range(2) for r in rows_of(f"r{i}", 4))


def test_the_failure_message_says_what_was_published(tmp_path, monkeypatch):
    from extract.tables.writer import what_was_published

    dst = str(tmp_path / "out")
    for k in range(len(COMMIT_ORDER) + 1):
        writer, predicate = prepare(dst, rows_of(f"r{k}"), f"r{k}")
        real_write_json = writer_module.write_json

        def fail_record(fs, path, data, _real=real_write_json):
            if "/_runs/" in path:
                raise OSError("store unavailable")
            _real(fs, path, data)

        with monkeypatch.context() as patch:
            patch.setattr(writer_module, "_commit_table", crash_after(k))
            patch.setattr(writer_module, "write_json", fail_record)
            with pytest.raises(CommitIncompleteError) as failure:
                commit_run(writer, {"run_id": f"r{k}", "kind": "run"}, predicate)
        message = what_was_published(failure.value)
        assert failure.value.published == list(COMMIT_ORDER[:k]), message
        if k == 0:
            assert message.startswith("nothing was published") and "r0" in message
        elif k == len(COMMIT_ORDER):
            assert "published every table, but its run record was not written" in message
        else:
            assert f"published tables {', '.join(COMMIT_ORDER[:k])} " in message
            assert f"not {', '.join(COMMIT_ORDER[k:])}, not to Catalog readers" in message
        assert "OSError" in str(failure.value)
        assert roll_forward(Catalog(dst)) == [f"r{k}"]  # the next finisher completes it, once
    assert what_was_published(RuntimeError("ray died")) == "nothing was published"
    assert every_video_once(Catalog(dst)) == sorted(r["video_id"] for k in range(len(COMMIT_ORDER) + 1)
                                                    for r in rows_of(f"r{k}"))
