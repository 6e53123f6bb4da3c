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


# --- one vocabulary for results: every column name is spelled out once ---------------------
# The names whose values a study module must never spell out: the settings and per-query
# columns (hybridir.evaluation.vocabulary) and the result-row columns (study.vocabulary).
EVALUATION_COLUMNS = ("SETTING", "QUERY_LANG", "CANDIDATE_LANG", "QUERY_ID", "DATASET", "MONO", "CROSS", "MULTI")
STUDY_COLUMNS = ("TRIAL_ID", "STATUS", "FINISHED_AT", "PHASE", "CELL", "SEED", "SOURCE_TRIAL", "WALL_TIME",
                 "WORKER_SECONDS")
# (file, enclosing function, value): the same word naming something else, which must NOT follow
# a renamed column.
LITERAL_ALLOWED = {
    # the YAML field ``dataset:`` of evaluation.final items and of claims (StudySpec fields),
    # read from the raw YAML before validation
    ("study/spec.py", "_final_datasets", "dataset"): "FinalEvaluation.dataset, a YAML field",
    ("study/spec.py", "_mark_untestable_claims", "dataset"): "Claim.dataset, a YAML field",
    ("study/spec.py", "_check_claim_kind", "dataset"): "Claim.dataset, named in errors",
    ("study/spec.py", "_check_claim_kind", "setting"): "Claim.setting, named in errors",
    ("study/spec.py", "StudySpec._check_claims", "dataset"): "Claim.dataset, named in errors",
    # a contrast term's YAML field ``cell`` (a selector of grid cells), named in errors
    ("study/spec.py", "_selectors", "cell"): "ContrastTerm.cell, a YAML field",
    # the claim's YAML field ``setting``, named in a check's error (claims[i].setting)
    ("study/checks.py", "check_claims", "setting"): "Claim.setting, a YAML field",
    # TrainConfig's field ``seed`` (a --seeds re-run overrides the base config's seed)
    ("study/spec.py", "StudySpec.train_config", "seed"): "TrainConfig.seed",
    # the model card's hyperparameter table is keyed by TrainConfig paths (max_steps, seed, model.name)
    ("study/export.py", "hyperparameters", "seed"): "TrainConfig.seed",
}


def _column_vocabulary() -> dict[str, str]:
    """value -> the vocabulary name that defines it."""
    from hybridir.evaluation import vocabulary as evaluation
    from study import vocabulary as study

    names = {f"hybridir.evaluation.vocabulary.{name}": getattr(evaluation, name) for name in EVALUATION_COLUMNS}
    names |= {f"study.vocabulary.{name}": getattr(study, name) for name in STUDY_COLUMNS}
    return {value: name for name, value in names.items()}


def _bare_literals(source: str, values: dict[str, str]) -> list[tuple[int, str, str]]:
    """(line, enclosing function, value) of each string constant equal to a vocabulary value:
    docstrings and the literal text of f-strings left out (their ``{...}`` expressions are
    scanned)."""
    found = []

    def visit(node: ast.AST, scope: str) -> None:
        body = getattr(node, "body", None)
        docstring = (body[0] if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                     else None)
        for child in ast.iter_child_nodes(node):
            if child is docstring or (isinstance(node, ast.JoinedStr) and isinstance(child, ast.Constant)):
                continue
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and child.value in values:
                found.append((child.lineno, scope, child.value))
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            visit(child, inner)

    visit(ast.parse(source), "")
    return found


def test_the_scan_sees_bare_column_literals():
    values = {"query_lang": "hybridir.evaluation.vocabulary.QUERY_LANG"}
    source = ('"""query_lang"""\n'
              'def f(row):\n    """query_lang"""\n    return row["query_lang"], f"{row[\'query_lang\']}query_lang"\n')
    assert _bare_literals(source, values) == [(4, "f", "query_lang"), (4, "f", "query_lang")]


def test_result_columns_are_named_by_the_vocabularies_only():
    """No string literal in study/ equal to a per-query column, a setting or a result-row column,
    and none in hybridir/ equal to a per-query column or a setting: modules import the name
    (``hybridir.evaluation.vocabulary`` / ``study.vocabulary``), so the word is defined once.
    LITERAL_ALLOWED lists the same word naming something else."""
    values = _column_vocabulary()
    assert len(values) == len(EVALUATION_COLUMNS) + len(STUDY_COLUMNS)  # no two names share a value
    evaluation_values = {value: name for value, name in values.items() if name.startswith("hybridir.")}
    offenders, allowed_seen = [], set()
    for name, path in MODULES.items():
        if name in ("study.vocabulary", "hybridir.evaluation.vocabulary"):
            continue
        relative = path.relative_to(REPO).as_posix()
        scanned = values if name.startswith("study.") else evaluation_values  # hybridir knows no study rows
        for line, scope, value in _bare_literals(path.read_text(), scanned):
            if (relative, scope, value) in LITERAL_ALLOWED:
                allowed_seen.add((relative, scope, value))
            else:
                offenders.append(f"{relative}:{line} ({scope or 'module'}) {value!r}: use {values[value]}")
    assert offenders == []
    assert allowed_seen == set(LITERAL_ALLOWED), "an allowed literal is gone: drop its entry"
