"""Near-duplicate and re-upload search: new videos against the whole committed history.

Inputs are what the tables hold, as pyarrow tables (numpy inside):

- ``videos``: one row per committed video, columns ``video_id`` (string), ``upload_ts``
  (timestamp, nullable: a null sorts after every time), ``content_sha256`` (string). It must
  hold the new videos too (the step runs after their commit), so copies uploaded earlier the
  same day are found.
- ``frames``: one row per sampled frame, ``video_id`` (string) and ``phash`` (int64 as
  stored, or uint64: the 64-bit pHash of ``extract.media.phash``, same bits either way), and
  optionally ``phash_middle`` (the middle hash, ``middle_hash_frames``; null where a frame has
  none) and ``phash_zoom`` (``list<int64>``, the zoom hashes, ``zoom_hash_frames``: one per
  ``ZOOMS`` level; null where a frame has none). Frames of videos absent from ``videos`` are
  ignored (counted in ``stats``).
- ``new_ids``: the video ids to search for (the day's videos).

For each new video the search reports the earliest earlier video (by ``upload_ts``, then
``video_id``) that is a copy of it:

- ``exact``: same ``content_sha256`` (an untouched re-upload), whatever the frames say;
- ``near``: a candidate pair (below) where at least ``min_match_fraction`` of the new video's
  informative frames match some frame of the other video (whole-frame hashes within
  ``max_hamming`` bits, or middle hashes within ``max_hamming_middle``, or a zoom pair within
  ``max_hamming_zoom``, below), and, when pooled CLIP embeddings are given, their cosine is at
  least ``min_clip_cosine``.

A pair is a copy when one video shows the other's picture: re-encoded, resized, under an
overlay, letterboxed, zoomed or cropped about the centre, mirrored. Two videos that only show
the same scene (two cuts of one source file, two uploads of one event) are not copies of each
other; the search does not tell them apart from copies when their frames are as close
(``bench/bench_overlays.py`` counts them apart from pairs of different sources).

Middle hashes (``options.middle`` and a ``phash_middle`` column): a banner over the top or
bottom of the frame, or letterbox bars, move the whole-frame hash past ``max_hamming`` but
leave the middle hash close, so the new videos' middle hashes are looked up among the
history's middle hashes as well (``middle_bands`` bands, the same kernel), and either kind of
match counts for a frame. The two sets of candidates are joined before the frame check.

Zoom hashes (``options.zoom`` and a ``phash_zoom`` column): a frame's views are its whole-frame
hash (the zoom-1 view) and its zoom hashes (centre squares of ``1 / z`` of the side,
``extract.media.phash.ZOOMS``). A copy zoomed ``z`` about the centre, or cropped from 16:9 to
9:16 (or the reverse), has a whole-frame hash close to the original's zoom-``z`` view, and its
zoom-``z1`` view close to the original's ``z1 * z`` one; so two frames also match when any view
of one is within ``max_hamming_zoom`` of a view of the other (the whole-frame pair keeps
``max_hamming``). Candidates: each view level of the history is scanned against each other view
level of the new frames (``zoom_bands`` bands per pair of levels: 12 joins at three zooms), so
either upload order is found; pairs of one zoom level are left out of the candidates (only the
frame check compares them: in ``bench/bench_overlays.py`` they found 1 copy more of 570, at a
quarter of the cost). Whole/zoom pairs alone miss a zoom between two levels (1.5x: 9 of 28
found), which the copy's 1.15 view against the original's 16/9 one finds.

Memory: the middle and zoom hashes are read where Arrow holds them (``_StoredHashes``): one hash
array (the whole-frame hashes, or one middle or zoom level) is copied out at a time for its scan
and dropped after it; the frame check gathers only its pairs' frames, ``MATCH_BATCH`` pairs at a
time.

Candidates by locality-sensitive hashing (bit-sampling LSH with banding): ``bands`` bands,
each a fixed random subset of ``band_bits`` of the 64 hash bits (groups of disjoint subsets
of one seeded permutation, so a group covers most bits once). Two frames collide in a band
when their hashes agree on its bits; a frame pair at Hamming distance ``d`` collides in a
given band with probability ``C(64 - band_bits, d) / C(64, d)``. Per band, the new frames'
band values go into a hash table behind a bit filter, and the history is scanned once
against it (``extract.index.hash_join.band_join``, compiled). A colliding pair counts only
when its frames are within ``max_hamming`` and the other video is earlier. Work per band is
one linear pass over the history's hashes plus one popcount per colliding pair, so the cost
grows with the new day (times the history size for the scan, never history squared), and
memory stays at one hash array plus some 60 MB of table per thread at 800 k queries. Band values held by more
than ``max_bucket`` frames (a channel's intro, a logo card) are skipped: they would pair
every video that shows them. Flat frames (pHash 0 or ``FLAT_HASH``: black or single-colour)
carry no content and are left out.

Mirrored copies: the new video's hashes are also queried as ``mirror_hash`` (the pHash the
flipped frames would have), and a pair's match fraction is the better of the two readings;
``mirrored`` says which won.

Recall per frame pair (``bands=48``, ``band_bits=24``, from the formula above): d = 4: 1.00,
6: 0.92, 8: 0.57, 10: 0.24, 12: 0.08; a copy is found when any of its frame pairs collides,
so a video with several frames at d <= 8 is found almost surely (the test copies: see
``tests/test_near_duplicates.py``). Random 64-bit hashes collide per band with probability
2^-24, i.e. about ``bands * history_frames / 2^24`` history frames per new frame.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from extract.media.phash import FLAT_HASH, HASH_BITS, ZOOMS, mirror_hash

MIDDLE_COLUMN = "phash_middle"
ZOOM_COLUMN = "phash_zoom"

KINDS = ("exact", "near")

EmbeddingLookup = Callable[[Sequence[str]], np.ndarray]
"""``lookup(video_ids) -> (k, D) float32``: pooled, L2-normalised ``clip_embedding`` of each id
(a row of zeros or NaN where a video has none). Called once, with the videos of the pairs
left after the frame check, so the history's embeddings are never all read."""


