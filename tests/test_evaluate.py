"""The evaluator's arithmetic and judgement, without a model: comparisons, verdicts, fit flags, cache."""

from __future__ import annotations

import pytest

from ftpipe.data import EvalItem
from ftpipe.evaluation.cache import cache_key, load_cached, store_cached
from ftpipe.evaluation.compare import compare_task, verdict
from ftpipe.evaluation.diagnostics import fit_diagnosis
from ftpipe.evaluation.scoring import TaskScores, extract_code
from ftpipe.evaluation.report import render_markdown, summary_table
from ftpipe.spec import PipelineSpec, TaskSpec

SPEC = PipelineSpec.model_validate({"name": "e", "base_model": "tiny-llama",
                                    "tasks": [{"name": "a", "source": "a.jsonl", "target": "{{ y }}"}],
                                    "evaluation": {"bootstrap_resamples": 2000}})
TASK = TaskSpec.model_validate({"name": "h", "source": "h.jsonl", "kind": "contains", "answer": "a"})


def items(n: int) -> list[EvalItem]:
    return [EvalItem(task="h", item_id=str(i), prompt="p", user_message=f"q{i}", reference="r") for i in range(n)]


def test_forgetting_arithmetic_and_mcnemar_on_held_out_task():
    # base right on 40 of 50, tuned right on 20 of those 40 and on 2 others: 20 right->wrong, 2 wrong->right
    base = [1.0] * 40 + [0.0] * 10
    tuned = [1.0] * 20 + [0.0] * 20 + [1.0] * 2 + [0.0] * 8
    entry = compare_task(TASK, "held_out", items(50), TaskScores("contains", base, ["x"] * 50),
                         TaskScores("contains", tuned, ["y"] * 50), SPEC)
    assert entry["base"] == pytest.approx(0.8) and entry["tuned"] == pytest.approx(0.44)
    assert entry["delta"] == pytest.approx(-0.36)
    assert entry["forgetting"] == pytest.approx((0.8 - 0.44) / 0.8)  # 45% relative drop
    assert entry["relative_change"] == pytest.approx(-0.45)
    assert entry["mcnemar"]["right_to_wrong"] == 20 and entry["mcnemar"]["wrong_to_right"] == 2
    assert entry["mcnemar"]["p_value"] < 1e-3
    assert entry["ci_high"] < 0 and entry["verdict"] == "forgot"
    assert len(entry["flipped"]) == 5 and entry["flipped"][0]["base"] == "x" and entry["flipped"][0]["tuned"] == "y"


def test_no_change_when_ci_covers_zero():
    base = [1.0, 0.0] * 20
    tuned = [0.0, 1.0] * 20
    entry = compare_task(TASK, "held_out", items(40), TaskScores("contains", base, [""] * 40),
                         TaskScores("contains", tuned, [""] * 40), SPEC)
    assert entry["delta"] == 0 and entry["ci_low"] < 0 < entry["ci_high"]
    assert entry["verdict"] == "no significant change" and entry["mcnemar"]["p_value"] > 0.5


@pytest.mark.parametrize("role, low, high, lower_better, expected", [
    ("target", 0.1, 0.3, False, "learned"),
    ("target", -0.3, -0.1, False, "got worse"),
    ("target", -0.1, 0.2, False, "no significant change"),
    ("held_out", -0.3, -0.1, False, "forgot"),
    ("held_out", 0.1, 0.2, False, "improved"),
    ("held_out", 0.1, 0.2, True, "forgot"),  # perplexity went up
    ("target", -0.5, -0.2, True, "learned"),  # perplexity went down
])
def test_verdicts(role, low, high, lower_better, expected):
    assert verdict(role, low, high, lower_better) == expected


def test_perplexity_forgetting_is_signed_for_lower_is_better():
    import math

    task = TaskSpec.model_validate({"name": "t", "source": "t.txt", "kind": "perplexity"})
    tokens = [10] * 30
    base = TaskScores("perplexity", [20.0] * 30, [""] * 30, tokens=tokens)  # 2.0 nats per token
    tuned = TaskScores("perplexity", [22.0 + (i % 3) for i in range(30)], [""] * 30, tokens=tokens)
    entry = compare_task(task, "held_out", items(30), base, tuned, SPEC)
    assert entry["base"] == pytest.approx(math.exp(2.0)) and entry["tuned"] == pytest.approx(math.exp(2.3))
    assert entry["forgetting"] == pytest.approx((math.exp(2.3) - math.exp(2.0)) / math.exp(2.0))
    assert entry["verdict"] == "forgot" and "mcnemar" not in entry
    assert entry["ci_low"] <= entry["delta"] <= entry["ci_high"] and entry["ci_low"] > 0  # in perplexity units


