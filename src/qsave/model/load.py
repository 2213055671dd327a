"""Loading an evaluator checkpoint and its processor, and checking its rating tokens (Sec. 4.2.2).

A checkpoint is a hub id, a local directory, a LoRA adapter on a base, ``"tiny"`` — the
embedded offline tiny Qwen3-VL with random weights, always — or ``"tiny-demo"``, the tiny model
trained by the demo recipe and shipped with the package (its rows say ``qsave/tiny-demo`` and
the revision of its ``provenance.json``).

>>> from qsave.model.tiny import build_tokenizer
>>> ids = rating_token_ids(build_tokenizer(), AnswerFormat.RATING_FIRST)
>>> len(set(ids))
5
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qsave.dimensions import RATINGS
from qsave.errors import ModelError
from qsave.prompts import THINK_CLOSE, THINK_OPEN, AnswerFormat
from qsave.scores import ModelInfo
from qsave.spec import PROVENANCE_FILE, TINY, TINY_DEMO, TINY_DEMO_ID, ScorerSpec, checkpoint_dir

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


def rollout_suppressed_ids(tokenizer: Any) -> list[int]:
    """Added tokens a generated answer must never contain: vision placeholders
    (``<|video_pad|>`` …), chat control (``<|im_start|>``), tool and fill-in-the-middle tokens.
    Kept: the end of turn and padding (they stop a completion) and the ``<think>`` tags.

    A sampled vision placeholder would give the prompt + completion more video tokens than
    the video has features, which the forward pass refuses (GRPO's log-probs, explain mode).
    """
    allowed = {tokenizer.eos_token, tokenizer.pad_token, "<|im_end|>", THINK_OPEN, THINK_CLOSE}
    return sorted(i for i, token in tokenizer.added_tokens_decoder.items()
                  if token.content not in allowed)


def expected_info(spec: ScorerSpec) -> ModelInfo | None:
    """The :class:`ModelInfo` :func:`load` will report for ``spec``, when it is known without
    loading: the embedded models and local folders; None for a hub id or an adapter (their
    revision is known once loaded)."""
    if spec.adapter is not None:
        return None
    if spec.model == TINY:
        model_id, revision = TINY_RANDOM_ID, None
    elif spec.model == TINY_DEMO:
        model_id, revision = TINY_DEMO_ID, read_provenance(checkpoint_dir(TINY_DEMO))["revision"]
    elif Path(spec.model).is_dir():
        model_id, revision = str(Path(spec.model).resolve()), spec.revision
    else:
        return None
    device = resolve_device(spec.device)
    dtype = str(resolve_dtype(spec.dtype, device)).removeprefix("torch.")
    return ModelInfo(id=model_id, revision=revision, dtype=dtype, device=str(device))


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
        from qsave.model.tiny import build_tiny

        tiny = build_tiny(seed=0)
        model, processor, model_id, revision = tiny.model, tiny.processor, TINY_RANDOM_ID, None
    elif config.model == TINY_DEMO:
        model, processor, revision = _load_tiny_demo(dtype, config)
        model_id = TINY_DEMO_ID
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


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """A demo model folder's ``provenance.json`` (recipe, seed, commit, held-out figures)."""
    path = Path(folder) / PROVENANCE_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read the provenance of {folder}: {error}") from error
    if not isinstance(values, dict) or not isinstance(values.get("revision"), str):
        raise ModelError(f"{path}: expected an object with a 'revision' string")
    return values


def _load_tiny_demo(dtype: torch.dtype, config: ScorerSpec) -> tuple[Any, Any, str]:
    """The shipped trained tiny model and the revision its provenance names."""
    folder = checkpoint_dir(TINY_DEMO)
    if folder is None or not (folder / "config.json").is_file():
        raise ModelError(f"the shipped {TINY_DEMO!r} model is missing from this installation "
                         f"({folder}); reinstall qsave, or write it with "
                         "scripts/ship_tiny_demo.py")
    revision = read_provenance(folder)["revision"]
    return (*_from_pretrained(str(folder), None, dtype, config), revision)


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
