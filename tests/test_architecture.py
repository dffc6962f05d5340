"""Imports point one way down the pipeline (docs/ARCHITECTURE.md), checked on the source with ``ast``.

Every import of every module under esrkit/ is read, at module level and inside functions. The checker fails on
an import of a higher layer, on a cycle between esrkit modules (module-level imports, the ones that run at
import time), on an esrkit import inside a function outside esrkit/cli, and on a function-level import without
a comment saying why it is there. The checker itself is tested on small synthetic trees and on a copy of the
package with one upward import planted.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

# lowest first; a module may import its own layer and any layer below it
LAYERS = (
    "foundation",
    "data",
    "prompts",
    "providers",
    "embedding",
    "index",
    "models",
    "evaluation",
    "training",
    "reporting",
    "runs",
    "serving",
    "cli",
)
FOUNDATION = ("esrkit.utils", "esrkit.registry", "esrkit.resources", "esrkit.config")
EXEMPT = ("esrkit", "esrkit.__main__")  # the package root (esrkit.load) and ``python -m esrkit``


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a submodule when ``from package import submodule``)
    line: int
    in_function: bool
    type_checking: bool  # under ``if TYPE_CHECKING:`` (annotations only, never run)
    commented: bool  # a comment on the statement, in its block of imports or right above it


def layer_of(module: str) -> str | None:
    if module in EXEMPT:
        return None
    if module.startswith(FOUNDATION):
        return "foundation"
    name = module.split(".")[1]
    return name if name in LAYERS else None


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root``/esrkit."""
    out = {}
    for path in sorted((root / "esrkit").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _commented_imports(tree: ast.AST, lines: list[str]) -> set[int]:
    """Line numbers of import statements that carry a reason: a comment on the statement or in its block of
    consecutive imports, or a comment line right above the block."""
    out: set[int] = set()
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if not isinstance(statements, list):  # a lambda's body is one expression
                continue
            block: list[ast.stmt] = []
            for stmt in [*statements, None]:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    block.append(stmt)
                    continue
                if block:
                    first, last = block[0].lineno, block[-1].end_lineno or block[-1].lineno
                    above = lines[first - 2].strip() if first >= 2 else ""
                    if above.startswith("#") or any("#" in lines[i - 1] for i in range(first, last + 1)):
                        out.update(b.lineno for b in block)
                block = []
    return out


def module_imports(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    source = path.read_text()
    tree = ast.parse(source, str(path))
    commented = _commented_imports(tree, source.splitlines())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        assert isinstance(node, ast.ImportFrom)
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in dict.fromkeys(targets(child)):
                    found.append(
                        Import(
                            module,
                            target,
                            child.lineno,
                            in_function,
                            type_checking,
                            child.lineno in commented,
                        )
                    )
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, in_function, True)
            else:
                visit(child, in_function, type_checking)

    visit(tree, False, False)
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def check_tree(root: Path) -> list[str]:
    """Every problem of the package under ``root``/esrkit, one line each (empty: the rules hold)."""
    modules = module_names(root)
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        where = path.relative_to(root)
        for imp in module_imports(module, path, modules):
            internal = imp.target == "esrkit" or imp.target.startswith("esrkit.")
            if imp.in_function and not imp.commented:
                problems.append(
                    f"{where}:{imp.line}: function-level import of {imp.target} without a comment "
                    "saying why (only heavy optional dependencies and the CLI import lazily)"
                )
            if not internal:
                continue
            mine, theirs = layer_of(module), layer_of(imp.target)
            if mine is not None and theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                problems.append(
                    f"{where}:{imp.line}: upward import: {module} ({mine}) imports {imp.target} ({theirs})"
                )
            if imp.in_function and mine not in (None, "cli"):
                problems.append(
                    f"{where}:{imp.line}: function-level import of {imp.target} outside esrkit/cli"
                )
            if (
                not imp.in_function
                and not imp.type_checking
                and imp.target in modules
                and imp.target != module
            ):
                edges.setdefault(module, set()).add(imp.target)
    problems += [f"import cycle: {' <-> '.join(c)}" for c in _cycles(edges)]
    return problems


# ---------------------------------------------------------------------------------------------- the package
def test_the_package_imports_one_way_down_the_pipeline() -> None:
    problems = check_tree(REPO)
    assert not problems, "\n".join(problems)


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in module_names(REPO) if m not in EXEMPT and layer_of(m) is None]
    assert not unplaced, (
        f"modules outside every layer (add them to LAYERS and docs/ARCHITECTURE.md): {unplaced}"
    )


# ---------------------------------------------------------------------------------------------- the checker
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"esrkit/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return tmp_path


def test_checker_accepts_downward_imports(tmp_path) -> None:
    root = _tree(
        tmp_path,
        {
            "esrkit/config.py": "import os\n",
            "esrkit/data/sequences.py": "from esrkit.config import x\n",
            "esrkit/models/base.py": "from esrkit.data import sequences\nfrom . import other\n",
            "esrkit/models/other.py": "import numpy\n",
            "esrkit/cli/main.py": "def run():\n    from esrkit.runs import train  # lazy\n",
            "esrkit/runs/train.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from esrkit.runs import load\n"
                "def f():\n    import sklearn  # heavy optional import\n"
            ),
            "esrkit/runs/load.py": "from esrkit.runs.train import f\n",
        },
    )
    assert check_tree(root) == []


def test_checker_finds_an_upward_import_even_inside_a_function(tmp_path) -> None:
    root = _tree(
        tmp_path,
        {
            "esrkit/data/sequences.py": "from esrkit.training.trainer import Trainer\n",
            "esrkit/models/base.py": "def f():\n    from esrkit.reporting import tables  # planted\n",
            "esrkit/training/trainer.py": "",
            "esrkit/reporting/tables.py": "",
        },
    )
    problems = check_tree(root)
    assert any(
        "upward import: esrkit.data.sequences (data) imports esrkit.training.trainer (training)" in p
        for p in problems
    ), problems
    assert any(
        "upward import: esrkit.models.base (models) imports esrkit.reporting.tables" in p for p in problems
    ), problems


def test_checker_finds_cycles_and_lazy_internal_imports(tmp_path) -> None:
    root = _tree(
        tmp_path,
        {
            "esrkit/index/a.py": "from esrkit.index import b\n",
            "esrkit/index/b.py": "from esrkit.index.c import x\n",
            "esrkit/index/c.py": "import esrkit.index.a\n",
            "esrkit/models/base.py": "def f():\n    from esrkit.data import sequences  # down, but lazy\n",
            "esrkit/models/other.py": "def g():\n    import json\n",
            "esrkit/data/sequences.py": "",
        },
    )
    problems = check_tree(root)
    assert "import cycle: esrkit.index.a <-> esrkit.index.b <-> esrkit.index.c" in problems, problems
    assert any("function-level import of esrkit.data.sequences outside esrkit/cli" in p for p in problems)
    assert any("models/other.py:2: function-level import of json without a comment" in p for p in problems)


def test_checker_fails_on_an_upward_import_planted_in_a_copy_of_the_package(tmp_path) -> None:
    shutil.copytree(REPO / "esrkit", tmp_path / "esrkit", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "esrkit" / "data" / "sequences.py"
    target.write_text(target.read_text() + "\nfrom esrkit.runs.train import train  # noqa: E402\n")
    problems = check_tree(tmp_path)
    assert problems[0].startswith("esrkit/data/sequences.py:")
    assert "upward import: esrkit.data.sequences (data) imports esrkit.runs.train (runs)" in problems[0]
    assert all("esrkit.data.sequences" in p for p in problems), problems  # and the cycle it closes
