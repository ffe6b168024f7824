"""Imports run one way: the flow library never imports the LLFlow application, and nothing cycles.

Every ``import`` of every module is read from the source (module level and inside functions,
relative imports resolved), so an import hidden in a function to dodge a cycle is seen too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flowkit"
APPLICATION = "flowkit.models"
# The command's entry point (``python -m flowkit``) is the one library-level file that names the
# application: it is what runs the application, and nothing imports it.
ENTRY_POINTS = {"flowkit.__main__"}
# Modules that import an optional, heavy dependency at their top: these alone may be imported on
# first use inside a function.
OPTIONAL = {"flowkit.kernels.triton_affine": "triton"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """``(imported flowkit module, line, inside a function)`` for each flowkit import of ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("flowkit"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("flowkit"):
                    for alias in child.names:
                        # `from flowkit.x import y` imports the module flowkit.x.y when there is one.
                        target = f"{base}.{alias.name}"
                        found.append((target if target in MODULES else base, child.lineno, in_function))
            elif isinstance(child, ast.Call) and getattr(child.func, "attr", "") == "import_module":
                found.append(("importlib.import_module", child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return result


def _is_application(name: str) -> bool:
    return name == APPLICATION or name.startswith(APPLICATION + ".")


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def test_the_import_reader_sees_imports_inside_functions():
    source = "import flowkit.core\n\ndef f():\n    from . import layers\n    from .layers import actnorm\n"
    tree_module = PACKAGE / "__probe__.py"
    try:
        tree_module.write_text(source)
        MODULES["flowkit.__probe__"] = tree_module
        assert _imports("flowkit.__probe__") == [("flowkit.core", 1, False), ("flowkit.layers", 4, True),
                                                 ("flowkit.layers.actnorm", 5, True)]
    finally:
        tree_module.unlink()
        del MODULES["flowkit.__probe__"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_imports_nothing_of_the_application():
    upward = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items()
              if not _is_application(name) and name not in ENTRY_POINTS
              for target, line, _ in edges if _is_application(target)]
    assert upward == []


def test_no_flowkit_import_hides_inside_a_function():
    hidden = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items()
              for target, line, inside in edges if inside and target not in OPTIONAL]
    assert hidden == []


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_cycles(level):
    def node(name: str) -> str:
        # The units are what sits directly in the library's folder (flowkit.core, flowkit.layers,
        # ...) and in the application's (flowkit.models.llflow.model, flowkit.models.llflow.data, ...).
        if level == "module":
            return name
        depth = 4 if _is_application(name) and name.count(".") >= 3 else 2
        return ".".join(name.split(".")[:depth])

    edges: dict[str, set[str]] = {}
    for name, imports in GRAPH.items():
        for target, _, _ in imports:
            target = target if target in MODULES else target.rpartition(".")[0]
            if target not in MODULES or node(target) == node(name):
                continue
            if MODULES[name].name == "__init__.py" and target.startswith(name + "."):
                continue  # a package re-exporting its own modules
            edges.setdefault(node(name), set()).add(node(target))
    assert _cycles(edges) == []
