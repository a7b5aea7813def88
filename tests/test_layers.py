"""The package's layers import one way (lesionseg/__init__.py): cli -> workflows, deploy -> engines ->
networks.nets, losses, metrics, data -> networks.blocks; utils from anywhere. Benchmarks use the workflows,
never the command line. Inside data, modules import one way too (DATA_MODULES)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


#: the modules of lesionseg.data and what each may import of lesionseg.data (utils from anywhere); every module is
#: listed, so that a new one has its place decided. Datalist files are read below the layouts (a datalist is one),
#: groups above them, splits above groups: nothing walks readers -> splits -> readers. The phantom simulator
#: (a subpackage) stands alone.
DATA_MODULES = {
    "io": set(),
    "datalist": {"io"},
    "readers": {"io", "datalist"},
    "grouping": {"io", "readers"},
    "splits": {"io", "datalist", "readers", "grouping"},
    "integrity": {"io", "datalist", "readers", "grouping"},
    "download": {"io", "readers", "grouping", "integrity"},
    "transforms": {"io"},
    "writers": {"io"},
    "layout": set(),
    "phantoms": set(),
}


def _imported_data_modules(path: Path) -> set[str]:
    """The modules ``lesionseg.data.<module>`` that ``path`` imports; ``"__init__"`` for the package itself."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "lesionseg.data" else []
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "lesionseg.data":
                modules.add("__init__")
            elif name.startswith("lesionseg.data."):
                modules.add(name.split(".")[2])
    return modules


def test_data_modules_import_one_way():
    data = PACKAGE / "data"
    found = {path.relative_to(data).parts[0].removesuffix(".py") for path in data.rglob("*.py")} - {"__init__"}
    assert found == set(DATA_MODULES), "list the new module of lesionseg.data in DATA_MODULES"
    wrong = {}
    for path in data.rglob("*.py"):
        if path == data / "__init__.py":
            continue
        module = path.relative_to(data).parts[0].removesuffix(".py")
        imported = _imported_data_modules(path) - {module}
        if imported - DATA_MODULES[module]:
            wrong[str(path.relative_to(ROOT))] = sorted(imported - DATA_MODULES[module])
    assert not wrong


def test_data_modules_do_not_load_the_phantom_simulator():
    """Configs import lesionseg.data.splits; the simulator (numpy/scipy image synthesis) is loaded only by its users."""
    check = "import lesionseg.data.splits, sys; assert 'lesionseg.data.phantoms' not in sys.modules"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
