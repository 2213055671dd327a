"""One config dataclass per training stage (paper Sec. 4.2.3, 4.3), loadable from YAML/JSON.

The defaults are the paper's App. A values where it gives one (docs/paper-map.md lists each
with its key): SFT AdamW lr 5e-6, warm-up ratio 0.03, 3 epochs, effective batch 8, α = β = 1,
bf16; GRPO lr 2e-6, 256 prompts per step, G = 8, 32 steps, λ = 0.5. Where the paper is silent
the default follows verl (the paper's GRPO framework, Sec. 4.3) or transformers, and says so.

>>> cfg = TrainConfig.from_mapping({"output_dir": "runs/x", "sft": {"records": "r.jsonl"}})
>>> cfg.sft.alpha, cfg.sft.beta, cfg.grpo.format_weight
(1.0, 1.0, 0.5)
>>> TrainConfig.from_mapping({"output_dir": "o", "sft": {"lr": 1}})
Traceback (most recent call last):
qsave.errors.ConfigError: unknown sft fields ['lr']; valid: ...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qsave.errors import ConfigError
from qsave.prompts import AnswerFormat
from qsave.train.rewards import PARSINGS

STAGES = ("sft", "grpo", "cooloff")  # the three stages, in order (Sec. 4.3)


@dataclass
class ModelConfig:
    """Which checkpoint to start from and how to adapt it."""

    model: str = "tiny"  # hub id, local directory, or "tiny" (the offline tiny Qwen3-VL)
    lora: bool = False  # LoRA (peft) instead of full fine-tuning
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.05  # LoRA dropout
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # LM modules
    freeze_vision: bool = False  # keep the vision tower fixed (LoRA trains it only if targeted)
    gradient_checkpointing: bool = False  # trade compute for memory
    bf16: bool | None = None  # None: bf16 on CUDA, fp32 on CPU
    seed: int = 0  # model seed for "tiny", and the training seed

    def __post_init__(self) -> None:
        self.lora_targets = tuple(self.lora_targets)
        if self.lora and self.lora_r < 1:
            raise ConfigError(f"lora_r ({self.lora_r}) must be at least 1")


@dataclass
class OptimConfig:
    """AdamW with warm-up and cosine decay, shared by the stages."""

    learning_rate: float = 5e-6  # peak learning rate (App. A: SFT 5e-6; GRPO sets 2e-6)
    weight_decay: float = 0.0  # AdamW weight decay (App. A: not stated; transformers' 0)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (App. A: not stated; torch's)
    max_grad_norm: float = 1.0  # gradient clipping (not stated; transformers' and verl's 1.0)
    warmup_ratio: float = 0.0  # linear warm-up as a fraction of the steps (App. A SFT: 0.03)
    warmup_steps: int = 0  # linear warm-up steps instead of a ratio (not both)
    scheduler: str = "cosine"  # transformers scheduler name (not stated)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate ({self.learning_rate}) must be positive")
        if not 0 <= self.warmup_ratio < 1 or self.warmup_steps < 0:
            raise ConfigError(f"warmup_ratio ({self.warmup_ratio}) must be in [0, 1) and "
                              f"warmup_steps ({self.warmup_steps}) ≥ 0")
        if self.warmup_ratio and self.warmup_steps:
            raise ConfigError(f"give warmup_ratio ({self.warmup_ratio}) or warmup_steps "
                              f"({self.warmup_steps}), not both")

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps of a run of ``total_steps`` (the ratio rounded up, as transformers).

        >>> OptimConfig(warmup_ratio=0.03).warmup(100), OptimConfig(warmup_steps=5).warmup(100)
        (3, 5)
        """
        if self.warmup_ratio:
            return math.ceil(total_steps * self.warmup_ratio)
        return self.warmup_steps


SFT_OPTIM = OptimConfig(learning_rate=5e-6, warmup_ratio=0.03)  # App. A, SFT
GRPO_OPTIM = OptimConfig(learning_rate=2e-6)  # App. A, RL (warm-up not stated; verl's 0)


def _optim(value: Any, default: OptimConfig, where: str) -> OptimConfig:
    """A stage's optimiser: the keys a config gives over the stage's own defaults."""
    if isinstance(value, OptimConfig):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    given = dict(value)
    if "warmup_steps" in given and "warmup_ratio" not in given:
        given["warmup_ratio"] = 0.0  # a config that counts steps replaces the default ratio
    return _build(OptimConfig, {**asdict(default), **given}, where)


