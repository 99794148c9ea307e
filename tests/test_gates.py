"""Quality gates judged from a report: each gate says whether it passed and by how much."""

from __future__ import annotations

import pytest

from ftpipe.lifecycle.gates import evaluate_gates
from ftpipe.spec import GatesSpec


def report(*tasks: dict) -> dict:
    return {"tasks": list(tasks)}


TARGET = {"task": "t", "role": "target", "kind": "exact_match", "metric": "exact_match", "base": 0.1, "tuned": 0.5, "delta": 0.4,
          "ci_low": 0.25, "ci_high": 0.55}
HELD = {"task": "h", "role": "held_out", "kind": "contains", "metric": "contains", "base": 0.8, "tuned": 0.7, "delta": -0.1,
        "ci_low": -0.22, "ci_high": 0.02}


def test_no_gates_promote_nothing():
    outcome = evaluate_gates(GatesSpec(), report(TARGET, HELD))
    assert outcome["passed"] is False and outcome["configured"] is False and outcome["results"] == []
    assert outcome["promotion"].startswith("not promoted: no gates")


def test_min_gain_on_point_estimate_and_on_ci():
    [r] = evaluate_gates(GatesSpec(min_gain=0.3), report(TARGET))["results"]
    assert r["passed"] and r["value"] == pytest.approx(0.4) and "margin 0.100" in r["detail"]
    [r] = evaluate_gates(GatesSpec(min_gain=0.3, require_ci=True), report(TARGET))["results"]
    assert not r["passed"] and r["value"] == pytest.approx(0.25) and "short by 0.050" in r["detail"]


def test_forgetting_relative_absolute_and_ci():
    [r] = evaluate_gates(GatesSpec(max_forgetting=0.15), report(HELD))["results"]
    assert r["passed"] and r["value"] == pytest.approx(0.125)  # (0.8 - 0.7) / 0.8
    [r] = evaluate_gates(GatesSpec(max_forgetting=0.05, forgetting_mode="absolute"), report(HELD))["results"]
    assert not r["passed"] and r["value"] == pytest.approx(0.1) and "over by 0.050" in r["detail"]
    [r] = evaluate_gates(GatesSpec(max_forgetting=0.15, require_ci=True), report(HELD))["results"]
    assert not r["passed"] and r["value"] == pytest.approx(0.22 / 0.8)  # the largest drop the CI allows


PPL_HELD = {"task": "p", "role": "held_out", "kind": "perplexity", "metric": "perplexity", "base": 10.0, "tuned": 12.0,
            "delta": 2.0, "ci_low": 1.2, "ci_high": 2.9, "higher_is_better": False}
PPL_TARGET = {"task": "d", "role": "target", "kind": "perplexity", "metric": "perplexity", "base": 20.0, "tuned": 14.0,
              "delta": -6.0, "ci_low": -7.5, "ci_high": -4.0, "higher_is_better": False}


def test_perplexity_forgetting_is_a_rise_judged_in_perplexity_units():
    [r] = evaluate_gates(GatesSpec(max_forgetting=0.1), report(PPL_HELD))["results"]
    assert not r["passed"] and r["value"] == pytest.approx(0.2)  # (12 - 10) / 10
    [r] = evaluate_gates(GatesSpec(max_forgetting=0.25, require_ci=True), report(PPL_HELD))["results"]
    assert not r["passed"] and r["value"] == pytest.approx(0.29)  # the CI's worst rise, 2.9, over the base 10


def test_perplexity_gain_is_a_fall_and_its_ci_bound_is_in_the_same_units():
    [r] = evaluate_gates(GatesSpec(min_gain=5.0), report(PPL_TARGET))["results"]
    assert r["passed"] and r["value"] == pytest.approx(6.0)
    [r] = evaluate_gates(GatesSpec(min_gain=5.0, require_ci=True), report(PPL_TARGET))["results"]
    assert not r["passed"] and r["value"] == pytest.approx(4.0)  # -ci_high: the smallest fall the CI allows


def test_regression_against_promoted():
    gates = GatesSpec(no_regression_vs_promoted=True)
    assert evaluate_gates(gates, report(TARGET))["passed"]  # nothing promoted yet
    outcome = evaluate_gates(gates, report(TARGET), {"a": "run-1", "regressions": ["h"]})
    assert not outcome["passed"] and "worse than promoted run run-1 on: h" in outcome["results"][0]["detail"]


def test_a_run_trained_on_what_the_promoted_run_tested_is_not_comparable():
    gates = GatesSpec(no_regression_vs_promoted=True)
    overlap = {"overlap": 3, "promoted": "run-1", "detail": "this run trained on 3 items run-1 was evaluated on"}
    outcome = evaluate_gates(gates, report(TARGET), {"a": "run-1", "regressions": []}, overlap)
    assert not outcome["passed"] and outcome["results"][0]["detail"].startswith("not comparable: this run trained on 3")
