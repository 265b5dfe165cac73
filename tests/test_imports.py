"""Module dependencies inside deepprobe point one way: no import loops (module-level or inside functions), and
nothing outside the CLI imports it (ARCHITECTURE.md: cli -> techniques/explain -> engine -> models/io)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in (ROOT / "deepprobe").rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """deepprobe modules this one imports anywhere in its body; `from pkg import sub` counts as pkg.sub."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    """One import loop as a path a -> b -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_walk_sees_the_imports():
    assert "deepprobe.cli.console" in GRAPH["deepprobe.cli.progress"]  # a module-level relative import
    assert "deepprobe.techniques.face_basis" in GRAPH["deepprobe.cli.age"]  # an import inside a function
    assert "deepprobe.options.fool" in GRAPH["deepprobe.techniques.fool"]


def test_no_import_loops():
    loop = _cycle()
    assert loop is None, "import loop: " + " -> ".join(loop)


def test_nothing_outside_the_cli_imports_it():
    entry_points = {"deepprobe.__main__"}  # `python -m deepprobe` runs the CLI
    offenders = sorted(f"{name} -> {dep}" for name, deps in GRAPH.items()
                       if not name.startswith("deepprobe.cli") and name not in entry_points
                       for dep in deps if dep.startswith("deepprobe.cli"))
    assert not offenders, offenders
