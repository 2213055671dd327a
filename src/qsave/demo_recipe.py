"""DEMO-ONLY recipe: the tiny Qwen3-VL trained through the three stages on synthetic clips.

This module is what ``qsave demo --train`` runs on a CPU in minutes. It follows the paper's
recipe (Sec. 4.3, Table 4: SFT → GRPO → cool-off SFT) with two additions that belong to the
demo only and never to the pipeline for real checkpoints (:mod:`qsave.train.pipeline`):

* **corpus design (demo-only)** — every clip has one defect per dimension at independent
  severities uniform in [0, 1] (``SynthConfig.every_dimension``), one kind per dimension
  (:data:`DEMO_KINDS`: noise, flicker, a wrong colour). A 1M-parameter model learns about one
  cue per dimension in minutes: its probe reaches held-out visual SRCC 0.97 with noise alone,
  0.15 with blur and noise, 0.15 with all five visual kinds. Its vision tower attends within
  one 2-frame temporal patch at a time, so the dynamic defect it sees best is one that shows
  within a pair (flicker). Pool and test clips all go through the H.264 encoder, which changes
  exactly the fine detail that visual defects live in.
* **vision warm-up (demo-only)** — a randomly initialised model trained with plain SFT
  collapses to the class prior (its rating no longer depends on the video). So the vision
  tower is first trained alone through a throwaway linear probe on pooled vision features
  (mean and temporal spread of the RMS-normalised per-token features) regressing the visual
  and dynamic scores, and the probe loss is kept as an extra term during the demo's SFT
  stages. The normalisation matters: on raw features the tower learnt to signal noise by the
  features' length, which the language model's RMS norms erase (probe 0.85, SFT −0.30).

The frames are the paper's SlowFast (Sec. 4.2.1). On 64×64 clips the budgets never bind, so
every frame keeps its full size; what SlowFast changes is where the runs (video items) split:
a frame that changes — noise, flicker, the moving object — starts a slow run. With
``ablation`` the warm-up and stage 1 also run from scratch on ``ablation_mode`` frames (the
same frames, one run, within each clip's SlowFast token count), Table 4's "w/o SlowFast" row.

After each stage the held-out test clips are scored and SRCC/PLCC per dimension are reported
like Table 4; stages 1–2 are read after a generated ``<think>`` analysis (their format), stage 3
rating-first without generation. The result is cached: a second run only scores.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import get_scheduler

from qsave.data.annotations import load_videos, mos_from_videos
from qsave.data.records import RecordConfig, TrainingRecord, build_records
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS, Dimension, mos_to_score
from qsave.errors import QsaveError, UnclosedAnalysisError
from qsave.eval.metrics import plcc, srcc
from qsave.evaluator import Evaluator, ScoreItem
from qsave.model.backend import TransformersBackend
from qsave.model.load import LoadedModel, rating_token_ids
from qsave.prompts import AnswerFormat
from qsave.scores import ModelInfo
from qsave.spec import ScorerSpec
from qsave.train.common import VideoCache, save_model
from qsave.train.config import CooloffConfig, GRPOConfig, OptimConfig
from qsave.train.cooloff import cooloff_records
from qsave.train.grpo import grpo_step, make_grpo_state, sample_rollouts
from qsave.train.sft import SFTCollator, sft_forward
from qsave.video.inputs import VideoConfig

PROBE_DIMS = (Dimension.VISUAL, Dimension.DYNAMIC)  # what the demo-only probe regresses
DEMO_KINDS = ("noise", "flicker", "wrong_color")  # one defect kind per dimension (module doc)
REPORT = "demo_report.json"
DEMO_BETAS = (0.9, 0.95)  # AdamW betas of every demo stage (the paper states none)
STAGE_NOTES = (
    "vision probe: the DEMO-ONLY warm-up's throwaway linear probe on pooled vision features "
    "(a diagnostic, not an evaluator score; no such stage exists for real checkpoints)",
    "1 SFT, 2 GRPO: read think-first, the rating after a generated <think> analysis",
    "3 cool-off SFT: read rating-first without generation (what `qsave score` does)",
)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's corpus and step counts; ``step_scale`` multiplies every stage's steps.

    ``step_scale`` is not a time budget: 1.0 (the recipe) takes about 9–12 minutes on 2 CPU
    cores, and data, scoring and model loading do not shrink with it (0.1 still takes minutes).
    """

    step_scale: float = 1.0  # multiplies every stage's step count (1.0: the recipe)
    seed: int = 0  # corpus, model and training seed
    n_clips: int = 240  # synthetic clips (mp4) over train / test / rl
    pool_clips: int = 1200  # a second corpus (another seed) whose train split is added
    size: int = 64  # frame size, pixels
    seconds: float = 2.0  # clip length (16 frames at 8 fps)
    kinds: tuple[str, ...] = DEMO_KINDS  # the corpus's defect kinds (see DEMO_KINDS)
    every_dimension: bool = True  # every clip: one defect per dimension at an independent
    # severity U(0, 1) (SynthConfig.every_dimension)
    warmup_steps: int = 700  # DEMO-ONLY vision warm-up steps
    warmup_lr: float = 1e-3  # its learning rate
    warmup_batch: int = 16  # clips per warm-up step
    sft_steps: int = 600  # stage 1 steps
    sft_batch: int = 6  # records per step
    lr: float = 1e-3  # AdamW lr of the SFT stages (betas 0.9/0.95, clip 1.0, cosine)
    lr_warmup: int = 100  # linear warm-up steps of the SFT stages
    probe_weight: float = 1.0  # weight of the kept probe loss during SFT (demo-only)
    grpo_steps: int = 6  # stage 2 steps
    grpo_prompts: int = 2  # prompts per GRPO step
    grpo_generations: int = 4  # G
    grpo_lr: float = 1e-4  # GRPO learning rate
    cooloff_steps: int = 250  # stage 3 steps
    cooloff_generations: int = 2  # rollouts per train/RL record to collect correct ones from
    cooloff_records: int = 600  # at most this many train/RL records are sampled from
    max_new_tokens: int = 48  # rationale length in rollouts and stage 1–2 scoring
    threads: int = 2  # torch CPU threads
    video_mode: str = "slowfast"  # frame selection (qsave.video.VideoConfig.mode), the paper's
    ablation: bool = False  # also train stage 1 w/o SlowFast at the same tokens (Table 4)
    ablation_mode: str = "uniform-matched"  # the frames of that row: all 16 at one size

    def scaled(self, steps: int) -> int:
        return max(1, round(steps * self.step_scale))

    def video(self, mode: str | None = None) -> VideoConfig:
        """The frames the model is trained and scored on (or those of ``mode``)."""
        return VideoConfig(mode=mode or self.video_mode)

    def synth(self, n: int, seed: int) -> SynthConfig:
        """The synthetic corpus design of the demo, for ``n`` clips from ``seed``."""
        return SynthConfig(n=n, seed=seed, size=self.size, seconds=self.seconds, kinds=self.kinds,
                           every_dimension=self.every_dimension)


