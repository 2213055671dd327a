"""Preference accuracy from pointwise scores, with and without ties (paper App. A, B, D.2).

Human labels: ``+1`` (A preferred), ``-1`` (B preferred), ``0`` (tie). The predicted label of a
pair is ``0`` when ``|Δ| ≤ ε`` with ``Δ = score_A - score_B``, else ``sign(Δ)``. App. A gives
ε = 0.05 without a scale; Δ and ε are on r̂ (0..1) by default, because App. A lists the threshold
under "Inference" beside the weights w_j that make r̂, the evaluator's output. ``mos`` puts them
on the 1–5 MOS scale instead (Δ_MOS = 4·Δ_r̂, so ε = 0.05 there is 0.0125 on r̂):
:data:`EPSILON_SCALES`, :func:`on_scale`, :func:`delta_on_scale`, :func:`describe_epsilon`.

* *with ties*: every pair, three-way accuracy at a given ε;
* *without ties*: human ties removed, the prediction is ``sign(Δ)`` (no threshold; ``Δ = 0`` is a
  predicted tie and so always wrong), reported with ``epsilon = 0``;
* *model level* (App. B): predictions and human labels aggregated per generator first, then the
  same accuracies over pairs of generators (:func:`model_level_preference`);
* *calibrated* (not in the paper): P(A > B), P(tie), P(B > A) from the two videos' rating
  distributions, scored by accuracy of the most likely outcome and by log-loss
  (:func:`outcome_probabilities`, :func:`evaluate_calibrated`).

ε comes from one of three protocols: ``fixed`` (given by the user), ``calibrated`` (the best ε on
a separate calibration split) or ``oracle`` (the best ε on the test pairs themselves, only when
asked, and labelled so). The sweep treats pairs of equal ``|Δ|`` as one group: they all become
predicted ties at the same ε, so accuracy is only ever evaluated between groups, never after
half a group (VideoAlign's ``calc_accuracy_with_ties`` updates them one at a time).

>>> accuracy_with_ties([1, -1, 0, 0], [0.3, -0.2, 0.01, 0.4], epsilon=0.05)
0.75
>>> accuracy_without_ties([1, -1, 0, 1], [0.3, 0.2, 0.01, 0.0])
0.3333333333333333
>>> calibrate_epsilon([0, 0, 1], [0.1, -0.1, 0.1])
(0.1, 0.6666666666666666)
>>> describe_epsilon(0.05, "mos")
'0.05 on MOS (1–5) (= 0.0125 on r̂)'
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qsave.dimensions import MOS_MAX, MOS_MIN, RATINGS, WEIGHTS
from qsave.errors import ConfigError
from qsave.eval.metrics import group_means

DEFAULT_EPSILON = 0.05  # tie threshold for preference prediction, App. A
PROTOCOLS = ("fixed", "calibrated", "oracle")
EPSILON_SCALES: dict[str, tuple[float, float]] = {  # scales of Δ and ε: (low, span), low + span·r̂
    "r": (0.0, 1.0),  # r̂ ∈ [0, 1] (Sec. 4.2.2)
    "mos": (MOS_MIN, MOS_MAX - MOS_MIN),  # MOS = 1 + 4·r̂ ∈ [1, 5]
}
SCALE_NAMES = {"r": "r̂ (0..1)", "mos": "MOS (1–5)"}


def _scale(scale: str) -> tuple[float, float]:
    """``(low, span)`` of a scale; an unknown scale lists the valid ones."""
    if scale not in EPSILON_SCALES:
        raise ConfigError(f"unknown epsilon scale {scale!r}; valid: {', '.join(EPSILON_SCALES)}")
    return EPSILON_SCALES[scale]


def on_scale(r_hat: float, scale: str) -> float:
    """A score r̂ on the scale of ε: r̂ itself (``r``) or 1 + 4·r̂ (``mos``).

    >>> on_scale(0.5, "r"), on_scale(0.5, "mos")
    (0.5, 3.0)
    """
    low, span = _scale(scale)
    return low + span * r_hat


def delta_on_scale(r_a: float, r_b: float, scale: str) -> float:
    """Δ = score_A − score_B on the scale of ε, as span·(r̂_A − r̂_B): multiplying by 4 is exact
    in binary floating point, so pairs of equal Δ on r̂ stay one group of the ε sweep on MOS
    (``on_scale(a) - on_scale(b)`` would split them by rounding).

    >>> delta_on_scale(0.51, 0.44, "mos") == delta_on_scale(0.07, 0.0, "mos")
    True
    """
    return _scale(scale)[1] * (r_a - r_b)


def describe_epsilon(epsilon: float, scale: str) -> str:
    """ε with its scale, and on MOS also its value on r̂, as every report states it."""
    _, span = _scale(scale)
    text = f"{epsilon:.4g} on {SCALE_NAMES[scale]}"
    return text if span == 1.0 else f"{text} (= {epsilon / span:.4g} on r̂)"


def _labels_deltas(labels: Sequence[int], deltas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validated arrays: labels in {-1, 0, 1}, finite deltas, same length."""
    h = np.asarray(labels, dtype=float).ravel()
    d = np.asarray(deltas, dtype=float).ravel()
    if h.shape != d.shape:
        raise ConfigError(f"{h.size} labels but {d.size} score differences")
    if not np.isin(h, (-1.0, 0.0, 1.0)).all():
        raise ConfigError(f"labels must be -1, 0 or 1, got {sorted(set(h.tolist()))}")
    if not np.isfinite(d).all():
        raise ConfigError("score differences hold NaN/inf; remove and count them first")
    return h.astype(int), d


