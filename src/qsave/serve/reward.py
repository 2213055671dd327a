"""The evaluator as a reward model for generator RL (paper Sec. 5, Table 5; App. G).

One scalar per video: the weighted mean of the chosen dimensions' scores r̂ (0..1), by default
the plain mean of visual, dynamic and alignment — the paper's *Overall* (App. D.2). A video that
cannot be scored gets ``error_reward`` (default 0, the bottom of the scale) and its error is
logged; the batch goes on.

Every call logs the batch's per-dimension mean and spread (logger ``qsave.reward``), and a
:class:`CollapseMonitor` warns (``RewardCollapseWarning``) when one dimension collapses — its
mean falls far below where training started, or its spread vanishes so it no longer ranks the
rollouts. Both are the reward-hacking failure mode App. G warns about: a generator that learns to
trade one dimension (typically motion) for the others.

>>> config = RewardConfig(weights={"visual": 1.0, "alignment": 3.0})
>>> round(combine({Dimension.VISUAL: 0.2, Dimension.ALIGNMENT: 0.6}, config), 6)
0.5
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import ConfigError
from qsave.evaluator import Evaluator, ScoreItem, Video
from qsave.scores import ItemError, VideoResult
from qsave.spec import TINY

log = logging.getLogger("qsave.reward")


class RewardCollapseWarning(UserWarning):
    """One reward dimension collapsed during training (App. G: reward hacking)."""


class UnscoredVideoWarning(UserWarning):
    """A video could not be scored; its reward is ``error_reward`` (NaN in :func:`reward`)."""


@dataclass(frozen=True)
class RewardConfig:
    """How dimension scores become one reward."""

    weights: Mapping[str, float] = field(  # dimension → weight (≥ 0); reward = weighted mean
        default_factory=lambda: {d.value: 1.0 for d in DIMENSIONS}
    )
    error_reward: float = 0.0  # the reward of a video that cannot be scored (NaN allowed)

    def __post_init__(self) -> None:
        weights = {Dimension.parse(k): float(v) for k, v in dict(self.weights).items()}
        bad = {d.value: w for d, w in weights.items() if not math.isfinite(w) or w < 0}
        if bad:
            raise ConfigError(f"reward weights must be finite and non-negative, got {bad}")
        if not any(weights.values()):
            raise ConfigError(f"at least one reward weight must be positive, got {self.weights}")
        if math.isinf(self.error_reward):
            raise ConfigError(f"error_reward ({self.error_reward}) must be finite or NaN")
        ordered = {d.value: weights[d] for d in DIMENSIONS if d in weights}
        object.__setattr__(self, "weights", ordered)

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        """The dimensions with a positive weight, in canonical order (the ones scored)."""
        return tuple(Dimension(d) for d, w in self.weights.items() if w > 0)


def combine(scores: Mapping[Dimension, float], config: RewardConfig) -> float:
    """Σ w_d·r̂_d / Σ w_d over the dimensions with a positive weight (the weights divided by
    their largest first, so huge weights cannot overflow the sum).

    >>> round(combine({Dimension.VISUAL: 0.49}, RewardConfig({"visual": 1e308})), 6)
    0.49
    """
    dims = config.dimensions
    largest = max(config.weights[d.value] for d in dims)
    weights = [config.weights[d.value] / largest for d in dims]
    return sum(w * scores[d] for w, d in zip(weights, dims, strict=True)) / sum(weights)


@dataclass
class RewardItem:
    """One video's reward, its per-dimension scores (r̂, 0..1) and the error, if any."""

    reward: float
    scores: dict[str, float]
    error: ItemError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.reward, "scores": self.scores,
                "error": asdict(self.error) if self.error else None}


def reward_of(result: VideoResult, config: RewardConfig) -> RewardItem:
    """The reward of one scored video; an error gives ``error_reward``."""
    if result.error is not None:
        return RewardItem(config.error_reward, {}, result.error)
    scores = {d: s.score for d, s in result.scores.items()}
    return RewardItem(combine(scores, config), {d.value: v for d, v in scores.items()})


# ---- per-dimension statistics and the collapse monitor ----------------------------------
@dataclass(frozen=True)
class DimensionStats:
    """Mean and population standard deviation of one dimension over a batch."""

    mean: float
    std: float
    count: int


def batch_stats(items: Sequence[RewardItem]) -> dict[str, DimensionStats]:
    """Per-dimension mean/std over the items that were scored.

    >>> stats = batch_stats([RewardItem(0, {"visual": 0.2}), RewardItem(0, {"visual": 0.4})])
    >>> round(stats["visual"].mean, 6), round(stats["visual"].std, 6)
    (0.3, 0.1)
    """
    stats = {}
    for d in DIMENSIONS:
        values = [item.scores[d.value] for item in items if d.value in item.scores]
        if values:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            stats[d.value] = DimensionStats(mean, std, len(values))
    return stats


