"""Near copies under overlays on real video: recall by overlay size and position, letterboxed and
cropped copies, and false pairs between different videos; the search with and without middle hashes.

Originals: 8 s segments of real video (``../shared/peer-media``, scaled to cover the frame and
centre-cropped as ``bench.real_clips`` makes its clips' pictures), segments of one file never
overlapping, each in two frame shapes, 16:9 (640x360) and wide 2.35:1 (752x320), written as H.264
CRF 23 at 10 fps (the upload). Copies, made from the decoded upload and re-encoded the same way:

- ``banner_{top,bottom}_{10,20,30}``: a flat band of a dark colour with a white caption over that
  share of the frame height, full width, at the top or the bottom;
- ``sticker``: a bright box with a handle, 22 % x 18 % of the frame, in the lower right corner;
- ``letterbox``: the picture scaled into a frame of another shape with black bars: the 16:9 one
  into a 9:16 phone frame (360x640), the wide one into 16:9 (752x424);
- ``crop_sides``: 10 % of the width cut on each side; ``crop_zoom``: 8 % cut on every side and
  scaled back to the original size; ``crop_corner``: 10 % cut from the left and the top.

Every file goes through the job's decode (``extract.media.video.decode_video``: 1 fps, the CLIP
224 crop) and is hashed as the decode stage does (``phash_frames``, ``middle_hash_frames``). Then:

- distances: per copy frame, the nearest original frame's whole-frame and middle Hamming
  distance; between frames of different segments, the smallest distances (the false-pair margin);
- the search (``find_near_duplicates``, default options but ``middle``): per transform, the
  originals (16:9 first, then wide) are the history and the copies the new day; a copy is
  found when it is paired with its own segment (either shape), a false pair when paired with
  another; and the originals among themselves (every pair there is false).

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
SHAPES = {"16:9": (640, 360), "2.35:1": (752, 320)}
LETTERBOX_FRAME = {"16:9": (360, 640), "2.35:1": (752, 424)}  # the frame each shape is boxed into
BANNERS = tuple(f"banner_{where}_{pct}" for where in ("top", "bottom") for pct in (10, 20, 30))
TRANSFORMS = BANNERS + ("sticker", "letterbox", "crop_sides", "crop_zoom", "crop_corner")


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
    if name == "crop_sides":
        cut = _even(w * 0.10)
        return np.ascontiguousarray(frame[:, cut:w - cut])
    if name == "crop_zoom":
        cy, cx = int(h * 0.08), int(w * 0.08)
        return _resized(np.ascontiguousarray(frame[cy:h - cy, cx:w - cx]), w, h)
    if name == "crop_corner":
        return np.ascontiguousarray(frame[_even(h * 0.10):, _even(w * 0.10):])
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
    """The decode stage's hashes of ``path`` (its CLIP frames): whole-frame and middle, as int."""
    from extract.config import Config
    from extract.media.phash import middle_hash_frames, phash_frames
    from extract.media.video import decode_video
    from extract.models.preprocess import preprocess_spec

    config = Config().replace(**{"signals.motion": False, "signals.shots": False, "output.sounds": False,
                                 "output.thumbnails": 0, "ocr.enabled": False})
    frames = decode_video(str(path), config, preprocess_spec(config.models.clip), audio=False).frames
    return {"phash": phash_frames(frames).tolist(), "phash_middle": middle_hash_frames(frames).tolist()}


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


def _nearest(query: Sequence[int], reference: Sequence[int]) -> np.ndarray:
    from extract.media.phash import hamming

    q, r = np.asarray(query, np.uint64), np.asarray(reference, np.uint64)
    return hamming(q[:, None], r[None, :]).min(axis=1).astype(int)


