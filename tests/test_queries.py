"""docs/QUERIES.md: every example runs against the output of a real tiny `extract run`.

Each ```python block starting with ``# example: <name>`` is executed with the parameters
(``DST``, ``WORD``, ``VIDEO_ID``, ``SOUND_ID``, the training-set days, ``LABELS``, ``TRAINING_SET``) set for
that output, then checked against the same answer computed here from ``Catalog`` reads
(deltalake underneath), so an example that runs but answers wrongly fails, and so does an
example without a check or a check without an example. The ``# setup: duckdb`` block (DuckDB's
delta extension, from its wheel) runs before every example; ``# setup: spark`` starts one Sail
Spark Connect server on 127.0.0.1 for the ``*-spark`` examples; the ``training-set-*`` examples
run on a local Ray (2 CPUs) started once for them.

The run (``committed_tiny_run``) is made once per session and shared with tests/test_report.py:
the ``small_samples`` clips, one moved to another upload day, one caption made hostile, plus a
file that is not a video (so ``errors`` has a row).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import REPO, run_cli

from extract.tables.catalog import Catalog

DOC = REPO / "docs" / "QUERIES.md"
BLOCK = re.compile(r"```python\n(# (example: ([\w-]+)|setup: (\w+)|parameters)\n.*?)```", re.S)
HOSTILE_CAPTION = "no sound <script>alert(1)</script>#x"
NOT_A_VIDEO = "not_a_video"
QUERY_VIDEO = "beach_day"

_RUNS: dict[tuple[str, str], tuple[Path, str] | str] = {}  # (DST, run_id), or why the run failed


def committed_tiny_run(small_samples: Path, tiny_config: Path, tmp_path_factory) -> tuple[Path, str]:
    """``(DST, run_id)`` of one committed ``extract run`` (made on first use in a session; a
    failed run is not retried by the next module that asks)."""
    key = (str(small_samples), str(tiny_config))
    if key not in _RUNS:
        _RUNS[key] = _tiny_run(small_samples, tiny_config, tmp_path_factory)
    if isinstance(_RUNS[key], str):
        pytest.fail(_RUNS[key])
    return _RUNS[key]


def _tiny_run(small_samples: Path, tiny_config: Path, tmp_path_factory) -> tuple[Path, str] | str:
    root = tmp_path_factory.mktemp("tiny-run")
    rows = [json.loads(line) for line in small_samples.read_text().splitlines()]
    for row in rows:
        row["uri"] = str(small_samples.parent / row["uri"])
        if row["video_id"] == "silent_loop":  # a second upload day, and an untrusted caption
            row["upload_ts"], row["caption"] = "2026-11-23T09:00:00Z", HOSTILE_CAPTION
    broken = root / f"{NOT_A_VIDEO}.mp4"
    broken.write_bytes(b"this is not a video\n" * 64)
    rows.append({"video_id": NOT_A_VIDEO, "uri": str(broken), "caption": "#broken",
                 "upload_ts": "2026-11-24T12:00:00Z"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = root / "out"
    allowed = json.dumps([str(small_samples.parent), str(root)])  # the manifest sits apart from the samples
    proc = run_cli("run", "--input", str(manifest), "--output", str(dst), "--config", "jobs/configs/local.yaml",
                   "--config", str(tiny_config), "--no-progress", "--set", f"input.allowed_uris={allowed}")
    if proc.returncode != 0:
        return f"extract run exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    (run_file,) = (dst / "_runs").glob("*.json")
    return dst, run_file.stem


def doc_blocks() -> dict[str, str]:
    """``{name: code}`` of the marked blocks of docs/QUERIES.md (``parameters`` and the
    ``setup:<engine>`` blocks included)."""
    blocks: dict[str, str] = {}
    for match in BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        name = match.group(3) or (f"setup:{match.group(4)}" if match.group(4) else "parameters")
        assert name not in blocks, f"duplicate example name {name!r} in {DOC}"
        blocks[name] = match.group(1)
    return blocks


EXAMPLES = sorted(n for n in doc_blocks() if n != "parameters" and not n.startswith("setup:"))
FIRST_DAY, LAST_DAY = "2026-11-24", "2026-12-31"  # the training-set window: leaves out silent_loop's day
LABELS = {"beach_day": 1, "silent_loop": 0, "no_such_video": 1}  # plus the rest of the videos, labelled 0


@pytest.fixture(scope="module")
def output(tmp_path_factory, small_samples, tiny_config) -> dict[str, Any]:
    """The run's DST plus the answers the examples must give, computed from Catalog reads."""
    dst, run_id = committed_tiny_run(small_samples, tiny_config, tmp_path_factory)
    from extract.config import load_config
    from extract.pipeline.duplicates import find_duplicates

    from extract.pipeline.sounds import find_sounds

    find_duplicates(str(dst), load_config([tiny_config]), "duplicates-run")  # the copies example reads its table
    find_sounds(str(dst), load_config([tiny_config]), "sounds-run")  # and the sounds examples theirs
    catalog = Catalog(str(dst))
    videos = catalog.read("videos").to_pylist()
    segments = catalog.read("transcript_segments").to_pylist()
    assert segments, "the tiny Whisper model produced no transcript segment"
    # DuckDB and Arrow match with RE2, whose \b is an ASCII word boundary: pick an ASCII word
    # (the tiny model's tokens can be anything) and compare under the same rule.
    words = Counter(w for s in segments for w in re.findall(r"\b[A-Za-z]+\b", s["text"], re.ASCII))
    assert words, f"no ASCII word in the tiny model's transcripts: {[s['text'] for s in segments]}"
    word = words.most_common(1)[0][0]
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.I | re.ASCII)
    tags: Counter = Counter()
    for row in catalog.read("hashtags").to_pylist():
        tags[(row["dt"], row["tag"], row["video_id"])] = 1
    per_day = Counter((dt, tag) for dt, tag, _ in tags)
    with_embedding = [v for v in videos if v["clip_embedding"] is not None]
    matrix = np.asarray([v["clip_embedding"] for v in with_embedding], np.float64)
    query = [v["video_id"] for v in with_embedding].index(QUERY_VIDEO)
    cosine = matrix @ matrix[query] / np.linalg.norm(matrix, axis=1) / np.linalg.norm(matrix[query])
    matches = {m["video_id"]: m for m in catalog.read("sound_matches").to_pylist()}
    sound_of = {v["video_id"]: (matches[v["video_id"]]["sound_id"] if v["video_id"] in matches else v["video_id"])
                for v in videos}
    shared = {m["sound_id"] for m in matches.values()}
    per_sound_day = Counter((v["dt"], sound_of[v["video_id"]]) for v in videos if sound_of[v["video_id"]] in shared)
    sound_id = Counter(sound_of[v] for v in matches).most_common(1)[0][0] if matches else None
    return {
        "dst": dst, "word": word,
        "videos_per_day": sorted(Counter(v["dt"] for v in videos).items()),
        "tag_rows": Counter(row["tag"] for row in catalog.read("hashtags").to_pylist()),
        "top_tags": sorted(((dt, tag, n) for (dt, tag), n in per_day.items()), key=lambda x: (x[0], -x[2], x[1])),
        "nearest": sorted(zip((v["video_id"] for v in with_embedding), cosine), key=lambda x: -x[1])[:5],
        "segments": sorted((s["video_id"], s["segment_index"]) for s in segments if pattern.search(s["text"])),
        "saying": sorted(v["video_id"] for v in videos if pattern.search(v["transcript_text"])),
        "errors": Counter((e["stage"], e["error_type"]) for e in catalog.read("errors").to_pylist()),
        "error_rows": catalog.read("errors").to_pylist(),
        "training_frames": lambda run_id: _frames_as_of(dst, run_id),
        "by_topic": sorted(Counter((v["dt"], v["top_topic"]) for v in videos if v["top_topic"]).items()),
        "copies": sorted((d["video_id"], d["kind"], d["match_frames"]) for d in catalog.read("duplicates").to_pylist()
                         if d["duplicate_of"] == QUERY_VIDEO),
        "training_set": sorted((v["video_id"], v["dt"], _label(v["video_id"])) for v in videos
                               if FIRST_DAY <= v["dt"] <= LAST_DAY),
        "embeddings": {v["video_id"]: v["clip_embedding"] for v in videos},
        "sound_id": sound_id,
        "top_sounds": sorted(((dt, s, n) for (dt, s), n in per_sound_day.items()), key=lambda x: (x[0], -x[2], x[1])),
        "using_sound": sorted((v["video_id"], v["dt"], matches[v["video_id"]]["offset_s"] if v["video_id"] in matches
                               else 0.0) for v in videos if sound_of[v["video_id"]] == sound_id),
        "published_frames": _published_frames(catalog, videos),
    }


