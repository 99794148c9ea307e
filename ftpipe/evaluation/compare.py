"""Paired comparisons: base versus tuned on one task, and `ftpipe compare RUN_A RUN_B` over two runs.

Used by people and by scheduled retraining (is the new model better than the one in service?).
Items are matched by id, so only items both runs scored count; tasks must have the same definition.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe.data import EvalItem
from ftpipe.errors import BadInputError
from ftpipe.evaluation.scoring import BINARY_KINDS, TaskScores
from ftpipe.spec import PipelineSpec, TaskSpec, load_resolved_spec


def compare_task(task: TaskSpec, role: str, items: list[EvalItem], base: TaskScores, tuned: TaskScores,
                 spec: PipelineSpec, few_shot: TaskScores | None = None, labels: tuple[str, str] = ("base", "tuned")) -> dict:
    """Paired comparison of two models on the same items, with a verdict in plain words."""
    from ftpipe.evaluation import metrics, stats

    lower_better = not metrics.higher_is_better(task.kind)
    ci = {"confidence": spec.evaluation.confidence, "n_resamples": spec.evaluation.bootstrap_resamples,
          "seed": spec.training.seed}
    if task.kind == "perplexity":  # the CI is of the headline itself: token-weighted perplexity
        delta, low, high = stats.paired_bootstrap_perplexity_ci(base.scores, tuned.scores, base.tokens or [], **ci)
    else:  # every other headline is the mean per-item score, so the CI of the mean difference is its CI
        delta, low, high = stats.paired_bootstrap_ci(base.scores, tuned.scores, **ci)
    b_value, t_value = base.value(), tuned.value()
    entry: dict[str, Any] = {
        "task": task.name, "role": role, "kind": task.kind, "metric": base.metric, "n": len(items),
        labels[0]: b_value, labels[1]: t_value, "delta": t_value - b_value,
        "higher_is_better": not lower_better,
        "ci_of": f"{labels[1]} - {labels[0]} {base.metric}",
        "item_delta": delta, "ci_low": low, "ci_high": high,
        "relative_change": stats.relative_change(b_value, t_value),
        "aggregate": {labels[0]: base.aggregate, labels[1]: tuned.aggregate},
    }
    if role == "held_out":
        entry["forgetting"] = stats.forgetting(b_value, t_value, higher_is_better=metrics.higher_is_better(task.kind))
    if few_shot is not None:
        entry["few_shot"] = few_shot.value()
        if task.kind != "perplexity":
            entry["vs_few_shot"] = _paired(task, few_shot, tuned, ci, lower_better)
    if base.margins is not None and tuned.margins is not None:  # preference: the mean margin, paired too
        m_delta, m_low, m_high = stats.paired_bootstrap_ci(base.margins, tuned.margins, **ci)
        entry["margin"] = {labels[0]: sum(base.margins) / len(base.margins), labels[1]: sum(tuned.margins) / len(tuned.margins),
                           "delta": m_delta, "ci_low": m_low, "ci_high": m_high,
                           "normalized": task.length_normalized}
    binary_probe = task.kind == "lm_eval" and set(base.scores) | set(tuned.scores) <= {0.0, 1.0}  # e.g. acc (issue 17)
    if task.kind in BINARY_KINDS or binary_probe:
        result = stats.mcnemar_exact([s >= 0.5 for s in base.scores], [s >= 0.5 for s in tuned.scores])
        entry["mcnemar"] = {"right_to_wrong": result.b, "wrong_to_right": result.c, "p_value": result.p_value}
        entry["flipped"] = [
            {"item_id": i.item_id, "input": i.user_message[:300], "reference": i.reference,
             labels[0]: bo[:300], labels[1]: to[:300]}
            for i, bs, ts, bo, to in zip(items, base.scores, tuned.scores, base.outputs, tuned.outputs) if bs >= 0.5 > ts
        ][:5]
    entry["verdict"] = verdict(role, low, high, lower_better)
    return entry


def _paired(task: TaskSpec, reference: TaskScores, tuned: TaskScores, ci: dict, lower_better: bool) -> dict:
    """Tuned against another baseline on the same items (the base model's few-shot prompts): delta, CI, McNemar."""
    from ftpipe.evaluation import stats

    delta, low, high = stats.paired_bootstrap_ci(reference.scores, tuned.scores, **ci)
    out = {"baseline": reference.value(), "delta": tuned.value() - reference.value(), "item_delta": delta,
           "ci_low": low, "ci_high": high, "verdict": verdict("target", low, high, lower_better)}
    if task.kind in BINARY_KINDS:
        result = stats.mcnemar_exact([s >= 0.5 for s in reference.scores], [s >= 0.5 for s in tuned.scores])
        out["mcnemar_p"] = result.p_value
    return out


def verdict(role: str, low: float, high: float, lower_better: bool) -> str:
    """Plain words from the CI of the per-item delta."""
    better, worse = (high < 0, low > 0) if lower_better else (low > 0, high < 0)
    if role == "target":
        return "learned" if better else ("got worse" if worse else "no significant change")
    return "forgot" if worse else ("improved" if better else "no significant change")



def _predictions(run_dir: Path, task: str) -> dict[str, dict]:
    path = run_dir / "predictions" / f"{task}.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["item_id"]: r for r in rows}


def compare_runs(dir_a: Path, dir_b: Path) -> dict:
    """Paired comparison of run B's tuned model against run A's on every task both evaluated."""
    report_a = json.loads((dir_a / "report.json").read_text()) if (dir_a / "report.json").exists() else None
    report_b = json.loads((dir_b / "report.json").read_text()) if (dir_b / "report.json").exists() else None
    if report_a is None or report_b is None:
        raise BadInputError("both runs need a report (an evaluated, finished run)", hint="see `ftpipe runs list`")
    spec_b = load_resolved_spec(dir_b / "spec.yaml", dir_b / "spec.yaml").spec
    tasks_a = {t["task"]: t for t in report_a["tasks"]}
    tasks_by_name = {t.name: t for t in spec_b.all_tasks()}
    comparisons = []
    for entry in report_b["tasks"]:
        name = entry["task"]
        if name not in tasks_a or tasks_a[name]["metric"] != entry["metric"]:
            continue
        preds_a, preds_b = _predictions(dir_a, name), _predictions(dir_b, name)
        common = sorted(set(preds_a) & set(preds_b))
        if not common:
            continue
        items = [EvalItem(task=name, item_id=i, prompt="", user_message=preds_b[i]["input"], reference=preds_b[i]["reference"])
                 for i in common]
        tokens = [preds_b[i].get("tokens") for i in common] if entry["kind"] == "perplexity" else None
        if tokens is not None and None in tokens:
            continue  # a run from before per-item token counts were kept: its perplexities are not comparable
        a = TaskScores(entry["metric"], [preds_a[i]["tuned_score"] for i in common], [preds_a[i]["tuned_output"] for i in common],
                       tokens=tokens)
        b = TaskScores(entry["metric"], [preds_b[i]["tuned_score"] for i in common], [preds_b[i]["tuned_output"] for i in common],
                       tokens=tokens)
        comparisons.append(compare_task(tasks_by_name[name], entry["role"], items, a, b, spec_b, labels=("a", "b")))
    if not comparisons:
        raise BadInputError(f"runs {dir_a.name} and {dir_b.name} share no evaluated items", hint="compare runs of the same pipeline")
    regressions = [c["task"] for c in comparisons if c["verdict"] in ("got worse", "forgot")]
    return {"a": dir_a.name, "b": dir_b.name, "confidence": spec_b.evaluation.confidence, "tasks": comparisons,
            "regressions": regressions, "few_shot_k": 0}
