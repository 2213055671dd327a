"""Stage 2 GRPO: group advantages, the clipped objective, one step on the tiny model,
resuming, and the verl export."""

import json

import pandas as pd
import pytest
import torch

from qsave.errors import ConfigError
from qsave.spec import resolve_spec
from qsave.train.config import GRPOConfig, ModelConfig, OptimConfig
from qsave.train.grpo import (
    completion_mask,
    export_verl,
    group_advantages,
    grpo_loss,
    load_rollouts,
    train_grpo,
)


def test_advantages_are_relative_to_their_group():
    rewards = torch.tensor([[1.5, 0.5, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)
    mean, std = 0.75, (sum((r - 0.75) ** 2 for r in (1.5, 0.5, 0.0, 1.0)) / 4) ** 0.5
    expected = [(r - mean) / (std + 1e-4) for r in (1.5, 0.5, 0.0, 1.0)]
    assert adv[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[1].tolist() == [0.0] * 4  # equal rewards: no signal
    assert float(adv[0].mean()) == pytest.approx(0.0, abs=1e-6)


def test_clipped_objective_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    old = torch.log(torch.tensor([[0.25, 0.5], [0.9, 0.2]]))  # ratios [2, 1], [1, 0.5]
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = grpo_loss(logp, old, adv, mask, clip_epsilon=0.2)
    # row 0: min(2·1, 1.2·1) = 1.2 and 1 → mean 1.1; row 1: only token 0, ratio 1 → −1
    assert float(loss) == pytest.approx(-(1.1 + -1.0) / 2, rel=1e-6)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    ref = logp.detach() + 0.1
    loss_kl, stats_kl = grpo_loss(logp, old, adv, mask, 0.2, ref, kl_beta=0.5)
    k3 = torch.exp(torch.tensor(0.1)) - 0.1 - 1
    assert float(loss_kl) == pytest.approx(float(loss) + 0.5 * float(k3), rel=1e-5)
    assert stats_kl["kl"] == pytest.approx(float(k3), rel=1e-5)


def test_completion_mask_stops_after_the_end_of_turn():
    tokens = torch.tensor([[4, 9, 1, 1], [9, 1, 1, 1], [4, 4, 4, 4]])
    assert completion_mask(tokens, [9]).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]


def test_config_checks_quote_the_values():
    with pytest.raises(ConfigError, match=r"num_generations \(1\)"):
        GRPOConfig(num_generations=1)


def test_one_step_on_the_tiny_model_then_resume(tmp_path, corpus_records):
    records = corpus_records["train"][:2]
    config = GRPOConfig(num_generations=2, prompts_per_step=1, max_steps=1, max_new_tokens=4,
                        save_steps=1, kl_beta=0.1, optim=OptimConfig(learning_rate=1e-2))
    lines = []
    final = train_grpo(config, ModelConfig(seed=0), tmp_path, records=records, log=lines.append)
    spec, _ = resolve_spec(str(final))
    assert (spec.answer_format.value, spec.max_new_tokens) == ("think-first", 4)
    rollouts = load_rollouts(tmp_path / "rollouts.jsonl")
    assert len(rollouts) == 2 and {r.step for r in rollouts} == {0}
    assert all(r.reward == r.accuracy + 0.5 * r.format for r in rollouts)
    assert "reward_accuracy=" in lines[0] and "reward_format=" in lines[0]
    from transformers import Qwen3VLForConditionalGeneration

    from qsave.model.tiny import build_tiny

    trained = Qwen3VLForConditionalGeneration.from_pretrained(final)
    changed = [not torch.equal(a, b) for a, b in zip(build_tiny(0).model.parameters(),
                                                     trained.parameters(), strict=True)]
    # with equal rewards in the group the advantage is 0: only then may nothing change
    if any(r.advantage != 0 for r in rollouts):
        assert any(changed)
    assert (tmp_path / "checkpoint-1" / "step.json").is_file()
    config.max_steps = 2
    lines.clear()
    train_grpo(config, ModelConfig(seed=0), tmp_path, records=records, log=lines.append)
    assert [line.split()[2] for line in lines] == ["2/2"]  # resumed after step 1
    steps = [r.step for r in load_rollouts(tmp_path / "rollouts.jsonl")]
    assert steps == [0, 0, 1, 1]


def test_export_verl_writes_data_and_reward(tmp_path, corpus_records):
    records = corpus_records["rl"] or corpus_records["train"][:1]
    paths = export_verl(records, tmp_path)
    frame = pd.read_parquet(paths["data"])
    assert list(frame.columns) == ["data_source", "prompt", "videos", "ability", "reward_model",
                                   "extra_info"]
    row = frame.iloc[0]
    assert row["reward_model"]["ground_truth"] == records[0].rating
    assert row["prompt"][0]["content"].startswith("<video>This video was generated")
    assert "compute_score" in paths["reward"].read_text()
    namespace = {}
    exec(paths["reward"].read_text(), namespace)  # the file verl imports
    assert namespace["compute_score"]("qsave", f"<think>x</think>{records[0].rating}",
                                      records[0].rating) == 1.5
    assert json.dumps(row["extra_info"]["id"]) == json.dumps(records[0].id)
