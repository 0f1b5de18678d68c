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
from extract.media.phash import (FLAT_HASH, ODD_COLUMN_MASK, ZOOMS, content_boxes, hamming, low_frequencies,
                                 middle_hash_frames, mirror_hash, phash_frames, zoom_hash_frames)
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


def _clip_crop(frame: np.ndarray, size: int = 224) -> np.ndarray:
    """Shorter side to ``size`` (PIL bicubic), then the centre square: the CLIP frame's geometry."""
    from PIL import Image

    h, w = frame.shape[:2]
    scale = size / min(h, w)
    image = Image.fromarray(frame).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                          Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def _boxed(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frame`` scaled to fit a black ``width`` x ``height`` frame, centred (letterbox or pillarbox)."""
    from PIL import Image

    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    pw, ph = round(w * scale), round(h * scale)
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - ph) // 2, (width - pw) // 2
    out[top:top + ph, left:left + pw] = np.asarray(Image.fromarray(frame).resize((pw, ph), Image.Resampling.BICUBIC))
    return out


def test_content_boxes_cut_bars_on_both_sides_only():
    rng = np.random.default_rng(5)
    texture = rng.integers(30, 220, (224, 224), dtype=np.uint8)
    letterbox = texture.copy()
    letterbox[:30], letterbox[194:] = 16, 17  # coding noise: one level apart
    pillarbox = texture.copy()
    pillarbox[:, :40], pillarbox[:, 184:] = 0, 0
    banner = texture.copy()
    banner[170:] = 0  # one side only: a banner, not a box
    two_colours = texture.copy()
    two_colours[:30], two_colours[194:] = 0, 255
    flat = np.full((224, 224), 90, np.uint8)
    boxes = content_boxes(np.stack([letterbox, pillarbox, banner, two_colours, flat, texture]))
    assert boxes[0].tolist() == [30, 194, 30, 194]  # rows cut, then the centre square of what is left
    assert boxes[1].tolist() == [40, 184, 40, 184]
    for k in range(2, 6):
        assert boxes[k].tolist() == [0, 224, 0, 224], k


def test_middle_hash_holds_under_banners_and_letterboxes():
    """The middle hash of a wide (2.35:1) frame's CLIP crop against the same frame under a 30 % banner
    (top or bottom) and letterboxed into 16:9 and 9:16 frames; the whole-frame hash moves further."""
    wide = [copies.shapes_frame(s, 1.0, 752, 320) for s in range(12)]
    original = np.stack([_clip_crop(f) for f in wide])
    top, bottom = [], []
    for f in wide:
        t, b = f.copy(), f.copy()
        t[:96], b[-96:] = (40, 20, 60), (10, 50, 30)  # 30 % of the height
        top.append(_clip_crop(t))
        bottom.append(_clip_crop(b))
    copies_of = {"banner_top": np.stack(top), "banner_bottom": np.stack(bottom),
                 "letterbox_16_9": np.stack([_clip_crop(_boxed(f, 752, 424)) for f in wide]),
                 "letterbox_9_16": np.stack([_clip_crop(_boxed(f, 320, 568)) for f in wide])}
    h, m = phash_frames(original), middle_hash_frames(original)
    for name, frames in copies_of.items():
        full, middle = hamming(h, phash_frames(frames)), hamming(m, middle_hash_frames(frames))
        assert middle.max() <= 6 and middle.mean() < full.mean(), (name, middle, full)
    others = middle_hash_frames(np.stack([_clip_crop(copies.shapes_frame(100 + s, 1.0, 752, 320)) for s in range(12)]))
    assert hamming(m[:, None], others[None, :]).min() >= 12
    assert middle_hash_frames(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0,)


def test_zoom_hashes_are_the_centre_squares_hashes():
    """Without bars, column ``k`` is the plain pHash of the centre square of ``1 / ZOOMS[k]`` of the side."""
    frames = np.stack([_clip_crop(copies.shapes_frame(s, 1.0, 640, 360)) for s in range(6)])
    got = zoom_hash_frames(frames)
    assert got.shape == (6, len(ZOOMS)) and got.dtype == np.uint64
    for k, zoom in enumerate(ZOOMS):
        inner = round(224 / zoom)
        a = (224 - inner) // 2
        centre = np.ascontiguousarray(frames[:, a:a + inner, a:a + inner])
        np.testing.assert_array_equal(got[:, k], phash_frames(centre))
    assert zoom_hash_frames(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, len(ZOOMS))


def _zoomed(frame: np.ndarray, zoom: float) -> np.ndarray:
    """The centre ``1 / zoom`` of each side of ``frame``, scaled back to its size (PIL bicubic)."""
    from PIL import Image

    h, w = frame.shape[:2]
    ch, cw = round(h / zoom), round(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.asarray(Image.fromarray(frame[top:top + ch, left:left + cw]).resize((w, h), Image.Resampling.BICUBIC))


def test_zoomed_and_reshaped_copies_are_close_to_a_view_of_the_original():
    """A 16:9 frame zoomed 1.1-1.5x about the centre, or cropped to 9:16: its whole-frame hash moves
    far from the original's, but some pair of views (whole frame, zoom hashes) stays within 10 bits;
    views of other clips' frames stay further."""
    wide = [copies.shapes_frame(s, 1.0, 640, 360) for s in range(12)]

    def views(frames: list[np.ndarray]) -> np.ndarray:
        crops = np.stack([_clip_crop(f) for f in frames])
        return np.concatenate([phash_frames(crops)[:, None], zoom_hash_frames(crops)], axis=1)

    def best(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # per frame, the closest pair of views
        return hamming(a[:, :, None], b[:, None, :]).min(axis=(1, 2))

    original = views(wide)
    phone = [f[:, 320 - 101:320 + 101] for f in wide]  # 9:16 at full height: 202 x 360
    for name, frames in [(f"zoom {z}", [_zoomed(f, z) for f in wide]) for z in (1.1, 1.2, 1.3, 1.4, 1.5)] + [
            ("9:16", phone)]:
        copy = views(frames)
        assert np.median(best(copy, original)) <= 6 and best(copy, original).max() <= 10, name
        if name != "zoom 1.1":  # 1.1 is still within the whole-frame hash's reach
            assert np.median(hamming(copy[:, 0], original[:, 0])) > 12, name
    others = views([copies.shapes_frame(100 + s, 1.0, 640, 360) for s in range(12)])
    assert hamming(original[:, None, :, None], others[None, :, None, :]).min() >= 12