def _published_frames(catalog: Catalog, videos: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(video_id, frame_index) of the frame rows whose (video_id, run_id) has a ``videos`` row."""
    published = {(v["video_id"], v["run_id"]) for v in videos}
    frames = catalog.read("frame_embeddings", ["video_id", "run_id", "frame_index"]).to_pylist()
    assert frames and published, "the tiny run committed no frame or no video"
    return sorted((f["video_id"], f["frame_index"]) for f in frames if (f["video_id"], f["run_id"]) in published)


def _label(video_id: str) -> int:
    return LABELS.get(video_id, 0)


@pytest.fixture(scope="module")
def labels_file(output, tmp_path_factory) -> str:
    """``LABELS``: every committed video labelled, plus an id the tables do not hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = sorted(set(output["embeddings"]) | set(LABELS))
    path = tmp_path_factory.mktemp("labels") / "labels.parquet"
    pq.write_table(pa.table({"video_id": ids, "label": [_label(i) for i in ids]}), path)
    return str(path)


@pytest.fixture(scope="module")
def spark():
    """A Sail Spark Connect server on 127.0.0.1 and a session on it, made by the doc's setup block."""
    import importlib.util
    import os

    # In a pytest-xdist worker ``__main__`` has no file, which PySpark takes for its own doctests:
    # it then imports its test utilities, which look for a Spark installation (SPARK_HOME) that a
    # Spark Connect client does not have. Point it at the client package so that lookup passes.
    os.environ.setdefault("SPARK_HOME", os.path.dirname(importlib.util.find_spec("pyspark").origin))
    namespace: dict[str, Any] = {}
    exec(compile(doc_blocks()["setup:spark"], f"{DOC}:setup:spark", "exec"), namespace)
    yield namespace["spark"]
    namespace["spark"].stop()
    namespace["server"].stop()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the training-set recipes (Ray Data and Daft join it)."""
    import ray

    from extract.pipeline.ray_backend import start_local_ray

    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _frames_as_of(dst: Path, run_id: str) -> list[tuple]:
    """(video_id, dt, caption, frames, D) per video committed as of ``run_id``, from Catalog."""
    catalog = Catalog(str(dst), as_of=run_id)
    frames = Counter(catalog.read("frame_embeddings", ["video_id"])["video_id"].to_pylist())
    dim = catalog.read("frame_embeddings", ["embedding"]).schema.field("embedding").type.list_size
    return sorted((v["video_id"], v["dt"], v["caption"], frames[v["video_id"]], dim)
                  for v in catalog.read("videos", ["video_id", "dt", "caption"]).to_pylist() if frames[v["video_id"]])


def run_example(name: str, output: dict[str, Any], **engines: Any) -> dict[str, Any]:
    """Run the parameters block, the DuckDB setup and example ``name``; ``engines`` (``spark``,
    ``LABELS``, ``TRAINING_SET``) are set after the parameters. Returns the example's namespace."""
    blocks = doc_blocks()
    namespace: dict[str, Any] = {"__name__": f"queries_{name.replace('-', '_')}"}
    exec(compile(blocks["parameters"], f"{DOC}:parameters", "exec"), namespace)
    namespace.update(DST=str(output["dst"]), WORD=output["word"], VIDEO_ID=QUERY_VIDEO, SOUND_ID=output["sound_id"],
                     FIRST_DAY=FIRST_DAY, LAST_DAY=LAST_DAY, **engines)
    exec(compile(blocks["setup:duckdb"], f"{DOC}:setup:duckdb", "exec"), namespace)
    exec(compile(blocks[name], f"{DOC}:{name}", "exec"), namespace)
    return namespace


def _read_training_set(folder: str) -> list[tuple]:
    import pyarrow.dataset as ds

    table = ds.dataset(folder, format="parquet").to_table()
    return sorted(zip(table["video_id"].to_pylist(), table["dt"].to_pylist(), table["label"].to_pylist()))


def _check_training_set(folder: str, output: dict[str, Any]) -> None:
    import pyarrow.dataset as ds

    assert _read_training_set(folder) == output["training_set"]
    table = ds.dataset(folder, format="parquet").to_table()
    assert set(table.column_names) == {"video_id", "dt", "clip_embedding", "audio_embedding", "label"}
    for video_id, embedding in zip(table["video_id"].to_pylist(), table["clip_embedding"].to_pylist()):
        assert np.allclose(embedding, output["embeddings"][video_id])


def _check_nearest(got: list[tuple[str, float]], output: dict[str, Any]) -> None:
    assert got[0][0] == QUERY_VIDEO and abs(got[0][1] - 1.0) < 1e-5, got
    assert [v for v, _ in got] == [v for v, _ in output["nearest"]]
    assert np.allclose([c for _, c in got], [c for _, c in output["nearest"]], atol=1e-5)
    assert all(a >= b - 1e-6 for (_, a), (_, b) in zip(got, got[1:]))


def _check_top_tags(got: list[tuple[Any, str, int]], output: dict[str, Any]) -> None:
    assert [(str(dt), tag, n) for dt, tag, n in got] == output["top_tags"]
    assert len({str(dt) for dt, _, _ in got}) == 2  # two upload days in this output


CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "videos-by-topic-duckdb": lambda ns, out: _eq(
        sorted(((str(dt), topic), n) for dt, topic, n, _ in ns["by_topic"]), out["by_topic"]),
    "copies-of-a-video": lambda ns, out: _eq(sorted(ns["copies"]), out["copies"]),
    "top-sounds-duckdb": lambda ns, out: _eq([(str(dt), s, n) for dt, s, n in ns["top_sounds"]], out["top_sounds"]),
    "videos-using-a-sound": lambda ns, out: _eq([(v, str(dt), o) for v, dt, o in ns["using"]], out["using_sound"]),
    "delta-duckdb": lambda ns, out: _eq(
        [(str(dt), n) for dt, n in ns["committed_videos"]], out["videos_per_day"]),
    "polars-scan-delta": lambda ns, out: _eq([(str(dt), n) for dt, n in ns["videos_per_day"]], out["videos_per_day"]),
    "time-travel-join": lambda ns, out: _eq(ns["training_frames"], out["training_frames"](ns["first"]["run_id"])),
    "delta-spark": lambda ns, out: _eq(ns["videos_per_day_spark"], out["videos_per_day"]),
    "time-travel-join-spark": lambda ns, out: _eq(ns["training_frames_spark"],
                                                  out["training_frames"](ns["first"]["run_id"])),
    "top-hashtags-spark": lambda ns, out: _check_top_tags(ns["top_tags_spark"], out),
    "training-set-ray-data": lambda ns, out: _check_training_set(f"{ns['TRAINING_SET']}/ray-data", out),
    "training-set-daft": lambda ns, out: (_check_training_set(f"{ns['TRAINING_SET']}/daft", out),
                                          _eq(ns["daft"].get_or_infer_runner_type(), "ray")),
    "exactly-once-catalog": lambda ns, out: (
        _eq([r["video_id"] for r in ns["one_video"].to_pylist()], [QUERY_VIDEO]),
        _eq(dict(ns["tag_counts"]), dict(out["tag_rows"]))),
    "top-hashtags-duckdb": lambda ns, out: _check_top_tags(ns["top_tags"], out),
    "top-hashtags-pyarrow": lambda ns, out: _check_top_tags(
        [(dt, tag, n) for dt, day in ns["top_tags_arrow"].items() for tag, n in day], out),
    "nearest-duckdb": lambda ns, out: _check_nearest(ns["neighbours"], out),
    "nearest-duckdb-array": lambda ns, out: _check_nearest(ns["neighbours_array"], out),
    "nearest-numpy": lambda ns, out: _check_nearest(ns["neighbours_numpy"], out),
    "transcripts-duckdb": lambda ns, out: _eq(sorted((r[0], r[1]) for r in ns["said"]), out["segments"]),
    "transcripts-pyarrow": lambda ns, out: _eq(sorted(ns["videos_saying"]["video_id"].to_pylist()), out["saying"]),
    "published-children": lambda ns, out: _eq(ns["published_frames"], out["published_frames"]),
    "errors-duckdb": lambda ns, out: (
        _eq({(s, t): n for s, t, n, _, _ in ns["errors_by_stage"]}, dict(out["errors"])),
        _eq([r for _, _, _, r, _ in ns["errors_by_stage"]],
            [sum(e["retryable"] for e in out["error_rows"] if (e["stage"], e["error_type"]) == (s, t))
             for s, t, _, _, _ in ns["errors_by_stage"]]),
        _eq(all(NOT_A_VIDEO in m for *_, m in ns["errors_by_stage"]), True)),
}


