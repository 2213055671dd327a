"""One training step at the 8B shape on one GPU: what App. A's settings need (paper App. A).

Builds the model of ``benchmarks/score_throughput.py`` (``tiny``, or Qwen3-VL-8B's exact
architecture with random weights), renders one SlowFast clip in memory (numpy frames at 8 fps
→ qsave's SlowFast plan and processor items; no file, no decoding), makes one training record
of it in the project's format (``qsave.data.records.build_records``: ``<think>…</think>Rating``)
and times training steps with the project's own code, per mode:

- ``sft-lora``: stage 1 SFT (``SFTCollator`` + ``sft_forward``: α·CE + β·MSE) with the LoRA of
  ``configs/paper-appendix-a-1gpu.yaml`` (r 64, gradient checkpointing), AdamW;
- ``sft-full``: the same with every weight trained (``configs/paper-appendix-a.yaml``'s model:
  gradient checkpointing), AdamW (torch, fused on CUDA; ``--optimizer adamw8bit`` or
  ``paged_adamw8bit`` through bitsandbytes when installed; after an out-of-memory with AdamW
  the paged 8-bit optimizer is tried once when bitsandbytes is there);
- ``grpo``: one stage 2 step (``qsave.train.grpo.grpo_step``: G sampled rollouts of exactly
  ``--new-tokens`` tokens from one prompt, rewards, ``token_logprobs``, ``grpo_loss``, backward,
  AdamW step) with the 1-GPU config's LoRA; ``grpo-full`` (not run by default): all weights.

Per mode: peak memory (CUDA: ``torch.cuda.max_memory_allocated`` after a reset; CPU: the
process's peak RSS growth over the mode), the median step time after a warm-up step, sequence
tokens/s (and generated tokens/s for GRPO), trained parameters, the optimizer used, and a
status (``ok``, ``oom``, ``skipped: …``). Then which of App. A's settings fit one GPU of this
memory (measured where a mode ran, else estimated from parameters × bytes) and, for the rest,
the DeepSpeed ZeRO-3 launch a user needs.

    python benchmarks/train_step.py --shape tiny --device cpu --seq-seconds 1 --size 64x48 \\
        --generations 2 --new-tokens 8 --steps 1
    python benchmarks/train_step.py --shape 8b --device cuda --dtype bfloat16 --json step.json

GPU figures: not measured yet (no GPU lent in the session that built this; run
benchmarks/gpu_suite.py).

Notes: the 8B shape uses the tiny tokenizer (as score_throughput does), so the text is a few
dozen tokens and the sequence is mostly the clip's video tokens (App. A's 8192/2048 budgets);
random weights sample arbitrary tokens, which is why rollouts are held at a fixed length.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import importlib.metadata
import itertools
import json
import math
import re
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from score_throughput import build, clip_frames, device_and_dtype, sync

from qsave.data.records import TrainingRecord, build_records
from qsave.errors import ConfigError
from qsave.model.load import rating_token_ids
from qsave.train.common import VideoCache, prepare_for_training
from qsave.train.config import GRPOConfig, ModelConfig, OptimConfig, TrainConfig, load_train_config
from qsave.train.grpo import grpo_step, make_grpo_state, prompt_texts
from qsave.train.sft import SFTCollator, sft_forward
from qsave.video.decode import VideoInfo, output_size
from qsave.video.inputs import (
    PreparedVideo,
    VideoConfig,
    _run_item,
    plan_sampled,
    processor_video_kwargs,
)
from qsave.video.slowfast import thumbnail_size

GIB = 2**30
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
APP_A = "configs/paper-appendix-a.yaml"  # full fine-tuning, 8 GPUs, ZeRO-3
APP_A_1GPU = "configs/paper-appendix-a-1gpu.yaml"  # LoRA on one GPU
ZERO3_FILES = "configs/deepspeed-zero3.json + configs/accelerate-zero3.yaml"
# mode → (stage, the config whose model (LoRA or not) and stage settings it runs)
MODES = {"sft-lora": ("sft", APP_A_1GPU), "sft-full": ("sft", APP_A),
         "grpo": ("grpo", APP_A_1GPU), "grpo-full": ("grpo", APP_A)}
DEFAULT_MODES = ("sft-lora", "sft-full", "grpo")  # the issue's three; grpo-full on request
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")
ZERO3_BYTES_PER_PARAM = 16  # bf16 weights 2 + bf16 grads 2 + fp32 master 4 + AdamW m, v 8
ASSUMED_CAPACITY_GIB = 80.0  # off CUDA: the fit table is read against an 80 GiB H100
CLIP_PROMPT = "A red ball bounces across a wooden table while the camera slowly pans right."
CLIP_ATTRIBUTION = "The ball smears into a blur and its edge flickers while it moves."
CLIP_MOS = 2.6  # → Poor: a low-MOS clip, so the rationale is an attribution (App. C.1)


# ---- the clip and its record -------------------------------------------------------------
@dataclass
class FramesInMemory:
    """RGB frames standing for ``qsave.video.decode.SampledFrames`` (what ``plan_sampled`` and
    ``prepare_video`` read of it), so a clip is prepared without a file or a decoder."""

    frames: list[np.ndarray]  # (H, W, 3) uint8, already at most max_side
    thumbnails: np.ndarray  # (N, h, w, 3) uint8 similarity thumbnails
    timestamps: np.ndarray  # (N,) seconds
    source_indices: np.ndarray  # (N,)
    info: VideoInfo

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].shape[:2]

    def to_rgb(self, sizes: list[tuple[int, int]], positions: list[int]) -> list[np.ndarray]:
        return [cv2.resize(self.frames[i], (w, h), interpolation=cv2.INTER_AREA)
                for i, (h, w) in zip(positions, sizes, strict=True)]


def prepare_frames(frames: np.ndarray, fps: float, config: VideoConfig) -> PreparedVideo:
    """``qsave.video.inputs.prepare_video`` for frames sampled at ``fps``: the same SlowFast
    plan (``plan_sampled``), sizes and processor items (``_run_item``), no decoding."""
    count, height, width = frames.shape[:3]
    if count > config.decode.max_frames:
        raise ConfigError(f"{count} frames exceed max_frames ({config.decode.max_frames}): "
                          "shorten --seq-seconds")
    size = output_size(height, width, config.decode.max_side)
    kept = [f if f.shape[:2] == size else cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA)
            for f in frames]
    th, tw = thumbnail_size(*size, config.slowfast)
    thumbs = np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in kept])
    info = VideoInfo(source="in-memory", container="none", codec="rgb24", pix_fmt="rgb24",
                     width=size[1], height=size[0], rotation=0, duration=count / fps,
                     nominal_fps=fps, avg_fps=fps, min_interval=1 / fps, max_interval=1 / fps,
                     num_frames=count)
    sampled = FramesInMemory(kept, thumbs, np.arange(count) / fps, np.arange(count), info)
    plan = plan_sampled(sampled, config)
    sizes = [plan.slow_size if slow else plan.fast_size for slow in plan.slow]
    rgb = sampled.to_rgb(sizes, list(plan.positions))
    items = [_run_item(rgb, info, plan, run) for run in plan.runs]
    return PreparedVideo([v for v, _ in items], [m for _, m in items], plan, plan.num_tokens,
                         {**config.to_dict(), "plan": plan.summary()}, info)


def clip_record(path: str) -> TrainingRecord:
    """The clip's visual record, think-first (``<think>attribution</think>Fair``), built by
    ``qsave.data.records.build_records`` as for a real corpus."""
    videos = pd.DataFrame([{"video_id": "clip", "path": path, "prompt": CLIP_PROMPT,
                            "attribution_visual": CLIP_ATTRIBUTION}])
    mos = pd.DataFrame([{"video_id": "clip", "dimension": "visual", "mos5": CLIP_MOS}])
    (record,) = build_records(videos, mos).records
    return record


# ---- measuring ---------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of one mode. CUDA: ``torch.cuda.max_memory_allocated`` after a reset (the
    earlier modes' tensors freed first). CPU: the process's peak RSS growth over the mode —
    VmHWM reset through ``/proc/self/clear_refs`` (Linux), else ``getrusage``'s ``ru_maxrss``
    growth, which stays 0 while a mode peaks below an earlier one (said in ``kind``)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.base = device, 0
        self.kind = "torch.cuda.max_memory_allocated"
        if device.type != "cuda":
            self.kind = ("peak RSS growth (VmHWM reset per mode)" if _reset_hwm()
                         else "peak RSS growth (getrusage ru_maxrss, not reset per mode)")

    def start(self) -> int | None:
        """Reset the peak; returns what is still allocated from before (CUDA), else None."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        _trim()  # freed memory back to the system, so the next mode's growth is its own
        if "VmHWM" in self.kind:
            _reset_hwm()
            self.base = _status_bytes("VmRSS")
        else:
            self.base = _maxrss_bytes()
        return None

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if "VmHWM" in self.kind:
            return _status_bytes("VmHWM") - self.base
        return _maxrss_bytes() - self.base


