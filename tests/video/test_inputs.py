"""SlowFast plan → Qwen3-VL processor inputs (issue 3, items 3, 4 and 7)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from videoclips import ClipSpec, stripes, write_clip

from qsave.errors import ConfigError, VideoError
from qsave.video.decode import DecodeConfig, sample_frames
from qsave.video.inputs import (
    VideoConfig,
    prepare_video,
    processor_video_kwargs,
    video_content,
)
from qsave.video.slowfast import (
    Labeler,
    SizeForecast,
    SlowFastConfig,
    label_thumbnails,
    thumbnail_size,
)

SC = SlowFastConfig()
LOSSLESS = ClipSpec(
    codec="ffv1", container="matroska", suffix=".mkv", width=224, height=168, pix_fmt="yuv444p"
)


def scenes(index: int, height: int, width: int) -> np.ndarray:
    """At 24 fps sampled at 8 fps: static (S F F F), a cut (S F), a fast pan (S S S ...)."""
    sampled = index // 3
    if sampled < 4:
        return stripes(0, True, height, width)
    if sampled < 6:
        return stripes(0, False, height, width)
    return stripes(7 * (sampled - 5), False, height, width)  # 7 px per sample: always slow


def _render(processor, prepared: list, text: str = "Rate the video."):
    chats = [
        processor.apply_chat_template(
            [{"role": "user", "content": [*video_content(p), {"type": "text", "text": text}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in prepared
    ]
    kwargs = processor_video_kwargs(prepared)
    return processor(text=chats, padding=True, return_tensors="pt", **kwargs)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    spec = ClipSpec(**{**LOSSLESS.__dict__, "fps": 24, "seconds": 9 / 8})
    return write_clip(tmp_path_factory.mktemp("inputs") / "scenes.mkv", spec, paint=scenes)


@pytest.fixture(scope="module")
def prepared(clip):
    return prepare_video(clip)


def test_plan_follows_the_scenes(prepared):
    plan = prepared.plan
    assert "".join("S" if s else "F" for s in plan.references) == "SFFF" + "SF" + "SSS"
    assert "".join("S" if s else "F" for s in plan.slow) == "SSFF" + "SS" + "SSS"  # patches
    assert [len(v) for v in prepared.videos] == [2, 2, 6]  # runs 2, 2, 5 (the last padded)
    assert [v.shape[1:3] for v in prepared.videos] == [plan.slow_size, plan.fast_size,
                                                       plan.slow_size]
    assert all(v.dtype == np.uint8 and v.shape[-1] == 3 for v in prepared.videos)


def test_processor_token_count_equals_the_plan(tiny, prepared):
    processor = tiny.processor
    inputs = _render(processor, [prepared])
    count = int((inputs["input_ids"] == processor.video_token_id).sum())
    assert count == prepared.num_tokens
    grid = inputs["video_grid_thw"].tolist()
    assert [t for t, _, _ in grid] == [1, 1, 3]
    assert [h * 16 for _, h, _ in grid] == [v.shape[1] for v in prepared.videos]  # no resize


def test_timestamps_are_the_absolute_frame_times(tiny, prepared):
    inputs = _render(tiny.processor, [prepared])
    text = tiny.processor.batch_decode(inputs["input_ids"])[0]
    shown = [float(t) for t in re.findall(r"<([\d.]+) seconds>", text)]
    times = prepared.plan.timestamps
    expected = []
    for run in prepared.plan.runs:  # one <t> per temporal patch: the mean of its two frames
        ts = list(times[run.start : run.stop])
        ts += ts[-1:] * (len(ts) % 2)
        expected += [round((a + b) / 2, 1) for a, b in zip(ts[::2], ts[1::2], strict=True)]
    assert shown == pytest.approx(expected, abs=0.051)
    assert shown[-1] > 0.9  # the last run starts at 0.75 s: times are absolute, not per run


def test_batch_of_two_videos(tiny, prepared, clip):
    config = VideoConfig(
        decode=DecodeConfig(max_frames=16), slowfast=SlowFastConfig(slow_budget=20, fast_budget=20)
    )
    small = prepare_video(clip, config)
    assert small.num_tokens <= 40 < prepared.num_tokens
    processor = tiny.processor
    inputs = _render(processor, [prepared, small])
    counts = (inputs["input_ids"] == processor.video_token_id).sum(dim=1).tolist()
    assert counts == [prepared.num_tokens, small.num_tokens]


def test_uniform_mode(tiny, clip):
    uniform = prepare_video(clip, VideoConfig(mode="uniform"))
    assert len(uniform.videos) == 1
    np.testing.assert_allclose(uniform.plan.timestamps, [0.0, 0.5, 1.0], atol=0.02)
    inputs = _render(tiny.processor, [uniform])
    assert int((inputs["input_ids"] == tiny.processor.video_token_id).sum()) == uniform.num_tokens


def test_settings_record_the_configuration(prepared):
    settings = prepared.settings
    assert settings["mode"] == "slowfast" and settings["decode"]["fps"] == 8.0
    assert settings["plan"]["num_tokens"] == prepared.num_tokens
    restored = VideoConfig.from_dict({k: v for k, v in settings.items() if k != "plan"})
    assert restored == VideoConfig()


def test_bad_file_raises_video_error(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_text("not a video")
    with pytest.raises(VideoError, match="cannot open video"):
        prepare_video(path)


def test_config_validation():
    with pytest.raises(ConfigError, match="available modes"):
        VideoConfig(mode="fast")
    with pytest.raises(ConfigError, match=r"fast_budget \(100\) must be at least max_frames"):
        VideoConfig(decode=DecodeConfig(max_frames=256), slowfast=SlowFastConfig(fast_budget=100))
    with pytest.raises(ConfigError, match="invalid video settings"):
        VideoConfig.from_dict({"decode": {"fsp": 8}})


def test_streaming_labels_equal_labels_of_the_kept_thumbnails(clip, tmp_path):
    # prepare_video labels while decoding; when the frame cap thins the samples (a raw H.264
    # stream has no duration, so 16 samples are thinned to at most 5) it labels again.
    raw = write_clip(tmp_path / "raw.h264", ClipSpec(container="h264", suffix=".h264", seconds=2))
    for path, max_frames in ((clip, 256), (raw, 5)):
        config = VideoConfig(decode=DecodeConfig(max_frames=max_frames))
        sampled = sample_frames(path, config.decode, lambda h, w: thumbnail_size(h, w, SC))
        plan = prepare_video(path, config).plan
        assert (plan.references, plan.similarity) == label_thumbnails(sampled.thumbnails, SC)
        assert len(plan.slow) == len(sampled.frames) <= max_frames


def test_frames_converted_during_decoding_equal_the_plans_conversions(clip):
    # prepare_video converts each frame at its forecast size while decoding and converts the
    # frames whose forecast missed again; a budget that binds makes the first forecasts miss.
    slowfast = SlowFastConfig(slow_budget=60, fast_budget=30)
    config = VideoConfig(decode=DecodeConfig(max_frames=16), slowfast=slowfast)
    prepared = prepare_video(clip, config)
    plan = prepared.plan
    sizes = [plan.slow_size if slow else plan.fast_size for slow in plan.slow]
    thumbs = lambda h, w: thumbnail_size(h, w, slowfast)  # noqa: E731
    early = sample_frames(clip, config.decode, thumbs, SizeForecast(Labeler(slowfast))).early
    hits = [rgb.shape[:2] == size for rgb, size in zip(early, sizes, strict=True)]
    assert any(hits) and not all(hits)
    expected = sample_frames(clip, config.decode).to_rgb(sizes)  # no early conversions
    frames = [f for video, run in zip(prepared.videos, plan.runs, strict=True)
              for f in video[: run.length]]
    assert len(frames) == len(expected)
    for frame, reference in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame, reference)