@dataclass(frozen=True)
class CollapseConfig:
    """When a dimension counts as collapsed (scores r̂ on the 0..1 scale)."""

    warmup: int = 3  # batches averaged into the starting level of each dimension
    smoothing: float = 0.3  # weight of the newest batch in the running mean (EMA)
    max_drop: float = 0.15  # running mean this far below the starting level: collapsed
    min_std: float = 0.01  # batch spread below this …
    patience: int = 3  # … for this many batches in a row: no signal left

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.patience < 1:
            raise ConfigError(f"warmup ({self.warmup}) and patience ({self.patience}) must be ≥ 1")
        if not 0 < self.smoothing <= 1:
            raise ConfigError(f"smoothing ({self.smoothing}) must be in (0, 1]")
        if self.max_drop <= 0 or self.min_std < 0:
            raise ConfigError(f"max_drop ({self.max_drop}) must be > 0, min_std "
                              f"({self.min_std}) ≥ 0")


@dataclass
class _Track:
    warm: list[float] = field(default_factory=list)
    level: float | None = None  # starting level: mean of the warm-up batch means
    running: float | None = None  # EMA of the batch means
    flat: int = 0  # consecutive batches with std < min_std
    raised: set[str] = field(default_factory=set)  # kinds currently warned about


class CollapseMonitor:
    """Follows each dimension's batch mean and spread across reward calls; ``update`` returns
    the new collapse messages (each kind warned once until the dimension recovers)."""

    def __init__(self, config: CollapseConfig = CollapseConfig()) -> None:
        self.config = config
        self.tracks: dict[str, _Track] = {}

    def update(self, stats: Mapping[str, DimensionStats]) -> list[str]:
        messages = []
        for name, stat in stats.items():
            track = self.tracks.setdefault(name, _Track())
            messages += self._level(name, track, stat.mean)
            if stat.count >= 2:
                messages += self._spread(name, track, stat.std)
        return messages

    def _level(self, name: str, track: _Track, mean: float) -> list[str]:
        c = self.config
        track.running = mean if track.running is None else (
            c.smoothing * mean + (1 - c.smoothing) * track.running)
        if track.level is None:
            track.warm.append(mean)
            if len(track.warm) == c.warmup:
                track.level = sum(track.warm) / len(track.warm)
            return []
        drop = track.level - track.running
        return self._flag(track, "level", drop > c.max_drop, (
            f"reward dimension {name!r} collapsed: running mean {track.running:.3f} is "
            f"{drop:.3f} below its starting level {track.level:.3f} (max_drop {c.max_drop})"))

    def _spread(self, name: str, track: _Track, std: float) -> list[str]:
        c = self.config
        track.flat = track.flat + 1 if std < c.min_std else 0
        return self._flag(track, "spread", track.flat >= c.patience, (
            f"reward dimension {name!r} collapsed: its spread over the batch stayed below "
            f"{c.min_std} for {track.flat} batches (std {std:.4f}); it no longer ranks rollouts"))

    @staticmethod
    def _flag(track: _Track, kind: str, collapsed: bool, message: str) -> list[str]:
        if not collapsed:
            track.raised.discard(kind)
            return []
        if kind in track.raised:
            return []
        track.raised.add(kind)
        return [message]


# ---- the reward model --------------------------------------------------------------------