def _trim() -> None:
    """glibc's ``malloc_trim(0)`` where there is a glibc (Linux); nothing elsewhere."""
    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def time_steps(step: Callable[[], None], device: torch.device, steps: int,
               deadline: float | None) -> list[float]:
    """Seconds of ``steps`` calls after one warm-up call; past ``deadline`` (monotonic) the
    timing stops after the first timed step."""
    step()
    sync(device)
    times: list[float] = []
    for _ in range(steps):
        if times and deadline is not None and time.monotonic() > deadline:
            break
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def tensor_bytes(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ---- models and optimizers ---------------------------------------------------------------
@dataclass
class Bench:
    """What every mode shares: the model shape, device, clip, record and the App. A configs."""

    shape: str
    device: torch.device
    dtype: torch.dtype
    steps: int
    generations: int
    new_tokens: int
    optimizer: str
    video: PreparedVideo
    record: TrainingRecord
    configs: dict[str, TrainConfig]  # APP_A / APP_A_1GPU, read from configs/
    deadline: float | None = None

    def videos(self) -> VideoCache:
        cache = VideoCache(VideoConfig())
        cache.put(self.record.video, self.video)
        return cache


def training_model(bench: Bench, config: ModelConfig) -> tuple[Any, Any]:
    """The benchmark's model prepared as ``qsave.train.common.load_for_training`` prepares a
    loaded one (``prepare_for_training``: train mode, vision frozen if asked, gradient
    checkpointing, LoRA)."""
    torch.manual_seed(config.seed)
    model, processor = build(bench.shape, bench.device, bench.dtype)
    return prepare_for_training(model, config), processor


def installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def make_optimizer(name: str, params: list[torch.nn.Parameter], optim: OptimConfig,
                   device: torch.device) -> tuple[torch.optim.Optimizer, str, str | None]:
    """(optimizer, the name of the one used, why it is not the one asked for). The 8-bit ones
    come from bitsandbytes; without it (or off CUDA) AdamW is used and the note says so."""
    kwargs = dict(lr=optim.learning_rate, betas=optim.betas, weight_decay=optim.weight_decay)
    note = None
    if name != "adamw":
        if installed("bitsandbytes") is None:
            note = f"{name}: bitsandbytes not installed; used adamw"
        elif device.type != "cuda":
            note = f"{name}: bitsandbytes' 8-bit optimizers need CUDA; used adamw"
        else:
            try:
                import bitsandbytes as bnb
            except (ImportError, RuntimeError) as error:  # e.g. built for another CUDA
                note = f"{name}: bitsandbytes does not load ({error}); used adamw"
            else:
                kind = (bnb.optim.PagedAdamW8bit if name == "paged_adamw8bit"
                        else bnb.optim.AdamW8bit)
                return kind(params, **kwargs), name, None
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, fused=fused, **kwargs), (
        "adamw (torch, fused)" if fused else "adamw (torch)"), note


