"""The demo-only pieces: in-memory clips match the decoded layout, the probe's features carry
gradients to the vision tower, and the report caches by config."""

import copy
import json

import numpy as np

from qsave.train.demo_recipe import (
    REPORT,
    DemoConfig,
    DemoReport,
    StageScore,
    VisionProbe,
    _cached,
    frames_video,
    pooled_features,
)
from qsave.video.inputs import VideoConfig, prepare_video


def test_memory_clip_has_the_decoded_uniform_layout(corpus_records):
    record = corpus_records["train"][0]
    decoded = prepare_video(record.video, VideoConfig(mode="uniform", uniform_fps=8.0))
    frames = np.stack(decoded.videos[0])
    memory = frames_video(frames, 8)
    assert [v.shape for v in memory.videos] == [v.shape for v in decoded.videos]
    assert memory.num_tokens == decoded.num_tokens
    assert memory.metadata[0].frames_indices == decoded.metadata[0].frames_indices


def test_probe_features_reach_the_vision_tower(tiny):
    model = copy.deepcopy(tiny.model).train()
    rng = np.random.default_rng(0)
    clips = [frames_video(rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8), 8)
             for _ in range(2)]
    out = tiny.processor.video_processor(
        videos=[c.videos[0] for c in clips], video_metadata=[c.metadata[0] for c in clips],
        do_sample_frames=False, do_resize=False, return_tensors="pt")
    pooled = pooled_features(model, out["pixel_values_videos"], out["video_grid_thw"], [1, 1])
    assert pooled.shape == (2, 2 * model.config.vision_config.out_hidden_size)
    probe = VisionProbe(model.config.vision_config.out_hidden_size)
    probe(pooled).sum().backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0


def test_report_is_cached_per_config(tmp_path):
    config = DemoConfig(minutes=1.0)
    report = DemoReport([StageScore("1 SFT", "visual", 0.5, 0.4)], n_test=3)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    (tmp_path / REPORT).write_text(json.dumps({**report.to_dict(), "config": {
        k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}}))
    cached = _cached(tmp_path, config)
    assert cached is not None and cached.scores == report.scores
    assert _cached(tmp_path, DemoConfig(minutes=2.0)) is None
