"""The naive baseline: what a user writes without this project, one video after another.

Per video, in one process, with the same models and the same sampling policy as the job:

1. decode: open the file with PyAV and decode *every* frame of the video stream (no seeks,
   no frame skipping, PyAV's default threading); keep, for each ``sampling`` timestamp
   (``extract.media.sampling.sample_timestamps``: 1 fps, 4 to 32 frames), the first frame at or
   after it as a full-size PIL image (``frame.to_image()``); the audio as 16 kHz mono float32
   (``extract.media.audio.decode_audio``, the job's own audio path: there is no ffmpeg binary for
   ``whisper.load_audio``, and audio is not where the two pipelines differ).
2. preprocess: open_clip's ``preprocess_val`` on each PIL image, stacked into one tensor.
3. clip: ``model.encode_image`` on that video's frames, L2-normalised.
4. whisper: ``whisper.transcribe(model, audio)`` with the configured temperature fallback
   ladder and thresholds (its defaults otherwise: condition on previous text, language
   detection from the first 30 s).
5. text: hashtags and CLIP text embeddings of caption, hashtag prompts and transcript
   (``extract.text.features.add_text_features``, so the outputs match the job's), with one
   ``encode_text`` call per video.
6. write: rows are appended to lists and written once at the end as three Parquet files
   (``videos``, ``frame_embeddings``, ``transcript_segments``, zstd) with inferred schemas.

There is no error handling on purpose (one bad file stops the run), as in such a script; the
bench clips are all valid. ``run_naive`` returns a record shaped like the job's run manifest
(``counts``, ``timings_s`` per step, ``wall_s``, ``throughput``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from extract.config import Config, SamplingConfig, WhisperConfig
from extract.media.audio import AUDIO_RATE
from extract.media.sampling import TIME_EPS_S


def load_models(config: Config, device: str) -> tuple[Any, Any, Any, Any]:
    """``(clip_model, preprocess_val, tokenizer, whisper_model)`` on ``device``.

    CLIP through ``open_clip.create_model_and_transforms`` with the job's random-init seed
    (``extract.models.common.INIT_SEED``), so a random model has the job's weights; Whisper through
    ``whisper.load_model``.
    """
    import open_clip
    import torch
    import whisper

    from extract.models.common import INIT_SEED
    from extract.models.preprocess import register_model_config

    clip_cfg = config.models.clip
    register_model_config(clip_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model, _, preprocess_val = open_clip.create_model_and_transforms(
            clip_cfg.name, pretrained=clip_cfg.pretrained, device=device, cache_dir=clip_cfg.cache_dir)
    tokenizer = open_clip.get_tokenizer(clip_cfg.name, cache_dir=clip_cfg.cache_dir)
    whisper_cfg = config.models.whisper
    asr = whisper.load_model(whisper_cfg.name, device=device, download_root=whisper_cfg.download_root)
    return model.eval(), preprocess_val, tokenizer, asr


def preprocess_val_transform(config: Config) -> Any:
    """open_clip's ``preprocess_val`` for ``config.models.clip`` without building the model:
    ``image_transform_v2`` of the same preprocessing config ``create_model_and_transforms`` uses."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from extract.models.preprocess import preprocess_spec

    spec = preprocess_spec(config.models.clip)
    return image_transform_v2(PreprocessCfg(size=spec.image_size, mean=spec.mean, std=spec.std,
                                            interpolation=spec.interpolation, resize_mode=spec.resize_mode),
                              is_train=False)


