"""Paired statistics: bootstrap interval, exact McNemar, relative change and forgetting."""

import math

import numpy as np
import pytest

from ftpipe.evaluation.stats import (
    McNemarResult,
    forgetting,
    mcnemar_exact,
    paired_bootstrap_ci,
    relative_change,
)


def _outcomes(both_right: int, b: int, c: int, both_wrong: int):
    """Paired correctness lists with the given cell counts of the 2x2 table."""
    base = [True] * both_right + [True] * b + [False] * c + [False] * both_wrong
    tuned = [True] * both_right + [False] * b + [True] * c + [False] * both_wrong
    return base, tuned


def _exact_mcnemar_by_hand(b: int, c: int) -> float:
    """Two-sided exact p-value from the binomial sum, independent of scipy."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


# ---------------------------------------------------------------- paired bootstrap


def test_bootstrap_collapses_when_all_differences_equal():
    assert paired_bootstrap_ci([0.0, 1.0, 0.5], [1.0, 2.0, 1.5]) == (1.0, 1.0, 1.0)
    assert paired_bootstrap_ci([1, 1, 0], [1, 1, 0]) == (0.0, 0.0, 0.0)
    assert paired_bootstrap_ci([0.2], [0.7]) == pytest.approx((0.5, 0.5, 0.5))


def test_bootstrap_large_sample_matches_normal_theory():
    rng = np.random.default_rng(123)
    n, true_mean = 2000, 0.3
    base = rng.normal(0.0, 1.0, n)
    tuned = base + rng.normal(true_mean, 1.0, n)  # paired: per-item difference ~ N(0.3, 1)
    delta, low, high = paired_bootstrap_ci(base, tuned, n_resamples=4000)
    diffs = tuned - base
    assert delta == pytest.approx(diffs.mean())
    assert low < true_mean < high
    assert low < delta < high
    expected_width = 2 * 1.96 * diffs.std(ddof=1) / math.sqrt(n)
    assert (high - low) == pytest.approx(expected_width, rel=0.15)


def test_bootstrap_is_paired():
    # Strongly correlated scores: resampling items together gives a far narrower interval
    # than the spread of either model's scores would suggest if they were unpaired.
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 1, 500)
    tuned = base + 0.01 + rng.normal(0, 0.01, 500)
    _, low, high = paired_bootstrap_ci(base, tuned, n_resamples=2000)
    unpaired_width = 2 * 1.96 * math.sqrt(base.var(ddof=1) / 500 + tuned.var(ddof=1) / 500)
    assert high - low < unpaired_width / 10
    assert low > 0


def test_bootstrap_binary_scores_interval_is_sane():
    base, tuned = _outcomes(both_right=60, b=5, c=20, both_wrong=15)
    delta, low, high = paired_bootstrap_ci(base, tuned, n_resamples=2000)
    assert delta == pytest.approx(0.15)
    assert 0.0 < low < delta < high < 0.3


def test_bootstrap_deterministic_under_seed():
    rng = np.random.default_rng(0)
    base, tuned = rng.uniform(size=100), rng.uniform(size=100)
    first = paired_bootstrap_ci(base, tuned, n_resamples=1000, seed=5)
    assert paired_bootstrap_ci(base, tuned, n_resamples=1000, seed=5) == first
    assert paired_bootstrap_ci(base, tuned, n_resamples=1000, seed=6) != first


def test_bootstrap_higher_confidence_is_wider():
    rng = np.random.default_rng(1)
    base, tuned = rng.uniform(size=200), rng.uniform(size=200)
    _, lo90, hi90 = paired_bootstrap_ci(base, tuned, confidence=0.90, n_resamples=2000)
    _, lo99, hi99 = paired_bootstrap_ci(base, tuned, confidence=0.99, n_resamples=2000)
    assert lo99 < lo90 and hi90 < hi99


@pytest.mark.parametrize(
    "base, tuned", [([], []), ([1.0, 2.0], [1.0]), ([1.0, float("nan")], [1.0, 2.0])]
)
def test_bootstrap_rejects_bad_input(base, tuned):
    with pytest.raises(ValueError):
        paired_bootstrap_ci(base, tuned)


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    "b, c, expected",
    [
        (0, 5, 2 / 2**5),  # 0.0625
        (5, 0, 2 / 2**5),
        (1, 9, 22 / 2**10),  # 2 * (C(10,0) + C(10,1)) / 2^10
        (3, 3, 1.0),
        (1, 0, 1.0),
    ],
)
def test_mcnemar_hand_computed(b, c, expected):
    base, tuned = _outcomes(both_right=7, b=b, c=c, both_wrong=4)
    result = mcnemar_exact(base, tuned)
    assert (result.b, result.c) == (b, c)
    assert result.p_value == pytest.approx(expected)


@pytest.mark.parametrize("b, c", [(2, 11), (10, 25), (40, 38), (0, 1)])
def test_mcnemar_matches_binomial_sum(b, c):
    base, tuned = _outcomes(both_right=3, b=b, c=c, both_wrong=2)
    assert mcnemar_exact(base, tuned).p_value == pytest.approx(_exact_mcnemar_by_hand(b, c))


def test_mcnemar_no_discordant_items():
    assert mcnemar_exact([True, False], [True, False]) == McNemarResult(b=0, c=0, p_value=1.0)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])
    with pytest.raises(ValueError):
        mcnemar_exact([], [])


def test_mcnemar_result_is_frozen():
    result = mcnemar_exact([True, False], [False, True])
    with pytest.raises(AttributeError):
        result.b = 5


@pytest.mark.parametrize("b, c", [(2, 11), (10, 25), (40, 38), (0, 4)])
def test_mcnemar_matches_statsmodels(b, c):
    contingency = pytest.importorskip(
        "statsmodels.stats.contingency_tables", reason="statsmodels is not installed"
    )
    base, tuned = _outcomes(both_right=30, b=b, c=c, both_wrong=9)
    table = [[30, b], [c, 9]]
    reference = contingency.mcnemar(table, exact=True).pvalue
    assert mcnemar_exact(base, tuned).p_value == pytest.approx(reference)


# ---------------------------------------------------------------- relative change, forgetting


def test_relative_change():
    assert relative_change(0.5, 0.6) == pytest.approx(0.2)
    assert relative_change(0.5, 0.4) == pytest.approx(-0.2)
    assert relative_change(-2.0, -1.0) == pytest.approx(0.5)  # an improvement stays positive
    assert relative_change(0.0, 0.3) is None


def test_forgetting_higher_is_better():
    assert forgetting(0.8, 0.6) == pytest.approx(0.25)
    assert forgetting(0.8, 0.9) == pytest.approx(-0.125)  # negative: it got better
    assert forgetting(0.0, 0.1) is None


def test_forgetting_lower_is_better():
    assert forgetting(10.0, 12.0, higher_is_better=False) == pytest.approx(0.2)
    assert forgetting(10.0, 9.0, higher_is_better=False) == pytest.approx(-0.1)
    assert forgetting(0.0, 1.0, higher_is_better=False) is None


def test_perplexity_ci_is_of_the_headline_statistic_and_agrees_with_it_in_sign():
    from ftpipe.evaluation.stats import paired_bootstrap_perplexity_ci

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = rng.integers(5, 300, size=40)
        base = rng.uniform(1.5, 3.0, size=40) * n
        tuned = base * rng.uniform(0.8, 1.25, size=40)
        delta, low, high = paired_bootstrap_perplexity_ci(base, tuned, n, n_resamples=500, seed=1)
        assert delta == pytest.approx(math.exp(tuned.sum() / n.sum()) - math.exp(base.sum() / n.sum()))
        assert low <= delta <= high
        if low > 0 or high < 0:  # a significant verdict always points where the headline points
            assert np.sign(low) == np.sign(high) == np.sign(delta)


def test_perplexity_ci_collapses_for_one_item():
    from ftpipe.evaluation.stats import paired_bootstrap_perplexity_ci

    delta, low, high = paired_bootstrap_perplexity_ci([20.0], [10.0], [10])
    assert low == high == delta == pytest.approx(math.exp(1.0) - math.exp(2.0))