@dataclass
class StageScore:
    """SRCC/PLCC of one stage on one dimension (held-out test clips)."""

    stage: str
    dimension: str
    srcc: float
    plcc: float
    unscored: int = 0  # test clips left out: their analysis did not close (think-first)


@dataclass
class DemoReport:
    """Per-stage correlations (Table 4 layout), timings and where the checkpoint is."""

    scores: list[StageScore] = field(default_factory=list)
    n_test: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""
    cached: bool = False
    notes: list[str] = field(default_factory=list)

    def table(self) -> Any:
        """A rich Table: one row per stage, SRCC/PLCC per dimension."""
        from rich.table import Table

        table = Table(title=f"tiny Qwen3-VL on {self.n_test} held-out synthetic clips")
        table.add_column("stage")
        for d in DIMENSIONS:
            table.add_column(f"{d.value} SRCC/PLCC", justify="right")
        for stage in dict.fromkeys(s.stage for s in self.scores):
            cells = {s.dimension: f"{s.srcc:.3f}/{s.plcc:.3f}" for s in self.scores
                     if s.stage == stage}
            table.add_row(stage, *(cells.get(d.value, "—") for d in DIMENSIONS))
        return table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- data --------------------------------------------------------------------------------
@dataclass
class DemoData:
    train: list[TrainingRecord]  # stage 1 records (think-first)
    rl: list[TrainingRecord]  # the RL set for GRPO
    test: list[TrainingRecord]  # held-out clips, scored after each stage
    videos: VideoCache


