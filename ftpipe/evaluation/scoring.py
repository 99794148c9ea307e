"""Scoring one model on one task: generations or log-likelihoods in, per-item scores out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ftpipe import console
from ftpipe.data import EvalItem
from ftpipe.evaluation import metrics
from ftpipe.spec import PipelineSpec, TaskSpec

BINARY_KINDS = {"exact_match", "contains", "classification", "numeric", "code", "multiple_choice", "preference"}


@dataclass
class TaskScores:
    """One model's per-item scores on one task.

    The headline is the mean of the per-item scores, with one exception: for perplexity the items
    hold their total NLL (nats) and `tokens` their predicted-token counts, and the headline is
    exp(sum of NLL / sum of tokens), the token-weighted perplexity. The report, the CI, the
    verdict, the gates and `compare` all use exactly this number.
    """

    metric: str
    scores: list[float]
    outputs: list[str]
    aggregate: dict[str, float] = field(default_factory=dict)
    tokens: list[int] | None = None
    items: list[dict] | None = None  # kind lm_eval: the items lm-eval scored, in order (EvalItem fields)
    margins: list[float] | None = None  # preference: per-item margin (nats) behind the headline, compared paired too

    def value(self) -> float:
        """The task's headline number."""
        if self.metric == "perplexity":
            return metrics.perplexity(sum(self.scores), sum(self.tokens or []))
        return sum(self.scores) / len(self.scores)



def extract_code(text: str) -> str:
    """The Python code in a generation: the first fenced block if there is one, else the text."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|\Z)", text, flags=re.S)
    return match.group(1) if match else text


def score_task(model: Any, task: TaskSpec, items: list[EvalItem], prompts: list[str], spec: PipelineSpec) -> TaskScores:
    """Score one model on a task's items; `prompts` are the model inputs (zero- or few-shot)."""
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
        if task.kind == "preference":
            return _score_preference(model, task, items, prompts, spec, reporter)
        if task.kind == "perplexity":
            nll, tokens = [], []
            for done, item in enumerate(items, start=1):
                total, n = model.text_nll([item.text], batch_size=1)
                nll.append(total)
                tokens.append(n)
                reporter.update(done)
            scores = TaskScores("perplexity", nll, ["" for _ in items], tokens=tokens)
            scores.aggregate = {"perplexity": scores.value(), "tokens": sum(tokens)}
            return scores

        outputs = model.generate(prompts, max_new_tokens=task.max_new_tokens or gen.max_new_tokens, batch_size=ev.batch_size,
                                 stop=gen.stop or None, progress=reporter.update)
    finally:
        reporter.close()
    if task.kind == "classification":
        predicted = [metrics.match_label(o, task.labels) for o in outputs]
        gold = [i.reference for i in items]  # spelled as in task.labels (the data layer checked it)
        # One matching rule for items, headline, CI and McNemar: the generation maps to this label.
        scores = [float(p is not None and p == g) for p, g in zip(predicted, gold)]
        agg = metrics.classification_scores(predicted, gold, task.labels)
        return TaskScores("accuracy", scores, outputs, agg)
    if task.kind == "code":
        from ftpipe.evaluation.sandbox import run_many

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


def _score_preference(model: Any, task: TaskSpec, items: list[EvalItem], prompts: list[str], spec: PipelineSpec,
                      reporter) -> TaskScores:
    """Held-out pairs: is the chosen reply more likely than the rejected one under the model, and by how much?

    Each reply is scored as it was trained, followed by the end-of-turn (EOS) token Ludwig appends,
    so a model that learned to stop early gets credit for it. The headline is the share of pairs
    preferred the right way (by the sum of log-probabilities, or by the per-token mean when the task
    sets length_normalized); both readings, and the mean margins, are in the aggregate.
    """
    eos = model.tokenizer.eos_token or ""
    contexts = [p for p in prompts for _ in range(2)]
    replies = [reply + eos for item in items for reply in item.choices[:2]]
    lls = model.loglikelihood(contexts, replies, batch_size=spec.evaluation.batch_size,
                              progress=lambda n: reporter.update(n // 2))
    raw = [metrics.preference_margin(lls[2 * k], lls[2 * k + 1]) for k in range(len(items))]
    norm = [metrics.preference_margin(lls[2 * k], lls[2 * k + 1], normalized=True) for k in range(len(items))]
    margins = norm if task.length_normalized else raw
    scores = [float(m > 0) for m in margins]
    outputs = [f"prefers {'chosen' if m > 0 else 'rejected'} (margin {m:+.3f})" for m in margins]
    aggregate = {"accuracy": _mean([float(m > 0) for m in raw]), "accuracy_norm": _mean([float(m > 0) for m in norm]),
                 "mean_margin": _mean(raw), "mean_margin_norm": _mean(norm)}
    return TaskScores("preference_accuracy", scores, outputs, aggregate, margins=margins)


def score_head(model: Any, head: Any, task: TaskSpec, items: list[EvalItem], prompts: list[str], spec: PipelineSpec) -> TaskScores:
    """A classification head's predictions on a task's items: the class with the highest probability.

    Scored with the same rule, headline and aggregate as a generated classification answer, so the
    head pairs item by item with the base model's zero- and few-shot generations.
    """
    reporter = console.StepReporter(f"  {task.name}", len(items))
    try:
        probs = model.classify(head, prompts, batch_size=spec.evaluation.batch_size, progress=reporter.update)
    finally:
        reporter.close()
    predicted = [head.labels[max(range(len(p)), key=p.__getitem__)] for p in probs]
    canonical = {" ".join(label.lower().split()): label for label in task.labels}
    predicted = [canonical.get(" ".join(p.lower().split())) for p in predicted]  # as task.labels spell them
    gold = [i.reference for i in items]
    scores = [float(p is not None and p == g) for p, g in zip(predicted, gold)]
    outputs = [f"{p} (p={max(row):.3f})" for p, row in zip(predicted, probs)]
    return TaskScores("accuracy", scores, outputs, metrics.classification_scores(predicted, gold, task.labels))


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
