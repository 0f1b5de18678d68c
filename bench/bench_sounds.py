"""Same-sound search at scale (1 M committed videos against a 20 k-video day), and the fingerprint's cost.

The fingerprint: ``extract.media.fingerprint.fingerprint`` on 30 s of real music (Debian
``drascula-music``, ``make sounds-media``; a synthetic melody when absent), milliseconds per
video, landmarks per second of audio (all, and in the sample), and how many bits of a uniform
key the landmark keys of different whole tracks agree as often as (``hash_bits``).

The search, on synthetic fingerprints (the history is never written out: at 1 M videos it would
be tens of GB): every video has ``seconds`` of audio (uniform in [0.5, 1.5] x ``seconds``) at
the landmarks per second measured above, each landmark at a random frame, its key drawn
uniformly from ``2^bits`` values (``bits`` the measured agreement width of real music, spread
over the 41-bit key space by an odd multiplier), so chance agreements between different videos
come as often as between different real tracks, not as rarely as 41-bit keys would. The history
arrives one 20 k-video chunk at a time (one upload day, as ``extract sounds`` reads it) as its
samples (``videos.sound_keys``) only, generated inside the timed loop; a history video's full
fingerprint is regenerated when the search asks for it (a candidate pair); the time spent
generating is measured and taken out. Planted in the new day: copies of a stretch of a committed
video's audio (60 % of its landmarks kept, 40 % other landmarks added: a voice-over), at a
random offset, and copies of an earlier new video (a sound first heard today); recall and false
matches are counted against them.

Runs in a fresh child process so its peak RSS (``VmHWM``) is the search's. A tiny search first
compiles the numba kernels into their cache (timed apart).

``python -m bench.bench_sounds [OUT_DIR] [--videos 1000000] [--new 20000] [--seconds 30]`` prints
a Markdown table and writes ``OUT_DIR/bench_sounds.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bench.machine import load_average, machine_info
from extract.pipeline.resources import peak_rss_mb

REPO = Path(__file__).resolve().parent.parent
MUSIC = Path("/usr/share/scummvm/drascula/audio")
HISTORY_VIDEOS = 1_000_000
NEW_VIDEOS = 20_000
SECONDS = 30.0  # mean audio seconds per video
CHUNK = 20_000  # history videos per chunk (one upload day)
PLANTED = {"history_copy": 0.05, "same_day_copy": 0.02}  # shares of the new day
GENERATE_BATCH = 2_000  # history videos generated at once (their full codes, before the sample is cut)
SPREAD = 0x9E3779B97F4A7C15  # odd: spreads the 2^bits synthetic keys over the key space
SEED = 0
DAY_STREAM = 2**32 - 1  # the new day's random stream: [SEED, DAY_STREAM]; history chunk c's: [SEED, c]


def _music(seconds: float | None = 30.0) -> list[np.ndarray]:
    """Excerpts of ``seconds`` from 10 s into the real tracks (16 kHz mono; None: whole tracks, at
    least 20 s), or one synthetic melody without them."""
    from extract.media.audio import AUDIO_RATE

    tracks = sorted(MUSIC.glob("track*.ogg"))
    if tracks:
        from bench.labelled_audio import read_audio

        if seconds is None:
            return [a for a in (read_audio(p) for p in tracks) if len(a) >= 20 * AUDIO_RATE]
        out = [read_audio(p)[10 * AUDIO_RATE:int((10 + seconds) * AUDIO_RATE)] for p in tracks[:12]]
        return [a for a in out if len(a) >= 20 * AUDIO_RATE]
    from extract.media.music import melody

    return [melody([60, 62, 64, 65, 67, 69, 71, 72] * 12, beat_s=0.3)[0]]


def fingerprint_cost() -> dict[str, Any]:
    """Milliseconds to fingerprint 30 s of audio, landmarks per second (all and sampled), and
    the keys' agreement width between different whole tracks (``hash_bits``)."""
    from extract.media.audio import AUDIO_RATE
    from extract.media.fingerprint import TIME_BITS, fingerprint, sample

    clips = _music()
    fingerprint(clips[0])  # numpy's FFT plans, first-call imports
    times, codes = [], []
    for audio in clips:
        started = time.perf_counter()
        codes.append(fingerprint(audio))
        times.append((time.perf_counter() - started) / (len(audio) / AUDIO_RATE))
    seconds = sum(len(a) for a in clips) / AUDIO_RATE
    tracks = [fingerprint(a) >> TIME_BITS for a in _music(None)]
    return {"source": "drascula-music" if MUSIC.is_dir() else "synthetic melody", "clips": len(clips),
            "tracks_for_bits": len(tracks), "ms_per_30s": round(1000 * 30 * float(np.median(times)), 1),
            "landmarks_per_s": round(sum(len(c) for c in codes) / seconds, 1),
            "sampled_per_s": round(sum(len(sample(c)) for c in codes) / seconds, 1),
            "key_bits_between_clips": hash_bits([np.unique(t) for t in tracks])}


