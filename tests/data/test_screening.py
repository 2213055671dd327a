"""Sample and Scrutinize with the paper's defaults, the refusal to leave videos short, and the
perfect-score review queue (App. C.1), by hand on small tables; the `qsave data` options."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from qsave.cli import main
from qsave.data.annotations import (
    AnnotationConfig,
    ScreenConfig,
    aggregate,
    normalize_ratings,
    normalize_videos,
    screen_raters,
    truth_table,
)
from qsave.data.review import ReviewConfig, apply_review, review_queue
from qsave.errors import AnnotationError, ConfigError

DIMS = ("visual", "dynamic", "alignment")
TRUTH = [1.0, 1.8, 2.6, 3.4, 4.2, 5.0]  # expert MOS of six calibration videos c0..c5
GOOD = {"g0": [1, 2, 3, 3, 4, 5], "g1": [1, 2, 2, 3, 4, 5], "g2": [1, 2, 3, 4, 4, 5],
        "g3": [1, 1, 2, 3, 4, 5], "g4": [2, 2, 3, 4, 5, 5], "g5": [1, 2, 3, 4, 5, 5],
        "g6": [1, 2, 3, 4, 5, 4], "g7": [2, 1, 3, 4, 4, 5]}  # SRCC ≥ 0.89 against TRUTH
BAD = {"b0": [5, 4, 3, 2, 2, 1],  # inverted scale
       "b1": [3, 3, 3, 3, 3, 3],  # constant: SRCC undefined, ranks last
       "b2": [3, 1, 5, 2, 4, 3], "b3": [4, 3, 5, 1, 2, 4],
       "b4": [2, 5, 1, 4, 3, 3], "b5": [1, 5, 2, 4, 3, 2]}  # SRCC ≤ 0.24


def _rows(video: str, scores: dict[str, int], dims=DIMS) -> list[dict]:
    return [{"video_id": video, "rater_id": r, "dimension": d, "score": s}
            for r, s in scores.items() for d in dims]


def _table(*extra: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Ratings of the calibration videos by all 14 raters (+ extra rows), videos, truth.

    Each calibration video has the same scores on the three dimensions: a rater's pooled SRCC
    equals its SRCC on the six values.
    """
    raters = {**GOOD, **BAD}
    rows = [r for i in range(6) for r in _rows(f"c{i}", {k: v[i] for k, v in raters.items()})]
    for more in extra:
        rows += more
    ratings = normalize_ratings(pd.DataFrame(rows))
    ids = sorted(set(ratings["video_id"]))
    videos = normalize_videos(pd.DataFrame({
        "video_id": ids, "path": [f"{v}.mp4" for v in ids], "prompt": [f"p {v}" for v in ids],
        "generator": "g", "split": ["test" if v.startswith("exam") else "train" for v in ids]}))
    truth = pd.DataFrame({"video_id": [f"c{i}" for i in range(6) for _ in DIMS],
                          "dimension": DIMS * 6, "mos": [t for t in TRUTH for _ in DIMS]})
    return ratings, videos, truth


# a training video with three good raters: dropping the six bad ones leaves it whole
WHOLE = _rows("t0", {"g0": 4, "g1": 5, "g2": 4, "b0": 1})


def test_paper_default_drops_the_six_least_accurate_against_experts() -> None:
    ratings, videos, truth = _table(WHOLE)
    result = screen_raters(ratings, truth_table(truth), videos=videos)
    # the reference: scipy's SRCC of every rater on the calibration items, worst six last
    srcc = {r: stats.spearmanr(v, TRUTH).statistic if len(set(v)) > 1 else -2.0
            for r, v in {**GOOD, **BAD}.items()}
    assert set(sorted(srcc, key=srcc.get)[:6]) == set(BAD)
    assert result.dropped == sorted(BAD)
    assert (result.drop_k, result.drop_k_source) == (
        6, "App. C.1 default with an expert ground truth")
    table = result.raters.set_index("rater_id")
    assert table.loc["b1", "rank"] == 14  # the constant rater ranks last
    assert table.loc["b0", "rank"] == 13  # then the inverted scale
    for rater in BAD:
        assert table.loc[rater, "reason"].startswith("among the 6 least accurate (rank ")
        assert table.loc[rater, "reason"].endswith("of 14; drop_k: App. C.1 default with an "
                                                   "expert ground truth)")
    assert not table.loc[list(GOOD), "dropped"].any()
    assert result.ok
    assert "drop_k 6 (App. C.1 default with an expert ground truth)" in result.summary()
    kept = result.apply(ratings)
    assert set(kept["rater_id"]) == set(GOOD)


