"""Score-only reading of think-first checkpoints (Sec. 3.4.1, 4.2.2): after a greedy analysis
and its generated ``</think>`` (the default) or after a forced empty ``<think></think>``;
rating-first checkpoints read the first answer token either way."""

import copy

import pytest
import torch

from helpers import evaluator_on, prepared_clips
from qsave.dimensions import DIMENSIONS, WEIGHTS
from qsave.errors import ConfigError, UnclosedAnalysisError
from qsave.evaluator import Evaluator, ScoreItem
from qsave.model import scorer
from qsave.model.load import rating_token_ids
from qsave.prompts import THINK_CLOSE, THINK_OPEN, AnswerFormat, dimension_question, video_context
from qsave.spec import ScorerSpec, ThinkFirstReading
from qsave.video.inputs import processor_video_kwargs, video_content

TOL = 1e-4  # fp32, as in test_scorer.py
MAX_NEW_TOKENS = 12  # the analyses of the closing model below take 3–12 tokens or never close
THINK, RATING = AnswerFormat.THINK_FIRST, AnswerFormat.RATING_FIRST
GENERATE, EMPTY = ThinkFirstReading.GENERATE, ThinkFirstReading.EMPTY_THINK


@pytest.fixture(scope="module")
def closing(tiny):
    """The random tiny model with the ``</think>`` row of lm_head doubled, so that its greedy
    analyses close after a few tokens, at lengths that differ by video and dimension, and a
    few never close within MAX_NEW_TOKENS (the unmodified model closes one in six)."""
    model = copy.deepcopy(tiny.model)
    close = tiny.processor.tokenizer.convert_tokens_to_ids(THINK_CLOSE)
    with torch.no_grad():
        model.lm_head.weight[close] *= 2.0
    return type(tiny)(model, tiny.processor)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six prepared clips, 0.5 s and 1 s (the batch needs padding), with their prompts."""
    return prepared_clips(tmp_path_factory.mktemp("think-first-clips"), 3)


def setup_for(model, fmt=THINK, reading=GENERATE):
    ids = rating_token_ids(model.processor.tokenizer, fmt)
    return scorer.ScoringSetup(model.model, model.processor, ids, fmt, MAX_NEW_TOKENS, reading)


@pytest.fixture(scope="module")
def closes(closing, clips):
    """Per clip, whether every dimension's analysis closes within MAX_NEW_TOKENS (the fixture's
    premise: both kinds exist)."""
    setup, close = setup_for(closing), closing.processor.tokenizer.convert_tokens_to_ids(
        THINK_CLOSE)
    videos = [c.video for c in clips for _ in DIMENSIONS]
    texts = scorer._full_texts(setup, clips, DIMENSIONS, [THINK_OPEN] * len(videos))
    ends = [ids[-1] == close for ids in scorer.generate_ids(setup, texts, videos, THINK_CLOSE)]
    per_clip = [all(ends[i:i + len(DIMENSIONS)]) for i in range(0, len(ends), len(DIMENSIONS))]
    assert any(per_clip) and not all(per_clip), per_clip
    return per_clip


def by_hand(model, clip, dimension, analysis):
    """r̂ from one full forward pass (video included, positions computed by the model) over the
    chat prompt, ``<think>`` and the generated analysis tokens; the rating logits at the last
    position."""
    processor = model.processor
    text = f"{video_context(clip.prompt, processor.tokenizer)}\n{dimension_question(dimension)}"
    messages = [{"role": "user", "content": [*video_content(clip.video),
                                             {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = processor(text=[prompt + THINK_OPEN], **processor_video_kwargs([clip.video]),
                      return_tensors="pt")
    extra = torch.tensor([analysis])
    batch["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
    batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(extra)], dim=1)
    batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(extra)],
                                           dim=1)
    with torch.no_grad():
        logits = model.model(**batch).logits[0, -1]
    rating = logits[list(rating_token_ids(processor.tokenizer, THINK))].double()
    return float(torch.softmax(rating, -1) @ torch.tensor(WEIGHTS, dtype=torch.float64))


def test_the_rating_is_read_right_after_the_generated_close_tag(closing, clips, closes):
    clip = clips[closes.index(True)]
    scores, analyses = scorer.read_after_analysis(setup_for(closing), [clip], DIMENSIONS)
    close = closing.processor.tokenizer.convert_tokens_to_ids(THINK_CLOSE)
    assert all(len(a) > 1 for a in analyses)  # not empty
    for d, analysis in zip(DIMENSIONS, analyses, strict=True):
        assert analysis[-1] == close and close not in analysis[:-1]
        assert scores[0][d].score == pytest.approx(by_hand(closing, clip, d, analysis), abs=TOL)
        # one token earlier (inside the analysis) reads something else: the position matters
        assert scores[0][d].score != pytest.approx(by_hand(closing, clip, d, analysis[:-1]),
                                                   abs=TOL)
    empty = scorer.score_shared(setup_for(closing, reading=EMPTY), [clip], DIMENSIONS)[0]
    assert any(empty[d].score != pytest.approx(scores[0][d].score, abs=TOL) for d in DIMENSIONS)


def test_batching_gives_the_same_scores_as_one_at_a_time(closing, clips, closes):
    setup = setup_for(closing)
    ready = [c for c, ok in zip(clips, closes, strict=True) if ok]
    assert len(ready) >= 2
    batch, batch_analyses = scorer.read_after_analysis(setup, ready, DIMENSIONS)
    for i, clip in enumerate(ready):
        [alone], analyses = scorer.read_after_analysis(setup, [clip], DIMENSIONS)
        assert analyses == batch_analyses[i * len(DIMENSIONS):(i + 1) * len(DIMENSIONS)]
        for d in DIMENSIONS:
            assert alone[d].score == pytest.approx(batch[i][d].score, abs=TOL)
            assert alone[d].probs == pytest.approx(batch[i][d].probs, abs=TOL)


def test_an_analysis_that_never_closes_is_that_videos_item_error(closing, clips, closes):
    evaluator = evaluator_on(closing, answer_format=THINK, max_new_tokens=MAX_NEW_TOKENS)
    picked = [closes.index(False), closes.index(True)]  # one of each in a batch
    clips, closes = [clips[i] for i in picked], [closes[i] for i in picked]
    items = [ScoreItem(c.video, c.prompt, id=str(i)) for i, c in enumerate(clips)]
    results = list(evaluator.score_many(items, batch_size=len(items)))
    for result, clip, ok in zip(results, clips, closes, strict=True):
        assert result.ok is ok
        if ok:
            [alone] = scorer.read_after_analysis(setup_for(closing), [clip], DIMENSIONS)[0]
            assert {d: s.score for d, s in result.scores.items()} == pytest.approx(
                {d: s.score for d, s in alone.items()}, abs=TOL)
            assert all(s.rationale is None for s in result.scores.values())  # score-only
        else:
            assert result.error.type == "UnclosedAnalysisError"
            assert f"ran max_new_tokens ({MAX_NEW_TOKENS}) tokens without closing </think>" \
                in result.error.message
            assert "think_first_reading='empty-think'" in result.error.message
    with pytest.raises(UnclosedAnalysisError, match="without closing"):
        evaluator.score(items[closes.index(False)].video, items[closes.index(False)].prompt)


def test_explain_reads_where_score_only_reads(closing, clips, closes):
    clip = clips[closes.index(True)]
    setup = setup_for(closing)
    explained = scorer.explain(setup, [clip], DIMENSIONS)[0]
    scores, analyses = scorer.read_after_analysis(setup, [clip], DIMENSIONS)
    tokenizer = closing.processor.tokenizer
    for d, analysis in zip(DIMENSIONS, analyses, strict=True):
        assert explained[d].score == scores[0][d].score
        text = tokenizer.decode(analysis[:-1], skip_special_tokens=False).strip()
        assert explained[d].rationale == text


def test_empty_think_is_the_named_option_and_rows_say_which(closing, clips):
    generate = evaluator_on(closing, answer_format=THINK, max_new_tokens=MAX_NEW_TOKENS)
    empty = evaluator_on(closing, answer_format=THINK, think_first_reading="empty-think")
    assert generate.spec.think_first_reading is GENERATE  # the default for think-first
    plain = scorer.score_shared(setup_for(closing, reading=EMPTY), clips[:2], DIMENSIONS)
    results = list(empty.score_many([ScoreItem(c.video, c.prompt) for c in clips[:2]]))
    for result, expected in zip(results, plain, strict=True):
        assert {d: s.score for d, s in result.scores.items()} == {
            d: s.score for d, s in expected.items()}
    assert results[0].settings["think_first_reading"] == "empty-think"
    assert "max_new_tokens" not in results[0].settings
    settings = generate.settings(DIMENSIONS, explain=False)
    assert (settings["think_first_reading"], settings["max_new_tokens"]) == ("generate", 12)
    explained = generate.settings(DIMENSIONS, explain=True)
    assert "think_first_reading" not in explained and explained["max_new_tokens"] == 12
    assert results[0].key != generate.shell(ScoreItem(clips[0].video, clips[0].prompt),
                                            DIMENSIONS, False).key


@pytest.mark.parametrize("reading", list(ThinkFirstReading))
def test_rating_first_reads_the_first_answer_token_whatever_the_reading(tiny, clips, reading):
    evaluator = evaluator_on(tiny, think_first_reading=reading)
    assert evaluator.spec.answer_format is RATING
    assert not evaluator.backend.setup.generates_analysis
    settings = evaluator.settings(DIMENSIONS, explain=False)
    assert set(settings) == {"dimensions", "explain", "answer_format", "video", "backend"}
    assert settings == evaluator_on(tiny).settings(DIMENSIONS, explain=False)  # same resume key
    _, suffix = scorer.prompt_parts(tiny.processor, video_content(clips[0].video),
                                    clips[0].prompt, DIMENSIONS[0], RATING)
    assert suffix.endswith("<|im_start|>assistant\n")  # the rating is the first answer token
    results = list(evaluator.score_many([ScoreItem(c.video, c.prompt) for c in clips[:2]]))
    plain = scorer.score_shared(setup_for(tiny, RATING), clips[:2], DIMENSIONS)
    for result, expected in zip(results, plain, strict=True):
        assert {d: s.score for d, s in result.scores.items()} == {
            d: s.score for d, s in expected.items()}


def test_the_shipped_rating_first_tiny_demo_scores_as_before(clips):
    shipped = Evaluator.from_pretrained("tiny-demo", device="cpu", dtype="float32")
    other = Evaluator.from_pretrained("tiny-demo", device="cpu", dtype="float32",
                                      think_first_reading="empty-think")
    assert shipped.spec.answer_format is RATING
    items = [ScoreItem(c.video, c.prompt) for c in clips[:2]]
    plain = scorer.score_shared(shipped.backend.setup, clips[:2], DIMENSIONS)
    for results in (list(shipped.score_many(items)), list(other.score_many(items))):
        assert set(results[0].settings) == {"dimensions", "explain", "answer_format", "video",
                                            "backend"}
        for result, expected in zip(results, plain, strict=True):
            assert {d: s.score for d, s in result.scores.items()} == {
                d: s.score for d, s in expected.items()}


def test_the_spec_checks_the_reading():
    with pytest.raises(ConfigError, match="unknown think-first reading 'after'"):
        ScorerSpec(think_first_reading="after")
    with pytest.raises(ConfigError, match="vllm backend reads a think-first checkpoint only"):
        ScorerSpec(backend="vllm", answer_format=THINK)
    spec = ScorerSpec(backend="vllm", answer_format=THINK, think_first_reading="empty-think")
    assert ScorerSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["think_first_reading"] == "empty-think"
    assert ScorerSpec(backend="vllm").think_first_reading is GENERATE  # rating-first: unused