def distance_summary(items: list[dict[str, Any]], transforms: Sequence[str]) -> dict[str, Any]:
    """Per transform: the nearest original frame's distance of every copy frame, whole-frame and
    middle (median, share within 12 / 10 bits); and the smallest distances between frames of
    different segments."""
    per = {}
    for name in transforms:
        full, mid = (np.concatenate([_nearest(it["hashes"][name][key], it["hashes"]["original"][key]) for it in items])
                     for key in ("phash", "phash_middle"))
        per[name] = {"frames": len(full), "phash_median": float(np.median(full)),
                     "phash_within_12": round(float(np.mean(full <= 12)), 3),
                     "middle_median": float(np.median(mid)), "middle_within_10": round(float(np.mean(mid <= 10)), 3),
                     "either": round(float(np.mean((full <= 12) | (mid <= 10))), 3)}
    # Different segments: every original frame (both shapes) against every other segment's frames.
    from extract.media.phash import hamming

    others = {}
    for key in ("phash", "phash_middle"):
        h = np.concatenate([np.asarray(it["hashes"]["original"][key], np.uint64) for it in items])
        seg = np.concatenate([[it["segment"]] * len(it["hashes"]["original"][key]) for it in items])
        d = hamming(h[:, None], h[None, :]).astype(int)
        other = seg[:, None] != seg[None, :]
        values = d[other]
        others[key] = {"pairs": int(other.sum()), "min": int(values.min()),
                       "q001": float(np.quantile(values, 0.001)), "q01": float(np.quantile(values, 0.01)),
                       "median": float(np.median(values))}
    return {"copies": per, "different_segments": others}


def _tables(entries: list[tuple[str, int, list[int], list[int]]]):
    """``[(video_id, upload order, phash, phash_middle)]`` -> (videos, frames) as the job stores them."""
    import pyarrow as pa

    videos = pa.table({"video_id": [e[0] for e in entries],
                       "upload_ts": pa.array([e[1] for e in entries], pa.timestamp("s", tz="UTC")),
                       "content_sha256": [e[0] for e in entries]})
    frames = pa.table({
        "video_id": [e[0] for e in entries for _ in e[2]],
        "phash": pa.array(np.concatenate([np.asarray(e[2], np.uint64) for e in entries]).view(np.int64)),
        "phash_middle": pa.array(np.concatenate([np.asarray(e[3], np.uint64) for e in entries]).view(np.int64))})
    return videos, frames


