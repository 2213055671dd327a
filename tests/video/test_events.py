"""SlowFast against ground truth (Sec. 4.2.1): generated clips with known events, decoded by
PyAV, must get their slow frames where the content changes and nowhere else; and the
budget-matched "w/o SlowFast" ablations spend the SlowFast plan's tokens."""

from __future__ import annotations

import math

import events
import numpy as np
import pytest

from qsave.video.decode import DecodeConfig
from qsave.video.inputs import VideoConfig, prepare_video
from qsave.video.slowfast import (
    SlowFastConfig,
    fit_size,
    make_plan,
    match_frames,
    match_slow_size,
    tokens_of,
)

SLOWFAST = VideoConfig()  # the default: SlowFast with the ncc similarity
KEYE = VideoConfig(slowfast=SlowFastConfig(similarity="keye"))


def slow_times(path, config=SLOWFAST) -> list[float]:
    """When a new reference slow frame starts (its temporal-patch mate is slow too)."""
    plan = prepare_video(path, config).plan
    assert all(plan.slow[i] for i, ref in enumerate(plan.references) if ref)
    return [t for t, ref in zip(plan.timestamps, plan.references, strict=True) if ref]


def test_a_hard_cut_starts_a_slow_frame(tmp_path):
    path, cuts = events.cuts(tmp_path / "cuts.mp4")
    times = slow_times(path)
    assert len(times) == 1 + len(cuts)
    for cut, time in zip(cuts, times[1:], strict=True):
        assert abs(time - cut) <= 0.125  # within one sampled frame of the cut


def test_a_colour_inversion_starts_a_slow_frame(tmp_path):
    path, when = events.inversion(tmp_path / "inversion.mp4")
    assert slow_times(path) == [0.0, pytest.approx(when, abs=0.125)]


def test_every_noise_frame_is_slow(tmp_path):
    path, (start, stop) = events.noise_segment(tmp_path / "noise.mp4")
    plan = prepare_video(path).plan
    noise = [ref for t, ref in zip(plan.timestamps, plan.references, strict=True)
             if start <= t < stop]
    assert len(noise) == 8 and all(noise)
    assert slow_times(path, KEYE) == [0.0]  # keye's rule: noise looks like the first frame


def test_a_static_shot_has_exactly_one_slow_frame(tmp_path):
    assert slow_times(events.static(tmp_path / "static.mp4")) == [0.0]


def test_a_fast_pan_has_more_slow_frames_than_a_slow_pan(tmp_path):
    slow_pan = slow_times(events.pan(tmp_path / "slow.mp4", 1))
    fast_pan = slow_times(events.pan(tmp_path / "fast.mp4", 8))
    assert 1 < len(slow_pan) < len(fast_pan)
    assert len(fast_pan) == 24  # 24 px a sampled frame: every frame brings new content


def test_a_small_object_moving_on_a_still_background_stays_fast(tmp_path):
    assert slow_times(events.moving_object(tmp_path / "object.mp4")) == [0.0]


# --- budget-matched ablations ------------------------------------------------------------------
SLOW = tuple(i % 20 == 0 for i in range(80))  # a 10 s 720p clip: 4 slow and 76 fast frames


@pytest.fixture(scope="module")
def plan():
    return make_plan((720, 1280), np.arange(80) / 8, None, SLOW, (1.0,) * 80, SlowFastConfig())


def test_uniform_slow_size_spends_the_slowfast_tokens_within_one_frame(plan):
    matched = match_slow_size(plan, 720, 1280, SlowFastConfig())
    assert matched.slow_size == plan.slow_size and all(matched.slow)
    assert plan.num_tokens - plan.slow_tokens < matched.num_tokens <= plan.num_tokens
    assert matched.positions == tuple(sorted(set(matched.positions)))  # evenly spread, in order
    assert matched.positions[0] == 0 and matched.positions[-1] == 79


def test_uniform_matched_keeps_every_frame_at_one_size_within_the_tokens(plan):
    matched = match_frames(plan, 720, 1280, SlowFastConfig())
    assert matched.positions == tuple(range(80)) and matched.slow == (True,) * 80
    assert matched.num_tokens <= plan.num_tokens
    larger = [tokens_of(fit_size(720, 1280, t)) for t in range(1, 769)]
    assert all(40 * k > plan.num_tokens for k in larger if k > matched.slow_tokens)  # tight


def test_the_ablation_modes_end_to_end(tmp_path):
    path, _ = events.cuts(tmp_path / "cuts.mp4")
    small = SlowFastConfig(slow_budget=64, fast_budget=64)  # budgets that bind at 320×240
    few = DecodeConfig(max_frames=32)
    reference = prepare_video(path, VideoConfig(decode=few, slowfast=small))
    for mode in ("uniform-matched", "uniform-slow-size"):
        prepared = prepare_video(path, VideoConfig(mode=mode, decode=few, slowfast=small))
        plan = prepared.plan
        assert len(prepared.videos) == 1 and plan.num_tokens <= reference.num_tokens
        assert prepared.videos[0].shape[0] == math.ceil(len(plan.slow) / 2) * 2
        assert prepared.videos[0].shape[1:3] == plan.slow_size
        assert plan.summary()["slow_budget"] == reference.num_tokens
    thin = prepare_video(path, VideoConfig(mode="uniform-slow-size", decode=few,
                                           slowfast=small)).plan
    assert thin.slow_size == reference.plan.slow_size and len(thin.slow) < 24
