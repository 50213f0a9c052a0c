"""The layers stay visible: the engine is generic, nothing imports in a circle, and the
development tooling is not part of what a deployment runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "leo_activation"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth of its code)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[_module(path)] = {m for m in found if m.startswith("leo_activation")}
    known = set(graph)
    return {name: {m for m in deps if m in known and m != name} for name, deps in graph.items()}


GRAPH = _imports()


def _within(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


@pytest.mark.parametrize(
    "room", ["leo_activation.consumers", "leo_activation.ops", "leo_activation.dev"]
)
def test_the_engine_imports_no_consumer_ops_or_dev_module(room: str) -> None:
    offending = {
        (module, dep)
        for module, deps in GRAPH.items()
        if _within(module, "leo_activation.engine")
        for dep in deps
        if _within(dep, room)
    }
    assert not offending


def test_only_the_dev_room_and_tests_import_the_dev_room() -> None:
    offending = {
        (module, dep)
        for module, deps in GRAPH.items()
        if not _within(module, "leo_activation.dev")
        for dep in deps
        if _within(dep, "leo_activation.dev")
    }
    assert not offending


def test_no_import_circle_in_the_package() -> None:
    # a package's __init__ importing its own submodules is how a package exports; not a circle
    def edges(module: str) -> set[str]:
        return {d for d in GRAPH[module] if not _within(module, d) and not _within(d, module)}

    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(edges(module)):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles
