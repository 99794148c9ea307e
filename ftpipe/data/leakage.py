"""The leakage check: nothing evaluated may also have been trained on (exact or near duplicate)."""

from __future__ import annotations

import re
from typing import Any

from ftpipe.data.items import TaskData
from ftpipe.errors import DataError
from ftpipe.spec import PipelineSpec


def normalize_for_leakage(text: str) -> str:
    """Case, punctuation and whitespace do not make two texts different."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def find_leaks(train_texts: list[str], eval_texts: list[str], ngram: int = 8, threshold: float = 0.5) -> list[dict]:
    """Evaluated texts that also sit in training: exact (after normalisation) or near-duplicate.

    A near-duplicate shares at least `threshold` of its word n-grams with one single training text
    (texts shorter than n words are compared exactly only).

    Returns:
        One dict per leaked evaluated text: index, kind ('exact' or 'near'), overlap, and the training index.
    """
    norm_train = [normalize_for_leakage(t) for t in train_texts]
    exact = {t: i for i, t in enumerate(norm_train)}
    index: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(norm_train):
        for g in _ngrams(t.split(), ngram):
            index.setdefault(g, []).append(i)
    leaks = []
    for j, text in enumerate(eval_texts):
        norm = normalize_for_leakage(text)
        if norm in exact:
            leaks.append({"index": j, "kind": "exact", "overlap": 1.0, "train_index": exact[norm]})
            continue
        grams = _ngrams(norm.split(), ngram)
        if not grams:
            continue
        hits: dict[int, int] = {}
        for g in grams:
            for i in set(index.get(g, ())):
                hits[i] = hits.get(i, 0) + 1
        if hits:
            best, count = max(hits.items(), key=lambda kv: (kv[1], -kv[0]))
            if count / len(grams) >= threshold:
                leaks.append({"index": j, "kind": "near", "overlap": round(count / len(grams), 3), "train_index": best})
    return leaks


def check_leakage(spec: PipelineSpec, tasks: dict[str, TaskData], train_rows: list[dict]) -> dict[str, Any]:
    cfg = spec.data.leakage
    train_texts = [r["content"] for r in train_rows]
    report: dict[str, Any] = {"action": cfg.action, "ngram": cfg.ngram, "threshold": cfg.near_duplicate_threshold,
                              "tasks": {}, "examples": []}
    for name, data in tasks.items():
        if not data.eval_items:
            continue
        texts = [i.content for i in data.eval_items]
        leaks = find_leaks(train_texts, texts, cfg.ngram, cfg.near_duplicate_threshold)
        report["tasks"][name] = {"checked": len(texts), "exact": sum(l["kind"] == "exact" for l in leaks),
                                 "near": sum(l["kind"] == "near" for l in leaks), "dropped": 0}
        for leak in leaks[:3]:
            report["examples"].append({"task": name, "kind": leak["kind"], "overlap": leak["overlap"],
                                       "evaluated": texts[leak["index"]][:160],
                                       "trained": train_texts[leak["train_index"]][:160]})
        if leaks and cfg.action == "drop":
            bad = {l["index"] for l in leaks}
            data.eval_items = [item for k, item in enumerate(data.eval_items) if k not in bad]
            report["tasks"][name]["dropped"] = len(bad)
    total = sum(t["exact"] + t["near"] for t in report["tasks"].values())
    report["leaked"] = total
    if total and cfg.action == "fail":
        parts = [f"{n}: {t['exact']} exact, {t['near']} near" for n, t in report["tasks"].items() if t["exact"] + t["near"]]
        example = report["examples"][0]
        raise DataError(f"leakage: evaluated items also in training ({'; '.join(parts)}); e.g. [{example['task']}] "
                        f"{example['evaluated'][:80]!r}", hint="remove them from the sources, or set data.leakage.action: drop")
    return report
