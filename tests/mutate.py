"""Test helper: deterministic mutations of real media files for the decode fuzz tier.

Every function takes a file's bytes and returns ``[(name, mutated bytes), ...]``; the name says
the family, the parameters and (where seeded) the seed, so a failing mutant can be rebuilt
from its name. Families:

- ``bit_flips``: ``n`` random bits flipped (seeded), for several ``n``.
- ``byte_insertions``: random bytes inserted at random offsets (seeded), shifting everything after.
- ``truncations``: the file cut at every ``step`` (5 %) of its length.
- ``mp4_box_sizes``: each ISO-BMFF box of the top level and of the ``moov``/``moof`` trees with
  its 32-bit size set to extreme values (huge, zero, one = "a 64-bit size follows").
- ``mp4_table_counts``: the entry counts of the sample tables (``stts``, ``stss``, ``stsz``,
  ``stsc``, ``stco``, ``co64``, ``ctts``, ``elst``, ``stsd``) set to huge values.
- ``ebml_sizes``: each Matroska/WebM element's size (a VINT, kept at its length) set to the
  largest value of its length or to "unknown size".
- ``codec_tag_swaps``: codec identifiers replaced by others of the same length: MP4 sample
  entry and config box fourccs (``avc1`` -> ``hvc1``, ``mp4v``, ``av01``, ...) and Matroska
  ``CodecID`` strings (``V_VP9`` -> ``V_AV1``, ``A_OPUS`` -> ``A_FLAC``, ...).

``all_mutants`` concatenates the families for one file, ``stratified_sample`` draws a fixed-seed
subset that keeps every family represented.
"""

from __future__ import annotations

import random
import struct
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

Mutant = tuple[str, bytes]

BIT_FLIP_COUNTS = (1, 4, 16, 64)
MP4_EXTREME_SIZES = (0xFFFFFFFF, 0x7FFFFFFF, 0x00FFFFFF, 0, 1)
MP4_HUGE_COUNTS = (0xFFFFFFFF, 0x7FFFFFFF, 0x10000000)
# Boxes whose payload is a list of boxes (ISO/IEC 14496-12); stsd is a full box with a count first.
MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex", b"moof",
                  b"traf", b"meta"}
# Table boxes: offset of the 32-bit entry count from the box start (header 8 + version/flags 4).
MP4_TABLE_COUNT_OFFSETS = {b"stts": 12, b"stss": 12, b"stsc": 12, b"stco": 12, b"co64": 12, b"ctts": 12,
                           b"elst": 12, b"stsd": 12, b"stsz": 16}  # stsz: sample_size comes first
MP4_VISUAL_ENTRIES = {b"avc1", b"avc3", b"hvc1", b"hev1", b"mp4v", b"av01", b"vp09", b"vp08"}
MP4_VISUAL_ENTRY_BYTES = 78  # after the box header: reserved, data_reference_index, VisualSampleEntry fields
MP4_AUDIO_ENTRY_BYTES = 28  # after the box header: reserved, data_reference_index, AudioSampleEntry fields
MP4_TAG_SWAPS = {b"avc1": (b"hvc1", b"hev1", b"mp4v", b"av01", b"vp09", b"raw ", b"zzzz"),
                 b"hvc1": (b"avc1", b"mp4v", b"av01"), b"hev1": (b"avc1", b"mp4v"),
                 b"mp4v": (b"avc1", b"hvc1"), b"avcC": (b"hvcC", b"av1C", b"vpcC"), b"hvcC": (b"avcC", b"av1C"),
                 b"mp4a": (b"Opus", b"ac-3", b"alac", b"fLaC", b".mp3"), b"esds": (b"dOps", b"dac3")}
MKV_CODEC_SWAPS = {b"V_VP9": (b"V_VP8", b"V_AV1"), b"V_VP8": (b"V_VP9", b"V_AV1"),
                   b"V_MPEG4/ISO/AVC": (b"V_MPEG4/ISO/ASP", b"V_MPEG4/ISO/SP\0"),
                   b"A_OPUS": (b"A_FLAC", b"A_ALAC", b"A_TTA1"), b"A_FLAC": (b"A_OPUS", b"A_ALAC"),
                   b"A_AAC": (b"A_AC3", b"A_DTS"), b"A_MPEG/L3": (b"A_MPEG/L2", b"A_MPEG/L1")}
# Matroska master elements (payload is a list of elements), by ID with its marker bits.
EBML_MASTERS = {0x1A45DFA3, 0x18538067, 0x114D9B74, 0x4DBB, 0x1549A966, 0x1654AE6B, 0xAE, 0xE0, 0xE1,
                0x1F43B675, 0xA0, 0x1C53BB6B, 0xBB, 0xB7, 0x1254C367, 0x7373, 0x63C0, 0x67C8, 0x1043A770,
                0x6D80, 0x6240, 0x7E5B}


