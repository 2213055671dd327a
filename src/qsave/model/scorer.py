"""Rating-token scoring (paper Sec. 4.2.2) with one encoding of the video for all dimensions.

The prompt puts the video first and the dimension question last (DESIGN.md), so a batch of
videos is scored in two forward passes however many dimensions are asked:

1. the shared prefix — user turn start, the video, ``video_context(prompt)`` — through the
   vision encoder and the language model, keeping its KV cache (``DynamicCache``);
2. the cache repeated once per dimension, and the dimension suffixes (question, end of turn,
   assistant start) continued from it in one batch; only the hidden states at the rating
   positions go through the five rating rows of ``lm_head``.

Then softmax over the five rating logits gives p_j, r̂ = Σ p_j·w_j (Bad 0 … Excellent 1),
MOS = 1 + 4·r̂, and the entropy of p.

The rating position: the first answer token (rating-first, ``Rating<think>…</think>``); for
think-first (``<think>analysis</think>Rating``, Sec. 3.4.1) the token after ``</think>`` —
after a greedy analysis (:func:`read_after_analysis`; explain mode, and score-only with
``ThinkFirstReading.GENERATE``) or after a forced empty ``<think></think>`` (score-only with
``EMPTY_THINK``: the two passes above, no generation).

>>> s = scores_from_logits(torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0]]))[0]
>>> s.score, s.mos, s.rating, round(s.entropy, 4)
(0.5, 3.0, 'Excellent', 1.6094)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from qsave.dimensions import RATINGS, WEIGHTS, Dimension, score_to_mos
from qsave.errors import ModelError, UnclosedAnalysisError
from qsave.model.speed import generate_kwargs, packed_prefix_pass
from qsave.prompts import (
    THINK_CLOSE,
    THINK_OPEN,
    AnswerFormat,
    dimension_question,
    video_context,
)
from qsave.scores import DimensionScore
from qsave.spec import ScorerSpec, SpeedOptions, ThinkFirstReading

# Think-first score-only with ThinkFirstReading.EMPTY_THINK forces an empty analysis, so the
# rating is read right after the closing tag, where the trained model writes it (Sec. 3.4.1).
EMPTY_THINK = THINK_OPEN + THINK_CLOSE
END_OF_TURN = "<|im_end|>"  # generation also stops here


@dataclass
class VideoPrompt:
    """One video to score: its prepared frames (``PreparedVideo``) and its generation prompt."""

    video: Any  # qsave.video.inputs.PreparedVideo
    prompt: str | None = None


@dataclass(frozen=True)
class ScoringSetup:
    """The model-side pieces the scoring functions need."""

    model: Any  # Qwen3VLForConditionalGeneration
    processor: Any  # its processor, tokenizer padding on the left
    rating_ids: tuple[int, ...]  # ascending: Bad … Excellent
    answer_format: AnswerFormat = AnswerFormat.RATING_FIRST
    max_new_tokens: int = 256  # rationale length limit (explain; think-first "generate")
    think_first_reading: ThinkFirstReading = ScorerSpec.think_first_reading  # the spec's default
    speed: SpeedOptions = field(default_factory=SpeedOptions)  # qsave.model.speed

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def generates_analysis(self) -> bool:
        """Whether score-only reads the rating after a generated analysis (think-first)."""
        return (self.answer_format is AnswerFormat.THINK_FIRST
                and self.think_first_reading is ThinkFirstReading.GENERATE)


# ---- pure arithmetic ---------------------------------------------------------------------
def rating_expectation(rating_logits: torch.Tensor) -> torch.Tensor:
    """r̂ = Σ_j softmax(logits)_j·w_j over the five ascending ratings (Sec. 4.2.2), in the
    logits' dtype and differentiable (the SFT loss's MSE uses it too). (N, 5) → (N,)"""
    weights = torch.tensor(WEIGHTS, dtype=rating_logits.dtype, device=rating_logits.device)
    return torch.softmax(rating_logits, dim=-1) @ weights


def scores_from_logits(logits: torch.Tensor) -> list[DimensionScore]:
    """Scores of rows of five rating logits (ascending), computed in float64 (Sec. 4.2.2)."""
    logits = logits.detach().to(torch.float64)
    probs = torch.softmax(logits, dim=-1)
    scores = rating_expectation(logits)
    entropy = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1)
    results = []
    for p, s, h in zip(probs.tolist(), scores.tolist(), entropy.tolist(), strict=True):
        best = max(range(len(RATINGS)), key=lambda j, p=p: (p[j], j))
        results.append(DimensionScore(s, score_to_mos(s), tuple(p), RATINGS[best], h))
    return results


# ---- prompt text -------------------------------------------------------------------------
def video_content(video: Any) -> list[dict]:
    """The chat content items of a prepared video (one ``{"type": "video"}`` per run)."""
    from qsave.video import inputs

    return inputs.video_content(video)


def video_kwargs(videos: Sequence[Any]) -> dict:
    """The processor keyword arguments for prepared videos (frames already sampled, sized)."""
    from qsave.video import inputs

    return inputs.processor_video_kwargs(videos)


def assistant_start(fmt: AnswerFormat) -> str:
    """Text forced at the start of the answer before the rating is read without generating:
    an empty analysis for think-first (``ThinkFirstReading.EMPTY_THINK``), nothing otherwise."""
    return EMPTY_THINK if fmt is AnswerFormat.THINK_FIRST else ""


def prompt_parts(
    processor: Any, content: list[dict], prompt: str | None, dimension: Dimension,
    fmt: AnswerFormat, start: str | None = None,
) -> tuple[str, str]:
    """(prefix, suffix) text: the prefix ends after the video context, shared by dimensions.

    The full text is the chat template of one user turn (video, context, question) with the
    assistant start, plus ``start`` (default: the forced answer start, ``assistant_start``);
    it is split where the question begins. The user's prompt is escaped for this tokenizer
    (``escape_text``): no control token in it.
    """
    question = dimension_question(dimension, fmt)
    text = f"{video_context(prompt, processor.tokenizer)}\n{question}"
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]
    full = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full += assistant_start(fmt) if start is None else start
    cut = full.rfind(question)
    if cut < 0:
        raise ModelError("the chat template does not keep the dimension question verbatim")
    return full[:cut], full[cut:]


def check_split(tokenizer: Any, prefix: str, suffix: str) -> None:
    """Raise unless tokenizing prefix and suffix apart gives the tokens of the whole text."""
    whole = tokenizer.encode(prefix + suffix, add_special_tokens=False)
    parts = tokenizer.encode(prefix, add_special_tokens=False)
    parts += tokenizer.encode(suffix, add_special_tokens=False)
    if whole != parts:
        raise ModelError(
            f"the prompt cannot be split into a shared video prefix and a dimension suffix: "
            f"tokens merge across {prefix[-20:]!r} | {suffix[:20]!r}"
        )


# ---- forward passes ----------------------------------------------------------------------
def _rating_logits(setup: ScoringSetup, hidden: torch.Tensor) -> torch.Tensor:
    """Only the five rating rows of lm_head, on the gathered rating positions. (N, H) → (N, 5)"""
    head = setup.model.lm_head
    ids = torch.tensor(setup.rating_ids, device=hidden.device)
    bias = head.bias[ids] if head.bias is not None else None
    return torch.nn.functional.linear(hidden, head.weight[ids], bias).float()


def _encode_prefix(setup: ScoringSetup, items: Sequence[VideoPrompt], texts: list[str]) -> dict:
    """Processor inputs of the prefixes (left padded) with their M-RoPE position ids."""
    batch = setup.processor(
        text=texts, **video_kwargs([it.video for it in items]), return_tensors="pt", padding=True
    ).to(setup.device)
    positions, _ = setup.model.model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"],
        video_grid_thw=batch.get("video_grid_thw"), attention_mask=batch["attention_mask"],
    )
    batch["position_ids"] = positions  # (3, B, Lp)
    return batch


def _prefix_pass(setup: ScoringSetup, batch: dict) -> DynamicCache:
    """Vision encoder + language model over the prefixes; returns the KV cache."""
    if setup.speed.pack_prefix:
        return packed_prefix_pass(setup.model, batch)
    cache = DynamicCache(config=setup.model.config.get_text_config())
    setup.model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"], pixel_values_videos=batch["pixel_values_videos"],
        video_grid_thw=batch["video_grid_thw"], mm_token_type_ids=batch["mm_token_type_ids"],
        cache=cache, use_cache=True,
    )
    return cache


def _pad_right(rows: list[list[int]], pad: int, device: torch.device):
    """(ids, mask, lengths) of right-padded rows."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    lengths = torch.tensor([len(r) for r in rows])
    return ids.to(device), mask.to(device), lengths.to(device)


