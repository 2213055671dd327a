"""Loading an evaluator checkpoint and its processor, and checking its rating tokens (Sec. 4.2.2).

A checkpoint is a hub id, a local directory, a LoRA adapter on a base, or ``"tiny"`` — the
embedded offline tiny Qwen3-VL (the demo's trained checkpoint when one is cached, else random).

>>> from qsave.model.tiny import build_tokenizer
>>> ids = rating_token_ids(build_tokenizer(), AnswerFormat.RATING_FIRST)
>>> len(set(ids))
5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qsave.dimensions import RATINGS
from qsave.errors import ModelError
from qsave.prompts import THINK_CLOSE, AnswerFormat
from qsave.scores import ModelInfo
from qsave.spec import TINY, ScorerSpec, checkpoint_dir

TINY_RANDOM_ID = "qsave/tiny-random-seed0"  # what rows say when the random tiny model scored
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
# The text right before the rating word, per answer format: the assistant turn's start for
# "Rating<think>…</think>", the closing tag for "<think>…</think>Rating".
RATING_CONTEXT = {
    AnswerFormat.RATING_FIRST: "<|im_start|>assistant\n",
    AnswerFormat.THINK_FIRST: THINK_CLOSE,
}


@dataclass
class LoadedModel:
    """A model, its processor, the rating-token ids (ascending: Bad … Excellent) and its info."""

    model: Any  # Qwen3VLForConditionalGeneration (or a compatible image-text-to-text model)
    processor: Any  # its processor (tokenizer + video processor)
    rating_ids: tuple[int, ...]
    info: ModelInfo


def resolve_device(device: str | None) -> torch.device:
    """CUDA when available, else CPU (DESIGN.md, Conventions); an explicit device wins."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU, unless given."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def rating_token_ids(tokenizer: Any, fmt: AnswerFormat) -> tuple[int, ...]:
    """The five rating tokens, ascending, each checked to be one token where it is read.

    The check encodes the exact context (``RATING_CONTEXT[fmt]`` followed by the word) and
    requires the context's own tokens followed by exactly one more token (STYLE.md, item 11).
    """
    context = RATING_CONTEXT[fmt]
    base = tokenizer.encode(context, add_special_tokens=False)
    ids = []
    for word in RATINGS:
        full = tokenizer.encode(context + word, add_special_tokens=False)
        if len(full) != len(base) + 1 or full[: len(base)] != base:
            pieces = tokenizer.convert_ids_to_tokens(full[len(base) - 1 if base else 0 :])
            raise ModelError(
                f"rating word {word!r} is not a single token after {context!r} "
                f"(format {fmt.value}): it encodes as {pieces}; this tokenizer cannot be "
                "scored by rating-token logits"
            )
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise ModelError(f"rating words share token ids: {dict(zip(RATINGS, ids, strict=True))}")
    return tuple(ids)


def load(spec: ScorerSpec) -> LoadedModel:
    """Load model and processor, put them on the device and dtype, verify the rating tokens."""
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    model, processor, model_id, revision = _load_weights(spec, dtype)
    model = model.to(device=device, dtype=dtype).eval()
    processor.tokenizer.padding_side = "left"
    ids = rating_token_ids(processor.tokenizer, spec.answer_format)
    info = ModelInfo(id=model_id, revision=revision, dtype=str(dtype).removeprefix("torch."),
                     device=str(device), adapter=spec.adapter)
    return LoadedModel(model, processor, ids, info)


def _load_weights(config: ScorerSpec, dtype: torch.dtype) -> tuple[Any, Any, str, str | None]:
    """(model, processor, id, revision) for the tiny model, a directory or a hub id."""
    if config.model == TINY:
        model, processor, model_id = _load_tiny(dtype, config)
        revision = None
    else:
        source = config.model
        if Path(source).is_dir():
            source = str(Path(source).resolve())
        model, processor = _from_pretrained(source, config.revision, dtype, config)
        model_id, revision = source, getattr(model.config, "_commit_hash", None) or config.revision
    if config.adapter is not None:
        model = _apply_adapter(model, config.adapter)
        processor = _adapter_processor(config.adapter) or processor
    return model, processor, model_id, revision


def _load_tiny(dtype: torch.dtype, config: ScorerSpec) -> tuple[Any, Any, str]:
    """The demo's cached trained tiny checkpoint, else the random tiny model (seed 0)."""
    cached = checkpoint_dir(TINY)
    if cached is not None:
        return (*_from_pretrained(str(cached), None, dtype, config), str(cached))
    from qsave.model.tiny import build_tiny

    tiny = build_tiny(seed=0)
    return tiny.model, tiny.processor, TINY_RANDOM_ID


def _from_pretrained(source: str, revision: str | None, dtype: torch.dtype, config: ScorerSpec):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        model = AutoModelForImageTextToText.from_pretrained(
            source, revision=revision, dtype=dtype, attn_implementation=config.attn_implementation
        )
        processor = AutoProcessor.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load checkpoint {source!r}: {error}") from error
    return model, processor


def _adapter_processor(adapter: str) -> Any | None:
    """The adapter's own processor when its directory carries one (a resized vocabulary)."""
    if not (Path(adapter) / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(adapter)


def _apply_adapter(model: Any, adapter: str) -> Any:
    """Merge a LoRA adapter into its base (peft, the ``train`` extra)."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ModelError("a LoRA adapter needs peft: pip install 'qsave[train]'") from error
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load LoRA adapter {adapter!r}: {error}") from error
