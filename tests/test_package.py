"""The package's shape: imports go one way, and every module stays a size a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import melody

PACKAGE = Path(melody.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(tree: ast.AST, name: str, known: set[str]) -> set[str]:
    """The melody modules a module imports, anywhere in it (in functions too), with
    the packages Python imports on the way (``a.b.c`` imports ``a.b``) except its
    own; imports for type checkers only are left out."""
    found = set()

    def visit(node):
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                       else node.module for a in node.names]
        else:
            targets = []
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and not (name == prefix or name.startswith(prefix + ".")):
                    found.add(prefix)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(ast.parse(path.read_text()), name, known) - {name}
            for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "melody.sample.sampler" in graph["melody.sample"]
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle_through_a_package():
    graph = {"a": {"b.c"}, "b": {"b.d"}, "b.c": set(), "b.d": {"a"}}
    source = {"a": "from b.c import f", "b": "from b.d import g", "b.c": "", "b.d": "import a"}
    parsed = {name: imported(ast.parse(text), name, set(source)) for name, text in source.items()}
    assert parsed["a"] == {"b", "b.c"}  # importing b.c runs b/__init__ first
    assert find_cycle(parsed) == ["a", "b", "b.d", "a"]
    assert find_cycle(graph) is None  # without the package's own import, no cycle


def test_only_the_command_line_imports_it():
    graph = import_graph()
    assert "melody.cli" in graph["melody.__main__"] and "melody.cli.flags" in graph["melody.cli"]
    importers = {name for name, targets in graph.items()
                 if any(t == "melody.cli" or t.startswith("melody.cli.") for t in targets)}
    assert importers == {"melody.__main__", "melody.cli"}


def test_errors_and_configs_are_leaves():
    graph = import_graph()
    assert graph["melody.errors"] == set()
    assert graph["melody.config"] == set()


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_stays_under_400_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= 400, f"{name} has {lines} lines"
