"""What SFT and GRPO share: the prepared-video cache, prompt messages, loading a model for
training, and saving a stage's checkpoint with the scorer settings it was trained with.

A saved checkpoint carries ``qsave_scorer.json`` (:mod:`qsave.spec`): its answer format and
video preprocessing, so ``qsave score --model <checkpoint>`` scores it the way it was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qsave.data.records import TrainingRecord
from qsave.dimensions import Dimension
from qsave.errors import ConfigError, ModelError
from qsave.prompts import THINK_CLOSE, THINK_OPEN, AnswerFormat, dimension_question, escape_text
from qsave.spec import TINY, ScorerSpec
from qsave.train.config import ModelConfig
from qsave.video.inputs import PreparedVideo, VideoConfig, prepare_video
from qsave.video.inputs import video_content as run_items

END_OF_TURN = "<|im_end|>"


class VideoCache:
    """Prepared (decoded, SlowFast-planned) videos by path: each video is decoded once."""

    def __init__(self, config: VideoConfig | None = None) -> None:
        self.config = config or VideoConfig()
        self._items: dict[str, PreparedVideo] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, path: str) -> PreparedVideo:
        if path not in self._items:
            self._items[path] = prepare_video(path, self.config)
        return self._items[path]

    def put(self, path: str, video: PreparedVideo) -> None:
        """Register an already prepared video (e.g. frames rendered in memory)."""
        self._items[path] = video


def prompt_messages(record: TrainingRecord, video: PreparedVideo,
                    tokenizer: Any = None) -> list[dict]:
    """The record's messages without the answer, its video item expanded to one per run and
    its user text escaped for ``tokenizer`` (:func:`user_text`)."""
    messages = []
    for message in record.messages:
        if message["role"] == "assistant":
            continue
        content = message["content"]
        if isinstance(content, list):
            expanded = []
            for item in content:
                if item.get("type") == "video":
                    expanded += run_items(video)
                elif item.get("type") == "text" and message["role"] == "user":
                    expanded.append({**item, "text": user_text(record, item["text"], tokenizer)})
                else:
                    expanded.append(item)
            content = expanded
        messages.append({"role": message["role"], "content": content})
    return messages


def user_text(record: TrainingRecord, text: str, tokenizer: Any = None) -> str:
    """A record's user text with everything but the format's own question (whose
    ``<think>…</think>`` template is meant) escaped by :func:`qsave.prompts.escape_text`.

    ``build_messages`` already escapes the generation prompt; this also covers records written
    before that or by hand. Escaped text is left as it is.
    """
    try:
        fmt = AnswerFormat(record.answer_format)
        question = dimension_question(Dimension(record.dimension), fmt)
    except ValueError:
        return escape_text(text, tokenizer)
    head, found, tail = text.rpartition(question)
    if not found:
        return escape_text(text, tokenizer)
    return escape_text(head, tokenizer) + question + escape_text(tail, tokenizer)


def answer_text(record: TrainingRecord, tokenizer: Any = None) -> str:
    """The record's target and end of turn, the rationale between its ``<think>`` tags escaped
    (:func:`qsave.prompts.escape_text`; ``format_answer`` already does it for new records)."""
    target = record.target
    start, end = target.find(THINK_OPEN), target.rfind(THINK_CLOSE)
    if start >= 0 and end >= start + len(THINK_OPEN):
        inside = escape_text(target[start + len(THINK_OPEN):end], tokenizer)
        target = target[:start + len(THINK_OPEN)] + inside + target[end:]
    return target + END_OF_TURN


def load_for_training(config: ModelConfig, source: str | None = None) -> tuple[Any, Any]:
    """(model, processor) from ``source`` (a stage checkpoint) or ``config.model``; LoRA
    adapters added when configured, the vision tower frozen when asked."""
    source = source or config.model
    if source == TINY:
        from qsave.model.tiny import build_tiny

        model, processor = build_tiny(config.seed, config.tiny)
    else:
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        try:
            processor = AutoProcessor.from_pretrained(source)
            model = Qwen3VLForConditionalGeneration.from_pretrained(source, dtype="auto")
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load {source!r} for training: {error}") from error
    return prepare_for_training(model, config), processor


def prepare_for_training(model: Any, config: ModelConfig) -> Any:
    """A loaded model made ready to train as ``config`` says: train mode, the vision tower
    frozen when asked, gradient checkpointing, LoRA adapters (peft). Returns the model (the
    peft wrapper with LoRA)."""
    model.train()
    if config.freeze_vision:
        model.model.visual.requires_grad_(False)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if config.lora:
        model = _with_lora(model, config)
    return model


def _with_lora(model: Any, config: ModelConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = rf"^model\.language_model\..*\.({'|'.join(config.lora_targets)})$"
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets)
    return get_peft_model(model, lora)


LORA_WITH_ZERO3 = ("LoRA with DeepSpeed ZeRO-3 is not supported (merging partitioned "
                   "adapters); use model.lora: false or ZeRO-2")


def save_model(model: Any, processor: Any, directory: str | Path, scorer: ScorerSpec,
               accelerator: Any = None) -> Path:
    """Save a stage's result (merged LoRA weights, so the next stage and ``qsave score`` load
    a plain checkpoint) with its processor and the scorer settings it was trained with.

    With the ``accelerator`` that prepared ``model`` every process calls this and the main
    process writes; under DeepSpeed ZeRO-3 the partitioned weights are gathered first
    (``accelerator.get_state_dict``: ``stage3_gather_16bit_weights_on_model_save``)."""
    directory = Path(directory)
    state_dict, names = None, {}
    if accelerator is not None:
        plugin = accelerator.state.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            if hasattr(accelerator.unwrap_model(model), "merge_and_unload"):
                raise ConfigError(LORA_WITH_ZERO3)
            state_dict = accelerator.get_state_dict(model)  # on every process
            # the model's own names: transformers' ZeRO-3 loading attaches legacy renamings
            # whose reversal on save would write model.language_model.model.* keys
            names = {"save_original_format": False}
        model = accelerator.unwrap_model(model)
        if not accelerator.is_main_process:
            return directory
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(directory, state_dict=state_dict, **names)
    processor.save_pretrained(directory)
    scorer.save(directory)
    return directory


def use_bf16(config: ModelConfig) -> bool:
    if config.bf16 is None:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if config.bf16 and not torch.cuda.is_available():
        raise ConfigError("bf16 = true needs a CUDA device; set bf16: null or false on CPU")
    return config.bf16
