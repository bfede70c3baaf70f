"""The architecture, checked: packages import one way (no cycle), and the generic packages
name no use case (a use case is one module under ``shopml.usecases``)."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

from shopml.usecases import get_usecases

SRC = Path(__file__).resolve().parents[2] / "src" / "shopml"
# Where a use case may be named: its own package, and the CLI's help text.
NAMING_ALLOWED = ("usecases", "cli.py")
# The packages that must stay generic over use cases.
GENERIC = ("serving", "monitoring", "flows", "runtime", "lifecycle", "online", "gauges.py")


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        yield str(rel), path, ast.parse(path.read_text(), str(path))


def _node(module: str) -> str | None:
    """The package (or top-level module) of ``shopml.x.y``: ``x``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "shopml" and len(parts) > 1 else None


def _type_only(tree: ast.Module) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:`` (annotations, not dependencies)."""
    out: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            out.update(id(m) for m in ast.walk(n))
    return out


def import_graph() -> dict[str, dict[str, set[str]]]:
    """Package -> package -> the files that import it, counting lazy imports inside
    functions (they are dependencies too) but not imports for type checking only."""
    graph: dict[str, dict[str, set[str]]] = {}
    for rel, _, tree in _modules():
        src = rel.split("/")[0].removesuffix(".py")
        skip = _type_only(tree)
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            names: list[str] = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names = [n.module, *(f"{n.module}.{a.name}" for a in n.names)]
            for name in names:
                dst = _node(name)
                if dst is not None and dst != src and dst != "__init__":
                    graph.setdefault(src, {}).setdefault(dst, set()).add(rel)
    return graph


def _cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in list(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph()
    assert "monitoring" in graph and "flows" in graph  # the walk sees the packages
    cycle = _cycle(graph)
    if cycle:
        where = {f"{a} -> {b}": sorted(graph[a][b]) for a, b in itertools.pairwise(cycle)}
        raise AssertionError(f"import cycle {' -> '.join(cycle)}: {where}")


def test_the_cycle_check_can_fail() -> None:
    assert _cycle({"a": {"b": {"x"}}, "b": {"a": {"y"}}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b": {"x"}}, "b": {"c": {"y"}}}) is None


def test_layers_point_down() -> None:
    """Serving imports no training, orchestration or monitoring code; monitoring does not
    orchestrate; use cases import none of the layers above them."""
    graph = import_graph()
    forbidden = {
        "serving": {"lifecycle", "flows", "monitoring"},
        "runtime": {"lifecycle", "flows", "monitoring", "serving", "usecases"},
        "monitoring": {"flows"},
        "usecases": {"lifecycle", "flows", "monitoring", "serving"},
    }
    bad = {
        f"{src} -> {dst}": sorted(graph[src][dst])
        for src, banned in forbidden.items()
        for dst in banned & set(graph.get(src, {}))
    }
    assert not bad, bad


def _docstrings(tree: ast.Module) -> set[int]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = n.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_generic_packages_name_no_use_case() -> None:
    names = set(get_usecases())
    found = []
    for rel, _, tree in _modules():
        if rel.startswith(NAMING_ALLOWED) or not rel.startswith(GENERIC):
            continue
        docs = _docstrings(tree)
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and n.value in names and id(n) not in docs:
                found.append(f"{rel}:{n.lineno}: {n.value!r}")
    assert not found, found