@dataclass
class SFTConfig:
    """Stage 1 (and stage 3): α·CE + β·MSE(r̂, r), Sec. 4.2.3."""

    records: str = ""  # training records JSONL (qsave data records)
    alpha: float = 1.0  # α₁, weight of the token cross-entropy (Sec. 4.2.3, App. A: 1)
    beta: float = 1.0  # β₁, weight of the MSE of r̂ and (MOS − 1)/4 (Sec. 4.2.3, App. A: 1)
    epochs: float = 3.0  # passes over the records (App. A: 3)
    max_steps: int = -1  # > 0 overrides epochs
    effective_batch_size: int = 8  # records per optimiser step, all processes (App. A: 8)
    batch_size: int = 1  # records per process per forward pass; accumulation makes up the rest
    save_steps: int = 500  # checkpoint every N steps (resumable)
    logging_steps: int = 10  # log loss components every N steps
    optim: OptimConfig = field(default_factory=lambda: replace(SFT_OPTIM))
    video: dict = field(default_factory=dict)  # VideoConfig fields (qsave.video.inputs)
    deepspeed: str | None = None  # a DeepSpeed JSON config (ZeRO-3) for Trainer

    def __post_init__(self) -> None:
        self.optim = _optim(self.optim, SFT_OPTIM, "sft.optim")
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
            raise ConfigError(
                f"alpha ({self.alpha}) and beta ({self.beta}) must be ≥ 0, not both 0"
            )
        if self.batch_size < 1 or self.effective_batch_size < self.batch_size:
            raise ConfigError(f"batch_size ({self.batch_size}) must be ≥ 1 and at most "
                              f"effective_batch_size ({self.effective_batch_size})")

    def grad_accum(self, processes: int) -> int:
        """Accumulation steps that make ``effective_batch_size`` on ``processes`` processes.

        >>> SFTConfig().grad_accum(1), SFTConfig().grad_accum(8)
        (8, 1)
        """
        per_step = self.batch_size * processes
        if self.effective_batch_size % per_step:
            raise ConfigError(
                f"effective_batch_size ({self.effective_batch_size}) is not a multiple of "
                f"batch_size × processes ({self.batch_size} × {processes})"
            )
        return self.effective_batch_size // per_step


@dataclass
class GRPOConfig:
    """Stage 2: GRPO on the RL set with R = R_acc + 0.5·R_fmt, Sec. 4.3."""

    records: str = ""  # RL-set records JSONL (its own prompts and generators, App. C.1)
    num_generations: int = 8  # G: rollouts per prompt, one group (App. A: 8)
    prompts_per_step: int = 256  # prompts (groups) per step, all processes (App. A: batch 256)
    max_steps: int = 32  # optimisation steps (App. A: 32)
    micro_batch_size: int = 1  # prompts per generate/forward pass; gradients accumulate
    updates_per_batch: int = 1  # policy updates on each rollout batch (μ); > 1 makes clipping act
    clip_epsilon: float = 0.2  # ratio clipping ε (not stated; verl's 0.2)
    kl_beta: float = 0.0  # weight of the k3 KL to the reference (not stated; 0: no reference)
    format_weight: float = 0.5  # λ in R = R_acc + λ·R_fmt (Sec. 4.3, App. A: 0.5)
    reward_parsing: str = "strict"  # strict: the paper's format; lenient (qsave.train.rewards)
    advantage_std: str = "sample"  # group std: sample (verl, n − 1) or population (n)
    advantage_eps: float = 1e-6  # ε in (R − mean)/(std + ε) (verl's 1e-6)
    loss_aggregation: str = "token-mean"  # token-mean (verl) or seq-mean-token-mean
    logprob_dropout: str = "none"  # none: no dropout in old or new log-probs (first ratio 1);
    #                                update-only: dropout in the update pass (qsave ≤ 0.3)
    temperature: float = 1.0  # sampling temperature of the rollouts (not stated; verl's 1.0)
    top_p: float = 1.0  # nucleus sampling of the rollouts (verl's 1.0)
    max_new_tokens: int = 256  # rollout length limit (not stated)
    save_steps: int = 50  # checkpoint every N steps (resumable)
    logging_steps: int = 1  # log rewards every N steps
    optim: OptimConfig = field(default_factory=lambda: replace(GRPO_OPTIM))
    video: dict = field(default_factory=dict)  # VideoConfig fields

    def __post_init__(self) -> None:
        self.optim = _optim(self.optim, GRPO_OPTIM, "grpo.optim")
        if self.num_generations < 2:
            raise ConfigError(
                f"num_generations ({self.num_generations}) must be ≥ 2: advantages are "
                "relative to the group"
            )
        if not 0 < self.clip_epsilon < 1:
            raise ConfigError(f"clip_epsilon ({self.clip_epsilon}) must be in (0, 1)")
        if min(self.updates_per_batch, self.prompts_per_step, self.micro_batch_size) < 1:
            raise ConfigError(
                f"updates_per_batch ({self.updates_per_batch}), prompts_per_step "
                f"({self.prompts_per_step}) and micro_batch_size ({self.micro_batch_size}) "
                "must be ≥ 1"
            )
        for key, valid in (("reward_parsing", PARSINGS),
                           ("advantage_std", ("sample", "population")),
                           ("loss_aggregation", ("token-mean", "seq-mean-token-mean")),
                           ("logprob_dropout", ("none", "update-only"))):
            if getattr(self, key) not in valid:
                raise ConfigError(f"grpo.{key} {getattr(self, key)!r} is not one of "
                                  f"{', '.join(valid)}")


