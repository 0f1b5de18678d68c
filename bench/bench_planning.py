"""Planning and commit cost against the length of an output's history (Delta tables).

    python -m bench.bench_planning [--days 1,100,365] [--videos 20000] [--work DIR]

Builds one synthetic output, day by day: each day one run of ``--videos`` committed videos
(``videos`` rows with the real schema, written directly with deltalake, one commit per day, plus
a run record pinning the versions) and 1 % error rows. At each history size in ``--days`` it
measures, each in a fresh child process so its peak memory is its own:

- planning: ``Catalog(dst)`` + ``Catalog.outcomes(manifest)`` + ``plan_run`` + the identical-bytes
  candidates (``tables.planning.attach_candidates``: ``input.reuse_days`` of partitions) for a
  new manifest of ``--videos`` rows of the next day (5 % of them re-uploads of the previous day's
  videos with an unchanged listing, so the lookup finds committed rows and skips them), seconds and peak RSS (VmHWM) of the process and above
  what it had after its imports and building the manifest;
- the same with 100 rows without ``upload_ts`` (those ids are looked up in every partition);
- commit: ``commit_run`` of a staged run of ``--videos`` videos (one commit per table + record).

Prints one line per size and returns the figures (``run(out_dir)`` writes planning.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from extract.pipeline.resources import peak_rss_mb

DIM = 512
START = date(2025, 1, 1)


def _sizes(day: int, n: int) -> list[int]:
    """File sizes of day ``day``'s ``n`` synthetic videos: spread over 0.2-30 MB like phone clips."""
    import numpy as np

    return np.random.default_rng(day).integers(200_000, 30_000_000, n).tolist()


def _synthetic_videos(n: int, day: int, dim: int = DIM, prefix: str = "v"):
    """``n`` videos rows (in-memory record schema, embeddings null) uploaded on day ``day``."""
    import pyarrow as pa

    from extract.tables.schemas import get_table_schema

    schema = get_table_schema("videos").arrow_schema(dim)
    dt = START + timedelta(days=day)
    ts = datetime(dt.year, dt.month, dt.day, 12, tzinfo=timezone.utc)
    values = {
        "video_id": pa.array([f"{prefix}{day:04d}-{i:06d}" for i in range(n)]),
        "upload_ts": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        "uri": pa.array([f"s3://uploads/{dt}/{prefix}{i:06d}.mp4" for i in range(n)]),
        "content_sha256": pa.array([f"{day:08x}{i:056x}" for i in range(n)]),
        "file_bytes": pa.array(_sizes(day, n), pa.int64()), "source_bytes": pa.array(_sizes(day, n), pa.int64()),
        "source_mtime": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        "feature_hash": pa.array(["fh"] * n), "run_id": pa.array([f"run-{day:04d}"] * n),
        "processed_at": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
    }
    columns = []
    for field in schema:
        if field.name in values:
            columns.append(values[field.name].cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(n, field.type))
        elif pa.types.is_list(field.type):
            columns.append(pa.array([[]] * n, field.type))
        elif pa.types.is_string(field.type):
            columns.append(pa.array(["x"] * n, field.type))
        elif pa.types.is_boolean(field.type):
            columns.append(pa.array([False] * n, field.type))
        else:
            columns.append(pa.array([1] * n, field.type))
    return pa.Table.from_arrays(columns, schema=schema), str(dt)


