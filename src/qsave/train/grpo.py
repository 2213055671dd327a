"""Stage 2: GRPO on the RL set (paper Sec. 4.3), a compact loop on transformers + accelerate.

TRL's GRPOTrainer does not pass video inputs (trl issues 4144, 5373), so rollouts come from
``model.generate`` on the video prompts, with vision and other special tokens suppressed
(:func:`qsave.model.load.rollout_suppressed_ids`). Per prompt, G completions form a group; the
reward R = R_acc + λ·R_fmt (:mod:`qsave.train.rewards`) becomes the group-relative advantage
A_i = (R_i − mean R) / (std R + ε). The loss is the clipped ratio objective (+ β·KL to a frozen
reference, k3 estimator, when ``kl_beta > 0``). The paper ran GRPO on verl, so its choices are
the defaults — each of qsave's earlier ones is a named option of :class:`GRPOConfig`:

=====================  ====================================  ============================
GRPOConfig key         default (verl)                        option (qsave ≤ 0.3)
=====================  ====================================  ============================
``advantage_std``      ``sample`` std (n − 1), ε = 1e-6      ``population`` std (n)
``loss_aggregation``   ``token-mean`` over the step's tokens  ``seq-mean-token-mean``
``logprob_dropout``    ``none`` in old and new log-probs     ``update-only``
=====================  ====================================  ============================

With ``logprob_dropout = none`` the old and the new log-probs come from the same computation,
so the first update's ratio is exactly 1 even with LoRA dropout. A step's prompts are split
over the processes (``accelerate launch``/``torchrun``) and its loss is normalised by the
step's token count over all of them, so 2 processes compute the gradient 1 process computes.
:mod:`qsave.train.verl` writes the data and reward for multi-node GRPO on verl itself.

>>> [round(a, 3) for a in group_advantages(torch.tensor([[1.5, 0.5, 0.5, 1.5]]))[0].tolist()]
[0.866, -0.866, -0.866, 0.866]
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import get_scheduler

from qsave.data.records import TrainingRecord, load_records
from qsave.errors import AnnotationError, ConfigError
from qsave.jsonl import JsonlWriter, read_jsonl, write_jsonl
from qsave.model.load import rollout_suppressed_ids
from qsave.prompts import AnswerFormat
from qsave.spec import ScorerSpec
from qsave.train.common import (
    END_OF_TURN,
    LORA_WITH_ZERO3,
    VideoCache,
    answer_text,
    load_for_training,
    prompt_messages,
    save_model,
    use_bf16,
)
from qsave.train.config import GRPOConfig, ModelConfig
from qsave.train.rewards import reward_components
from qsave.video.inputs import VideoConfig, processor_video_kwargs


@dataclass
class Rollout:
    """One sampled completion with its rewards (logged to rollouts.jsonl; cool-off reads it)."""

    step: int
    record_id: str
    video_id: str
    dimension: str
    video: str
    prompt: str | None
    label: str  # the record's rating
    mos: float
    completion: str
    accuracy: float  # R_acc
    format: float  # R_fmt
    reward: float  # R
    advantage: float


# ---- pure pieces -------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, std: str = "sample", eps: float = 1e-6
                     ) -> torch.Tensor:
    """(P, G) rewards → advantages normalised within each group: (R − mean) / (std + ε), the
    std of the group's G rewards as verl computes it (``sample``, n − 1) or ``population``."""
    mean = rewards.mean(dim=1, keepdim=True)
    spread = rewards.std(dim=1, keepdim=True, unbiased=std == "sample")
    return (rewards - mean) / (spread + eps)


def grpo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_epsilon: float = 0.2, ref_logp: torch.Tensor | None = None, kl_beta: float = 0.0,
    aggregation: str = "token-mean", denominator: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped ratio objective (+ β·KL). Token tensors (N, T); advantages (N,).

    ``token-mean`` divides the summed per-token loss by the number of completion tokens,
    ``seq-mean-token-mean`` averages each completion's tokens, then the completions.
    ``denominator`` replaces this batch's token (or completion) count when the batch is one
    micro-batch of a larger step, so the micro-batches' losses add up to the step's.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_epsilon, 1 + clip_epsilon) * adv)
    per_token = -surrogate
    kl = torch.zeros_like(logp)
    if ref_logp is not None and kl_beta > 0:
        diff = ref_logp - logp
        kl = torch.exp(diff) - diff - 1  # k3, unbiased and ≥ 0
        per_token = per_token + kl_beta * kl
    mask = mask.to(logp.dtype)
    tokens = mask.sum().clamp_min(1)
    if aggregation == "token-mean":
        total = (per_token * mask).sum()
        count = tokens
    else:
        total = ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)).sum()
        count = torch.tensor(float(len(mask)))
    loss = total / (count if denominator is None else denominator)
    clipped = ((ratio - 1).abs() > clip_epsilon).to(logp.dtype)
    stats = {"loss": loss.item(), "tokens": tokens.item(),
             "kl": ((kl * mask).sum() / tokens).item(),
             "clip_fraction": ((clipped * mask).sum() / tokens).item(),
             "ratio": ((ratio.detach() * mask).sum() / tokens).item()}
    return loss, stats


