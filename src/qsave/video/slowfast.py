"""SlowFast frame selection and token budget (paper Sec. 4.2.1; Keye-VL 1.5, keye-vl-utils 1.5.2).

Frame similarity is the fraction of similar patches between a frame and the most recent slow
frame, computed on a downscaled HSV copy (OpenCV's 8-bit ``cvtColor``, the conversion
keye-vl-utils uses) cut into a grid of at most 256 patches: a patch is
similar when the cosine of the two HSV patch vectors exceeds 0.7, and patches that are
(near-)black in both frames are left out (keye-vl-utils ``get_frame_sim``). Keye's thumbnail has
28-px patches; ours keeps the same grid at half the resolution (14-px patches,
``similarity_patch``), which cut the similarity cost 4× while changing the similarities of our
benchmark clips by at most 0.004; ``similarity_patch=28`` gives keye's exact geometry.

The first frame is slow; a frame whose similarity exceeds 0.9 (Sec. 4.2.1; Appendix A lists
95 %, so it is configurable) is fast, otherwise it becomes the new slow frame (Keye's
``extract_slow_fast_frames``).

Token budget: slow frames get the largest size such that the exact number of video tokens fits
the budget, with ``T_fast = max(floor(0.3 · T_slow), min_fast_tokens)`` tokens for fast frames
(never more than ``T_slow``). Sizes are multiples of 32 px (Qwen3-VL's patch 16 × merge 2) with
the aspect ratio kept, never above the frame's own size. Qwen3-VL merges two consecutive frames
into one temporal patch, and every run of consecutive same-type frames becomes its own video item
(``qsave.video.inputs``), so a run of ``L`` frames at ``h × w`` costs ``ceil(L / 2) · (h/32) ·
(w/32)`` tokens; the budget is checked on that exact count. keye-vl-utils' binary search returns
the first size *over* its budget; ours returns the largest size within it, and the next larger
size exceeds it.

>>> fit_size(720, 1280, max_tokens=100)
(224, 416)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from qsave.errors import ConfigError

SIZE_FACTOR = 32  # Qwen3-VL: patch 16 × spatial merge 2 → one token per 32×32 pixels
TEMPORAL_PATCH = 2  # Qwen3-VL merges 2 consecutive frames into one temporal patch
KEYE_FACTOR = 28  # keye-vl-utils' IMAGE_FACTOR: similarity patches and thumbnail grid
# keye's VIDEO_MIN_TOKENS = 48 tokens of 28² px ≈ 36.75 tokens of 32² px
MIN_FAST_TOKENS = math.floor(48 * KEYE_FACTOR**2 / SIZE_FACTOR**2)  # 36


@dataclass(frozen=True)
class SlowFastConfig:
    """Slow/fast labelling and token budget (paper Sec. 4.2.1, Appendix A)."""

    frame_similarity: float = 0.9  # a frame is fast when its similarity exceeds this
    patch_similarity: float = 0.7  # a patch is similar when the HSV cosine exceeds this
    black_level: float = (
        8.0  # patches whose mean V (0–255) is below this in both frames are left out
    )
    similarity_patch: int = 14  # patch side on the thumbnail (keye: 28; see the module doc)
    similarity_max_patches: int = 256  # thumbnail grid cap (keye: 256 patches of 28 px)
    similarity_min_patches: int = 48  # thumbnail grid floor (keye: 48 patches of 28 px)
    token_budget: int = 8192  # video tokens for the whole clip (Appendix A: 8192 × 32 × 32 px)
    max_slow_tokens: int = 768  # per-frame cap for slow frames (Qwen3-VL's 768 tokens per frame)
    fast_ratio: float = 0.3  # T_fast = max(floor(fast_ratio · T_slow), min_fast_tokens)
    min_fast_tokens: int = MIN_FAST_TOKENS  # floor on fast-frame tokens (keye's 48 × 28² px)
    size_factor: int = SIZE_FACTOR  # sizes are multiples of this (patch 16 × merge 2)
    temporal_patch: int = TEMPORAL_PATCH  # frames per temporal patch

    def __post_init__(self) -> None:
        for name in ("frame_similarity", "patch_similarity", "fast_ratio"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} ({value}) must be in [0, 1]")
        for name in ("token_budget", "max_slow_tokens", "min_fast_tokens", "size_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least 1")
        if self.temporal_patch < 1 or self.similarity_patch < 1:
            raise ConfigError("temporal_patch and similarity_patch must be at least 1")

    def to_dict(self) -> dict:
        """The settings as plain values, for output records."""
        return asdict(self)


@dataclass(frozen=True)
class Run:
    """Consecutive frames of one type, ``frames[start:stop]``."""

    start: int
    stop: int
    slow: bool

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class FramePlan:
    """One sampled frame in the plan."""

    source_index: int  # index of the frame in the decoded stream
    timestamp: float  # seconds from the start of the video
    slow: bool
    size: tuple[int, int]  # (height, width) the frame is given to the model at


@dataclass(frozen=True)
class SlowFastPlan:
    """Which frames are slow, at what sizes, and the exact number of video tokens."""

    source_indices: tuple[int, ...]
    timestamps: tuple[float, ...]
    slow: tuple[bool, ...]
    similarity: tuple[float, ...]  # to the reference slow frame (1.0 for slow frames' own entry)
    slow_size: tuple[int, int]  # (height, width), multiples of size_factor
    fast_size: tuple[int, int]
    slow_tokens: int  # tokens per temporal patch at slow_size
    fast_tokens: int  # tokens per temporal patch at fast_size
    num_tokens: int  # exact video tokens of all runs, temporal padding included
    token_budget: int
    temporal_patch: int = TEMPORAL_PATCH

    @property
    def runs(self) -> list[Run]:
        return runs_of(self.slow)

    @property
    def frames(self) -> list[FramePlan]:
        return [
            FramePlan(i, t, s, self.slow_size if s else self.fast_size)
            for i, t, s in zip(self.source_indices, self.timestamps, self.slow, strict=True)
        ]

    def summary(self) -> dict:
        """Counts and sizes for output records."""
        return {
            "frames": len(self.slow),
            "slow_frames": sum(self.slow),
            "runs": len(self.runs),
            "slow_size": list(self.slow_size),
            "fast_size": list(self.fast_size),
            "num_tokens": self.num_tokens,
            "token_budget": self.token_budget,
        }


def runs_of(slow: tuple[bool, ...] | list[bool]) -> list[Run]:
    """Split labels into runs of consecutive equal values.

    >>> [(r.start, r.stop, r.slow) for r in runs_of([True, False, False, True])]
    [(0, 1, True), (1, 3, False), (3, 4, True)]
    """
    runs: list[Run] = []
    start = 0
    for i in range(1, len(slow) + 1):
        if i == len(slow) or slow[i] != slow[start]:
            runs.append(Run(start, i, bool(slow[start])))
            start = i
    return runs


# --- sizes ---------------------------------------------------------------------------------


def fit_size(
    height: int, width: int, max_tokens: int, factor: int = SIZE_FACTOR
) -> tuple[int, int]:
    """Largest (h, w), multiples of ``factor``, aspect kept, with (h/f)·(w/f) ≤ ``max_tokens``.

    Never larger than the frame rounded to the factor (Qwen's ``smart_resize`` rounding).

    >>> fit_size(48, 64, max_tokens=768)
    (64, 64)
    >>> fit_size(1080, 1920, max_tokens=1)
    (32, 32)
    """
    native_h = max(factor, round(height / factor) * factor)
    native_w = max(factor, round(width / factor) * factor)
    if native_h * native_w <= max_tokens * factor * factor:
        return native_h, native_w
    beta = math.sqrt(height * width / (max_tokens * factor * factor))
    h = max(factor, math.floor(height / beta / factor) * factor)
    w = max(factor, math.floor(width / beta / factor) * factor)
    if (h // factor) * (w // factor) > max_tokens:  # extreme aspect: one side hit the minimum
        if h >= w:
            h = max(factor, max_tokens // (w // factor) * factor)
        else:
            w = max(factor, max_tokens // (h // factor) * factor)
    return h, w


def tokens_of(size: tuple[int, int], factor: int = SIZE_FACTOR) -> int:
    """Tokens per temporal patch at ``size``: (h/f)·(w/f)."""
    return (size[0] // factor) * (size[1] // factor)


def fast_target(slow_tokens: int, config: SlowFastConfig) -> int:
    """T_fast = max(floor(ratio · T_slow), min_fast_tokens), capped at T_slow.

    >>> fast_target(768, SlowFastConfig())
    230
    """
    return min(
        slow_tokens, max(math.floor(config.fast_ratio * slow_tokens), config.min_fast_tokens)
    )


def plan_cost(runs: list[Run], slow_tokens: int, fast_tokens: int, temporal_patch: int) -> int:
    """Exact video tokens: each run is padded to a whole number of temporal patches."""
    return sum(
        math.ceil(r.length / temporal_patch) * (slow_tokens if r.slow else fast_tokens)
        for r in runs
    )


def _sizes(height: int, width: int, target: int, config: SlowFastConfig):
    slow_size = fit_size(height, width, target, config.size_factor)
    slow_tokens = tokens_of(slow_size, config.size_factor)
    fast_size = fit_size(height, width, fast_target(slow_tokens, config), config.size_factor)
    return slow_size, fast_size


def choose_sizes(
    height: int, width: int, runs: list[Run], config: SlowFastConfig
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The largest slow size (and its fast size) whose exact token count fits the budget.

    Scans every per-frame token target from ``max_slow_tokens`` down (a few hundred cheap
    evaluations), so the result is the largest that fits even where rounding to the 32-px grid
    makes the cost non-monotonic; every larger target exceeds the budget or gives the same size.
    """
    f, tp = config.size_factor, config.temporal_patch
    for target in range(config.max_slow_tokens, 0, -1):
        slow_size, fast_size = _sizes(height, width, target, config)
        cost = plan_cost(runs, tokens_of(slow_size, f), tokens_of(fast_size, f), tp)
        if cost <= config.token_budget:
            return slow_size, fast_size
    groups = plan_cost(runs, 1, 1, tp)
    raise ConfigError(
        f"token_budget ({config.token_budget}) cannot hold {sum(r.length for r in runs)} frames "
        f"in {len(runs)} runs even at 32×32 px ({groups} tokens); raise token_budget or lower "
        "max_frames"
    )


# --- similarity -----------------------------------------------------------------------------


def thumbnail_size(height: int, width: int, config: SlowFastConfig) -> tuple[int, int]:
    """Keye's similarity thumbnail: a grid of 48 to 256 patches of ``similarity_patch`` px.

    >>> thumbnail_size(1080, 1920, SlowFastConfig(similarity_patch=28))  # 12 × 21 patches
    (336, 588)
    >>> thumbnail_size(1080, 1920, SlowFastConfig())  # the same grid at half the resolution
    (168, 294)
    """
    p = config.similarity_patch
    h, w = fit_size(height, width, config.similarity_max_patches, p)
    if (h // p) * (w // p) < config.similarity_min_patches:  # upscale tiny frames like keye
        beta = math.sqrt(config.similarity_min_patches * p * p / (height * width))
        h, w = math.ceil(height * beta / p) * p, math.ceil(width * beta / p) * p
    return h, w


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB (h, w, 3) uint8 → HSV (h, w, 3) uint8 in OpenCV's ranges (H 0–180, S, V 0–255).

    ``cv2.cvtColor(..., cv2.COLOR_RGB2HSV)``, exactly what keye-vl-utils uses.

    >>> rgb_to_hsv(np.array([[[255, 0, 0], [0, 0, 255], [10, 10, 10]]], np.uint8)).tolist()
    [[[0, 255, 255], [120, 255, 255], [0, 0, 10]]]
    """
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)


@dataclass
class _PatchStats:
    """One frame's HSV patch vectors with their L2 norms and mean brightness."""

    vectors: np.ndarray  # (P, 3·p²) uint8, one row per patch, patches row-major
    norm: np.ndarray  # (P,) L2 norm of each patch vector
    bright: np.ndarray  # (P,) mean V of each patch


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of uint8 matrices, exact in integers (no float copies)."""
    dtype = np.int32 if a.shape[1] * 255**2 < 2**31 else np.int64  # int32 is ~2× faster
    return np.einsum("ij,ij->i", a, b, dtype=dtype)


def _patch_stats(thumb: np.ndarray, patch: int) -> _PatchStats:
    hsv = rgb_to_hsv(thumb)
    h, w = hsv.shape[:2]
    blocks = hsv.reshape(h // patch, patch, w // patch, patch * 3).swapaxes(1, 2)
    vectors = blocks.reshape(-1, patch * patch * 3)  # keye's patch vectors, channels interleaved
    return _PatchStats(vectors, np.sqrt(_dot(vectors, vectors)), vectors[:, 2::3].mean(axis=1))


def patch_similarity(a: _PatchStats, b: _PatchStats, config: SlowFastConfig) -> float:
    """Fraction of similar patches (cosine of HSV patch vectors > threshold), black left out.

    The patch vectors hold the values of keye's ``rearrange("c (h p1) (w p2) -> h w (c p1
    p2)")`` with the channels interleaved, which changes no dot product; the products are exact
    integers. A patch counts as black when its mean V is below ``black_level`` in both frames
    (keye drops only exactly-black patches: its L2 norm test is ``< 0.01``).
    """
    cosine = _dot(a.vectors, b.vectors) / (a.norm * b.norm + 1e-8)
    keep = (a.bright >= config.black_level) | (b.bright >= config.black_level)
    if not keep.any():
        return 1.0
    return float((cosine[keep] > config.patch_similarity).mean())


def label_thumbnails(thumbs: np.ndarray, config: SlowFastConfig = SlowFastConfig()):
    """Slow/fast labels and similarities: frame 0 is slow; similarity > threshold → fast.

    ``thumbs``: (N, h, w, 3) uint8 RGB, h and w multiples of ``similarity_patch``.
    Returns ``(slow, similarity)`` as tuples, one entry per frame. Each frame is compared with
    the most recent slow frame (paper Sec. 4.2.1; keye's ``extract_slow_fast_frames``).
    """
    labeler = Labeler(config)
    for thumb in thumbs:
        labeler.add(thumb)
    return labeler.labels()


class Labeler:
    """Streaming form of ``label_thumbnails``: label each thumbnail as it is decoded.

    Only the most recent slow frame's patch statistics are kept, so ``prepare_video`` can
    compute the similarities while the decoder threads work on the next frames.
    """

    def __init__(self, config: SlowFastConfig = SlowFastConfig()) -> None:
        self.config = config
        self.reference: _PatchStats | None = None
        self.slow: list[bool] = []
        self.similarity: list[float] = []

    def add(self, thumb: np.ndarray) -> None:
        """Label the next thumbnail ((h, w, 3) uint8 RGB) against the current slow frame."""
        current = _patch_stats(thumb, self.config.similarity_patch)
        if self.reference is None:
            sim, is_fast = 1.0, False
        else:
            sim = patch_similarity(self.reference, current, self.config)
            is_fast = sim > self.config.frame_similarity
        self.slow.append(not is_fast)
        self.similarity.append(sim)
        if not is_fast:
            self.reference = current

    def labels(self) -> tuple[tuple[bool, ...], tuple[float, ...]]:
        """``(slow, similarity)`` of the thumbnails added so far."""
        return tuple(self.slow), tuple(self.similarity)


class SizeForecast:
    """Labels each thumbnail as it is decoded and guesses its frame's planned size.

    The guess is ``choose_sizes`` for the labels so far with the last run extended to the
    expected number of frames: exact unless a new run starts later or the count is off. It lets
    ``prepare_video`` convert each frame to RGB while the decoder threads go on; a frame whose
    guess misses is converted again once the plan is made.
    """

    def __init__(self, labeler: Labeler) -> None:
        self.labeler = labeler
        self._runs = 0
        self._key: tuple | None = None
        self._sizes: tuple[tuple[int, int], tuple[int, int]] | None = None

    def __call__(
        self, thumb: np.ndarray, size: tuple[int, int], expected: int | None
    ) -> tuple[int, int] | None:
        """Label ``thumb``; the guessed display size of its frame (None: no guess)."""
        self.labeler.add(thumb)
        slow = self.labeler.slow  # including this frame's label
        self._runs += len(slow) == 1 or slow[-1] != slow[-2]
        if expected is None:
            return None
        key = (size, max(expected, len(slow)), self._runs)
        if key != self._key:
            *done, last = runs_of(slow)
            forecast = [*done, Run(last.start, key[1], last.slow)]
            try:
                self._sizes = choose_sizes(*size, forecast, self.labeler.config)
            except ConfigError:
                self._sizes = None  # make_plan raises the error with the real runs
            self._key = key
        if self._sizes is None:
            return None
        return self._sizes[0] if slow[-1] else self._sizes[1]


# --- plans ----------------------------------------------------------------------------------


def make_plan(
    size: tuple[int, int], timestamps, source_indices, slow, similarity, config: SlowFastConfig
) -> SlowFastPlan:
    """The plan for labelled frames of display ``size`` (height, width)."""
    runs = runs_of(slow)
    slow_size, fast_size = choose_sizes(size[0], size[1], runs, config)
    slow_tokens = tokens_of(slow_size, config.size_factor)
    fast_tokens = tokens_of(fast_size, config.size_factor)
    indices = range(len(slow)) if source_indices is None else source_indices
    return SlowFastPlan(
        source_indices=tuple(int(i) for i in indices),
        timestamps=tuple(float(t) for t in timestamps),
        slow=tuple(slow),
        similarity=tuple(similarity),
        slow_size=slow_size,
        fast_size=fast_size,
        slow_tokens=slow_tokens,
        fast_tokens=fast_tokens,
        num_tokens=plan_cost(runs, slow_tokens, fast_tokens, config.temporal_patch),
        token_budget=config.token_budget,
        temporal_patch=config.temporal_patch,
    )


def label_uniform(count: int):
    """Every frame slow (one run), similarity 1.0: the uniform baseline's labels."""
    return (True,) * count, (1.0,) * count


@dataclass(frozen=True)
class Mode:
    """A frame-selection mode: how the sampled frames are labelled slow or fast."""

    label: Callable  # (thumbnails or None, count, config) -> (slow, similarity)
    needs_thumbnails: bool
    streaming: Callable[[SlowFastConfig], Labeler] | None = None  # labels during decoding


MODES: dict[str, Mode] = {}


def register_mode(name: str, mode: Mode) -> Mode:
    """Add a frame-selection mode under ``name``; a name can be registered once."""
    if name in MODES:
        raise ConfigError(f"video mode {name!r} is already registered")
    MODES[name] = mode
    return mode


def get_mode(name: str) -> Mode:
    """The mode registered as ``name``; an unknown name lists the valid ones.

    >>> get_mode("slowfst")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qsave.errors.ConfigError: unknown video mode 'slowfst'; available modes = ['slowfast', ...]
    """
    if name not in MODES:
        raise ConfigError(f"unknown video mode {name!r}; available modes = {sorted(MODES)}")
    return MODES[name]


register_mode(
    "slowfast", Mode(lambda thumbs, count, config: label_thumbnails(thumbs, config), True, Labeler)
)
register_mode("uniform", Mode(lambda thumbs, count, config: label_uniform(count), False))