def build_history(dst: str, first_day: int, last_day: int, videos: int) -> None:
    """Append days ``first_day..last_day-1`` to ``dst``: one videos commit (and errors commit)
    per day, written directly with deltalake, and a run record pinning the versions."""
    import pyarrow as pa
    from deltalake import CommitProperties, Transaction, write_deltalake

    from extract.tables.catalog import APP_ID, Catalog
    from extract.tables.schemas import TABLES, get_table_schema
    from extract.tables.writer import ensure_tables, write_json, writer_properties

    catalog = Catalog(dst)
    versions = ensure_tables(catalog, DIM)
    delta_schema = {t: get_table_schema(t).delta_schema(DIM) for t in TABLES}
    for day in range(first_day, last_day):
        table, dt = _synthetic_videos(videos, day)
        data = pa.Table.from_arrays([table[f.name].cast(f.type) if f.name != "dt" else pa.array([dt] * videos)
                                     for f in delta_schema["videos"]], schema=delta_schema["videos"])
        seq = catalog.next_seq
        props = CommitProperties(app_transactions=[Transaction(APP_ID, seq)])
        write_deltalake(catalog.table_uri("videos"), data, mode="append", writer_properties=writer_properties(),
                        commit_properties=props)
        n_err = max(1, videos // 100)
        errors = pa.table({
            "video_id": [f"e{day:04d}-{i:06d}" for i in range(n_err)], "run_id": [f"run-{day:04d}"] * n_err,
            "uri": ["s3://x"] * n_err, "stage": ["decode"] * n_err, "error_type": ["DecodeError"] * n_err,
            "message": ["broken"] * n_err, "retryable": [False] * n_err, "content_sha256": [None] * n_err,
            "at": pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * n_err, pa.timestamp("us", tz="UTC")),
            "source_bytes": pa.nulls(n_err, pa.int64()), "source_mtime": pa.nulls(n_err, pa.timestamp("us", tz="UTC")),
            "dt": [dt] * n_err})
        errors = pa.Table.from_arrays([errors[f.name].cast(f.type) for f in delta_schema["errors"]],
                                      schema=delta_schema["errors"])
        write_deltalake(catalog.table_uri("errors"), errors, mode="append", writer_properties=writer_properties(),
                        commit_properties=props)
        versions["videos"] += 1
        versions["errors"] += 1
        run_id = f"run-{day:04d}"
        write_json(catalog.fs, f"{catalog.root}/_runs/{run_id}.json", {
            "run_id": run_id, "kind": "run", "status": "committed", "seq": seq, "delta_versions": dict(versions),
            "committed_at": datetime.now(timezone.utc).isoformat()})
        catalog.all_runs.append({"seq": seq})  # next_seq without re-reading every record
        if (day + 1) % 20 == 0:  # what the tables' checkpoint interval does for real runs
            for t in ("videos", "errors"):
                catalog.open_table(t).create_checkpoint()


