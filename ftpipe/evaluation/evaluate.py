"""Base versus tuned: the same items, prompts and greedy decoding for both, compared item by item.

For every target task (its test split) and held-out task, the base model and the tuned model are
scored per item; the comparison is paired (bootstrap CI of the mean delta, McNemar's exact test
for right/wrong metrics). Base-model scores are cached, so scheduled reruns do not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe import console
from ftpipe.data import PreparedData
from ftpipe.evaluation.cache import cache_key, load_cached, store_cached
from ftpipe.evaluation.compare import compare_task
from ftpipe.evaluation.diagnostics import fit_diagnosis, loss_curves
from ftpipe.evaluation.scoring import TaskScores, few_shot_prompts, score_task
from ftpipe.files import write_json_atomic
from ftpipe.spec import LoadedSpec, PipelineSpec, QloraAdapter

REPORT_SCHEMA_VERSION = 1


def tuned_model_spec(run_dir: Path, spec: PipelineSpec, base_path: str, device: str):
    """How to load a run's tuned model: base + adapter (quantized like in training), or full weights."""
    from ftpipe.evaluation.generation import ModelSpec

    quant = None
    if isinstance(spec.adapter, QloraAdapter):
        quant = {"bits": spec.adapter.bits, "quant_type": spec.adapter.quant_type,
                 "double_quant": spec.adapter.double_quant, "compute_dtype": spec.adapter.compute_dtype}
    if (run_dir / "adapter").exists():
        return ModelSpec(base_path=base_path, adapter_path=str(run_dir / "adapter"), quantization=quant, device=device)
    return ModelSpec(base_path=base_path, weights_path=str(run_dir / "weights"), device=device)


def _score_all(model: Any, prepared: PreparedData, spec: PipelineSpec, use_cache: bool,
               prompt_sets: dict[str, list[str]] | None = None, label: str = "") -> dict[str, TaskScores]:
    fingerprint = model.fingerprint()
    out = {}
    for data in prepared.eval_tasks():
        prompts = (prompt_sets or {}).get(data.task.name) or [i.prompt for i in data.eval_items]
        key = cache_key(fingerprint, data.task, prompts, data.eval_items, spec)
        cached = load_cached(key) if use_cache else None
        if cached is not None:
            console.log(f"  {label} {data.task.name}: cached")
            out[data.task.name] = cached
            continue
        out[data.task.name] = score_task(model, data.task, data.eval_items, prompts, spec)
        if use_cache:
            store_cached(key, out[data.task.name])
        console.log(f"  {label} {data.task.name}: {out[data.task.name].metric} {out[data.task.name].value():.3f}")
    return out


def evaluate_run(run_dir: Path, *, loaded: LoadedSpec, prepared: PreparedData, base_path: str, device: str) -> dict:
    """Score base and tuned models on every evaluation task, compare them, write predictions and the report."""
    import gc

    from ftpipe.evaluation.generation import ModelSpec, load_model
    from ftpipe.evaluation.report import write_report

    spec = loaded.spec
    base = load_model(ModelSpec(base_path=base_path, device=device))
    console.log("scoring the base model")
    base_scores = _score_all(base, prepared, spec, use_cache=True, label="base")
    few_shot_scores: dict[str, TaskScores] = {}
    if spec.evaluation.few_shot:
        console.log(f"scoring the base model with {spec.evaluation.few_shot}-shot prompts")
        targets = [t for t in prepared.eval_tasks() if t.role == "target"]
        prompt_sets = {t.task.name: few_shot_prompts(base.tokenizer, t.task, t.eval_items, prepared.few_shot[t.task.name])
                       for t in targets}
        subset = PreparedData(tasks={t.task.name: t for t in targets}, train_rows=[], mixture={}, leakage={}, lengths={},
                              fingerprint="", input_hashes={})
        few_shot_scores = _score_all(base, subset, spec, use_cache=True, prompt_sets=prompt_sets, label="few-shot")
    base_fp = base.fingerprint()
    del base
    gc.collect()

    tuned = load_model(tuned_model_spec(run_dir, spec, base_path, device))
    console.log("scoring the tuned model")
    tuned_scores = _score_all(tuned, prepared, spec, use_cache=False, label="tuned")
    tuned_fp = tuned.fingerprint()
    del tuned
    gc.collect()

    comparisons = [compare_task(d.task, d.role, d.eval_items, base_scores[d.task.name], tuned_scores[d.task.name], spec,
                                few_shot_scores.get(d.task.name)) for d in prepared.eval_tasks()]
    _write_predictions(run_dir, prepared, base_scores, tuned_scores)
    stats_path = run_dir / "training_statistics.json"
    curves = loss_curves(json.loads(stats_path.read_text())) if stats_path.exists() else {}
    report = build_report(spec, run_dir.name, comparisons, curves, prepared, {"base": base_fp, "tuned": tuned_fp})
    write_json_atomic(run_dir / "metrics.json", {c["task"]: {k: c[k] for k in ("metric", "base", "tuned", "delta", "ci_low", "ci_high")}
                                                 for c in comparisons})
    write_report(run_dir, report)
    return report


def build_report(spec: PipelineSpec, run_id: str, comparisons: list[dict], curves: dict, prepared: PreparedData,
                 fingerprints: dict) -> dict:
    """The machine-readable report (report.json)."""
    targets = [c for c in comparisons if c["role"] == "target"]
    held = [c for c in comparisons if c["role"] == "held_out"]
    summary = {
        "learned": sum(c["verdict"] == "learned" for c in targets), "target_tasks": len(targets),
        "forgot": sum(c["verdict"] == "forgot" for c in held), "held_out_tasks": len(held),
        "max_forgetting": max((c["forgetting"] for c in held if c.get("forgetting") is not None), default=None),
    }
    return {
        "schema_version": REPORT_SCHEMA_VERSION, "pipeline": spec.name, "run_id": run_id,
        "base_model": spec.base_model, "adapter": spec.adapter.type, "method": spec.method,
        "generation": spec.generation.model_dump(mode="json"), "confidence": spec.evaluation.confidence,
        "few_shot_k": spec.evaluation.few_shot, "tasks": comparisons, "summary": summary,
        "loss_curves": curves, "fit_flags": fit_diagnosis(curves, comparisons),
        "leakage": prepared.leakage, "mixture": prepared.mixture, "model_fingerprints": fingerprints,
    }


def _write_predictions(run_dir: Path, prepared: PreparedData, base: dict[str, TaskScores], tuned: dict[str, TaskScores]) -> None:
    folder = run_dir / "predictions"
    folder.mkdir(exist_ok=True)
    for data in prepared.eval_tasks():
        name = data.task.name
        lines = [json.dumps({"item_id": i.item_id, "input": i.user_message, "reference": i.reference,
                             "base_output": bo, "tuned_output": to, "base_score": bs, "tuned_score": ts}, ensure_ascii=False)
                 for i, bo, to, bs, ts in zip(data.eval_items, base[name].outputs, tuned[name].outputs,
                                              base[name].scores, tuned[name].scores)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
