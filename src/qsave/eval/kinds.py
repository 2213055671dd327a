"""Correlation with MOS per defect kind: which defects an evaluator ranks well.

A ``qsave data synth`` manifest labels every clip's defects per dimension (``defects``:
dimension → ``[{kind, severity, start, end[, detail]}]``, :mod:`qsave.data.defects`), e.g. the
alignment kinds ``wrong_color``, ``wrong_shape``, ``wrong_count``, ``wrong_direction`` and
``missing_object`` that break the paper's alignment criteria (subjects, attributes and counts,
actions; Sec. 3.4.1). Grouping the clips of one dimension by kind and correlating predictions
with MOS within each group (App. B's SRCC and PLCC, :mod:`qsave.eval.metrics`) shows which kinds
an evaluator gets right.

Rules (:data:`KIND_RULE`): a dimension without defects is ``clean``; a clip with two kinds in
one dimension counts under each (groups then overlap; ``shared`` says how many of a group's
clips carry another kind too, whose severity also lowers their MOS). A joined label such as
``missing_object+wrong_direction`` would split the clips into many groups too small to
correlate. A group with fewer than :attr:`KindConfig.min_clips` predicted clips, or whose MOS
or predictions are all equal, has no correlation; its ``note`` says why (a clean dimension of a
synthetic clip always has MOS 5, so ``clean`` shows only its means).

>>> kinds = {"a": ("blur",), "b": ("blur",), "c": ("blur", "noise"), "d": ("clean",)}
>>> mos = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 5.0}
>>> rows = kind_figures({"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.9}, mos, kinds,
...                    KindConfig(n_resamples=0))
>>> [(f.kind, f.n, f.srcc, f.note) for f in rows]  # doctest: +NORMALIZE_WHITESPACE
[('clean', 1, None, 'fewer than 3 clips'), ('blur', 3, 0.5, None),
 ('noise', 1, None, 'fewer than 3 clips')]
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qsave.dimensions import DIMENSIONS
from qsave.errors import AnnotationError, ConfigError
from qsave.eval import metrics
from qsave.jsonl import read_jsonl

CLEAN = "clean"  # the label of a dimension without defects
KIND_DIMENSIONS: tuple[str, ...] = tuple(d.value for d in DIMENSIONS)  # defects exist for these
MIN_CLIPS = 3  # two points always correlate at ±1 (as MIN_GENERATORS of the model level)
KIND_RULE = ("per dimension, the clips whose manifest lists a defect of the kind ('clean': "
             "none); a clip with two kinds counts under each; SRCC and PLCC (no fitted mapping) "
             "of predicted against human MOS over those clips")

Kinds = dict[str, tuple[str, ...]]  # video id → its kinds in one dimension


@dataclass(frozen=True)
class KindConfig:
    """How the per-kind figures are computed; :func:`qsave.eval.report.evaluate` passes its
    bootstrap settings."""

    min_clips: int = MIN_CLIPS  # fewer predicted clips of a kind: no correlation
    n_resamples: int = 1000  # bootstrap resamples of each interval (0: none)
    confidence: float = 0.95  # level of the bootstrap intervals
    seed: int = 0  # seed of the bootstrap

    def __post_init__(self) -> None:
        if self.min_clips < MIN_CLIPS:
            raise ConfigError(f"min_clips ({self.min_clips}) must be at least {MIN_CLIPS}: two "
                              "clips always correlate at ±1")
        if self.n_resamples < 0:
            raise ConfigError(f"n_resamples ({self.n_resamples}) must be ≥ 0")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence ({self.confidence}) must lie in (0, 1)")


@dataclass(frozen=True)
class KindFigure:
    """One kind of one dimension: how well predictions follow MOS over its clips."""

    kind: str  # a defect kind of the manifest, or "clean"
    n: int  # clips of the kind with a finite prediction
    missing: int  # clips of the kind without one
    shared: int  # of the n, clips whose dimension also carries another kind
    mos_mean: float | None  # mean human MOS of the n clips (None when n = 0)
    pred_mean: float | None  # mean prediction, in the predictions' units
    srcc: float | None  # None when there is no correlation (see note)
    plcc: float | None
    srcc_ci: tuple[float, float] | None  # percentile bootstrap interval
    plcc_ci: tuple[float, float] | None
    note: str | None  # why there is no correlation, e.g. "fewer than 3 clips"


# --- kinds from manifest rows -------------------------------------------------------------------
def row_kinds(defects: Any) -> Kinds:
    """Dimension → the distinct kinds (sorted) of one manifest row's ``defects`` object, or
    ``("clean",)``; a dimension the object leaves out has no defect.

    ``defects`` may also be that object as JSON text (a CSV cell of ``qsave data split``).
    Raises ``AnnotationError`` when it is not dimension → list of ``{kind, …}``.

    >>> row_kinds({"visual": [], "alignment": [{"kind": "wrong_count"}, {"kind": "wrong_color"}]})
    {'visual': ('clean',), 'dynamic': ('clean',), 'alignment': ('wrong_color', 'wrong_count')}
    """
    if isinstance(defects, str):
        try:
            defects = json.loads(defects)
        except json.JSONDecodeError as error:
            raise AnnotationError(f"column 'defects' is not JSON ({error.msg})") from None
    if not isinstance(defects, Mapping):
        raise AnnotationError(f"column 'defects' must map dimensions to lists of defects, got "
                              f"{type(defects).__name__}")
    unknown = sorted(set(map(str, defects)) - set(KIND_DIMENSIONS))
    if unknown:
        raise AnnotationError(f"defects of unknown dimension {', '.join(unknown)}; defects "
                              f"belong to {', '.join(KIND_DIMENSIONS)}")
    return {dim: _dimension_kinds(dim, defects.get(dim) or []) for dim in KIND_DIMENSIONS}


def _dimension_kinds(dimension: str, entries: Any) -> tuple[str, ...]:
    """The sorted distinct kinds of one dimension's defect list, ``("clean",)`` when empty."""
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise AnnotationError(f"defects of {dimension} must be a list, got {entries!r}")
    kinds = set()
    for entry in entries:
        kind = entry.get("kind") if isinstance(entry, Mapping) else None
        if not isinstance(kind, str) or not kind.strip() or kind == CLEAN:
            raise AnnotationError(f"a {dimension} defect needs a kind name, got {entry!r}")
        kinds.add(kind.strip())
    return tuple(sorted(kinds)) or (CLEAN,)