def _manifest(day: int, videos: int, undated: int = 0) -> list[dict[str, Any]]:
    """A new day's manifest rows (as ``extract.pipeline.manifest`` makes them); 5 % re-uploads."""
    dt = START + timedelta(days=day)
    rows = [{"video_id": f"n{day:04d}-{i:06d}", "uri": f"s3://uploads/{dt}/n{i:06d}.mp4", "dt": str(dt),
             "upload_ts": f"{dt}T12:00:00+00:00", "caption": None, "source_bytes": size,
             "source_mtime": f"{dt}T12:00:00Z"} for i, size in enumerate(_sizes(10_000 + day, videos))]
    prev = START + timedelta(days=day - 1)
    sizes = _sizes(day - 1, videos // 20)
    for i in range(videos // 20):  # re-uploads of yesterday's committed videos (same listing)
        rows[i].update(video_id=f"v{day - 1:04d}-{i:06d}", uri=f"s3://uploads/{prev}/v{i:06d}.mp4",
                       dt=str(prev), upload_ts=f"{prev}T12:00:00+00:00", source_bytes=sizes[i],
                       source_mtime=f"{prev}T12:00:00Z")
    for row in rows[-undated:] if undated else []:
        row["upload_ts"] = None
    return rows


def plan_once(dst: str, day: int, videos: int, undated: int) -> dict[str, Any]:
    """Child process: plan a manifest against ``dst``; seconds and peak RSS."""
    import pyarrow  # noqa: F401 - imported before the baseline is taken, as a real run has
    import deltalake  # noqa: F401

    from extract.config import InputConfig
    from extract.tables.catalog import Catalog
    from extract.tables.planning import attach_candidates, plan_run

    rows = _manifest(day, videos, undated)
    base_mb = peak_rss_mb()
    start = time.perf_counter()
    catalog = Catalog(dst)
    outcomes = catalog.outcomes(rows)
    plan = plan_run(rows, outcomes, "fh")
    candidates = attach_candidates(catalog, plan.todo, outcomes, "fh", InputConfig().reuse_days)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    return {"plan_s": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1), "above_imports_mb": round(peak_mb - base_mb, 1),
            "todo": len(plan.todo), "skipped": dict(plan.skipped), "found": len(outcomes),
            "reuse_candidates": candidates}


def commit_once(dst: str, day: int, videos: int) -> dict[str, Any]:
    """Stage and commit one run of ``videos`` videos through ``RunWriter``/``commit_run``."""
    from extract.tables.catalog import Catalog
    from extract.tables.writer import RunWriter, commit_run, ensure_tables, roll_forward

    catalog = Catalog(dst)
    roll_forward(catalog)
    base = ensure_tables(catalog, DIM)
    table, dt = _synthetic_videos(videos, day, prefix="c")
    writer = RunWriter(catalog, f"commit-{day:04d}", DIM, base, catalog.next_seq)
    writer.write({("videos", dt): table})
    start = time.perf_counter()
    record = commit_run(writer, {"run_id": writer.run_id, "kind": "run", "status": "committed"})
    return {"commit_s": round(time.perf_counter() - start, 3), "seq": record["seq"]}


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_planning", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(out_dir: str | Path | None = None, days: tuple[int, ...] = (1, 100, 365), videos: int = 20_000,
        work: str | None = None) -> list[dict[str, Any]]:
    """Build the history and measure at each size (see module doc); returns one dict per size."""
    work_dir = Path(work or tempfile.mkdtemp(prefix="bench-planning-"))
    dst = str(work_dir / "out")
    results, built = [], 0
    for n in sorted(days):
        t0 = time.perf_counter()
        build_history(dst, built, n, videos)
        build_s = time.perf_counter() - t0
        built = n
        plan = _child("--plan", dst, "--day", str(n), "--videos", str(videos), "--undated", "0")
        undated = _child("--plan", dst, "--day", str(n), "--videos", str(videos), "--undated", "100")
        commit = _child("--commit", dst, "--day", str(n), "--videos", str(videos))
        row = {"history_days": n, "committed_videos": n * videos, "build_s": round(build_s, 1), **plan,
               "plan_s_with_100_undated": undated["plan_s"], "peak_rss_mb_with_100_undated": undated["peak_rss_mb"],
               **commit}
        results.append(row)
        print(f"history {n:>3} days ({n * videos:>9,} videos): plan {plan['plan_s']:.2f} s, peak RSS "
              f"{plan['peak_rss_mb']:.0f} MB ({plan['above_imports_mb']:.0f} MB above imports), found "
              f"{plan['found']}; with 100 undated rows {undated['plan_s']:.2f} s / {undated['peak_rss_mb']:.0f} MB; "
              f"commit {commit['commit_s']:.2f} s", flush=True)
    if out_dir is not None:
        Path(out_dir, "planning.json").write_text(json.dumps(results, indent=2))
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table (for bench/RESULTS.md)."""
    lines = ["| history (daily runs) | committed videos | plan s | peak RSS MB | above imports MB | "
             "plan s, 100 undated rows | commit s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['history_days']} | {r['committed_videos']:,} | {r['plan_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['above_imports_mb']:.0f} | {r['plan_s_with_100_undated']:.2f} | {r['commit_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", default="1,100,365", help="history sizes in daily runs, comma-separated")
    parser.add_argument("--videos", type=int, default=20_000, help="videos per daily run and per manifest")
    parser.add_argument("--work", help="folder for the synthetic output (default: a temporary one)")
    parser.add_argument("--out", help="write planning.json here")
    parser.add_argument("--plan", metavar="DST", help=argparse.SUPPRESS)
    parser.add_argument("--commit", metavar="DST", help=argparse.SUPPRESS)
    parser.add_argument("--day", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--undated", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plan:
        print(json.dumps(plan_once(args.plan, args.day, args.videos, args.undated)))
        return 0
    if args.commit:
        print(json.dumps(commit_once(args.commit, args.day, args.videos)))
        return 0
    run(args.out, tuple(int(d) for d in args.days.split(",")), args.videos, args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
