"""64-bit DCT perceptual hashes (pHash) of video frames, and Hamming distances between them.

The algorithm is the standard one, as ``imagehash.phash`` (hash_size 8, highfreq_factor 4)
defines it, and the result is the same bits:

1. grey: PIL ``convert("L")`` (ITU-R 601-2 luma, ``L = R*299/1000 + G*587/1000 + B*114/1000``
   in PIL's fixed point);
2. thumbnail: PIL ``resize((32, 32), LANCZOS)`` of the grey picture (no aspect ratio kept);
3. 2-D DCT-II (unnormalised, scipy's ``dct`` convention ``y[k] = 2 sum x[n] cos(pi k (2n+1) / 2N)``)
   along rows then columns, keeping the top-left 8 x 8 low frequencies, DC included;
4. bit = coefficient > median of those 64 coefficients; row-major, the first coefficient
   (DC) is the most significant bit of the ``uint64`` (``int(str(imagehash.phash(img)), 16)``).

Steps 1-2 run per frame in PIL's C code (so the thumbnail is PIL's, bit for bit); steps 3-4
run on all frames at once as two small matrix products. The DCT here is a matrix product
rather than scipy's FFT, so a coefficient within ~1e-9 of the median could land on the other
side. That happens on flat thumbnails (a single-colour frame), whose AC coefficients are
exactly 0 in scipy's transform but rounding noise in a matrix product; such noise is set to 0
here, so a flat frame hashes to ``FLAT_HASH`` (0 for black) as in imagehash. Checked against
imagehash 4.3.2 (one-off, not a dependency): equal on 274 of 274 frames (synthetic clips at
224 x 224 and 640 x 360, uniform noise, four flat colours) and on 200 of 200 mirrored ones.

Mirrored copies: a horizontal flip negates the odd-column DCT coefficients, which scrambles
the hash (on the frames above, 31.7 of 64 bits differ on average, as between unrelated
frames). ``phash_frames(frames, mirrored=True)`` hashes the flipped frames. ``mirror_hash``
derives the flipped frame's hash from the stored hash alone (invert the odd-column bits; exact
when the median is 0): on the frames above it is within 2.6 bits of the true one on average,
8 at most, so the near-duplicate search queries with it and no second hash is stored.

Robustness (Hamming distance of a frame and its transformed copy, 64 bits; measured on the
project's synthetic clips in ``tests/test_phash.py``): see that module's docstring.

Middle hashes (``middle_hash_frames``): a second pHash per frame for copies the whole-frame hash
misses, a banner or caption bar over the top or bottom of the frame, or the picture letterboxed
into another frame shape. Two steps, on the same CLIP frames:

1. ``content_boxes``: bars on both opposite sides (rows at the top *and* the bottom, or columns
   at the left *and* the right) that are flat (each row's or column's luma spread under
   ``BAR_SPREAD``), of one colour, and of about the same size are cut off, then the centre square
   of what is left is kept. A 2.35:1 film letterboxed into 16:9, or a 16:9 clip in a 9:16 phone
   frame, gives back the square the unboxed original's CLIP crop shows, whatever the frame shape
   (the CLIP crop is a centre square too). A bar on one side only (a banner) is left in place.
2. the band of rows ``MIDDLE_BAND`` (30-70 %) of that square, squashed to the 32 x 32 thumbnail
   and hashed as above: a banner over up to 30 % of the frame at the top or the bottom leaves
   it bare, and a horizontal flip maps it onto itself, so ``mirror_hash`` applies to it too.

Frames without such bars hash their plain middle band; the whole-frame ``phash`` is unchanged.

Zoom hashes (``zoom_hash_frames``): pHashes of centred squares of the same content square, of
``1 / z`` of its side for each ``z`` in ``ZOOMS``, for copies cropped or zoomed in. A re-upload
zoomed ``z`` times about the centre shows, in its CLIP frame, the original's centre square of
``1 / z`` of the side; so does a 16:9 frame cropped to 9:16, or the reverse (``z`` = 16 / 9: the
CLIP crop is the centre square of the shorter side). The copy's whole-frame hash is then close to
the original's zoom hash at that ``z``, and the copy's zoom hash at ``z1`` to the original's at
``z2`` when it is zoomed ``z2 / z1``. A hash moves about 10 bits when the picture is zoomed 1.1
times further and 18 or more past 1.2 (real peer-media frames), so the levels sit about 1.15
apart: ``ZOOMS`` = (1.15, 1.33, 16 / 9) and their ratios (1.16, 1.34, 1.55) leave every zoom from
1.1 to 1.5, and 16 / 9, a few bits from some view of the original (``bench/bench_overlays.py``,
its distance column). A crop off the centre (a corner kept) shifts the picture as well, which
moves these hashes as far as an unrelated frame's: such copies are not found.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

HASH_SIZE = 8  # low-frequency block is HASH_SIZE x HASH_SIZE = 64 bits
HIGHFREQ_FACTOR = 4  # thumbnail side = HASH_SIZE * HIGHFREQ_FACTOR = 32 px
THUMBNAIL_SIZE = HASH_SIZE * HIGHFREQ_FACTOR
HASH_BITS = HASH_SIZE * HASH_SIZE
NOISE_FRACTION = 1e-9  # |coefficient| below this share of |DC| is floating-point noise, set to 0
FLAT_HASH = np.uint64(1 << 63)  # the hash of every flat (single-colour, non-black) frame: only DC > median
# Bits of the odd DCT columns (row-major, MSB first): the coefficients a horizontal flip negates.
ODD_COLUMN_MASK = np.uint64(int("".join("01" * (HASH_SIZE // 2)) * HASH_SIZE, 2))


MIDDLE_BAND = (0.3, 0.7)  # rows of the content square the middle hash covers (fractions of its side)
BAR_SPREAD = 6.0  # a bar's row (column) has luma max - min below this (of 255): flat up to coding noise
BAR_COLOUR = 12.0  # the two bars' mean lumas differ by less than this (of 255)
MIN_BAR = 0.02  # a bar is at least this share of the frame side (4 px of 224)
MIN_CONTENT = 0.25  # cut bars leave at least this share of the side (else: a flat frame, no bars)
# Zoom factors of the zoom hashes (module doc): each hashes the centre square of 1 / z of the content
# square's side. 16 / 9 is a 16:9 frame cropped to 9:16 (or the reverse) about its centre.
ZOOMS = (1.15, 1.33, 16 / 9)


@lru_cache(maxsize=4)
def _dct_rows(n: int, keep: int) -> np.ndarray:
    """First ``keep`` rows of the unnormalised DCT-II matrix of size ``n``: ``(keep, n) float64``."""
    k = np.arange(keep)[:, None]
    x = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * n))


def grey_thumbnails(frames: np.ndarray) -> np.ndarray:
    """``(n, H, W, 3) uint8`` RGB frames -> ``(n, 32, 32) uint8`` grey thumbnails (PIL L + LANCZOS)."""
    from PIL import Image

    frames = _checked(frames)
    out = np.empty((len(frames), THUMBNAIL_SIZE, THUMBNAIL_SIZE), np.uint8)
    for i, frame in enumerate(frames):
        grey = Image.fromarray(frame, "RGB").convert("L")
        out[i] = np.asarray(grey.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS))
    return out


def low_frequencies(thumbnails: np.ndarray) -> np.ndarray:
    """``(n, 32, 32)`` grey thumbnails -> ``(n, 8, 8) float64`` top-left DCT-II coefficients."""
    dct = _dct_rows(THUMBNAIL_SIZE, HASH_SIZE)
    pixels = np.asarray(thumbnails, np.float64)
    coefficients = dct @ pixels @ dct.T  # rows (axis 0) then columns (axis 1), like scipy's two passes
    # A flat thumbnail's AC coefficients are rounding noise (~1e-12 of DC); zeroing them makes
    # its hash FLAT_HASH for every flat frame instead of an arbitrary noise pattern.
    scale = np.abs(coefficients[:, :1, :1]) + 1.0
    coefficients[np.abs(coefficients) < NOISE_FRACTION * scale] = 0.0
    return coefficients


def hash_bits(coefficients: np.ndarray) -> np.ndarray:
    """``(n, 8, 8)`` coefficients -> ``(n,) uint64``: bit = coefficient > the frame's median."""
    n = len(coefficients)
    flat = coefficients.reshape(n, HASH_BITS)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").reshape(n).astype(np.uint64)


