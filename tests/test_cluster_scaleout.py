"""Scale-out on one machine: the daily job submitted with ``ray job submit`` to a real three-node
Ray cluster (``tests/ray_cluster.py``: a head and two workers, each its own raylet), compared
with a local in-process run of the same clips; then the same with one worker node killed mid-run.

The workers carry a custom resource ``accel`` standing in for GPUs: with
``runtime.accelerator_resource=accel`` the Whisper and CLIP actors run only there (on CPU, as
``runtime.device=cpu``), so losing a worker loses model actors, their in-flight batches and the
blocks in that node's object store. Slow (``make test`` runs it, ``make check`` does not).
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from ray_cluster import LocalCluster

from extract.tables.catalog import Catalog

pytestmark = [pytest.mark.slow, pytest.mark.stress]

DAY = "2026-03-02"
ACCEL = "accel"
# With tiny models the stages take well under a second per video once the actors have loaded
# (about 40 s here), so a run needs many videos for a node to die while some but not all are done.
COPIES = 8
N_VIDEOS = 15 * COPIES
# One Whisper and one CLIP actor: a worker node that hosts either holds a pool's only actor.
# Pools fixed so both the cluster (8 logical CPUs) and the 2-core box keep the same batches
# (clip 64 frames, whisper 8 windows, 4 videos per model call: the same on both) and a 2-core
# machine is not asked to run 7 model actors.
# Default decoding, temperature fallback included: each window samples from a stream seeded by
# its own audio (extract/models/whisper_decoder.py), so a window re-decoded in another batch -
# as after a lost node - draws the same text.
SETTINGS = ("runtime.whisper_actors=1", "runtime.clip_actors=1", "runtime.ocr_actors=1", "runtime.decode_workers=2")
JOB_TIMEOUT_S = 480  # the killed run took 264 s here
EMBEDDINGS = ("clip_embedding", "caption_embedding", "hashtags_embedding", "transcript_embedding",
              "audio_embedding", "ocr_embedding")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> Path:
    """The uploads of ``DAY``: ``N_VIDEOS`` videos, ``COPIES`` uploads of each of 15 distinct short
    clips (five kinds, three seeds each), each under its own id; returns the uploads root."""
    import shutil

    from extract.tools.samples import SAMPLE_SPECS, make_samples

    kinds = [s for s in SAMPLE_SPECS if s.stem in ("beach_day", "portrait_dance", "silent_loop", "tones_only",
                                                    "city_night")]
    specs = tuple(replace(s, stem=f"{s.stem}_{k}") for k in range(3) for s in kinds)
    clips = make_samples(tmp_path_factory.mktemp("clips"), specs=specs, upload_date=DAY)
    root = tmp_path_factory.mktemp("uploads")
    (root / DAY).mkdir()
    rows = []
    for line in clips.read_text().splitlines():
        row = json.loads(line)
        for k in range(COPIES):
            vid = f"{row['video_id']}-{k}"
            shutil.copy(clips.parent / row["uri"], root / DAY / f"{vid}.mp4")
            rows.append({**row, "video_id": vid, "uri": f"{vid}.mp4"})
    (root / DAY / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(rows) == N_VIDEOS
    return root


def reference_id(vid: str) -> str:
    """The reference run's id for upload ``vid`` (``<clip>-<k>`` holds the same bytes as ``<clip>-0``)."""
    return vid.rsplit("-", 1)[0] + "-0"


@pytest.fixture(scope="module")
def local_run(uploads, tiny_config, tmp_path_factory) -> Path:
    """The reference: ``extract run`` (in-process Ray on this machine) with the same models and
    settings over one upload of each distinct clip (``<clip>-0``): the other uploads of a clip
    are the same bytes, so their features must equal its."""
    root = tmp_path_factory.mktemp("local")
    rows = [json.loads(line) for line in (uploads / DAY / "manifest.jsonl").read_text().splitlines()]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({**r, "uri": str(uploads / DAY / r["uri"])}) + "\n"
                                for r in rows if reference_id(r["video_id"]) == r["video_id"]))
    dst = root / "out"
    result = run_cli("run", "--input", str(manifest), "--output", str(dst),
                     "--config", "jobs/configs/local.yaml", "--config", str(tiny_config), "--no-progress",
                     "--set", f"input.allowed_uris={json.dumps([str(uploads / DAY)])}",
                     *[arg for key in SETTINGS for arg in ("--set", key)])
    assert result.returncode == 0, result.stdout + result.stderr
    return dst


