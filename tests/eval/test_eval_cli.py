"""`qsave eval` end to end on fixture files: table, JSON, HTML, exit codes."""

import json
from pathlib import Path

from helpers import score_row
from qsave.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def _predictions(path: Path, ids: list[str], error_id: str | None = None) -> Path:
    lines = []
    for k, video_id in enumerate(ids):
        if video_id == error_id:
            lines.append(score_row(video_id, error="decode failed"))
            continue
        score = 0.2 + 0.15 * k
        lines.append(score_row(video_id, {d: score for d in ("visual", "dynamic", "alignment")}))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_eval_writes_json_and_html(tmp_path):
    # c003 is in the train split: with --split test it is left out, not an unknown id
    pred = _predictions(tmp_path / "out.jsonl", ["c000", "c001", "c002", "c003"])
    code = main(
        [
            "eval",
            "--pred",
            str(pred),
            "--truth",
            str(FIXTURES / "qsave_manifest.jsonl"),
            "--split",
            "test",
            "--bootstrap",
            "20",
            "--json",
            str(tmp_path / "r.json"),
            "--html",
            str(tmp_path / "r.html"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmark"] == "qsave (test)" and report["missing"] == {}
    assert report["unmatched_predictions"]["count"] == 0
    assert report["config"]["n_resamples"] == 20 and report["config"]["epsilon"] == 0.05
    assert report["correlation"]["visual"]["instance"]["n"] == 3
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()


def test_eval_exits_non_zero_when_predictions_are_missing(tmp_path, capsys):
    pred = _predictions(tmp_path / "out.jsonl", ["c000", "c001", "c002"], error_id="c001")
    code = main(
        [
            "eval",
            "--pred",
            str(pred),
            "--truth",
            str(FIXTURES / "qsave_manifest.jsonl"),
            "--bootstrap",
            "0",
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "prediction error" in out and "no prediction" in out  # c001 failed, c003 absent


def test_eval_benchmark_preference_with_epsilon(tmp_path, capsys):
    ids = [
        "videos/kling/0001.mp4",
        "videos/gen3/0001.mp4",
        "videos/pika/0001.mp4",
        "videos/gen3/0002.mp4",
        "videos/pika/0002.mp4",
        "videos/kling/0002.mp4",
        "videos/pika/0003.mp4",
        "videos/kling/0003.mp4",
    ]
    pred = _predictions(tmp_path / "out.jsonl", ids)
    code = main(
        [
            "eval",
            "--pred",
            str(pred),
            "--truth",
            str(FIXTURES / "videogen_rewardbench.csv"),
            "--benchmark",
            "videogen-rewardbench",
            "--epsilon",
            "0.1",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["preference"]["overall"]["epsilon"] == 0.1
    assert report["preference"]["overall"]["protocol"] == "fixed"
    assert code == 1  # the fixture's malformed row is reported and makes the run non-zero
    assert "must be A, B or same" in capsys.readouterr().out


def test_eval_unknown_benchmark_lists_the_valid_ones(tmp_path, capsys):
    pred = _predictions(tmp_path / "out.jsonl", ["c000"])
    code = main(
        [
            "eval",
            "--pred",
            str(pred),
            "--truth",
            str(FIXTURES / "qsave_manifest.jsonl"),
            "--benchmark",
            "nope",
        ]
    )
    assert code == 1
    assert "genai-bench" in capsys.readouterr().err


def test_eval_unmatched_ids_fail_clearly(tmp_path, capsys):
    pred = _predictions(tmp_path / "out.jsonl", ["c000", "c001", "c002", "c003", "zzz"])
    code = main(["eval", "--pred", str(pred), "--truth", str(FIXTURES / "qsave_manifest.jsonl")])
    assert code == 1
    assert "1 prediction ids match no" in capsys.readouterr().err


def test_eval_adapter_options(tmp_path, capsys):
    ids = [
        "0001/0001_00.mp4",
        "0001/0001_01.mp4",
        "0001/0001_02.mp4",
        "0001/0001_03.mp4",
        "0002/0002_00.mp4",
        "0002/0002_01.mp4",
        "0002/0002_02.mp4",
    ]
    pred = _predictions(tmp_path / "out.jsonl", ids)
    args = [
        "eval",
        "--pred",
        str(pred),
        "--truth",
        str(FIXTURES / "t2vqa_db.txt"),
        "--benchmark",
        "t2vqa-db",
        "--bootstrap",
        "0",
        "--json",
        str(tmp_path / "r.json"),
    ]
    main([*args, "--option", "tie_margin=0.5"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["preference"]["overall"]["pairs"] == 5
    assert any("|ΔMOS| ≤ 0.5" in note for note in report["notes"])
    assert main([*args, "--option", "colour=blue"]) == 1
    assert "takes no option colour" in capsys.readouterr().err
