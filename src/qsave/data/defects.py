"""Controlled, labelled defects of the synthetic corpus, one registry entry per kind.

Every kind belongs to one dimension of the paper (Sec. 3.4.1) and breaks one of its criteria:

- visual (sharpness, artifacts): ``blur``, ``noise``, ``blockiness``, ``banding``, ``lowres``;
- dynamic (smoothness, temporal coherence): ``stutter``, ``frozen``, ``jitter``, ``flicker``,
  ``teleport``, ``deform``;
- alignment (subjects, attributes and counts, actions): ``wrong_color``, ``wrong_shape``,
  ``wrong_count``, ``wrong_direction``, ``missing_object``.

A :class:`Defect` has a severity in [0, 1] and a time window ``[start, end)`` in seconds.
Severity sets the window's share of the clip, ``0.25 + 0.75·s`` (:func:`place_defect`), and for
the *graded* kinds, those that have one, the strength (blur sigma, noise level, …; see the
``_*_STRENGTH`` constants); a graded kind may also cover the whole clip (``whole_clip``). Kinds
of the ``scene`` stage edit the object tracks before drawing; kinds of the ``frames`` stage
edit the drawn RGB frames. Both are pure: inputs are never modified.

>>> sorted(DEFECTS)[:3]
['banding', 'blockiness', 'blur']
>>> Defect("blur", 0.5, 0.0, 1.0).dimension.value
'visual'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from qsave.data.scene import (
    COLORS,
    DIRECTIONS,
    OPPOSITE,
    SHAPES,
    Scene,
    SceneSpec,
    number_word,
    render_frames,
)
from qsave.dimensions import Dimension
from qsave.errors import ConfigError
from qsave.registry import Registry

Detail = str | int | None  # the wrong value an alignment defect shows (colour, shape, count, …)
SceneEdit = Callable[[Scene, slice, float, Detail, np.random.Generator], Scene]
FrameEdit = Callable[[np.ndarray, slice, float, np.random.Generator], np.ndarray]

BLOCK = 8  # blockiness block size in pixels, like JPEG/MPEG macroblock transforms
MIN_EXTENT, EXTENT_SLOPE = 0.25, 0.75  # window share of the clip = 0.25 + 0.75·severity


@dataclass(frozen=True)
class DefectKind:
    """A registered defect kind: where it acts and how it is described."""

    name: str  # the label written to the manifest
    dimension: Dimension  # the dimension whose MOS it lowers
    stage: str  # "scene" (edits tracks before drawing) or "frames" (edits RGB frames)
    order: int  # application order: alignment, dynamic scene edits, temporal, visual
    edit: SceneEdit | FrameEdit  # the pure function that applies it
    template: str  # the attribution clause, str.format fields of _phrase_fields
    min_frames: int = 1  # shortest window that can show the defect
    graded: bool = True  # severity sets a strength too (False: only the window's length)


DEFECTS: Registry[DefectKind] = Registry("defect kind")
get_kind = DEFECTS.lookup


def register_defect(kind: DefectKind) -> DefectKind:
    """Add ``kind`` to :data:`DEFECTS` under its name; a duplicate name raises."""
    return DEFECTS.add(kind.name, kind)


def kinds_of(dimension: Dimension | str) -> tuple[str, ...]:
    """Names of the kinds of one dimension, in registration order."""
    dim = Dimension.parse(dimension)
    return tuple(name for name, kind in DEFECTS.items() if kind.dimension is dim)


@dataclass(frozen=True)
class Defect:
    """One labelled defect of a clip: kind, severity in [0, 1], window [start, end) seconds."""

    kind: str  # a key of DEFECTS
    severity: float  # 0 = imperceptible … 1 = as bad as the kind gets
    start: float  # seconds
    end: float  # seconds, exclusive
    detail: Detail = None  # the wrong value shown, for alignment kinds

    def __post_init__(self) -> None:
        get_kind(self.kind)
        if not 0.0 <= self.severity <= 1.0:
            raise ConfigError(f"severity {self.severity!r} of {self.kind} is outside [0, 1]")
        if not 0.0 <= self.start < self.end:
            raise ConfigError(f"window [{self.start!r}, {self.end!r}) of {self.kind} is empty")

    @property
    def dimension(self) -> Dimension:
        """The dimension this defect lowers."""
        return DEFECTS[self.kind].dimension

    def frames(self, fps: int, n_frames: int) -> slice:
        """The window as a slice of frame indices (at least one frame)."""
        first = min(round(self.start * fps), n_frames - 1)
        return slice(first, max(first + 1, min(round(self.end * fps), n_frames)))

    def to_dict(self) -> dict[str, object]:
        """The manifest record: ``{kind, severity, start, end[, detail]}``."""
        record: dict[str, object] = {
            "kind": self.kind,
            "severity": round(self.severity, 4),
            "start": round(self.start, 4),
            "end": round(self.end, 4),
        }
        if self.detail is not None:
            record["detail"] = self.detail
        return record


def place_defect(
    kind: str,
    severity: float,
    spec: SceneSpec,
    n_frames: int,
    fps: int,
    rng: np.random.Generator,
    whole_clip: bool = False,
) -> Defect:
    """A defect of ``kind`` with a random window covering ``0.25 + 0.75·severity`` of the clip;
    with ``whole_clip``, a graded kind covers all of it (its strength alone shows severity).

    Alignment kinds also draw the wrong value they show (another colour, shape, count, the
    opposite direction).
    """
    info = get_kind(kind)
    share = 1.0 if whole_clip and info.graded else MIN_EXTENT + EXTENT_SLOPE * severity
    length = min(n_frames, max(info.min_frames, round(share * n_frames)))
    first = int(rng.integers(0, n_frames - length + 1))
    detail = _draw_detail(kind, spec, rng)
    return Defect(kind, float(severity), first / fps, (first + length) / fps, detail)


def _draw_detail(kind: str, spec: SceneSpec, rng: np.random.Generator) -> Detail:
    if kind == "wrong_color":
        return str(rng.choice([c for c in COLORS if _hue_gap(c, spec.color) >= 90]))
    if kind == "wrong_shape":
        return str(rng.choice([s for s in SHAPES if s != spec.shape]))
    if kind == "wrong_count":
        options = [spec.count + 1] + ([spec.count - 1] if spec.count >= 2 else [])
        return int(rng.choice(options))
    if kind == "wrong_direction":
        return OPPOSITE[spec.direction]
    return None


def hue(rgb: Sequence[float]) -> float:
    """Hue in degrees [0, 360) of an RGB triple (HSV hue)."""
    r, g, b = (float(v) for v in rgb)
    return math.degrees(math.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)) % 360


def _hue_gap(color_a: str, color_b: str) -> float:
    gap = abs(hue(COLORS[color_a]) - hue(COLORS[color_b])) % 360
    return min(gap, 360 - gap)


def apply_scene_defect(scene: Scene, defect: Defect, rng: np.random.Generator) -> Scene:
    """``scene`` with one track-level defect applied (alignment kinds, jitter, teleport, deform)."""
    info = _stage_kind(defect, "scene")
    window = defect.frames(scene.fps, scene.n_frames)
    return info.edit(scene, window, defect.severity, defect.detail, rng)


def apply_frame_defect(
    frames: np.ndarray, defect: Defect, fps: int, rng: np.random.Generator
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with one pixel-level defect applied (visual kinds, stutter, …)."""
    info = _stage_kind(defect, "frames")
    return info.edit(frames, defect.frames(fps, frames.shape[0]), defect.severity, rng)


