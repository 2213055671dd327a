"""SlowFast plan + frames → Qwen3-VL processor inputs (paper Sec. 4.2.1, Fig. 3).

Each run of consecutive same-type frames becomes its own video item at its own resolution, so
slow frames keep their high resolution and fast frames their low one. A run is padded to a whole
number of temporal patches (2 frames) by repeating its last frame, which is what the processor
would do itself. Each item carries a ``transformers.VideoMetadata`` whose ``frames_indices`` are
the frames' absolute timestamps in milliseconds with ``fps = 1000``, so the processor renders
``<t seconds>`` as the mean absolute time of the two frames of each temporal patch, exactly as
Qwen3-VL does for a whole video. The processor must not resample or resize:
``do_sample_frames=False, do_resize=False``.

>>> VideoConfig(mode="uniform").decode_config().fps
2.0
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from qsave.errors import ConfigError
from qsave.video.decode import (
    DecodeConfig,
    DecodeLimits,
    SampledFrames,
    VideoInfo,
    sample_frames,
)
from qsave.video.slowfast import (
    Labeler,
    Run,
    SizeForecast,
    SlowFastConfig,
    SlowFastPlan,
    get_mode,
    make_plan,
    thumbnail_size,
)

if TYPE_CHECKING:  # transformers is imported when the first video item is built
    from transformers.video_utils import VideoMetadata

TIMESTAMP_TICKS = 1000  # VideoMetadata.fps: frames_indices are timestamps in milliseconds


@dataclass(frozen=True)
class VideoConfig:
    """The whole video preprocessing: decoding, frame selection and token budget."""

    mode: str = "slowfast"  # "slowfast" (paper); "uniform" (qwen-vl-utils' baseline at
    # uniform_fps); "uniform-matched" / "uniform-slow-size" (w/o SlowFast at its token count)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # 8 fps sampling, caps
    slowfast: SlowFastConfig = field(default_factory=SlowFastConfig)  # thresholds, budget
    uniform_fps: float = 2.0  # sampling rate of the "uniform" mode (qwen-vl-utils' default)

    def __post_init__(self) -> None:
        get_mode(self.mode)  # raises ConfigError listing the valid modes
        ConfigError.require_finite(self)
        if self.uniform_fps <= 0:
            raise ConfigError(f"uniform_fps ({self.uniform_fps}) must be positive")
        least = self.decode.max_frames  # every frame may be a run of its own, one token each
        for name in ("slow_budget", "fast_budget"):
            if getattr(self.slowfast, name) < least:
                raise ConfigError(
                    f"{name} ({getattr(self.slowfast, name)}) must be at least max_frames "
                    f"({least}): every frame may be its own run of one token"
                )

    def decode_config(self) -> DecodeConfig:
        """The decoding settings of this mode (the uniform mode samples at ``uniform_fps``)."""
        if self.mode == "uniform":
            return replace(self.decode, fps=self.uniform_fps)
        return self.decode

    def to_dict(self) -> dict:
        """Plain values for output records; ``from_dict`` reads them back."""
        return asdict(self)

    def merged(self, overrides: dict) -> VideoConfig:
        """This config with ``overrides`` (VideoConfig fields; ``decode`` and ``slowfast``
        as dicts of their own fields) applied.

        >>> VideoConfig().merged({"mode": "uniform", "decode": {"fps": 4}}).decode.fps
        4
        """
        values = self.to_dict()
        for name, value in overrides.items():
            if name in ("decode", "slowfast") and isinstance(value, dict):
                value = {**values[name], **value}
            values[name] = value
        return VideoConfig.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict) -> VideoConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ConfigError``.

        >>> VideoConfig.from_dict(VideoConfig().to_dict()) == VideoConfig()
        True
        """
        values = dict(values)
        try:
            decode = DecodeConfig(**values.pop("decode", {}))
            slowfast = SlowFastConfig(**values.pop("slowfast", {}))
            return cls(decode=decode, slowfast=slowfast, **values)
        except TypeError as error:
            raise ConfigError(f"invalid video settings {values}: {error}") from error


@dataclass
class PreparedVideo:
    """Processor-ready video items for one clip."""

    videos: list[np.ndarray]  # one (L, h, w, 3) uint8 per run, L a multiple of the temporal patch
    metadata: list[VideoMetadata]  # one per run, timestamps in milliseconds (fps = 1000)
    plan: SlowFastPlan
    num_tokens: int  # exact number of <|video_pad|> tokens the processor will produce
    settings: dict  # VideoConfig.to_dict() plus the plan summary, for output records
    info: VideoInfo | None = None


