"""`ftpipe promote RUN` and `ftpipe rollback PIPELINE`: moving the promoted pointer by hand."""

from __future__ import annotations

from pathlib import Path

from ftpipe.lifecycle import history
from ftpipe.errors import BadInputError
from ftpipe.lifecycle.runs import find_run, load_manifest, now_iso, pipeline_dir, promoted_run, set_promoted


def promote(run_ref: str, root: Path | None = None) -> Path:
    """Make a succeeded run the pipeline's promoted model (gates are the scheduler's business, not this)."""
    run_dir = find_run(run_ref, root)
    manifest = load_manifest(run_dir)
    if manifest.status != "succeeded":
        raise BadInputError(f"run {manifest.run_id} has status {manifest.status}; only succeeded runs can be promoted")
    set_promoted(run_dir)
    history.record_promotion(manifest.pipeline, manifest.run_id, "promoted by hand", now_iso())
    return run_dir


def rollback(pipeline: str, root: Path | None = None) -> Path:
    """Point `promoted` back at the run that was promoted before the current one."""
    current = promoted_run(pipeline, root)
    if current is None:
        raise BadInputError(f"pipeline {pipeline} has no promoted run", hint="see `ftpipe runs list`")
    earlier = [run_id for run_id, _, _ in history.promotion_history(pipeline) if run_id != current.name]
    for run_id in reversed(earlier):
        candidate = pipeline_dir(pipeline, root) / run_id
        if candidate.exists():
            set_promoted(candidate)
            history.record_promotion(pipeline, run_id, f"rollback from {current.name}", now_iso())
            return candidate
    raise BadInputError(f"pipeline {pipeline}: no earlier promoted run to roll back to")
