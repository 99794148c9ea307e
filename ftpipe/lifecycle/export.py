"""`ftpipe export RUN`: a run's model as a merged Hugging Face folder, or its adapter alone.

A classification head run exports as a folder holding its `head/` (and the body's `adapter/`);
a soft prompt (prompt or prefix tuning) cannot be merged into weights and exports as its adapter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ftpipe.errors import BadInputError, RunNotFoundError
from ftpipe.lifecycle.promotion import locked
from ftpipe.lifecycle.rerun import load_run_spec
from ftpipe.lifecycle.runs import find_run, load_manifest


def export_run(run_ref: str, output: Path, adapter_only: bool, root: Path | None = None) -> Path:
    """A merged Hugging Face folder of the tuned model, or a copy of its adapter (holding the pipeline's lock)."""
    run_dir = find_run(run_ref, root)
    with locked(run_dir.parent, f"export {run_dir.name}"):
        return _export(run_dir, output, adapter_only)


def _export(run_dir: Path, output: Path, adapter_only: bool) -> Path:
    from ftpipe.evaluation import tuned_model_spec
    from ftpipe.evaluation.generation import merge_and_save

    manifest = load_manifest(run_dir)
    if manifest.status != "succeeded":
        raise RunNotFoundError(f"{run_dir}: status {manifest.status}; only succeeded runs are exported")
    if output.exists():
        raise RunNotFoundError(f"{output} exists", hint="choose a new folder")
    adapter, weights, head = run_dir / "adapter", run_dir / "weights", run_dir / "head"
    if head.exists() and not adapter_only:
        tmp = output.with_name(output.name + ".tmp")
        for part in (head, adapter):
            if part.exists():
                shutil.copytree(part, tmp / part.name)
        tmp.rename(output)
        return output
    if adapter.exists() and not adapter_only and _is_prompt_learning(adapter):
        raise BadInputError(f"{run_dir}: a soft prompt cannot be merged into the model's weights",
                            hint="export it with --adapter-only (load it with peft.PeftModel.from_pretrained)")
    if adapter_only or weights.exists():
        source = adapter if adapter_only else weights
        if not source.exists():
            raise RunNotFoundError(f"{run_dir}: no adapter (full fine-tuning run)", hint="export without --adapter-only")
        tmp = output.with_name(output.name + ".tmp")
        shutil.copytree(source, tmp)
        tmp.rename(output)
        return output
    spec = load_run_spec(run_dir).spec
    return merge_and_save(tuned_model_spec(run_dir, spec, manifest.base_model, "cpu"), output)


def _is_prompt_learning(adapter: Path) -> bool:
    import json

    config = json.loads((adapter / "adapter_config.json").read_text())
    return config.get("peft_type") in ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING")
