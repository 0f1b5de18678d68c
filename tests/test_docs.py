"""Documents cannot drift from the code: tests/RELIABILITY.md names tests that exist and run on
a CPU machine, and README.md, docs/*.md, tests/RELIABILITY.md and the package's docstrings name
only modules, functions and files that exist and the number of tables there is."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import io
import os
import re
import sysconfig
import tokenize
from functools import lru_cache
from pathlib import Path

import pytest
from reliability_cases import DOC, MAKEFILE, cases, ci_markers, collect, junit_outcomes, matches, outcome_of, report

from extract.tables.schemas import TABLES

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", DOC, *sorted((REPO / "docs").glob("*.md"))]
SOURCES = sorted([*(REPO / "extract").rglob("*.py"), *(REPO / "jobs").rglob("*.py")])
PACKAGES = ("extract", "jobs")
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
# "all five tables", "the seven Delta tables", "each of the five tables", "five table commits"
TABLE_COUNT = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\s+(?:output\s+|Delta\s+)?(?:tables?|Delta table)\b",
                         re.I)
DOTTED = re.compile(r"(?<![\w./$-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?![\w/(.-])")
# Dotted names that are not Python: a Linux sysctl.
NOT_PYTHON = {"kernel.unprivileged_userns_clone"}


# --------------------------------------------------------------------------- RELIABILITY.md


def test_every_reliability_case_names_tests_that_exist_and_run_on_a_cpu_machine():
    listed = cases(DOC.read_text(encoding="utf-8"))
    assert len(listed) >= 60 and all(nodes for _, nodes in listed), [c for c, nodes in listed if not nodes]
    files = sorted({node.split("::")[0] for _, nodes in listed for node in nodes})
    collected = collect(files)
    problems = []
    for case, nodes in listed:
        for node in nodes:
            found = matches(node, collected)
            if not found:
                problems.append(f"case {case}: {node} does not exist")
            problems += [f"case {case}: {n} would not run ({collected[n]})" for n in found if collected[n]]
    assert not problems, "\n".join(problems)


def test_test_all_runs_every_tier_a_cpu_machine_can():
    """.ci/run is `make test`; `make test-all` selects with ALL_MARKERS (only the GPU tier and the
    other interpreters' installs left out) and writes the reliability report from that run's JUnit XML."""
    assert (REPO / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    assert ci_markers() == "not gpu and not interpreters"
    recipe = re.search(r"^test-all:.*\n((?:\t.*\n)+)", MAKEFILE.read_text(encoding="utf-8"), re.M).group(1)
    assert '-m "$(ALL_MARKERS)"' in recipe and "--junitxml=$(JUNIT)" in recipe
    assert "tests/reliability_cases.py $(JUNIT)" in recipe


def test_a_listed_test_ci_would_not_run_is_caught(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text("import pytest\n\n@pytest.mark.gpu\ndef test_gpu(): pass\n\n"
                       "@pytest.mark.skip(reason='planted')\ndef test_skipped(): pass\n\ndef test_runs(): pass\n")
    why = {node.split("::")[-1]: reason for node, reason in collect([str(planted)]).items()}
    assert why == {"test_runs": None, "test_skipped": "planted",
                   "test_gpu": f"deselected by make test-all's -m {ci_markers()!r}"}


def test_junit_outcomes_drop_the_xdist_group(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite><testcase classname="tests.test_a" name="test_x[p]@ray"/>'
                     '<testcase classname="tests.test_b" name="test_y@test_b.py"><skipped/></testcase>'
                     '<testcase classname="tests.test_b" name="test_z"><failure/></testcase></testsuite></testsuites>')
    assert junit_outcomes(junit) == {"tests/test_a.py::test_x[p]": "passed", "tests/test_b.py::test_y": "skipped",
                                     "tests/test_b.py::test_z": "failed"}


def test_the_reliability_report_comes_from_the_run():
    doc = ("| # | case | behaviour | tests |\n|---|---|---|---|\n"
           "| 1 | a | b | `tests/test_a.py::test_x[p]`, `tests/test_b.py` |\n"
           "| 2 | a | b | `tests/test_a.py::test_y` (slow) |\n| 3 | a | b | nothing named |\n")
    outcomes = {"tests/test_a.py::test_x[p]": "passed", "tests/test_b.py::test_1": "passed",
                "tests/test_b.py::test_2": "skipped", "tests/test_a.py::test_y": "passed"}
    text, problems = report(doc, outcomes)
    assert problems == ["case 1: tests/test_b.py skipped", "case 3 names no test"]
    assert "| 2 | 1 | pass |" in text and outcome_of("tests/test_c.py::t", outcomes) == "not run"
    assert outcome_of("tests/test_a.py::test_x", outcomes) == "passed"  # every parameter of it
    assert outcome_of("tests/test_b.py", outcomes) == "skipped"


# --------------------------------------------------------------------------- names in documents


@lru_cache(maxsize=1)
def code_strings() -> frozenset[str]:
    """Every string constant of the package's code (metadata keys such as ``extract.run_id``)."""
    return frozenset(node.value for path in SOURCES for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 100)


@lru_cache(maxsize=1)
def file_names() -> frozenset[str]:
    """Names of the repository's files (virtual environment and build outputs left out)."""
    names = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "demo-out")]
        names.update(files)
    return frozenset(names)