def phash_frames(frames: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """pHash of every frame: ``(n, H, W, 3) uint8`` -> ``(n,) uint64`` (``imagehash.phash`` bits).

    ``mirrored=True`` hashes the horizontally flipped frames (the query side of a search that
    also finds mirrored copies). An empty input gives ``(0,) uint64``.
    """
    frames = _checked(frames)
    if mirrored:
        frames = frames[:, :, ::-1]
    if len(frames) == 0:
        return np.zeros(0, np.uint64)
    return hash_bits(low_frequencies(grey_thumbnails(frames)))


def content_boxes(grey: np.ndarray) -> np.ndarray:
    """Where each frame's picture is, bars cut off (module doc): ``(n, H, W)`` grey ``uint8`` ->
    ``(n, 4) int32`` boxes ``(top, bottom, left, right)`` (end exclusive), each a centre square."""
    grey = np.asarray(grey)
    n, height, width = grey.shape
    boxes = np.empty((n, 4), np.int32)
    for i, frame in enumerate(grey):
        top, bottom = _bars(frame, 1)
        left, right = _bars(frame, 0)
        rows, cols = bottom - top, right - left
        side = min(rows, cols)
        y0, x0 = top + (rows - side) // 2, left + (cols - side) // 2
        boxes[i] = (y0, y0 + side, x0, x0 + side)
    return boxes


def _bars(frame: np.ndarray, axis: int) -> tuple[int, int]:
    """``(start, end)`` of the picture along the rows (``axis=1``: reduce each row) or the columns
    (``axis=0``) of one grey frame, with flat bars of one colour and similar size on both ends cut."""
    lines = frame.astype(np.int16)
    spread = lines.max(axis=axis) - lines.min(axis=axis)
    mean = lines.mean(axis=axis)
    size = len(spread)
    flat = spread < BAR_SPREAD

    def run(order: np.ndarray) -> int:
        same = flat[order] & (np.abs(mean[order] - mean[order[0]]) < BAR_COLOUR)
        return size if same.all() else int(np.argmin(same))

    head, tail = run(np.arange(size)), run(np.arange(size)[::-1])
    lo = max(MIN_BAR * size, 2)
    if (head < lo or tail < lo or head + tail > (1 - MIN_CONTENT) * size
            or abs(mean[0] - mean[-1]) >= BAR_COLOUR or abs(head - tail) > max(2, 0.15 * max(head, tail))):
        return 0, size
    return head, size - tail


def _content_thumbnails(frames: np.ndarray, regions) -> np.ndarray:
    """``(n, H, W, 3) uint8`` RGB frames -> ``(n, k, 32, 32) uint8`` grey thumbnails (PIL L +
    LANCZOS, as ``grey_thumbnails``) of the ``k`` regions ``regions(side) -> [(y0, y1, x0, x1)]``
    (pixels from the corner of a frame's content square of ``side`` px, ``content_boxes``)."""
    from PIL import Image

    frames = _checked(frames)
    greys = [Image.fromarray(frame, "RGB").convert("L") for frame in frames]
    boxes = content_boxes(np.stack([np.asarray(g) for g in greys])) if greys else np.zeros((0, 4), np.int32)
    out = np.empty((len(frames), len(regions(1)), THUMBNAIL_SIZE, THUMBNAIL_SIZE), np.uint8)
    for i, (grey, box) in enumerate(zip(greys, boxes)):
        top, bottom, left, _ = (int(v) for v in box)
        for k, (y0, y1, x0, x1) in enumerate(regions(bottom - top)):
            part = grey.crop((left + x0, top + y0, left + x1, top + y1))  # PIL box: left, upper, right, lower
            out[i, k] = np.asarray(part.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS))
    return out


