"""The package's layers, read from the imports of every module (those inside functions too).

The table is the one docs/architecture.md shows: shared parts at the bottom, the stages above
them, the experiment runner and the command line on top. A module may import its own package
and any layer below its own, never a stage beside it or a layer above; command modules
(``*/commands.py``) are for the command line alone; and no two modules import each other,
directly or round a longer circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "goracs"

#: layer -> the top-level names under ``goracs`` it holds (a module or a package)
LAYERS = {
    "shared": {"__init__", "errors", "paths", "io", "checks", "outputs", "threads", "models",
               "cache", "records", "prompts", "prepared", "lm", "cluster"},
    "stage": {"data", "features", "select", "train", "evaluate"},
    "runner": {"experiment"},
    "cli": {"cli"},
}
ORDER = ["shared", "stage", "runner", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> str:
    name = top(module)
    for lay, names in LAYERS.items():
        if name in names:
            return lay
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS and "
                         "docs/architecture.md")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "goracs" or node.module.startswith("goracs."):
                found.add(node.module)
                # `from goracs.pkg import mod` imports goracs.pkg.mod when that is a module
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file():
                        found.add(sub)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "goracs"}
    return found


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    for m in MODULES:
        layer(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_or_stay_in_the_package(module):
    mine = layer(module)
    for target in sorted(GRAPH[module]):
        theirs = layer(target)
        if top(target) == top(module):
            continue
        assert ORDER.index(theirs) <= ORDER.index(mine), \
            f"{module} ({mine}) imports {target} ({theirs}), a layer above it"
        if mine == theirs:
            assert mine == "shared", \
                f"{module} imports {target}: a {mine} may not import another {mine}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_command_modules_serve_the_command_line_only(module):
    if top(module) == "cli":
        return
    for target in GRAPH[module]:
        if target.endswith(".commands") and top(target) != top(module):
            raise AssertionError(f"{module} imports the command module {target}")
        if target.endswith(".commands") and not module.endswith(".commands") \
                and module != target.rsplit(".", 1)[0]:
            raise AssertionError(f"{module} uses the command module {target} as a library")


def test_no_circle_between_modules():
    seen: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        path.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in MODULES or t == m or m.startswith(t + ".") or t == "goracs":
                continue  # a package's __init__ re-exporting its own modules is not a circle
            if seen.get(t) == 1:
                circle = path[path.index(t):] + [t]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if t not in seen:
                visit(t)
        path.pop()
        seen[m] = 2

    for m in sorted(MODULES):
        if m not in seen:
            visit(m)
