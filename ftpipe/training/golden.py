"""Compiled configs as files: `ftpipe compile` output and the committed ludwig_configs/ of the examples.

Run `python -m ftpipe.training.golden` (or `make configs`) to regenerate ludwig_configs/ after changing
pipelines/ or the compiler; tests/test_configs.py fails while they drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ftpipe.data import PreparedData, prepare_for_base_model, validate_spec
from ftpipe.models import base_model_path
from ftpipe.training.compile import CompileContext, compile_spec, context_for, render_compiled

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def compiled_for_spec(spec_path: Path, overrides: list[str] | None = None, resolve_model: bool = False) -> tuple[str, dict]:
    """(committed-form text with the store name as base_model, config dict for Ludwig's check)."""
    loaded = validate_spec(spec_path, overrides)
    path = base_model_path(loaded.spec.base_model)
    prepared: PreparedData = prepare_for_base_model(loaded, path)
    ctx = context_for(prepared, path if resolve_model else loaded.spec.base_model, device="cpu")
    config = compile_spec(loaded.spec, ctx)
    portable = compile_spec(loaded.spec, CompileContext(**{**ctx.__dict__, "base_model": loaded.spec.base_model}))
    return render_compiled(portable, _relative(spec_path), loaded.spec_hash()), config


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def example_specs() -> list[Path]:
    """Every example spec under pipelines/ (recursively; files starting with _ are bases for `extends`, and
    folders starting with _ hold other YAML, such as lm-eval task files)."""
    folder = PROJECT_ROOT / "pipelines"
    return sorted(p for p in folder.rglob("*.yaml") if not any(part.startswith("_") for part in p.relative_to(folder).parts))


def golden_path(spec_path: Path) -> Path:
    """Where an example's compiled config is committed."""
    rel = spec_path.resolve().relative_to(PROJECT_ROOT / "pipelines")
    return PROJECT_ROOT / "ludwig_configs" / rel


def write_golden_configs() -> list[Path]:
    """Regenerate ludwig_configs/ from pipelines/."""
    written = []
    for spec_path in example_specs():
        text, _ = compiled_for_spec(spec_path)
        out = golden_path(spec_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        written.append(out)
    return written


if __name__ == "__main__":
    for path in write_golden_configs():
        print(f"wrote {path.relative_to(PROJECT_ROOT)}", file=sys.stderr)