def _middle_band(side: int) -> list[tuple[int, int, int, int]]:
    y0 = round(MIDDLE_BAND[0] * side)
    return [(y0, max(round(MIDDLE_BAND[1] * side), y0 + 1), 0, side)]


def _zoom_squares(side: int) -> list[tuple[int, int, int, int]]:
    squares = []
    for zoom in ZOOMS:
        inner = max(round(side / zoom), 1)
        a = (side - inner) // 2
        squares.append((a, a + inner, a, a + inner))
    return squares


def middle_thumbnails(frames: np.ndarray) -> np.ndarray:
    """``(n, H, W, 3) uint8`` RGB frames -> ``(n, 32, 32) uint8`` grey thumbnails of the middle
    band of each frame's content square (module doc), PIL L + LANCZOS as ``grey_thumbnails``."""
    return _content_thumbnails(frames, _middle_band)[:, 0]


def middle_hash_frames(frames: np.ndarray) -> np.ndarray:
    """Middle hash of every frame (module doc): ``(n, H, W, 3) uint8`` -> ``(n,) uint64``, the
    pHash bits of ``middle_thumbnails`` (a flat band hashes to 0 or ``FLAT_HASH`` as above)."""
    frames = _checked(frames)
    if len(frames) == 0:
        return np.zeros(0, np.uint64)
    return hash_bits(low_frequencies(middle_thumbnails(frames)))


def zoom_hash_frames(frames: np.ndarray) -> np.ndarray:
    """Zoom hashes of every frame (module doc): ``(n, H, W, 3) uint8`` -> ``(n, len(ZOOMS)) uint64``,
    column ``k`` the pHash bits of the centre square of ``1 / ZOOMS[k]`` of the content square."""
    frames = _checked(frames)
    if len(frames) == 0:
        return np.zeros((0, len(ZOOMS)), np.uint64)
    thumbnails = _content_thumbnails(frames, _zoom_squares)
    return hash_bits(low_frequencies(thumbnails.reshape(-1, THUMBNAIL_SIZE, THUMBNAIL_SIZE))).reshape(len(frames),
                                                                                                      len(ZOOMS))


def mirror_hash(hashes: np.ndarray) -> np.ndarray:
    """Approximate pHash of the mirrored frames from stored hashes: ``(n,) uint64`` -> ``(n,) uint64``.

    A flip negates the odd DCT columns; with the median at 0 their bits invert exactly. Real
    medians sit near 0, so a few bits may differ from ``phash_frames(frames, mirrored=True)``.
    """
    return np.asarray(hashes, np.uint64) ^ ODD_COLUMN_MASK


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bits that differ between uint64 hashes, elementwise with numpy broadcasting -> ``uint8``.

    ``hamming(h[:, None], g[None, :])`` is the ``(n, m)`` distance matrix of two hash sets.
    """
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.bitwise_count(x).astype(np.uint8)


def _checked(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.size == 0:
        return np.zeros((0, 1, 1, 3), np.uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames: expected (n, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    return frames
