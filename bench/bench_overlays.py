"""Near copies under overlays and crops on real video: recall by overlay size and position, by
crop kind and level, and false pairs between different videos; the search with the whole-frame
hashes only, with middle hashes, and with middle and zoom hashes.

Originals: 8 s segments of real video (``../shared/peer-media``, scaled to cover the frame and
centre-cropped as ``bench.real_clips`` makes its clips' pictures), segments of one file never
overlapping, each in three frame shapes, 16:9 (640x360), wide 2.35:1 (752x320) and phone 9:16
(360x640), written as H.264 CRF 23 at 10 fps (the upload). Copies, made from the decoded upload
and re-encoded the same way:

- ``banner_{top,bottom}_{10,20,30}``: a flat band of a dark colour with a white caption over that
  share of the frame height, full width, at the top or the bottom;
- ``sticker``: a bright box with a handle, 22 % x 18 % of the frame, in the lower right corner;
- ``letterbox``: the picture scaled into a frame of another shape with black bars: 16:9 into a
  9:16 phone frame (360x640), 2.35:1 into 16:9 (752x424), 9:16 into 16:9 (640x360);
- ``sides_80``: 10 % of the long side cut at both ends;
- ``zoom_{110,120,130,140,150}``: the centre ``1 / z`` of each side kept, scaled back to the size;
- ``aspect``: the centre of the frame cut to the other orientation at full short side, 16:9 and
  2.35:1 to 9:16 (a phone re-upload), 9:16 to 16:9, scaled to 360x640 or 640x360;
- ``corner_{90,80,70}``: that share of each side kept from one corner (the corner turns with the
  segment), scaled back to the size; ``side_80``: 80 % of the long side kept from one end.

Every file goes through the job's decode (``extract.media.video.decode_video``: 1 fps, the CLIP
224 crop) and is hashed as the decode stage does (``phash_frames``, ``middle_hash_frames``,
``zoom_hash_frames``). Then:

- distances: per copy frame, the nearest original frame's whole-frame, middle and best-view
  Hamming distance (views: the whole-frame hash and the zoom hashes, any pair); between frames of
  different source videos, the smallest distances of each kind (the false-pair margin);
- the search (``find_near_duplicates``, default options but ``middle`` and ``zoom``): per
  transform and shape, the originals of that shape are the history and its copies the new day
  (one shape at a time: a segment's three shapes show one picture and would pair with each
  other). What a pair is: a copy paired with its own segment (any shape) is found; a pair of two
  different source videos is false; a pair of two segments of one source file is neither (cuts
  of one recording can show one scene: they are counted apart, as same-source pairs). The
  originals of all shapes are also searched among themselves (only pairs of different segments
  count there), and the copies as the history with the originals as the new day (``reverse``:
  the crop uploaded first, the wider picture later).

``python -m bench.bench_overlays [OUT_DIR] [--segments N]`` prints the tables and writes
``OUT_DIR/bench_overlays.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.machine import load_average, machine_info
from bench.real_clips import PEER_MEDIA, cover

SEGMENT_S = 8.0
FPS = 10.0
CRF = "23"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
# (peer-media file, start s): segments of one file 15 s apart or more never overlap
SEGMENTS = (
    ("video2dataset-test_video.mp4", 0.0), ("datajuicer-video1.mp4", 0.0), ("datajuicer-video2.mp4", 0.0),
    ("datajuicer-video3.mp4", 0.0), ("decord-flipping_a_pancake.mkv", 0.0), ("mmaction2-test_mp4.mp4", 0.0),
    ("torchcodec-nasa_13013.mp4", 0.0), ("video2dataset-test_video.mp4", 15.0), ("datajuicer-video2.mp4", 12.0),
    ("datajuicer-video3.mp4", 16.0), ("video2dataset-test_video.mp4", 30.0), ("datajuicer-video3.mp4", 32.0),
    ("video2dataset-test_video.mp4", 45.0), ("video2dataset-test_video.mp4", 60.0),
    ("video2dataset-test_video.mp4", 75.0), ("video2dataset-test_video.mp4", 90.0),
    ("video2dataset-test_video.mp4", 105.0),
)
SHAPES = {"16:9": (640, 360), "2.35:1": (752, 320), "9:16": (360, 640)}
LETTERBOX_FRAME = {"16:9": (360, 640), "2.35:1": (752, 424), "9:16": (640, 360)}  # the frame each shape is boxed into
BANNERS = tuple(f"banner_{where}_{pct}" for where in ("top", "bottom") for pct in (10, 20, 30))
ZOOM_LEVELS = (110, 120, 130, 140, 150)  # centre zooms, per cent
CORNER_LEVELS = (90, 80, 70)  # share of each side a corner crop keeps, per cent
CROPS = ("sides_80", *(f"zoom_{z}" for z in ZOOM_LEVELS), "aspect", *(f"corner_{k}" for k in CORNER_LEVELS), "side_80")
TRANSFORMS = BANNERS + ("sticker", "letterbox") + CROPS
VARIANTS = {"phash_only": {"middle": False, "zoom": False}, "with_middle": {"middle": True, "zoom": False},
            "with_zoom": {"middle": True, "zoom": True}}  # DuplicateOptions of each search


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _font(size: int):
    from PIL import ImageFont

    size = max(size, 8)
    return ImageFont.truetype(FONT, size) if Path(FONT).exists() else ImageFont.load_default(size)


def _banner(frame: np.ndarray, where: str, share: float, seed: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    band = int(round(h * share))
    top = 0 if where == "top" else h - band
    colour = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 70, 3))
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, top, w, top + band], fill=colour)
    font = _font(min(int(band * 0.45), int(h * 0.07)))
    draw.text((int(w * 0.04), top + band // 2), "FOLLOW @copycat FOR MORE", fill=(255, 255, 255), font=font,
              anchor="lm")
    return np.asarray(image)


def _sticker(frame: np.ndarray, seed: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    bw, bh = int(w * 0.22), int(h * 0.18)
    x0, y0 = w - bw - int(w * 0.04), h - bh - int(h * 0.06)
    colour = tuple(int(c) for c in np.random.default_rng(seed).integers(150, 256, 3))
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([x0, y0, x0 + bw, y0 + bh], radius=bh // 4, fill=colour)
    draw.text((x0 + bw // 2, y0 + bh // 2), "@copycat", fill=(20, 20, 20), font=_font(bh // 3), anchor="mm")
    return np.asarray(image)


def _resized(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


def _letterbox(frame: np.ndarray, shape: str) -> np.ndarray:
    fw, fh = LETTERBOX_FRAME[shape]
    h, w = frame.shape[:2]
    scale = min(fw / w, fh / h)
    pw, ph = _even(w * scale), _even(h * scale)
    out = np.zeros((fh, fw, 3), np.uint8)
    top, left = (fh - ph) // 2, (fw - pw) // 2
    out[top:top + ph, left:left + pw] = _resized(frame, pw, ph)
    return out


def _kept(frame: np.ndarray, axis: int, start: float, share: float) -> np.ndarray:
    """The part of ``frame`` from ``start`` over ``share`` (fractions of its size) along ``axis``."""
    size = frame.shape[axis]
    a = int(round(start * size))
    b = a + max(int(round(share * size)), 2)
    return np.ascontiguousarray(frame[a:b] if axis == 0 else frame[:, a:b])


def transformed(frame: np.ndarray, name: str, shape: str, seed: int) -> np.ndarray:
    """``frame`` ``(H, W, 3) uint8`` with transform ``name`` (module doc) applied."""
    h, w = frame.shape[:2]
    if name.startswith("banner_"):
        _, where, pct = name.split("_")
        return _banner(frame, where, int(pct) / 100, seed)
    if name == "sticker":
        return _sticker(frame, seed)
    if name == "letterbox":
        return _letterbox(frame, shape)
    long_axis = 1 if w >= h else 0
    if name == "sides_80":
        return _kept(frame, long_axis, 0.1, 0.8)
    if name.startswith("zoom_"):
        keep = 100 / int(name.split("_")[1])
        a = (1 - keep) / 2
        return _resized(_kept(_kept(frame, 0, a, keep), 1, a, keep), w, h)
    if name == "aspect":  # the other orientation at full short side, centred
        target = 9 / 16 if w >= h else 16 / 9  # width / height of the copy
        kept = _kept(frame, 1, 0.5 - h * target / w / 2, h * target / w) if w >= h \
            else _kept(frame, 0, 0.5 - w / target / h / 2, w / target / h)
        return _resized(kept, *((360, 640) if w >= h else (640, 360)))
    if name.startswith("corner_"):
        keep = int(name.split("_")[1]) / 100
        corner_y, corner_x = divmod(seed // 100 % 4, 2)  # the segment picks the corner
        return _resized(_kept(_kept(frame, 0, corner_y * (1 - keep), keep), 1, corner_x * (1 - keep), keep), w, h)
    if name == "side_80":
        return _resized(_kept(frame, long_axis, (seed // 100 % 2) * 0.2, 0.8), w, h)
    raise ValueError(f"unknown transform {name!r}")


def _encode(path: Path, frames: list[np.ndarray]) -> Path:
    from extract.tools.samples import write_clip

    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:  # H.264 4:2:0 wants even sizes
        frames = [np.ascontiguousarray(f[:h - h % 2, :w - w % 2]) for f in frames]
        h, w = frames[0].shape[:2]
    return write_clip(path, duration_s=len(frames) / FPS, width=w, height=h, fps=FPS, audio=None,
                      frame_source=lambda i, t: frames[i], encoder_options={"crf": CRF, "preset": "veryfast"})


def _decoded_rgb(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _hashes(path: Path) -> dict[str, list[int]]:
    """The decode stage's hashes of ``path`` (its CLIP frames): whole-frame, middle and zoom, as int."""
    from extract.config import Config
    from extract.media.phash import middle_hash_frames, phash_frames, zoom_hash_frames
    from extract.media.video import decode_video
    from extract.models.preprocess import preprocess_spec

    config = Config().replace(**{"signals.motion": False, "signals.shots": False, "output.sounds": False,
                                 "output.thumbnails": 0, "ocr.enabled": False})
    frames = decode_video(str(path), config, preprocess_spec(config.models.clip), audio=False).frames
    return {"phash": phash_frames(frames).tolist(), "phash_middle": middle_hash_frames(frames).tolist(),
            "phash_zoom": zoom_hash_frames(frames).tolist()}