def _suffix_pass(
    setup: ScoringSetup, batch: dict, cache: DynamicCache, suffixes: list[list[int]], repeats: int
) -> torch.Tensor:
    """Continue every prefix with its `repeats` suffixes; hidden states at the rating positions."""
    tokenizer = setup.processor.tokenizer
    ids, mask, lengths = _pad_right(suffixes, tokenizer.pad_token_id, setup.device)
    cache.batch_repeat_interleave(repeats)
    start = batch["position_ids"].amax(dim=(0, 2)) + 1  # next text position per video, (B,)
    steps = torch.arange(ids.shape[1], device=setup.device)
    positions = (start.repeat_interleave(repeats)[:, None] + steps).expand(3, -1, -1)
    prefix_mask = batch["attention_mask"].repeat_interleave(repeats, dim=0)
    out = setup.model.model(
        input_ids=ids, attention_mask=torch.cat([prefix_mask, mask], dim=1),
        position_ids=positions, cache=cache, use_cache=True,
    )
    rows = torch.arange(ids.shape[0], device=setup.device)
    return out.last_hidden_state[rows, lengths - 1]  # (B·D, H)


@dataclass
class Encoded:
    """Processor outputs on the device, ready for the forward passes (what a benchmark times
    apart from the CPU-side preprocessing)."""

    batch: dict  # processor outputs (+ "position_ids"), on the model's device
    suffixes: list[list[int]] | None  # shared mode: the dimension suffix tokens, video-major
    count: int  # number of videos
    dimensions: tuple[Dimension, ...]


