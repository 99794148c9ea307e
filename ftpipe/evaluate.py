"""Base versus tuned: the same items, prompts and greedy decoding for both, compared item by item.

For every target task (its test split) and held-out task, the base model and the tuned model are
scored per item; the comparison is paired (bootstrap CI of the mean delta, McNemar's exact test
for right/wrong metrics). Base-model scores are cached, so scheduled reruns do not recompute them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftpipe import console
from ftpipe.data import EvalItem, PreparedData, TaskData
from ftpipe.paths import cache_dir
from ftpipe.runs import write_json_atomic
from ftpipe.spec import LoadedSpec, PipelineSpec, QloraAdapter, TaskSpec

REPORT_SCHEMA_VERSION = 1
BINARY_KINDS = {"exact_match", "contains", "classification", "numeric", "code", "multiple_choice"}


@dataclass
class TaskScores:
    """One model's per-item scores on one task."""

    metric: str
    scores: list[float]  # per item; the task score is their mean (perplexity: mean NLL per token)
    outputs: list[str]
    aggregate: dict[str, float] = field(default_factory=dict)

    def value(self) -> float:
        """The task's headline number."""
        return self.aggregate.get(self.metric, sum(self.scores) / len(self.scores))


# --------------------------------------------------------------------------------------------
# Scoring one model on one task
# --------------------------------------------------------------------------------------------