def segment_frames(path: Path, start_s: float, width: int, height: int) -> list[np.ndarray]:
    """``SEGMENT_S * FPS`` pictures of ``path`` from ``start_s`` on: the frame shown at each
    ``start_s + i / FPS`` (the last one past the file's end), each ``cover``-ed to the size."""
    import av

    targets = start_s + np.arange(int(SEGMENT_S * FPS)) / FPS
    shown: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(int(start_s / stream.time_base), stream=stream, backward=True)  # to the key frame before
        current = None
        for frame in container.decode(stream):
            while current is not None and len(shown) < len(targets) and (frame.time or 0.0) > targets[len(shown)]:
                shown.append(cover(current, width, height))
            if len(shown) == len(targets):
                break
            current = frame
        shown += [cover(current, width, height)] * (len(targets) - len(shown))
    return shown


def hash_segment(index: int, shape: str, transforms: Sequence[str] = TRANSFORMS) -> dict[str, Any]:
    """Write segment ``index`` in ``shape`` and its copies into a temporary folder, hash each
    through the job's decode; returns ``{"original" | transform: hashes}`` and the seconds taken."""
    started = time.perf_counter()
    source, start = SEGMENTS[index]
    frames = segment_frames(PEER_MEDIA / source, start, *SHAPES[shape])
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-overlays-") as tmp:
        upload = _encode(Path(tmp) / "original.mp4", frames)
        out["original"] = _hashes(upload)
        decoded = _decoded_rgb(upload)
        for k, name in enumerate(transforms):
            copy = _encode(Path(tmp) / f"{name}.mp4", [transformed(f, name, shape, index * 100 + k) for f in decoded])
            out[name] = _hashes(copy)
    return {"segment": index, "shape": shape, "hashes": out, "seconds": round(time.perf_counter() - started, 2)}


