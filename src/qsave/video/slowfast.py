"""SlowFast frame selection and token budgets (paper Sec. 4.2.1, Appendix A).

The first sampled frame is slow; each later frame is compared with the most recent slow frame,
and it is fast when their *frame similarity* — the fraction of similar patches, on a thumbnail
cut into at most 256 patches of ``similarity_patch`` px — exceeds ``frame_similarity`` (0.9,
Sec. 4.2.1; Appendix A's 0.95 is one setting away); otherwise it becomes the new slow frame.

Which patches are similar is a registered measure (``SIMILARITIES``):

* ``ncc`` (default): the normalised cross-correlation (mean-centred cosine) of the two patches'
  RGB values above ``patch_correlation``; flat patches, which have no correlation, compare by
  colour. Chosen by measurement on clips with known events (``tests/video/test_events.py``):
  a slow frame at every hard cut and colour inversion, every frame of a random-noise segment
  slow, exactly one slow frame in a static shot and under a small moving object, more slow
  frames for a fast pan than a slow one.
* ``keye``: keye-vl-utils' ``get_frame_sim`` — the plain cosine of uint8 HSV patch vectors
  above 0.7, black patches left out. Vectors with only non-negative entries almost always have
  a cosine above 0.7 (two independent noise patches ≈ 0.75), so it finds none of the events
  above: every generated clip gets a single slow frame. Kept for comparison.

Keye's thumbnail has a grid of at most 256 patches of 28 px; ours keeps the same grid at a
quarter of the resolution (7-px patches, box-blurred over 5 px for ``ncc``), which the decoder
makes cheaply; ``similarity="keye", similarity_patch=28`` is keye's exact rule.

Qwen3-VL encodes two consecutive frames as one temporal patch, so labels are applied in whole
patches: the frame that starts a new slow frame (``SlowFastPlan.references``) makes its patch
slow (:func:`whole_patches`); the patch's other frame then costs no more than the padded copy of
the slow frame that would otherwise end the run, and the motion inside the patch is kept.

Budgets (Appendix A, "8192/2048 × 32 × 32"): slow frames share ``slow_budget`` = 8192 tokens
and fast frames ``fast_budget`` = 2048 tokens (a token is a 32×32-px patch: Qwen3-VL's patch 16
× spatial merge 2). Each kind is given the largest size, a multiple of 32 px with the aspect
kept, whose exact token count fits its budget; slow frames at most ``max_slow_tokens`` (768)
each, fast frames never larger than slow ones, never above the frame's own size. Every run of
consecutive same-type frames is its own video item (``qsave.video.inputs``), so a run of ``L``
frames at ``h × w`` costs ``ceil(L / 2) · (h/32) · (w/32)`` tokens; the budgets are checked on
that exact count.

The "w/o SlowFast" ablation of Table 4 compares at a fixed budget with the modes
``uniform-matched`` (the same 8 fps frames, all at one size, within the SlowFast plan's token
count) and ``uniform-slow-size`` (evenly spread frames at the slow size, as many as that count
pays for); ``uniform`` is qwen-vl-utils' own baseline (2 fps, ``slow_budget``).

>>> fit_size(720, 1280, max_tokens=100)
(224, 416)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np

from qsave.errors import ConfigError
from qsave.registry import Registry

SIZE_FACTOR = 32  # Qwen3-VL: patch 16 × spatial merge 2 → one token per 32×32 pixels
TEMPORAL_PATCH = 2  # Qwen3-VL merges 2 consecutive frames into one temporal patch


@dataclass(frozen=True)
class SlowFastConfig:
    """Slow/fast labelling and token budget (paper Sec. 4.2.1, Appendix A)."""

    frame_similarity: float = 0.9  # a frame is fast when its similarity exceeds this
    similarity: str = "ncc"  # the patch measure: "ncc" or "keye" (SIMILARITIES)
    patch_correlation: float = 0.5  # ncc: textured patches are similar above this correlation
    similarity_blur: int = 5  # ncc: box blur (thumbnail px) first, so that a few pixels of
    # camera shake or fine texture do not count as new content
    flat_std: float = 4.0  # ncc: a patch whose std (0–255) is below this is flat …
    flat_tolerance: float = 12.0  # … and is similar to a patch of std < 2·flat_std whose
    # channel means differ by at most this (0–255)
    patch_similarity: float = 0.7  # keye: a patch is similar when the HSV cosine exceeds this
    black_level: float = (
        8.0  # keye: patches whose mean V (0–255) is below this in both frames are left out
    )
    similarity_patch: int = 7  # patch side on the thumbnail (keye: 28; see the module doc)
    similarity_max_patches: int = 256  # thumbnail grid cap (keye: 256 patches of 28 px)
    similarity_min_patches: int = 48  # thumbnail grid floor (keye: 48 patches of 28 px)
    slow_budget: int = 8192  # video tokens of all slow frames (Appendix A: 8192 × 32 × 32 px)
    fast_budget: int = 2048  # video tokens of all fast frames (Appendix A: 2048 × 32 × 32 px)
    max_slow_tokens: int = 768  # per-frame cap (Qwen3-VL's 768 tokens per frame); fast frames
    # are never larger than slow ones
    size_factor: int = SIZE_FACTOR  # sizes are multiples of this (patch 16 × merge 2)
    temporal_patch: int = TEMPORAL_PATCH  # frames per temporal patch

    def __post_init__(self) -> None:
        SIMILARITIES.lookup(self.similarity)  # an unknown measure lists the valid ones
        ConfigError.require_finite(self)
        for name in ("frame_similarity", "patch_similarity"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} ({value}) must be in [0, 1]")
        for name in ("slow_budget", "fast_budget", "max_slow_tokens", "size_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least 1")
        if self.temporal_patch < 1 or self.similarity_patch < 1 or self.similarity_blur < 1:
            raise ConfigError("temporal_patch, similarity_patch and similarity_blur must be at "
                              "least 1")

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
    slow: tuple[bool, ...]  # whole temporal patches: a reference frame and its patch mates
    similarity: tuple[float, ...]  # to the reference slow frame (1.0 for the first frame)
    slow_size: tuple[int, int]  # (height, width), multiples of size_factor
    fast_size: tuple[int, int]
    slow_tokens: int  # tokens per temporal patch at slow_size
    fast_tokens: int  # tokens per temporal patch at fast_size
    num_tokens: int  # exact video tokens of all runs, temporal padding included
    slow_budget: int  # what the slow frames' tokens had to fit
    fast_budget: int  # what the fast frames' tokens had to fit
    positions: tuple[int, ...]  # which of the sampled frames the plan keeps (all but in
    # uniform-slow-size)
    references: tuple[bool, ...]  # frames that became the reference slow frame (similarity
    # at or below frame_similarity), before their patch mates joined them
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
            "new_slow_frames": sum(self.references),
            "runs": len(self.runs),
            "slow_size": list(self.slow_size),
            "fast_size": list(self.fast_size),
            "slow_tokens": self.slow_tokens,
            "fast_tokens": self.fast_tokens,
            "num_tokens": self.num_tokens,
            "slow_budget": self.slow_budget,
            "fast_budget": self.fast_budget,
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


@functools.lru_cache(maxsize=1 << 14)
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


def run_cost(runs: list[Run], slow: bool, tokens: int, temporal_patch: int) -> int:
    """Tokens of the runs of one type (slow or fast) at ``tokens`` per temporal patch."""
    return plan_cost([r for r in runs if r.slow == slow], tokens, tokens, temporal_patch)


def plan_cost(runs: list[Run], slow_tokens: int, fast_tokens: int, temporal_patch: int) -> int:
    """Exact video tokens: each run is padded to a whole number of temporal patches."""
    return sum(
        math.ceil(r.length / temporal_patch) * (slow_tokens if r.slow else fast_tokens)
        for r in runs
    )


def largest_size(height: int, width: int, patches: int, budget: int, cap: int,
                 factor: int = SIZE_FACTOR, targets: int | None = None) -> tuple[int, int] | None:
    """The frame size with the most tokens (at most ``cap``) whose ``patches`` temporal
    patches fit ``budget`` tokens, among the sizes ``fit_size`` gives for targets up to
    ``targets`` (default ``cap``); None when even one token per frame does not fit.

    Rounding to the 32-px grid makes tokens non-monotonic in the target, so every target is
    tried from the top until no smaller one can beat the best size found (a target of ``t``
    gives at most ``t`` tokens): a few hundred cheap evaluations at most.

    >>> largest_size(720, 1280, patches=10, budget=2048, cap=768)  # 10 × 190 tokens
    (320, 608)
    """
    best, best_tokens = None, 0
    for target in range(targets or cap, 0, -1):
        if target <= best_tokens:
            break
        size = fit_size(height, width, target, factor)
        tokens = tokens_of(size, factor)
        if best_tokens < tokens <= cap and patches * tokens <= budget:
            best, best_tokens = size, tokens
    return best


def choose_sizes(
    height: int, width: int, runs: list[Run], config: SlowFastConfig
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The slow and the fast frame size (Appendix A: "8192/2048 × 32 × 32"): slow frames share
    ``slow_budget`` tokens and fast frames ``fast_budget``, each at the largest size (aspect
    kept, a multiple of 32 px) whose exact token count fits its budget; slow frames at most
    ``max_slow_tokens`` each, fast frames never larger than slow ones."""
    f, tp = config.size_factor, config.temporal_patch
    slow_patches = run_cost(runs, True, 1, tp)
    fast_patches = run_cost(runs, False, 1, tp)
    slow_size = largest_size(height, width, slow_patches, config.slow_budget,
                             config.max_slow_tokens, f)
    fast_size = slow_size and largest_size(height, width, fast_patches, config.fast_budget,
                                           tokens_of(slow_size, f), f, config.max_slow_tokens)
    if slow_size is None or fast_size is None:
        raise ConfigError(
            f"the budgets (slow_budget {config.slow_budget}, fast_budget {config.fast_budget}) "
            f"cannot hold {sum(r.length for r in runs)} frames in {len(runs)} runs even at "
            f"32×32 px ({slow_patches} slow and {fast_patches} fast temporal patches); raise "
            "the budgets or lower max_frames"
        )
    return slow_size, fast_size


