"""The public Python API: `from ftpipe import load_spec, run, evaluate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ftpipe
from ftpipe.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent


def test_load_spec_validates_fields_and_files(tmp_path):
    loaded = ftpipe.load_spec(ROOT / "pipelines" / "demo.yaml", ["training.epochs=1"])
    assert loaded.spec.name == "demo" and loaded.spec.training.epochs == 1
    broken = tmp_path / "s.yaml"
    broken.write_text("name: x\nbase_model: tiny-llama\ntasks:\n  - name: t\n    source: missing.jsonl\n    target: '{{ y }}'\n")
    with pytest.raises(SpecError, match=r"s.yaml:5:\d+ tasks.0.source.path: no such file missing.jsonl"):
        ftpipe.load_spec(broken)


def test_import_ftpipe_is_cheap_and_loads_the_api_on_use():
    code = ("import sys, ftpipe; assert 'ftpipe.api' not in sys.modules; "
            "assert callable(ftpipe.run) and callable(ftpipe.evaluate); "
            "print(sorted(m for m in ('torch', 'transformers', 'ludwig') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_api_functions_have_docstrings():
    for name in ("load_spec", "run", "evaluate"):
        assert getattr(ftpipe, name).__doc__.strip()