@dataclass
class CooloffConfig:
    """Stage 3: SFT on the correct rollouts reformatted as ``Rating<think>…</think>``."""

    min_accuracy_reward: float = 1.0  # keep rollouts with R_acc ≥ this (the correct ones)
    require_format: bool = True  # and with a non-empty rationale (R_fmt = 1)
    max_per_prompt: int = 1  # correct rollouts kept per (video, dimension)
    sft: SFTConfig = field(default_factory=SFTConfig)  # the SFT settings of stage 3

    def __post_init__(self) -> None:
        if isinstance(self.sft, dict):
            self.sft = _build(SFTConfig, self.sft, "cooloff.sft")
        if self.max_per_prompt < 1:
            raise ConfigError(f"max_per_prompt ({self.max_per_prompt}) must be ≥ 1")


@dataclass
class TrainConfig:
    """The whole pipeline: one output folder with a checkpoint per stage (resumable)."""

    output_dir: str = "runs/qsave"  # stage1-sft/, stage2-grpo/, stage3-cooloff/ go here
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    cooloff: CooloffConfig = field(default_factory=CooloffConfig)
    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST  # stages 1–2 (stage 3: rating-first)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from parsed YAML/JSON; unknown keys raise and list the valid ones."""
        values = dict(values)
        sections = {"model": ModelConfig, "sft": SFTConfig, "grpo": GRPOConfig,
                    "cooloff": CooloffConfig}
        for name, kind in sections.items():
            if name in values:
                values[name] = _build(kind, values[name] or {}, name)
        if "answer_format" in values:
            values["answer_format"] = AnswerFormat(values["answer_format"])
        return _build(cls, values, "train config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    """``kind(**values)`` with unknown keys reported by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    valid = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown {where} fields {unknown}; valid: {', '.join(sorted(valid))}")
    numbers = {f.name: f.type for f in fields(kind) if f.type in ("float", "int")}
    values = {k: _number(v, numbers[k], f"{where}.{k}") if k in numbers else v
              for k, v in values.items()}
    return kind(**values)


def _number(value: Any, kind: str, where: str) -> Any:
    """YAML 1.1 reads ``2e-5`` as a string: numbers are converted, anything else raises."""
    if isinstance(value, str):
        try:
            return float(value) if kind == "float" else int(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    return value


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a YAML or JSON training config; relative record paths resolve against its folder."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read training config {path}: {error}") from error
    config = TrainConfig.from_mapping(values)
    base = path.parent
    for section in (config.sft, config.grpo, config.cooloff.sft):
        if section.records and not Path(section.records).is_absolute():
            section.records = str(base / section.records)
        speed = getattr(section, "deepspeed", None)
        if speed and not Path(speed).is_absolute():
            section.deepspeed = str(base / speed)
    if not Path(config.output_dir).is_absolute():
        config.output_dir = str(base / config.output_dir)
    return config
