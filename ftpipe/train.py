"""`ftpipe run`: spec -> data -> Ludwig config -> trained model -> evaluation -> report, in one run folder.

Read top to bottom: `run_pipeline` is the whole job. Each stage writes its artifacts into the run
folder; the manifest's status becomes `succeeded` last, so a killed or failed run is never
mistaken for a good one, and never touches other runs.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from ftpipe import console
from ftpipe.errors import BadInputError, FtpipeError, GateFailedError, TrainError
from ftpipe.paths import runs_root
from ftpipe.runs import (
    Manifest,
    PipelineLock,
    git_commit,
    load_manifest,
    new_run_id,
    now_iso,
    package_versions,
    list_runs,
    pipeline_dir,
    promoted_run,
    resumable_run,
    save_manifest,
    set_promoted,
    write_json_atomic,
    write_text_atomic,
)
from ftpipe.spec import LoadedSpec, QloraAdapter, load_spec


@dataclass
class RunResult:
    """What `ftpipe run` returns: the run folder, its manifest and the evaluation report (if any)."""

    run_dir: Path | None
    manifest: Manifest | None
    report: dict | None
    skipped: str | None = None  # why nothing ran (--if-changed)


def resolve_device(requested: str) -> str:
    """`auto` becomes cuda when a CUDA GPU is visible, else cpu; asking for cuda without one is an error."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise BadInputError("compute.device is cuda but no CUDA GPU is visible", hint="set compute.device: auto or cpu")
    return "cuda" if requested == "cuda" or (requested == "auto" and has_cuda) else "cpu"


def preflight(loaded: LoadedSpec, device: str) -> None:
    """Checks that need the environment (not the spec alone), before anything is written."""
    spec = loaded.spec
    if isinstance(spec.adapter, QloraAdapter):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise BadInputError(f"adapter qlora needs bitsandbytes ({e})", hint="pip install bitsandbytes, or use adapter lora") from None
        if device == "cpu" and spec.adapter.bits == 8:
            raise BadInputError("8-bit bitsandbytes weights need a CUDA GPU", hint="use bits: 4 on CPU, or adapter lora")
    if spec.compute.distributed.strategy != "none":  # issue 9: e.g. fsdp/deepspeed need CUDA, enough GPUs
        from ftpipe.distributed import check_environment

        check_environment(spec, device)


def _context_length(model_path: str) -> int:
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 2048))


def run_pipeline(spec_path: Path, overrides: list[str] | None = None, root: Path | None = None,
                 evaluate: bool = True, if_changed: bool = False) -> RunResult:
    """Run a whole pipeline; resume the newest killed run of the same spec if there is one.

    Args:
        spec_path: The spec file.
        overrides: `--set` overrides.
        root: Root of run folders.
        evaluate: Evaluate (and apply gates) after training.
        if_changed: Do nothing when spec and data equal those of the last successful run.

    Raises:
        GateFailedError: the tuned model failed a quality gate (exit code 3); it was not promoted.
    """
    loaded = load_spec(spec_path, overrides)
    spec = loaded.spec
    root = root or runs_root()
    lock = PipelineLock(pipeline_dir(spec.name, root))
    lock.acquire(f"{spec.name} from {spec_path}")
    try:
        if if_changed:
            unchanged = _unchanged_since(loaded, root)
            if unchanged is not None:
                return RunResult(None, None, None, skipped=f"unchanged since run {unchanged}: spec and data are the same")
        return _run_locked(loaded, root, evaluate)
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


