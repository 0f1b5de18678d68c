"""Compiled kernels of the near-duplicate search (numba): one LSH band's join, the frame check.

``extract.index.near_duplicates`` does the bookkeeping (ranks, bands, stats, confirmation) in
numpy and hands these loops the arrays. They are loops because their numpy form is a dozen
passes over every colliding pair (``repeat``, ``searchsorted``, gathers, temporaries): the
1 M-video benchmark spent 76 s there, 10 s now (``bench/RESULTS.md``). Compiled, one band is
one pass over the history against a bit filter of the new frames' band values, a hash-table
look-up for the ~6 % that pass, and one popcount per colliding pair. Kernels release the GIL
(``nogil``), so bands run on threads in parallel.

Compiled on first use and cached next to this file (numba ``cache=True``; a read-only install
falls back to numba's per-user cache folder), so only the first search on a machine pays the
few seconds of compilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FILTER_BITS = 26  # band values are first tested against a 2^26-bit (8 MiB) filter: ~1 % false hits at 800 k keys
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _popcount(x):
    """Set bits of a uint64 (SWAR; numba has no portable popcount intrinsic)."""
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def band_join(hashes: np.ndarray, owner: np.ndarray, q_hash: np.ndarray, q_owner: np.ndarray,
              q_mirrored: np.ndarray, mask: np.uint64, multiplier: np.uint64, max_hamming: int,
              max_bucket: int) -> tuple[np.ndarray, int, int, int]:
    """One band: history frames and query frames whose hashes agree on the bits of ``mask``.

    ``hashes`` ``(n,) uint64`` and ``owner`` ``(n,) int32`` (video rank) are every frame;
    ``q_hash``, ``q_owner``, ``q_mirrored`` ``(m,)`` the queries (the new videos' frames and
    their mirrored readings); ``multiplier`` is odd (the band's multiply-shift constant). A
    band value held by more than ``max_bucket`` frames is skipped (a logo card would pair every
    video that shows it). A colliding pair counts when the frame's video is earlier than the
    query's, and is close when the two hashes are at most ``max_hamming`` bits apart.

    Returns ``(codes, collisions, hot_values, close_pairs)``: ``codes`` the sorted distinct
    ``new_rank << 32 | earlier_rank << 1 | mirrored`` (int64) of the close pairs.
    """
    q_hash = np.ascontiguousarray(q_hash, np.uint64)
    mask, multiplier = np.uint64(mask), np.uint64(multiplier)
    q_key = (q_hash & mask) * multiplier  # wraps mod 2^64
    # The queries' order by key is sorted here: numpy's sort is faster than a compiled one.
    return _band_join(np.ascontiguousarray(hashes, np.uint64), np.ascontiguousarray(owner, np.int32), q_hash,
                      np.ascontiguousarray(q_owner, np.int32), np.ascontiguousarray(q_mirrored, np.bool_),
                      q_key, np.argsort(q_key), mask, multiplier, max_hamming, max_bucket)


@njit(cache=True, nogil=True)
def _band_join(hashes, owner, q_hash, q_owner, q_mirrored, q_key, order, mask, multiplier, max_hamming, max_bucket):
    """``band_join`` compiled, given ``q_key = (q_hash & mask) * multiplier`` and its argsort ``order``."""
    m = q_hash.shape[0]
    # Multiplying by an odd constant is a bijection of uint64, so the band value's product
    # ``key`` identifies it: queries sorted by key form one run per band value, and each
    # record (key, hash, owner << 1 | mirrored) is one cache line away from the next.
    record = np.empty((m, 3), np.uint64)
    for j in range(m):
        q = order[j]
        record[j, 0] = q_key[q]
        record[j, 1] = q_hash[q]
        record[j, 2] = (np.uint64(q_owner[q]) << _ONE) | np.uint64(q_mirrored[q])
    runs = 0
    for j in range(m):
        if j == 0 or record[j, 0] != record[j - 1, 0]:
            runs += 1
    # Open-addressing table (load <= 1/2) of each run's key and first record, slot = the key's
    # top bits; the key's top FILTER_BITS also index the bit filter.
    table_bits = 10
    while (1 << table_bits) < 2 * runs and table_bits < FILTER_BITS:
        table_bits += 1
    table_key = np.zeros(1 << table_bits, np.uint64)
    table_run = np.full(1 << table_bits, -1, np.int32)
    slot_mask = np.uint64((1 << table_bits) - 1)
    bit_filter = np.zeros(1 << (FILTER_BITS - 6), np.uint64)
    table_shift = np.uint64(64 - table_bits)
    filter_shift = np.uint64(64 - FILTER_BITS)
    low6 = np.uint64(63)
    six = np.uint64(6)
    for j in range(m):
        if j > 0 and record[j, 0] == record[j - 1, 0]:
            continue
        h = record[j, 0]
        f = h >> filter_shift
        bit_filter[f >> six] |= _ONE << (f & low6)
        s = h >> table_shift
        while table_run[s] >= 0:
            s = (s + _ONE) & slot_mask
        table_key[s] = h
        table_run[s] = j
    # The scan, in three loops so that the table's cache misses overlap: a loop whose next load
    # waits on a branch over the previous one pays each miss in full (one band over 20 M frames
    # and 800 k queries: 0.34 s against 0.45 s in one loop). Buffers have room for the worst
    # case (every frame passes): pages are only touched as they are written, and growing a
    # buffer inside the loop cost more than the scan itself (0.72 s against 0.29 s).
    n = hashes.shape[0]
    cand_frame = np.empty(n, np.int64)
    cand_key = np.empty(n, np.uint64)
    c = 0
    for i in range(n):  # 1: the frames whose key passes the bit filter (~6 % at 800 k queries)
        h = (hashes[i] & mask) * multiplier
        f = h >> filter_shift
        if (bit_filter[f >> six] >> (f & low6)) & _ONE == _ONE:
            cand_frame[c] = i
            cand_key[c] = h
            c += 1
    slot_run = np.empty(c, np.int32)
    slot_key = np.empty(c, np.uint64)
    for k in range(c):  # 2: their home slots, loads independent of each other
        s = cand_key[k] >> table_shift
        slot_run[k] = table_run[s]
        slot_key[k] = table_key[s]
    hit_frame = cand_frame  # 3: the matches, written over the candidates already read
    hit_run = slot_run
    hits = 0
    per_run = np.zeros(m, np.int64)  # indexed by the run's first record
    for k in range(c):
        j = slot_run[k]
        if j >= 0 and slot_key[k] != cand_key[k]:  # home slot taken by another key: probe on
            s = (cand_key[k] >> table_shift) + _ONE
            j = -1
            while table_run[s & slot_mask] >= 0:
                if table_key[s & slot_mask] == cand_key[k]:
                    j = table_run[s & slot_mask]
                    break
                s += _ONE
        if j >= 0:
            hit_frame[hits] = cand_frame[k]
            hit_run[hits] = j
            hits += 1
            per_run[j] += 1
    # Pairs to check: each non-hot hit against every query of its run.
    run_end = np.empty(m, np.int64)  # indexed by the run's first record
    j = m
    while j > 0:
        end = j
        j -= 1
        while j > 0 and record[j - 1, 0] == record[j, 0]:
            j -= 1
        run_end[j] = end
    hot = 0
    pairs = 0
    for j in range(m):
        if per_run[j] > max_bucket:
            hot += 1
    for k in range(hits):
        j = hit_run[k]
        if per_run[j] <= max_bucket:
            pairs += run_end[j] - j
    codes = np.empty(pairs, np.int64)
    close = 0
    collisions = 0
    limit = np.uint64(max_hamming)
    for k in range(hits):
        first = hit_run[k]
        if per_run[first] > max_bucket:
            continue
        frame_hash = hashes[hit_frame[k]]
        frame_owner = np.uint64(owner[hit_frame[k]])
        for j in range(first, run_end[first]):
            if frame_owner < record[j, 2] >> _ONE:
                collisions += 1
                if _popcount(frame_hash ^ record[j, 1]) <= limit:
                    codes[close] = np.int64(((record[j, 2] >> _ONE) << np.uint64(32)) | (frame_owner << _ONE)
                                            | (record[j, 2] & _ONE))
                    close += 1
    return np.unique(codes[:close]), collisions, hot, close


@njit(cache=True, nogil=True)
def match_fractions(mirrored, f_views, f_views_mirror, f_middle, f_middle_mirror, q_start, q_n, h_start, h_n,
                    max_hamming, max_hamming_middle, max_hamming_zoom):
    """Per pair: share of the new video's frames that match some frame of the earlier one
    (``float32``; NaN when the new video has no frames): whole-frame hashes within
    ``max_hamming`` bits, or middle hashes within ``max_hamming_middle`` (0: the frame has none),
    or any other pair of views within ``max_hamming_zoom``.

    ``f_views`` / ``f_views_mirror`` ``(n, v) uint64``: each frame's views, column 0 its
    whole-frame hash, then its zoom hashes (``v`` = 1 without them; 0 = none); ``f_middle`` /
    ``f_middle_mirror`` ``(n,) uint64``. Frames are grouped by video; pair ``p`` compares the new
    video's frames ``q_start[p]:q_start[p] + q_n[p]`` (mirrored readings when ``mirrored[p]``)
    with the earlier video's ``h_start[p]:h_start[p] + h_n[p]``.
    """
    out = np.full(mirrored.shape[0], np.nan, np.float32)
    limit = np.uint64(max_hamming)
    middle_limit = np.uint64(max_hamming_middle)
    zoom_limit = np.uint64(max_hamming_zoom)
    zero = np.uint64(0)
    views = f_views.shape[1]
    for p in range(mirrored.shape[0]):
        if q_n[p] == 0:
            continue
        matched = 0
        for a in range(q_start[p], q_start[p] + q_n[p]):
            query = f_views_mirror[a] if mirrored[p] else f_views[a]
            middle = f_middle_mirror[a] if mirrored[p] else f_middle[a]
            for b in range(h_start[p], h_start[p] + h_n[p]):
                close = _popcount(query[0] ^ f_views[b, 0]) <= limit or (
                    middle != zero and f_middle[b] != zero and _popcount(middle ^ f_middle[b]) <= middle_limit)
                for i in range(views):
                    if close:
                        break
                    if query[i] == zero:
                        continue
                    for j in range(views):
                        if (i > 0 or j > 0) and f_views[b, j] != zero and \
                                _popcount(query[i] ^ f_views[b, j]) <= zoom_limit:
                            close = True
                            break
                if close:
                    matched += 1
                    break
        out[p] = matched / q_n[p]
    return out