# --------------------------------------------------------------------------- byte-level families


def bit_flips(data: bytes, seed: int, variants: int = 3, counts: tuple[int, ...] = BIT_FLIP_COUNTS) -> list[Mutant]:
    """For each ``n`` in ``counts``, ``variants`` files with ``n`` distinct random bits flipped."""
    out = []
    for n in counts:
        for v in range(variants):
            rng = random.Random(f"flip:{seed}:{n}:{v}")
            buf = bytearray(data)
            for bit in rng.sample(range(8 * len(buf)), min(n, 8 * len(buf))):
                buf[bit // 8] ^= 1 << (bit % 8)
            out.append((f"bitflip-n{n}-v{v}-s{seed}", bytes(buf)))
    return out


def byte_insertions(data: bytes, seed: int, variants: int = 6, max_bytes: int = 64) -> list[Mutant]:
    """``variants`` files each with 1-3 runs of 1-``max_bytes`` random bytes inserted."""
    out = []
    for v in range(variants):
        rng = random.Random(f"insert:{seed}:{v}")
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, max_bytes))
        out.append((f"insert-v{v}-s{seed}", bytes(buf)))
    return out


def truncations(data: bytes, step: float = 0.05) -> list[Mutant]:
    """The file cut after every ``step`` of its length (5 %, 10 %, ... 95 %)."""
    n = round(1 / step)
    return [(f"truncate-{round(100 * i * step)}pct", data[:len(data) * i // n]) for i in range(1, n)]


# --------------------------------------------------------------------------- ISO-BMFF (MP4)


@dataclass(frozen=True)
class Box:
    """An ISO-BMFF box: ``offset`` of its header in the file, ``size`` as stored, ``kind`` its fourcc."""

    offset: int
    size: int
    kind: bytes
    depth: int


def mp4_boxes(data: bytes) -> list[Box]:
    """The top-level boxes and, recursively, those inside the containers (``MP4_CONTAINERS``,
    sample entries inside ``stsd``), in file order. Stops a level at the first box whose
    size does not fit."""
    out: list[Box] = []

    def walk(pos: int, end: int, depth: int, parent: bytes) -> None:
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos:pos + 8])
            header = 8
            if size == 1 and pos + 16 <= end:
                size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end:
                return
            out.append(Box(pos, size, kind, depth))
            if kind in MP4_CONTAINERS:
                walk(pos + header + (4 if kind == b"meta" else 0), pos + size, depth + 1, kind)
            elif kind == b"stsd":
                walk(pos + 16, pos + size, depth + 1, kind)  # full box header + entry count, then sample entries
            elif parent == b"stsd":  # a sample entry: its fixed fields, then its config boxes (avcC, esds, ...)
                fields = MP4_VISUAL_ENTRY_BYTES if kind in MP4_VISUAL_ENTRIES else MP4_AUDIO_ENTRY_BYTES
                walk(pos + header + fields, pos + size, depth + 1, kind)
            pos += size

    walk(0, len(data), 0, b"")
    return out


def mp4_box_sizes(data: bytes, sizes: tuple[int, ...] = MP4_EXTREME_SIZES) -> list[Mutant]:
    """Each box of ``mp4_boxes`` (32-bit size boxes) with its size field set to each of ``sizes``."""
    out = []
    for box in mp4_boxes(data):
        if struct.unpack(">I", data[box.offset:box.offset + 4])[0] == 1:
            continue  # a 64-bit size box: the 32-bit field is the marker
        for size in sizes:
            buf = bytearray(data)
            buf[box.offset:box.offset + 4] = struct.pack(">I", size)
            out.append((f"boxsize-{box.kind.decode('latin-1')}@{box.offset}-{size:#x}", bytes(buf)))
    return out


def mp4_table_counts(data: bytes, counts: tuple[int, ...] = MP4_HUGE_COUNTS) -> list[Mutant]:
    """The entry count of each sample table box set to each of ``counts``."""
    out = []
    for box in mp4_boxes(data):
        at = MP4_TABLE_COUNT_OFFSETS.get(box.kind)
        if at is None or box.size < at + 4:
            continue
        for count in counts:
            buf = bytearray(data)
            buf[box.offset + at:box.offset + at + 4] = struct.pack(">I", count)
            out.append((f"tablecount-{box.kind.decode()}@{box.offset}-{count:#x}", bytes(buf)))
    return out


# --------------------------------------------------------------------------- EBML (Matroska / WebM)


@dataclass(frozen=True)
class Element:
    """An EBML element: ``offset`` of its ID, ``size_at``/``size_len`` its size VINT, ``size`` its payload."""

    offset: int
    element_id: int
    size_at: int
    size_len: int
    size: int | None  # None: "unknown size" (all value bits set)


def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-length integer at ``at``; None if malformed."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 9 - data[at].bit_length()
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at:at + length], "big")
    return (value if keep_marker else value & ~(1 << (7 * length))), length


