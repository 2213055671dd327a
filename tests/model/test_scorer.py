"""Rating-token scoring on the tiny model: arithmetic against a hand computation, the shared
video prefix against independent passes, batch invariance, determinism, explain mode."""

import math

import pytest
import torch

from helpers import prepared_clips
from qsave.dimensions import DIMENSIONS, RATINGS, WEIGHTS, Dimension
from qsave.errors import ModelError, UnclosedAnalysisError
from qsave.model import scorer
from qsave.model.load import rating_token_ids
from qsave.prompts import THINK_CLOSE, THINK_OPEN, AnswerFormat, dimension_question, video_context

TOL = 1e-4  # fp32 tolerance of the issue (batch 1 vs 8, shared vs independent)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Eight prepared clips of two lengths (0.5 s and 1 s, 64 px), several slow/fast runs."""
    prepared = prepared_clips(tmp_path_factory.mktemp("scorer-clips"), 4)
    prepared[1].prompt = None  # a video without a generation prompt
    return prepared


def setup_for(tiny, fmt=AnswerFormat.RATING_FIRST, max_new_tokens=3):
    ids = rating_token_ids(tiny.processor.tokenizer, fmt)
    return scorer.ScoringSetup(tiny.model, tiny.processor, ids, fmt, max_new_tokens)


def flat(results):
    return torch.tensor([[s.score for s in per.values()] for per in results], dtype=torch.float64)


def test_scores_from_logits_match_a_hand_computation():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0, 1.1], [10.0, 0.0, 0.0, 0.0, 0.0]])
    for row, result in zip(logits.tolist(), scorer.scores_from_logits(logits), strict=True):
        exps = [math.exp(x) for x in row]
        probs = [e / sum(exps) for e in exps]
        r_hat = sum(p * w for p, w in zip(probs, WEIGHTS, strict=True))
        assert result.probs == pytest.approx(probs, abs=1e-12)
        assert sum(result.probs) == pytest.approx(1.0, abs=1e-12)
        assert result.score == pytest.approx(r_hat, abs=1e-12)
        assert result.mos == pytest.approx(1 + 4 * r_hat, abs=1e-12)
        assert result.entropy == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-12)
        assert result.rating == RATINGS[max(range(5), key=probs.__getitem__)]
    certain = scorer.scores_from_logits(torch.tensor([[-1e4, -1e4, -1e4, -1e4, 0.0]]))[0]
    assert (certain.score, certain.rating, certain.entropy) == (1.0, "Excellent", 0.0)


def test_prompt_parts_put_the_video_first_and_the_question_last(tiny):
    content = [{"type": "video"}, {"type": "video"}]
    parts = {
        d: scorer.prompt_parts(tiny.processor, content, "a red ball", d, AnswerFormat.THINK_FIRST)
        for d in DIMENSIONS
    }
    prefixes = {prefix for prefix, _ in parts.values()}
    assert len(prefixes) == 1
    prefix = prefixes.pop()
    assert prefix.count("<|video_pad|>") == 2
    assert prefix.endswith(video_context("a red ball") + "\n")
    for d, (_, suffix) in parts.items():
        assert suffix.startswith(dimension_question(d, AnswerFormat.THINK_FIRST))
        assert suffix.endswith("<|im_start|>assistant\n" + THINK_OPEN + THINK_CLOSE)
        scorer.check_split(tiny.processor.tokenizer, prefix, suffix)


def test_check_split_refuses_a_split_inside_a_token(tiny):
    with pytest.raises(ModelError, match="cannot be split"):
        scorer.check_split(tiny.processor.tokenizer, "The rating is Go", "od")


@pytest.mark.parametrize("fmt", list(AnswerFormat))
def test_shared_prefix_equals_independent_passes(tiny, videos, fmt):
    setup = setup_for(tiny, fmt)
    shared = scorer.score_shared(setup, videos[2:5], DIMENSIONS)
    independent = scorer.score_independent(setup, videos[2:5], DIMENSIONS)
    assert torch.allclose(flat(shared), flat(independent), atol=TOL, rtol=0)
    for a, b in zip(shared, independent, strict=True):
        for d in DIMENSIONS:
            assert a[d].probs == pytest.approx(b[d].probs, abs=TOL)


