"""Dimensions, criteria, R(s) with its exact boundaries, r̂ and the MOS scale (Sec. 3.4.2, 4.2.2)."""

import math

import pytest

from qsave.dimensions import (
    DIMENSIONS,
    RATINGS,
    WEIGHTS,
    Dimension,
    mos_to_rating,
    mos_to_score,
    rating_to_weight,
    score_to_mos,
)
from qsave.errors import ConfigError


def reference_r(s, m=1.0, big_m=5.0):
    """R(s) written as the paper's intervals m + (i-1)/5·(M-m) < s ≤ m + i/5·(M-m), exact."""
    from fractions import Fraction

    s, m, big_m = Fraction(str(s)), Fraction(str(m)), Fraction(str(big_m))
    for i in range(1, 6):
        if m + Fraction(i - 1, 5) * (big_m - m) < s <= m + Fraction(i, 5) * (big_m - m):
            return RATINGS[i - 1]
    return RATINGS[0] if s == m else None


def test_dimensions_names_titles_and_criteria():
    assert [d.value for d in DIMENSIONS] == ["visual", "dynamic", "alignment"]
    assert Dimension.parse(" Visual ") is Dimension.VISUAL
    assert Dimension.ALIGNMENT.title == "text-video alignment"
    topics = {
        Dimension.VISUAL: ("Sharpness", "Artifacts", "Aesthetics"),
        Dimension.DYNAMIC: ("Smoothness", "Temporal coherence", "Physical plausibility"),
        Dimension.ALIGNMENT: ("Subjects", "Attributes and counts", "Actions and camera"),
    }
    for dimension, starts in topics.items():
        assert len(dimension.criteria) == 3
        assert all(c.startswith(s) for c, s in zip(dimension.criteria, starts, strict=True))
    with pytest.raises(ConfigError, match="valid dimensions: visual, dynamic, alignment"):
        Dimension.parse("motion")


@pytest.mark.parametrize(
    ("mos", "rating"),
    [(1.0, "Bad"), (1.8, "Bad"), (1.8000001, "Poor"), (2.6, "Poor"), (2.6000001, "Fair"),
     (3.4, "Fair"), (3.4000001, "Good"), (4.2, "Good"), (4.2000001, "Excellent"),
     (5.0, "Excellent")],
)
def test_r_of_s_boundaries_are_exact(mos, rating):
    assert mos_to_rating(mos) == rating == reference_r(mos)


def test_r_of_s_on_a_grid_and_another_scale():
    for k in range(401):
        s = 1 + k / 100
        assert mos_to_rating(s) == reference_r(s), s
    assert mos_to_rating(20, low=0, high=100) == "Bad"
    assert mos_to_rating(20.5, low=0, high=100) == reference_r(20.5, 0, 100) == "Poor"
    for bad in (0.99, 5.01, math.nan, math.inf):
        with pytest.raises(ConfigError, match="outside the scale"):
            mos_to_rating(bad)


def test_weights_and_mos_scale():
    assert WEIGHTS == tuple(rating_to_weight(r) for r in RATINGS) == (0, 0.25, 0.5, 0.75, 1)
    assert score_to_mos(0.0) == 1.0 and score_to_mos(1.0) == 5.0
    assert mos_to_score(score_to_mos(0.37)) == pytest.approx(0.37)
    with pytest.raises(ConfigError, match="unknown rating 'Great'"):
        rating_to_weight("Great")
