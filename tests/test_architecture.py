"""The package graph of engine/README.md, checked against the code.

Layers point one way: config -> domain -> storage -> billing -> booking ->
(cash | exports | documents) -> audit -> project -> cli. These tests read the import
statements of every engine module (nothing is executed) and fail on an
upward import, a cycle of module-level imports, a private name used across
packages, SQL in the CLI, a file that outgrew the size limit, or a package
without its README.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"

#: What each package may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "domain": {"config"},
    "storage": {"config", "domain"},
    "billing": {"config", "domain", "storage"},
    "booking": {"config", "domain", "storage", "billing"},
    "cash": {"config", "domain", "storage", "billing", "booking"},
    "exports": {"config", "domain", "storage", "billing", "booking"},
    "documents": {"config", "domain", "storage", "billing", "booking"},
    "audit": {"config", "domain", "storage", "billing", "booking", "cash", "exports", "documents"},
    "project": {"config", "domain", "storage", "billing", "booking", "cash", "exports", "documents", "audit"},
    "cli": {"config", "domain", "storage", "billing", "booking", "cash", "exports", "documents", "audit",
            "project"},
}
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(ENGINE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(engine)"


def _imports(module: str, path: Path, *, top_level_only: bool = False) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import of ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            # "from .pkg import module" imports a module, not a name
            if node.module is None or f"{target}.{names[0]}" in MODULES:
                for name in names:
                    out.append((f"{target}.{name}" if f"{target}.{name}" in MODULES else target, [], node.lineno))
            else:
                out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, [], node.lineno))
    return [(target, names, line) for target, names, line in out if target == "engine" or target.startswith("engine.")]


def test_layers_point_one_way():
    wrong = []
    for module, path in MODULES.items():
        package = _package(module)
        if package not in ALLOWED:
            continue
        for target, _, line in _imports(module, path):
            other = _package(target)
            if other != package and other not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ENGINE.parent)}:{line}: {package} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_cycles_among_module_level_imports():
    graph = {module: {target for target, _, _ in _imports(module, path, top_level_only=True) if target in MODULES}
             for module, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt == node:
                continue
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
            # a package importing its own submodules from __init__ is not a cycle of concern
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_across_packages():
    wrong = []
    for module, path in MODULES.items():
        for target, names, line in _imports(module, path):
            if _package(target) == _package(module):
                continue
            leaked = [n for n in names if n.startswith("_")]
            if leaked or target.rsplit(".", 1)[-1].startswith("_") and not target.endswith("__init__"):
                wrong.append(f"{path.relative_to(ENGINE.parent)}:{line}: {target} {leaked}")
    assert not wrong, "\n".join(wrong)


def test_the_cli_holds_no_sql():
    wrong = []
    for path in sorted((ENGINE / "cli").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bimport sqlalchemy\b|\bfrom sqlalchemy\b|\bsa\.(select|update|insert|delete|text|func)\b"
                         r"|\.execute\(|\bbuild_metadata\b", line):
                wrong.append(f"{path.relative_to(ENGINE.parent)}:{number}: {line.strip()}")
    assert not wrong, "\n".join(wrong)


def test_config_checks_stay_in_config():
    wrong = [f"{path.relative_to(ENGINE.parent)}:{line}" for module, path in MODULES.items()
             if _package(module) != "config"
             for target, _, line in _imports(module, path) if target == "engine.config.checks"]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_god_files(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ENGINE.parent)} has {lines} lines (limit {MAX_LINES}): split it"


def test_config_is_well_under_a_quarter_of_the_engine():
    def count(paths):
        return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in paths)

    total = count(ENGINE.rglob("*.py"))
    config = count((ENGINE / "config").rglob("*.py"))
    assert config / total < 0.23, f"config holds {config} of {total} lines ({config / total:.0%})"


@pytest.mark.parametrize("package", sorted(p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists()))
def test_every_package_has_a_readme(package):
    assert (ENGINE / package / "README.md").is_file()
