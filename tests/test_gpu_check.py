"""The GPU check prepared here for a bare GPU machine: its wheels, its imports, its dry run.

``bench/gpu_check.sh --dry-run`` runs the same steps as on the GPU machine, on this CPU with the
tiny models, while every Python process it starts records what it imported: each imported
top-level module must come from the standard library, this repository, the wheels
``make gpu-wheels`` carries, or the GPU image's packages (``bench/gpu_image.txt``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points, packages_distributions, version
from pathlib import Path

import pytest
from conftest import REPO

from bench import gpu, gpu_wheels

RECORDER = '''
import atexit, os, sys

# Each top-level module is written once it is imported (an audit hook sees the attempt; the next
# event or the exit writes it when it really loaded: optional imports that fail are left out),
# through a descriptor opened at start-up: decode children are killed rather than exiting, and
# once confined they can open no file (they import everything before that).
try:
    _fd = os.open(os.path.join({folder!r}, f"{{os.getpid()}}.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
except OSError:
    _fd = None
_seen, _pending = set(), set()


def _flush():
    loaded = {{name for name in _pending if name in sys.modules}}
    _pending.difference_update(loaded)
    _seen.update(loaded)
    if loaded:
        try:
            os.write(_fd, "".join(name + "\\n" for name in sorted(loaded)).encode())
        except OSError:
            pass


def _on_import(event, args):
    if event == "import":
        _flush()
        top = args[0].partition(".")[0]
        if top not in _seen:
            _pending.add(top)


if _fd is not None:
    _pending.update(name.partition(".")[0] for name in list(sys.modules))
    _flush()
    sys.addaudithook(_on_import)
    atexit.register(_flush)
'''


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    lines = (REPO / "bench" / "gpu_image.txt").read_text().splitlines()
    return {normalized(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def with_requirements(names: set[str]) -> set[str]:
    """``names`` and, transitively, what their installed versions here require (extras left
    out): an image package brings its own requirements there, whatever their versions."""
    from importlib.metadata import PackageNotFoundError, requires

    closure, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [normalized(re.split(r"[ ;<>=!~\[(]", need, maxsplit=1)[0]) for need in needs if "extra ==" not in need]
    return closure


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``bench/gpu_check.sh --dry-run`` with an import recorder in every Python process."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    hook, imports, out = tmp / "hook", tmp / "imports", tmp / "out"
    hook.mkdir()
    imports.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER.format(folder=str(imports)))
    env = dict(os.environ, OUT=str(out), PY=sys.executable, PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]))
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return done, out, imports


def test_dry_run_writes_the_results(dry_run):
    done, out, _ = dry_run
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert re.search(r"\[\s*\d+\.\d s\] end to end: [\d,]+ videos per GPU-hour", log), log[-3000:]
    results = json.loads((out / "RESULTS-gpu.json").read_text())
    assert results["dry_run"] and results["device"] == "cpu"
    assert not results["decode"]["failed"] and not results["end_to_end"]["failed"]
    assert results["decode"]["videos_per_s"] > 0 and results["end_to_end"]["videos_per_gpu_hour"] > 0
    assert [r["model"] for r in results["clip"]] == ["tiny"] and results["clip"][0]["frames_per_s"] > 0
    assert [r["model"] for r in results["whisper"]] == ["tiny"] and results["whisper"][0]["audio_s_per_s"] > 0
    markdown = (out / "RESULTS-gpu.md").read_text()
    assert "Dry run on the CPU" in markdown
    for key in gpu.TARGETS:  # every target has its row, n/a where a dry run cannot measure it
        assert f"| {gpu.TARGET_LABELS[key]} |" in markdown
    assert "passed" in (out / "gpu-tests.log").read_text() or "skipped" in (out / "gpu-tests.log").read_text()


def test_the_check_imports_only_carried_or_image_packages(dry_run):
    """What the check imports (tests and benchmark, every process that recorded) comes from the
    stdlib, this repository, the carried wheels or the GPU image: nothing else is there."""
    done, _, imports = dry_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    recorded = list(imports.glob("*.txt"))
    assert len(recorded) >= 3  # the version probe, pytest, the benchmark (+ children)
    modules = {name for path in recorded for name in path.read_text().split()}
    assert {"extract", "torch", "whisper", "open_clip", "av"} <= modules  # the recorder saw the work
    local = {p.stem for p in (*REPO.glob("*"), *(REPO / "tests").glob("*.py"))} | {"sitecustomize"}
    providers = packages_distributions()
    available = with_requirements(image_packages()) | {gpu_wheels.distribution_name(s) for s in gpu_wheels.gpu_wheels()}
    # pytest loads every installed plugin (entry point pytest11): ones installed here load here only.
    available |= {normalized(e.dist.metadata["Name"]) for e in entry_points(group="pytest11")}
    missing = {}
    for name in sorted(modules - set(sys.stdlib_module_names) - local - {"__main__", "__mp_main__"}):
        if name.startswith("_sysconfigdata_"):  # the interpreter's build configuration
            continue
        dists = {normalized(d) for d in providers.get(name, [])}
        if not dists & available:
            missing[name] = sorted(dists) or ["(no installed distribution provides it)"]
    assert not missing, f"imported by the GPU check but neither carried nor on the GPU image: {missing}"


def test_gpu_wheels_are_pinned_once_and_not_on_the_image():
    specs = gpu_wheels.gpu_wheels()
    names = [gpu_wheels.distribution_name(s) for s in specs]
    assert len(set(names)) == len(names) and all("==" in s for s in specs)
    assert not set(names) & image_packages()  # carrying a second version would shadow the image's
    pyproject = (REPO / "pyproject.toml").read_text()
    for name in gpu_wheels.PROJECT_DEPENDENCIES:
        assert f'"{gpu_wheels.project_pin(name)}"' in pyproject
    for spec in gpu_wheels.TRANSITIVE:  # the versions this venv resolved with our pins
        name, pinned = spec.split("==")
        assert version(name) == pinned, f"{name}: pinned {pinned}, `make venv` installs {version(name)}"
    assert gpu_wheels.LIMIT_MIB <= 60