def _views(hashes: dict[str, list]) -> np.ndarray:
    """A video's views ``(n, 1 + len(ZOOMS)) uint64``: each frame's whole-frame hash, then its zoom hashes."""
    return np.concatenate([np.asarray(hashes["phash"], np.uint64)[:, None],
                           np.asarray(hashes["phash_zoom"], np.uint64).reshape(len(hashes["phash"]), -1)], axis=1)


def _distances(query: dict[str, list], reference: dict[str, list]) -> dict[str, np.ndarray]:
    """Per frame of ``query``: the nearest frame of ``reference`` by whole-frame, middle and best-view
    distance (any pair of views, the whole-frame pair included): ``{key: (n,) int}``."""
    from extract.media.phash import hamming

    out = {}
    for key in ("phash", "phash_middle"):
        q, r = np.asarray(query[key], np.uint64), np.asarray(reference[key], np.uint64)
        out[key] = hamming(q[:, None], r[None, :]).min(axis=1).astype(int)
    q, r = _views(query), _views(reference)
    out["views"] = hamming(q[:, None, :, None], r[None, :, None, :]).min(axis=(1, 2, 3)).astype(int)
    return out


def distance_summary(items: list[dict[str, Any]], transforms: Sequence[str]) -> dict[str, Any]:
    """Per transform: the nearest original frame's distance of every copy frame, whole-frame,
    middle and best view (median, share within 12 / 10 / 10 bits); and the smallest distances
    between frames of different source videos."""
    per = {}
    for name in transforms:
        d = [_distances(it["hashes"][name], it["hashes"]["original"]) for it in items]
        full, mid, view = (np.concatenate([x[key] for x in d]) for key in ("phash", "phash_middle", "views"))
        per[name] = {"frames": len(full), "phash_median": float(np.median(full)),
                     "phash_within_12": round(float(np.mean(full <= 12)), 3),
                     "middle_median": float(np.median(mid)), "middle_within_10": round(float(np.mean(mid <= 10)), 3),
                     "views_median": float(np.median(view)), "views_within_10": round(float(np.mean(view <= 10)), 3)}
    # Different source videos: every original frame (all shapes) against every other file's frames.
    from extract.media.phash import hamming

    source = np.concatenate([[SEGMENTS[it["segment"]][0]] * len(it["hashes"]["original"]["phash"]) for it in items])
    other = source[:, None] != source[None, :]
    others = {}
    for key in ("phash", "phash_middle", "views"):
        if key == "views":
            v = np.concatenate([_views(it["hashes"]["original"]) for it in items])
            d = hamming(v[:, None, :, None], v[None, :, None, :]).min(axis=(2, 3)).astype(int)
        else:
            h = np.concatenate([np.asarray(it["hashes"]["original"][key], np.uint64) for it in items])
            d = hamming(h[:, None], h[None, :]).astype(int)
        values = d[other]
        others[key] = {"pairs": int(other.sum()), "min": int(values.min()),
                       "q001": float(np.quantile(values, 0.001)), "q01": float(np.quantile(values, 0.01)),
                       "median": float(np.median(values))}
    return {"copies": per, "different_sources": others}


