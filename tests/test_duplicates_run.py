"""`extract duplicates` on a real output: PyAV-made copies of a clip are found among the
committed videos (the re-upload as exact, the transformed ones as near), a distinct clip is
not paired, the rows are one committed run that Delta readers see, and reruns replace them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, run_cli
from copies import make_copies

from extract.media.phash import ZOOMS
from extract.tables.catalog import Catalog

COPIES = ("reupload", "crf35", "scale360", "mirrored")


@pytest.fixture(scope="module")
def output(tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("copies")
    clips = make_copies(folder)
    other = make_copies(folder / "other", seed=99)["original"]  # inside the manifest's folder (input.allowed_uris)
    rows = [{"video_id": "original", "uri": str(clips["original"]), "upload_ts": "2026-01-01T10:00:00Z"},
            {"video_id": "unrelated", "uri": str(other), "upload_ts": "2026-01-02T10:00:00Z"}]
    rows += [{"video_id": name, "uri": str(clips[name]), "upload_ts": "2026-01-02T11:00:00Z"} for name in COPIES]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path_factory.mktemp("out") / "dst"
    proc = run_cli("run", "--input", str(manifest), "--output", str(dst), "--config", "jobs/configs/local.yaml",
                   "--config", str(tiny_config), "--set", "ocr.enabled=false", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dst, tiny_config


def test_copies_are_found_and_an_unrelated_clip_is_not(output):
    dst, tiny_config = output
    # The tiny random CLIP says nothing about content: the cosine gate is for real weights.
    proc = run_cli("duplicates", str(dst), "--since", "2026-01-02", "--min-cosine", "-1",
                   "--config", str(tiny_config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "found 4 (" in proc.stdout, proc.stdout
    catalog = Catalog(str(dst))
    report = dst / "_runs" / f"{catalog.run['run_id']}.html"  # the pairs side by side (extract.report.write_report)
    assert catalog.run["kind"] == "duplicates" and report.is_file() and f"run report: {report}" in proc.stdout
    rows = {r["video_id"]: r for r in catalog.read("duplicates").to_pylist()}
    assert set(rows) == set(COPIES), rows
    assert all(r["duplicate_of"] == "original" for r in rows.values())
    assert rows["reupload"]["kind"] == "exact" and rows["reupload"]["match_frames"] == 1.0
    assert all(rows[n]["kind"] == "near" and rows[n]["match_frames"] >= 0.5 for n in ("crf35", "scale360", "mirrored"))
    assert rows["mirrored"]["mirrored"] and not rows["crf35"]["mirrored"]
    assert catalog.run["kind"] == "duplicates" and catalog.run["counts"]["searched"] == 5
    zoom = catalog.read("frame_embeddings", ["phash_zoom"])["phash_zoom"].to_pylist()  # the run wrote them
    assert zoom and all(len(z) == len(ZOOMS) for z in zoom)

    # "all copies of a video", as docs/QUERIES.md shows it, through Polars on the Delta table
    out = subprocess.run([sys.executable, "-c", (
        "import polars as pl, sys; print(sorted(pl.scan_delta(sys.argv[1] + '/duplicates')"
        ".filter(pl.col('duplicate_of') == 'original').select('video_id').collect()['video_id'].to_list()))"),
        str(dst)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == str(sorted(COPIES)), out.stderr

    again = run_cli("duplicates", str(dst), "--since", "2026-01-02", "--min-cosine", "-1", "--config", str(tiny_config))
    assert again.returncode == 0, again.stderr
    assert Catalog(str(dst)).read("duplicates").num_rows == 4  # replaced, not duplicated


def test_forgetting_the_original_removes_its_copies_rows(output, tmp_path):
    dst, tiny_config = output
    ids = tmp_path / "ids.txt"
    ids.write_text("original\n")
    assert run_cli("forget", str(dst), "--ids", str(ids), "--config", str(tiny_config)).returncode == 0
    table = Catalog(str(dst)).read("duplicates")
    assert table is None or "original" not in table["duplicate_of"].to_pylist()
