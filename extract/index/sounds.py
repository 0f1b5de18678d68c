"""Same-sound search: which earlier sound does each new video's audio carry?

A *sound* is one recording reused by many videos (a song, a meme line). It is named by its
``sound_id``: the earliest video (by ``upload_ts``, then ``video_id``) found carrying it. Each
new video whose audio holds a stretch of an earlier video's recording gets that video's sound;
``offset_s`` is where the new video's start falls in the sound's own audio (the sound's earliest
video), so the videos of one sound line up on one time axis.

Inputs, as pyarrow tables (numpy inside):

- ``videos``: every committed video, ``video_id`` and ``upload_ts`` (the new ones included: the
  step runs after their commit, so a sound first used earlier the same day is found).
- ``new``: ``video_id``, ``sound_fingerprint`` (``extract.media.fingerprint`` codes, packed; null
  = no audible audio) of the videos to search.
- ``history``: the same two columns for the other videos, in chunks (one upload day at a time:
  the history is never in memory at once).
- ``known``: the committed ``sound_matches`` rows of earlier videos (``video_id``, ``sound_id``,
  ``offset_s``).

The search, with memory that grows with the new day and one history chunk, not with the history
(time: one pass over the history's samples, a quarter of its landmarks):

1. The new videos' sampled landmarks (``extract.media.fingerprint.sample``: the landmarks whose
   key falls in a fixed quarter of the key space, so a copy keeps the same ones) go into a
   ``DayIndex`` (sorted distinct keys behind a bit filter, ``extract.index.landmark_join``).
2. The history's samples (``videos.sound_keys``) are scanned once, chunk by chunk, against it.
   A video that already has a sound (a ``known`` row) is skipped: its sound's earliest video
   carries the same recording, so the history searched is one video per sound, and a sound
   used by ten thousand videos costs one video, not ten thousand (limit: a later video of a
   sound that holds a longer stretch of the recording than the sound's earliest video does not
   extend it; a new video using only that extra stretch starts a new sound).
3. Within each chunk, each agreeing sampled landmark pair (same key, history video earlier)
   gives a time offset; a pair of videos whose samples agree on ``candidate_hits`` landmarks at
   one offset (give or take a frame) is a candidate, and only candidates are lined up on their
   full fingerprints (``extract.media.sound_match.match_fingerprints``; the history's read
   through ``fingerprints`` for these videos alone): the same sound when enough of the new
   video's landmarks agree at one offset (``min_hits``, ``min_share``, ``min_matched_s``). A
   history video lives in one chunk, so its pairs are settled before the next chunk is read:
   the memory held is the day's fingerprints and index plus one chunk's agreements
   (``SoundStats.peak_chunk_agreements``) and candidates, whatever the history's length.
4. The new videos are resolved in rank order: a match with an earlier new video inherits that
   video's sound, so a sound first heard today is one sound for all of today's videos. Among
   several matches the earliest sound wins (then the higher share).

Why quads and a sample: with the first format's 32-bit triple keys, which on real music agree
between different tracks as often as ~22-bit uniform keys would, each history landmark met ~1.5
of a 20 k-video day's landmarks by chance and the scan's time grew with history times day
(``bench.bench_sounds``: 333 s at 40 k committed videos, 746 s at 200 k). The 41-bit quad keys
agree as ~25.4-bit uniform ones (``extract.media.fingerprint``), and the sample cuts both the
landmarks scanned and the day's index to a quarter (a sampled key lives in a quarter of the key
space, so it meets the day's sampled landmarks 4 times as often as a key meets the day's
landmarks: the agreements fall 4-fold, not 16-fold). Per history video that is ~1,200 chance
agreements against a 20 k-video day (first format: ~3,100), and a chance pair almost never has
three of them at one offset, so few full fingerprints are read. The time still grows with
history times day; the memory does not (``bench.bench_sounds``, 20 k new videos of 30 s: ~1.2 ms
of CPU per history video, peak RSS ~4.5-4.7 GiB from 40 k to 1 M committed videos).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from extract.index.landmark_join import DayIndex, expand, pair_keys
from extract.index.near_duplicates import _owner_ranks, rank_videos
from extract.media.fingerprint import HEADER, TIME_BITS, in_sample
from extract.media.sound_match import (CANDIDATE_HITS, MIN_HITS, MIN_MATCHED_S, MIN_SHARE, SoundMatch, align,
                                        match_fingerprints)


@dataclass(frozen=True)
class SoundOptions:
    """Thresholds of the same-sound search: ``min_hits`` landmarks agreeing at one offset,
    ``min_share`` of the new video's landmarks over the matched stretch, which lasts at least
    ``min_matched_s`` seconds (``extract.media.sound_match`` measured them on real music); a pair
    of videos is lined up on its full fingerprints when at least ``candidate_hits`` of their
    sampled landmarks agree at one offset; a key met by more than ``max_bucket`` sampled landmarks
    of one history chunk (one upload day) is skipped there (a tone or drum sample many
    recordings share)."""

    min_hits: int = MIN_HITS
    min_share: float = MIN_SHARE
    min_matched_s: float = MIN_MATCHED_S
    candidate_hits: int = CANDIDATE_HITS
    max_bucket: int = 5000

    def __post_init__(self) -> None:
        checks = (("min_hits", self.min_hits >= 1, ">= 1"), ("min_share", 0.0 < self.min_share <= 1.0, "in (0, 1]"),
                  ("min_matched_s", self.min_matched_s >= 0.0, ">= 0"), ("max_bucket", self.max_bucket >= 1, ">= 1"),
                  ("candidate_hits", self.candidate_hits >= 1, ">= 1"))
        for key, ok, allowed in checks:
            if not ok:
                raise ValueError(f"sounds.{key}: {getattr(self, key)!r} must be {allowed}")


@dataclass
class SoundStats:
    """Counters of one search, for the run record (counts; ``seconds`` wall clock)."""

    new_videos: int = 0
    new_landmarks: int = 0
    new_sampled: int = 0  # of them in the sample (``fingerprint.sample``)
    new_keys: int = 0  # distinct keys of the sample
    old_format_new: int = 0  # new videos with a first-format fingerprint (read as none)
    history_videos: int = 0  # committed videos, the new ones included
    scanned_videos: int = 0  # earlier videos whose landmarks were scanned (one per known sound)
    skipped_videos: int = 0  # earlier videos with a sound already (their sound's first video stands for them)
    keyless_videos: int = 0  # scanned videos with no sampled landmark (silent; or written before version 0.4.0)
    scanned_landmarks: int = 0  # sampled landmarks of the history (and the day) probed
    filter_passes: int = 0
    landmark_hits: int = 0  # sampled history landmarks whose key the day's sample has
    hot_keys_skipped: int = 0
    agreements: int = 0  # (day landmark, earlier landmark) pairs of one key, in the samples
    peak_chunk_agreements: int = 0  # the most agreements held at once (one chunk's): the search's working set
    candidate_pairs: int = 0  # (new video, earlier video) whose samples agree at one offset (candidate_hits)
    fetched_videos: int = 0  # history videos whose full fingerprint was read for them
    same_pairs: int = 0  # candidate pairs whose full fingerprints carry the same recording
    matched_videos: int = 0  # rows written
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SoundSearch:
    """Result: ``table`` (``result_schema``) and the search's ``stats``."""

    table: "pa.Table"
    stats: SoundStats


