"""The vLLM backend of the scoring pipeline: ``qsave score --backend vllm`` (Sec. 4.2.2).

Each (video, dimension) is one vLLM request whose text is exactly the transformers scorer's
prompt (``scorer.prompt_parts``: video first, dimension question last) and whose video items
are the SlowFast runs of the prepared video (frames already sampled and sized, with their
``VideoMetadata``; ``do_sample_frames=False, do_resize=False``). The request asks for one token
with ``SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=<the five rating ids>)``,
so vLLM returns the log-probabilities of exactly the rating tokens at the rating position;
their softmax is the rating distribution (log-softmax only shifts logits by a constant), and
r̂, MOS and entropy follow as in the transformers scorer.

The three dimension requests of a video share the video prefix. Every video item carries a
``multi_modal_uuids`` entry derived from the file's content hash and the preprocessing
settings, so vLLM's encoder cache and automatic prefix caching (``enable_prefix_caching``)
recognise the same video across the dimension requests — and across runs — without hashing
the pixels again: the video is encoded once and its KV prefix reused.

Request building is pure and tested without vLLM; only :meth:`VllmBackend.load` imports it.

>>> sampling_kwargs((11, 12, 13, 14, 15))["logprob_token_ids"]
[11, 12, 13, 14, 15]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from qsave.dimensions import Dimension
from qsave.errors import ConfigError, ModelError
from qsave.evaluator import Backend, Prepared
from qsave.model import scorer
from qsave.prompts import AnswerFormat
from qsave.scores import DimensionScore, ModelInfo
from qsave.spec import ScorerSpec

PROCESSOR_KWARGS = {"do_sample_frames": False, "do_resize": False}  # frames come ready


def sampling_kwargs(rating_ids: Sequence[int]) -> dict[str, Any]:
    """``SamplingParams`` fields: one greedy token, the rating tokens' log-probabilities."""
    return {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": list(rating_ids),
            "detokenize": False}


def video_items(prepared: Any) -> list[tuple[Any, dict[str, Any]]]:
    """vLLM video items of a PreparedVideo: (frames (L, h, w, 3) uint8, metadata) per run."""
    items = []
    for frames, meta in zip(prepared.videos, prepared.metadata, strict=True):
        metadata = {"total_num_frames": meta.total_num_frames, "fps": meta.fps,
                    "width": meta.width, "height": meta.height, "duration": meta.duration,
                    "video_backend": meta.video_backend,
                    "frames_indices": list(meta.frames_indices), "do_sample_frames": False}
        items.append((frames, metadata))
    return items


def video_uuids(content_hash: str, prepared: Any) -> list[str]:
    """One stable id per video item: the file's content hash, a digest of the preprocessing
    (video settings and frame plan) and the run's position — unique per item, equal for the
    same file prepared the same way."""
    if not content_hash:
        raise ModelError("a content hash is needed to key the video in vLLM's caches")
    digest = hashlib.sha256(json.dumps(prepared.settings, sort_keys=True, default=str).encode())
    return [f"{content_hash}#{digest.hexdigest()[:16]}#{i}" for i in range(len(prepared.videos))]


def prompt_texts(
    processor: Any, prepared: Any, prompt: str | None, dimensions: Sequence[Dimension],
    fmt: AnswerFormat,
) -> list[str]:
    """The full prompt per dimension; raises unless they share one video prefix that tokenizes
    apart from the question (what prefix caching reuses)."""
    content = scorer.video_content(prepared)
    parts = [scorer.prompt_parts(processor, content, prompt, d, fmt) for d in dimensions]
    if len({prefix for prefix, _ in parts}) != 1:
        raise ModelError("the dimension prompts do not share the video prefix")
    for prefix, suffix in parts:
        scorer.check_split(processor.tokenizer, prefix, suffix)
    return [prefix + suffix for prefix, suffix in parts]


