"""`ftpipe eval RUN`: score a finished run's base and tuned model again, judge its gates, update its record."""

from __future__ import annotations

from pathlib import Path

from ftpipe import console
from ftpipe.data import prepare_for_base_model
from ftpipe.errors import RunNotFoundError
from ftpipe.evaluation import evaluate_run, write_report
from ftpipe.lifecycle import history
from ftpipe.lifecycle.pipeline import judge_gates, run_summary
from ftpipe.lifecycle.promotion import locked
from ftpipe.lifecycle.replay import ensure_self_generated_replay
from ftpipe.lifecycle.runs import find_run, load_manifest, now_iso, save_manifest
from ftpipe.spec import LoadedSpec, load_resolved_spec
from ftpipe.training import resolve_device


def load_run_spec(run_dir: Path) -> LoadedSpec:
    """The spec exactly as the run resolved it; data paths relative to the original spec's folder."""
    return load_resolved_spec(run_dir / "spec.yaml", Path(load_manifest(run_dir).spec_path))


def reevaluate(run_ref: str, root: Path | None = None) -> dict:
    """Score base and tuned model again (base results come from the cache), judge the gates again,
    and rewrite the report, the manifest's summary and the history row, holding the pipeline's lock.

    A `--no-eval` run (status trained) becomes succeeded. Nothing is promoted: that stays a
    decision of `ftpipe run` or `ftpipe promote`.
    """
    run_dir = find_run(run_ref, root)
    manifest = load_manifest(run_dir)
    if not any((run_dir / name).exists() for name in ("adapter", "weights", "head")):
        raise RunNotFoundError(f"{run_dir}: no trained model (status {manifest.status})", hint="run the pipeline first")
    with locked(run_dir.parent, f"eval {manifest.run_id}"):
        loaded = load_run_spec(run_dir)
        base_path = manifest.base_model
        ensure_self_generated_replay(loaded, base_path, resolve_device(loaded.spec.compute.device))
        prepared = prepare_for_base_model(loaded, base_path)
        if manifest.data_fingerprint and prepared.fingerprint != manifest.data_fingerprint:
            console.log("warning: the data changed since this run trained; evaluating on the current data")
        report = evaluate_run(run_dir, loaded=loaded, prepared=prepared, base_path=base_path,
                              device=resolve_device(loaded.spec.compute.device))
        report["gates"] = judge_gates(loaded, run_dir, report)
        write_report(run_dir, report)
        manifest = load_manifest(run_dir)
        manifest.summary = run_summary(report)
        if manifest.status == "trained":
            manifest.status, manifest.finished_at = "succeeded", now_iso()
        save_manifest(run_dir, manifest)
        history.record_run(manifest, run_dir, metrics=manifest.summary, gates=report["gates"])
        from ftpipe.lifecycle.mlflow_ import log_run

        log_run(run_dir, loaded.spec, manifest.status)  # the new scores, on the same MLflow run (issue 17)
    return report
