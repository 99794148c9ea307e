"""`ftpipe run`: spec -> data -> Ludwig config -> trained model -> evaluation -> gates -> promotion.

`run_pipeline` is the whole job, and `_stages` reads top to bottom as its list of stages, one
package each: `ftpipe.data.prepare_data`, `ftpipe.training.compile_spec` + `check_config`,
`ftpipe.training.train`, `ftpipe.evaluation.evaluate_run` + `write_report`, then the gates
(`ftpipe.lifecycle.gates`) and the promotion pointer. Each stage writes its artifacts into the run
folder; the manifest's status becomes `succeeded` last, so a killed or failed run is never mistaken
for a good one, and never touches other runs.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from ftpipe import console, faults
from ftpipe.data import eval_items_as_dicts, prepare_for_base_model, training_frame, validate_spec
from ftpipe.errors import FtpipeError, GateFailedError, StorageError
from ftpipe.files import write_json_atomic, write_text_atomic
from ftpipe.lifecycle import history
from ftpipe.lifecycle.replay import ensure_self_generated_replay
from ftpipe.lifecycle.runs import (
    Manifest,
    PipelineLock,
    git_commit,
    list_runs,
    load_manifest,
    new_run_id,
    now_iso,
    package_versions,
    pipeline_dir,
    promoted_run,
    interrupted_run,
    save_manifest,
)
from ftpipe.models import base_model_path
from ftpipe.paths import runs_root
from ftpipe.spec import LoadedSpec


@dataclass
class RunResult:
    """What `ftpipe run` returns: the run folder, its manifest and the evaluation report (if any)."""

    run_dir: Path | None
    manifest: Manifest | None
    report: dict | None
    skipped: str | None = None  # why nothing ran (--if-changed)


def run_pipeline(spec_path: Path, overrides: list[str] | None = None, root: Path | None = None,
                 evaluate: bool = True, if_changed: bool = False, promote: bool = True,
                 lock_wait_s: float = 0.0) -> RunResult:
    """Run a whole pipeline; resume the newest killed run of the same spec if there is one.

    Args:
        spec_path: The spec file.
        overrides: `--set` overrides.
        root: Root of run folders.
        evaluate: Evaluate (and apply gates) after training.
        if_changed: Do nothing when spec and data equal those of the last successful run.
        promote: Promote the run when its gates pass (False for sweep trials: the gates are judged and
            recorded, a failed gate raises nothing, and nothing is promoted).
        lock_wait_s: Seconds to wait for the pipeline's lock (sweep workers sharing a runs root take turns).

    Raises:
        GateFailedError: the tuned model failed a quality gate (exit code 3); it was not promoted.
    """
    loaded = validate_spec(spec_path, overrides)
    spec = loaded.spec
    root = root or runs_root()
    lock = PipelineLock(pipeline_dir(spec.name, root))
    lock.acquire(f"{spec.name} from {spec_path}", wait_s=lock_wait_s)
    try:
        if if_changed:
            unchanged = _unchanged_since(loaded, root)
            if unchanged is not None:
                return RunResult(None, None, None, skipped=f"unchanged since run {unchanged}: spec and data are the same")
        return _run_locked(loaded, root, evaluate, promote)
    finally:
        lock.release()


def _unchanged_since(loaded: LoadedSpec, root: Path) -> str | None:
    """The id of the last successful run when spec and data fingerprint are the same, else None."""
    from ftpipe.data import data_fingerprint

    _, fingerprint = data_fingerprint(loaded)
    for _, manifest in list_runs(root, loaded.spec.name):
        if manifest.status == "succeeded":
            return manifest.run_id if manifest.data_fingerprint == fingerprint else None
    return None


def _run_locked(loaded: LoadedSpec, root: Path, evaluate: bool, promote: bool = True) -> RunResult:
    from ftpipe.data import data_fingerprint
    from ftpipe.lifecycle.promotion import reconcile
    from ftpipe.training import preflight, resolve_device

    spec = loaded.spec
    spec_hash = loaded.spec_hash()
    base_path = base_model_path(spec.base_model, progress=console.log)
    device = resolve_device(spec.compute.device)
    preflight(loaded, device)
    reconcile(pipeline_dir(spec.name, root))

    _, fingerprint = data_fingerprint(loaded)
    run_dir = _resumable(spec.name, spec_hash, fingerprint, root)
    if run_dir is not None:
        manifest = load_manifest(run_dir)
        manifest.attempts += 1
        manifest.pid = os.getpid()
        console.log(f"resuming interrupted run {manifest.run_id} (attempt {manifest.attempts}; "
                    f"done: {', '.join(manifest.stages_done) or 'nothing yet'})")
    else:
        run_id = new_run_id(spec_hash)
        run_dir = pipeline_dir(spec.name, root) / run_id
        run_dir.mkdir(parents=True)
        manifest = Manifest(run_id=run_id, pipeline=spec.name, spec_path=str(loaded.path), spec_hash=spec_hash,
                            base_model=base_path, device=device, seed=spec.training.seed,
                            adapter=spec.adapter.type, versions=package_versions(), git_commit=git_commit(loaded.base_dir))
        console.log(f"run {run_id} -> {run_dir}")
    save_manifest(run_dir, manifest)
    history.record_run(manifest, run_dir)
    try:
        report = _stages(loaded, run_dir, manifest, base_path, device, evaluate)
    except BaseException as e:  # KeyboardInterrupt too: the run must not stay "running"
        storage = storage_error(e, run_dir)
        manifest.status = "failed"
        failure = storage or e
        manifest.error = failure.one_line() if isinstance(failure, FtpipeError) else f"{type(e).__name__}: {e}"
        manifest.finished_at = now_iso()
        try:  # on a full disk these may fail too: the run then shows as interrupted, which is also true
            save_manifest(run_dir, manifest)
            (run_dir / "error.txt").write_text(traceback.format_exc())
        except OSError as again:
            console.log(f"warning: could not record the failure in {run_dir} ({again.strerror})")
        history.record_run(manifest, run_dir)
        _track(run_dir, loaded, manifest.status)
        if storage is not None:
            raise storage from e
        raise
    gates = report.get("gates") if report else None
    manifest.status = "succeeded" if report is not None else "trained"
    manifest.finished_at = now_iso()
    save_manifest(run_dir, manifest)
    history.record_run(manifest, run_dir, metrics=manifest.summary, gates=gates)
    _track(run_dir, loaded, manifest.status)
    console.log(f"run {manifest.run_id} {manifest.status}: {run_dir}")
    if report is None:
        console.log("not promoted: trained without evaluation (--no-eval); `ftpipe eval` judges it")
    elif not promote:
        console.log("not promoted: a sweep trial (the sweep's --promote-best decides)")
    else:
        _promote_or_refuse(run_dir, manifest, gates, loaded.spec.gates.on_failure_command)
    return RunResult(run_dir=run_dir, manifest=manifest, report=report)


def _track(run_dir: Path, loaded: LoadedSpec, status: str) -> None:
    """Log the run to MLflow when tracking is on (issue 17); best effort, never fails the run."""
    from ftpipe.lifecycle.mlflow_ import log_run

    log_run(run_dir, loaded.spec, status)


_STORAGE_ERRNOS = {"ENOSPC": "no space left on the device", "EFBIG": "a file-size limit was reached",
                   "EDQUOT": "the disk quota is used up", "EROFS": "the file system is read-only"}


def storage_error(error: BaseException, run_dir: Path) -> StorageError | None:
    """A one-line StorageError naming what could not be written, when `error` (or its cause) is a full disk."""
    import errno

    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and errno.errorcode.get(seen.errno or -1) in _STORAGE_ERRNOS:
            what = seen.filename or seen.filename2 or f"a file under {run_dir}"
            why = _STORAGE_ERRNOS[errno.errorcode[seen.errno]]
            return StorageError(f"could not write {what}: {why}; the run is marked failed and nothing was promoted",
                                hint="free disk space (or raise the limit) and run again")
        seen = seen.__cause__ or seen.__context__
    return None


def _resumable(pipeline: str, spec_hash: str, fingerprint: str, root: Path) -> Path | None:
    """The interrupted run of this spec, if it can be resumed; otherwise None, with the reason logged.

    Resuming needs the same spec, the same data, and (when training had started) a checkpoint that
    was written completely. A run that cannot be resumed is marked failed so it is not tried again.
    """
    from ftpipe.training import checkpoint_state

    run_dir = interrupted_run(pipeline, spec_hash, root)
    if run_dir is None:
        return None
    manifest = load_manifest(run_dir)
    reason = None
    if manifest.data_fingerprint is not None and manifest.data_fingerprint != fingerprint:
        reason = "its data changed since it was interrupted"
    elif "train" not in manifest.stages_done:
        state, why = checkpoint_state(run_dir)
        if state == "partial":
            reason = f"its last checkpoint is incomplete ({why})"
    if reason is None:
        return run_dir
    console.log(f"not resuming interrupted run {manifest.run_id}: {reason}; starting a new run")
    manifest.status, manifest.error, manifest.finished_at = "failed", f"abandoned: {reason}", now_iso()
    save_manifest(run_dir, manifest)
    history.record_run(manifest, run_dir)
    return None


def _stages(loaded: LoadedSpec, run_dir: Path, manifest: Manifest, base_path: str, device: str, evaluate: bool) -> dict | None:
    """The stages of a run, in order; each writes its artifacts into the run folder."""
    import yaml

    from ftpipe.training import check_config, checkpoint_state, compile_spec, config_hash, context_for, train

    spec, timings = loaded.spec, manifest.timings
    write_text_atomic(run_dir / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    with console.stage("prepare data", timings):
        ensure_self_generated_replay(loaded, base_path, device)  # issue 14: generated once per model and pool, cached
        prepared = prepare_for_base_model(loaded, base_path)
        write_json_atomic(run_dir / "data_summary.json", prepared.summary())
        write_json_atomic(run_dir / "eval_items.json", eval_items_as_dicts(prepared))
        write_json_atomic(run_dir / "trained_ids.json", prepared.trained_ids())
        write_json_atomic(run_dir / "trained_content.json", {"content": sorted({r["content"] for r in prepared.train_rows})})
        faults.point("prepare")
        manifest.data_fingerprint = prepared.fingerprint
        for name, m in prepared.mixture.items():
            console.log(f"  {name}: {m['rows']} rows, {m['tokens']} tokens ({m['token_share']:.0%} of tokens)")

    with console.stage("compile", timings):
        config = compile_spec(spec, context_for(prepared, base_path, device))
        resolved = check_config(config)
        write_text_atomic(run_dir / "ludwig_config.yaml", yaml.safe_dump(config, sort_keys=True))
        write_text_atomic(run_dir / "ludwig_config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=True))
        faults.point("compile")
        manifest.config_hash = config_hash(config)
    save_manifest(run_dir, manifest)

    if "train" in manifest.stages_done and any((run_dir / name).is_dir() for name in ("adapter", "weights", "head")):
        console.log("train: already done in an earlier attempt; keeping its model")
    else:
        resume = checkpoint_state(run_dir)[0] == "complete"
        with console.stage("train" + (" (resuming its checkpoint)" if resume else ""), timings):
            train(config, training_frame(prepared), run_dir, spec, device=manifest.device, resume=resume,
                  spec_hash=manifest.spec_hash)
        manifest.stages_done.append("train")
        save_manifest(run_dir, manifest)

    if not evaluate:
        return None
    from ftpipe.evaluation import evaluate_run, write_report

    with console.stage("evaluate", timings):
        report = evaluate_run(run_dir, loaded=loaded, prepared=prepared, base_path=base_path, device=device)
        report["gates"] = judge_gates(loaded, run_dir, report)
        write_report(run_dir, report)
    manifest.summary = run_summary(report)
    return report


def run_summary(report: dict) -> dict:
    """The manifest's (and history's) summary of an evaluated run."""
    gates = report.get("gates") or {}
    return {**report.get("summary", {}), "gates_passed": gates.get("passed", False),
            "gates_configured": gates.get("configured", False)}


def judge_gates(loaded: LoadedSpec, run_dir: Path, report: dict, root: Path | None = None) -> dict:
    """The gates' verdict on an evaluated run, with its comparability to the promoted run; logged line by line.

    Args:
        root: Root of run folders holding the pipeline's promoted run (default: two levels above `run_dir`).
    """
    from ftpipe.evaluation import compare_runs
    from ftpipe.lifecycle.gates import evaluate_gates

    gates = loaded.spec.gates
    regression, comparability = None, None
    promoted = promoted_run(loaded.spec.name, root or run_dir.parent.parent)
    if promoted is not None and promoted != run_dir:
        comparability = trained_on_promoted_test_items(run_dir, promoted)
        report["comparability"] = comparability
        if comparability["overlap"]:
            console.log(f"warning: not comparable with promoted run {promoted.name}: {comparability['detail']}")
        if gates.no_regression_vs_promoted:
            regression = compare_runs(promoted, run_dir)
    outcome = evaluate_gates(gates, report, regression, comparability)
    for result in outcome["results"]:
        console.log(f"gate {'PASS' if result['passed'] else 'FAIL'} {result['gate']}: {result['detail']}")
    return outcome


def trained_on_promoted_test_items(run_dir: Path, promoted: Path) -> dict:
    """How many items the promoted run was evaluated on did this run train (or validate) on?

    Compared by content (what the leakage check compares), so it holds whatever id scheme the
    promoted run used: a model that trained on its predecessor's test items cannot be judged
    against it on them.
    """
    import json

    from ftpipe.data import normalize_for_leakage

    def load(path: Path) -> dict:
        return json.loads(path.read_text()) if path.exists() else {}

    tested = {normalize_for_leakage(i["content"]): name for name, items in load(promoted / "eval_items.json").items()
              for i in items if i.get("content")}
    trained_content = load(run_dir / "trained_content.json")
    overlap: dict[str, int] = {}
    for text in trained_content.get("content", []):
        task = tested.get(normalize_for_leakage(text))
        if task is not None:
            overlap[task] = overlap.get(task, 0) + 1
    total = sum(overlap.values())
    detail = (f"this run trained on {total} items that promoted run {promoted.name} was evaluated on "
              f"({', '.join(f'{t}: {n}' for t, n in sorted(overlap.items()))})" if total else
              f"no item promoted run {promoted.name} was evaluated on was trained on")
    return {"promoted": promoted.name, "overlap": total, "by_task": overlap, "detail": detail}
def _notify_gate_failure(command: str | None, manifest: Manifest, run_dir: Path, failed: list[str]) -> None:
    """Run the spec's on_failure_command (a mail, a webhook via curl, ...); its own failure is only logged."""
    import subprocess

    if not command:
        return
    env = {**os.environ, "FTPIPE_PIPELINE": manifest.pipeline, "FTPIPE_RUN_DIR": str(run_dir.resolve()),
           "FTPIPE_FAILED_GATES": ",".join(failed)}
    try:
        result = subprocess.run(command, shell=True, env=env, timeout=120, capture_output=True, text=True)
        if result.returncode != 0:
            console.log(f"on_failure_command exited {result.returncode}: {result.stderr.strip()[:200]}")
    except subprocess.TimeoutExpired:
        console.log("on_failure_command timed out after 120 s")


def _promote_or_refuse(run_dir: Path, manifest: Manifest, gates: dict, command: str | None = None) -> None:
    """Promote a run that passed gates it was given; no gates: promote nothing; a failed gate: raise."""
    from ftpipe.lifecycle.promotion import promote_locked

    if not gates.get("configured", True):
        console.log(f"not promoted: no gates in the spec (promote by hand with `ftpipe promote {manifest.run_id}`)")
        return
    if not gates["passed"]:
        failed = [g["gate"] for g in gates["results"] if not g["passed"]]
        _notify_gate_failure(command, manifest, run_dir, failed)
        raise GateFailedError(f"run {manifest.run_id} failed quality gates: {', '.join(failed)}; nothing promoted",
                              hint=f"see {run_dir / 'report.md'}")
    promote_locked(run_dir, "every gate passed")
    console.log(f"promoted {manifest.run_id}")