def _tables(entries: list[tuple[str, int, dict[str, list]]]):
    """``[(video_id, upload order, hashes)]`` -> (videos, frames) as the job stores them."""
    import pyarrow as pa

    videos = pa.table({"video_id": [e[0] for e in entries],
                       "upload_ts": pa.array([e[1] for e in entries], pa.timestamp("s", tz="UTC")),
                       "content_sha256": [e[0] for e in entries]})
    column = {key: np.concatenate([np.asarray(e[2][key], np.uint64).reshape(len(e[2]["phash"]), -1)
                                   for e in entries]).view(np.int64) for key in ("phash", "phash_middle", "phash_zoom")}
    frames = pa.table({
        "video_id": [e[0] for e in entries for _ in e[2]["phash"]],
        "phash": pa.array(column["phash"].ravel()), "phash_middle": pa.array(column["phash_middle"].ravel()),
        "phash_zoom": pa.array(column["phash_zoom"].tolist(), pa.list_(pa.int64()))})
    return videos, frames


def _pair_kind(a: str, b: str) -> str:
    """``found`` (one segment), ``same_source`` (two segments of one file) or ``false`` (two files)."""
    sa, sb = int(a[1:3]), int(b[1:3])
    return "found" if sa == sb else "same_source" if SEGMENTS[sa][0] == SEGMENTS[sb][0] else "false"


