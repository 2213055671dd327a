"""The evaluation harness: predictions × ground truth → metrics, and its reports (App. B, D.2).

:func:`evaluate` joins ``qsave score`` predictions with a :class:`~qsave.eval.benchmarks.Truth`,
counts every missing prediction (no line, an ``error`` line, a NaN score) per dimension instead of
skipping it silently, and computes

* per MOS dimension: instance-level SRCC/PLCC/KRCC/RMSE with bootstrap intervals, model-level
  SRCC/PLCC on per-generator means, accuracy and relaxed accuracy on integer-scale benchmarks,
  and per-generator rankings with intervals;
* per preference dimension (the truth's pairs; or, for a qsave truth without pairs, pairs built
  from its MOS within each prompt, :func:`~qsave.eval.benchmarks.derive_mos_pairs`, with the
  human tie margin ``EvalConfig.tie_margin``, stated in every report): accuracy with and
  without ties, always with its ε, the scale ε is
  on (``EvalConfig.epsilon_scale``) and its protocol; the same at model level (App. B: human win
  rates against mean predicted scores per generator, :func:`~qsave.eval.preference.
  model_level_preference`); and, beyond the paper, a calibrated preference from the two videos'
  rating distributions (accuracy and log-loss; skipped, with the reason, without probabilities);
* per benchmark, the dimension averages it reports (VideoPhy2-test's "Avg" PLCC, Table 10);
* per MOS dimension, a confusion matrix of predicted against true rating: the true rating is
  R(human MOS) (Sec. 3.4.2), the predicted one the row's ``rating`` word when the prediction
  rows were given (``pred_path``), else R(predicted MOS);
* for a truth with labelled defects (the manifest of ``qsave data synth``), per dimension and
  defect kind: SRCC and PLCC over the clips of that kind, with bootstrap intervals
  (:mod:`qsave.eval.kinds`), so that one sees which kinds (a wrong colour, a missing object, …)
  an evaluator gets right.

Every report opens with its provenance: the prediction file and the model ids of its rows, the
truth file, the benchmark, the qsave version and the date.

Predictions are compared on the MOS scale ``1 + 4·r̂``; preference differences Δ and ε use r̂
(0..1) by default, or MOS with ``epsilon_scale="mos"`` (App. A gives 0.05 without a scale; see
:mod:`qsave.eval.preference`). "Overall" predictions are the mean of the available dimension
scores (App. D.2); ``EvalReport.overall`` counts from which dimensions. Renderers:
:func:`print_report` (rich tables on a terminal wide enough for them, else plain markdown
tables: a cell is never cut), :func:`report_to_json`, :func:`write_html` (jinja2 + matplotlib,
plots embedded as PNG).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qsave import __version__
from qsave.dimensions import DIMENSIONS, MOS_MAX, MOS_MIN, RATINGS, mos_to_rating, score_to_mos
from qsave.errors import AnnotationError, ConfigError, QsaveError
from qsave.eval import metrics
from qsave.eval.benchmarks import (
    DIMENSION_NAMES,
    OVERALL,
    Pair,
    Predictions,
    Truth,
    derive_mos_pairs,
    id_examples,
    match_predictions,
)
from qsave.eval.kinds import KIND_RULE, KindConfig, srcc_by_kind
from qsave.eval.preference import (
    DEFAULT_EPSILON,
    EPSILON_SCALES,
    SCALE_NAMES,
    calibrate_epsilon,
    delta_on_scale,
    describe_epsilon,
    evaluate_calibrated,
    evaluate_pairs,
    model_level_preference,
    on_scale,
    outcome_probabilities,
    probs_problem,
)
from qsave.scores import read_results

FITS = ("none", "logistic4", "logistic5")
MIN_GENERATORS = 3  # model level needs ≥ 3 generators: two points always correlate at ±1
SHOWN_IDS = 20  # ids listed per missing/unmatched category in reports


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation; the CLI flags of ``qsave eval`` mirror these fields."""

    epsilon: float = DEFAULT_EPSILON  # tie threshold of the fixed protocol (App. A)
    epsilon_scale: str = "r"  # scale of ε and Δ: r (r̂, 0..1) | mos (1–5); App. A names none
    oracle: bool = False  # calibrate ε on the test pairs themselves; reported as "oracle"
    fit: str = "none"  # none | logistic4 | logistic5: VQEG mapping of predictions before PLCC
    n_resamples: int = 1000  # bootstrap resamples for confidence intervals (0: none)
    confidence: float = 0.95  # level of the bootstrap intervals
    seed: int = 0  # seed of the bootstrap
    allow_extra: bool = False  # prediction ids matching no truth video: report, don't raise
    # human tie of the pairs built from MOS: |ΔMOS| ≤ tie_margin on 1–5 (TIE_MARGIN_SOURCE)
    tie_margin: float = (MOS_MAX - MOS_MIN) * DEFAULT_EPSILON

    def __post_init__(self) -> None:
        for name in ("epsilon", "tie_margin"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} ({value}) must be a finite number ≥ 0")
        if self.epsilon_scale not in EPSILON_SCALES:
            raise ConfigError(f"epsilon_scale ({self.epsilon_scale!r}) must be one of "
                              f"{', '.join(EPSILON_SCALES)}")
        if self.fit not in FITS:
            raise ConfigError(f"fit ({self.fit!r}) must be one of {', '.join(FITS)}")
        if self.n_resamples < 0:
            raise ConfigError(f"n_resamples ({self.n_resamples}) must be ≥ 0")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence ({self.confidence}) must lie in (0, 1)")


# qsave's choice, the paper builds no pairs from MOS: App. A's ε carried to MOS (×4), so that
# predictions equal to the human MOS get every pair right at the default ε
TIE_MARGIN_SOURCE = "App. A's ε = 0.05 on r̂ as MOS, ×4; qsave's choice"


@dataclass
class EvalReport:
    """Everything one evaluation found; ``points`` (for plots) is left out of the JSON.

    ``provenance``: predictions (path), models (the distinct model ids of the prediction rows),
    truth (path), calibration (path, when used), benchmark, qsave_version, date (UTC, ISO 8601).
    ``confusion``: per MOS dimension, ``matrix[true][predicted]`` counts over :data:`RATINGS`
    (ascending), ``predicted`` (``"rating"``: the rows' rating word; ``"R(MOS)"``: derived from
    the predicted MOS), ``agreement`` and ``within_one`` (fractions of videos).
    ``epsilon``: the tie threshold as every renderer states it: ``value`` (fixed; ``None`` when
    fitted per dimension), ``scale`` (``r`` | ``mos``), ``protocol`` and ``text``.
    ``averages``: the benchmark's dimension averages (name, metric, dimensions, values, value,
    source). ``overall``: how "overall" was predicted and, per set of dimensions averaged, how
    many videos. ``mos_pairs``: for a truth whose pairs were built from its MOS, the rule, the
    tie margin (``tie_margin``, its ``tie_margin_source``), pairs and human ties per dimension,
    where the prompts came from, and ``reason`` when no pair could be built.
    ``defect_kinds``: for a truth with labelled defects, the ``rule`` (:data:`~qsave.eval.kinds.
    KIND_RULE`), ``min_clips``, and per dimension the :class:`~qsave.eval.kinds.KindFigure` of
    each kind as a dict (predictions on MOS 1–5); empty, and left out of the JSON, otherwise.
    """

    benchmark: str
    protocol: str  # ε protocol: fixed | calibrated | oracle
    config: dict[str, Any]
    videos: int
    missing: dict[str, Any]  # reason → {"count", "ids"} over all truth videos
    unmatched_predictions: dict[str, Any]
    problems: list[str]
    notes: list[str]
    correlation: dict[str, dict[str, Any]] = field(default_factory=dict)
    preference: dict[str, dict[str, Any]] = field(default_factory=dict)
    rankings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    points: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    confusion: dict[str, dict[str, Any]] = field(default_factory=dict)
    epsilon: dict[str, Any] = field(default_factory=dict)
    averages: list[dict[str, Any]] = field(default_factory=list)
    overall: dict[str, Any] = field(default_factory=dict)
    mos_pairs: dict[str, Any] = field(default_factory=dict)
    defect_kinds: dict[str, Any] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        """Truth videos without a usable prediction, over all reasons."""
        return sum(entry["count"] for entry in self.missing.values())