class RewardModel:
    """An evaluator used as a reward: ``model(videos, prompts) -> list[float]``.

    ``history`` keeps one summary per call (step, rewards' mean, per-dimension mean/std,
    failures) for the training log; ``last`` holds the last call's :class:`RewardItem` list.
    """

    def __init__(
        self, evaluator: Any, config: RewardConfig = RewardConfig(),
        collapse: CollapseConfig | None = CollapseConfig(), batch_size: int = 8,
    ) -> None:
        self.evaluator, self.config, self.batch_size = evaluator, config, batch_size
        self.monitor = CollapseMonitor(collapse) if collapse is not None else None
        self.history: list[dict[str, Any]] = []
        self.last: list[RewardItem] = []

    def __call__(self, videos: Sequence[Video], prompts: Sequence[str | None]) -> list[float]:
        return [item.reward for item in self.details(videos, prompts)]

    def details(self, videos: Sequence[Video], prompts: Sequence[str | None]) -> list[RewardItem]:
        """Rewards with their per-dimension scores and errors, one per video, in order."""
        if len(videos) != len(prompts):
            raise ConfigError(f"{len(videos)} videos but {len(prompts)} prompts")
        items = score_videos(self.evaluator, videos, prompts, self.config, self.batch_size)
        self.last = items
        self._record(items)
        return items

    def _record(self, items: list[RewardItem]) -> None:
        stats = batch_stats(items)
        failed = [(i, item.error) for i, item in enumerate(items) if item.error]
        rewards = [item.reward for item in items if item.error is None]
        summary = {"step": len(self.history) + 1, "n": len(items), "failed": len(failed),
                   "reward_mean": sum(rewards) / len(rewards) if rewards else math.nan,
                   **{f"{d}_mean": s.mean for d, s in stats.items()},
                   **{f"{d}_std": s.std for d, s in stats.items()}}
        self.history.append(summary)
        dims = " ".join(f"{d} {s.mean:.3f}±{s.std:.3f}" for d, s in stats.items())
        log.info("reward step %d: n=%d mean=%.4f | %s | failed %d", summary["step"],
                 len(items), summary["reward_mean"], dims, len(failed))
        for index, error in failed:
            message = (f"reward item {index} could not be scored (reward "
                       f"{self.config.error_reward}): {error}")
            log.warning(message)
            warnings.warn(message, UnscoredVideoWarning, stacklevel=4)
        for message in self.monitor.update(stats) if self.monitor else []:
            log.warning(message)
            warnings.warn(message, RewardCollapseWarning, stacklevel=4)


def score_videos(
    evaluator: Evaluator, videos: Sequence[Video], prompts: Sequence[str | None],
    config: RewardConfig, batch_size: int = 8,
) -> list[RewardItem]:
    """Score videos (paths, encoded bytes or prepared videos) through the scoring pipeline
    and combine their dimensions; a video that fails gets ``error_reward`` and its error."""
    items = [ScoreItem(video, prompt, id=str(index))
             for index, (video, prompt) in enumerate(zip(videos, prompts, strict=True))]
    results = evaluator.score_many(items, dimensions=config.dimensions, batch_size=batch_size)
    return [reward_of(result, config) for result in results]


@lru_cache(maxsize=2)
def _loaded(model: str) -> Evaluator:
    """Evaluators loaded by name for :func:`reward`, kept for the next call (two at most)."""
    return Evaluator.from_pretrained(model)


_MODELS: dict[tuple, RewardModel] = {}


def reward(
    videos: Sequence[Video], prompts: Sequence[str | None], *, model: str | Evaluator = TINY,
    weights: Mapping[str, float] | None = None, error_reward: float = math.nan,
    batch_size: int = 8,
    collapse: CollapseConfig | None = CollapseConfig(),
) -> list[float]:
    """One reward per video for generator RL, in-process (paper Sec. 5, Table 5).

    ``model`` is an :class:`~qsave.evaluator.Evaluator` or a name for ``from_pretrained``
    (loaded once and kept). Calls with the same model and settings share one
    :class:`RewardModel`, so the per-dimension log and the collapse monitor follow training
    across calls. For several reward setups in one process, hold ``RewardModel`` objects.
    A video that cannot be scored gets ``error_reward`` — NaN unless given, never a silent
    number — and an :class:`UnscoredVideoWarning` naming its error.

    >>> import tempfile
    >>> from qsave.data.synthetic import SynthConfig, write_corpus
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     clip = write_corpus(tmp, SynthConfig(n=1, seconds=0.5, size=64)).clips[0]
    ...     rewards = reward([f"{tmp}/{clip.path}"], [clip.prompt], weights={"visual": 1})
    >>> 0.0 <= rewards[0] <= 1.0
    True
    """
    evaluator = _loaded(model) if isinstance(model, str) else model
    config = RewardConfig(**({"weights": weights} if weights is not None else {}),
                          error_reward=error_reward)
    key = (id(evaluator), tuple(config.weights.items()), repr(error_reward), batch_size, collapse)
    if key not in _MODELS:
        _MODELS[key] = RewardModel(evaluator, config, collapse, batch_size)
    return _MODELS[key](videos, prompts)


def reward_model(model: str | Evaluator = TINY, **kwargs: Any) -> RewardModel:
    """A :class:`RewardModel` of an evaluator or a model name (``RewardConfig`` fields and
    ``collapse``/``batch_size`` as keywords)."""
    collapse = kwargs.pop("collapse", CollapseConfig())
    batch_size = kwargs.pop("batch_size", 8)
    evaluator = _loaded(model) if isinstance(model, str) else model
    return RewardModel(evaluator, RewardConfig(**kwargs), collapse, batch_size)

