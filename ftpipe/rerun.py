"""Working on finished runs: evaluate again (`ftpipe eval RUN`) and export (`ftpipe export RUN`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ftpipe import console
from ftpipe.errors import RunNotFoundError
from ftpipe.runs import find_run, load_manifest
from ftpipe.spec import LoadedSpec, PipelineSpec


def load_run_spec(run_dir: Path) -> LoadedSpec:
    """The spec exactly as the run resolved it; data paths relative to the original spec's folder."""
    manifest = load_manifest(run_dir)
    spec = PipelineSpec.model_validate(yaml.safe_load((run_dir / "spec.yaml").read_text()))
    original = Path(manifest.spec_path)
    return LoadedSpec(spec=spec, path=original, raw={}, base_dir=original.resolve().parent)


def reevaluate(run_ref: str, root: Path | None = None) -> dict:
    """Score base and tuned model of a run again (base results come from the cache) and rewrite the report."""
    from ftpipe.data import load_tokenizer, prepare_data
    from ftpipe.evaluate import evaluate_run
    from ftpipe.train import _context_length, resolve_device

    run_dir = find_run(run_ref, root)
    manifest = load_manifest(run_dir)
    if not ((run_dir / "adapter").exists() or (run_dir / "weights").exists()):
        raise RunNotFoundError(f"{run_dir}: no trained model (status {manifest.status})", hint="run the pipeline first")
    loaded = load_run_spec(run_dir)
    base_path = manifest.base_model
    prepared = prepare_data(loaded, load_tokenizer(base_path), _context_length(base_path))
    if manifest.data_fingerprint and prepared.fingerprint != manifest.data_fingerprint:
        console.log("warning: the data changed since this run trained; evaluating on the current data")
    return evaluate_run(run_dir, loaded=loaded, prepared=prepared, base_path=base_path,
                        device=resolve_device(loaded.spec.compute.device))


def export_run(run_ref: str, output: Path, adapter_only: bool, root: Path | None = None) -> Path:
    """A merged Hugging Face folder of the tuned model, or a copy of its adapter."""
    from ftpipe.evaluate import tuned_model_spec

    run_dir = find_run(run_ref, root)
    manifest = load_manifest(run_dir)
    if manifest.status != "succeeded":
        raise RunNotFoundError(f"{run_dir}: status {manifest.status}; only succeeded runs are exported")
    if output.exists():
        raise RunNotFoundError(f"{output} exists", hint="choose a new folder")
    adapter, weights = run_dir / "adapter", run_dir / "weights"
    if adapter_only or weights.exists():
        source = adapter if adapter_only else weights
        if not source.exists():
            raise RunNotFoundError(f"{run_dir}: no adapter (full fine-tuning run)", hint="export without --adapter-only")
        tmp = output.with_name(output.name + ".tmp")
        shutil.copytree(source, tmp)
        tmp.rename(output)
        return output
    from ftpipe.generation import merge_and_save

    spec = load_run_spec(run_dir).spec
    return merge_and_save(tuned_model_spec(run_dir, spec, manifest.base_model, "cpu"), output)