def hash_bits(distinct: list[np.ndarray]) -> float | None:
    """How many bits of a uniform hash would agree between different recordings as often as these
    do: ``-log2`` of the chance that a hash of one clip equals a given hash of another, from each
    clip's distinct hashes ``(k,) int64`` against the others'. None with fewer than two clips or
    no agreement."""
    met = pairs = 0
    for i, own in enumerate(distinct):
        others = np.concatenate([d for j, d in enumerate(distinct) if j != i] or [np.zeros(0, np.int64)])
        met += int(np.isin(own, others).sum())  # a hash two other clips share counts once: a lower bound
        pairs += len(own) * len(others)
    return round(float(-np.log2(met / pairs)), 1) if met else None


class Synth:
    """Synthetic landmark codes (module doc): keys uniform over ``2^bits`` values, spread over
    the key space."""

    def __init__(self, bits: float, per_s: float, seconds: float):
        from extract.media.fingerprint import FRAME_S, KEY_BITS

        self.values, self.key_mask = int(round(2 ** bits)), (1 << KEY_BITS) - 1
        self.per_s, self.seconds, self.frame_s = per_s, seconds, FRAME_S

    def keys(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.integers(0, self.values, n, dtype=np.int64).astype(np.uint64)
        return ((u * np.uint64(SPREAD)) & np.uint64(self.key_mask)).astype(np.int64)

    def videos(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, counts)`` of ``n`` videos back to back (a video's codes in no particular order:
        the search does not need them ordered)."""
        from extract.media.fingerprint import TIME_BITS

        seconds = rng.uniform(0.5, 1.5, n) * self.seconds
        counts = (seconds * self.per_s).astype(np.int64)
        frames = (rng.random(int(counts.sum())) * np.repeat(seconds / self.frame_s, counts)).astype(np.int64)
        return (self.keys(rng, len(frames)) << TIME_BITS) | frames, counts

    def chunk(self, key: int, n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """History chunk ``key`` of ``n`` videos, ``GENERATE_BATCH`` at a time: ``(first video,
        codes, counts)`` of each batch, the same every time it is made."""
        rng = stream(key)
        for first in range(0, n, GENERATE_BATCH):
            codes, counts = self.videos(rng, min(GENERATE_BATCH, n - first))
            yield first, codes, counts


def _binary(codes: np.ndarray, counts: np.ndarray):
    """Stored fingerprints (``fingerprint.pack``: a header before each non-empty one) as one Arrow
    binary array."""
    import pyarrow as pa

    from extract.media.fingerprint import HEADER

    heads = (counts > 0).astype(np.int64)
    ends = np.cumsum(counts + heads)
    values = np.full(int(ends[-1]) if len(ends) else 0, HEADER, np.int64)
    body = np.ones(len(values), bool)
    body[(ends - counts - heads)[heads > 0]] = False
    values[body] = codes
    offsets = np.concatenate([[0], ends * 8]).astype(np.int64)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(counts),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(values.astype("<i8"))])


def _sampled(codes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, counts)`` of the samples (``fingerprint.sample``) of videos ``(codes, counts)``."""
    from extract.media.fingerprint import in_sample

    keep = in_sample(codes)
    owner = np.repeat(np.arange(len(counts)), counts)
    return codes[keep], np.bincount(owner[keep], minlength=len(counts)).astype(np.int64)


def _copy(rng: np.random.Generator, synth: Synth, codes: np.ndarray) -> tuple[np.ndarray, float]:
    """A new video carrying a stretch of ``codes``' recording at a random offset: 60 % of the
    stretch's landmarks kept, 40 % other landmarks added. Returns its codes and the offset (s)
    of its start in the source."""
    from extract.media.fingerprint import TIME_BITS

    frames = codes & ((1 << TIME_BITS) - 1)
    start = int(rng.integers(0, max(1, int(frames.max() * 0.3))))
    stretch = codes[(frames >= start) & (rng.random(len(codes)) < 0.6)] - start
    noise, _ = synth.videos(rng, 1)
    noise = noise[:int(0.4 * len(stretch))]
    return np.concatenate([stretch, noise]), start * synth.frame_s


def stream(key: int) -> np.random.Generator:
    """The random stream of history chunk ``key`` or of the new day (``DAY_STREAM``): distinct
    streams, so a day as large as a chunk is not a copy of the first chunk (``default_rng(0)`` and
    ``default_rng([0, 0])`` draw the same numbers)."""
    return np.random.default_rng([SEED, key])


def warm_kernels() -> float:
    """A tiny search, so numba compiles the kernels into its cache; returns its seconds."""
    import pyarrow as pa

    from extract.index.sounds import find_same_sounds

    from extract.media.fingerprint import TIME_BITS

    started = time.perf_counter()
    codes = np.arange(1, 2000, dtype=np.int64) << TIME_BITS | np.arange(1999)
    counts = np.array([len(codes)])
    videos = pa.table({"video_id": ["a", "b"], "upload_ts": pa.array([1, 2], pa.timestamp("us", tz="UTC"))})
    new = pa.table({"video_id": ["b"], "sound_fingerprint": _binary(codes, counts)})
    old = pa.table({"video_id": ["a"], "sound_keys": _binary(*_sampled(codes, counts))})
    full = pa.table({"video_id": ["a"], "sound_fingerprint": _binary(codes, counts)})
    find_same_sounds(videos, new, [old], None, lambda ids: full)
    return time.perf_counter() - started


def search_worker(history: int, new: int, seconds: float, cost: dict[str, Any]) -> dict[str, Any]:
    """In this process: make the day, search it against ``history`` generated chunk by chunk."""
    import pyarrow as pa

    from extract.index.sounds import find_same_sounds

    synth = Synth(cost["key_bits_between_clips"], cost["landmarks_per_s"], seconds)
    rng = stream(DAY_STREAM)
    base_us, day_us = 1_600_000_000 * 10**6, 1_780_000_000 * 10**6
    h_ids = [f"h{i:07d}" for i in range(history)]
    n_ids = [f"n{i:07d}" for i in range(new)]
    videos = pa.table({"video_id": h_ids + n_ids, "upload_ts": pa.array(
        np.concatenate([base_us + np.arange(history) * 10**6, day_us + np.arange(new) * 10**6]),
        pa.timestamp("us", tz="UTC"))})

    def chunk_size(c: int) -> int:
        return min(CHUNK, history - c * CHUNK)

    def full_videos(c: int, wanted: set[int]) -> dict[int, np.ndarray]:
        """The full codes of the videos ``wanted`` (indices within history chunk ``c``)."""
        out = {}
        for first, codes, counts in synth.chunk(c, chunk_size(c)):
            for i, video in enumerate(np.split(codes, np.cumsum(counts)[:-1])):
                if first + i in wanted:
                    out[first + i] = video
        return out

    n_codes, n_counts = synth.videos(rng, new)
    per_video = np.split(n_codes, np.cumsum(n_counts)[:-1])
    order = rng.permutation(new)
    n_history, n_same = (int(PLANTED[k] * new) for k in ("history_copy", "same_day_copy"))
    truth: dict[str, tuple[str, float]] = {}
    sources = rng.integers(0, min(history, 4 * CHUNK), n_history)  # from the first four chunks
    for c in sorted(set(sources // CHUNK)):
        chunk_videos = full_videos(int(c), {int(s % CHUNK) for s in sources if s // CHUNK == c})
        for i, src in zip(order[:n_history], sources):
            if src // CHUNK == c:
                per_video[i], offset = _copy(rng, synth, chunk_videos[int(src % CHUNK)])
                truth[n_ids[i]] = (h_ids[src], offset)
    for i in order[n_history:n_history + n_same]:  # later half copies earlier half, which stays as it is
        earlier = int(rng.integers(0, new // 2))
        if i < new // 2 or n_ids[i] in truth or n_ids[earlier] in truth:
            continue
        per_video[i], offset = _copy(rng, synth, per_video[earlier])
        truth[n_ids[i]] = (n_ids[earlier], offset)
    n_counts = np.array([len(v) for v in per_video])
    new_table = pa.table({"video_id": n_ids, "sound_fingerprint": _binary(np.concatenate(per_video), n_counts)})
    del per_video, n_codes
    generating, generating_cpu = [0.0], [0.0]  # wall and CPU seconds spent making the synthetic history

    clock = {"wall": time.perf_counter(), "cpu": time.process_time()}  # reset when the search starts

    def history_chunks() -> Iterator[pa.Table]:
        for c in range((history + CHUNK - 1) // CHUNK):
            progress = {"chunks_done": c, "search_s": round(time.perf_counter() - clock["wall"] - generating[0], 1),
                        "search_cpu_s": round(time.process_time() - clock["cpu"] - generating_cpu[0], 1),
                        "peak_rss_gib": round(peak_rss_mb() / 1024, 2), "load_avg_1m": load_average()}
            print(json.dumps(progress), file=sys.stderr, flush=True)  # a run stopped early still says how far it got
            started, started_cpu = time.perf_counter(), time.process_time()
            samples = [_sampled(codes, counts) for _, codes, counts in synth.chunk(c, chunk_size(c))]
            table = pa.table({"video_id": h_ids[c * CHUNK:c * CHUNK + chunk_size(c)],
                              "sound_keys": _binary(np.concatenate([s[0] for s in samples]),
                                                    np.concatenate([s[1] for s in samples]))})
            generating[0] += time.perf_counter() - started
            generating_cpu[0] += time.process_time() - started_cpu
            yield table

    def fingerprints(ids: list[str]) -> pa.Table:  # regenerated: the history's full fingerprints are never kept
        started, started_cpu = time.perf_counter(), time.process_time()
        index = np.array([int(i[1:]) for i in ids], np.int64)
        found: dict[int, np.ndarray] = {}
        for c in sorted(set((index // CHUNK).tolist())):
            part = full_videos(c, {int(i % CHUNK) for i in index if i // CHUNK == c})
            found.update({c * CHUNK + k: v for k, v in part.items()})
        table = pa.table({"video_id": [h_ids[i] for i in found],
                          "sound_fingerprint": _binary(np.concatenate([np.zeros(0, np.int64), *found.values()]),
                                                       np.array([len(v) for v in found.values()], np.int64))})
        generating[0] += time.perf_counter() - started
        generating_cpu[0] += time.process_time() - started_cpu
        return table

    clock.update(wall=time.perf_counter(), cpu=time.process_time())
    result = find_same_sounds(videos, new_table, history_chunks(), None, fingerprints)
    search_cpu_s = time.process_time() - clock["cpu"] - generating_cpu[0]
    search_s = result.stats.seconds - generating[0]
    found = {r["video_id"]: r for r in result.table.to_pylist()}
    right = sum(1 for k, (sound, offset) in truth.items()
                if k in found and found[k]["sound_id"] == sound and abs(found[k]["offset_s"] - offset) < 0.1)
    false = sum(1 for k in found if k not in truth)
    stats = result.stats.to_dict()
    stats["phase_seconds"] = {k: round(v, 2) for k, v in stats["phase_seconds"].items()}
    stats["phase_seconds"]["scan"] = round(stats["phase_seconds"]["scan"] - generating[0], 2)
    return {"new_videos": new, "history_videos": history, "seconds_per_video": seconds,
            "history_landmarks_approx": int(history * seconds * cost["landmarks_per_s"]),
            "history_sampled_approx": int(history * seconds * cost["sampled_per_s"]),
            "search_s": round(search_s, 2), "search_cpu_s": round(search_cpu_s, 2),
            "generate_s": round(generating[0], 2),
            "peak_rss_bytes": int(peak_rss_mb() * 2**20), "stats": stats,
            "planted": len(truth), "found_right": right, "false_matches": false, "load_avg_1m": load_average()}


def run(out_dir: str | Path, videos: int = HISTORY_VIDEOS, new: int = NEW_VIDEOS,
        seconds: float = SECONDS) -> dict[str, Any]:
    """Measure the fingerprint, then the search in a child; write ``bench_sounds.json``."""
    cost = fingerprint_cost()
    warm_s = warm_kernels()
    spec = json.dumps({"history": videos, "new": new, "seconds": seconds, "cost": cost})
    proc = subprocess.run([sys.executable, "-m", "bench.bench_sounds", "--worker", spec],
                          cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)  # its progress: our stderr
    search = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {"benchmark": "sounds", "machine": machine_info(), "kernels_warm_s": round(warm_s, 2),
              "fingerprint": {k: v for k, v in cost.items() if k != "fields"}, "search": search}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sounds.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as Markdown."""
    f, s = result["fingerprint"], result["search"]
    st = s["stats"]
    return "\n".join([
        f"Audio fingerprint ({f['source']}, {f['clips']} clips): {f['ms_per_30s']:.0f} ms per 30 s of audio, "
        f"{f['landmarks_per_s']:.0f} landmarks per second, {f['sampled_per_s']:.0f} of them in the sample the history "
        f"search scans. Their 41-bit keys of different whole tracks ({f['tracks_for_bits']}) agree as often as "
        f"{f['key_bits_between_clips']}-bit uniform keys would; the synthetic fingerprints below draw keys from "
        "that many bits.", "",
        f"Same-sound search, synthetic fingerprints (keys as wide as real music's): "
        f"{s['history_videos']:,} committed videos of ~{s['seconds_per_video']:.0f} s "
        f"(~{s['history_landmarks_approx'] / 1e9:.2f} G landmarks, ~{s['history_sampled_approx'] / 1e9:.2f} G sampled, "
        f"scanned one 20 k-video chunk at a time) against {s['new_videos']:,} new; compiling the kernels beforehand: "
        f"{result['kernels_warm_s']:.1f} s", "",
        "| new videos | search s (generation excluded) | search CPU s | phases s | peak RSS GiB | sampled landmark hits "
        "| agreements (per scanned landmark) | most held at once (one chunk's) | candidate pairs "
        "| full fingerprints read | planted found | false matches | load |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['new_videos']:,} | {s['search_s']:.1f} | {s['search_cpu_s']:.1f} | "
        + ", ".join(f"{k} {v:.1f}" for k, v in st["phase_seconds"].items())
        + f" | {s['peak_rss_bytes'] / 2**30:.2f} | {st['landmark_hits']:,} | {st['agreements']:,} "
        f"({st['agreements'] / max(1, st['scanned_landmarks']):.3f}) | {st['peak_chunk_agreements']:,} | "
        f"{st['candidate_pairs']:,} | {st['fetched_videos']:,} | {s['found_right']}/{s['planted']} | "
        f"{s['false_matches']} | {s['load_avg_1m']} |",
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="bench/out")
    parser.add_argument("--videos", type=int, default=HISTORY_VIDEOS)
    parser.add_argument("--new", type=int, default=NEW_VIDEOS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(search_worker(spec["history"], spec["new"], spec["seconds"], spec["cost"])))
        return
    print(markdown(run(args.out_dir, args.videos, args.new, args.seconds)))


if __name__ == "__main__":
    main()
