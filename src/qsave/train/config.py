"""One config dataclass per training stage (paper Sec. 4.2.3, 4.3), loadable from YAML/JSON.

The defaults are the paper's App. A values where it gives one (docs/paper-map.md lists each
with its key): SFT AdamW lr 5e-6, warm-up ratio 0.03, 3 epochs, effective batch 8, α = β = 1,
bf16; GRPO lr 2e-6, 256 prompts per step, G = 8, 32 steps, λ = 0.5. Where the paper is silent
the default follows verl (the paper's GRPO framework, Sec. 4.3) or transformers, and says so.

>>> cfg = TrainConfig.from_mapping({"model": {"model": "tiny"}, "sft": {"records": "r.jsonl"}})
>>> cfg.sft.alpha, cfg.sft.beta, cfg.grpo.format_weight
(1.0, 1.0, 0.5)
>>> TrainConfig.from_mapping({"model": {"model": "tiny"}, "sft": {"lr": 1}})
Traceback (most recent call last):
qsave.errors.ConfigError: unknown sft fields ['lr']; valid: ...
>>> TrainConfig.from_mapping({"model": {"model": "tiny", "lora": "flase"}})
Traceback (most recent call last):
qsave.errors.ConfigError: model.lora must be true or false, got 'flase'

Every key is checked against its field's type before anything loads (:func:`_typed`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qsave.errors import ConfigError
from qsave.model.tiny_size import TinySize
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
    tiny: TinySize = field(default_factory=TinySize)  # the shape of "tiny" (ignored otherwise)

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
class TinyModelAids:
    """AIDS FOR TINY MODELS — what lets a ~1M-parameter Qwen3-VL trained from random weights
    learn on a CPU in minutes (``configs/train-tiny-cpu.yaml``, ``qsave demo --train``). Not in
    the paper; all off by default; never use them for a real checkpoint.

    A random tiny model trained with plain SFT collapses to the class prior (its rating stops
    depending on the video), so the vision tower is first trained alone through a throwaway
    linear probe on pooled vision features (:mod:`qsave.train.aids`), and the probe's loss can
    stay in the SFT stages. A small RL set gives too few correct GRPO rollouts to cool off on,
    so the GRPO policy can also sample rollouts on the SFT records (rejection sampling with
    the stage-2 reward).
    """

    vision_warmup_steps: int = 0  # stage 1: steps of the vision tower alone (0: off)
    vision_warmup_lr: float = 1e-3  # its AdamW learning rate (cosine, clip 1.0)
    vision_warmup_batch: int = 16  # clips per warm-up step
    probe_weight: float = 0.0  # weight of the probe's MSE kept in stages 1 and 3 (0: off)
    grounding_weight: float = 0.0  # the probe also predicts the words of the clip's prompt
    # from the video (binary cross-entropy, this weight; 0: off), in the warm-up and with
    # probe_weight: what a pretrained backbone already knows (colours, shapes, counts, motion)
    mismatch_negatives: float = 0.0  # stages 1 and 3: this share of the alignment records
    # is copied with another clip's prompt, rated Bad (whole-clip mismatches; 0: off)
    cooloff_resample: int = 0  # stage 3: rollouts per record from the GRPO policy (0: off)
    cooloff_resample_records: int = 600  # RL and SFT records sampled from, at most

    def __post_init__(self) -> None:
        if min(self.vision_warmup_steps, self.cooloff_resample, self.probe_weight,
               self.grounding_weight, self.mismatch_negatives) < 0:
            raise ConfigError("aids: steps, resample counts, weights and shares must be ≥ 0")
        if self.grounding_weight > 0 and not self.vision_warmup_steps:
            raise ConfigError("aids.grounding_weight needs aids.vision_warmup_steps > 0 (the "
                              "probe is made by the warm-up)")
        if self.probe_weight > 0 and not self.vision_warmup_steps:
            raise ConfigError("aids.probe_weight needs aids.vision_warmup_steps > 0 (the probe "
                              "is made by the warm-up)")

    @property
    def on(self) -> list[str]:
        """The aids this config turns on, by key (empty for a real-checkpoint recipe)."""
        return [f.name for f in fields(self) if f.name in AID_SWITCHES and getattr(self, f.name)]


AID_SWITCHES = ("vision_warmup_steps", "probe_weight", "grounding_weight", "mismatch_negatives",
                "cooloff_resample")


@dataclass
class StageEvalConfig:
    """Held-out records scored after each stage (SRCC/PLCC per dimension, like Table 4)."""

    records: str = ""  # records JSONL of held-out videos (e.g. the test split); "": no eval
    max_new_tokens: int | None = None  # think-first stages: analysis length (None: checkpoint's)
    device: str | None = None  # None: cuda if any, else cpu


@dataclass
class TrainConfig:
    """The whole pipeline: one output folder with a checkpoint per stage (resumable)."""

    output_dir: str = "runs/qsave"  # stage1-sft/, stage2-grpo/, stage3-cooloff/ go here
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    cooloff: CooloffConfig = field(default_factory=CooloffConfig)
    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST  # stages 1–2 (stage 3: rating-first)
    aids: TinyModelAids = field(default_factory=TinyModelAids)  # tiny models only (see class)
    eval: StageEvalConfig = field(default_factory=StageEvalConfig)  # scored after each stage

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from parsed YAML/JSON; unknown keys and wrong types raise, naming the key.
        ``model.model`` has no default: training a random tiny model by omission would be a
        silent default."""
        if not isinstance(values, dict):
            raise ConfigError(f"a training config must be a mapping, got {values!r}")
        model = values.get("model")
        if not isinstance(model, dict) or not model.get("model"):
            raise ConfigError("model.model is required: a hub id (Qwen/Qwen3-VL-8B-Instruct), a "
                              "checkpoint folder, or tiny (the offline random tiny Qwen3-VL)")
        return _build(cls, values, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON values (the resolved config a run folder keeps)."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    """``asdict`` output as YAML-safe values: enums by value, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    """``kind(**values)``, each value checked against its field's type (:func:`_typed`) and
    unknown keys reported by name; a nested section given as a mapping is built the same way
    over that field's own default (so a partial ``optim`` keeps the stage's defaults)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(kind)
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown {where or 'top-level'} fields {unknown}; valid: "
                          f"{', '.join(sorted(known))}")
    built = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict | None):
            given, default = dict(value or {}), known[key].default_factory()
            built[key] = (_optim(given, default, name) if hint is OptimConfig
                          else _build(hint, {**_shallow(default), **given}, name))
        else:
            built[key] = _typed(value, hint, name)
    return kind(**built)


def _shallow(instance: Any) -> dict[str, Any]:
    """A dataclass's fields as given (nested sections stay instances, merged by _build)."""
    return {f.name: getattr(instance, f.name) for f in fields(instance)}


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the field type ``hint`` — bool, int, float, str, X | None, tuples, dict,
    enums, nested dataclasses — or a ConfigError naming the key and the expected type. YAML
    1.1 reads ``2e-5`` as a string: such numbers are converted; ``flase`` is not a bool."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(value, inner, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, int | float) or (
                hint is int and not float(number).is_integer()):
            kind = "an integer" if hint is int else "a number"
            raise ConfigError(f"{where} must be {kind}, got {value!r}")
        return hint(number)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        items = args[:1] * len(value) if args[-1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{where} must be a list of {len(items)}, got {value!r}")
        return tuple(_typed(v, h, f"{where}[{i}]") for i, (v, h) in
                     enumerate(zip(value, items, strict=True)))
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in hint)
            raise ConfigError(f"{where} must be one of {valid}, got {value!r}") from None
    if dataclasses.is_dataclass(hint) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where} has an unsupported value {value!r}")


