"""The evaluation harness: predictions × ground truth → metrics, and its reports (App. B, D.2).

:func:`evaluate` joins ``qsave score`` predictions with a :class:`~qsave.eval.benchmarks.Truth`,
counts every missing prediction (no line, an ``error`` line, a NaN score) per dimension instead of
skipping it silently, and computes

* per MOS dimension: instance-level SRCC/PLCC/KRCC/RMSE with bootstrap intervals, model-level
  SRCC/PLCC on per-generator means, accuracy and relaxed accuracy on integer-scale benchmarks,
  and per-generator rankings with intervals;
* per preference dimension: accuracy with and without ties, always with its ε and protocol.

Predictions are compared on the MOS scale ``1 + 4·r̂``; preference differences Δ use r̂ (0..1),
the scale of the App. A tie threshold. "Overall" predictions are the mean of the available
dimension scores (App. D.2). Renderers: :func:`print_report` (rich), :func:`report_to_json`,
:func:`write_html` (jinja2 + matplotlib, plots embedded as PNG).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qsave.dimensions import DIMENSIONS, score_to_mos
from qsave.errors import AnnotationError, ConfigError, QsaveError
from qsave.eval import metrics
from qsave.eval.benchmarks import OVERALL, Predictions, Truth, match_predictions
from qsave.eval.preference import DEFAULT_EPSILON, calibrate_epsilon, evaluate_pairs

FITS = ("none", "logistic4", "logistic5")
MIN_GENERATORS = 3  # model level needs ≥ 3 generators: two points always correlate at ±1
SHOWN_IDS = 20  # ids listed per missing/unmatched category in reports


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation; the CLI flags of ``qsave eval`` mirror these fields."""

    epsilon: float = DEFAULT_EPSILON  # tie threshold on r̂ for the fixed protocol (App. A)
    oracle: bool = False  # calibrate ε on the test pairs themselves; reported as "oracle"
    fit: str = "none"  # none | logistic4 | logistic5: VQEG mapping of predictions before PLCC
    n_resamples: int = 1000  # bootstrap resamples for confidence intervals (0: none)
    confidence: float = 0.95  # level of the bootstrap intervals
    seed: int = 0  # seed of the bootstrap
    allow_extra: bool = False  # prediction ids matching no truth video: report, don't raise

    def __post_init__(self) -> None:
        if not math.isfinite(self.epsilon) or self.epsilon < 0:
            raise ConfigError(f"epsilon ({self.epsilon}) must be a finite number ≥ 0")
        if self.fit not in FITS:
            raise ConfigError(f"fit ({self.fit!r}) must be one of {', '.join(FITS)}")
        if self.n_resamples < 0:
            raise ConfigError(f"n_resamples ({self.n_resamples}) must be ≥ 0")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence ({self.confidence}) must lie in (0, 1)")


@dataclass
class EvalReport:
    """Everything one evaluation found; ``points`` (for plots) is left out of the JSON."""

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

    @property
    def n_missing(self) -> int:
        """Truth videos without a usable prediction, over all reasons."""
        return sum(entry["count"] for entry in self.missing.values())


# --- joining ------------------------------------------------------------------------------------
class _Lookup:
    """Per-video predicted r̂ of a dimension, or the reason there is none."""

    def __init__(self, truth: Truth, predictions: Predictions) -> None:
        self.matched = match_predictions(truth, predictions)
        self.predictions = predictions

    def score(self, video_id: str, dimension: str) -> tuple[float, str | None]:
        """``(r̂, None)`` or ``(nan, reason)``; overall is the mean of available dimensions."""
        pred_id = self.matched.get(video_id)
        if pred_id is None:
            return math.nan, "no prediction"
        if pred_id in self.predictions.errors:
            return math.nan, "prediction error"
        scores = self.predictions.scores[pred_id]
        if dimension == OVERALL:
            parts = [
                scores[d.value] for d in DIMENSIONS if math.isfinite(scores.get(d.value, math.nan))
            ]
            value = float(np.mean(parts)) if parts else math.nan
        else:
            value = scores.get(dimension, math.nan)
        if not math.isfinite(value):
            return math.nan, f"no finite {dimension} score"
        return value, None


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
    pred, target, gens, reasons = [], [], [], Counter()
    for video_id, mos in sorted(truth.mos[dimension].items()):
        value, reason = lookup.score(video_id, dimension)
        if reason:
            reasons[reason] += 1
            _record_missing(missing, video_id, reason)
            continue
        pred.append(score_to_mos(value))
        target.append(mos)
        gens.append(truth.videos[video_id].generator)
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


