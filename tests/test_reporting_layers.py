"""The reporting modules depend one way: records and cells <- table kinds <- the command.

Read from the source with ``ast`` (nothing is imported), counting imports inside functions
too: a deferred import hides a cycle from Python, not from the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "benchmark.reporting"
ROOT = Path(__file__).resolve().parents[1] / "benchmark" / "reporting"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``<root>/site/build.py`` -> ``benchmark.reporting.site.build`` (a package's
    ``__init__.py`` is the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def imports(path: Path, modules: set[str]) -> list[tuple[str, list[str]]]:
    """(imported module of the package, names taken from it) of every import in the file,
    at any depth. ``from benchmark.reporting import tables`` imports the module ``tables``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    out.append((full, []))
                elif node.module in modules:
                    out.append((node.module, [alias.name]))
    return out


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, list]]:
    """(module -> the package's modules it imports, module -> its imports with names)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    found = {m: imports(p, set(files)) for m, p in files.items()}
    graph = {m: {dep for dep, _ in deps} - {m} for m, deps in found.items()}
    return graph, found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_reporting_modules():
    graph, _ = import_graph()
    assert len(graph) > 10, sorted(graph)  # the package was found
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_nothing_imports_the_command():
    """``aggregate`` parses arguments and dispatches; the code it runs lives below it."""
    graph, _ = import_graph()
    users = sorted(m for m, deps in graph.items() if f"{PACKAGE}.aggregate" in deps)
    assert users == []


def test_shared_layer_imports_no_table_kind():
    """``records`` and ``cells`` (and the statistics and provenance under them) import nothing
    of the package but each other."""
    graph, _ = import_graph()
    shared = {f"{PACKAGE}.{m}" for m in ("records", "cells", "stats", "provenance", "spec_files")}
    assert shared <= set(graph), sorted(shared - set(graph))
    above = {m: sorted(graph[m] - shared) for m in sorted(shared)}
    assert above == {m: [] for m in sorted(shared)}


def test_no_private_name_is_imported_across_modules():
    _, found = import_graph()
    private = sorted(
        f"{m} imports {dep}.{name}"
        for m, deps in found.items()
        for dep, names in deps
        for name in names
        if name.startswith("_") and dep != m
    )
    assert private == []


def test_a_cycle_is_found(tmp_path):
    """The checks see a deferred import (inside a function) and a cross-module private name."""
    pkg = tmp_path / "reporting"
    pkg.mkdir()
    (pkg / "a.py").write_text("from benchmark.reporting.b import _helper\n")
    (pkg / "b.py").write_text("def f():\n    from benchmark.reporting import a\n")
    graph, found = import_graph(pkg)
    assert find_cycle(graph) == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.a"]
    assert found[f"{PACKAGE}.a"] == [(f"{PACKAGE}.b", ["_helper"])]
    assert find_cycle({"x": {"y"}, "y": set()}) is None
