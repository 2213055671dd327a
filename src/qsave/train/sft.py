"""Stage 1 (and 3): SFT with α·CE + β·MSE(r̂, r) (paper Sec. 4.2.3, Eq. of L_SFT).

A record (``qsave.data.records``) becomes Qwen3-VL inputs through SlowFast
(``qsave.video.inputs.prepare_video``, cached per video so epochs do not decode again); the
prompt is masked from the labels, only the answer (rationale, rating, end of turn) is learned.
Rows are left padded, so every answer ends at the last position and the model's lm_head runs
only on the last ``answer_width`` positions (``logits_to_keep``) — never on the video sequence.
r̂ = Σ softmax(rating logits)·w at the rating position, regressed on r = (MOS − 1)/4.

>>> import torch
>>> logits = torch.zeros(1, 3, 8); labels = torch.tensor([[-100, 5, 2]])
>>> loss, parts = sft_loss_from_logits(logits, labels, torch.tensor([0]), (1, 2, 3, 4, 5),
...                                    torch.tensor([0.5]))
>>> round(parts["ce"], 4), parts["mse"]  # ln 8 per token; r̂ = 0.5 for uniform logits
(2.0794, 0.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from qsave.data.records import TrainingRecord, load_records
from qsave.errors import AnnotationError, ConfigError
from qsave.model.load import rating_token_ids
from qsave.model.scorer import rating_expectation
from qsave.prompts import AnswerFormat
from qsave.spec import ScorerSpec
from qsave.train.common import (
    LORA_WITH_ZERO3,
    VideoCache,
    answer_text,
    load_for_training,
    prompt_messages,
    save_model,
    use_bf16,
)
from qsave.train.config import ModelConfig, SFTConfig, TinyModelAids
from qsave.video.inputs import VideoConfig, processor_video_kwargs

IGNORE = -100  # label of masked (prompt / padding) positions
PROBE_MODULE = "qsave_vision_probe"  # the probe's name inside the model while SFT runs


# ---- inputs ------------------------------------------------------------------------------
def rating_index(answer_ids: Sequence[int], rating_ids: Sequence[int], fmt: AnswerFormat) -> int:
    """Index in the answer tokens of the rating word: first token (rating-first) or the last
    rating token (think-first, the word after ``</think>``).

    >>> rating_index([7, 3, 9], (3, 4), AnswerFormat.THINK_FIRST)
    1
    """
    hits = [i for i, t in enumerate(answer_ids) if t in rating_ids]
    if fmt is AnswerFormat.RATING_FIRST:
        return 0 if hits and hits[0] == 0 else -1
    return hits[-1] if hits else -1


def pad_left(rows: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch single-row processor outputs: text tensors left padded, video tensors joined."""
    width = max(r["input_ids"].shape[1] for r in rows)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        if key in rows[0]:
            batch[key] = torch.stack([F.pad(r[key][0], (width - r[key].shape[1], 0), value=fill)
                                      for r in rows])
    for key in ("pixel_values_videos", "video_grid_thw"):
        if key in rows[0]:
            batch[key] = torch.cat([r[key] for r in rows])
    return batch


@dataclass
class SFTCollator:
    """Records → a left-padded batch with labels, rating positions and target scores.

    Each record is encoded once (video decoding, SlowFast, processor) and kept, so later
    epochs only pad and join cached tensors.
    """

    processor: Any
    rating_ids: tuple[int, ...]
    videos: VideoCache
    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST

    def __post_init__(self) -> None:
        self._encoded: dict[str, tuple[dict[str, torch.Tensor], list[int], int]] = {}

    def encode(self, record: TrainingRecord) -> tuple[dict[str, torch.Tensor], list[int], int]:
        """(processor outputs of one record, answer token ids, rating index in the answer)."""
        if record.id in self._encoded:
            return self._encoded[record.id]
        video = self.videos.get(record.video)
        tokenizer = self.processor.tokenizer
        prompt = self.processor.apply_chat_template(
            prompt_messages(record, video, tokenizer), tokenize=False, add_generation_prompt=True
        )
        answer_part = answer_text(record, tokenizer)
        answer = tokenizer.encode(answer_part, add_special_tokens=False)
        row = dict(self.processor(text=[prompt + answer_part], **processor_video_kwargs([video]),
                                  return_tensors="pt"))
        if row["input_ids"][0, -len(answer):].tolist() != answer:
            raise AnnotationError(
                f"record {record.id}: the answer does not tokenize the same inside the prompt; "
                "check its target text"
            )
        k = rating_index(answer, self.rating_ids, self.answer_format)
        if k < 0:
            raise AnnotationError(
                f"record {record.id}: no rating token where the {self.answer_format.value} "
                f"format puts it in {record.target!r}"
            )
        self._encoded[record.id] = (row, answer, k)
        return self._encoded[record.id]

    def __call__(self, records: Sequence[TrainingRecord]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(r) for r in records]
        batch = pad_left([row for row, _, _ in encoded], self.processor.tokenizer.pad_token_id)
        width = max(len(a) for _, a, _ in encoded) + 1  # + the position predicting the 1st token
        labels = torch.full((len(records), width), IGNORE, dtype=torch.long)
        positions = torch.empty(len(records), dtype=torch.long)
        for i, (_, answer, k) in enumerate(encoded):
            labels[i, width - len(answer):] = torch.tensor(answer)
            positions[i] = width - len(answer) + k - 1  # the position predicting the rating
        batch["labels"] = labels  # (B, W): targets of the last W positions
        batch["rating_positions"] = positions  # (B,) into the last W positions
        batch["target_scores"] = torch.tensor([r.score for r in records], dtype=torch.float32)
        batch["videos"] = [r.video for r in records]  # for the tiny-model probe (aids)
        return batch


