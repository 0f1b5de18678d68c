"""The compiled kernels of the near-duplicate search against brute force: every colliding pair
of a band (runs of equal band values, probe chains, band value 0, hot values skipped), and
the frame check's match fractions (whole-frame and middle hashes)."""

from __future__ import annotations

import numpy as np
import pytest

from extract.index.hash_join import band_join, match_fractions
from extract.index.near_duplicates import DuplicateOptions, _Bands
from extract.media.phash import hamming, mirror_hash


def _brute_band(hashes, owner, q_hash, q_owner, q_mirrored, mask, max_hamming, max_bucket):
    """``band_join``'s result from the definition: every (frame, query) pair, no table."""
    values = hashes & mask
    distinct, counts = np.unique(values, return_counts=True)
    hot_values = distinct[counts > max_bucket]
    q_values = q_hash & mask
    hot = len(np.intersect1d(hot_values, q_values))
    same = (values[:, None] == q_values[None, :]) & ~np.isin(values, hot_values)[:, None]
    earlier = owner[:, None] < q_owner[None, :]
    close_ = hamming(hashes[:, None], q_hash[None, :]) <= max_hamming
    i, q = np.nonzero(same & earlier & close_)
    codes = (q_owner[q].astype(np.int64) << 32) | (owner[i].astype(np.int64) << 1) | q_mirrored[q].astype(np.int64)
    return np.unique(codes), int((same & earlier).sum()), hot, len(i)


@pytest.mark.parametrize("band_bits,max_bucket", [(24, 1000), (10, 1000), (8, 40), (12, 3)])
def test_band_join_equals_brute_force(band_bits, max_bucket):
    rng = np.random.default_rng(band_bits * 100 + max_bucket)
    n_videos, per_video = 400, 8
    owner = np.repeat(np.arange(n_videos, dtype=np.int32), per_video)
    hashes = rng.integers(0, 2**64, len(owner), dtype=np.uint64)
    # Copies: frames of early videos a few bits off in later ones, a repeated card, zeros.
    hashes[200 * per_video:260 * per_video] = hashes[:60 * per_video] ^ np.uint64(0b1011)
    hashes[::37] = hashes[5]
    hashes[::53] = 0
    new = owner >= 300
    q_hash = np.concatenate([hashes[new], mirror_hash(hashes[new])])
    q_owner = np.concatenate([owner[new], owner[new]])
    q_mirrored = np.repeat([False, True], new.sum())
    bands = _Bands.make(DuplicateOptions(band_bits=band_bits), 4)
    totals = np.zeros(3, int)
    for band in range(4):
        mask, multiplier = bands.masks[band], bands.multipliers[band]
        got = band_join(hashes, owner, q_hash, q_owner, q_mirrored, mask, multiplier, 12, max_bucket)
        want = _brute_band(hashes, owner, q_hash, q_owner, q_mirrored, mask, 12, max_bucket)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:] == want[1:], (band, got[1:], want[1:])
        totals += want[1:]
    collisions, hot, close = totals
    assert collisions > 0 and (close > 0 if max_bucket >= 1000 else hot > 0)  # the case is not empty


def test_band_join_probe_chains_with_a_tiny_table():
    # 8-bit bands over 2,000 queries: most band values repeat (runs of records), and with a
    # table of at least 1,024 slots over 256 values home slots collide: the probe path runs.
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64, 3_000, dtype=np.uint64)
    owner = np.arange(3_000, dtype=np.int32) // 3
    q = slice(1_000, 3_000)
    bands = _Bands.make(DuplicateOptions(band_bits=8), 1)
    args = (hashes, owner, hashes[q].copy(), owner[q].copy(), np.zeros(2_000, bool), bands.masks[0],
            bands.multipliers[0], 30, 10**6)
    got, want = band_join(*args), _brute_band(*args[:6], 30, 10**6)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1:] == want[1:]


def test_match_fractions_equal_brute_force():
    rng = np.random.default_rng(3)
    f_hash = rng.integers(0, 2**64, 60, dtype=np.uint64)
    f_hash[20:30] = f_hash[:10] ^ np.uint64(0b111)  # video 2 copies video 0
    f_hash[30:35] = mirror_hash(f_hash[:5])  # video 3 mirrors half of video 0
    # Middle hashes: video 1 matches video 0 through them only (6 of 10 frames), one frame has none.
    f_middle = rng.integers(1, 2**64, 60, dtype=np.uint64)
    f_middle[10:16] = f_middle[:6] ^ np.uint64(0b11)
    f_middle[16] = 0
    f_middle[6] = 0
    f_middle_mirror = np.where(f_middle != 0, mirror_hash(f_middle), np.uint64(0))
    # Zoom views: video 4's whole frames are 7 of video 1's first zoom views (a zoomed copy), and
    # video 1's second zoom views are 4 of video 4's first ones (zoom on zoom); one view missing.
    zoom = rng.integers(1, 2**64, (60, 2), dtype=np.uint64)
    f_hash[40:47] = zoom[10:17, 0] ^ np.uint64(0b1111)
    zoom[17:19, 1] = zoom[47:49, 0]
    zoom[12, 0] = 0
    views = np.concatenate([f_hash[:, None], zoom], axis=1)
    views_mirror = np.where(views != 0, mirror_hash(views), np.uint64(0))
    starts, sizes = np.array([0, 10, 20, 30, 40, 60]), np.array([10, 10, 10, 10, 20, 0])
    pairs = np.array([(2, 0, 0), (3, 0, 1), (3, 0, 0), (1, 0, 0), (5, 0, 0), (4, 1, 0), (1, 4, 0)])
    args = (starts[pairs[:, 0]], sizes[pairs[:, 0]], starts[pairs[:, 1]], sizes[pairs[:, 1]])
    got = match_fractions(pairs[:, 2] == 1, views, views_mirror, f_middle, f_middle_mirror, *args, 3, 2, 4)
    want = []
    for new, old, mirrored in pairs:
        rows, old_rows = slice(starts[new], starts[new] + sizes[new]), slice(starts[old], starts[old] + sizes[old])
        q, qm = (views_mirror[rows], f_middle_mirror[rows]) if mirrored else (views[rows], f_middle[rows])
        h, hm = views[old_rows], f_middle[old_rows]
        close = (hamming(q[:, None, 0], h[None, :, 0]) <= 3) | (
            (hamming(qm[:, None], hm[None, :]) <= 2) & (qm[:, None] != 0) & (hm[None, :] != 0))
        for i in range(3):
            for j in range(3):
                if i or j:
                    close |= ((hamming(q[:, None, i], h[None, :, j]) <= 4) & (q[:, None, i] != 0)
                              & (h[None, :, j] != 0))
        want.append(close.any(axis=1).mean() if len(q) else np.nan)
    np.testing.assert_allclose(got, np.array(want, np.float32))
    assert got[0] == 1.0 and got[1] == 0.5 and np.isnan(got[4])
    assert got[3] == pytest.approx(0.6)  # through the middle hashes alone
    # 6 frames whole/zoom (the seventh view is 0), 2 zoom/zoom: either direction
    assert got[5] == pytest.approx(8 / 20) and got[6] == pytest.approx(8 / 10)
    without = match_fractions(pairs[:, 2] == 1, views[:, :1].copy(), views_mirror[:, :1].copy(),
                              np.zeros(60, np.uint64), np.zeros(60, np.uint64), *args, 3, 2, 4)
    assert without[3] == 0.0 and without[0] == 1.0 and without[5] == 0.0