def encode_shared(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension],
    answers: Sequence[list[int]] | None = None,
) -> Encoded:
    """The shared prefixes (with their videos) and the dimension suffixes of a batch.

    ``answers`` (token ids, one per video×dimension, video-major) replace the forced answer
    start, e.g. by ``<think>`` and a generated analysis up to its ``</think>``.
    """
    fmt, tokenizer = setup.answer_format, setup.processor.tokenizer
    start = None if answers is None else ""
    prefixes, suffixes = [], []
    for item in items:
        parts = [
            prompt_parts(setup.processor, video_content(item.video), item.prompt, d, fmt, start)
            for d in dimensions
        ]
        if len({p for p, _ in parts}) != 1:
            raise ModelError("the dimension prompts do not share the video prefix")
        for prefix, suffix in parts:
            check_split(tokenizer, prefix, suffix)
            suffixes.append(tokenizer.encode(suffix, add_special_tokens=False))
        prefixes.append(parts[0][0])
    if answers is not None:
        suffixes = [s + list(a) for s, a in zip(suffixes, answers, strict=True)]
    batch = _encode_prefix(setup, items, prefixes)
    return Encoded(batch, suffixes, len(items), tuple(dimensions))


@torch.inference_mode()
def forward_shared(setup: ScoringSetup, encoded: Encoded) -> list[dict[Dimension, DimensionScore]]:
    """Prefix pass (vision + KV cache) once per video, then all suffixes in one batch."""
    cache = _prefix_pass(setup, encoded.batch)
    hidden = _suffix_pass(setup, encoded.batch, cache, encoded.suffixes, len(encoded.dimensions))
    scores = scores_from_logits(_rating_logits(setup, hidden))
    return _regroup(scores, encoded.count, encoded.dimensions)


