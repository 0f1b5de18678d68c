"""The cases of tests/RELIABILITY.md and the outcome of their tests in one pytest run.

Each case's last column names its tests by pytest node id (`tests/<file>.py::<test>[<param>]`,
or a whole file). ``python tests/reliability_cases.py JUNIT.xml --out REPORT.md`` (the last
step of ``make test``) reads the run's JUnit XML and writes every case with the outcome of its
tests; it exits 1 when a listed test did not pass in that run (failed, skipped, deselected or
missing), so the document's claims are the run's, not a hand-kept column. ``collect`` lists
what ``make test`` would run (its ``-m TEST_MARKERS`` from the Makefile), for tests/test_docs.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "tests" / "RELIABILITY.md"
MAKEFILE = REPO / "Makefile"
# pytest-xdist's loadgroup appends "@<group>" to a test's node id (tests/conftest.py sets the groups)
XDIST_GROUP = re.compile(r"@[\w.-]+$")
CASE_ROW = re.compile(r"^\| (\d+[a-z]?) \|.*\| ([^|]*) \|$")
NODE_ID = re.compile(r"`(tests/[\w/]+\.py(?:::[^`]+)?)`")


def cases(text: str) -> list[tuple[str, list[str]]]:
    """``[(case, [node ids])]`` of every table row of the document, in order."""
    out = []
    for line in text.splitlines():
        match = CASE_ROW.match(line)
        if match:
            out.append((match.group(1), NODE_ID.findall(match.group(2))))
    return out


def junit_outcomes(path: str | Path) -> dict[str, str]:
    """``{node id: passed|failed|skipped}`` of a pytest JUnit XML file."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{XDIST_GROUP.sub('', case.get('name', ''))}"
        kinds = {child.tag for child in case}
        outcomes[node] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return outcomes


def matches(node: str, candidates) -> list[str]:
    """The node ids of ``candidates`` a listed ``node`` names: itself, every parameter of a test
    listed without one, every test of a file listed alone."""
    if "::" not in node:
        return [n for n in candidates if n.startswith(node + "::")]
    if "[" in node:
        return [n for n in candidates if n == node]
    return [n for n in candidates if n == node or n.startswith(node + "[")]


def outcome_of(node: str, outcomes: dict[str, str]) -> str:
    """One listed test's outcome; that of a file or of a test with parameters is the worst of theirs."""
    found = [outcomes[n] for n in matches(node, outcomes)]
    if not found:
        return "not run"
    return next((o for o in ("failed", "skipped") if o in found), "passed")


def report(doc_text: str, outcomes: dict[str, str]) -> tuple[str, list[str]]:
    """The Markdown report of every case, and the problems (a listed test that did not pass)."""
    lines = ["| case | tests | outcome |", "|---|---|---|"]
    problems = []
    for case, nodes in cases(doc_text):
        results = {node: outcome_of(node, outcomes) for node in nodes}
        bad = {n: o for n, o in results.items() if o != "passed"}
        if not nodes:
            problems.append(f"case {case} names no test")
        problems += [f"case {case}: {n} {o}" for n, o in bad.items()]
        summary = "pass" if nodes and not bad else "; ".join(f"{n.split('::')[-1]} {o}" for n, o in bad.items())
        lines.append(f"| {case} | {len(nodes)} | {summary or 'no test'} |")
    return "\n".join(lines) + "\n", problems


def ci_markers() -> str:
    """The marker expression ``make test-all`` (every test a CPU machine can run, the run whose
    outcomes fill the report) selects tests with: the Makefile's ``ALL_MARKERS``."""
    (expr,) = re.findall(r"^ALL_MARKERS := (.+)$", MAKEFILE.read_text(encoding="utf-8"), re.M)
    return expr.strip()


class CollectPlugin:
    """Records what a collection would run: ``{node id: why it would not run, or None}``."""

    def __init__(self, markers: str = "") -> None:
        self.markers = markers
        self.items: dict[str, str | None] = {}

    def pytest_deselected(self, items) -> None:
        for item in items:
            self.items[item.nodeid] = f"deselected by make test-all's -m {self.markers!r}"

    def pytest_collection_finish(self, session) -> None:
        from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks

        for item in session.items:
            skip = evaluate_skip_marks(item)
            xfail = evaluate_xfail_marks(item)
            why = skip.reason if skip else "xfail(run=False)" if xfail and not xfail.run else None
            if item.get_closest_marker("gpu") is not None:
                why = "marked gpu (not run on CPU machines)"
            self.items[item.nodeid] = why


def collect(files: list[str]) -> dict[str, str | None]:
    """What ``pytest -m ALL_MARKERS`` (``make test-all``) collects from ``files`` (paths relative to
    the repository), each node id with the reason it would not run in CI on a CPU machine (None:
    it runs)."""
    code = ("import json, sys; sys.path.insert(0, 'tests'); import pytest; from reliability_cases import CollectPlugin; "
            "p = CollectPlugin(sys.argv[1]); rc = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', "
            "'-m', sys.argv[1], *sys.argv[2:]], plugins=[p]); print('@@' + json.dumps(p.items)); "
            "sys.exit(0 if rc in (0, 5) else rc)")
    proc = subprocess.run([sys.executable, "-c", code, ci_markers(), *files], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if proc.returncode != 0 or not marker:
        raise RuntimeError(f"collecting {files} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(marker[-1][2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", help="pytest --junitxml output of the run")
    parser.add_argument("--out", help="write the Markdown report here (default: stdout)")
    args = parser.parse_args(argv)
    text, problems = report(DOC.read_text(encoding="utf-8"), junit_outcomes(args.junit))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    for problem in problems:
        print(f"tests/RELIABILITY.md: {problem}", file=sys.stderr)
    print(f"tests/RELIABILITY.md: {len(cases(DOC.read_text(encoding='utf-8')))} cases, "
          f"{len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
