"""Quality gates: may this tuned model replace the one in service?

Pure functions over the evaluation report: each gate yields a result with how far it passed or
failed, so a scheduled job's log (and the report) says exactly why a model was or was not promoted.
With `require_ci`, a gate is judged on the confidence bound that is least favourable to the model,
so a model passes only when noise cannot explain the pass.
"""

from __future__ import annotations

from typing import Any

from ftpipe.spec import GatesSpec


def _gain_result(task: dict, gates: GatesSpec) -> dict[str, Any]:
    lower_better = task["kind"] == "perplexity"
    if lower_better:  # for perplexity the CI is of NLL/token; a gain is a fall
        gain = -task["delta"]
        judged = -task["ci_high"] if gates.require_ci else gain
    else:
        gain = task["delta"]
        judged = task["ci_low"] if gates.require_ci else gain
    passed = judged >= gates.min_gain
    basis = "lower CI bound of the gain" if gates.require_ci else "gain"
    return {"gate": f"min_gain[{task['task']}]", "passed": passed, "value": judged, "threshold": gates.min_gain,
            "detail": f"{basis} {judged:+.3f} vs required {gates.min_gain:+.3f} ({'margin' if passed else 'short by'} "
                      f"{abs(judged - gates.min_gain):.3f})"}


def _forgetting_result(task: dict, gates: GatesSpec) -> dict[str, Any]:
    base = task["base"]
    lower_better = task["kind"] == "perplexity"
    drop = (task["tuned"] - base) if lower_better else (base - task["tuned"])
    if gates.require_ci and not lower_better:
        drop = -task["ci_low"]  # the largest drop the CI allows
    if gates.forgetting_mode == "relative":
        value = drop / abs(base) if base else 0.0
    else:
        value = drop
    passed = value <= gates.max_forgetting
    unit = "relative" if gates.forgetting_mode == "relative" else "absolute"
    basis = "CI-bound " if gates.require_ci and not lower_better else ""
    return {"gate": f"max_forgetting[{task['task']}]", "passed": passed, "value": value, "threshold": gates.max_forgetting,
            "detail": f"{basis}{unit} forgetting {value:+.3f} vs allowed {gates.max_forgetting:.3f} "
                      f"({'margin' if passed else 'over by'} {abs(gates.max_forgetting - value):.3f})"}


def evaluate_gates(gates: GatesSpec, report: dict, regression: dict | None = None) -> dict[str, Any]:
    """Judge a report against the spec's gates.

    Args:
        gates: The spec's gates section.
        report: The run's report (tasks with base, tuned, delta, CI, forgetting).
        regression: `compare_runs(promoted, this run)` when `no_regression_vs_promoted` is on and a
            promoted model exists; None otherwise.

    Returns:
        {"passed": bool, "results": [one dict per gate]}; no gates configured passes.
    """
    results = []
    for task in report["tasks"]:
        if task["role"] == "target" and gates.min_gain is not None:
            results.append(_gain_result(task, gates))
        if task["role"] == "held_out" and gates.max_forgetting is not None:
            results.append(_forgetting_result(task, gates))
    if gates.no_regression_vs_promoted:
        if regression is None:
            results.append({"gate": "no_regression_vs_promoted", "passed": True, "value": None, "threshold": None,
                            "detail": "no promoted model yet: nothing to regress against"})
        else:
            worse = regression["regressions"]
            results.append({"gate": "no_regression_vs_promoted", "passed": not worse, "value": len(worse), "threshold": 0,
                            "detail": (f"significantly worse than promoted run {regression['a']} on: {', '.join(worse)}"
                                       if worse else f"no significant regression against promoted run {regression['a']}")})
    return {"passed": all(r["passed"] for r in results), "results": results}
