"""The expert review of perfect-score videos (App. C.1).

"For particularly high-quality cases (i.e., perfect-score videos), the annotations are first
provided by 12 individuals and subsequently reviewed and adjusted by a group of 5 domain
experts." :func:`review_queue` lists every (video, dimension) that all its raters gave the top
of the scale (5, Excellent); the experts fill ``adjusted_score`` in the written file and
:func:`apply_review` puts their scores into the MOS table (``qsave data mos --review``).

>>> usable = pd.DataFrame({"video_id": ["a", "a", "b", "b"], "rater_id": ["r1", "r2"] * 2,
...                        "dimension": "visual", "score": [5.0, 5.0, 5.0, 4.0]})
>>> review_queue(usable)[["video_id", "dimension", "n_raters", "raters_to_add"]].to_dict("records")
[{'video_id': 'a', 'dimension': 'visual', 'n_raters': 2, 'raters_to_add': 10}]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from qsave.data.annotations import (
    RATED_DIMENSIONS,
    AnnotationConfig,
    Problem,
    _as_id,
    _as_name,
    _missing,
    _require_columns,
)
from qsave.errors import ConfigError

QUEUE_COLUMNS = ("video_id", "dimension", "split", "n_raters", "raters_to_add", "score",
                 "path", "prompt", "generator", "adjusted_score", "note")
FILLED = "adjusted_score"  # the column the experts fill, on the ratings' declared scale


@dataclass(frozen=True)
class ReviewConfig:
    """Which videos go to the expert review (App. C.1)."""

    min_raters: int = 12  # App. C.1: perfect-score videos are "first provided by 12 individuals"

    def __post_init__(self) -> None:
        if self.min_raters < 1:
            raise ConfigError(f"min_raters ({self.min_raters}) must be at least 1")


def review_queue(usable: pd.DataFrame, videos: pd.DataFrame | None = None,
                 annotation: AnnotationConfig | None = None,
                 config: ReviewConfig | None = None) -> pd.DataFrame:
    """Every (video, dimension) that all its raters scored at the top of the scale.

    ``usable`` are checked ratings (:func:`~qsave.data.annotations.usable_ratings`);
    ``raters_to_add`` is how many more raters App. C.1 asks for before the review;
    ``adjusted_score`` and ``note`` are left empty for the experts.
    """
    top = (annotation or AnnotationConfig()).scale_high
    need = (config or ReviewConfig()).min_raters
    grouped = usable.groupby(["video_id", "dimension"], sort=False)["score"]
    items = grouped.agg(n_raters="count", low="min").reset_index()
    items = items[items["low"] >= top].drop(columns="low").assign(score=top)
    items["raters_to_add"] = (need - items["n_raters"]).clip(lower=0)
    info = ["split", "path", "prompt", "generator"]
    if videos is not None:
        items = items.merge(videos.drop_duplicates("video_id")[["video_id", *info]],
                            on="video_id", how="left")
    items = items.reindex(columns=list(QUEUE_COLUMNS))
    order = {d: i for i, d in enumerate(RATED_DIMENSIONS)}
    items = items.sort_values(["video_id", "dimension"],
                              key=lambda s: s.map(order) if s.name == "dimension" else s)
    return items.reset_index(drop=True)


def apply_review(mos: pd.DataFrame, review: pd.DataFrame,
                 annotation: AnnotationConfig | None = None,
                 ) -> tuple[pd.DataFrame, list[Problem]]:
    """The MOS table with the experts' ``adjusted_score`` in place of the raters' MOS.

    Returns the table (with a ``reviewed`` column; ``std`` and ``n_raters`` stay the raters')
    and the problems of the review file: a score that is not a number or outside the scale,
    a (video, dimension) not in ``mos``, a pair reviewed twice; those rows are not applied.
    An empty ``adjusted_score`` is not reviewed yet. Any pair of ``mos`` may be adjusted,
    not only the queued ones.
    """
    annotation = annotation or AnnotationConfig()
    _require_columns(review, ("video_id", "dimension", FILLED), "review file")
    filled = review.assign(video_id=review["video_id"].map(_as_id),
                           dimension=review["dimension"].map(_as_name),
                           _row=range(1, len(review) + 1))
    filled = filled[~filled[FILLED].map(_missing)]
    known = set(zip(mos["video_id"], mos["dimension"], strict=True))
    problems, adjusted = _review_rows(filled, known, annotation)
    out = mos.copy()
    keys = list(zip(out["video_id"], out["dimension"], strict=True))
    out["reviewed"] = [key in adjusted for key in keys]
    scores = [adjusted[k] for k in keys if k in adjusted]
    out.loc[out["reviewed"], "mos"] = scores
    out.loc[out["reviewed"], "mos5"] = annotation.to_mos5(pd.Series(scores, dtype=float)).values
    return out, problems


def _review_rows(filled: pd.DataFrame, known: set[tuple[str, str]],
                 annotation: AnnotationConfig) -> tuple[list[Problem], dict[tuple[str, str],
                                                                              float]]:
    """The problems of the filled rows and the valid adjusted scores by (video, dimension)."""
    problems: list[Problem] = []
    adjusted: dict[tuple[str, str], float] = {}
    repeated = filled.duplicated(["video_id", "dimension"], keep=False)
    for (_, row), twice in zip(filled.iterrows(), repeated, strict=True):
        key, rows = (row["video_id"], row["dimension"]), (int(row["_row"]),)
        message = _review_problem(row[FILLED], key, known, twice, annotation)
        if message:
            problems.append(Problem("bad_review", message, "review", rows, *key))
        else:
            adjusted[key] = float(row[FILLED])
    return problems, adjusted


def _review_problem(value: object, key: tuple[str, str], known: set[tuple[str, str]],
                    twice: bool, annotation: AnnotationConfig) -> str:
    """Why one filled review row cannot be applied ("" when it can)."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if twice:
        return f"{key[0]!r}/{key[1]} is reviewed more than once"
    if key not in known:
        return f"{key[0]!r}/{key[1]} is not in the MOS table"
    if not math.isfinite(score):
        return f"adjusted_score {value!r} of {key[0]!r}/{key[1]} is not a number"
    if not annotation.scale_low <= score <= annotation.scale_high:
        return (f"adjusted_score {score:g} of {key[0]!r}/{key[1]} is outside the scale "
                f"[{annotation.scale_low:g}, {annotation.scale_high:g}]")
    return ""
