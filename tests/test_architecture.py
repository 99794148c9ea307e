"""The layout's rules (docs/ARCHITECTURE.md) are enforced: import-linter's contracts hold, and they bite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=project, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    root = tmp_path_factory.mktemp("scratch")
    shutil.copytree(ROOT / "ftpipe", root / "ftpipe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_contracts_hold_on_the_real_package():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize("module, bad_import, contract", [
    ("ftpipe/spec/schema.py", "from ftpipe.data import prepare_data", "Stages are layered"),
    ("ftpipe/evaluation/stats.py", "import ludwig", "Only the training package imports Ludwig"),
    ("ftpipe/training/compile.py", "import ludwig.api", "Inside training, only the compat module imports Ludwig"),
    ("ftpipe/spec/loading.py", "import torch", "The spec and validate's fast path import no torch"),
    ("ftpipe/lifecycle/runs.py", "from ftpipe.lifecycle import pipeline", "No import cycles"),
    ("ftpipe/evaluation/report.py", "from ftpipe.training import compile_spec", "Stages are layered"),
])
def test_a_wrong_import_breaks_its_contract(scratch, module, bad_import, contract):
    path = scratch / module
    original = path.read_text()
    path.write_text(original + f"\n\ndef _wrong():\n    {bad_import}\n")
    try:
        result = _lint(scratch)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert any(name.startswith(contract) for name in _broken(result.stdout)), result.stdout[-2000:]


def _broken(output: str) -> list[str]:
    """Names of the broken contracts in lint-imports' summary (names wrap over lines there)."""
    summary = output.split("dependencies.", 1)[1].split("Contracts:", 1)[0]
    words = " ".join(summary.split()).lstrip("- ").split(" ")
    names, current = [], []
    for word in words:
        if word in ("KEPT", "BROKEN"):
            if word == "BROKEN":
                names.append(" ".join(current))
            current = []
        else:
            current.append(word)
    return names


def _private_uses(source: str) -> list[str]:
    """Underscored ftpipe names a test module reaches: `from ftpipe.x import _y`, or `mod._y` on an ftpipe module."""
    import ast

    tree, modules, found = ast.parse(source), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftpipe"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.module}.{alias.name}")
                elif alias.name[:1].islower():
                    modules.add(alias.asname or alias.name)  # may be a module (from ftpipe.evaluation import sandbox)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("ftpipe")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_tests_use_public_names():
    """Tests go through public names or documented testing hooks, so a private helper can move freely."""
    uses = {p.name: _private_uses(p.read_text()) for p in sorted((ROOT / "tests").glob("test_*.py"))}
    assert {name: found for name, found in uses.items() if found} == {}


def test_the_public_name_check_catches_a_private_import():
    assert _private_uses("from ftpipe.evaluation.sandbox import _run\n") == ["ftpipe.evaluation.sandbox._run"]
    assert _private_uses("from ftpipe.evaluation import sandbox\nsandbox._landlock_abi()\n") == ["sandbox._landlock_abi"]
    assert _private_uses("from ftpipe.evaluation import sandbox\nsandbox.run_python('x')\n") == []
