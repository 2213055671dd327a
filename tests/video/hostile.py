"""Hostile but real video files, small and quick to write (PyAV only), for the decoding limits.

The intra-coded ones encode one picture per frame size and mux its packet as often as needed:
a 16000×16000 clip costs 0.2 s and 0.2 MB; 36,000 tiny MPEG-4 frames take 0.3 s.

- ``write_huge_clip``: 16000×16000 (FFmpeg's own ceiling is ~16384²) PNG frames, 1 bit per
  pixel, in AVI or MOV; a real decoder opens and decodes it (32 MB per frame).
- ``write_long_clip``: many tiny MPEG-4 frames at a high frame rate (AVI and MP4 headers state
  the frame count, Matroska's does not).
- ``write_resizing_clip``: MJPEG (or H.264) frames whose size changes; a Matroska/AVI header
  states the first size only, a raw ``.mjpeg`` / ``.h264`` stream has no header at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _picture(codec: str, width: int, height: int, pix_fmt: str, options=None) -> bytes:
    """One flat frame encoded as a single intra packet (H.264: with its SPS and PPS)."""
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = width, height, pix_fmt
    context.time_base = Fraction(1, 25)
    context.options = dict(options or {})
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane in frame.planes:
        np.frombuffer(plane, np.uint8)[:] = 0x55  # mid grey; alternate pixels in monob
    packets = [*context.encode(frame), *context.encode(None)]
    return bytes(packets[0])


def _mux(path: Path, codec: str, size: tuple[int, int], pix_fmt: str, rate: Fraction,
         pictures: Sequence[bytes]) -> Path:
    """Mux one pre-encoded intra picture per frame, at ``rate`` frames per second."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = *size, pix_fmt
        stream.codec_context.time_base = 1 / rate
        for index, picture in enumerate(pictures):
            packet = av.Packet(picture)
            packet.pts = packet.dts = index
            packet.time_base, packet.stream = 1 / rate, stream
            packet.is_keyframe = True
            container.mux(packet)
    return path


def write_huge_clip(path: Path, width: int = 16000, height: int = 16000, frames: int = 4) -> Path:
    """A ``width × height`` clip of ``frames`` PNG frames (monob) at 1 fps; ``.avi`` or ``.mov``."""
    picture = _picture("png", width, height, "monob", {"compression_level": "9", "pred": "none"})
    return _mux(path, "png", (width, height), "monob", Fraction(1), [picture] * frames)


def write_long_clip(path: Path, frames: int, size: tuple[int, int] = (16, 16),
                    fps: int = 1000) -> Path:
    """``frames`` flat ``size`` (width, height) MPEG-4 frames at ``fps``: ``frames / fps`` s."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            np.frombuffer(plane, np.uint8)[:] = 100
        for index in range(frames):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_resizing_clip(path: Path, sizes: Sequence[tuple[int, int]], fps: int = 25,
                        codec: str = "mjpeg") -> Path:
    """One intra frame per (width, height) in ``sizes``, at ``fps``. A ``.mkv`` / ``.avi``
    header states ``sizes[0]`` only; ``.mjpeg`` / ``.h264`` (``codec="libx264"``) write the raw
    stream, which has no header at all."""
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    pictures = {size: _picture(codec, *size, pix_fmt) for size in dict.fromkeys(sizes)}
    if Path(path).suffix in (".mjpeg", ".h264"):
        Path(path).write_bytes(b"".join(pictures[size] for size in sizes))
        return path
    return _mux(path, codec, sizes[0], pix_fmt, Fraction(fps), [pictures[size] for size in sizes])
