"""Decoding limits and cancellation on real files decoded by PyAV (no mocks).

A file beyond ``DecodeLimits`` is refused from its header before anything is decoded, else as
soon as decoding shows it (a header that lies or says nothing); a ``cancel`` event stops a long
decode at the next packet.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hostile import write_huge_clip, write_long_clip, write_resizing_clip
from videoclips import ClipSpec, write_clip

import qsave
from qsave.errors import Cancelled, ConfigError, VideoError, VideoLimitError
from qsave.video import decode
from qsave.video.decode import DecodeConfig, DecodeLimits, decode_video, sample_frames
from qsave.video.inputs import VideoConfig, prepare_video

HUGE_MESSAGE = (
    "16000×16000 = 256,000,000 pixels per frame exceeds max_pixels (16,777,216 = 4096×4096)"
)
REFUSAL_RSS_MB = 16  # measured +0–5 MB; one 16000×16000 frame is 32 MB even at 1 bit per pixel
FOUND = "found while decoding"  # how a refusal after the header check ends

# Run in a fresh process: RSS growth (ru_maxrss, KiB on Linux) of refusing argv[2], after a
# warm-up decode of argv[1] so that libraries' first-use allocations are not counted.
_MEASURE = """
import json, resource, sys
from qsave.errors import VideoLimitError
from qsave.video.decode import sample_frames
sample_frames(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    sample_frames(sys.argv[2])
    message = None
except VideoLimitError as error:
    message = str(error)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"message": message, "growth_mb": growth / 1024}))
