"""Compiled kernels of the same-sound search (numba): the history's landmarks against the day's.

``extract.index.sounds`` keeps the bookkeeping (ranks, chunks, scoring) in numpy; these are the
two loops over every landmark. ``probe`` is one pass over a chunk of the history's landmark
codes: a bit filter of the new day's hashes rejects almost all of them (at ``BITS_PER_KEY`` filter
bits per distinct day hash, about 3 % of the history's hashes that the day lacks pass), a
binary search over the day's sorted distinct hashes finds the rest. ``expand``
turns each history landmark that met the day into its agreements with the day's landmarks of
that hash (only those of later videos), each with its time offset; the search calls both once
per history chunk, so what they return is one chunk's.

Compiled on first use and cached next to this file (numba ``cache=True``), like
``extract.index.hash_join``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from extract.media.fingerprint import TIME_BITS

BITS_PER_KEY = 32  # the filter has the next power of two >= 32 bits per distinct day hash: ~3 % false passes
MAX_FILTER_BITS = 31  # at most 2^31 bits (256 MiB), reached past 67 M distinct hashes
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: multiply-shift spreads the hashes over the filter
_TIME_MASK = (1 << TIME_BITS) - 1


@dataclass(frozen=True)
class DayIndex:
    """The new day's landmarks by hash: ``keys`` ``(k,) int64`` the distinct hashes, sorted;
    ``runs`` ``(k + 1,) int64``: the landmarks of ``keys[i]`` are ``order[runs[i]:runs[i + 1]]``
    (indices into the day's landmark arrays); ``bit_filter`` ``(2^filter_bits / 64,) uint64``."""

    keys: np.ndarray
    runs: np.ndarray
    order: np.ndarray
    bit_filter: np.ndarray
    filter_bits: int

    @classmethod
    def build(cls, hashes: np.ndarray) -> "DayIndex":
        """Index the day's landmark hashes ``(m,) int64``."""
        hashes = np.asarray(hashes, np.int64)
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        first = np.ones(len(sorted_hashes), bool)
        first[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
        starts = np.flatnonzero(first)
        keys = sorted_hashes[starts]
        runs = np.append(starts, len(sorted_hashes)).astype(np.int64)
        filter_bits = int(min(MAX_FILTER_BITS, max(16, np.ceil(np.log2(max(1, len(keys)) * BITS_PER_KEY)))))
        return cls(keys, runs, order.astype(np.int64), _filter(keys, filter_bits), filter_bits)

    def probe(self, codes: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``probe`` of history ``codes`` ``(n,) int64`` of videos ``owner`` ``(n,) int32`` against this day."""
        return probe(np.ascontiguousarray(codes, np.int64), np.ascontiguousarray(owner, np.int32), self.keys,
                     self.bit_filter, self.filter_bits)


@njit(cache=True, nogil=True)
def _filter(keys, filter_bits):
    words = np.zeros(max(1, 1 << (filter_bits - 6)), np.uint64)
    shift = np.uint64(64 - filter_bits)
    for i in range(keys.shape[0]):
        f = (np.uint64(keys[i]) * _MULTIPLIER) >> shift
        words[f >> np.uint64(6)] |= np.uint64(1) << (f & np.uint64(63))
    return words


@njit(cache=True, nogil=True)
def probe(codes, owner, keys, bit_filter, filter_bits):
    """History landmarks ``codes`` ``(n,) int64`` (``hash << TIME_BITS | frame``) of videos of
    rank ``owner`` ``(n,) int32`` (-1: not searched) whose hash is one of the day's ``keys``.

    Returns ``(key, owner, frame, passed)``: ``(h,) int32`` each, the index into ``keys``, the
    video rank and the frame of each such landmark, and how many passed the filter."""
    n = codes.shape[0]
    out_key = np.empty(n, np.int32)
    out_owner = np.empty(n, np.int32)
    out_time = np.empty(n, np.int32)
    shift = np.uint64(64 - filter_bits)
    hits = 0
    passed = 0
    k = keys.shape[0]
    for i in range(n):
        if owner[i] < 0:
            continue
        h = codes[i] >> TIME_BITS
        f = (np.uint64(h) * _MULTIPLIER) >> shift
        if (bit_filter[f >> np.uint64(6)] >> (f & np.uint64(63))) & np.uint64(1) == np.uint64(0):
            continue
        passed += 1
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < h:
                lo = mid + 1
            else:
                hi = mid
        if lo < k and keys[lo] == h:
            out_key[hits] = lo
            out_owner[hits] = owner[i]
            out_time[hits] = codes[i] & _TIME_MASK
            hits += 1
    return out_key[:hits].copy(), out_owner[:hits].copy(), out_time[:hits].copy(), passed


@njit(cache=True, nogil=True)
def expand(hit_key, hit_owner, hit_time, runs, order, q_owner, q_time, max_bucket):
    """Agreements of the history landmarks that met the day (``probe``'s ``key``, ``owner``,
    ``frame``) with the day's landmarks of their hash (``DayIndex.runs``/``order``; ``q_owner``
    ``(m,) int32`` video rank and ``q_time`` ``(m,) int32`` frame of each day landmark), kept
    when the day landmark's video is later than the history one's. A hash met by more than
    ``max_bucket`` of these history landmarks (one chunk's) is skipped (a test tone, a common drum sample: it would
    pair every video that has it).

    Returns ``(pair, q_index, offset, hot)``: ``(p,) int64`` ``day rank << 32 | history rank``,
    ``(p,) int64`` the day landmark, ``(p,) int32`` history frame minus day frame, and how
    many hashes were skipped."""
    k = runs.shape[0] - 1
    per_key = np.zeros(k, np.int64)
    for i in range(hit_key.shape[0]):
        per_key[hit_key[i]] += 1
    hot = 0
    for j in range(k):
        if per_key[j] > max_bucket:
            hot += 1
    total = 0
    for i in range(hit_key.shape[0]):
        j = hit_key[i]
        if per_key[j] <= max_bucket:
            for r in range(runs[j], runs[j + 1]):
                if q_owner[order[r]] > hit_owner[i]:
                    total += 1
    pair = np.empty(total, np.int64)
    q_index = np.empty(total, np.int64)
    offset = np.empty(total, np.int32)
    p = 0
    for i in range(hit_key.shape[0]):
        j = hit_key[i]
        if per_key[j] > max_bucket:
            continue
        for r in range(runs[j], runs[j + 1]):
            q = order[r]
            if q_owner[q] > hit_owner[i]:
                pair[p] = (np.int64(q_owner[q]) << 32) | np.int64(hit_owner[i])
                q_index[p] = q
                offset[p] = hit_time[i] - q_time[q]
                p += 1
    return pair, q_index, offset, hot
