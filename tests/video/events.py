"""Clips with known events for the SlowFast tests (paper Sec. 4.2.1): where a new slow frame
must start, and where none may. Each clip is 24 fps H.264 (sampled at 8 fps: every 3rd frame),
painted from smooth random textures so that patches carry real detail, and encoded with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from videoclips import ClipSpec, write_clip

WIDTH, HEIGHT, FPS = 320, 240, 24
SECOND = FPS  # frames per second of the source clip


def texture(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth random colour texture (sums of random sinusoids) with a few hard-edged shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        for _ in range(6):
            fy, fx = rng.uniform(0.01, 0.12, 2)
            phase = rng.uniform(0, 2 * np.pi)
            image[..., channel] += np.sin(fy * yy + fx * xx + phase)
    image = (image - image.min()) / (np.ptp(image) + 1e-6) * 200 + 25
    for _ in range(5):
        y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
        image[y:y + rng.integers(10, 40), x:x + rng.integers(10, 40)] = rng.integers(0, 255, 3)
    return image.astype(np.uint8)


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def clip(path: Path, frames: list[np.ndarray]) -> Path:
    """Encode ``frames`` (H, W, 3) uint8 at 24 fps."""
    spec = ClipSpec(width=WIDTH, height=HEIGHT, fps=FPS, seconds=len(frames) / FPS)
    return write_clip(path, spec, lambda i, h, w: frames[i])


def cuts(path: Path) -> tuple[Path, list[float]]:
    """Three different scenes of one second each; returns the clip and the cut times (s)."""
    frames = [texture(s) for s in (1, 2, 3) for _ in range(SECOND)]
    return clip(path, frames), [1.0, 2.0]


def inversion(path: Path) -> tuple[Path, float]:
    """A scene, then its colour negative; returns the clip and the inversion time."""
    scene = texture(4)
    return clip(path, [scene] * SECOND + [255 - scene] * SECOND), 1.0


def noise_segment(path: Path) -> tuple[Path, tuple[float, float]]:
    """A still scene, one second of fresh random noise every frame, the scene again."""
    scene = texture(5)
    frames = [scene] * SECOND + [noise(i) for i in range(SECOND)] + [scene] * SECOND
    return clip(path, frames), (1.0, 2.0)


def static(path: Path, seconds: int = 3) -> Path:
    return clip(path, [texture(6)] * (seconds * SECOND))


def pan(path: Path, pixels_per_frame: int, seconds: int = 3) -> Path:
    """A camera pan across a wide texture."""
    wide = texture(7, width=WIDTH + pixels_per_frame * seconds * SECOND)
    frames = [wide[:, i * pixels_per_frame:i * pixels_per_frame + WIDTH]
              for i in range(seconds * SECOND)]
    return clip(path, frames)


def moving_object(path: Path, seconds: int = 3) -> Path:
    """A 16-px square crossing a still scene."""
    scene, frames = texture(8), []
    for i in range(seconds * SECOND):
        frame = scene.copy()
        x = 10 + i * (WIDTH - 40) // (seconds * SECOND)
        frame[100:116, x:x + 16] = (250, 30, 30)
        frames.append(frame)
    return clip(path, frames)
