"""Near-duplicate search at scale: 1 M committed videos (hashes only) against a 20 k-video day.

Synthetic data (``make_data``, cached as Parquet under the work folder): every committed
video has 8-32 frames, each with uniformly random 64-bit hashes as the job stores them
(``phash``, ``phash_middle`` and the ``len(ZOOMS)`` zoom hashes of ``phash_zoom``), a distinct
``content_sha256`` and an upload time in the past; the new day's videos come after. Planted in
the new day: near copies of random committed videos (the source's frames, 80 % of them kept,
every hash with 1-6 random bits flipped), overlay copies (a banner: new whole-frame and zoom
hashes, the source's middle hashes with 1-4 bits flipped), zoomed copies (whole-frame hashes
the source's hashes of one zoom level with 1-4 bits flipped, the others new), mirrored copies
(``mirror_hash`` of the source's hashes, 1-3 bits flipped) and exact re-uploads (same hashes and
``content_sha256``). Everything else is unrelated.

Each measurement runs in a fresh child process (``--worker``) that reads the Parquet tables
with pyarrow (as the job's step reads ``videos`` and ``frame_embeddings``), runs
``find_near_duplicates`` and reports wall seconds (read and search apart), the peak RSS of
the process (``VmHWM``), the search's counters and recall / false pairs against
the planted copies. Two new-day sizes show that the candidate count grows linearly; the largest
is searched once more without the zoom hashes (``DuplicateOptions(zoom=False)``), so their share of
the time and memory shows (the zoomed copies are then missed). Before
them a tiny search compiles the numba kernels into their cache (timed apart: only a machine's
first search pays it), so the children measure the search, not the compiler.

``python -m bench.bench_duplicates [OUT_DIR] [--videos 1000000] [--new 20000 10000]`` prints a
Markdown table and writes ``OUT_DIR/bench_duplicates.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.machine import load_average, machine_info
from extract.pipeline.resources import peak_rss_mb

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO / ".build" / "bench-duplicates"
HISTORY_VIDEOS = 1_000_000
NEW_VIDEOS = (20_000, 10_000)  # the largest first: the data is made for it, smaller days are prefixes
FRAMES = (8, 32)  # frames per video, inclusive range
# shares of the new day
PLANTED_SHARE = {"near": 0.02, "overlay": 0.01, "zoomed": 0.01, "mirrored": 0.005, "exact": 0.005}
DATA_VERSION = 3  # bump when make_data changes: a cached folder of another version is not reused
TARGET_S, TARGET_BYTES = 60.0, 2 * 1024**3
SEED = 0
# Parquet pre-buffering off for the frames: on, the reader holds the 0.8 GB file's column chunks while
# it decodes them, and reading the 20 M history frames peaks at 2.0 GiB (1.3 GiB off) before the search.
PRE_BUFFER = False


def _frame_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(FRAMES[0], FRAMES[1] + 1, n)


def _random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)


def _flip_bits(rng: np.random.Generator, hashes: np.ndarray, low: int, high: int) -> np.ndarray:
    """Each hash with ``low..high`` distinct random bits flipped."""
    out = hashes.copy()
    flips = rng.integers(low, high + 1, len(hashes))
    order = rng.permuted(np.tile(np.arange(64, dtype=np.uint64), (len(hashes), 1)), axis=1)
    for k in range(high):
        on = flips > k
        out[on] ^= np.uint64(1) << order[on, k]
    return out


def _list_column(hashes: np.ndarray) -> "pa.Array":
    """``(n, k) uint64`` -> a ``list<int64>`` column of ``n`` lists of ``k`` (the stored bits)."""
    import pyarrow as pa

    n, k = hashes.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)),
                                    pa.array(np.ascontiguousarray(hashes).view(np.int64).ravel()))


def make_data(work: Path, history: int, new: int, seed: int = SEED) -> dict[str, Any]:
    """Write ``history_*.parquet`` and ``new_*.parquet`` (videos, frames) and ``truth.json`` into
    ``work`` (kept: a folder that has ``truth.json`` is reused); returns the truth metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from extract.media.phash import ZOOMS, mirror_hash

    marker = work / "truth.json"
    if marker.exists():
        return json.loads(marker.read_text())
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h_counts = _frame_counts(rng, history)
    h_hashes = _random_hashes(rng, int(h_counts.sum()))
    h_middle = _random_hashes(rng, int(h_counts.sum()))
    h_zoom = _random_hashes(rng, int(h_counts.sum()) * len(ZOOMS)).reshape(-1, len(ZOOMS))
    h_starts = np.concatenate([[0], np.cumsum(h_counts)])
    base_us = 1_600_000_000 * 10**6
    day_us = 1_780_000_000 * 10**6
    h_ids = pa.array([f"h{i:07d}" for i in range(history)])
    h_videos = pa.table({"video_id": h_ids,
                         "upload_ts": pa.array(np.sort(rng.integers(base_us, day_us, history)), pa.timestamp("us", tz="UTC")),
                         "content_sha256": pa.array([f"{i:064x}" for i in range(history)])})
    pq.write_table(h_videos, work / "history_videos.parquet")
    pq.write_table(pa.table({"video_id": h_ids.take(pa.array(np.repeat(np.arange(history), h_counts))),
                             "phash": pa.array(h_hashes.view(np.int64)),
                             "phash_middle": pa.array(h_middle.view(np.int64)),
                             "phash_zoom": _list_column(h_zoom)}),
                   work / "history_frames.parquet", row_group_size=1 << 21)

    n_counts = _frame_counts(rng, new)
    n_hashes = [_random_hashes(rng, c) for c in n_counts]
    n_middle = [_random_hashes(rng, c) for c in n_counts]
    n_zoom = [_random_hashes(rng, c * len(ZOOMS)).reshape(-1, len(ZOOMS)) for c in n_counts]
    n_sha = [f"{history + i:064x}" for i in range(new)]
    kinds = np.array(["none"] * new, dtype=object)
    sources = rng.choice(history, new, replace=False)
    planted = rng.permutation(new)
    cut = 0
    truth = {}
    for kind, share in PLANTED_SHARE.items():
        chosen = planted[cut:cut + int(share * new)]
        cut += len(chosen)
        for i in chosen:
            frames = slice(h_starts[sources[i]], h_starts[sources[i] + 1])
            src, src_middle, src_zoom = h_hashes[frames], h_middle[frames], h_zoom[frames]
            n_zoom[i] = _random_hashes(rng, src_zoom.size).reshape(src_zoom.shape)
            if kind == "exact":
                n_hashes[i], n_middle[i], n_sha[i] = src.copy(), src_middle.copy(), f"{sources[i]:064x}"
                n_zoom[i] = src_zoom.copy()
            elif kind == "near":
                kept = np.sort(rng.choice(len(src), max(1, int(0.8 * len(src))), replace=False))
                n_hashes[i], n_middle[i] = _flip_bits(rng, src[kept], 1, 6), _flip_bits(rng, src_middle[kept], 1, 6)
                n_zoom[i] = _flip_bits(rng, src_zoom[kept].ravel(), 1, 6).reshape(-1, len(ZOOMS))
            elif kind == "overlay":
                n_hashes[i], n_middle[i] = _random_hashes(rng, len(src)), _flip_bits(rng, src_middle, 1, 4)
            elif kind == "zoomed":
                n_hashes[i] = _flip_bits(rng, src_zoom[:, rng.integers(len(ZOOMS))], 1, 4)
                n_middle[i] = _random_hashes(rng, len(src))
            else:
                n_hashes[i] = _flip_bits(rng, mirror_hash(src), 1, 3)
                n_middle[i] = _flip_bits(rng, mirror_hash(src_middle), 1, 3)
                n_zoom[i] = _flip_bits(rng, mirror_hash(src_zoom.ravel()), 1, 3).reshape(-1, len(ZOOMS))
            kinds[i] = kind
            truth[f"n{i:07d}"] = {"kind": kind, "source": f"h{sources[i]:07d}"}
    n_counts = np.array([len(h) for h in n_hashes])
    n_ids = pa.array([f"n{i:07d}" for i in range(new)])
    pq.write_table(pa.table({"video_id": n_ids,
                             "upload_ts": pa.array(day_us + np.arange(new) * 1000, pa.timestamp("us", tz="UTC")),
                             "content_sha256": pa.array(n_sha)}), work / "new_videos.parquet")
    pq.write_table(pa.table({"video_id": n_ids.take(pa.array(np.repeat(np.arange(new), n_counts))),
                             "phash": pa.array(np.concatenate(n_hashes).view(np.int64)),
                             "phash_middle": pa.array(np.concatenate(n_middle).view(np.int64)),
                             "phash_zoom": _list_column(np.concatenate(n_zoom))}),
                   work / "new_frames.parquet")
    meta = {"history_videos": history, "history_frames": int(h_counts.sum()), "new_videos": new,
            "new_frame_counts": np.cumsum(n_counts).tolist(), "truth": truth}
    marker.write_text(json.dumps(meta))  # last: a cut-short run leaves no marker
    return meta


