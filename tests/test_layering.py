"""The import layering of docs/architecture.md: each package imports only packages below it, so no two
packages import each other, and no import hides inside a function to dodge a cycle (the CLI's lazy
imports, for start-up time only, are the one exception)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "swinlab"

# Bottom to top; a package may import those of a lower rank (and its own modules).
LAYERS = [
    {"errors", "files", "functional"},
    {"precision"},
    {"kernels"},
    {"layers"},
    {"models"},
    {"weights", "data"},
    {"analysis", "deploy"},
    {"train"},
    {"cli"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
RANK["swinlab"] = RANK["models"] + 0.5  # swinlab/__init__.py: create_model, list_models, __version__
LAZY_OK = {"cli"}  # commands import the training stack when run: `swinlab list` need not load Lightning


def _imports(path: Path):
    """``(importing package, imported package, line, inside a function)`` for each swinlab import."""
    rel = path.relative_to(ROOT.parent).with_suffix("").parts  # ("swinlab", "layers", "mlp")
    module = list(rel[:-1]) if rel[-1] == "__init__" else list(rel)
    package = rel[1] if len(rel) > 2 or rel[-1] != "__init__" else "swinlab"
    package = package.removesuffix(".py")
    tree = ast.parse(path.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module[: len(module) - node.level + (1 if path.name == "__init__.py" else 0)]
            target = base + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("swinlab"):
            target = node.module.split(".")
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("swinlab")]
            if not names:
                continue
            target = names[0].split(".")
        else:
            continue
        imported = target[1] if len(target) > 1 else "swinlab"
        if imported != package:
            yield package, imported, node.lineno, id(node) in nested


FILES = sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in FILES} - {"__init__"}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS (and docs/architecture.md)"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_only(path):
    for package, imported, line, in_function in _imports(path):
        assert RANK[imported] < RANK[package], (
            f"{path.relative_to(ROOT)}:{line}: {package} imports {imported}, which is not below it")
        assert not in_function or package in LAZY_OK, (
            f"{path.relative_to(ROOT)}:{line}: import of {imported} inside a function; import it at the top")


@pytest.mark.parametrize("init", sorted(ROOT.rglob("__init__.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_package_attribute_shadows_its_own_submodule(init):
    """``swinlab.analysis.benchmark`` once named both a module and the function re-exported over it."""
    import importlib

    rel = init.parent.relative_to(ROOT.parent).parts
    if "triton" in rel:
        pytest.importorskip("triton")
    package = importlib.import_module(".".join(rel))
    submodules = {p.stem for p in init.parent.glob("*.py")}
    submodules |= {p.name for p in init.parent.iterdir() if (p / "__init__.py").is_file()}
    for name in getattr(package, "__all__", []):
        assert name not in submodules, f"{'.'.join(rel)}.{name} is both a submodule and an exported name"
