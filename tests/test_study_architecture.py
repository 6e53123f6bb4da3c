"""The layering, read from the source: no import cycle among the modules of study/ and
hybridir/ (function-level imports included), hybridir never imports study or Ray, and Ray's
private API is used in study/ray_internals.py only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "hybridir")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, nested ones included (annotation-only ones
    under ``if TYPE_CHECKING:`` left out); ``from a import b``
    gives ``a.b`` when that is a module, else ``a``."""
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only = {id(inner) for node in ast.walk(tree)  # `if TYPE_CHECKING:` imports never run
                 if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for statement in node.body for inner in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append((node.lineno, candidate if candidate in MODULES else node.module))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for _, module in _imports(path):
            while module and module not in MODULES:  # study.questions.common.X -> the module
                module = module.rpartition(".")[0]
            if module and module != name and module not in PACKAGES:
                targets.add(module)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert graph["study.console"] and graph["study.run"]  # the scan sees imports at all
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # and would see a cycle
    assert _cycles(graph) == []


def test_hybridir_never_imports_study_or_ray():
    offenders = [f"{path.relative_to(REPO)}:{line} imports {module}"
                 for name, path in MODULES.items() if name.startswith("hybridir")
                 for line, module in _imports(path) if module.split(".")[0] in ("study", "ray")]
    assert offenders == []


@pytest.fixture(scope="module")
def ray_private_names() -> set[str]:
    """Every ``_name`` Ray's installed source defines (attribute assignments, defs, classes)."""
    import ray

    pattern = re.compile(r"(?:self\.|cls\.|def |class |^\s*)(_[A-Za-z]\w*)\s*[=(:]", re.MULTILINE)
    names: set[str] = set()
    for path in Path(ray.__file__).parent.rglob("*.py"):
        try:
            names.update(pattern.findall(path.read_text(errors="ignore")))
        except OSError:
            continue
    return names


def test_ray_private_api_only_in_ray_internals(ray_private_names):
    """Outside study/ray_internals.py: no ``ray._private``, no ``from ray... import _Name``, and no
    attribute ``x._name`` that the module does not define itself but Ray's source does (a Ray
    class's private state, e.g. ASHA's ``_trial_info`` or a logger callback's ``_trial_writer``)."""
    assert {"_trial_info", "_trial_writer", "_metric_op"} <= ray_private_names  # the scan finds Ray's
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("study.") or name == "study.ray_internals":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        own = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offenders += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                              if a.name.startswith("ray") and "._" in a.name]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ray"):
                if "._" in node.module or any(a.name.startswith("_") for a in node.names):
                    offenders.append(f"{path.name}:{node.lineno} from {node.module} import ...")
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                  and node.attr not in own and node.attr in ray_private_names):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offenders == []
