"""The aids for tiny models that teach alignment (issue 20): prompt-word grounding in the vision
warm-up, whole-clip mismatch negatives, and the tiny model's configurable size."""

import copy

import pytest
import torch

from qsave.dimensions import MOS_MIN, RATINGS
from qsave.errors import ConfigError
from qsave.model.tiny import build_config, build_tokenizer
from qsave.model.tiny_size import TinySize
from qsave.prompts import AnswerFormat, parse_answer
from qsave.train.aids import (
    MISMATCH_RATIONALE,
    VisionProbe,
    clip_prompts,
    clip_targets,
    grounding_words,
    probe_loss,
    prompt_words,
    with_mismatched_prompts,
)
from qsave.train.common import VideoCache
from qsave.train.config import TinyModelAids, load_train_config


def test_mismatch_negatives_ask_another_prompt_and_are_rated_bad(corpus_records):
    records = corpus_records["train"]
    aligned = [r for r in records if r.dimension == "alignment"]
    out = with_mismatched_prompts(records, 0.5, seed=0)
    assert out[: len(records)] == records  # the originals, untouched and first
    negatives = out[len(records):]
    assert len(negatives) == round(0.5 * len(aligned))
    prompts = {r.prompt for r in aligned}
    for negative in negatives:
        source = next(r for r in aligned if negative.id == f"{r.id}:mismatch")
        assert negative.prompt != source.prompt and negative.prompt in prompts
        assert negative.video == source.video and negative.dimension == "alignment"
        assert (negative.rating, negative.mos, negative.score) == (RATINGS[0], MOS_MIN, 0.0)
        parsed = parse_answer(negative.target, AnswerFormat(negative.answer_format))
        assert (parsed.rating, parsed.rationale) == ("Bad", MISMATCH_RATIONALE)
        user = negative.messages[0]["content"][1]["text"]
        assert negative.prompt in user and source.prompt not in user
    assert with_mismatched_prompts(records, 0.5, seed=0) == out  # seeded
    assert with_mismatched_prompts(records, 0.0, seed=0) == list(records)


def test_grounding_words_are_the_prompts_informative_words(corpus_records):
    records = corpus_records["all"]
    words = grounding_words(records)
    prompts = clip_prompts(records)
    assert words and set(words) <= set().union(*(prompt_words(p) for p in prompts.values()))
    share = {w: sum(w in prompt_words(p) for p in prompts.values()) / len(prompts) for w in words}
    assert all(0.01 <= s <= 0.6 for s in share.values())
    assert "the" not in words  # in every prompt: says nothing about the clip
    assert prompt_words("Two RED circles; up.") == {"two", "red", "circles", "up"}


def test_the_grounding_head_trains_the_vision_tower_and_survives_a_round_trip(
        tiny, corpus_records, tmp_path):
    model = copy.deepcopy(tiny.model).train()
    records = corpus_records["train"]
    probe = VisionProbe.for_model(model, grounding_words(records))
    targets, prompts = clip_targets(records), clip_prompts(records)
    clips = sorted(targets)[:2]
    videos = VideoCache()
    plain = probe_loss(model, probe, tiny.processor, videos, clips, targets)
    grounded = probe_loss(model, probe, tiny.processor, videos, clips, targets, prompts, 1.0)
    assert grounded > plain  # the words' cross-entropy is added
    (grounded - plain).backward()  # the words' term alone reaches the vision tower
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    loaded = VisionProbe.load(model, probe.save(tmp_path / "probe.pt"))
    assert loaded.words == probe.words
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 probe.state_dict().values(), strict=True))


def test_grounding_needs_the_warm_up():
    with pytest.raises(ConfigError, match="grounding_weight needs"):
        TinyModelAids(grounding_weight=1.0)
    with pytest.raises(ConfigError, match="≥ 0"):
        TinyModelAids(mismatch_negatives=-0.1)
    on = TinyModelAids(vision_warmup_steps=1, grounding_weight=1.0, mismatch_negatives=0.5).on
    assert {"grounding_weight", "mismatch_negatives"} <= set(on)


def test_the_tiny_size_sets_the_config_and_comes_from_a_training_config(tmp_path):
    tokenizer = build_tokenizer()
    config = build_config(tokenizer, TinySize(hidden=128, intermediate=512, text_layers=4,
                                              vision_depth=3))
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (128, 4, 8)
    assert (vision.depth, vision.num_heads, vision.out_hidden_size) == (3, 4, 128)
    assert vision.deepstack_visual_indexes == [0, 1, 2]
    assert build_config(tokenizer).text_config.hidden_size == TinySize().hidden == 64
    with pytest.raises(ConfigError, match="multiple of 32"):
        TinySize(hidden=100)
    recipe = tmp_path / "train.yaml"
    recipe.write_text("model: {model: tiny, tiny: {hidden: 96, text_layers: 3}}\n")
    loaded = load_train_config(recipe, [f"output_dir={tmp_path}"])
    assert loaded.model.tiny == TinySize(hidden=96, text_layers=3)
