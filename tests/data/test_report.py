"""The dataset report, the `qsave data ...` commands, and an end-to-end run on the synthetic
corpus (mos → screen → split → records → report)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from qsave.cli import main
from qsave.data.annotations import (
    ScreenConfig,
    aggregate,
    load_ratings,
    load_videos,
    normalize_videos,
    read_table,
    screen_raters,
    truth_table,
)
from qsave.data.records import load_records
from qsave.data.report import PLOTS, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _hand_made() -> tuple[pd.DataFrame, pd.DataFrame]:
    videos = pd.DataFrame([{"video_id": f"v{i}", "path": f"v{i}.mp4", "prompt": f"p{i}",
                            "generator": "g1" if i < 3 else "g2", "split": "train"}
                           for i in range(6)])
    rows = [{"video_id": f"v{i}", "rater_id": f"r{r}", "dimension": d,
             "score": 1 + (i + r + k) % 5}
            for i in range(6) for r in range(3)
            for k, d in enumerate(("visual", "dynamic", "alignment", "overall"))]
    rows.append({"video_id": "v0", "rater_id": "r0", "dimension": "visual", "score": 6})  # 73
    rows.append({"video_id": "v1", "rater_id": "r1", "dimension": "visual", "score": 3})  # 74
    return videos, pd.DataFrame(rows)


def test_report_files_and_html(tmp_path) -> None:
    videos, ratings = _hand_made()
    table = normalize_videos(videos)
    result = aggregate(ratings, table)
    files = write_report(tmp_path / "report", result, table)
    assert set(files.plots) == set(PLOTS)
    for path in files.plots.values():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 2000
    page = files.html.read_text()
    for section in ("MOS per dimension (Fig. 6)", "MOS per generator (Fig. 7)",
                    "Inter-rater agreement", "Overall vs. the mean", "Problems (2)"):
        assert section in page
    assert "out_of_range" in page and "rater variance" in page.lower()
    assert "Perfect-score review queue (0)" in page  # each video's raters disagree here
    assert list(pd.read_csv(files.tables["review"]).columns)[-2:] == ["adjusted_score", "note"]
    mos = pd.read_csv(files.tables["mos"])
    assert len(mos) == 6 * 4
    assert pd.read_csv(files.tables["problems"])["kind"].tolist() == ["out_of_range",
                                                                      "duplicate"]


def _run(*args: str) -> int:
    return main(["data", *map(str, args)])


def test_cli_reports_bad_input_and_exits_non_zero(tmp_path, capsys) -> None:
    videos, ratings = _hand_made()
    videos.to_csv(tmp_path / "videos.csv", index=False)
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    code = _run("mos", "--ratings", tmp_path / "ratings.csv", "--videos",
                tmp_path / "videos.csv", "--out", tmp_path / "mos.parquet", "--problems",
                tmp_path / "problems.csv")
    assert code == 1
    output = capsys.readouterr().out
    assert "out_of_range" in output and "row 73" in output
    assert "nothing written to" in output
    problems = pd.read_csv(tmp_path / "problems.csv")  # asked for: written on failure too
    assert problems["kind"].tolist() == ["out_of_range", "duplicate"]
    assert not (tmp_path / "mos.parquet").exists()  # an error: no MOS table
    ok = _run("mos", "--ratings", tmp_path / "ratings.csv", "--out", tmp_path / "m.csv",
              "--scale-high", "6", "--min-raters-train", "1")
    assert ok == 1  # the 6 is now in range, but r0 rated v0/visual twice
    assert _run("records", "--videos", tmp_path / "videos.csv", "--out", tmp_path / "r.jsonl",
                "--describer", "nothing") == 1  # a ConfigError, printed
    assert "unknown describer 'nothing'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from qsave.data.synthetic import SynthConfig, write_corpus

    out = tmp_path_factory.mktemp("corpus")
    config = SynthConfig(n=24, seed=0, size=32, seconds=1.0, raters=14, unreliable=3)
    result = write_corpus(out, config)
    assert not result.errors
    return out


def test_end_to_end_on_the_synthetic_corpus(corpus, tmp_path) -> None:
    manifest, ratings = corpus / "manifest.jsonl", corpus / "ratings.csv"
    unreliable = json.loads((corpus / "raters.json").read_text())["unreliable"]
    assert _run("mos", "--ratings", ratings, "--videos", manifest, "--out",
                tmp_path / "mos.csv", "--raters", corpus / "raters.json") == 0
    # Sample and Scrutinize against the manifest's ground-truth MOS finds the random raters;
    # the paper's default (drop 6) would leave 3-rater videos short and is refused, so the
    # drop and the lower minimums are set explicitly
    screen = ["screen", "--ratings", ratings, "--truth", manifest, "--videos", manifest,
              "--out", tmp_path / "screened.csv", "--mos", tmp_path / "mos_screened.csv"]
    assert _run(*screen) == 1 and not (tmp_path / "screened.csv").exists()
    assert _run(*screen, "--drop-k", len(unreliable), "--min-raters-train", 1,
                "--min-raters-test", 1, "--min-raters-rl", 1) == 0
    raters = pd.read_csv(tmp_path / "screened.raters.csv")
    assert sorted(raters.loc[raters["dropped"], "rater_id"]) == sorted(unreliable)
    screened = load_ratings(tmp_path / "screened.csv")
    assert not set(screened["rater_id"]) & set(unreliable)
    recomputed = pd.read_csv(tmp_path / "mos_screened.csv", dtype={"video_id": str})
    expected = aggregate(screened).mos  # the MOS of the kept raters' ratings
    assert recomputed["mos"].tolist() == pytest.approx(expected["mos"].tolist())
    before = pd.read_csv(tmp_path / "mos.csv")
    assert recomputed["n_raters"].sum() < before["n_raters"].sum()
    # the corpus's own split has no prompt leak; a fresh one keeps rl and regroups the rest
    assert _run("split", "--videos", manifest, "--out", tmp_path / "videos.jsonl") == 0
    split = load_videos(tmp_path / "videos.jsonl")
    assert split["split"].value_counts()["rl"] == load_videos(manifest)["split"].eq("rl").sum()
    assert _run("records", "--videos", tmp_path / "videos.jsonl", "--ratings",
                tmp_path / "screened.csv", "--split", "train", "--out",
                tmp_path / "records.jsonl", "--min-raters-train", "1",
                "--min-raters-test", "1", "--min-raters-rl", "1") == 0
    loaded = load_records(tmp_path / "records.jsonl", check_files=True)
    assert len(loaded.records) == 3 * int((split["split"] == "train").sum())
    attributed = [r for r in loaded.records if r.rationale_source == "attribution"]
    assert attributed and all(r.target.startswith("<think>") for r in attributed)
    assert _run("report", "--ratings", ratings, "--videos", manifest, "--out",
                tmp_path / "report") == 0
    assert (tmp_path / "report" / "index.html").stat().st_size > 1000


def test_screening_recovers_unreliable_raters_in_the_library(corpus) -> None:
    videos = load_videos(corpus / "manifest.jsonl")
    result = aggregate(load_ratings(corpus / "ratings.csv"), videos)
    assert result.report.ok
    unreliable = json.loads((corpus / "raters.json").read_text())["unreliable"]
    truth = truth_table(read_table(corpus / "manifest.jsonl"))
    screening = screen_raters(result.usable, truth, ScreenConfig(drop_k=len(unreliable)))
    assert screening.dropped == sorted(unreliable)
    reliable = screening.raters[~screening.raters["dropped"]]
    assert reliable["srcc"].min() > screening.raters.loc[screening.raters["dropped"],
                                                         "srcc"].max()