def _stage_kind(defect: Defect, stage: str) -> DefectKind:
    info = get_kind(defect.kind)
    if info.stage != stage:
        raise ConfigError(f"defect {defect.kind!r} acts on the {info.stage}, not the {stage}")
    return info


def render_clip(scene: Scene, defects: Sequence[Defect], seed: int) -> np.ndarray:
    """Draw ``scene`` with ``defects`` applied in stage order: (T, H, W, 3) uint8.

    Each kind draws its randomness from its own stream ``(seed, kind)``, so adding a defect
    leaves the others, and the clean twin (``defects=[]``), unchanged.
    """
    ordered = sorted(defects, key=lambda d: get_kind(d.kind).order)
    kinds = [d.kind for d in ordered]
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"a clip takes each defect kind at most once; got {kinds}")
    for defect in (d for d in ordered if DEFECTS[d.kind].stage == "scene"):
        scene = apply_scene_defect(scene, defect, _kind_rng(seed, defect.kind))
    frames = render_frames(scene)
    for defect in (d for d in ordered if DEFECTS[d.kind].stage == "frames"):
        frames = apply_frame_defect(frames, defect, scene.fps, _kind_rng(seed, defect.kind))
    return frames


def _kind_rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, 2, list(DEFECTS).index(kind)])