def test_defaults_without_experts_and_explicit_drop_k() -> None:
    ratings, videos, truth = _table(WHOLE)
    consensus = screen_raters(ratings, None, videos=videos)
    assert (consensus.drop_k, consensus.dropped) == (0, [])
    assert consensus.reference == "leave-one-out MOS"
    assert consensus.drop_k_source.startswith("default without an expert ground truth")
    kept = screen_raters(ratings, truth_table(truth), ScreenConfig(drop_k=0), videos=videos)
    assert (kept.drop_k, kept.drop_k_source, kept.dropped) == (0, "set explicitly", [])
    two = screen_raters(ratings, truth_table(truth), ScreenConfig(drop_k=2), videos=videos)
    assert two.dropped == ["b0", "b1"]
    fewer = ScreenConfig(drop_k_expert=3)  # the paper's count is a field, settable
    assert screen_raters(ratings, truth_table(truth), fewer).drop_k == 3
    with pytest.raises(ConfigError, match=r"drop_k \(-1\) must be ≥ 0"):
        ScreenConfig(drop_k=-1)


def test_a_drop_that_leaves_videos_short_is_refused_naming_them() -> None:
    short = _rows("t1", {"g0": 3, "g1": 4, "b2": 2})  # train: 3 raters → 2
    exam = _rows("exam1", {**dict.fromkeys(GOOD, 4), **dict.fromkeys(list(BAD)[:4], 3)},
                 dims=("visual", "overall"))  # test: 12 raters → 8
    already = _rows("t2", {"g0": 3, "b0": 1})  # train with 2 raters before: not screening's
    ratings, videos, truth = _table(WHOLE, short, exam, already)
    result = screen_raters(ratings, truth_table(truth), videos=videos)
    assert not result.ok
    by_video = {p.video_id: p for p in result.problems}
    assert sorted(by_video) == ["exam1", "t1"]
    assert by_video["t1"].message == ("video 't1' (train, needs 3) would keep 2 of 3 raters "
                                      "on alignment, dynamic, visual after screening")
    assert by_video["exam1"].message == ("video 'exam1' (test, needs 12) would keep 8 of 12 "
                                         "raters on overall, visual after screening")
    assert {p.severity for p in result.problems} == {"error"}
    with pytest.raises(AnnotationError, match=r"screening refused: dropping b0, b1, b2, b3, b4, "
                                              r"b5 would leave 2 video\(s\)[\s\S]*'exam1'"):
        result.apply(ratings)
    # without the videos table every video needs the training minimum (3)
    unsplit = screen_raters(ratings, truth_table(truth))
    assert sorted(p.video_id for p in unsplit.problems) == ["t1"]
    # lower minimums, set explicitly, accept the drop
    lenient = AnnotationConfig(min_raters_train=1, min_raters_test=8)
    assert screen_raters(ratings, truth_table(truth), videos=videos, annotation=lenient).ok


def test_only_overall_short_is_a_warning() -> None:
    overall = _rows("t3", {"g0": 3, "g1": 3, "g2": 3}, dims=("visual",))
    overall += _rows("t3", {"g0": 3, "g1": 3, "b0": 3}, dims=("overall",))
    ratings, videos, truth = _table(overall)
    result = screen_raters(ratings, truth_table(truth), videos=videos)
    assert [(p.video_id, p.severity) for p in result.problems] == [("t3", "warning")]
    assert result.ok


# --- the perfect-score review queue (App. C.1) ------------------------------------------------
PERFECT = {("a", "visual"): [5, 5, 5], ("a", "dynamic"): [5, 5, 4], ("a", "alignment"): [5, 5, 5],
           ("b", "visual"): [5, 5, 9],  # the 9 is out of range and excluded: 5, 5 are left
           ("b", "dynamic"): [4, 4, 4], ("b", "alignment"): [1, 5, 5]}


def _perfect() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [{"video_id": v, "rater_id": f"r{i}", "dimension": d, "score": s}
            for (v, d), scores in PERFECT.items() for i, s in enumerate(scores)]
    videos = normalize_videos(pd.DataFrame({"video_id": ["a", "b"], "path": ["a.mp4", "b.mp4"],
                                            "prompt": ["pa", "pb"], "generator": "g",
                                            "split": ["train", "test"]}))
    return pd.DataFrame(rows), videos


def test_review_queue_lists_exactly_the_all_excellent_pairs() -> None:
    ratings, videos = _perfect()
    usable = aggregate(ratings, videos).usable
    queue = review_queue(usable, videos)
    assert queue[["video_id", "dimension", "split", "n_raters", "raters_to_add", "path",
                  "prompt"]].to_dict("records") == [
        {"video_id": "a", "dimension": "visual", "split": "train", "n_raters": 3,
         "raters_to_add": 9, "path": "a.mp4", "prompt": "pa"},
        {"video_id": "a", "dimension": "alignment", "split": "train", "n_raters": 3,
         "raters_to_add": 9, "path": "a.mp4", "prompt": "pa"},
        {"video_id": "b", "dimension": "visual", "split": "test", "n_raters": 2,
         "raters_to_add": 10, "path": "b.mp4", "prompt": "pb"}]
    assert queue["adjusted_score"].isna().all() and queue["score"].eq(5.0).all()
    # the top of a declared 1–10 scale is 10: nothing here is a perfect score
    assert review_queue(usable, videos, AnnotationConfig(scale_high=10)).empty
    assert review_queue(usable, None, config=ReviewConfig(min_raters=3))[
        "raters_to_add"].tolist() == [0, 0, 1]


