"""The ``extract`` command line (also ``python -m extract``).

Exit codes, the same for every subcommand: 0 done (for ``run``: committed; per-video errors are
rows, not failures); 1 the command failed (a store error, an output that is not our tables; a run
that failed part way through its commit says which tables it published: ``what_was_published``);
2 bad usage: an unknown option or table, a bad config, a missing, unreadable or unwritable path,
no output at DST for a command that reads one; 3 (``run`` only) committed, but the error rate
passed ``limits.max_error_rate`` (so a scheduler alerts).

Every misuse is answered with one line on standard error, never a traceback: the argument checks
below run before a command starts (so a command that cannot start leaves nothing behind, not
even a run log), and ``main`` maps what a command raises to one line and its exit code.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
from pathlib import Path

from extract.pipeline.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE

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
rows are read only inside input.allowed_uris (default: the manifest's own folder); a manifest
  whose every row points elsewhere stops before planning, naming the --set that admits them.
examples:
  extract run --input clips/ --output out/ --config jobs/configs/local.yaml --config .build/tiny/tiny.yaml
  extract run --input s3://manifests/2026-11-24.jsonl --output s3://features/v1 \\
      --config jobs/configs/prod.yaml --set 'input.allowed_uris=[s3://uploads/]'
"""


class UsageError(Exception):
    """Bad usage found before a command starts; ``main`` prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the usage block first): the error and
    where to read the usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _iso_date(text: str) -> str:
    """argparse type of ``--since``: an ISO date ``YYYY-MM-DD``, returned as given."""
    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return text


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                   help="config file; repeat to merge several in order (later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key, e.g. --set runtime.device=cpu (wins over files)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    schemas.add_argument("--stages", action="store_true",
                         help="the columns each pipeline stage reads and adds (extract/stages/registry.py)")

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
    _add_search_args(dups)
    dups.add_argument("--threshold", type=int, default=None, metavar="BITS",
                      help="Hamming distance (bits of 64) within which two frames match (default 12)")
    dups.add_argument("--min-match", type=float, default=None, metavar="SHARE",
                      help="share of a video's frames that must match a copy's (default 0.5)")
    dups.add_argument("--min-cosine", type=float, default=None, metavar="COS",
                      help="pooled CLIP cosine a near copy needs (default 0.9; tune per model by percentile)")
    _add_config_args(dups)

    sounds = sub.add_parser("sounds", help="find which earlier sound (audio recording) each new video carries",
                            description="For each video committed with upload date >= --since (default: the dates "
                                        "the latest run wrote), match its audio fingerprint against every committed "
                                        "video's (landmark hashes agreeing at one time offset) and name its sound by "
                                        "the earliest video carrying it; writes the sound_matches table in one "
                                        "committed run.")
    _add_search_args(sounds)
    _add_config_args(sounds)
    return parser


def _add_search_args(parser: argparse.ArgumentParser) -> None:
    """DST and ``--since`` of a search over the new videos (``duplicates``, ``sounds``)."""
    parser.add_argument("dst", metavar="DST")
    parser.add_argument("--since", metavar="YYYY-MM-DD", type=_iso_date,
                        help="search the videos of these upload dates and later")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from extract.config import ConfigError

    try:
        check_args(args)
        return _dispatch(args)
    except UsageError as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"extract: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file system or store failure once a command started (`run` maps its own)
        print(f"extract {_command_name(args)}: failed, nothing was published: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_FAILED


def _command_name(args: argparse.Namespace) -> str:
    action = getattr(args, "models_command", None) or getattr(args, "samples_command", None)
    return f"{args.command} {action}" if action else args.command


# ---------------------------------------------------------------------- argument checks
# What a command needs of its paths, checked before it starts: each failure is a UsageError
# naming the option, the path and the fix. Object-store URIs are checked for an output's
# presence only; their other failures surface as the command's one-line OSError.


def check_args(args: argparse.Namespace) -> None:
    """Raise UsageError (or ConfigError) for arguments the command cannot start with."""
    command = args.command
    if command == "run":
        _check_input(args.input)
        _check_creatable_dir("--output", args.output)
        _load(args)  # a bad config fails here, before the run opens its log
    elif command == "models" and args.models_command == "make-tiny":
        _check_creatable_dir("DIR", args.dir)
    elif command == "models":
        _check_creatable_dir("--dest", args.dest)
        for option, path in (("--clip-from", args.clip_from), ("--whisper-from", args.whisper_from)):
            if path is not None:
                _check_readable_file(option, path)
    elif command == "samples":
        _check_creatable_dir("DIR", args.dir)
    elif command == "schemas":
        from extract.tables.schemas import TABLES

        if args.table is not None and args.table not in TABLES:
            raise UsageError(f"schemas: unknown table {args.table!r}; tables: {', '.join(TABLES)}")
    else:  # inspect, forget, maintain, migrate, duplicates, sounds: commands on an existing output
        if command == "forget":
            _check_readable_file("--ids", args.ids)
        _check_existing_output(args.dst, _load(args).storage)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local(uri: str) -> Path:
    from extract.io.storage import local_path

    return Path(local_path(uri))


def _check_scheme(option: str, uri: str) -> None:
    from extract.rows import VideoError
    from extract.io.storage import check_scheme

    try:
        check_scheme(uri)
    except VideoError as exc:
        raise UsageError(f"{option} {exc}") from None


def _check_input(src: str) -> None:
    """SRC: a local manifest file or folder that exists and can be read."""
    _check_scheme("--input", src)
    if not _is_local(src):
        return
    path = _local(src)
    if not path.exists():
        raise UsageError(f"--input {src}: does not exist; pass a manifest (.jsonl/.csv/.parquet) or a folder of videos")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise UsageError(f"--input {src}: cannot be read (permission denied)")


def _check_readable_file(option: str, path_text: str) -> None:
    """A local file that exists, is a file and can be read."""
    path = Path(path_text)
    if not path.exists():
        raise UsageError(f"{option} {path_text}: does not exist")
    if path.is_dir():
        raise UsageError(f"{option} {path_text}: is a folder; pass a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path_text}: cannot be read (permission denied)")


def _check_creatable_dir(option: str, uri: str) -> None:
    """A local folder that exists or can be created: no regular file on the way, and the
    nearest existing folder writable."""
    _check_scheme(option, uri)
    if not _is_local(uri):
        return
    path = _local(uri).absolute()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {uri}: is a file, not a folder")
    from extract.pipeline.console import nearest_existing

    existing = nearest_existing(path)
    if not existing.is_dir():
        raise UsageError(f"{option} {uri}: cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {uri}: cannot be written (permission denied on {existing})")


def _check_existing_output(dst: str, storage) -> None:
    """DST holds an output: a table folder or ``_runs/`` (the old plain-Parquet layout too)."""
    _check_scheme("DST", dst)
    if _is_local(dst) and not _local(dst).is_dir():
        why = "is a file" if _local(dst).exists() else "does not exist"
        raise UsageError(f"no output at {dst} ({why}); pass the --output of an `extract run`")
    from extract.tables.catalog import RUNS_DIR
    from extract.tables.schemas import TABLES
    import pyarrow.fs as pafs

    from extract.io.storage import filesystem_for

    fs, root = filesystem_for(dst, storage)
    infos = fs.get_file_info([f"{root}/{name}" for name in (*TABLES, RUNS_DIR)])
    if all(info.type == pafs.FileType.NotFound for info in infos):
        raise UsageError(f"no output at {dst} (no tables, no {RUNS_DIR}/); pass the --output of an `extract run`")


def _load(args: argparse.Namespace):
    """The command's config (``--config`` files merged, ``--set`` applied), loaded once."""
    from extract.config import load_config

    if getattr(args, "loaded_config", None) is None:
        args.loaded_config = load_config(args.config, args.overrides)
    return args.loaded_config


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "models":
        if args.models_command == "make-tiny":
            from extract.tools.tiny import make_tiny

            print(f"tiny models written; use --config {make_tiny(args.dir)}")
            return EXIT_OK
        from extract.tools.staging import stage_models

        overrides = stage_models(_load(args), args.dest, args.clip_from, args.whisper_from)
        print(json.dumps(overrides, indent=2))
        print(f"staged; use --config {args.dest.rstrip('/')}/models.yaml (copy it locally if DEST is remote)")
        return EXIT_OK
    if args.command == "samples":
        from extract.tools.samples import make_samples

        print(f"samples written; manifest: {make_samples(args.dir)}")
        return EXIT_OK
    if args.command == "schemas" and args.stages:
        from extract.stages.registry import describe_columns

        print(describe_columns())
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
    if args.command in ("forget", "maintain", "migrate", "duplicates", "sounds"):
        return _table_command(args)
    raise AssertionError(args.command)  # argparse restricts commands


