"""Mutation check: break a capability on purpose and show that the tests naming it fail.

Each `tests/mutations/*.yaml` entry names a file, an exact text (found exactly once), its broken
replacement and the tests that must catch it. For every entry the runner copies the project into a
temporary directory, runs the tests there unmutated (they must pass: otherwise a "caught" mutation
proves nothing), applies the mutation and runs them again (they must fail). The copy is imported
first on `PYTHONPATH`, so the editable install of the real tree is never used (checked per run).

    .venv/bin/python tests/mutations/run.py                    # every entry -> results/mutation-check.{json,md}
    .venv/bin/python tests/mutations/run.py --only ddp-removed    # updates that row of the report

Not collected by pytest (file name), because each entry costs a full test run of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COPIED = ["platform", "tests", "pipelines", "benchmarks", "cluster", "tune_spaces", "pyproject.toml", "README.md",
          "Makefile", "Dockerfile", ".hadolint.yaml"]


def load_entries(folder: Path) -> list[dict]:
    entries = []
    for path in sorted(folder.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text()) or []:
            missing = {"id", "item", "file", "find", "replace", "tests"} - set(entry)
            if missing:
                raise SystemExit(f"{path}: entry {entry.get('id', '?')} lacks {sorted(missing)}")
            entries.append({**entry, "source": path.name})
    ids = [e["id"] for e in entries]
    if len(ids) != len(set(ids)):
        raise SystemExit(f"duplicate mutation ids in {folder}: {sorted(i for i in ids if ids.count(i) > 1)}")
    return entries


def copy_project(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


def apply(dest: Path, entry: dict) -> None:
    target = dest / entry["file"]
    text = target.read_text()
    count = text.count(entry["find"])
    if count != 1:
        raise SystemExit(f"mutation {entry['id']}: its text occurs {count} times in {entry['file']} (needs 1)")
    target.write_text(text.replace(entry["find"], entry["replace"]))


def run_tests(dest: Path, tests: list[str], timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(dest / "platform"),
           "FINADAPT_DATA_DIR": os.environ.get("FINADAPT_DATA_DIR", str(ROOT.parent / "shared" / "data"))}
    probe = subprocess.run([sys.executable, "-c", "import finadapt; print(finadapt.__file__)"],
                           cwd=dest, env=env, capture_output=True, text=True)
    if not probe.stdout.strip().startswith(str(dest)):
        raise SystemExit(f"the copy is not the imported package ({probe.stdout.strip() or probe.stderr[-300:]})")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=dest, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, out = 124, f"timed out after {timeout} s\n{err.stdout or ''}"
    summary = [line for line in out.splitlines() if " passed" in line or " failed" in line or "error" in line]
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "summary": (summary[-1] if summary else (out.strip().splitlines() or [""])[-1])[-300:]}


def check(entry: dict, baseline: bool, timeout: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mut-{entry['id']}-") as tmp:
        dest = Path(tmp)
        copy_project(dest)
        result = {k: entry[k] for k in ("id", "item", "file", "tests", "source")}
        if baseline:
            result["baseline"] = run_tests(dest, entry["tests"], timeout)
        apply(dest, entry)
        result["mutated"] = run_tests(dest, entry["tests"], timeout)
    ok_base = not baseline or result["baseline"]["rc"] == 0
    result["caught"] = ok_base and result["mutated"]["rc"] not in (0, 5)
    if not ok_base:
        result["note"] = "the tests fail without the mutation: the check proves nothing"
    return result


def write_report(results: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation-check.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Mutation check", "", "Each row breaks one capability in a copy of the tree and runs the tests "
             "that name it (`tests/mutations/run.py`).", "",
             "| mutation | issue item | tests | unmutated | mutated | caught |", "|---|---|---|---|---|---|"]
    for r in results:
        base = r.get("baseline", {}).get("summary", "not run")
        lines.append(f"| `{r['id']}` | {r['item']} | {'<br>'.join(r['tests'])} | {base} | "
                     f"{r['mutated']['summary']} | {'yes' if r['caught'] else '**no**'} |")
    (out / "mutation-check.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutation ids to run (default: all)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="where the report goes")
    args = parser.parse_args()
    entries = load_entries(Path(__file__).parent)
    if args.only:
        unknown = set(args.only) - {e["id"] for e in entries}
        if unknown:
            raise SystemExit(f"unknown mutation ids: {sorted(unknown)}")
        entries = [e for e in entries if e["id"] in args.only]
    results = []
    for entry in entries:
        result = check(entry, not args.no_baseline, args.timeout)
        print(f"{entry['id']:32s} caught={result['caught']}  {result['mutated']['summary']}", flush=True)
        results.append(result)
    previous = args.out / "mutation-check.json"
    if args.only and previous.exists():  # a partial run updates its rows, keeps the others
        fresh = {r["id"] for r in results}
        results = [r for r in json.loads(previous.read_text()) if r["id"] not in fresh] + results
        order = {e["id"]: i for i, e in enumerate(load_entries(Path(__file__).parent))}
        results.sort(key=lambda r: order.get(r["id"], len(order)))
    write_report(results, args.out)
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
