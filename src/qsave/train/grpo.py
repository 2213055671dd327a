"""Stage 2: GRPO on the RL set (paper Sec. 4.3), a compact loop on transformers + accelerate.

TRL's GRPOTrainer does not pass video inputs (trl issues 4144, 5373), so rollouts come from
``model.generate`` on the video prompts. Per prompt, G completions form a group; the reward
R = R_acc + 0.5·R_fmt (:mod:`qsave.train.rewards`) becomes the group-relative advantage
A_i = (R_i − mean R) / (std R + ε); the loss is the clipped ratio objective, averaged over each
completion's tokens and then over completions, plus β·KL to a frozen reference (k3 estimator)
when ``kl_beta > 0``. :func:`export_verl` writes the data and reward for multi-node GRPO on verl.

>>> [round(a, 3) for a in group_advantages(torch.tensor([[1.5, 0.5, 0.5, 1.5]]))[0].tolist()]
[1.0, -1.0, -1.0, 1.0]
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from qsave.data.records import TrainingRecord, load_records
from qsave.errors import AnnotationError, ConfigError
from qsave.jsonl import JsonlWriter, read_jsonl, write_jsonl
from qsave.prompts import AnswerFormat
from qsave.spec import ScorerSpec
from qsave.train.common import (
    END_OF_TURN,
    VideoCache,
    load_for_training,
    prompt_messages,
    save_model,
    use_bf16,
    user_text,
)
from qsave.train.config import GRPOConfig, ModelConfig
from qsave.train.rewards import reward_components
from qsave.video.inputs import VideoConfig, processor_video_kwargs

ADV_EPS = 1e-4  # ε in the advantage's denominator: a group with equal rewards gets A = 0


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
def group_advantages(rewards: torch.Tensor, eps: float = ADV_EPS) -> torch.Tensor:
    """(P, G) rewards → advantages normalised within each group (population std)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_epsilon: float = 0.2, ref_logp: torch.Tensor | None = None, kl_beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped ratio objective (+ β·KL). Token tensors (N, T); advantages (N,)."""
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
    lengths = mask.sum(dim=1).clamp_min(1)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    clipped = ((ratio - 1).abs() > clip_epsilon).to(logp.dtype)
    stats = {"loss": loss.item(), "kl": ((kl * mask).sum() / mask.sum().clamp_min(1)).item(),
             "clip_fraction": ((clipped * mask).sum() / mask.sum().clamp_min(1)).item()}
    return loss, stats


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
                      videos: VideoCache, config: GRPOConfig, device: torch.device
                      ) -> RolloutBatch:
    """G sampled completions per record (record-major), with the inputs to score them."""
    tokenizer = processor.tokenizer
    texts, prepared = prompt_texts(processor, records, videos)
    g = config.num_generations
    texts = [t for t in texts for _ in range(g)]
    prepared = [p for p in prepared for _ in range(g)]
    batch = processor(text=texts, **processor_video_kwargs(prepared), return_tensors="pt",
                      padding=True, padding_side="left").to(device)
    stops = [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.pad_token_id]
    out = model.generate(
        **batch, do_sample=True, temperature=config.temperature, top_p=config.top_p,
        max_new_tokens=config.max_new_tokens, eos_token_id=stops[0],
        pad_token_id=tokenizer.pad_token_id,
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


def score_rollouts(records: Sequence[TrainingRecord], rollouts: RolloutBatch, g: int,
                   fmt: AnswerFormat, format_weight: float, step: int) -> list[Rollout]:
    """Rewards and group advantages of a rollout batch (record-major groups of G)."""
    parts = [reward_components(text, records[i // g].rating, fmt, format_weight)
             for i, text in enumerate(rollouts.texts)]
    totals = torch.tensor([p["total"] for p in parts]).view(len(records), g)
    advantages = group_advantages(totals).view(-1).tolist()
    result = []
    for i, (text, p, adv) in enumerate(zip(rollouts.texts, parts, advantages, strict=True)):
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
        out += score_rollouts(part, batch, config.num_generations, fmt, config.format_weight,
                              step)
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
    (``cpu=True`` keeps the model on the CPU even where a GPU exists)."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=cpu)
    reference = None
    if config.kl_beta > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.learning_rate,
                                  betas=config.optim.betas, weight_decay=config.optim.weight_decay)
    scheduler = get_scheduler(config.optim.scheduler, optimizer, config.optim.warmup_steps,
                              config.max_steps * config.updates_per_batch)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return GRPOState(accelerator, model, processor, reference, optimizer, scheduler)


def grpo_step(state: GRPOState, records: Sequence[TrainingRecord], videos: VideoCache,
              config: GRPOConfig, fmt: AnswerFormat, step: int) -> tuple[list[Rollout], dict]:
    """Rollouts for ``records``, then ``updates_per_batch`` clipped policy updates."""
    acc, model = state.accelerator, state.model
    policy = acc.unwrap_model(model)
    policy.eval()
    rollouts = generate_rollouts(policy, state.processor, records, videos, config, acc.device)
    scored = score_rollouts(records, rollouts, config.num_generations, fmt,
                            config.format_weight, step)
    advantages = torch.tensor([r.advantage for r in scored], device=acc.device)
    with torch.no_grad():
        old = token_logprobs(model, rollouts)
        ref = token_logprobs(state.reference, rollouts) if state.reference is not None else None
    model.train()
    stats: dict[str, float] = {}
    for _ in range(config.updates_per_batch):
        logp = token_logprobs(model, rollouts)
        loss, stats = grpo_loss(logp, old, advantages, rollouts.mask, config.clip_epsilon, ref,
                                config.kl_beta)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
        state.optimizer.step()
        state.scheduler.step()
        state.optimizer.zero_grad()
    n = len(scored)
    stats.update(reward=sum(r.reward for r in scored) / n,
                 reward_accuracy=sum(r.accuracy for r in scored) / n,
                 reward_format=sum(r.format for r in scored) / n)
    return scored, stats


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
    (path / "step.json").write_text(json.dumps({"step": step}))


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
    video = VideoConfig.from_dict(config.video)
    videos = VideoCache(video)
    start = _resume(state, output_dir)
    order = random.Random(model_config.seed)
    picks = [order.sample(records, min(config.prompts_per_step, len(records)))
             for _ in range(config.max_steps)]
    for step in range(start, config.max_steps):
        scored, stats = grpo_step(state, picks[step], videos, config, answer_format, step)
        _log_rollouts(output_dir / "rollouts.jsonl", scored, start)
        if log and (step + 1) % config.logging_steps == 0:
            log(f"grpo step {step + 1}/{config.max_steps} "
                + " ".join(f"{k}={v:.4f}" for k, v in stats.items()))
        if (step + 1) % config.save_steps == 0 or step + 1 == config.max_steps:
            _save(state, output_dir, step + 1)
    model = state.accelerator.unwrap_model(state.model)
    scorer = ScorerSpec(answer_format=answer_format, video=video,
                        max_new_tokens=config.max_new_tokens)
    return save_model(model, state.processor, output_dir / "final", scorer)


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


# ---- verl export -------------------------------------------------------------------------
VERL_REWARD_FILE = '''"""Q-Save's GRPO reward for verl: R = R_acc + 0.5·R_fmt (paper Sec. 4.3).

