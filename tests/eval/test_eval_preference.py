"""Preference protocols against hand-worked pair lists and a brute-force sweep (App. B, D.2)."""

import itertools
import math

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


# --- ε's scale ----------------------------------------------------------------------------------
def test_epsilon_scales_by_hand():
    # Δ on r̂: .02, .03, .03, -.10; on MOS four times that: .08, .12, .12, -.40
    labels = [0, 0, 1, -1]
    r_hat = [(0.52, 0.50), (0.63, 0.60), (0.43, 0.40), (0.30, 0.40)]
    on = {s: [preference.on_scale(a, s) - preference.on_scale(b, s) for a, b in r_hat]
          for s in ("r", "mos")}
    assert on["mos"] == pytest.approx([0.08, 0.12, 0.12, -0.40])
    # ε = 0.05 on r̂: 0, 0, 0, -1 → ✓ ✓ ✗ ✓; on MOS: 1, 1, 1, -1 → ✗ ✗ ✓ ✓
    assert preference.accuracy_with_ties(labels, on["r"], 0.05) == pytest.approx(3 / 4)
    assert preference.accuracy_with_ties(labels, on["mos"], 0.05) == pytest.approx(2 / 4)
    assert preference.describe_epsilon(0.05, "r") == "0.05 on r̂ (0..1)"
    assert preference.describe_epsilon(0.05, "mos") == "0.05 on MOS (1–5) (= 0.0125 on r̂)"
    with pytest.raises(ConfigError, match="valid: r, mos"):
        preference.on_scale(0.5, "percent")


# --- model level (App. B) -----------------------------------------------------------------------
GENERATOR_OF = {"a1": "g1", "a2": "g1", "b1": "g2", "b2": "g2", "c1": "g3", "c2": "g3", "x": None}
SCORES = {"a1": 0.75, "a2": 0.625, "b1": 0.5, "b2": 0.25, "c1": 0.3125, "c2": 0.5, "x": 0.9}
PAIRS = [("a1", "b1", 1), ("a2", "c1", 1), ("b1", "c1", 0), ("c2", "b2", 1),
         ("a1", "a2", -1),  # one generator: says nothing about ranking generators
         ("x", "a1", 1)]  # unknown generator


def test_model_level_by_hand():
    # win rates (win 1, tie ½, loss 0): g1 W W → 1; g2 L T L → 1/6; g3 L T W → 1/2
    # mean r̂ of distinct videos: g1 (.75 + .625)/2 = .6875, g2 .375, g3 (.3125 + .5)/2 = .40625
    # generator pairs: (g1, g2) +1, Δ .3125 ✓; (g1, g3) +1, Δ .28125 ✓; (g2, g3) -1, Δ -.03125
    result = preference.model_level_preference(PAIRS, SCORES, GENERATOR_OF, epsilon=0.05)
    table = {g["generator"]: g for g in result.generators}
    assert [table[g]["win_rate"] for g in ("g1", "g2", "g3")] == pytest.approx([1, 1 / 6, 1 / 2])
    assert [table[g]["score"] for g in ("g1", "g2", "g3")] == [0.6875, 0.375, 0.40625]
    assert [table[g]["pairs"] for g in ("g1", "g2", "g3")] == [2, 3, 3]
    assert [table[g]["videos"] for g in ("g1", "g2", "g3")] == [2, 2, 2]  # c1 counted once
    assert (result.n_generators, result.n_generator_pairs, result.n_human_ties) == (3, 3, 0)
    assert (result.n_pairs, result.n_pairs_skipped) == (4, 2)
    # |-.03125| ≤ .05: a predicted tie, wrong; without ties its sign is right
    assert result.accuracy_with_ties == pytest.approx(2 / 3)
    assert result.accuracy_without_ties == 1.0
    # on MOS (1 + 4·r̂) the g2/g3 difference is -.125, beyond ε: all three right
    mos = {v: preference.on_scale(s, "mos") for v, s in SCORES.items()}
    assert preference.model_level_preference(PAIRS, mos, GENERATOR_OF).accuracy_with_ties == 1.0


def test_model_level_equal_win_rates_are_a_tie():
    pairs = [("x1", "y1", 1), ("y2", "x2", 1)]  # g1 and g2 each win once: both ½
    generators = {"x1": "g1", "x2": "g1", "y1": "g2", "y2": "g2"}
    result = preference.model_level_preference(pairs, dict.fromkeys(generators, 0.5), generators)
    assert result.n_human_ties == 1 and result.accuracy_with_ties == 1.0  # Δ = 0: a tie
    assert np.isnan(result.accuracy_without_ties)  # no decided generator pair


def test_model_level_without_two_generators_is_nan():
    result = preference.model_level_preference([("x", "a1", 1)], SCORES, GENERATOR_OF)
    assert result.n_generators == 0 and result.n_pairs_skipped == 1
    assert np.isnan(result.accuracy_with_ties)


# --- calibrated preference ----------------------------------------------------------------------
FAIR_GOOD = [0, 0, 0.5, 0.5, 0]  # over (Bad, Poor, Fair, Good, Excellent)
POOR_FAIR = [0, 0.2, 0.8, 0, 0]


