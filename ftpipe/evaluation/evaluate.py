"""Base versus tuned: the same items, prompts and greedy decoding for both, compared item by item.

For every target task (its test split) and held-out task, the base model and the tuned model are
scored per item; the comparison is paired (bootstrap CI of the mean delta, McNemar's exact test
for right/wrong metrics). Base-model scores are cached, so scheduled reruns do not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ftpipe import console, faults
from ftpipe.data import PreparedData
from ftpipe.evaluation.cache import cache_key, load_cached, store_cached
from ftpipe.evaluation.compare import compare_task
from ftpipe.evaluation.diagnostics import fit_diagnosis, loss_curves, step_losses
from ftpipe.evaluation.scoring import TaskScores, few_shot_prompts, score_task
from ftpipe.files import write_json_atomic, write_text_atomic
from ftpipe.spec import LoadedSpec, PipelineSpec, QloraAdapter

REPORT_SCHEMA_VERSION = 2  # 2: perplexity CI on the headline statistic, quantized base for QLoRA


def quantization_of(spec: PipelineSpec) -> dict | None:
    """bitsandbytes settings of a QLoRA spec (the base is quantized the same way for training and scoring)."""
    if not isinstance(spec.adapter, QloraAdapter):
        return None
    return {"bits": spec.adapter.bits, "quant_type": spec.adapter.quant_type,
            "double_quant": spec.adapter.double_quant, "compute_dtype": spec.adapter.compute_dtype}


def tuned_model_spec(run_dir: Path, spec: PipelineSpec, base_path: str, device: str):
    """How to load a run's tuned model: base + adapter (quantized like in training), or full weights."""
    from ftpipe.evaluation.generation import ModelSpec

    if (run_dir / "adapter").exists():
        return ModelSpec(base_path=base_path, adapter_path=str(run_dir / "adapter"), quantization=quantization_of(spec),
                         device=device)
    return ModelSpec(base_path=base_path, weights_path=str(run_dir / "weights"), device=device)


def _score_all(model: Any, prepared: PreparedData, spec: PipelineSpec, use_cache: bool,
               prompt_sets: dict[str, list[str]] | None = None, label: str = "", roles: tuple[str, ...] = ("target", "held_out"),
               ) -> dict[str, TaskScores]:
    fingerprint = model.fingerprint()
    out = {}
    for data in prepared.eval_tasks():
        if data.role not in roles or (prompt_sets is not None and data.task.name not in prompt_sets):
            continue  # a task without few-shot prompts (a conversation task) has no few-shot baseline
        if data.lm_eval_task is not None:  # issue 17: scored by lm-eval, which reads its own items
            from ftpipe.evaluation.lm_eval_ import task_fingerprint

            prompts = [task_fingerprint(data.lm_eval_task, data.task)]
        else:
            prompts = (prompt_sets or {}).get(data.task.name) or [i.prompt for i in data.eval_items]
        key = cache_key(fingerprint, data.task, prompts, data.eval_items, spec, device=model.device)
        cached = load_cached(key) if use_cache else None
        if cached is not None:
            console.log(f"  {label} {data.task.name}: cached")
            out[data.task.name] = cached
            _take_lm_eval_items(data, cached)
            continue
        if data.lm_eval_task is not None:
            from ftpipe.evaluation.lm_eval_ import score_lm_eval

            out[data.task.name] = score_lm_eval(model.spec, model.dtype, model.device, data.task, data.lm_eval_task, spec)
            _take_lm_eval_items(data, out[data.task.name])
        else:
            out[data.task.name] = score_task(model, data.task, data.eval_items, prompts, spec)
        if use_cache:
            store_cached(key, out[data.task.name])
        console.log(f"  {label} {data.task.name}: {out[data.task.name].metric} {out[data.task.name].value():.3f}")
    return out


def _take_lm_eval_items(data, scores: TaskScores) -> None:
    """An lm-eval probe's items are known once lm-eval has read them; base and tuned must see the same ones."""
    if data.lm_eval_task is None or scores.items is None:
        return
    from ftpipe.data import EvalItem
    from ftpipe.errors import EvalError

    items = [EvalItem(**i) for i in scores.items]
    if not data.eval_items:
        data.eval_items = items
    elif [i.item_id for i in items] != [i.item_id for i in data.eval_items]:
        raise EvalError(f"task {data.task.name}: lm-eval scored different items for the two models",
                        hint="the task's data changed between the scorings; run the evaluation again")