# --- preference dimensions ----------------------------------------------------------------------
def _pair_deltas(
    truth: Truth, lookup: _Lookup, dimension: str, missing: dict[str, list[str]]
) -> tuple[list[int], list[float], Counter]:
    """Labels and Δ = r̂_A − r̂_B of the pairs of one dimension whose two videos are predicted."""
    labels, deltas, reasons = [], [], Counter()
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
        labels.append(pair.label)
        deltas.append(a - b)
    return labels, deltas, reasons


def _epsilon(dimension: str, config: EvalConfig, calibration: tuple[Truth, _Lookup] | None):
    """``(ε, protocol, calibration pairs used)`` for one dimension."""
    if calibration is None:
        return config.epsilon, "oracle" if config.oracle else "fixed", 0
    labels, deltas, _ = _pair_deltas(*calibration, dimension, {})
    if not labels:
        raise AnnotationError(f"the calibration split has no predicted {dimension} pairs")
    epsilon, _ = calibrate_epsilon(labels, deltas)
    return epsilon, "calibrated", len(labels)


def _preference_dimension(
    report: EvalReport,
    truth: Truth,
    lookup: _Lookup,
    dimension: str,
    config: EvalConfig,
    calibration,
    missing: dict[str, list[str]],
) -> None:
    """Fill the preference accuracy of one dimension (or its error)."""
    labels, deltas, reasons = _pair_deltas(truth, lookup, dimension, missing)
    entry: dict[str, Any] = {"pairs": sum(p.dimension == dimension for p in truth.pairs)}
    entry["missing"] = dict(reasons)
    try:
        epsilon, protocol, n_calibration = _epsilon(dimension, config, calibration)
    except AnnotationError as error:
        entry["error"] = str(error)
        report.preference[dimension] = entry
        return
    result = evaluate_pairs(labels, deltas, epsilon, protocol)
    entry.update(asdict(result), calibration_pairs=n_calibration)
    report.preference[dimension] = entry


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


def evaluate(
    predictions: Predictions,
    truth: Truth,
    config: EvalConfig | None = None,
    calibration: Truth | None = None,
) -> EvalReport:
    """Every metric the truth supports; raises when prediction ids match nothing (or, unless
    ``allow_extra``, when some prediction ids match no video).

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
    lookup = _Lookup(truth, predictions)
    calib = (calibration, _Lookup(calibration, predictions)) if calibration is not None else None
    truths = [truth] + ([calibration] if calibration is not None else [])
    unmatched = _unmatched(predictions, [lookup] + ([calib[1]] if calib else []), truths)
    if unmatched and not config.allow_extra:
        raise AnnotationError(
            f"{len(unmatched)} prediction ids match no {truth.name} video, e.g. "
            f"{', '.join(unmatched[:5])} (pass allow_extra / --allow-extra to only report them)"
        )
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
    )
    missing: dict[str, list[str]] = {}
    for dimension in sorted(truth.mos):
        _mos_dimension(report, truth, lookup, dimension, config, missing)
    for dimension in sorted({p.dimension for p in truth.pairs}):
        _preference_dimension(report, truth, lookup, dimension, config, calib, missing)
    report.missing = _summarise(missing)
    return report


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
    """The report as JSON (without plot points); undefined metrics are ``null``."""
    data = {k: v for k, v in asdict(report).items() if k != "points"}
    return json.dumps(_plain(data), indent=2, ensure_ascii=False)


def _fmt(value: Any, ci: list[float] | None = None) -> str:
    """A metric with 3 decimals and its interval, ``–`` when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.3f}"
    return f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else text