def _run_locked(loaded: LoadedSpec, root: Path, evaluate: bool) -> RunResult:
    from ftpipe import store

    spec = loaded.spec
    spec_hash = loaded.spec_hash()
    if spec.base_model in store.KNOWN_MODELS:  # store models are pulled on first use (a no-op once stored)
        base_path = str(store.pull(spec.base_model, progress=console.log))
    else:
        base_path = store.resolve_base_model(spec.base_model)
    device = resolve_device(spec.compute.device)
    preflight(loaded, device)

    run_dir = resumable_run(spec.name, spec_hash, root)
    if run_dir is not None:
        manifest = load_manifest(run_dir)
        manifest.attempts += 1
        manifest.pid = os.getpid()
        console.log(f"resuming interrupted run {manifest.run_id} (attempt {manifest.attempts})")
    else:
        run_id = new_run_id(spec_hash)
        run_dir = pipeline_dir(spec.name, root) / run_id
        run_dir.mkdir(parents=True)
        manifest = Manifest(run_id=run_id, pipeline=spec.name, spec_path=str(loaded.path), spec_hash=spec_hash,
                            base_model=base_path, device=device, seed=spec.training.seed,
                            adapter=spec.adapter.type, versions=package_versions(), git_commit=git_commit(loaded.base_dir))
        console.log(f"run {run_id} -> {run_dir}")
    save_manifest(run_dir, manifest)
    from ftpipe import history

    history.record_run(manifest, run_dir)
    try:
        report = _stages(loaded, run_dir, manifest, base_path, device, evaluate)
    except BaseException as e:  # KeyboardInterrupt too: the run must not stay "running"
        manifest.status = "failed"
        manifest.error = e.one_line() if isinstance(e, FtpipeError) else f"{type(e).__name__}: {e}"
        manifest.finished_at = now_iso()
        save_manifest(run_dir, manifest)
        history.record_run(manifest, run_dir)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    gates = report.get("gates") if report else None
    manifest.status = "succeeded"
    manifest.finished_at = now_iso()
    save_manifest(run_dir, manifest)
    history.record_run(manifest, run_dir, metrics=manifest.summary, gates=gates)
    console.log(f"run {manifest.run_id} succeeded: {run_dir}")
    if report is not None:
        _promote_or_refuse(run_dir, manifest, gates, loaded.spec.gates.on_failure_command)
    return RunResult(run_dir=run_dir, manifest=manifest, report=report)


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
    """Promote a run that passed every gate; otherwise leave the promoted model alone and raise."""
    from ftpipe import history

    if not gates["passed"]:
        failed = [g["gate"] for g in gates["results"] if not g["passed"]]
        _notify_gate_failure(command, manifest, run_dir, failed)
        raise GateFailedError(f"run {manifest.run_id} failed quality gates: {', '.join(failed)}; nothing promoted",
                              hint=f"see {run_dir / 'report.md'}")
    set_promoted(run_dir)
    history.record_promotion(manifest.pipeline, manifest.run_id, "promoted", now_iso())
    console.log(f"promoted {manifest.run_id}")


