"""Explain mode's generation speed: tokens/s per sequence, plain ``generate`` against the
static KV cache (and, with ``--compile``, transformers' compiled decoding step: CUDA graphs).

Builds the model of ``--shape`` (benchmarks/score_throughput.py), prepares one SlowFast clip,
and for each batch size and each cache option (``qsave.model.speed``: ``SpeedOptions``
``generation_cache`` dynamic / static, ``compile``) times

- a greedy generation of exactly ``--new-tokens`` tokens (``min_new_tokens`` =
  ``max_new_tokens``, so random weights cannot stop early) with the keyword arguments qsave's
  explain mode passes; a logits processor stamps each step, so the prefill (up to the first
  logits) and the decoding steps are timed apart: tokens/s per sequence = 1 / step time;
- ``scorer.explain`` end to end on the batch with that option, and the largest score
  difference from the plain option (the rating is read exactly as before: it must be ~0).

Goal (8B shape, batch 1, one H100/H200): ≥ 100 generated tokens/s per sequence; the weights'
bandwidth allows ~180 (16 GB of bf16 weights per step at ~3 TB/s). Measured before: plain
``generate`` ~37 tokens/s at batch 1 on the 8B shape, launch-bound. GPU figures of this script:
not measured yet (no GPU lent in the session that built it; run benchmarks/gpu_suite.py).

    python benchmarks/explain_speed.py --shape tiny --device cpu --new-tokens 32
    python benchmarks/explain_speed.py --shape 8b --device cuda --compile --json out/explain.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from score_throughput import (
    PROMPT,
    build,
    device_and_dtype,
    environment,
    score_gap,
    sync,
    write_clip,
)
from transformers import LogitsProcessor, LogitsProcessorList

from qsave.dimensions import DIMENSIONS, Dimension
from qsave.model import scorer, speed
from qsave.model.load import rating_token_ids
from qsave.prompts import THINK_OPEN, AnswerFormat
from qsave.spec import SpeedOptions
from qsave.video.inputs import VideoConfig, prepare_video


def options_to_measure(compile_: bool) -> dict[str, SpeedOptions]:
    chosen = {"dynamic": SpeedOptions(), "static": SpeedOptions(generation_cache="static")}
    if compile_:
        chosen["static+compile"] = SpeedOptions(generation_cache="static", compile=True)
    return chosen


def generation_inputs(setup: scorer.ScoringSetup, items: list[scorer.VideoPrompt]) -> dict:
    """The processor batch explain mode generates from (rating-first: the rating, then
    ``<think>``), one row per video, for the visual dimension."""
    texts = scorer._full_texts(setup, items, (Dimension.VISUAL,), [""] * len(items))
    texts = [t + "Good" + THINK_OPEN for t in texts]
    return setup.processor(text=texts, **scorer.video_kwargs([it.video for it in items]),
                           return_tensors="pt", padding=True).to(setup.device)


class StepClock(LogitsProcessor):
    """Records when each decoding step's logits arrive (generate reads them on the host to
    stop, so no extra synchronisation is added); leaves the scores unchanged."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def time_generate(setup, batch: dict, options: SpeedOptions, new_tokens: int,
                  repeats: int) -> tuple[float, float]:
    """Median (prefill seconds, decode seconds per step) of a greedy generation of exactly
    ``new_tokens`` tokens: the prefill up to the first logits, then the steps between."""
    tokenizer = setup.processor.tokenizer
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  pad_token_id=tokenizer.pad_token_id, **speed.generate_kwargs(options))
    prefills, steps = [], []
    with torch.inference_mode():
        for attempt in range(repeats + 1):  # the first is a warm-up (and compilation)
            clock = StepClock()
            sync(setup.device)
            start = time.perf_counter()
            setup.model.generate(**batch, **kwargs, logits_processor=LogitsProcessorList([clock]))
            if attempt:
                prefills.append(clock.times[0] - start)
                steps.append((clock.times[-1] - clock.times[0]) / (len(clock.times) - 1))
    return statistics.median(prefills), statistics.median(steps)


def measure(setup, video, batch_size: int, options: SpeedOptions, args, reference) -> dict:
    items = [scorer.VideoPrompt(video, PROMPT) for _ in range(batch_size)]
    batch = generation_inputs(setup, items)
    prefill, step = time_generate(setup, batch, options, args.new_tokens, args.repeats)
    row = {"batch": batch_size, "prefill_s": prefill, "step_s": step,
           "tokens_per_s_per_sequence": 1 / step, "tokens_per_s_total": batch_size / step}
    fast = scorer.ScoringSetup(setup.model, setup.processor, setup.rating_ids,
                               setup.answer_format, args.explain_tokens, speed=options)
    start = time.perf_counter()
    explained = scorer.explain(fast, items, DIMENSIONS)
    sync(setup.device)
    row["explain_s"] = time.perf_counter() - start
    if reference is not None:
        row["max_score_gap"] = score_gap(explained, reference)
    return row, explained


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("tiny", "8b"), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=128, help="tokens per timed generation")
    p.add_argument("--explain-tokens", type=int, default=64,
                   help="max_new_tokens of the end-to-end explain call")
    p.add_argument("--compile", action="store_true",
                   help="also the static cache with transformers' compiled decoding step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", default="854x480")
    p.add_argument("--budget-s", type=float, default=None)
    p.add_argument("--json", type=Path, default=None)
    return p


def run(argv: list[str] | None = None, model=None) -> dict:
    """Measure and print; returns the figures. ``model``: a built ``(model, processor)``."""
    args = parser().parse_args(argv)
    started = time.perf_counter()
    device, dtype = device_and_dtype(args)
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        video = prepare_video(write_clip(Path(tmp) / "clip.mp4", args.seconds, width, height),
                              VideoConfig())
    model, processor = model or build(args.shape, device, dtype)
    processor.tokenizer.padding_side = "left"
    fmt = AnswerFormat.RATING_FIRST
    setup = scorer.ScoringSetup(model, processor, rating_token_ids(processor.tokenizer, fmt), fmt)
    figures = {"env": environment(args, model, device, dtype), "new_tokens": args.new_tokens,
               "video_tokens": video.num_tokens, "rows": {}, "skipped": []}
    print(f"explain speed, {args.shape}, {dtype}, {figures['env']['device_name']}: "
          f"{video.num_tokens} video tokens, {args.new_tokens} new tokens per generation")
    for batch_size in args.batch_sizes:
        reference = None
        for name, options in options_to_measure(args.compile).items():
            if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
                figures["skipped"].append(f"{name} batch {batch_size}: budget")
                continue
            try:
                row, explained = measure(setup, video, batch_size, options, args, reference)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                row, explained = {"batch": batch_size, "status": "oom"}, None
            except Exception as error:  # one option failing must not end a GPU run
                row, explained = {"batch": batch_size, "status": f"error: {error!r}"}, None
            finally:
                speed.apply(model, SpeedOptions())
            reference = reference or explained
            figures["rows"].setdefault(name, []).append(row)
            if "status" in row:
                print(f"batch {batch_size:2d} {name:15s}: {row['status']}")
                continue
            gap = row.get("max_score_gap")
            print(f"batch {batch_size:2d} {name:15s}: {row['tokens_per_s_per_sequence']:8.1f} "
                  f"tokens/s per sequence ({row['tokens_per_s_total']:8.1f} in all), prefill "
                  f"{1e3 * row['prefill_s']:7.1f} ms, explain {row['explain_s']:.2f} s"
                  + (f", max |Δscore| vs dynamic {gap:.1e}" if gap is not None else ""))
    figures["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return figures


if __name__ == "__main__":
    run()