def _table_command(args: argparse.Namespace) -> int:
    """``forget``, ``maintain``, ``migrate``, ``duplicates`` and ``sounds``: each one committed run of its kind."""
    from extract.report import write_report
    from extract.runner import find_duplicates_step, find_sounds_step, maintain_step
    from extract.tables.catalog import Catalog, OutputLayoutError

    config = _load(args)
    expected = (OutputLayoutError, ValueError)
    if args.command == "duplicates":
        import dataclasses

        from extract.index.near_duplicates import DuplicateOptions

        chosen = {"max_hamming": args.threshold, "min_match_fraction": args.min_match,
                  "min_clip_cosine": args.min_cosine}
        try:
            options = dataclasses.replace(DuplicateOptions(), **{k: v for k, v in chosen.items() if v is not None})
        except ValueError as exc:  # a threshold out of range names itself
            raise UsageError(f"duplicates: {exc}") from None
        return find_duplicates_step("extract", args.dst, config, args.since, options, expected).code
    if args.command == "sounds":
        return find_sounds_step("extract", args.dst, config, args.since, None, expected).code
    if args.command == "maintain":
        return maintain_step("extract", args.dst, config, expected).code
    try:
        if args.command == "migrate":
            from extract.tables.migration import migrate

            record = migrate(args.dst, storage=config.storage)
            print(f"migrated {args.dst} to Delta tables: " + ", ".join(f"{t} {n} rows" for t, n in record["rows"].items())
                  + f"; run {record['run_id']}")
            write_report("extract", args.dst, record, config.storage)
            return EXIT_OK
        from extract.report import rewrite_reports
        from extract.tables.forget import forget_videos

        ids = {line.strip() for line in Path(args.ids).read_text().splitlines() if line.strip()}
        record = forget_videos(Catalog(args.dst, config.storage), ids)
        reports = rewrite_reports(args.dst, record["runs_with_rows"], config.storage)
        print(f"forgot {record['counts']['found']} of {len(ids)} ids; {len(record['files_deleted'])} files that held "
              f"them deleted; {len(reports)} run reports rewritten; run {record['run_id']}")
        write_report("extract", args.dst, record, config.storage)
        return EXIT_OK
    except expected as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from extract.runner import run_once

    config = _load(args)
    return run_once(args.input, args.output, config, overwrite=args.overwrite, retry_errors=args.retry_errors,
                    progress=not args.no_progress, verbose=args.verbose).code
