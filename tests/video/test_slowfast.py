"""SlowFast labelling (the ncc measure and keye's rule) and the two token budgets (Sec. 4.2.1,
Appendix A)."""

from __future__ import annotations

import colorsys
import itertools

import numpy as np
import pytest
from plans import plan_slowfast, plan_uniform, thumbnails
from videoclips import stripes

from qsave.errors import ConfigError
from qsave.video.slowfast import (
    Labeler,
    Run,
    SizeForecast,
    SlowFastConfig,
    choose_sizes,
    fit_size,
    get_mode,
    label_thumbnails,
    make_plan,
    plan_cost,
    register_mode,
    rgb_to_hsv,
    runs_of,
    thumbnail_size,
    tokens_of,
    whole_patches,
)

H, W, P = 168, 224, 28  # a 6 × 8 grid of 28-px patches: the thumbnail is the frame itself
KEYE = SlowFastConfig(similarity="keye", similarity_patch=28)  # keye-vl-utils' exact rule


def test_thumbnail_of_a_keye_sized_frame_is_the_frame():
    assert thumbnail_size(H, W, KEYE) == (H, W)
    frame = stripes(0)[None]
    np.testing.assert_array_equal(thumbnails(frame, KEYE), frame)


def test_static_shot_then_cut_then_pan():
    static = [stripes(0)] * 4  # S F F F
    cut = [stripes(0, vertical=False)] * 3  # cosine 0.5 with vertical stripes: S F F
    pan = [stripes(2 * k, vertical=False) for k in range(1, 7)]  # 2 px a frame: F F S F F S
    frames = np.stack(static + cut + pan)
    plan = plan_slowfast(frames, np.arange(len(frames)) / 8, KEYE)
    labels = "".join("S" if s else "F" for s in plan.references)
    assert labels == "SFFF" + "SFF" + "FFSFFS"
    assert plan.slow == whole_patches(plan.references)  # a slow frame's patch mate is slow
    assert plan.similarity[1:4] == (1.0, 1.0, 1.0)
    assert plan.similarity[4] == 0.0  # every patch changed at the cut
    assert plan.similarity[9] == 0.0  # 6 px from the last slow frame: cosine 8/14 < 0.7


def test_default_half_resolution_grid_gives_the_same_labels():
    frames = np.stack(
        [stripes(0)] * 3 + [stripes(0, vertical=False)] * 2 + [stripes(8, vertical=False)]
    )
    half = plan_slowfast(frames, np.arange(6) / 8, SlowFastConfig(similarity="keye"))
    keye = plan_slowfast(frames, np.arange(6) / 8, KEYE)
    assert half.references == keye.references == (True, False, False, True, False, True)


@pytest.mark.parametrize(("changed", "slow"), [(4, False), (5, True)])
def test_frame_similarity_threshold(changed, slow):
    # 48 patches; k of them inverted → similarity (48 - k) / 48: 44/48 = 0.917 > 0.9 is fast.
    first = stripes(0)
    second = first.copy()
    for k in range(changed):
        r, c = divmod(k, 8)
        second[r * P : (r + 1) * P, c * P : (c + 1) * P] = 255 - first[r * P : (r + 1) * P, :P]
    labels, similarity = label_thumbnails(np.stack([first, second]), KEYE)
    assert similarity[1] == pytest.approx((48 - changed) / 48)
    assert labels == (True, slow)


