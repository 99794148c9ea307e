"""Mixing several training tasks into one training set."""

from __future__ import annotations

import random


def mixture_counts(sizes: dict[str, int], weights: dict[str, float], strategy: str, temperature: float = 2.0,
                   cap: int | None = None) -> dict[str, int]:
    """Training rows to take from each task.

    proportional: each task's rows times its weight; temperature: the total is kept and shared in
    proportion to (weight * rows) ** (1 / T), which lifts small tasks; capped: at most `cap` rows
    (times weight) per task.
    """
    if strategy == "proportional":
        return {t: max(1, round(n * weights[t])) for t, n in sizes.items()}
    if strategy == "temperature":
        total = sum(sizes.values())
        mass = {t: (weights[t] * n) ** (1.0 / temperature) for t, n in sizes.items()}
        norm = sum(mass.values())
        return {t: max(1, round(total * m / norm)) for t, m in mass.items()}
    if strategy == "capped":
        assert cap is not None
        return {t: max(1, round(min(n, cap) * weights[t])) for t, n in sizes.items()}
    raise ValueError(f"unknown mixing strategy {strategy}")


def take_rows(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` rows: a sample without replacement, or every row repeated and topped up by sampling."""
    if count <= len(rows):
        return rng.sample(rows, count)
    whole, rest = divmod(count, len(rows))
    return rows * whole + rng.sample(rows, rest)




def mixture_report(train_rows: list[dict]) -> dict[str, dict]:
    train = [r for r in train_rows if r["split"] == "train"]
    total_rows, total_tokens = len(train), sum(r["tokens"] for r in train)
    report: dict[str, dict] = {}
    for r in train:
        entry = report.setdefault(r["task"], {"rows": 0, "tokens": 0})
        entry["rows"] += 1
        entry["tokens"] += r["tokens"]
    for entry in report.values():
        entry["row_share"] = round(entry["rows"] / total_rows, 4)
        entry["token_share"] = round(entry["tokens"] / total_tokens, 4)
    return report