@lru_cache(maxsize=1)
def code_identifiers() -> frozenset[str]:
    """Every name the package's code defines or uses (docstrings and comments left out), plus
    words of its strings and the tables' column names: what a document may mention."""
    names: set[str] = set()
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        docstrings = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    docstrings.add(first.lineno)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME:
                names.add(tok.string)
            elif tok.type == tokenize.STRING and tok.start[0] not in docstrings:
                names.update(re.findall(r"[A-Za-z_]\w*", tok.string))
    for schema in (REPO / "schemas").glob("*.json"):
        names.update(re.findall(r'"name": "(\w+)"', schema.read_text()))
    return frozenset(names)


SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


@lru_cache(maxsize=1)
def config_sections() -> frozenset[str]:
    from extract.config import Config

    return frozenset(f.name for f in dataclasses.fields(Config))


@lru_cache(maxsize=1)
def classes_of_ours() -> dict[str, list[str]]:
    """``{class name: [modules defining it]}`` of the package."""
    out: dict[str, list[str]] = {}
    for path in SOURCES:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                out.setdefault(node.name, []).append(module)
    return out


@lru_cache(maxsize=1)
def module_basenames() -> dict[str, list[str]]:
    """``{basename: [dotted module]}`` of every module and package of ours."""
    out: dict[str, list[str]] = {}
    for path in SOURCES:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.setdefault(parts[-1], []).append(".".join(parts))
    return out


def resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module of ours followed by attributes it has."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        obj = importlib.import_module(name)
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def stale_references(text: str) -> list[str]:
    """Names in ``text`` (Markdown or a docstring) that the code no longer has: a dotted name of
    our packages that does not import, ``<module>.<name>`` whose module of ours lacks it, a
    ``<file>.py`` no file is called, a ``<word>.<name>`` whose last part the code never
    mentions, and a number of tables that is not ``len(TABLES)``."""
    problems = []
    for quoted in re.findall(r"``?([^`\n]+)``?", text):
        for dotted in DOTTED.findall(quoted):
            parts = dotted.split(".")
            head, last = parts[0], parts[-1]
            if dotted in NOT_PYTHON or head in config_sections():
                continue  # config keys (`limits.max_pixels`, `labels.topic.prompts.food`) are checked by test_config
            if last == "py":
                if dotted not in file_names() and not list(SITE_PACKAGES.glob(f"*/{dotted}")):
                    problems.append(f"{dotted}: no such file")
            elif head in PACKAGES:
                if not resolves(dotted) and dotted not in code_strings():
                    problems.append(f"{dotted}: not in the package")
            elif head in module_basenames():
                # our extract.models.whisper, or openai-whisper's whisper; a word that is also a
                # module's name (`job.path`, `config.sampling`) passes when the code has the name
                if not any(resolves(".".join([m, *parts[1:]])) for m in module_basenames()[head]) \
                        and not resolves(dotted) and last not in code_identifiers():
                    problems.append(f"{dotted}: module {head} has no {'.'.join(parts[1:])}")
            elif head[0].isupper():  # a class: ours must have the attribute; another library's is its own
                ours = [getattr(importlib.import_module(m), head) for m in classes_of_ours().get(head, ())]
                if ours and not any(hasattr(cls, parts[1]) for cls in ours) and parts[1] not in code_identifiers():
                    problems.append(f"{dotted}: class {head} has no {parts[1]}")
            elif last not in code_identifiers() and importlib.util.find_spec(head) is None:
                problems.append(f"{dotted}: the code has no {last}")
    for match in TABLE_COUNT.finditer(text):
        if NUMBER_WORDS[match.group(1).lower()] not in (1, len(TABLES)) and NUMBER_WORDS[match.group(1).lower()] > 2:
            problems.append(f"{match.group(0)!r}: there are {len(TABLES)} tables")
    return problems


def docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return "\n".join(ast.get_docstring(node, clean=False) or "" for node in ast.walk(tree)
                     if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))


@pytest.mark.parametrize("path", [*DOCS, *SOURCES], ids=lambda p: str(p.relative_to(REPO)))
def test_documents_name_only_what_exists(path):
    text = path.read_text(encoding="utf-8") if path.suffix == ".md" else docstrings(path)
    assert not stale_references(text), stale_references(text)


def test_a_stale_name_is_caught():
    words = {n: w for w, n in NUMBER_WORDS.items()}
    right, wrong = words[len(TABLES)], words[len(TABLES) - 2]
    fake = f"""The run (`extract.pipeline.run_job`) reads the manifest (``sources.read_manifest``), then
    commits each of the {wrong} tables; `extract.pipeline.job.run_job`, `probe.open_input` and the
    key `extract.run_id` exist, `writer.py` too, `pipeline.py` no longer, and
    `probe.read_everything` never did. All {right} tables at one boundary; two tables joined."""
    assert set(stale_references(fake)) == {
        "extract.pipeline.run_job: not in the package", "sources.read_manifest: the code has no read_manifest",
        "pipeline.py: no such file", "probe.read_everything: module probe has no read_everything",
        f"'{wrong} tables': there are {len(TABLES)} tables"}
