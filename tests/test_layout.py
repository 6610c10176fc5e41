"""The package layout: no import cycles between freezeframe's packages nor between its modules (imports inside
functions count: they only defer a dependency), store/ knows nothing of models, and heads/ (modules users import
into their own code) depends on neither the training application, the extractors nor the command line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freezeframe"


def unit_of(module: str) -> str:
    """The package (or top-level module) a dotted freezeframe module belongs to: freezeframe.train.loop -> train."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "freezeframe"


def package_imports() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the modules that import it; every import counts, also those inside functions."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                if name.startswith("freezeframe.") and unit_of(name) != unit_of(module):
                    graph.setdefault(unit_of(module), {}).setdefault(unit_of(name), set()).add(module)
    return graph


def cycle_through(graph: dict[str, dict[str, set[str]]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        unit, path = stack.pop()
        for target in graph.get(unit, {}):
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                stack.append((target, path + [target]))
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = package_imports()
    assert "freezeframe.cli.train" in graph["cli"]["train"]  # imported inside the command functions only
    assert {"extract", "store", "heads", "train", "text", "cli"} <= set(graph)


def test_no_import_cycles_between_packages():
    graph = package_imports()
    cycles = {unit: cycle_through(graph, unit) for unit in graph}
    found = {unit: " -> ".join(path) for unit, path in cycles.items() if path}
    assert not found, found


def test_heads_import_neither_training_nor_extraction_nor_the_command_line():
    imported = package_imports().get("heads", {})
    assert not {"train", "extract", "cli", "text"} & set(imported), {k: sorted(v) for k, v in imported.items()}


def module_imports() -> dict[str, set[str]]:
    """module -> the freezeframe modules it imports (also inside functions). `from package import name` depends on
    the submodule `package.name` when there is one, else on the package's __init__."""
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in files] + [node.module] * any(t not in files for t in subs)
            else:
                continue
            graph.setdefault(module, set()).update(t for t in targets if t in files and t != module)
    return graph


def test_the_module_graph_sees_imports_inside_functions():
    graph = module_imports()
    assert "freezeframe.store.feature_set" in graph["freezeframe.store.tools.memmap"]
    assert "freezeframe.train.videotext" in graph["freezeframe.train.neighbourhoods"]  # inside a method only


def test_no_import_cycles_between_modules():
    graph = module_imports()
    found = {}
    for module in graph:
        stack, seen = [(module, [module])], set()
        while stack and module not in found:
            current, path = stack.pop()
            for target in graph.get(current, ()):
                if target == module:
                    found[module] = " -> ".join(path + [module])
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    assert not found, found


def test_the_store_knows_nothing_of_models():
    imported = package_imports().get("store", {})
    assert not {"heads", "extract", "train", "text", "cli", "api"} & set(imported), \
        {k: sorted(v) for k, v in imported.items()}


def test_the_store_core_does_not_import_its_tools():
    graph = module_imports()
    core = [m for m in graph if m.startswith("freezeframe.store.") and not m.startswith("freezeframe.store.tools")]
    found = {m: sorted(t for t in graph[m] if t.startswith("freezeframe.store.tools")) for m in core}
    assert not {m: t for m, t in found.items() if t}, found