def decode_all_then_pick(path: str | Path, sampling: SamplingConfig, threads: int = 0,
                         convert: Callable[[Any], Any] = lambda frame: frame.to_image(),
                         convert_all: bool = False) -> tuple[list[Any], list[float], int]:
    """Decode every frame of ``path``; keep ``convert(frame)`` of the first frame at or after each
    timestamp of ``sampling`` (seconds from the video stream's start), as a script would.

    ``threads``: FFmpeg decoder threads (0: PyAV's default). ``convert_all``: convert every
    decoded frame, not only the kept ones (a script that converts before it picks). A video
    that ends early repeats its last frame. Returns ``(kept, their times in s, frames decoded)``.
    """
    import av

    from extract.media.sampling import sample_timestamps

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.codec_context.thread_count = threads
            stream.codec_context.thread_type = "AUTO"
        start = float((stream.start_time or 0) * stream.time_base)
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / av.time_base
        targets = sample_timestamps(duration, sampling)
        kept: list[Any] = []
        times: list[float] = []
        last, n_decoded = None, 0
        for frame in container.decode(stream):
            n_decoded += 1
            t = float(frame.time) - start
            last = frame
            image = convert(frame) if convert_all else None
            # Targets this frame serves: those at or before it not served yet.
            n_served = int(np.searchsorted(targets, t + TIME_EPS_S, side="right"))
            if n_served > len(kept):
                image = convert(frame) if image is None else image
                times.extend([t] * (n_served - len(kept)))
                kept.extend([image] * (n_served - len(kept)))
        if last is not None and len(kept) < len(targets):  # the video ended early
            image = convert(last)
            times.extend([float(last.time) - start] * (len(targets) - len(kept)))
            kept.extend([image] * (len(targets) - len(kept)))
    return kept, times, n_decoded


def transcribe_one(model: Any, audio: np.ndarray, cfg: WhisperConfig, fp16: bool) -> dict[str, Any]:
    """``whisper.transcribe`` of one ``(m,) float32`` 16 kHz audio with the job's language, task,
    temperature ladder and thresholds (whisper's defaults otherwise)."""
    import whisper

    return whisper.transcribe(model, audio, language=cfg.language, task=cfg.task, temperature=tuple(cfg.temperatures),
                              compression_ratio_threshold=cfg.compression_ratio_threshold,
                              logprob_threshold=cfg.logprob_threshold, no_speech_threshold=cfg.no_speech_threshold,
                              fp16=fp16)