@pytest.fixture
def cluster():
    """A head (2 CPUs, the job server) and two workers (3 CPUs and 1 ``accel`` each); every
    process of every node is killed afterwards, also when the test fails."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        pytest.fail("the Ray dashboard (job server) needs ray[default], a dependency in pyproject.toml: "
                    "run `make venv` (pip install -e '.[dev]')")
    with LocalCluster(head_cpus=2) as c:
        for _ in range(2):
            c.add_worker(cpus=3, resources={ACCEL: 1})
        c.wait_for_nodes(3)
        yield c


def submit_daily(cluster: LocalCluster, uploads: Path, tiny_config: Path, dst: Path, submission_id: str) -> None:
    """``ray job submit --no-wait`` of the daily job, shipping this working tree (``--working-dir``);
    the driver runs this venv's python (``sys.executable``), started by the head's job manager."""
    cluster.ray("job", "submit", "--no-wait", f"--submission-id={submission_id}", f"--working-dir={REPO}",
                "--", sys.executable, "-m", "jobs.daily", "--date", DAY,
                "--uploads", f"{uploads}/{{date}}/manifest.jsonl", "--output", str(dst),
                "--config", "jobs/configs/local.yaml", "--config", str(tiny_config),
                "--set", f"runtime.accelerator_resource={ACCEL}", *[a for key in SETTINGS for a in ("--set", key)],
                "--progress", timeout=300)


def job_status(cluster: LocalCluster, submission_id: str) -> str:
    """The job's status from the head's job API (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED),
    or UNKNOWN when the dashboard did not answer in time (a busy head, e.g. while a node dies)."""
    try:
        return cluster.get(f"/api/jobs/{submission_id}", timeout=30)["status"]
    except OSError:  # URLError and socket timeouts
        return "UNKNOWN"


UNFINISHED = ("PENDING", "RUNNING", "UNKNOWN")


def driver_log(cluster: LocalCluster, submission_id: str) -> str:
    """What the job's driver printed so far (the head's ``job-driver-<id>.log``)."""
    logs = list(cluster.head.temp_dir.glob(f"session_*/logs/job-driver-{submission_id}.log"))
    return logs[0].read_text(errors="replace") if logs else ""


def videos_done(log: str) -> int:
    """Videos finished so far, from the last state of the driver's progress bar (0 before it)."""
    done = re.findall(r"(\d+)/\d+ videos", log)
    return int(done[-1]) if done else 0


