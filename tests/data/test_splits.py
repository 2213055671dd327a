"""Splits grouped by prompt, stratified by generator, reproducible; the disjoint RL set."""

from __future__ import annotations

import pandas as pd
import pytest

from qsave.data.annotations import ROW
from qsave.data.splits import SplitConfig, assign_splits, check_splits, rater_problems
from qsave.errors import ConfigError


def _shared_prompts(n_prompts: int = 10, generators: tuple[str, ...] = ("g1", "g2", "g3")):
    """Every prompt rendered by every generator, as in Q-Save (Sec. 3.3)."""
    rows = [{"video_id": f"{g}-p{p}", "prompt": f"prompt {p}", "generator": g}
            for p in range(n_prompts) for g in generators]
    return pd.DataFrame(rows)


def _test_prompts(result) -> set[str]:
    frame = result.assignments
    return set(frame.loc[frame["split"] == "test", "prompt"])


def test_80_20_grouped_by_prompt_and_stratified() -> None:
    result = assign_splits(_shared_prompts(), SplitConfig(seed=0))
    frame = result.assignments
    assert len(_test_prompts(result)) == 2  # 20 % of 10 prompts, each with all three videos
    assert (result.summary()["test"] == 2).all() and (result.summary()["train"] == 8).all()
    per_prompt = frame.groupby("prompt")["split"].nunique()
    assert (per_prompt == 1).all()  # no prompt in both splits
    assert result.problems == []


def test_stratified_when_generators_have_their_own_prompts() -> None:
    rows = [{"video_id": f"a{i}", "prompt": f"a prompt {i}", "generator": "A"} for i in range(10)]
    rows += [{"video_id": f"b{i}", "prompt": f"b prompt {i}", "generator": "B"} for i in range(5)]
    summary = assign_splits(pd.DataFrame(rows), SplitConfig(seed=3)).summary()
    assert summary.loc["A", "test"] == 2 and summary.loc["B", "test"] == 1


def test_reproducible_from_the_seed() -> None:
    videos = _shared_prompts(20)
    first = assign_splits(videos, SplitConfig(seed=7)).assignments
    again = assign_splits(videos.sample(frac=1.0, random_state=1), SplitConfig(seed=7))
    assert _test_prompts(again) == set(first.loc[first["split"] == "test", "prompt"])
    chosen = {frozenset(_test_prompts(assign_splits(videos, SplitConfig(seed=s))))
              for s in range(5)}
    assert len(chosen) > 1  # the seed matters


def test_rl_set_has_its_own_prompts_and_generators() -> None:
    videos = _shared_prompts(10, ("g1", "g2", "g3", "g4"))
    config = SplitConfig(seed=0, rl_generators=("g4",), rl_prompt_fraction=0.3)
    result = assign_splits(videos, config)
    frame = result.assignments
    rl = frame[frame["split"] == "rl"]
    assert set(rl["generator"]) == {"g4"} and rl["prompt"].nunique() == 3
    sft = frame[frame["split"].isin(["train", "test"])]
    assert not set(sft["prompt"]) & set(rl["prompt"])
    assert "g4" not in set(sft["generator"])
    unused = frame[frame["split"] == "unused"]
    # g4 on the 7 other prompts, and g1–g3 on the 3 RL prompts: reported, not dropped
    assert len(unused) == 7 + 9 and (unused["reason"] != "").all()
    assert len(frame) == len(videos)
    assert sft["prompt"].nunique() == 7
    tests = sft.groupby("generator")["split"].apply(lambda s: int((s == "test").sum()))
    assert tests.tolist() == [1, 1, 1]  # 20 % of 7 prompts → one test prompt per generator
    assert result.problems == []


def test_existing_rl_videos_are_kept() -> None:
    videos = _shared_prompts(10).assign(split="train")
    videos.loc[videos["generator"] == "g3", "split"] = "rl"
    videos = videos[~((videos["generator"] != "g3") & videos["prompt"].isin(["prompt 0"]))]
    videos = videos[~((videos["generator"] == "g3") & ~videos["prompt"].isin(["prompt 0"]))]
    result = assign_splits(videos, SplitConfig(seed=1, resplit=True))
    frame = result.assignments.set_index("video_id")
    assert frame.loc["g3-p0", "split"] == "rl"
    assert set(frame["split"]) == {"train", "test", "rl"}
    assert result.apply(videos).set_index("video_id").loc["g3-p0", "split"] == "rl"


def test_check_splits_finds_leaks() -> None:
    videos = pd.DataFrame([
        {"video_id": "1", "prompt": "p", "generator": "g1", "split": "train"},
        {"video_id": "2", "prompt": "p", "generator": "g2", "split": "test"},
        {"video_id": "3", "prompt": "q", "generator": "g1", "split": "rl"},
    ]).assign(**{ROW: [1, 2, 3]})
    problems = {(p.kind, p.rows) for p in check_splits(videos)}
    assert problems == {("prompt_leak", (1, 2)), ("generator_leak", ())}


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"test_fraction \(1.5\)"):
        SplitConfig(test_fraction=1.5)
    with pytest.raises(ConfigError, match="rl_prompt_fraction"):
        SplitConfig(rl_prompt_fraction=0)


def test_an_existing_split_is_kept_and_new_videos_join_their_prompt() -> None:
    videos = _shared_prompts(10)
    first = assign_splits(videos, SplitConfig(seed=0)).apply(videos)
    more = pd.DataFrame([{"video_id": f"g4-p{p}", "prompt": f"prompt {p}", "generator": "g4"}
                         for p in range(10)] + [{"video_id": "new", "prompt": "a new prompt",
                                                 "generator": "g1"}])
    result = assign_splits(pd.concat([first, more]), SplitConfig(seed=5))  # another seed
    frame = result.assignments.set_index("video_id")
    kept = first.set_index("video_id")["split"]
    assert (frame.loc[kept.index, "split"] == kept).all() and result.moved().empty
    assert set(frame.loc[kept.index, "reason"]) == {"kept"}
    joined = frame.loc[[f"g4-p{p}" for p in range(10)]]
    assert (joined["split"] == kept[[f"g1-p{p}" for p in range(10)]].to_numpy()).all()
    assert set(joined["reason"]) == {"its prompt is in this split"}
    assert frame.loc["new", "split"] in ("train", "test") and result.problems == []
    again = assign_splits(first, SplitConfig(seed=5, resplit=True))
    moved = again.moved()
    assert len(moved) > 0 and (moved["previous_split"] != moved["split"]).all()


def test_rater_problems_hold_each_split_to_its_minimum() -> None:
    assignments = pd.DataFrame({"video_id": ["a", "b", "c", "d"],
                                "split": ["train", "test", "test", "unused"]})
    counts = pd.Series({"a": 3, "b": 12, "c": 3, "d": 0})
    problems = rater_problems(assignments, counts)
    assert [(p.video_id, p.severity) for p in problems] == [("c", "error")]
    assert "needs 12" in problems[0].message
    assert rater_problems(assignments, counts, severity="warning")[0].severity == "warning"