def score_shared(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension]
) -> list[dict[Dimension, DimensionScore]]:
    """Score-only, one video encoding for all dimensions (two passes per batch of videos)."""
    return forward_shared(setup, encode_shared(setup, items, dimensions))


def encode_independent(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension],
    answers: Sequence[str] | None = None,
) -> Encoded:
    """Whole prompts, video included, one per video and dimension (video-major)."""
    texts, videos = _full_texts(setup, items, dimensions, answers), []
    for item in items:
        videos.extend([item.video] * len(dimensions))
    batch = setup.processor(
        text=texts, **video_kwargs(videos), return_tensors="pt", padding=True
    ).to(setup.device)
    batch["position_ids"], _ = setup.model.model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"],
        video_grid_thw=batch["video_grid_thw"], attention_mask=batch["attention_mask"],
    )
    return Encoded(batch, None, len(items), tuple(dimensions))


@torch.inference_mode()
def forward_independent(
    setup: ScoringSetup, encoded: Encoded
) -> list[dict[Dimension, DimensionScore]]:
    """One full forward pass over all (video, dimension) prompts, rating at the last position."""
    out = setup.model.model(**encoded.batch)
    mask = encoded.batch["attention_mask"]
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = (mask * steps).argmax(dim=1)  # the rating position: the last real token, any padding
    hidden = out.last_hidden_state[torch.arange(mask.shape[0], device=mask.device), last]
    scores = scores_from_logits(_rating_logits(setup, hidden))
    return _regroup(scores, encoded.count, encoded.dimensions)


def score_independent(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension],
    answers: Sequence[str] | None = None,
) -> list[dict[Dimension, DimensionScore]]:
    """The reference: one full pass (video included) per video and dimension, in one batch.

    ``answers`` (text, one per video×dimension, video-major) replaces the forced answer start.
    """
    return forward_independent(setup, encode_independent(setup, items, dimensions, answers))


def _full_texts(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension],
    answers: Sequence[str] | None,
) -> list[str]:
    """Whole prompts, video-major; with ``answers`` replacing the forced answer start."""
    fmt, start, texts = setup.answer_format, None if answers is None else "", []
    for item in items:
        for d in dimensions:
            prefix, suffix = prompt_parts(
                setup.processor, video_content(item.video), item.prompt, d, fmt, start
            )
            texts.append(prefix + suffix)
    if answers is None:
        return texts
    return [t + a for t, a in zip(texts, answers, strict=True)]


def _regroup(
    scores: list[DimensionScore], n: int, dimensions: Sequence[Dimension]
) -> list[dict[Dimension, DimensionScore]]:
    d = len(dimensions)
    return [dict(zip(dimensions, scores[i * d : (i + 1) * d], strict=True)) for i in range(n)]


