"""Decode a video; sample frames at a target rate by presentation time (paper Sec. 4.2.1).

The paper feeds Qwen3-VL frames sampled at 8 fps. Frames are chosen by their presentation
timestamps (the frame nearest to each target time ``k / fps``), never by ``frame count × fps``,
which breaks on variable-frame-rate phone video and on files whose fps metadata is bogus.
The file is decoded in order (no seeking: seeking was 13–16× slower on clips with a single
keyframe) with FFmpeg's frame/slice threading, and only the sampled frames are converted to RGB,
downscaled during the conversion when they exceed ``max_side``. At most ``max_frames`` frames are
kept: when the duration is known the sampling interval is widened up front, otherwise the kept
frames are thinned by half whenever the cap is reached, so memory stays bounded by
``max_frames`` frames of at most ``max_side²`` pixels whatever the clip length.

Decoder choice: PyAV (FFmpeg) with ``thread_type="AUTO"``, converting only the sampled frames
with one cached swscale context per geometry (``VideoReformatter``; a fresh context per frame,
as ``frame.to_ndarray(width=…, height=…)`` makes, cost 3 ms per small frame against 0.7 ms).
Trials on 18 real files and 36 generated clips found PyAV within 1.1–1.25× of the
fastest backend everywhere and the only one that decoded every file correctly (torchcodec fails
on an MPEG-2 program stream, its wheels from 0.14 on need CUDA libraries and its import costs
~2.8 s; decord returns wrong frames on MPEG-2 and MPEG-4-in-AVI and cannot open AV1). PyAV was
also the fastest raw decoder in our benchmark at every size (decord 1.4–1.9× slower) and decodes
every encoding the tests generate (MPEG-2 PS, MPEG-4 in AVI, VP8/VP9 WebM, AV1, MJPEG MOV,
10-bit HEVC, gray and odd-sized FFV1).

``sample_frames`` keeps the sampled frames unconverted and hands each one to a single worker
thread that shrinks it to ``max_side``, makes its similarity thumbnail and, through
``on_sample``, labels it and converts it to RGB at the size the plan will most likely give it
(``slowfast.SizeForecast``; a frame whose guess misses is converted again after decoding).
swscale, OpenCV and numpy release the GIL, so this work runs beside the decoder threads instead
of after them. A resize to RGB is a resize in the frame's own YUV format followed by swscale's
unscaled (SIMD) YUV → RGB conversion: 2–4× cheaper than swscale's combined path (720p →
320×576: 0.6 against 1.8 ms) and the same pixels up to chroma rounding.

``python benchmarks/preprocess.py --keye-venv /tmp/keye-venv --workdir /tmp/benchclips
--repeats 8``, run twice (10 s synthetic H.264 clips at 30 fps, 8 fps sampling, ms per clip,
best of 8 interleaved runs, 2 CPU cores; a = the fastest raw decode, PyAV threaded with the same
8 fps frames converted to rgb24; b = ``prepare_video``; c = keye-vl-utils; a1, b1 = a and b
with one decoder thread, ``DecodeConfig(threads=1)``, which leaves qsave's worker a core):

=====  ==========  ===========  ===========  =========  =========  ===========
clip   a           b            c            b/a        b/c        b1/a1
=====  ==========  ===========  ===========  =========  =========  ===========
480p   249, 287    313, 373     1340, 1324   1.25, 1.30 0.23, 0.28 1.14, 0.80
720p   378, 512    501, 649     1552, 1878   1.32, 1.27 0.32, 0.35 1.09, 0.97
1080p  976, 1089   1217, 1353   2950, 2975   1.25, 1.24 0.41, 0.45 0.99, 0.90
=====  ==========  ===========  ===========  =========  =========  ===========

What remains beyond the raw decode is CPU time: per sampled frame at 480p about 0.4 ms for the
thumbnail, 0.3 ms for the similarity and 0.3 ms for the resize, some 20 % of what the decode
itself spends, while the decoder's threads already keep ~1.6 of the 2 cores busy; given a core
of its own (b1/a1) the worker's work is hidden. The ratios move by ±0.15 between runs on this
shared machine.

Limits (``DecodeLimits``: pixels per frame, decoded frames, seconds) are checked on the header
before anything is decoded, then on the decoder's frame size after every packet and on every
decoded frame, for headers that lie or say nothing (raw streams); a ``cancel`` event is checked
before every packet. The file is opened with no decoder allowed in FFmpeg's stream probe, which
would otherwise decode frames at the declared size before anything can be checked (opening a
16000×16000 H.264 file in Matroska: +582 MB; in FLV: +1,087 MB). Outputs were identical on 26
test and sample files with and without that probe. The decoder then gets FFmpeg's own
``max_pixels`` at twice the limit: a larger frame is never allocated. H.264 and HEVC still
report its size (``VideoLimitError``); decoders that reset the size on refusal (MJPEG, PNG) only
report an invalid packet, which counts as corrupt. Frame threads each hold frames of their own,
so large frames get fewer of them (``_thread_count``), and the sampled frames waiting for the
conversion thread are bounded in bytes as well as in number.

Memory, as ``ru_maxrss`` growth of one call in a fresh process after a warm-up decode of a small
clip (2 cores, FFmpeg's 3 threads unless said, two runs each): refusing a 16000×16000 file costs
+0–5 MB (PNG in AVI, H.264 in Matroska, MP4, MPEG-TS or FLV). A 3 s 4096×4096 H.264 clip (the
largest frame allowed; 30 fps with B-frames; 24 frames sampled, kept at 1280×1280):
``sample_frames`` +345–370 MB, +250 MB with one thread, +400 MB with 16 threads asked for
(capped to 4; +920–945 MB uncapped), +390 MB with a conversion thread that falls behind
(+475–540 MB bounded by count alone); ``prepare_video`` +360–385 MB; ``decode_video`` +405 MB.

Timestamps are in seconds from the first decoded frame of the video stream (streams such as
MPEG-2 program streams start at a non-zero presentation time). Rotation metadata (the display
matrix) is applied, so frames come out the way a player shows them.

>>> DecodeConfig(fps=8.0).interval
0.125
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from qsave.errors import Cancelled, ConfigError, VideoError, VideoLimitError, VideoNotFoundError

MAX_QUEUED = 8  # sampled frames waiting for the conversion thread
MAX_QUEUED_BYTES = 64 * 2**20  # and the bytes of them (always at least one frame may wait)
FRAME_THREAD_PIXELS = 64 * 2**20  # decoder threads × pixels per frame (each thread holds frames)
FFMPEG_MAX_THREADS = 16  # FFmpeg's automatic thread count: cores + 1, at most this
HEADER_ONLY = {"codec_whitelist": "none"}  # no decoder may open while FFmpeg probes the streams
VFR_INTERVAL_RATIO = 1.5  # max/min frame interval above this marks a variable frame rate
Keeper = Callable[[av.VideoFrame, int, int | None], object]  # (frame, rotation, expected count)
OnSample = Callable[[np.ndarray, tuple[int, int], int | None], tuple[int, int] | None]


@dataclass(frozen=True)
class DecodeConfig:
    """How frames are sampled from a video (paper Sec. 4.2.1: 8 fps)."""

    fps: float = 8.0  # target sampling rate, frames per second of presentation time
    max_frames: int = 256  # cap on sampled frames (32 s at 8 fps); longer clips are spread out
    max_side: int | None = 1280  # longest side of the returned frames; None keeps the native size
    max_corrupt_fraction: float = 0.5  # fail when more of the packets than this cannot be decoded
    min_coverage: float = 0.8  # fail when decoded frames span less of the declared duration
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose (cores + 1); 1 per process in pools

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"fps ({self.fps}) must be a positive number")
        if self.max_frames < 1:
            raise ConfigError(f"max_frames ({self.max_frames}) must be at least 1")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"max_side ({self.max_side}) must be at least 16 or None")
        if not 0 <= self.max_corrupt_fraction <= 1:
            raise ConfigError(
                f"max_corrupt_fraction ({self.max_corrupt_fraction}) must be in [0, 1]"
            )
        if not 0 <= self.min_coverage <= 1:
            raise ConfigError(f"min_coverage ({self.min_coverage}) must be in [0, 1]")
        if self.threads < 0:
            raise ConfigError(f"threads ({self.threads}) must be 0 (automatic) or more")

    @property
    def interval(self) -> float:
        """Seconds between two sampling targets."""
        return 1.0 / self.fps


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one video may cost; beyond a limit it raises ``VideoLimitError``.

    The header is checked before any frame is decoded, the decoded frames again as they come.

    >>> DecodeLimits().exceeded(16000, 16000)
    '16000×16000 = 256,000,000 pixels per frame exceeds max_pixels (16,777,216 = 4096×4096)'
    """

    max_pixels: int = 4096 * 4096  # coded width × height of one frame
    max_decoded_frames: int = 36_000  # frames decoded from the stream (600 s at 60 fps)
    max_duration_s: float = 600.0  # seconds of presentation time

    def __post_init__(self) -> None:
        for name, kind in (("max_pixels", int), ("max_decoded_frames", int),
                           ("max_duration_s", int | float)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < math.inf:
                what = "integer" if kind is int else "finite number"
                raise ConfigError(f"{name} ({value!r}) must be a positive {what}")

    def exceeded(
        self, width: int = 0, height: int = 0, frames: int = 0, duration: float | None = None
    ) -> str | None:
        """The first limit a video of ``width × height`` pixels per frame, ``frames`` frames and
        ``duration`` seconds breaks, with the figure and the limit; None within all of them."""
        if width * height > self.max_pixels:
            side = math.isqrt(self.max_pixels)
            square = f" = {side}×{side}" if side * side == self.max_pixels else ""
            return (
                f"{width}×{height} = {width * height:,} pixels per frame exceeds max_pixels "
                f"({self.max_pixels:,}{square})"
            )
        if frames > self.max_decoded_frames:
            return f"{frames:,} frames exceed max_decoded_frames ({self.max_decoded_frames:,})"
        if duration is not None and duration > self.max_duration_s:
            return (
                f"{duration:,.2f} s of presentation time exceeds max_duration_s "
                f"({self.max_duration_s:g} s)"
            )
        return None


@dataclass(frozen=True)
class VideoInfo:
    """What the container says and what decoding measured about one video stream."""

    source: str  # path or name of the file object, for messages
    container: str  # container format name(s), e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # decoder name, e.g. "h264"
    pix_fmt: str | None  # decoded pixel format, e.g. "yuv420p10le"
    width: int  # display width (after rotation) of the decoded frames, before any downscale
    height: int  # display height (after rotation)
    rotation: int  # counter-clockwise degrees applied from the display matrix (0, 90, 180, -90)
    duration: float | None  # seconds, from the container (None when it does not say)
    nominal_fps: float | None  # frame rate the stream header claims
    avg_fps: float | None  # measured: decoded frames per second of presentation time
    min_interval: float | None  # shortest gap between consecutive frames, seconds
    max_interval: float | None  # longest gap between consecutive frames, seconds
    num_frames: int  # frames decoded (all of them, not only the sampled ones)
    corrupt_packets: int = 0  # packets the decoder rejected (their frames are missing)
    truncated: bool = False  # demuxing stopped on an error before the end of the file
    last_error: str | None = None  # the decoder's last message when packets were rejected

    @property
    def decoded_span(self) -> float:
        """Seconds covered by the decoded frames (first to last, plus one frame interval)."""
        if self.num_frames < 2 or self.avg_fps is None:
            return 0.0
        return self.num_frames / self.avg_fps

    @property
    def is_vfr(self) -> bool:
        """True when frame intervals vary by more than ``VFR_INTERVAL_RATIO``."""
        if not self.min_interval or not self.max_interval:
            return False
        return self.max_interval / self.min_interval > VFR_INTERVAL_RATIO


@dataclass
class DecodedVideo:
    """Sampled frames with their absolute timestamps."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, display orientation
    timestamps: np.ndarray  # (N,) float64 seconds from the first frame of the stream
    source_indices: np.ndarray  # (N,) int64 index of each frame in decoding (presentation) order
    info: VideoInfo
    sample_interval: float = field(default=0.125)  # seconds between sampling targets actually used


@dataclass
class _Candidate:
    frame: av.VideoFrame
    time: float  # seconds from the first frame
    index: int  # presentation index
    emitted: bool = False


@dataclass
class _Stats:
    """Running measurements while streaming through the file."""

    packets: int = 0
    corrupt: int = 0
    truncated: bool = False
    last_error: str | None = None
    frames: int = 0
    first_time: float | None = None
    last_time: float | None = None
    min_interval: float = math.inf
    max_interval: float = 0.0
    rotation: int = 0
    pix_fmt: str | None = None
    size: tuple[int, int] | None = None  # coded (height, width) of the first frame

    def observe(self, frame: av.VideoFrame, time: float) -> None:
        if self.frames == 0:
            self.first_time = time
            self.rotation = round(frame.rotation or 0)
            self.pix_fmt = frame.format.name
            self.size = (frame.height, frame.width)
        elif self.last_time is not None and time > self.last_time:
            gap = time - self.last_time
            self.min_interval = min(self.min_interval, gap)
            self.max_interval = max(self.max_interval, gap)
        self.last_time = time
        self.frames += 1


def source_name(source: str | os.PathLike | BinaryIO) -> str:
    """A printable name for a path or a file object.

    >>> source_name("clips/a.mp4")
    'clips/a.mp4'
    """
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<file object>"))


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VideoNotFoundError(f"video file not found: {path}")
    if path.is_dir():
        raise VideoError(f"video path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")


def _open(source: str | os.PathLike | BinaryIO, name: str) -> av.container.InputContainer:
    """Open ``source`` without decoding anything (``HEADER_ONLY``)."""
    if isinstance(source, str | os.PathLike):
        _check_path(Path(source))
        source = os.fspath(source)
    try:
        return av.open(source, mode="r", metadata_errors="ignore", container_options=HEADER_ONLY)
    except av.FFmpegError as error:
        message = f"cannot open video {name}: not a readable media file ({error})"
        raise VideoError(message) from error
    except OSError as error:
        raise VideoError(f"cannot open video {name}: {error}") from error


def _check_header(container, stream, name: str, limits: DecodeLimits) -> None:
    """Raise ``VideoLimitError`` when the header alone breaks ``limits`` (0: it does not say)."""
    size = stream.codec_context.width, stream.codec_context.height
    why = limits.exceeded(*size, stream.frames, _container_duration(container, stream))
    if why is not None:
        raise VideoLimitError(f"video {name}: {why}")


def _decoder_max_pixels(limits: DecodeLimits) -> int:
    """FFmpeg's own ``max_pixels``: it decodes no larger frame, whatever the header says.

    Twice the limit, so that frames within the limit pass FFmpeg's check, which counts the
    width padded to its stride alignment (64); frames between the two are decoded, then refused.
    """
    return min(2 * limits.max_pixels, 2**31 - 1)


def _thread_count(threads: int, pixels: int) -> int:
    """Decoder threads for frames of ``pixels`` pixels (0: FFmpeg's choice, cores + 1).

    Each of FFmpeg's frame threads holds frames of its own: decoding a 4096×4096 H.264 clip
    with PyAV alone took +176 MB with 1 thread, +271 MB with 3, +529 MB with 9 and +909 MB with
    17, so large frames get at most ``FRAME_THREAD_PIXELS // pixels`` threads.

    >>> _thread_count(0, 1920 * 1080), _thread_count(16, 4096 * 4096)
    (0, 4)
    """
    cap = max(1, FRAME_THREAD_PIXELS // max(pixels, 1))
    wanted = threads or min((os.cpu_count() or 1) + 1, FFMPEG_MAX_THREADS)
    return cap if wanted > cap else threads


def _video_stream(
    container: av.container.InputContainer, name: str, threads: int, limits: DecodeLimits
) -> av.video.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(f"no video stream in {name} (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    pixels = stream.codec_context.width * stream.codec_context.height or limits.max_pixels
    threads = _thread_count(threads, pixels)
    if threads:
        stream.codec_context.thread_count = threads
    stream.codec_context.options = {"max_pixels": str(_decoder_max_pixels(limits))}
    return stream


def _container_duration(container: av.container.InputContainer, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return seconds
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _decoded_frames(
    container, stream, stats: _Stats, name: str, limits: DecodeLimits,
    cancel: threading.Event | None,
) -> Iterator[av.VideoFrame]:
    """Decode in order; a rejected packet is counted, a demuxing error ends the stream.

    ``cancel`` is checked before every packet, the decoder's frame size after every packet:
    H.264 and HEVC leave there the size of a frame FFmpeg refused (over
    ``_decoder_max_pixels``), with frame threads without an error.
    """
    packets = container.demux(stream)
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"decoding {name} was cancelled")
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as error:
            stats.truncated, stats.last_error = True, str(error)
            return
        stats.packets += packet.size > 0
        try:
            frames = packet.decode()
        except av.FFmpegError as error:
            frames = []
            stats.corrupt += 1
            stats.last_error = str(error)
        why = limits.exceeded(stream.codec_context.width, stream.codec_context.height)
        if why is not None:
            raise VideoLimitError(f"video {name}: {why}, found while decoding")
        yield from frames


def _frame_time(frame: av.VideoFrame, stats: _Stats, nominal_fps: float | None) -> float | None:
    """Presentation time in seconds; frames without a timestamp follow the previous one."""
    if frame.time is not None:
        return float(frame.time)
    if stats.last_time is None:
        return 0.0
    step = 1.0 / nominal_fps if nominal_fps else 1.0 / 25
    return stats.last_time + step


def output_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) no longer than ``max_side``, aspect ratio kept, at least 1 pixel.

    >>> output_size(4320, 7680, 1280)
    (720, 1280)
    """
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def _scales_in_source_format(frame: av.VideoFrame, width: int, height: int, fmt: str) -> bool:
    """True when a resize to another format is cheaper as: resize in YUV, then convert.

    swscale's combined resize + YUV → RGB path costs 2–4× a YUV resize followed by its
    unscaled (SIMD) colour conversion; full-range ``yuvj`` formats keep the one-step path.
    """
    name = frame.format.name
    resized = (width, height) != (frame.width, frame.height)
    return resized and fmt != name and name.startswith("yuv") and not name.startswith("yuvj")


class Converter:
    """swscale conversions with one cached context per geometry (a new context costs ~ms).

    Each conversion runs on the calling thread: swscale's own slice threads cost 30–40 % more
    CPU on frames this small, and the decoder's threads already keep the cores busy.
    """

    def __init__(self) -> None:
        self._reformatters: dict[tuple, VideoReformatter] = {}

    def __call__(self, frame: av.VideoFrame, width: int, height: int, fmt: str) -> av.VideoFrame:
        if _scales_in_source_format(frame, width, height, fmt):
            frame = self._reformat(frame, width, height, frame.format.name)
        return self._reformat(frame, width, height, fmt)

    def _reformat(self, frame: av.VideoFrame, width: int, height: int, fmt: str) -> av.VideoFrame:
        key = (frame.width, frame.height, frame.format.name, width, height, fmt)
        reformatter = self._reformatters.setdefault(key, VideoReformatter())
        return reformatter.reformat(frame, width=width, height=height, format=fmt, threads=1)


def _to_rgb_size(
    frame: av.VideoFrame, size: tuple[int, int], rotation: int, convert: Converter
) -> np.ndarray:
    """Convert one frame to (h, w, 3) uint8 RGB at display ``size``, in display orientation."""
    height, width = (size[1], size[0]) if rotation % 180 else size  # coded orientation
    array = convert(frame, width, height, "rgb24").to_ndarray()
    if rotation % 360:
        array = np.ascontiguousarray(np.rot90(array, k=(rotation // 90) % 4))
    return array


def _display(size: tuple[int, int], rotation: int) -> tuple[int, int]:
    return (size[1], size[0]) if rotation % 180 else size


def _to_rgb(frame: av.VideoFrame, rotation: int, max_side: int | None, convert) -> np.ndarray:
    """Convert one frame to RGB in display orientation, longest side at most ``max_side``."""
    size = output_size(frame.height, frame.width, max_side)
    return _to_rgb_size(frame, _display(size, rotation), rotation, convert)


def _keep_lazy(
    frame: av.VideoFrame,
    rotation: int,
    expected: int | None,
    max_side: int | None,
    thumbnail_size,
    convert: Converter,
    on_sample: OnSample | None = None,
):
    """(frame shrunk to ``max_side`` in its pixel format, RGB thumbnail, early RGB frame).

    The early RGB frame is at the size ``on_sample`` asks for, None when it asks for none.
    """
    height, width = output_size(frame.height, frame.width, max_side)
    if (height, width) != (frame.height, frame.width):
        frame = convert(frame, width, height, frame.format.name)
    if thumbnail_size is None:
        return frame, None, None
    display = _display((frame.height, frame.width), rotation)
    thumb = _to_rgb_size(frame, thumbnail_size(*display), rotation, convert)
    size = on_sample(thumb, display, expected) if on_sample is not None else None
    rgb = _to_rgb_size(frame, size, rotation, convert) if size is not None else None
    return frame, thumb, rgb


class _Sampler:
    """Keeps the frame nearest to each target time ``k · interval``; bounded by ``max_frames``."""

    def __init__(
        self, interval: float, max_frames: int, keeper: Keeper, expected: int | None = None
    ) -> None:
        self.interval, self.max_frames, self.keeper = interval, max_frames, keeper
        self.expected = expected  # frames to be kept if the container's duration is right
        self.target = 0.0
        self.previous: _Candidate | None = None
        self.kept: list[tuple[object, float, int]] = []
        self.rotation = 0

    def offer(self, candidate: _Candidate) -> None:
        while candidate.time >= self.target - 1e-9:
            self._choose(self.previous, candidate)
            self.target += self.interval
        self.previous = candidate

    def _choose(self, before: _Candidate | None, after: _Candidate) -> None:
        if before is not None and self.target - before.time <= after.time - self.target:
            best = before
        else:
            best = after
        if not best.emitted:
            best.emitted = True
            self._keep(best)

    def finish(self, last_duration: float) -> None:
        """Keep the last frame when a target falls inside its display time."""
        last = self.previous
        if last is not None and not last.emitted and self.target < last.time + last_duration - 1e-6:
            last.emitted = True
            self._keep(last)

    def _keep(self, candidate: _Candidate) -> None:
        kept = self.keeper(candidate.frame, self.rotation, self.expected)
        self.kept.append((kept, candidate.time, candidate.index))
        if len(self.kept) > self.max_frames:
            self._thin()

    def _thin(self) -> None:
        """Halve the sampling rate: keep every other frame and double the interval."""
        self.kept = self.kept[::2]
        self.interval *= 2
        self.target = math.ceil((self.kept[-1][1] + 1e-9) / self.interval) * self.interval


def _initial_interval(config: DecodeConfig, duration: float | None) -> float:
    if duration is None:
        return config.interval
    return max(config.interval, duration / config.max_frames)


def _expected_count(duration: float | None, interval: float, max_frames: int) -> int | None:
    """Targets ``k · interval`` before the end of a clip of ``duration`` seconds.

    >>> _expected_count(10.0, 0.125, 256), _expected_count(None, 0.125, 256)
    (80, None)
    """
    if duration is None:
        return None
    return min(max_frames, max(1, math.ceil(duration / interval - 1e-6)))


def _stream_samples(
    container, stream, config: DecodeConfig, name: str, keeper: Keeper,
    limits: DecodeLimits, cancel: threading.Event | None,
) -> tuple[_Sampler, _Stats]:
    nominal = float(stream.guessed_rate) if stream.guessed_rate else None
    duration = _container_duration(container, stream)
    interval = _initial_interval(config, duration)
    expected = _expected_count(duration, interval, config.max_frames)
    sampler = _Sampler(interval, config.max_frames, keeper, expected)
    stats = _Stats()
    try:
        decoded = _decoded_frames(container, stream, stats, name, limits, cancel)
        for index, frame in enumerate(decoded):
            time = _frame_time(frame, stats, nominal)
            span = time - (stats.first_time if stats.first_time is not None else time)
            why = limits.exceeded(frame.width, frame.height, index + 1, span)
            if why is not None:  # the header did not say, or lied
                raise VideoLimitError(f"video {name}: {why}, found while decoding")
            if stats.last_time is not None and time < stats.last_time:
                continue  # a timestamp going backwards (corrupt stream): not a new moment
            stats.observe(frame, time)
            sampler.rotation = stats.rotation
            sampler.offer(_Candidate(frame, time - stats.first_time, index))
    except (av.FFmpegError, ValueError) as error:
        raise VideoError(f"decoding failed for {name}: {error}") from error
    gap = stats.min_interval if math.isfinite(stats.min_interval) else (1 / (nominal or 25))
    sampler.finish(gap)
    return sampler, stats


def _info(container, stream, stats: _Stats, name: str) -> VideoInfo:
    height, width = stats.size or (stream.height, stream.width)
    if stats.rotation % 180:
        height, width = width, height
    span = (stats.last_time or 0.0) - (stats.first_time or 0.0)
    has_gaps = math.isfinite(stats.min_interval)
    return VideoInfo(
        source=name,
        container=container.format.name,
        codec=stream.codec_context.name,
        pix_fmt=stats.pix_fmt,
        width=width,
        height=height,
        rotation=stats.rotation,
        duration=_container_duration(container, stream),
        nominal_fps=float(stream.guessed_rate) if stream.guessed_rate else None,
        avg_fps=(stats.frames - 1) / span if span > 0 else None,
        min_interval=stats.min_interval if has_gaps else None,
        max_interval=stats.max_interval if has_gaps else None,
        num_frames=stats.frames,
        corrupt_packets=stats.corrupt,
        truncated=stats.truncated,
        last_error=stats.last_error,
    )


def _check_coverage(info: VideoInfo, config: DecodeConfig) -> None:
    """A file whose frames stop well before its declared duration is truncated or corrupt."""
    span, duration = info.decoded_span, info.duration
    if span and duration and span < config.min_coverage * duration:
        raise VideoError(
            f"incomplete video {info.source}: decoded frames cover {span:.2f} s of the "
            f"{duration:.2f} s the container declares (truncated or corrupt file; "
            f"min_coverage={config.min_coverage})"
        )


def _check_decoded(stats: _Stats, config: DecodeConfig, name: str) -> None:
    if stats.frames == 0:
        detail = f": {stats.corrupt} corrupt packets, last error: {stats.last_error}"
        raise VideoError(
            f"no decodable video frames in {name}" + (detail if stats.last_error else "")
        )
    if stats.packets and stats.corrupt / stats.packets > config.max_corrupt_fraction:
        raise VideoError(
            f"too many corrupt packets in {name}: {stats.corrupt} of {stats.packets} could not be "
            f"decoded (max_corrupt_fraction={config.max_corrupt_fraction}); last error: "
            f"{stats.last_error}"
        )


def _sample(
    source, config: DecodeConfig, keeper: Keeper, limits: DecodeLimits,
    cancel: threading.Event | None,
) -> tuple:
    """Stream through ``source``; returns (kept items, timestamps, indices, info, interval)."""
    name = source_name(source)
    with _open(source, name) as container:
        stream = _video_stream(container, name, config.threads, limits)
        _check_header(container, stream, name, limits)
        sampler, stats = _stream_samples(container, stream, config, name, keeper, limits, cancel)
        _check_decoded(stats, config, name)
        info = _info(container, stream, stats, name)
    _check_coverage(info, config)
    kept, times, indices = zip(*sampler.kept, strict=True)
    times = np.asarray(times, dtype=np.float64)
    return list(kept), times, np.asarray(indices, dtype=np.int64), info, sampler.interval


def decode_video(
    source: str | os.PathLike | BinaryIO,
    config: DecodeConfig = DecodeConfig(),
    *,
    limits: DecodeLimits = DecodeLimits(),
    cancel: threading.Event | None = None,
) -> DecodedVideo:
    """Decode ``source`` and sample frames at ``config.fps`` by presentation time.

    Raises ``VideoError`` naming the file (the decoder's message chained) when the file is
    missing, empty, not a media file, has no video stream or no decodable frame;
    ``VideoLimitError`` when it is beyond ``limits`` (from its header before anything is
    decoded, else as soon as a decoded frame shows it); ``Cancelled`` once ``cancel`` is set.
    """
    convert = Converter()

    def keeper(frame: av.VideoFrame, rotation: int, expected: int | None) -> np.ndarray:
        return _to_rgb(frame, rotation, config.max_side, convert)

    frames, times, indices, info, interval = _sample(source, config, keeper, limits, cancel)
    return DecodedVideo(np.stack(frames), times, indices, info, interval)


@dataclass
class SampledFrames:
    """Sampled frames kept in the decoder's pixel format, converted to RGB on demand.

    Converting straight from YUV to the final size avoids an RGB resize per frame;
    ``thumbnails`` are small RGB copies made during decoding (for similarity), ``early`` the RGB
    frames converted during decoding at the sizes ``on_sample`` guessed.
    """

    frames: list[av.VideoFrame]  # coded orientation, longest side ≤ max_side
    thumbnails: np.ndarray | None  # (N, h, w, 3) uint8 RGB, display orientation
    timestamps: np.ndarray  # (N,) seconds from the first frame
    source_indices: np.ndarray  # (N,) presentation index
    info: VideoInfo
    sample_interval: float
    early: list[np.ndarray | None] = field(default_factory=list)  # RGB made during decoding
    convert: Converter = field(default_factory=Converter)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the kept frames in display orientation."""
        frame = self.frames[0]
        turned = self.info.rotation % 180 != 0
        return (frame.width, frame.height) if turned else (frame.height, frame.width)

    def to_rgb(self, sizes: Sequence[tuple[int, int]],
               positions: Sequence[int] | None = None) -> list[np.ndarray]:
        """The frames at ``positions`` (default: all) as (h, w, 3) uint8 RGB, each at its
        display size ``sizes[i]`` (height, width).

        A frame converted during decoding at that size is reused; the others convert now.
        """
        positions = range(len(self.frames)) if positions is None else positions
        if len(sizes) != len(positions):
            raise ValueError(f"{len(sizes)} sizes for {len(positions)} frames")
        early = self.early or [None] * len(self.frames)
        return [
            early[i] if early[i] is not None and early[i].shape[:2] == tuple(size)
            else _to_rgb_size(self.frames[i], tuple(size), self.info.rotation, self.convert)
            for i, size in zip(positions, sizes, strict=True)
        ]


def sample_frames(
    source: str | os.PathLike | BinaryIO,
    config: DecodeConfig = DecodeConfig(),
    thumbnail_size: Callable[[int, int], tuple[int, int]] | None = None,
    on_sample: OnSample | None = None,
    *,
    limits: DecodeLimits = DecodeLimits(),
    cancel: threading.Event | None = None,
) -> SampledFrames:
    """Like ``decode_video`` (the same errors, ``limits`` and ``cancel``) but keeps frames
    unconverted, with optional RGB thumbnails.

    ``thumbnail_size(height, width) -> (h, w)`` maps the display size to the thumbnail size.
    ``on_sample(thumb, size, expected)`` is called with each thumbnail as soon as its frame is
    sampled, on the conversion thread (while the decoder threads go on), in sampling order,
    with the frame's display ``size`` and the number of frames the sampler expects to keep
    (None when the container gives no duration). It may return a display size: the frame is
    then converted to RGB at that size at once (``SampledFrames.early``). Frames dropped later
    by the ``max_frames`` thinning were passed to it too, so it has then seen more thumbnails
    than ``SampledFrames.thumbnails`` holds.
    """
    convert = Converter()  # the worker thread's during decoding, then SampledFrames'
    keep = functools.partial(
        _keep_lazy,
        max_side=config.max_side,
        thumbnail_size=thumbnail_size,
        convert=convert,
        on_sample=on_sample,
    )
    # One worker thread, so thumbnails reach on_sample in sampling order; swscale, OpenCV
    # and numpy release the GIL, so this work overlaps the decoder's. Frames wait for it at
    # the decoder's size, so at most MAX_QUEUED of them, MAX_QUEUED_BYTES in all, may wait.
    queued: deque[tuple[Future, int]] = deque()

    def submit(frame: av.VideoFrame, rotation: int, expected: int | None) -> Future:
        size = sum(plane.buffer_size for plane in frame.planes)
        while queued and (
            len(queued) >= MAX_QUEUED or size + sum(b for _, b in queued) > MAX_QUEUED_BYTES
        ):
            queued.popleft()[0].result()
        queued.append((worker.submit(keep, frame, rotation, expected), size))
        return queued[-1][0]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qsave-frames") as worker:
        futures, times, indices, info, interval = _sample(source, config, submit, limits, cancel)
        try:
            kept = [future.result() for future in futures]
        except (av.FFmpegError, ValueError) as error:
            raise VideoError(
                f"converting frames failed for {source_name(source)}: {error}"
            ) from error
    frames, thumbs, early = (list(column) for column in zip(*kept, strict=True))
    thumbs = np.stack(thumbs) if thumbnail_size is not None else None
    return SampledFrames(frames, thumbs, times, indices, info, interval, early, convert)