def _scored(model_spec, prepared: PreparedData, spec: PipelineSpec, *, label: str, use_cache: bool,
            few_shot: bool = False, with_model: Callable[[Any, dict[str, TaskScores]], None] | None = None,
            ) -> tuple[dict[str, TaskScores], dict[str, TaskScores], str]:
    """Load one model, score it (and its few-shot baseline), free it: (scores, few-shot scores, fingerprint).

    `with_model(model, scores)` runs before the model is freed (the forgetting diagnosis reuses it).
    """
    import gc

    from ftpipe.evaluation.generation import load_model

    model = load_model(model_spec)
    console.log(f"scoring the {label} model")
    scores = _score_all(model, prepared, spec, use_cache=use_cache, label=label)
    few: dict[str, TaskScores] = {}
    if few_shot and spec.evaluation.few_shot:
        console.log(f"scoring the {label} model with {spec.evaluation.few_shot}-shot prompts")
        prompt_sets = {t.task.name: few_shot_prompts(model.tokenizer, t.task, t.eval_items, prepared.few_shot[t.task.name])
                       for t in prepared.eval_tasks() if t.role == "target" and t.task.name in prepared.few_shot}
        few = _score_all(model, prepared, spec, use_cache=use_cache, prompt_sets=prompt_sets, label="few-shot",
                         roles=("target",))
    if with_model is not None:
        with_model(model, scores)
    fingerprint = model.fingerprint()
    del model
    gc.collect()
    return scores, few, fingerprint


def evaluate_run(run_dir: Path, *, loaded: LoadedSpec, prepared: PreparedData, base_path: str, device: str,
                 tuned: Any = None) -> dict:
    """Score base and tuned models on every evaluation task, compare them, write predictions and the report.

    For QLoRA the tuned model runs on 4-bit (or 8-bit) base weights, so it is compared with the base
    quantized the same way; the full-precision base is scored too, and the difference between the
    two bases is reported as the cost of quantization, never as forgetting. Every held-out
    generation task that the tuned model forgot gets a diagnosis (`ftpipe.evaluation.diagnosis`).

    Args:
        tuned: The tuned model's `ModelSpec` when it is not the run folder's own (`ftpipe evaluate --model`).
    """
    from ftpipe.evaluation.generation import ModelSpec
    from ftpipe.evaluation.report import write_report

    spec = loaded.spec
    quant = quantization_of(spec)
    diagnosis = _Diagnosis(prepared, spec)
    full_scores, few_shot_scores, full_fp = _scored(ModelSpec(base_path=base_path, device=device), prepared, spec,
                                                    label="base", use_cache=True, few_shot=quant is None,
                                                    with_model=diagnosis.on_base if quant is None else None)
    base_scores, fingerprints = full_scores, {"base": full_fp}
    if quant is not None:
        base_scores, few_shot_scores, quant_fp = _scored(
            ModelSpec(base_path=base_path, quantization=quant, device=device), prepared, spec,
            label="quantized base", use_cache=True, few_shot=True, with_model=diagnosis.on_base)
        fingerprints = {"base": quant_fp, "base_full_precision": full_fp}
    faults.point("evaluate")
    diagnosis.base_scores = base_scores
    tuned_scores, _, fingerprints["tuned"] = _scored(tuned or tuned_model_spec(run_dir, spec, base_path, device), prepared,
                                                     spec, label="tuned", use_cache=False, with_model=diagnosis.on_tuned)

    comparisons = [compare_task(d.task, d.role, d.eval_items, base_scores[d.task.name], tuned_scores[d.task.name], spec,
                                few_shot_scores.get(d.task.name)) for d in prepared.eval_tasks()]
    diagnosis.attach(run_dir, comparisons, tuned_scores)
    if quant is not None:
        for entry in comparisons:
            full = full_scores[entry["task"]].value()
            entry["base_full_precision"] = full
            entry["quantization_cost"] = entry["base"] - full  # what 4-bit weights alone changed
    _write_predictions(run_dir, prepared, base_scores, tuned_scores)
    stats_path = run_dir / "training_statistics.json"
    curves = loss_curves(json.loads(stats_path.read_text())) if stats_path.exists() else {}
    report = build_report(spec, run_dir.name, comparisons, curves, prepared, fingerprints)
    report["step_losses"] = step_losses(run_dir)
    report["quantized_base"] = quant is not None
    if any(d.task.kind == "code" for d in prepared.eval_tasks()):
        from ftpipe.evaluation.sandbox import isolation_layers, reads_guarded

        report["sandbox"] = {"layers": list(isolation_layers()), "reads_guarded": reads_guarded()}
    write_json_atomic(run_dir / "metrics.json", {c["task"]: {k: c[k] for k in ("metric", "base", "tuned", "delta", "ci_low", "ci_high")}
                                                 for c in comparisons})
    write_report(run_dir, report)
    return report