def _pad(frames: list[np.ndarray], times: list[int], temporal_patch: int):
    """Repeat the last frame (and time) up to a multiple of the temporal patch."""
    missing = -len(frames) % temporal_patch
    return frames + [frames[-1]] * missing, times + [times[-1]] * missing


def _run_item(rgb: list[np.ndarray], info: VideoInfo, plan: SlowFastPlan, run: Run):
    from transformers.video_utils import VideoMetadata

    size = plan.slow_size if run.slow else plan.fast_size
    frames = rgb[run.start : run.stop]
    ticks = [round(plan.timestamps[i] * TIMESTAMP_TICKS) for i in range(run.start, run.stop)]
    frames, ticks = _pad(frames, ticks, plan.temporal_patch)
    metadata = VideoMetadata(
        total_num_frames=info.num_frames,
        fps=float(TIMESTAMP_TICKS),
        height=size[0],
        width=size[1],
        duration=info.duration,
        video_backend="pyav",
        frames_indices=ticks,
    )
    return np.stack(frames), metadata


def plan_sampled(
    sampled: SampledFrames, config: VideoConfig, labeler: Labeler | None = None
) -> SlowFastPlan:
    """Label the sampled frames with the configured mode and size them within the budget.

    ``labeler``: the mode's streaming labeler fed during decoding; its labels are used when it
    saw exactly the kept frames (no ``max_frames`` thinning), otherwise the kept thumbnails are
    labelled again (the same function, so the labels are the same either way).
    """
    if labeler is not None and len(labeler.slow) == len(sampled.frames):
        slow, similarity = labeler.labels()
    else:
        mode = get_mode(config.mode)
        slow, similarity = mode.label(sampled.thumbnails, len(sampled.frames), config.slowfast)
    plan = make_plan(
        sampled.size, sampled.timestamps, sampled.source_indices, slow, similarity, config.slowfast
    )
    derive = get_mode(config.mode).derive
    return derive(plan, *sampled.size, config.slowfast) if derive is not None else plan


def _labelling(labeler: Labeler):
    """An ``on_sample`` callback that only labels (no early RGB conversion)."""
    return lambda thumb, size, expected: labeler.add(thumb)


def prepare_video(
    source: str | os.PathLike | BinaryIO,
    config: VideoConfig = VideoConfig(),
    limits: DecodeLimits = DecodeLimits(),  # noqa: B008 (frozen, as ruff sees in decode.py)
    cancel: threading.Event | None = None,
) -> PreparedVideo:
    """Decode, plan and build the processor's video items (raises ``VideoError`` per file;
    ``VideoLimitError`` beyond ``limits``, ``Cancelled`` once ``cancel`` is set)."""
    mode = get_mode(config.mode)
    thumbs = (lambda h, w: thumbnail_size(h, w, config.slowfast)) if mode.needs_thumbnails else None
    labeler = mode.streaming(config.slowfast) if mode.streaming and thumbs else None
    on_sample = None
    if labeler is not None:  # label while decoding; convert early unless the plan is derived
        on_sample = SizeForecast(labeler) if mode.derive is None else _labelling(labeler)
    sampled = sample_frames(
        source, config.decode_config(), thumbs, on_sample, limits=limits, cancel=cancel
    )
    plan = plan_sampled(sampled, config, labeler)
    sizes = [plan.slow_size if slow else plan.fast_size for slow in plan.slow]
    rgb = sampled.to_rgb(sizes, plan.positions)
    items = [_run_item(rgb, sampled.info, plan, run) for run in plan.runs]
    return PreparedVideo(
        videos=[video for video, _ in items],
        metadata=[metadata for _, metadata in items],
        plan=plan,
        num_tokens=plan.num_tokens,
        settings={**config.to_dict(), "plan": plan.summary()},
        info=sampled.info,
    )


def video_content(prepared: PreparedVideo) -> list[dict]:
    """Chat-message content items: one ``{"type": "video"}`` per run, in order.

    >>> video_content(PreparedVideo([np.zeros((2, 32, 32, 3), np.uint8)] * 2, [], None, 2, {}))
    [{'type': 'video'}, {'type': 'video'}]
    """
    return [{"type": "video"} for _ in prepared.videos]


def processor_video_kwargs(prepared: Sequence[PreparedVideo]) -> dict:
    """Keyword arguments for ``processor(text=..., **kwargs)``, videos flattened in order."""
    return {
        "videos": [video for item in prepared for video in item.videos],
        "video_metadata": [metadata for item in prepared for metadata in item.metadata],
        "do_sample_frames": False,
        "do_resize": False,  # sized by the plan (Sec. 4.2.1) …
        "cap_pixels_per_frame": False,  # … so no cap either (said, so transformers need not warn)
    }
