"""``extract duplicates``: near copies and re-uploads of new videos among all committed videos.

For the videos committed in partitions ``dt >= since`` (default: the dates the latest
processing run wrote), ``extract.media.near_duplicates.find_near_duplicates`` finds the
earliest earlier committed copy of each: ``exact`` by ``content_sha256``, ``near`` by LSH
banding of the frames' perceptual hashes (``frame_embeddings.phash``), confirmed by the share
of matching frames and the pooled CLIP cosine (read only for the candidate pairs). The cost
grows with the new videos, not with the history squared: the history is read as two narrow
columns (ids, hashes; the frames' ids dictionary-encoded) and scanned once per band.

The result is one committed run (kind ``duplicates``) through the same commit path as every
run: the ``duplicates`` rows of the searched videos are replaced in one Delta commit, the
other tables get an empty commit carrying the run's app transaction, and the run record lists
what was searched and found.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extract import __version__
from extract.config import Config
from extract.media.near_duplicates import DuplicateOptions, find_near_duplicates
from extract.tables.catalog import Catalog
from extract.tables.evolution import evolve_tables
from extract.tables.writer import RunWriter, commit_run, ensure_tables, in_predicate, roll_forward


def find_duplicates(dst: str, config: Config, run_id: str, since: str | None = None,
                    options: DuplicateOptions = DuplicateOptions()) -> dict[str, Any]:
    """Search the new videos of ``dst`` (``dt >= since``, ISO date) and commit the ``duplicates``
    rows; returns the run record. Raises ``OutputLayoutError`` for an output that is not ours."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    catalog = Catalog(dst, config.storage)
    catalog.check()
    processing = [r for r in catalog.runs if r.get("kind") == "run"]
    if not processing:
        raise ValueError(f"{dst}: no committed processing run to search (run `extract run` first)")
    evolved = evolve_tables(catalog, _embedding_dim(catalog), run_id)
    roll_forward(catalog)
    videos = catalog.read("videos", ["video_id", "upload_ts", "content_sha256", "dt"])
    if since is None:  # the dates the latest processing run wrote
        latest = processing[-1]["run_id"]
        written = catalog.read("videos", ["dt"], filter=pc.field("run_id") == latest)
        since = min(written["dt"].to_pylist()) if written is not None and written.num_rows else "9999-12-31"
    new_ids = pc.filter(videos["video_id"], pc.greater_equal(videos["dt"], since))
    frames = catalog.read("frame_embeddings", ["video_id", "phash"], dictionary=["video_id"])
    dim = _embedding_dim(catalog)

    def embeddings(ids: list[str]) -> np.ndarray:
        found = catalog.read("videos", ["video_id", "clip_embedding"],
                             filter=pc.field("video_id").isin(pa.array(ids, pa.string())))
        by_id = {vid: emb for vid, emb in zip(found["video_id"].to_pylist(), found["clip_embedding"].to_pylist())}
        return np.array([by_id.get(i) or [np.nan] * dim for i in ids], np.float32).reshape(len(ids), dim)

    search = find_near_duplicates(videos.drop_columns(["dt"]), frames, new_ids, options, embeddings)
    found = search.table
    writer = RunWriter(catalog, run_id, dim, ensure_tables(catalog, dim), catalog.next_seq,
                       config.output.max_rows_per_file)
    dts = videos["dt"].take(pc.index_in(found["video_id"], value_set=videos["video_id"].combine_chunks()))
    dts = dts.cast(pa.string()).combine_chunks()
    found = found.append_column("run_id", pa.array([run_id] * found.num_rows, pa.string()))
    try:
        for dt in sorted(set(dts.to_pylist())):  # a copy's row lives in its own upload date's partition
            writer.write({("duplicates", dt): found.filter(pc.equal(dts, dt))})
    except BaseException:
        writer.abort()
        raise
    n_new = len(new_ids)
    kinds = pc.value_counts(found["kind"]).to_pylist() if found.num_rows else []
    record = {
        "run_id": run_id, "kind": "duplicates", "status": "committed", "started_at": started.isoformat(),
        "pipeline_version": __version__, "output": dst, "since": since,
        "options": {k: getattr(options, k) for k in ("max_hamming", "min_match_fraction", "min_clip_cosine",
                                                      "bands", "band_bits", "mirrored")},
        "counts": {"searched": n_new, "history": videos.num_rows, "duplicates": found.num_rows,
                   **{f"kind_{k['values']}": k["counts"] for k in kinds}},
        "search": {k: v for k, v in vars(search.stats).items() if isinstance(v, (int, float, str))},
        "wall_s": round(time.perf_counter() - t0, 3), "schema_evolution": evolved,
    }
    ids = new_ids.to_pylist()
    return commit_run(writer, record, {"duplicates": in_predicate("video_id", ids) if ids else "false"})


def _embedding_dim(catalog: Catalog) -> int:
    from extract.tables.schemas import embedding_dim_of

    return embedding_dim_of(catalog.open_table("videos").schema().to_arrow())


def describe_duplicates(record: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    c = record["counts"]
    kinds = ", ".join(f"{k[5:]} {v}" for k, v in c.items() if k.startswith("kind_")) or "none"
    return (f"duplicates run {record['run_id']}: searched {c['searched']} videos (dt >= {record['since']}) against "
            f"{c['history']} committed; found {c['duplicates']} ({kinds}) in {record['wall_s']:.1f} s")