"""


def _refusal_in_fresh_process(warm_up: Path, video: Path) -> dict:
    env = {"PYTHONPATH": str(Path(qsave.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(warm_up), str(video)],
        capture_output=True, text=True, timeout=120, check=True, env=env,
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("suffix", [".avi", ".mov"])
def test_huge_clip_is_refused_by_its_header_with_tiny_memory(tmp_path, suffix):
    huge = write_huge_clip(tmp_path / f"huge{suffix}")
    small = write_clip(tmp_path / "small.mp4")
    result = _refusal_in_fresh_process(small, huge)
    assert result["message"] == f"video {huge}: {HUGE_MESSAGE}"  # no decoding: no suffix
    assert result["growth_mb"] < REFUSAL_RSS_MB


def test_huge_upload_is_refused_from_its_bytes(tmp_path):
    data = write_huge_clip(tmp_path / "huge.avi").read_bytes()
    with pytest.raises(VideoLimitError, match=re.escape(HUGE_MESSAGE)):
        sample_frames(io.BytesIO(data))
    with pytest.raises(VideoLimitError, match=re.escape(HUGE_MESSAGE)):
        prepare_video(io.BytesIO(data))


def test_limit_errors_are_video_errors(tmp_path):
    with pytest.raises(VideoError):
        decode_video(write_huge_clip(tmp_path / "huge.avi", frames=1))


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_frame_count_in_the_header_is_checked_before_decoding(tmp_path, suffix):
    long = write_long_clip(tmp_path / f"long{suffix}", 36_001)  # 36 s at 1000 fps
    with pytest.raises(VideoLimitError) as caught:
        sample_frames(long)
    assert str(caught.value) == (
        f"video {long}: 36,001 frames exceed max_decoded_frames (36,000)"
    )


def test_duration_in_the_header_is_checked_before_decoding(tmp_path):
    slow = write_long_clip(tmp_path / "slow.mp4", 601, fps=1)
    with pytest.raises(VideoLimitError) as caught:
        decode_video(slow)
    assert str(caught.value) == (
        f"video {slow}: 601.00 s of presentation time exceeds max_duration_s (600 s)"
    )


def test_frame_count_is_checked_while_decoding_when_the_header_has_none(tmp_path):
    long = write_long_clip(tmp_path / "long.mkv", 36_001)  # Matroska states no frame count
    with pytest.raises(VideoLimitError) as caught:
        sample_frames(long)
    assert str(caught.value) == (
        f"video {long}: 36,001 frames exceed max_decoded_frames (36,000), {FOUND}"
    )
    within = write_long_clip(tmp_path / "within.mkv", 100)
    assert sample_frames(within, limits=DecodeLimits(max_decoded_frames=100)).info.num_frames == 100
    with pytest.raises(VideoLimitError, match=re.escape(f"(99), {FOUND}")):
        sample_frames(within, limits=DecodeLimits(max_decoded_frames=99))


def test_duration_is_checked_while_decoding_a_raw_stream(tmp_path):
    raw = write_resizing_clip(tmp_path / "raw.mjpeg", [(16, 16)] * 50)  # 2 s at 25 fps, no header
    assert sample_frames(raw, limits=DecodeLimits(max_duration_s=2.0)).info.num_frames == 50
    with pytest.raises(VideoLimitError) as caught:
        sample_frames(raw, limits=DecodeLimits(max_duration_s=1.5))
    assert str(caught.value) == (
        f"video {raw}: 1.52 s of presentation time exceeds max_duration_s (1.5 s), {FOUND}"
    )


@pytest.mark.parametrize("suffix", [".mkv", ".avi", ".mjpeg"])
def test_a_header_that_lies_about_the_size_is_caught_while_decoding(tmp_path, suffix):
    # The header states 64×48 (Matroska, AVI) or nothing (raw MJPEG); frame 31 is 128×96.
    clip = write_resizing_clip(tmp_path / f"lying{suffix}", [(64, 48)] * 30 + [(128, 96)] * 5)
    limits = DecodeLimits(max_pixels=8_000)
    with pytest.raises(VideoLimitError) as caught:
        sample_frames(clip, limits=limits)
    assert str(caught.value) == (
        f"video {clip}: 128×96 = 12,288 pixels per frame exceeds max_pixels (8,000), {FOUND}"
    )
    assert sample_frames(clip, limits=DecodeLimits(max_pixels=12_288)).info.num_frames == 35


def test_a_frame_over_ffmpegs_own_limit_is_refused_without_decoding_it(tmp_path):
    # Raw H.264: 32×24 frames, then 128×96 ones, over FFmpeg's max_pixels (twice the limit),
    # which refuses to decode them; the decoder still reports their size.
    clip = write_resizing_clip(
        tmp_path / "lying.h264", [(32, 24)] * 10 + [(128, 96)] * 3, codec="libx264"
    )
    assert sample_frames(clip).info.num_frames == 13
    with pytest.raises(VideoLimitError, match=f"128×96 = 12,288 pixels .*, {FOUND}"):
        sample_frames(clip, limits=DecodeLimits(max_pixels=2_000))


def test_cancel_from_another_thread_stops_a_long_decode(tmp_path):
    long = write_long_clip(tmp_path / "long.mkv", 20_000)
    started = time.perf_counter()
    assert sample_frames(long).info.num_frames == 20_000
    full = time.perf_counter() - started
    cancel = threading.Event()
    threading.Timer(min(0.05, full / 10), cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(Cancelled, match=f"decoding {long} was cancelled"):
        sample_frames(long, cancel=cancel)
    assert time.perf_counter() - started < full / 2, full


def test_a_cancelled_event_stops_before_the_first_packet(tmp_path):
    cancel = threading.Event()
    cancel.set()
    clip = write_clip(tmp_path / "clip.mp4")
    with pytest.raises(Cancelled):
        decode_video(clip, cancel=cancel)
    with pytest.raises(Cancelled):
        prepare_video(clip, VideoConfig(), DecodeLimits(), cancel)


def test_prepare_video_passes_the_limits_through(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(width=64, height=48))
    with pytest.raises(VideoLimitError, match=r"64×48 = 3,072 pixels per frame exceeds max_pixels"):
        prepare_video(clip, VideoConfig(), DecodeLimits(max_pixels=3_071))


def test_waiting_frames_bounded_in_bytes_give_the_same_samples(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(seconds=2))
    expected = sample_frames(clip, thumbnail_size=lambda h, w: (8, 8))
    monkeypatch.setattr(decode, "MAX_QUEUED_BYTES", 1)  # one frame waits at a time
    sampled = sample_frames(clip, thumbnail_size=lambda h, w: (8, 8))
    assert sampled.source_indices.tolist() == expected.source_indices.tolist()
    assert (sampled.thumbnails == expected.thumbnails).all()


def test_default_limits_and_their_messages():
    limits = DecodeLimits()
    assert (limits.max_pixels, limits.max_decoded_frames, limits.max_duration_s) == (
        4096 * 4096, 36_000, 600.0
    )
    assert limits.exceeded(4096, 4096, 36_000, 600.0) is None
    assert limits.exceeded(16000, 16000) == HUGE_MESSAGE
    assert limits.exceeded(3840, 2160, 36_001) == (
        "36,001 frames exceed max_decoded_frames (36,000)"
    )
    assert DecodeLimits(max_pixels=8_000).exceeded(128, 96).endswith("max_pixels (8,000)")


@pytest.mark.parametrize(
    "values",
    [
        {"max_pixels": 0},
        {"max_pixels": 1.5},
        {"max_pixels": True},
        {"max_decoded_frames": -1},
        {"max_duration_s": 0},
        {"max_duration_s": float("nan")},
        {"max_duration_s": float("inf")},
        {"max_duration_s": "600"},
    ],
)
def test_invalid_limits_are_config_errors(values):
    with pytest.raises(ConfigError, match=next(iter(values))):
        DecodeLimits(**values)


def test_large_frames_get_fewer_decoder_threads():
    assert decode._thread_count(0, 1280 * 720) == 0  # FFmpeg's own choice
    assert decode._thread_count(3, 1280 * 720) == 3
    assert decode._thread_count(16, 4096 * 4096) == 4
    assert decode._thread_count(0, 16000 * 16000) == 1


def test_decode_config_threads_still_apply(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    assert len(decode_video(clip, DecodeConfig(threads=1)).frames) == 8