def _stages(loaded: LoadedSpec, run_dir: Path, manifest: Manifest, base_path: str, device: str, evaluate: bool) -> dict | None:
    import yaml

    from ftpipe import ludwig_compat
    from ftpipe.compile import CompileContext, compile_spec, config_hash
    from ftpipe.data import eval_items_as_dicts, load_tokenizer, prepare_data, training_frame

    spec, timings = loaded.spec, manifest.timings
    write_text_atomic(run_dir / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    with console.stage("prepare data", timings):
        tokenizer = load_tokenizer(base_path)
        prepared = prepare_data(loaded, tokenizer, _context_length(base_path))
        write_json_atomic(run_dir / "data_summary.json", prepared.summary())
        write_json_atomic(run_dir / "eval_items.json", eval_items_as_dicts(prepared))
        manifest.data_fingerprint = prepared.fingerprint
        for name, m in prepared.mixture.items():
            console.log(f"  {name}: {m['rows']} rows, {m['tokens']} tokens ({m['token_share']:.0%} of tokens)")

    with console.stage("compile", timings):
        frame = training_frame(prepared)
        ctx = CompileContext(base_model=base_path, max_prompt_tokens=prepared.lengths["max_prompt_tokens"],
                             max_target_tokens=prepared.lengths["max_target_tokens"], device=device,
                             has_validation=bool((frame["split"] == 1).any()))
        config = compile_spec(spec, ctx)
        resolved = ludwig_compat.check_config(config)
        write_text_atomic(run_dir / "ludwig_config.yaml", yaml.safe_dump(config, sort_keys=True))
        write_text_atomic(run_dir / "ludwig_config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=True))
        manifest.config_hash = config_hash(config)
    save_manifest(run_dir, manifest)

    with console.stage("train", timings):
        model_dir = _train(config, frame, run_dir, spec, manifest)

    report = None
    if evaluate:
        from ftpipe.evaluate import evaluate_run

        with console.stage("evaluate", timings):
            report = evaluate_run(run_dir, loaded=loaded, prepared=prepared, base_path=base_path, device=device)
            report["gates"] = _judge_gates(loaded, run_dir, report)
            from ftpipe.report import write_report

            write_report(run_dir, report)
        manifest.summary = {**report.get("summary", {}), "gates_passed": report["gates"]["passed"]}
    return report


def _judge_gates(loaded: LoadedSpec, run_dir: Path, report: dict) -> dict:
    from ftpipe.gates import evaluate_gates

    gates = loaded.spec.gates
    regression = None
    promoted = promoted_run(loaded.spec.name, run_dir.parent.parent)
    if gates.no_regression_vs_promoted and promoted is not None:
        from ftpipe.compare import compare_runs

        regression = compare_runs(str(promoted), str(run_dir))
    outcome = evaluate_gates(gates, report, regression)
    for result in outcome["results"]:
        console.log(f"gate {'PASS' if result['passed'] else 'FAIL'} {result['gate']}: {result['detail']}")
    return outcome


def _train(config: dict, frame, run_dir: Path, spec, manifest: Manifest) -> Path:
    """Train (resuming Ludwig's last checkpoint when this run was interrupted) and record the model folder."""
    from ftpipe import ludwig_compat

    train_dir = run_dir / "training"
    world = spec.compute.distributed.world_size()  # each process trains on its own share of the rows
    steps_per_epoch = -(-int((frame["split"] == 0).sum()) // (spec.training.batch_size * world))
    reporter = console.StepReporter("train", spec.training.max_steps or steps_per_epoch * spec.training.epochs)
    callback, exported = None, None  # exported: distributed full fine-tuning, rank 0 already wrote the weights
    try:
        if spec.compute.distributed.strategy != "none":  # issue 9: torchrun processes; rank 0 writes
            from ftpipe import distributed

            result = distributed.train_distributed(
                config, frame, train_dir, spec, device=manifest.device, resume=manifest.attempts > 1,
                on_step=console.step_callback(reporter), spec_hash=manifest.spec_hash)
            model, stats, saved, exported = None, result.stats, result.saved, result.weights
            write_json_atomic(run_dir / "distributed.json", result.summary)
        else:
            callback = ludwig_compat.make_progress_callback(console.step_callback(reporter))
            model, stats, saved = ludwig_compat.train_model(
                config, frame, train_dir, seed=spec.training.seed, resume=manifest.attempts > 1,
                callbacks=[callback], quantized=isinstance(spec.adapter, QloraAdapter))
    finally:
        reporter.close()
    if callback is not None and callback.was_interrupted():  # a half-trained model must not be evaluated or promoted
        raise KeyboardInterrupt("training interrupted (Ctrl-C)")
    write_json_atomic(run_dir / "training_statistics.json", stats)
    adapter = ludwig_compat.adapter_folder(saved)
    final = run_dir / ("adapter" if adapter else "weights")
    if final.exists():
        shutil.rmtree(final)
    if adapter:
        shutil.copytree(adapter, final)
    elif exported is not None:
        shutil.move(str(exported), str(final))
    else:
        _export_full_weights(model, final)
    if not any(final.iterdir()):
        raise TrainError(f"no model weights were saved in {final}")
    return final


def _export_full_weights(model, out: Path) -> None:
    """A fully fine-tuned model as a plain Hugging Face folder (what the evaluator and users load)."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    llm = model.model.model  # LudwigModel -> LLM -> transformers model
    llm.save_pretrained(str(tmp), safe_serialization=True)
    if hasattr(model.model, "tokenizer"):
        model.model.tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, out)


def read_report(run_dir: Path) -> dict | None:
    """The run's report.json, if written."""
    path = run_dir / "report.json"
    return json.loads(path.read_text()) if path.exists() else None