def test_black_patches_are_left_out():
    # The bottom half is black in both frames; 3 of the 24 lit patches change → 21/24 = 0.875.
    first = stripes(0)
    first[H // 2 :] = 0
    second = first.copy()
    second[:P, : 3 * P] = 255 - second[:P, : 3 * P]
    labels, similarity = label_thumbnails(np.stack([first, second]), KEYE)
    assert similarity[1] == pytest.approx(21 / 24)
    assert labels == (True, True)
    black = np.zeros((2, H, W, 3), np.uint8)
    assert label_thumbnails(black, KEYE) == ((True, False), (1.0, 1.0))


def test_threshold_is_configurable():
    frames = np.stack([stripes(0), stripes(3)])  # cosine 11/14 = 0.79 on every patch
    assert label_thumbnails(frames, KEYE)[0] == (True, False)
    strict = SlowFastConfig(similarity="keye", similarity_patch=28, patch_similarity=0.8)
    assert label_thumbnails(frames, strict)[0] == (True, True)


def test_hsv_matches_colorsys_in_opencv_ranges():
    """OpenCV's 8-bit HSV (keye's) is colorsys' scaled to H 0–180, S, V 0–255, within a unit."""
    rgb = np.random.default_rng(0).integers(0, 256, (500, 3))
    ours = rgb_to_hsv(rgb.astype(np.uint8)[None])[0].astype(float)
    for (r, g, b), (h, s, v) in zip(rgb, ours, strict=True):
        rh, rs, rv = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert min(abs(h - rh * 180), 180 - abs(h - rh * 180)) <= 1
        assert abs(s - rs * 255) <= 1 and v == pytest.approx(rv * 255)


# --- sizes and budget -------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(720, 1280), (1080, 1920), (480, 854), (97, 61)])
def test_fit_size_keeps_aspect_and_grid(height, width):
    for tokens in (1, 4, 36, 100, 230, 768):
        h, w = fit_size(height, width, tokens)
        assert h % 32 == 0 and w % 32 == 0
        assert (h // 32) * (w // 32) <= tokens
        native = (max(32, round(height / 32) * 32), max(32, round(width / 32) * 32))
        assert h <= native[0] and w <= native[1]
        if (h, w) != native:  # scaled: each side within one 32-px step of the exact scale
            scale = (tokens * 32 * 32 / (height * width)) ** 0.5
            assert height * scale - 32 < h <= max(32, height * scale)
            assert width * scale - 32 < w <= max(32, width * scale)


def test_fit_size_extreme_aspect_ratio_stays_within_tokens():
    assert tokens_of(fit_size(32, 3200, 10)) <= 10
    assert tokens_of(fit_size(3200, 40, 3)) <= 3


def _tight(plan, height, width, config):
    """No larger slow size fits the slow budget (and its cap), and no larger fast size (never
    above the slow size) fits the fast budget."""
    runs = runs_of(plan.slow)
    slow_patches = plan_cost([r for r in runs if r.slow], 1, 1, config.temporal_patch)
    fast_patches = plan_cost([r for r in runs if not r.slow], 1, 1, config.temporal_patch)
    for target in range(1, config.max_slow_tokens + 1):
        size = tokens_of(fit_size(height, width, target))
        if size > plan.slow_tokens and slow_patches * size <= config.slow_budget:
            return False
        if (plan.fast_tokens < size <= plan.slow_tokens
                and fast_patches * size <= config.fast_budget):
            return False
    return True


def test_budgets_are_never_exceeded_and_tight():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 60))
        height, width = (int(x) for x in rng.integers(40, 1400, 2))
        slow = (True, *(bool(x) for x in rng.random(n - 1) < rng.random()))
        config = SlowFastConfig(slow_budget=int(rng.integers(n, 12000)),
                                fast_budget=int(rng.integers(n, 4000)))
        plan = make_plan((height, width), np.arange(n) / 8, None, slow, (1.0,) * n, config)
        runs = plan.runs
        slow_cost = plan_cost([r for r in runs if r.slow], plan.slow_tokens, 0, 2)
        fast_cost = plan_cost([r for r in runs if not r.slow], 0, plan.fast_tokens, 2)
        assert slow_cost <= config.slow_budget and fast_cost <= config.fast_budget, trial
        assert plan.num_tokens == slow_cost + fast_cost
        assert plan.fast_tokens <= plan.slow_tokens <= config.max_slow_tokens
        assert _tight(plan, height, width, config), (trial, plan)


def test_appendix_a_budgets_on_a_720p_clip():
    # 80 frames: 4 slow (4 runs of one) and 76 fast (4 runs of 19): 4 + 40 temporal patches
    slow = tuple(i % 20 == 0 for i in range(80))
    plan = make_plan((720, 1280), np.arange(80) / 8, None, slow, (1.0,) * 80, SlowFastConfig())
    assert plan.slow_size == fit_size(720, 1280, 768) == (640, 1152)  # 4 × 720 ≤ 8192: capped
    assert plan.fast_size == (160, 320) and 40 * plan.fast_tokens <= 2048  # 40 fast patches
    assert _tight(plan, 720, 1280, SlowFastConfig())
    assert plan.summary()["slow_budget"] == 8192 and plan.summary()["fast_budget"] == 2048


