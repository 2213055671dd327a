"""Train/test splits grouped by prompt and stratified by generator, and the RL set.

Sec. 3.3 splits the data 80:20; prompts are shared across generators, so a prompt must not
appear in both splits (grouping) and every generator should be split in the same
proportion (stratification). App. C.1 adds a separate RL set for GRPO with its own prompts
*and* its own generators, disjoint from the SFT data.

Videos that would break that disjointness (an RL generator on a non-RL prompt, or an SFT
generator on an RL prompt) are assigned ``unused``, with the reason; none is dropped.

A video that already has a split keeps it (``SplitConfig.resplit`` draws every split again,
the RL set kept with ``keep_rl``); a video without one joins the split of its prompt, else is
assigned as above. Every video whose split changes is listed (:meth:`SplitResult.moved`), and
:func:`rater_problems` reports a video with fewer raters than its new split needs (Sec. 3.3:
12 per test video).

>>> videos = pd.DataFrame({"video_id": [f"v{i}" for i in range(10)],
...                        "prompt": [f"p{i}" for i in range(10)], "generator": ["g"] * 10})
>>> result = assign_splits(videos, SplitConfig(seed=0))
>>> result.assignments["split"].value_counts().to_dict()
{'train': 8, 'test': 2}
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qsave.data.annotations import ROW, UNUSED, VIDEO_SPLITS, AnnotationConfig, Problem
from qsave.errors import ConfigError

SFT_SPLITS = ("train", "test")


@dataclass(frozen=True)
class SplitConfig:
    """How videos are split (Sec. 3.3) and which ones form the RL set (App. C.1)."""

    test_fraction: float = 0.2  # Sec. 3.3: 80:20
    seed: int = 0  # the split is a function of the seed and the table
    rl_generators: tuple[str, ...] = ()  # App. C.1: generators reserved for the RL set
    rl_prompt_fraction: float = 1.0  # share of the RL generators' prompts that go to RL
    keep_rl: bool = True  # with resplit: videos already marked split "rl" stay in the RL set
    resplit: bool = False  # draw the split of videos that already have one again

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction ({self.test_fraction}) must be in (0, 1)")
        if not 0.0 < self.rl_prompt_fraction <= 1.0:
            raise ConfigError(f"rl_prompt_fraction ({self.rl_prompt_fraction}) must be in (0, 1]")
        object.__setattr__(self, "rl_generators", tuple(self.rl_generators))


@dataclass
class SplitResult:
    """``assignments``: video_id, prompt, generator, split (train/test/rl/unused), reason,
    previous_split (the table's split before, None when it had none); plus problems."""

    assignments: pd.DataFrame
    problems: list[Problem]

    def summary(self) -> pd.DataFrame:
        """Videos per generator (rows) and split (columns)."""
        return pd.crosstab(self.assignments["generator"], self.assignments["split"])

    def moved(self) -> pd.DataFrame:
        """The videos that had a split and now have another one."""
        frame = self.assignments
        return frame[frame["previous_split"].notna() & (frame["previous_split"] != frame["split"])]

    def apply(self, videos: pd.DataFrame) -> pd.DataFrame:
        """The videos table with its ``split`` column replaced by the assignment."""
        split = dict(zip(self.assignments["video_id"], self.assignments["split"], strict=True))
        return videos.assign(split=videos["video_id"].map(split))


def _prompt_key(videos: pd.DataFrame) -> pd.Series:
    """The grouping key: the prompt, or the video id when the prompt is empty."""
    prompt = videos["prompt"].astype(object)
    empty = prompt.isna() | (prompt.astype(str).str.strip() == "")
    return prompt.astype(str).str.strip().where(~empty, "<no prompt> " + videos["video_id"])


def _pick_rl(videos: pd.DataFrame, keys: pd.Series, kept: pd.Series, config: SplitConfig,
             rng: np.random.Generator) -> tuple[set[str], set[str]]:
    """The RL generators and RL prompts: those of the kept ``rl`` videos plus ``config``'s
    choice among the prompts no kept video uses."""
    existing = kept & videos["split"].eq("rl")
    generators = set(videos.loc[existing, "generator"]) | set(config.rl_generators)
    prompts = set(keys[existing])
    chosen = ~kept & videos["generator"].isin(set(config.rl_generators))
    candidates = sorted(set(keys[chosen]) - set(keys[kept]))
    if candidates:
        n = max(1, round(config.rl_prompt_fraction * len(candidates)))
        prompts |= {candidates[i] for i in rng.permutation(len(candidates))[:n]}
    return generators, prompts


def _stratified_groups(keys: pd.Series, generators: pd.Series, fraction: float,
                       rng: np.random.Generator) -> set[str]:
    """The prompt groups that form the test split.

    Greedy (like scikit-learn's StratifiedGroupKFold): groups in a seeded random order,
    larger first; each goes to test when that brings the per-generator test counts (and the
    total) closer to ``fraction`` of their size in squared distance.
    """
    counts = {key: Counter(g) for key, g in generators.groupby(keys, sort=True)}
    target = {g: fraction * n for g, n in Counter(generators).items()}
    total_target = fraction * len(keys)
    names = sorted(counts)
    order = rng.permutation(len(names))
    order = sorted(order, key=lambda i: -sum(counts[names[i]].values()))  # stable: keeps ties
    current: Counter[str] = Counter()
    test: set[str] = set()
    for i in order:
        group = counts[names[i]]
        size, now = sum(group.values()), sum(current.values())
        before = sum((current[g] - target[g]) ** 2 for g in group) + (now - total_target) ** 2
        after = sum((current[g] + c - target[g]) ** 2 for g, c in group.items())
        after += (now + size - total_target) ** 2
        if after < before:
            test.add(names[i])
            current.update(group)
    return test


def assign_splits(videos: pd.DataFrame, config: SplitConfig | None = None) -> SplitResult:
    """Assign every video to train, test, rl or unused (Sec. 3.3, App. C.1); reproducible.

    ``videos`` needs ``video_id``, ``prompt``, ``generator`` and may have ``split``: a video
    with a valid split keeps it unless ``config.resplit`` (then only ``rl`` ones, with
    ``keep_rl``); the others are assigned. The split of a video sharing its prompt with a
    kept train or test video is that one (``reason`` says so).
    """
    config = config or SplitConfig()
    videos = videos.reset_index(drop=True)
    if "split" not in videos.columns:
        videos = videos.assign(split=None)
    previous = videos["split"].astype(object).where(videos["split"].notna(), None)
    if config.resplit:
        kept = videos["split"].eq("rl") & config.keep_rl
    else:
        kept = videos["split"].isin(VIDEO_SPLITS)
    rng = np.random.default_rng(config.seed)
    keys = _prompt_key(videos)
    rl_generators, rl_prompts = _pick_rl(videos, keys, kept, config, rng)
    is_rl_gen, is_rl_prompt = videos["generator"].isin(rl_generators), keys.isin(rl_prompts)
    split = videos["split"].astype(object).where(kept, "")
    reason = pd.Series(np.where(kept & (not config.resplit), "kept", ""), index=videos.index,
                       dtype=object)
    free = ~kept
    split[free & is_rl_gen & is_rl_prompt] = "rl"
    split[free & is_rl_gen & ~is_rl_prompt] = UNUSED
    reason[free & is_rl_gen & ~is_rl_prompt] = "RL generator on a prompt outside the RL set"
    split[free & ~is_rl_gen & is_rl_prompt] = UNUSED
    reason[free & ~is_rl_gen & is_rl_prompt] = "prompt reserved for the RL set"
    sft_kept = kept & videos["split"].isin(SFT_SPLITS)
    prompt_split = dict(zip(keys[sft_kept], videos.loc[sft_kept, "split"], strict=True))
    joins = (split == "") & keys.isin(set(prompt_split))
    split[joins] = keys[joins].map(prompt_split)
    reason[joins] = "its prompt is in this split"
    sft = split == ""
    test = _stratified_groups(keys[sft], videos.loc[sft, "generator"], config.test_fraction, rng)
    split[sft] = np.where(keys[sft].isin(test), "test", "train")
    out = pd.DataFrame({"video_id": videos["video_id"], "prompt": videos["prompt"],
                        "generator": videos["generator"], "split": split, "reason": reason,
                        "previous_split": previous})
    return SplitResult(out, check_splits(out.assign(**{ROW: np.arange(1, len(out) + 1)})))


def rater_problems(assignments: pd.DataFrame, n_raters: pd.Series,
                   config: AnnotationConfig | None = None,
                   severity: str = "error") -> list[Problem]:
    """A ``too_few_raters`` problem per video with fewer raters (``n_raters``: video_id →
    count, e.g. :func:`~qsave.data.annotations.raters_per_video`) than its split needs
    (Sec. 3.3: 3 per train video, 12 per test video); ``unused`` videos are not checked."""
    config = config or AnnotationConfig()
    problems = []
    for video, split in zip(assignments["video_id"], assignments["split"], strict=True):
        if split == UNUSED:
            continue
        have, need = int(n_raters.get(video, 0)), config.min_raters(split)
        if have < need:
            problems.append(Problem("too_few_raters", f"video {video!r} ({split}) has {have} "
                                    f"rater(s), needs {need}", "videos", video_id=video,
                                    severity=severity))
    return problems


def check_splits(videos: pd.DataFrame) -> list[Problem]:
    """Leaks between splits: a prompt in two of train/test/rl, a generator in RL and SFT.

    Also warns when a generator's test share is far (> 0.15) from the overall test share.
    """
    frame = videos[videos["split"].isin([*SFT_SPLITS, "rl"])]
    rows = frame[ROW] if ROW in frame.columns else pd.Series(range(1, len(frame) + 1), frame.index)
    frame = frame.assign(_key=_prompt_key(frame), _r=rows)
    problems = []
    for key, group in frame.groupby("_key"):
        if group["split"].nunique() > 1:
            problems.append(Problem("prompt_leak", f"prompt {key!r} is in splits "
                                    f"{', '.join(sorted(group['split'].unique()))}", "videos",
                                    tuple(int(r) for r in group["_r"])))
    rl = set(frame.loc[frame["split"] == "rl", "generator"])
    for generator in sorted(rl & set(frame.loc[frame["split"] != "rl", "generator"])):
        problems.append(Problem("generator_leak", f"generator {generator!r} is in the RL set and "
                                "in the SFT data (App. C.1 wants them disjoint)", "videos"))
    problems.extend(_balance_warnings(frame[frame["split"].isin(SFT_SPLITS)]))
    return problems


def _balance_warnings(sft: pd.DataFrame, tolerance: float = 0.15) -> list[Problem]:
    if sft.empty:
        return []
    overall = float((sft["split"] == "test").mean())
    problems = []
    for generator, group in sft.groupby("generator"):
        share = float((group["split"] == "test").mean())
        if len(group) >= 5 and not math.isclose(share, overall, abs_tol=tolerance):
            problems.append(Problem("unbalanced_split", f"generator {generator!r} has "
                                    f"{share:.0%} of its videos in test, overall {overall:.0%}",
                                    "videos", severity="warning"))
    return problems