@dataclass(frozen=True)
class DuplicateOptions:
    """Thresholds and LSH shape of the near-duplicate search (see module doc).

    Defaults, from ``tests/test_phash.py`` measurements on transformed copies and 200
    distinct clips: re-encoding, 720p->360p and 2x speed leave frames 0-2 bits apart; a 5 %
    crop 4-16, a text banner 6-14, a mirror 0-6 through ``mirror_hash``; frames of distinct
    clips lie 8 or more bits apart (0.1 percentile 18), random hashes ~32. ``max_hamming=12``
    keeps 7 of 8 frames of the crop and banner copies; ``min_match_fraction=0.5`` needs half
    the video to match, so one shared frame (a black card, a logo) is not enough.
    ``min_clip_cosine=0.9`` is a prior for real CLIP weights (a copy's pooled embedding stays
    close; other videos of the same scene sit lower); tune it per model by percentile.

    Middle hashes (``bench/bench_overlays.py``: real peer-media segments and their re-encoded
    copies): under a 10-30 % banner, top or bottom, and letterboxed, a copy's frames lie a
    median 0-2 bits from the original's (their whole-frame hashes 8-26); frames of different
    segments lie 8 bits apart or more (0.1 % quantile 12, the same-file segments closest).
    ``max_hamming_middle=10`` sits between; ``middle_bands=24`` bands find a frame pair at
    distance 4 with probability 0.98, 6: 0.72 (the formula below), so half as many bands as the
    whole-frame search suffice for copies whose middle is untouched.

    Zoom hashes (the same bench, copies zoomed 1.1-1.5x about the centre or cropped from 16:9 or
    2.35:1 to 9:16 and back): a copy frame's nearest view of its original lies a median 0-4 bits
    away (the whole-frame hashes 10-26); views of frames of different source videos lie 14 bits
    apart or more (0.1 % quantile 16). ``max_hamming_zoom=10`` sits between. A copy is a
    candidate when any pair of its frames' views collides, so few bands suffice: ``zoom_bands=4``
    per pair of view levels (a frame pair at distance 4 collides with probability 0.46, 6: 0.19)
    found 403 of the bench's 570 copies of every kind (401 in the reverse upload order), as 8 and
    16 bands over every view pair did (403 and 406), 0 false pairs each. That is 12 joins of 4
    bands, 48 scans of the history with the new frames' views of one level each, as many as the
    whole-frame search.
    """

    max_hamming: int = 12  # bits; a frame matches another within this distance
    max_hamming_middle: int = 10  # bits; or when their middle hashes are within this distance
    max_hamming_zoom: int = 10  # bits; or when a view of one is within this distance of a view of the other
    min_match_fraction: float = 0.5  # share of the new video's informative frames that must match
    min_clip_cosine: float = 0.9  # pooled CLIP cosine a near copy needs, when embeddings are given
    bands: int = 48  # LSH bands
    band_bits: int = 24  # hash bits per band
    max_bucket: int = 1000  # skip a band value held by more frames than this
    mirrored: bool = True  # also query mirrored hashes
    middle: bool = True  # also search the middle hashes (frames.phash_middle), where the frames have them
    middle_bands: int = 24  # LSH bands over the middle hashes (band_bits bits each)
    zoom: bool = True  # also search the zoom hashes (frames.phash_zoom), where the frames have them
    zoom_bands: int = 4  # LSH bands per pair of view levels of the zoom search (band_bits bits each)
    seed: int = 0  # which bit subsets form the bands (fixed: reproducible candidates)
    # Bands searched in parallel (the kernel releases the GIL), one per usable core, at most 8:
    # each holds about 60 MB of tables and buffers at 800 k queries. Results do not depend on it.
    threads: int = field(default_factory=lambda: min(len(os.sched_getaffinity(0)), 8))

    def __post_init__(self) -> None:
        self._verify()

    def _verify(self) -> None:
        checks = (
            ("max_hamming", 0 <= self.max_hamming < HASH_BITS, f"an integer in [0, {HASH_BITS})"),
            ("max_hamming_middle", 0 <= self.max_hamming_middle < HASH_BITS, f"an integer in [0, {HASH_BITS})"),
            ("max_hamming_zoom", 0 <= self.max_hamming_zoom < HASH_BITS, f"an integer in [0, {HASH_BITS})"),
            ("min_match_fraction", 0.0 < self.min_match_fraction <= 1.0, "in (0, 1]"),
            ("min_clip_cosine", -1.0 <= self.min_clip_cosine <= 1.0, "in [-1, 1]"),
            ("bands", self.bands >= 1, ">= 1"),
            ("middle_bands", self.middle_bands >= 1, ">= 1"),
            ("zoom_bands", self.zoom_bands >= 1, ">= 1"),
            ("band_bits", 8 <= self.band_bits <= 32, "in [8, 32]"),
            ("max_bucket", self.max_bucket >= 1, ">= 1"),
            ("threads", self.threads >= 1, ">= 1"),
        )
        for key, ok, allowed in checks:
            if not ok:
                raise ValueError(f"duplicates.{key}: {getattr(self, key)!r} must be {allowed}")