def search_summary(items: list[dict[str, Any]], transforms: Sequence[str], middle: bool, zoom: bool) -> dict[str, Any]:
    """Recall per transform and shape (copies new; and ``reverse``, copies as the history), false
    pairs and same-source pairs (module doc), of the search with or without middle and zoom hashes."""
    from extract.index.near_duplicates import DuplicateOptions, find_near_duplicates

    options = DuplicateOptions(middle=middle, zoom=zoom)
    order = sorted(items, key=lambda it: (list(SHAPES).index(it["shape"]), it["segment"]))
    originals = [(f"s{it['segment']:02d}-{it['shape']}-original", k, it["hashes"]["original"])
                 for k, it in enumerate(order)]

    def search(history: list, new: list) -> dict[str, str]:
        videos, frames = _tables(history + new)
        rows = find_near_duplicates(videos, frames, [e[0] for e in new], options).table.to_pylist()
        return {r["video_id"]: r["duplicate_of"] for r in rows}

    paired = {v: o for v, o in search([], originals).items() if _pair_kind(v, o) != "found"}
    kinds = [_pair_kind(v, o) for v, o in paired.items()]
    result: dict[str, Any] = {"transforms": {}, "originals_false_pairs": kinds.count("false"),
                              "originals_same_source_pairs": kinds.count("same_source")}
    all_pairs = [(v, o) for v, o in paired.items()]
    for name in transforms:
        per_shape, pairs = {}, []
        for shape in SHAPES:  # one shape at a time: a segment's shapes show one picture, they would pair
            mine = [it for it in order if it["shape"] == shape]
            olds = [(f"s{it['segment']:02d}-{shape}-original", k, it["hashes"]["original"])
                    for k, it in enumerate(mine)]
            copies = [(f"s{it['segment']:02d}-{shape}-{name}", len(mine) + k, it["hashes"][name])
                      for k, it in enumerate(mine)]
            forward = search(olds, copies)
            # reverse: the copies uploaded first, the originals new
            reverse = search([(v, k - len(mine), h) for v, k, h in copies], [(v, len(mine) + k, h) for v, k, h in olds])
            per_shape[shape] = {
                "copies": len(copies),
                "found": sum(1 for v, *_ in copies if v in forward and _pair_kind(v, forward[v]) == "found"),
                "reverse_found": sum(1 for v, *_ in olds if v in reverse and _pair_kind(v, reverse[v]) == "found")}
            pairs += list(forward.items()) + list(reverse.items())
        kinds = [_pair_kind(v, o) for v, o in pairs]
        result["transforms"][name] = {"shapes": per_shape, "false_pairs": kinds.count("false"),
                                      "same_source_pairs": kinds.count("same_source")}
        all_pairs += pairs
    false_pairs = [(v, o) for v, o in all_pairs if _pair_kind(v, o) == "false"]
    result["false_pairs"] = len(false_pairs)
    result["same_source_pairs"] = sum(1 for v, o in all_pairs if _pair_kind(v, o) == "same_source")
    result["false_pair_examples"] = [list(p) for p in false_pairs[:20]]
    # Which segments the same-source pairs join (cuts of one file showing one scene).
    joined = [tuple(sorted((int(v[1:3]), int(o[1:3])))) for v, o in all_pairs if _pair_kind(v, o) == "same_source"]
    result["same_source_segment_pairs"] = [
        {"segments": list(pair), "file": SEGMENTS[pair[0]][0], "pairs": joined.count(pair)}
        for pair in sorted(set(joined))]
    return result


