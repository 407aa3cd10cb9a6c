"""The house rules, read from the source with ``ast`` (README "How it is built"):

* no import circle between files of fctui/ -- every import counts: module level, inside functions,
  and under ``if TYPE_CHECKING:``;
* each package imports only the rooms below it (the table ``MAY_IMPORT``);
* only fctui/tui/ imports textual, only fctui/cli/ imports argparse;
* the command line builds its whole parser without importing textual, httpx or the engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "fctui"

# package -> the fctui packages it may import ("fctui" is fctui/__init__.py, "config" fctui/config.py)
MAY_IMPORT: dict[str, set[str]] = {
    "fctui": set(),
    "config": set(),
    "units": set(),          # the one size formatter: every room but the simulator may use it
    "store": {"units"},
    "vrm": {"units"},
    "sim": set(),            # the simulator follows the public facts, never our client
    "repo": {"store", "units"},
    "files": {"repo", "units"},   # file-level restore reads points in place: the repository, nothing above it
    "rules": {"vrm", "units"},
    "inventory": {"rules", "vrm", "units"},
    "jobs": {"inventory", "repo", "rules", "store", "vrm", "units"},   # the engine: never the agent, the CLI, the console
    "cluster": {"jobs", "vrm", "units"},   # the cluster's NATS side: the engine's models, never the agent or the CLI
    "agent": {"cluster", "jobs", "repo", "rules", "sim", "store", "vrm", "units"},
    "tui": {"agent", "cluster", "config", "files", "inventory", "jobs", "repo", "rules", "sim", "store", "vrm", "units"},
    "cli": {"fctui", "agent", "cluster", "config", "files", "inventory", "jobs", "repo", "rules", "sim", "store", "tui", "vrm", "units"},
}


@dataclass(frozen=True)
class Edge:
    source: str   # importing module
    target: str   # imported fctui module
    where: str    # file:line


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """Every module this file imports (fctui modules resolved to the file imported; others by name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                # ``from pkg import mod`` imports the module file; ``from pkg import name`` the package's __init__
                out.append((f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod, node.lineno))
    return out


def graph() -> list[Edge]:
    mods = modules()
    known = set(mods)
    edges = []
    for name, path in mods.items():
        for target, line in imports(path, name, known):
            if target in known and target != name:
                edges.append(Edge(name, target, f"{path.relative_to(ROOT.parent)}:{line}"))
    return edges


def package_of(module: str) -> str:
    parts = module.split(".")
    return "fctui" if len(parts) == 1 else parts[1]


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One import circle (as the edges around it), or None."""
    out: dict[str, list[Edge]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e)
    state: dict[str, int] = {}   # 1 on the current path, 2 done
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for e in out.get(node, []):
            if state.get(e.target) == 1:
                start = next((i for i, p in enumerate(path) if p.source == e.target), len(path))
                return path[start:] + [e]
            if e.target not in state:
                path.append(e)
                found = visit(e.target)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(out):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(f"{e.source} ({e.where})" for e in cycle) + \
        f" -> {cycle[-1].target}"


def test_each_room_imports_only_the_rooms_below_it() -> None:
    bad = [f"{e.where}: {e.source} imports {e.target}" for e in graph()
           if package_of(e.source) != package_of(e.target)
           and package_of(e.target) not in MAY_IMPORT[package_of(e.source)]]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("library, room", [("textual", "tui"), ("argparse", "cli")])
def test_library_only_in_its_room(library: str, room: str) -> None:
    mods = modules()
    known = set(mods)
    bad = [f"{p.relative_to(ROOT.parent)}:{line}" for name, p in mods.items() if package_of(name) != room
           for target, line in imports(p, name, known) if target.split(".")[0] == library]
    assert not bad, f"{library} imported outside fctui/{room}/: {bad}"


def test_the_checker_sees_circles_and_layer_breaks() -> None:
    """The checks above would fail on a real violation (they are not vacuous)."""
    edges = graph()
    assert len(edges) > 150 and {package_of(e.source) for e in edges} >= set(MAY_IMPORT) - {"fctui", "config", "units"}
    circle = [Edge("fctui.jobs.runner", "fctui.jobs.restore", "x:1"), Edge("fctui.jobs.restore", "fctui.jobs.runner", "y:2")]
    assert find_cycle(edges + circle) is not None
    upward = Edge("fctui.jobs.runner", "fctui.agent.client", "z:3")
    assert package_of(upward.target) not in MAY_IMPORT[package_of(upward.source)]
    late = imports(ROOT / "jobs" / "runner.py", "fctui.jobs.runner", set(modules()))
    assert any(line > 30 for target, line in late if target.startswith("fctui."))  # function-level imports count


def test_command_line_parser_is_cheap() -> None:
    """`fctui check --help` and friends build the whole parser without textual, httpx or the engine."""
    code = ("import sys, fctui.cli as c; c.build_parser(); "
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'httpx') "
            "or m.startswith(('fctui.jobs', 'fctui.tui', 'fctui.repo', 'fctui.sim', 'fctui.vrm')))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
