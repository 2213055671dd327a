"""The demo-only pieces: the corpus and pool are written per design and encoded, the probe's
features carry gradients to the vision tower, and the report caches by config."""

import copy
import json

from qsave.demo_recipe import (
    REPORT,
    DemoConfig,
    DemoReport,
    StageScore,
    VisionProbe,
    _cached,
    build_data,
    pooled_features,
)
from qsave.video.inputs import VideoConfig, prepare_video


def test_corpus_and_pool_are_encoded_clips_of_the_demo_design(tmp_path):
    config = DemoConfig(n_clips=8, pool_clips=8, seconds=1.0)
    data = build_data(tmp_path, config)
    test_prompts = {r.prompt for r in data.test}
    pooled = [r for r in data.train if "/pool/" in r.video]
    assert pooled and all(r.video.endswith(".mp4") for r in data.train + data.test)
    assert not test_prompts & {r.prompt for r in pooled}
    manifest = [json.loads(line) for line in
                (tmp_path / "corpus" / "manifest.jsonl").read_text().splitlines()]
    for clip in manifest:  # every dimension has one defect of the demo's kinds
        kinds = [d["kind"] for ds in clip["defects"].values() for d in ds]
        assert sorted(kinds) == sorted(config.kinds)
    before = (tmp_path / "corpus" / "manifest.jsonl").read_text()
    build_data(tmp_path, DemoConfig(n_clips=8, pool_clips=0, seconds=1.0, kinds=("blur",)))
    assert (tmp_path / "corpus" / "manifest.jsonl").read_text() != before  # design changed


def test_probe_features_reach_the_vision_tower(tiny, corpus_records):
    model = copy.deepcopy(tiny.model).train()
    clips = [prepare_video(r.video, VideoConfig(mode="uniform", uniform_fps=8.0))
             for r in corpus_records["train"][:2]]
    out = tiny.processor.video_processor(
        videos=[c.videos[0] for c in clips], video_metadata=[c.metadata[0] for c in clips],
        do_sample_frames=False, do_resize=False, return_tensors="pt")
    pooled = pooled_features(model, out["pixel_values_videos"], out["video_grid_thw"], [1, 1])
    assert pooled.shape == (2, 2 * model.config.vision_config.out_hidden_size)
    probe = VisionProbe(model.config.vision_config.out_hidden_size)
    probe(pooled).sum().backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0


def test_report_is_cached_per_config(tmp_path):
    config = DemoConfig(step_scale=0.1)
    report = DemoReport([StageScore("1 SFT", "visual", 0.5, 0.4)], n_test=3)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    (tmp_path / REPORT).write_text(json.dumps({**report.to_dict(), "config": config.__dict__}))
    cached = _cached(tmp_path, config)
    assert cached is not None and cached.scores == report.scores
    assert _cached(tmp_path, DemoConfig(step_scale=0.2)) is None


def test_the_demo_trains_and_scores_on_slowfast_frames():
    config = DemoConfig()
    assert config.video().mode == "slowfast" and config.video() == VideoConfig()  # the paper's
    assert DemoConfig(ablation=True).video(config.ablation_mode).mode == "uniform-matched"