def run(out_dir: str | Path, segments: int = len(SEGMENTS), workers: int | None = None) -> dict[str, Any]:
    """Make and hash the originals and copies (module doc), measure; write ``bench_overlays.json``."""
    if not PEER_MEDIA.is_dir():
        raise FileNotFoundError(f"{PEER_MEDIA} is missing (the shared peer media)")
    segments = min(segments, len(SEGMENTS))
    started = time.perf_counter()
    load_before = load_average()
    jobs = [(i, shape) for i in range(segments) for shape in SHAPES]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        items = list(pool.map(hash_segment, *zip(*jobs)))
    make_s = time.perf_counter() - started
    result = {
        "benchmark": "overlays", "machine": machine_info(), "segments": segments,
        "sources": sorted({SEGMENTS[i][0] for i in range(segments)}), "shapes": SHAPES,
        "copies": segments * len(SHAPES) * len(TRANSFORMS), "make_and_hash_s": round(make_s, 1),
        "distances": distance_summary(items, TRANSFORMS),
        "search": {key: search_summary(items, TRANSFORMS, **flags) for key, flags in VARIANTS.items()},
        "load_avg": [load_before, load_average()],
        "hashes": [{k: it[k] for k in ("segment", "shape", "hashes")} for it in items],  # to look again
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_overlays.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as Markdown: recall per transform and shape, false pairs, distances."""
    search, dist = result["search"], result["distances"]
    last = search["with_zoom"]
    shapes = list(result["shapes"])
    lines = [f"Near copies under overlays and crops: {result['segments']} segments of 8 s from "
             f"{len(result['sources'])} real peer-media videos, each as " + ", ".join(
                 f"{s} ({w}x{h})" for s, (w, h) in result["shapes"].items())
             + f"; {result['copies']} copies re-encoded (H.264 CRF 23), hashed through the job's decode "
               f"({result['make_and_hash_s']:.0f} s to make and hash; load {result['load_avg'][0]} -> "
               f"{result['load_avg'][1]}). Found = paired with its own segment; false = paired with another source "
               "video; same-source = paired with another segment of its own file (counted apart). Reverse: the copy "
               "uploaded first, the original found as its copy.", "",
             "| copy | found, phash only | + middle | + middle + zoom | + middle + zoom, by shape ("
             + " / ".join(shapes) + ") | reverse, + middle + zoom | frame distance phash / middle / best view "
             "(median) | false pairs, phash only / + middle / + zoom | same-source pairs, + zoom |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    totals = {key: [0, 0] for key in search}
    for name, last_t in last["transforms"].items():
        cells = []
        for key, r in search.items():
            t = r["transforms"][name]["shapes"]
            found, n = sum(t[s]["found"] for s in shapes), sum(t[s]["copies"] for s in shapes)
            totals[key][0] += found
            totals[key][1] += n
            cells.append(f"{found}/{n}")
        t = last_t["shapes"]
        cells.append(" / ".join(str(t[s]["found"]) for s in shapes))
        cells.append(f"{sum(t[s]['reverse_found'] for s in shapes)}/{sum(t[s]['copies'] for s in shapes)}")
        d = dist["copies"][name]
        cells.append(f"{d['phash_median']:.0f} / {d['middle_median']:.0f} / {d['views_median']:.0f}")
        cells.append(" / ".join(str(r["transforms"][name]["false_pairs"]) for r in search.values()))
        cells.append(str(last_t["same_source_pairs"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    o = dist["different_sources"]
    lines += ["", "All copies found: " + ", ".join(
        f"{totals[k][0]}/{totals[k][1]} {label}" for k, label in
        (("phash_only", "with phash only"), ("with_middle", "with middle hashes"),
         ("with_zoom", "with middle and zoom hashes"))) + "; false pairs (copies, reverse searches and originals "
        "against other source videos): " + " / ".join(str(r["false_pairs"]) for r in search.values())
        + "; same-source pairs: " + " / ".join(str(r["same_source_pairs"]) for r in search.values()) + ". "
        f"Frames of different source videos lie at least {o['phash']['min']} bits apart (phash; 0.1 % quantile "
        f"{o['phash']['q001']:.0f}), {o['phash_middle']['min']} (middle; {o['phash_middle']['q001']:.0f}) and "
        f"{o['views']['min']} (best view; {o['views']['q001']:.0f}) over {o['phash']['pairs']:,} frame pairs."]
    pairs = last.get("same_source_segment_pairs") or []
    if pairs:
        lines.append("Same-source pairs with middle and zoom hashes, by the segments they join: " + "; ".join(
            f"{p['segments'][0]} ~ {p['segments'][1]} ({p['file']}): {p['pairs']}" for p in pairs) + ".")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default="bench/out")
    parser.add_argument("--segments", type=int, default=len(SEGMENTS))
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    print(markdown(run(args.out_dir, args.segments, args.workers)))


if __name__ == "__main__":
    main()
