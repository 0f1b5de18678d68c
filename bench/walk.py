"""The walk of a run through the package: which files a CLI run enters and how often a call
climbs back to a higher layer (issue 29).

``python -m bench.walk`` runs ``extract run`` in this process on a small manifest whose
videos the stand-in executor fails at decode (no Ray, no models: what is traced is the driver's
path from ``cli`` to the commit and the report, not the stages' insides) and traces every
Python call with ``sys.settrace`` (heavy libraries imported first, so their imports are not
traced). Calls inside one file are one stay; a call from one
file into another is counted once per distinct (caller function, callee function) pair, so
loops over rows do not inflate the counts. It prints:

- ``files``: package files a call entered;
- ``entries``: distinct cross-file calls (caller function -> callee function in another file);
- ``climbs``: those whose callee is in a higher layer than its caller (``tests/test_layers.py``
  order): callbacks and generators resumed from below;
- ``entries per package``: distinct cross-file calls into each package from outside it, and by
  (caller package, callee package): how often one layer reaches into another.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "extract"


def layer_of(module: str) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from test_layers import LAYERS, unit
    finally:
        sys.path.pop(0)
    return LAYERS.get(unit(module), -1)


def module_of(filename: str) -> str | None:
    path = Path(filename)
    if PACKAGE not in path.parents:
        return None
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def failing_executor(rows, config, stages=None):
    """Every video fails its decode: the driver still plans, writes, commits and reports."""
    from extract.rows import mark_failed, rows_to_batch

    done = [mark_failed(dict(r), "decode", "Corrupt", "walk: not decoded") for r in rows]
    return iter([rows_to_batch(done)]), {"walk": True}


def trace_run(work: Path) -> list[tuple[str, str, str, str]]:
    """``(caller module, caller function, callee module, callee function)`` of every call between
    package files during one ``extract run`` over three videos."""
    from extract import cli
    from extract.pipeline import ray_backend

    clips = work / "clips"
    clips.mkdir()
    for i in range(3):
        (clips / f"v{i}.mp4").write_bytes(b"not a video")
    (clips / "manifest.jsonl").write_text("".join(
        json.dumps({"video_id": f"v{i}", "uri": f"v{i}.mp4", "caption": "#walk"}) + "\n" for i in range(3)))
    ray_backend.execute = failing_executor  # the CLI's default executor
    calls: list[tuple[str, str, str, str]] = []

    package = str(PACKAGE)

    def trace(frame, event, arg):
        if event == "call" and frame.f_back is not None and frame.f_code.co_filename.startswith(package):
            callee = module_of(frame.f_code.co_filename)
            caller = module_of(frame.f_back.f_code.co_filename)
            if caller and callee != caller:
                calls.append((caller, frame.f_back.f_code.co_name, callee, frame.f_code.co_name))
        # None: no line events inside the frame

    argv = ["run", "--input", str(clips / "manifest.jsonl"), "--output", str(work / "out"), "--no-progress",
            "--set", "runtime.device=cpu", "--set", "limits.max_error_rate=1.0"]
    for heavy in ("torch", "open_clip", "deltalake", "pyarrow.dataset", "extract.pipeline.job", "extract.report"):
        __import__(heavy)
    sys.settrace(trace)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    finally:
        sys.settrace(None)
    assert code == 0, code
    return calls


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="walk-") as tmp:
        calls = trace_run(Path(tmp))
    edges = sorted(set(calls))
    files = {callee for _, _, callee, _ in edges} | {caller for caller, _, _, _ in edges}
    climbs = [e for e in edges if layer_of(e[2]) > layer_of(e[0])]
    into = Counter(".".join(callee.split(".")[:2]) for caller, _, callee, _ in edges
                   if ".".join(caller.split(".")[:2]) != ".".join(callee.split(".")[:2]))
    print(f"files {len(files)}, entries {len(edges)}, climbs {len(climbs)}")
    print("entries per package: " + ", ".join(f"{k} {v}" for k, v in into.most_common()))
    pairs = Counter((".".join(a.split(".")[:2]), ".".join(b.split(".")[:2])) for a, _, b, _ in edges
                    if ".".join(a.split(".")[:2]) != ".".join(b.split(".")[:2]))
    print("entries by package pair: " + ", ".join(f"{a}->{b} {n}" for (a, b), n in pairs.most_common()))
    print("climbs:")
    for caller, fn, callee, gn in climbs:
        print(f"  {caller}.{fn} -> {callee}.{gn}")
    print("files: " + ", ".join(sorted(files)))


if __name__ == "__main__":
    main()
