"""Inputs and their ids: folders, single files, manifests; duplicate ids are refused."""

import json
import shutil

import pytest

from qsave.cli import main
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.errors import AnnotationError, DuplicateIdError, UsageError
from qsave.sources import items_from

FIXTURES = __import__("pathlib").Path(__file__).parent / "eval" / "fixtures"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("source-clips")
    write_corpus(root, SynthConfig(n=6, seed=4, seconds=0.5))
    return root


@pytest.fixture(autouse=True)
def no_cached_demo(monkeypatch, tmp_path):
    monkeypatch.setenv("QSAVE_CACHE", str(tmp_path / "cache"))  # --model tiny: the random one


def rewardbench_folder(corpus, root):
    """videos/<generator>/<n>.mp4 as in VideoGen-RewardBench: one file name per generator."""
    clips = sorted((corpus / "clips").glob("*.mp4"))
    names = ["kling/0001", "gen3/0001", "pika/0001", "gen3/0002", "pika/0002", "kling/0002"]
    for name, clip in zip(names, clips, strict=True):
        (root / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / "videos" / f"{name}.mp4")
    return root / "videos", names


def test_ids_are_paths_relative_to_the_folder(corpus, tmp_path):
    folder, names = rewardbench_folder(corpus, tmp_path)
    items = items_from(folder)
    assert sorted(i.name for i in items) == sorted(names)
    assert items_from(folder / "kling" / "0001.mp4")[0].name == "0001"  # a single file: stem


def test_a_folder_with_two_files_of_one_id_is_refused_naming_both(corpus, tmp_path):
    clip = sorted((corpus / "clips").glob("*.mp4"))[0]
    shutil.copy(clip, tmp_path / "a.mp4")
    shutil.copy(clip, tmp_path / "a.webm")
    with pytest.raises(DuplicateIdError, match=r"'a': .*a\.mp4 and .*a\.webm"):
        items_from(tmp_path)


def test_a_manifest_with_duplicate_ids_is_refused(corpus, tmp_path):
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    rows[1]["id"] = rows[0]["id"]
    manifest = corpus / "dup.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DuplicateIdError, match=rows[0]["id"]):
        items_from(manifest)
    rows = [{"path": r["path"]} for r in rows]  # no ids: the path without its suffix
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i.name for i in items_from(manifest)] == [r["path"][:-4] for r in rows]
    manifest.write_text(json.dumps(rows[0]) + "\n{cut")
    with pytest.raises(AnnotationError, match=r"dup\.jsonl:2"):
        items_from(manifest)


def test_duplicate_ids_stop_qsave_score_before_the_model_loads(corpus, tmp_path, capsys):
    clip = sorted((corpus / "clips").glob("*.mp4"))[0]
    shutil.copy(clip, tmp_path / "a.mp4")
    shutil.copy(clip, tmp_path / "a.mov")
    out = tmp_path / "out.jsonl"
    code = main(["score", str(tmp_path), "-o", str(out), "--model", str(tmp_path / "no-model")])
    assert code == 2  # not the missing checkpoint's error: nothing was loaded
    assert "ids must be unique" in capsys.readouterr().err and not out.exists()


def test_a_rewardbench_folder_is_scored_and_evaluated_with_its_pairs(corpus, tmp_path, capsys):
    folder, names = rewardbench_folder(corpus, tmp_path)
    out = tmp_path / "out.jsonl"
    assert main(["score", str(folder), "-o", str(out), "--dimensions", "visual"]) == 0
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(names)
    report = tmp_path / "report.json"
    code = main(["eval", "--pred", str(out), "--truth", str(FIXTURES / "videogen_rewardbench.csv"),
                 "--benchmark", "videogen-rewardbench", "--bootstrap", "0", "--json",
                 str(report)])
    preference = json.loads(report.read_text())["preference"]
    assert preference["visual"]["pairs"] > 0, capsys.readouterr().out
    assert code in (0, 1)  # 1: the other dimensions have no predictions (scored visual only)


def test_qsave_eval_refuses_duplicate_ids(tmp_path, capsys):
    from helpers import score_row

    pred = tmp_path / "out.jsonl"
    rows = [score_row("kling/0001"), score_row("pika/0001"), score_row("kling/0001")]
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["eval", "--pred", str(pred), "--truth",
                 str(FIXTURES / "videogen_rewardbench.csv"), "--benchmark",
                 "videogen-rewardbench"])
    assert code == 2
    assert "'kling/0001' (lines 1, 3)" in capsys.readouterr().err


def test_split_keeps_the_manifest_lines_of_one_split(corpus, tmp_path, capsys):
    from qsave.sources import scan

    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    test = [r["id"] for r in rows if r["split"] == "test"]
    assert test and [i.name for i in scan(corpus / "manifest.jsonl", split="test").items] == test
    with pytest.raises(UsageError, match=r"no line of .* is in split 'tset' \(splits found: "):
        scan(corpus / "manifest.jsonl", split="tset")
    with pytest.raises(UsageError, match="selects lines of a manifest"):
        scan(corpus / "clips", split="test")
    bare = tmp_path / "bare.jsonl"  # a manifest without split fields says so
    bare.write_text("".join(json.dumps({"path": str(corpus / r["path"])}) + "\n" for r in rows))
    with pytest.raises(UsageError, match="none: the lines have no split field"):
        scan(bare, split="test")
    assert main(["score", str(corpus / "manifest.jsonl"), "--split", "tset", "--model", "tiny",
                 "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "no line of" in capsys.readouterr().err and not (tmp_path / "out.jsonl").exists()