@contextmanager
def dropout_off(model: Any) -> Iterator[None]:
    """The model's dropout layers (LoRA's included) inactive, the rest of it as it is — in
    train mode gradient checkpointing stays on, which ``model.eval()`` would switch off."""
    active = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for module in active:
        module.eval()
    try:
        yield
    finally:
        for module in active:
            module.train()


def completion_mask(tokens: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it.

    >>> completion_mask(torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8]]), [2]).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 1]]
    """
    is_stop = torch.isin(tokens, torch.tensor(list(stop_ids), device=tokens.device))
    before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()  # stops strictly before
    return (before == 0).long()


# ---- rollouts ----------------------------------------------------------------------------
@dataclass
class RolloutBatch:
    """Model inputs of prompt + completion and what the loss needs."""

    inputs: dict[str, torch.Tensor]  # full sequences for the forward pass
    completions: torch.Tensor  # (N, T) generated tokens
    mask: torch.Tensor  # (N, T) 1 on real completion tokens
    texts: list[str]  # decoded completions


def prompt_texts(processor: Any, records: Sequence[TrainingRecord], videos: VideoCache
                 ) -> tuple[list[str], list]:
    texts, prepared = [], []
    for record in records:
        video = videos.get(record.video)
        texts.append(processor.apply_chat_template(
            prompt_messages(record, video, processor.tokenizer), tokenize=False,
            add_generation_prompt=True))
        prepared.append(video)
    return texts, prepared


@torch.no_grad()
def generate_rollouts(model: Any, processor: Any, records: Sequence[TrainingRecord],
                      videos: VideoCache, config: GRPOConfig, device: torch.device,
                      seed: int | None = None) -> RolloutBatch:
    """G sampled completions per record (record-major), with the inputs to score them.

    Vision, chat-control and other special tokens cannot be sampled (a sampled
    ``<|video_pad|>`` would break the video's token count); ``seed`` makes the sampling
    depend on it alone, not on what ran before (the same rollouts on any process).
    """
    tokenizer = processor.tokenizer
    texts, prepared = prompt_texts(processor, records, videos)
    g = config.num_generations
    texts = [t for t in texts for _ in range(g)]
    prepared = [p for p in prepared for _ in range(g)]
    batch = processor(text=texts, **processor_video_kwargs(prepared), return_tensors="pt",
                      padding=True, padding_side="left").to(device)
    stops = [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.pad_token_id]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            **batch, do_sample=True, temperature=config.temperature, top_p=config.top_p,
            max_new_tokens=config.max_new_tokens, eos_token_id=stops[0],
            pad_token_id=tokenizer.pad_token_id, suppress_tokens=rollout_suppressed_ids(tokenizer),
        )
    completions = out[:, batch["input_ids"].shape[1]:]
    mask = completion_mask(completions, stops)
    inputs = dict(batch)
    inputs["input_ids"] = out
    inputs["attention_mask"] = torch.cat([batch["attention_mask"], mask], dim=1)
    extra = torch.zeros_like(completions)
    inputs["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], extra], dim=1)
    decoded = [tokenizer.decode(row[m.bool()], skip_special_tokens=False)
               for row, m in zip(completions, mask, strict=True)]
    return RolloutBatch(inputs, completions, mask, decoded)


def token_logprobs(model: Any, rollouts: RolloutBatch) -> torch.Tensor:
    """log π(o_t | prompt, o_<t) of the completion tokens; logits only on those positions."""
    width = rollouts.completions.shape[1]
    out = model(**rollouts.inputs, logits_to_keep=width + 1, use_cache=False)
    logits = out.logits[:, :-1].float()  # position k predicts completion token k
    return torch.log_softmax(logits, dim=-1).gather(-1, rollouts.completions[..., None])[..., 0]


def score_rollouts(records: Sequence[TrainingRecord], rollouts: RolloutBatch,
                   config: GRPOConfig, fmt: AnswerFormat, step: int) -> list[Rollout]:
    """Rewards and group advantages of a rollout batch (record-major groups of G)."""
    g = config.num_generations
    parts = [reward_components(text, records[i // g].rating, fmt, config.format_weight,
                               config.reward_parsing)
             for i, text in enumerate(rollouts.texts)]
    totals = torch.tensor([p["total"] for p in parts]).view(len(records), g)
    advantages = group_advantages(totals, config.advantage_std, config.advantage_eps)
    result = []
    for i, (text, p, adv) in enumerate(zip(rollouts.texts, parts, advantages.view(-1).tolist(),
                                           strict=True)):
        r = records[i // g]
        result.append(Rollout(step, r.id, r.video_id, r.dimension, r.video, r.prompt, r.rating,
                              r.mos, text, p["accuracy"], p["format"], p["total"], adv))
    return result


@torch.no_grad()
def sample_rollouts(model: Any, processor: Any, records: Sequence[TrainingRecord],
                    videos: VideoCache, config: GRPOConfig, fmt: AnswerFormat, step: int = -1,
                    chunk: int = 8) -> list[Rollout]:
    """Rollouts with rewards for every record, without updating the policy (e.g. to collect
    the correct ones for the cool-off stage)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[Rollout] = []
    for i in range(0, len(records), chunk):
        part = records[i:i + chunk]
        batch = generate_rollouts(model, processor, part, videos, config, device)
        out += score_rollouts(part, batch, config, fmt, step)
    return out


# ---- the stage ---------------------------------------------------------------------------
@dataclass
class GRPOState:
    """What a GRPO run needs to continue: model, reference, optimiser, scheduler."""

    accelerator: Any
    model: Any
    processor: Any
    reference: Any | None
    optimizer: Any
    scheduler: Any


def setup_grpo(config: GRPOConfig, model_config: ModelConfig, init: str | None) -> GRPOState:
    """Load the policy (and its frozen reference when ``kl_beta > 0``) and prepare it."""
    model, processor = load_for_training(model_config, init)
    return make_grpo_state(model, processor, config, use_bf16(model_config))


def make_grpo_state(model: Any, processor: Any, config: GRPOConfig, bf16: bool = False,
                    cpu: bool = False) -> GRPOState:
    """AdamW + scheduler on the trainable parameters, everything through ``accelerate``
    (``cpu=True`` keeps the model on the CPU even where a GPU exists). Without a GPU the
    processes of ``torchrun`` meet over gloo: accelerate needs ``cpu`` to see them. The
    scheduler steps once per update on any number of processes (accelerate's default steps it
    once per process, for data loaders that shrink with the processes; a GRPO step's prompts
    are the same on any number).

    Under DeepSpeed (``accelerate launch`` with a DeepSpeed config, ``ACCELERATE_USE_DEEPSPEED``)
    the engine is built from that config with its ``auto`` values filled for GRPO
    (:func:`_fill_deepspeed`); it replaces the plugin an SFT stage before filled for itself."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import parse_flag_from_env

    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")
    if deepspeed:
        AcceleratorState._reset_state()  # a fresh DeepSpeed plugin, read from the config again
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no",
                              cpu=cpu or not (torch.cuda.is_available() or deepspeed),
                              step_scheduler_with_optimizer=False)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _fill_deepspeed(accelerator, model, config)
    reference = None
    if config.kl_beta > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.learning_rate,
                                  betas=config.optim.betas, weight_decay=config.optim.weight_decay)
    updates = config.max_steps * config.updates_per_batch
    scheduler = get_scheduler(config.optim.scheduler, optimizer, config.optim.warmup(updates),
                              updates)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return GRPOState(accelerator, model, processor, reference, optimizer, scheduler)


def _fill_deepspeed(accelerator: Any, model: Any, config: GRPOConfig) -> None:
    """Fill the DeepSpeed config's ``auto`` values for GRPO, which has no data loader to take
    them from (as TRL does): a micro-batch is ``micro_batch_size`` prompts, an update
    accumulates the step's micro-batches of this process, ``prompts_per_step`` in all; clipping
    at ``max_grad_norm``; ZeRO's bucket sizes from the language model's hidden size h (h², 0.9·h²,
    10·h, the values the Trainer fills). A value the config sets otherwise raises."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin.zero_stage == 3 and hasattr(model, "merge_and_unload"):
        raise ConfigError(LORA_WITH_ZERO3)
    if plugin.zero_stage == 3 and config.kl_beta > 0:
        raise ConfigError("grpo.kl_beta > 0 with DeepSpeed ZeRO-3 is not supported (the frozen "
                          "reference would be a whole copy outside the engine); use kl_beta: 0")
    per_process = _per_process(config.prompts_per_step, accelerator.num_processes)
    micro_batches = -(-per_process // config.micro_batch_size)
    hidden = model.config.get_text_config().hidden_size
    values = {"train_micro_batch_size_per_gpu": config.micro_batch_size,
              "gradient_accumulation_steps": micro_batches,
              "train_batch_size": config.micro_batch_size * micro_batches
              * accelerator.num_processes,
              "gradient_clipping": config.optim.max_grad_norm,
              "zero_optimization.reduce_bucket_size": hidden * hidden,
              "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
              "zero_optimization.stage3_param_persistence_threshold": 10 * hidden}
    mismatches: list[str] = []
    for key, value in values.items():
        plugin.fill_match(key, mismatches, **{key: value})
    if mismatches:
        raise ConfigError("the DeepSpeed config disagrees with GRPO (set these to \"auto\"):\n"
                          + "\n".join(mismatches))
    accelerator.gradient_accumulation_steps = micro_batches


def rollout_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of the ``index``-th prompt of a step (the same on every process)."""
    return (seed * 1_000_003 + step) * 1_000_003 + index


def grpo_step(state: GRPOState, records: Sequence[TrainingRecord], videos: VideoCache,
              config: GRPOConfig, fmt: AnswerFormat, step: int, seed: int | None = None,
              first_index: int = 0) -> tuple[list[Rollout], dict]:
    """Rollouts for this process's ``records`` (``micro_batch_size`` prompts per generate and
    forward pass), then ``updates_per_batch`` clipped policy updates, the micro-batches'
    gradients accumulated. ``seed`` and ``first_index`` (the records' place in the step's
    prompts) fix each prompt's sampling independently of the process it runs on."""
    acc, model = state.accelerator, state.model
    policy = acc.unwrap_model(model)
    size = config.micro_batch_size
    chunks = [list(records[i:i + size]) for i in range(0, len(records), size)]
    policy.eval()
    batches, scored = [], []
    for n, chunk in enumerate(chunks):
        chunk_seed = None if seed is None else rollout_seed(seed, step, first_index + n * size)
        batch = generate_rollouts(policy, state.processor, chunk, videos, config, acc.device,
                                  chunk_seed)
        part = score_rollouts(chunk, batch, config, fmt, step)
        batches.append((batch, torch.tensor([r.advantage for r in part], device=acc.device)))
        scored += part
    same_mode = config.logprob_dropout == "none"
    if same_mode:
        model.train()
    with torch.no_grad(), dropout_off(model) if same_mode else nullcontext():
        old = [token_logprobs(model, batch) for batch, _ in batches]
        ref = [token_logprobs(state.reference, batch) if state.reference is not None else None
               for batch, _ in batches]
    model.train()
    local = sum(float(b.mask.sum()) if config.loss_aggregation == "token-mean" else len(b.mask)
                for b, _ in batches)
    # the step's count over all processes, per process: DDP averages the processes' gradients
    denominator = acc.reduce(torch.tensor(local, device=acc.device), "sum") / acc.num_processes
    # accelerate's accumulation: no gradient all-reduce (DDP) before the last micro-batch, where
    # DeepSpeed's engine steps inside backward; the loss is divided by the micro-batches (by
    # accelerate, or by the engine for the count fixed at setup, _fill_deepspeed), undone here
    if acc.distributed_type == DistributedType.DEEPSPEED and (
            model.gradient_accumulation_steps() != len(batches)):
        raise ConfigError(f"{len(batches)} micro-batches in this step, but the DeepSpeed engine "
                          f"was set up for {model.gradient_accumulation_steps()}")
    acc.gradient_accumulation_steps = len(batches)
    undo = len(batches)
    stats: dict[str, float] = {}
    for _ in range(config.updates_per_batch):
        parts = []
        acc.step = 0
        for (batch, advantages), old_logp, ref_logp in zip(batches, old, ref, strict=True):
            with acc.accumulate(model), dropout_off(model) if same_mode else nullcontext():
                logp = token_logprobs(model, batch)
                loss, part = grpo_loss(logp, old_logp, advantages, batch.mask,
                                       config.clip_epsilon, ref_logp, config.kl_beta,
                                       config.loss_aggregation, denominator)
                acc.backward(loss * undo)
            parts.append(part)
        acc.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
        state.optimizer.step()
        state.scheduler.step()
        state.optimizer.zero_grad()
        stats = _combine(parts, acc)
    return scored, {**stats, **reward_stats(scored)}


def reward_stats(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """Mean and std of R, the rates of R_acc = 1 and R_fmt = 1, and the share of rollouts cut
    by ``max_new_tokens`` (no end of turn), over rollouts."""
    rewards = torch.tensor([r.reward for r in rollouts])
    return {"reward": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item(),
            "accuracy_rate": sum(r.accuracy for r in rollouts) / len(rollouts),
            "format_rate": sum(r.format for r in rollouts) / len(rollouts),
            "truncated_rate": sum(truncated(r) for r in rollouts) / len(rollouts)}


def truncated(rollout: Rollout) -> bool:
    """Whether generation stopped at ``max_new_tokens`` rather than at the end of turn."""
    return END_OF_TURN not in rollout.completion


def step_line(step: int, steps: int, stats: dict[str, float], kl: bool) -> str:
    """One GRPO step as a log line: reward mean ± std, accuracy and format rates, the share of
    truncated rollouts, clip fraction, mean ratio (and KL when it is on)."""
    line = (f"grpo step {step}/{steps} reward {stats['reward']:.3f} ± {stats['reward_std']:.3f} "
            f"accuracy {stats['accuracy_rate']:.2f} format {stats['format_rate']:.2f} "
            f"truncated {stats['truncated_rate']:.2f} clip {stats['clip_fraction']:.3f} "
            f"ratio {stats['ratio']:.3f}")
    return line + (f" kl {stats['kl']:.4f}" if kl else "")


def rollout_diagnosis(rollouts: Sequence[Rollout], config: GRPOConfig) -> str:
    """Why rollouts earn no reward, when a cause shows (for warnings), else ""."""
    if not rollouts:
        return ""
    cut = sum(truncated(r) for r in rollouts)
    well_formed = sum(r.format for r in rollouts)
    correct = sum(r.accuracy for r in rollouts)
    parts = [f"{int(correct)} of {len(rollouts)} correct, {int(well_formed)} well-formed"]
    if cut and (not well_formed or not correct):
        parts.append(f"{cut} cut at grpo.max_new_tokens ({config.max_new_tokens}) before the "
                     "answer ended: raise grpo.max_new_tokens if the records' answers are "
                     "longer, else train stage 1 longer (the policy does not close its "
                     "analysis yet)")
    elif not well_formed:
        parts.append(f"none is in the {config.reward_parsing} format: check the records' "
                     "answer format and grpo.reward_parsing")
    return "; ".join(parts)


def answer_lengths(processor: Any, records: Sequence[TrainingRecord]) -> list[int]:
    """Token counts of the records' answers with the end of turn (what a rollout imitates)."""
    tokenizer = processor.tokenizer
    return [len(tokenizer.encode(answer_text(r, tokenizer), add_special_tokens=False))
            for r in records]


def _combine(parts: Sequence[dict[str, float]], acc: Any) -> dict[str, float]:
    """One update's statistics over its micro-batches and all processes: the loss summed over
    micro-batches and averaged over processes (each process's part is normalised by the step's
    count / processes, so the mean is the step's loss), the rest token-weighted means."""
    keys = ("kl", "clip_fraction", "ratio")
    sums = torch.tensor([[p["loss"], p["tokens"], *(p[k] * p["tokens"] for k in keys)]
                         for p in parts], dtype=torch.float64).sum(dim=0)
    loss, tokens, *weighted = acc.reduce(sums.to(acc.device), "sum").tolist()
    return {"loss": loss / acc.num_processes,
            **{key: value / (tokens or 1.0) for key, value in zip(keys, weighted, strict=True)}}


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if (p / "step.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resume(state: GRPOState, output_dir: Path) -> int:
    """Load the newest checkpoint's state; returns the step to start from (0 if none)."""
    found = _checkpoints(output_dir)
    if not found:
        return 0
    state.accelerator.load_state(str(found[-1]))
    return json.loads((found[-1] / "step.json").read_text())["step"]


def _save(state: GRPOState, output_dir: Path, step: int) -> None:
    path = output_dir / f"checkpoint-{step}"
    state.accelerator.save_state(str(path))
    if state.accelerator.is_main_process:
        (path / "step.json").write_text(json.dumps({"step": step}))
    state.accelerator.wait_for_everyone()


def _log_rollouts(path: Path, rollouts: Sequence[Rollout], start: int) -> None:
    """Append rollouts; on resume, the rows of steps being done again are dropped first."""
    if rollouts and rollouts[0].step == start:
        write_jsonl(path, [row for _, row in read_jsonl(path).rows if row["step"] < start])
    with JsonlWriter(path) as out:
        for r in rollouts:
            out.write(asdict(r))


def train_grpo(
    config: GRPOConfig, model_config: ModelConfig, output_dir: str | Path,
    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST, init: str | None = None,
    records: Sequence[TrainingRecord] | None = None, log: Any = print,
) -> Path:
    """Run GRPO (resumable from ``output_dir/checkpoint-*``); saves ``output_dir/final`` and
    writes every rollout with its reward components to ``output_dir/rollouts.jsonl``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = list(records if records is not None else load_records(config.records).records)
    if not records:
        raise ConfigError(f"no RL records for GRPO in {config.records!r}")
    torch.manual_seed(model_config.seed)
    state = setup_grpo(config, model_config, init)
    longest = max(answer_lengths(state.processor, records))
    if log and longest > config.max_new_tokens:
        log(f"warning: grpo.max_new_tokens ({config.max_new_tokens}) is shorter than the "
            f"longest answer of the RL records ({longest} tokens): rollouts that imitate them "
            "are cut before the rating and earn no reward; raise grpo.max_new_tokens")
    video = VideoConfig.from_dict(config.video)
    videos = VideoCache(video)
    start = _resume(state, output_dir)
    acc = state.accelerator
    per_process = _per_process(config.prompts_per_step, acc.num_processes)
    if config.prompts_per_step > len(records):
        raise ConfigError(f"grpo.prompts_per_step ({config.prompts_per_step}) exceeds the "
                          f"{len(records)} RL records in {config.records!r}")
    order = random.Random(model_config.seed)
    picks = [order.sample(records, config.prompts_per_step) for _ in range(config.max_steps)]
    for step in range(start, config.max_steps):
        first = acc.process_index * per_process
        mine = picks[step][first:first + per_process]
        scored, stats = grpo_step(state, mine, videos, config, answer_format, step,
                                  model_config.seed, first)
        scored = _gather(acc, scored)
        stats.update(reward_stats(scored))  # over all processes' rollouts
        if acc.is_main_process:
            _log_rollouts(output_dir / "rollouts.jsonl", scored, start)
        if log and acc.is_main_process and (step + 1) % config.logging_steps == 0:
            log(step_line(step + 1, config.max_steps, stats, config.kl_beta > 0))
        if (step + 1) % config.save_steps == 0 or step + 1 == config.max_steps:
            _save(state, output_dir, step + 1)
    if log and acc.is_main_process:
        done = load_rollouts(output_dir / "rollouts.jsonl")
        missing = [key for key in ("accuracy", "format") if not any(getattr(r, key) for r in done)]
        if missing:
            log(f"warning: no rollout earned {' or '.join(missing)} reward "
                f"({rollout_diagnosis(done, config)}); stage 3 needs correct, well-formed "
                "rollouts")
    scorer = ScorerSpec(answer_format=answer_format, video=video,
                        max_new_tokens=config.max_new_tokens)
    final = output_dir / "final"
    save_model(state.model, state.processor, final, scorer, acc)  # every process: ZeRO-3 gathers
    acc.wait_for_everyone()
    return final


def _per_process(prompts: int, processes: int) -> int:
    if prompts % processes:
        raise ConfigError(f"grpo.prompts_per_step ({prompts}) must be a multiple of the "
                          f"number of processes ({processes})")
    return prompts // processes


def _gather(acc: Any, rollouts: list[Rollout]) -> list[Rollout]:
    """Every process's rollouts, in process order (the step's prompt order)."""
    if acc.num_processes == 1:
        return rollouts
    from accelerate.utils import gather_object

    return [Rollout(**row) for row in gather_object([asdict(r) for r in rollouts])]


def load_rollouts(path: str | Path) -> list[Rollout]:
    """Read rollouts.jsonl back; a line that is not a rollout raises with its number."""
    read = read_jsonl(path)
    problems = read.problems(str(path))
    if problems:
        raise AnnotationError(f"unreadable rollouts: {'; '.join(problems)}")
    try:
        return [Rollout(**row) for _, row in read.rows]
    except TypeError as error:
        raise AnnotationError(f"{path}: not a rollout row: {error}") from error
