"""`qsave demo --train` is the tiny-model CPU recipe run as a user runs it: the two recipe
files (configs/ links to them), records of a corpus of that design, `qsave train`'s pipeline;
and the tiny-model aids' probe reaches the vision tower."""

import copy
import json
from pathlib import Path

import yaml

from qsave.data.records import load_records
from qsave.data.synthetic import SynthConfig
from qsave.demo_recipe import SYNTH_RECIPE, TRAIN_RECIPE, DemoConfig, write_records
from qsave.train.aids import POOLS, VisionProbe, clip_targets, pooled_features
from qsave.video.inputs import VideoConfig, prepare_video

CONFIGS = Path(__file__).parents[2] / "configs"


def test_configs_link_to_the_recipes_the_demo_runs():
    for name, shipped in (("train-tiny-cpu.yaml", TRAIN_RECIPE),
                          ("synth-tiny-cpu.yaml", SYNTH_RECIPE)):
        assert (CONFIGS / name).resolve() == shipped.resolve()
    synth = DemoConfig().synth()
    assert synth.every_dimension and synth.kinds == ("noise", "flicker", "wrong_color")
    assert synth.raters_test >= 12  # the paper's minimum for test clips (Sec. 3.3)



def test_the_demo_config_is_the_recipe_with_its_records_and_scaled_steps(tmp_path):
    recipe = yaml.safe_load(TRAIN_RECIPE.read_text())
    full, half = DemoConfig().train(tmp_path), DemoConfig(step_scale=0.5).train(tmp_path)
    assert full.sft.max_steps == recipe["sft"]["max_steps"]
    assert half.sft.max_steps == round(recipe["sft"]["max_steps"] / 2)
    assert half.aids.vision_warmup_steps == round(recipe["aids"]["vision_warmup_steps"] / 2)
    assert full.sft.records == str(tmp_path / "records" / "train.jsonl")
    assert full.eval.records == str(tmp_path / "records" / "test.jsonl")
    assert full.output_dir == str(tmp_path / "run")
    assert VideoConfig.from_dict(full.sft.video) == VideoConfig()  # SlowFast, the paper's
    ablation = DemoConfig().train(tmp_path, "uniform-matched")
    assert ablation.sft.video["mode"] == "uniform-matched"
    assert ablation.output_dir == str(tmp_path / "run-uniform-matched")
    recorded = DemoConfig().provenance(tmp_path)
    assert recorded["train"]["sft"]["records"] == "train.jsonl"  # no machine paths
    assert recorded["synth"]["n"] == yaml.safe_load(SYNTH_RECIPE.read_text())["n"]


def test_records_of_every_split_from_a_corpus_of_the_design(tmp_path):
    synth = SynthConfig(n=16, seed=1, size=32, seconds=1.0, kinds=("noise", "flicker",
                                                                   "wrong_color"),
                        every_dimension=True, test_fraction=0.25)
    counts = write_records(tmp_path, synth)
    assert all(counts[s] for s in ("train", "rl", "test"))
    for split, count in counts.items():
        records = load_records(tmp_path / "records" / f"{split}.jsonl").records
        assert len(records) == count and {r.split for r in records} == {split}
    manifest = [json.loads(line) for line in
                (tmp_path / "corpus" / "manifest.jsonl").read_text().splitlines()]
    for clip in manifest:  # every dimension has one defect of the design's kinds
        kinds = sorted(d["kind"] for ds in clip["defects"].values() for d in ds)
        assert kinds == sorted(synth.kinds)
    stamp = (tmp_path / "corpus" / "manifest.jsonl").stat().st_mtime_ns
    write_records(tmp_path, synth)  # the same design: the corpus is not written again
    assert (tmp_path / "corpus" / "manifest.jsonl").stat().st_mtime_ns == stamp


def test_probe_features_reach_the_vision_tower(tiny, corpus_records):
    model = copy.deepcopy(tiny.model).train()
    clips = [prepare_video(r.video, VideoConfig(mode="uniform", uniform_fps=8.0))
             for r in corpus_records["train"][:2]]
    out = tiny.processor.video_processor(
        videos=[c.videos[0] for c in clips], video_metadata=[c.metadata[0] for c in clips],
        do_sample_frames=False, do_resize=False, return_tensors="pt")
    pooled = pooled_features(model, out["pixel_values_videos"], out["video_grid_thw"], [1, 1])
    assert pooled.shape == (2, POOLS * model.config.vision_config.out_hidden_size)
    probe = VisionProbe.for_model(model)
    probe(pooled).sum().backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    targets = clip_targets(corpus_records["train"])
    assert targets and all(set(t) >= {"visual", "dynamic"} for t in targets.values())


def test_the_alignment_kinds_corpus_has_every_alignment_kind_of_the_paper():
    """configs/synth-alignment-kinds.yaml: what `qsave eval` reports alignment per kind on."""
    from qsave.data.defects import kinds_of
    from qsave.data.synthetic import load_synth_config, split_sizes

    synth = SynthConfig.from_mapping(load_synth_config(CONFIGS / "synth-alignment-kinds.yaml"))
    assert set(kinds_of("alignment")) <= set(synth.kinds) and synth.every_dimension
    assert split_sizes(synth)["test"] >= 100  # ~20 clips per kind for its figures