def test_apply_review_replaces_the_mos_and_reports_bad_rows() -> None:
    ratings, videos = _perfect()
    result = aggregate(ratings, videos)
    review = pd.DataFrame({"video_id": ["a", "a", "b", "zz", "a"],
                           "dimension": ["visual", "alignment", "visual", "visual", "visual"],
                           "adjusted_score": ["4.5", None, "7", "4", None]})
    mos, problems = apply_review(result.mos, review)
    table = mos.set_index(["video_id", "dimension"])
    assert table.loc[("a", "visual"), ["mos", "mos5", "reviewed"]].tolist() == [4.5, 4.5, True]
    assert table.loc[("a", "alignment"), "mos"] == 5.0  # left empty: not reviewed yet
    assert table["reviewed"].sum() == 1
    assert [(p.rows, p.message) for p in problems] == [
        ((3,), "adjusted_score 7 of 'b'/visual is outside the scale [1, 5]"),
        ((4,), "'zz'/visual is not in the MOS table")]
    twice = pd.DataFrame({"video_id": ["a", "a"], "dimension": ["visual"] * 2,
                          "adjusted_score": [4, 3]})
    _, problems = apply_review(result.mos, twice)
    assert [p.kind for p in problems] == ["bad_review"] * 2
    with pytest.raises(AnnotationError, match="review file lacks column"):
        apply_review(result.mos, twice.drop(columns="adjusted_score"))


# --- the CLI ------------------------------------------------------------------------------------
def _files(tmp_path, *extra: list[dict]):
    ratings, videos, truth = _table(*extra)
    ratings.drop(columns="_row").to_csv(tmp_path / "ratings.csv", index=False)
    videos.drop(columns="_row").to_csv(tmp_path / "videos.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return [tmp_path / n for n in ("ratings.csv", "videos.csv", "truth.csv")]


def test_cli_screen_default_refusal_and_explicit_drop_k(tmp_path, capsys) -> None:
    ratings, videos, truth = _files(tmp_path, WHOLE)
    out = tmp_path / "kept.csv"
    args = ["data", "screen", "--ratings", ratings, "--truth", truth, "--videos", videos]
    assert main([*map(str, args), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drop_k 6 (App. C.1 default with an expert ground truth)" in printed
    assert "dropped 6 rater(s): b0, b1, b2, b3, b4, b5" in printed
    assert set(pd.read_csv(out)["rater_id"]) == set(GOOD)
    raters = pd.read_csv(tmp_path / "kept.raters.csv")
    assert raters["reason"].dropna().str.contains("App. C.1 default").sum() == 6

    ratings, videos, truth = _files(tmp_path, WHOLE, _rows("t1", {"g0": 3, "g1": 4, "b2": 2}))
    refused = tmp_path / "refused.csv"
    assert main([*map(str, args), "-o", str(refused)]) == 1
    printed = capsys.readouterr().out
    assert "video 't1' (train, needs 3) would keep 2 of 3 raters" in printed
    assert "screening refused, nothing written" in printed
    assert not refused.exists() and not (tmp_path / "refused.raters.csv").exists()
    assert main([*map(str, args), "-o", str(refused), "--min-raters-train", "2"]) == 0
    assert main([*map(str, args), "-o", str(refused), "--drop-k", "0"]) == 0
    assert "drop_k 0 (set explicitly); dropped 0 rater(s)" in capsys.readouterr().out
    assert len(pd.read_csv(refused)) == len(pd.read_csv(ratings))


def test_cli_report_lists_screening_and_review_queue_then_mos_applies_it(tmp_path,
                                                                         capsys) -> None:
    perfect = _rows("t5", {"g0": 5, "g1": 5, "g2": 5}, dims=("visual",))
    perfect += _rows("t5", {"g0": 5, "g1": 4, "g2": 5}, dims=("dynamic", "alignment"))
    ratings, videos, truth = _files(tmp_path, WHOLE, perfect)
    report = tmp_path / "report"
    assert main(["data", "report", "--ratings", str(ratings), "--videos", str(videos),
                 "--truth", str(truth), "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "screening: reference: expert ground truth; drop_k 6 (App. C.1 default" in printed
    assert "1 perfect-score video/dimension pair(s) queued for expert review" in printed
    page = (report / "index.html").read_text()
    assert "drop_k 6 (App. C.1 default with an expert ground truth)" in page
    assert "Perfect-score review queue (1)" in page
    queue = pd.read_csv(report / "review.csv")
    assert queue[["video_id", "dimension", "n_raters"]].values.tolist() == [["t5", "visual", 3]]
    queue["adjusted_score"] = 4.5
    queue.to_csv(tmp_path / "filled.csv", index=False)
    mos = tmp_path / "mos.csv"
    assert main(["data", "mos", "--ratings", str(ratings), "--videos", str(videos),
                 "--review", str(tmp_path / "filled.csv"), "-o", str(mos)]) == 0
    assert "1 MOS adjusted by the expert review" in capsys.readouterr().out
    table = pd.read_csv(mos).set_index(["video_id", "dimension"])
    assert table.loc[("t5", "visual"), ["mos", "reviewed"]].tolist() == [4.5, True]
    assert table["reviewed"].sum() == 1
