"""Decoding and 8 fps sampling by presentation time (issue 3, items 1 and 5)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter
from videoclips import ENCODINGS, ClipSpec, corner, level, write_audio_only, write_clip

from qsave.errors import ConfigError, VideoError, VideoLimitError
from qsave.video.decode import (
    Converter,
    DecodeConfig,
    DecodeLimits,
    _scales_in_source_format,
    decode_video,
    sample_frames,
)


def _noise(index: int, height: int, width: int) -> np.ndarray:
    """Incompressible frames, so that damaging the file damages many packets."""
    return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _expected_indices(times: list[float], fps: float) -> list[int]:
    """Nearest source frame to each target k/fps (ties to the earlier), deduplicated."""
    chosen: list[int] = []
    for k in range(int(np.ceil((times[-1] + 1e-9) * fps)) + 1):
        target = k / fps
        if target > times[-1] + (times[-1] - times[-2]) - 1e-6:
            break
        best = int(np.argmin([abs(t - target) + 1e-12 * i for i, t in enumerate(times)]))
        if not chosen or chosen[-1] != best:
            chosen.append(best)
    return chosen


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_real_world_encodings_sample_the_right_frames(tmp_path, name):
    spec = ENCODINGS[name]
    video = decode_video(write_clip(tmp_path / f"clip{spec.suffix}", spec))
    times = [i / spec.fps for i in range(round(spec.seconds * spec.fps))]
    expected = _expected_indices(times, 8.0)
    assert video.source_indices.tolist() == expected
    np.testing.assert_allclose(video.timestamps, [times[i] for i in expected], atol=2e-3)
    means = video.frames.reshape(len(expected), -1).mean(axis=1)
    assert np.abs(means - [level(i) for i in expected]).max() < 5  # levels are 6 apart
    assert video.frames.shape[1:] == (spec.height, spec.width, 3)
    assert video.frames.dtype == np.uint8
    assert video.info.width == spec.width and video.info.height == spec.height
    assert not video.info.is_vfr


def test_info_reports_codec_pixel_format_and_rates(tmp_path):
    video = decode_video(write_clip(tmp_path / "a.mkv", ENCODINGS["hevc10-mp4"]))
    info = video.info
    assert (info.codec, info.pix_fmt) == ("hevc", "yuv420p10le")
    assert info.nominal_fps == pytest.approx(30)
    assert info.avg_fps == pytest.approx(30, rel=0.01)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.num_frames == 30 and info.rotation == 0


def test_variable_frame_rate_is_sampled_by_timestamp(tmp_path):
    # 30 fps for 1 s, then 5 fps for 1 s: frame count × fps would land on the wrong frames.
    times = [i / 30 for i in range(30)] + [1 + i / 5 for i in range(5)]
    spec = ClipSpec(container="matroska", suffix=".mkv", fps=30, times=times)
    video = decode_video(write_clip(tmp_path / "vfr.mkv", spec))
    assert video.info.is_vfr
    expected = _expected_indices(times, 8.0)
    assert video.source_indices.tolist() == expected
    np.testing.assert_allclose(video.timestamps, [times[i] for i in expected], atol=2e-3)
    # in the 5 fps part every source frame is kept once, never duplicated
    assert video.source_indices.tolist()[-5:] == [30, 31, 32, 33, 34]


def test_bogus_frame_rate_metadata_is_ignored(tmp_path):
    # The header claims 30 fps but frames are 0.1 s apart: sampling follows the timestamps.
    times = [i / 10 for i in range(20)]
    spec = ClipSpec(container="matroska", suffix=".mkv", fps=30, times=times)
    video = decode_video(write_clip(tmp_path / "bogus.mkv", spec))
    assert video.info.avg_fps == pytest.approx(10, rel=0.01)
    expected = _expected_indices(times, 8.0)
    assert len(expected) == 16  # 2 s at 8 fps
    assert video.source_indices.tolist() == expected
    np.testing.assert_allclose(video.timestamps, [times[i] for i in expected], atol=2e-3)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    spec = ClipSpec(width=64, height=32, seconds=0.25, rotation=rotation)
    video = decode_video(write_clip(tmp_path / "rot.mp4", spec, paint=corner))
    frame = video.frames[0].astype(int)
    turned = rotation % 180 != 0
    assert frame.shape[:2] == ((64, 32) if turned else (32, 64))
    assert (video.info.width, video.info.height) == ((32, 64) if turned else (64, 32))
    # the bright top-left quadrant of the coded frame moves with the rotation (counter-clockwise)
    bright = {90: (1, 0), -90: (0, 1), 180: (1, 1)}[rotation]  # (row half, column half)
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    quadrant = frame[bright[0] * h : (bright[0] + 1) * h, bright[1] * w : (bright[1] + 1) * w]
    assert quadrant.mean() > 200 and frame.mean() < 130


def test_sample_frames_matches_decode_video(tmp_path):
    path = write_clip(tmp_path / "r.mp4", ClipSpec(seconds=0.5, rotation=90), paint=corner)
    decoded = decode_video(path)
    lazy = sample_frames(path, thumbnail_size=lambda h, w: (h // 2, w // 2))
    assert lazy.size == decoded.frames.shape[1:3]
    height, width = decoded.frames.shape[1:3]
    assert lazy.thumbnails.shape[1:3] == (height // 2, width // 2)
    np.testing.assert_array_equal(lazy.to_rgb([lazy.size] * len(lazy.frames))[0], decoded.frames[0])


def test_conversion_thread_failure_names_the_file(tmp_path):
    path = write_clip(tmp_path / "c.mp4", ClipSpec(seconds=0.5))
    with pytest.raises(VideoError, match=r"failed for .*c\.mp4"):
        sample_frames(path, thumbnail_size=lambda h, w: (0, 0))  # swscale refuses 0 × 0


def test_eight_k_frame_is_downscaled_during_conversion(tmp_path):
    spec = ClipSpec(codec="mjpeg", container="mov", suffix=".mov", pix_fmt="yuvj420p")
    spec = ClipSpec(**{**spec.__dict__, "width": 7680, "height": 4320, "fps": 1, "seconds": 1})
    path = write_clip(tmp_path / "8k.mov", spec)
    with pytest.raises(VideoLimitError, match="max_pixels"):  # 8K is over the default limit
        decode_video(path, DecodeConfig(max_side=640))
    video = decode_video(path, DecodeConfig(max_side=640),
                         limits=DecodeLimits(max_pixels=7680 * 4320))
    assert video.frames.shape == (1, 360, 640, 3)
    assert (video.info.width, video.info.height) == (7680, 4320)


def test_ten_minute_clip_stays_bounded(tmp_path):
    # 600 s at 2 fps, 32×32: the frame cap spreads the samples over the whole clip.
    spec = ClipSpec(width=32, height=32, fps=2, seconds=600, options=(("preset", "ultrafast"),))
    video = decode_video(write_clip(tmp_path / "long.mp4", spec), DecodeConfig(max_frames=64))
    assert len(video.frames) <= 64
    assert video.info.num_frames == 1200
    assert video.timestamps[-1] > 570
    assert np.all(np.diff(video.timestamps) > 0)


def test_frame_cap_without_known_duration_thins_by_half(tmp_path):
    # A raw H.264 stream has no duration: the sampler halves its rate whenever the cap is hit.
    spec = ClipSpec(container="h264", suffix=".h264", seconds=2)
    video = decode_video(write_clip(tmp_path / "raw.h264", spec), DecodeConfig(max_frames=5))
    assert video.info.duration is None
    assert 3 <= len(video.frames) <= 5
    assert video.timestamps[0] == 0 and video.timestamps[-1] > 1.0


def test_file_object_is_accepted(tmp_path):
    data = write_clip(tmp_path / "a.mkv", ENCODINGS["vp9-webm"]).read_bytes()
    video = decode_video(io.BytesIO(data))
    assert len(video.frames) == 8 and video.info.source == "<file object>"


# --- bad input: each gets a specific VideoError naming the file ------------------------------


def _error(source, config: DecodeConfig | None = None) -> VideoError:
    with pytest.raises(VideoError) as caught:
        decode_video(source, config or DecodeConfig())
    return caught.value


def test_missing_file(tmp_path):
    assert str(_error(tmp_path / "nope.mp4")) == f"video file not found: {tmp_path / 'nope.mp4'}"


def test_directory(tmp_path):
    assert "is a directory" in str(_error(tmp_path))


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert str(_error(path)) == f"video file is empty (0 bytes): {path}"


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    error = _error(path)
    assert str(error).startswith(f"cannot open video {path}: not a readable media file")
    assert error.__cause__ is not None  # the decoder's own message is chained


def test_audio_only(tmp_path):
    path = write_audio_only(tmp_path / "tone.wav")
    assert str(_error(path)) == f"no video stream in {path} (streams: audio)"


def test_truncated_mp4_without_index(tmp_path):
    data = write_clip(tmp_path / "full.mp4", ClipSpec(seconds=2), paint=_noise).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert "cannot open video" in str(_error(path))


def test_truncated_matroska_ends_early(tmp_path):
    spec = ClipSpec(container="matroska", suffix=".mkv", seconds=2)
    data = write_clip(tmp_path / "full.mkv", spec, paint=_noise).read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: len(data) // 2])
    message = str(_error(path))
    assert message.startswith(f"incomplete video {path}: decoded frames cover")
    partial = decode_video(path, DecodeConfig(min_coverage=0))  # accepted when asked to
    assert 0 < partial.info.num_frames < 60


def _damage(data: bytes, start: float, stop: float) -> bytes:
    damaged = bytearray(data)
    a, b = int(len(data) * start), int(len(data) * stop)
    damaged[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    return bytes(damaged)


def test_mostly_corrupt_packets(tmp_path):
    data = write_clip(tmp_path / "full.mp4", ClipSpec(seconds=2), paint=_noise).read_bytes()
    path = tmp_path / "bad.mp4"
    path.write_bytes(_damage(data, 0.25, 0.75))
    message = str(_error(path))
    assert message.startswith(f"too many corrupt packets in {path}")
    assert "Invalid data" in message


def test_a_few_corrupt_packets_are_counted_not_fatal(tmp_path):
    import av

    path = write_clip(tmp_path / "spots.mp4", ClipSpec(seconds=2), paint=_noise)
    with av.open(str(path)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size][20:23]
    damaged = bytearray(path.read_bytes())
    for pos in positions:  # an absurd NAL length prefix: the decoder rejects the packet
        damaged[pos : pos + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(damaged))
    video = decode_video(path)
    assert video.info.corrupt_packets == 3
    assert "Invalid data" in video.info.last_error
    assert len(video.frames) >= 12


def test_config_is_validated():
    with pytest.raises(ConfigError, match=r"fps \(0\)"):
        DecodeConfig(fps=0)
    with pytest.raises(ConfigError, match="max_frames"):
        DecodeConfig(max_frames=0)
    with pytest.raises(ConfigError, match=r"threads \(-1\)"):
        DecodeConfig(threads=-1)


def test_one_decoder_thread_gives_the_same_frames(tmp_path):
    path = write_clip(tmp_path / "t.mp4", ClipSpec(seconds=1.0), paint=corner)
    automatic, single = decode_video(path), decode_video(path, DecodeConfig(threads=1))
    np.testing.assert_array_equal(single.frames, automatic.frames)
    np.testing.assert_array_equal(single.timestamps, automatic.timestamps)


@pytest.mark.parametrize(
    ("fmt", "size", "two_step"),
    [
        ("yuv420p", (160, 120), True),
        ("yuv420p10le", (160, 120), True),
        ("yuv420p", (320, 240), False),  # no resize: swscale's unscaled conversion already
        ("yuvj420p", (160, 120), False),  # full range: left to swscale's one pass
        ("gray", (160, 120), False),
        ("rgb24", (160, 120), False),
    ],
)
def test_converter_resizes_in_yuv_then_converts_like_one_swscale_pass(fmt, size, two_step):
    # A YUV resize then the unscaled YUV → RGB conversion costs a fraction of swscale's
    # combined path; the pixels agree up to chroma rounding.
    yy, xx = np.mgrid[0:240, 0:320]
    rgb = np.stack([xx * 255 // 319, yy * 255 // 239, (xx + yy) * 255 // 558], -1)
    frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format=fmt)
    assert _scales_in_source_format(frame, *size, "rgb24") is two_step
    width, height = size
    one_pass = VideoReformatter().reformat(frame, width, height, format="rgb24").to_ndarray()
    converted = Converter()(frame, width, height, "rgb24").to_ndarray()
    assert converted.shape == (height, width, 3)
    assert np.abs(converted.astype(int) - one_pass).mean() < 1.0
