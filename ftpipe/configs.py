"""Compiled configs as files: `ftpipe compile` output and the committed ludwig_configs/ of the examples.

Run `python -m ftpipe.configs` (or `make configs`) to regenerate ludwig_configs/ after changing
pipelines/ or the compiler; tests/test_configs.py fails while they drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ftpipe.compile import CompileContext, compile_spec, render_compiled
from ftpipe.spec import LoadedSpec, load_spec

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def measured_context(loaded: LoadedSpec, base_model_field: str) -> tuple[CompileContext, Any]:
    """Prepare the spec's data with the base model's tokenizer and derive the compiler's context."""
    from ftpipe import store
    from ftpipe.data import load_tokenizer, prepare_data, training_frame
    from ftpipe.train import _context_length

    ref = loaded.spec.base_model
    model_path = str(store.pull(ref)) if ref in store.KNOWN_MODELS else store.resolve_base_model(ref)
    prepared = prepare_data(loaded, load_tokenizer(model_path), _context_length(model_path))
    frame = training_frame(prepared)
    ctx = CompileContext(
        base_model=model_path if base_model_field == "path" else ref,
        max_prompt_tokens=prepared.lengths["max_prompt_tokens"],
        max_target_tokens=prepared.lengths["max_target_tokens"],
        device="cpu",
        has_validation=bool((frame["split"] == 1).any()),
    )
    return ctx, prepared


def compiled_for_spec(spec_path: Path, overrides: list[str] | None = None, resolve_model: bool = False) -> tuple[str, dict]:
    """(committed-form text with the store name as base_model, config dict for Ludwig's check)."""
    loaded = load_spec(spec_path, overrides)
    ctx, _ = measured_context(loaded, "path" if resolve_model else "name")
    config = compile_spec(loaded.spec, ctx)
    portable = compile_spec(loaded.spec, CompileContext(**{**ctx.__dict__, "base_model": loaded.spec.base_model}))
    return render_compiled(portable, _relative(spec_path), loaded.spec_hash()), config


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def example_specs() -> list[Path]:
    """Every example spec under pipelines/ (recursively; files starting with _ are bases for `extends`)."""
    return sorted(p for p in (PROJECT_ROOT / "pipelines").rglob("*.yaml") if not p.name.startswith("_"))


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