def ebml_elements(data: bytes) -> list[Element]:
    """The elements of the top level and, recursively, of the master elements (``EBML_MASTERS``),
    in file order. An unknown-size master (a live-muxed Segment or Cluster) extends to the end
    of its parent."""
    out: list[Element] = []

    def walk(pos: int, end: int) -> None:
        while pos < end:
            head = _vint(data, pos, keep_marker=True)
            size_field = head and _vint(data, pos + head[1], keep_marker=False)
            if not head or not size_field:
                return
            (element_id, id_len), (size, size_len) = head, size_field
            payload = pos + id_len + size_len
            unknown = size == (1 << (7 * size_len)) - 1
            stop = end if unknown else payload + size
            if stop > end:
                return
            out.append(Element(pos, element_id, pos + id_len, size_len, None if unknown else size))
            if element_id in EBML_MASTERS:
                walk(payload, stop)
            pos = stop

    walk(0, len(data))
    return out


def ebml_sizes(data: bytes) -> list[Mutant]:
    """Each element's size VINT (same length) set to its largest value and to "unknown"."""
    out = []
    for el in ebml_elements(data):
        marker = 1 << (7 * el.size_len)
        for label, value in (("max", marker - 2), ("unknown", marker - 1)):
            if value == el.size or (label == "max" and el.size_len == 1 and value == 0):
                continue
            buf = bytearray(data)
            buf[el.size_at:el.size_at + el.size_len] = (marker | value).to_bytes(el.size_len, "big")
            out.append((f"ebmlsize-{el.element_id:x}@{el.offset}-{label}", bytes(buf)))
    return out


# --------------------------------------------------------------------------- codec identifiers


def _occurrences(data: bytes, needle: bytes) -> Iterator[int]:
    at = data.find(needle)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1)


def codec_tag_swaps(data: bytes) -> list[Mutant]:
    """Codec identifiers replaced by same-length others: in MP4 the fourccs of sample entries
    and config boxes found by ``mp4_boxes``, in Matroska the ``CodecID`` (0x86) payloads."""
    out = []
    for box in mp4_boxes(data):
        for new in MP4_TAG_SWAPS.get(box.kind, ()):
            buf = bytearray(data)
            buf[box.offset + 4:box.offset + 8] = new
            out.append((f"tag-{box.kind.decode()}->{new.decode().strip()}@{box.offset}", bytes(buf)))
    for el in ebml_elements(data):
        if el.element_id != 0x86 or el.size is None:
            continue
        start = el.size_at + el.size_len
        old = data[start:start + el.size]
        for new in MKV_CODEC_SWAPS.get(old, ()):
            buf = bytearray(data)
            buf[start:start + el.size] = new
            out.append((f"codecid-{old.decode()}->{new.decode().strip(chr(0))}@{el.offset}", bytes(buf)))
    return out


# --------------------------------------------------------------------------- all together


def all_mutants(data: bytes, seed: int) -> list[Mutant]:
    """Every family's mutants of one file (the container-specific ones find nothing in other
    containers)."""
    return (bit_flips(data, seed) + byte_insertions(data, seed) + truncations(data) + mp4_box_sizes(data)
            + mp4_table_counts(data) + ebml_sizes(data) + codec_tag_swaps(data))


def family(name: str) -> str:
    """The family of a mutant name (``boxsize-moov@24-0xffffffff`` -> ``boxsize``)."""
    return name.split("-", 1)[0]


def stratified_sample(mutants: list[Mutant], n: int, seed: int) -> list[Mutant]:
    """``n`` of ``mutants`` drawn with a fixed seed, round-robin over the families so each one is
    represented (in the input order of the result's draws, deterministic)."""
    by_family: dict[str, list[Mutant]] = defaultdict(list)
    for m in mutants:
        by_family[family(m[0])].append(m)
    rng = random.Random(seed)
    pools = {f: rng.sample(ms, len(ms)) for f, ms in sorted(by_family.items())}
    out: list[Mutant] = []
    while len(out) < n and any(pools.values()):
        for f in sorted(pools):
            if pools[f] and len(out) < n:
                out.append(pools[f].pop())
    return out
