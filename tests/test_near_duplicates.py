"""Near-duplicate search: real transformed copies found, re-uploads exact, distinct clips never
paired, thresholds gate, and the LSH candidate count grows linearly with the new day; middle
hashes find copies under banners and letterboxed ones, zoom hashes copies zoomed or cropped to
another shape about the centre (real peer-media video), that the whole-frame hashes miss, without
pairing different videos."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

import copies
from extract.config import Config
from extract.media.video import decode_video
from extract.index.near_duplicates import DuplicateOptions, find_near_duplicates, result_schema
from extract.media.phash import ZOOMS, mirror_hash, phash_frames
from test_phash import CLIP_SPEC

DAY_US = 1_780_000_000 * 10**6


def _tables(videos: list[tuple[str, int, str, np.ndarray]]) -> tuple[pa.Table, pa.Table]:
    """``[(video_id, upload_ts_us, sha, hashes uint64)]`` -> (videos, frames) tables as stored."""
    ids = [v[0] for v in videos]
    table = pa.table({"video_id": ids, "upload_ts": pa.array([v[1] for v in videos], pa.timestamp("us", tz="UTC")),
                      "content_sha256": [v[2] for v in videos]})
    frames = pa.table({"video_id": [v[0] for v in videos for _ in v[3]],
                       "phash": pa.array(np.concatenate([v[3] for v in videos]).view(np.int64))})
    return table, frames


def _distinct_clips(n: int, first_seed: int = 1000) -> list[tuple[str, int, str, np.ndarray]]:
    return [(f"clip{s:03d}", DAY_US + s, f"sha-clip{s}",
             phash_frames(np.stack([copies.shapes_frame(first_seed + s, t, 398, 224)[:, 87:311] for t in (0.0, 2.0, 4.0, 6.0)])))
            for s in range(n)]


@pytest.fixture(scope="module")
def copy_videos(tmp_path_factory) -> list[tuple[str, int, str, np.ndarray]]:
    paths = copies.make_copies(tmp_path_factory.mktemp("copies"))
    out = []
    for i, (name, path) in enumerate(paths.items()):
        frames = decode_video(str(path), Config(), CLIP_SPEC, audio=False).frames
        out.append((name, DAY_US - 10**9 + i, hashlib.sha256(path.read_bytes()).hexdigest(), phash_frames(frames)))
    return out


def test_copies_found_and_distinct_clips_not_paired(copy_videos):
    distinct = _distinct_clips(200)
    videos, frames = _tables(copy_videos + distinct)
    new_ids = [v[0] for v in copy_videos[1:]] + [v[0] for v in distinct]
    result = find_near_duplicates(videos, frames, new_ids)
    rows = {r["video_id"]: r for r in result.table.to_pylist()}
    assert result.table.schema == result_schema()
    assert set(rows) == set(copies.TRANSFORMS), rows  # every copy, and no distinct clip
    for name in copies.TRANSFORMS:
        assert rows[name]["duplicate_of"] == "original"
        assert rows[name]["kind"] == ("exact" if name == "reupload" else "near")
        assert rows[name]["match_frames"] >= 0.5
        assert rows[name]["mirrored"] == (name == "mirrored")
    assert rows["reupload"]["match_frames"] == 1.0
    assert result.stats.exact_pairs == 1 and result.stats.duplicates == 7


def test_without_mirrored_queries_the_mirror_is_missed(copy_videos):
    videos, frames = _tables(copy_videos)
    result = find_near_duplicates(videos, frames, ["mirrored"], DuplicateOptions(mirrored=False))
    assert result.table.num_rows == 0


def test_clip_cosine_gates_near_copies_not_exact_ones():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 2**64, 16, dtype=np.uint64)
    near = src ^ np.uint64(0b101)
    videos, frames = _tables([("a", 1, "s1", src), ("b", 2, "s2", near), ("c", 3, "s1", src.copy())])
    same = np.eye(4, dtype=np.float32)[0]
    lookup = {"a": same, "b": np.eye(4, dtype=np.float32)[1], "c": same}
    calls = []

    def embeddings(ids):
        calls.append(list(ids))
        return np.stack([lookup[i] for i in ids])

    result = find_near_duplicates(videos, frames, ["b", "c"], embeddings=embeddings)
    rows = {r["video_id"]: r for r in result.table.to_pylist()}
    assert set(rows) == {"c"}  # b's frames match but its CLIP embedding is orthogonal
    assert rows["c"]["kind"] == "exact" and rows["c"]["clip_cosine"] == pytest.approx(1.0)
    assert len(calls) == 1 and set(calls[0]) <= {"a", "b", "c"}
    loose = find_near_duplicates(videos, frames, ["b"], DuplicateOptions(min_clip_cosine=-1.0), embeddings=embeddings)
    assert loose.table.column("duplicate_of").to_pylist() == ["a"]


def test_earliest_match_and_only_earlier_videos():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 2**64, 12, dtype=np.uint64)
    videos, frames = _tables([("late", 30, "x", src), ("first", 10, "y", src ^ np.uint64(1)),
                              ("second", 20, "z", src ^ np.uint64(2)), ("orig_null_ts", 0, "w", src)])
    videos = videos.set_column(1, "upload_ts", pa.array([30, 10, 20, None], pa.timestamp("us", tz="UTC")))
    result = find_near_duplicates(videos, frames, ["late", "second", "first", "orig_null_ts"])
    rows = {r["video_id"]: r["duplicate_of"] for r in result.table.to_pylist()}
    # A null upload time sorts after every time; the first upload has no earlier copy.
    assert rows == {"second": "first", "late": "first", "orig_null_ts": "first"}


def test_bad_input_named():
    videos, frames = _tables([("a", 1, "s", np.array([5], np.uint64))])
    with pytest.raises(ValueError, match="new_ids"):
        find_near_duplicates(videos, frames, ["missing"])
    with pytest.raises(ValueError, match="duplicates.max_hamming"):
        DuplicateOptions(max_hamming=70)
    with pytest.raises(ValueError, match="duplicates.min_match_fraction"):
        DuplicateOptions(min_match_fraction=0)


def test_candidate_count_grows_linearly_with_the_new_day():
    rng = np.random.default_rng(2)
    n_history, frames_per_video = 20_000, 16
    history = rng.integers(0, 2**64, (n_history, frames_per_video), dtype=np.uint64)
    new = rng.integers(0, 2**64, (2_000, frames_per_video), dtype=np.uint64)
    # Planted copies spread evenly, so each half of the day holds as many (their collisions
    # are many per pair: bunched in one half they would hide the growth of the rest).
    near, mirrored = np.arange(0, 2_000, 50), np.arange(25, 2_000, 200)
    new[near] = history[near] ^ np.uint64(0b11)
    new[mirrored] = mirror_hash(history[mirrored]) ^ np.uint64(1 << 20)
    counts = {}
    for size in (1_000, 2_000):
        vids = ([(f"h{i}", i, f"h{i}", history[i]) for i in range(n_history)] +
                [(f"n{i}", 10**9 + i, f"n{i}", new[i]) for i in range(size)])
        videos, frames = _tables(vids)
        result = find_near_duplicates(videos, frames, [f"n{i}" for i in range(size)])
        counts[size] = result.stats.band_collisions
        rows = {r["video_id"]: r["duplicate_of"] for r in result.table.to_pylist()}
        assert rows == {f"n{i}": f"h{i}" for i in np.concatenate([near, mirrored]) if i < size}
    assert 1.8 <= counts[2_000] / counts[1_000] <= 2.2, counts


def _with_middle(frames: pa.Table, middle: list[np.ndarray | None]) -> pa.Table:
    """``frames`` plus a ``phash_middle`` column: per video its hashes, or None (rows written before it)."""
    values = [h for m, n in zip(middle, _per_video_counts(frames)) for h in (m if m is not None else [None] * n)]
    return frames.append_column("phash_middle", pa.array(
        [None if v is None else np.uint64(v).view(np.int64).item() for v in values], pa.int64()))


def _per_video_counts(frames: pa.Table) -> list[int]:
    ids = frames["video_id"].to_pylist()
    return [ids.count(v) for v in dict.fromkeys(ids)]


def test_middle_hashes_find_what_the_whole_frame_misses():
    rng = np.random.default_rng(4)
    src, other = rng.integers(0, 2**64, (2, 10), dtype=np.uint64)
    banner = rng.integers(0, 2**64, 10, dtype=np.uint64)  # whole-frame hashes moved far by a banner
    mid_src, mid_other = rng.integers(1, 2**64, (2, 10), dtype=np.uint64)
    videos, frames = _tables([("a", 1, "s1", src), ("z", 2, "s9", other), ("b", 3, "s2", banner),
                              ("c", 4, "s3", banner ^ np.uint64(1))])
    # b's middle hashes are a's, 2 bits off; c's frames carry no middle hash (written before the column).
    frames = _with_middle(frames, [mid_src, mid_other, mid_src ^ np.uint64(0b101), None])
    result = find_near_duplicates(videos, frames, ["b", "c", "z"])
    rows = {r["video_id"]: r for r in result.table.to_pylist()}
    assert {v: r["duplicate_of"] for v, r in rows.items()} == {"b": "a", "c": "b"}
    assert rows["b"]["match_frames"] == 1.0 and rows["b"]["kind"] == "near"
    assert result.stats.middle_frames == 30 and result.stats.middle_close_frame_pairs > 0
    plain = find_near_duplicates(videos, frames, ["b", "c", "z"], DuplicateOptions(middle=False))
    assert plain.table.column("video_id").to_pylist() == ["c"]  # b is missed by the whole-frame hashes alone
    tight = find_near_duplicates(videos, frames, ["b"], DuplicateOptions(max_hamming_middle=1))
    assert tight.table.num_rows == 0
    flipped = _with_middle(frames.drop_columns(["phash_middle"]), [mid_src, mid_other, mirror_hash(mid_src), None])
    mirrored = find_near_duplicates(videos, flipped, ["b"]).table.to_pylist()
    assert [(r["duplicate_of"], r["mirrored"]) for r in mirrored] == [("a", True)]


def _with_zoom(frames: pa.Table, zoom: list[np.ndarray | None]) -> pa.Table:
    """``frames`` plus a ``phash_zoom`` column: per video its ``(n, len(ZOOMS))`` hashes, or None."""
    values = [row for z, n in zip(zoom, _per_video_counts(frames))
              for row in (np.asarray(z, np.uint64).view(np.int64).tolist() if z is not None else [None] * n)]
    return frames.append_column("phash_zoom", pa.array(values, pa.list_(pa.int64())))


def _flipped(rng: np.random.Generator, hashes: np.ndarray, bits: int) -> np.ndarray:
    """``hashes`` with ``bits`` distinct random bits flipped in each (a copy's frames differ from
    the original's in different bits; the same bits in every frame would pass or miss all bands at once)."""
    flips = [sum(1 << int(b) for b in rng.choice(64, bits, replace=False)) for _ in hashes]
    return hashes ^ np.array(flips, np.uint64)


def test_zoom_hashes_find_zoomed_copies_either_way_round():
    rng = np.random.default_rng(6)
    src, other, unrelated = rng.integers(0, 2**64, (3, 10), dtype=np.uint64)
    src_zoom, other_zoom = rng.integers(1, 2**64, (2, 10, len(ZOOMS)), dtype=np.uint64)
    zoomed = _flipped(rng, src_zoom[:, 1], 3)  # b: a's picture zoomed ZOOMS[1] times, 3 bits off
    wide = rng.integers(0, 2**64, 10, dtype=np.uint64)  # d: a wider picture of which c is the crop
    videos, frames = _tables([("a", 1, "s1", src), ("z", 2, "s9", other), ("b", 3, "s2", zoomed),
                              ("c", 4, "s3", unrelated), ("d", 5, "s4", wide), ("e", 6, "s5", zoomed ^ np.uint64(1))])
    wide_zoom = rng.integers(1, 2**64, (10, len(ZOOMS)), dtype=np.uint64)
    wide_zoom[:, 0] = _flipped(rng, unrelated, 2)  # d's first zoom view is c's whole frame, 2 bits off
    # b and c carry zoom hashes of their own; e's frames have none (rows written before the column).
    frames = _with_zoom(frames, [src_zoom, other_zoom, rng.integers(1, 2**64, (10, len(ZOOMS)), dtype=np.uint64),
                                 rng.integers(1, 2**64, (10, len(ZOOMS)), dtype=np.uint64), wide_zoom, None])
    result = find_near_duplicates(videos, frames, ["b", "c", "d", "e", "z"])
    rows = {r["video_id"]: r for r in result.table.to_pylist()}
    # b: its whole frames are a's zoom views; d (new, wider) pairs with the earlier crop c; e pairs with b
    # through the whole-frame hash (and with a through its own whole frames against a's zoom views)
    assert {v: r["duplicate_of"] for v, r in rows.items()} == {"b": "a", "d": "c", "e": "a"}
    assert rows["b"]["match_frames"] == 1.0 and rows["b"]["kind"] == "near"
    assert result.stats.zoom_frames == 50 and result.stats.zoom_close_frame_pairs > 0
    plain = find_near_duplicates(videos, frames, ["b", "c", "d", "e", "z"], DuplicateOptions(zoom=False))
    assert {r["video_id"]: r["duplicate_of"] for r in plain.table.to_pylist()} == {"e": "b"}
    tight = find_near_duplicates(videos, frames, ["b"], DuplicateOptions(max_hamming_zoom=2))
    assert tight.table.num_rows == 0
    flipped = frames.set_column(frames.schema.get_field_index("phash"), "phash", pa.array(
        np.concatenate([src, other, mirror_hash(zoomed), unrelated, wide, zoomed]).view(np.int64)))
    mirrored = find_near_duplicates(videos, flipped, ["b"]).table.to_pylist()
    assert [(r["duplicate_of"], r["mirrored"]) for r in mirrored] == [("a", True)]


@pytest.fixture(scope="module")
def overlay_copies():
    """Real peer-media segments (``bench.bench_overlays``): two originals with copies under 30 %
    banners, letterboxed, zoomed about the centre and cropped to 9:16, and four other segments'
    originals, hashed through the job's decode."""
    from bench.bench_overlays import hash_segment
    from bench.real_clips import PEER_MEDIA

    if not PEER_MEDIA.is_dir():
        pytest.skip(f"{PEER_MEDIA} missing (the shared peer media)")
    return [hash_segment(1, "2.35:1", ("banner_top_30", "banner_bottom_30", "letterbox", "zoom_130")),
            hash_segment(6, "16:9", ("banner_bottom_30", "letterbox", "zoom_140", "aspect")),
            *(hash_segment(i, shape, ()) for i, shape in ((0, "2.35:1"), (4, "16:9"), (5, "2.35:1"), (7, "16:9")))]


def test_real_overlay_copies_found_and_different_videos_not_paired(overlay_copies):
    entries = [(f"s{it['segment']}-{name}", h) for it in overlay_copies for name, h in it["hashes"].items()]
    entries.sort(key=lambda e: not e[0].endswith("-original"))  # originals first
    videos, frames = _tables([(vid, DAY_US + k, f"sha-{vid}", np.asarray(h["phash"], np.uint64))
                              for k, (vid, h) in enumerate(entries)])
    frames = _with_middle(frames, [np.asarray(h["phash_middle"], np.uint64) for _, h in entries])
    frames = _with_zoom(frames, [np.asarray(h["phash_zoom"], np.uint64) for _, h in entries])
    ids = [vid for vid, _ in entries]
    found = {r["video_id"]: r["duplicate_of"] for r in find_near_duplicates(videos, frames, ids).table.to_pylist()}
    copies_ = {vid: vid.split("-")[0] + "-original" for vid in ids if not vid.endswith("-original")}
    assert found == copies_  # every copy, paired with its own original; no two segments paired
    plain = find_near_duplicates(videos, frames, ids, DuplicateOptions(middle=False, zoom=False)).table.to_pylist()
    assert {r["video_id"] for r in plain} < set(copies_)  # the whole-frame hash alone misses some
    no_zoom = find_near_duplicates(videos, frames, ids, DuplicateOptions(zoom=False)).table.to_pylist()
    zoomed = {"s1-zoom_130", "s6-zoom_140", "s6-aspect"}
    assert not zoomed & {r["video_id"] for r in no_zoom}  # the zoomed and cropped copies need the zoom hashes
