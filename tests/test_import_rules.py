"""The import rules the packages' docstrings state, checked: who may import whom, and no import cycles.

Every package's ``__init__.py`` docstring may hold one rule

    Imports allowed: ``models``, ``utils.geometry`` and ``utils.errors``; <prose>

listing, in double backticks and up to the first ``;`` (or the end of its paragraph, may wrap), the project
modules that the package's files may import besides the package's own modules (``none``: only its own). A
listed package allows its submodules. A file follows the rule of the nearest package above it that has one
(a subpackage without a line follows its parent's). Both module-level and function-local imports of the
project's packages are checked.

The second test builds the module-level import graph of the project (imports inside functions and under
``if TYPE_CHECKING:`` left out, as they do not run at import time) and fails on any cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "datasets", "utils", "trainers", "scripts")
RULE_RE = re.compile(r"^[ \t]*Imports allowed:(?P<body>.*?)(;|\n[ \t]*\n|\Z)", re.MULTILINE | re.DOTALL)
ITEM_RE = re.compile(r"``([A-Za-z_][\w.]*)``")


def project_files() -> dict[str, Path]:
    """``{module name: path}`` of every .py file of the project's packages."""
    files = {}
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


FILES = project_files()


def resolve(name: str) -> str:
    """The project module an import of ``name`` loads: ``name`` itself or its longest existing prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in FILES:
            return ".".join(parts[:i])
    return name


def imports(tree: ast.AST, module_level_only: bool) -> list[tuple[int, str]]:
    """``(line, module)`` of each import of a project module in ``tree``.

    With ``module_level_only``, imports inside functions and ``if TYPE_CHECKING:`` blocks are skipped.
    """
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if module_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit_list(child.orelse)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, resolve(alias.name)) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    # `from utils import dist` imports the module utils.dist; `from utils.x import f`, utils.x
                    submodule = f"{child.module}.{alias.name}"
                    found.append((child.lineno, submodule if submodule in FILES else resolve(child.module)))
            visit(child)

    def visit_list(nodes: list[ast.AST]) -> None:
        for n in nodes:
            visit(ast.Module(body=[n], type_ignores=[]))

    visit(tree)
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def package_rules() -> dict[str, tuple[list[str], str]]:
    """``{package: (allowed modules, the rule's text)}`` from the ``Imports allowed:`` rules."""
    rules = {}
    for name, path in FILES.items():
        if path.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        found = list(RULE_RE.finditer(doc))
        assert len(found) <= 1, f"{path.relative_to(REPO)}: more than one 'Imports allowed:' rule"
        if found:
            body = " ".join(found[0].group("body").split()).removesuffix(".")
            allowed = ITEM_RE.findall(body)
            rest = ITEM_RE.sub("", body).replace(",", " ").replace(" and ", " ").split()
            assert (allowed and not rest) or (not allowed and rest == ["none"]), (
                f"{path.relative_to(REPO)}: 'Imports allowed: {body}' is not a list of ``module`` names (or "
                "'none') up to the first ';' or the end of its paragraph"
            )
            unknown = [a for a in allowed if a not in FILES]
            assert (
                not unknown
            ), f"{path.relative_to(REPO)}: the rule names modules that do not exist: {unknown}"
            rules[name] = (allowed, f"Imports allowed: {body}")
    return rules


def governing_rule(module: str, rules: dict) -> str | None:
    """The package whose rule applies to ``module``: the nearest package above it (or it) with a rule."""
    parts = module.split(".")
    is_package = FILES[module].name == "__init__.py"
    for i in range(len(parts) if is_package else len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in rules:
            return ".".join(parts[:i])
    return None


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_packages_state_their_import_rules():
    rules = package_rules()
    # the packages whose rule this project has written down (scripts/ is not a package)
    expected = {
        "models",
        "datasets",
        "datasets.synthetic",
        "utils",
        "utils.geometry",
        "utils.geometry.procedural_hand",
        "utils.metrics",
        "utils.render",
        "utils.bench",
        "trainers",
        "trainers.srhand",
    }
    assert expected <= set(
        rules
    ), f"packages without an 'Imports allowed:' rule: {sorted(expected - set(rules))}"
    assert rules["trainers.srhand"][0] == [
        "models",
        "datasets",
        "utils",
        "trainers.losses",
        "trainers.sr_eval",
    ]


def test_every_import_is_allowed_by_its_package_rule():
    rules = package_rules()
    violations = []
    for module, path in FILES.items():
        package = governing_rule(module, rules)
        if package is None:
            continue
        allowed, line = rules[package]
        for lineno, target in imports(ast.parse(path.read_text()), module_level_only=False):
            if within(target, package) or any(within(target, a) for a in allowed):
                continue
            init = Path(*package.split(".")) / "__init__.py"
            violations.append(
                f"{path.relative_to(REPO)}:{lineno} imports {target}, not allowed by {init} ('{line}')"
            )
    assert not violations, "\n".join(violations)


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph has a few hundred nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_no_import_cycle_at_module_level():
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], int] = {}
    for module, path in FILES.items():
        graph[module] = set()
        for lineno, target in imports(ast.parse(path.read_text()), module_level_only=True):
            if target in FILES and target != module:
                graph[module].add(target)
                where.setdefault((module, target), lineno)
    cycles = [c for c in strongly_connected_components(graph) if len(c) > 1]
    report = []
    for component in cycles:
        edges = [
            f"{FILES[a].relative_to(REPO)}:{where[a, b]} imports {b}"
            for a in component
            for b in sorted(graph[a])
            if b in component
        ]
        report.append(f"cycle {component}:\n    " + "\n    ".join(edges))
    assert not cycles, "\n".join(report)


def test_the_checks_see_what_they_check():
    """The walkers find a known function-local import and a known module-level one, and the SCC finds cycles."""
    run_imports = imports(ast.parse(FILES["trainers.run"].read_text()), module_level_only=False)
    assert "trainers.giif_trainer" in {name for _, name in run_imports}  # inside run_sr_stage
    top_level = imports(ast.parse(FILES["trainers.run"].read_text()), module_level_only=True)
    assert "trainers.giif_trainer" not in {name for _, name in top_level}
    assert "utils.config" in {name for _, name in top_level}
    guarded = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import models\nelse:\n    import utils\n"
    )
    assert [name for _, name in imports(guarded, module_level_only=True)] == ["utils"]
    assert sorted(map(sorted, strongly_connected_components({"a": {"b"}, "b": {"a"}, "c": {"a"}}))) == [
        ["a", "b"],
        ["c"],
    ]