def warm_kernels() -> float:
    """Run a tiny search so numba compiles the search's kernels into its on-disk cache (or finds
    them there); the timed children then load them. Returns the seconds it took: the one-off cost
    of a machine's first search."""
    import pyarrow as pa

    from extract.index.near_duplicates import find_near_duplicates

    started = time.perf_counter()
    hashes = _random_hashes(np.random.default_rng(SEED), 8)
    videos = pa.table({"video_id": ["a", "b"], "upload_ts": pa.array([1, 2], pa.timestamp("us", tz="UTC")),
                       "content_sha256": ["a", "b"]})
    frames = pa.table({"video_id": ["a"] * 4 + ["b"] * 4, "phash": pa.array(hashes.view(np.int64))})
    find_near_duplicates(videos, frames, ["b"])
    return time.perf_counter() - started


def search_worker(work: Path, new: int, zoom: bool = True) -> dict[str, Any]:
    """In this process: read the tables (the first ``new`` of the new day; without the zoom-hash
    column when ``zoom`` is off, as the job's step would), search, measure."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from extract.index.near_duplicates import DuplicateOptions, find_near_duplicates

    meta = json.loads((work / "truth.json").read_text())
    started = time.perf_counter()
    new_videos = pq.read_table(work / "new_videos.parquet").slice(0, new)
    # Frame ids dictionary-encoded, as the job's step reads them (``Catalog.read(..., dictionary=...)``),
    # without pre-buffering: it holds a file's column chunks while they decode (``PRE_BUFFER``).
    columns = ["video_id", "phash", "phash_middle"] + (["phash_zoom"] if zoom else [])
    new_frames = pq.read_table(work / "new_frames.parquet", columns=columns, read_dictionary=["video_id"],
                               pre_buffer=PRE_BUFFER).slice(0, meta["new_frame_counts"][new - 1])
    videos = pa.concat_tables([pq.read_table(work / "history_videos.parquet"), new_videos])
    frames = pa.concat_tables([pq.read_table(work / "history_frames.parquet", columns=columns,
                                             read_dictionary=["video_id"], pre_buffer=PRE_BUFFER), new_frames])
    read_s = time.perf_counter() - started
    result = find_near_duplicates(videos, frames, new_videos["video_id"], DuplicateOptions(zoom=zoom))
    total_s = time.perf_counter() - started
    peak = peak_rss_mb() * 2**20
    truth = {k: v for k, v in meta["truth"].items() if int(k[1:]) < new}
    found = {r["video_id"]: r for r in result.table.to_pylist()}
    recall = {}
    for kind in PLANTED_SHARE:
        ids = [k for k, v in truth.items() if v["kind"] == kind]
        hit = [k for k in ids if k in found and found[k]["duplicate_of"] == truth[k]["source"]
               and found[k]["kind"] == ("exact" if kind == "exact" else "near")]
        recall[kind] = {"planted": len(ids), "found": len(hit)}
    false_pairs = sum(1 for k, r in found.items() if k not in truth or r["duplicate_of"] != truth[k]["source"])
    return {"new_videos": new, "zoom": zoom, "history_videos": len(videos), "frames": frames.num_rows,
            "read_s": round(read_s, 2), "search_s": round(result.stats.seconds, 2), "total_s": round(total_s, 2),
            "peak_rss_bytes": peak, "stats": result.stats.to_dict(), "recall": recall, "false_pairs": false_pairs,
            "load_avg_1m": load_average()}


def run(out_dir: str | Path, videos: int = HISTORY_VIDEOS, new_sizes: Sequence[int] = NEW_VIDEOS,
        work: Path = DEFAULT_WORK) -> dict[str, Any]:
    """Make (or reuse) the data, measure each new-day size in a child; write ``bench_duplicates.json``."""
    new_sizes = sorted(new_sizes, reverse=True)
    work = Path(work) / f"{videos}-{new_sizes[0]}-{SEED}-v{DATA_VERSION}"
    started = time.perf_counter()
    meta = make_data(work, videos, new_sizes[0])
    make_s = time.perf_counter() - started
    warm_s = warm_kernels()
    runs = []
    for new, zoom in [(new, "zoom") for new in new_sizes] + [(new_sizes[0], "no-zoom")]:
        proc = subprocess.run([sys.executable, "-m", "bench.bench_duplicates", "--worker", str(work), str(new), zoom],
                              cwd=REPO, capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {"benchmark": "near_duplicates", "machine": machine_info(), "history_videos": videos,
              "history_frames": meta["history_frames"], "data_s": round(make_s, 1),
              "kernels_warm_s": round(warm_s, 2),
              "target": {"seconds": TARGET_S, "peak_rss_bytes": TARGET_BYTES}, "runs": runs}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_duplicates.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as a Markdown table."""
    lines = [f"Near-duplicate search: {result['history_videos']:,} committed videos, "
             f"{result['history_frames']:,} frames with five hashes each, `phash`, `phash_middle` and the three of "
             "`phash_zoom` "
             f"(target <= {result['target']['seconds']:.0f} s, "
             f"<= {result['target']['peak_rss_bytes'] / 2**30:.0f} GiB); compiling the kernels beforehand "
             f"(a machine's first search only): {result.get('kernels_warm_s', 0):.1f} s", "",
             "| new videos | zoom hashes | read s | search s | total s | peak RSS GiB | band collisions (whole / middle / zoom) "
             "| candidate pairs | near found | overlay found | zoomed found | mirrored found | exact found | false pairs "
             "| load |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        rec = r["recall"]
        lines.append(
            f"| {r['new_videos']:,} | {'yes' if r.get('zoom', True) else 'no'} | {r['read_s']:.1f} | {r['search_s']:.1f} | {r['total_s']:.1f} | "
            f"{r['peak_rss_bytes'] / 2**30:.2f} | {r['stats']['band_collisions']:,} / "
            f"{r['stats'].get('middle_band_collisions', 0):,} / {r['stats'].get('zoom_band_collisions', 0):,} | "
            f"{r['stats']['candidate_pairs']:,} | "
            + " | ".join(f"{rec[k]['found']}/{rec[k]['planted']}" if k in rec else "–"
                         for k in ("near", "overlay", "zoomed", "mirrored", "exact"))
            + f" | {r['false_pairs']} | {r['load_avg_1m']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="bench/out")
    parser.add_argument("--videos", type=int, default=HISTORY_VIDEOS)
    parser.add_argument("--new", type=int, nargs="+", default=list(NEW_VIDEOS))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--worker", nargs=3, metavar=("WORK", "NEW", "ZOOM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(search_worker(Path(args.worker[0]), int(args.worker[1]), args.worker[2] == "zoom")))
        return
    print(markdown(run(args.out_dir, args.videos, args.new, args.work)))


if __name__ == "__main__":
    main()
