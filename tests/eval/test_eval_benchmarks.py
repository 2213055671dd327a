"""Benchmark adapters on fixture files in the published formats; predictions; matching (D.2)."""

import json
from pathlib import Path

import pytest

from helpers import score_row
from qsave.errors import AnnotationError, ConfigError, DuplicateIdError
from qsave.eval import benchmarks
from qsave.eval.benchmarks import Pair, Predictions, load_predictions, load_truth

FIXTURES = Path(__file__).parent / "fixtures"


def test_registry_lists_names_and_refuses_duplicates():
    with pytest.raises(ConfigError, match="videophy2-test"):
        load_truth(FIXTURES / "videophy2_test.csv", "videophy-2")
    with pytest.raises(ConfigError, match="already registered"):
        benchmarks.register_benchmark("qsave")(benchmarks.load_qsave)


def test_options_an_adapter_does_not_take_are_refused():
    with pytest.raises(ConfigError, match="takes no option split; its options: none"):
        load_truth(FIXTURES / "genai_bench_video.parquet", "genai-bench", split="test")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_truth(tmp_path / "nope.csv", "qsave")


def test_qsave_manifest_nested_mos_and_split():
    truth = load_truth(FIXTURES / "qsave_manifest.jsonl")
    assert len(truth.videos) == 4 and set(truth.mos) == {
        "visual",
        "dynamic",
        "alignment",
        "overall",
    }
    assert truth.mos["alignment"]["c002"] == 1.5
    assert truth.videos["c001"].generator == "gen-b"
    test = load_truth(FIXTURES / "qsave_manifest.jsonl", split="test")
    assert sorted(test.videos) == ["c000", "c001", "c002"] and not test.problems


def test_qsave_flat_csv_with_a_bad_row(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("id,generator,visual,dynamic\nv1,g,3.5,2\nv2,g,abc,2\nv3,g,6.0,1\n,g,3,3\n")
    truth = load_truth(path)
    assert list(truth.videos) == ["v1"]
    assert truth.mos["visual"] == {"v1": 3.5} and truth.mos["dynamic"] == {"v1": 2.0}
    assert len(truth.problems) == 3
    assert "row 3" in truth.problems[0] and "'visual' is not a number" in truth.problems[0]
    assert "outside the scale" in truth.problems[1]
    assert "missing column" in truth.problems[2]


def test_videogen_rewardbench_maps_dimensions_and_labels():
    truth = load_truth(FIXTURES / "videogen_rewardbench.csv", "videogen-rewardbench")
    first = [
        p for p in truth.pairs if p.a == "videos/kling/0001.mp4" and p.b.endswith("gen3/0001.mp4")
    ]
    assert {p.dimension: p.label for p in first} == {
        "visual": 1,
        "dynamic": 1,
        "alignment": 0,
        "overall": 1,
    }
    assert truth.videos["videos/pika/0002.mp4"].generator == "pika"
    assert len(truth.pairs) == 5 * 4  # the sixth row has MQ = "maybe"
    assert len(truth.problems) == 1 and "'MQ' must be A, B or same" in truth.problems[0]


def test_t2vqa_db_rescales_and_builds_pairs_within_prompts():
    truth = load_truth(FIXTURES / "t2vqa_db.txt", "t2vqa-db")
    overall = truth.mos["overall"]
    assert overall["0002/0002_00.mp4"] == 1.0 and overall["0002/0002_01.mp4"] == 5.0
    assert overall["0001/0001_00.mp4"] == pytest.approx(1 + 4 * 71.4 / 99)
    assert len(truth.problems) == 1 and "not a number" in truth.problems[0]
    # 4 videos of prompt 1 → 3 chained pairs, 3 videos of prompt 2 → 2 pairs, in id order
    assert truth.pairs == [
        Pair("0001/0001_00.mp4", "0001/0001_01.mp4", "overall", 1),
        Pair("0001/0001_01.mp4", "0001/0001_02.mp4", "overall", 0),
        Pair("0001/0001_02.mp4", "0001/0001_03.mp4", "overall", -1),
        Pair("0002/0002_00.mp4", "0002/0002_01.mp4", "overall", -1),
        Pair("0002/0002_01.mp4", "0002/0002_02.mp4", "overall", 1),
    ]
    assert any("5 pairs" in note for note in truth.notes)


def test_t2vqa_db_sampling_is_seeded():
    a = load_truth(FIXTURES / "t2vqa_db.txt", "t2vqa-db", n_videos=4, seed=1)
    b = load_truth(FIXTURES / "t2vqa_db.txt", "t2vqa-db", n_videos=4, seed=1)
    assert a.pairs == b.pairs
    assert len({v for p in a.pairs for v in (p.a, p.b)}) <= 4


def test_genai_bench_parquet_votes():
    truth = load_truth(FIXTURES / "genai_bench_video.parquet", "genai-bench")
    assert [p.label for p in truth.pairs] == [1, -1, 0, 0]
    assert {p.dimension for p in truth.pairs} == {"overall"}
    assert (
        truth.videos["https://genai-arena.example/videos/vc2_0001.mp4"].generator == "VideoCrafter2"
    )
    assert len(truth.problems) == 1 and "upvote" in truth.problems[0]


def test_genai_bench_jsonl_export_reads_the_same(tmp_path):
    import pyarrow.parquet as pq

    rows = pq.read_table(FIXTURES / "genai_bench_video.parquet").to_pylist()
    path = tmp_path / "genai.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        load_truth(path, "genai-bench").pairs
        == load_truth(FIXTURES / "genai_bench_video.parquet", "genai-bench").pairs
    )


