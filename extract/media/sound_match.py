"""Do two audio fingerprints carry the same recording? Landmark hashes that agree at one offset.

``match_fingerprints(query, other)`` joins the two videos' landmark hashes
(``extract.media.fingerprint``) and histograms the time differences of the agreeing pairs:
the same recording puts many of them at one difference (the offset between the copies),
different audio scatters its few chance agreements. The verdict counts the pairs at the best
offset (give or take one frame, for resampling and frame-phase jitter) and the share of the
query's landmarks, over the matched stretch, that they make up.

Thresholds measured on real music (``tests/test_sounds.py``, 8 ``drascula-music`` tracks, 30 s
each; 41-bit quad landmarks): the same recording under a loud voice-over keeps 32-323 landmarks
at one offset, 12 dB quieter >= 2694, started 7.3 s later >= 349, cut to 5 s (an eighth of a frame
off the original's frame grid) 85-230, a 10 s copy half a frame off the grid 13-201; a different
track reaches at most 1 at any offset (32-bit triples: 2). The hit count separates; the share
(over the matched stretch) keeps a long video's few chance hits from counting, and the matched
stretch must last ``MIN_MATCHED_S``: two recordings that share one identical note or drum
sample agree on many landmarks within a fraction of a second (synthetic tunes rendered
note-identically: 16-22 hits within 0.3 s).

The history search first compares the samples (``fingerprint.sample``, a quarter of the
landmarks): the same 8 tracks keep >= 9 sampled landmarks at the offset under the voice-over,
>= 25 cut to 5 s, >= 100 started later, different tracks <= 1; a pair whose samples agree on
``CANDIDATE_HITS`` at one offset is lined up here on the full fingerprints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.media.fingerprint import FRAME_S, split

MIN_HITS = 10  # landmarks agreeing at one offset for a match (same recording: >= 13; different tracks: <= 1)
MIN_SHARE = 0.01  # ... and at least this share of the query's landmarks over the matched stretch
MIN_MATCHED_S = 2.0  # ... spread over at least this many seconds (one shared note or drum hit spans < 1 s)
OFFSET_SLACK = 1  # frames either side of the best offset that count with it
CANDIDATE_HITS = 3  # sampled landmarks agreeing at one offset for the history search to line a pair up


@dataclass(frozen=True)
class SoundMatch:
    """How ``query`` lines up with ``other``: ``offset_s`` (seconds into ``other`` where the
    query's start falls; negative when the query starts before it), ``hits`` (landmarks
    agreeing there), ``matched_s`` (span of the query the hits cover, seconds), ``share``
    (hits over the query's landmarks in that span) and ``same`` (the verdict)."""

    offset_s: float
    hits: int
    matched_s: float
    share: float

    @property
    def same(self) -> bool:
        return self.passes(MIN_HITS, MIN_SHARE, MIN_MATCHED_S)

    def passes(self, min_hits: int, min_share: float, min_matched_s: float) -> bool:
        """The verdict under other thresholds (``extract.index.sounds.SoundOptions``)."""
        return self.hits >= min_hits and self.share >= min_share and self.matched_s >= min_matched_s


NO_MATCH = SoundMatch(0.0, 0, 0.0, 0.0)


def match_fingerprints(query: np.ndarray, other: np.ndarray) -> SoundMatch:
    """Line up two videos' landmark codes ``(n,) int64`` and ``(m,) int64`` (module doc)."""
    q_hash, q_time = split(query)
    o_hash, o_time = split(other)
    if not len(q_hash) or not len(o_hash):
        return NO_MATCH
    order = np.argsort(o_hash, kind="stable")
    o_hash, o_time = o_hash[order], o_time[order]
    lo = np.searchsorted(o_hash, q_hash, "left")
    hi = np.searchsorted(o_hash, q_hash, "right")
    counts = hi - lo
    q_index = np.repeat(np.arange(len(q_hash)), counts)
    positions = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    return align(q_time, q_index, o_time[positions] - q_time[q_index])


def align(q_time: np.ndarray, q_index: np.ndarray, offsets: np.ndarray) -> SoundMatch:
    """The verdict on one pair of videos from their agreeing landmarks: ``q_time`` ``(n,)`` the
    query's landmark frames (all of them), ``q_index`` ``(k,)`` which query landmark each
    agreement is and ``offsets`` ``(k,)`` its frame in the other video minus its frame in the
    query. ``match_fingerprints`` and the history search (``extract.index.sounds``) both end here."""
    if not len(offsets):
        return NO_MATCH
    offsets = np.asarray(offsets, np.int64)
    base = offsets.min()
    histogram = np.bincount(offsets - base)
    window = np.convolve(histogram, np.ones(2 * OFFSET_SLACK + 1, np.int64), mode="same")
    best = int(np.argmax(window))
    near = np.abs(offsets - base - best) <= OFFSET_SLACK
    matched = np.unique(q_index[near])  # one query landmark counts once, however many copies it meets
    hits = len(matched)
    first, last = q_time[matched].min(), q_time[matched].max()
    in_span = int(((q_time >= first) & (q_time <= last)).sum())
    return SoundMatch(offset_s=float((best + base) * FRAME_S), hits=hits,
                      matched_s=float((last - first) * FRAME_S), share=hits / max(in_span, 1))
