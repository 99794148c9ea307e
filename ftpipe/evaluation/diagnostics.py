"""Fit diagnostics: loss curves from Ludwig's training statistics, and plain-words flags."""

from __future__ import annotations


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


def step_losses(run_dir) -> list[dict]:
    """The training loss of every optimizer step, from the train stage's log (training/loss.jsonl).

    A resumed run logged some steps twice (the attempt that was killed, then the resumed one): the
    last value logged for a step wins, so the curve is the one the final model followed.
    """
    from pathlib import Path

    from ftpipe.files import read_jsonl

    by_step: dict[int, dict] = {}
    for row in read_jsonl(Path(run_dir) / "training" / "loss.jsonl"):
        if row.get("loss") is not None and row.get("step") is not None:
            by_step[int(row["step"])] = {"step": int(row["step"]), "loss": float(row["loss"]),
                                         "learning_rate": row.get("learning_rate")}
    return [by_step[k] for k in sorted(by_step)]