def result_schema() -> "pa.Schema":
    """Columns of the ``sound_matches`` rows this search returns (the table schema's core)."""
    import pyarrow as pa

    return pa.schema([
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("sound_id", pa.string(), nullable=False),
        pa.field("offset_s", pa.float32(), nullable=False),
        pa.field("matched_s", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ])


def fingerprint_codes(column) -> tuple[np.ndarray, np.ndarray, int]:
    """``(codes, counts, old)`` of a binary column of stored fingerprints (``fingerprint.pack``;
    null = none): ``(n,) int64`` every row's codes back to back (headers dropped), ``(rows,)
    int64`` how many each has, and how many rows hold a first-format value (no ``HEADER``: read
    as none, so old landmarks never meet new ones)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    codes, counts, old = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0
    for chunk in chunks:
        if chunk.null_count:
            chunk = pc.if_else(chunk.is_valid(), chunk, pa.scalar(b"", chunk.type))
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, width)[chunk.offset:chunk.offset + len(chunk) + 1].astype(np.int64)
        lengths = np.diff(offsets)
        if (lengths % 8).any():
            raise ValueError("sound_fingerprint: a value is not a whole number of int64 codes")
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        values = data[offsets[0]:offsets[-1]].view("<i8").astype(np.int64)
        n, first = lengths // 8, (offsets[:-1] - offsets[0]) // 8
        has = n > 0
        current = np.zeros(len(n), bool)
        current[has] = values[first[has]] == HEADER
        old += int((has & ~current).sum())
        keep = np.repeat(current, n)
        keep[first[current]] = False  # the header
        codes.append(values[keep])
        counts.append(np.where(current, n - 1, 0))
    return np.concatenate(codes), np.concatenate(counts), old


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` ``(r,) int64`` of the runs of equal values of sorted ``values`` ``(n,)``."""
    if not len(values):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return starts, np.append(starts[1:], len(values))


def find_same_sounds(videos: "pa.Table", new: "pa.Table", history: Iterable["pa.Table"], known: "pa.Table | None",
                     fingerprints: Callable[[list[str]], "pa.Table"],
                     options: SoundOptions = SoundOptions()) -> SoundSearch:
    """Name the sound of each video of ``new`` (module doc).

    ``history`` yields ``video_id``, ``sound_keys`` tables (the samples); ``fingerprints(ids)``
    returns ``video_id``, ``sound_fingerprint`` of those history videos (only candidates are
    asked for). Returns one row per new video found to carry an earlier video's recording:
    ``video_id``, ``sound_id`` (the sound's earliest video), ``offset_s`` (seconds into the
    sound's earliest video where this video's start falls), ``matched_s`` (seconds of this
    video's audio that agree) and ``score`` (share of its landmarks over that stretch that agree,
    in [0, 1]). Rows of ``history`` for new videos are ignored (``new`` holds them). Raises
    ValueError for a new id missing from ``videos`` or a duplicated ``video_id``.
    """
    import pyarrow as pa

    started = time.perf_counter()
    stats = SoundStats()
    last = [started]

    def phase(name: str) -> None:
        now = time.perf_counter()
        stats.phase_seconds[name] = stats.phase_seconds.get(name, 0.0) + now - last[0]
        last[0] = now

    _, ids, new_rank = rank_videos(videos, new["video_id"])
    stats.new_videos, stats.history_videos = len(new_rank), len(ids)
    is_new = np.zeros(len(ids), bool)
    is_new[new_rank] = True
    sound_of = np.arange(len(ids), dtype=np.int64)  # each video's sound (rank of its first video)
    shift_of = np.zeros(len(ids), np.float64)  # seconds into its sound where it starts
    if known is not None and known.num_rows:
        rank = _owner_ranks(known["video_id"], ids)
        sound = _owner_ranks(known["sound_id"], ids)
        ok = (rank >= 0) & (sound >= 0) & ~is_new[np.maximum(rank, 0)]
        sound_of[rank[ok]] = sound[ok]
        shift_of[rank[ok]] = known["offset_s"].to_numpy(zero_copy_only=False)[ok]
    has_sound = sound_of != np.arange(len(ids))
    phase("videos")

    # 1. the day's landmarks, in rank order of their videos; its sample indexed
    codes, counts, stats.old_format_new = fingerprint_codes(new["sound_fingerprint"])
    owner = np.repeat(_owner_ranks(new["video_id"], ids), counts)
    order = np.argsort(owner, kind="stable")
    codes, owner = codes[order], owner[order].astype(np.int32)
    start = np.searchsorted(owner, np.arange(len(ids) + 1))  # landmarks of rank r: start[r]:start[r + 1]
    sampled = in_sample(codes)
    s_codes, s_owner = codes[sampled], owner[sampled]
    s_time = (s_codes & ((1 << TIME_BITS) - 1)).astype(np.int32)
    s_start = np.searchsorted(s_owner, np.arange(len(ids) + 1))
    index = DayIndex.build(s_codes >> TIME_BITS)
    stats.new_landmarks, stats.new_sampled, stats.new_keys = len(codes), len(s_codes), len(index.keys)
    phase("index")

    # 2-3. one pass over the history's samples (the day itself first: a sound first heard today),
    # each chunk probed and expanded into agreements; the pairs whose samples agree at one offset
    # are lined up on their full fingerprints (the history's read for these only) before the next
    # chunk is read
    matches: dict[int, list[tuple[int, SoundMatch]]] = {}  # new rank -> [(earlier rank, verdict)]

    def examine(chunk_codes: np.ndarray, chunk_owner: np.ndarray) -> list[tuple[int, int]]:
        """The candidate pairs ``(new rank, earlier rank)`` of one chunk's sampled landmarks."""
        key, who, frame, passed = index.probe(chunk_codes, chunk_owner)
        stats.scanned_landmarks += int((chunk_owner >= 0).sum())
        stats.filter_passes += passed
        stats.landmark_hits += len(key)
        pair, hot = pair_keys(key, who, index.runs, index.order, s_owner, options.max_bucket)
        stats.hot_keys_skipped += hot
        stats.agreements += len(pair)
        stats.peak_chunk_agreements = max(stats.peak_chunk_agreements, len(pair))
        pair.sort()
        starts, ends = _runs(pair)
        wanted = pair[starts[ends - starts >= options.candidate_hits]]
        del pair, starts, ends
        pair, q_index, offset = expand(key, who, frame, index.runs, index.order, s_owner, s_time, options.max_bucket,
                                       wanted)
        del key, who, frame
        by_pair = np.argsort(pair, kind="stable")
        pair = pair[by_pair]
        found = []
        for lo, hi in zip(*_runs(pair)):
            new_r, old_r = int(pair[lo] >> 32), int(pair[lo] & 0xFFFFFFFF)
            agreeing, begin = by_pair[lo:hi], s_start[new_r]
            if align(s_time[begin:s_start[new_r + 1]], q_index[agreeing] - begin,
                     offset[agreeing]).hits >= options.candidate_hits:
                found.append((new_r, old_r))
        stats.candidate_pairs += len(found)
        return found

    def verify(candidates: list[tuple[int, int]]) -> None:
        """Line up each candidate pair on the full fingerprints; keep the same recordings."""
        wanted_old = sorted({old_r for _, old_r in candidates if not is_new[old_r]})
        full: dict[int, np.ndarray] = {}
        if wanted_old:
            table = fingerprints(ids.take(pa.array(wanted_old, pa.int64())).to_pylist())
            old_codes, old_counts, _ = fingerprint_codes(table["sound_fingerprint"])
            full = dict(zip(_owner_ranks(table["video_id"], ids).tolist(),
                            np.split(old_codes, np.cumsum(old_counts)[:-1])))
            stats.fetched_videos += len(full)
        for new_r, old_r in candidates:
            other = codes[start[old_r]:start[old_r + 1]] if is_new[old_r] else full.get(old_r, codes[:0])
            found = match_fingerprints(codes[start[new_r]:start[new_r + 1]], other)
            if found.passes(options.min_hits, options.min_share, options.min_matched_s):
                matches.setdefault(new_r, []).append((old_r, found))

    verify(examine(s_codes, s_owner))
    for chunk in history:
        rank = _owner_ranks(chunk["video_id"], ids)
        searched = (rank >= 0) & ~is_new[np.maximum(rank, 0)] & ~has_sound[np.maximum(rank, 0)]
        stats.skipped_videos += int(((rank >= 0) & has_sound[np.maximum(rank, 0)]).sum())
        if not searched.any():
            continue
        chunk = chunk.filter(pa.array(searched))
        stats.scanned_videos += chunk.num_rows
        chunk_codes, chunk_counts, _ = fingerprint_codes(chunk["sound_keys"])
        stats.keyless_videos += int((chunk_counts == 0).sum())
        candidates = examine(chunk_codes, np.repeat(rank[searched], chunk_counts).astype(np.int32))
        del chunk, chunk_codes
        verify(candidates)
    stats.same_pairs = sum(len(m) for m in matches.values())
    phase("scan")

    # 4. resolve in rank order: an earlier new video's sound is known before a later one asks
    rows = []
    for new_r in sorted(matches):
        best = min(((sound_of[old_r], -found.share, old_r, found) for old_r, found in matches[new_r]),
                   key=lambda x: x[:3])
        sound, _, old_r, found = best
        sound_of[new_r] = sound
        shift_of[new_r] = found.offset_s + shift_of[old_r]
        rows.append((new_r, int(sound), shift_of[new_r], found.matched_s, found.share))
    table = pa.table({
        "video_id": ids.take(pa.array([r[0] for r in rows], pa.int64())),
        "sound_id": ids.take(pa.array([r[1] for r in rows], pa.int64())),
        "offset_s": pa.array([r[2] for r in rows], pa.float32()),
        "matched_s": pa.array([r[3] for r in rows], pa.float32()),
        "score": pa.array([r[4] for r in rows], pa.float32()),
    }, schema=result_schema())
    stats.matched_videos = table.num_rows
    phase("resolve")
    stats.seconds = time.perf_counter() - started
    return SoundSearch(table, stats)