def extract_code(text: str) -> str:
    """The Python code in a generation: the first fenced block if there is one, else the text."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|\Z)", text, flags=re.S)
    return match.group(1) if match else text


def score_task(model: Any, task: TaskSpec, items: list[EvalItem], prompts: list[str], spec: PipelineSpec) -> TaskScores:
    """Score one model on a task's items; `prompts` are the model inputs (zero- or few-shot)."""
    from ftpipe import metrics

    gen, ev = spec.generation, spec.evaluation
    reporter = console.StepReporter(f"  {task.name}", len(items))
    try:
        if task.kind == "multiple_choice":
            contexts = [p for p, i in zip(prompts, items) for _ in i.choices]
            conts = [c if p.endswith(("\n", " ")) else " " + c for p, i in zip(prompts, items) for c in i.choices]
            lls = model.loglikelihood(contexts, conts, batch_size=ev.batch_size,
                                      progress=lambda n: reporter.update(n // max(1, len(contexts) // len(items))))
            acc, acc_norm, outputs, k = [], [], [], 0
            for item in items:
                n = len(item.choices)
                option_ll = [ll for ll, _ in lls[k:k + n]]
                a, an = metrics.multiple_choice_correct(option_ll, [len(c) for c in item.choices], item.answer_index)
                acc.append(a)
                acc_norm.append(an)
                outputs.append(item.choices[max(range(n), key=lambda j: option_ll[j])])
                k += n
            return TaskScores("acc", acc, outputs, {"acc": _mean(acc), "acc_norm": _mean(acc_norm)})
        if task.kind == "perplexity":
            nll, counts = [], []
            for done, item in enumerate(items, start=1):
                total, n = model.text_nll([item.text], batch_size=1)
                nll.append(total / max(n, 1))
                counts.append((total, n))
                reporter.update(done)
            ppl = metrics.perplexity(sum(t for t, _ in counts), sum(n for _, n in counts))
            return TaskScores("perplexity", nll, ["" for _ in items], {"perplexity": ppl})

        outputs = model.generate(prompts, max_new_tokens=task.max_new_tokens or gen.max_new_tokens, batch_size=ev.batch_size,
                                 stop=gen.stop or None, progress=reporter.update)
    finally:
        reporter.close()
    if task.kind == "classification":
        predicted = [metrics.match_label(o, task.labels) for o in outputs]
        gold = [i.reference for i in items]
        scores = [float(p is not None and metrics.normalize_text(p) == metrics.normalize_text(g)) for p, g in zip(predicted, gold)]
        agg = metrics.classification_scores(predicted, gold, task.labels)
        return TaskScores("accuracy", scores, outputs, agg)
    if task.kind == "code":
        from ftpipe.sandbox import run_many

        results = run_many([extract_code(o) + "\n\n" + (i.tests or "") for o, i in zip(outputs, items)])
        return TaskScores("pass@1", [float(r.passed) for r in results], outputs)
    scorer = {
        "exact_match": lambda o, i: metrics.exact_match(o, i.reference),
        "contains": lambda o, i: metrics.contains_match(o, i.answers),
        "rouge_l": lambda o, i: metrics.rouge_l(o, i.reference),
        "numeric": lambda o, i: metrics.numeric_match(o, i.reference),
    }[task.kind]
    metric = {"exact_match": "exact_match", "contains": "contains", "rouge_l": "rouge_l", "numeric": "numeric_match"}[task.kind]
    return TaskScores(metric, [scorer(o, i) for o, i in zip(outputs, items)], outputs)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def few_shot_prompts(tokenizer: Any, task: TaskSpec, items: list[EvalItem], examples: list[dict]) -> list[str]:
    """The base model prompted with k training examples as earlier chat turns (or as plain text)."""
    prompts = []
    for item in items:
        if task.chat_template:
            messages = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
            for ex in examples:
                messages += [{"role": "user", "content": ex["user"]}, {"role": "assistant", "content": ex["target"]}]
            messages.append({"role": "user", "content": item.user_message})
            prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        else:
            shots = "".join(f"{ex['user']}{ex['target']}\n\n" for ex in examples)
            prompts.append(shots + item.prompt)
    return prompts


# --------------------------------------------------------------------------------------------
# Cache of base-model results
# --------------------------------------------------------------------------------------------


def cache_key(model_fingerprint: str, task: TaskSpec, prompts: list[str], items: list[EvalItem], spec: PipelineSpec) -> str:
    """Identity of a scoring job: model, task definition, exact prompts and references, decoding."""
    payload = {
        "model": model_fingerprint,
        "task": task.model_dump(mode="json", exclude={"weight", "max_train_rows"}),
        "prompts": hashlib.sha256("\x00".join(prompts).encode()).hexdigest(),
        "items": hashlib.sha256(json.dumps([asdict(i) for i in items], sort_keys=True).encode()).hexdigest(),
        "generation": spec.generation.model_dump(mode="json"),
        "scorer_version": REPORT_SCHEMA_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cached(key: str) -> TaskScores | None:
    path = cache_dir() / "eval" / f"{key}.json"
    if not path.exists():
        return None
    try:
        return TaskScores(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def _store(key: str, scores: TaskScores) -> None:
    folder = cache_dir() / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{key}.json", asdict(scores))


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def compare_task(task: TaskSpec, role: str, items: list[EvalItem], base: TaskScores, tuned: TaskScores,
                 spec: PipelineSpec, few_shot: TaskScores | None = None, labels: tuple[str, str] = ("base", "tuned")) -> dict:
    """Paired comparison of two models on the same items, with a verdict in plain words."""
    from ftpipe import metrics, stats

    lower_better = task.kind == "perplexity"
    delta, low, high = stats.paired_bootstrap_ci(base.scores, tuned.scores, confidence=spec.evaluation.confidence,
                                                 n_resamples=spec.evaluation.bootstrap_resamples, seed=spec.training.seed)
    b_value, t_value = base.value(), tuned.value()
    entry: dict[str, Any] = {
        "task": task.name, "role": role, "kind": task.kind, "metric": base.metric, "n": len(items),
        labels[0]: b_value, labels[1]: t_value, "delta": t_value - b_value,
        # The CI is of the mean per-item difference (for perplexity: of mean NLL per token).
        "ci_of": "mean per-item NLL/token" if lower_better else base.metric,
        "item_delta": delta, "ci_low": low, "ci_high": high,
        "relative_change": stats.relative_change(b_value, t_value),
        "aggregate": {labels[0]: base.aggregate, labels[1]: tuned.aggregate},
    }
    if role == "held_out":
        entry["forgetting"] = stats.forgetting(b_value, t_value, higher_is_better=metrics.higher_is_better(task.kind))
    if few_shot is not None:
        entry["few_shot"] = few_shot.value()
    if task.kind in BINARY_KINDS:
        result = stats.mcnemar_exact([s >= 0.5 for s in base.scores], [s >= 0.5 for s in tuned.scores])
        entry["mcnemar"] = {"right_to_wrong": result.b, "wrong_to_right": result.c, "p_value": result.p_value}
        entry["flipped"] = [
            {"item_id": i.item_id, "input": i.user_message[:300], "reference": i.reference,
             labels[0]: bo[:300], labels[1]: to[:300]}
            for i, bs, ts, bo, to in zip(items, base.scores, tuned.scores, base.outputs, tuned.outputs) if bs >= 0.5 > ts
        ][:5]
    entry["verdict"] = verdict(role, low, high, lower_better)
    return entry


def verdict(role: str, low: float, high: float, lower_better: bool) -> str:
    """Plain words from the CI of the per-item delta."""
    better, worse = (high < 0, low > 0) if lower_better else (low > 0, high < 0)
    if role == "target":
        return "learned" if better else ("got worse" if worse else "no significant change")
    return "forgot" if worse else ("improved" if better else "no significant change")


# --------------------------------------------------------------------------------------------
# Fit diagnostics from Ludwig's training statistics
# --------------------------------------------------------------------------------------------


def loss_curves(training_stats: dict) -> dict[str, list[float]]:
    """Training and validation loss per checkpoint, from Ludwig's training_statistics.json."""
    curves = {}
    for split in ("training", "validation"):
        combined = training_stats.get(split, {}).get("combined", {})
        losses = combined.get("loss", []) if isinstance(combined, dict) else combined  # both shapes occur
        if losses:
            curves[split] = [float(x) for x in losses]
    return curves


def fit_diagnosis(curves: dict[str, list[float]], comparisons: list[dict]) -> list[str]:
    """Plain-words flags: overfitting (validation loss rising while training loss falls) or underfitting."""
    flags = []
    train, val = curves.get("training", []), curves.get("validation", [])
    if len(val) >= 3 and len(train) >= 3:
        best = min(range(len(val)), key=val.__getitem__)
        if best < len(val) - 1 and val[-1] > val[best] * 1.02 and train[-1] < train[best]:
            flags.append(f"overfitting: validation loss rose from {val[best]:.3f} (checkpoint {best + 1}) to "
                         f"{val[-1]:.3f} while training loss kept falling; fewer epochs or early stopping would help")
    if train and val and val[-1] > 1.5 * train[-1] and val[-1] - train[-1] > 0.2:
        flags.append(f"large train/validation gap: final training loss {train[-1]:.3f}, validation {val[-1]:.3f}")
    targets = [c for c in comparisons if c["role"] == "target"]
    if targets and all(c["verdict"] != "learned" for c in targets):
        flags.append("underfitting: no target task improved significantly; more steps or a higher learning rate may help")
    return flags


# --------------------------------------------------------------------------------------------
# The whole evaluation of a run
# --------------------------------------------------------------------------------------------


def tuned_model_spec(run_dir: Path, spec: PipelineSpec, base_path: str, device: str):
    """How to load a run's tuned model: base + adapter (quantized like in training), or full weights."""
    from ftpipe.generation import ModelSpec

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
        cached = _cached(key) if use_cache else None
        if cached is not None:
            console.log(f"  {label} {data.task.name}: cached")
            out[data.task.name] = cached
            continue
        out[data.task.name] = score_task(model, data.task, data.eval_items, prompts, spec)
        if use_cache:
            _store(key, out[data.task.name])
        console.log(f"  {label} {data.task.name}: {out[data.task.name].metric} {out[data.task.name].value():.3f}")
    return out


def evaluate_run(run_dir: Path, *, loaded: LoadedSpec, prepared: PreparedData, base_path: str, device: str) -> dict:
    """Score base and tuned models on every evaluation task, compare them, write predictions and the report."""
    import gc

    from ftpipe.generation import ModelSpec, load_model
    from ftpipe.report import write_report

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
