"""Quality gates: may this tuned model replace the one in service?

Pure functions over the evaluation report: each gate yields a result with how far it passed or
failed, so a scheduled job's log (and the report) says exactly why a model was or was not promoted.

Every number a gate judges has one meaning: the task's headline metric (perplexity included, as
exp of the token-weighted mean NLL), its delta tuned - base, and the paired CI of that same delta.
A gain is the delta in the direction that is better; forgetting is its opposite, relative to the
base or absolute. With `require_ci` a gate is judged on the CI bound least favourable to the
model, so noise can neither pass nor block it. A spec without gates never promotes by itself.
"""

from __future__ import annotations

from typing import Any

from ftpipe.spec import GatesSpec


def gates_configured(gates: GatesSpec) -> bool:
    """Whether the spec asks for any evidence at all (a spec without gates is never promoted automatically)."""
    return gates.min_gain is not None or gates.max_forgetting is not None or gates.no_regression_vs_promoted


def _gain(task: dict, require_ci: bool) -> float:
    """The improvement in the better direction: its point value, or its CI bound least favourable to the model."""
    higher = task.get("higher_is_better", task["kind"] != "perplexity")
    if require_ci:
        return task["ci_low"] if higher else -task["ci_high"]
    return task["delta"] if higher else -task["delta"]


def _gain_result(task: dict, gates: GatesSpec) -> dict[str, Any]:
    judged = _gain(task, gates.require_ci)
    passed = judged >= gates.min_gain
    basis = "lower CI bound of the gain" if gates.require_ci else "gain"
    return {"gate": f"min_gain[{task['task']}]", "passed": passed, "value": judged, "threshold": gates.min_gain,
            "detail": f"{basis} in {task['metric']} {judged:+.3f} vs required {gates.min_gain:+.3f} "
                      f"({'margin' if passed else 'short by'} {abs(judged - gates.min_gain):.3f})"}


def _forgetting_result(task: dict, gates: GatesSpec) -> dict[str, Any]:
    base = task["base"]
    drop = -_gain(task, gates.require_ci)  # with require_ci: the largest drop the CI allows
    relative = gates.forgetting_mode == "relative"
    value = (drop / abs(base) if base else 0.0) if relative else drop
    passed = value <= gates.max_forgetting
    unit = "relative" if relative else f"absolute ({task['metric']})"
    basis = "CI-bound " if gates.require_ci else ""
    return {"gate": f"max_forgetting[{task['task']}]", "passed": passed, "value": value, "threshold": gates.max_forgetting,
            "detail": f"{basis}{unit} forgetting {value:+.3f} vs allowed {gates.max_forgetting:.3f} "
                      f"({'margin' if passed else 'over by'} {abs(gates.max_forgetting - value):.3f})"}


def _regression_result(regression: dict | None, comparability: dict | None) -> dict[str, Any]:
    if comparability and comparability.get("overlap"):
        return {"gate": "no_regression_vs_promoted", "passed": False, "value": None, "threshold": 0,
                "detail": f"not comparable: {comparability['detail']}"}
    if regression is None:
        return {"gate": "no_regression_vs_promoted", "passed": True, "value": None, "threshold": None,
                "detail": "no promoted model yet: nothing to regress against"}
    worse = regression["regressions"]
    return {"gate": "no_regression_vs_promoted", "passed": not worse, "value": len(worse), "threshold": 0,
            "detail": (f"significantly worse than promoted run {regression['a']} on: {', '.join(worse)}"
                       if worse else f"no significant regression against promoted run {regression['a']}")}


def evaluate_gates(gates: GatesSpec, report: dict, regression: dict | None = None,
                   comparability: dict | None = None) -> dict[str, Any]:
    """Judge a report against the spec's gates.

    Args:
        gates: The spec's gates section.
        report: The run's report (tasks with base, tuned, delta, CI, forgetting).
        regression: `compare_runs(promoted, this run)` when `no_regression_vs_promoted` is on and a
            promoted model exists; None otherwise.
        comparability: Whether this run trained on items the promoted run was evaluated on
            ({"overlap": n, "detail": ...}); such a run cannot pass the no-regression gate.

    Returns:
        {"passed": bool, "configured": bool, "results": [one dict per gate]}. A spec without gates
        passes nothing: `passed` is False and `configured` False, so nothing is promoted by itself.
    """
    if not gates_configured(gates):
        return {"passed": False, "configured": False, "results": [],
                "promotion": "not promoted: no gates (the spec has no gates: section; `ftpipe promote RUN` by hand)"}
    results = []
    for task in report["tasks"]:
        if task["role"] == "target" and gates.min_gain is not None:
            results.append(_gain_result(task, gates))
        if task["role"] == "held_out" and gates.max_forgetting is not None:
            results.append(_forgetting_result(task, gates))
    if gates.no_regression_vs_promoted:
        results.append(_regression_result(regression, comparability))
    passed = all(r["passed"] for r in results)
    failed = [r["gate"] for r in results if not r["passed"]]
    return {"passed": passed, "configured": True, "results": results,
            "promotion": "promoted: every gate passed" if passed else f"not promoted: failed {', '.join(failed)}"}
