"""The module graph of finadapt: stage packages stay layered and acyclic, and tasks/ has no import circle.

Every import is read from the source with `ast` — module-level, function-local and TYPE_CHECKING ones alike —
because a late import hides a cycle from Python's import machinery but not from the design.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import finadapt

ROOT = Path(finadapt.__file__).resolve().parent
STAGES = ("data", "synth", "train", "evaluate", "tasks", "tune")
# stage -> stages it may import. tune drives every stage; data reads eval splits (decontamination);
# synth reuses data's eval n-gram index to drop generations that copy an eval text.
ALLOWED = {
    "tasks": set(),
    "evaluate": {"tasks"},
    "data": {"tasks"},
    "train": {"tasks", "evaluate"},
    "synth": {"tasks", "evaluate", "data"},
    "tune": set(STAGES) - {"tune"},
}


def _module_name(path: Path) -> str:
    parts = ("finadapt", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known) -> str:
    """The longest prefix of a dotted name that is a known module (an attribute import names its module)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def parse_imports(source: str, module: str, is_package: bool, known=MODULES) -> list[tuple[str, int]]:
    """(imported finadapt module, line) for every import statement anywhere in `source`."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(_resolve(t, known), node.lineno) for t in targets if t == "finadapt" or t.startswith("finadapt.")]
    return found


def imports_of(module: str) -> list[tuple[str, int]]:
    path = MODULES[module]
    return parse_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _stage_edges() -> dict[tuple[str, str], list[str]]:
    """(importer stage, imported stage) -> "module:line -> module" witnesses."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module in MODULES:
        src = _stage(module)
        for target, line in imports_of(module):
            dst = _stage(target)
            if src and dst and src != dst:
                edges.setdefault((src, dst), []).append(f"{module}:{line} -> {target}")
    return edges


SAMPLE_SOURCE = """
from typing import TYPE_CHECKING
import finadapt.x.deep
from finadapt import storage
from . import sibling
from .. import __version__
from ..y.z import Thing
if TYPE_CHECKING:
    from finadapt.x import typed
def late():
    from .sibling import helper
    import json
"""


def test_parser_sees_module_level_function_local_relative_and_type_checking_imports():
    """The checker itself: it must see every kind of import that could hide a cycle, resolved to modules."""
    known = {"finadapt", "finadapt.storage", "finadapt.x", "finadapt.x.deep", "finadapt.x.sibling",
             "finadapt.x.typed", "finadapt.y.z"}
    found = parse_imports(SAMPLE_SOURCE, "finadapt.x.mod", is_package=False, known=known)
    assert sorted(found) == [("finadapt", 6), ("finadapt.storage", 4), ("finadapt.x.deep", 3),
                             ("finadapt.x.sibling", 5), ("finadapt.x.sibling", 11), ("finadapt.x.typed", 9),
                             ("finadapt.y.z", 7)]
    # in a package's __init__, `from . import` is relative to the package itself
    assert parse_imports("from . import sibling", "finadapt.x", is_package=True, known=known) == \
        [("finadapt.x.sibling", 1)]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]] and _cycles({"a": {"b"}}) == []


def test_every_module_is_read():
    """The graph covers the real tree: every stage package's modules, each one parsed."""
    assert {s for s in STAGES if any(_stage(m) == s for m in MODULES)} == set(STAGES)
    assert all(isinstance(imports_of(m), list) for m in MODULES)


def test_no_import_cycle_between_stage_packages():
    edges = _stage_edges()
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    cycles = _cycles(graph)
    detail = [w for cycle in cycles for (s, d), ws in sorted(edges.items()) if s in cycle and d in cycle for w in ws]
    assert not cycles, f"stage packages import each other: {cycles}; via: {detail}"


def test_no_import_cycle_between_modules_of_tasks():
    graph = {m: {t for t, _ in imports_of(m) if t.startswith("finadapt.tasks") and t != m}
             for m in MODULES if m.startswith("finadapt.tasks")}
    assert not _cycles(graph), f"tasks/ modules import each other in a circle: {_cycles(graph)}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_imports_only_what_its_layer_allows(stage):
    bad = [w for (src, dst), ws in sorted(_stage_edges().items()) if src == stage and dst not in ALLOWED[stage]
           for w in ws]
    assert not bad, f"{stage} may import only {sorted(ALLOWED[stage]) or 'no stage package'}; found: {bad}"
