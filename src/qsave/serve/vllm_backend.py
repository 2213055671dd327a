"""A vLLM scoring backend: ``qsave score --backend vllm`` (paper Sec. 4.2.2 on vLLM's engine).

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

Request building is pure and tested without vLLM; only :class:`VllmScorer` imports it.

>>> sampling_kwargs((11, 12, 13, 14, 15))["logprob_token_ids"]
[11, 12, 13, 14, 15]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from qsave.dimensions import Dimension
from qsave.errors import ConfigError, ModelError, QsaveError
from qsave.model import scorer
from qsave.prompts import AnswerFormat

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
) -> list[dict[Dimension, scorer.DimensionScore]]:
    """Per video, the dimension scores from its requests' outputs (video-major order)."""
    rows = torch.tensor([rating_logprobs(o, rating_ids) for o in outputs], dtype=torch.float64)
    flat = scorer.scores_from_logits(rows)
    d = len(dimensions)
    return [dict(zip(dimensions, flat[i : i + d], strict=True)) for i in range(0, len(flat), d)]


@dataclass
class _Ready:
    result: Any  # VideoResult
    requests: list[dict[str, Any]]


class VllmScorer:
    """Score-only evaluation on a vLLM engine, with the Evaluator's interface
    (``score_many``, ``settings``, ``info``, ``video_config``)."""

    def __init__(self, llm: Any, processor: Any, rating_ids: Sequence[int], info: Any,
                 video_config: Any, answer_format: AnswerFormat,
                 sampling_params: Callable[..., Any] | None = None) -> None:
        self.llm, self.processor, self.rating_ids = llm, processor, tuple(rating_ids)
        self.info, self.video_config, self.answer_format = info, video_config, answer_format
        self.sampling_params = sampling_params  # None: vllm.SamplingParams

    @classmethod
    def from_pretrained(
        cls, model: str, *, revision: str | None = None, dtype: str | None = None,
        answer_format: AnswerFormat | str = AnswerFormat.RATING_FIRST,
        video_config: Any = None, max_videos_per_prompt: int = 64, **engine_kwargs: Any,
    ) -> VllmScorer:
        """A vLLM engine with prefix caching on, and the checkpoint's processor (the chat
        template and the rating-token check of ``qsave.model.load``)."""
        try:
            from vllm import LLM
        except ImportError as error:
            raise ConfigError("--backend vllm needs vLLM installed (pip install vllm)") from error
        from transformers import AutoProcessor

        from qsave.model.load import ModelInfo, rating_token_ids
        from qsave.video.inputs import VideoConfig

        fmt = AnswerFormat(answer_format)
        processor = AutoProcessor.from_pretrained(model, revision=revision)
        ids = rating_token_ids(processor.tokenizer, fmt)
        llm = LLM(model=model, revision=revision, dtype=dtype or "auto",
                  enable_prefix_caching=True,
                  limit_mm_per_prompt={"video": max_videos_per_prompt}, **engine_kwargs)
        info = ModelInfo(model, revision, dtype or "auto", "vllm", None, fmt.value)
        return cls(llm, processor, ids, info, video_config or VideoConfig(), fmt)

    def settings(self, dimensions: Sequence[Dimension], explain: bool) -> dict[str, Any]:
        """What the scores depend on besides the model (recorded in every row)."""
        return {"dimensions": [d.value for d in dimensions], "explain": explain,
                "answer_format": self.answer_format.value,
                "video": self.video_config.to_dict(), "backend": "vllm"}

    def score_many(
        self, items: Iterable[Any], *, prompt: str | None = None,
        dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
        batch_size: int = 8, on_result: Callable[[Any], None] | None = None,
    ) -> Iterator[Any]:
        """Results in input order; a video that fails gets its error, the others go on."""
        from qsave.evaluator import ScoreItem, parse_dimensions

        if explain:
            raise ConfigError("the vllm backend scores without a rationale; use the "
                              "transformers backend for --explain")
        dims = parse_dimensions(dimensions)
        batch: list[Any] = []
        for raw in items:
            batch.append(raw if isinstance(raw, ScoreItem) else ScoreItem(raw, prompt))
            if len(batch) == batch_size:
                yield from self._batch(batch, dims, on_result)
                batch = []
        if batch:
            yield from self._batch(batch, dims, on_result)

    def _batch(self, batch: list[Any], dims: tuple, on_result) -> Iterator[Any]:
        shells = [self._prepare(item, dims) for item in batch]
        self._generate([s for s in shells if isinstance(s, _Ready)], dims)
        for shell in shells:
            result = shell.result if isinstance(shell, _Ready) else shell
            if on_result is not None:
                on_result(result)
            yield result

    def _prepare(self, item: Any, dims: tuple) -> _Ready | Any:
        """The requests of one video, or its result with the error set."""
        from qsave.results import VideoResult, content_hash
        from qsave.video.inputs import prepare_video

        result = VideoResult(item.name, item.path, None, item.prompt, model=self.info,
                             settings=self.settings(dims, False))
        try:
            if item.path is None:
                raise ConfigError("the vllm backend scores video files (a path is needed)")
            result.content_hash = item.content_hash or content_hash(item.path)
            prepared = prepare_video(item.path, self.video_config)
            result.video = prepared.settings.get("plan")
            requests = build_requests(self.processor, prepared, result.content_hash,
                                      item.prompt, dims, self.answer_format)
        except (QsaveError, OSError) as error:
            result.error = f"{type(error).__name__}: {error}"
            return result
        return _Ready(result, requests)

    def _generate(self, ready: list[_Ready], dims: tuple) -> None:
        """All requests of the batch in one generate call; on failure, video by video."""
        if not ready:
            return
        make = self.sampling_params
        if make is None:
            from vllm import SamplingParams as make
        params = make(**sampling_kwargs(self.rating_ids))
        try:
            outputs = self.llm.generate([r for x in ready for r in x.requests], params,
                                        use_tqdm=False)
            scores = scores_from_outputs(outputs, self.rating_ids, dims)
        except (ValueError, RuntimeError, QsaveError) as error:
            if len(ready) == 1:
                ready[0].result.error = f"{type(error).__name__}: {error}"
                return
            for one in ready:
                self._generate([one], dims)
            return
        for shell, per_video in zip(ready, scores, strict=True):
            shell.result.scores = per_video