# ---- loss --------------------------------------------------------------------------------
def sft_loss_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, rating_positions: torch.Tensor,
    rating_ids: Sequence[int], target_scores: torch.Tensor, alpha: float = 1.0, beta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """α·CE(answer tokens) + β·MSE(r̂, r). ``logits`` (B, W, V) of the last W positions."""
    logits = logits.float()
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE,
    )
    rows = torch.arange(logits.shape[0], device=logits.device)
    ids = torch.tensor(list(rating_ids), device=logits.device)
    r_hat = rating_expectation(logits[rows, rating_positions][:, ids])
    mse = F.mse_loss(r_hat, target_scores.to(r_hat))
    loss = alpha * ce + beta * mse
    return loss, {"ce": ce.item(), "mse": mse.item(), "loss": loss.item()}


MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw",
              "mm_token_type_ids")


def sft_forward(model: Any, batch: dict, rating_ids: Sequence[int], alpha: float = 1.0,
                beta: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass and the SFT loss; logits only on the last ``labels.shape[1]`` positions."""
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    out = model(**inputs, logits_to_keep=batch["labels"].shape[1], use_cache=False)
    return sft_loss_from_logits(
        out.logits, batch["labels"], batch["rating_positions"], rating_ids,
        batch["target_scores"], alpha, beta,
    )


@dataclass
class ProbeTerm:
    """The tiny-model aid's probe loss added to SFT (``aids.probe_weight``, :mod:`.aids`).

    During the stage the probe is a submodule of the model (:data:`PROBE_MODULE`), so the
    Trainer optimises it, clips its gradients together with the model's and keeps it in its
    checkpoints (a resumed stage resumes the probe too); it is removed before the model is
    saved. The joint clipping matters: with the probe in its own parameter group, clipped
    apart, the tiny model's held-out visual SRCC after stage 3 was 0.18 and 0.01 (two runs),
    against 0.75–0.93 with it."""

    probe: Any  # qsave.train.aids.VisionProbe
    weight: float
    processor: Any
    videos: VideoCache
    targets: dict[str, dict[str, float]]  # clip → probed scores
    prompts: dict[str, str | None] = field(default_factory=dict)  # clip → prompt (grounding)
    grounding_weight: float = 0.0

    def loss(self, model: Any, paths: Sequence[str]) -> torch.Tensor | None:
        from qsave.train.aids import probe_loss

        clips = sorted({p for p in paths if p in self.targets})
        if not clips:
            return None
        return self.weight * probe_loss(model, self.probe, self.processor, self.videos, clips,
                                        self.targets, self.prompts, self.grounding_weight)


class QsaveSFTTrainer(Trainer):
    """transformers Trainer whose loss is α·CE + β·MSE(r̂, r) (+ the tiny-model probe term);
    components are logged."""

    def __init__(self, *args: Any, rating_ids: Sequence[int], alpha: float = 1.0,
                 beta: float = 1.0, probe: ProbeTerm | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the loss is a mean over the micro-batch, not a sum over num_items_in_batch: the
        # Trainer must divide it by the accumulation steps (it does not when it believes the
        # model normalises by num_items_in_batch, as Qwen3-VL's forward would)
        self.model_accepts_loss_kwargs = False
        self.rating_ids, self.alpha, self.beta = tuple(rating_ids), alpha, beta
        self.probe = probe
        self._parts: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, parts = sft_forward(model, inputs, self.rating_ids, self.alpha, self.beta)
        if self.probe is not None:
            extra = self.probe.loss(self.accelerator.unwrap_model(model), inputs["videos"])
            if extra is not None:
                loss = loss + extra
                parts["probe"] = extra.item()
        for key in ("ce", "mse", "probe"):
            if key in parts:
                self._parts.setdefault(key, []).append(parts[key])
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        for key, values in self._parts.items():
            if values:
                logs[f"loss_{key}"] = sum(values) / len(values)
        self._parts = {}
        super().log(logs, *args, **kwargs)


# ---- the stage ---------------------------------------------------------------------------
def training_arguments(config: SFTConfig, model_config: ModelConfig, output_dir: Path
                       ) -> TrainingArguments:
    """TrainingArguments mirroring ``SFTConfig`` (AdamW betas, clipping, warm-up, cosine);
    accumulation makes up ``effective_batch_size`` over the launcher's ``WORLD_SIZE`` processes."""
    warmup = config.optim.warmup_ratio or config.optim.warmup_steps  # < 1: a ratio
    return TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum(int(os.environ.get("WORLD_SIZE", "1"))),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps, learning_rate=config.optim.learning_rate,
        weight_decay=config.optim.weight_decay, adam_beta1=config.optim.betas[0],
        adam_beta2=config.optim.betas[1], max_grad_norm=config.optim.max_grad_norm,
        warmup_steps=warmup, lr_scheduler_type=config.optim.scheduler,
        save_steps=config.save_steps, logging_steps=config.logging_steps,
        bf16=use_bf16(model_config), seed=model_config.seed, remove_unused_columns=False,
        report_to=[], deepspeed=config.deepspeed, dataloader_num_workers=0,
        save_only_model=False, disable_tqdm=True,  # progress: LogLines, into the run's log
        use_cpu=not (torch.cuda.is_available() or config.deepspeed),  # DeepSpeed: its own device
    )