# --- wording ---------------------------------------------------------------------------


def adverb(severity: float) -> str:
    """``slightly`` / ``noticeably`` / ``severely`` for severities up to 1/3, 2/3, 1."""
    return "slightly" if severity < 1 / 3 else "noticeably" if severity < 2 / 3 else "severely"


def degree(severity: float) -> str:
    """``faint`` / ``clear`` / ``strong`` for severities up to 1/3, 2/3, 1."""
    return "faint" if severity < 1 / 3 else "clear" if severity < 2 / 3 else "strong"


def _plural(shape: str, count: int) -> str:
    return shape if count == 1 else f"{shape}s"


# --- frame-stage kinds (visual, and the temporal dynamic ones) -------------------------------

_BLUR_STRENGTH = (0.5, 2.0)  # Gaussian sigma = (a + b·s) · size/64 pixels
_NOISE_STRENGTH = (4.0, 36.0)  # noise standard deviation = a + b·s grey levels
_BLOCK_STRENGTH = (0.4, 0.6)  # blend towards 8×8 block means = a + b·s
_BANDING_STRENGTH = (3, 45)  # quantization step = a + round(b·s) grey levels
_LOWRES_STRENGTH = (1.5, 4.5)  # downscale factor = a + b·s, then bilinear upscale
_STUTTER_STRENGTH = (2, 3)  # each shown frame is held k = a + floor(b·s) (≤ 4) frames
_FLICKER_STRENGTH = (0.08, 0.27)  # brightness alternates by ±(a + b·s)


def _strength(pair: tuple[float, float], severity: float) -> float:
    return pair[0] + pair[1] * severity