def _eq(got: Any, want: Any) -> None:
    assert got == want


def test_every_example_has_a_check():
    blocks = doc_blocks()
    assert {"parameters", "setup:duckdb", "setup:spark"} <= set(blocks) and set(EXAMPLES) == set(CHECKS)
    assert {"DST", "WORD", "VIDEO_ID", "FIRST_DAY", "LABELS", "TRAINING_SET"} <= set(
        re.findall(r"^(\w+)(?:, \w+)* =", blocks["parameters"], re.M)) | {"LAST_DAY"}


def test_no_example_reads_through_deltalakes_pyarrow_path():
    """deltalake's ``to_pyarrow_dataset``/``to_pyarrow_table`` may abort a process at exit
    (delta-rs #2184): the examples read through DuckDB, Polars or Catalog instead
    (tests/test_exit_codes.py runs them in 50 processes)."""
    reading = {name: code for name, code in doc_blocks().items() if re.search(r"\.to_pyarrow_(dataset|table)\(", code)}
    assert not reading, sorted(reading)


SQL_AND_LOCAL = [n for n in EXAMPLES if not n.endswith("-spark") and not n.startswith("training-set-")]


SOUND_EXAMPLES = ("top-sounds-duckdb", "videos-using-a-sound")  # need two videos of one sound


