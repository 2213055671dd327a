"""Prompt-driven scenes of the synthetic corpus: what a prompt asks for and how it is drawn.

A :class:`SceneSpec` is one filled-in prompt template ("Two red circles move to the right
over a checkered floor; the camera pans to the left."). :func:`plan_scene` turns it into a
:class:`Scene`, i.e. per-frame object tracks and camera parameters, and :func:`render_frames`
draws the tracks as an RGB array without encoding. Defects of the dynamic and alignment
dimensions (paper Sec. 3.4.1: smoothness, temporal coherence, subjects, attributes, actions)
edit the tracks before drawing (:mod:`qsave.data.defects`), so the clean twin of a clip is the
same scene drawn without them.

Coordinates: pixels relative to the frame centre, x to the right, y downward; the camera maps
a screen pixel ``u`` to the world point ``(u - centre) / zoom + pan``.

>>> spec = SceneSpec(color="red", shape="circle", count=2, direction="right",
...                  camera="static", background="checkered floor")
>>> spec.prompt
'Two red circles move to the right over a checkered floor; the camera is static.'
>>> frames = render_frames(plan_scene(spec, size=32, fps=4, seconds=1.0, seed=0))
>>> frames.shape, frames.dtype.name
((4, 32, 32, 3), 'uint8')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from qsave.errors import ConfigError

# Named colours (RGB) whose hues are at least 30° apart, so a colour is recognisable by hue.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (230, 210, 30),
    "green": (40, 170, 60),
    "cyan": (30, 190, 200),
    "blue": (40, 70, 220),
    "purple": (150, 50, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit motion vector (x, y), y downward
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "up": "down", "down": "up"}
CAMERAS: tuple[str, ...] = ("static", "pan left", "pan right", "zoom in")
BACKGROUNDS: tuple[str, ...] = ("checkered floor", "striped wall", "cloudy sky")
COUNTS: tuple[int, ...] = (1, 2, 3)
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five")

# Geometry as fractions of the frame size.
RADIUS = 0.08  # object radius (a circle's; other shapes have the same area)
LANES = (-0.3, -0.1, 0.1, 0.3)  # offsets across the motion axis; one object per lane
STAGGER = 0.08  # alternate lanes are shifted this far along the motion axis
TRAVEL = 0.42  # distance each object covers along the motion axis over the clip
PAN = 0.15  # camera travel over the clip for "pan left"/"pan right"
ZOOM = 1.25  # final zoom factor for "zoom in" (starts at 1)
EDGE = 1.0  # anti-aliasing width of object edges, pixels


@dataclass(frozen=True)
class SceneSpec:
    """One filled-in prompt template: what the clip should show."""

    color: str  # a key of COLORS
    shape: str  # one of SHAPES
    count: int  # number of objects, one of COUNTS
    direction: str  # a key of DIRECTIONS: the objects' motion in the world
    camera: str  # one of CAMERAS
    background: str  # one of BACKGROUNDS

    def __post_init__(self) -> None:
        _check_choice("color", self.color, tuple(COLORS))
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("count", self.count, COUNTS)
        _check_choice("direction", self.direction, tuple(DIRECTIONS))
        _check_choice("camera", self.camera, CAMERAS)
        _check_choice("background", self.background, BACKGROUNDS)

    @property
    def subject(self) -> str:
        """The noun phrase of the objects, e.g. ``"the two red circles"``."""
        if self.count == 1:
            return f"the {self.color} {self.shape}"
        return f"the {number_word(self.count)} {self.color} {self.shape}s"

    @property
    def prompt(self) -> str:
        """The text prompt the clip was 'generated' from."""
        noun = self.shape if self.count == 1 else f"{self.shape}s"
        verb = "moves" if self.count == 1 else "move"
        where = "to the " if self.direction in ("left", "right") else ""
        return (
            f"{number_word(self.count).capitalize()} {self.color} {noun} {verb} "
            f"{where}{self.direction} over a {self.background}; {_camera_phrase(self.camera)}."
        )

    def to_dict(self) -> dict[str, str | int]:
        """The fields as a JSON-ready dict."""
        return {
            "color": self.color,
            "shape": self.shape,
            "count": self.count,
            "direction": self.direction,
            "camera": self.camera,
            "background": self.background,
        }


def _check_choice(name: str, value: object, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def _camera_phrase(camera: str) -> str:
    return {
        "static": "the camera is static",
        "pan left": "the camera pans to the left",
        "pan right": "the camera pans to the right",
        "zoom in": "the camera slowly zooms in",
    }[camera]


def number_word(count: int) -> str:
    """``2 → "two"``; larger numbers stay digits."""
    return _NUMBER_WORDS[count] if 0 <= count < len(_NUMBER_WORDS) else str(count)


def all_specs() -> list[SceneSpec]:
    """Every combination of the template's slots, in a fixed order."""
    return [
        SceneSpec(color, shape, count, direction, camera, background)
        for color in COLORS
        for shape in SHAPES
        for count in COUNTS
        for direction in DIRECTIONS
        for camera in CAMERAS
        for background in BACKGROUNDS
    ]


