"""`ftpipe eval RUN`: score a finished run's base and tuned model again and rewrite its report."""

from __future__ import annotations

from pathlib import Path

from ftpipe import console
from ftpipe.data import prepare_for_base_model
from ftpipe.errors import RunNotFoundError
from ftpipe.evaluation import evaluate_run
from ftpipe.lifecycle.runs import find_run, load_manifest
from ftpipe.spec import LoadedSpec, load_resolved_spec
from ftpipe.training import resolve_device


def load_run_spec(run_dir: Path) -> LoadedSpec:
    """The spec exactly as the run resolved it; data paths relative to the original spec's folder."""
    return load_resolved_spec(run_dir / "spec.yaml", Path(load_manifest(run_dir).spec_path))


def reevaluate(run_ref: str, root: Path | None = None) -> dict:
    """Score base and tuned model of a run again (base results come from the cache) and rewrite the report."""
    run_dir = find_run(run_ref, root)
    manifest = load_manifest(run_dir)
    if not ((run_dir / "adapter").exists() or (run_dir / "weights").exists()):
        raise RunNotFoundError(f"{run_dir}: no trained model (status {manifest.status})", hint="run the pipeline first")
    loaded = load_run_spec(run_dir)
    base_path = manifest.base_model
    prepared = prepare_for_base_model(loaded, base_path)
    if manifest.data_fingerprint and prepared.fingerprint != manifest.data_fingerprint:
        console.log("warning: the data changed since this run trained; evaluating on the current data")
    return evaluate_run(run_dir, loaded=loaded, prepared=prepared, base_path=base_path,
                        device=resolve_device(loaded.spec.compute.device))
