"""Paired comparisons of a base and a tuned model scored on the same items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Resamples are drawn in batches of this many so memory stays bounded on large item sets
# (scipy otherwise materialises n_resamples x n_items at once).
_BOOTSTRAP_BATCH = 1000


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired right/wrong outcomes.

    Attributes:
        b: Items the base got right and the tuned model got wrong.
        c: Items the base got wrong and the tuned model got right.
        p_value: Two-sided exact p-value (1.0 when no item changed).
    """

    b: int
    c: int
    p_value: float


def paired_bootstrap_ci(
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean per-item difference (tuned - base) with a paired bootstrap confidence interval.

    Items are resampled with replacement, keeping each item's base and tuned scores
    together, via ``scipy.stats.bootstrap`` on the per-item differences. The percentile
    method is used rather than BCa: per-item scores are often 0/1, so the differences take
    only a few values, where BCa's acceleration estimate is unstable and it returns NaN
    with a warning when few items differ; its jackknife also costs O(n^2) on large sets.

    Args:
        base: Per-item scores of the base model.
        tuned: Per-item scores of the tuned model, same items in the same order.
        confidence: Confidence level of the interval.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the resampling; the same inputs and seed give the same interval.

    Returns:
        ``(mean_delta, low, high)``. When all differences are equal (including a single
        item) the interval collapses to ``(delta, delta, delta)``.

    Raises:
        ValueError: When the sequences are empty, differ in length, or hold NaN.
    """
    from scipy import stats

    b = np.asarray(base, dtype=float)
    t = np.asarray(tuned, dtype=float)
    if b.shape != t.shape or b.ndim != 1 or b.size == 0:
        raise ValueError(f"need two equally long, non-empty score lists; got {b.size} and {t.size}")
    diffs = t - b
    if np.isnan(diffs).any():
        raise ValueError("scores contain NaN")
    delta = float(diffs.mean())
    if np.ptp(diffs) == 0:
        # Every resample has the same mean; scipy would warn about degenerate data.
        return delta, delta, delta
    result = stats.bootstrap(
        (diffs,),
        np.mean,
        n_resamples=n_resamples,
        batch=_BOOTSTRAP_BATCH,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return delta, float(ci.low), float(ci.high)


def paired_bootstrap_perplexity_ci(
    base_nll: Sequence[float],
    tuned_nll: Sequence[float],
    tokens: Sequence[int],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Perplexity difference (tuned - base) with a paired bootstrap CI on that same statistic.

    Perplexity is exp(sum of NLL / sum of tokens) over the items: token-weighted, as the headline
    reports it. Items are resampled with replacement, each keeping its base NLL, tuned NLL and token
    count together, and the statistic is recomputed on every resample, so the CI is of exactly the
    number the report shows and can never disagree with it in sign.

    Args:
        base_nll: Per-item total negative log-likelihood under the base model (nats).
        tuned_nll: The same under the tuned model, same items in the same order.
        tokens: Per-item number of predicted tokens (the same for both models).

    Returns:
        ``(delta, low, high)``; the interval collapses to the point for identical items.
    """
    from scipy import stats

    b, t, n = (np.asarray(x, dtype=float) for x in (base_nll, tuned_nll, tokens))
    if not (b.shape == t.shape == n.shape) or b.ndim != 1 or b.size == 0:
        raise ValueError(f"need three equally long, non-empty lists; got {b.size}, {t.size} and {n.size}")
    if n.sum() <= 0:
        raise ValueError("no tokens to score")

    def delta_ppl(b, t, n, axis=-1):
        total = n.sum(axis=axis)
        return np.exp(t.sum(axis=axis) / total) - np.exp(b.sum(axis=axis) / total)

    delta = float(delta_ppl(b, t, n))
    if b.size == 1 or (np.ptp(b) == 0 and np.ptp(t) == 0 and np.ptp(n) == 0):
        return delta, delta, delta
    result = stats.bootstrap(
        (b, t, n),
        delta_ppl,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        batch=_BOOTSTRAP_BATCH,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return delta, float(ci.low), float(ci.high)


def mcnemar_exact(base_correct: Sequence[bool], tuned_correct: Sequence[bool]) -> McNemarResult:
    """Exact two-sided McNemar test of whether tuning changed which items are right.

    Only discordant items count: under the null hypothesis each is equally likely to be
    a right->wrong (b) or a wrong->right (c) change, so b ~ Binomial(b + c, 1/2).

    Args:
        base_correct: Per-item correctness of the base model.
        tuned_correct: Per-item correctness of the tuned model, same items in the same order.

    Returns:
        The discordant counts and the p-value.

    Raises:
        ValueError: When the sequences differ in length or are empty.
    """
    from scipy import stats

    if len(base_correct) != len(tuned_correct) or len(base_correct) == 0:
        raise ValueError(
            "need two equally long, non-empty lists; "
            f"got {len(base_correct)} and {len(tuned_correct)}"
        )
    b = sum(1 for x, y in zip(base_correct, tuned_correct) if x and not y)
    c = sum(1 for x, y in zip(base_correct, tuned_correct) if not x and y)
    if b + c == 0:
        return McNemarResult(b=0, c=0, p_value=1.0)
    p_value = stats.binomtest(min(b, c), n=b + c, p=0.5).pvalue
    return McNemarResult(b=b, c=c, p_value=float(min(p_value, 1.0)))


def relative_change(base: float, tuned: float) -> float | None:
    """(tuned - base) / |base|; None when base is 0."""
    if base == 0:
        return None
    return (tuned - base) / abs(base)


def forgetting(base: float, tuned: float, higher_is_better: bool = True) -> float | None:
    """Relative loss on a held-out task; positive means the tuned model forgot.

    Args:
        base: The base model's score.
        tuned: The tuned model's score.
        higher_is_better: False for metrics such as perplexity, where a rise is the loss.

    Returns:
        ``(base - tuned) / |base|`` for higher-is-better metrics, ``(tuned - base) / |base|``
        otherwise (the absolute value only matters for negative scores, keeping the sign
        meaning "forgot"); None when base is 0.
    """
    if base == 0:
        return None
    loss = base - tuned if higher_is_better else tuned - base
    return loss / abs(base)


def bootstrap_mean_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of one sample with a percentile bootstrap confidence interval (e.g. one model's score on a task).

    Args:
        values: Per-item values.
        confidence: Confidence level of the interval.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(mean, low, high)``; the interval collapses to the mean when all values are equal.

    Raises:
        ValueError: When ``values`` is empty or holds NaN.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("need a non-empty list of values")
    if np.isnan(v).any():
        raise ValueError("values contain NaN")
    mean = float(v.mean())
    if np.ptp(v) == 0:
        return mean, mean, mean
    result = stats.bootstrap((v,), np.mean, n_resamples=n_resamples, batch=_BOOTSTRAP_BATCH,
                             confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def stratified_bootstrap_mean_delta_ci(
    groups: Sequence[tuple[Sequence[float], Sequence[float]]],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean over groups of each group's mean paired delta (tuned - base), with a stratified bootstrap CI.

    Each group is one task scored on its own items: items are resampled within their group,
    keeping each item's two scores together, and the statistic (the unweighted mean of the
    groups' mean deltas) is recomputed on every resample. A sweep's "learning" is this number
    over the target tasks.

    Args:
        groups: Per group, (base scores, tuned scores) of the same items in the same order.

    Returns:
        ``(mean of mean deltas, low, high)``.

    Raises:
        ValueError: No groups, or a group that is empty or unpaired.
    """
    if not groups:
        raise ValueError("need at least one group")
    rng = np.random.default_rng(seed)
    point, draws = 0.0, np.zeros(n_resamples)
    for base, tuned in groups:
        b, t = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
        if b.shape != t.shape or b.size == 0:
            raise ValueError("every group needs equally long, non-empty score lists")
        d = t - b
        point += float(d.mean())
        for start in range(0, n_resamples, _BOOTSTRAP_BATCH):
            k = min(_BOOTSTRAP_BATCH, n_resamples - start)
            draws[start:start + k] += d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    n = len(groups)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws / n, [alpha, 1 - alpha])
    return point / n, float(min(low, point / n)), float(max(high, point / n))
