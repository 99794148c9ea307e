"""Forgetting diagnosis: when a held-out generation task dropped, is the knowledge gone or only the format?

Zheng et al. 2025 ("Spurious Forgetting in Continual Learning of Language Models") show that many
held-out drops after fine-tuning are lost task alignment, not lost knowledge. For every held-out
generation task whose verdict is "forgot", three pieces of evidence, per item and per task:

1. **Likelihood of the reference answer** under base and tuned, given the same prompt: its
   log-likelihood per token, and its rank among other answers of the same task (the references
   of other items, e.g. other capitals), which cancels out the answer's format because every
   candidate has the same one. Base-side numbers are cached with the base-model scores.
2. **A recovery probe**: the tuned model asked again with k in-format examples of the held-out
   task (rows of the task that are not evaluated; when there are too few, other evaluated items,
   never the item itself).
3. **What changed in the outputs**: length, first words, and answers in the training tasks'
   format (a training answer copied, the training answers' punctuation shape, words of the
   question echoed back).

The verdict rule (`knowledge_verdict`), explicit and tested with constructed numbers:

* the reference is *still preferred* when the tuned model is not significantly worse than the
  base at it: the upper bound of the paired CI of (tuned - base) top-1 rank rate is >= 0 (where
  the task has other answers to rank against; else the same test on the per-token log-likelihood);
* the score is *recovered* when the recovery probe's mean score reaches the base's own CI (its
  lower bound or above);
* both: **knowledge kept, format drifted**; neither: **knowledge lost**; one only: **mixed evidence**.

Extra model passes stay cheap: the base-side evidence runs while the base model is loaded anyway
(and is cached); the tuned side reuses the loaded tuned model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ftpipe.data import EvalItem, TaskData
from ftpipe.evaluation import metrics, stats
from ftpipe.evaluation.scoring import TaskScores, few_shot_prompts, score_task
from ftpipe.files import write_json_atomic
from ftpipe.paths import cache_dir
from ftpipe.spec import PipelineSpec, TaskSpec

# Held-out kinds whose outputs are free generations with a reference answer (code has tests, not answers).
DIAGNOSED_KINDS = {"exact_match", "contains", "rouge_l", "numeric", "classification"}
KEPT, LOST, MIXED = "knowledge kept, format drifted", "knowledge lost", "mixed evidence"
NO_DROP = "no significant drop"  # evaluation.diagnosis.always on a task that did not forget: evidence only
_EVIDENCE_VERSION = 1


@dataclass
class ReferenceEvidence:
    """One model's likelihood evidence on one task's items.

    Attributes:
        ll: Log-likelihood (nats) of each item's reference answer given its prompt.
        tokens: Tokens of each reference answer.
        ranks: 1-based rank of the reference among the item's candidates by log-likelihood
            (1 = most likely); None when the item has no other candidate.
        candidates: Each item's candidate answers, the reference first.
    """

    ll: list[float]
    tokens: list[int]
    ranks: list[int | None]
    candidates: list[list[str]] = field(default_factory=list)

    def per_token(self) -> list[float]:
        """Log-likelihood per reference token (0 for an empty reference)."""
        return [ll / n if n else 0.0 for ll, n in zip(self.ll, self.tokens)]


# --------------------------------------------------------------------------------------------
# Pure parts: candidates, rule, output changes
# --------------------------------------------------------------------------------------------


def candidate_sets(items: list[EvalItem], n: int) -> list[list[str]]:
    """Each item's reference followed by up to `n` other answers of the task (deterministic).

    The others are the references of the following items (cyclically), skipping any that is an
    accepted answer of the item itself or repeats an earlier candidate, so every candidate is a
    wrong answer in the task's own format.
    """
    refs = [i.reference or "" for i in items]
    out = []
    for k, item in enumerate(items):
        accepted = {metrics.normalize_text(a) for a in [item.reference or "", *item.answers]}
        chosen = [refs[k]]
        seen = set(accepted)
        for step in range(1, len(items)):
            if len(chosen) > n:
                break
            other = refs[(k + step) % len(items)]
            key = metrics.normalize_text(other)
            if key and key not in seen:
                chosen.append(other)
                seen.add(key)
        out.append(chosen)
    return out


def rank_of_first(lls: list[float]) -> int | None:
    """1-based rank of the first value among all (ties count in its favour); None for fewer than two."""
    if len(lls) < 2:
        return None
    return 1 + sum(1 for x in lls[1:] if x > lls[0])


def knowledge_verdict(preferred_ci: tuple[float, float, float], recovered: float,
                      base_ci: tuple[float, float, float]) -> tuple[str, dict]:
    """The verdict rule, on numbers alone.

    Args:
        preferred_ci: (delta, low, high) of tuned - base in how much the reference answer is preferred
            (top-1 rank rate, or per-token log-likelihood where a task has no other answers).
        recovered: The recovery probe's mean score (tuned model with k in-format examples).
        base_ci: (mean, low, high) of the base model's own score on the task.

    Returns:
        (verdict, checks): KEPT when the reference is not significantly less preferred (high >= 0)
        and the recovery probe reaches the base's CI (recovered >= its low); LOST when neither holds;
        MIXED otherwise. `checks` holds both booleans and the numbers they were judged on.
    """
    still_preferred = preferred_ci[2] >= 0
    recovered_ok = recovered >= base_ci[1]
    verdict = KEPT if still_preferred and recovered_ok else LOST if not (still_preferred or recovered_ok) else MIXED
    return verdict, {"reference_still_preferred": still_preferred, "recovered_within_base_ci": recovered_ok,
                     "preferred_delta_ci_high": preferred_ci[2], "recovered": recovered, "base_ci_low": base_ci[1]}


_SKELETON = re.compile(r"[^\w\s]")


def skeleton(text: str) -> str:
    """A text's punctuation shape ("item=mug; qty=2" -> "=;="): the format of structured answers."""
    return "".join(_SKELETON.findall(text))