def print_report(report: EvalReport, console) -> None:
    """Rich tables of the correlation and preference results, then what was missing."""
    from rich.table import Table

    if report.correlation:
        table = Table(title=f"{report.benchmark}: correlation with MOS")
        for column in (
            "dimension",
            "n",
            "missing",
            "SRCC",
            "PLCC",
            "KRCC",
            "RMSE",
            "model SRCC",
            "model PLCC",
            "acc",
            "acc±1",
        ):
            table.add_column(column)
        for dimension, entry in report.correlation.items():
            inst, model = entry["instance"], entry["model"]
            table.add_row(
                dimension,
                str(inst["n"]),
                str(sum(entry["missing"].values())),
                _fmt(inst["srcc"], inst["srcc_ci"]),
                _fmt(inst["plcc"], inst["plcc_ci"]),
                _fmt(inst["krcc"]),
                _fmt(inst["rmse"]),
                _fmt(model.get("srcc"), model.get("srcc_ci")) if "srcc" in model else model["note"],
                _fmt(model.get("plcc"), model.get("plcc_ci")) if "plcc" in model else "–",
                _fmt(entry.get("accuracy")),
                _fmt(entry.get("relaxed_accuracy")),
            )
        console.print(table)
    if report.preference:
        table = Table(title=f"{report.benchmark}: preference accuracy")
        for column in ("dimension", "pairs", "missing", "w/ ties", "w/o ties", "ε", "protocol"):
            table.add_column(column)
        for dimension, entry in report.preference.items():
            if "error" in entry:
                table.add_row(dimension, str(entry["pairs"]), "–", entry["error"], "", "", "")
                continue
            table.add_row(
                dimension,
                str(entry["n_pairs"]),
                str(sum(entry["missing"].values())),
                _fmt(entry["accuracy_with_ties"]),
                _fmt(entry["accuracy_without_ties"]),
                f"{entry['epsilon']:.4g}",
                entry["protocol"],
            )
        console.print(table)
    _print_missing(report, console)


def _print_missing(report: EvalReport, console) -> None:
    """One line per missing reason, unmatched predictions and problems."""
    for reason, entry in report.missing.items():
        console.print(
            f"[yellow]missing[/yellow] {entry['count']} videos ({reason}): "
            f"{', '.join(entry['ids'][:5])}"
        )
    if report.unmatched_predictions["count"]:
        console.print(
            f"[yellow]unmatched[/yellow] {report.unmatched_predictions['count']} "
            "prediction ids match no video"
        )
    for problem in report.problems[:SHOWN_IDS]:
        console.print(f"[yellow]skipped[/yellow] {problem}")
    for note in report.notes:
        console.print(f"note: {note}")


