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


def _ngrams(words: list[str], n: int) -> set[int]:
    """A text's word n-grams, each as the hash of its words (an int: a tenth of a tuple's memory)."""
    return {hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)}


def find_leaks(train_texts: list[str], eval_texts: list[str], ngram: int = 8, threshold: float = 0.5) -> list[dict]:
    """Evaluated texts that also sit in training: exact (after normalisation) or near-duplicate.

    A near-duplicate shares at least `threshold` of its word n-grams with one single training text
    (texts shorter than n words are compared exactly only). Only the n-grams of evaluated texts are
    indexed, and each training text is intersected with that index once, so the check is linear in
    the data and its memory is that of the (usually far smaller) evaluated side.

    Returns:
        One dict per leaked evaluated text: index, kind ('exact' or 'near'), overlap, and the training index.
    """
    norm_eval = [normalize_for_leakage(t) for t in eval_texts]
    eval_grams = [_ngrams(t.split(), ngram) for t in norm_eval]
    by_gram: dict[int, list[int]] = {}
    for j, grams in enumerate(eval_grams):
        for g in grams:
            by_gram.setdefault(g, []).append(j)
    wanted = set(by_gram)
    exact_eval: dict[str, list[int]] = {}
    for j, t in enumerate(norm_eval):
        exact_eval.setdefault(t, []).append(j)
    exact: dict[int, int] = {}  # evaluated index -> first training index equal to it
    hits: dict[int, dict[int, int]] = {}  # evaluated index -> {training index: shared n-grams}
    seen: set[str] = set()
    for i, text in enumerate(train_texts):
        norm = normalize_for_leakage(text)
        if norm in seen:
            continue  # a repeated training row (mixing repeats rows) adds nothing
        seen.add(norm)
        for j in exact_eval.get(norm, ()):
            exact.setdefault(j, i)
        for g in _ngrams(norm.split(), ngram) & wanted:
            for j in by_gram[g]:
                counts = hits.setdefault(j, {})
                counts[i] = counts.get(i, 0) + 1
    leaks = []
    for j in range(len(eval_texts)):
        if j in exact:
            leaks.append({"index": j, "kind": "exact", "overlap": 1.0, "train_index": exact[j]})
        elif j in hits and eval_grams[j]:
            best, count = max(hits[j].items(), key=lambda kv: (kv[1], -kv[0]))
            if count / len(eval_grams[j]) >= threshold:
                leaks.append({"index": j, "kind": "near", "overlap": round(count / len(eval_grams[j]), 3),
                              "train_index": best})
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