def _blur(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    sigma = _strength(_BLUR_STRENGTH, severity) * frames.shape[2] / 64
    out = frames.copy()
    out[window] = _to_uint8(gaussian_filter(frames[window].astype(float), (0, sigma, sigma, 0)))
    return out


def _noise(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    out = frames.copy()
    part = frames[window].astype(float)
    out[window] = _to_uint8(
        part + rng.normal(0.0, _strength(_NOISE_STRENGTH, severity), part.shape)
    )
    return out


def _blockiness(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    out = frames.copy()
    part = frames[window].astype(float)
    n, h, w, c = part.shape
    hb, wb = h - h % BLOCK, w - w % BLOCK  # whole blocks only
    blocks = part[:, :hb, :wb].reshape(n, hb // BLOCK, BLOCK, wb // BLOCK, BLOCK, c)
    means = np.broadcast_to(blocks.mean(axis=(2, 4), keepdims=True), blocks.shape)
    blend = min(1.0, _strength(_BLOCK_STRENGTH, severity))
    part[:, :hb, :wb] = ((1 - blend) * blocks + blend * means).reshape(n, hb, wb, c)
    out[window] = _to_uint8(part)
    return out


def _banding(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    step = int(_BANDING_STRENGTH[0] + round(_BANDING_STRENGTH[1] * severity))
    out = frames.copy()
    out[window] = _to_uint8((frames[window] // step) * step + step // 2)
    return out


def _lowres(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    height, width = frames.shape[1:3]
    factor = _strength(_LOWRES_STRENGTH, severity)
    small = (max(2, round(width / factor)), max(2, round(height / factor)))
    out = frames.copy()
    for t in range(*window.indices(frames.shape[0])):
        image = Image.fromarray(frames[t]).resize(small, Image.Resampling.BOX)
        out[t] = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return out


def _stutter(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    hold = min(4, int(_STUTTER_STRENGTH[0] + math.floor(_STUTTER_STRENGTH[1] * severity)))
    first, stop, _ = window.indices(frames.shape[0])
    out = frames.copy()
    for t in range(first, stop):
        out[t] = frames[first + (t - first) // hold * hold]
    return out


def _frozen(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    out = frames.copy()
    out[window] = frames[window.start]
    return out


def _flicker(
    frames: np.ndarray, window: slice, severity: float, rng: np.random.Generator
) -> np.ndarray:
    first, stop, _ = window.indices(frames.shape[0])
    swing = _strength(_FLICKER_STRENGTH, severity)
    gains = 1 + swing * np.where(np.arange(stop - first) % 2 == 0, 1.0, -1.0)
    out = frames.copy()
    out[window] = _to_uint8(frames[window].astype(float) * gains[:, None, None, None])
    return out


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --- scene-stage kinds (alignment, and the object-level dynamic ones) -------------------------

_JITTER_STRENGTH = (0.015, 0.05)  # per-frame position noise = (a + b·s) · size pixels
_DEFORM_STRENGTH = (0.15, 0.45)  # x/y stretch = 1 ± (a + b·s), oscillating at 1.5 Hz
_DEFORM_HZ = 1.5
_TELEPORT_HOPS = (4, 3, 2)  # frames between jumps for severity < 1/3, < 2/3, ≥ 2/3


def _jitter(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    centers = scene.centers.copy()
    amplitude = _strength(_JITTER_STRENGTH, severity) * scene.size
    centers[window] += rng.normal(0.0, amplitude, centers[window].shape)
    return scene.edited(centers=centers)


def _teleport(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    """In the window the objects hop between their lanes and the mirrored lanes.

    Every other run of ``hop`` frames (4, 3 or 2 as severity grows) is mirrored across the
    motion axis, so each run boundary is a jump of twice the lane offset.
    """
    along = np.array(DIRECTIONS[scene.spec.direction])
    across = np.array([-along[1], along[0]])
    first, stop, _ = window.indices(scene.n_frames)
    hop = max(1, min(_TELEPORT_HOPS[min(2, int(3 * severity))], (stop - first) // 2))
    mirrored = np.arange(first, stop)[((np.arange(stop - first) // hop) % 2) == 1]
    centers = scene.centers.copy()
    offset = centers[mirrored] @ across  # (M, K) across-axis coordinate
    centers[mirrored] -= 2 * offset[..., None] * across
    return scene.edited(centers=centers)


def _deform(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    stretch = scene.stretch.copy()
    times = np.arange(*window.indices(scene.n_frames)) / scene.fps
    swing = _strength(_DEFORM_STRENGTH, severity)
    wobble = 1 + swing * np.sin(2 * np.pi * _DEFORM_HZ * times + np.pi / 2)
    stretch[window] = stretch[window] * wobble[:, None]
    return scene.edited(stretch=stretch)


def _wrong_color(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    colors = scene.colors.copy()
    colors[window] = np.array(COLORS[str(detail)], float)
    return scene.edited(colors=colors)


def _wrong_shape(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    shapes = scene.shapes.copy()
    shapes[window] = SHAPES.index(str(detail))
    return scene.edited(shapes=shapes)


def _wrong_count(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    """Show the spare slot (one more object) or hide the last object (one fewer)."""
    visible = scene.visible.copy()
    count = scene.spec.count
    if int(detail) > count:
        visible[window, count] = True  # the spare slot
    else:
        visible[window, count - 1] = False
    return scene.edited(visible=visible)


def _wrong_direction(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    """Reverse the motion inside the window; the path stays continuous and centred."""
    along = np.array(DIRECTIONS[scene.spec.direction])
    steps = np.diff(scene.centers, axis=0)  # (T-1, K, 2)
    first, stop, _ = window.indices(scene.n_frames)
    signs = np.ones(steps.shape[0])
    signs[first : min(stop, steps.shape[0])] = -1.0
    centers = scene.centers[:1] + np.concatenate(
        [np.zeros_like(steps[:1]), np.cumsum(steps * signs[:, None, None], axis=0)]
    )
    old, new = scene.centers @ along, centers @ along  # (T, K) progress along the axis
    shift = (new.min() + new.max() - old.min() - old.max()) / 2
    return scene.edited(centers=centers - shift * along)


def _missing_object(scene: Scene, window: slice, severity: float, detail: Detail, rng) -> Scene:
    visible = scene.visible.copy()
    visible[window] = False
    return scene.edited(visible=visible)


# fmt: off
_KINDS = (  # name, dimension, stage, order, edit, attribution template, shortest window
    ("wrong_count", "alignment", "scene", 10, _wrong_count,
     "{shown} {color} {shown_shapes} appear{shown_s} instead of {count}", 1),
    ("wrong_color", "alignment", "scene", 11, _wrong_color,
     "the {shapes} {is_} {detail} instead of {color}", 1),
    ("wrong_shape", "alignment", "scene", 12, _wrong_shape,
     "the {color} objects are {detail_shapes} instead of {shapes}", 1),
    ("wrong_direction", "alignment", "scene", 13, _wrong_direction,
     "{subject} move{s} {detail_toward} instead of {toward}", 2),
    ("missing_object", "alignment", "scene", 14, _missing_object, "{subject} {is_} missing", 1),
    ("teleport", "dynamic", "scene", 20, _teleport,
     "{subject} teleport{s} back and forth between positions", 2),
    ("jitter", "dynamic", "scene", 21, _jitter, "{subject} jitter{s} {adverb}", 2),
    ("deform", "dynamic", "scene", 22, _deform, "{subject} deform{s} {adverb}", 2),
    ("frozen", "dynamic", "frames", 30, _frozen, "the video freezes", 2),
    ("stutter", "dynamic", "frames", 31, _stutter, "{subject} stutter{s} {adverb}", 3),
    ("flicker", "dynamic", "frames", 32, _flicker, "the brightness flickers {adverb}", 2),
    ("lowres", "visual", "frames", 40, _lowres,
     "the picture is {adverb} soft, as if upscaled from a low resolution", 1),
    ("blur", "visual", "frames", 41, _blur, "the picture is {adverb} blurred", 1),
    ("banding", "visual", "frames", 42, _banding,
     "the background gradient shows {degree} colour banding", 1),
    ("blockiness", "visual", "frames", 43, _blockiness,
     "{degree} compression blocks are visible", 1),
    ("noise", "visual", "frames", 44, _noise, "the picture is {adverb} noisy", 1),
)
# fmt: on
_UNGRADED = {"frozen", *(row[0] for row in _KINDS if row[1] == "alignment")}  # no strength
for _name, _dimension, _stage, _order, _edit, _template, _shortest in _KINDS:
    register_defect(
        DefectKind(
            _name, Dimension(_dimension), _stage, _order, _edit, _template, _shortest,
            graded=_name not in _UNGRADED,
        )
    )


def phrase(defect: Defect, spec: SceneSpec) -> str:
    """What is wrong, without the time: the kind's template filled in for ``spec``."""
    return get_kind(defect.kind).template.format(**_phrase_fields(spec, defect))


def _phrase_fields(spec: SceneSpec, defect: Defect) -> dict[str, str]:
    single = spec.count == 1
    fields = {
        "subject": spec.subject,
        "s": "s" if single else "",
        "is_": "is" if single else "are",
        "adverb": adverb(defect.severity),
        "degree": degree(defect.severity),
        "color": spec.color,
        "count": number_word(spec.count),
        "shapes": _plural(spec.shape, spec.count),
        "toward": _toward(spec.direction),
        "detail": str(defect.detail),
    }
    if isinstance(defect.detail, int):
        fields["shown"] = number_word(defect.detail)
        fields["shown_shapes"] = _plural(spec.shape, defect.detail)
        fields["shown_s"] = "s" if defect.detail == 1 else ""
    elif defect.detail in SHAPES:
        fields["detail_shapes"] = _plural(str(defect.detail), spec.count)
    elif defect.detail in DIRECTIONS:
        fields["detail_toward"] = _toward(str(defect.detail))
    return fields


def _toward(direction: str) -> str:
    return f"to the {direction}" if direction in ("left", "right") else direction


def describe(defect: Defect, spec: SceneSpec, fps: int, n_frames: int) -> str:
    """One attribution clause: what is wrong and when.

    >>> spec = SceneSpec("red", "circle", 1, "right", "static", "cloudy sky")
    >>> describe(Defect("stutter", 0.5, 1.25, 2.0), spec, fps=8, n_frames=16)
    'the red circle stutters noticeably between 1.2 s and 2.0 s'
    """
    window = defect.frames(fps, n_frames)
    what = phrase(defect, spec)
    if window.start == 0 and window.stop == n_frames:
        return f"{what} throughout the video"
    return f"{what} between {window.start / fps:.1f} s and {window.stop / fps:.1f} s"
