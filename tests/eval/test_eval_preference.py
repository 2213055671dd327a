"""Preference protocols against hand-worked pair lists and a brute-force sweep (App. B, D.2)."""

import numpy as np
import pytest

from qsave.errors import ConfigError
from qsave.eval import preference


def test_with_ties_hand_worked():
    labels = [1, -1, 0, 0, 1, -1]
    deltas = [0.30, -0.04, 0.05, -0.20, 0.00, 0.10]
    # predictions at ε = 0.05: 1, 0, 0, -1, 0, 1 → correct: yes, no, yes, no, no, no
    assert preference.predict_labels(deltas, 0.05).tolist() == [1, 0, 0, -1, 0, 1]
    assert preference.accuracy_with_ties(labels, deltas, 0.05) == pytest.approx(2 / 6)


def test_without_ties_removes_human_ties_and_uses_sign():
    labels = [1, -1, 0, 0, 1, -1]
    deltas = [0.30, -0.04, 0.05, -0.20, 0.00, 0.10]
    # kept: pairs 0, 1, 4, 5 → sign 1 ✓, -1 ✓, 0 ✗ (Δ = 0 cannot pick a side), 1 ✗
    assert preference.accuracy_without_ties(labels, deltas) == pytest.approx(2 / 4)


def test_equal_magnitudes_switch_together():
    # VideoAlign's one-at-a-time update scores this 100 %: after the first pair of the |Δ| = 0.1
    # group becomes a tie and before the second does. No single ε achieves that.
    labels, deltas = [0, 1], [0.1, 0.1]
    candidates, accuracies = preference.epsilon_sweep(labels, deltas)
    assert candidates.tolist() == [0.0, 0.1]
    assert accuracies.tolist() == [0.5, 0.5]
    assert preference.calibrate_epsilon(labels, deltas) == (0.0, 0.5)


def test_sign_of_delta_does_not_split_a_group():
    labels, deltas = [0, 0, -1], [0.2, -0.2, -0.2]
    eps, acc = preference.epsilon_sweep(labels, deltas)
    assert eps.tolist() == [0.0, 0.2]
    assert acc.tolist() == pytest.approx([1 / 3, 2 / 3])


def _brute_force(labels, deltas):
    """Accuracy at each candidate ε computed directly from the definition."""
    candidates = sorted({0.0, *np.abs(deltas).tolist()})
    return candidates, [preference.accuracy_with_ties(labels, deltas, e) for e in candidates]


@pytest.mark.parametrize("seed", range(5))
def test_sweep_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.choice([-1, 0, 1], n).tolist()
    deltas = np.round(rng.normal(0, 0.1, n), 2)  # rounding makes many equal |Δ| groups
    deltas[:5] = 0.0
    eps, acc = preference.epsilon_sweep(labels, deltas)
    ref_eps, ref_acc = _brute_force(labels, deltas)
    assert eps.tolist() == pytest.approx(ref_eps)
    assert acc.tolist() == pytest.approx(ref_acc)


def test_calibrate_picks_smallest_best_epsilon():
    labels, deltas = [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.3]
    # ε: 0 → 2/4, 0.1 → 3/4, 0.2 → 4/4, 0.3 → 2/4
    assert preference.calibrate_epsilon(labels, deltas) == (0.2, 1.0)


def test_evaluate_pairs_reports_epsilon_and_protocol():
    labels, deltas = [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.3]
    fixed = preference.evaluate_pairs(labels, deltas)
    assert (fixed.epsilon, fixed.protocol) == (0.05, "fixed")
    assert fixed.accuracy_with_ties == pytest.approx(0.5)
    assert fixed.n_pairs == 4 and fixed.n_human_ties == 2 and fixed.n_predicted_ties == 0
    oracle = preference.evaluate_pairs(labels, deltas, protocol="oracle")
    assert (oracle.epsilon, oracle.protocol, oracle.accuracy_with_ties) == (0.2, "oracle", 1.0)
    assert oracle.accuracy_without_ties == fixed.accuracy_without_ties == 1.0


def test_no_pairs_and_only_ties_are_nan():
    assert np.isnan(preference.accuracy_with_ties([], [], 0.05))
    assert np.isnan(preference.accuracy_without_ties([0, 0], [0.1, 0.0]))


@pytest.mark.parametrize(
    "labels, deltas, epsilon",
    [([2], [0.1], 0.05), ([1], [float("nan")], 0.05), ([1, 0], [0.1], 0.05), ([1], [0.1], -1)],
)
def test_invalid_inputs_raise(labels, deltas, epsilon):
    with pytest.raises(ConfigError):
        preference.accuracy_with_ties(labels, deltas, epsilon)


def test_unknown_protocol_lists_valid():
    with pytest.raises(ConfigError, match="calibrated"):
        preference.evaluate_pairs([1], [0.1], protocol="tuned")