def predict_labels(deltas: Sequence[float], epsilon: float) -> np.ndarray:
    """``0`` where ``|Δ| ≤ ε`` (a predicted tie), else ``sign(Δ)``.

    >>> predict_labels([0.05, -0.06, 0.0], 0.05).tolist()
    [0, -1, 0]
    """
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ConfigError(f"epsilon must be a finite number ≥ 0, got {epsilon}")
    d = np.asarray(deltas, dtype=float)
    return np.where(np.abs(d) <= epsilon, 0, np.sign(d)).astype(int)


def accuracy_with_ties(labels: Sequence[int], deltas: Sequence[float], epsilon: float) -> float:
    """Three-way accuracy over all pairs at threshold ε (App. B, "w/ ties")."""
    h, d = _labels_deltas(labels, deltas)
    if h.size == 0:
        return float("nan")
    return float(np.mean(predict_labels(d, epsilon) == h))


def accuracy_without_ties(labels: Sequence[int], deltas: Sequence[float]) -> float:
    """Accuracy over the pairs humans did not tie, predicting ``sign(Δ)`` (App. B, "w/o ties")."""
    h, d = _labels_deltas(labels, deltas)
    keep = h != 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sign(d[keep]).astype(int) == h[keep]))


def epsilon_sweep(labels: Sequence[int], deltas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy with ties at every candidate ε: 0 and each distinct ``|Δ|``, ascending.

    Pairs of equal ``|Δ|`` switch to a predicted tie together, so each candidate's accuracy is
    that of the whole group. O(n log n).

    >>> eps, acc = epsilon_sweep([0, 1, 0, -1], [0.1, 0.1, -0.2, -0.3])
    >>> eps.tolist(), acc.tolist()
    ([0.0, 0.1, 0.2, 0.3], [0.5, 0.5, 0.75, 0.5])
    """
    h, d = _labels_deltas(labels, deltas)
    if h.size == 0:
        raise ConfigError("cannot sweep epsilon over zero pairs")
    magnitude = np.abs(d)
    direction_correct = np.sign(d).astype(int) == h  # prediction while |Δ| > ε
    tie_correct = h == 0  # prediction once |Δ| ≤ ε
    candidates, group = np.unique(np.concatenate([[0.0], magnitude]), return_inverse=True)
    gain = np.bincount(
        group[1:], weights=tie_correct.astype(float) - direction_correct, minlength=candidates.size
    )
    # Below every |Δ| each pair predicts sign(Δ) (for Δ = 0 that is already a tie, gain 0).
    correct = direction_correct.sum() + np.cumsum(gain)
    return candidates, correct / h.size


def calibrate_epsilon(labels: Sequence[int], deltas: Sequence[float]) -> tuple[float, float]:
    """The ε with the highest accuracy with ties (the smallest such ε), and that accuracy."""
    candidates, accuracies = epsilon_sweep(labels, deltas)
    best = int(np.argmax(accuracies))  # argmax returns the first, i.e. smallest, maximiser
    return float(candidates[best]), float(accuracies[best])


@dataclass(frozen=True)
class PreferenceResult:
    """Accuracy of one dimension's pairs, with the ε and protocol that produced it."""

    accuracy_with_ties: float
    accuracy_without_ties: float
    epsilon: float  # threshold used for the with-ties accuracy (without ties: always 0)
    protocol: str  # fixed | calibrated | oracle
    n_pairs: int  # pairs evaluated (both videos predicted)
    n_human_ties: int
    n_predicted_ties: int


def evaluate_pairs(
    labels: Sequence[int],
    deltas: Sequence[float],
    epsilon: float = DEFAULT_EPSILON,
    protocol: str = "fixed",
) -> PreferenceResult:
    """Both accuracies of a set of pairs at ε; for ``oracle``, ε is swept on these pairs."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    h, d = _labels_deltas(labels, deltas)
    if protocol == "oracle" and h.size:
        epsilon, _ = calibrate_epsilon(h, d)
    return PreferenceResult(
        accuracy_with_ties=accuracy_with_ties(h, d, epsilon),
        accuracy_without_ties=accuracy_without_ties(h, d),
        epsilon=float(epsilon),
        protocol=protocol,
        n_pairs=int(h.size),
        n_human_ties=int(np.sum(h == 0)),
        n_predicted_ties=int(np.sum(predict_labels(d, epsilon) == 0)),
    )


# --- model level (App. B) -----------------------------------------------------------------------
@dataclass(frozen=True)
class ModelLevelResult:
    """Preference accuracy over pairs of generators, from per-generator aggregates (App. B)."""

    accuracy_with_ties: float
    accuracy_without_ties: float
    epsilon: float  # the threshold on the difference of mean predicted scores
    n_generators: int
    n_generator_pairs: int  # every unordered pair of the generators
    n_human_ties: int  # generator pairs with equal human win rates
    n_pairs: int  # video pairs aggregated (both generators known and different)
    n_pairs_skipped: int  # video pairs left out: a generator unknown, or both the same
    generators: list[dict]  # per generator: name, pairs, videos, win_rate, score


def model_level_preference(
    pairs: Sequence[tuple[str, str, int]],
    scores: Mapping[str, float],
    generators: Mapping[str, str | None],
    epsilon: float = DEFAULT_EPSILON,
) -> ModelLevelResult:
    """Aggregate by generator first, then compare generators (App. B, model level).

    ``pairs``: ``(video A, video B, human label)``; ``scores``: predicted score per video (on
    the scale of ε); ``generators``: generator per video. Pairs of one generator, or with an
    unknown one, say nothing about ranking generators and are left out (counted).

    * aggregated truth: each generator's human *win rate* over its pairs, a win 1, a tie ½,
      a loss 0 (the mean of its pair outcomes);
    * aggregated prediction: the mean predicted score over its distinct videos in those pairs
      (App. B: "averaging scores over all prompts for each generator");
    * pairs of generators: every unordered pair of the generators present, labelled ``+1`` /
      ``-1`` by the order of their win rates, ``0`` when equal; predicted from
      ``Δ = mean_G - mean_H`` with the instance-level rule (tie iff ``|Δ| ≤ ε``).

    >>> r = model_level_preference([("a", "b", 1), ("c", "b", 0)], {"a": .9, "b": .5, "c": .52},
    ...                            {"a": "g1", "b": "g2", "c": "g1"})
    >>> [g["win_rate"] for g in r.generators], r.accuracy_with_ties  # g1 .75 > g2 .25, Δ = .21
    ([0.75, 0.25], 1.0)
    """
    used = [(a, b, int(label)) for a, b, label in pairs
            if generators.get(a) and generators.get(b) and generators[a] != generators[b]]
    sides = [generators[v] for a, b, _ in used for v in (a, b)]
    outcomes = [(1 + s * label) / 2 for _, _, label in used for s in (1, -1)]
    names, win_rate, played = group_means(outcomes, sides)
    videos = sorted({(generators[v], v) for a, b, _ in used for v in (a, b)})
    _, mean_score, n_videos = group_means([scores[v] for _, v in videos], [g for g, _ in videos])
    labels, deltas = [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        labels.append(int(np.sign(win_rate[i] - win_rate[j])))  # equal rationals: equal floats
        deltas.append(float(mean_score[i] - mean_score[j]))
    table = [{"generator": name, "pairs": int(played[k]), "videos": int(n_videos[k]),
              "win_rate": float(win_rate[k]), "score": float(mean_score[k])}
             for k, name in enumerate(names)]
    return ModelLevelResult(
        accuracy_with_ties=accuracy_with_ties(labels, deltas, epsilon),
        accuracy_without_ties=accuracy_without_ties(labels, deltas),
        epsilon=float(epsilon),
        n_generators=len(names),
        n_generator_pairs=len(labels),
        n_human_ties=labels.count(0),
        n_pairs=len(used),
        n_pairs_skipped=len(pairs) - len(used),
        generators=table,
    )


# --- calibrated preference from rating distributions (beyond the paper) ------------------------
PROB_TOLERANCE = 1e-6  # allowed |Σ p_j − 1| and |Σ p_j·w_j − r̂| for probabilities to be used
PROB_FLOOR = 1e-15  # probabilities are clipped here before the log: a sure miss costs 34.5 nats
OUTCOMES = (1, 0, -1)  # order of outcome probabilities: A preferred, tie, B preferred


def probs_problem(probs: Sequence[float] | None, score: float) -> str | None:
    """Why ``probs`` cannot stand for a video's rating distribution, or ``None`` if it can:
    five finite non-negative numbers summing to 1 whose expectation Σ p_j·w_j is ``score`` (r̂)."""
    if probs is None:
        return "no rating probabilities"
    p = np.asarray(probs, dtype=float)
    if p.shape != (len(RATINGS),) or not np.isfinite(p).all() or (p < 0).any():
        return "rating probabilities are not 5 finite numbers ≥ 0"
    if abs(p.sum() - 1.0) > PROB_TOLERANCE:
        return "rating probabilities do not sum to 1"
    if abs(float(p @ np.asarray(WEIGHTS)) - score) > PROB_TOLERANCE:
        return "rating probabilities disagree with the score (Σ p_j·w_j ≠ r̂)"
    return None


def level_distribution(probs: Sequence[Sequence[float]]) -> np.ndarray:
    """Distribution of the summed rating level (Bad = 0 … Excellent = 4) of ``k`` dimensions
    rated independently: the convolution of their distributions, over the sums 0 … 4k.

    >>> level_distribution([[0, 0, .5, .5, 0], [0, 0, 0, 1, 0]]).tolist()[4:8]
    [0.0, 0.5, 0.5, 0.0]
    """
    distribution = np.ones(1)
    for p in probs:
        distribution = np.convolve(distribution, np.asarray(p, dtype=float))
    return distribution


def outcome_probabilities(
    probs_a: Sequence[Sequence[float]], probs_b: Sequence[Sequence[float]]
) -> tuple[float, float, float]:
    """``(P(A > B), P(tie), P(B > A))`` of two videos' rating levels (:data:`OUTCOMES` order).

    Each argument holds one distribution over (Bad … Excellent) per dimension: one for a
    dimension, several for "overall", whose level is then the mean level of those dimensions
    (the App. D.2 mean, taken over ratings). Assumed: the two videos' ratings are independent,
    and so are one video's dimensions. A tie is an equal (mean) level.

    >>> outcome_probabilities([[0, 0, .5, .5, 0]], [[0, 0, 1, 0, 0]])
    (0.5, 0.5, 0.0)
    """
    if not probs_a or not probs_b:
        raise ConfigError("each video needs at least one rating distribution")
    joint = np.outer(level_distribution(probs_a), level_distribution(probs_b))
    # mean levels s_a / k_a against s_b / k_b, compared exactly as s_a·k_b against s_b·k_a
    sums_a = np.arange(joint.shape[0])[:, None] * len(probs_b)
    sums_b = np.arange(joint.shape[1])[None, :] * len(probs_a)
    return (float(joint[sums_a > sums_b].sum()), float(joint[sums_a == sums_b].sum()),
            float(joint[sums_a < sums_b].sum()))


def _labels_outcomes(labels: Sequence[int], outcomes) -> tuple[np.ndarray, np.ndarray]:
    """Validated arrays: labels in {-1, 0, 1}; outcomes (n, 3), finite, ≥ 0, rows summing to 1."""
    h, _ = _labels_deltas(labels, np.zeros(len(labels)))
    o = np.asarray(outcomes, dtype=float).reshape(-1, len(OUTCOMES))
    if o.shape[0] != h.size:
        raise ConfigError(f"{h.size} labels but {o.shape[0]} outcome probability rows")
    if not np.isfinite(o).all() or (o < 0).any() or (np.abs(o.sum(1) - 1) > PROB_TOLERANCE).any():
        raise ConfigError("outcome probabilities must be finite, ≥ 0 and sum to 1 per pair")
    return h, o


def calibrated_labels(outcomes, ties: bool = True) -> np.ndarray:
    """The most likely outcome per pair: ``+1``, ``0`` or ``-1``; a draw for the top is a tie.

    ``ties=False`` chooses between A and B only (``P(A > B)`` against ``P(B > A)``); equal is
    a tie, which is always wrong there, as ``sign(Δ) = 0`` is.

    >>> calibrated_labels([[.4, .4, .2], [.1, .3, .6], [.45, .1, .45]]).tolist()
    [0, -1, 0]
    """
    o = np.asarray(outcomes, dtype=float).reshape(-1, len(OUTCOMES))
    a, tie, b = o.T
    if not ties:
        return np.sign(a - b).astype(int)
    return np.where((a > tie) & (a > b), 1, np.where((b > tie) & (b > a), -1, 0))


def log_loss(labels: Sequence[int], outcomes, ties: bool = True) -> float:
    """Mean ``-ln P(human label)``, probabilities clipped at :data:`PROB_FLOOR` (natural log).

    ``ties=False`` drops human ties and uses ``P(label | no tie)``, i.e. ``P(A > B)`` over
    ``P(A > B) + P(B > A)``. A uniform guess scores ln 3 ≈ 1.099 with ties, ln 2 without.

    >>> round(log_loss([1, 0], [[.5, .5, 0], [.25, .5, .25]]), 4)  # -(ln .5 + ln .5) / 2
    0.6931
    """
    h, o = _labels_outcomes(labels, outcomes)
    if not ties:
        keep = h != 0
        h, o = h[keep], o[keep]
        decided = o[:, 0] + o[:, 2]
        o = np.divide(o, decided[:, None], out=np.zeros_like(o), where=decided[:, None] > 0)
    if h.size == 0:
        return float("nan")
    p = o[np.arange(h.size), [OUTCOMES.index(label) for label in h]]
    return float(-np.mean(np.log(np.maximum(p, PROB_FLOOR))))


@dataclass(frozen=True)
class CalibratedResult:
    """Preference from rating distributions: accuracy of the most likely outcome, log-loss."""

    accuracy_with_ties: float
    accuracy_without_ties: float
    log_loss_with_ties: float  # nats per pair
    log_loss_without_ties: float  # nats per pair, human ties removed, P(label | no tie)
    n_pairs: int
    n_human_ties: int
    n_predicted_ties: int  # pairs whose most likely outcome is a tie
    mean_p_tie: float  # mean predicted P(tie)


def evaluate_calibrated(labels: Sequence[int], outcomes) -> CalibratedResult:
    """Both accuracies and both log-losses of pairs from their outcome probabilities."""
    h, o = _labels_outcomes(labels, outcomes)
    keep = h != 0
    with_ties, without_ties = calibrated_labels(o), calibrated_labels(o[keep], ties=False)
    return CalibratedResult(
        accuracy_with_ties=float(np.mean(with_ties == h)) if h.size else float("nan"),
        accuracy_without_ties=float(np.mean(without_ties == h[keep])) if keep.any()
        else float("nan"),
        log_loss_with_ties=log_loss(h, o),
        log_loss_without_ties=log_loss(h, o, ties=False),
        n_pairs=int(h.size),
        n_human_ties=int(np.sum(~keep)),
        n_predicted_ties=int(np.sum(with_ties == 0)),
        mean_p_tie=float(o[:, 1].mean()) if h.size else float("nan"),
    )
