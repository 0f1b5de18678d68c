"""Decode stage: fetch each row's file and decode it in an isolated child (``DecodeStage``).

What a row gets (``DecodeStage``; columns in ``extract.rows``):

- the probe (``extract.media.probe``): container, codecs, display size after rotation, fps, bitrate,
  duration, plus ``content_sha256`` and ``file_bytes`` from the streamed fetch;
- ``frames`` ``(n, S, S, 3) uint8`` and ``pts_s`` ``(n,) float32``: for each sampling target
  (``extract.media.sampling``) the first frame presented at or after it, with its real time in
  seconds from the video stream's start. Frames are scaled by libswscale (``frame.reformat``)
  straight to open_clip's ``preprocess_val`` geometry: shorter side to ``S`` with the model's
  interpolation, then the centre ``S`` x ``S`` crop (``resize_mode`` ``longest`` pads, ``squash``
  stretches). Rotation metadata is applied, so a portrait phone video gives portrait frames.
  Against open_clip's PIL path on the same decoded picture (``tests/test_decode.py``) the
  tolerance is a mean absolute difference under 1.5 of 255 and a 99th percentile of at most 6
  (measured: about 0.85 and 3-4); the larger differences sit on hard colour edges, where
  swscale scales 4:2:0 chroma at its own resolution while the reference converts to full-size
  RGB first. Normalisation (mean/std) happens later, on the device.
- ``audio`` ``(m,) float32``: the audio stream FFmpeg would pick for the video (as the video
  stream is FFmpeg's pick, never cover art; ``video_stream_index``/``audio_stream_index`` and
  ``n_video_streams``/``n_audio_streams`` record the choice) resampled by ``av.AudioResampler`` to
  16 kHz mono (no ffmpeg binary); empty with ``has_audio = False`` when there is none. A
  mid-stream change of rate or layout starts a new resampler; where the codec headers state a
  rate that the stream's timestamps consistently contradict, the timestamps win
  (``AudioRateCheck``), so the audio spans what the container says. The audio is placed on
  the video's timeline (``align_to_video``): a track that starts after the first frame is
  preceded by silence, so transcript times are video times.
- ``phash`` ``(n,) int64``: the 64-bit DCT perceptual hash of each sampled frame
  (``extract.media.phash``; the uint64 bits as two's-complement int64), from the CLIP frames
  already decoded; ``phash_middle`` ``(n,) int64`` (``output.middle_hashes``, else empty): the
  same hash of each frame's middle band with letterbox bars cut (``middle_hash_frames``);
  ``phash_zoom`` ``(n, len(ZOOMS)) int64`` (``output.zoom_hashes``, else ``(0, len(ZOOMS))``): the
  hashes of each frame's centre squares at the zooms ``ZOOMS`` (``zoom_hash_frames``);
- ``ocr_frames`` ``(k, h, w, 3) uint8`` and ``ocr_frame_index`` ``(k,) int32``: with ``ocr.enabled``,
  up to ``ocr.max_frames`` of the sampled frames (spread over the video) as whole pictures,
  long side at most ``ocr.max_side``, scaled from the same decoded frames (no second decode,
  except for the ``scene`` policy, which re-reads those few by seeking);
- ``thumbnail_jpeg`` ``(b,) uint8``, ``thumbnail_bytes`` ``(t,) int32`` and ``thumbnail_index``
  ``(t,) int32``: with ``output.thumbnails`` = N > 0, up to N of the sampled frames (spread over
  the video) as JPEG files back to back (``thumbnail_bytes``: the length of each, in order;
  ``thumbnail_index``: the frame each shows), whole pictures in display orientation with the
  long side at most 160 px, encoded in the decode child from the frames it decoded (see
  ``extract.rows.thumbnails_of``); stored as ``frame_embeddings.thumbnail_jpeg`` for the run report.
- ``sound_fingerprint`` ``(l + 1,) int64``: with ``output.sounds``, the audio's landmark codes
  (``extract.media.fingerprint``, computed in the decode child from the 16 kHz audio it
  decoded) after the format's header (``fingerprint.stored``), empty without audible audio;
  stored packed (empty = null); ``sound_keys`` the same for the sample of them
  (``fingerprint.sample``), which the history search scans.
- ``motion_score`` float|None and ``motion_source`` str|None (``signals.motion``), ``shot_frames``
  ``(n, 27, 48, 3) uint8`` and ``shot_pts_s`` ``(n,) float32`` (``signals.shots``): one more pass over
  every frame in the child (``extract.media.pace``); the shot frames are consumed by the CLIP stage.

How frames are reached (seeks, dropped non-reference frames) and how truncated or corrupt files
end is in ``extract.media.video``; the child processes and their limits in ``extract.media.isolation``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from typing import Any, Iterator

import numpy as np

from extract.config import Config
from extract.config.machine import resolved_here
from extract.media.fingerprint import sample, stored
from extract.media.isolation import DecodeJob, DecodePool
from extract.media.pace import Pace
from extract.media.phash import ZOOMS, middle_hash_frames, phash_frames, zoom_hash_frames
from extract.media.video import DecodedVideo
from extract.rows import (REUSED_INPUTS, VideoError, batch_to_rows, is_failed, mark_exception, mark_failed,
                          matching_candidate, rows_to_batch)
from extract.stages.registry import DECODE

STAGE = DECODE.name


DECODE_COLUMNS = DECODE.columns  # declared on the registry entry


PROBE_COLUMNS = ("container", "video_codec", "audio_codec", "duration_s", "width", "height", "rotation", "fps",
                 "bitrate", "has_audio", "video_stream_index", "audio_stream_index", "n_video_streams",
                 "n_audio_streams")


def decode_columns(result: DecodedVideo | None, image_size: int, policy: str,
                   content_sha256: str | None = None, file_bytes: int | None = None,
                   middle_hashes: bool = True, zoom_hashes: bool = True) -> dict[str, Any]:
    """The decode columns of a row (``extract.rows``); a failed row (``result`` None) gets empty
    tensors of the right trailing shape and None elsewhere. ``middle_hashes``, ``zoom_hashes``:
    ``output.middle_hashes``, ``.zoom_hashes``."""
    if result is None:
        row: dict[str, Any] = {name: None for name in DECODE_COLUMNS}
        row.update(content_sha256=content_sha256, file_bytes=file_bytes)
        row.update(frames=np.zeros((0, image_size, image_size, 3), np.uint8), pts_s=np.zeros(0, np.float32),
                   audio=np.zeros(0, np.float32), ocr_frames=np.zeros((0, 0, 0, 3), np.uint8),
                   ocr_frame_index=np.zeros(0, np.int32), phash=np.zeros(0, np.int64),
                   phash_middle=np.zeros(0, np.int64), phash_zoom=np.zeros((0, len(ZOOMS)), np.int64),
                   thumbnail_jpeg=np.zeros(0, np.uint8), thumbnail_bytes=np.zeros(0, np.int32),
                   thumbnail_index=np.zeros(0, np.int32), sound_fingerprint=np.zeros(0, np.int64),
                   sound_keys=np.zeros(0, np.int64),
                   shot_frames=Pace().shot_frames, shot_pts_s=Pace().shot_pts_s)
        return row
    probe = result.probe
    row = {name: getattr(probe, name) for name in PROBE_COLUMNS}
    row.update(reused_from=None, reused_dt=None, reused_inputs=None,
               content_sha256=content_sha256, file_bytes=file_bytes, frames=result.frames, pts_s=result.pts_s,
               n_frames=int(len(result.frames)), sampling_policy=policy, audio=result.audio,
               audio_s=float(result.audio_s), ocr_frames=result.ocr_frames, ocr_frame_index=result.ocr_index,
               # two's-complement int64 of the 64-bit pHash (Delta/Parquet have no unsigned 64-bit type)
               phash=phash_frames(result.frames).view(np.int64),
               phash_middle=(middle_hash_frames(result.frames).view(np.int64) if middle_hashes
                             else np.zeros(0, np.int64)),
               phash_zoom=(zoom_hash_frames(result.frames).view(np.int64) if zoom_hashes
                           else np.zeros((0, len(ZOOMS)), np.int64)),
               thumbnail_jpeg=np.frombuffer(b"".join(result.thumbnails), np.uint8),
               thumbnail_bytes=np.asarray([len(j) for j in result.thumbnails], np.int32),
               thumbnail_index=result.thumbnail_index.astype(np.int32, copy=False),
               sound_fingerprint=stored(result.sound_fingerprint), sound_keys=stored(sample(result.sound_fingerprint)),
               motion_score=result.pace.motion_score, motion_source=result.pace.motion_source,
               shot_frames=result.pace.shot_frames, shot_pts_s=result.pace.shot_pts_s)
    return {name: row[name] for name in DECODE_COLUMNS}


class DecodeStage:
    """Rows with ``uri`` -> rows with the decode columns (``extract.rows``), stage name ``decode``.

    ``__init__`` resolves the CLIP input size (``preprocess_spec``, no weights) and starts a
    ``DecodePool`` of ``processes`` children (1: a Ray decode actor owns one CPU). Each row's
    file is fetched with ``storage.fetch`` (streamed sha256, size limit, remote objects copied
    to a temporary file that is deleted after decoding) when a child is idle, and decoded
    there, so several children never wait for each other. A file whose sha256 equals one of
    the row's ``reuse_candidates`` is not decoded: the row gets ``reused_from`` instead
    (``extract.pipeline.reuse``). Failures become error rows; already-failed rows pass through.
    """

    def __init__(self, config: Config, processes: int = 1):
        from extract.models.preprocess import preprocess_spec

        config = self.config = resolved_here(config)  # a stage built outside a run plans for this machine
        self.spec = preprocess_spec(config.models.clip)
        self.pool = DecodePool(config, self.spec, processes)

    def _fail(self, row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        mark_exception(row, STAGE, exc)
        row.update(decode_columns(None, self.spec.image_size, self.config.sampling.policy))
        return row

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from extract.io.storage import fetch

        rows = batch_to_rows(batch)
        size, policy = self.spec.image_size, self.config.sampling.policy
        todo = []
        for row in rows:
            row.setdefault("reuse_candidates", None)
            if is_failed(row):
                row.update(decode_columns(None, size, policy))
            else:
                todo.append(row)
        fetched: list[tuple[dict[str, Any], str, str, int]] = []  # (row, local path, sha256, bytes) per job
        reused: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (row, the committed video with its bytes)
        with tempfile.TemporaryDirectory(prefix="extract-decode-") as tmp:

            def jobs() -> Iterator[DecodeJob]:  # fetched just in time: a child is idle when asked
                for row in todo:
                    try:
                        path, digest, n_bytes = fetch(row["uri"], tmp, self.config.storage,
                                                      self.config.limits.max_file_bytes)
                        if n_bytes == 0:
                            raise VideoError("UnsupportedFormat", f"{row['uri']!r} is empty (0 bytes)")
                    except Exception as exc:  # noqa: BLE001 - per-video failure, recorded on the row
                        self._fail(row, exc)
                        continue
                    original = matching_candidate(row, digest)
                    if original is not None:  # committed bytes: nothing to decode (module doc)
                        if path.startswith(tmp):
                            os.unlink(path)
                        row.update(decode_columns(None, size, policy, digest, n_bytes))
                        reused.append((row, original))
                        continue
                    fetched.append((row, path, digest, n_bytes))
                    yield DecodeJob(str(row["video_id"]), path)

            def finish(index: int, result: DecodedVideo | VideoError) -> None:
                row, path, digest, n_bytes = fetched[index]
                if path.startswith(tmp):
                    os.unlink(path)  # a fetched copy lives only while its video decodes
                if isinstance(result, VideoError):
                    self._fail(row, result)
                else:
                    row.update(decode_columns(result, size, policy, digest, n_bytes,
                                              self.config.output.middle_hashes, self.config.output.zoom_hashes))

            self.pool.map(jobs(), finish)
        self._reuse(reused)
        for row in rows:
            row.pop("reuse_candidates", None)  # used up here
        return rows_to_batch(rows)

    def _reuse(self, reused: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Point rows whose bytes are committed at that video: ``reused_from``, ``reused_dt`` and
        ``reused_inputs`` (its text inputs, read per table version and partition)."""
        from extract.tables.catalog import committed_rows

        groups: dict[tuple[str, int, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
        for row, original in reused:
            groups[(original["table"], original["version"], original["dt"])].append((row, original))
        for (table, version, dt), members in groups.items():
            try:
                found = {rec["video_id"]: rec for rec in committed_rows(
                    table, version, self.config.storage, dt, [o["video_id"] for _, o in members],
                    ["video_id", *REUSED_INPUTS])}
            except Exception as exc:  # noqa: BLE001 - the store failed: these videos retry later
                for row, _ in members:
                    mark_failed(row, STAGE, "StoreError",
                                f"{row['video_id']!r}: its bytes equal a committed video's, which could not be "
                                f"read ({type(exc).__name__}: {exc}); retry with --retry-errors", retryable=True)
                continue
            for row, original in members:
                inputs = found.get(original["video_id"])
                if inputs is None:
                    mark_failed(row, STAGE, "ReuseLost", f"{row['video_id']!r}: the committed video "
                                f"{original['video_id']!r} with its bytes is gone; retry with --retry-errors",
                                retryable=True)
                    continue
                row.update(reused_from=original["video_id"], reused_dt=dt,
                           reused_inputs=json.dumps({k: inputs.get(k) for k in REUSED_INPUTS}))

    def close(self) -> None:
        """Stop the decode processes (also happens when the stage is garbage-collected)."""
        self.pool.close()