class _Diagnosis:
    """The forgetting diagnosis's model passes, run while each model is loaded anyway."""

    def __init__(self, prepared: PreparedData, spec: PipelineSpec):
        from ftpipe.evaluation.diagnosis import DIAGNOSED_KINDS

        self.spec, self.prepared = spec, prepared
        on = spec.evaluation.diagnosis.enabled
        self.tasks = [d for d in prepared.eval_tasks() if on and d.role == "held_out" and d.task.kind in DIAGNOSED_KINDS
                      and len(d.eval_items) >= 2]
        self.base_ev: dict = {}
        self.tuned_ev: dict = {}
        self.recovered: dict = {}
        self.base_scores: dict[str, TaskScores] = {}

    def on_base(self, model: Any, scores: dict[str, TaskScores]) -> None:
        from ftpipe.evaluation.diagnosis import base_evidence

        for data in self.tasks:  # cached with the base scores: once per base model and item set
            self.base_ev[data.task.name] = base_evidence(model, data, self.spec)

    def on_tuned(self, model: Any, scores: dict[str, TaskScores]) -> None:
        from ftpipe.evaluation.diagnosis import candidate_sets, recovery_scores, reference_evidence

        for data in self.tasks:
            name = data.task.name
            entry = compare_task(data.task, "held_out", data.eval_items, self.base_scores[name], scores[name], self.spec)
            if entry["verdict"] != "forgot" and not self.spec.evaluation.diagnosis.always:
                continue
            console.log(f"  diagnosing the drop on {name}: reference likelihoods and a {self.spec.evaluation.diagnosis.k}-shot "
                        "recovery probe")
            cands = self.base_ev[name].candidates or candidate_sets(data.eval_items, self.spec.evaluation.diagnosis.candidates)
            self.tuned_ev[name] = reference_evidence(model, data.eval_items, cands, self.spec.evaluation.batch_size)
            self.recovered[name] = recovery_scores(model, data, self.spec)

    def attach(self, run_dir: Path, comparisons: list[dict], tuned_scores: dict[str, TaskScores]) -> None:
        """Add each diagnosis to its task's comparison and write the per-item evidence to diagnosis/<task>.jsonl."""
        from ftpipe.evaluation.diagnosis import diagnose_task

        by_name = {d.task.name: d for d in self.tasks}
        targets = [r["target"] for r in self.prepared.train_rows if r.get("task") in {t.name for t in self.spec.tasks}]
        for entry in comparisons:
            name = entry["task"]
            if name not in self.recovered:
                continue
            data = by_name[name]
            recovered, source = self.recovered[name]
            entry["diagnosis"], rows = diagnose_task(data.task, data.eval_items, self.base_scores[name], tuned_scores[name],
                                                     recovered, self.base_ev[name], self.tuned_ev[name], self.spec,
                                                     targets, source, forgot=entry["verdict"] == "forgot")
            folder = run_dir / "diagnosis"
            folder.mkdir(exist_ok=True)
            write_text_atomic(folder / f"{name}.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
            console.log(f"  {entry['diagnosis']['summary']}")


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
        tokens = base[name].tokens or [None] * len(data.eval_items)
        lines = [json.dumps({"item_id": i.item_id, "input": i.user_message, "reference": i.reference,
                             "base_output": bo, "tuned_output": to, "base_score": bs, "tuned_score": ts,
                             **({"tokens": n} if n is not None else {})}, ensure_ascii=False)
                 for i, bo, to, bs, ts, n in zip(data.eval_items, base[name].outputs, tuned[name].outputs,
                                                 base[name].scores, tuned[name].scores, tokens)]
        write_text_atomic(folder / f"{name}.jsonl", "\n".join(lines) + "\n")