def test_probabilities_and_ranges(tiny, videos):
    for per in scorer.score_shared(setup_for(tiny), videos[:3], DIMENSIONS):
        assert list(per) == list(DIMENSIONS)
        for s in per.values():
            assert sum(s.probs) == pytest.approx(1.0, abs=1e-9)
            assert 0.0 <= s.score <= 1.0 and 1.0 <= s.mos <= 5.0
            assert 0.0 <= s.entropy <= math.log(5) + 1e-9
            assert s.rating in RATINGS


def test_batch_invariance_and_determinism(tiny, videos):
    setup = setup_for(tiny)
    batch8 = flat(scorer.score_shared(setup, videos, DIMENSIONS))
    batch1 = torch.cat([flat(scorer.score_shared(setup, [v], DIMENSIONS)) for v in videos])
    assert torch.allclose(batch8, batch1, atol=TOL, rtol=0), (batch8 - batch1).abs().max()
    again = flat(scorer.score_shared(setup, videos[:1], DIMENSIONS))
    assert torch.equal(batch1[:1], again)


def test_a_subset_of_dimensions_scores_the_same(tiny, videos):
    setup = setup_for(tiny)
    every = scorer.score_shared(setup, videos[:2], DIMENSIONS)
    some = scorer.score_shared(setup, videos[:2], (Dimension.ALIGNMENT,))
    for a, b in zip(every, some, strict=True):
        assert list(b) == [Dimension.ALIGNMENT]
        assert b[Dimension.ALIGNMENT].score == pytest.approx(a[Dimension.ALIGNMENT].score, abs=TOL)


def test_only_the_rating_rows_of_lm_head_agree_with_the_full_head(tiny):
    setup = setup_for(tiny)
    hidden = torch.randn(3, tiny.model.config.text_config.hidden_size)
    full = tiny.model.lm_head(hidden)[:, list(setup.rating_ids)]
    assert torch.allclose(scorer._rating_logits(setup, hidden), full, atol=1e-5)


def test_explain_rating_first_reads_before_the_rationale(tiny, videos):
    setup = setup_for(tiny, AnswerFormat.RATING_FIRST)
    explained = scorer.explain(setup, videos[:2], DIMENSIONS)
    plain = scorer.score_shared(setup, videos[:2], DIMENSIONS)
    for a, b in zip(explained, plain, strict=True):
        for d in DIMENSIONS:
            assert isinstance(a[d].rationale, str)
            assert a[d].score == pytest.approx(b[d].score, abs=TOL)
            assert b[d].rationale is None


def test_explain_think_first_needs_a_closed_analysis(tiny, videos):
    """Think-first reads the rating right after the generated </think> (checked against a
    hand-built pass in test_think_first_reading.py); an analysis still open after
    max_new_tokens has no rating position."""
    setup = setup_for(tiny, AnswerFormat.THINK_FIRST)
    with pytest.raises(UnclosedAnalysisError,
                       match="ran max_new_tokens \\(3\\) tokens without closing"):
        scorer.explain(setup, videos[:1], DIMENSIONS)


def test_padding_side_does_not_change_scores(tiny, videos, monkeypatch):
    setup, pair = setup_for(tiny), videos[3:5]  # a 0.5 s and a 1 s clip: padding is needed
    left = [flat(scorer.score_shared(setup, pair, DIMENSIONS)),
            flat(scorer.score_independent(setup, pair, DIMENSIONS))]
    monkeypatch.setattr(tiny.processor.tokenizer, "padding_side", "right")
    right = [flat(scorer.score_shared(setup, pair, DIMENSIONS)),
             flat(scorer.score_independent(setup, pair, DIMENSIONS))]
    for a, b in zip(left, right, strict=True):
        assert torch.allclose(a, b, atol=TOL, rtol=0)