# ---- generation: explain mode, think-first reading ----------------------------------------
@torch.inference_mode()
def generate_ids(
    setup: ScoringSetup, texts: list[str], videos: list[Any], stop: str
) -> list[list[int]]:
    """Greedy continuations of whole prompts: the new token ids up to and including the first
    ``stop`` or end of turn, or all ``max_new_tokens`` of them when neither came."""
    tokenizer = setup.processor.tokenizer
    batch = setup.processor(
        text=texts, **video_kwargs(videos), return_tensors="pt", padding=True
    ).to(setup.device)
    stops = [tokenizer.convert_tokens_to_ids(stop), tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    out = setup.model.generate(
        **batch, do_sample=False, max_new_tokens=setup.max_new_tokens, eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id, **generate_kwargs(setup.speed),
    )
    return [_until(row, stops) for row in out[:, batch["input_ids"].shape[1] :].tolist()]


def _until(ids: list[int], stops: list[int]) -> list[int]:
    """``ids`` up to and including the first stop token (the padding after it dropped)."""
    ends = [i for i, token in enumerate(ids) if token in stops]
    return ids[: ends[0] + 1] if ends else ids


def rationale_text(tokenizer: Any, ids: list[int], stop: str) -> str:
    """The rationale: the decoded tokens up to ``stop`` / end of turn, no special tokens."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    for end in (stop, END_OF_TURN, "<|endoftext|>"):
        text = text.split(end, 1)[0]
    return text.strip()


def read_after_analysis(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension]
) -> tuple[list[dict[Dimension, DimensionScore]], list[list[int]]]:
    """Think-first (Sec. 3.4.1, 4.2.2): a greedy ``<think>`` analysis per video and dimension,
    then the rating logits at the position right after its generated ``</think>``.

    The read pass is the shared-prefix one, each suffix continued by ``<think>`` and the
    generated token ids as they are (no decode and re-encode). An analysis that does not close
    within ``max_new_tokens`` (or ends the turn first) has no rating position: ``ModelError``
    (the evaluator retries video by video, so it becomes that video's ``ItemError``). Returns
    the scores and the analyses' token ids (video-major, each ending with ``</think>``).
    """
    tokenizer = setup.processor.tokenizer
    videos = [it.video for it in items for _ in dimensions]
    texts = _full_texts(setup, items, dimensions, [THINK_OPEN] * len(videos))
    analyses = generate_ids(setup, texts, videos, THINK_CLOSE)
    _check_closed(tokenizer, analyses, dimensions, setup.max_new_tokens)
    opening = [tokenizer.convert_tokens_to_ids(THINK_OPEN)]
    encoded = encode_shared(setup, items, dimensions, [opening + ids for ids in analyses])
    return forward_shared(setup, encoded), analyses


def _check_closed(
    tokenizer: Any, analyses: list[list[int]], dimensions: Sequence[Dimension], limit: int
) -> None:
    """Raise ``UnclosedAnalysisError`` for the first analysis without its ``</think>``."""
    close = tokenizer.convert_tokens_to_ids(THINK_CLOSE)
    for i, ids in enumerate(analyses):
        if ids[-1] == close:
            continue
        video, dimension = divmod(i, len(dimensions))
        ended = ids[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN)
        how = "ended the turn" if ended else f"ran max_new_tokens ({limit}) tokens"
        raise UnclosedAnalysisError(
            f"the {dimensions[dimension].value} analysis of video {video} in the batch {how} "
            f"without closing {THINK_CLOSE}: no rating position (raise max_new_tokens, or read "
            f"with think_first_reading={ThinkFirstReading.EMPTY_THINK.value!r})"
        )


def explain(
    setup: ScoringSetup, items: Sequence[VideoPrompt], dimensions: Sequence[Dimension]
) -> list[dict[Dimension, DimensionScore]]:
    """Scores with a generated rationale (greedy). The rating distribution is read after the
    rationale for ``<think>…</think>Rating`` (:func:`read_after_analysis`) and before it for
    ``Rating<think>…</think>``."""
    tokenizer = setup.processor.tokenizer
    if setup.answer_format is AnswerFormat.THINK_FIRST:
        scores, analyses = read_after_analysis(setup, items, dimensions)
    else:
        videos = [it.video for it in items for _ in dimensions]
        bare = _full_texts(setup, items, dimensions, [""] * len(videos))
        scores = score_independent(setup, items, dimensions, [""] * len(videos))
        ratings = [s.rating for per in scores for s in per.values()]
        texts = [t + r + THINK_OPEN for t, r in zip(bare, ratings, strict=True)]
        analyses = generate_ids(setup, texts, videos, THINK_CLOSE)
    flat = iter(rationale_text(tokenizer, ids, THINK_CLOSE) for ids in analyses)
    return [{d: _with_rationale(s, next(flat)) for d, s in per.items()} for per in scores]


def _with_rationale(score: DimensionScore, rationale: str) -> DimensionScore:
    return DimensionScore(**{**asdict(score), "rationale": rationale})
