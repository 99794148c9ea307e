"""`ftpipe data`: the training data exactly as the model will see it, before any training."""

from __future__ import annotations

from ftpipe.data.items import PreparedData
from ftpipe.spec import LoadedSpec


def preview_data(loaded: LoadedSpec, prepared: PreparedData, examples: int = 2) -> str:
    """Rendered examples per task, token lengths, the realised mixture and the leakage report."""
    out = [f"# {loaded.spec.name}: data preview (fingerprint {prepared.fingerprint[:16]})", ""]
    for name, task in prepared.tasks.items():
        rows = task.train or []
        out.append(f"## {name} ({task.role}, {task.task.kind}): {len(task.train)} train, {len(task.validation)} "
                   f"validation, {len(task.eval_items)} evaluated" + (f", {task.skipped_rows} bad rows skipped" if task.skipped_rows else ""))
        for row in rows[:examples]:
            out += ["--- prompt ---", row["prompt"], "--- target ---", row["target"], ""]
        if task.lm_eval_task is not None:  # issue 17: lm-eval reads and renders the items when it scores them
            out.append(f"scored by lm-evaluation-harness: task {task.lm_eval_task} (metric {task.task.lm_eval.metric}, "
                       f"{task.task.lm_eval.num_fewshot}-shot, at most {task.task.max_items or loaded.spec.evaluation.max_items} items)")
        if not rows:
            for item in task.eval_items[:examples]:
                shown = item.prompt or item.text or ""
                out += ["--- evaluated input ---", shown[:600], f"--- reference --- {item.reference}", ""]
        if task.expansion:  # issue 17: what one row per assistant turn costs
            e = task.expansion
            per = "the last assistant turn" if task.task.assistant_turns == "last" else "each assistant turn"
            out.append(f"conversations: {e['conversations']} in training -> {e['rows']} rows (one for {per}, "
                       f"the conversation before it as the prompt); {e['row_tokens']} tokens fed in training vs "
                       f"{e['conversation_tokens']} for each conversation once ({e['token_ratio']}x)")
        tokens = sorted(r["tokens"] for r in rows)
        if tokens:
            out.append(f"tokens per row: min {tokens[0]}, median {tokens[len(tokens) // 2]}, max {tokens[-1]}")
        out.append("")
    out.append("## Mixture (training split)")
    for name, m in prepared.mixture.items():
        out.append(f"  {name:24} {m['rows']:6} rows ({m['row_share']:6.1%})  {m['tokens']:8} tokens ({m['token_share']:6.1%})")
    out += ["", f"## Lengths: prompt <= {prepared.lengths['max_prompt_tokens']} tokens, target + EOS <= {prepared.lengths['max_target_tokens']} tokens", ""]
    leak = prepared.leakage
    out.append(f"## Leakage ({leak['ngram']}-gram near-duplicates at >= {leak['threshold']:.0%} overlap, and exact matches)")
    for name, t in leak["tasks"].items():
        out.append(f"  {name:24} checked {t['checked']:5}  exact {t['exact']}  near {t['near']}  dropped {t['dropped']}")
    if not leak["leaked"]:
        out.append("  clean: nothing evaluated was trained on")
    elif leak["action"] == "drop":
        out.append(f"  {leak['leaked']} leaked items dropped from evaluation; what is evaluated now is clean")
    else:
        out.append(f"  {leak['leaked']} leaked items")
    return "\n".join(out)
