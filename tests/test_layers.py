"""The import graph of src/cnnkit, read from the source (every import, function-level ones included):
no cycle anywhere, and imports only flow down the layers that docs/architecture.md draws

    cli (and each task's cli.py) -> each task's api.py and the task table -> {runner, compress, retrieval,
        each task's task.py} -> {engine, evaluate, each task's config.py} -> {data, augment, models} -> {config, registry,
        errors, console}

A module imports its own layer or lower ones; the test fails on any upward import. EDGES_TO_REMOVE is
where an exception would have to be written down (it is empty: keep it so)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "cnnkit"

# (layer, module prefixes), lowest first; the first matching prefix decides (longest prefixes listed first)
LAYERS = [
    (0, ("cnnkit.errors", "cnnkit.console", "cnnkit.version", "cnnkit.registry", "cnnkit.config", "cnnkit.libwarnings",
         "cnnkit.engine.rundir")),  # atomic writes, which data writers use too
    (1, ("cnnkit.data", "cnnkit.augment", "cnnkit.models")),
    (2, ("cnnkit.engine", "cnnkit.evaluate")),
    # `augment preview` and SMOTE on backbone features are tools that read data, run models and draw
    (3, ("cnnkit.runner", "cnnkit.compress", "cnnkit.retrieval", "cnnkit.track", "cnnkit.augment.preview", "cnnkit.data.smote")),
    (4, ("cnnkit.tasks",)),  # the task table (cnnkit/tasks/__init__.py), which names the task classes without importing them
    (5, ("cnnkit.serve",)),  # the HTTP server: loads task objects through the table and calls their predict_images
    (6, ("cnnkit.cli", "cnnkit.__main__", "cnnkit.api", "cnnkit")),  # cnnkit.api: re-exports for users
]
# inside a task's folder (cnnkit/tasks/<task>/): its options (which check model names against the model
# table), its plain functions, then its class, then its commands
# (ocr has two classes: api.py's recogniser and detector.py's text detector; shipped.py loads both)
TASK_FOLDER = {"config": 2, "task": 3, "features": 3, "explain": 3, "api": 4, "detector": 4, "shipped": 4, "cli": 6}

# Upward imports not yet removed: (importer, imported). Shrink this list; never grow it.
EDGES_TO_REMOVE: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the cnnkit modules it imports anywhere in its source (``from pkg import mod`` is an edge to
    pkg.mod, not to pkg)."""
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in mods]
                targets = submodules + ([base] if len(submodules) < len(node.names) else [])
            else:
                continue
            for target in targets:
                while target and target not in mods:  # cnnkit.x.func -> cnnkit.x
                    target = target.rpartition(".")[0]
                if target.startswith("cnnkit") and target != name:
                    graph[name].add(target)
    return graph


def layer(module: str) -> int:
    """The layer of a module: in a task's folder by the file's role (TASK_FOLDER), else its longest matching
    prefix in LAYERS."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["cnnkit", "tasks"]:
        return TASK_FOLDER.get(parts[-1], 3) if len(parts) == 4 else 3  # cnnkit.tasks.<task>: its folder's docstring
    matches = [(len(prefix), rank) for rank, prefixes in LAYERS for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_nothing_inside_imports_the_user_facing_api_module():
    """cnnkit.api gathers the task classes for users; inside cnnkit each module imports the task it needs."""
    graph = import_graph()
    assert [name for name, targets in graph.items() if "cnnkit.api" in targets and name != "cnnkit"] == []


def test_imports_flow_down_the_layers():
    graph = import_graph()
    upward = {(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)}
    assert upward - EDGES_TO_REMOVE == set(), "imports against the layers (see docs/architecture.md)"
    assert EDGES_TO_REMOVE - upward == set(), "these upward imports are gone: remove them from EDGES_TO_REMOVE"


def test_the_checks_catch_what_they_claim():
    """The two checks on a made-up graph: a cycle through three modules, and an upward edge."""
    graph = {"cnnkit.data.a": {"cnnkit.data.b"}, "cnnkit.data.b": {"cnnkit.data.c"}, "cnnkit.data.c": {"cnnkit.data.a"},
             "cnnkit.errors": {"cnnkit.cli"}, "cnnkit.cli": set()}
    assert cycles(graph) == [["cnnkit.data.a", "cnnkit.data.b", "cnnkit.data.c"]]
    assert layer("cnnkit.errors") < layer("cnnkit.cli")
    assert layer("cnnkit.tasks.classify.task") == 3 and layer("cnnkit.tasks") == 4 and layer("cnnkit") == 6 and layer("cnnkit.serve.app") == 5


@pytest.mark.parametrize("command", [["--help"], ["models", "--help"], ["classify", "train", "--help"]])
def test_help_imports_no_torch(command):
    """`--help` prints in a fraction of a second: nothing on its path imports torch."""
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['cnnkit', *sys.argv[1:]]\n"
            "from cnnkit import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr[-2000:]
