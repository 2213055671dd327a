"""vLLM request building, tested without vLLM: the requests are checked against the
transformers scorer (same tokens, and the same scores when the tiny model answers them the way
vLLM would: log-probabilities of the rating tokens at the next position)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from qsave.dimensions import DIMENSIONS
from qsave.errors import ConfigError, ModelError
from qsave.evaluator import Evaluator, ScoreItem
from qsave.model import scorer
from qsave.model.vllm import (
    PROCESSOR_KWARGS,
    VllmBackend,
    build_requests,
    rating_logprobs,
    sampling_kwargs,
    scores_from_outputs,
)
from qsave.prompts import AnswerFormat
from qsave.scores import content_hash
from qsave.spec import ScorerSpec
from qsave.video.inputs import VideoConfig, prepare_video

FMT = AnswerFormat.RATING_FIRST


@pytest.fixture(scope="module")
def prepared(clips):
    _, videos = clips
    path, prompt = videos[0]
    return path, prompt, prepare_video(path), content_hash(path)


def processor_inputs(processor, request):
    """What vLLM's Qwen3-VL processing does with a request: the HF processor on its text and
    video items, with its mm_processor_kwargs."""
    videos = request["multi_modal_data"]["video"]
    metadata = [VideoMetadata(**{k: v for k, v in meta.items() if k != "do_sample_frames"})
                for _, meta in videos]
    return processor(text=[request["prompt"]], videos=[frames for frames, _ in videos],
                     video_metadata=metadata, return_tensors="pt",
                     **request["mm_processor_kwargs"])


class FakeLLM:
    """Answers requests like ``LLM.generate`` with ``logprob_token_ids``, using the tiny model."""

    def __init__(self, tiny):
        self.tiny, self.calls = tiny, []

    @torch.inference_mode()
    def generate(self, requests, params, use_tqdm=False):
        self.calls.append((len(requests), params))
        outputs = []
        for request in requests:
            batch = processor_inputs(self.tiny.processor, request)
            logits = self.tiny.model(**batch).logits[0, -1].double()
            logprobs = torch.log_softmax(logits, -1)
            wanted = params["logprob_token_ids"]
            first = {i: SimpleNamespace(logprob=float(logprobs[i])) for i in wanted}
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(logprobs=[first])]))
        return outputs


def test_requests_carry_the_scorer_prompt_and_the_prepared_video(tiny, tiny_evaluator, prepared):
    _, prompt, video, digest = prepared
    requests = build_requests(tiny.processor, video, digest, prompt, DIMENSIONS, FMT)
    assert len(requests) == 3
    reference = scorer.encode_independent(tiny_evaluator.backend.setup,
                                          [scorer.VideoPrompt(video, prompt)], DIMENSIONS)
    ids, mask = reference.batch["input_ids"], reference.batch["attention_mask"]
    for row, request in enumerate(requests):
        mine = processor_inputs(tiny.processor, request)["input_ids"][0]
        assert mine.tolist() == ids[row][mask[row].bool()].tolist()  # the same tokens
        frames = [f for f, _ in request["multi_modal_data"]["video"]]
        assert all(np.array_equal(a, b) for a, b in zip(frames, video.videos, strict=True))
        assert request["mm_processor_kwargs"] == PROCESSOR_KWARGS
    assert sampling_kwargs((1, 2, 3, 4, 5)) == {"max_tokens": 1, "temperature": 0.0,
                                                 "logprob_token_ids": [1, 2, 3, 4, 5],
                                                 "detokenize": False}


def test_uuids_key_the_content_and_the_preprocessing(tiny, prepared, clips):
    path, prompt, video, digest = prepared
    requests = build_requests(tiny.processor, video, digest, prompt, DIMENSIONS, FMT)
    uuids = [r["multi_modal_uuids"]["video"] for r in requests]
    assert uuids[0] == uuids[1] == uuids[2]  # the dimensions share the cached video
    assert len(uuids[0]) == len(video.videos) == len(set(uuids[0]))
    assert all(u.startswith(digest + "#") for u in uuids[0])
    again = build_requests(tiny.processor, prepare_video(path), digest, "other prompt",
                           DIMENSIONS, FMT)
    assert again[0]["multi_modal_uuids"] == requests[0]["multi_modal_uuids"]
    uniform = prepare_video(path, VideoConfig(mode="uniform"))
    other = build_requests(tiny.processor, uniform, digest, prompt, DIMENSIONS, FMT)
    assert not set(other[0]["multi_modal_uuids"]["video"]) & set(uuids[0])
    _, videos = clips
    other_file = videos[1][0]
    third = build_requests(tiny.processor, prepare_video(other_file), content_hash(other_file),
                           prompt, DIMENSIONS, FMT)
    assert not set(third[0]["multi_modal_uuids"]["video"]) & set(uuids[0])


def test_scores_from_rating_logprobs_match_the_transformers_scorer(tiny, tiny_evaluator,
                                                                   prepared):
    _, prompt, video, digest = prepared
    requests = build_requests(tiny.processor, video, digest, prompt, DIMENSIONS, FMT)
    ids = tiny_evaluator.backend.setup.rating_ids
    outputs = FakeLLM(tiny).generate(requests, sampling_kwargs(ids))
    [mine] = scores_from_outputs(outputs, ids, DIMENSIONS)
    [reference] = scorer.score_independent(tiny_evaluator.backend.setup,
                                           [scorer.VideoPrompt(video, prompt)], DIMENSIONS)
    for dimension in DIMENSIONS:
        assert mine[dimension].score == pytest.approx(reference[dimension].score, abs=1e-5)
        assert mine[dimension].probs == pytest.approx(reference[dimension].probs, abs=1e-5)
        assert mine[dimension].rating == reference[dimension].rating


def test_missing_logprobs_are_a_clear_error():
    empty = SimpleNamespace(outputs=[SimpleNamespace(logprobs=None)])
    with pytest.raises(ModelError, match="no logprobs"):
        rating_logprobs(empty, (1, 2, 3, 4, 5))
    partial = SimpleNamespace(outputs=[SimpleNamespace(
        logprobs=[{1: SimpleNamespace(logprob=-1.0)}])])
    with pytest.raises(ModelError, match=r"\[2, 3, 4, 5\]"):
        rating_logprobs(partial, (1, 2, 3, 4, 5))


def test_the_pipeline_on_vllm_batches_requests_and_records_per_item_errors(tiny, tiny_evaluator,
                                                                            clips):
    root, videos = clips
    llm = FakeLLM(tiny)
    backend = VllmBackend(llm, tiny.processor, tiny_evaluator.backend.setup.rating_ids,
                          tiny_evaluator.info, ScorerSpec(backend="vllm"), sampling_params=dict)
    evaluator = Evaluator(backend)
    items = [ScoreItem(str(videos[1][0]), videos[1][1]),
             ScoreItem(str(root / "clips" / "corrupt.mp4"), "x")]
    results = list(evaluator.score_many(items, dimensions=["visual", "alignment"]))
    assert llm.calls[0][0] == 2  # one generate call: two dimensions of the one good video
    assert results[1].error.type == "VideoError" and not results[1].scores
    assert results[0].settings["backend"] == "vllm" and results[0].content_hash
    direct = tiny_evaluator.score(videos[1][0], videos[1][1], dimensions=["visual", "alignment"])
    for dimension, score in direct.scores.items():
        assert results[0].scores[dimension].score == pytest.approx(score.score, abs=1e-4)
    with pytest.raises(ConfigError, match="rationale"):
        list(evaluator.score_many(items, explain=True))
    in_memory = evaluator.score_many([ScoreItem(prepare_video(videos[1][0]), "p")])
    assert next(in_memory).error.type == "ModelError"  # vLLM keys videos by their bytes' hash