Needs qsave importable in verl's environment (pip install qsave).
"""
from qsave.train.rewards import compute_score  # noqa: F401
'''


def export_verl(records: Sequence[TrainingRecord], out_dir: str | Path,
                answer_format: AnswerFormat = AnswerFormat.THINK_FIRST) -> dict[str, Path]:
    """Write ``train.parquet`` (verl's RL schema, the video as ``<video>`` in the prompt) and
    ``qsave_reward.py`` (``compute_score``); returns the paths and the overrides to pass."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_verl_row(i, r, answer_format) for i, r in enumerate(records)]
    data = out / "train.parquet"
    pd.DataFrame(rows).to_parquet(data, index=False)
    reward = out / "qsave_reward.py"
    reward.write_text(VERL_REWARD_FILE, encoding="utf-8")
    overrides = out / "verl_overrides.txt"
    overrides.write_text(
        f"data.train_files={data}\ncustom_reward_function.path={reward}\n"
        "custom_reward_function.name=compute_score\nalgorithm.adv_estimator=grpo\n",
        encoding="utf-8")
    return {"data": data, "reward": reward, "overrides": overrides}


def _verl_row(index: int, record: TrainingRecord, fmt: AnswerFormat) -> dict:
    text = user_text(record, next(item["text"] for m in record.messages if m["role"] == "user"
                                  for item in m["content"] if item.get("type") == "text"))
    return {
        "data_source": "qsave",
        "prompt": [{"role": "user", "content": "<video>" + text}],
        "videos": [{"video": record.video}],
        "ability": f"video_quality/{record.dimension}",
        "reward_model": {"style": "rule", "ground_truth": record.rating},
        "extra_info": {"index": index, "id": record.id, "dimension": record.dimension,
                       "answer_format": fmt.value, "mos": record.mos},
    }