def build_data(workdir: Path, config: DemoConfig, pool: bool = True) -> DemoData:
    """Write the synthetic corpus (once per design), build the records of each split, and
    (with ``pool``) add the train split of the pool corpus, minus held-out prompts."""
    records = corpus_records(workdir / "corpus", config.synth(config.n_clips, config.seed))
    split = {s: [r for r in records if r.split == s] for s in ("train", "rl", "test")}
    train = split["train"]
    if pool and config.pool_clips > 0:
        held_out = {r.prompt for r in split["test"]}
        pool_synth = config.synth(config.pool_clips, config.seed + 1000)
        extra = corpus_records(workdir / "pool", pool_synth)
        train = train + [r for r in extra if r.split == "train" and r.prompt not in held_out]
    cache = VideoCache(config.video())
    return DemoData(train, split["rl"], split["test"], cache)


def corpus_records(folder: Path, synth: SynthConfig) -> list[TrainingRecord]:
    """The records of the corpus ``synth`` in ``folder``, written first unless the folder
    already holds that design. Every clip goes through the H.264 encoder: training clips that
    skipped it would differ from the test clips exactly where visual defects live."""
    design = folder / "synth_config.json"
    if not design.is_file() or json.loads(design.read_text()) != _jsonable(synth):
        write_corpus(folder, synth)
        design.write_text(json.dumps(_jsonable(synth)))
    videos = load_videos(folder / "manifest.jsonl")
    return build_records(videos, mos_from_videos(videos), RecordConfig()).records


def clip_targets(records: Sequence[TrainingRecord]) -> dict[str, dict[str, float]]:
    """video path → {dimension: score 0..1}."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        out.setdefault(r.video, {})[r.dimension] = mos_to_score(r.mos)
    return out


# ---- DEMO-ONLY vision warm-up ------------------------------------------------------------
class VisionProbe(torch.nn.Module):
    """Throwaway linear probe: pooled vision features → visual and dynamic scores."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2 * hidden, len(PROBE_DIMS))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(pooled))


