"""The three evaluation dimensions, the rating scale and its arithmetic (paper Sec. 3.4, 4.2.2).

Ratings are kept in ascending order everywhere in code: ``RATINGS[0]`` is ``"Bad"``.
The paper lists them descending; only the prompts show that order.

>>> mos_to_rating(4.2), mos_to_rating(4.21)
('Good', 'Excellent')
>>> score_to_mos(0.625)
3.5
"""

from __future__ import annotations

import math
from enum import StrEnum

from qsave.errors import ConfigError

RATINGS: tuple[str, ...] = ("Bad", "Poor", "Fair", "Good", "Excellent")  # ascending
WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # w_j of r̂ = Σ p_j·w_j, Sec. 4.2.2
# (computed once, in torch: qsave.model.scorer.rating_expectation)
MOS_MIN, MOS_MAX = 1.0, 5.0  # m and M of R(s), Sec. 3.4.2


class Dimension(StrEnum):
    """An evaluation dimension; its value is the name used in files and CLI flags."""

    VISUAL = "visual"
    DYNAMIC = "dynamic"
    ALIGNMENT = "alignment"

    @property
    def title(self) -> str:
        """The name the prompts use, e.g. ``"visual quality"``."""
        return _TITLES[self]

    @property
    def criteria(self) -> tuple[str, str, str]:
        """The three criteria that the context prompt lists for this dimension (Sec. 3.4.1)."""
        return _CRITERIA[self]

    @classmethod
    def parse(cls, name: str | Dimension) -> Dimension:
        """``Dimension.parse("visual")``; an unknown name raises and lists the valid ones."""
        try:
            return cls(str(name).strip().lower())
        except ValueError:
            valid = ", ".join(d.value for d in cls)
            raise ConfigError(f"unknown dimension {name!r}; valid dimensions: {valid}") from None


DIMENSIONS: tuple[Dimension, ...] = tuple(Dimension)

_TITLES = {
    Dimension.VISUAL: "visual quality",
    Dimension.DYNAMIC: "dynamic quality",
    Dimension.ALIGNMENT: "text-video alignment",
}

_CRITERIA = {
    Dimension.VISUAL: (
        "Sharpness and clarity: edges, textures and fine details are crisp, with no blur, "
        "smearing or loss of resolution",
        "Artifacts and distortions: no noise, compression blocks, colour banding, warped "
        "structures or other rendering errors in any frame",
        "Aesthetics and composition: pleasing lighting, colour and framing, with the subject "
        "clearly presented",
    ),
    Dimension.DYNAMIC: (
        "Smoothness: motion is fluid, without stutter, dropped or frozen frames, jitter or flicker",
        "Temporal coherence: subjects keep their identity, shape, size and count from frame to "
        "frame, without teleporting, deforming or vanishing",
        "Physical plausibility: movements of subjects and camera obey real-world physics in "
        "speed, direction and interaction",
    ),
    Dimension.ALIGNMENT: (
        "Subjects: every subject named in the prompt appears, and nothing contradicts it",
        "Attributes and counts: colours, shapes, sizes and numbers of objects match the prompt",
        "Actions and camera: the motions, their directions and the camera movement match "
        "the prompt",
    ),
}


def mos_to_rating(mos: float, low: float = MOS_MIN, high: float = MOS_MAX) -> str:
    """R(s) of Sec. 3.4.2: ``r_i`` if ``m + (i-1)/5·(M-m) < s ≤ m + i/5·(M-m)``.

    The interval is open below and closed above, so a boundary value belongs to the lower
    rating (4.2 → Good). ``s = m`` itself, outside every interval of the formula, is Bad.
    Scores are compared after rounding to 1e-9 so that a boundary written in decimal
    (1.8, 2.6, 3.4, 4.2) is not moved by binary floating point.
    """
    if not math.isfinite(mos) or not low - 1e-9 <= mos <= high + 1e-9:
        raise ConfigError(f"MOS {mos!r} is outside the scale [{low}, {high}]")
    position = round(len(RATINGS) * (mos - low) / (high - low), 9)  # i - 1 < position ≤ i
    index = min(max(math.ceil(position), 1), len(RATINGS))
    return RATINGS[index - 1]


def rating_to_weight(rating: str) -> float:
    """The weight w_j of a rating word (Bad 0 … Excellent 1)."""
    try:
        return WEIGHTS[RATINGS.index(rating)]
    except ValueError:
        valid = ", ".join(RATINGS)
        raise ConfigError(f"unknown rating {rating!r}; valid ratings: {valid}") from None


def score_to_mos(score: float) -> float:
    """The 1–5 MOS scale of a score r̂ in 0..1: ``1 + 4·r̂``."""
    return MOS_MIN + (MOS_MAX - MOS_MIN) * score


def mos_to_score(mos: float) -> float:
    """The inverse of :func:`score_to_mos`: a MOS on 1–5 as a target r in 0..1."""
    return (mos - MOS_MIN) / (MOS_MAX - MOS_MIN)