def search_summary(items: list[dict[str, Any]], transforms: Sequence[str], middle: bool) -> dict[str, Any]:
    """Recall per transform and shape, and false pairs, of the search with or without middle hashes."""
    from extract.index.near_duplicates import DuplicateOptions, find_near_duplicates

    options = DuplicateOptions(middle=middle)
    order = sorted(items, key=lambda it: (it["shape"] != "16:9", it["segment"]))
    originals = [(f"s{it['segment']:02d}-{it['shape']}-original", k, it["hashes"]["original"]["phash"],
                  it["hashes"]["original"]["phash_middle"]) for k, it in enumerate(order)]
    segment_of = {vid: int(vid[1:3]) for vid, *_ in originals}
    result: dict[str, Any] = {"transforms": {}}
    videos, frames = _tables(originals)
    found = find_near_duplicates(videos, frames, [o[0] for o in originals], options).table.to_pylist()
    false_pairs = [(r["video_id"], r["duplicate_of"]) for r in found
                   if segment_of[r["video_id"]] != segment_of[r["duplicate_of"]]]
    result["originals_false_pairs"] = len(false_pairs)
    for name in transforms:
        copies = [(f"s{it['segment']:02d}-{it['shape']}-{name}", len(order) + k, it["hashes"][name]["phash"],
                   it["hashes"][name]["phash_middle"]) for k, it in enumerate(order)]
        segment_of.update({vid: int(vid[1:3]) for vid, *_ in copies})
        videos, frames = _tables(originals + copies)
        rows = find_near_duplicates(videos, frames, [c[0] for c in copies], options).table.to_pylist()
        paired = {r["video_id"]: r["duplicate_of"] for r in rows}
        per_shape = {}
        for shape in SHAPES:
            ids = [c[0] for c in copies if f"-{shape}-" in c[0]]
            per_shape[shape] = {"copies": len(ids),
                                "found": sum(1 for v in ids if v in paired and segment_of[paired[v]] == segment_of[v])}
        false = [(v, o) for v, o in paired.items() if segment_of[o] != segment_of[v]]
        result["transforms"][name] = {"shapes": per_shape, "false_pairs": len(false)}
        false_pairs += false
    result["false_pairs"] = len(false_pairs)
    # Which segments the false pairs join (a file's segments can show one scene: same-file pairs).
    joined = sorted({tuple(sorted((segment_of[v], segment_of[o]))) for v, o in false_pairs})
    result["false_segment_pairs"] = [
        {"segments": list(pair), "files": [SEGMENTS[k][0] for k in pair],
         "pairs": sum(1 for v, o in false_pairs if sorted((segment_of[v], segment_of[o])) == list(pair))}
        for pair in joined]
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
        "search": {"phash_only": search_summary(items, TRANSFORMS, middle=False),
                   "with_middle": search_summary(items, TRANSFORMS, middle=True)},
        "load_avg": [load_before, load_average()],
        "hashes": [{k: it[k] for k in ("segment", "shape", "hashes")} for it in items],  # to look again
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_overlays.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The result of ``run`` as Markdown: recall per transform and shape, false pairs, distances."""
    before, after = result["search"]["phash_only"], result["search"]["with_middle"]
    dist = result["distances"]
    lines = [f"Near copies under overlays: {result['segments']} segments of 8 s from {len(result['sources'])} real "
             f"peer-media videos, each as 16:9 (640x360) and 2.35:1 (752x320), {result['copies']} copies re-encoded "
             f"(H.264 CRF 23), hashed through the job's decode ({result['make_and_hash_s']:.0f} s to make and hash; "
             f"load {result['load_avg'][0]} -> {result['load_avg'][1]}). Found = paired with its own segment.", "",
             "| copy | 16:9 found, phash only | 16:9 found, + middle | 2.35:1 found, phash only "
             "| 2.35:1 found, + middle | frame distance phash / middle (median) "
             "| false pairs, phash only / + middle |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, after_t in after["transforms"].items():
        before_t = before["transforms"][name]
        cells = []
        for shape in SHAPES:
            for t in (before_t, after_t):
                s = t["shapes"][shape]
                cells.append(f"{s['found']}/{s['copies']}")
        d = dist["copies"][name]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {d['phash_median']:.0f} / {d['middle_median']:.0f} | "
                       f"{before_t['false_pairs']} / {after_t['false_pairs']} |")
    total = {k: sum(t["shapes"][s]["found"] for t in r["transforms"].values() for s in SHAPES)
             for k, r in (("before", before), ("after", after))}
    n = sum(t["shapes"][s]["copies"] for t in after["transforms"].values() for s in SHAPES)
    o = dist["different_segments"]
    lines += ["", f"All copies: {total['before']}/{n} found with phash only, {total['after']}/{n} with middle hashes; "
              f"false pairs (copies and originals against different segments): {before['false_pairs']} and "
              f"{after['false_pairs']}. Frames of different segments lie at least {o['phash']['min']} bits apart "
              f"(phash; 0.1 % quantile {o['phash']['q001']:.0f}) and {o['phash_middle']['min']} bits (middle; "
              f"0.1 % quantile {o['phash_middle']['q001']:.0f}) over {o['phash']['pairs']:,} frame pairs."]
    for key, label in (("phash_only", "phash only"), ("with_middle", "with middle hashes")):
        pairs = result["search"][key].get("false_segment_pairs") or []
        if pairs:
            lines.append(f"False pairs {label}, by the segments they join: " + "; ".join(
                f"{p['segments'][0]} ({p['files'][0]}) ~ {p['segments'][1]} ({p['files'][1]}): {p['pairs']}"
                for p in pairs) + ".")
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