@pytest.mark.parametrize("name", SQL_AND_LOCAL)
def test_example_answers_correctly(name, output):
    assert name in CHECKS, f"docs/QUERIES.md example {name!r} has no check here"
    if name in SOUND_EXAMPLES and output["sound_id"] is None:
        pytest.skip("the tiny run's videos share no sound, so a sound's videos cannot be asked for")
    namespace = run_example(name, output)
    CHECKS[name](namespace, output)  # each check asserts the example's answer against Catalog reads


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n.endswith("-spark")])
def test_spark_example_answers_correctly(name, output, spark):
    assert name in CHECKS, f"no check for the Spark example {name}"
    namespace = run_example(name, output, spark=spark)
    CHECKS[name](namespace, output)  # asserts Spark's answer against Catalog reads


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n.startswith("training-set-")])
def test_training_set_recipe_on_local_ray(name, output, labels_file, local_ray, tmp_path):
    assert name in CHECKS, f"no check for the training-set recipe {name}"
    namespace = run_example(name, output, LABELS=labels_file, TRAINING_SET=str(tmp_path))
    CHECKS[name](namespace, output)  # asserts the written training set against Catalog reads and the labels


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n.startswith("training-set-")])
def test_training_set_recipe_and_files_outside_its_days(name, output, labels_file, local_ray, tmp_path):
    """With the files of the day before the window made unreadable, Daft's recipe still writes
    the same training set (its ``dt`` filter prunes partitions); Ray Data's fails, as the doc says
    (``read_delta`` opens every file's footer while planning)."""
    import shutil

    dst = tmp_path / "out"
    shutil.copytree(Path(output["dst"]) / "videos", dst / "videos")
    outside = [p for p in (dst / "videos").glob("dt=*/*.parquet") if p.parent.name < f"dt={FIRST_DAY}"]
    assert outside, "the output has no day before the training-set window"
    for path in outside:
        path.write_bytes(b"not a Parquet file\n" * 64)
    engines = {"LABELS": labels_file, "TRAINING_SET": str(tmp_path / "set")}
    if name == "training-set-ray-data":
        with pytest.raises(Exception, match="Parquet magic bytes not found"):
            run_example(name, {**output, "dst": dst}, **engines)
        return
    namespace = run_example(name, {**output, "dst": dst}, **engines)
    CHECKS[name](namespace, output)


