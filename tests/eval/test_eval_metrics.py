"""Correlation metrics against scipy.stats, model level and bootstrap by hand (App. B)."""

import math

import numpy as np
import pytest
from scipy import stats

from qsave.errors import ConfigError
from qsave.eval import metrics


def _data(seed: int, n: int = 40, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Correlated predictions and targets; with ties, both are rounded to coarse levels."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(1, 5, n)
    pred = target + rng.normal(0, 0.8, n)
    if ties:
        target, pred = np.round(target), np.round(pred * 2) / 2
    return pred, target


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed, ties):
    pred, target = _data(seed, ties=ties)
    assert metrics.srcc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert metrics.plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target).statistic)
    assert metrics.krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target).statistic)
    assert metrics.rmse(pred, target) == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))


def test_krcc_hand_worked_with_ties():
    # pairs: (1,2) concordant, (1,3) concordant, (2,3) tied in x → tau-b = 2 / sqrt(2 * 3)
    assert metrics.krcc([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_constant_input_is_nan_like_scipy():
    assert math.isnan(metrics.plcc([1, 1, 1], [1, 2, 3]))
    assert math.isnan(metrics.srcc([2, 2, 2], [1, 2, 3]))


@pytest.mark.parametrize(
    "pred, target",
    [([1.0, math.nan, 3.0], [1, 2, 3]), ([1, 2], [1, 2, 3]), ([1.0], [1.0])],
)
def test_invalid_inputs_raise(pred, target):
    with pytest.raises(ConfigError):
        metrics.srcc(pred, target)


def test_logistic4_fit_recovers_a_logistic_relation():
    x = np.linspace(0, 1, 30)
    y = metrics.logistic4(x, 4.8, 1.2, 0.5, 0.08)
    assert metrics.plcc(x, y) < 0.97  # the raw relation is clearly non-linear
    assert metrics.plcc(x, y, fit="logistic4") == pytest.approx(1.0, abs=1e-6)


def test_logistic5_fit_is_at_least_as_linear_as_raw():
    pred, target = _data(3, n=30)
    assert metrics.plcc(pred, target, fit="logistic5") >= metrics.plcc(pred, target) - 1e-9


def test_unknown_fit_raises_and_lists_valid():
    with pytest.raises(ConfigError, match="logistic4"):
        metrics.plcc([1, 2, 3], [1, 2, 3], fit="cubic")


def test_model_level_unequal_group_sizes_by_hand():
    # gen a: 3 videos, b: 1, c: 2 → each generator weighs once
    pred = [1.0, 2.0, 3.0, 4.0, 1.0, 1.0]
    target = [2.0, 2.0, 2.0, 5.0, 1.0, 3.0]
    groups = ["a", "a", "a", "b", "c", "c"]
    keys, means, counts = metrics.group_means(pred, groups)
    assert keys == ["a", "b", "c"] and counts.tolist() == [3, 1, 2]
    pred_means, target_means = [2.0, 4.0, 1.0], [2.0, 5.0, 2.0]
    assert means.tolist() == pred_means
    expected = stats.pearsonr(pred_means, target_means).statistic
    assert metrics.model_level(metrics.plcc, pred, target, groups) == pytest.approx(expected)
    # a pooled (video-weighted) correlation differs: the protocol matters
    assert metrics.plcc(pred, target) != pytest.approx(expected)


def test_bootstrap_interval_covers_and_is_reproducible():
    pred, target = _data(4, n=80)
    statistic = lambda i: metrics.srcc(pred[i], target[i])  # noqa: E731
    first = metrics.bootstrap_ci(statistic, pred.size, 300, seed=7)
    again = metrics.bootstrap_ci(statistic, pred.size, 300, seed=7)
    assert first == again
    assert first.low < metrics.srcc(pred, target) < first.high
    assert first.resamples == 300


def test_stratified_bootstrap_keeps_every_group():
    groups = ["a"] * 5 + ["b"] * 2 + ["c"]
    seen = []
    metrics.bootstrap_ci(
        lambda i: seen.append(sorted({groups[k] for k in i})) or 0.0, 8, 50, strata=groups
    )
    assert all(s == ["a", "b", "c"] for s in seen)


def test_bootstrap_of_constant_statistic_reports_zero_usable_resamples():
    ci = metrics.bootstrap_ci(lambda i: math.nan, 5, 20)
    assert ci.resamples == 0 and math.isnan(ci.low)


def test_integer_scale_accuracy_by_hand():
    rounded = metrics.to_integer_scale([0.2, 1.5, 2.49, 3.5, 4.51, 7.0])
    assert rounded == [1, 2, 2, 4, 5, 5]
    assert metrics.accuracy(rounded, [1, 2, 3, 4, 4, 5]) == pytest.approx(4 / 6)
    assert metrics.relaxed_accuracy(rounded, [3, 2, 3, 4, 4, 5]) == pytest.approx(5 / 6)
    with pytest.raises(ConfigError):
        metrics.to_integer_scale([math.nan])
