"""The GPU suite's scripts dry-run on the tiny model (CPU): the same JSON keys a GPU run
writes, the levers' scores equal to the shared mode's, and the suite's summary."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--shape", "tiny", "--device", "cpu", "--seconds", "1", "--size", "160x120",
        "--repeats", "1"]


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield {name: importlib.import_module(name)
               for name in ("score_throughput", "explain_speed", "gpu_suite")}
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_score_throughput_reports_mfu_and_levers(benchmarks, tmp_path):
    out = benchmarks["score_throughput"].run(
        [*TINY, "--batch-sizes", "2", "--clips", "mixed", "--json", str(tmp_path / "s.json"),
         "--levers", "pack", "vision-grouped", "full-logits"])  # compile: a minute of inductor
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(out))
    assert out["peak_tflops"] > 0 and out["env"]["shape"] == "tiny"
    (row,) = out["rows"]["mixed"]
    assert row["batch"] == 2 and row["shared"]["padding"] > 0  # mixed lengths: real padding
    assert row["shared"]["mfu"] > 0 and row["shared"]["videos_per_s"] > 0
    assert set(row["levers"]) == {"pack", "vision-grouped", "full-logits"}
    for lever, figures in row["levers"].items():
        assert figures["max_score_gap"] < 1e-5, lever  # a lever never changes a score
        assert figures["videos_per_s"] > 0
    assert row["independent"]["max_score_gap"] < 1e-4
    assert row["pipeline"]["videos_per_s"] > 0


def test_explain_speed_times_steps_and_keeps_the_scores(benchmarks, tmp_path):
    out = benchmarks["explain_speed"].run(
        [*TINY, "--batch-sizes", "1", "--new-tokens", "6", "--explain-tokens", "4", "--compile"])
    assert set(out["rows"]) == {"dynamic", "static", "static+compile"}
    for name, (row,) in out["rows"].items():
        assert row["tokens_per_s_per_sequence"] > 0 and row["prefill_s"] > 0, name
    assert out["rows"]["static"][0]["max_score_gap"] < 1e-6


def test_the_suite_writes_every_part_and_a_summary(benchmarks, tmp_path):
    suite = benchmarks["gpu_suite"].run(["--shape", "tiny", "--device", "cpu", "--budget-s", "0",
                                        "--out", str(tmp_path)])
    written = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert set(written) >= {"summary", "score", "explain", "train", "seconds"}
    assert {p.name for p in tmp_path.iterdir()} == {"gpu_suite.json", "score.json",
                                                     "explain.json", "train.json"}
    summary = suite["summary"]
    assert summary["peak_tflops"] > 0
    assert set(summary) == {"peak_tflops", "mfu_shared", "explain_tokens_per_s_per_sequence",
                            "train_step", "fit"}
    assert written["score"]["skipped"] and written["explain"]["skipped"]  # budget 0: skipped
    assert all(r["status"] == "skipped: budget" for r in summary["train_step"].values())
    assert summary["fit"] and all(row["needs"] or row["fits"] for row in summary["fit"])
