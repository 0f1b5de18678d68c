"""``extract sounds``: the sound of each new video among all committed videos' audio.

For the videos committed in partitions ``dt >= since`` (default: the dates the latest
processing run wrote), ``extract.index.sounds.find_same_sounds`` matches their audio
fingerprints (``videos.sound_fingerprint``) against the history's samples
(``videos.sound_keys``, a quarter of the landmarks), read one upload day at a time (two narrow
columns; a day's samples, not the history's, are in memory), reads the full fingerprints of the
few history videos whose samples agree with a new video's, and names each new video's sound by
its earliest video. The cost is one pass over the history's samples plus the day; videos that
already have a sound are not scanned.

The result is one committed run (kind ``sounds``) through the same commit path as every run:
the ``sound_matches`` rows of the searched videos are replaced in one Delta commit, the other
tables get an empty commit carrying the run's app transaction, and the run record lists what
was searched and found. Earlier videos' rows are never rewritten: a video's sound is
``COALESCE(sound_matches.sound_id, video_id)`` (docs/QUERIES.md), so a new video joining a
sound adds its own row only.
"""

from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from extract.config import Config
from extract.index.sounds import SoundOptions, find_same_sounds
from extract.pipeline.duplicates import check_searchable, search_start
from extract.tables.catalog import Catalog
from extract.tables.session import RunSession
from extract.tables.writer import in_predicate


def find_sounds(dst: str, config: Config, run_id: str | None = None, since: str | None = None,
                options: SoundOptions = SoundOptions()) -> dict[str, Any]:
    """Search the new videos of ``dst`` (``dt >= since``, ISO date) and commit their
    ``sound_matches`` rows; returns the run record. Raises ``OutputLayoutError`` for an output
    that is not ours, ValueError when it has no processing run."""
    catalog = Catalog(dst, config.storage)
    check_searchable(catalog)
    with RunSession.open(catalog, "sounds", run_id, writes=True,
                         max_rows_per_file=config.output.max_rows_per_file) as session:
        videos = catalog.read("videos", ["video_id", "upload_ts", "dt"])
        since = search_start(catalog, since)
        days = sorted(pc.unique(videos["dt"]).cast(pa.string()).to_pylist())
        new_days = [d for d in days if d >= since]
        columns = ["video_id", "sound_fingerprint"]
        new = catalog.read("videos", columns, dts=new_days) if new_days else None
        empty = pa.table({"video_id": pa.array([], pa.string()), "sound_fingerprint": pa.array([], pa.binary())})
        new = new.select(columns) if new is not None else empty
        old_days = [d for d in days if d < since]
        known = catalog.read("sound_matches", ["video_id", "sound_id", "offset_s"], dts=old_days) if old_days else None

        def history() -> Iterator[pa.Table]:  # one upload day at a time: a day's samples in memory, not all
            for day in old_days:
                chunk = catalog.read("videos", ["video_id", "sound_keys"], dts=[day])
                if chunk is not None:
                    yield chunk

        def fingerprints(ids: list[str]) -> pa.Table:  # the candidates' full fingerprints, a day at a time
            wanted = pa.array(ids, pa.string())
            dts = pc.unique(videos["dt"].filter(pc.is_in(videos["video_id"], value_set=wanted))).cast(pa.string())
            parts = [catalog.read("videos", columns, filter=pc.field("video_id").isin(wanted), dts=[day])
                     for day in dts.to_pylist()]
            parts = [p.select(columns) for p in parts if p is not None]
            return pa.concat_tables(parts) if parts else empty

        search = find_same_sounds(videos.drop_columns(["dt"]), new, history(), known, fingerprints, options)
        found = search.table
        dts = videos["dt"].take(pc.index_in(found["video_id"], value_set=videos["video_id"].combine_chunks()))
        dts = dts.cast(pa.string()).combine_chunks()
        found = found.append_column("run_id", pa.array([session.run_id] * found.num_rows, pa.string()))
        for dt in sorted(set(dts.to_pylist())):  # a row lives in its video's upload date's partition
            session.write({("sound_matches", dt): found.filter(pc.equal(dts, dt))})
        stats = search.stats
        record = session.record(
            since=since,
            options={k: getattr(options, k) for k in ("min_hits", "min_share", "min_matched_s", "candidate_hits",
                                                      "max_bucket")},
            counts={"searched": new.num_rows, "history": videos.num_rows, "matched": found.num_rows,
                    "sounds": len(set(found["sound_id"].to_pylist()))},
            search={k: v for k, v in vars(stats).items() if isinstance(v, (int, float, str))},
            phase_seconds={k: round(v, 3) for k, v in stats.phase_seconds.items()},
            schema_evolution=session.evolved,
        )
        ids = new["video_id"].to_pylist()
        return session.commit(record, {"sound_matches": in_predicate("video_id", ids) if ids else "false"})


def describe_sounds(record: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    c = record["counts"]
    return (f"sounds run {record['run_id']}: searched {c['searched']} videos (dt >= {record['since']}) against "
            f"{c['history']} committed; {c['matched']} carry an earlier sound ({c['sounds']} sounds) "
            f"in {record['wall_s']:.1f} s")
