"""The package's layers: imports point one way, no cycles, and only the Ray backend imports Ray.

Layers, lowest first (a module may import its own package and any lower layer):

    config < rows < io < tables, text < media < models, index < stages < pipeline
      < report, inspection, tools < runner < cli

Packages that share a layer (``tables`` and ``text``; ``models`` and ``index``; ``report``, ``inspection`` and ``tools``) may not import each other. Function-level imports
count like module-level ones, so a cycle cannot hide inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "extract"
LAYERS = {
    "extract": 0, "extract.config": 0, "extract.rows": 1, "extract.io": 2,
    "extract.tables": 3, "extract.text": 3, "extract.media": 4, "extract.models": 5, "extract.index": 5, "extract.stages": 6,
    "extract.pipeline": 7, "extract.report": 8, "extract.inspection": 8, "extract.tools": 8, "extract.runner": 9, "extract.cli": 10,
    "extract.__main__": 11,
}
RAY_BACKEND = "extract.pipeline.ray_backend"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit(module: str) -> str:
    """The layer unit of a module: its subpackage (``extract.media``) or top-level module."""
    return ".".join(module.split(".")[:2])


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from extract.media import video` imports the submodule extract.media.video
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()]
    return found


def layer_problems(root: Path = PACKAGE) -> list[str]:
    problems = []
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path)
        if unit(mod) not in LAYERS:
            problems.append(f"{mod}: not in a layer of tests/test_layers.py (add it there)")
            continue
        graph[mod] = set()
        for line, target in imports(path):
            if target == "ray" or target.startswith("ray."):
                if mod != RAY_BACKEND:
                    problems.append(f"{mod}:{line} imports {target}: only {RAY_BACKEND} may import Ray")
                continue
            if not target.startswith("extract"):
                continue
            graph[mod].add(target)
            src, dst = unit(mod), unit(target)
            if src == dst or dst == "extract":
                continue
            if dst not in LAYERS:
                problems.append(f"{mod}:{line} imports unknown {target}")
            elif LAYERS[dst] > LAYERS[src]:
                problems.append(f"{mod}:{line} imports {target}: upward ({dst} is above {src})")
            elif LAYERS[dst] == LAYERS[src]:
                problems.append(f"{mod}:{line} imports {target}: sideways ({dst} and {src} share a layer)")
    return problems + [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group) + [sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_keeps_its_layers():
    assert layer_problems() == []


@pytest.mark.parametrize("module, line, expected", [
    ("media/probe.py", "from extract.stages.decode import DecodeStage", "upward"),
    ("models/common.py", "from extract.stages import registry", "upward"),
    ("stages/clip.py", "from extract.pipeline.job import run_job", "upward"),
    ("tables/records.py", "from extract.text.captions import tag_id", "sideways"),
    ("media/video.py", "import ray", "only extract.pipeline.ray_backend may import Ray"),
    ("media/audio.py", "from extract.media.isolation import DecodePool", "import cycle"),
])
def test_a_deliberate_violation_is_caught(tmp_path, module, line, expected):
    """Copy the package, add one bad import, and the check names it."""
    import shutil

    copy = tmp_path / "extract"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef _bad():\n    {line}\n")
    global REPO
    saved = REPO
    REPO = tmp_path
    try:
        problems = layer_problems(copy)
    finally:
        REPO = saved
    assert any(expected in p for p in problems), problems


# The run report must parse no upload (issue 22): its pictures are the decode children's thumbnails.
MEDIA_READERS = ("av", "extract.media.video", "extract.media.probe", "extract.media.audio", "extract.media.isolation")


def import_chains(start: str, root: Path = PACKAGE) -> dict[str, list[str]]:
    """Every module ``start`` can import, transitively within the package (function-level
    imports and the packages' ``__init__`` included), and external modules by their top-level
    name: ``{module: the import chain from start}``."""
    def path_of(mod: str) -> Path | None:
        base = root.parent / mod.replace(".", "/")
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.exists():
                return candidate
        return None

    chains = {start: [start]}
    todo = [start]
    while todo:
        mod = todo.pop()
        path = path_of(mod)
        if path is None:
            continue
        targets = [t for _, t in imports(path)]
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        targets += [".".join(t.split(".")[:i]) for t in targets if t.startswith("extract.")
                    for i in range(2, t.count(".") + 1)]
        for target in targets:
            name = target if target.startswith("extract") else target.split(".")[0]
            if name not in chains:
                chains[name] = chains[mod] + [name]
                if name.startswith("extract"):
                    todo.append(name)
    return chains


def test_the_report_never_reaches_a_media_reader():
    chains = import_chains("extract.report")
    assert "extract.tables.catalog" in chains and "matplotlib" in chains  # the walk does follow imports
    reached = {m: " -> ".join(chains[m]) for m in MEDIA_READERS if m in chains}
    assert reached == {}, f"the report reaches a media reader: {reached}"


def test_a_report_import_of_the_video_reader_is_caught(tmp_path):
    import shutil

    copy = tmp_path / "extract"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stages = copy / "stages" / "registry.py"  # indirectly: the report imports the stage registry
    stages.write_text(stages.read_text() + "\n\ndef _bad():\n    from extract.stages.decode import DecodeStage\n")
    chains = import_chains("extract.report", copy)
    assert "extract.media.video" in chains and "av" in chains
    assert chains["extract.media.video"][:3] == ["extract.report", "extract.stages.registry", "extract.stages.decode"]
