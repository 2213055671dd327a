"""AIDS FOR TINY MODELS: the vision warm-up and its probe (``TrainConfig.aids``; not in the paper).

A ~1M-parameter Qwen3-VL trained from random weights with plain SFT collapses to the class
prior: its rating stops depending on the video. So, before stage 1, the vision tower is trained
alone through a throwaway linear probe on pooled vision features — the mean and temporal spread
of the RMS-normalised per-token features — regressing each clip's visual and dynamic scores;
the probe's loss can stay as an extra term in the SFT stages (``aids.probe_weight``). The
normalisation matters: on raw features the tower learnt to signal noise by the features'
length, which the language model's RMS norms erase (probe 0.85, SFT −0.30).

None of this runs unless a config turns it on (``configs/train-tiny-cpu.yaml``, ``qsave demo
--train``); a real checkpoint needs none of it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import get_scheduler

from qsave.data.records import TrainingRecord
from qsave.dimensions import Dimension, mos_to_score
from qsave.train.common import VideoCache
from qsave.train.config import TinyModelAids

PROBE_DIMS = (Dimension.VISUAL, Dimension.DYNAMIC)  # what the probe regresses
PROBE_FILE = "vision_probe.pt"  # beside a stage's checkpoints
PROBE_BETAS = (0.9, 0.95)  # AdamW betas of the warm-up


class VisionProbe(torch.nn.Module):
    """Throwaway linear probe: pooled vision features → visual and dynamic scores."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2 * hidden, len(PROBE_DIMS))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(pooled))

    @classmethod
    def for_model(cls, model: Any) -> VisionProbe:
        return cls(model.config.vision_config.out_hidden_size)

    def save(self, path: str | Path) -> Path:
        torch.save(self.state_dict(), path)
        return Path(path)

    def load(self, path: str | Path) -> VisionProbe:
        self.load_state_dict(torch.load(path, weights_only=True))
        return self


def clip_targets(records: Sequence[TrainingRecord]) -> dict[str, dict[str, float]]:
    """video path → {dimension: score 0..1}, for the clips whose records give every probed
    dimension."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        out.setdefault(r.video, {})[r.dimension] = mos_to_score(r.mos)
    return {v: t for v, t in out.items() if all(d.value in t for d in PROBE_DIMS)}


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


def probe_predict(model: Any, probe: VisionProbe, processor: Any, videos: VideoCache,
                  paths: Sequence[str]) -> torch.Tensor:
    """The probe's scores of ``paths`` (clips, len(PROBE_DIMS))."""
    prepared = [videos.get(p) for p in paths]
    out = processor.video_processor(
        videos=[v for pv in prepared for v in pv.videos],
        video_metadata=[m for pv in prepared for m in pv.metadata],
        do_sample_frames=False, do_resize=False, return_tensors="pt")
    device = next(probe.parameters()).device
    pooled = pooled_features(model, out["pixel_values_videos"].to(device),
                             out["video_grid_thw"].to(device), [len(pv.videos) for pv in prepared])
    return probe(pooled)


def probe_loss(model: Any, probe: VisionProbe, processor: Any, videos: VideoCache,
               paths: Sequence[str], targets: dict[str, dict[str, float]]) -> torch.Tensor:
    """The probe's MSE on a batch of clips."""
    predicted = probe_predict(model, probe, processor, videos, paths)
    goal = torch.tensor([[targets[p][d.value] for d in PROBE_DIMS] for p in paths],
                        device=predicted.device)
    return F.mse_loss(predicted, goal)


def warm_up_vision(model: Any, processor: Any, records: Sequence[TrainingRecord],
                   videos: VideoCache, aids: TinyModelAids, seed: int, log: Any) -> VisionProbe:
    """Train the vision tower alone through a new probe (``aids.vision_warmup_*``)."""
    probe = VisionProbe.for_model(model).to(next(model.parameters()).device)
    params = [*model.model.visual.parameters(), *probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=aids.vision_warmup_lr, betas=PROBE_BETAS)
    steps = aids.vision_warmup_steps
    schedule = get_scheduler("cosine", optimizer, min(50, steps // 10), steps)
    targets = clip_targets(records)
    paths, rng = sorted(targets), random.Random(seed)
    model.train()
    for step in range(steps):
        batch = rng.sample(paths, min(aids.vision_warmup_batch, len(paths)))
        loss = probe_loss(model, probe, processor, videos, batch, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"sft: vision warm-up (aid for tiny models) step {step + 1}/{steps} probe mse "
                f"{loss.item():.4f}")
    return probe
