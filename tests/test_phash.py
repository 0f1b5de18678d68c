"""pHash of frames: the standard algorithm's bits, Hamming distances, and robustness on real
transformed copies made with PyAV (``tests/copies.py``), hashed from the frames the decode
stage produces (224 x 224 CLIP centre crop, 1 fps).

Measured (per frame of the copy: distance to the nearest original frame; 8 frames, 4 for 2x):

| copy | CLIP 224 crop | full frame (squashed) |
|---|---|---|
| untouched re-upload | 0 all | 0 all |
| re-encode CRF 35 | 0-2 | 0 |
| 720p -> 360p | 0-2 | 0-2 |
| 5 % crop (left, top) | 4-16 (7 of 8 <= 12) | 2-10 |
| text banner (bottom 15 %) | 6-14 (7 of 8 <= 12) | 8-20 |
| 2x speed | 0-2 | 0 |
| mirrored, plain hash | 10-28 | 14-26 |
| mirrored, via ``mirror_hash`` | 0-6 | 0-4 |
| frames of 200 distinct clips | min 8, 0.1 % quantile 18 | |

Neither input wins everywhere (the crop is kinder to the full frame, the banner to the crop),
so hashing the CLIP frames the decoder already has is enough; no second thumbnail is kept.
"""

from __future__ import annotations

import numpy as np
import pytest

import copies
from extract.config import Config
from extract.media.video import decode_video
from extract.media.phash import (FLAT_HASH, ODD_COLUMN_MASK, hamming, low_frequencies, mirror_hash,
                                 phash_frames)
from extract.media.geometry import PreprocessSpec

CLIP_SPEC = PreprocessSpec(224, "bicubic", "shortest", (0.48145466, 0.4578275, 0.40821073),
                           (0.26862954, 0.26130258, 0.27577711))


@pytest.fixture(scope="module")
def copy_hashes(tmp_path_factory) -> dict[str, np.ndarray]:
    paths = copies.make_copies(tmp_path_factory.mktemp("copies"))
    return {name: phash_frames(decode_video(str(p), Config(), CLIP_SPEC, audio=False).frames)
            for name, p in paths.items()}


def _nearest(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return hamming(query[:, None], reference[None, :]).min(axis=1)


def test_bits_follow_the_definition():
    """Against a direct float64 DCT of PIL's thumbnail: bit i (MSB first) = coefficient i > median."""
    from PIL import Image

    rng = np.random.default_rng(3)
    frames = np.stack([copies.shapes_frame(s, 0.0, 96, 64) for s in range(6)] +
                      [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)])
    got = phash_frames(frames)
    n = np.arange(32)
    dct = 2 * np.cos(np.pi * np.outer(np.arange(32), 2 * n + 1) / 64)  # scipy's unnormalised DCT-II
    for frame, h in zip(frames, got):
        thumb = np.asarray(Image.fromarray(frame).convert("L").resize((32, 32), Image.Resampling.LANCZOS), float)
        low = (dct @ thumb @ dct.T)[:8, :8].ravel()
        expected = int("".join("1" if c > np.median(low) else "0" for c in low), 2)
        assert int(h) == expected
    assert got.dtype == np.uint64 and got.shape == (7,)


def test_flat_frames_and_empty_input():
    flat = np.stack([np.full((40, 40, 3), v, np.uint8) for v in (0, 90, 255)])
    assert phash_frames(flat).tolist() == [0, int(FLAT_HASH), int(FLAT_HASH)]
    assert phash_frames(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match="frames"):
        phash_frames(np.zeros((2, 8, 8), np.uint8))


def test_hamming_vectorised():
    a = np.array([0, 0xFF, 2**64 - 1], np.uint64)
    assert hamming(a, np.uint64(0)).tolist() == [0, 8, 64]
    assert hamming(a[:, None], a[None, :]).shape == (3, 3)


def test_mirror_hash_inverts_odd_columns():
    frames = np.stack([copies.shapes_frame(s, 1.0, 128, 72) for s in range(20)])
    h, flipped = phash_frames(frames), phash_frames(frames, mirrored=True)
    assert hamming(h, flipped).mean() > 16  # a flip scrambles the plain hash
    assert hamming(mirror_hash(h), flipped).mean() < 6
    assert bin(int(ODD_COLUMN_MASK)).count("1") == 32
    coeffs = low_frequencies(np.zeros((1, 32, 32)))
    assert coeffs.shape == (1, 8, 8)


def test_transformed_copies_stay_close(copy_hashes):
    original = copy_hashes["original"]
    assert len(original) == 8 and len(copy_hashes["speed2x"]) == 4
    assert _nearest(copy_hashes["reupload"], original).max() == 0
    for name in ("crf35", "scale360", "speed2x"):
        assert _nearest(copy_hashes[name], original).max() <= 4, name
    for name in ("crop5", "banner"):
        d = _nearest(copy_hashes[name], original)
        assert np.mean(d <= 12) >= 0.75 and d.max() <= 20, (name, d)
    assert _nearest(mirror_hash(copy_hashes["mirrored"]), original).max() <= 8


def test_distinct_clips_are_far_apart():
    hashes = np.concatenate([phash_frames(np.stack([copies.shapes_frame(1000 + s, t, 398, 224)[:, 87:311]
                                                    for t in (0.0, 4.0)])) for s in range(200)])
    video = np.repeat(np.arange(200), 2)
    d = hamming(hashes[:, None], hashes[None, :])
    other = video[:, None] != video[None, :]
    assert d[other].min() >= 6
    assert np.quantile(d[other], 0.01) >= 16