def test_single_frame_runs_are_paid_as_whole_temporal_patches():
    runs = runs_of([True, False, True, False, False, False])
    assert plan_cost(runs, 10, 3, 2) == 10 + 3 + 10 + 2 * 3


def test_budget_too_small_for_the_frames_is_a_config_error():
    frames = np.zeros((8, 64, 64, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"slow_budget 3, fast_budget 2048\) cannot hold 8"):
        plan_uniform(frames, np.arange(8) / 8, SlowFastConfig(slow_budget=3))


def test_uniform_plan_is_one_run_at_one_size():
    frames = np.zeros((6, 720, 1280, 3), np.uint8)
    plan = plan_uniform(frames, np.arange(6) / 2, SlowFastConfig(slow_budget=600))
    assert plan.slow == (True,) * 6 and len(plan.runs) == 1
    assert plan.num_tokens == 3 * plan.slow_tokens <= 600
    assert plan.slow_tokens > 600 // 3 - 30  # tight up to the 32-px grid


def test_plan_reports_every_frame():
    frames = np.stack([stripes(0), stripes(0), stripes(0, vertical=False)])
    plan = plan_slowfast(frames, [0.0, 0.125, 0.25], KEYE, source_indices=[0, 4, 8])
    rows = [(f.source_index, f.timestamp, f.slow, f.size) for f in plan.frames]
    assert rows == [  # frame 4 is fast by its similarity, slow as frame 0's patch mate
        (0, 0.0, True, plan.slow_size),
        (4, 0.125, True, plan.slow_size),
        (8, 0.25, True, plan.slow_size),
    ]
    assert plan.references == (True, False, True) and plan.summary()["slow_frames"] == 3


def test_modes_registry():
    assert get_mode("slowfast").needs_thumbnails and not get_mode("uniform").needs_thumbnails
    with pytest.raises(ConfigError, match=r"available modes = \['slowfast', 'uniform', 'uni"):
        get_mode("keyframes")
    with pytest.raises(ConfigError, match="already registered"):
        register_mode("uniform", get_mode("uniform"))


def test_config_is_validated():
    with pytest.raises(ConfigError, match=r"frame_similarity \(1.5\)"):
        SlowFastConfig(frame_similarity=1.5)
    with pytest.raises(ConfigError, match="fast_budget"):
        SlowFastConfig(fast_budget=0)
    with pytest.raises(ConfigError, match="unknown frame similarity 'cosine'; valid: keye, ncc"):
        SlowFastConfig(similarity="cosine")


def test_runs_of_covers_every_frame():
    for labels in itertools.product([True, False], repeat=5):
        runs = runs_of(labels)
        assert [r.slow for r in runs for _ in range(r.length)] == list(labels)
        assert all(a.slow != b.slow for a, b in itertools.pairwise(runs))


def test_size_forecast_extends_the_last_run_to_the_expected_count():
    # A budget that binds: the guess for each frame is the plan of the labels so far, the last
    # run running to the expected 6 frames; it misses until the last run has started.
    config = SlowFastConfig(similarity="keye", similarity_patch=28, slow_budget=400,
                            fast_budget=100)
    thumbs = [stripes(0)] * 3 + [stripes(0, vertical=False)] * 3  # S F F S F F
    forecast = SizeForecast(Labeler(config))
    guesses = [forecast(t, (720, 1280), 6) for t in thumbs]
    assert forecast.labeler.slow == [True, False, False, True, False, False]
    # in whole temporal patches: SS, then SS F… (frame 2), then SSSS FF once frame 3 is slow
    one_run = choose_sizes(720, 1280, [Run(0, 6, True)], config)
    two_runs = choose_sizes(720, 1280, [Run(0, 2, True), Run(2, 6, False)], config)
    final = choose_sizes(720, 1280, [Run(0, 4, True), Run(4, 6, False)], config)
    assert guesses == [one_run[0], one_run[0], two_runs[1], one_run[0], final[1], final[1]]
    assert one_run != two_runs != final  # the budget binds: the first guesses miss
    assert SizeForecast(Labeler(config))(thumbs[0], (720, 1280), None) is None  # no duration