def _words(text: str) -> list[str]:
    return metrics.normalize_text(text).split()


def _shares(outputs: list[str], questions: list[str], targets: set[str], shapes: set[str]) -> dict[str, float]:
    n = max(1, len(outputs))
    echo = sum(1 for o, q in zip(outputs, questions) if _words(o) and set(_words(o)) <= set(_words(q)))
    return {"copied_training_answer": sum(metrics.normalize_text(o) in targets for o in outputs) / n,
            "training_answer_shape": sum(bool(skeleton(o)) and skeleton(o) in shapes for o in outputs) / n,
            "echoes_the_question": echo / n}


def output_changes(base: list[str], tuned: list[str], questions: list[str], training_targets: list[str],
                   recovered: list[str] | None = None) -> dict[str, Any]:
    """What changed between base and tuned outputs: length, first words, answers in the training format.

    Args:
        base: Base outputs, one per item.
        tuned: Tuned outputs, same items.
        questions: The items' user messages.
        training_targets: Target answers the model was tuned on (every target task).
        recovered: Tuned outputs with k in-format examples (the recovery probe), if run.

    Returns:
        Mean length in words, the 3 most common first two words, and the shares of outputs that
        copy a training answer, have a frequent training answer's punctuation shape (one in at least
        10% of training answers), or consist only of words from the question; for base and tuned.
    """
    targets = {metrics.normalize_text(t) for t in training_targets if metrics.normalize_text(t)}
    counts = Counter(skeleton(t) for t in training_targets)
    shapes = {s for s, c in counts.items() if s and c >= 0.1 * max(1, len(training_targets))}

    def side(outputs: list[str]) -> dict[str, Any]:
        firsts = Counter(" ".join(_words(o)[:2]) or "(empty)" for o in outputs)
        return {"mean_words": sum(len(o.split()) for o in outputs) / max(1, len(outputs)),
                "first_words": [[w, c] for w, c in firsts.most_common(3)], **_shares(outputs, questions, targets, shapes)}

    out = {"base": side(base), "tuned": side(tuned)}
    if recovered is not None:
        out["recovered"] = side(recovered)
    return out


def describe_changes(changes: dict[str, Any]) -> str:
    """The output changes in one plain sentence."""
    b, t = changes["base"], changes["tuned"]
    parts = [f"answers went from {b['mean_words']:.1f} to {t['mean_words']:.1f} words on average",
             f"most common start {b['first_words'][0][0]!r} -> {t['first_words'][0][0]!r}" if b["first_words"] and t["first_words"] else ""]
    for key, words in (("copied_training_answer", "copy a training answer"),
                       ("training_answer_shape", "have the training answers' shape"),
                       ("echoes_the_question", "only repeat words of the question")):
        if t[key] > b[key]:
            parts.append(f"{t[key]:.0%} {words} (base {b[key]:.0%})")
    return "; ".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------
# Model passes
# --------------------------------------------------------------------------------------------


def answer_continuation(prompt: str, answer: str) -> str:
    """The text scored after a prompt for an answer: a space between them unless the prompt ends in one."""
    return answer if prompt.endswith(("\n", " ")) or not prompt else " " + answer


