"""The synthetic corpus: encoded clips, measurable defects, MOS, raters, schema, determinism, CLI.

Each defect is checked on *decoded* H.264 frames against its clean twin (the same scene drawn
without the defect), with a measurement that does not reuse the generator's code.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from scipy import ndimage

from qsave.cli import main
from qsave.data.defects import (
    DEFECTS,
    Defect,
    apply_frame_defect,
    describe,
    get_kind,
    hue,
    kinds_of,
    place_defect,
    render_clip,
)
from qsave.data.scene import COLORS, SceneSpec, plan_scene, render_frames
from qsave.data.synthetic import (
    GENERATORS,
    RATED,
    SynthConfig,
    encode_mp4,
    ground_truth_mos,
    make_raters,
    plan_corpus,
    rate_clip,
    synthesize,
    write_corpus,
)
from qsave.dimensions import mos_to_rating
from qsave.errors import ConfigError, VideoError

FPS, SECONDS, SIZE = 8, 2.0, 64
N_FRAMES = 16


def decode(path: Path) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8, decoded with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def roundtrip(frames: np.ndarray, path: Path) -> np.ndarray:
    encode_mp4(frames, path, FPS)
    return decode(path)


def luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(float) @ np.array([0.299, 0.587, 0.114])


def object_mask(frame: np.ndarray) -> np.ndarray:
    """Saturated pixels: the coloured objects (backgrounds are low-saturation greys)."""
    rgb = frame.astype(float)
    top, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return (top > 60) & ((top - low) / np.maximum(top, 1) > 0.45)


def centroids(frames: np.ndarray) -> np.ndarray:
    """(T, 2) centroid (x, y) of the object pixels of each frame."""
    return np.array([ndimage.center_of_mass(object_mask(f))[::-1] for f in frames])


def components(frame: np.ndarray) -> int:
    return ndimage.label(object_mask(frame))[1]


def laplacian_var(frames: np.ndarray) -> float:
    return float(np.mean([ndimage.laplace(f).var() for f in luma(frames)]))


def high_freq(frames: np.ndarray) -> float:
    y = luma(frames)
    return float(np.mean((y - ndimage.gaussian_filter(y, (0, 1.0, 1.0))) ** 2))


def block_edge_ratio(frames: np.ndarray) -> float:
    """Mean |horizontal step| across 8-pixel block boundaries over the mean step elsewhere."""
    steps = np.abs(np.diff(luma(frames), axis=2))  # step k is between columns k and k+1
    boundary = (np.arange(steps.shape[2]) % 8) == 7
    return float(steps[:, :, boundary].mean() / steps[:, :, ~boundary].mean())


def mean_abs_diff(frames: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(frames.astype(float), axis=0)).mean(axis=(1, 2, 3))


# --- clean twins and defective clips --------------------------------------------------------

SPEC_ONE = SceneSpec("red", "circle", 1, "right", "static", "checkered floor")
SPEC_TWO = SceneSpec("blue", "square", 2, "down", "static", "cloudy sky")
SPEC_PAN = SceneSpec("green", "triangle", 2, "left", "pan right", "striped wall")


def full(kind: str, severity: float = 0.8, detail=None) -> Defect:
    """A defect covering the whole clip (so every decoded frame shows it)."""
    return Defect(kind, severity, 0.0, SECONDS, detail)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """``twin(spec, defects)`` → decoded (clean, defective) frames, cached per case."""
    folder = tmp_path_factory.mktemp("twins")
    cache: dict = {}

    def make(spec: SceneSpec, defects: list[Defect]) -> tuple[np.ndarray, np.ndarray]:
        key = (spec, tuple(defects))
        if key not in cache:
            scene = plan_scene(spec, SIZE, FPS, SECONDS, seed=5)
            name = f"c{len(cache)}"
            clean = roundtrip(render_clip(scene, [], 5), folder / f"{name}-clean.mp4")
            bad = roundtrip(render_clip(scene, defects, 5), folder / f"{name}-bad.mp4")
            cache[key] = (clean, bad)
        return cache[key]

    return make


def test_render_is_pure_and_sized():
    scene = plan_scene(SPEC_PAN, SIZE, FPS, SECONDS, seed=1)
    frames = render_frames(scene)
    assert frames.shape == (N_FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, render_frames(scene))
    blurred = apply_frame_defect(frames, full("blur"), FPS, np.random.default_rng(0))
    assert np.array_equal(frames, render_frames(scene)), "apply_frame_defect edited its input"
    assert not np.array_equal(blurred, frames)
    assert np.mean(np.abs(np.diff(luma(frames), axis=0))) > 0.5, "the pan should move the picture"


def test_blur_lowers_laplacian_variance(twin):
    clean, bad = twin(SPEC_PAN, [full("blur")])
    assert laplacian_var(bad) < 0.5 * laplacian_var(clean)


def test_noise_raises_high_frequency_energy(twin):
    clean, bad = twin(SPEC_PAN, [full("noise", 0.5)])
    assert high_freq(bad) > 3 * high_freq(clean)


def test_blockiness_raises_block_edge_energy(twin):
    clean, bad = twin(SPEC_PAN, [full("blockiness", 0.6)])
    assert block_edge_ratio(bad) > 1.5 * block_edge_ratio(clean)


def test_banding_leaves_fewer_colour_levels(twin):
    clean, bad = twin(SPEC_TWO, [full("banding", 0.6)])

    def levels(frame):  # luma levels covering at least 0.5 % of the pixels (20 of 64×64)
        _, counts = np.unique(np.rint(luma(frame)), return_counts=True)
        return int(np.sum(counts >= 20))

    assert levels(bad[0]) < 0.6 * levels(clean[0]), (levels(bad[0]), levels(clean[0]))


def test_lowres_lowers_high_frequency_energy(twin):
    clean, bad = twin(SPEC_PAN, [full("lowres", 0.5)])
    assert high_freq(bad) < 0.5 * high_freq(clean)


def test_frozen_segment_has_no_frame_difference(twin):
    defect = Defect("frozen", 0.5, 0.5, 1.5)
    clean, bad = twin(SPEC_PAN, [defect])
    window = defect.frames(FPS, N_FRAMES)
    inside = mean_abs_diff(bad[window])
    assert inside.max() < 0.5, inside
    assert mean_abs_diff(clean[window]).min() > 1.0
    assert mean_abs_diff(bad[window.stop - 1 : window.stop + 1])[0] > 1.0, "motion resumes"


def test_stutter_repeats_frames(twin):
    clean, bad = twin(SPEC_PAN, [full("stutter", 0.5)])  # each frame held 3 times
    still = lambda frames: int(np.sum(mean_abs_diff(frames) < 0.5))  # noqa: E731
    assert still(clean) == 0
    assert still(bad) >= 8


def test_flicker_oscillates_mean_brightness(twin):
    clean, bad = twin(SPEC_ONE, [full("flicker", 0.5)])
    swings = [np.diff(luma(f).mean(axis=(1, 2))) for f in (clean, bad)]
    assert np.all(np.sign(swings[1][:-1]) != np.sign(swings[1][1:])), "alternating sign"
    assert np.abs(swings[1]).min() > 10 * np.abs(swings[0]).max()


@pytest.mark.parametrize("kind", ["jitter", "teleport"])
def test_object_path_becomes_irregular(twin, kind):
    clean, bad = twin(SPEC_ONE, [full(kind, 0.9)])
    irregular = [np.abs(np.diff(centroids(f), n=2, axis=0)).max() for f in (clean, bad)]
    assert irregular[0] < 0.6, "the clean path is a straight line at constant speed"
    assert irregular[1] > 4 * max(irregular[0], 0.25)


def test_deform_changes_the_object_outline(twin):
    clean, bad = twin(SPEC_ONE, [full("deform", 0.8)])

    def aspect(frame):
        ys, xs = np.nonzero(object_mask(frame))
        return np.ptp(xs) / max(np.ptp(ys), 1)

    spread = [np.std([aspect(f) for f in frames]) for frames in (clean, bad)]
    assert spread[1] > 5 * max(spread[0], 0.02)


def test_wrong_colour_shows_the_other_hue(twin):
    clean, bad = twin(SPEC_ONE, [full("wrong_color", 1.0, "blue")])

    def nearest_colour(frames):
        pixels = np.concatenate([f[object_mask(f)] for f in frames]).astype(float)
        seen = hue(pixels.mean(axis=0))
        gaps = {c: abs(hue(rgb) - seen) for c, rgb in COLORS.items()}
        return min(COLORS, key=lambda c: min(gaps[c], 360 - gaps[c]))

    assert nearest_colour(clean) == "red"
    assert nearest_colour(bad) == "blue"


def test_wrong_count_changes_connected_components(twin):
    clean, more = twin(SPEC_TWO, [full("wrong_count", 1.0, 3)])
    _, fewer = twin(SPEC_TWO, [full("wrong_count", 1.0, 1)])
    assert [components(f) for f in clean] == [2] * N_FRAMES
    assert [components(f) for f in more] == [3] * N_FRAMES
    assert [components(f) for f in fewer] == [1] * N_FRAMES


def test_wrong_shape_changes_fill_ratio(twin):
    clean, bad = twin(SPEC_ONE, [full("wrong_shape", 1.0, "square")])

    def fill(frame):  # object area over bounding-box area: circle π/4, square 1
        ys, xs = np.nonzero(object_mask(frame))
        return len(xs) / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))

    assert np.mean([fill(f) for f in bad]) > np.mean([fill(f) for f in clean]) + 0.1


def test_wrong_direction_moves_the_other_way(twin):
    clean, bad = twin(SPEC_ONE, [full("wrong_direction", 1.0, "left")])
    assert np.all(np.diff(centroids(clean)[:, 0]) > 0), "the prompt says right"
    assert np.all(np.diff(centroids(bad)[:, 0]) < 0)


def test_missing_object_leaves_only_background(twin):
    defect = Defect("missing_object", 0.5, 0.5, 1.5)
    clean, bad = twin(SPEC_TWO, [defect])
    window = defect.frames(FPS, N_FRAMES)
    assert all(object_mask(f).sum() == 0 for f in bad[window])
    assert all(components(f) == 2 for f in bad[window.stop :])
    assert all(components(f) == 2 for f in clean)


def test_every_kind_is_registered_once_per_dimension():
    assert set(kinds_of("visual")) == {"blur", "noise", "blockiness", "banding", "lowres"}
    dynamic = {"stutter", "frozen", "jitter", "flicker", "teleport", "deform"}
    assert set(kinds_of("dynamic")) == dynamic
    assert set(kinds_of("alignment")) == {
        "wrong_color", "wrong_shape", "wrong_count", "wrong_direction", "missing_object"
    }  # fmt: skip
    with pytest.raises(ConfigError, match="valid: banding"):
        get_kind("smear")
    with pytest.raises(ConfigError, match="outside"):
        Defect("blur", 1.5, 0.0, 1.0)


def test_each_kind_changes_the_clean_render():
    scene = plan_scene(SPEC_TWO, 32, FPS, SECONDS, seed=2)
    clean = render_clip(scene, [], 2)
    rng = np.random.default_rng(0)
    for kind in DEFECTS:
        defect = place_defect(kind, 0.7, SPEC_TWO, N_FRAMES, FPS, rng)
        assert not np.array_equal(render_clip(scene, [defect], 2), clean), kind


# --- MOS and attributions ------------------------------------------------------------------


def test_clean_clip_is_excellent_and_mos_falls_with_severity():
    clean = ground_truth_mos([])
    assert all(clean[d] == 5.0 for d in RATED)
    assert mos_to_rating(clean["visual"]) == "Excellent"
    for kind in DEFECTS:
        dim = get_kind(kind).dimension.value
        curve = [ground_truth_mos([full(kind, s)])[dim] for s in np.linspace(0, 1, 11)]
        assert np.all(np.diff(curve) < 0), kind
        assert curve[0] == 5.0 and curve[-1] == 1.0
    two = ground_truth_mos([full("blur", 0.3), full("noise", 0.3)])["visual"]
    assert two < ground_truth_mos([full("blur", 0.3)])["visual"]


def test_attribution_names_subject_and_time():
    spec = SceneSpec("red", "circle", 1, "right", "static", "cloudy sky")
    text = describe(Defect("stutter", 0.5, 1.25, 2.0), spec, FPS, N_FRAMES)
    assert text == "the red circle stutters noticeably between 1.2 s and 2.0 s"
    text = describe(full("wrong_color", 1.0, "blue"), spec, FPS, N_FRAMES)
    assert text == "the circle is blue instead of red throughout the video"


# --- the written corpus ---------------------------------------------------------------------

CONFIG = SynthConfig(n=16, seed=3, rl_fraction=0.25, test_fraction=0.25)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), CONFIG)


def read_manifest(corpus) -> list[dict]:
    return [json.loads(line) for line in corpus.manifest_path.read_text().splitlines()]


def read_ratings(corpus) -> list[dict]:
    with corpus.ratings_path.open() as handle:
        return list(csv.DictReader(handle))


def test_clips_decode_with_expected_frames_and_size(corpus):
    records = read_manifest(corpus)
    assert len(records) == CONFIG.n and not corpus.errors
    for record in records[:6]:
        frames = decode(corpus.manifest_path.parent / record["path"])
        assert frames.shape == (record["frames"], SIZE, SIZE, 3) == (N_FRAMES, SIZE, SIZE, 3)
        with av.open(str(corpus.manifest_path.parent / record["path"])) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
            assert stream.average_rate == FPS


def test_manifest_schema(corpus):
    records = read_manifest(corpus)
    required = {"id", "path", "prompt", "generator", "split", "size", "fps", "seconds",
                "defects", "mos", "attributions"}  # fmt: skip
    for r in records:
        assert required <= set(r), r["id"]
        assert (corpus.manifest_path.parent / r["path"]).is_file()
        assert r["split"] in ("train", "test", "rl") and r["generator"] in GENERATORS
        assert set(r["mos"]) == set(RATED) and all(1 <= v <= 5 for v in r["mos"].values())
        for dim, defects in r["defects"].items():
            assert (r["attributions"][dim] is None) == (not defects)
            for d in defects:
                assert {"kind", "severity", "start", "end"} <= set(d)
                assert get_kind(d["kind"]).dimension.value == dim
                assert 0 <= d["severity"] <= 1 and 0 <= d["start"] < d["end"] <= r["seconds"]
            expected = ground_truth_mos([Defect(**d) for d in defects])[dim]
            assert r["mos"][dim] == pytest.approx(expected, abs=1e-4)
    assert Counter(r["split"] for r in records) == {"train": 9, "test": 3, "rl": 4}


def test_splits_are_disjoint_in_prompts_and_rl_generators(corpus):
    records = read_manifest(corpus)
    prompts = defaultdict(set)
    generators = defaultdict(set)
    for r in records:
        prompts[r["split"]].add(r["prompt"])
        generators[r["split"]].add(r["generator"])
    assert not prompts["train"] & prompts["test"]
    assert not prompts["rl"] & (prompts["train"] | prompts["test"])
    assert not generators["rl"] & (generators["train"] | generators["test"])
    assert len(generators["train"]) >= 3


def test_ratings_schema_and_rater_counts(corpus):
    records = {r["id"]: r for r in read_manifest(corpus)}
    rows = read_ratings(corpus)
    assert list(rows[0]) == ["video_id", "rater_id", "dimension", "score"]
    raters = json.loads(corpus.raters_path.read_text())
    pool = {r["id"] for r in raters["raters"]}
    assert set(raters["unreliable"]) < pool and len(raters["unreliable"]) == CONFIG.unreliable
    per_clip = defaultdict(lambda: defaultdict(set))
    for row in rows:
        assert row["video_id"] in records and row["rater_id"] in pool
        assert row["dimension"] in RATED and int(row["score"]) in range(1, 6)
        per_clip[row["video_id"]][row["dimension"]].add(row["rater_id"])
    assert set(per_clip) == set(records)
    for video, dims in per_clip.items():
        need = 12 if records[video]["split"] == "test" else 3
        assert set(dims) == set(RATED)
        assert all(len(ids) >= need for ids in dims.values()), video


def test_unreliable_raters_stray_furthest_from_mos():
    config = SynthConfig(raters=12, unreliable=2)
    pool = make_raters(config)
    rng = np.random.default_rng(0)
    errors = defaultdict(list)
    for mos_value in rng.uniform(1, 5, 150):
        mos = dict.fromkeys(RATED, float(mos_value))
        for rater, _, score in rate_clip(mos, pool, rng):
            errors[rater].append(abs(score - mos_value))
    worst = sorted(errors, key=lambda r: -np.mean(errors[r]))[:2]
    assert set(worst) == {r.id for r in pool if not r.reliable}


def test_deterministic_from_the_seed(corpus, tmp_path):
    again = write_corpus(tmp_path / "again", CONFIG)
    for name in ("manifest_path", "ratings_path", "raters_path"):
        assert getattr(again, name).read_bytes() == getattr(corpus, name).read_bytes(), name
    first = read_manifest(corpus)[0]["path"]
    folders = (corpus.manifest_path.parent, again.manifest_path.parent)
    frames = [decode(folder / first).astype(int) for folder in folders]
    # the frames rendered are identical; libx264 may encode them differently (module docstring)
    assert np.abs(frames[0] - frames[1]).mean() < 1.0  # another clip differs by ~30 levels
    other = write_corpus(tmp_path / "other", SynthConfig(n=4, seed=4))
    assert other.manifest_path.read_text() != again.manifest_path.read_text()


def test_a_failing_clip_is_reported_and_the_rest_written(tmp_path, monkeypatch):
    import qsave.data.synthetic as synthetic

    real = synthetic.encode_mp4

    def flaky(frames, path, fps, crf=12):
        if path.name == "syn-00001.mp4":
            raise VideoError(f"cannot encode {path}: disk full")
        real(frames, path, fps, crf)

    monkeypatch.setattr(synthetic, "encode_mp4", flaky)
    corpus = write_corpus(tmp_path, SynthConfig(n=3, seed=0))
    assert [c.id for c in corpus.clips] == ["syn-00000", "syn-00002"]
    assert len(corpus.errors) == 1 and "syn-00001" in corpus.errors[0]
    assert {row["video_id"] for row in read_ratings(corpus)} == {"syn-00000", "syn-00002"}


def test_config_validation_quotes_values():
    with pytest.raises(ConfigError, match=r"size \(63\)"):
        SynthConfig(size=63)
    with pytest.raises(ConfigError, match=r"raters_test \(30\)"):
        SynthConfig(raters_test=30)
    with pytest.raises(ConfigError, match="unknown SynthConfig fields"):
        SynthConfig.from_mapping({"n": 2, "colour": "red"})


def test_kinds_restrict_the_defects_drawn():
    config = SynthConfig(n=60, seed=2, kinds=("blur", "flicker"))
    drawn = {d["kind"] for plan in plan_corpus(config)
             for ds in synthesize(plan, config)[0].defects.values() for d in ds}
    assert drawn == {"blur", "flicker"}  # alignment has no allowed kind: it stays clean
    with pytest.raises(ConfigError, match=r"unknown defect kinds \['smear'\]"):
        SynthConfig(kinds=("smear",))
    assert SynthConfig.from_mapping({"kinds": ["noise"]}).kinds == ("noise",)


def test_every_dimension_gives_each_clip_one_defect_per_dimension():
    config = SynthConfig(n=40, seed=3, every_dimension=True, kinds=("blur", "noise", "stutter",
                                                                     "wrong_color"))
    severities = defaultdict(list)
    for plan in plan_corpus(config):
        record = synthesize(plan, config)[0]
        for dimension, defects in record.defects.items():
            assert len(defects) == 1, record.defects
            (defect,) = defects
            share = (defect["end"] - defect["start"]) / SECONDS
            if get_kind(defect["kind"]).graded:  # its strength shows the severity
                assert share == 1.0
            else:  # a wrong colour shows severity by its duration only
                assert share == pytest.approx(0.25 + 0.75 * defect["severity"], abs=1 / N_FRAMES)
            severities[dimension].append(defect["severity"])
            assert record.mos[dimension] == pytest.approx(1 + 4 * (1 - defect["severity"]),
                                                          abs=1e-3)
    for values in severities.values():  # independent U(0, 1) severities spread over the range
        assert min(values) < 0.2 and max(values) > 0.8
    assert np.corrcoef(severities["visual"], severities["dynamic"])[0, 1] ** 2 < 0.2


def test_cli_data_synth(tmp_path):
    out = tmp_path / "cli"
    args = ["data", "synth", "--out", str(out), "--n", "3", "--seed", "7", "--size", "32"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["size"] == [32, 32] for r in records)
    assert (out / "ratings.csv").is_file() and (out / "raters.json").is_file()
    assert decode(out / records[0]["path"]).shape == (N_FRAMES, 32, 32, 3)
    config = tmp_path / "synth.yaml"
    config.write_text("n: 2\nseconds: 1.0\nfps: 4\n")
    assert main(["data", "synth", "--out", str(tmp_path / "c2"), "--config", str(config)]) == 0
    records = (tmp_path / "c2" / "manifest.jsonl").read_text().splitlines()
    assert len(records) == 2 and json.loads(records[0])["frames"] == 4
    assert main(["data", "synth", "--out", str(tmp_path / "bad"), "--size", "63"]) != 0


def test_videos_per_prompt_gives_several_generators_one_prompt():
    """Within-prompt preference pairs need several clips of one prompt (the paper's dataset has
    several generators per prompt); splits stay disjoint in prompts."""
    from qsave.data.synthetic import plan_corpus

    plans = plan_corpus(SynthConfig(n=200, seed=2, videos_per_prompt=4))
    by_prompt = defaultdict(list)
    for plan in plans:
        by_prompt[(plan.split, plan.spec)].append(plan.generator)
    full = [g for g in by_prompt.values() if len(g) == 4]
    assert len(full) >= len(by_prompt) - 3  # at most one partial group per split
    assert all(len(set(g)) >= 3 for g in full)  # different generators (rl has 3)
    splits_of = defaultdict(set)
    for split, spec in by_prompt:
        splits_of[spec].add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert len({p.spec for p in plan_corpus(SynthConfig(n=200, seed=2))}) == 200
