"""The transformers backend's speed options (qsave.model.speed) change no score: the packed
prefix, the grouped vision attention and the static generation cache against the defaults,
on a batch of clips of two lengths (so the packed row replaces real padding)."""

import dataclasses

import pytest
import torch

from helpers import evaluator_on, prepared_clips
from qsave.dimensions import DIMENSIONS
from qsave.errors import ConfigError
from qsave.model import scorer, speed
from qsave.model.load import rating_token_ids
from qsave.prompts import AnswerFormat
from qsave.spec import ScorerSpec, SpeedOptions

TOL = 1e-5  # fp32: the same arithmetic in another order


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return prepared_clips(tmp_path_factory.mktemp("speed-clips"), 2)  # 0.5 s and 1 s clips


@pytest.fixture
def model(tiny):
    yield tiny
    speed.apply(tiny.model, SpeedOptions())  # the session's tiny model back to the defaults


def setup_with(tiny, options, fmt=AnswerFormat.RATING_FIRST, max_new_tokens=8):
    speed.apply(tiny.model, options)
    ids = rating_token_ids(tiny.processor.tokenizer, fmt)
    return scorer.ScoringSetup(tiny.model, tiny.processor, ids, fmt, max_new_tokens,
                               speed=options)


def flat(results):
    return torch.tensor([[s.score for s in per.values()] for per in results], dtype=torch.float64)


@pytest.mark.parametrize("options", [SpeedOptions(pack_prefix=True),
                                     SpeedOptions(vision_attention="grouped"),
                                     SpeedOptions(pack_prefix=True, vision_attention="grouped")])
def test_score_only_options_keep_the_scores(model, videos, options):
    encoded = scorer.encode_shared(setup_with(model, SpeedOptions()), videos, DIMENSIONS)
    assert len(set(encoded.batch["attention_mask"].sum(1).tolist())) > 1  # real padding
    reference = flat(scorer.forward_shared(setup_with(model, SpeedOptions()), encoded))
    fast = flat(scorer.forward_shared(setup_with(model, options), encoded))
    assert torch.allclose(fast, reference, atol=TOL, rtol=0)


def test_grouped_vision_attention_runs_one_call_per_frame_size(model, videos, monkeypatch):
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(q, *args, **kwargs):
        calls.append(q.shape)
        return original(q, *args, **kwargs)

    setup = setup_with(model, SpeedOptions(vision_attention="grouped"))
    batch = scorer.encode_shared(setup, videos[:1], DIMENSIONS).batch
    frames = int(batch["video_grid_thw"][:, 0].sum())
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    with torch.inference_mode():
        model.model.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
    sizes = {tuple(g) for g in batch["video_grid_thw"][:, 1:].tolist()}
    depth = model.model.config.vision_config.depth
    assert len(calls) == depth * len(sizes) < depth * frames  # not one call per frame
    assert sum(shape[0] for shape in calls) == depth * frames  # every frame attended


def test_static_cache_explains_the_same(model, videos):
    dynamic = scorer.explain(setup_with(model, SpeedOptions()), videos[:2], DIMENSIONS)
    static = scorer.explain(setup_with(model, SpeedOptions(generation_cache="static")),
                            videos[:2], DIMENSIONS)
    for a, b in zip(dynamic, static, strict=True):
        for d in DIMENSIONS:
            assert a[d].rationale == b[d].rationale and a[d].rationale
            assert abs(a[d].score - b[d].score) < TOL


def test_generate_kwargs_are_transformers_own_options():
    assert speed.generate_kwargs(SpeedOptions()) == {}
    static = speed.generate_kwargs(SpeedOptions(generation_cache="static"))
    assert static == {"cache_implementation": "static", "disable_compile": True}
    compiled = speed.generate_kwargs(SpeedOptions(generation_cache="static", compile=True))
    assert compiled["compile_config"].mode == "reduce-overhead"


def test_the_spec_carries_the_options_and_refuses_bad_ones(tiny):
    spec = ScorerSpec.from_dict({"speed": {"pack_prefix": True}})
    assert spec.speed == SpeedOptions(pack_prefix=True)
    assert ScorerSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="vision_attention 'flash'"):
        SpeedOptions(vision_attention="flash")
    with pytest.raises(ConfigError, match="unknown speed settings"):
        ScorerSpec.from_dict({"speed": {"packing": True}})
    with pytest.raises(ConfigError, match="transformers backend's"):
        ScorerSpec(backend="vllm", speed=SpeedOptions(pack_prefix=True))
    evaluator = evaluator_on(tiny, speed=dataclasses.asdict(SpeedOptions(pack_prefix=True)))
    try:
        assert evaluator.backend.setup.speed.pack_prefix
    finally:
        speed.apply(tiny.model, SpeedOptions())
