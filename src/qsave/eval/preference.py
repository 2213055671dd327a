"""Preference accuracy from pointwise scores, with and without ties (paper App. B, D.2).

Human labels: ``+1`` (A preferred), ``-1`` (B preferred), ``0`` (tie). The predicted label of a
pair is ``0`` when ``|Δ| ≤ ε`` with ``Δ = score_A - score_B``, else ``sign(Δ)``; ε defaults to
0.05 on the r̂ (0..1) scale (App. A).

* *with ties*: every pair, three-way accuracy at a given ε;
* *without ties*: human ties removed, the prediction is ``sign(Δ)`` (no threshold; ``Δ = 0`` is a
  predicted tie and so always wrong), reported with ``epsilon = 0``.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qsave.errors import ConfigError

DEFAULT_EPSILON = 0.05  # tie threshold for preference prediction, App. A
PROTOCOLS = ("fixed", "calibrated", "oracle")


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
