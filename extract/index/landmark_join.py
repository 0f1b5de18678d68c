"""Compiled kernels of the same-sound search (numba): the history's sampled landmarks against the day's.

``extract.index.sounds`` keeps the bookkeeping (ranks, chunks, scoring) in numpy; these are the
loops over every landmark. ``probe`` is one pass over a chunk of the history's landmark codes
(``key << TIME_BITS | frame``): a bit filter of the new day's keys rejects almost all of them
(at ``BITS_PER_KEY`` filter bits per distinct day key, about 3 % of the history's keys that the
day lacks pass), a binary search over the day's sorted distinct keys finds the rest.
``pair_keys`` turns each history landmark that met the day into its agreements with the day's
landmarks of that key (only those of later videos), as the video pair of each; ``expand`` gives
the agreements of the pairs with enough of them, each with its time offset. The search calls
them once per history chunk, so what they return is one chunk's.

Compiled on first use and cached next to this file (numba ``cache=True``), like
``extract.index.hash_join``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from extract.media.fingerprint import TIME_BITS

BITS_PER_KEY = 32  # the filter has the next power of two >= 32 bits per distinct day key: ~3 % false passes
MAX_FILTER_BITS = 31  # at most 2^31 bits (256 MiB), reached past 67 M distinct keys
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: multiply-shift spreads the keys over the filter


@dataclass(frozen=True)
class DayIndex:
    """The new day's landmarks by key: ``keys`` ``(k,) int64`` the distinct keys, sorted;
    ``runs`` ``(k + 1,) int64``: the landmarks of ``keys[i]`` are ``order[runs[i]:runs[i + 1]]``
    (indices into the day's landmark arrays); ``bit_filter`` ``(2^filter_bits / 64,) uint64``."""

    keys: np.ndarray
    runs: np.ndarray
    order: np.ndarray
    bit_filter: np.ndarray
    filter_bits: int

    @classmethod
    def build(cls, landmark_keys: np.ndarray) -> "DayIndex":
        """Index the day's landmark keys ``(m,) int64``."""
        landmark_keys = np.asarray(landmark_keys, np.int64)
        order = np.argsort(landmark_keys, kind="stable")
        sorted_keys = landmark_keys[order]
        first = np.ones(len(sorted_keys), bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        starts = np.flatnonzero(first)
        keys = sorted_keys[starts]
        runs = np.append(starts, len(sorted_keys)).astype(np.int64)
        filter_bits = int(min(MAX_FILTER_BITS, max(16, np.ceil(np.log2(max(1, len(keys)) * BITS_PER_KEY)))))
        return cls(keys, runs, order.astype(np.int64), _filter(keys, filter_bits), filter_bits)

    def probe(self, codes: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``probe`` of history ``codes`` ``(n,) int64`` of videos ``owner`` ``(n,) int32`` against this day."""
        return probe(np.ascontiguousarray(codes, np.int64), np.ascontiguousarray(owner, np.int32), self.keys,
                     self.bit_filter, self.filter_bits, TIME_BITS)


@njit(cache=True, nogil=True)
def _filter(keys, filter_bits):
    words = np.zeros(max(1, 1 << (filter_bits - 6)), np.uint64)
    shift = np.uint64(64 - filter_bits)
    for i in range(keys.shape[0]):
        f = (np.uint64(keys[i]) * _MULTIPLIER) >> shift
        words[f >> np.uint64(6)] |= np.uint64(1) << (f & np.uint64(63))
    return words


@njit(cache=True, nogil=True)
def probe(codes, owner, keys, bit_filter, filter_bits, time_bits):
    """History landmarks ``codes`` ``(n,) int64`` (``key << time_bits | frame``) of videos of
    rank ``owner`` ``(n,) int32`` (-1: not searched) whose key is one of the day's ``keys``.
    ``time_bits`` is an argument, not a global: numba's cache would keep a compiled global
    after ``fingerprint.TIME_BITS`` changed.

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
        h = codes[i] >> time_bits
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
            out_time[hits] = codes[i] & ((np.int64(1) << time_bits) - 1)
            hits += 1
    return out_key[:hits].copy(), out_owner[:hits].copy(), out_time[:hits].copy(), passed


@njit(cache=True, nogil=True)
def _kept_keys(hit_key, k, max_bucket):
    """Which of the ``k`` day keys are met by at most ``max_bucket`` of these history landmarks
    ``(k,) bool``, and how many are not."""
    per_key = np.zeros(k, np.int64)
    for i in range(hit_key.shape[0]):
        per_key[hit_key[i]] += 1
    kept = per_key <= max_bucket
    return kept, k - int(kept.sum())


@njit(cache=True, nogil=True)
def pair_keys(hit_key, hit_owner, runs, order, q_owner, max_bucket):
    """The video pair of every agreement of the history landmarks that met the day (``probe``'s
    ``key``, ``owner``) with the day's landmarks of their key (``DayIndex.runs``/``order``;
    ``q_owner`` ``(m,) int32`` video rank of each day landmark), kept when the day landmark's
    video is later than the history one's. A key met by more than ``max_bucket`` of these
    history landmarks (one chunk's) is skipped (a test tone, a common drum sample: it would pair
    every video that has it).

    Returns ``(pair, hot)``: ``(p,) int64`` ``day rank << 32 | history rank``, one per agreement,
    and how many keys were skipped. Only the pair, 8 bytes per agreement: almost all agreements
    are chance ones, one or two per pair, and ``expand`` details only the pairs with enough."""
    kept, hot = _kept_keys(hit_key, runs.shape[0] - 1, max_bucket)
    total = 0
    for i in range(hit_key.shape[0]):
        j = hit_key[i]
        if kept[j]:
            for r in range(runs[j], runs[j + 1]):
                if q_owner[order[r]] > hit_owner[i]:
                    total += 1
    pair = np.empty(total, np.int64)
    p = 0
    for i in range(hit_key.shape[0]):
        j = hit_key[i]
        if kept[j]:
            for r in range(runs[j], runs[j + 1]):
                q = order[r]
                if q_owner[q] > hit_owner[i]:
                    pair[p] = (np.int64(q_owner[q]) << 32) | np.int64(hit_owner[i])
                    p += 1
    return pair, hot


@njit(cache=True, nogil=True)
def expand(hit_key, hit_owner, hit_time, runs, order, q_owner, q_time, max_bucket, wanted):
    """The agreements of ``pair_keys`` (same arguments, plus ``hit_time`` the history landmarks'
    frames and ``q_time`` ``(m,) int32`` the day landmarks' frames) of the video pairs in
    ``wanted`` ``(w,) int64`` (sorted, distinct).

    Returns ``(pair, q_index, offset)``: ``(a,) int64`` the pair, ``(a,) int64`` the day
    landmark and ``(a,) int32`` history frame minus day frame of each."""
    kept, _ = _kept_keys(hit_key, runs.shape[0] - 1, max_bucket)
    n_ranks = 0
    for w in range(wanted.shape[0]):
        n_ranks = max(n_ranks, np.int64(wanted[w] & 0xFFFFFFFF) + 1)
    earlier = np.zeros(n_ranks, np.bool_)  # history ranks of some wanted pair: most hits are not
    for w in range(wanted.shape[0]):
        earlier[wanted[w] & 0xFFFFFFFF] = True
    out_pair = np.empty(16, np.int64)
    out_q = np.empty(16, np.int64)
    out_offset = np.empty(16, np.int32)
    p = 0
    for i in range(hit_key.shape[0]):
        j = hit_key[i]
        if not kept[j] or hit_owner[i] >= n_ranks or not earlier[hit_owner[i]]:
            continue
        for r in range(runs[j], runs[j + 1]):
            q = order[r]
            if q_owner[q] <= hit_owner[i]:
                continue
            key = (np.int64(q_owner[q]) << 32) | np.int64(hit_owner[i])
            at = np.searchsorted(wanted, key)
            if at == wanted.shape[0] or wanted[at] != key:
                continue
            if p == out_pair.shape[0]:
                out_pair = np.concatenate((out_pair, np.empty(p, np.int64)))
                out_q = np.concatenate((out_q, np.empty(p, np.int64)))
                out_offset = np.concatenate((out_offset, np.empty(p, np.int32)))
            out_pair[p] = key
            out_q[p] = q
            out_offset[p] = hit_time[i] - q_time[q]
            p += 1
    return out_pair[:p].copy(), out_q[:p].copy(), out_offset[:p].copy()