class LogLines(TrainerCallback):
    """The Trainer's logs as one line per ``logging_steps`` into the run's log."""

    def __init__(self, log: Any, name: str) -> None:
        self.log, self.name = log, name

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if state.is_world_process_zero and logs and self.log:
            shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in logs.items() if k != "epoch")
            self.log(f"{self.name} step {state.global_step}/{state.max_steps} {shown}")


def train_sft(
    config: SFTConfig, model_config: ModelConfig, output_dir: str | Path,
    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST, init: str | None = None,
    records: Sequence[TrainingRecord] | None = None, aids: TinyModelAids | None = None,
    probe_from: str | Path | None = None, probe_records: Sequence[TrainingRecord] | None = None,
    log: Any = print, name: str = "sft",
) -> Path:
    """Run SFT (resuming from the newest ``checkpoint-*`` in ``output_dir``) and save the
    model to ``output_dir/final``; returns that folder.

    Tiny-model ``aids`` (:mod:`qsave.train.aids`): before a run from the base model, the
    vision warm-up; with ``probe_weight``, the probe's loss (the warm-up's probe, or the one
    saved at ``probe_from``) on the batch's clips that ``probe_records`` (default: the
    records) give targets for is added, and the probe saved as ``output_dir/vision_probe.pt``."""
    from qsave.train.aids import (
        PROBE_FILE,
        VisionProbe,
        clip_prompts,
        clip_targets,
        warm_up_vision,
        with_mismatched_prompts,
    )

    output_dir = Path(output_dir)
    if records is None:
        records = load_records(config.records).records
    if not records:
        raise ConfigError(f"no training records for SFT in {config.records!r}")
    aids = aids or TinyModelAids()
    model, processor = load_for_training(model_config, init)
    video = VideoConfig.from_dict(config.video)
    videos = VideoCache(video)
    collator = SFTCollator(processor, rating_token_ids(processor.tokenizer, answer_format),
                           videos, answer_format)
    resume = any(output_dir.glob("checkpoint-*"))
    probe = None
    if aids.vision_warmup_steps and init is None and not resume:
        probe = warm_up_vision(model, processor, records, videos, aids, model_config.seed, log)
        probe.save(output_dir / PROBE_FILE)
    term = None
    if aids.probe_weight > 0:
        if probe is None:
            saved = output_dir / PROBE_FILE if resume else Path(probe_from or "") / PROBE_FILE
            if not saved.is_file():
                raise ConfigError(f"aids.probe_weight needs the vision probe {saved}; it is "
                                  "written by stage 1's vision warm-up")
            probe = VisionProbe.load(model, saved)
        source = records if probe_records is None else probe_records
        term = ProbeTerm(probe, aids.probe_weight, processor, videos, clip_targets(source),
                         clip_prompts(source), aids.grounding_weight)
        model.add_module(PROBE_MODULE, probe)
    trainer = QsaveSFTTrainer(
        model=model, args=training_arguments(config, model_config, output_dir),
        train_dataset=with_mismatched_prompts(records, aids.mismatch_negatives, model_config.seed),
        data_collator=collator, rating_ids=collator.rating_ids,
        alpha=config.alpha, beta=config.beta, probe=term, callbacks=[LogLines(log, name)],
    )
    trainer.remove_callback(PrinterCallback)  # LogLines prints the logs, once
    plugin = trainer.accelerator.state.deepspeed_plugin
    if model_config.lora and plugin is not None and plugin.zero_stage == 3:
        raise ConfigError(LORA_WITH_ZERO3)
    trainer.train(resume_from_checkpoint=True if resume else None)
    if term is not None:
        delattr(trainer.accelerator.unwrap_model(trainer.model_wrapped), PROBE_MODULE)
    if probe is not None and trainer.is_world_process_zero():
        probe.save(output_dir / PROBE_FILE)
    scorer = ScorerSpec(answer_format=answer_format, video=video)
    final = output_dir / "final"
    # every process (ZeRO-3 gathers the partitioned weights); the main process writes
    save_model(trainer.model_wrapped, processor, final, scorer, trainer.accelerator)
    trainer.accelerator.wait_for_everyone()
    return final
