"""A tiny Qwen3-VL built fully offline, for tests and the demo.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here with ``tokenizers`` on a
built-in corpus, the processor is the real transformers ``Qwen3VLProcessor`` (real image and
video processors, patch 16 × merge 2 × temporal patch 2 like Qwen3-VL-8B), and the model is a
``Qwen3VLForConditionalGeneration`` with random weights from a ~1M-parameter ``Qwen3VLConfig``.

>>> tiny = build_tiny()
>>> [len(tiny.processor.tokenizer.tokenize(w)) for w in ("Good", " Good")]
[1, 1]
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from qsave.dimensions import DIMENSIONS, RATINGS
from qsave.errors import ModelError
from qsave.model.tiny_size import TinySize
from qsave.prompts import AnswerFormat, dimension_question, format_answer, video_context

# Qwen2/3's special tokens, in Qwen's order, plus the reasoning tags.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
)
VOCAB_SIZE = 4096  # upper bound for BPE training; the model's vocab is the trained size
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen3-VL-8B-Instruct)
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3-VL-Instruct's chat template, reduced to what qsave uses: system, user and assistant
# turns whose content is a string or a list of text / image / video items.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' %}{{- item['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class TinyQwen3VL(NamedTuple):
    model: Qwen3VLForConditionalGeneration
    processor: Qwen3VLProcessor


def _corpus() -> list[str]:
    """Text the tokenizer learns from: qsave's prompts and answers about synthetic scenes."""
    colours = ("red", "blue", "green", "yellow", "white", "purple", "orange", "black")
    shapes = ("circle", "square", "triangle", "star", "ball", "cube", "car", "bird")
    motions = ("moves left", "moves right", "moves up", "moves down", "stays still")
    defects = ("blur", "noise", "blocky artifacts", "colour banding", "low resolution",
               "stutter", "a frozen segment", "jitter", "flicker", "teleporting", "deformation")
    lines = [dimension_question(d, f) for d in DIMENSIONS for f in AnswerFormat]
    for colour, shape, motion in itertools.product(colours, shapes, motions):
        lines.append(video_context(f"Two {colour} {shape}s {motion} while the camera pans."))
    for (rating, defect), fmt in itertools.product(
        itertools.product(RATINGS, defects), AnswerFormat
    ):
        rationale = f"The clip shows {defect} between 1.2 seconds and 2.0 seconds."
        lines.append(format_answer(rating, rationale, fmt))
        lines.append(f"The rating is {rating}. {rating} quality, rated {rating}.")
    lines.extend(f"<{t / 10:.1f} seconds>" for t in range(0, 600, 3))
    return lines


@functools.cache
def _trained_tokenizer_json() -> str:
    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    return bpe.to_str()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny tokenizer; each rating word, with or without a leading space, is one token."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=32768,
    )
    for word in (*RATINGS, *(f" {r}" for r in RATINGS)):
        if len(tokenizer.tokenize(word)) != 1:
            raise ModelError(f"tiny tokenizer splits the rating word {word!r}")
    return tokenizer


def build_processor(tokenizer: PreTrainedTokenizerFast | None = None) -> Qwen3VLProcessor:
    """The real Qwen3-VL processor around the tiny tokenizer (patch 16, merge 2, temporal 2)."""
    image_processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The ``Qwen3VLConfig`` fields that tie the model to the tokenizer's vision tokens."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def build_config(tokenizer: PreTrainedTokenizerFast, size: TinySize | None = None
                 ) -> Qwen3VLConfig:
    """A tiny Qwen3-VL in Qwen3-VL-8B's layout; by default text 2 layers × 64 and vision depth
    2 × 64 (~1M parameters). Deepstack feeds the first vision layers' features (at most 3, as
    the 8B's three) to the first text layers."""
    size = size or TinySize()
    head_dim = 16
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.text_layers,
        "num_attention_heads": size.hidden // head_dim,
        "num_key_value_heads": size.hidden // head_dim // 2,
        "head_dim": head_dim,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [4, 2, 2],  # (t, h, w), sums to head_dim / 2 = 8
            "mrope_interleaved": True,
        },
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": size.vision_depth,
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "num_heads": size.hidden // 32,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": size.hidden,  # = text hidden size
        "num_position_embeddings": 256,  # a 16 × 16 grid, interpolated to any frame size
        "deepstack_visual_indexes": list(range(min(size.vision_depth, size.text_layers, 3))),
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        **special_token_ids(tokenizer),
    )


def build_tiny(seed: int = 0, size: TinySize | None = None) -> TinyQwen3VL:
    """The tiny model (random weights from ``seed``) and its processor, offline, in seconds."""
    processor = build_processor()
    config = build_config(processor.tokenizer, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return TinyQwen3VL(model.eval(), processor)


def save_tiny(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny checkpoint (model + processor) that ``from_pretrained`` loads offline."""
    directory = Path(directory)
    tiny = build_tiny(seed)
    tiny.model.save_pretrained(directory)
    tiny.processor.save_pretrained(directory)
    return directory
