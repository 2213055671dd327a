"""Ratings → MOS, checks and screening on hand-made tables with known outcomes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qsave.data.annotations import (
    AnnotationConfig,
    ScreenConfig,
    aggregate,
    collect_reasons,
    compute_mos,
    inter_rater_agreement,
    krippendorff_alpha,
    load_rater_ids,
    load_ratings,
    load_videos,
    mos_from_videos,
    normalize_ratings,
    normalize_videos,
    overall_consistency,
    screen_raters,
    truth_table,
)
from qsave.errors import AnnotationError, ConfigError

DIMS = ("visual", "dynamic", "alignment")


def _videos(**splits: str) -> pd.DataFrame:
    rows = [{"video_id": v, "path": f"{v}.mp4", "prompt": f"prompt of {v}", "generator": "g",
             "split": s} for v, s in splits.items()]
    return normalize_videos(pd.DataFrame(rows))


def _ratings(scores: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """{(video, dimension): [score of rater r0, r1, …]} → a ratings table."""
    rows = [{"video_id": v, "rater_id": f"r{i}", "dimension": d, "score": s}
            for (v, d), values in scores.items() for i, s in enumerate(values)]
    return pd.DataFrame(rows)


CLEAN = {("a", "visual"): [4, 5, 5], ("a", "dynamic"): [2, 3, 1], ("a", "alignment"): [3, 3, 4],
         ("b", "visual"): [1, 2, 2], ("b", "dynamic"): [5, 5, 5], ("b", "alignment"): [2, 4, 3]}


def test_mos_std_and_counts_match_hand_values() -> None:
    result = aggregate(_ratings(CLEAN), _videos(a="train", b="train"))
    assert result.report.problems == []
    mos = result.mos.set_index(["video_id", "dimension"])
    assert mos.loc[("a", "visual"), "mos"] == pytest.approx(14 / 3)
    assert mos.loc[("a", "dynamic"), "std"] == pytest.approx(1.0)  # ddof=1 of 2, 3, 1
    assert mos.loc[("b", "dynamic"), "std"] == 0.0
    assert mos.loc[("b", "alignment"), "mos"] == 3.0
    assert set(mos["n_raters"]) == {3}
    assert (mos["mos5"] == mos["mos"]).all()  # the declared scale is already 1–5
    for (video, dim), values in CLEAN.items():
        assert mos.loc[(video, dim), "std"] == pytest.approx(np.std(values, ddof=1))


def test_declared_scale_maps_to_one_to_five() -> None:
    scores = {("a", d): [0, 10, 5] for d in DIMS}
    config = AnnotationConfig(scale_low=0, scale_high=10)
    result = aggregate(_ratings(scores), _videos(a="train"), config)
    assert result.report.ok
    assert result.mos["mos"].tolist() == [5.0] * 3
    assert result.mos["mos5"].tolist() == [3.0] * 3  # 1 + 4·(5 − 0)/10
    bad = aggregate(_ratings({("a", "visual"): [11, 5, 5]}), None, config)
    assert [p.kind for p in bad.report.problems if p.rows] == ["out_of_range"]


def test_every_bad_row_is_reported_and_excluded_never_dropped() -> None:
    table = _ratings(CLEAN)
    bad_rows = pd.DataFrame([
        {"video_id": "a", "rater_id": "r9", "dimension": "visual", "score": 7},       # row 19
        {"video_id": "a", "rater_id": "r8", "dimension": "visual", "score": "good"},  # row 20
        {"video_id": "a", "rater_id": "", "dimension": "visual", "score": 3},         # row 21
        {"video_id": "a", "rater_id": "r7", "dimension": "colour", "score": 3},       # row 22
        {"video_id": "zz", "rater_id": "r1", "dimension": "visual", "score": 3},      # row 23
        {"video_id": "a", "rater_id": "r0", "dimension": "visual", "score": 1},       # row 24
    ])
    table = pd.concat([table, bad_rows], ignore_index=True)
    result = aggregate(table, _videos(a="train", b="train"))
    row_kinds = {p.rows: p.kind for p in result.report.problems if p.table == "ratings"}
    assert row_kinds == {(19,): "out_of_range", (20,): "bad_score", (21,): "missing_value",
                         (22,): "unknown_dimension", (23,): "unknown_video",
                         (1, 24): "duplicate"}
    assert result.report.excluded_rows == (19, 20, 21, 22, 23, 24)
    assert len(result.usable) + len(result.report.excluded_rows) == len(table)
    # the first of the duplicate ratings (4, row 1) is the one kept
    mos = result.mos.set_index(["video_id", "dimension"])
    assert mos.loc[("a", "visual"), "mos"] == pytest.approx(14 / 3)
    with pytest.raises(AnnotationError) as error:
        result.report.raise_if_errors()
    for row in ("row 19", "row 20", "row 21", "row 22", "row 23", "row 1, 24"):
        assert row in str(error.value)


def test_coverage_problems_by_split() -> None:
    scores = dict(CLEAN)
    del scores[("b", "alignment")]  # b misses a dimension
    scores[("t", "visual")] = [3] * 12
    scores[("t", "dynamic")] = [3] * 11  # one short of the 12 a test video needs
    scores[("t", "alignment")] = [3] * 12
    videos = _videos(a="train", b="train", t="test", u="train")  # u has no rating at all
    report = aggregate(_ratings(scores), videos).report
    found = {(p.kind, p.video_id, p.dimension) for p in report.problems}
    assert found == {("missing_dimension", "b", "alignment"), ("too_few_raters", "t", "dynamic"),
                     ("unrated_video", "u", None)}
    relaxed = AnnotationConfig(min_raters_test=11)
    found = {p.kind for p in aggregate(_ratings(scores), videos, relaxed).report.problems}
    assert "too_few_raters" not in found


def test_overall_is_optional_but_checked_once_present() -> None:
    scores = dict(CLEAN)
    scores[("a", "overall")] = [4, 4, 4]
    report = aggregate(_ratings(scores), _videos(a="train", b="train")).report
    assert [(p.kind, p.video_id, p.severity) for p in report.problems] == [
        ("missing_dimension", "b", "warning")]
    assert report.ok  # a missing overall rating is a warning only


def test_videos_table_problems() -> None:
    frame = pd.DataFrame([
        {"video_id": "a", "path": "a.mp4", "prompt": "p", "generator": "g", "split": "train"},
        {"video_id": "a", "path": "a2.mp4", "prompt": "p", "generator": "g", "split": "train"},
        {"video_id": "b", "path": "", "prompt": "p", "generator": "g", "split": "validation"},
    ])
    report = aggregate(_ratings({("a", d): [3, 3, 3] for d in DIMS}),
                       normalize_videos(frame)).report
    kinds = {(p.kind, p.rows) for p in report.problems}
    assert ("duplicate_video", (1, 2)) in kinds
    assert ("missing_field", (3,)) in kinds
    assert ("bad_split", (3,)) in kinds
    with pytest.raises(AnnotationError, match="lacks column"):
        normalize_videos(frame.drop(columns=["generator"]))


def test_unknown_raters_when_a_rater_list_is_given(tmp_path) -> None:
    (tmp_path / "raters.json").write_text('{"raters": [{"id": "r0"}, {"id": "r1"}]}')
    known = load_rater_ids(tmp_path / "raters.json")
    assert known == ["r0", "r1"]
    pd.DataFrame({"rater_id": ["r0", "r1", "r2"]}).to_csv(tmp_path / "raters.csv", index=False)
    assert load_rater_ids(tmp_path / "raters.csv") == ["r0", "r1", "r2"]
    report = aggregate(_ratings(CLEAN), _videos(a="train", b="train"), raters=known).report
    unknown = [p for p in report.problems if p.kind == "unknown_rater"]
    assert [p.rows for p in unknown] == [(3,), (6,), (9,), (12,), (15,), (18,)]  # r2's rows
    assert report.excluded_rows == (3, 6, 9, 12, 15, 18)


def test_integer_scores_option() -> None:
    scores = {("a", d): [3, 3.5, 4] for d in DIMS}
    assert aggregate(_ratings(scores), _videos(a="train")).report.ok
    strict = aggregate(_ratings(scores), _videos(a="train"), AnnotationConfig(integer_scores=True))
    assert strict.report.counts() == {"non_integer": 3, "too_few_raters": 3}


def test_config_errors_quote_values() -> None:
    with pytest.raises(ConfigError, match=r"scale_low \(5\)"):
        AnnotationConfig(scale_low=5, scale_high=1)
    with pytest.raises(ConfigError, match="min_raters_test"):
        AnnotationConfig(min_raters_test=0)


def test_csv_parquet_and_manifest_loading(tmp_path) -> None:
    table = _ratings(CLEAN)
    table.to_csv(tmp_path / "r.csv", index=False)
    table.to_parquet(tmp_path / "r.parquet")
    from_csv, from_parquet = load_ratings(tmp_path / "r.csv"), load_ratings(tmp_path / "r.parquet")
    assert from_csv["_row"].tolist() == list(range(1, 19))
    mos_csv, mos_parquet = aggregate(from_csv).mos, aggregate(from_parquet).mos
    pd.testing.assert_frame_equal(mos_csv, mos_parquet)
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "manifest.jsonl"
    manifest.write_text(
        '{"id": "a", "path": "clips/a.mp4", "prompt": "p", "generator": "g", "split": "train", '
        '"mos": {"visual": 4.5, "dynamic": 2.0, "alignment": 3.0, "overall": 3.1}, '
        '"attributions": {"visual": null, "dynamic": "the ball stutters", "alignment": null}}\n'
    )
    videos = load_videos(manifest)
    assert videos.loc[0, "path"] == str((tmp_path / "m" / "clips" / "a.mp4").resolve())
    assert videos.loc[0, "attribution_dynamic"] == "the ball stutters"
    assert mos_from_videos(videos).set_index("dimension")["mos5"].to_dict() == {
        "visual": 4.5, "dynamic": 2.0, "alignment": 3.0, "overall": 3.1}
    manifest.write_text('{"id": "a"}\nnot json\n[1]\n')
    with pytest.raises(AnnotationError, match=r"line 2: .*\n.*line 3: not a JSON object"):
        load_videos(manifest)
    with pytest.raises(AnnotationError, match="unsupported table format"):
        load_ratings(tmp_path / "r.xlsx")


def test_ids_from_parquet_floats_match_strings() -> None:
    table = normalize_ratings(pd.DataFrame({"video_id": [3.0], "rater_id": [1], "dimension":
                                            [" Visual "], "score": [4]}))
    assert table.loc[0, ["video_id", "rater_id", "dimension"]].tolist() == ["3", "1", "visual"]


def test_reasons_are_collected_most_frequent_first() -> None:
    table = _ratings({("a", "visual"): [2, 2, 3]})
    table["reason"] = ["blurry edges", "", "blurry edges"]
    table["reason_labels"] = ["blur;noise", "noise", None]
    reasons = collect_reasons(normalize_ratings(table))
    assert reasons == {("a", "visual"): ["blurry edges", "noise", "blur"]}


# --- screening (Sample and Scrutinize, App. C.1) ---------------------------------------------
TRUTH = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]  # expert MOS of eight calibration videos


def _calibration() -> tuple[pd.DataFrame, pd.DataFrame]:
    raters = {
        "good1": [1, 2, 2, 3, 3, 4, 4, 5],
        "good2": [1, 1, 2, 2, 3, 3, 4, 5],
        "good3": [2, 2, 2, 3, 3, 3, 4, 4],
        "reverse": [5, 4, 4, 3, 3, 2, 2, 1],  # inverted scale
        "constant": [3] * 8,  # no ranking information: SRCC undefined
        "shifted": [2, 3, 3, 4, 4, 5, 5, 5],  # ranks right, MAE 1.125
    }
    rows = [{"video_id": f"c{i}", "rater_id": r, "dimension": "visual", "score": s}
            for r, scores in raters.items() for i, s in enumerate(scores)]
    truth = pd.DataFrame({"video_id": [f"c{i}" for i in range(8)], "dimension": "visual",
                          "mos": TRUTH})
    return normalize_ratings(pd.DataFrame(rows)), truth


def test_rater_srcc_and_mae_match_hand_computation() -> None:
    ratings, truth = _calibration()
    table = screen_raters(ratings, truth_table(truth)).raters.set_index("rater_id")
    good1 = np.array([1, 2, 2, 3, 3, 4, 4, 5])
    # SRCC as the Pearson correlation of mid-ranks (the definition scipy implements)
    ranks = stats.rankdata(good1)
    expected = np.corrcoef(ranks, stats.rankdata(TRUTH))[0, 1]
    assert table.loc["good1", "srcc"] == pytest.approx(expected)
    assert table.loc["good1", "mae"] == pytest.approx(np.mean(np.abs(good1 - TRUTH)))
    assert table.loc["reverse", "srcc"] == pytest.approx(-expected)
    assert math.isnan(table.loc["constant", "srcc"])
    assert table.loc["shifted", "mae"] == pytest.approx(9 / 8)


def test_drop_k_least_accurate_then_recompute_mos() -> None:
    ratings, truth = _calibration()
    result = screen_raters(ratings, truth_table(truth), ScreenConfig(drop_k=2))
    assert result.dropped == ["constant", "reverse"]
    assert result.raters["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert result.raters["rater_id"].tolist()[-2:] == ["reverse", "constant"]  # NaN last
    kept = compute_mos(result.apply(ratings)).set_index("video_id")
    assert kept.loc["c0", "mos"] == pytest.approx(np.mean([1, 1, 2, 2]))
    assert kept.loc["c0", "n_raters"] == 4


def test_thresholds_rank_by_mae_and_unscreened_raters() -> None:
    ratings, truth = _calibration()
    by_mae = screen_raters(ratings, truth_table(truth), ScreenConfig(drop_k=0, max_mae=0.8,
                                                                 rank_by="mae"))
    assert by_mae.dropped == ["constant", "reverse", "shifted"]
    assert by_mae.raters["rater_id"].iloc[-1] == "reverse"  # largest MAE ranks last
    by_srcc = screen_raters(ratings, truth_table(truth), ScreenConfig(drop_k=0, min_srcc=0.5))
    assert by_srcc.dropped == ["constant", "reverse"]
    partial = truth_table(truth.head(3))  # only three calibration items
    result = screen_raters(ratings, partial, ScreenConfig(drop_k=1, min_items=5))
    assert result.dropped == []
    assert {p.kind for p in result.problems} == {"unscreened"}
    assert len(result.problems) == 6
    with pytest.raises(ConfigError, match="rank_by"):
        ScreenConfig(rank_by="accuracy")


def test_leave_one_out_reference_without_expert_truth() -> None:
    ratings, _ = _calibration()
    result = screen_raters(ratings, None, ScreenConfig(drop_k=1))
    assert result.dropped == ["constant"]  # an undefined SRCC ranks last
    assert result.reference == "leave-one-out MOS"
    table = result.raters.set_index("rater_id")
    others = ratings[ratings["rater_id"] != "good1"].groupby("video_id")["score"].mean()
    mine = ratings[ratings["rater_id"] == "good1"].set_index("video_id")["score"]
    assert table.loc["good1", "mae"] == pytest.approx((mine - others).abs().mean())


def test_truth_from_a_manifest_like_table() -> None:
    videos = pd.DataFrame({"id": ["c0", "c1"], "mos_visual": [1.0, 1.5], "mos_dynamic": [2, 3]})
    truth = truth_table(videos)
    assert truth.set_index(["video_id", "dimension"])["truth"].to_dict() == {
        ("c0", "dynamic"): 2.0, ("c0", "visual"): 1.0, ("c1", "dynamic"): 3.0,
        ("c1", "visual"): 1.5}


# --- agreement ---------------------------------------------------------------------------------
def test_krippendorff_alpha_matches_published_example() -> None:
    """Krippendorff (2011), "Computing Krippendorff's alpha-reliability", Sec. C (interval)."""
    nan = math.nan
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    units = [[v for v in column if not math.isnan(v)] for column in zip(*observers, strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, 1], [3, 3], [5, 5, 5]]) == 1.0
    assert math.isnan(krippendorff_alpha([[2], [3]]))


def test_agreement_table_and_overall_consistency() -> None:
    scores = dict(CLEAN)
    scores[("c", "visual")], scores[("c", "dynamic")] = [3, 3, 3], [4, 4, 4]
    scores[("c", "alignment")] = [5, 4, 4]
    for video, value in (("a", 4), ("b", 3), ("c", 5)):
        scores[(video, "overall")] = [value] * 3
    result = aggregate(_ratings(scores), _videos(a="train", b="train", c="train"))
    table = inter_rater_agreement(result.usable).set_index("dimension")
    assert list(table.index) == ["visual", "dynamic", "alignment", "overall"]
    units = [scores[(v, "visual")] for v in "abc"]
    assert table.loc["visual", "alpha"] == pytest.approx(krippendorff_alpha(units))
    assert table.loc["overall", "alpha"] == 1.0
    mean3 = [np.mean([np.mean(scores[(v, d)]) for d in DIMS]) for v in "abc"]
    found = overall_consistency(result.mos)
    assert found["plcc"] == pytest.approx(stats.pearsonr(mean3, [4, 3, 5]).statistic)
    assert found["n_videos"] == 3
    assert overall_consistency(aggregate(_ratings(CLEAN)).mos) is None