def kinds_by_video(rows: Iterable[Mapping[str, Any]]) -> dict[str, Kinds]:
    """Dimension → video id → kinds, over the manifest rows that have ``defects`` (others are
    left out); the id is a row's ``id`` or ``video_id``."""
    out: dict[str, Kinds] = {dim: {} for dim in KIND_DIMENSIONS}
    for row in rows:
        if row.get("defects") in (None, ""):
            continue
        video_id = row.get("id", row.get("video_id"))
        if video_id is None:
            raise AnnotationError(f"a manifest row has defects but no id: {str(row)[:80]}")
        for dim, kinds in row_kinds(row["defects"]).items():
            out[dim][str(video_id)] = kinds
    return {dim: videos for dim, videos in out.items() if videos}


# --- figures ------------------------------------------------------------------------------------
def kind_figures(
    predictions: Mapping[str, float],
    mos: Mapping[str, float],
    kinds: Mapping[str, Sequence[str]],
    config: KindConfig | None = None,
) -> list[KindFigure]:
    """One dimension's figures per kind: ``clean`` first, then the kinds by name.

    ``predictions`` and ``mos`` map video ids to values of this dimension (predictions on any
    scale: SRCC and PLCC do not depend on it); ``kinds`` maps ids to their kinds. A clip counts
    when it has a kind and a MOS; without a finite prediction it counts as missing.
    """
    config = config or KindConfig()
    members: dict[str, list[str]] = defaultdict(list)
    for video_id in sorted(kinds):
        if video_id in mos:
            for kind in dict.fromkeys(kinds[video_id]):
                members[kind].append(video_id)
    order = sorted(members, key=lambda kind: (kind != CLEAN, kind))
    return [_figure(kind, members[kind], predictions, mos, kinds, config) for kind in order]


def srcc_by_kind(
    predictions: Mapping[str, Mapping[str, float]],
    mos: Mapping[str, Mapping[str, float]],
    kinds: Mapping[str, Mapping[str, Sequence[str]]],
    config: KindConfig | None = None,
) -> dict[str, list[KindFigure]]:
    """Dimension → :func:`kind_figures`, for each dimension with both kinds and MOS (in the
    order visual, dynamic, alignment); each argument maps dimension → video id → value."""
    return {dim: kind_figures(predictions.get(dim, {}), mos[dim], kinds[dim], config)
            for dim in KIND_DIMENSIONS if dim in kinds and dim in mos}


