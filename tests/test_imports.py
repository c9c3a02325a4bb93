"""The import graph of neosft/ (every import, lazy ones too, read with ast): no circle, and no import from a lower
floor to a higher one. A module's floor is that of its top-level unit (neosft.train.recipe: neosft.train)."""

from __future__ import annotations

import ast
from pathlib import Path

import neosft

ROOT = Path(neosft.__file__).parent

# Lowest first; a unit imports only units on its own floor's left or below.
FLOORS = [
    ["neosft", "neosft.errors", "neosft.ports"],
    ["neosft.progress", "neosft.chat", "neosft.variants", "neosft.local_s3", "neosft.sample"],
    ["neosft.storage"],
    ["neosft.artifacts"],
    ["neosft.runfolder", "neosft.data"],
    ["neosft.train"],
    ["neosft.eval", "neosft.k8s"],
    ["neosft.step", "neosft.plan", "neosft.backends"],
    ["neosft.run"],
    ["neosft.cli"],
    ["neosft.__main__"],
]
FLOOR = {unit: n for n, units in enumerate(FLOORS) for unit in units}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ["neosft", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the neosft modules it imports."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
        edges[name] = {m for m in out if m in mods and m != name}
    return edges


def unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_unit_has_a_floor() -> None:
    assert {unit(m) for m in modules()} <= set(FLOOR)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """The imports that climb: to a higher floor, or across to another unit of the same floor."""
    return [
        f"{m} -> {d}"
        for m, deps in sorted(edges.items())
        for d in sorted(deps)
        if unit(d) != unit(m) and FLOOR[unit(d)] >= FLOOR[unit(m)]
    ]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk meets."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_from_a_lower_floor_to_a_higher_one() -> None:
    assert upward(graph()) == []


def test_no_circle() -> None:
    assert circles(graph()) == []


def test_the_checks_catch_a_circle_and_an_upward_import() -> None:
    """The shape issue 23 removed: recipe -> eval.outputs -> recipe, and k8s.view -> backends.types."""
    old = {
        "neosft.train.recipe": {"neosft.eval.outputs"},
        "neosft.eval.outputs": {"neosft.train.recipe"},
        "neosft.k8s.view": {"neosft.backends.types"},
    }
    assert upward(old) == ["neosft.k8s.view -> neosft.backends.types", "neosft.train.recipe -> neosft.eval.outputs"]
    assert circles(old) == [["neosft.eval.outputs", "neosft.train.recipe", "neosft.eval.outputs"]]
