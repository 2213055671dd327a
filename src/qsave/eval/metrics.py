"""Correlation metrics as pure functions (paper App. B), tested against ``scipy.stats``.

Instance level correlates one prediction with one MOS per video; model level first averages
predictions and MOS per generator, then correlates the per-generator means (App. B,
"Instance-level vs. model-level evaluation"). Inputs must be finite and of equal length: the
harness (``qsave.eval.report``) removes and counts missing or NaN items before calling these.

>>> round(srcc([1, 2, 3, 4], [1, 3, 2, 4]), 3)
0.8
>>> round(plcc([1, 2, 3], [2, 4, 6]), 6)
1.0
>>> rmse([1, 2], [1, 4])
1.4142135623730951
>>> to_integer_scale([1.49, 1.5, 4.9, 5.7])
[1, 2, 5, 5]
>>> accuracy([1, 2, 3], [1, 3, 3]), relaxed_accuracy([1, 2, 5], [1, 3, 3])
(0.6666666666666666, 0.6666666666666666)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from qsave.errors import ConfigError, QsaveError

ArrayLike = Sequence[float] | np.ndarray
Metric = Callable[[np.ndarray, np.ndarray], float]


def _pair(pred: ArrayLike, target: ArrayLike, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float arrays; raise if lengths differ, values are not finite, or too few."""
    p = np.asarray(pred, dtype=float).ravel()
    t = np.asarray(target, dtype=float).ravel()
    if p.shape != t.shape:
        raise ConfigError(f"prediction and target lengths differ ({p.size} vs {t.size})")
    if p.size < minimum:
        raise ConfigError(f"need at least {minimum} items, got {p.size}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ConfigError("prediction or target holds NaN/inf; remove and count them first")
    return p, t


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when either side is constant (as ``scipy.stats.pearsonr``)."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return float("nan")
    return float(np.clip((dx @ dy) / denominator, -1.0, 1.0))


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """SRCC = corr(rank(ŝ), rank(s)) with average ranks for ties (App. B)."""
    p, t = _pair(pred, target)
    return _pearson(stats.rankdata(p), stats.rankdata(t))


def plcc(pred: ArrayLike, target: ArrayLike, fit: str = "none") -> float:
    """PLCC = corr(ŝ, s) (App. B), optionally after a VQEG logistic fit of ŝ onto s.

    ``fit`` is ``"none"``, ``"logistic4"`` or ``"logistic5"`` (see :func:`fit_logistic`).
    """
    p, t = _pair(pred, target)
    if fit != "none":
        p = fit_logistic(p, t, kind=fit)(p)
    return _pearson(p, t)


def krcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Kendall's τ-b (ties in either input handled as in ``scipy.stats.kendalltau``)."""
    p, t = _pair(pred, target)
    return float(stats.kendalltau(p, t, variant="b").statistic)


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root mean squared error, on whatever common scale the inputs share (MOS 1–5 here)."""
    p, t = _pair(pred, target, minimum=1)
    return float(np.sqrt(np.mean((p - t) ** 2)))


CORRELATIONS: dict[str, Metric] = {"srcc": srcc, "plcc": plcc, "krcc": krcc, "rmse": rmse}


# --- VQEG logistic mapping ---------------------------------------------------------------------
def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    z = np.clip(-(x - b3) / max(abs(b4), 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """VQEG 5-parameter logistic: ``b1·(1/2 - 1/(1 + exp(b2·(x - b3)))) + b4·x + b5``."""
    z = np.clip(b2 * (x - b3), -500, 500)
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + b4 * x + b5


def _initial_guess(kind: str, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Starting parameters: logistic4 spans y's range around x's centre and spread; logistic5
    starts from the least-squares line (b1 = 0), so its fit is never worse than linear."""
    spread = float(x.std()) or 1.0
    if kind == "logistic4":
        return [float(y.max()), float(y.min()), float(x.mean()), spread]
    slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
    return [0.0, 1.0 / spread, float(x.mean()), float(slope), float(intercept)]


def fit_logistic(pred: ArrayLike, target: ArrayLike, kind: str = "logistic4") -> Callable:
    """Least-squares fit of a VQEG logistic from predictions to MOS; returns the mapping.

    ``scipy.optimize.least_squares`` (trust region) from :func:`_initial_guess`; when it stops
    at its evaluation budget the parameters reached so far are used (they only lower the
    squared error); an improper problem raises ``QsaveError``.
    """
    functions = {"logistic4": logistic4, "logistic5": logistic5}
    if kind not in functions:
        raise ConfigError(f"unknown fit {kind!r}; valid fits: none, {', '.join(functions)}")
    function = functions[kind]
    x, y = _pair(pred, target, minimum=len(_initial_guess(kind, np.ones(2), np.ones(2))))
    result = optimize.least_squares(
        lambda params: function(x, *params) - y, _initial_guess(kind, x, y), max_nfev=2000
    )
    if result.status < 0 or not np.isfinite(result.x).all():
        raise QsaveError(f"{kind} fit of {x.size} points failed: {result.message}")
    return lambda values: function(np.asarray(values, dtype=float), *result.x)


# --- model level --------------------------------------------------------------------------------
def group_means(
    values: ArrayLike, groups: Sequence[Hashable] | np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-group (generator) mean of ``values``: ``(keys sorted as text, means, counts)``.

    Each group weighs once, whatever its size (App. B: "averaging scores over all prompts for
    each generator").

    >>> group_means([1, 2, 6], ["a", "a", "b"])[1].tolist()
    [1.5, 6.0]
    """
    v = np.asarray(values, dtype=float).ravel()
    labels = np.asarray(groups).astype(str).ravel()
    if v.size != labels.size:
        raise ConfigError(f"{v.size} values but {labels.size} group labels")
    keys, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes, minlength=keys.size)
    sums = np.bincount(codes, weights=v, minlength=keys.size)
    return keys.tolist(), sums / counts, counts


def model_level(
    metric: Metric, pred: ArrayLike, target: ArrayLike, groups: Sequence[Hashable] | np.ndarray
) -> float:
    """A metric on per-generator means of predictions and of MOS (App. B, model level).

    >>> round(model_level(plcc, [1, 3, 2, 10], [1, 1, 2, 3], ["a", "a", "b", "c"]), 3)
    0.866
    """
    p, t = _pair(pred, target, minimum=1)
    _, p_means, _ = group_means(p, groups)
    _, t_means, _ = group_means(t, groups)
    return metric(p_means, t_means)


# --- bootstrap ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval and how many resamples were usable."""

    low: float
    high: float
    confidence: float
    resamples: int  # resamples whose statistic was finite (a constant resample gives NaN)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_items: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
) -> Interval:
    """Percentile bootstrap of ``statistic(indices)`` over ``n_items`` items.

    ``strata`` resamples within each group (generator), so every generator stays present,
    which model-level statistics need.

    >>> ci = bootstrap_ci(lambda i: float(np.mean(np.arange(10.0)[i])), 10, 200)
    >>> ci.low < 4.5 < ci.high
    True
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1 or n_items < 1:
        raise ConfigError(f"need n_resamples ≥ 1 and items ≥ 1, got {n_resamples}, {n_items}")
    rng = np.random.default_rng(seed)
    blocks = _strata_blocks(n_items, strata)
    values = np.array([statistic(_resample(rng, blocks)) for _ in range(n_resamples)], dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(float("nan"), float("nan"), confidence, 0)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(float(low), float(high), confidence, int(finite.size))


def _strata_blocks(n_items: int, strata: Sequence[Hashable] | None) -> list[np.ndarray]:
    """Index blocks to resample independently (one block when unstratified)."""
    if strata is None:
        return [np.arange(n_items)]
    if len(strata) != n_items:
        raise ConfigError(f"{len(strata)} strata labels for {n_items} items")
    labels = np.array([str(s) for s in strata])
    return [np.flatnonzero(labels == key) for key in sorted(set(labels))]


def _resample(rng: np.random.Generator, blocks: list[np.ndarray]) -> np.ndarray:
    """One bootstrap resample: draw with replacement inside every block."""
    return np.concatenate([rng.choice(block, size=block.size, replace=True) for block in blocks])


# --- integer-scale benchmarks -------------------------------------------------------------------
def to_integer_scale(mos: ArrayLike, low: int = 1, high: int = 5) -> list[int]:
    """Round predicted MOS half up to the benchmark's integer levels, clipped to [low, high]."""
    values = np.asarray(mos, dtype=float).ravel()
    if not np.isfinite(values).all():
        raise ConfigError("cannot round NaN/inf predictions to an integer scale")
    return [int(v) for v in np.clip(np.floor(values + 0.5), low, high)]


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Exact-match accuracy of integer predictions (VideoScore-Bench-v2, App. D.2)."""
    p, t = _pair(pred, target, minimum=1)
    return float(np.mean(p == t))


def relaxed_accuracy(pred: ArrayLike, target: ArrayLike, tolerance: int = 1) -> float:
    """Accuracy allowing ``|pred - target| ≤ tolerance`` (relaxed accuracy, App. D.2)."""
    p, t = _pair(pred, target, minimum=1)
    return float(np.mean(np.abs(p - t) <= tolerance))
