"""The in-process reward: weighting, per-dimension logging, collapse warnings, per-item errors."""

import logging
import warnings

import numpy as np
import pytest

from qsave.dimensions import Dimension
from qsave.errors import ConfigError
from qsave.scores import DimensionScore, ItemError, VideoResult
from qsave.serve.reward import (
    CollapseConfig,
    CollapseMonitor,
    RewardCollapseWarning,
    RewardConfig,
    RewardItem,
    RewardModel,
    batch_stats,
    combine,
    reward,
)


def test_weights_are_checked_and_ordered():
    assert RewardConfig().dimensions == tuple(Dimension)
    config = RewardConfig({"alignment": 2, "visual": 0, "dynamic": 1})
    assert list(config.weights) == ["visual", "dynamic", "alignment"]
    assert config.dimensions == (Dimension.DYNAMIC, Dimension.ALIGNMENT)
    scores = {Dimension.VISUAL: 0.9, Dimension.DYNAMIC: 0.3, Dimension.ALIGNMENT: 0.6}
    assert combine(scores, config) == pytest.approx((0.3 + 2 * 0.6) / 3)
    assert combine(scores, RewardConfig()) == pytest.approx(0.6)
    for bad in ({"visual": -1}, {"visual": 0}, {"visual": float("nan")}, {"colour": 1}):
        with pytest.raises(ConfigError):
            RewardConfig(bad)


def test_batch_stats_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.random((7, 3))
    items = [RewardItem(0.0, dict(zip(("visual", "dynamic", "alignment"), row, strict=True)))
             for row in values]
    items.append(RewardItem(0.0, {}, ItemError("VideoError", "broken")))
    stats = batch_stats(items)
    for column, name in enumerate(("visual", "dynamic", "alignment")):
        assert stats[name].mean == pytest.approx(values[:, column].mean())
        assert stats[name].std == pytest.approx(values[:, column].std())
        assert stats[name].count == 7


def stats_of(**means_and_stds):
    return batch_stats([RewardItem(0.0, {d: m - s for d, (m, s) in means_and_stds.items()}),
                        RewardItem(0.0, {d: m + s for d, (m, s) in means_and_stds.items()})])


def test_monitor_warns_once_on_a_falling_dimension_and_again_after_recovery():
    monitor = CollapseMonitor(CollapseConfig(warmup=2, smoothing=1.0, max_drop=0.2))
    steady = {"visual": (0.6, 0.1)}
    assert monitor.update(stats_of(**steady, dynamic=(0.7, 0.1))) == []
    assert monitor.update(stats_of(**steady, dynamic=(0.7, 0.1))) == []
    assert monitor.update(stats_of(**steady, dynamic=(0.55, 0.1))) == []  # a drop of 0.15
    [message] = monitor.update(stats_of(**steady, dynamic=(0.3, 0.1)))
    assert "'dynamic'" in message and "starting level 0.700" in message
    assert monitor.update(stats_of(**steady, dynamic=(0.2, 0.1))) == []  # already warned
    assert monitor.update(stats_of(**steady, dynamic=(0.7, 0.1))) == []  # recovered
    assert len(monitor.update(stats_of(**steady, dynamic=(0.1, 0.1)))) == 1


def test_monitor_warns_when_a_dimension_stops_ranking():
    monitor = CollapseMonitor(CollapseConfig(min_std=0.01, patience=2, max_drop=0.5))
    assert monitor.update(stats_of(visual=(0.8, 0.001), alignment=(0.5, 0.2))) == []
    [message] = monitor.update(stats_of(visual=(0.8, 0.001), alignment=(0.5, 0.2)))
    assert "'visual'" in message and "spread" in message


class ScriptedEvaluator:
    """Gives each call's videos the next scripted scores (a stand-in for a drifting policy)."""

    def __init__(self, script):
        self.script = iter(script)

    def score_many(self, items, dimensions=None, batch_size=8, **_):
        values = next(self.script)
        for item, value in zip(items, values, strict=True):
            scores = {d: DimensionScore(value[d.value], 1 + 4 * value[d.value], (0.2,) * 5,
                                        "Fair", 1.6) for d in dimensions}
            yield VideoResult(item.name, None, None, item.prompt, scores)


def test_reward_model_logs_per_dimension_and_warns_on_collapse(caplog):
    def pair(visual, dynamic, alignment, spread=0.05):
        values = {"visual": visual, "dynamic": dynamic, "alignment": alignment}
        return [{d: v + sign * spread for d, v in values.items()} for sign in (-1, 1)]

    # three steady batches, then the policy trades motion for looks
    script = [pair(0.8, 0.7, 0.6)] * 3 + [pair(0.9, 0.1, 0.6)] * 3
    model = RewardModel(ScriptedEvaluator(script), collapse=CollapseConfig(warmup=3))
    caplog.set_level(logging.INFO, logger="qsave.reward")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):
            rewards = model(["a.mp4", "b.mp4"], ["p", "p"])
    collapse = [w for w in caught if issubclass(w.category, RewardCollapseWarning)]
    assert len(collapse) == 1 and "'dynamic'" in str(collapse[0].message)
    assert rewards == pytest.approx([(0.9 + 0.1 + 0.6) / 3 - 0.05, (0.9 + 0.1 + 0.6) / 3 + 0.05])
    assert "dynamic 0.700±0.050" in caplog.text and "failed 0" in caplog.text
    assert [h["step"] for h in model.history] == [1, 2, 3, 4, 5, 6]
    assert model.history[-1]["dynamic_mean"] == pytest.approx(0.1)


def test_reward_on_the_tiny_model_with_paths_bytes_and_a_corrupt_video(tiny_evaluator, clips):
    root, videos = clips
    (path, prompt), (other, other_prompt) = videos[:2]
    corrupt = root / "clips" / "corrupt.mp4"
    inputs = [str(path), path.read_bytes(), corrupt, other.read_bytes()[:100], other]
    prompts = [prompt, prompt, "x", other_prompt, other_prompt]
    model = RewardModel(tiny_evaluator, RewardConfig(error_reward=-1.0), batch_size=4)
    rewards = model(inputs, prompts)
    assert rewards[0] == pytest.approx(rewards[1], abs=1e-6)  # bytes decode like the file
    assert rewards[2] == rewards[3] == -1.0
    assert model.last[2].error.type == model.last[3].error.type == "VideoError"
    direct = tiny_evaluator.score(other, other_prompt)
    assert rewards[4] == pytest.approx(sum(s.score for s in direct.scores.values()) / 3,
                                       abs=1e-4)
    assert reward([path], [prompt], model=tiny_evaluator, weights={"visual": 1}) == \
        pytest.approx([model.last[0].scores["visual"]], abs=1e-4)
    with pytest.raises(ConfigError, match="2 videos but 1 prompts"):
        model([path, path], [prompt])


def test_reward_of_an_unscorable_video_is_nan_with_a_warning(tiny_evaluator, tmp_path):
    import math

    from qsave.serve.reward import UnscoredVideoWarning, reward

    with pytest.warns(UnscoredVideoWarning, match="could not be scored"):
        rewards = reward([tmp_path / "missing.mp4"], ["a cube"], model=tiny_evaluator)
    assert math.isnan(rewards[0])