def reference_evidence(model: Any, items: list[EvalItem], candidates: list[list[str]], batch_size: int = 16) -> ReferenceEvidence:
    """Log-likelihood of every candidate answer given the item's prompt, in one batched pass."""
    contexts = [i.prompt for i, cands in zip(items, candidates) for _ in cands]
    conts = [answer_continuation(i.prompt, c) for i, cands in zip(items, candidates) for c in cands]
    lls = model.loglikelihood(contexts, conts, batch_size=batch_size)
    ll, tokens, ranks, k = [], [], [], 0
    for cands in candidates:
        mine = lls[k:k + len(cands)]
        ll.append(mine[0][0])
        tokens.append(mine[0][1])
        ranks.append(rank_of_first([x for x, _ in mine]))
        k += len(cands)
    return ReferenceEvidence(ll=ll, tokens=tokens, ranks=ranks, candidates=candidates)


def _evidence_key(model_fingerprint: str, data: TaskData, spec: PipelineSpec, device: str) -> str:
    from ftpipe.evaluation.cache import cache_key

    base = cache_key(model_fingerprint, data.task, [i.prompt for i in data.eval_items], data.eval_items, spec, device=device)
    blob = json.dumps({"scores": base, "candidates": spec.evaluation.diagnosis.candidates, "v": _EVIDENCE_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()


def base_evidence(model: Any, data: TaskData, spec: PipelineSpec) -> ReferenceEvidence:
    """The base model's reference evidence on a held-out task, cached like its scores."""
    path = cache_dir() / "diagnosis" / f"{_evidence_key(model.fingerprint(), data, spec, model.device)}.json"
    if path.exists():
        try:
            return ReferenceEvidence(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            pass
    evidence = reference_evidence(model, data.eval_items, candidate_sets(data.eval_items, spec.evaluation.diagnosis.candidates),
                                  spec.evaluation.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, asdict(evidence))
    return evidence


def recovery_examples(data: TaskData, k: int) -> tuple[list[list[EvalItem]], str]:
    """The k in-format examples shown with each item, and where they came from.

    Rows of the held-out task that are not evaluated when there are k of them; otherwise, for each
    item, the k evaluated items after it (cyclically), so an item never sees its own answer.
    """
    items = data.eval_items
    if len(data.spare_items) >= k:
        return [data.spare_items[:k]] * len(items), f"{k} rows of the task that are not evaluated"
    n = min(k, len(items) - 1)
    return [[items[(j + s) % len(items)] for s in range(1, n + 1)] for j in range(len(items))], \
        f"{n} other evaluated items of the task (never the item itself)"


def recovery_scores(model: Any, data: TaskData, spec: PipelineSpec) -> tuple[TaskScores, str]:
    """The tuned model on the task again, each item preceded by k in-format examples."""
    shots, source = recovery_examples(data, spec.evaluation.diagnosis.k)
    prompts = []
    for item, examples in zip(data.eval_items, shots):
        ex = [{"user": e.user_message, "target": e.reference or ""} for e in examples]
        prompts += few_shot_prompts(model.tokenizer, data.task, [item], ex)
    return score_task(model, data.task, data.eval_items, prompts, spec), source


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------


def diagnose_task(task: TaskSpec, items: list[EvalItem], base: TaskScores, tuned: TaskScores, recovered: TaskScores,
                  base_ev: ReferenceEvidence, tuned_ev: ReferenceEvidence, spec: PipelineSpec,
                  training_targets: list[str], shots_source: str = "", forgot: bool = True) -> tuple[dict, list[dict]]:
    """The diagnosis of one held-out task: (report entry, per-item rows). Pure: no model calls.

    Args:
        forgot: Whether the task's verdict is "forgot"; otherwise the verdict is NO_DROP and the
            evidence is reported as it is (`evaluation.diagnosis.always`).

    Returns:
        The entry holds the verdict, the checks it was judged on, each piece of evidence with its CI,
        the output changes and a plain-words summary; one row per item holds its evidence.
    """
    ci = {"confidence": spec.evaluation.confidence, "n_resamples": spec.evaluation.bootstrap_resamples, "seed": spec.training.seed}
    ll_ci = stats.paired_bootstrap_ci(base_ev.per_token(), tuned_ev.per_token(), **ci)
    ranked = [j for j, (rb, rt) in enumerate(zip(base_ev.ranks, tuned_ev.ranks)) if rb is not None and rt is not None]
    rank_ci = None
    if len(ranked) >= max(1, len(items) // 2):
        rank_ci = stats.paired_bootstrap_ci([float(base_ev.ranks[j] == 1) for j in ranked],
                                            [float(tuned_ev.ranks[j] == 1) for j in ranked], **ci)
    preferred = rank_ci if rank_ci is not None else ll_ci
    base_ci = stats.bootstrap_mean_ci(base.scores, **ci)
    rec_value = recovered.value()
    verdict, checks = knowledge_verdict(preferred, rec_value, base_ci)
    if not forgot:
        verdict = NO_DROP
    rec_ci = stats.paired_bootstrap_ci(base.scores, recovered.scores, **ci)
    drop = base.value() - tuned.value()

    rows, flipped = [], []
    for j, item in enumerate(items):
        row = {"item_id": item.item_id, "input": item.user_message, "reference": item.reference,
               "base_output": base.outputs[j], "tuned_output": tuned.outputs[j], "recovered_output": recovered.outputs[j],
               "base_score": base.scores[j], "tuned_score": tuned.scores[j], "recovered_score": recovered.scores[j],
               "reference_ll_base": base_ev.ll[j], "reference_ll_tuned": tuned_ev.ll[j], "reference_tokens": base_ev.tokens[j],
               "rank_base": base_ev.ranks[j], "rank_tuned": tuned_ev.ranks[j],
               "candidates": len(base_ev.candidates[j]) if base_ev.candidates else None}
        if base.scores[j] >= 0.5 > tuned.scores[j]:
            kept = recovered.scores[j] >= 0.5 or tuned_ev.ranks[j] == 1
            row["item_verdict"] = "format drifted" if kept else "knowledge lost"
            flipped.append(float(kept))
        rows.append(row)
    item_summary = None
    if flipped:
        share, low, high = stats.bootstrap_mean_ci(flipped, **ci)
        item_summary = {"flipped": len(flipped), "format_drifted": int(sum(flipped)),
                        "knowledge_lost": len(flipped) - int(sum(flipped)),
                        "format_drifted_share": share, "ci_low": low, "ci_high": high}
    changes = output_changes(base.outputs, tuned.outputs, [i.user_message for i in items], training_targets, recovered.outputs)
    entry = {
        "task": task.name, "verdict": verdict, "checks": checks, "k": spec.evaluation.diagnosis.k, "examples_from": shots_source,
        "reference_ll_per_token": {"base": sum(base_ev.per_token()) / len(items), "tuned": sum(tuned_ev.per_token()) / len(items),
                                   "delta": ll_ci[0], "ci_low": ll_ci[1], "ci_high": ll_ci[2]},
        "reference_top1": None if rank_ci is None else {
            "base": sum(base_ev.ranks[j] == 1 for j in ranked) / len(ranked),
            "tuned": sum(tuned_ev.ranks[j] == 1 for j in ranked) / len(ranked),
            "delta": rank_ci[0], "ci_low": rank_ci[1], "ci_high": rank_ci[2], "items": len(ranked),
            "candidates": max(len(c) for c in base_ev.candidates) if base_ev.candidates else None},
        "judged_on": "reference_top1" if rank_ci is not None else "reference_ll_per_token",
        "base_score": {"value": base_ci[0], "ci_low": base_ci[1], "ci_high": base_ci[2]},
        "tuned_score": tuned.value(),
        "recovered_score": {"value": rec_value, "delta_vs_base": rec_ci[0], "ci_low": rec_ci[1], "ci_high": rec_ci[2],
                            "share_of_drop_recovered": (rec_value - tuned.value()) / drop if drop > 0 else None},
        "items": item_summary, "output_changes": changes,
    }
    entry["summary"] = summarize(entry)
    return entry, rows


def summarize(entry: dict) -> str:
    """The diagnosis in plain words, with its CIs."""
    pct = lambda x: f"{x:.0%}"  # noqa: E731
    rec, base = entry["recovered_score"], entry["base_score"]
    if entry["reference_top1"] is not None:
        t = entry["reference_top1"]
        pref = (f"the reference answer ranks first among {t['candidates']} answers of the task for {pct(t['tuned'])} of items "
                f"tuned vs {pct(t['base'])} base (delta {t['delta']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}])")
    else:
        ll = entry["reference_ll_per_token"]
        pref = (f"the reference answer's log-likelihood per token changed by {ll['delta']:+.2f} nats "
                f"[{ll['ci_low']:+.2f}, {ll['ci_high']:+.2f}]")
    text = (f"{entry['task']}: **{entry['verdict']}**. {pref[0].upper()}{pref[1:]}; with {entry['k']} in-format examples the "
            f"tuned model scores {rec['value']:.3f} (base {base['value']:.3f} [{base['ci_low']:.3f}, {base['ci_high']:.3f}], "
            f"tuned alone {entry['tuned_score']:.3f})")
    if rec.get("share_of_drop_recovered") is not None:
        text += f", {pct(max(0.0, rec['share_of_drop_recovered']))} of the drop recovered"
    text += "."
    items = entry.get("items")
    if items:
        text += (f" Of the {items['flipped']} items that flipped from right to wrong, {items['format_drifted']} look like "
                 f"format drift ({pct(items['format_drifted_share'])} [{pct(items['ci_low'])}, {pct(items['ci_high'])}]) and "
                 f"{items['knowledge_lost']} like lost knowledge.")
    changes = describe_changes(entry["output_changes"])
    return text + (f" Outputs: {changes}." if changes else "")