@dataclass
class SearchStats:
    """Counters of one search, for the run manifest (all counts, ``seconds`` wall clock)."""

    new_videos: int = 0
    history_videos: int = 0
    history_frames: int = 0
    flat_frames: int = 0  # left out: no content
    orphan_frames: int = 0  # frames whose video is not in ``videos``
    band_collisions: int = 0  # (new frame, earlier video's frame) pairs agreeing on a band's bits, all bands
    hot_keys_skipped: int = 0  # band values over max_bucket (per band)
    close_frame_pairs: int = 0  # colliding pairs within max_hamming
    middle_frames: int = 0  # frames with an informative middle hash (searched as well)
    middle_band_collisions: int = 0  # as band_collisions, over the middle hashes
    middle_close_frame_pairs: int = 0  # colliding middle-hash pairs within max_hamming_middle
    zoom_frames: int = 0  # frames with informative zoom hashes (searched as well)
    zoom_band_collisions: int = 0  # as band_collisions, between views of the zoom search
    zoom_close_frame_pairs: int = 0  # colliding view pairs within max_hamming_zoom
    candidate_pairs: int = 0  # distinct (new video, earlier video, mirrored) with a close pair of either kind
    exact_pairs: int = 0  # new videos with an earlier equal content_sha256
    duplicates: int = 0  # rows reported
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DuplicateSearch:
    """Result: ``table`` (see ``result_schema``) and the search's ``stats``."""

    table: "pa.Table"
    stats: SearchStats


def result_schema() -> "pa.Schema":
    """Columns of the ``duplicates`` rows this search returns (the table schema's core)."""
    import pyarrow as pa

    return pa.schema([
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("match_frames", pa.float32(), nullable=False),
        pa.field("clip_cosine", pa.float32(), nullable=True),
        pa.field("mirrored", pa.bool_(), nullable=False),
    ])


