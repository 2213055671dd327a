"""Generate small test videos with PyAV's bundled encoders (no network, no ffmpeg binary).

Every clip shows a frame-numbered pattern so a test can tell which source frame it got back:
the mean brightness of frame ``i`` is ``level(i)``. Encoders bundled with PyAV 18: mpeg1video,
mpeg2video, mpeg4, libvpx (VP8), libvpx-vp9, libsvtav1 (AV1), mjpeg, libx264, libx265 (10-bit),
ffv1 (gray, odd sizes, lossless), png; audio: aac, mp3, flac, pcm_s16le, libopus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

Painter = Callable[[int, int, int], np.ndarray]  # (index, height, width) -> (H, W, 3) uint8


def level(index: int, period: int = 32) -> int:
    """The brightness that marks frame ``index`` (repeats every ``period`` frames).

    >>> level(0), level(1), level(31)
    (24, 30, 210)
    """
    return 24 + 6 * (index % period)


def numbered(index: int, height: int, width: int) -> np.ndarray:
    """A flat grey frame whose brightness encodes ``index``."""
    return np.full((height, width, 3), level(index), dtype=np.uint8)


def corner(index: int, height: int, width: int) -> np.ndarray:
    """A dark frame with a bright top-left quadrant (to check orientation)."""
    frame = np.full((height, width, 3), 20, dtype=np.uint8)
    frame[: height // 2, : width // 2] = 230
    return frame


def stripes(offset: int, vertical: bool = True, height: int = 168, width: int = 224) -> np.ndarray:
    """Black/white stripes, 28 px period: shifting by d px gives patch cosine (14 - d) / 14."""
    along = np.arange(width if vertical else height)
    on = ((along + offset) % 28) < 14
    plane = np.where(on, 255, 0).astype(np.uint8)
    plane = np.broadcast_to(plane[None, :] if vertical else plane[:, None], (height, width))
    return np.repeat(plane[..., None], 3, axis=2).copy()


@dataclass(frozen=True)
class ClipSpec:
    """One synthetic clip."""

    codec: str = "libx264"
    container: str = "mp4"  # format name for av.open
    suffix: str = ".mp4"
    width: int = 64
    height: int = 48
    fps: int = 30
    seconds: float = 1.0
    pix_fmt: str = "yuv420p"
    times: Sequence[float] | None = None  # explicit presentation times (variable frame rate)
    rotation: int = 0  # display-matrix rotation, counter-clockwise degrees
    options: tuple[tuple[str, str], ...] = ()


def _frame_times(spec: ClipSpec) -> list[float]:
    if spec.times is not None:
        return list(spec.times)
    return [i / spec.fps for i in range(round(spec.seconds * spec.fps))]


def _input_format(pix_fmt: str) -> str:
    return "gray" if pix_fmt.startswith("gray") else "rgb24"


def write_clip(path: Path, spec: ClipSpec = ClipSpec(), paint: Painter = numbered) -> Path:
    """Encode ``spec`` to ``path`` with presentation times from ``spec.times`` or ``spec.fps``."""
    time_base = Fraction(1, 1000) if spec.times is not None else Fraction(1, spec.fps)
    with av.open(str(path), mode="w", format=spec.container) as container:
        stream = container.add_stream(spec.codec, rate=spec.fps, options=dict(spec.options))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
        stream.codec_context.time_base = time_base
        if spec.rotation:
            stream.set_display_rotation(spec.rotation)
        for index, seconds in enumerate(_frame_times(spec)):
            image = paint(index, spec.height, spec.width)
            fmt = _input_format(spec.pix_fmt)
            frame = av.VideoFrame.from_ndarray(
                image[..., 0] if fmt == "gray" else image, format=fmt
            )
            frame.pts = round(seconds / time_base)
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """A WAV file with a sine tone and no video stream."""
    rate = 16000
    with av.open(str(path), mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 5) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# Real-world encodings that PyAV can write, named for parametrised tests.
ENCODINGS: dict[str, ClipSpec] = {
    "h264-mp4": ClipSpec(),
    "mpeg2-ps": ClipSpec(codec="mpeg2video", container="mpeg", suffix=".mpg", fps=25),
    "mpeg4-avi": ClipSpec(codec="mpeg4", container="avi", suffix=".avi", fps=25),
    "vp8-webm": ClipSpec(codec="libvpx", container="webm", suffix=".webm", fps=25),
    "vp9-webm": ClipSpec(codec="libvpx-vp9", container="webm", suffix=".webm", fps=25),
    "av1-mkv": ClipSpec(
        codec="libsvtav1", container="matroska", suffix=".mkv", fps=24, options=(("preset", "12"),)
    ),
    "mjpeg-mov": ClipSpec(codec="mjpeg", container="mov", suffix=".mov", pix_fmt="yuvj420p"),
    "hevc10-mp4": ClipSpec(
        codec="libx265", pix_fmt="yuv420p10le", options=(("preset", "ultrafast"),)
    ),
    "gray-ffv1-mkv": ClipSpec(codec="ffv1", container="matroska", suffix=".mkv", pix_fmt="gray"),
    "odd-ffv1-mkv": ClipSpec(
        codec="ffv1", container="matroska", suffix=".mkv", width=67, height=37, pix_fmt="yuv444p"
    ),
}