@dataclass(frozen=True)
class Scene:
    """Per-frame tracks of one clip; T frames, K object slots (``count`` + 1 spare).

    The spare slot is invisible in a clean scene; a wrong-count defect may show it.
    """

    spec: SceneSpec
    size: int  # frame width and height, pixels
    fps: int  # frames per second
    centers: np.ndarray  # (T, K, 2) float: object centres in world pixels
    stretch: np.ndarray  # (T, K) float: x scale of the object (y scale is 1/stretch)
    colors: np.ndarray  # (T, K, 3) float: RGB 0..255
    shapes: np.ndarray  # (T, K) int: index into SHAPES
    visible: np.ndarray  # (T, K) bool
    pan: np.ndarray  # (T, 2) float: camera position in world pixels
    zoom: np.ndarray  # (T,) float: camera zoom, 1 = none
    texture_seed: int = field(default=0)  # phase of the background texture

    @property
    def n_frames(self) -> int:
        """T, the number of frames."""
        return int(self.centers.shape[0])

    def edited(self, **changes: np.ndarray) -> Scene:
        """A copy with some track arrays replaced (scenes are never edited in place)."""
        return replace(self, **changes)


def frame_count(fps: int, seconds: float) -> int:
    """T = round(fps · seconds), the number of frames of a clip."""
    return round(fps * seconds)


def plan_scene(spec: SceneSpec, size: int, fps: int, seconds: float, seed: int) -> Scene:
    """The clean tracks of ``spec``: objects in lanes move along the prompt's direction.

    The seed picks the lanes, the spare slot's lane and the texture phase; nothing else varies.
    """
    n_frames = frame_count(fps, seconds)
    if n_frames < 2:
        raise ConfigError(f"a clip needs at least 2 frames; fps={fps}, seconds={seconds}")
    rng = np.random.default_rng([seed, 0])
    lanes = rng.permutation(len(LANES))[: spec.count + 1]  # the last one is the spare slot
    progress = np.linspace(-TRAVEL / 2, TRAVEL / 2, n_frames) * size  # (T,) along-axis
    centers = _lane_tracks(lanes, progress, spec.direction, size)
    n_slots = len(lanes)
    visible = np.ones((n_frames, n_slots), dtype=bool)
    visible[:, -1] = False
    pan, zoom = _camera_track(spec.camera, n_frames, size)
    return Scene(
        spec=spec,
        size=size,
        fps=fps,
        centers=centers,
        stretch=np.ones((n_frames, n_slots)),
        colors=np.broadcast_to(np.array(COLORS[spec.color], float), (n_frames, n_slots, 3)).copy(),
        shapes=np.full((n_frames, n_slots), SHAPES.index(spec.shape)),
        visible=visible,
        pan=pan,
        zoom=zoom,
        texture_seed=int(rng.integers(0, 1 << 16)),
    )


def _lane_tracks(lanes: np.ndarray, progress: np.ndarray, direction: str, size: int) -> np.ndarray:
    """Centres (T, K, 2): lane offsets across the motion axis, progress along it."""
    along = np.array(DIRECTIONS[direction])
    across = np.array([-along[1], along[0]])
    centers = np.empty((progress.size, lanes.size, 2))
    for slot, lane in enumerate(lanes):
        stagger = STAGGER * size * (1 if lane % 2 else -1)
        centers[:, slot] = (progress[:, None] + stagger) * along + LANES[lane] * size * across
    return centers


