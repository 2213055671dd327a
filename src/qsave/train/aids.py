"""AIDS FOR TINY MODELS: the vision warm-up and its probe (``TrainConfig.aids``; not in the paper).

A ~1M-parameter Qwen3-VL trained from random weights with plain SFT collapses to the class
prior: its rating stops depending on the video. So, before stage 1, the vision tower is trained
alone through a throwaway linear probe on pooled vision features — the mean and temporal spread
of the RMS-normalised per-token features, and where they move — regressing each clip's visual
and dynamic scores; the probe's loss can stay as an extra term in the SFT stages
(``aids.probe_weight``). The normalisation matters: on raw features the tower learnt to signal
noise by the features' length, which the language model's RMS norms erase (probe 0.85, SFT
−0.30).

Two aids aim at text-video alignment (issue 20; docs/architecture.md, "Alignment on the tiny
model", has what they reach): ``aids.grounding_weight`` gives the probe a head that predicts
the words of the clip's prompt from the video — what a pretrained backbone already knows
(colours, shapes, counts; held-out colour accuracy of the video tokens .17 → .81) — and
``aids.mismatch_negatives`` adds alignment records asked with another clip's prompt, rated
Bad: whole-clip mismatches.

None of this runs unless a config turns it on (``configs/train-tiny-cpu.yaml``, ``qsave demo
--train``); a real checkpoint needs none of it.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import get_scheduler

from qsave.data.records import TrainingRecord, build_messages
from qsave.dimensions import MOS_MIN, RATINGS, Dimension, mos_to_score
from qsave.prompts import AnswerFormat, format_answer
from qsave.train.common import VideoCache
from qsave.train.config import TinyModelAids

PROBE_DIMS = (Dimension.VISUAL, Dimension.DYNAMIC)  # what the probe regresses
PROBE_FILE = "vision_probe.pt"  # beside a stage's checkpoints
PROBE_BETAS = (0.9, 0.95)  # AdamW betas of the warm-up
POOLS = 4  # pooled statistics per feature: mean, temporal std, and the late − early trend of
# the features' horizontal and vertical moments (where things move)
SCORE_POOLS = 2  # the scores' head reads the first two (mean, std), the issue-19 probe: the
# tiny recipe's probe stays as it was (only the grounding head reads all four)
WORD_SHARE = (0.01, 0.6)  # grounding words: in at least 1 % and at most 60 % of the prompts
MISMATCH_RATIONALE = "The video does not show what the prompt describes, throughout the video."


class VisionProbe(torch.nn.Module):
    """Throwaway linear probe on pooled vision features: the visual and dynamic scores and,
    with ``words`` (``aids.grounding_weight``), which of those words the clip's prompt uses."""

    def __init__(self, hidden: int, words: Sequence[str] = ()) -> None:
        super().__init__()
        self.words = tuple(words)
        self.linear = torch.nn.Linear(SCORE_POOLS * hidden, len(PROBE_DIMS))
        self.grounding = torch.nn.Linear(POOLS * hidden, len(self.words)) if self.words else None

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """The visual and dynamic scores (clips, 2) of pooled features (clips, POOLS · H)."""
        return torch.sigmoid(self.linear(pooled[:, :self.linear.in_features]))

    @classmethod
    def for_model(cls, model: Any, words: Sequence[str] = ()) -> VisionProbe:
        return cls(model.config.vision_config.out_hidden_size, words)

    def save(self, path: str | Path) -> Path:
        torch.save({"words": list(self.words), "state": self.state_dict()}, path)
        return Path(path)

    @classmethod
    def load(cls, model: Any, path: str | Path) -> VisionProbe:
        saved = torch.load(path, weights_only=True)
        probe = cls.for_model(model, saved["words"])
        probe.load_state_dict(saved["state"])
        return probe