def _figure(width: float, height: float):
    """A matplotlib figure on an Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> str:
    """The figure as base64 PNG."""
    figure.tight_layout()
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
    figure = _figure(4.6, 0.6 + 0.35 * len(rows))
    axes = figure.add_subplot()
    y = np.arange(len(rows))[::-1]
    means = np.array([r["pred_mos"] for r in rows])
    cis = [r["pred_mos_ci"] or [r["pred_mos"]] * 2 for r in rows]
    errors = np.abs(np.array(cis).T - means)
    axes.errorbar(means, y, xerr=errors, fmt="o", capsize=3, label="predicted (CI)")
    axes.scatter([r["mos"] for r in rows], y, marker="x", color="black", label="human")
    axes.set_yticks(y, [str(r["generator"]) for r in rows])
    axes.set(xlabel="mean MOS", title=f"{dimension}: generators")
    axes.legend(fontsize="small", loc="best")
    return _png(figure)


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>qsave eval: {{ r.benchmark }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}
.warn{color:#a60}</style></head><body>
<h1>qsave eval: {{ r.benchmark }}</h1>
<p>{{ r.videos }} videos; ε protocol: {{ r.protocol }}; missing predictions: {{ r.n_missing }}</p>
{% for reason, e in r.missing.items() %}<p class="warn">missing {{ e.count }} ({{ reason }}):
{{ e.ids | join(", ") }}</p>{% endfor %}
{% if r.unmatched_predictions.count %}<p class="warn">{{ r.unmatched_predictions.count }}
prediction ids match no video: {{ r.unmatched_predictions.ids | join(", ") }}</p>{% endif %}
{% for p in r.problems %}<p class="warn">skipped: {{ p }}</p>{% endfor %}
{% for n in r.notes %}<p>note: {{ n }}</p>{% endfor %}
{% for dim, e in r.correlation.items() %}
<h2>{{ dim }}</h2><img alt="scatter {{ dim }}" src="data:image/png;base64,{{ plots[dim] }}">
<table><tr><th></th><th>n</th><th>SRCC</th><th>PLCC</th><th>KRCC</th><th>RMSE</th></tr>
<tr><th>instance</th><td>{{ e.instance.n }}</td>
<td>{{ f(e.instance.srcc, e.instance.srcc_ci) }}</td>
<td>{{ f(e.instance.plcc, e.instance.plcc_ci) }}</td><td>{{ f(e.instance.krcc) }}</td>
<td>{{ f(e.instance.rmse) }}</td></tr>
<tr><th>model</th><td>{{ e.model.n_generators }} generators</td>
<td>{{ f(e.model.srcc, e.model.srcc_ci) if e.model.srcc is defined else e.model.note }}</td>
<td>{{ f(e.model.plcc, e.model.plcc_ci) if e.model.plcc is defined else "–" }}</td>
<td></td><td></td></tr></table>
{% if e.accuracy is defined %}<p>accuracy {{ f(e.accuracy) }}, relaxed accuracy (±1)
{{ f(e.relaxed_accuracy) }}</p>{% endif %}
{% if r.rankings[dim] %}<img alt="ranking {{ dim }}" src="data:image/png;base64,{{ ranks[dim] }}">
<table><tr><th>rank</th><th>generator</th><th>n</th>
<th>predicted MOS [CI]</th><th>human MOS</th><th>human rank</th></tr>
{% for row in r.rankings[dim] %}<tr><td>{{ row.rank }}</td><td>{{ row.generator }}</td>
<td>{{ row.n }}</td><td>{{ f(row.pred_mos, row.pred_mos_ci) }}</td><td>{{ f(row.mos) }}</td>
<td>{{ row.mos_rank }}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}
{% if r.preference %}<h2>preference accuracy</h2><table><tr><th>dimension</th><th>pairs</th>
<th>missing</th><th>w/ ties</th><th>w/o ties</th><th>ε</th><th>protocol</th></tr>
{% for dim, e in r.preference.items() %}<tr><td>{{ dim }}</td>
{% if e.error is defined %}<td>{{ e.pairs }}</td><td colspan="5">{{ e.error }}</td>
{% else %}<td>{{ e.n_pairs }}</td><td>{{ e.missing.values() | sum }}</td>
<td>{{ f(e.accuracy_with_ties) }}</td><td>{{ f(e.accuracy_without_ties) }}</td>
<td>{{ "%.4g" | format(e.epsilon) }}</td><td>{{ e.protocol }}</td>{% endif %}</tr>
{% endfor %}</table>{% endif %}
</body></html>
"""


def render_html(report: EvalReport) -> str:
    """The HTML report: scatter plots per MOS dimension, rankings with CIs, preference table."""
    import jinja2

    plots = {dim: _scatter_png(dim, *report.points[dim]) for dim in report.correlation}
    ranks = {dim: _ranking_png(dim, rows) for dim, rows in report.rankings.items() if rows}
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_HTML).render(r=report, plots=plots, ranks=ranks, f=_fmt)


def write_html(report: EvalReport, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path``."""
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