def _figure(kind: str, ids: list[str], predictions: Mapping[str, float],
            mos: Mapping[str, float], kinds: Mapping[str, Sequence[str]],
            config: KindConfig) -> KindFigure:
    """The figures of one kind's clips."""
    scored = [v for v in ids if _finite(predictions.get(v))]
    p = np.array([predictions[v] for v in scored], dtype=float)
    t = np.array([mos[v] for v in scored], dtype=float)
    means = (float(t.mean()), float(p.mean())) if scored else (None, None)
    shared = sum(len(set(kinds[v])) > 1 for v in scored)
    base = dict(kind=kind, n=len(scored), missing=len(ids) - len(scored), shared=shared,
                mos_mean=means[0], pred_mean=means[1])
    note = _no_correlation(p, t, config.min_clips)
    if note:
        return KindFigure(**base, srcc=None, plcc=None, srcc_ci=None, plcc_ci=None, note=note)
    return KindFigure(**base, srcc=metrics.srcc(p, t), plcc=metrics.plcc(p, t),
                      srcc_ci=_interval(metrics.srcc, p, t, config),
                      plcc_ci=_interval(metrics.plcc, p, t, config), note=None)


def _no_correlation(p: np.ndarray, t: np.ndarray, min_clips: int) -> str | None:
    """Why a group has no correlation, or ``None`` when it has one."""
    if p.size < min_clips:
        return f"fewer than {min_clips} clips"
    if np.ptp(t) == 0:
        return f"MOS all equal ({t[0]:.2f})"
    if np.ptp(p) == 0:
        return "predictions all equal"
    return None


def _interval(metric, p: np.ndarray, t: np.ndarray,
              config: KindConfig) -> tuple[float, float] | None:
    """A bootstrap interval of ``metric`` (:func:`qsave.eval.metrics.bootstrap_ci`), ``None``
    without resamples or when every resample was constant."""
    if config.n_resamples == 0:
        return None
    ci = metrics.bootstrap_ci(lambda i: metric(p[i], t[i]), p.size, config.n_resamples,
                              config.confidence, config.seed)
    return None if ci.resamples == 0 else (ci.low, ci.high)


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (``None`` and NaN are missing predictions)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# --- from a manifest (the demo) -----------------------------------------------------------------
def manifest_kind_figures(
    predictions: Mapping[str, float],
    manifest: str | Path | Iterable[Mapping[str, Any]],
    dimension: str,
    config: KindConfig | None = None,
) -> list[KindFigure]:
    """:func:`kind_figures` of one dimension from ``{video id: predicted score}`` and a
    ``qsave data synth`` manifest (its path, or its rows as dicts): kinds from each row's
    ``defects``, MOS from its ``mos`` object.

    Raises ``ConfigError`` for a dimension without defect kinds (overall), ``AnnotationError``
    for a manifest without ``defects`` or MOS of that dimension, or when no prediction id is a
    manifest id.
    """
    if dimension not in KIND_DIMENSIONS:
        raise ConfigError(f"no defect kinds for dimension {dimension!r}; kinds belong to "
                          f"{', '.join(KIND_DIMENSIONS)}")
    rows = _manifest_rows(manifest) if isinstance(manifest, str | Path) else list(manifest)
    kinds = kinds_by_video(rows).get(dimension, {})
    mos = {str(row.get("id", row.get("video_id"))): float(row["mos"][dimension]) for row in rows
           if isinstance(row.get("mos"), Mapping) and _finite(row["mos"].get(dimension))}
    if not kinds or not mos:
        lacking = "defects" if not kinds else f"{dimension} MOS (a mos object)"
        raise AnnotationError(f"the manifest's rows have no {lacking}: per-kind figures need "
                              "the manifest.jsonl of `qsave data synth`")
    if predictions and not set(predictions) & set(kinds):
        raise AnnotationError(f"no prediction id is a manifest id: predictions e.g. "
                              f"{', '.join(sorted(predictions)[:3])}; manifest e.g. "
                              f"{', '.join(sorted(kinds)[:3])}")
    return kind_figures(predictions, mos, kinds, config)


def _manifest_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a manifest file; a missing file or a line that is not a row raises."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"manifest not found: {path}")
    read = read_jsonl(path)
    if read.issues():
        raise AnnotationError(f"{path} has lines that are not rows: "
                              + "; ".join(read.problems(path.name)[:3]))
    return [row for _, row in read.rows]