# ---- modes -------------------------------------------------------------------------------
@dataclass
class StepResult:
    """One mode's figures (JSON ``train_step[mode]``); None where a figure does not apply."""

    status: str = "ok"  # ok, oom, error, skipped: <reason>
    error: str | None = None
    config: str | None = None  # the App. A config whose model and stage settings it ran
    adapter: str | None = None  # lora or full
    gradient_checkpointing: bool | None = None
    optimizer: str | None = None
    optimizer_note: str | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    memory_before_bytes: int | None = None  # CUDA: still allocated when the mode began (≈ 0)
    peak_memory_bytes: int | None = None
    peak_memory_gib: float | None = None
    memory_kind: str | None = None
    state_bytes: int | None = None  # weights + gradients + optimizer states after a step
    step_seconds: float | None = None  # median of the timed steps
    step_times: list[float] = field(default_factory=list)
    sequence_tokens: int | None = None  # tokens through the model per step (video included)
    video_tokens: int | None = None
    tokens_per_s: float | None = None
    generated_length: int | None = None  # GRPO: tokens per rollout (held at --new-tokens)
    generated_tokens: int | None = None  # GRPO: G × generated length
    generate_seconds: float | None = None  # GRPO: median generation time per step
    generated_tokens_per_s: float | None = None
    loss: float | None = None
    loss_parts: dict[str, float] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)  # earlier tries (e.g. "adamw: oom")


