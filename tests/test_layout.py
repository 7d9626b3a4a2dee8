"""The package's shape that issue 10 asks to keep: no import circle in ``flip/``, the executor
as the one place a client is trained, and a lean ``Federation``."""

from __future__ import annotations

import ast
from pathlib import Path

FLIP = Path(__file__).resolve().parents[1] / "flip"


def _module_name(path: Path) -> str:
    parts = path.relative_to(FLIP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The flip modules ``path`` imports anywhere in its body (functions included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # flip.x.y.Name -> flip.x.y
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(FLIP.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle_in_flip():
    graph = _graph()
    assert {"flip.federation.round", "flip.federation.executor"} <= graph["flip.federation.server"]
    assert _cycles(graph) == []


def test_clients_are_built_in_the_executor_and_evaluation_only():
    builders = sorted(str(p.relative_to(FLIP)) for p in FLIP.rglob("*.py")
                      if "ClientModule(" in p.read_text() and p.name != "client.py")
    assert builders == ["federation/evaluation.py", "federation/executor.py"]


def test_federation_stays_lean():
    source = (FLIP / "federation" / "server.py").read_text()
    tree = ast.parse(source)
    (fed,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Federation"]
    assert fed.end_lineno - fed.lineno + 1 <= 250