def wait_for_job(cluster: LocalCluster, submission_id: str, timeout: float = JOB_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    while (status := job_status(cluster, submission_id)) in UNFINISHED:
        assert time.monotonic() < deadline, f"job {submission_id} still {status}\n{driver_log(cluster, submission_id)}"
        time.sleep(2)
    return status


def model_actor_counts(cluster: LocalCluster) -> dict[str, int]:
    """Worker name -> live Whisper/CLIP actors (the ones asking for ``accel``) on it."""
    nodes = cluster.node_by_id()
    counts = {node.name: 0 for node in cluster.workers}
    for actor in cluster.state("actors"):
        if actor["state"] == "ALIVE" and ACCEL in actor["required_resources"] and actor["node_id"] in nodes:
            counts[nodes[actor["node_id"]].name] += 1
    return counts


def rows(dst: Path, table: str, key: tuple[str, ...]) -> dict[tuple, dict]:
    """``table``'s committed rows by ``key``; a key seen twice fails the test."""
    data = Catalog(str(dst)).read(table)
    out: dict[tuple, dict] = {}
    for row in (data.to_pylist() if data is not None else []):
        k = tuple(row[c] for c in key)
        assert k not in out, f"{table}: {k} twice"
        out[k] = row
    return out


def assert_same_features(dst: Path, ref: Path, ids: set[str]) -> None:
    """The videos ``ids`` have the same rows in ``dst`` as their clips in ``ref`` (by
    ``reference_id``): frame counts, transcripts, segments and every embedding (to 1e-5)."""
    got, want = rows(dst, "videos", ("video_id",)), rows(ref, "videos", ("video_id",))
    for vid in sorted(ids):
        g, w = got[(vid,)], want[(reference_id(vid),)]
        for column in ("n_frames", "transcript_text", "n_segments", "language", "duration_s", "hashtags",
                       "audio_kind", "ocr_text", "top_topic"):
            assert g[column] == w[column], (vid, column, g[column], w[column])
        for column in EMBEDDINGS:
            if w[column] is None:
                assert g[column] is None, (vid, column)
            else:
                np.testing.assert_allclose(g[column], w[column], atol=1e-5, err_msg=f"{vid} {column}")

    def by_reference(table: str, index: str) -> tuple[dict, dict]:
        """``table``'s rows of ``ids`` in ``dst`` and their reference rows, both keyed (video_id, index)."""
        reference = rows(ref, table, ("video_id", index))
        mine = {k: r for k, r in rows(dst, table, ("video_id", index)).items() if k[0] in ids}
        return mine, {(vid, i): r for vid in ids for (ref_id, i), r in reference.items() if ref_id == reference_id(vid)}

    frames_got, frames_want = by_reference("frame_embeddings", "frame_index")
    assert frames_got.keys() == frames_want.keys()
    for k, r in frames_want.items():
        assert frames_got[k]["pts_s"] == r["pts_s"] and frames_got[k]["phash"] == r["phash"], k
        np.testing.assert_allclose(frames_got[k]["embedding"], r["embedding"], atol=1e-5, err_msg=str(k))
    segs_got, segs_want = by_reference("transcript_segments", "segment_index")
    assert {k: r["text"] for k, r in segs_got.items()} == {k: r["text"] for k, r in segs_want.items()}


def manifest_ids(uploads: Path) -> set[str]:
    lines = (uploads / DAY / "manifest.jsonl").read_text().splitlines()
    return {json.loads(line)["video_id"] for line in lines if line.strip()}


def outcome_ids(dst: Path) -> tuple[set[str], set[str]]:
    """(ids in ``videos``, ids in ``errors``) of the latest run, each id at most once per table."""
    return ({k[0] for k in rows(dst, "videos", ("video_id",))}, {k[0] for k in rows(dst, "errors", ("video_id",))})


def test_daily_job_on_a_three_node_cluster_matches_a_local_run(cluster, uploads, tiny_config, local_run, tmp_path):
    dst = tmp_path / "out"
    submit_daily(cluster, uploads, tiny_config, dst, "daily-3-nodes")
    status = wait_for_job(cluster, "daily-3-nodes")
    log = driver_log(cluster, "daily-3-nodes")
    assert status == "SUCCEEDED", log
    # the driver planned for the whole cluster, with the model actors on the accelerator resource
    assert "(cluster CPU 8, GPU 0)" in log and f"{ACCEL} 0.5/actor" in log, log
    assert "jobs.daily: exit 0" in log and f"{DAY}  committed" in log, log
    [run, sounds] = Catalog(str(dst)).runs  # the processing run, then the daily job's sounds step
    assert sounds["kind"] == "sounds" and sounds["since"] == DAY
    assert run["resources"]["machine"].endswith("2 accelerator resource units on 3 nodes"), run["resources"]
    assert run["resources"]["whisper"]["resources"] == {ACCEL: 0.5}
    ok, errors = outcome_ids(dst)
    assert ok == manifest_ids(uploads) and not errors
    assert_same_features(dst, local_run, ok)
    # the Whisper and CLIP actors asked for `accel` and ran on the workers, the only nodes with it
    nodes = cluster.state("nodes")
    assert sum(n["state"] == "ALIVE" for n in nodes) == 3, nodes
    accel_nodes = {n["node_id"] for n in nodes if ACCEL in n["resources_total"]}
    actors = [a for a in cluster.state("actors") if a["class_name"].startswith("MapWorker")]
    on_accel = [a for a in actors if ACCEL in a["required_resources"] and a["node_id"]]  # started ones
    assert len(on_accel) >= 2 and {a["node_id"] for a in on_accel} <= accel_nodes, (actors, nodes)
    assert len(actors) > len(on_accel)  # decode and OCR asked for CPUs only


def test_killing_a_worker_node_mid_run_loses_no_video(cluster, uploads, tiny_config, local_run, tmp_path):
    dst, sid = tmp_path / "out", "daily-node-lost"
    submit_daily(cluster, uploads, tiny_config, dst, sid)
    deadline = time.monotonic() + JOB_TIMEOUT_S

    def running() -> bool:
        assert time.monotonic() < deadline and job_status(cluster, sid) in UNFINISHED, \
            driver_log(cluster, sid)
        return True

    # The victim: the worker holding most of the Whisper and CLIP actors, chosen while the models
    # load (actors stay where they started), so the kill itself waits for nothing.
    while sum((counts := model_actor_counts(cluster)).values()) < 2 and running():
        time.sleep(1)
    victim = next(node for node in cluster.workers if counts[node.name] == max(counts.values()))
    while videos_done(driver_log(cluster, sid)) < 1 and running():
        time.sleep(0.1)
    victim.kill()
    done = videos_done(driver_log(cluster, sid))
    assert done < N_VIDEOS, f"the run finished ({done} videos) before the node was killed"
    assert counts[victim.name] >= 1, counts  # it held the only actor of a model pool
    status = wait_for_job(cluster, sid)
    log = driver_log(cluster, sid)
    assert status == "SUCCEEDED", log
    assert "jobs.daily: exit 0" in log, log
    cluster.wait_until_dead(victim)  # the head saw the node die; the run finished on the other two
    ok, errors = outcome_ids(dst)
    assert ok | errors == manifest_ids(uploads) and not ok & errors, (ok, errors)
    [run, sounds] = Catalog(str(dst)).runs  # the processing run, then the daily job's sounds step
    assert run["kind"] == "run" and sounds["kind"] == "sounds"
    assert run["counts"]["processed"] == N_VIDEOS and run["counts"]["ok"] == len(ok)
    assert_same_features(dst, local_run, ok)