# --- similarity -----------------------------------------------------------------------------


def thumbnail_size(height: int, width: int, config: SlowFastConfig) -> tuple[int, int]:
    """Keye's similarity thumbnail: a grid of 48 to 256 patches of ``similarity_patch`` px.

    >>> thumbnail_size(1080, 1920, SlowFastConfig(similarity_patch=28))  # 12 × 21 patches
    (336, 588)
    >>> thumbnail_size(1080, 1920, SlowFastConfig())  # the same grid at a quarter of it
    (84, 147)
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


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of uint8 matrices, exact in integers (no float copies)."""
    dtype = np.int32 if a.shape[1] * 255**2 < 2**31 else np.int64  # int32 is ~2× faster
    return np.einsum("ij,ij->i", a, b, dtype=dtype)


def _patches(image: np.ndarray, patch: int) -> np.ndarray:
    """(P, p·p·C) uint8: one row per patch (row-major), channels interleaved (keye's vectors)."""
    h, w, c = image.shape
    blocks = image.reshape(h // patch, patch, w // patch, patch * c).swapaxes(1, 2)
    return blocks.reshape(-1, patch * patch * c)


@dataclass(frozen=True)
class Measure:
    """A frame-similarity measure: per-frame patch statistics, and the fraction of similar
    patches between two frames' statistics (Sec. 4.2.1)."""

    stats: Callable[[np.ndarray, SlowFastConfig], Any]  # (thumbnail (h, w, 3) uint8, config)
    fraction: Callable[[Any, Any, SlowFastConfig], float]  # (reference, frame, config)


SIMILARITIES: Registry[Measure] = Registry("frame similarity")


@dataclass
class _Moments:
    """One frame for ``ncc``: its pixels and, per patch, the first and second moments."""

    pixels: np.ndarray  # (h, w, 3) float32
    mean: np.ndarray  # (gh, gw) mean of the patch's values (all channels)
    var: np.ndarray  # (gh, gw) variance of the patch's values
    colour: np.ndarray  # (gh, gw, 3) mean of each channel


def _block_means(image: np.ndarray, patch: int) -> np.ndarray:
    """Per-patch means of an (h, w, c) float32 image whose sides are multiples of ``patch``
    (OpenCV's area resize: exact block averages)."""
    h, w = image.shape[:2]
    return cv2.resize(image, (w // patch, h // patch), interpolation=cv2.INTER_AREA)


def _moments(thumb: np.ndarray, config: SlowFastConfig) -> _Moments:
    k = config.similarity_blur
    pixels = (cv2.blur(thumb, (k, k)) if k > 1 else thumb).astype(np.float32)
    colour = _block_means(pixels, config.similarity_patch)
    squares = _block_means(pixels * pixels, config.similarity_patch)
    mean = colour.mean(axis=2)
    return _Moments(pixels, mean, np.maximum(squares.mean(axis=2) - mean * mean, 0.0), colour)


def ncc_fraction(a: _Moments, b: _Moments, config: SlowFastConfig) -> float:
    """Fraction of similar patches by normalised cross-correlation (mean-centred cosine).

    Two textured patches are similar when the correlation of their RGB values exceeds
    ``patch_correlation``: a cut, an inversion or fresh noise gives a correlation near or below
    0, the same content a little moved stays high. A flat patch (std below ``flat_std``) has no
    correlation to speak of: it is similar to a patch that is (almost) flat too (std below
    2·``flat_std``) with the same colour (every channel mean within ``flat_tolerance``).
    """
    cross = _block_means(a.pixels * b.pixels, config.similarity_patch).mean(axis=2)
    correlation = (cross - a.mean * b.mean) / np.sqrt(np.maximum(a.var * b.var, 1e-12))
    flat = np.minimum(a.var, b.var) < config.flat_std**2
    calm = np.maximum(a.var, b.var) < (2 * config.flat_std) ** 2
    close = np.abs(a.colour - b.colour).max(axis=2) <= config.flat_tolerance
    similar = np.where(flat, calm & close, correlation > config.patch_correlation)
    return float(similar.mean())


@dataclass
class _PatchStats:
    """keye: one frame's HSV patch vectors with their L2 norms and mean brightness."""

    vectors: np.ndarray  # (P, 3·p²) uint8, one row per patch, patches row-major
    norm: np.ndarray  # (P,) L2 norm of each patch vector
    bright: np.ndarray  # (P,) mean V of each patch


def _patch_stats(thumb: np.ndarray, config: SlowFastConfig) -> _PatchStats:
    vectors = _patches(rgb_to_hsv(thumb), config.similarity_patch)
    return _PatchStats(vectors, np.sqrt(_dot(vectors, vectors)), vectors[:, 2::3].mean(axis=1))


def patch_similarity(a: _PatchStats, b: _PatchStats, config: SlowFastConfig) -> float:
    """keye: fraction of similar patches (cosine of HSV patch vectors > threshold), black left
    out.

    The patch vectors hold the values of keye's ``rearrange("c (h p1) (w p2) -> h w (c p1
    p2)")`` with the channels interleaved, which changes no dot product; the products are exact
    integers. A patch counts as black when its mean V is below ``black_level`` in both frames
    (keye drops only exactly-black patches: its L2 norm test is ``< 0.01``). Vectors with only
    non-negative entries have a high cosine almost always (two independent noise patches ≈ 0.75),
    so this rule rarely finds a new slow frame; it is kept for comparison.
    """
    cosine = _dot(a.vectors, b.vectors) / (a.norm * b.norm + 1e-8)
    keep = (a.bright >= config.black_level) | (b.bright >= config.black_level)
    if not keep.any():
        return 1.0
    return float((cosine[keep] > config.patch_similarity).mean())


SIMILARITIES.add("ncc", Measure(_moments, ncc_fraction))
SIMILARITIES.add("keye", Measure(_patch_stats, patch_similarity))


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
        self.measure = SIMILARITIES.lookup(config.similarity)
        self.reference: Any = None
        self.slow: list[bool] = []
        self.similarity: list[float] = []

    def add(self, thumb: np.ndarray) -> None:
        """Label the next thumbnail ((h, w, 3) uint8 RGB) against the current slow frame."""
        current = self.measure.stats(thumb, self.config)
        if self.reference is None:
            sim, is_fast = 1.0, False
        else:
            sim = self.measure.fraction(self.reference, current, self.config)
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
        self._key: tuple | None = None
        self._sizes: tuple[tuple[int, int], tuple[int, int]] | None = None

    def __call__(
        self, thumb: np.ndarray, size: tuple[int, int], expected: int | None
    ) -> tuple[int, int] | None:
        """Label ``thumb``; the guessed display size of its frame (None: no guess)."""
        self.labeler.add(thumb)
        slow = self.labeler.slow  # including this frame's label
        if expected is None:
            return None
        patches = whole_patches(slow, self.labeler.config.temporal_patch)
        runs = runs_of(patches)
        key = (size, max(expected, len(slow)), len(runs))
        if key != self._key:
            *done, last = runs
            forecast = [*done, Run(last.start, key[1], last.slow)]
            try:
                self._sizes = choose_sizes(*size, forecast, self.labeler.config)
            except ConfigError:
                self._sizes = None  # make_plan raises the error with the real runs
            self._key = key
        if self._sizes is None:
            return None
        return self._sizes[0] if patches[-1] else self._sizes[1]


# --- plans ----------------------------------------------------------------------------------


def whole_patches(slow, temporal_patch: int = TEMPORAL_PATCH) -> tuple[bool, ...]:
    """Labels in whole temporal patches: a patch is slow when any of its frames is.

    Qwen3-VL encodes the ``temporal_patch`` frames of a patch together, and every run is its own
    video item, so a run that ended inside a patch would be padded with a copy of its last frame
    at the same token cost; the patch's real next frame, at the slow size, costs nothing more
    and keeps the motion between the two frames.

    >>> whole_patches([True, False, False, False, False, True, False])
    (True, True, False, False, True, True, False)
    """
    return tuple(any(slow[i - i % temporal_patch:i - i % temporal_patch + temporal_patch])
                 for i in range(len(slow)))


def make_plan(
    size: tuple[int, int], timestamps, source_indices, slow, similarity, config: SlowFastConfig
) -> SlowFastPlan:
    """The plan for labelled frames of display ``size`` (height, width); a temporal patch with
    a slow frame is slow as a whole (:func:`whole_patches`)."""
    references, slow = tuple(slow), whole_patches(slow, config.temporal_patch)
    runs = runs_of(slow)
    slow_size, fast_size = choose_sizes(size[0], size[1], runs, config)
    slow_tokens = tokens_of(slow_size, config.size_factor)
    fast_tokens = tokens_of(fast_size, config.size_factor)
    indices = range(len(slow)) if source_indices is None else source_indices
    return SlowFastPlan(
        source_indices=tuple(int(i) for i in indices),
        timestamps=tuple(float(t) for t in timestamps),
        slow=slow,
        similarity=tuple(similarity),
        slow_size=slow_size,
        fast_size=fast_size,
        slow_tokens=slow_tokens,
        fast_tokens=fast_tokens,
        num_tokens=plan_cost(runs, slow_tokens, fast_tokens, config.temporal_patch),
        slow_budget=config.slow_budget,
        fast_budget=config.fast_budget,
        positions=tuple(range(len(slow))),
        references=references,
        temporal_patch=config.temporal_patch,
    )


def label_uniform(count: int):
    """Every frame slow (one run), similarity 1.0: the uniform baseline's labels."""
    return (True,) * count, (1.0,) * count


# --- budget-matched ablations (Table 4, "w/o SlowFast" at a fixed budget) --------------------


def _one_run(plan: SlowFastPlan, keep: list[int], size: tuple[int, int], budget: int,
             config: SlowFastConfig) -> SlowFastPlan:
    """``plan``'s frames ``keep`` (positions in the plan) in one uniform run at ``size``."""
    tokens = tokens_of(size, config.size_factor)
    return replace(
        plan,
        source_indices=tuple(plan.source_indices[i] for i in keep),
        timestamps=tuple(plan.timestamps[i] for i in keep),
        slow=(True,) * len(keep), similarity=(1.0,) * len(keep),
        references=(True,) * len(keep),
        slow_size=size, fast_size=size, slow_tokens=tokens, fast_tokens=tokens,
        num_tokens=math.ceil(len(keep) / config.temporal_patch) * tokens,
        slow_budget=budget, fast_budget=0,
        positions=tuple(plan.positions[i] for i in keep),
    )


def match_frames(plan: SlowFastPlan, height: int, width: int,
                 config: SlowFastConfig) -> SlowFastPlan:
    """The same frames as the SlowFast ``plan``, all at one size, within its token count."""
    patches = math.ceil(len(plan.slow) / config.temporal_patch)
    size = largest_size(height, width, patches, plan.num_tokens, config.max_slow_tokens,
                        config.size_factor)
    if size is None:
        raise ConfigError(f"{len(plan.slow)} frames do not fit the SlowFast plan's "
                          f"{plan.num_tokens} tokens even at 32×32 px")
    return _one_run(plan, list(range(len(plan.slow))), size, plan.num_tokens, config)


def match_slow_size(plan: SlowFastPlan, height: int, width: int,
                    config: SlowFastConfig) -> SlowFastPlan:
    """Evenly spread frames at the SlowFast ``plan``'s slow size, as many as its token count
    pays for (at least one temporal patch: the plan has a slow frame)."""
    patches = max(1, plan.num_tokens // plan.slow_tokens)
    count = min(len(plan.slow), patches * config.temporal_patch)
    keep = sorted({round(i * (len(plan.slow) - 1) / max(count - 1, 1)) for i in range(count)})
    return _one_run(plan, keep, plan.slow_size, plan.num_tokens, config)


@dataclass(frozen=True)
class Mode:
    """A frame-selection mode: how the sampled frames are labelled slow or fast, and for the
    budget-matched ablations how the SlowFast plan becomes the mode's plan."""

    label: Callable  # (thumbnails or None, count, config) -> (slow, similarity)
    needs_thumbnails: bool
    streaming: Callable[[SlowFastConfig], Labeler] | None = None  # labels during decoding
    derive: Callable[..., SlowFastPlan] | None = None  # (plan, height, width, config) -> plan


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


def _label_slowfast(thumbs, count, config):
    return label_thumbnails(thumbs, config)


register_mode("slowfast", Mode(_label_slowfast, True, Labeler))
register_mode("uniform", Mode(lambda thumbs, count, config: label_uniform(count), False))
register_mode("uniform-matched", Mode(_label_slowfast, True, Labeler, match_frames))
register_mode("uniform-slow-size", Mode(_label_slowfast, True, Labeler, match_slow_size))