def run_naive(manifest: str | Path, out_dir: str | Path, config: Config) -> dict[str, Any]:
    """Process every video of ``manifest`` (a ``.jsonl`` the job also reads) into ``out_dir``.

    Returns ``{"counts", "tables", "timings_s", "cpu_s", "per_video_s", "wall_s", "throughput",
    "audio_s", "device"}``
    (``audio_s``: seconds of 16 kHz audio decoded, as in the job's run manifest);
    ``timings_s`` has ``load`` (models), ``decode``, ``preprocess``, ``clip``, ``whisper``,
    ``text`` and ``write`` seconds; ``load`` includes importing torch, open_clip and whisper,
    as the job's wall time includes its workers' imports. ``cpu_s``: the same steps' CPU
    seconds (every thread of the process); ``per_video_s``: each video's wall seconds, decode to
    text features (what a subset of the videos costs without the load and the write).
    """
    t0 = time.perf_counter()
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import torch.nn.functional as F

    from extract.media.audio import decode_audio
    from extract.models.common import resolve_device
    from extract.pipeline.manifest import read_source
    from extract.text.features import add_text_features
    from extract.text.language import LanguageDetector

    timings: Counter = Counter()
    cpu: Counter = Counter()  # step -> CPU seconds of this process (every thread)
    per_video: dict[str, float] = {}  # video_id -> wall seconds of its steps
    device = resolve_device(config.runtime.device)
    model, preprocess_val, tokenizer, asr = load_models(config, device)
    languages = LanguageDetector() if config.signals.language else None
    timings["load"] += time.perf_counter() - t0
    cpu["load"] += time.process_time()

    def encode_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            features = model.encode_text(tokenizer(texts).to(device))
        # A script like this does not track which texts the tokenizer cut.
        return F.normalize(features.float(), dim=-1).cpu().numpy(), np.zeros(len(texts), bool)

    wcfg = config.whisper
    videos, frames_out, segments_out = [], [], []
    audio_s = 0.0
    for source in read_source(str(manifest), config.storage, allowed_uris=config.input.allowed_uris):
        path = source["uri"]
        video_start = time.perf_counter()
        t = time.perf_counter()
        c = time.process_time()
        images, times, _ = decode_all_then_pick(path, config.sampling)
        audio = decode_audio(path, config.limits)
        timings["decode"] += time.perf_counter() - t
        cpu["decode"] += time.process_time() - c

        t = time.perf_counter()

        c = time.process_time()
        pixels = torch.stack([preprocess_val(image) for image in images]).to(device)
        timings["preprocess"] += time.perf_counter() - t
        cpu["preprocess"] += time.process_time() - c

        t = time.perf_counter()

        c = time.process_time()
        with torch.no_grad():
            embeddings = F.normalize(model.encode_image(pixels).float(), dim=-1).cpu().numpy()
        timings["clip"] += time.perf_counter() - t
        cpu["clip"] += time.process_time() - c

        t = time.perf_counter()

        c = time.process_time()
        result = {"text": "", "language": None, "segments": []}
        if len(audio):
            result = transcribe_one(asr, audio, wcfg, fp16=device == "cuda")
        timings["whisper"] += time.perf_counter() - t
        cpu["whisper"] += time.process_time() - c
        audio_s += len(audio) / AUDIO_RATE

        t = time.perf_counter()

        c = time.process_time()
        pooled = embeddings.mean(axis=0)
        pooled /= np.linalg.norm(pooled)
        row = {"video_id": source["video_id"], "uri": path, "caption": source.get("caption"),
               "n_frames": len(images), "clip_embedding": pooled.astype(np.float32),
               "transcript_text": result["text"].strip(), "language": result["language"]}
        add_text_features([row], encode_texts=encode_texts, config=config,
                          detect_language=languages.detect if languages is not None else None)
        timings["text"] += time.perf_counter() - t
        cpu["text"] += time.process_time() - c

        per_video[source["video_id"]] = time.perf_counter() - video_start
        videos.append({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()})
        frames_out.extend({"video_id": row["video_id"], "frame_index": i, "pts_s": times[i],
                           "embedding": embeddings[i].tolist()} for i in range(len(images)))
        segments_out.extend({"video_id": row["video_id"], "segment_index": i, "start_s": s["start"],
                             "end_s": s["end"], "text": s["text"].strip(), "avg_logprob": s["avg_logprob"],
                             "no_speech_prob": s["no_speech_prob"], "compression_ratio": s["compression_ratio"]}
                            for i, s in enumerate(result["segments"]))

    t = time.perf_counter()

    c = time.process_time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"videos": videos, "frame_embeddings": frames_out, "transcript_segments": segments_out}
    for name, records in tables.items():
        if records:
            pq.write_table(pa.Table.from_pylist(records), out_dir / f"{name}.parquet", compression="zstd")
    timings["write"] += time.perf_counter() - t
    cpu["write"] += time.process_time() - c
    wall = time.perf_counter() - t0
    return {
        "device": device,
        "counts": {"processed": len(videos), "ok": len(videos), "errors": 0},
        "tables": {name: len(records) for name, records in tables.items()},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "per_video_s": {k: round(v, 3) for k, v in per_video.items()},
        "wall_s": round(wall, 3),
        "throughput": {"videos_per_s": round(len(videos) / wall, 3),
                       "frames_per_s": round(len(frames_out) / wall, 2),
                       "audio_s_per_s": round(audio_s / wall, 2)},
        "audio_s": round(audio_s, 3),
    }


def read_outputs(out_dir: str | Path) -> dict[str, Any]:
    """The naive run's tables as ``{table: pyarrow.Table}`` (missing tables are left out)."""
    import pyarrow.parquet as pq

    return {p.stem: pq.read_table(p) for p in sorted(Path(out_dir).glob("*.parquet"))}


if __name__ == "__main__":
    import argparse

    from extract.config import load_config

    parser = argparse.ArgumentParser(description="Run the naive baseline on a manifest.")
    parser.add_argument("manifest")
    parser.add_argument("out_dir")
    parser.add_argument("--config", action="append", default=[], help="YAML config file (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="key=value override")
    args = parser.parse_args()
    print(json.dumps(run_naive(args.manifest, args.out_dir, load_config(args.config, args.overrides)), indent=2))