# file keys of a config: relative paths resolve against the config file's folder
PATH_KEYS = ("output_dir", "sft.records", "sft.deepspeed", "grpo.records",
             "cooloff.sft.deepspeed", "eval.records")


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML or JSON training config; relative paths in it resolve against its folder.
    ``overrides`` are ``dotted.key=value`` pairs (the value read as YAML) applied over it;
    their relative paths resolve against the working directory. Every path comes out
    absolute."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read training config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"training config {path} must be a mapping, got {values!r}")
    _absolute(values, path.parent)
    for pair in overrides:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. sft.records=train.jsonl), "
                              f"got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {pair!r}: the value is not YAML: {error}") from error
        _put(values, key.strip(), value)
        _absolute(values, Path.cwd(), keys=(key.strip(),))
    return TrainConfig.from_mapping(values)


def _absolute(values: dict, base: Path, keys: Sequence[str] = PATH_KEYS) -> None:
    """The file keys among ``keys`` as absolute paths (relative ones against ``base``), so the
    run folder's resolved config runs again from anywhere."""
    for key in keys:
        found = _get(values, key) if key in PATH_KEYS else None
        if isinstance(found, str) and found:
            _put(values, key, str((base / found).absolute()))


def _get(values: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(values, dict):
            return None
        values = values.get(part)
    return values


def _put(values: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        child = values.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a mapping")
        values = child
    values[last] = value
