"""The package's layers import one way (lesionseg/__init__.py): cli -> workflows, deploy -> engines ->
networks.nets, losses, metrics, data -> networks.blocks; utils from anywhere. Benchmarks use the workflows,
never the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "common" / "lesionseg"

#: what each part of lesionseg may not import (besides itself and utils, everything not listed here is allowed)
FORBIDDEN = {
    "workflows": {"cli"},
    "deploy": {"cli"},
    "engines": {"cli", "workflows", "deploy"},
    "networks": {"cli", "workflows", "deploy", "engines", "data", "losses", "metrics"},
    "losses": {"cli", "workflows", "deploy", "engines", "data", "metrics", "networks"},
    "metrics": {"cli", "workflows", "deploy", "engines", "data", "losses", "networks"},
    "data": {"cli", "workflows", "deploy", "engines", "losses", "metrics", "networks"},
    "utils": {"cli", "workflows", "deploy", "engines", "data", "losses", "metrics", "networks"},
}


def _imported_parts(path: Path) -> set[str]:
    """The first sub-package of every ``lesionseg.<part>`` that ``path`` imports (also inside functions)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            top, _, rest = name.partition(".")
            if top == "lesionseg" and rest:
                parts.add(rest.split(".")[0])
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_run_one_way(part):
    wrong = {
        str(path.relative_to(ROOT)): sorted(_imported_parts(path) & FORBIDDEN[part])
        for path in (PACKAGE / part).rglob("*.py")
    }
    assert not {path: parts for path, parts in wrong.items() if parts}


def test_blocks_do_not_import_the_networks():
    for path in (PACKAGE / "networks" / "blocks").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "lesionseg.networks.nets" not in text, path


def test_only_the_command_line_imports_it():
    users = [
        path
        for folder in (PACKAGE, ROOT / "benchmarks")
        for path in folder.rglob("*.py")
        if "cli" in _imported_parts(path) and PACKAGE / "cli" not in path.parents
    ]
    assert users == [PACKAGE / "__main__.py"]