def pooled_features(model: Any, pixel_values: torch.Tensor, grids: torch.Tensor,
                    runs_per_clip: Sequence[int]) -> torch.Tensor:
    """Per clip: mean and std over temporal patches of the spatially averaged merged vision
    features, each token RMS-normalised first as the language model's norms do, so that the
    probe only credits what the LM can read (a token's direction, not its length). (clips, 2·H)
    """
    features = model.model.get_video_features(pixel_values, grids).pooler_output
    merge = model.model.visual.spatial_merge_size ** 2
    per_run = [F.rms_norm(f, f.shape[-1:]).view(int(g[0]), int(g[1] * g[2]) // merge, -1).mean(1)
               for f, g in zip(features, grids, strict=True)]  # each (t, H)
    pooled, i = [], 0
    for n in runs_per_clip:
        steps = torch.cat(per_run[i:i + n])  # (T, H)
        pooled.append(torch.cat([steps.mean(0), steps.std(0, unbiased=False)]))
        i += n
    return torch.stack(pooled)


def probe_batch(model: Any, probe: VisionProbe, processor: Any, videos: VideoCache,
                paths: Sequence[str], targets: dict[str, dict[str, float]]) -> torch.Tensor:
    """The probe's MSE on a batch of clips."""
    prepared = [videos.get(p) for p in paths]
    frames = [v for pv in prepared for v in pv.videos]
    meta = [m for pv in prepared for m in pv.metadata]
    out = processor.video_processor(videos=frames, video_metadata=meta, do_sample_frames=False,
                                    do_resize=False, return_tensors="pt")
    pooled = pooled_features(model, out["pixel_values_videos"], out["video_grid_thw"],
                             [len(pv.videos) for pv in prepared])
    goal = torch.tensor([[targets[p][d.value] for d in PROBE_DIMS] for p in paths])
    return F.mse_loss(probe(pooled), goal)


def warm_up_vision(model: Any, processor: Any, data: DemoData, config: DemoConfig,
                   log: Any) -> VisionProbe:
    """DEMO-ONLY: train the vision tower alone through the linear probe."""
    probe = VisionProbe(model.config.vision_config.out_hidden_size)
    params = [*model.model.visual.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.warmup_lr, betas=DEMO_BETAS)
    steps = config.scaled(config.warmup_steps)
    schedule = get_scheduler("cosine", optimizer, min(50, steps // 10), steps)
    targets, paths = clip_targets(data.train), sorted(clip_targets(data.train))
    rng = random.Random(config.seed)
    model.train()
    for step in range(steps):
        loss = probe_batch(model, probe, processor, data.videos,
                           rng.sample(paths, min(config.warmup_batch, len(paths))), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if (step + 1) % 50 == 0:
            log(f"  vision warm-up (demo-only) step {step + 1}/{steps} probe mse {loss.item():.4f}")
    return probe


@torch.no_grad()
def probe_scores(model: Any, probe: VisionProbe, processor: Any, data: DemoData
                 ) -> list[StageScore]:
    """SRCC/PLCC of the probe on the test clips (a diagnostic, not an evaluator score)."""
    targets = clip_targets(data.test)
    paths = sorted(targets)
    preds = []
    for i in range(0, len(paths), 16):
        chunk = paths[i:i + 16]
        prepared = [data.videos.get(p) for p in chunk]
        out = processor.video_processor(
            videos=[v for pv in prepared for v in pv.videos],
            video_metadata=[m for pv in prepared for m in pv.metadata],
            do_sample_frames=False, do_resize=False, return_tensors="pt")
        pooled = pooled_features(model, out["pixel_values_videos"], out["video_grid_thw"],
                                 [len(pv.videos) for pv in prepared])
        preds += probe(pooled).tolist()
    truth = {d: [targets[x][d.value] for x in paths] for d in PROBE_DIMS}
    return [StageScore("vision probe (demo-only)", d.value,
                       _safe(srcc, [p[j] for p in preds], truth[d]),
                       _safe(plcc, [p[j] for p in preds], truth[d]))
            for j, d in enumerate(PROBE_DIMS)]


# ---- SFT stages (the demo's loop around qsave.train.sft) ---------------------------------
def sft_stage(model: Any, processor: Any, records: Sequence[TrainingRecord], data: DemoData,
              config: DemoConfig, fmt: AnswerFormat, steps: int, probe: VisionProbe | None,
              log: Any, name: str) -> None:
    """α·CE + β·MSE (qsave.train.sft.sft_forward) + the kept probe loss (demo-only)."""
    collator = SFTCollator(processor, rating_token_ids(processor.tokenizer, fmt), data.videos,
                           fmt)
    params = [*model.parameters(), *(probe.parameters() if probe else [])]
    optim = OptimConfig(learning_rate=config.lr, warmup_steps=config.lr_warmup, betas=DEMO_BETAS)
    optimizer = torch.optim.AdamW(params, lr=optim.learning_rate, betas=optim.betas)
    schedule = get_scheduler("cosine", optimizer, min(optim.warmup_steps, steps // 4), steps)
    targets, rng = clip_targets(data.train), random.Random(config.seed + 1)
    model.train()
    for step in range(steps):
        batch_records = rng.sample(list(records), min(config.sft_batch, len(records)))
        loss, parts = sft_forward(model, collator(batch_records), collator.rating_ids)
        if probe is not None and config.probe_weight > 0:
            paths = sorted({r.video for r in batch_records if r.video in targets})
            if paths:
                loss = loss + config.probe_weight * probe_batch(
                    model, probe, processor, data.videos, paths, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if (step + 1) % 50 == 0:
            log(f"  {name} step {step + 1}/{steps} ce {parts['ce']:.3f} mse {parts['mse']:.4f}")


# ---- scoring -----------------------------------------------------------------------------
def score_test(model: Any, processor: Any, data: DemoData, fmt: AnswerFormat, stage: str,
               config: DemoConfig) -> list[StageScore]:
    """Score the test clips through qsave's scoring pipeline in the stage's answer format
    (think-first: after a generated analysis; rating-first: score-only)."""
    spec = replace(demo_spec(config, fmt), video=data.videos.config)
    evaluator = in_memory_evaluator(model.eval(), processor, spec)
    targets = clip_targets(data.test)
    by_video = {r.video: r.prompt for r in data.test}
    paths = sorted(targets)
    items = [ScoreItem(data.videos.get(p), by_video[p], id=p) for p in paths]
    results = list(evaluator.score_many(items, explain=fmt is AnswerFormat.THINK_FIRST))
    model.train()
    failed = [r for r in results if r.error is not None]
    unclosed = [r for r in failed if r.error.type == UnclosedAnalysisError.__name__]
    if len(failed) > len(unclosed) or len(results) - len(failed) < 3:
        raise QsaveError("the demo could not score its test clips: "
                         f"{[f'{r.id}: {r.error}' for r in failed[:3]]}")
    # a stage 1–2 analysis that runs past max_new_tokens has no rating to read: that clip is
    # left out of the stage's figures, and the count is reported beside them
    kept = [(r, p) for r, p in zip(results, paths, strict=True) if r.error is None]
    preds = {d.value: [r.scores[d].score for r, _ in kept] for d in DIMENSIONS}
    truth = {d: [targets[p][d] for _, p in kept] for d in preds}
    return [StageScore(stage, d, _safe(srcc, preds[d], truth[d]), _safe(plcc, preds[d], truth[d]),
                       len(unclosed)) for d in preds]


def demo_spec(config: DemoConfig, fmt: AnswerFormat) -> ScorerSpec:
    """How the demo's model is scored after a stage, and what its checkpoint carries."""
    return ScorerSpec(answer_format=fmt, video=config.video(),
                      max_new_tokens=config.max_new_tokens)


def in_memory_evaluator(model: Any, processor: Any, spec: ScorerSpec) -> Evaluator:
    """The scoring pipeline on a model being trained (no checkpoint on disk)."""
    ids = rating_token_ids(processor.tokenizer, spec.answer_format)
    info = ModelInfo("qsave/tiny-demo (training)", None, "float32", "cpu")
    return Evaluator(TransformersBackend(LoadedModel(model, processor, ids, info), spec))


def _left_out(report: DemoReport, scores: list[StageScore]) -> list[StageScore]:
    """Note in the report how many test clips a stage's figures leave out; returns scores."""
    if scores and scores[0].unscored:
        report.notes.append(f"{scores[0].stage}: {scores[0].unscored} of {report.n_test} test "
                            "clips left out of its figures (analysis unclosed within "
                            "max_new_tokens)")
    return scores


def _logged(log: Any, scores: list[StageScore]) -> list[StageScore]:
    """Print a stage's scores as soon as they exist; returns them."""
    for s in scores:
        left_out = f" ({s.unscored} clips left out: analysis unclosed)" if s.unscored else ""
        log(f"  {s.stage} {s.dimension}: SRCC {s.srcc:.3f} PLCC {s.plcc:.3f}{left_out}")
    return scores


def _safe(metric: Any, pred: list[float], truth: list[float]) -> float:
    """A correlation, 0.0 when the predictions are constant (the collapsed case)."""
    value = metric(pred, truth) if len(set(pred)) > 1 else 0.0
    return 0.0 if math.isnan(value) else float(value)


def ablation_stage(processor: Any, data: DemoData, config: DemoConfig,
                   log: Any) -> list[StageScore]:
    """Table 4's "w/o SlowFast" row: the demo's first steps — a fresh tiny model of the same
    seed, the demo-only vision warm-up, stage 1 — on the frames of ``ablation_mode`` (the same
    8 fps frames, all at one size, within each clip's SlowFast token count), scored on the same
    test clips."""
    from qsave.model.tiny import build_tiny

    frames = replace(data, videos=VideoCache(config.video(config.ablation_mode)))
    torch.manual_seed(config.seed)
    model, _ = build_tiny(config.seed)
    probe = warm_up_vision(model, processor, frames, config, log)
    sft_stage(model, processor, frames.train, frames, config, AnswerFormat.THINK_FIRST,
              config.scaled(config.sft_steps), probe, log, "stage 1 SFT w/o SlowFast")
    return _logged(log, score_test(model, processor, frames, AnswerFormat.THINK_FIRST,
                                   f"1 SFT w/o SlowFast ({config.ablation_mode})", config))


# ---- GRPO + cool-off ---------------------------------------------------------------------
def grpo_stage(model: Any, processor: Any, data: DemoData, config: DemoConfig, log: Any) -> list:
    """Stage 2 on the RL split; returns the rollouts."""
    grpo = GRPOConfig(num_generations=config.grpo_generations, max_steps=
                      config.scaled(config.grpo_steps), prompts_per_step=config.grpo_prompts,
                      max_new_tokens=config.max_new_tokens, micro_batch_size=config.grpo_prompts,
                      optim=OptimConfig(learning_rate=config.grpo_lr, betas=DEMO_BETAS))
    state = make_grpo_state(model, processor, grpo, cpu=True)  # the demo runs on CPU
    rng, rollouts = random.Random(config.seed + 2), []
    for step in range(grpo.max_steps):
        picks = rng.sample(data.rl, min(grpo.prompts_per_step, len(data.rl)))
        scored, stats = grpo_step(state, picks, data.videos, grpo, AnswerFormat.THINK_FIRST, step)
        rollouts += scored
        log(f"  grpo step {step + 1}/{grpo.max_steps} reward {stats['reward']:.3f} "
            f"(accuracy {stats['accuracy_rate']:.3f}, format {stats['format_rate']:.3f})")
    return rollouts


def collect_rollouts(model: Any, processor: Any, data: DemoData, config: DemoConfig) -> list:
    """DEMO: a tiny RL set gives too few correct rollouts to cool off on, so the GRPO policy
    also samples ``cooloff_generations`` rollouts per RL and train record; the correct ones
    are kept (rejection sampling with the stage-2 reward)."""
    if config.cooloff_generations < 1:
        return []
    grpo = GRPOConfig(num_generations=max(2, config.cooloff_generations),
                      max_new_tokens=config.max_new_tokens)
    pool = data.rl + random.Random(config.seed + 3).sample(data.train, len(data.train))
    return sample_rollouts(model, processor, pool[: config.cooloff_records], data.videos, grpo,
                           AnswerFormat.THINK_FIRST, chunk=16)


# ---- the demo ----------------------------------------------------------------------------
def train_demo(workdir: str | Path, console: Any = None, step_scale: float = 1.0,
               config: DemoConfig | None = None) -> DemoReport:
    """Train (or load the cached result), score after each stage, print and return the table.

    The trained model (float32, ``qsave_scorer.json`` beside it) is saved to
    ``workdir/checkpoint``; :func:`qsave.demo.export_model` turns it into a shippable model
    folder (float16, provenance).
    """
    config = config or DemoConfig(step_scale=step_scale)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if console is None:
        from rich.console import Console

        console = Console()
    log = console.print
    torch.set_num_threads(config.threads)
    cached = _cached(workdir, config)
    if cached is not None:
        report = _rescore(cached, workdir, config, log)
    else:
        report = _train(workdir, config, log)
    demo_spec(config, AnswerFormat.RATING_FIRST).save(workdir / "checkpoint")
    log(report.table())
    for note in report.notes:
        log(f"note: {note}")
    return report


def _cached(workdir: Path, config: DemoConfig) -> DemoReport | None:
    path = workdir / REPORT
    if not path.is_file() or not (workdir / "checkpoint" / "config.json").is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("config") != _jsonable(config):
        return None
    report = DemoReport(**{k: v for k, v in saved.items() if k != "config"})
    report.scores = [StageScore(**s) for s in saved["scores"]]
    return report


def _jsonable(config: Any) -> Any:
    """A config dataclass as its JSON round trip (tuples become lists), for comparisons."""
    return json.loads(json.dumps(asdict(config)))


def _rescore(report: DemoReport, workdir: Path, config: DemoConfig, log: Any) -> DemoReport:
    """Second run: load the cached checkpoint and score the final stage again."""
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    log(f"cached demo model in {workdir / 'checkpoint'}: scoring only")
    model = Qwen3VLForConditionalGeneration.from_pretrained(workdir / "checkpoint")
    processor = AutoProcessor.from_pretrained(workdir / "checkpoint")
    data = build_data(workdir, config, pool=False)
    final = score_test(model, processor, data, AnswerFormat.RATING_FIRST,
                       "3 cool-off SFT (cached, re-scored)", config)
    report.scores = [s for s in report.scores if not s.stage.startswith("3")] + final
    report.cached = True
    return report


def _train(workdir: Path, config: DemoConfig, log: Any) -> DemoReport:
    from qsave.model.tiny import build_tiny

    report, clock = DemoReport(notes=list(STAGE_NOTES)), time.perf_counter()
    design = ("one defect per dimension in every clip" if config.every_dimension
              else "the generators' sparse defects")
    report.notes.insert(0, f"corpus (demo-only design): {design}, kinds "
                        f"{', '.join(config.kinds) or 'all'}")

    def lap(name: str) -> None:
        nonlocal clock
        report.seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    data = build_data(workdir, config)
    report.n_test = len({r.video for r in data.test})
    lap("data")
    torch.manual_seed(config.seed)
    model, processor = build_tiny(config.seed)
    probe = warm_up_vision(model, processor, data, config, log)
    report.scores += _logged(log, probe_scores(model, probe, processor, data))
    lap("vision warm-up (demo-only)")
    if config.ablation:
        report.scores += ablation_stage(processor, data, config, log)
        lap("warm-up and stage 1 w/o SlowFast (ablation)")
    sft_stage(model, processor, data.train, data, config, AnswerFormat.THINK_FIRST,
              config.scaled(config.sft_steps), probe, log, "stage 1 SFT")
    lap("stage 1 SFT")
    report.scores += _left_out(report, _logged(log, score_test(
        model, processor, data, AnswerFormat.THINK_FIRST, "1 SFT", config)))
    lap("score 1")
    rollouts = grpo_stage(model, processor, data, config, log)
    lap("stage 2 GRPO")
    report.scores += _left_out(report, _logged(log, score_test(
        model, processor, data, AnswerFormat.THINK_FIRST, "2 GRPO", config)))
    lap("score 2")
    rollouts += collect_rollouts(model, processor, data, config)
    lap("cool-off rollouts")
    cool = cooloff_records(rollouts, data.rl + data.train, CooloffConfig(max_per_prompt=2))
    report.notes.append(f"cool-off: {len(cool)} records from the correct ones of "
                        f"{len(rollouts)} rollouts")
    if cool:
        sft_stage(model, processor, cool, data, config, AnswerFormat.RATING_FIRST,
                  config.scaled(config.cooloff_steps), probe, log, "stage 3 cool-off")
    lap("stage 3 cool-off")
    report.scores += _logged(log, score_test(model, processor, data, AnswerFormat.RATING_FIRST,
                                             "3 cool-off SFT", config))
    lap("score 3")
    report.checkpoint = str(save_model(model, processor, workdir / "checkpoint",
                                       demo_spec(config, AnswerFormat.RATING_FIRST)))
    (workdir / REPORT).write_text(json.dumps({**report.to_dict(), "config": asdict(config)},
                                             indent=1))
    return report
