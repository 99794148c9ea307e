"""`ftpipe compare RUN_A RUN_B`: two tuned models on the same items, compared the way base and tuned are.

Used by people and by scheduled retraining (is the new model better than the one in service?).
Items are matched by id, so only items both runs scored count; tasks must have the same definition.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftpipe.errors import BadInputError
from ftpipe.evaluate import TaskScores, compare_task
from ftpipe.rerun import load_run_spec
from ftpipe.runs import find_run


def _predictions(run_dir: Path, task: str) -> dict[str, dict]:
    path = run_dir / "predictions" / f"{task}.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["item_id"]: r for r in rows}


def compare_runs(ref_a: str, ref_b: str, root: Path | None = None) -> dict:
    """Paired comparison of run B's tuned model against run A's on every task both evaluated."""
    from ftpipe.data import EvalItem

    dir_a, dir_b = find_run(ref_a, root), find_run(ref_b, root)
    report_a = json.loads((dir_a / "report.json").read_text()) if (dir_a / "report.json").exists() else None
    report_b = json.loads((dir_b / "report.json").read_text()) if (dir_b / "report.json").exists() else None
    if report_a is None or report_b is None:
        raise BadInputError("both runs need a report (an evaluated, finished run)", hint="see `ftpipe runs list`")
    spec_b = load_run_spec(dir_b).spec
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
        a = TaskScores(entry["metric"], [preds_a[i]["tuned_score"] for i in common], [preds_a[i]["tuned_output"] for i in common])
        b = TaskScores(entry["metric"], [preds_b[i]["tuned_score"] for i in common], [preds_b[i]["tuned_output"] for i in common])
        if entry["kind"] == "perplexity":  # the headline is perplexity; per-item scores are NLL/token
            import math

            a.aggregate = {"perplexity": math.exp(sum(a.scores) / len(a.scores))}
            b.aggregate = {"perplexity": math.exp(sum(b.scores) / len(b.scores))}
        comparisons.append(compare_task(tasks_by_name[name], entry["role"], items, a, b, spec_b, labels=("a", "b")))
    if not comparisons:
        raise BadInputError(f"runs {dir_a.name} and {dir_b.name} share no evaluated items", hint="compare runs of the same pipeline")
    regressions = [c["task"] for c in comparisons if c["verdict"] in ("got worse", "forgot")]
    return {"a": dir_a.name, "b": dir_b.name, "confidence": spec_b.evaluation.confidence, "tasks": comparisons,
            "regressions": regressions, "few_shot_k": 0}
