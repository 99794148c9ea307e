"""`ftpipe evaluate SPEC --model PATH`: the base-versus-tuned report for a model trained anywhere.

The model is a Hugging Face folder (full weights) or a PEFT adapter folder with its base (the
spec's base model unless `--base` names another). It is scored on the spec's tasks and probes
exactly as `ftpipe run` scores its own tuned model (same items, prompts, decoding, cached base
scores, CIs, forgetting diagnosis), and the spec's gates are judged, so the command can serve as
a gate in someone else's CI: exit 0 when every gate passed, 3 when one failed. It writes a
run-like folder (`<runs root>/<pipeline>/external/<id>/`: manifest, spec, predictions, report)
and never promotes anything: the model is not a run of the pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ftpipe import console
from ftpipe.data import eval_items_as_dicts, prepare_for_base_model, validate_spec
from ftpipe.errors import BadInputError, GateFailedError
from ftpipe.files import write_json_atomic, write_text_atomic
from ftpipe.lifecycle.pipeline import judge_gates, run_summary
from ftpipe.lifecycle.runs import Manifest, git_commit, new_run_id, now_iso, package_versions, pipeline_dir, save_manifest
from ftpipe.models import base_model_path
from ftpipe.paths import runs_root

EXTERNAL = "external"


@dataclass
class EvaluationResult:
    """What `ftpipe evaluate --model` returns: its folder, report and whether the gates passed."""

    folder: Path
    report: dict
    gates_passed: bool | None  # None: the spec has no gates


def model_kind(path: Path) -> str:
    """`adapter` (a PEFT folder) or `full` (a Hugging Face model folder); BadInputError otherwise."""
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "full"
    raise BadInputError(f"--model {path}: neither a Hugging Face model folder (config.json) nor a PEFT adapter "
                        "(adapter_config.json)", hint="give the folder `ftpipe export` wrote, or any save_pretrained folder")


def evaluate_model(spec_path: Path, model: Path, overrides: list[str] | None = None, base: str | None = None,
                   root: Path | None = None, fail_on_gates: bool = True) -> EvaluationResult:
    """Score an external model against the spec's base model on the spec's tasks, judge the gates, write a report.

    Args:
        spec_path: The spec whose tasks, probes, evaluation settings and gates apply.
        model: A Hugging Face model folder or a PEFT adapter folder.
        overrides: `--set` overrides of the spec.
        base: The adapter's base model (store name or folder); default the spec's base_model.
        root: Root of run folders (the report goes to `<root>/<pipeline>/external/<id>/`).
        fail_on_gates: Raise GateFailedError (exit 3) when a configured gate fails.

    Raises:
        BadInputError: the model folder is not a model.
        GateFailedError: a gate failed (after the report was written).
    """
    from ftpipe.evaluation import evaluate_run, write_report
    from ftpipe.evaluation.evaluate import quantization_of
    from ftpipe.evaluation.generation import ModelSpec, spec_fingerprint
    from ftpipe.lifecycle.replay import ensure_self_generated_replay
    from ftpipe.training import resolve_device

    model = Path(model).resolve()
    if not model.is_dir():
        raise BadInputError(f"--model {model}: no such folder", hint="give a Hugging Face model or adapter folder")
    kind = model_kind(model)
    loaded = validate_spec(spec_path, overrides)
    spec = loaded.spec
    root = root or runs_root()
    base_path = base_model_path(base or spec.base_model, progress=console.log)
    device = resolve_device(spec.compute.device)
    tuned = (ModelSpec(base_path=base_path, adapter_path=str(model), quantization=quantization_of(spec), device=device)
             if kind == "adapter" else ModelSpec(base_path=base_path, weights_path=str(model), device=device))
    fingerprint = spec_fingerprint(tuned)
    run_id = new_run_id(loaded.spec_hash()) + f"-{fingerprint[:8]}"
    folder = pipeline_dir(spec.name, root) / EXTERNAL / run_id
    folder.mkdir(parents=True)
    manifest = Manifest(run_id=run_id, pipeline=spec.name, spec_path=str(loaded.path), spec_hash=loaded.spec_hash(),
                        base_model=base_path, adapter=f"external {kind}", device=device, seed=spec.training.seed,
                        versions=package_versions(), git_commit=git_commit(loaded.base_dir))
    save_manifest(folder, manifest)
    source = {"path": str(model), "kind": kind, "base": base_path, "fingerprint": fingerprint}
    write_json_atomic(folder / "model_source.json", source)
    write_text_atomic(folder / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    console.log(f"evaluating {kind} model {model} against base {base_path} -> {folder}")
    try:
        with console.stage("prepare data", manifest.timings):
            ensure_self_generated_replay(loaded, base_path, device)
            prepared = prepare_for_base_model(loaded, base_path)
            write_json_atomic(folder / "eval_items.json", eval_items_as_dicts(prepared))
            manifest.data_fingerprint = prepared.fingerprint
        with console.stage("evaluate", manifest.timings):
            report = evaluate_run(folder, loaded=loaded, prepared=prepared, base_path=base_path, device=device, tuned=tuned)
            report["model_source"] = source
            report["gates"] = judge_gates(loaded, folder, report, root=root)
            write_report(folder, report)
    except BaseException as e:
        manifest.status, manifest.finished_at = "failed", now_iso()
        manifest.error = getattr(e, "one_line", lambda: f"{type(e).__name__}: {e}")()
        save_manifest(folder, manifest)
        raise
    manifest.status, manifest.finished_at, manifest.summary = "succeeded", now_iso(), run_summary(report)
    save_manifest(folder, manifest)
    gates = report["gates"]
    passed = gates["passed"] if gates.get("configured") else None
    if passed is False and fail_on_gates:
        failed = [g["gate"] for g in gates["results"] if not g["passed"]]
        raise GateFailedError(f"model {model} failed quality gates: {', '.join(failed)}", hint=f"see {folder / 'report.md'}")
    return EvaluationResult(folder=folder, report=report, gates_passed=passed)


def report_of(folder: Path) -> dict:
    """The report an external evaluation wrote."""
    return json.loads((folder / "report.json").read_text())
