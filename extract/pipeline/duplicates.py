"""``extract duplicates``: near copies and re-uploads of new videos among all committed videos.

For the videos committed in partitions ``dt >= since`` (default: the dates the latest
processing run wrote), ``extract.index.near_duplicates.find_near_duplicates`` finds the
earliest earlier committed copy of each: ``exact`` by ``content_sha256``, ``near`` by LSH
banding of the frames' perceptual hashes (``frame_embeddings.phash``, ``phash_middle``, ``phash_zoom``),
confirmed by the share of matching frames and the pooled CLIP cosine (read only for the
candidate pairs). The cost grows with the new videos, not with the history squared: the history
is read as four narrow columns (ids, the three hash columns; the frames' ids dictionary-encoded)
and scanned once per band.

The result is one committed run (kind ``duplicates``) through the same commit path as every
run: the ``duplicates`` rows of the searched videos are replaced in one Delta commit, the
other tables get an empty commit carrying the run's app transaction, and the run record lists
what was searched and found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extract.config import Config
from extract.index.near_duplicates import MIDDLE_COLUMN, ZOOM_COLUMN, DuplicateOptions, find_near_duplicates
from extract.tables.catalog import Catalog
from extract.tables.session import RunSession
from extract.tables.writer import in_predicate



def check_searchable(catalog: Catalog) -> None:
    """Raise ``OutputLayoutError`` for an output that is not ours, ValueError when it has no
    committed processing run (nothing for a search after a commit to cover)."""
    catalog.check()
    if not any(r.get("kind") == "run" for r in catalog.runs):
        raise ValueError(f"{catalog.dst}: no committed processing run to search (run `extract run` first)")


def search_start(catalog: Catalog, since: str | None) -> str:
    """``since`` (ISO date), or the earliest upload day (``dt``) the latest processing run wrote:
    where a search over the new videos starts (a day after every one when it wrote none)."""
    if since is not None:
        return since
    latest = [r for r in catalog.runs if r.get("kind") == "run"][-1]["run_id"]
    written = catalog.read("videos", ["dt"], filter=pc.field("run_id") == latest)
    return min(written["dt"].to_pylist()) if written is not None and written.num_rows else "9999-12-31"

def find_duplicates(dst: str, config: Config, run_id: str | None = None, since: str | None = None,
                    options: DuplicateOptions = DuplicateOptions()) -> dict[str, Any]:
    """Search the new videos of ``dst`` (``dt >= since``, ISO date) and commit the ``duplicates``
    rows; returns the run record. Raises ``OutputLayoutError`` for an output that is not ours."""
    catalog = Catalog(dst, config.storage)
    check_searchable(catalog)
    with RunSession.open(catalog, "duplicates", run_id, writes=True,
                         max_rows_per_file=config.output.max_rows_per_file) as session:
        videos = catalog.read("videos", ["video_id", "upload_ts", "content_sha256", "dt"])
        since = search_start(catalog, since)
        new_ids = pc.filter(videos["video_id"], pc.greater_equal(videos["dt"], since))
        frames = catalog.read("frame_embeddings", ["video_id", "phash", MIDDLE_COLUMN, ZOOM_COLUMN],
                              dictionary=["video_id"])
        dim = session.embedding_dim

        def embeddings(ids: list[str]) -> np.ndarray:
            found = catalog.read("videos", ["video_id", "clip_embedding"],
                                 filter=pc.field("video_id").isin(pa.array(ids, pa.string())))
            by_id = {vid: emb for vid, emb in zip(found["video_id"].to_pylist(), found["clip_embedding"].to_pylist())}
            return np.array([by_id.get(i) or [np.nan] * dim for i in ids], np.float32).reshape(len(ids), dim)

        search = find_near_duplicates(videos.drop_columns(["dt"]), frames, new_ids, options, embeddings)
        found = search.table
        dts = videos["dt"].take(pc.index_in(found["video_id"], value_set=videos["video_id"].combine_chunks()))
        dts = dts.cast(pa.string()).combine_chunks()
        found = found.append_column("run_id", pa.array([session.run_id] * found.num_rows, pa.string()))
        for dt in sorted(set(dts.to_pylist())):  # a copy's row lives in its own upload date's partition
            session.write({("duplicates", dt): found.filter(pc.equal(dts, dt))})
        kinds = pc.value_counts(found["kind"]).to_pylist() if found.num_rows else []
        matched = len(pc.unique(found["video_id"])) if found.num_rows else 0
        record = session.record(
            since=since,
            options={k: getattr(options, k) for k in ("max_hamming", "max_hamming_middle", "min_match_fraction",
                                                      "min_clip_cosine", "bands", "band_bits", "mirrored", "middle",
                                                      "middle_bands", "max_hamming_zoom", "zoom", "zoom_bands")},
            counts={"searched": len(new_ids), "history": videos.num_rows, "duplicates": found.num_rows,
                    "matched": matched, "unmatched": len(new_ids) - matched,
                    **{f"kind_{k['values']}": k["counts"] for k in kinds}},
            search={k: v for k, v in vars(search.stats).items() if isinstance(v, (int, float, str))},
            timings_s={phase: round(s, 3) for phase, s in search.stats.phase_seconds.items()},
            schema_evolution=session.evolved,
        )
        ids = new_ids.to_pylist()
        return session.commit(record, {"duplicates": in_predicate("video_id", ids) if ids else "false"})


def describe_duplicates(record: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    c = record["counts"]
    kinds = ", ".join(f"{k[5:]} {v}" for k, v in c.items() if k.startswith("kind_")) or "none"
    return (f"duplicates run {record['run_id']}: searched {c['searched']} videos (dt >= {record['since']}) against "
            f"{c['history']} committed; found {c['duplicates']} ({kinds}) in {record['wall_s']:.1f} s")