def _camera_track(camera: str, n_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pan (T, 2) and zoom (T,) of the camera motion named in the prompt."""
    ramp = np.linspace(0.0, 1.0, n_frames)
    pan = np.zeros((n_frames, 2))
    zoom = np.ones(n_frames)
    if camera == "pan left":
        pan[:, 0] = -PAN * size * ramp
    elif camera == "pan right":
        pan[:, 0] = PAN * size * ramp
    elif camera == "zoom in":
        zoom = 1.0 + (ZOOM - 1.0) * ramp
    return pan, zoom


def render_frames(scene: Scene) -> np.ndarray:
    """Draw every frame of ``scene``: (T, H, W, 3) uint8 RGB, H = W = ``scene.size``."""
    frames = np.empty((scene.n_frames, scene.size, scene.size, 3), dtype=np.uint8)
    for t in range(scene.n_frames):
        frames[t] = render_frame(scene, t)
    return frames


def render_frame(scene: Scene, t: int) -> np.ndarray:
    """Frame ``t`` of ``scene`` as (H, W, 3) uint8: textured background, then the objects."""
    x, y = _world_grid(scene.size, scene.pan[t], scene.zoom[t])
    image = background(scene.spec.background, x, y, scene.size, scene.texture_seed)
    for slot in np.flatnonzero(scene.visible[t]):
        sdf = shape_sdf(
            SHAPES[scene.shapes[t, slot]],
            x - scene.centers[t, slot, 0],
            y - scene.centers[t, slot, 1],
            RADIUS * scene.size,
            scene.stretch[t, slot],
        )
        alpha = np.clip(0.5 - sdf * scene.zoom[t] / EDGE, 0.0, 1.0)[..., None]  # screen px
        image = image * (1 - alpha) + scene.colors[t, slot] * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _world_grid(size: int, pan: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates (H, W) of the pixel centres seen by the camera."""
    screen = np.arange(size) + 0.5 - size / 2
    world_x = screen / zoom + pan[0]
    world_y = screen / zoom + pan[1]
    return np.meshgrid(world_x, world_y)


def background(kind: str, x: np.ndarray, y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A procedural, low-saturation texture (H, W, 3) float with a vertical light gradient.

    The smooth gradient is what colour banding quantizes; the texture gives the sharpness and
    the camera motion something to show.
    """
    phase = (seed % 997) / 997 * 2 * math.pi
    cell = size / 5
    if kind == "checkered floor":
        pattern = np.tanh(3 * np.sin(np.pi * x / cell + phase) * np.sin(np.pi * y / cell))
        tint = np.array([0.78, 0.74, 0.66])
    elif kind == "striped wall":
        pattern = np.tanh(2.5 * np.sin(np.pi * (x + y) / (0.7 * cell) + phase))
        tint = np.array([0.70, 0.72, 0.76])
    else:  # cloudy sky
        pattern = (
            np.sin(x / (0.9 * cell) + phase) * np.sin(y / (1.3 * cell) - phase)
            + 0.5 * np.sin((x - y) / (0.5 * cell) + 2 * phase)
        ) / 1.5
        tint = np.array([0.72, 0.76, 0.82])
    gradient = 0.55 + 0.35 * (y - y.min()) / max(float(np.ptp(y)), 1e-9)  # darker at the top
    luma = 255 * gradient * (0.82 + 0.18 * pattern)
    return luma[..., None] * tint


def shape_sdf(
    shape: str, dx: np.ndarray, dy: np.ndarray, radius: float, stretch: float
) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a shape of the area of a circle of ``radius``.

    ``stretch`` scales x by s and y by 1/s (area-preserving deformation).
    """
    px, py = dx / stretch, dy * stretch
    if shape == "circle":
        return np.hypot(px, py) - radius
    if shape == "square":
        half = radius * math.sqrt(math.pi) / 2
        qx, qy = np.abs(px) - half, np.abs(py) - half
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "diamond":
        half_diagonal = radius * math.sqrt(math.pi / 2)
        return (np.abs(px) + np.abs(py) - half_diagonal) / math.sqrt(2)
    if shape == "triangle":
        return _triangle_sdf(px, -py, radius * math.sqrt(math.pi / math.sqrt(3)))
    raise ConfigError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def _triangle_sdf(px: np.ndarray, py: np.ndarray, half_side: float) -> np.ndarray:
    """Exact SDF of an upward equilateral triangle centred at 0 (Quílez's formula)."""
    k = math.sqrt(3.0)
    px = np.abs(px) - half_side
    py = py + half_side / k
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * half_side, 0)
    return -np.hypot(px, py) * np.sign(py)