def clip_targets(records: Sequence[TrainingRecord]) -> dict[str, dict[str, float]]:
    """video path → {dimension: score 0..1}, for the clips whose records give every probed
    dimension."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        out.setdefault(r.video, {})[r.dimension] = mos_to_score(r.mos)
    return {v: t for v, t in out.items() if all(d.value in t for d in PROBE_DIMS)}


def prompt_words(prompt: str | None) -> set[str]:
    """The lower-case words of a prompt."""
    return set(re.findall(r"[a-z]+", (prompt or "").lower()))


def grounding_words(records: Sequence[TrainingRecord]) -> tuple[str, ...]:
    """The words the grounding head predicts: those in a :data:`WORD_SHARE` of the clips'
    prompts (neither rare nor in nearly every prompt)."""
    prompts = clip_prompts(records)
    counts = Counter(w for p in prompts.values() for w in prompt_words(p))
    low, high = (share * len(prompts) for share in WORD_SHARE)
    return tuple(sorted(w for w, n in counts.items() if low <= n <= high))


def clip_prompts(records: Sequence[TrainingRecord]) -> dict[str, str | None]:
    """video path → its prompt."""
    return {r.video: r.prompt for r in records}


def pooled_features(model: Any, pixel_values: torch.Tensor, grids: torch.Tensor,
                    runs_per_clip: Sequence[int]) -> torch.Tensor:
    """Per clip (:data:`POOLS` · H): over the temporal patches, the mean and std of the
    spatially averaged merged vision features and the late-half − early-half change of their
    horizontal and vertical moments; each token RMS-normalised first as the language model's
    norms do, so that the probe only credits what the LM can read (a token's direction, not
    its length)."""
    features = model.model.get_video_features(pixel_values, grids).pooler_output
    merge = model.model.visual.spatial_merge_size
    steps, moments = [], []
    for f, g in zip(features, grids, strict=True):
        t, h, w = int(g[0]), int(g[1]) // merge, int(g[2]) // merge
        tokens = F.rms_norm(f, f.shape[-1:]).view(t, h, w, -1)
        ys = torch.linspace(-0.5, 0.5, h, device=f.device).view(1, h, 1, 1)
        xs = torch.linspace(-0.5, 0.5, w, device=f.device).view(1, 1, w, 1)
        steps.append(tokens.mean((1, 2)))  # (t, H)
        moments.append(torch.cat([(tokens * xs).mean((1, 2)), (tokens * ys).mean((1, 2))], -1))
    pooled, i = [], 0
    for n in runs_per_clip:
        clip = torch.cat(steps[i:i + n])  # (T, H)
        where = torch.cat(moments[i:i + n])  # (T, 2H)
        half = max(1, len(where) // 2)
        trend = where[-half:].mean(0) - where[:half].mean(0)
        pooled.append(torch.cat([clip.mean(0), clip.std(0, unbiased=False), trend]))
        i += n
    return torch.stack(pooled)


def probe_pooled(model: Any, probe: VisionProbe, processor: Any, videos: VideoCache,
                 paths: Sequence[str]) -> torch.Tensor:
    """The pooled vision features of ``paths`` (clips, POOLS · H)."""
    prepared = [videos.get(p) for p in paths]
    out = processor.video_processor(
        videos=[v for pv in prepared for v in pv.videos],
        video_metadata=[m for pv in prepared for m in pv.metadata],
        do_sample_frames=False, do_resize=False, return_tensors="pt")
    device = next(probe.parameters()).device
    return pooled_features(model, out["pixel_values_videos"].to(device),
                           out["video_grid_thw"].to(device), [len(pv.videos) for pv in prepared])


def probe_loss(model: Any, probe: VisionProbe, processor: Any, videos: VideoCache,
               paths: Sequence[str], targets: dict[str, dict[str, float]],
               prompts: dict[str, str | None] | None = None,
               grounding_weight: float = 0.0) -> torch.Tensor:
    """The probe's MSE on a batch of clips, plus ``grounding_weight`` × the binary
    cross-entropy of its prompt-word head against the words of the clips' ``prompts``."""
    pooled = probe_pooled(model, probe, processor, videos, paths)
    goal = torch.tensor([[targets[p][d.value] for d in PROBE_DIMS] for p in paths],
                        device=pooled.device)
    loss = F.mse_loss(probe(pooled), goal)
    if grounding_weight and probe.grounding is not None and prompts is not None:
        used = [prompt_words(prompts.get(p)) for p in paths]
        words = torch.tensor([[w in u for w in probe.words] for u in used],
                             dtype=pooled.dtype, device=pooled.device)
        loss = loss + grounding_weight * F.binary_cross_entropy_with_logits(
            probe.grounding(pooled), words)
    return loss


def with_mismatched_prompts(records: Sequence[TrainingRecord], share: float, seed: int
                            ) -> list[TrainingRecord]:
    """``records`` plus, for ``share`` of their alignment records, a copy asked with the prompt
    of a clip of another prompt (whose video shows none of it), rated Bad with MOS 1 and
    :data:`MISMATCH_RATIONALE` (``aids.mismatch_negatives``): whole-clip mismatches, the
    clearest alignment signal there is."""
    aligned = [r for r in records if r.dimension == Dimension.ALIGNMENT.value and r.prompt]
    prompts = sorted({r.prompt for r in aligned})
    if share <= 0 or len(prompts) < 2:
        return list(records)
    rng = random.Random(seed)
    chosen = rng.sample(aligned, min(len(aligned), round(share * len(aligned))))
    negatives = []
    for r in chosen:
        other = rng.choice(prompts)
        while other == r.prompt:
            other = rng.choice(prompts)
        fmt = AnswerFormat(r.answer_format)
        target = format_answer(RATINGS[0], MISMATCH_RATIONALE, fmt)
        negatives.append(replace(
            r, id=f"{r.id}:mismatch", prompt=other, target=target, rating=RATINGS[0],
            mos=float(MOS_MIN), score=0.0, mos_std=None, rationale_source="mismatched_prompt",
            messages=build_messages(r.video, other, Dimension.ALIGNMENT, fmt, target)))
    return [*records, *negatives]


def warm_up_vision(model: Any, processor: Any, records: Sequence[TrainingRecord],
                   videos: VideoCache, aids: TinyModelAids, seed: int, log: Any) -> VisionProbe:
    """Train the vision tower alone through a new probe (``aids.vision_warmup_*``)."""
    words = grounding_words(records) if aids.grounding_weight else ()
    probe = VisionProbe.for_model(model, words).to(next(model.parameters()).device)
    params = [*model.model.visual.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=aids.vision_warmup_lr, betas=PROBE_BETAS)
    steps = aids.vision_warmup_steps
    schedule = get_scheduler("cosine", optimizer, min(50, steps // 10), steps)
    targets, prompts = clip_targets(records), clip_prompts(records)
    paths, rng = sorted(targets), random.Random(seed)
    model.train()
    for step in range(steps):
        batch = rng.sample(paths, min(aids.vision_warmup_batch, len(paths)))
        loss = probe_loss(model, probe, processor, videos, batch, targets, prompts,
                          aids.grounding_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"sft: vision warm-up (aid for tiny models) step {step + 1}/{steps} probe loss "
                f"{loss.item():.4f}")
    return probe
