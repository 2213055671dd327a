"""Stage 1 SFT: the loss against a hand computation, label masking, gradients, one Trainer
step and resuming from its checkpoint, on the tiny model."""

import copy
import math

import pytest
import torch

from qsave.dimensions import RATINGS, WEIGHTS
from qsave.errors import AnnotationError
from qsave.model.load import rating_token_ids
from qsave.prompts import AnswerFormat
from qsave.spec import resolve_spec
from qsave.train.common import VideoCache
from qsave.train.config import ModelConfig, OptimConfig, SFTConfig
from qsave.train.sft import (
    IGNORE,
    SFTCollator,
    sft_forward,
    sft_loss_from_logits,
    train_sft,
)
from qsave.video.inputs import VideoConfig


def test_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9)
    labels = torch.tensor([[IGNORE, 3, 6, 1], [IGNORE, IGNORE, 8, 2]])
    positions = torch.tensor([1, 2])
    rating_ids = (4, 5, 6, 7, 8)
    target = torch.tensor([0.25, 0.9])
    loss, parts = sft_loss_from_logits(logits, labels, positions, rating_ids, target, 0.7, 2.0)
    # by hand: mean −log p over the 5 labelled next tokens, then r̂ = Σ softmax·w
    nll = []
    for b in range(2):
        for t in range(3):
            y = int(labels[b, t + 1])
            if y != IGNORE:
                row = logits[b, t].tolist()
                log_z = math.log(sum(math.exp(v) for v in row))
                nll.append(log_z - row[y])
    ce = sum(nll) / len(nll)
    errors = []
    for b in range(2):
        z = [math.exp(float(logits[b, int(positions[b]), i])) for i in rating_ids]
        r_hat = sum(p / sum(z) * w for p, w in zip(z, WEIGHTS, strict=True))
        errors.append((r_hat - float(target[b])) ** 2)
    mse = sum(errors) / 2
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert parts["mse"] == pytest.approx(mse, rel=1e-5)
    assert float(loss) == pytest.approx(0.7 * ce + 2.0 * mse, rel=1e-5)


@pytest.fixture(scope="module")
def collator(tiny):
    fmt = AnswerFormat.THINK_FIRST
    return SFTCollator(tiny.processor, rating_token_ids(tiny.processor.tokenizer, fmt),
                       VideoCache(), fmt)


def test_collator_masks_the_prompt_and_finds_the_rating(tiny, collator, corpus_records):
    records = corpus_records["train"][:3]
    batch = collator(records)
    tokenizer = tiny.processor.tokenizer
    for row, record in enumerate(records):
        kept = batch["labels"][row][batch["labels"][row] != IGNORE].tolist()
        assert tokenizer.decode(kept) == record.target + "<|im_end|>"  # only the answer
        pos = int(batch["rating_positions"][row])
        rating_token = int(batch["labels"][row, pos + 1])  # what that position predicts
        assert collator.rating_ids[RATINGS.index(record.rating)] == rating_token
    width = batch["labels"].shape[1]
    tail = batch["input_ids"][:, -width + 1:]
    assert torch.equal(tail[batch["labels"][:, 1:] != IGNORE],
                       batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE])
    assert batch["target_scores"].tolist() == pytest.approx([r.score for r in records])
    assert len(collator.videos) == len({r.video for r in records})  # decoded once each


def test_collator_rejects_a_target_without_rating(collator, corpus_records):
    from dataclasses import replace

    bad = replace(corpus_records["train"][0], id="bad:1", target="<think>no rating</think>")
    with pytest.raises(AnnotationError, match="record bad:1: no rating token"):
        collator([bad])


def test_gradients_reach_the_vision_tower(tiny, collator, corpus_records):
    model = copy.deepcopy(tiny.model).train()
    loss, _ = sft_forward(model, collator(corpus_records["train"][:2]), collator.rating_ids,
                          alpha=0.0, beta=1.0)  # the MSE alone must reach the video
    loss.backward()
    grads = [p.grad for p in model.model.visual.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_lora_gradients_reach_the_adapters(tiny, collator, corpus_records):
    from qsave.train.common import _with_lora

    model = _with_lora(copy.deepcopy(tiny.model).train(), ModelConfig(lora=True, lora_r=2))
    loss, _ = sft_forward(model, collator(corpus_records["train"][:1]), collator.rating_ids)
    loss.backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_one_trainer_step_then_resume(tmp_path, corpus_records):
    records = corpus_records["train"][:2]
    config = SFTConfig(max_steps=1, batch_size=2, effective_batch_size=2, save_steps=1,
                       logging_steps=1,
                       optim=OptimConfig(learning_rate=1e-3),
                       video={"mode": "uniform", "uniform_fps": 8.0})
    model_config = ModelConfig(seed=0)
    final = train_sft(config, model_config, tmp_path, records=records)
    spec, source = resolve_spec(str(final))  # the checkpoint carries its training frames
    assert source == final.resolve() / "qsave_scorer.json"
    assert spec.video == VideoConfig(mode="uniform", uniform_fps=8.0)
    assert spec.answer_format is AnswerFormat.THINK_FIRST
    from transformers import Qwen3VLForConditionalGeneration

    from qsave.model.tiny import build_tiny

    trained = Qwen3VLForConditionalGeneration.from_pretrained(final)
    start = build_tiny(0).model
    for (name, p0), p1 in zip(start.named_parameters(), trained.parameters(), strict=True):
        if name.startswith(("model.visual.blocks.0", "lm_head")):
            assert not torch.equal(p0, p1), f"parameter {name} has not changed"
    assert (tmp_path / "checkpoint-1").is_dir()
    config.max_steps = 2
    train_sft(config, model_config, tmp_path, records=records)  # resumes at step 1
    import json

    state = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [h["step"] for h in state["log_history"] if "loss_ce" in h] == [1, 2]


def test_accumulated_micro_batches_give_the_whole_batch_gradient(tmp_path, corpus_records):
    """2 records as one batch or as 2 accumulated micro-batches: the same gradient (the
    Trainer's pre-clipping grad_norm), not twice it."""
    import json

    records = corpus_records["train"][:2]
    norms = []
    for batch in (2, 1):
        config = SFTConfig(max_steps=1, batch_size=batch, effective_batch_size=2,
                           save_steps=1, logging_steps=1, optim=OptimConfig(learning_rate=1e-3))
        out = tmp_path / f"batch{batch}"
        train_sft(config, ModelConfig(seed=0), out, records=records, log=None)
        state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
        norms.append(next(h["grad_norm"] for h in state["log_history"] if "grad_norm" in h))
    assert norms[1] == pytest.approx(norms[0], rel=0.05)  # left padding moves it a little
