"""Imports point one way: the client needs only the contract (wavenet/), the contract no ML code, training no
compiled engine; and the server's functions stay short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "v1" not in p.parts)


@pytest.mark.parametrize("folder, forbidden", [
    ("client", ("server", "models")),  # the contract and the audio helpers in wavenet/ only
    ("wavenet", ("server", "models", "client", "torch")),
])
def test_a_package_imports_nothing_from_the_ones_it_must_not_know(folder: str, forbidden: tuple[str, ...]) -> None:
    found = {f"{path.relative_to(ROOT)}: {name}" for path in sources(folder) for name in imported_modules(path)
             if name.split(".")[0] in forbidden}
    assert not found


@pytest.mark.parametrize("module", ["models/train.py", "models/data.py"])
def test_training_does_not_load_the_compiled_engine(module: str) -> None:
    assert not {n for n in imported_modules(ROOT / module)
                if n.startswith(("models.generate.compiled", "models.generate._engine"))}


def test_no_function_in_the_server_is_over_60_lines() -> None:
    long = []
    for path in sources("server"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long