def _describe(result: StepResult, model: Any, config: ModelConfig, source: str) -> None:
    result.config = source
    result.adapter = "lora" if config.lora else "full"
    result.gradient_checkpointing = config.gradient_checkpointing
    result.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.total_params = sum(p.numel() for p in model.parameters())


def _state_bytes(model: Any, optimizer: torch.optim.Optimizer) -> int:
    trainable = [p for p in model.parameters() if p.requires_grad]
    states = (t for s in optimizer.state.values() for t in s.values()
              if isinstance(t, torch.Tensor))
    return tensor_bytes(model.parameters()) + tensor_bytes(iter(trainable)) + tensor_bytes(states)


def sft_mode(bench: Bench, mode: str, result: StepResult, optimizer_name: str) -> None:
    """Stage 1 steps on the clip's record: the collator's batch, ``sft_forward`` (α·CE +
    β·MSE), backward, clipping at ``max_grad_norm``, the optimizer step."""
    source = MODES[mode][1]
    train = bench.configs[source]
    model, processor = training_model(bench, train.model)
    _describe(result, model, train.model, source)
    fmt = train.answer_format
    collator = SFTCollator(processor, rating_token_ids(processor.tokenizer, fmt), bench.videos(),
                           fmt)
    batch = {k: v.to(bench.device) if isinstance(v, torch.Tensor) else v
             for k, v in collator([bench.record]).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, result.optimizer, result.optimizer_note = make_optimizer(
        optimizer_name, params, train.sft.optim, bench.device)

    def step() -> None:
        loss, parts = sft_forward(model, batch, collator.rating_ids, train.sft.alpha,
                                  train.sft.beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.sft.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.loss, result.loss_parts = parts["loss"], {"ce": parts["ce"], "mse": parts["mse"]}

    result.step_times = time_steps(step, bench.device, bench.steps, bench.deadline)
    result.state_bytes = _state_bytes(model, optimizer)
    result.sequence_tokens = batch["input_ids"].numel()
    video_pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    result.video_tokens = int((batch["input_ids"] == video_pad).sum())


@contextlib.contextmanager
def fixed_length_generation(policy: Any, new_tokens: int) -> Iterator[list[tuple[float, int, int]]]:
    """``policy.generate`` made to produce exactly ``new_tokens`` (``min_new_tokens`` in its
    generation config, which ``generate_rollouts``' arguments leave as it is) and timed: yields
    a list that gets (seconds, rows, generated length) per call. Both undone on exit."""
    generation = policy.generation_config
    before = generation.min_new_tokens
    generation.min_new_tokens = new_tokens
    calls: list[tuple[float, int, int]] = []
    inner = policy.generate
    device = next(policy.parameters()).device

    def timed(*args: Any, **kwargs: Any) -> torch.Tensor:
        sync(device)
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        sync(device)
        calls.append((time.perf_counter() - start, out.shape[0],
                      out.shape[1] - kwargs["input_ids"].shape[1]))
        return out

    policy.generate = timed
    try:
        yield calls
    finally:
        del policy.generate
        generation.min_new_tokens = before


def grpo_mode(bench: Bench, mode: str, result: StepResult, optimizer_name: str) -> None:
    """Stage 2 steps on one prompt (``grpo_step``): G rollouts of ``new_tokens``, rewards and
    advantages, old log-probs, the clipped loss, backward, clipping, AdamW
    (``make_grpo_state``'s, so ``--optimizer`` does not apply)."""
    source = MODES[mode][1]
    train = bench.configs[source]
    model, processor = training_model(bench, train.model)
    _describe(result, model, train.model, source)
    config = replace(train.grpo, num_generations=bench.generations, max_new_tokens=bench.new_tokens,
                     prompts_per_step=1, micro_batch_size=1, max_steps=bench.steps + 1)
    state = make_grpo_state(model, processor, config, bf16=bench.dtype == torch.bfloat16,
                            cpu=bench.device.type != "cuda")
    result.optimizer = "adamw (torch, make_grpo_state)"
    if optimizer_name != "adamw":
        result.optimizer_note = f"{optimizer_name}: not used by grpo (make_grpo_state's AdamW)"
    videos, counter = bench.videos(), itertools.count()
    policy = state.accelerator.unwrap_model(state.model)

    def step() -> None:
        _, stats = grpo_step(state, [bench.record], videos, config, train.answer_format,
                             next(counter), seed=0)
        result.loss = stats["loss"]
        result.loss_parts = {k: stats[k] for k in ("reward", "clip_fraction", "ratio")}

    with fixed_length_generation(policy, bench.new_tokens) as calls:
        result.step_times = time_steps(step, bench.device, bench.steps, bench.deadline)
    timed = calls[1:] or calls  # the warm-up step's generation left out
    seconds, rows, length = statistics.median(c[0] for c in timed), timed[-1][1], timed[-1][2]
    result.generate_seconds, result.generated_length = seconds, length
    result.generated_tokens = rows * length
    result.generated_tokens_per_s = rows * length / seconds
    result.video_tokens = bench.video.num_tokens * rows
    result.sequence_tokens = rows * (_prompt_tokens(processor, bench) + length)
    result.state_bytes = _state_bytes(model, state.optimizer)


def _prompt_tokens(processor: Any, bench: Bench) -> int:
    """Tokens of the record's prompt (video included), as ``generate_rollouts`` builds it."""
    texts, prepared = prompt_texts(processor, [bench.record], bench.videos())
    batch = processor(text=texts, **processor_video_kwargs(prepared), return_tensors="pt")
    return batch["input_ids"].shape[1]


RUNNERS = {"sft": sft_mode, "grpo": grpo_mode}


def run_mode(bench: Bench, mode: str, meter: PeakMemory, optimizer_name: str) -> StepResult:
    """One mode measured; an out-of-memory error is recorded (status ``oom``), memory freed."""
    result = StepResult(memory_kind=meter.kind)
    result.memory_before_bytes = meter.start()
    try:
        RUNNERS[MODES[mode][0]](bench, mode, result, optimizer_name)
    except torch.cuda.OutOfMemoryError as error:
        result.status, result.error = "oom", _first_line(error)
    except Exception as error:  # recorded and printed: the next mode still runs
        oom = "out of memory" in str(error).lower() or "ALLOC_FAILED" in str(error)
        if not oom:
            traceback.print_exc()
        result.status = "oom" if oom else "error"
        result.error = f"{type(error).__name__}: {_first_line(error)}"
    result.peak_memory_bytes = meter.peak()
    result.peak_memory_gib = result.peak_memory_bytes / GIB
    gc.collect()
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()
    if result.status == "ok":
        result.step_seconds = statistics.median(result.step_times)
        result.tokens_per_s = result.sequence_tokens / result.step_seconds
    return result


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:300]


def measure_mode(bench: Bench, mode: str, meter: PeakMemory) -> StepResult:
    """``run_mode`` with the asked optimizer; sft-full out of memory with AdamW is tried once
    more with bitsandbytes' paged 8-bit AdamW when it is installed."""
    if bench.configs[MODES[mode][1]].model.lora and installed("peft") is None:
        return StepResult(status="skipped: peft not installed (LoRA)", memory_kind=meter.kind)
    result = run_mode(bench, mode, meter, bench.optimizer)
    if not (mode == "sft-full" and result.status == "oom" and bench.optimizer == "adamw"):
        return result
    if installed("bitsandbytes") is None or bench.device.type != "cuda":
        result.optimizer_note = "out of memory; no paged 8-bit retry (bitsandbytes not installed)"
        return result
    retry = run_mode(bench, mode, meter, "paged_adamw8bit")
    retry.attempts = [f"{result.optimizer}: oom ({result.peak_memory_gib:.1f} GiB)"]
    return retry


# ---- the fit table -----------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One of App. A's settings (or the 1-GPU config's) and how its memory is known."""

    stage: str
    setting: str  # {g} and {t}: the measured G and rollout length (App. A: 8, qsave's 256)
    config: str
    mode: str  # the mode that measures it, or whose activations its estimate borrows
    zero3: bool  # App. A as run: ZeRO-3's mixed precision (16 B/param), never measured here


SETTINGS = (
    Setting("SFT (stages 1, 3)", "App. A: full fine-tuning, bf16 with fp32 master weights and "
            "AdamW states (ZeRO-3), effective batch 8 = 1 per step x 8", APP_A, "sft-full", True),
    Setting("SFT (stages 1, 3)", "full fine-tuning without DeepSpeed: bf16 weights, gradients "
            "and optimizer states, batch 1 x 8 accumulation", f"{APP_A} with sft.deepspeed: null",
            "sft-full", False),
    Setting("SFT (stages 1, 3)", "LoRA r 64, batch 1 x 8 accumulation", APP_A_1GPU, "sft-lora",
            False),
    Setting("GRPO (stage 2)", "App. A: full fine-tuning, G = {g} x {t} tokens, 256 prompts per "
            "step in micro-batches of 1 prompt, fp32 master weights + AdamW (ZeRO-3)", APP_A,
            "grpo-full", True),
    Setting("GRPO (stage 2)", "full fine-tuning without DeepSpeed: bf16 weights, gradients and "
            "AdamW states, G = {g} x {t} tokens", APP_A, "grpo-full", False),
    Setting("GRPO (stage 2)", "LoRA r 64, G = {g} x {t} tokens, micro-batches of 1 prompt",
            APP_A_1GPU, "grpo", False),
)
SIBLING = {"sft-full": "sft-lora", "sft-lora": "sft-full", "grpo-full": "grpo", "grpo": "grpo-full"}


@dataclass
class FitRow:
    """Whether a setting fits one GPU of ``capacity_gib`` and what the rest need (JSON ``fit``)."""

    stage: str
    setting: str
    config: str
    basis: str  # "measured (<mode>)" or "estimate: …"
    memory_gib: float | None
    capacity_gib: float
    fits: bool | None
    needs: str | None
    note: str | None = None


def activations(results: dict[str, StepResult], mode: str) -> tuple[int, str] | None:
    """(peak − state bytes, the mode it was measured in) from ``mode`` or its sibling."""
    for name in (mode, SIBLING[mode]):
        r = results.get(name)
        if r is not None and r.status == "ok" and r.state_bytes is not None:
            return max(0, r.peak_memory_bytes - r.state_bytes), name
    return None


def estimated_states(shape: dict[str, int], setting: Setting, lora: bool,
                     optimizer: str) -> int | None:
    """Weights + gradients + AdamW states of a setting, from the model's parameter counts
    (LoRA: the frozen weights + the adapters' weights, gradients and two states)."""
    if setting.zero3:
        return ZERO3_BYTES_PER_PARAM * shape["params"]
    if lora:
        adapters = shape.get("lora_bytes")
        return None if adapters is None else shape["weight_bytes"] + 4 * adapters
    per_state = 1 if "8bit" in optimizer else shape["weight_bytes"] // shape["params"]
    return 2 * shape["weight_bytes"] + 2 * per_state * shape["params"]


def zero3_needs(states: int, act: int, capacity: int, launch: str) -> str:
    """The GPUs ZeRO-3 needs (states sharded, activations per GPU) and how to launch it."""
    gpus = 2
    while states / gpus + act > capacity and gpus < 64:
        gpus *= 2
    return (f"~{gpus} GPUs of this memory (estimate; App. A used 8) with DeepSpeed ZeRO-3: "
            f"{ZERO3_FILES} (num_processes: {gpus}); {launch}")


def fit_row(setting: Setting, lora: bool, results: dict[str, StepResult],
            shape: dict[str, int], capacity: int, optimizer: str, launch: str) -> FitRow:
    """A setting's row: its mode's peak where that mode ran (ok or out of memory), else the
    estimated states plus the activations measured in its mode or the sibling mode."""
    row = FitRow(setting.stage, setting.setting, setting.config, "", None, capacity / GIB, None,
                 None)
    measured = None if setting.zero3 else results.get(setting.mode)
    act = activations(results, setting.mode)
    if measured is not None and measured.status in ("ok", "oom"):
        row.basis = f"measured ({setting.mode}, {measured.memory_kind})"
        row.memory_gib = measured.peak_memory_gib
        row.fits = measured.status == "ok" and measured.peak_memory_bytes <= capacity
    else:
        states = estimated_states(shape, setting, lora, optimizer)
        if states is None:
            row.basis = "not estimated: peft not installed (LoRA parameter count unknown)"
            return row
        total = states + (act[0] if act else 0)
        row.basis = ("estimate: weights + gradients + AdamW states"
                     + (f" + activations measured in {act[1]}" if act
                        else " (activations not measured, not included)"))
        row.memory_gib, row.fits = total / GIB, total <= capacity
    if not row.fits:
        row.needs = ("LoRA with ZeRO-3 is not supported: a larger GPU or a shorter clip" if lora
                     else zero3_needs(ZERO3_BYTES_PER_PARAM * shape["params"],
                                      act[0] if act else 0, capacity, launch))
    if not lora and not setting.zero3 and shape["weight_bytes"] < 4 * shape["params"]:
        row.note = ("bf16 weights updated in place: App. A's learning rates (5e-6, 2e-6) are "
                    "below bf16's resolution for most weights, so most updates round away; "
                    "ZeRO-3 keeps fp32 master weights")
    return row


def model_shape(shape: str, dtype: torch.dtype, lora: ModelConfig) -> dict[str, int]:
    """Parameter count and bytes of the model (built on the meta device: no memory), and the
    bytes of its LoRA parameters under ``lora`` when peft is installed."""
    model, _ = build(shape, torch.device("meta"), dtype)
    out = {"params": sum(p.numel() for p in model.parameters()),
           "weight_bytes": tensor_bytes(model.parameters())}
    if installed("peft") is not None:
        adapted = prepare_for_training(model, lora)
        out["lora_bytes"] = tensor_bytes(p for p in adapted.parameters() if p.requires_grad)
    return out


def launch_command(path: Path) -> str:
    """The ``accelerate launch`` command in the header comment of ``path`` (one line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#") and "accelerate launch" in line:
            parts = [line.lstrip("# ").rstrip("\\ ")]
            while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i].lstrip("# ").rstrip("\\ "))
            return " ".join(parts)
    raise ConfigError(f"{path} has no 'accelerate launch' command in its comments")


# ---- the command -------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    grpo = GRPOConfig()  # App. A: G = 8; qsave's rollout length 256
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("tiny", "8b"), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES),
                        choices=[*MODES, "all"], help="all: every mode, grpo-full included")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after a warm-up step")
    parser.add_argument("--seq-seconds", type=float, default=5.0, help="clip length, seconds")
    parser.add_argument("--size", default="854x480", help="clip width x height")
    parser.add_argument("--generations", type=int, default=grpo.num_generations, help="G")
    parser.add_argument("--new-tokens", type=int, default=grpo.max_new_tokens,
                        help="generated tokens per rollout (held fixed)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="SFT modes")
    parser.add_argument("--capacity-gib", type=float, default=None,
                        help=f"GPU memory of the fit table (default: the CUDA device's; off "
                             f"CUDA {ASSUMED_CAPACITY_GIB:g})")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip the modes left once this many seconds have passed")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.generations < 2 or args.new_tokens < 1 or args.seq_seconds <= 0:
        parser.error("--steps and --new-tokens must be ≥ 1, --generations ≥ 2, "
                     "--seq-seconds > 0")
    if not re.fullmatch(r"\d+x\d+", args.size):
        parser.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    return args


def environment(args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                capacity: int) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"torch": torch.__version__, "transformers": installed("transformers"),
            "peft": installed("peft") or "not installed",
            "bitsandbytes": installed("bitsandbytes") or "not installed",
            "device": name, "dtype": str(dtype).removeprefix("torch."), "shape": args.shape,
            "capacity_gib": capacity / GIB,
            "capacity_source": "device" if device.type == "cuda" and args.capacity_gib is None
            else "assumed" if args.capacity_gib is None else "--capacity-gib",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure the modes and build the fit table; returns (and with ``--json`` writes)
    ``{"env", "clip", "train_step": {mode: figures}, "fit": [rows]}``."""
    args = parse_args(argv)
    start = time.monotonic()
    device, dtype = device_and_dtype(args)
    capacity = int((args.capacity_gib or ASSUMED_CAPACITY_GIB) * GIB)
    if device.type == "cuda" and args.capacity_gib is None:
        capacity = torch.cuda.get_device_properties(device).total_memory
    launch = launch_command(CONFIGS / Path(APP_A).name)  # fails before any measuring
    configs = {c: load_train_config(CONFIGS / Path(c).name) for c in (APP_A, APP_A_1GPU)}
    width, height = map(int, args.size.split("x"))
    video_config = VideoConfig()  # App. A preprocessing: 8 fps, SlowFast, 8192/2048 tokens
    fps = video_config.decode.fps
    frames = clip_frames(args.seq_seconds, width, height, fps,
                         count=max(2, round(args.seq_seconds * fps)))
    video = prepare_frames(frames, fps, video_config)
    bench = Bench(args.shape, device, dtype, args.steps, args.generations, args.new_tokens,
                  args.optimizer, video, clip_record("in-memory/slowfast-clip.mp4"), configs,
                  None if args.budget_s is None else start + args.budget_s)
    modes = list(MODES) if "all" in args.modes else list(dict.fromkeys(args.modes))
    meter = PeakMemory(device)
    results: dict[str, StepResult] = {}
    for mode in modes:
        if bench.deadline is not None and time.monotonic() > bench.deadline:
            results[mode] = StepResult(status="skipped: budget", memory_kind=meter.kind)
            continue
        results[mode] = measure_mode(bench, mode, meter)
    shape = model_shape(args.shape, dtype, configs[APP_A_1GPU].model)
    settings = [replace(s, setting=s.setting.format(g=args.generations, t=args.new_tokens))
                for s in SETTINGS]
    fit = [fit_row(s, configs[MODES[s.mode][1]].model.lora, results, shape, capacity,
                   args.optimizer, launch) for s in settings]
    out = {"env": environment(args, device, dtype, capacity),
           "clip": {"seconds": args.seq_seconds, "size": [width, height], "fps": fps,
                    "video_tokens": video.num_tokens, "plan": video.settings["plan"],
                    "record": {"id": bench.record.id, "target": bench.record.target}},
           "model": shape,
           "train_step": {mode: asdict(r) for mode, r in results.items()},
           "fit": [asdict(row) for row in fit]}
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)


