"""The `qsave data` commands through the real CLI on generated corpora: an existing split is
kept, moved videos are reported, test videos short of raters are refused, a failing command
writes nothing, and every table one step writes is a valid input of the next."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from qsave.cli import main
from qsave.data.annotations import load_videos
from qsave.errors import VideoError

SCREENING_KINDS = {"unscreened", "screening_shortfall"}  # screen's own, beside the mos checks


def _run(*args: object) -> int:
    return main(["data", *map(str, args)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """48 clips of 32×32 px, 1 s: 3 raters per train/rl clip, 12 per test clip (Sec. 3.3)."""
    out = tmp_path_factory.mktemp("data-cli") / "corpus"
    assert _run("synth", "-o", out, "--count", 48, "--size", 32, "--seconds", 1) == 0
    return out


def _splits(path) -> dict[str, str]:
    table = load_videos(path)
    return dict(zip(table["video_id"], table["split"], strict=True))


def _no_partials(folder) -> None:
    assert not [p.name for p in folder.rglob("*partial*")]


# --- split ---------------------------------------------------------------------------------
def test_split_keeps_an_existing_split(corpus, tmp_path, capsys) -> None:
    manifest, out = corpus / "manifest.jsonl", tmp_path / "split.csv"
    assert _run("split", "--videos", manifest, "--ratings", corpus / "ratings.csv",
                "-o", out) == 0
    printed = capsys.readouterr().out
    assert "no video moved (48 kept their split)" in printed
    assert _splits(out) == _splits(manifest)
    table = pd.read_csv(out)
    assert (table["split"] == table["previous_split"]).all()
    assert set(table["split_reason"]) == {"kept"}
    raters = table.groupby("split")["n_raters"].agg(["min", "max"])
    assert raters.loc["test"].tolist() == [12, 12] and raters.loc["train"].tolist() == [3, 3]
    # without --ratings the rater counts are not checked, and it says so
    assert _run("split", "--videos", manifest, "-o", tmp_path / "unchecked.csv") == 0
    assert "rater counts not checked: pass --ratings" in capsys.readouterr().out
    # the CSV keeps the manifest's nested fields: records from it are the manifest's records
    for name, videos in (("from_csv", out), ("from_manifest", manifest)):
        assert _run("records", "--videos", videos, "-o", tmp_path / f"{name}.jsonl") == 0
    rows = [[json.loads(line)["target"] for line in (tmp_path / f"{n}.jsonl").open()]
            for n in ("from_csv", "from_manifest")]
    assert rows[0] == rows[1] and len(rows[0]) == 3 * 48


def test_resplit_reports_moved_videos_and_refuses_short_test_videos(corpus, tmp_path,
                                                                    capsys) -> None:
    args = ["split", "--videos", corpus / "manifest.jsonl", "--ratings",
            corpus / "ratings.csv", "--resplit"]
    refused = tmp_path / "refused.csv"
    assert _run(*args, "-o", refused) == 1
    printed = capsys.readouterr().out
    assert "needs 12" in printed and "--allow-few-raters" in printed
    assert f"nothing written to {refused}" in printed and not refused.exists()
    out = tmp_path / "resplit.csv"
    assert _run(*args, "--allow-few-raters", "-o", out, "--problems", tmp_path / "p.csv") == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out)
    moved = table[table["split"] != table["previous_split"]]
    assert len(moved) > 0 and f"{len(moved)} video(s) moved to another split" in printed
    assert (moved["previous_split"] == moved["split"].map({"train": "test", "test": "train"})
            ).all()
    short = table[(table["split"] == "test") & (table["n_raters"] < 12)]
    assert len(short) > 0  # train clips with their 3 raters went to test …
    problems = pd.read_csv(tmp_path / "p.csv")
    few = problems[problems["kind"] == "too_few_raters"]
    assert set(few["severity"]) == {"warning"} and set(few["video_id"]) == set(short["video_id"])
    # … and a table that carries its rater counts is checked without --ratings
    assert _run("split", "--videos", out, "-o", tmp_path / "again.csv") == 1
    printed = capsys.readouterr().out
    assert "rater counts not checked" not in printed and "needs 12" in printed


# --- one outcome: exit 0 with warnings, or exit 1 with nothing written ----------------------
def _bad_ratings(corpus, tmp_path):
    """The corpus's ratings with one score out of the 1–5 scale."""
    ratings = pd.read_csv(corpus / "ratings.csv")
    ratings.loc[5, "score"] = 9
    path = tmp_path / "bad.csv"
    ratings.to_csv(path, index=False)
    return path


