"""Speed options of the transformers backend: each one a lever measured by
``benchmarks/score_throughput.py`` and ``benchmarks/explain_speed.py``, all off by default.

- ``pack_prefix``: the shared prefixes of a batch (Sec. 4.2.2's video + context, one per
  video) run as one packed row with a block-diagonal causal mask instead of a left-padded
  batch; the KV cache is then unpacked into left-padded rows for the dimension suffixes. No
  padding token is computed, but the mask is dense: with SDPA the attention of the packed row
  costs (Σ lengths)², which only a kernel that skips masked blocks recovers
  (``attn_implementation="flex_attention"`` gets a block-sparse ``BlockMask``).
- ``vision_attention="grouped"``: the vision tower attends within each frame (transformers'
  ``cu_seqlens``); with SDPA transformers loops over the frames, one kernel each. Grouped,
  the frames of one size (a SlowFast run's slow or fast size) go through one batched SDPA call.
  It registers an attention function with transformers' ``AttentionInterface`` for the vision
  config only; the language model keeps its backend.
- ``compile``: ``torch.compile`` of the language model and the vision tower.
- ``generation_cache="static"``: explain mode generates with transformers' static KV cache;
  with ``compile`` transformers compiles the decoding step (``CompileConfig``, CUDA graphs
  through mode ``reduce-overhead``). The rating is read exactly as with the dynamic cache.

The options themselves (:class:`qsave.spec.SpeedOptions`) are part of the scorer spec.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache

from qsave.spec import SpeedOptions

__all__ = ["SpeedOptions", "apply", "generate_kwargs", "packed_prefix_pass"]

# the name contains "flash" so that transformers' vision attention hands over its cu_seqlens
GROUPED_VISION = "qsave_flash_grouped_sdpa"


def grouped_vision_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None = None, scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None, **_: Any,
) -> tuple[torch.Tensor, None]:
    """Attention within each ``cu_seq_lens_q`` segment, one SDPA call per segment length.

    (1, heads, L, d) → (1, L, heads, d), as transformers' attention functions return.
    """
    out = torch.empty_like(query[0])  # (heads, L, d)
    starts, lengths = cu_seq_lens_q[:-1].tolist(), torch.diff(cu_seq_lens_q).tolist()
    groups: dict[int, list[int]] = {}
    for start, length in zip(starts, lengths, strict=True):
        groups.setdefault(length, []).append(start)
    for length, first in groups.items():
        index = (torch.tensor(first, device=query.device)[:, None]
                 + torch.arange(length, device=query.device))  # (segments, length)
        q, k, v = (t[0][:, index].transpose(0, 1) for t in (query, key, value))
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling)
        out[:, index] = attended.transpose(0, 1)
    return out.transpose(0, 1).unsqueeze(0), None


AttentionInterface.register(GROUPED_VISION, grouped_vision_attention)


def apply(model: Any, options: SpeedOptions) -> Any:
    """Set the model-side options on a loaded Qwen3-VL (in place); returns it."""
    vision = model.config.vision_config
    if options.vision_attention == "grouped":
        vision._attn_implementation = GROUPED_VISION
    elif vision._attn_implementation == GROUPED_VISION:
        vision._attn_implementation = model.config.get_text_config()._attn_implementation
    if options.compile:
        model.model.language_model.compile(dynamic=True)
        model.model.visual.compile(dynamic=True)
    return model


def generate_kwargs(options: SpeedOptions) -> dict[str, Any]:
    """The ``generate`` keyword arguments of the cache option (transformers' own options)."""
    if options.generation_cache == "dynamic":
        return {}
    from transformers import CompileConfig

    kwargs: dict[str, Any] = {"cache_implementation": "static"}
    if options.compile:
        kwargs["compile_config"] = CompileConfig(fullgraph=False, mode="reduce-overhead")
    else:
        kwargs["disable_compile"] = True  # the static cache alone, no auto-compile
    return kwargs


def packed_prefix_pass(model: Any, batch: dict) -> DynamicCache:
    """The prefix pass over a left-padded batch as one packed row; the KV cache it returns has
    the batch's left-padded layout (zeros at the padding, which the suffix mask hides)."""
    mask = batch["attention_mask"].bool()
    rows, width = mask.shape
    lengths = mask.sum(1)
    ids, types = batch["input_ids"][mask][None], batch["mm_token_type_ids"][mask][None]
    rope = batch["position_ids"][:, mask][:, None]  # (3, 1, T)
    segment = torch.repeat_interleave(torch.arange(rows, device=ids.device), lengths)
    start = torch.cumsum(lengths, 0) - lengths
    text = (torch.arange(segment.numel(), device=ids.device) - start[segment])[None, None]
    cache = DynamicCache(config=model.config.get_text_config())
    model.model(
        input_ids=ids, attention_mask=_block_causal(model, segment),
        position_ids=torch.cat([text, rope]), pixel_values_videos=batch["pixel_values_videos"],
        video_grid_thw=batch["video_grid_thw"], mm_token_type_ids=types, cache=cache,
        use_cache=True,
    )
    real = mask.flatten().nonzero().squeeze(1)
    for layer in cache.layers:
        for name in ("keys", "values"):
            packed = getattr(layer, name)[0].transpose(0, 1)  # (T, heads, d)
            padded = packed.new_zeros(rows * width, *packed.shape[1:])
            padded[real] = packed
            setattr(layer, name, padded.view(rows, width, *packed.shape[1:]).transpose(1, 2)
                    .contiguous())
    return cache


def _block_causal(model: Any, segment: torch.Tensor) -> Any:
    """Causal attention within each segment: a BlockMask for flex attention, else a dense
    boolean (1, 1, T, T) mask (True: attend)."""
    if model.config.get_text_config()._attn_implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def within(b, h, q, kv):
            return (segment[q] == segment[kv]) & (kv <= q)

        n = segment.numel()
        return create_block_mask(within, None, None, n, n, device=segment.device)
    causal = torch.ones(segment.numel(), segment.numel(), dtype=torch.bool,
                        device=segment.device).tril_()
    return (causal & (segment[:, None] == segment[None, :]))[None, None]
