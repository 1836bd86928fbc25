"""Which of today's tests fail on an older tree: the proof that a fix's test was red before the fix.

Checks out BASE (a commit) into a temporary worktree, puts today's `tests/` over it, and runs, against
BASE's library (first on `PYTHONPATH`), every test that is new or was changed since BASE (test files
added since; in changed files, each `def test_` whose body a diff hunk touches). Each test's outcome at
BASE (from JUnit XML) goes to `results/red-on-base.{json,md}`; the same tests pass on the current tree
(the CI run), so "fails on the old tree, passes now" is read from the table.

    .venv/bin/python tests/mutations/red_on_base.py 22b317c
"""
from __future__ import annotations

import argparse
import re
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def changed_tests(base: str) -> list[str]:
    """Node ids (file::function) of tests added or edited since `base`."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    nodes: set[str] = set()
    added = set(git("diff", "--name-only", "--diff-filter=A", base, "--", "tests/").split())
    added |= set(git("ls-files", "--others", "--exclude-standard", "tests/").split())
    changed = set(git("diff", "--name-only", "--diff-filter=M", base, "--", "tests/").split())
    for path in sorted(added | changed):
        if not (Path(path).name.startswith("test_") and path.endswith(".py") and (ROOT / path).exists()):
            continue
        if path in added:
            nodes.update(f"{path}::{m.group(1)}" for m in re.finditer(r"^def (test_\w+)", (ROOT / path).read_text(), re.M))
            continue
        current = None  # the test function enclosing each changed line of today's file
        lines = (ROOT / path).read_text().splitlines()
        for hunk in re.finditer(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", git("diff", "-U0", base, "--", path), re.M):
            start, count = int(hunk.group(1)), int(hunk.group(2) or 1)
            for number in range(max(start, 1), start + max(count, 1)):
                for back in range(min(number, len(lines)) - 1, -1, -1):
                    if re.match(r"^(def|class|@|[A-Za-z_])", lines[back]):
                        current = re.match(r"^def (test_\w+)", lines[back])
                        break
                if current:
                    nodes.add(f"{path}::{current.group(1)}")
    return sorted(nodes)


def outcomes(junit: Path) -> dict[str, str]:
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{case.get('name')}"
        kinds = [child.tag for child in case]
        result[node] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                        else "skipped" if "skipped" in kinds else "passed")
    return result


def run(tree: Path, nodes: list[str], junit: Path, pythonpath: Path, timeout: int) -> dict[str, str]:
    """Files + a `-k` of the test names, not node ids: pytest aborts the whole run on a node id it cannot
    find, which is every node of a file that does not import at the base."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath),
           "FINADAPT_DATA_DIR": os.environ.get("FINADAPT_DATA_DIR", str(ROOT.parent / "shared" / "data"))}
    files = sorted({node.split("::")[0] for node in nodes})
    names = " or ".join(sorted({node.split("::")[1] for node in nodes}))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "--continue-on-collection-errors", "-k", names, *files],
                   cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    return outcomes(junit) if junit.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to test against, e.g. 22b317c")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    nodes = changed_tests(args.base)
    with tempfile.TemporaryDirectory(prefix="red-on-base-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            shutil.rmtree(tree / "tests")
            shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            at_base = run(tree, nodes, Path(tmp) / "base.xml", tree / "platform", args.timeout)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    rows = []
    for node in nodes:  # parametrized cases are reported under their function
        states = sorted({v for k, v in at_base.items() if k == node or k.startswith(node + "[")})
        rows.append({"test": node, "at_base": ", ".join(states) or "not collected"})
    red = [r for r in rows if r["at_base"] != "passed"]
    report = {"base": args.base, "head": head, "tests": rows, "red_at_base": len(red)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "red-on-base.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# New and changed tests run against the library at {args.base}", "",
             f"Tests added or edited since {args.base} (head {head}), run with today's test files against the "
             f"library at {args.base} (`tests/mutations/red_on_base.py`). All of them pass on the current tree "
             "(the CI run). 'not collected' = the test could not even import there (it uses an API the fix "
             "added); 'passed' = a guard of behaviour that was already right (its mutation entry shows it can fail).",
             "", f"{len(red)} of {len(rows)} fail at {args.base}.", "", "| test | at base |", "|---|---|"]
    lines += [f"| `{r['test']}` | {r['at_base']} |" for r in rows]
    (args.out / "red-on-base.md").write_text("\n".join(lines) + "\n")
    print(f"{len(red)} of {len(rows)} new/changed tests fail at {args.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
