"""Plans of whole frames in memory, for the SlowFast tests: keye-vl-utils' own thumbnail (a
torch bilinear, antialiased resize) and the library's labelling and sizing on top of it.
``prepare_video`` takes its thumbnails from the decoder instead."""

import numpy as np
import torch
import torch.nn.functional as F

from qsave.errors import ConfigError
from qsave.video.slowfast import (
    SlowFastConfig,
    SlowFastPlan,
    label_thumbnails,
    label_uniform,
    make_plan,
    thumbnail_size,
)


def thumbnails(frames: np.ndarray, config: SlowFastConfig | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, h, w, 3) uint8 at Keye's thumbnail size (bilinear, antialiased)."""
    size = thumbnail_size(frames.shape[1], frames.shape[2], config or SlowFastConfig())
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # channels-last view
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()


def _check_frames(frames: np.ndarray, timestamps) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ConfigError(f"frames must be (N>0, H, W, 3), got shape {frames.shape}")
    if len(timestamps) != len(frames):
        raise ConfigError(f"{len(timestamps)} timestamps for {len(frames)} frames")


def plan_slowfast(frames: np.ndarray, timestamps, config: SlowFastConfig | None = None,
                  source_indices=None) -> SlowFastPlan:
    """Label frames slow/fast and size them within the token budget (paper Sec. 4.2.1).

    >>> frames = np.zeros((5, 64, 96, 3), np.uint8); frames[:, :, :48] = 200
    >>> frames[3:, :, 48:] = 120  # a cut at frame 3
    >>> plan = plan_slowfast(frames, [0, 0.125, 0.25, 0.375, 0.5])
    >>> plan.references  # the frames that start a new slow frame
    (True, False, False, True, False)
    >>> plan.slow, [(r.start, r.stop) for r in plan.runs], plan.slow_size, plan.num_tokens
    ((True, True, True, True, False), [(0, 4), (4, 5)], (64, 96), 18)
    """
    _check_frames(frames, timestamps)
    config = config or SlowFastConfig()
    slow, similarity = label_thumbnails(thumbnails(frames, config), config)
    size = (frames.shape[1], frames.shape[2])
    return make_plan(size, timestamps, source_indices, slow, similarity, config)


def plan_uniform(frames: np.ndarray, timestamps, config: SlowFastConfig | None = None,
                 source_indices=None) -> SlowFastPlan:
    """All frames in one run at one size within the budget (the "w/o SlowFast" baseline)."""
    _check_frames(frames, timestamps)
    config = config or SlowFastConfig()
    slow, similarity = label_uniform(len(frames))
    size = (frames.shape[1], frames.shape[2])
    return make_plan(size, timestamps, source_indices, slow, similarity, config)