@dataclass(frozen=True)
class _Bands:
    masks: np.ndarray  # (bands,) uint64: the bits of each band
    multipliers: np.ndarray  # (bands,) uint64: odd multiply-shift constants

    @classmethod
    def make(cls, options: DuplicateOptions, bands: int) -> "_Bands":
        rng = np.random.default_rng(options.seed)
        per_group = HASH_BITS // options.band_bits
        masks: list[int] = []
        while len(masks) < bands:
            order = rng.permutation(HASH_BITS)
            for g in range(per_group):
                bits = order[g * options.band_bits:(g + 1) * options.band_bits]
                masks.append(int(sum(1 << int(b) for b in bits)))
        multipliers = rng.integers(0, 2**63, bands, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        return cls(np.array(masks[:bands], np.uint64), multipliers)


def find_near_duplicates(videos: "pa.Table", frames: "pa.Table", new_ids: Sequence[str] | "pa.Array",
                         options: DuplicateOptions = DuplicateOptions(),
                         embeddings: EmbeddingLookup | None = None) -> DuplicateSearch:
    """Find, for each video of ``new_ids``, its earliest earlier copy (see module doc).

    Returns one row per new video that has a copy: ``video_id``, ``duplicate_of``, ``kind``
    (``exact`` | ``near``), ``match_frames`` (share of the new video's informative frames
    within ``max_hamming`` of the copy's frames, float32 in [0, 1]; 1.0 for an exact copy
    without informative frames), ``clip_cosine`` (pooled CLIP cosine; null without
    ``embeddings``), ``mirrored`` (matched through the mirrored hashes). Raises ValueError for
    a new id missing from ``videos`` or a duplicated ``video_id`` in ``videos``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.perf_counter()
    stats = SearchStats()
    phase = _Phases(stats)

    order, ids, new_rank = rank_videos(videos, new_ids)
    sha = videos["content_sha256"].take(order).combine_chunks()
    stats.new_videos, stats.history_videos = len(new_rank), len(ids)
    is_new = np.zeros(len(ids), bool)
    is_new[new_rank] = True
    phase("videos")

    owner = _owner_ranks(frames["video_id"], ids)
    phash = _StoredHashes(frames["phash"], "phash", 1)
    hashes = phash.level(0)  # the whole-frame hashes, held for the main search (flat ones 0)
    middle = _StoredHashes(frames[MIDDLE_COLUMN], MIDDLE_COLUMN, 1) \
        if options.middle and MIDDLE_COLUMN in frames.column_names else None
    zoom = _StoredHashes(frames[ZOOM_COLUMN], ZOOM_COLUMN, len(ZOOMS)) \
        if options.zoom and ZOOM_COLUMN in frames.column_names else None
    valid = owner >= 0
    stats.orphan_frames = int((~valid).sum())
    informative = hashes != 0
    stats.flat_frames = int((valid & ~informative).sum())
    keep = valid & informative
    if not keep.all():  # the usual case keeps every frame: no copies of the big arrays
        hashes, owner = hashes[keep], owner[keep]
        for stored in (phash, middle, zoom):
            if stored is not None:
                stored.select(np.flatnonzero(keep))
    stats.history_frames = len(hashes)
    del valid, informative, keep
    # Arrow's pool keeps the pages it freed (the read's buffers, the conversions above) for Arrow
    # alone; the arrays that follow are numpy's, so give those pages back to the system.
    pa.default_memory_pool().release_unused()
    phase("frames")

    query_hash, query_owner, query_mirrored = _queries(hashes, owner, is_new, options.mirrored)
    codes, counts = _candidate_codes(hashes, owner, query_hash, query_owner, query_mirrored, options.bands,
                                     options.max_hamming, options)
    stats.band_collisions, stats.hot_keys_skipped, stats.close_frame_pairs = counts
    del hashes, query_hash, query_owner, query_mirrored  # from here on one hash array at a time
    if middle is not None:
        level = middle.level(0)  # held for this search only: the frame check takes its frames' hashes
        stats.middle_frames = int(np.count_nonzero(level))
        query_hash, query_owner, query_mirrored = _queries(level, owner, is_new, options.mirrored)
        middle_codes, counts = _candidate_codes(level, owner, query_hash, query_owner, query_mirrored,
                                                options.middle_bands, options.max_hamming_middle, options)
        del level
        stats.middle_band_collisions, hot, stats.middle_close_frame_pairs = counts
        stats.hot_keys_skipped += hot
        codes = np.union1d(codes, middle_codes)
        middle = middle if stats.middle_frames else None
    if zoom is not None:
        zoom_codes, counts, stats.zoom_frames = _zoom_candidates(phash, zoom, owner, is_new, options)
        stats.zoom_band_collisions, hot, stats.zoom_close_frame_pairs = counts
        stats.hot_keys_skipped += hot
        codes = np.union1d(codes, zoom_codes)
        zoom = zoom if stats.zoom_frames else None
    stats.candidate_pairs = len(codes)
    pairs = _pair_decode(codes)
    phase("candidates")

    exact = _exact_matches(sha, new_rank)
    stats.exact_pairs = len(exact)
    phase("exact")

    rows = _confirmed(pairs, exact, phash, middle, zoom, owner, ids, options, embeddings, phase)
    table = _result_table(rows, ids, sha)
    stats.duplicates = table.num_rows
    phase("confirm")
    stats.seconds = time.perf_counter() - started
    return DuplicateSearch(table, stats)


def rank_videos(videos: "pa.Table", new_ids: Sequence[str] | "pa.Array") -> tuple["pa.Array", "pa.Array", np.ndarray]:
    """Videos in ``(upload_ts, video_id)`` order (rank = position; "earlier" = smaller rank; a
    null ``upload_ts`` sorts last): ``(order, ids, new_rank)``, the sorting indices into
    ``videos``, the ids in rank order and the sorted distinct ranks of ``new_ids``. Raises
    ValueError for a duplicated ``video_id`` or a new id missing from ``videos``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    order = pc.sort_indices(videos, options=pc.SortOptions(
        [("upload_ts", "ascending", "at_end"), ("video_id", "ascending", "at_end")]))
    ids = videos["video_id"].take(order).combine_chunks()
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ValueError("videos.video_id: ids must be unique")
    wanted = new_ids.combine_chunks() if isinstance(new_ids, pa.ChunkedArray) else pa.array(new_ids, pa.string())
    new_rank = pc.index_in(wanted, value_set=ids)
    if new_rank.null_count:
        missing = pc.filter(wanted, pc.is_null(new_rank))[:3].to_pylist()
        raise ValueError(f"new_ids: {new_rank.null_count} ids are not in videos (e.g. {missing})")
    return order, ids, np.unique(new_rank.to_numpy(zero_copy_only=False).astype(np.int64))


class _Phases:
    """Records the seconds since the previous call under a phase name."""

    def __init__(self, stats: SearchStats):
        self.stats, self.last = stats, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.stats.phase_seconds[name] = self.stats.phase_seconds.get(name, 0.0) + now - self.last
        self.last = now


def _owner_ranks(column, ids: "pa.Array") -> np.ndarray:
    """Each frame's video rank in ``ids`` as ``(n,) int32`` (-1: not in ``ids``), chunk by chunk.

    A dictionary-encoded column (``read_dictionary=["video_id"]``) is looked up once per
    dictionary value, so the frames' id strings are never materialised."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = np.empty(sum(len(c) for c in chunks), np.int32)
    start, looked_up = 0, {}  # the chunks of one Parquet row group share its dictionary: look it up once
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            key = (chunk.dictionary.buffers()[-1].address if len(chunk.dictionary) else 0, len(chunk.dictionary))
            if key not in looked_up:
                looked_up = {key: pc.index_in(chunk.dictionary, value_set=ids).fill_null(-1).to_numpy()}
            per_value = looked_up[key]
            codes = pc.fill_null(chunk.indices, 0).to_numpy().astype(np.int64, copy=False)
            ranks = per_value[codes] if len(per_value) else np.full(len(chunk), -1)
            if chunk.null_count:
                ranks[chunk.is_null().to_numpy(zero_copy_only=False)] = -1
        else:
            ranks = pc.index_in(chunk, value_set=ids).fill_null(-1).to_numpy()
        out[start:start + len(chunk)] = ranks
        start += len(chunk)
    return out


class _StoredHashes:
    """A hash column read where Arrow holds it: ``phash`` or ``phash_middle`` (int64 or uint64,
    the same bits; one hash a frame, ``width`` 1) or ``phash_zoom`` (``list<int64>``, ``width`` = ``len(ZOOMS)``; a list of
    another length, from other ``ZOOMS``, counts as none). Per chunk, its values as a zero-copy
    ``(rows, width) uint64`` view (a copy only for a chunk with nulls or short lists). ``level``
    and ``take`` copy out one column or a few frames, 0 where a frame has none or its hash is flat
    (``FLAT_HASH``), so the search holds one level at a time, never the column twice. ``rows``
    (after ``select``) maps the search's frames to the column's rows."""

    def __init__(self, column, name: str, width: int):
        import pyarrow as pa
        import pyarrow.compute as pc

        self.parts: list[np.ndarray] = []  # per chunk, (rows, width) uint64
        for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
            listed = pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)
            scalar = pa.types.is_int64(chunk.type) or pa.types.is_uint64(chunk.type)
            if not (listed if width > 1 else scalar):
                raise ValueError(f"frames.{name}: expected {'a list of int64' if width > 1 else 'int64 or uint64'}, "
                                 f"got {chunk.type}")
            full = pc.list_value_length(chunk).fill_null(0).to_numpy() == width if width > 1 else None
            if full is None or full.all():  # the usual chunk: its values in place
                values = chunk.flatten() if width > 1 else chunk
                values = values.fill_null(0) if values.null_count else values
                part = values.to_numpy().view(np.uint64).reshape(len(chunk), width)
            else:
                part = np.zeros((len(chunk), width), np.uint64)
                if full.any():
                    values = pc.list_flatten(chunk.filter(pa.array(full))).fill_null(0)
                    part[full] = values.to_numpy().view(np.uint64).reshape(-1, width)
            self.parts.append(part)
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])
        self.rows: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    def select(self, rows: np.ndarray) -> None:
        """Keep the frames ``rows`` (``(m,) int64`` into the current frames), in that order."""
        self.rows = rows if self.rows is None else self.rows[rows]

    def informative_frames(self) -> int:
        """How many frames have a hash other than 0 and ``FLAT_HASH`` (a chunk at a time)."""
        has = (((part != 0) & (part != FLAT_HASH)).any(axis=1) for part in self.parts)
        if self.rows is None:
            return int(sum(np.count_nonzero(h) for h in has))
        return int(np.count_nonzero(np.concatenate(list(has))[self.rows]))

    def level(self, k: int) -> np.ndarray:
        """Column ``k`` of every frame, ``(len(self),) uint64`` (one contiguous copy)."""
        out = np.empty(int(self.starts[-1]), np.uint64)
        for start, part in zip(self.starts, self.parts):
            out[start:start + len(part)] = part[:, k]
        return _flat_to_zero(out if self.rows is None else out[self.rows])

    def take(self, frames: np.ndarray) -> np.ndarray:
        """The hashes of ``frames`` (``(m,)`` indices into the current frames), ``(m, width) uint64``."""
        rows = np.asarray(frames, np.int64) if self.rows is None else self.rows[frames]
        out = np.zeros((len(rows), self.parts[0].shape[1] if self.parts else 1), np.uint64)
        chunk = np.searchsorted(self.starts, rows, "right") - 1
        order = np.argsort(chunk, kind="stable")
        bounds = np.searchsorted(chunk[order], np.arange(len(self.parts) + 1))
        for c in np.flatnonzero(np.diff(bounds)):
            mine = order[bounds[c]:bounds[c + 1]]
            out[mine] = self.parts[c][rows[mine] - self.starts[c]]
        return _flat_to_zero(out)


def _flat_to_zero(views: np.ndarray) -> np.ndarray:
    """``views`` (a copy of the hashes) with the flat ones (``FLAT_HASH``) set to 0 = none, in place."""
    views[views == FLAT_HASH] = 0
    return views


def _queries(hashes: np.ndarray, owner: np.ndarray, is_new: np.ndarray,
             mirrored: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The new videos' frame hashes to look up (plus their mirrored readings); 0 (no hash) left out."""
    mine = is_new[owner] & (hashes != 0)
    q_hash, q_owner = hashes[mine], owner[mine]
    flags = np.zeros(len(q_hash), bool)
    if mirrored:
        q_hash = np.concatenate([q_hash, mirror_hash(q_hash)])
        q_owner = np.concatenate([q_owner, q_owner])
        flags = np.concatenate([flags, np.ones(len(flags), bool)])
    return q_hash, q_owner, flags


def _candidate_codes(hashes: np.ndarray, owner: np.ndarray, q_hash: np.ndarray, q_owner: np.ndarray,
                     q_mirrored: np.ndarray, bands: int, max_hamming: int,
                     options: DuplicateOptions) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Pair codes (``hash_join.band_join``) of the distinct ``(new, earlier, mirrored)`` with a
    colliding frame pair within ``max_hamming`` over ``bands`` bands, and the summed counters
    ``(band collisions, hot values skipped, close frame pairs)``."""
    from extract.index.hash_join import band_join

    if len(q_hash) == 0:
        return np.zeros(0, np.int64), (0, 0, 0)
    masks = _Bands.make(options, bands)

    def one_band(band: int) -> tuple[np.ndarray, int, int, int]:
        return band_join(hashes, owner, q_hash, q_owner, q_mirrored, masks.masks[band], masks.multipliers[band],
                         max_hamming, options.max_bucket)

    # The kernel releases the GIL, so bands run in parallel on threads.
    with ThreadPoolExecutor(max_workers=options.threads) as pool:
        results = list(pool.map(one_band, range(bands)))
    counts = tuple(int(sum(r[k] for r in results)) for k in (1, 2, 3))
    return np.unique(np.concatenate([codes for codes, *_ in results])), counts


def _zoom_candidates(phash: _StoredHashes, zoom: _StoredHashes, owner: np.ndarray, is_new: np.ndarray,
                     options: DuplicateOptions) -> tuple[np.ndarray, tuple[int, int, int], int]:
    """Pair codes of the zoom search (module doc): each view level of the history (the whole-frame
    hashes, then each zoom level, one held at a time) joined with each other view level of the new
    frames, one join per pair of levels; summed counters as ``_candidate_codes``, and the number of
    frames with an informative zoom hash."""
    new_frames = np.flatnonzero(is_new[owner])
    day_owner = owner[new_frames]
    day_views = np.concatenate([phash.take(new_frames), zoom.take(new_frames)], axis=1)
    found, totals = [], np.zeros(3, np.int64)
    for h in range(day_views.shape[1]):
        level = phash.level(0) if h == 0 else zoom.level(h - 1)
        for j in range(day_views.shape[1]):
            if j != h:  # same level: whole/whole is the main search; zoom/zoom adds little (module doc)
                queries = _queries(np.ascontiguousarray(day_views[:, j]), day_owner, is_new, options.mirrored)
                codes, counts = _candidate_codes(level, owner, *queries, options.zoom_bands,
                                                 options.max_hamming_zoom, options)
                found.append(codes)
                totals += counts
        del level
    return np.unique(np.concatenate(found)), tuple(int(v) for v in totals), zoom.informative_frames()


def _pair_decode(codes: np.ndarray) -> np.ndarray:
    """Pair codes of ``hash_join.band_join`` -> ``(k, 3) int64`` (new rank, earlier rank, mirrored)."""
    return np.stack([codes >> 32, (codes & 0xFFFFFFFF) >> 1, codes & 1], axis=1)


def _exact_matches(sha: "pa.Array", new_rank: np.ndarray) -> np.ndarray:
    """``(k, 2) int64`` (new rank, earliest earlier rank with the same content_sha256)."""
    import pyarrow.compute as pc

    # index_in finds the first occurrence, and the arrays are in (upload_ts, video_id) order;
    # every new video's own hash is in the set, so no null.
    first = pc.index_in(sha.take(new_rank), value_set=sha).to_numpy(zero_copy_only=False).astype(np.int64)
    earlier = first < new_rank
    return np.stack([new_rank[earlier], first[earlier]], axis=1)


@dataclass
class _Rows:
    new: np.ndarray  # ranks
    earlier: np.ndarray  # ranks
    fraction: np.ndarray  # float32
    cosine: np.ndarray  # float32, NaN = unknown
    mirrored: np.ndarray  # bool


def _confirmed(pairs: np.ndarray, exact: np.ndarray, phash: _StoredHashes, middle: _StoredHashes | None,
               zoom: _StoredHashes | None, owner: np.ndarray, ids, options: DuplicateOptions,
               embeddings: EmbeddingLookup | None,
               phase: _Phases) -> _Rows:
    """Per new video, its earliest confirmed earlier copy (exact always confirmed)."""
    exact3 = np.concatenate([exact, np.zeros((len(exact), 1), np.int64)], axis=1)
    both = np.concatenate([pairs, exact3]) if len(exact3) else pairs
    fraction = _match_fractions(both, phash, middle, zoom, owner, len(ids), options)
    is_exact = np.zeros(len(both), bool)
    is_exact[len(pairs):] = True
    if len(exact):  # an exact copy without informative frames still matches in full
        no_frames = is_exact & np.isnan(fraction)
        fraction[no_frames] = 1.0
    ok = is_exact | (fraction >= options.min_match_fraction)
    both, fraction, is_exact = both[ok], fraction[ok], is_exact[ok]
    # A pair found directly and mirrored: keep the better reading (then the direct one).
    order = np.lexsort((both[:, 2], -fraction, both[:, 1], both[:, 0]))
    both, fraction, is_exact = both[order], fraction[order], is_exact[order]
    first = np.ones(len(both), bool)
    first[1:] = (both[1:, 0] != both[:-1, 0]) | (both[1:, 1] != both[:-1, 1])
    exact_pair = np.zeros(len(both), bool)
    if len(both):  # exact flag for a (new, earlier) pair if any of its readings was the sha match
        group = np.cumsum(first) - 1
        exact_pair = np.bincount(group, weights=is_exact, minlength=group[-1] + 1)[group] > 0
    both, fraction, exact_pair = both[first], fraction[first], exact_pair[first]
    phase("frames_check")
    cosine = np.full(len(both), np.nan, np.float32)
    if embeddings is not None and len(both):
        cosine = _cosines(both, ids, embeddings)
        near_ok = np.isnan(cosine) | (cosine >= options.min_clip_cosine)
        keep = exact_pair | near_ok
        both, fraction, cosine = both[keep], fraction[keep], cosine[keep]
    # Earliest confirmed copy per new video: pairs are sorted by (new, earlier).
    first = np.ones(len(both), bool)
    first[1:] = both[1:, 0] != both[:-1, 0]
    both = both[first]
    return _Rows(both[:, 0], both[:, 1], fraction[first].astype(np.float32), cosine[first],
                 both[:, 2].astype(bool))


MATCH_BATCH = 1 << 16  # pairs checked at once: their frames' hashes are gathered per batch (~100 MB at 20 frames a video)


def _match_fractions(pairs: np.ndarray, phash: _StoredHashes, middle: _StoredHashes | None, zoom: _StoredHashes | None,
                     owner: np.ndarray, n_videos: int, options: DuplicateOptions) -> np.ndarray:
    """Per pair ``(new, earlier, mirrored)``: share of the new video's frames that match some
    frame of the earlier one (``hash_join.match_fractions``); NaN when the new video has no frames.
    ``MATCH_BATCH`` pairs at a time, so memory stays bounded however many pairs are candidates."""
    out = np.full(len(pairs), np.nan, np.float32)
    for start in range(0, len(pairs), MATCH_BATCH):
        batch = pairs[start:start + MATCH_BATCH]
        out[start:start + len(batch)] = _batch_match_fractions(batch, phash, middle, zoom, owner, n_videos, options)
    return out


def _batch_match_fractions(pairs: np.ndarray, phash: _StoredHashes, middle: _StoredHashes | None,
                           zoom: _StoredHashes | None, owner: np.ndarray, n_videos: int,
                           options: DuplicateOptions) -> np.ndarray:
    """``_match_fractions`` of a batch of pairs (at least one)."""
    from extract.index.hash_join import match_fractions

    involved = np.zeros(n_videos, bool)
    involved[pairs[:, :2].ravel()] = True
    sel = np.flatnonzero(involved[owner])
    sel = sel[np.argsort(owner[sel], kind="stable")]
    f_owner, f_hash = owner[sel], phash.take(sel)[:, 0]
    f_middle = middle.take(sel)[:, 0] if middle is not None else np.zeros(len(sel), np.uint64)
    f_middle_mirror = np.where(f_middle != 0, mirror_hash(f_middle), np.uint64(0))
    # Views: column 0 the whole-frame hash, then the zoom hashes (0 = none).
    f_views = f_hash[:, None] if zoom is None else np.concatenate([f_hash[:, None], zoom.take(sel)], axis=1)
    f_views_mirror = np.where(f_views != 0, mirror_hash(f_views), np.uint64(0))
    q_start = np.searchsorted(f_owner, pairs[:, 0], "left")
    q_n = np.searchsorted(f_owner, pairs[:, 0], "right") - q_start
    h_start = np.searchsorted(f_owner, pairs[:, 1], "left")
    h_n = np.searchsorted(f_owner, pairs[:, 1], "right") - h_start
    return match_fractions(np.ascontiguousarray(pairs[:, 2] == 1), np.ascontiguousarray(f_views),
                           np.ascontiguousarray(f_views_mirror), f_middle, f_middle_mirror, q_start, q_n, h_start,
                           h_n, options.max_hamming, options.max_hamming_middle, options.max_hamming_zoom)


def _cosines(pairs: np.ndarray, ids, embeddings: EmbeddingLookup) -> np.ndarray:
    """Pooled CLIP cosine per pair; NaN where either side has no embedding."""
    ranks = np.unique(pairs[:, :2])
    vectors = np.asarray(embeddings(ids.take(ranks).to_pylist()), np.float32)
    if vectors.shape[0] != len(ranks):
        raise ValueError(f"embeddings: returned {vectors.shape[0]} rows for {len(ranks)} ids")
    norms = np.linalg.norm(vectors, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    row = np.searchsorted(ranks, pairs[:, :2])
    a, b = vectors[row[:, 0]], vectors[row[:, 1]]
    cosine = np.einsum("ij,ij->i", a, b) / np.maximum(norms[row[:, 0]] * norms[row[:, 1]], 1e-12)
    return np.where(usable[row[:, 0]] & usable[row[:, 1]], cosine, np.nan).astype(np.float32)


def _result_table(rows: _Rows, ids, sha) -> "pa.Table":
    import pyarrow as pa

    new_sha = sha.take(pa.array(rows.new, pa.int64())).to_numpy(zero_copy_only=False)
    old_sha = sha.take(pa.array(rows.earlier, pa.int64())).to_numpy(zero_copy_only=False)
    kind = np.where(new_sha == old_sha, KINDS[0], KINDS[1])
    return pa.table({
        "video_id": ids.take(pa.array(rows.new, pa.int64())),
        "duplicate_of": ids.take(pa.array(rows.earlier, pa.int64())),
        "kind": pa.array(kind.tolist(), pa.string()),
        "match_frames": pa.array(rows.fraction, pa.float32()),
        "clip_cosine": pa.array(rows.cosine, pa.float32(), mask=np.isnan(rows.cosine)),
        "mirrored": pa.array(rows.mirrored, pa.bool_()),
    }, schema=result_schema())