def build_requests(
    processor: Any, prepared: Any, content_hash: str, prompt: str | None,
    dimensions: Sequence[Dimension], fmt: AnswerFormat,
) -> list[dict[str, Any]]:
    """vLLM ``TextPrompt`` dicts, one per dimension, in the order of ``dimensions``."""
    items, uuids = video_items(prepared), video_uuids(content_hash, prepared)
    return [{"prompt": text, "multi_modal_data": {"video": items},
             "multi_modal_uuids": {"video": uuids},
             "mm_processor_kwargs": dict(PROCESSOR_KWARGS)}
            for text in prompt_texts(processor, prepared, prompt, dimensions, fmt)]


def rating_logprobs(output: Any, rating_ids: Sequence[int]) -> list[float]:
    """The five rating log-probabilities of a vLLM ``RequestOutput`` (first generated token)."""
    completions = getattr(output, "outputs", None) or []
    positions = completions[0].logprobs if completions else None
    if not positions:
        raise ModelError("vLLM returned no logprobs; is logprob_token_ids supported "
                         "by this vLLM version?")
    first = positions[0]
    missing = [i for i in rating_ids if i not in first]
    if missing:
        raise ModelError(f"vLLM did not return logprobs for rating tokens {missing}")
    return [float(first[i].logprob) for i in rating_ids]


def scores_from_outputs(
    outputs: Sequence[Any], rating_ids: Sequence[int], dimensions: Sequence[Dimension],
) -> list[dict[Dimension, DimensionScore]]:
    """Per video, the dimension scores from its requests' outputs (video-major order)."""
    rows = torch.tensor([rating_logprobs(o, rating_ids) for o in outputs], dtype=torch.float64)
    flat = scorer.scores_from_logits(rows)
    d = len(dimensions)
    return [dict(zip(dimensions, flat[i : i + d], strict=True)) for i in range(0, len(flat), d)]


class VllmBackend(Backend):
    """Score-only evaluation on a vLLM engine: all requests of a batch in one ``generate``."""

    explains = False

    def __init__(self, llm: Any, processor: Any, rating_ids: Sequence[int], info: ModelInfo,
                 spec: ScorerSpec, sampling_params: Callable[..., Any] | None = None) -> None:
        self.llm, self.processor, self.rating_ids = llm, processor, tuple(rating_ids)
        self.info, self.spec = info, spec
        self.sampling_params = sampling_params  # None: vllm.SamplingParams

    @classmethod
    def load(cls, spec: ScorerSpec, max_videos_per_prompt: int = 64,
             **engine_kwargs: Any) -> VllmBackend:
        """A vLLM engine with prefix caching on, and the checkpoint's processor (the chat
        template and the rating-token check of ``qsave.model.load``)."""
        try:
            from vllm import LLM
        except ImportError as error:
            raise ConfigError("--backend vllm needs vLLM installed (pip install vllm)") from error
        from transformers import AutoProcessor

        from qsave.model.load import rating_token_ids

        processor = AutoProcessor.from_pretrained(spec.model, revision=spec.revision)
        ids = rating_token_ids(processor.tokenizer, spec.answer_format)
        llm = LLM(model=spec.model, revision=spec.revision, dtype=spec.dtype or "auto",
                  enable_prefix_caching=True,
                  limit_mm_per_prompt={"video": max_videos_per_prompt}, **engine_kwargs)
        info = ModelInfo(spec.model, spec.revision, spec.dtype or "auto", "vllm", None)
        return cls(llm, processor, ids, info, spec)

    def score(self, items: Sequence[Prepared], dimensions: Sequence[Dimension],
              explain: bool) -> list[dict[Dimension, DimensionScore]]:
        requests = [request for item in items for request in build_requests(
            self.processor, item.video, item.result.content_hash or "", item.result.prompt,
            dimensions, self.spec.answer_format)]
        make = self.sampling_params
        if make is None:
            from vllm import SamplingParams as make
        outputs = self.llm.generate(requests, make(**sampling_kwargs(self.rating_ids)),
                                    use_tqdm=False)
        return scores_from_outputs(outputs, self.rating_ids, dimensions)
