"""The ``extract`` command line (also ``python -m extract``).

Exit codes: 0 the run committed (per-video errors are rows, not failures); 1 the run failed
and published nothing; 2 bad usage or config; 3 the run committed but its error rate passed
``limits.max_error_rate`` (so a scheduler alerts).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR_RATE = 0, 1, 2, 3

RUN_EPILOG = """\
input (SRC): a manifest (.jsonl, .csv or .parquet with columns video_id, uri, and optional
  caption, upload_ts) or a folder/prefix of videos (video_id = file stem; caption and
  upload_ts from an optional sidecar <stem>.json). Relative uris resolve against the
  manifest's folder. Local paths, file://, s3:// and gs:// are read; nothing else.
output (DST): a folder, s3://bucket/prefix or gs://bucket/prefix. Each table is a Delta Lake
  table DST/<table>/ partitioned by upload date (dt=YYYY-MM-DD); a run commits each table
  once, then writes DST/_runs/<run_id>.json with the tables' Delta versions, counts, timings,
  config and models (readers pin those versions: `extract inspect DST --as-of RUN`).
reruns: videos already committed are skipped (incremental); --overwrite re-processes them,
  --retry-errors re-processes only videos whose last outcome is a retryable error.
examples:
  extract run --input clips/ --output out/ --config jobs/configs/local.yaml --config .build/tiny/tiny.yaml
  extract run --input s3://uploads/2026-11-24/manifest.jsonl --output s3://features/v1 \\
      --config jobs/configs/prod.yaml --set runtime.clip_batch_size=512
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                   help="config file; repeat to merge several in order (later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key, e.g. --set runtime.device=cpu (wins over files)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extract",
        description="Extract CLIP frame embeddings, Whisper transcripts and hashtag/caption features "
                    "from videos into Delta Lake tables, on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details; a run shows Ray's own logs instead of keeping them in its log file")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="process videos into the output tables",
                         description="Process every video of SRC into the tables under DST, as one committed run.",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--input", required=True, metavar="SRC", help="manifest file or folder/prefix of videos")
    run.add_argument("--output", required=True, metavar="DST", help="output folder or object-store prefix")
    _add_config_args(run)
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="re-process videos already committed, replacing their rows")
    mode.add_argument("--retry-errors", action="store_true", help="process only videos whose last outcome is a retryable error")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    models = sub.add_parser("models", help="tiny test checkpoints and staging of real weights")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    tiny = msub.add_parser("make-tiny", help="write deterministic tiny CLIP + Whisper checkpoints and DIR/tiny.yaml",
                           description="Write seeded tiny random CLIP and Whisper checkpoints in the formats "
                                       "open_clip and whisper load, plus DIR/tiny.yaml for --config.")
    tiny.add_argument("dir", metavar="DIR")
    stage = msub.add_parser("stage", help="copy real weights to a cluster-visible location once",
                            description="Put the configured CLIP and Whisper weights under DEST (a folder or "
                                        "s3:// prefix) and write DEST/models.yaml pointing models.* at them. "
                                        "Copies --clip-from/--whisper-from files, or downloads when online.")
    stage.add_argument("--dest", required=True, metavar="DEST")
    stage.add_argument("--clip-from", metavar="PATH", help="local CLIP checkpoint to copy instead of downloading")
    stage.add_argument("--whisper-from", metavar="PATH", help="local Whisper checkpoint to copy instead of downloading")
    _add_config_args(stage)

    samples = sub.add_parser("samples", help="synthetic sample clips")
    ssub = samples.add_subparsers(dest="samples_command", required=True, metavar="ACTION")
    make = ssub.add_parser("make", help="write sample clips, sidecar captions and DIR/manifest.jsonl",
                           description="Write synthetic clips (moving shapes; landscape and portrait; 3-45 s; "
                                       "speech from espeak-ng when installed, else tones; one without audio).")
    make.add_argument("dir", metavar="DIR")

    schemas = sub.add_parser("schemas", help="print the output tables' schemas",
                             description="Print the schemas of the output tables (from schemas/*.json).")
    schemas.add_argument("--markdown", action="store_true", help="column documentation as Markdown")
    schemas.add_argument("--table", help="only this table")

    inspect = sub.add_parser("inspect", help="what an output location holds",
                             description="Tables, partitions, row counts, schema versions, recent runs and "
                                         "errors of DST; with --video, everything known about one video.")
    inspect.add_argument("dst", metavar="DST")
    inspect.add_argument("--video", metavar="ID", help="show one video's rows in every table")
    inspect.add_argument("--as-of", metavar="RUN", help="the tables as of a run: its run id, its sequence number, "
                                                        "or a time (ISO-8601: the last run committed by then)")
    inspect.add_argument("--json", action="store_true", help="the same facts as one JSON document, for machines")
    _add_config_args(inspect)

    forget = sub.add_parser("forget", help="delete videos' rows from every table (deletion requests)",
                            description="Delete the rows of the listed video ids from every table (a Delta "
                                        "DELETE per table, one committed run), then every Parquet file under "
                                        "DST that still holds them, and rewrite run reports that show them; "
                                        "incremental runs do not bring them back unless their uri changes.")
    forget.add_argument("dst", metavar="DST")
    forget.add_argument("--ids", required=True, metavar="FILE", help="text file with one video_id per line")
    _add_config_args(forget)

    maintain = sub.add_parser("maintain", help="compact, checkpoint and vacuum the tables",
                              description="Compact each partition's small files, write Delta checkpoints and "
                                          "delete files unreferenced for storage.retention_hours (default 168); "
                                          "run when no run writes to DST.")
    maintain.add_argument("dst", metavar="DST")
    _add_config_args(maintain)

    migrate = sub.add_parser("migrate", help="convert an output of the old plain-Parquet layout to Delta tables",
                             description="Convert DST, written by the earlier plain-Parquet layout, in place into "
                                         "Delta tables with the same rows.")
    migrate.add_argument("dst", metavar="DST")
    _add_config_args(migrate)

    dups = sub.add_parser("duplicates", help="find re-uploads and near copies of new videos among all committed ones",
                          description="For each video committed with upload date >= --since (default: the dates "
                                      "the latest run wrote), find the earliest earlier committed copy: exact by "
                                      "content hash, near by LSH over the frames' perceptual hashes, confirmed "
                                      "by the share of matching frames and the pooled CLIP cosine; writes the "
                                      "duplicates table in one committed run.")
    dups.add_argument("dst", metavar="DST")
    dups.add_argument("--since", metavar="YYYY-MM-DD", help="search the videos of these upload dates and later")
    dups.add_argument("--threshold", type=int, default=None, metavar="BITS",
                      help="Hamming distance (bits of 64) within which two frames match (default 12)")
    dups.add_argument("--min-match", type=float, default=None, metavar="SHARE",
                      help="share of a video's frames that must match a copy's (default 0.5)")
    dups.add_argument("--min-cosine", type=float, default=None, metavar="COS",
                      help="pooled CLIP cosine a near copy needs (default 0.9; tune per model by percentile)")
    _add_config_args(dups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from extract.config import ConfigError

    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"extract: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _load(args: argparse.Namespace):
    from extract.config import load_config

    return load_config(args.config, args.overrides)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "models":
        if args.models_command == "make-tiny":
            from extract.models.tiny import make_tiny

            print(f"tiny models written; use --config {make_tiny(args.dir)}")
            return EXIT_OK
        from extract.models.staging import stage_models

        overrides = stage_models(_load(args), args.dest, args.clip_from, args.whisper_from)
        print(json.dumps(overrides, indent=2))
        print(f"staged; use --config {args.dest.rstrip('/')}/models.yaml (copy it locally if DEST is remote)")
        return EXIT_OK
    if args.command == "samples":
        from extract.media.samples import make_samples

        print(f"samples written; manifest: {make_samples(args.dir)}")
        return EXIT_OK
    if args.command == "schemas":
        from extract.tables.schemas import TABLES, get_table_schema

        for name in [args.table] if args.table else TABLES:
            schema = get_table_schema(name)
            if args.markdown:
                print(schema.markdown())
            else:
                print(f"{name} (version {schema.version}): {schema.description}")
                print("  dt: string (Delta partition column)")
                for col in schema.columns:
                    tp = "list<float32> (D values)" if col["type"] == "embedding" else col["type"]
                    print(f"  {col['name']}: {tp}{'' if col['nullable'] else ' not null'}")
                print()
        return EXIT_OK
    if args.command == "inspect":
        import shutil

        from extract import inspection

        config = _load(args)
        try:
            if args.json:
                facts = (inspection.video_facts(args.dst, args.video, config.storage, args.as_of) if args.video
                         else inspection.output_facts(args.dst, config.storage, as_of=args.as_of))
                print(json.dumps(inspection.to_json_safe(facts), indent=1))
            else:
                width = shutil.get_terminal_size((inspection.DEFAULT_WIDTH, 24)).columns
                print(inspection.describe_video(args.dst, args.video, config.storage, args.as_of, width) if args.video
                      else inspection.describe_output(args.dst, config.storage, as_of=args.as_of, width=width))
        except ValueError as exc:  # an --as-of that names no run
            print(f"extract: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    if args.command in ("forget", "maintain", "migrate", "duplicates"):
        return _table_command(args)
    raise AssertionError(args.command)  # argparse restricts commands


def _table_command(args: argparse.Namespace) -> int:
    """``forget``, ``maintain``, ``migrate`` and ``duplicates``: each one committed run of its kind."""
    from extract.tables.catalog import Catalog, OutputLayoutError
    from extract.pipeline.job import new_run_id

    config = _load(args)
    try:
        if args.command == "migrate":
            from extract.tables.migration import migrate

            record = migrate(args.dst, new_run_id(), config.storage)
            print(f"migrated {args.dst} to Delta tables: " + ", ".join(f"{t} {n} rows" for t, n in record["rows"].items())
                  + f"; run {record['run_id']}")
            return EXIT_OK
        catalog = Catalog(args.dst, config.storage)
        catalog.check()
        if args.command == "duplicates":
            import dataclasses

            from extract.media.near_duplicates import DuplicateOptions
            from extract.pipeline.duplicates import describe_duplicates, find_duplicates

            chosen = {"max_hamming": args.threshold, "min_match_fraction": args.min_match,
                      "min_clip_cosine": args.min_cosine}
            options = dataclasses.replace(DuplicateOptions(), **{k: v for k, v in chosen.items() if v is not None})
            record = find_duplicates(args.dst, config, new_run_id(), args.since, options)
            print(describe_duplicates(record))
            from extract.report import write_run_report

            try:  # the pairs with both videos' thumbnails
                print(f"  run report: {write_run_report(args.dst, record['run_id'], config.storage)}")
            except (OSError, ValueError) as exc:  # the run is committed; a report failure must not change that
                print(f"extract: run committed, but the report could not be written: {exc}", file=sys.stderr)
            return EXIT_OK
        if args.command == "maintain":
            from extract.tables.maintenance import describe_maintenance, maintain

            print(describe_maintenance(maintain(catalog, config.storage.retention_hours, new_run_id())))
            return EXIT_OK
        from extract.report import rewrite_reports
        from extract.tables.writer import forget_videos

        ids = {line.strip() for line in Path(args.ids).read_text().splitlines() if line.strip()}
        record = forget_videos(catalog, ids, new_run_id())
        reports = rewrite_reports(args.dst, record["runs_with_rows"], config.storage)
        print(f"forgot {record['counts']['found']} of {len(ids)} ids; {len(record['files_deleted'])} files that held "
              f"them deleted; {len(reports)} run reports rewritten; run {record['run_id']}")
        return EXIT_OK
    except (OutputLayoutError, ValueError) as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from extract.pipeline.console import RunConsole, run_log_path
    from extract.pipeline.job import new_run_id, run_job
    from extract.pipeline.manifest import ManifestError
    from extract.report import summarize

    config = _load(args)
    run_id = new_run_id()
    console = RunConsole(run_log_path(args.output, run_id), verbose=args.verbose)
    log_note = "" if args.verbose else f" (log: {console.log_path})"
    try:
        with console:
            try:
                record = run_job(args.input, args.output, config, overwrite=args.overwrite,
                                 retry_errors=args.retry_errors, progress=not args.no_progress,
                                 terminal=console.terminal, run_id=run_id)
            except ManifestError:
                raise
            except Exception:
                logging.getLogger("extract").exception("run failed")  # the traceback, in the log
                raise
    except ManifestError as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - report any run-level failure, publish nothing
        print(f"extract: run failed, nothing was published: {type(exc).__name__}: {exc}{log_note}", file=sys.stderr)
        return EXIT_FAILED
    print(summarize(record, args.output))
    from extract.report import write_run_report

    try:
        print(f"  run report: {write_run_report(args.output, record['run_id'], config.storage)}")
    except (OSError, ValueError) as exc:  # the run is committed; a report failure must not change that
        print(f"extract: run committed, but the report could not be written: {exc}", file=sys.stderr)
    if not args.verbose:
        print(f"  log (Ray and workers): {console.log_path}")
    if record["error_rate"] > config.limits.max_error_rate:
        print(f"extract: error rate {record['error_rate']:.0%} is over limits.max_error_rate="
              f"{config.limits.max_error_rate}", file=sys.stderr)
        return EXIT_ERROR_RATE
    return EXIT_OK