def test_outcome_probabilities_by_hand():
    # A Good (.5) beats every B; A Fair (.5) beats B Poor (.2): .5 + .1; ties: Fair·Fair .5·.8
    assert preference.outcome_probabilities([FAIR_GOOD], [POOR_FAIR]) == pytest.approx(
        (0.6, 0.4, 0.0))
    assert preference.outcome_probabilities([POOR_FAIR], [FAIR_GOOD]) == pytest.approx(
        (0.0, 0.4, 0.6))
    # overall of two dimensions against one: A's mean level is (2 + 3)/2 or (2 + 4)/2, each .5;
    # B's is 2 or 3, each .5 → A > B: (2.5, 2), (3, 2); B > A: (2.5, 3); tie: (3, 3)
    a = [[0, 0, 1, 0, 0], [0, 0, 0, 0.5, 0.5]]
    assert preference.outcome_probabilities(a, [FAIR_GOOD]) == pytest.approx((0.5, 0.25, 0.25))


def _reference_outcomes(probs_a, probs_b):
    """P(A > B), P(tie), P(B > A) by enumerating every combination of levels."""
    out = [0.0, 0.0, 0.0]
    for levels_a in itertools.product(range(5), repeat=len(probs_a)):
        for levels_b in itertools.product(range(5), repeat=len(probs_b)):
            p = np.prod([probs_a[d][k] for d, k in enumerate(levels_a)])
            p *= np.prod([probs_b[d][k] for d, k in enumerate(levels_b)])
            mean_a, mean_b = np.mean(levels_a), np.mean(levels_b)
            out[0 if mean_a > mean_b else 1 if mean_a == mean_b else 2] += p
    return out


@pytest.mark.parametrize("seed", range(4))
def test_outcome_probabilities_match_enumeration(seed):
    rng = np.random.default_rng(seed)
    probs_a = rng.dirichlet(np.ones(5), size=1 + seed % 3).tolist()
    probs_b = rng.dirichlet(np.ones(5), size=1 + (seed + 1) % 3).tolist()
    found = preference.outcome_probabilities(probs_a, probs_b)
    assert found == pytest.approx(_reference_outcomes(probs_a, probs_b))
    assert sum(found) == pytest.approx(1.0)


OUTCOMES = [[0.6, 0.4, 0.0], [0.2, 0.5, 0.3], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]
LABELS = [1, 0, -1, 1]


def test_calibrated_accuracy_and_log_loss_by_hand():
    # most likely: +1 ✓, tie ✓, tie ✗ (human -1), -1 ✗ → 2/4
    assert preference.calibrated_labels(OUTCOMES).tolist() == [1, 0, 0, -1]
    # without ties (pairs 1, 3, 4): sign(P(A>B) - P(B>A)) = +1 ✓, -1 ✓, -1 ✗ → 2/3
    result = preference.evaluate_calibrated(LABELS, OUTCOMES)
    assert result.accuracy_with_ties == 0.5
    assert result.accuracy_without_ties == pytest.approx(2 / 3)
    # -ln P(label): .6, .5, .3, .1
    expected = -(math.log(0.6) + math.log(0.5) + math.log(0.3) + math.log(0.1)) / 4
    assert result.log_loss_with_ties == pytest.approx(expected)  # 1.1776
    # P(label | no tie): .6/.6, .3/.5, .1/.9
    expected = -(math.log(1.0) + math.log(0.3 / 0.5) + math.log(0.1 / 0.9)) / 3
    assert result.log_loss_without_ties == pytest.approx(expected)  # 0.9027
    assert (result.n_pairs, result.n_human_ties, result.n_predicted_ties) == (4, 1, 2)
    assert result.mean_p_tie == pytest.approx((0.4 + 0.5 + 0.5 + 0.1) / 4)


def test_log_loss_of_a_sure_miss_is_floored():
    floor = -math.log(preference.PROB_FLOOR)  # 34.54 nats, not infinity
    assert preference.log_loss([-1], [[0.6, 0.4, 0.0]]) == pytest.approx(floor)
    # a sure tie leaves nothing for P(label | no tie)
    assert preference.log_loss([1], [[0.0, 1.0, 0.0]], ties=False) == pytest.approx(floor)
    assert np.isnan(preference.log_loss([0], [[0.0, 1.0, 0.0]], ties=False))


@pytest.mark.parametrize("probs, score, problem", [
    (None, 0.5, "no rating probabilities"),
    ([0.2] * 4, 0.5, "not 5 finite"),
    ([0.5, 0.5, 0.5, 0, 0], 0.5, "sum to 1"),
    ([0.2] * 5, 0.8, "disagree with the score"),
])
def test_unusable_probabilities_are_named(probs, score, problem):
    assert problem in preference.probs_problem(probs, score)
    assert preference.probs_problem(FAIR_GOOD, 0.625) is None


def test_bad_outcomes_raise():
    with pytest.raises(ConfigError, match="sum to 1"):
        preference.evaluate_calibrated([1], [[0.5, 0.6, 0.0]])
    with pytest.raises(ConfigError, match="2 labels but 1"):
        preference.evaluate_calibrated([1, 0], [[0.5, 0.5, 0.0]])


def test_equal_deltas_stay_one_group_on_mos():
    # Δ on r̂ is .07 for both pairs; 1 + 4·r̂ differences would be .28 and .28000000000000025,
    # two sweep groups, and the oracle would score the impossible 2/2
    pairs = [(0.07, 0.0), (0.51, 0.44)]
    deltas = [preference.delta_on_scale(a, b, "mos") for a, b in pairs]
    assert deltas[0] == deltas[1] == pytest.approx(0.28)
    assert preference.calibrate_epsilon([0, 1], deltas) == (0.0, 0.5)