def test_duckdb_reads_through_the_delta_log(output):
    """The doc's DuckDB is the native extension reading the log: a file the log no longer lists
    (a replaced file that vacuum has not deleted yet) is not read, unlike a glob of the folder."""
    import shutil

    namespace = run_example("delta-duckdb", output)
    duckdb = namespace["duckdb"]
    assert duckdb.sql("SELECT count(*) FROM duckdb_extensions() WHERE extension_name = 'delta' AND loaded"
                      ).fetchall() == [(1,)]
    videos = Path(output["dst"]) / "videos"
    live = next(videos.glob("dt=*/*.parquet"))
    stray = live.with_name("stray-copy.parquet")
    shutil.copy(live, stray)
    try:
        want = Catalog(str(output["dst"])).read("videos").num_rows
        assert duckdb.sql(f"SELECT count(*) FROM delta_scan('{videos}')").fetchall() == [(want,)]
        assert duckdb.sql(f"SELECT count(*) FROM '{videos}/*/*.parquet'").fetchall()[0][0] > want
    finally:
        stray.unlink()


def test_engines_count_what_catalog_reads(output, spark):
    """Every table, through DuckDB (native delta_scan and a deltalake dataset), Spark SQL on
    Sail, Polars and deltalake: the rows Catalog reads."""
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    from extract.tables.schemas import TABLES

    run_example("delta-duckdb", output)  # loads the delta extension into the default connection
    catalog = Catalog(str(output["dst"]))
    for table in TABLES:
        uri = f"{output['dst']}/{table}"
        want = catalog.read(table).num_rows
        dataset = DeltaTable(uri).to_pyarrow_dataset()  # noqa: F841 - DuckDB scans it by name
        assert duckdb.sql("SELECT count(*) FROM dataset").fetchall()[0][0] == want, table
        assert duckdb.execute("SELECT count(*) FROM delta_scan(?)", [uri]).fetchall()[0][0] == want, table
        assert spark.read.format("delta").load(uri).count() == want, table
        assert pl.scan_delta(uri).select(pl.len()).collect().item() == want, table
        assert DeltaTable(uri).count() == want, table
    assert catalog.read("videos").num_rows == 3 and catalog.read("errors").num_rows == 1


def test_expected_answers_are_not_trivial(output):
    # The checks above compare against these; make sure they are not empty by construction.
    assert output["segments"] and output["saying"] and output["errors"]
    assert len(output["nearest"]) >= 3 and len(output["videos_per_day"]) == 2
    assert sum(1 for dt, _, _ in output["top_tags"] if dt == "2026-11-24") >= 4
    catalog = Catalog(str(output["dst"]))
    caption = catalog.read("videos", ["caption"], filter=pc.field("video_id") == "silent_loop")
    assert caption["caption"].to_pylist() == [HOSTILE_CAPTION]
