"""Which of today's tests fail on an older tree: the proof that a fix's test was red before the fix.

Checks out BASE (a commit) into a temporary worktree, puts today's `tests/` over it, and runs every test
file that changed since BASE against BASE's library (first on `PYTHONPATH`). Each test's outcome at
BASE (from JUnit XML) goes to `results/red-on-base.{json,md}` beside its outcome on the current tree
(the CI run), so "fails on the old tree, passes now" is read from one table.

    .venv/bin/python tests/mutations/red_on_base.py 22b317c
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def changed_test_files(base: str) -> list[str]:
    out = subprocess.run(["git", "diff", "--name-only", base, "--", "tests/"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "tests/"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    return sorted({f for f in out + untracked if Path(f).name.startswith("test_") and f.endswith(".py")
                   and (ROOT / f).exists()})


def outcomes(junit: Path) -> dict[str, str]:
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node = f"{module}.py::{case.get('name')}"
        kinds = [child.tag for child in case]
        result[node] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                        else "skipped" if "skipped" in kinds else "passed")
    return result


def run(tree: Path, files: list[str], junit: Path, pythonpath: Path, timeout: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath),
           "FINADAPT_DATA_DIR": os.environ.get("FINADAPT_DATA_DIR", str(ROOT.parent / "shared" / "data"))}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    *files], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    return outcomes(junit) if junit.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to test against, e.g. 22b317c")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    files = changed_test_files(args.base)
    with tempfile.TemporaryDirectory(prefix="red-on-base-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            shutil.rmtree(tree / "tests")
            shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            at_base = run(tree, files, Path(tmp) / "base.xml", tree / "platform", args.timeout)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    now = run(ROOT, files, ROOT / ".red-on-base-now.xml", ROOT / "platform", args.timeout)
    (ROOT / ".red-on-base-now.xml").unlink(missing_ok=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    rows = [{"test": node, "at_base": at_base.get(node, "not collected"), "now": state}
            for node, state in sorted(now.items())]
    red = [r for r in rows if r["at_base"] != "passed" and r["now"] == "passed"]
    report = {"base": args.base, "head": head, "files": files, "tests": rows,
              "red_at_base_green_now": len(red), "still_failing_now": [r["test"] for r in rows if r["now"] != "passed"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "red-on-base.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Tests red at {args.base}, green at {head}", "",
             f"Today's tests in the {len(files)} test files changed since {args.base}, run against the library at "
             f"{args.base} (`tests/mutations/red_on_base.py`). 'not collected' = the file could not even import "
             "there (it uses an API the fix added).", "",
             f"{len(red)} tests fail at {args.base} and pass now; "
             f"{sum(r['at_base'] == 'passed' for r in rows)} pass on both (older behaviour they keep).", "",
             "| test | at base | now |", "|---|---|---|"]
    lines += [f"| `{r['test']}` | {r['at_base']} | {r['now']} |" for r in rows]
    (args.out / "red-on-base.md").write_text("\n".join(lines) + "\n")
    print(f"{len(red)} red at {args.base} and green now; not passing now: {report['still_failing_now']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