def test_perplexity_is_token_weighted_in_headline_ci_and_verdict_alike():
    """One long item whose NLL per token fell and many short ones that rose a little: the token-weighted
    perplexity falls, so headline, CI and verdict must all say better (a per-item mean would say worse)."""
    task = TaskSpec.model_validate({"name": "t", "source": "t.txt", "kind": "perplexity"})
    tokens = [400] + [5] * 40
    base = TaskScores("perplexity", [400 * 3.0] + [5 * 2.0] * 40, [""] * 41, tokens=tokens)
    tuned = TaskScores("perplexity", [400 * 2.5] + [5 * 2.1] * 40, [""] * 41, tokens=tokens)
    entry = compare_task(task, "target", items(41), base, tuned, SPEC)
    assert entry["tuned"] < entry["base"] and entry["delta"] < 0
    assert entry["ci_low"] <= entry["delta"] <= entry["ci_high"]
    assert entry["verdict"] != "got worse"
    per_item_mean = sum(t / n - b / n for b, t, n in zip(base.scores, tuned.scores, tokens)) / 41
    assert per_item_mean > 0  # the old per-item statistic pointed the other way


def test_classification_headline_is_the_mean_of_item_matches():
    from ftpipe.evaluation import metrics

    labels = ["billing", "refund"]
    outputs = ["Billing.", "refund please", "billing", "no idea"]
    gold = ["billing", "refund", "refund", "billing"]
    predicted = [metrics.match_label(o, labels) for o in outputs]
    scores = [float(p is not None and p == g) for p, g in zip(predicted, gold)]
    agg = metrics.classification_scores(predicted, gold, labels)
    assert scores == [1.0, 1.0, 0.0, 0.0] and agg["accuracy"] == pytest.approx(sum(scores) / 4)


def test_fit_diagnosis_flags_overfitting_and_underfitting():
    curves = {"training": [2.0, 1.0, 0.5, 0.2], "validation": [2.1, 1.2, 1.4, 1.9]}
    targets = [{"role": "target", "verdict": "no significant change"}]
    flags = fit_diagnosis(curves, targets)
    assert any(f.startswith("overfitting") for f in flags) and any(f.startswith("underfitting") for f in flags)
    healthy = fit_diagnosis({"training": [2.0, 1.0, 0.8], "validation": [2.1, 1.1, 0.9]},
                            [{"role": "target", "verdict": "learned"}])
    assert healthy == []


def test_extract_code_takes_fenced_block_or_text():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```\nx = 1\n") == "x = 1\n"  # unterminated block (generation cut off)


def test_cache_key_changes_with_prompts_and_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("FTPIPE_HOME", str(tmp_path))
    key = cache_key("model", TASK, ["p1", "p2"], items(2), SPEC)
    assert key == cache_key("model", TASK, ["p1", "p2"], items(2), SPEC)
    assert key != cache_key("model", TASK, ["p1", "p3"], items(2), SPEC)
    assert key != cache_key("other", TASK, ["p1", "p2"], items(2), SPEC)
    longer = SPEC.model_copy(update={"generation": SPEC.generation.model_copy(update={"max_new_tokens": 64})})
    assert key != cache_key("model", TASK, ["p1", "p2"], items(2), longer)
    assert key != cache_key("model", TASK, ["p1", "p2"], items(2), SPEC, device="cuda")
    batched = SPEC.model_copy(update={"evaluation": SPEC.evaluation.model_copy(update={"batch_size": 4})})
    assert key != cache_key("model", TASK, ["p1", "p2"], items(2), batched)
    from ftpipe.evaluation.cache import scorer_fingerprint

    assert set(scorer_fingerprint()) >= {"code", "scorer_version", "torch", "transformers", "peft"}
    scores = TaskScores("contains", [1.0, 0.0], ["a", "b"])
    assert load_cached(key) is None
    store_cached(key, scores)
    assert load_cached(key) == scores


def test_report_table_and_markdown():
    entry = compare_task(TASK, "held_out", items(10), TaskScores("contains", [1.0] * 10, ["a"] * 10),
                         TaskScores("contains", [1.0] * 9 + [0.0], ["a"] * 10), SPEC)
    report = {"pipeline": "e", "run_id": "r1", "base_model": "tiny-llama", "adapter": "lora", "method": "instruction",
              "generation": {"max_new_tokens": 8}, "confidence": 0.95, "few_shot_k": 0, "tasks": [entry],
              "summary": {"learned": 0, "target_tasks": 0, "forgot": 0, "held_out_tasks": 1, "max_forgetting": 0.1},
              "loss_curves": {}, "fit_flags": [], "leakage": {}, "mixture": {}}
    table = summary_table(report)
    assert "| h | held_out | contains | 10 | 1.000 | 0.900 |" in table and "+10.0%" in table
    md = render_markdown(report)
    assert "## Items that flipped from right to wrong" in md and "no sign of over- or underfitting" in md


def test_loss_curves_read_both_shapes_of_ludwig_statistics():
    from ftpipe.evaluation.diagnostics import loss_curves

    nested = {"training": {"combined": {"loss": [2.0, 1.0]}}, "validation": {"combined": {"loss": [2.1, 1.2]}}}
    flat = {"training": {"combined": [2.0, 1.0]}, "validation": {"combined": [2.1, 1.2]}, "test": {}}
    assert loss_curves(nested) == loss_curves(flat) == {"training": [2.0, 1.0], "validation": [2.1, 1.2]}