# --- joining ------------------------------------------------------------------------------------
class _Lookup:
    """Per-video predicted r̂ of a dimension, or the reason there is none."""

    def __init__(
        self,
        truth: Truth,
        predictions: Predictions,
        ratings: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.matched = match_predictions(truth, predictions)
        self.predictions = predictions
        self.ratings = ratings  # prediction id → dimension → rating word (None: rows not read)
        self.overall_parts: dict[str, str] = {}  # video id → dimensions its overall averaged

    def rating(self, video_id: str, dimension: str) -> str | None:
        """The rating word of the row matched to ``video_id``, if the rows were read."""
        if self.ratings is None:
            return None
        return self.ratings.get(self.matched.get(video_id, ""), {}).get(dimension)

    def score(self, video_id: str, dimension: str) -> tuple[float, str | None]:
        """``(r̂, None)`` or ``(nan, reason)``; overall is the mean of available dimensions."""
        pred_id = self.matched.get(video_id)
        if pred_id is None:
            return math.nan, "no prediction"
        if pred_id in self.predictions.errors:
            return math.nan, "prediction error"
        scores = self.predictions.scores[pred_id]
        if dimension == OVERALL:
            parts = self.parts(pred_id)
            value = float(np.mean([scores[d] for d in parts])) if parts else math.nan
            if parts:
                self.overall_parts[video_id] = "+".join(parts)
        else:
            value = scores.get(dimension, math.nan)
        if not math.isfinite(value):
            return math.nan, f"no finite {dimension} score"
        return value, None

    def parts(self, pred_id: str) -> list[str]:
        """The dimensions of a prediction with a finite score: what its overall averages."""
        scores = self.predictions.scores[pred_id]
        return [d.value for d in DIMENSIONS if math.isfinite(scores.get(d.value, math.nan))]

    def probs(self, video_id: str, dimension: str) -> tuple[list, str | None]:
        """The rating distributions behind a scored video's r̂ of ``dimension`` (for overall,
        one per dimension it averages), or ``([], reason)`` when any is absent or unusable."""
        pred_id = self.matched[video_id]
        scores = self.predictions.scores[pred_id]
        probs = self.predictions.probs.get(pred_id, {})
        dims = self.parts(pred_id) if dimension == OVERALL else [dimension]
        for dim in dims:
            problem = probs_problem(probs.get(dim), scores[dim])
            if problem:
                return [], problem
        return [probs[dim] for dim in dims], None


def _record_missing(counter: dict[str, list[str]], video_id: str, reason: str) -> None:
    """Remember one missing (video, reason) once."""
    ids = counter.setdefault(reason, [])
    if video_id not in ids:
        ids.append(video_id)


def _summarise(missing: dict[str, list[str]]) -> dict[str, Any]:
    """reason → count and the first ids."""
    return {reason: {"count": len(ids), "ids": ids[:SHOWN_IDS]} for reason, ids in missing.items()}


# --- MOS dimensions -----------------------------------------------------------------------------
def _interval(statistic, n: int, config: EvalConfig, strata=None) -> list[float] | None:
    """``[low, high]`` of a bootstrap interval, or ``None`` when disabled or undefined."""
    if config.n_resamples == 0 or n < 2:
        return None
    ci = metrics.bootstrap_ci(
        statistic, n, config.n_resamples, config.confidence, config.seed, strata
    )
    return None if ci.resamples == 0 else [ci.low, ci.high]


def _safe(metric, *args) -> float:
    """A metric value, NaN when it is undefined for these inputs (too few items, constant)."""
    try:
        return metric(*args)
    except QsaveError:  # ConfigError (too few items) or a logistic fit that did not converge
        return math.nan


def _instance_level(p: np.ndarray, t: np.ndarray, config: EvalConfig) -> dict[str, Any]:
    """SRCC/PLCC/KRCC/RMSE over videos, intervals for SRCC and PLCC.

    With a logistic ``fit``, the mapping is fitted once on all videos and the PLCC interval
    resamples the mapped predictions (refitting per resample would cost a fit each).
    """
    mapped, fit_error = p, None
    if config.fit != "none":
        try:
            mapped = metrics.fit_logistic(p, t, config.fit)(p)
        except QsaveError as error:
            mapped, fit_error = np.full_like(p, math.nan), str(error)
    return {
        "n": int(p.size),
        "srcc": _safe(metrics.srcc, p, t),
        "plcc": _safe(metrics.plcc, mapped, t),
        "krcc": _safe(metrics.krcc, p, t),
        "rmse": _safe(metrics.rmse, p, t),
        "srcc_ci": _interval(lambda i: _safe(metrics.srcc, p[i], t[i]), p.size, config),
        "plcc_ci": _interval(lambda i: _safe(metrics.plcc, mapped[i], t[i]), p.size, config),
        "fit": config.fit,
        "fit_error": fit_error,
    }


def _model_level(p: np.ndarray, t: np.ndarray, g: list, config: EvalConfig) -> dict[str, Any]:
    """SRCC/PLCC of per-generator means, with generator-stratified bootstrap intervals."""
    known = np.array([x is not None for x in g], dtype=bool)
    p, t = p[known], t[known]
    g = np.array([x for x in g if x is not None], dtype=str)
    n_generators = len(set(g.tolist()))
    result: dict[str, Any] = {"n_generators": n_generators, "n": int(p.size)}
    if n_generators < MIN_GENERATORS:
        result["note"] = f"needs ≥ {MIN_GENERATORS} generators with predictions"
        return result
    for name, metric in (("srcc", metrics.srcc), ("plcc", metrics.plcc)):
        result[name] = _safe(metrics.model_level, metric, p, t, g)
        result[f"{name}_ci"] = _interval(
            functools.partial(_model_level_resample, metric, p, t, g), p.size, config, strata=g
        )
    return result


def _model_level_resample(metric, p: np.ndarray, t: np.ndarray, g: np.ndarray, i) -> float:
    """The model-level metric of one bootstrap resample ``i``."""
    return _safe(metrics.model_level, metric, p[i], t[i], g[i])


def _integer_scale(p: np.ndarray, t: np.ndarray, truth: Truth) -> dict[str, Any]:
    """Accuracy and relaxed accuracy of rounded predictions (VideoScore-Bench-v2, D.2)."""
    if not truth.scale.integer or p.size == 0:
        return {}
    rounded = metrics.to_integer_scale(p)
    return {
        "accuracy": metrics.accuracy(rounded, t),
        "relaxed_accuracy": metrics.relaxed_accuracy(rounded, t),
    }


def _rankings(p: np.ndarray, t: np.ndarray, g: list, config: EvalConfig) -> list[dict[str, Any]]:
    """Generators by mean predicted MOS, with a bootstrap interval of each mean."""
    rng = np.random.default_rng(config.seed)
    rows = []
    for generator in sorted({x for x in g if x is not None}, key=str):
        idx = np.array([k for k, x in enumerate(g) if x == generator])
        values = p[idx]
        row = {"generator": generator, "n": int(idx.size), "pred_mos": float(values.mean())}
        row["mos"] = float(t[idx].mean())
        row["pred_mos_ci"] = None  # a single video or no resampling: no interval
        if config.n_resamples and idx.size > 1:
            draws = rng.choice(values, size=(config.n_resamples, idx.size)).mean(axis=1)
            tail = 50.0 * (1.0 - config.confidence)
            row["pred_mos_ci"] = np.percentile(draws, [tail, 100.0 - tail]).tolist()
        rows.append(row)
    rows.sort(key=lambda r: -r["pred_mos"])
    for row in rows:  # competition ranks: equal means share the better rank
        row["rank"] = 1 + sum(other["pred_mos"] > row["pred_mos"] for other in rows)
        row["mos_rank"] = 1 + sum(other["mos"] > row["mos"] for other in rows)
    return rows


def _mos_dimension(
    report: EvalReport,
    truth: Truth,
    lookup: _Lookup,
    dimension: str,
    config: EvalConfig,
    missing: dict[str, list[str]],
) -> None:
    """Fill the correlation, rankings and points of one MOS dimension."""
    pred, target, gens, words, reasons = [], [], [], [], Counter()
    for video_id, mos in sorted(truth.mos[dimension].items()):
        value, reason = lookup.score(video_id, dimension)
        if reason:
            reasons[reason] += 1
            _record_missing(missing, video_id, reason)
            continue
        pred.append(score_to_mos(value))
        target.append(mos)
        gens.append(truth.videos[video_id].generator)
        words.append(lookup.rating(video_id, dimension))
    p, t = np.array(pred, dtype=float), np.array(target, dtype=float)
    report.correlation[dimension] = {
        "videos": len(truth.mos[dimension]),
        "missing": dict(reasons),
        "instance": _instance_level(p, t, config),
        "model": _model_level(p, t, gens, config),
        **_integer_scale(p, t, truth),
    }
    report.rankings[dimension] = _rankings(p, t, gens, config)
    report.points[dimension] = (pred, target)
    report.confusion[dimension] = _confusion(pred, target, words)


def _rating(mos: float) -> str:
    """R(s) of a MOS, clipped onto the 1–5 scale first."""
    return mos_to_rating(min(max(mos, MOS_MIN), MOS_MAX))


def _confusion(pred: list[float], target: list[float], words: list[str | None]) -> dict[str, Any]:
    """Counts of (true rating R(MOS), predicted rating) over :data:`RATINGS`.

    The predicted rating is the row's rating word when every row has one for this dimension
    (``predicted = "rating"``), else R(predicted MOS) for all (``"R(MOS)"``): one source per
    matrix, so that it says what it shows.

    >>> c = _confusion([1.2, 4.6, 3.0], [1.0, 5.0, 4.0], [None, None, None])
    >>> c["matrix"][3][2], c["predicted"], c["agreement"], c["within_one"]
    (1, 'R(MOS)', 0.6666666666666666, 1.0)
    """
    from_rows = bool(words) and all(w in RATINGS for w in words)
    predicted = words if from_rows else [_rating(m) for m in pred]
    true = [_rating(m) for m in target]
    matrix = [[0] * len(RATINGS) for _ in RATINGS]
    for t, p in zip(true, predicted, strict=True):
        matrix[RATINGS.index(t)][RATINGS.index(p)] += 1
    steps = [abs(RATINGS.index(t) - RATINGS.index(p)) for t, p in zip(true, predicted, strict=True)]
    n = len(steps)
    return {
        "labels": list(RATINGS),
        "matrix": matrix,
        "n": n,
        "predicted": "rating" if from_rows else "R(MOS)",
        "true": "R(MOS)",
        "agreement": sum(s == 0 for s in steps) / n if n else math.nan,
        "within_one": sum(s <= 1 for s in steps) / n if n else math.nan,
    }


# --- preference dimensions ----------------------------------------------------------------------
def _predicted_pairs(
    truth: Truth, lookup: _Lookup, dimension: str, missing: dict[str, list[str]]
) -> tuple[list[tuple[Pair, float, float]], Counter]:
    """The pairs of one dimension whose two videos are predicted, with both r̂; and why the
    others are not."""
    rows, reasons = [], Counter()
    for pair in truth.pairs:
        if pair.dimension != dimension:
            continue
        (a, reason_a), (b, reason_b) = (lookup.score(v, dimension) for v in (pair.a, pair.b))
        for video_id, reason in ((pair.a, reason_a), (pair.b, reason_b)):
            if reason:
                _record_missing(missing, video_id, reason)
        if reason_a or reason_b:
            reasons[reason_a or reason_b] += 1
            continue
        rows.append((pair, a, b))
    return rows, reasons


def _labels_deltas(rows: list[tuple[Pair, float, float]], scale: str):
    """Human labels and Δ = score_A − score_B on the scale of ε."""
    labels = [pair.label for pair, _, _ in rows]
    return labels, [delta_on_scale(a, b, scale) for _, a, b in rows]


def _epsilon(dimension: str, config: EvalConfig, calibration: tuple[Truth, _Lookup] | None):
    """``(ε, protocol, calibration pairs used)`` for one dimension, ε on the configured scale."""
    if calibration is None:
        return config.epsilon, "oracle" if config.oracle else "fixed", 0
    rows, _ = _predicted_pairs(*calibration, dimension, {})
    if not rows:
        raise AnnotationError(f"the calibration split has no predicted {dimension} pairs")
    epsilon, _ = calibrate_epsilon(*_labels_deltas(rows, config.epsilon_scale))
    return epsilon, "calibrated", len(rows)


def _model_preference(rows, truth: Truth, epsilon: float, scale: str) -> dict[str, Any]:
    """Preference accuracy over generators (App. B, model level), at the dimension's ε."""
    scores = {v: on_scale(r_hat, scale) for pair, a, b in rows
              for v, r_hat in ((pair.a, a), (pair.b, b))}
    generators = {v: truth.videos[v].generator for v in scores}
    pairs = [(pair.a, pair.b, pair.label) for pair, _, _ in rows]
    result = asdict(model_level_preference(pairs, scores, generators, epsilon))
    if result["n_generators"] < 2:
        result["note"] = "needs ≥ 2 generators with predicted pairs"
    return result


def _calibrated_preference(rows, lookup: _Lookup, dimension: str) -> dict[str, Any]:
    """P(A > B), P(tie), P(B > A) from rating distributions, scored against the human labels;
    ``{"skipped": reason}`` when any pair's video has no usable probabilities."""
    if not rows:
        return {"skipped": "no predicted pairs"}
    found = {v: lookup.probs(v, dimension) for pair, _, _ in rows for v in (pair.a, pair.b)}
    lacking = Counter(problem for _, problem in found.values() if problem)
    if lacking:
        why = "; ".join(f"{reason}: {n}" for reason, n in lacking.most_common())
        return {"skipped": f"{lacking.total()} of {len(found)} videos without usable rating "
                           f"probabilities ({why})"}
    outcomes = [outcome_probabilities(found[p.a][0], found[p.b][0]) for p, _, _ in rows]
    return asdict(evaluate_calibrated([p.label for p, _, _ in rows], outcomes))


def _preference_dimension(
    report: EvalReport,
    truth: Truth,
    lookup: _Lookup,
    dimension: str,
    config: EvalConfig,
    calibration,
    missing: dict[str, list[str]],
) -> None:
    """Fill the preference accuracies of one dimension (or its error): instance level, model
    level and calibrated."""
    rows, reasons = _predicted_pairs(truth, lookup, dimension, missing)
    entry: dict[str, Any] = {"pairs": sum(p.dimension == dimension for p in truth.pairs)}
    entry["missing"] = dict(reasons)
    try:
        epsilon, protocol, n_calibration = _epsilon(dimension, config, calibration)
    except AnnotationError as error:
        entry["error"] = str(error)
        report.preference[dimension] = entry
        return
    result = evaluate_pairs(*_labels_deltas(rows, config.epsilon_scale), epsilon, protocol)
    entry.update(asdict(result), epsilon_scale=config.epsilon_scale,
                 calibration_pairs=n_calibration)
    entry["model"] = _model_preference(rows, truth, result.epsilon, config.epsilon_scale)
    entry["calibrated"] = _calibrated_preference(rows, lookup, dimension)
    report.preference[dimension] = entry


# --- benchmark figures --------------------------------------------------------------------------
def _averages(report: EvalReport, truth: Truth) -> list[dict[str, Any]]:
    """The benchmark's dimension averages (App. D.3), undefined when any part is."""
    out = []
    for average in truth.averages:
        values = {d: report.correlation.get(d, {}).get("instance", {}).get(average.metric)
                  for d in average.dimensions}
        defined = all(v is not None and math.isfinite(v) for v in values.values())
        out.append({**asdict(average), "level": "instance", "values": values,
                    "value": float(np.mean(list(values.values()))) if defined else None})
    return out


OVERALL_RULE = "mean of the available dimension scores r̂ (App. D.2)"


def _overall(report: EvalReport, lookup: _Lookup) -> dict[str, Any]:
    """How "overall" was predicted, and how many videos from which dimensions."""
    if OVERALL not in report.correlation and OVERALL not in report.preference:
        return {}
    counts = Counter(lookup.overall_parts.values())
    return {"prediction": OVERALL_RULE, "videos_by_dimensions": dict(counts.most_common())}


def _epsilon_summary(config: EvalConfig, protocol: str) -> dict[str, Any]:
    """The tie threshold as the reports state it (value, scale, protocol, one line of text)."""
    scale = SCALE_NAMES[config.epsilon_scale]
    if protocol == "fixed":
        text = f"ε = {describe_epsilon(config.epsilon, config.epsilon_scale)}, fixed (App. A)"
    elif protocol == "calibrated":
        text = f"ε fitted per dimension on the calibration split, on {scale}"
    else:
        text = f"ε fitted per dimension on the test pairs themselves (oracle), on {scale}"
    return {"value": config.epsilon if protocol == "fixed" else None,
            "scale": config.epsilon_scale, "protocol": protocol, "text": text}


# --- entry point --------------------------------------------------------------------------------
def _unmatched(predictions: Predictions, lookups: list[_Lookup], truths: list[Truth]) -> list[str]:
    """Prediction ids that match no video of the test or calibration truth, nor a video that
    was left out on purpose (another split of the same manifest)."""
    used = {pred_id for lookup in lookups for pred_id in lookup.matched.values()}
    excluded = {v.id for truth in truths for v in truth.excluded}
    excluded |= {v.path for truth in truths for v in truth.excluded if v.path}
    return [
        i
        for i in (*predictions.scores, *predictions.errors)
        if i not in used and i not in excluded and predictions.paths.get(i) not in excluded
    ]


def _model_ids(predictions: Predictions) -> list[str]:
    """The distinct model ids of :attr:`Predictions.models` (JSON of ``[model, settings]``)."""
    ids = []
    for entry in sorted(predictions.models):
        try:
            model = json.loads(entry)[0]
        except (ValueError, IndexError, TypeError):
            continue
        if isinstance(model, dict) and model.get("id") and model["id"] not in ids:
            ids.append(str(model["id"]))
    return ids


def _read_rows(path: str | os.PathLike) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The distinct model ids of a prediction file's rows (in order of appearance) and each
    id's rating words, from its last row (as :func:`~qsave.eval.benchmarks.load_predictions`)."""
    models: list[str] = []
    ratings: dict[str, dict[str, str]] = {}
    for _, row in read_results(path).rows:
        model_id = (row.model or {}).get("id")
        if model_id and str(model_id) not in models:
            models.append(str(model_id))
        ratings[row.id] = {d.value: s.rating for d, s in row.scores.items()} if row.ok else {}
    return models, ratings


def provenance(
    benchmark: str,
    pred_path: str | os.PathLike | None = None,
    truth_path: str | os.PathLike | None = None,
    calibration_path: str | os.PathLike | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """Where a report comes from: files (absolute paths), model ids, benchmark, version, date."""
    where = {"predictions": pred_path, "truth": truth_path, "calibration": calibration_path}
    out: dict[str, Any] = {
        "predictions": os.path.abspath(pred_path) if pred_path else None,
        "models": list(models or []),
        "truth": os.path.abspath(truth_path) if truth_path else None,
    }
    if where["calibration"]:
        out["calibration"] = os.path.abspath(where["calibration"])
    out.update(
        benchmark=benchmark,
        qsave_version=__version__,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return out


def evaluate(
    predictions: Predictions,
    truth: Truth,
    config: EvalConfig | None = None,
    calibration: Truth | None = None,
    *,
    pred_path: str | os.PathLike | None = None,
    truth_path: str | os.PathLike | None = None,
    calibration_path: str | os.PathLike | None = None,
) -> EvalReport:
    """Every metric the truth supports; raises when prediction ids match nothing (or, unless
    ``allow_extra``, when some prediction ids match no video).

    ``pred_path``, ``truth_path`` and ``calibration_path`` (optional) are the files the
    predictions and truths were read from: they go into the report's provenance, and the rows
    of ``pred_path`` (:func:`qsave.scores.read_results`) give the model ids and the predicted
    rating words of the confusion matrices. Without ``pred_path``, the model ids come from
    ``predictions.models`` and predicted ratings are R(predicted MOS).

    >>> from qsave.eval.benchmarks import Pair, Predictions, Truth, Video
    >>> truth = Truth("demo", videos={v: Video(v) for v in "abcd"},
    ...               mos={"visual": {"a": 1.0, "b": 2.0, "c": 4.0, "d": 5.0}},
    ...               pairs=[Pair("a", "b", "visual", -1), Pair("c", "d", "visual", 0)])
    >>> predictions = Predictions(scores={"a": {"visual": 0.1}, "b": {"visual": 0.3},
    ...                                   "c": {"visual": 0.7}}, errors={"d": "decode failed"})
    >>> report = evaluate(predictions, truth, EvalConfig(n_resamples=0))
    >>> report.correlation["visual"]["instance"]["srcc"], report.missing
    (1.0, {'prediction error': {'count': 1, 'ids': ['d']}})
    >>> visual = report.preference["visual"]
    >>> visual["accuracy_with_ties"], visual["epsilon"], visual["protocol"], visual["missing"]
    (1.0, 0.05, 'fixed', {'prediction error': 1})
    """
    config = config or EvalConfig()
    if calibration is not None and config.oracle:
        raise ConfigError("choose either a calibration split or the oracle protocol, not both")
    models, ratings = _read_rows(pred_path) if pred_path else (_model_ids(predictions), None)
    lookup = _Lookup(truth, predictions, ratings)
    calib = (calibration, _Lookup(calibration, predictions)) if calibration is not None else None
    truths = [truth] + ([calibration] if calibration is not None else [])
    unmatched = _unmatched(predictions, [lookup] + ([calib[1]] if calib else []), truths)
    if unmatched and not config.allow_extra:
        alone = [v for v in truth.videos if v not in lookup.matched]
        raise AnnotationError(
            f"{len(unmatched)} prediction ids match no {truth.name} video "
            "(pass allow_extra / --allow-extra to only report them): "
            + id_examples(truth, predictions, alone, unmatched)
        )
    truth, mos_pairs = _with_mos_pairs(truth, lookup, config)
    if calib is not None:
        calib = (_with_mos_pairs(calib[0], calib[1], config)[0], calib[1])
    protocol = "calibrated" if calib else ("oracle" if config.oracle else "fixed")
    report = EvalReport(
        benchmark=truth.name,
        protocol=protocol,
        config=asdict(config),
        videos=len(truth.videos),
        missing={},
        unmatched_predictions={"count": len(unmatched), "ids": unmatched[:SHOWN_IDS]},
        problems=[*truth.problems, *predictions.problems],
        notes=[*truth.notes, *predictions.notes],
        provenance=provenance(truth.name, pred_path, truth_path, calibration_path, models),
    )
    missing: dict[str, list[str]] = {}
    for dimension in sorted(truth.mos):
        _mos_dimension(report, truth, lookup, dimension, config, missing)
    for dimension in sorted({p.dimension for p in truth.pairs}):
        _preference_dimension(report, truth, lookup, dimension, config, calib, missing)
    report.missing = _summarise(missing)
    report.epsilon = _epsilon_summary(config, protocol)
    report.averages = _averages(report, truth)
    report.overall = _overall(report, lookup)
    report.mos_pairs = mos_pairs
    report.defect_kinds = _defect_kinds(truth, lookup, config)
    return report


def _defect_kinds(truth: Truth, lookup: _Lookup, config: EvalConfig) -> dict[str, Any]:
    """Figures per defect kind of a truth with labelled defects (:func:`~qsave.eval.kinds.
    srcc_by_kind`, predictions on MOS 1–5, the report's bootstrap settings); ``{}`` without."""
    if not truth.defect_kinds:
        return {}
    predicted: dict[str, dict[str, float]] = {}
    for dimension, labelled in truth.defect_kinds.items():
        scores = {v: lookup.score(v, dimension) for v in labelled}
        predicted[dimension] = {v: score_to_mos(r_hat) for v, (r_hat, reason) in scores.items()
                                if reason is None}
    kind_config = KindConfig(n_resamples=config.n_resamples, confidence=config.confidence,
                             seed=config.seed)
    figures = srcc_by_kind(predicted, truth.mos, truth.defect_kinds, kind_config)
    return {"rule": KIND_RULE, "min_clips": kind_config.min_clips,
            "dimensions": {dim: [asdict(f) for f in rows] for dim, rows in figures.items()}}


def _with_mos_pairs(truth: Truth, lookup: _Lookup, config: EvalConfig):
    """``(truth, about)``: a qsave truth without pairs gets pairs from its MOS, the prompts its
    rows lack taken from the matched prediction rows; other truths are returned as they are."""
    if not truth.mos_pairs or truth.pairs or not truth.mos:
        return truth, {}
    prompts = lookup.predictions.prompts
    found = {v: prompts[p] for v, p in lookup.matched.items() if p in prompts}
    truth, about = derive_mos_pairs(truth, found, config.tie_margin)
    default = config.tie_margin == EvalConfig.tie_margin
    about["tie_margin_source"] = TIE_MARGIN_SOURCE if default else "set by the user"
    return truth, about


# --- renderers ----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_to_json(report: EvalReport) -> str:
    """The report as JSON, provenance first (without plot points); undefined metrics are
    ``null``."""
    data = {k: v for k, v in asdict(report).items() if k != "points"}
    data = {"provenance": data.pop("provenance"), **data}
    if not data["defect_kinds"]:  # only a truth with labelled defects has the section
        del data["defect_kinds"]
    return json.dumps(_plain(data), indent=2, ensure_ascii=False)


def _fmt(value: Any, ci: list[float] | None = None, sep: str = " ") -> str:
    """A metric with 3 decimals and its interval (after ``sep``), ``–`` when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.3f}"
    return f"{text}{sep}[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else text


def _dimensions(report: EvalReport) -> list[str]:
    """Every dimension of the report: visual, dynamic, alignment, overall, then any other."""
    names = {*report.correlation, *report.preference}
    known = [d for d in DIMENSION_NAMES if d in names]
    return known + sorted(names - set(known))


def _integer_scale_shown(report: EvalReport) -> bool:
    """Whether any dimension has integer-scale accuracies."""
    return any("accuracy" in entry for entry in report.correlation.values())


def _provenance_lines(report: EvalReport) -> list[tuple[str, str]]:
    """``(label, text)`` of the provenance, in the order every report shows it."""
    prov = report.provenance
    models = ", ".join(prov.get("models") or []) or "unknown (no model field in the rows)"
    lines = [
        ("predictions", prov.get("predictions") or "(not given)"),
        ("model", models),
        ("truth", prov.get("truth") or "(not given)"),
    ]
    if prov.get("calibration"):
        lines.append(("calibration", prov["calibration"]))
    lines += [
        ("benchmark", prov.get("benchmark", report.benchmark)),
        ("qsave", prov.get("qsave_version", __version__)),
        ("date", prov.get("date", "")),
    ]
    return lines


def _setting_lines(report: EvalReport) -> list[tuple[str, str]]:
    """``(label, text)`` of what every report states after its provenance: ε with its scale
    and protocol, and how "overall" was predicted."""
    lines = [("epsilon", report.epsilon["text"])]
    if report.overall:
        by_dims = report.overall["videos_by_dimensions"]
        counts = ", ".join(f"{dims} {n}" for dims, n in by_dims.items())
        lines.append(("overall", f"{report.overall['prediction']}; videos: {counts or 'none'}"))
    if report.mos_pairs:
        lines.append(("pairs", _mos_pairs_text(report.mos_pairs)))
    return lines


def _mos_pairs_text(about: dict[str, Any]) -> str:
    """One line on the pairs built from MOS: the rule, the tie margin, counts, or why none."""
    margin = f"m = {about['tie_margin']:g} on {about['scale']} ({about['tie_margin_source']})"
    if about["reason"]:
        return f"none built from MOS: {about['reason']}; rule: {about['rule']}, {margin}"
    counts = ", ".join(f"{dim} {n} ({about['human_ties'].get(dim, 0)} ties)"
                       for dim, n in about["pairs"].items())
    sources = (f"{about['prompts_from_truth']} from the truth, "
               f"{about['prompts_from_predictions']} from the prediction rows")
    without = about["videos_without_prompt"]
    return (f"built from MOS, {counts}: {about['rule']}, {margin}; prompts: {sources}"
            + (f"; {without} videos without a prompt are in no pair" if without else ""))


@dataclass
class _TextTable:
    """A table for the terminal: a cell may hold two lines (a value and its interval)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def left(self, k: int) -> bool:
        """Whether column ``k`` holds text (left-aligned) rather than numbers."""
        return k == 0 or self.headers[k] in ("protocol", "metric", "dimensions", "kind", "note")


def _terminal_tables(report: EvalReport) -> list[_TextTable]:
    """The summary, as narrow tables: instance level, model level, preference."""
    tables = []
    correlation = [(d, report.correlation[d]) for d in _dimensions(report)
                   if d in report.correlation]
    if correlation:
        integer = _integer_scale_shown(report)
        inst = _TextTable(
            f"{report.benchmark}: correlation with MOS, instance level ({_ci_label(report)})",
            ["dimension", "n", "missing", "SRCC", "PLCC", "KRCC", "RMSE"],
            [],
        )
        scale = _TextTable(
            f"{report.benchmark}: integer scale (rounded predicted MOS)",
            ["dimension", "n", "accuracy", "accuracy ±1"],
            [],
        )
        model = _TextTable(
            f"{report.benchmark}: correlation with MOS, model level (generator means)",
            ["dimension", "generators", "SRCC", "PLCC"],
            [],
        )
        for dimension, entry in correlation:
            i, m = entry["instance"], entry["model"]
            row = [dimension, str(i["n"]), str(sum(entry["missing"].values())),
                   _fmt(i["srcc"], i["srcc_ci"], "\n"), _fmt(i["plcc"], i["plcc_ci"], "\n"),
                   _fmt(i["krcc"]), _fmt(i["rmse"])]
            inst.rows.append(row)
            if "accuracy" in entry:
                scale.rows.append([dimension, str(i["n"]), _fmt(entry["accuracy"]),
                                   _fmt(entry["relaxed_accuracy"])])
            if i.get("fit_error"):
                inst.notes.append(f"{dimension}: PLCC undefined, {i['fit_error']}")
            model.rows.append([dimension, str(m["n_generators"]),
                               _fmt(m.get("srcc"), m.get("srcc_ci"), "\n"),
                               _fmt(m.get("plcc"), m.get("plcc_ci"), "\n")])
            if "note" in m:
                model.notes.append(f"{dimension}: {m['note']}")
        tables += [inst, model] + ([scale] if integer else []) + _kind_tables(report)
    return tables + _preference_tables(report) + _averages_tables(report)


def _ci_label(report: EvalReport) -> str:
    """What the intervals of the correlation tables are: "95% CI", or "no CI"."""
    if not report.config.get("n_resamples"):
        return "no CI"
    return f"{report.config.get('confidence', 0.95):.0%} CI"


def _kind_note(figure: dict[str, Any]) -> str:
    """Why a kind has no correlation, and how many of its clips lack a prediction."""
    missing = f"{figure['missing']} without a prediction" if figure["missing"] else None
    return "; ".join(text for text in (figure["note"], missing) if text)


def _kind_legend(section: dict[str, Any]) -> str:
    """What the per-kind figures are, as every report says it."""
    return (f"Per defect kind: {section['rule']}. shared: clips of the kind whose dimension "
            "also carries another kind. The MOS columns: means of the human and the predicted "
            "MOS over the kind's clips (1–5). "
            f"No correlation below {section['min_clips']} clips or when the MOS or the "
            "predictions of a kind are all equal.")


def _kind_tables(report: EvalReport) -> list[_TextTable]:
    """SRCC and PLCC per dimension and defect kind (a truth with labelled defects only)."""
    section = report.defect_kinds
    if not section:
        return []
    table = _TextTable(f"{report.benchmark}: correlation with MOS per defect kind "
                       f"({_ci_label(report)})",
                       ["dimension", "kind", "n", "shared", "SRCC", "PLCC", "MOS", "pred MOS",
                        "note"], [], [_kind_legend(section)])
    for dimension, figures in section["dimensions"].items():
        for k, fig in enumerate(figures):
            table.rows.append([dimension if k == 0 else "", fig["kind"], str(fig["n"]),
                               str(fig["shared"]), _fmt(fig["srcc"], fig["srcc_ci"], "\n"),
                               _fmt(fig["plcc"], fig["plcc_ci"], "\n"), _fmt(fig["mos_mean"]),
                               _fmt(fig["pred_mean"]), _kind_note(fig)])
    return [table]


def _scale_short(report: EvalReport) -> str:
    """The short name of ε's scale for column headers: r̂ or MOS."""
    return {"r": "r̂", "mos": "MOS"}[report.epsilon["scale"]]


def _preference_tables(report: EvalReport) -> list[_TextTable]:
    """Preference accuracy at instance level, at model level, and calibrated."""
    entries = [(d, report.preference[d]) for d in _dimensions(report) if d in report.preference]
    if not entries:
        return []
    name, scale = report.benchmark, _scale_short(report)
    pref = _TextTable(f"{name}: preference accuracy, instance level (pairs; Δ and ε on "
                      f"{SCALE_NAMES[report.epsilon['scale']]})",
                      ["dimension", "pairs", "missing", "w/ ties", "w/o ties", f"ε ({scale})",
                       "protocol"], [])
    model = _TextTable(f"{name}: preference accuracy, model level (human win rate vs mean "
                       f"predicted {scale} per generator)",
                       ["dimension", "generators", "pairs", "w/ ties", "w/o ties", f"ε ({scale})"],
                       [])
    calib = _TextTable(f"{name}: calibrated preference (P(A>B), P(tie) from rating "
                       "distributions; videos independent)",
                       ["dimension", "pairs", "w/ ties", "w/o ties", "LL w/ ties", "LL w/o ties"],
                       [], ["LL: log-loss, nats per pair (a uniform guess: ln 3 = 1.099 with "
                            "ties, ln 2 = 0.693 without)"])
    for dimension, entry in entries:
        if "error" in entry:
            pref.rows.append([dimension, str(entry["pairs"]), "–", "–", "–", "–", "–"])
            pref.notes.append(f"{dimension}: {entry['error']}")
            continue
        pref.rows.append([dimension, str(entry["n_pairs"]), str(sum(entry["missing"].values())),
                          _fmt(entry["accuracy_with_ties"]), _fmt(entry["accuracy_without_ties"]),
                          f"{entry['epsilon']:.4g}", entry["protocol"]])
        m, c = entry["model"], entry["calibrated"]
        model.rows.append([dimension, str(m["n_generators"]), str(m["n_generator_pairs"]),
                           _fmt(m["accuracy_with_ties"]), _fmt(m["accuracy_without_ties"]),
                           f"{m['epsilon']:.4g}"])
        model.notes += [f"{dimension}: {m['note']}"] if "note" in m else []
        if "skipped" in c:
            calib.rows.append([dimension, str(entry["n_pairs"]), "–", "–", "–", "–"])
            calib.notes.append(f"{dimension}: skipped, {c['skipped']}")
            continue
        calib.rows.append([dimension, str(c["n_pairs"]), _fmt(c["accuracy_with_ties"]),
                           _fmt(c["accuracy_without_ties"]), _fmt(c["log_loss_with_ties"]),
                           _fmt(c["log_loss_without_ties"])])
    return [pref] + [t for t in (model, calib) if t.rows]


def _averages_tables(report: EvalReport) -> list[_TextTable]:
    """The benchmark's dimension averages (App. D.3), e.g. VideoPhy2-test's Avg PLCC."""
    if not report.averages:
        return []
    table = _TextTable(f"{report.benchmark}: dimension averages as the paper reports them",
                       ["average", "metric", "dimensions", "value"], [])
    for average in report.averages:
        parts = ", ".join(f"{d} {_fmt(v)}" for d, v in average["values"].items())
        table.rows.append([average["name"], average["metric"].upper(),
                           " + ".join(average["dimensions"]), _fmt(average["value"])])
        table.notes.append(f"{average['name']}: {average['source']} ({parts})")
    return [table]


def _rich_table(table: _TextTable):
    """The table as rich renders it: no column is ever wrapped or cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for k, header in enumerate(table.headers):
        out.add_column(header, justify="left" if table.left(k) else "right", no_wrap=True,
                       overflow="fold", min_width=len(header))
    for row in table.rows:
        out.add_row(*(Text(cell) for cell in row))
    return out


def _markdown_table(table: _TextTable) -> str:
    """The table as plain markdown: one line per row, every cell whole."""
    rows = [[cell.replace("\n", " ") for cell in row] for row in table.rows]
    widths = [max(len(r[k]) for r in [table.headers, *rows]) for k in range(len(table.headers))]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if table.left(k) else c.rjust(w)
                 for k, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join((":" + "-" * (w + 1)) if table.left(k) else ("-" * (w + 1) + ":")
                          for k, w in enumerate(widths)) + "|"
    return "\n".join([f"{table.title}", "", line(table.headers), rule, *map(line, rows)])


def _print_table(table: _TextTable, console) -> None:
    """A rich table on a terminal wide enough for all of it, else plain markdown."""
    from rich.measure import Measurement

    rich_table = _rich_table(table)
    width = Measurement.get(console, console.options.update_width(10_000), rich_table).maximum
    if console.is_terminal and width <= console.width:
        console.print(table.title, style="bold", markup=False, highlight=False, soft_wrap=True)
        console.print(rich_table)
        console.print()
    else:
        console.print(_markdown_table(table), markup=False, highlight=False, soft_wrap=True)
        console.print()
    for note in table.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def print_report(report: EvalReport, console) -> None:
    """Provenance and ε, then the summary tables, then what was missing.

    On a terminal wide enough, rich tables (an interval on the line below its value); piped,
    redirected, or on a narrow terminal, plain markdown tables. No cell is ever cut.
    """
    for label, text in [*_provenance_lines(report), *_setting_lines(report)]:
        console.print(f"{label:<12} {text}", markup=False, highlight=False, soft_wrap=True)
    console.print()
    for table in _terminal_tables(report):
        _print_table(table, console)
    _print_missing(report, console)


def _print_missing(report: EvalReport, console) -> None:
    """One line per missing reason, unmatched predictions and problems."""
    from rich.markup import escape

    for reason, entry in report.missing.items():
        console.print(
            f"[yellow]missing[/yellow] {entry['count']} videos ({escape(reason)}): "
            f"{escape(', '.join(entry['ids'][:5]))}",
            soft_wrap=True,
        )
    if report.unmatched_predictions["count"]:
        console.print(
            f"[yellow]unmatched[/yellow] {report.unmatched_predictions['count']} "
            "prediction ids match no video"
        )
    for problem in report.problems[:SHOWN_IDS]:
        console.print(f"[yellow]skipped[/yellow] {escape(problem)}", soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _figure(width: float, height: float):
    """A matplotlib figure on an Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _png(figure, bottom: float = 0.0) -> str:
    """The figure as base64 PNG; ``bottom``: the share of its height kept for a legend."""
    figure.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _scatter_png(dimension: str, pred: list[float], target: list[float]) -> str:
    """Prediction against MOS for one dimension, with the identity line."""
    figure = _figure(4.2, 4.0)
    axes = figure.add_subplot()
    axes.scatter(target, pred, s=14, alpha=0.7)
    axes.plot([1, 5], [1, 5], color="grey", linewidth=0.8, linestyle="--")
    axes.set(xlim=(0.8, 5.2), ylim=(0.8, 5.2), xlabel="human MOS")
    axes.set_ylabel(r"predicted MOS ($1 + 4\hat{r}$)")
    axes.set_title(f"{dimension} (n = {len(pred)})")
    return _png(figure)


def _ranking_png(dimension: str, rows: list[dict[str, Any]]) -> str:
    """Generators by predicted mean MOS with bootstrap intervals, human mean MOS beside."""
    height = 1.6 + 0.3 * len(rows)
    figure = _figure(4.6, height)
    axes = figure.add_subplot()
    y = np.arange(len(rows))[::-1]
    means = np.array([r["pred_mos"] for r in rows])
    cis = [r["pred_mos_ci"] or [r["pred_mos"]] * 2 for r in rows]
    errors = np.abs(np.array(cis).T - means)
    axes.errorbar(means, y, xerr=errors, fmt="o", capsize=3, label="predicted (CI)")
    axes.scatter([r["mos"] for r in rows], y, marker="x", color="black", label="human")
    axes.set_yticks(y, [str(r["generator"]) for r in rows])
    axes.set(xlabel="mean MOS", title=f"{dimension}: generators", xlim=(0.8, 5.2))
    axes.set_ylim(-0.6, len(rows) - 0.4)
    figure.legend(fontsize="small", loc="lower center", ncol=2, frameon=False)
    return _png(figure, bottom=0.3 / height)


def _summary_rows(report: EvalReport) -> list[dict[str, Any]]:
    """One row per dimension for the HTML summary: its correlation and preference entries."""
    return [
        {"dim": d, "c": report.correlation.get(d), "p": report.preference.get(d)}
        for d in _dimensions(report)
    ]


def _tint(value: float | None) -> str:
    """Background of a per-kind correlation: green when positive, red when negative."""
    if value is None or not math.isfinite(value):
        return ""
    colour = "44,160,44" if value >= 0 else "214,39,40"
    return f"background:rgba({colour},{0.08 + 0.5 * abs(value):.2f})"


def _shade(count: int, total: int) -> str:
    """Background of a confusion cell: blue, by the share of its row (true rating)."""
    share = count / total if total else 0.0
    return f"background:rgba(31,119,180,{0.08 + 0.8 * share:.2f})" if count else ""


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>qsave eval: {{ r.benchmark }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}
h1{margin:0 0 .3em}h2{margin:1.4em 0 .4em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#eee}td.text,th.text{text-align:left}
table.prov td,table.prov th{border:none;text-align:left;padding:1px 12px 1px 0}
table.prov th{background:none;color:#555;font-weight:600}
table.summary td.dim{text-align:left;font-weight:600}
table.summary tr.group th{background:#dde6f0;text-align:center}
table.summary tr.group th.text{text-align:left}
.ci{display:block;color:#777;font-size:.82em;white-space:nowrap}
.note{color:#777;font-size:.85em;text-align:left}.warn{color:#a60}.legend{color:#555;font-size:.9em}
.grid{display:grid;gap:1em 1.8em;align-items:start;
grid-template-columns:minmax(280px,1fr) minmax(320px,1.15fr) max-content}
@media (max-width:1150px){
.grid{grid-template-columns:repeat(auto-fill,minmax(min(100%,480px),1fr))}}
.scroll{overflow-x:auto;max-width:100%}
.grid figure{margin:0;min-width:0;overflow-x:auto}
.grid img{width:100%;max-width:560px;height:auto;display:block}
figcaption{color:#555;font-size:.88em;margin-top:.3em;max-width:28em}
table.confusion{font-size:.92em}table.confusion th{text-align:center}
table.confusion td{min-width:2.6em;text-align:center}
table.confusion td.diag{font-weight:700;outline:2px solid #1f77b4;outline-offset:-2px}
table.confusion th.corner{background:none;font-weight:400;font-size:.8em;color:#555;
text-align:left;line-height:1.2}
table.ranks{font-size:.88em}table.ranks td{white-space:nowrap}
table.ranks td.text{white-space:normal;overflow-wrap:anywhere}
table.kinds td.dim{font-weight:600;background:#f6f6f6}table.kinds td.note{min-width:12em}
</style></head><body>
<h1>qsave eval: {{ r.benchmark }}</h1>
<table class="prov">
{% for label, text in prov %}<tr><th>{{ label }}</th><td>{{ text }}</td></tr>
{% endfor %}</table>
<p>{{ r.videos }} videos; missing predictions: {{ r.n_missing }}</p>
{% for reason, e in r.missing.items() %}<p class="warn">missing {{ e.count }} ({{ reason }}):
{{ e.ids | join(", ") }}</p>{% endfor %}
{% if r.unmatched_predictions.count %}<p class="warn">{{ r.unmatched_predictions.count }}
prediction ids match no video: {{ r.unmatched_predictions.ids | join(", ") }}</p>{% endif %}
{% for p in r.problems %}<p class="warn">skipped: {{ p }}</p>{% endfor %}
{% for n in r.notes %}<p>note: {{ n }}</p>{% endfor %}

<h2>Summary</h2>
<div class="scroll"><table class="summary">
<tr class="group"><th class="text" rowspan="2">dimension</th>
{% if r.correlation %}<th colspan="6">instance level (videos)</th>
<th colspan="3">model level (generator means)</th>
{% if integer %}<th colspan="2">integer scale</th>{% endif %}{% endif %}
{% if r.preference %}<th colspan="4">preference, instance level (pairs)</th>
<th colspan="3">preference, model level (generators)</th>
<th colspan="2">calibrated preference</th>{% endif %}</tr>
<tr>{% if r.correlation %}<th>n</th><th>missing</th><th>SRCC</th><th>PLCC</th><th>KRCC</th>
<th>RMSE</th><th>generators</th><th>SRCC</th><th>PLCC</th>
{% if integer %}<th>acc</th><th>acc ±1</th>{% endif %}{% endif %}
{% if r.preference %}<th>pairs</th><th>w/ ties</th><th>w/o ties</th><th>ε ({{ scale }})</th>
<th>generators</th><th>w/ ties</th><th>w/o ties</th><th>w/ ties</th><th>log-loss</th>
{% endif %}</tr>
{% for row in summary %}{% set c = row.c %}{% set p = row.p %}<tr><td class="dim">{{ row.dim }}</td>
{% if r.correlation %}{% if c %}
<td>{{ c.instance.n }}</td><td>{{ c.missing.values() | sum }}</td>
<td>{{ v(c.instance.srcc, c.instance.srcc_ci) }}</td>
<td>{{ v(c.instance.plcc, c.instance.plcc_ci) }}</td>
<td>{{ v(c.instance.krcc) }}</td><td>{{ v(c.instance.rmse) }}</td>
<td>{{ c.model.n_generators }}</td>
{% if c.model.srcc is defined %}<td>{{ v(c.model.srcc, c.model.srcc_ci) }}</td>
<td>{{ v(c.model.plcc, c.model.plcc_ci) }}</td>
{% else %}<td colspan="2" class="note">{{ c.model.note }}</td>{% endif %}
{% if integer %}<td>{{ v(c.accuracy) if c.accuracy is defined else "–" }}</td>
<td>{{ v(c.relaxed_accuracy) if c.relaxed_accuracy is defined else "–" }}</td>{% endif %}
{% else %}<td colspan="{{ 11 if integer else 9 }}" class="note">no MOS</td>{% endif %}{% endif %}
{% if r.preference %}{% if p and p.error is defined %}<td>{{ p.pairs }}</td>
<td colspan="8" class="note">{{ p.error }}</td>
{% elif p %}<td>{{ p.n_pairs }}</td><td>{{ v(p.accuracy_with_ties) }}</td>
<td>{{ v(p.accuracy_without_ties) }}</td><td>{{ "%.4g" | format(p.epsilon) }}</td>
<td>{{ p.model.n_generators }}</td><td>{{ v(p.model.accuracy_with_ties) }}</td>
<td>{{ v(p.model.accuracy_without_ties) }}</td>
{% if p.calibrated.skipped is defined %}<td colspan="2" class="note">skipped</td>
{% else %}<td>{{ v(p.calibrated.accuracy_with_ties) }}</td>
<td>{{ v(p.calibrated.log_loss_with_ties) }}</td>{% endif %}
{% else %}<td colspan="9" class="note">no pairs</td>{% endif %}{% endif %}</tr>
{% endfor %}</table></div>
<p class="legend">
{% if r.correlation %}Predictions on the MOS scale 1 + 4·r̂.
{% if r.config.n_resamples %}Brackets: {{ "%.0f" | format(100 * r.config.confidence) }}%
bootstrap intervals ({{ r.config.n_resamples }} resamples; model level stratified by
generator).{% else %}No bootstrap intervals.{% endif %}
PLCC fit: {{ r.config.fit }}. Model level: SRCC/PLCC of per-generator means.
{% if integer %}acc: rounded predicted MOS equals the integer score; acc ±1: within one.{% endif %}
{% endif %}
{% if r.preference %}Preference: Δ = score<sub>A</sub> − score<sub>B</sub> on {{ scale_name }};
a tie when |Δ| ≤ ε, here {{ r.epsilon.text }}; w/o ties drops human ties and predicts
sign(Δ).
Model level (App. B): per generator, the human win rate over its pairs (win 1, tie ½) and the
mean predicted score of its videos; accuracy over every pair of generators at the same ε.
Calibrated (not in the paper): P(A&gt;B), P(tie), P(B&gt;A) from the two videos' rating
distributions, assumed independent; accuracy of the most likely outcome, log-loss in nats
(uniform guess: ln 3 = 1.099).{% endif %}</p>
{% if r.averages %}<h2>dimension averages</h2><div class="scroll">
<table><tr><th class="text">average</th>
<th class="text">metric</th><th class="text">dimensions</th><th>value</th>
<th class="text">as the paper defines it</th></tr>
{% for a in r.averages %}<tr><td class="text">{{ a.name }}</td>
<td class="text">{{ a.metric | upper }}</td><td class="text">
{% for d, x in a["values"].items() %}{{ d }} {{ f(x) }}{{ " + " if not loop.last }}{% endfor %}
</td><td>{{ f(a.value) }}</td><td class="text">{{ a.source }}</td></tr>{% endfor %}
</table></div>{% endif %}
{% if r.defect_kinds %}<h2>per defect kind</h2><div class="scroll">
<table class="kinds"><tr><th class="text">dimension</th><th class="text">kind</th><th>n</th>
<th>shared</th><th>SRCC</th><th>PLCC</th><th>mean MOS</th><th>mean predicted MOS</th>
<th class="text">note</th></tr>
{% for dim, figures in r.defect_kinds["dimensions"].items() %}{% for k in figures %}<tr>
{% if loop.first %}<td class="text dim" rowspan="{{ figures | length }}">{{ dim }}</td>
{% endif %}<td class="text">{{ k.kind }}</td><td>{{ k.n }}</td><td>{{ k.shared }}</td>
<td style="{{ tint(k.srcc) }}">{{ v(k.srcc, k.srcc_ci) }}</td>
<td style="{{ tint(k.plcc) }}">{{ v(k.plcc, k.plcc_ci) }}</td>
<td>{{ f(k.mos_mean) }}</td><td>{{ f(k.pred_mean) }}</td>
<td class="note">{{ kind_note(k) }}</td></tr>{% endfor %}{% endfor %}
</table></div>
<p class="legend">{{ kind_legend(r.defect_kinds) }} Shading: green for agreement with the
human ranking, red for disagreement, stronger with |value|.</p>{% endif %}

{% for row in summary if row.c %}{% set dim = row.dim %}{% set e = row.c %}
{% set cm = r.confusion[dim] %}
<h2>{{ dim }}</h2>
<div class="grid">
<figure class="plot"><img alt="scatter {{ dim }}" src="data:image/png;base64,{{ plots[dim] }}">
<figcaption>Predicted against human MOS; dashed: identity.</figcaption></figure>
{% if r.rankings[dim] %}<figure class="ranking">
<img alt="ranking {{ dim }}" src="data:image/png;base64,{{ ranks[dim] }}">
<table class="ranks"><tr><th>rank</th><th class="text">generator</th><th>n</th>
<th>predicted MOS [CI]</th><th>human MOS (rank)</th></tr>
{% for row in r.rankings[dim] %}<tr><td>{{ row.rank }}</td><td class="text">{{ row.generator }}</td>
<td>{{ row.n }}</td><td>{{ f(row.pred_mos, row.pred_mos_ci) }}</td>
<td>{{ f(row.mos) }} ({{ row.mos_rank }})</td></tr>{% endfor %}</table>
<figcaption>Generators by mean predicted MOS (bootstrap interval); ×: human mean MOS.
</figcaption></figure>{% endif %}
<figure class="confusion"><table class="confusion" aria-label="confusion {{ dim }}">
<tr><th class="corner" rowspan="2">true ↓<br>predicted →</th>
<th colspan="{{ cm.labels | length }}">predicted rating</th><th rowspan="2">n</th></tr>
<tr>{% for label in cm.labels %}<th>{{ label }}</th>{% endfor %}</tr>
{% for true_label in cm.labels %}{% set row_index = loop.index0 %}
{% set counts = cm.matrix[row_index] %}{% set total = counts | sum %}<tr>
<th class="text">{{ true_label }}</th>
{% for count in counts %}<td{{ ' class="diag"' | safe if loop.index0 == row_index else '' }}
 style="{{ shade(count, total) }}">{{ count }}</td>
{% endfor %}<td>{{ total }}</td></tr>{% endfor %}
</table>
<figcaption>Confusion of ratings over {{ cm.n }} videos: true = R(human MOS) (Sec. 3.4.2);
predicted = {% if cm.predicted == "rating" %}each row's rating word (the most likely rating)
{%- else %}R(predicted MOS){% endif %}. Exact agreement {{ f(cm.agreement) }}, within one rating
{{ f(cm.within_one) }}. Shading: share of the true rating's row; outlined: the diagonal.
</figcaption></figure>
</div>
{% endfor %}
{% if r.preference %}<h2>preference details</h2><div class="scroll">
<table><tr><th class="text">dimension</th>
<th>pairs</th><th>missing</th><th>human ties</th><th>predicted ties</th><th>w/ ties</th>
<th>w/o ties</th><th>ε ({{ scale }})</th><th class="text">protocol</th></tr>
{% for row in summary if row.p %}{% set dim = row.dim %}{% set e = row.p %}
<tr><td class="text">{{ dim }}</td>
{% if e.error is defined %}<td>{{ e.pairs }}</td><td colspan="7" class="note">{{ e.error }}</td>
{% else %}<td>{{ e.n_pairs }}</td><td>{{ e.missing.values() | sum }}</td>
<td>{{ e.n_human_ties }}</td><td>{{ e.n_predicted_ties }}</td>
<td>{{ f(e.accuracy_with_ties) }}</td><td>{{ f(e.accuracy_without_ties) }}</td>
<td>{{ "%.4g" | format(e.epsilon) }}</td><td class="text">{{ e.protocol }}</td>{% endif %}</tr>
{% endfor %}</table></div>
<h3>model level (App. B)</h3><div class="scroll">
<table><tr><th class="text">dimension</th><th>generators</th>
<th>generator pairs</th><th>human ties</th><th>video pairs</th><th>pairs left out</th>
<th>w/ ties</th><th>w/o ties</th><th>ε ({{ scale }})</th></tr>
{% for row in summary if row.p and row.p.model is defined %}{% set m = row.p.model %}
<tr><td class="text">{{ row.dim }}</td><td>{{ m.n_generators }}</td>
<td>{{ m.n_generator_pairs }}</td>
<td>{{ m.n_human_ties }}</td><td>{{ m.n_pairs }}</td><td>{{ m.n_pairs_skipped }}</td>
<td>{{ f(m.accuracy_with_ties) }}</td><td>{{ f(m.accuracy_without_ties) }}</td>
<td>{{ "%.4g" | format(m.epsilon) }}</td></tr>{% endfor %}</table></div>
{% for row in summary if row.p and row.p.model is defined and row.p.model.generators %}
<details><summary>{{ row.dim }}: generators</summary><div class="scroll"><table class="ranks">
<tr><th class="text">generator</th><th>pairs</th><th>videos</th><th>human win rate</th>
<th>mean predicted ({{ scale }})</th></tr>
{% for g in row.p.model.generators %}<tr><td class="text">{{ g.generator }}</td>
<td>{{ g.pairs }}</td>
<td>{{ g.videos }}</td><td>{{ f(g.win_rate) }}</td><td>{{ f(g.score) }}</td></tr>{% endfor %}
</table></div></details>{% endfor %}
<h3>calibrated preference (rating distributions)</h3><div class="scroll">
<table><tr><th class="text">dimension</th>
<th>pairs</th><th>predicted ties</th><th>mean P(tie)</th><th>w/ ties</th><th>w/o ties</th>
<th>log-loss w/ ties</th><th>log-loss w/o ties</th></tr>
{% for row in summary if row.p and row.p.calibrated is defined %}{% set c = row.p.calibrated %}
<tr><td class="text">{{ row.dim }}</td>
{% if c.skipped is defined %}<td>{{ row.p.n_pairs }}</td><td colspan="6" class="note">skipped:
{{ c.skipped }}</td>{% else %}<td>{{ c.n_pairs }}</td><td>{{ c.n_predicted_ties }}</td>
<td>{{ f(c.mean_p_tie) }}</td><td>{{ f(c.accuracy_with_ties) }}</td>
<td>{{ f(c.accuracy_without_ties) }}</td><td>{{ f(c.log_loss_with_ties) }}</td>
<td>{{ f(c.log_loss_without_ties) }}</td>{% endif %}</tr>{% endfor %}</table></div>
{% endif %}
</body></html>
"""


def render_html(report: EvalReport) -> str:
    """The HTML report: provenance, one summary table of every dimension, the figures per
    defect kind (a truth with labelled defects), then per MOS dimension its scatter plot,
    generator ranking and rating confusion matrix side by side."""
    import jinja2
    from markupsafe import Markup, escape

    def value(metric: Any, ci: list[float] | None = None) -> Markup:
        """A summary cell: the value, its interval on a second line."""
        text = escape(_fmt(metric))
        if ci and text != "–":
            return Markup(f'{text}<span class="ci">[{ci[0]:.2f}, {ci[1]:.2f}]</span>')
        return Markup(text)

    plots = {dim: _scatter_png(dim, *report.points[dim]) for dim in report.correlation}
    ranks = {dim: _ranking_png(dim, rows) for dim, rows in report.rankings.items() if rows}
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_HTML).render(
        r=report,
        prov=[*_provenance_lines(report), *_setting_lines(report)],
        scale=_scale_short(report),
        scale_name=SCALE_NAMES[report.epsilon["scale"]],
        summary=_summary_rows(report),
        integer=_integer_scale_shown(report),
        plots=plots,
        ranks=ranks,
        f=_fmt,
        v=value,
        shade=_shade,
        tint=_tint,
        kind_note=_kind_note,
        kind_legend=_kind_legend,
    )


def write_html(report: EvalReport, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path``."""
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