def test_videophy2_maps_sa_to_alignment_and_pc_to_dynamic():
    truth = load_truth(FIXTURES / "videophy2_test.csv", "videophy2-test")
    url = "https://storage.googleapis.com/videophy2_test/hunyuan/pouring_water_0.mp4"
    assert truth.mos["alignment"][url] == 5.0 and truth.mos["dynamic"][url] == 4.0
    assert "visual" not in truth.mos and truth.scale.integer
    assert len(truth.videos) == 5 and len(truth.problems) == 1  # the last row lacks pc
    assert truth.videos[url].generator == "hunyuan"


def test_videoscore_bench_v2_json():
    truth = load_truth(FIXTURES / "videoscore_bench_v2.json", "videoscore-bench-v2")
    assert truth.mos["visual"]["vf2_00017"] == 4.0
    assert truth.mos["alignment"]["vf2_00017"] == 5.0 and truth.mos["dynamic"]["vf2_00017"] == 4.0
    assert len(truth.videos) == 4 and "outside the scale" in truth.problems[0]


def _line(video_id, visual=0.5, dynamic=0.5, alignment=0.5, error=None, path=None):
    scores = {"visual": visual, "dynamic": dynamic, "alignment": alignment}
    return json.dumps(score_row(video_id, scores, error, path)) + "\n"


def test_predictions_errors_and_bad_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(
        _line("a", visual=0.9)
        + _line("b", error="decode failed")
        + "{not json\n"
        + json.dumps({"id": "c", "scores": {"visual": {"score": "x"}}})
        + "\n"
        + _line("d")[:30]
    )
    predictions = load_predictions(path)
    assert predictions.scores["a"]["visual"] == 0.9
    assert predictions.errors == {"b": "VideoError: decode failed"}
    assert predictions.lines == 4 and len(predictions.problems) == 3
    assert [p.split(":")[1] for p in predictions.problems] == ["3", "4", "5"]  # by line


def test_an_id_scored_twice_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(_line("a", visual=0.9) + _line("b") + _line("a"))
    with pytest.raises(DuplicateIdError, match=r"'a' \(lines 1, 3\)"):
        load_predictions(path)
    path.write_text(_line("a", visual=0.9) + _line("a", error="later failure"))
    with pytest.raises(DuplicateIdError, match="'a'"):
        load_predictions(path)


def test_resumed_run_retry_replaces_the_error(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(_line("a", error="CUDA out of memory") + _line("a", visual=0.7))
    predictions = load_predictions(path)
    assert predictions.errors == {} and predictions.scores["a"]["visual"] == 0.7
    assert predictions.retried == 1 and not predictions.problems
    assert predictions.notes == ["1 ids retried after an error line"]


def test_mixed_models_in_one_file_is_a_problem(tmp_path):
    lines = [json.loads(_line("a")), json.loads(_line("b"))]
    lines[0]["model"], lines[1]["model"] = {"id": "ckpt-1"}, {"id": "ckpt-2"}
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert "2 different model/settings" in load_predictions(path).problems[0]


def test_matching_by_id_path_name_and_stem():
    truth = load_truth(FIXTURES / "videophy2_test.csv", "videophy2-test")
    base = "https://storage.googleapis.com/videophy2_test/"
    predictions = Predictions(
        scores={"pouring_water_0": {}, "stacking_cups_2.mp4": {}, "x1": {}},
        paths={"x1": "/data/videophy2/cogvideox5b/kicking_a_ball_1.mp4"},
    )
    matched = benchmarks.match_predictions(truth, predictions)
    # pouring_water_0 names two videos (two generators): ambiguous, never guessed. x1's file
    # name is ambiguous too, but its last two path components are not. stacking_cups_2 names
    # one video only, since the other row was skipped for its missing pc.
    assert matched == {
        base + "hunyuan/stacking_cups_2.mp4": "stacking_cups_2.mp4",
        base + "cogvideox5b/kicking_a_ball_1.mp4": "x1",
    }
    exact = Predictions(scores={base + "wan14b/kicking_a_ball_1.mp4": {}})
    assert benchmarks.match_predictions(truth, exact) == {
        base + "wan14b/kicking_a_ball_1.mp4": base + "wan14b/kicking_a_ball_1.mp4"
    }


def test_matching_by_file_name_when_unique():
    truth = load_truth(FIXTURES / "videoscore_bench_v2.json", "videoscore-bench-v2")
    predictions = Predictions(
        scores={"vf2_00017": {}, "p2": {}}, paths={"p2": "/local/copy/vf2_00018.mp4"}
    )
    assert benchmarks.match_predictions(truth, predictions) == {
        "vf2_00017": "vf2_00017",
        "vf2_00018": "p2",
    }


def test_no_match_at_all_raises():
    truth = load_truth(FIXTURES / "videoscore_bench_v2.json", "videoscore-bench-v2")
    with pytest.raises(AnnotationError, match="no prediction id matches"):
        benchmarks.match_predictions(truth, Predictions(scores={"zzz": {}}))