def report(out: dict[str, Any]) -> str:
    """The figures as two plain-text tables."""
    env, clip = out["env"], out["clip"]
    lines = [f"{env['shape']} ({out['model']['params'] / 1e9:.3f} B params), {env['dtype']}, "
             f"{env['device']}, torch {env['torch']}, transformers {env['transformers']}, "
             f"peft {env['peft']}, bitsandbytes {env['bitsandbytes']}",
             f"clip: {clip['seconds']:g} s {clip['size'][0]}x{clip['size'][1]} at "
             f"{clip['fps']:g} fps -> {clip['video_tokens']} video tokens",
             f"{'mode':10s} {'status':8s} {'optimizer':30s} {'trained':>12s} {'peak GiB':>9s} "
             f"{'step s':>8s} {'tokens/s':>9s} {'gen tok/s':>9s} {'loss':>8s}"]
    for mode, r in out["train_step"].items():
        lines.append(
            f"{mode:10s} {r['status']:8s} {r['optimizer'] or '-':30s} "
            f"{_num(r['trainable_params'], ',d'):>12s} {_num(r['peak_memory_gib'], '.2f'):>9s} "
            f"{_num(r['step_seconds'], '.3f'):>8s} {_num(r['tokens_per_s'], '.0f'):>9s} "
            f"{_num(r['generated_tokens_per_s'], '.0f'):>9s} {_num(r['loss'], '.4f'):>8s}")
        for extra in (r["optimizer_note"], r["error"], *r["attempts"]):
            if extra:
                lines.append(f"{'':10s} {extra}")
    kinds = {r["memory_kind"] for r in out["train_step"].values() if r["memory_kind"]}
    lines.append(f"peak memory: {', '.join(sorted(kinds)) or '-'}")
    lines.append(f"fit on one GPU of {env['capacity_gib']:.1f} GiB ({env['capacity_source']}):")
    for row in out["fit"]:
        fits = {True: "fits", False: "does not fit", None: "unknown"}[row["fits"]]
        lines.append(f"- {row['stage']}: {row['setting']} [{row['config']}]: {fits}, "
                     f"{_num(row['memory_gib'], '.1f')} GiB, {row['basis']}")
        for extra in (row["needs"], row["note"]):
            if extra:
                lines.append(f"    {extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    out = run(argv)
    print(report(out))
    return int(any(r["status"] == "error" for r in out["train_step"].values()))


if __name__ == "__main__":
    raise SystemExit(main())