def _refuses(args: list, outputs: list, capsys) -> str:
    """The command exits 1 and writes none of ``outputs``, whether they exist or not."""
    assert main(list(map(str, args))) == 1
    assert not any(p.exists() for p in outputs)
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix:
            path.write_text("older output\n")
        else:
            path.mkdir()
            (path / "older.txt").write_text("older output\n")
    printed = capsys.readouterr()
    assert main(list(map(str, args))) == 1
    for path in outputs:
        kept = path if path.suffix else path / "older.txt"
        assert kept.read_text() == "older output\n"
        assert not path.is_dir() or [p.name for p in path.iterdir()] == ["older.txt"]
    _no_partials(outputs[0].parent)
    return printed.out + printed.err


def test_mos_screen_records_on_bad_ratings_write_nothing(corpus, tmp_path, capsys) -> None:
    bad, manifest = _bad_ratings(corpus, tmp_path), corpus / "manifest.jsonl"
    out = tmp_path / "out"
    printed = _refuses(["data", "mos", "--ratings", bad, "--videos", manifest,
                        "-o", out / "mos.csv"], [out / "mos.csv"], capsys)
    assert "out_of_range" in printed and "nothing written" in printed
    printed = _refuses(["data", "screen", "--ratings", bad, "--videos", manifest,
                        "-o", out / "kept.csv", "--mos", out / "kept_mos.csv"],
                       [out / "kept.csv", out / "kept.raters.csv", out / "kept_mos.csv"],
                       capsys)
    assert "errors that `qsave data mos` refuses" in printed
    printed = _refuses(["data", "records", "--videos", manifest, "--ratings", bad,
                        "-o", out / "records.jsonl"], [out / "records.jsonl"], capsys)
    assert "out_of_range" in printed
    # a drop that leaves videos short is refused, the paper's drop of 6 among them
    printed = _refuses(["data", "screen", "--ratings", corpus / "ratings.csv", "--videos",
                        manifest, "--truth", manifest, "-o", out / "screened.csv"],
                       [out / "screened.csv", out / "screened.raters.csv"], capsys)
    assert "drop_k 6 (App. C.1 default" in printed and "screening refused" in printed


def test_split_report_synth_and_export_write_nothing_on_failure(corpus, tmp_path, capsys,
                                                                monkeypatch) -> None:
    manifest = corpus / "manifest.jsonl"
    _refuses(["data", "split", "--videos", manifest, "--ratings", corpus / "ratings.csv",
              "--resplit", "-o", tmp_path / "split.csv"], [tmp_path / "split.csv"], capsys)
    no_score = tmp_path / "no_score.csv"
    pd.read_csv(corpus / "ratings.csv").drop(columns="score").to_csv(no_score, index=False)
    printed = _refuses(["data", "report", "--ratings", no_score, "-o", tmp_path / "report"],
                       [tmp_path / "report"], capsys)
    assert "lacks column(s) score" in printed
    bad_records = tmp_path / "bad.jsonl"
    bad_records.write_text('{"id": "x"}\n')
    _refuses(["data", "export-verl", "--records", bad_records, "-o", tmp_path / "verl"],
             [tmp_path / "verl"], capsys)
    import qsave.data.synthetic as synthetic

    encode = synthetic.encode_mp4

    def fail_one(frames, path, *args, **kwargs):
        if path.stem == "syn-00001":
            raise VideoError(f"cannot encode {path}: disk full")
        return encode(frames, path, *args, **kwargs)

    monkeypatch.setattr(synthetic, "encode_mp4", fail_one)
    printed = _refuses(["data", "synth", "-o", tmp_path / "synth", "--count", 3, "--size", 32,
                        "--seconds", 1], [tmp_path / "synth"], capsys)
    assert "syn-00001" in printed and "1 clip(s) failed: nothing written" in printed


def test_export_verl_removes_the_folder_it_made_for_a_failed_run(tmp_path, tiny,
                                                                 monkeypatch) -> None:
    import shutil

    import qsave.train.verl as verl

    corpus, records = tmp_path / "small", tmp_path / "rl.jsonl"
    assert _run("synth", "-o", corpus, "--count", 8, "--size", 32, "--seconds", 1) == 0
    assert _run("records", "--videos", corpus / "manifest.jsonl", "--split", "rl",
                "-o", records) == 0
    shutil.rmtree(corpus / "clips")  # the records' videos are gone: the export fails
    monkeypatch.setattr(verl, "load_processor", lambda *_: tiny.processor)
    assert _run("export-verl", "--records", records, "-o", tmp_path / "verl") == 1
    assert not (tmp_path / "verl").exists()


def test_many_problems_name_a_table_that_exists(corpus, tmp_path, capsys) -> None:
    ratings = pd.read_csv(corpus / "ratings.csv")
    ratings.loc[:29, "score"] = 0  # 30 scores out of range: more than the 20 printed
    bad = tmp_path / "bad.csv"
    ratings.to_csv(bad, index=False)
    args = ["mos", "--ratings", bad, "-o", tmp_path / "mos.csv"]
    assert _run(*args) == 1
    assert "more (--problems FILE writes all of them)" in capsys.readouterr().out
    assert _run(*args, "--problems", tmp_path / "problems.csv") == 1
    printed = capsys.readouterr().out
    assert f"all of them in {tmp_path / 'problems.csv'}" in printed
    problems = pd.read_csv(tmp_path / "problems.csv")
    assert (problems["kind"] == "out_of_range").sum() == 30
    assert not (tmp_path / "mos.csv").exists()


# --- screen → mos ------------------------------------------------------------------------------
@pytest.fixture
def warned_ratings(corpus, tmp_path):
    """The corpus's ratings with two warnings only: a train video without any overall rating,
    a test video with 10 overall raters (an overall shortfall is a warning, Sec. 3.3)."""
    ratings = pd.read_csv(corpus / "ratings.csv")
    splits = _splits(corpus / "manifest.jsonl")
    train = next(v for v, s in splits.items() if s == "train")
    test = next(v for v, s in splits.items() if s == "test")
    overall = ratings["dimension"] == "overall"
    two = ratings.loc[overall & (ratings["video_id"] == test), "rater_id"].iloc[:2]
    drop = overall & ((ratings["video_id"] == train)
                      | ((ratings["video_id"] == test) & ratings["rater_id"].isin(two)))
    path = tmp_path / "warned.csv"
    ratings[~drop].to_csv(path, index=False)
    return path


def _problems(path) -> list[dict]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table[~table["kind"].isin(SCREENING_KINDS)]
    return table.to_dict("records")


@pytest.mark.parametrize("drop", [(), ("--truth", "MANIFEST", "--drop-k", "3",
                                       "--min-raters-train", "1", "--min-raters-test", "1",
                                       "--min-raters-rl", "1")], ids=["default", "drop-3"])
def test_screen_then_mos_same_checks_same_problems(corpus, warned_ratings, tmp_path, capsys,
                                                   drop) -> None:
    manifest = corpus / "manifest.jsonl"
    drop = [manifest if a == "MANIFEST" else a for a in drop]
    minimums = [a for i, a in enumerate(drop) if str(a).startswith("--min")
                or (i and str(drop[i - 1]).startswith("--min"))]
    screened, screen_mos = tmp_path / "screened.csv", tmp_path / "screen_mos.csv"
    assert _run("screen", "--ratings", warned_ratings, "--videos", manifest, "-o", screened,
                "--mos", screen_mos, "--problems", tmp_path / "screen.csv", *drop) == 0
    printed = capsys.readouterr().out
    if not drop:
        assert "drop_k 0 (default without an expert ground truth" in printed
        assert "nobody is dropped by default without --truth" in printed
        assert "drops the 6 least accurate raters" in printed
    else:
        assert "dropped 3 rater(s)" in printed
    assert _run("mos", "--ratings", screened, "--videos", manifest, "-o", tmp_path / "mos.csv",
                "--problems", tmp_path / "mos_problems.csv", *minimums) == 0
    from_screen, from_mos = _problems(tmp_path / "screen.csv"), \
        _problems(tmp_path / "mos_problems.csv")
    assert from_screen == from_mos
    assert {p["kind"] for p in from_mos} >= {"missing_dimension"}
    assert all(p["severity"] == "warning" for p in from_mos)
    pd.testing.assert_frame_equal(pd.read_csv(screen_mos), pd.read_csv(tmp_path / "mos.csv"))
    # the screened table is a valid input of every later step
    assert _run("records", "--videos", manifest, "--ratings", screened, "-o",
                tmp_path / "records.jsonl", *minimums) == 0
    assert _run("split", "--videos", manifest, "--ratings", screened, "-o",
                tmp_path / "split.csv", *minimums) == 0
