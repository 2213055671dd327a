"""The harness end to end: joins, missing items, both levels, protocols, JSON and HTML."""

import base64
import io
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

import qsave
from helpers import score_row
from qsave.dimensions import RATINGS
from qsave.errors import AnnotationError, ConfigError
from qsave.eval.benchmarks import load_predictions, load_truth
from qsave.eval.report import EvalConfig, evaluate, print_report, render_html, report_to_json

FIXTURES = Path(__file__).parent / "fixtures"
FAST = EvalConfig(n_resamples=100)
GENERATORS = ["g1"] * 5 + ["g2"] * 2 + ["g3"] * 3 + ["g4"] * 2  # unequal group sizes


def _write_predictions(path, rows, extra_lines=""):
    """rows: id → (visual, dynamic, alignment) r̂ (NaN: that dimension missing), or an error."""
    lines = []
    for video_id, value in rows.items():
        where = f"clips/{video_id}.mp4"
        if isinstance(value, str):
            lines.append(score_row(video_id, error=value, path=where))
            continue
        scores = {d: v for d, v in zip(("visual", "dynamic", "alignment"), value, strict=True)
                  if v == v}
        lines.append(score_row(video_id, scores, path=where))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + extra_lines)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 12-video manifest with 4 generators, and predictions missing 3 visual scores."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    manifest, rows = [], {}
    for k, generator in enumerate(GENERATORS):
        mos = {d: float(np.round(rng.uniform(1, 5), 2)) for d in ("visual", "dynamic", "alignment")}
        mos["overall"] = round(sum(mos.values()) / 3, 3)
        manifest.append({"id": f"v{k:02d}", "generator": generator, "mos": mos, "split": "test"})
        noisy = [
            min(1.0, max(0.0, (mos[d] - 1) / 4 + rng.normal(0, 0.1)))
            for d in ("visual", "dynamic", "alignment")
        ]
        rows[f"v{k:02d}"] = tuple(noisy)
    del rows["v03"]  # no prediction line at all
    rows["v05"] = "decode failed: moov atom not found"  # an error line
    rows["v07"] = (math.nan, *rows["v07"][1:])  # NaN visual only
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    _write_predictions(tmp_path / "out.jsonl", rows)
    truth = load_truth(tmp_path / "manifest.jsonl")
    report = evaluate(load_predictions(tmp_path / "out.jsonl"), truth, FAST)
    return tmp_path, manifest, rows, report


def _joined(manifest, rows, dimension):
    """(pred MOS, MOS, generator) of the videos with a finite prediction, computed here."""
    index = {"visual": 0, "dynamic": 1, "alignment": 2}
    out = []
    for m in manifest:
        value = rows.get(m["id"])
        if value is None or isinstance(value, str):
            continue
        if dimension == "overall":
            finite = [v for v in value if math.isfinite(v)]
            score = sum(finite) / len(finite)
        else:
            score = value[index[dimension]]
        if math.isfinite(score):
            out.append((1 + 4 * score, m["mos"][dimension], m["generator"]))
    return map(list, zip(*out, strict=True))


def test_correlations_match_scipy_and_missing_is_counted(corpus):
    _, manifest, rows, report = corpus
    for dimension in ("visual", "dynamic", "alignment", "overall"):
        pred, mos, _ = _joined(manifest, rows, dimension)
        inst = report.correlation[dimension]["instance"]
        assert inst["n"] == len(pred)
        assert inst["srcc"] == pytest.approx(stats.spearmanr(pred, mos).statistic)
        assert inst["plcc"] == pytest.approx(stats.pearsonr(pred, mos).statistic)
        assert inst["krcc"] == pytest.approx(stats.kendalltau(pred, mos).statistic)
        assert inst["srcc_ci"][0] <= inst["srcc"] <= inst["srcc_ci"][1]
    assert report.correlation["visual"]["missing"] == {
        "no prediction": 1,
        "prediction error": 1,
        "no finite visual score": 1,
    }
    assert report.correlation["dynamic"]["missing"] == {"no prediction": 1, "prediction error": 1}
    assert report.correlation["overall"]["instance"]["n"] == 10  # v07: mean of 2 dimensions
    assert report.n_missing == 3
    assert report.missing["prediction error"]["ids"] == ["v05"]


def test_model_level_with_unequal_groups_by_hand(corpus):
    _, manifest, rows, report = corpus
    pred, mos, gens = _joined(manifest, rows, "visual")
    keys = sorted(set(gens))
    pred_means = [np.mean([p for p, g in zip(pred, gens, strict=True) if g == k]) for k in keys]
    mos_means = [np.mean([m for m, g in zip(mos, gens, strict=True) if g == k]) for k in keys]
    model = report.correlation["visual"]["model"]
    assert model["n_generators"] == 4
    assert model["srcc"] == pytest.approx(stats.spearmanr(pred_means, mos_means).statistic)
    assert model["plcc"] == pytest.approx(stats.pearsonr(pred_means, mos_means).statistic)
    ranking = report.rankings["visual"]
    assert [r["pred_mos"] for r in ranking] == sorted(pred_means, reverse=True)
    intervals = [(r["pred_mos_ci"], r["pred_mos"]) for r in ranking if r["n"] > 1]
    assert intervals and all(ci[0] <= mean <= ci[1] for ci, mean in intervals)
    assert [r["pred_mos_ci"] for r in ranking if r["n"] == 1] == [None]  # g2 keeps one video


def test_too_few_generators_is_said_not_computed(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        "".join(
            json.dumps(
                {"id": f"v{k}", "generator": "g1" if k < 3 else "g2", "mos": {"visual": 1 + k}}
            )
            + "\n"
            for k in range(5)
        )
    )
    _write_predictions(tmp_path / "p.jsonl", {f"v{k}": (0.2 * k, 0.5, 0.5) for k in range(5)})
    report = evaluate(
        load_predictions(tmp_path / "p.jsonl"), load_truth(tmp_path / "m.jsonl"), FAST
    )
    model = report.correlation["visual"]["model"]
    assert "srcc" not in model and "≥ 3 generators" in model["note"]


def test_unmatched_predictions_raise_unless_allowed(corpus):
    folder, _, rows, _ = corpus
    path = _write_predictions(folder / "extra.jsonl", {**rows, "stranger": (0.1, 0.2, 0.3)})
    with pytest.raises(AnnotationError, match="1 prediction ids match no"):
        evaluate(load_predictions(path), load_truth(folder / "manifest.jsonl"), FAST)
    report = evaluate(
        load_predictions(path),
        load_truth(folder / "manifest.jsonl"),
        EvalConfig(n_resamples=0, allow_extra=True),
    )
    assert report.unmatched_predictions == {"count": 1, "ids": ["stranger"]}
    assert report.correlation["visual"]["instance"]["srcc_ci"] is None


def _videogen_predictions(tmp_path, name="out.jsonl"):
    """Scores for the VideoGen-RewardBench fixture videos: kling > gen3 > pika on visual."""
    visual = {"kling": 0.80, "gen3": 0.78, "pika": 0.40}
    truth = load_truth(FIXTURES / "videogen_rewardbench.csv", "videogen-rewardbench")
    rows = {vid: (visual[v.generator], 0.5, 0.6) for vid, v in truth.videos.items()}
    return _write_predictions(tmp_path / name, rows), truth


def test_preference_fixed_epsilon_by_hand(tmp_path):
    path, truth = _videogen_predictions(tmp_path)
    report = evaluate(load_predictions(path), truth, FAST)
    visual = report.preference["visual"]
    # visual pairs (A vs B): kling/gen3 A Δ=.02→tie ✗, kling/pika A Δ=.40 ✓, gen3/pika B Δ=.38 ✗,
    # kling/gen3 same Δ=.02 ✓, pika/kling B Δ=-.40 ✓ → 3/5 with ties; w/o ties 3 of 4 (.02 > 0 ✓)
    assert visual["accuracy_with_ties"] == pytest.approx(3 / 5)
    assert visual["accuracy_without_ties"] == pytest.approx(3 / 4)
    assert (visual["epsilon"], visual["protocol"], visual["n_pairs"]) == (0.05, "fixed", 5)
    # dynamic is equal for every video: all predicted ties
    assert (
        report.preference["dynamic"]["n_predicted_ties"] == report.preference["dynamic"]["n_pairs"]
    )
    assert report.protocol == "fixed"


def test_preference_oracle_and_calibration(tmp_path):
    path, truth = _videogen_predictions(tmp_path)
    oracle = evaluate(load_predictions(path), truth, EvalConfig(n_resamples=0, oracle=True))
    assert oracle.protocol == "oracle" and oracle.preference["visual"]["protocol"] == "oracle"
    assert oracle.preference["visual"]["accuracy_with_ties"] >= 3 / 5
    calibration_file = tmp_path / "calib.csv"
    calibration_file.write_text(
        "prompt,path_A,path_B,A_model,B_model,VQ,MQ,TA,Overall\n"
        "p,videos/pika/0003.mp4,videos/kling/0003.mp4,pika,kling,B,same,same,B\n"
        "p,videos/gen3/0002.mp4,videos/kling/0002.mp4,gen3,kling,same,same,same,same\n"
    )
    calibration = load_truth(calibration_file, "videogen-rewardbench")
    report = evaluate(load_predictions(path), truth, EvalConfig(n_resamples=0), calibration)
    # calibration visual Δ: -0.40 (B ✓ at ε < .40), -0.02 (same ✓ once ε ≥ .02) → ε = 0.02
    assert report.preference["visual"]["epsilon"] == pytest.approx(0.02)
    assert report.preference["visual"]["protocol"] == "calibrated"
    assert report.preference["visual"]["calibration_pairs"] == 2
    with pytest.raises(ConfigError, match="not both"):
        evaluate(load_predictions(path), truth, EvalConfig(oracle=True), calibration)


def test_calibration_without_a_dimension_is_reported(tmp_path):
    path, truth = _videogen_predictions(tmp_path)
    calibration_file = tmp_path / "calib.csv"
    calibration_file.write_text(
        "prompt,path_A,path_B,A_model,B_model,VQ,MQ,TA,Overall\n"
        "p,videos/pika/0003.mp4,videos/kling/0003.mp4,pika,kling,B,,,\n"
    )
    calibration = load_truth(calibration_file, "videogen-rewardbench")
    report = evaluate(load_predictions(path), truth, EvalConfig(n_resamples=0), calibration)
    assert "no predicted dynamic pairs" in report.preference["dynamic"]["error"]
    assert report.preference["visual"]["protocol"] == "calibrated"


def test_integer_scale_accuracy_on_videoscore_bench(tmp_path):
    truth = load_truth(FIXTURES / "videoscore_bench_v2.json", "videoscore-bench-v2")
    # predicted MOS 4, 3, 2.4 → 2, 5 on visual (truth 4, 3, 2, 5)
    visual = {"vf2_00017": 0.75, "vf2_00018": 0.5, "vf2_00019": 0.35, "vf2_00020": 1.0}
    path = _write_predictions(tmp_path / "p.jsonl", {k: (v, 0.0, 1.0) for k, v in visual.items()})
    report = evaluate(load_predictions(path), truth, EvalConfig(n_resamples=0))
    assert report.correlation["visual"]["accuracy"] == 1.0
    # alignment predicted 5 everywhere vs 5, 4, 3, 4: exact 1/4, within ±1 3/4
    assert report.correlation["alignment"]["accuracy"] == pytest.approx(1 / 4)
    assert report.correlation["alignment"]["relaxed_accuracy"] == pytest.approx(3 / 4)
    assert report.problems  # the out-of-scale row is reported
    payload = json.loads(report_to_json(report))
    assert payload["correlation"]["alignment"]["instance"]["plcc"] is None  # constant → null
    assert payload["correlation"]["visual"]["model"]["n_generators"] == 3


def test_html_embeds_plots_and_rankings(corpus):
    report = corpus[3]
    html = render_html(report)
    assert html.count('alt="scatter') == 4 and html.count('alt="ranking') == 4
    assert "g1" in html and "missing 1 (prediction error)" in html
    start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
    png = base64.b64decode(html[start : html.index('"', start)])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_rankings_share_ranks_on_equal_means(tmp_path):
    mos = {"a": 5.0, "b": 5.0, "c": 2.0}  # generators a and b tie on human MOS
    (tmp_path / "m.jsonl").write_text(
        "".join(
            json.dumps({"id": f"{g}{k}", "generator": g, "mos": {"visual": mos[g]}}) + "\n"
            for g in mos
            for k in range(2)
        )
    )
    scores = {"a": 0.9, "b": 0.5, "c": 0.1}
    rows = {f"{g}{k}": (scores[g], 0.5, 0.5) for g in mos for k in range(2)}
    _write_predictions(tmp_path / "p.jsonl", rows)
    report = evaluate(
        load_predictions(tmp_path / "p.jsonl"), load_truth(tmp_path / "m.jsonl"), FAST
    )
    ranking = report.rankings["visual"]
    assert [(r["generator"], r["rank"], r["mos_rank"]) for r in ranking] == [
        ("a", 1, 1),
        ("b", 2, 1),
        ("c", 3, 3),
    ]


# --- provenance, confusion matrices, summary table, terminal widths ------------------------------
MODEL = {"id": "org/scorer-7b", "revision": "abc123", "dtype": "bfloat16", "device": "cuda",
         "adapter": None}
# visual: human MOS, predicted r̂ and the rows' rating words. R(MOS): Bad, Poor, Fair, Good,
# Excellent, Excellent; R(1 + 4r̂) = R(1.0, 2.2, 3.0, 4.6, 4.8, 3.4): Bad, Poor, Fair,
# Excellent, Excellent, Fair (3.4 is a boundary: the lower rating).
RATED = {
    "v0": (1.0, 0.0, "Bad"),
    "v1": (2.0, 0.3, "Fair"),
    "v2": (3.0, 0.5, "Fair"),
    "v3": (4.0, 0.9, "Good"),
    "v4": (5.0, 0.95, "Excellent"),
    "v5": (4.5, 0.6, "Good"),
}


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """Six videos of three generators, rows with a model field and chosen rating words."""
    folder = tmp_path_factory.mktemp("rated")
    manifest, lines = [], []
    for k, (video_id, (mos, r_hat, word)) in enumerate(RATED.items()):
        manifest.append({"id": video_id, "generator": f"g{k // 2}", "mos": {"visual": mos}})
        row = score_row(video_id, {"visual": r_hat}, model=MODEL)
        row["scores"]["visual"]["rating"] = word
        lines.append(row)
    (folder / "m.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    (folder / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = evaluate(
        load_predictions(folder / "p.jsonl"),
        load_truth(folder / "m.jsonl"),
        FAST,
        pred_path=folder / "p.jsonl",
        truth_path=folder / "m.jsonl",
    )
    return folder, report


def _terminal(report, width=80, terminal=False):
    """What print_report writes to a console of ``width`` columns (a terminal or a pipe)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    print_report(report, console)
    return buffer.getvalue()


def test_every_report_opens_with_provenance(rated):
    folder, report = rated
    prov = report.provenance
    assert prov["predictions"] == str(folder / "p.jsonl")
    assert prov["truth"] == str(folder / "m.jsonl")
    assert prov["models"] == ["org/scorer-7b"]
    assert (prov["benchmark"], prov["qsave_version"]) == ("qsave", qsave.__version__)
    assert datetime.fromisoformat(prov["date"]).tzinfo is not None
    payload = json.loads(report_to_json(report))
    assert next(iter(payload)) == "provenance" and payload["provenance"] == prov
    text = _terminal(report)
    assert text.splitlines()[0] == f"predictions  {folder / 'p.jsonl'}"  # whole, even > 80
    for value in (str(folder / "m.jsonl"), "org/scorer-7b", qsave.__version__, prov["date"]):
        assert value in text and text.index(value) < text.index("correlation with MOS")
    html = render_html(report)
    for value in (str(folder / "p.jsonl"), str(folder / "m.jsonl"), "org/scorer-7b",
                  qsave.__version__, prov["date"]):
        assert html.index(value) < html.index("<h2>Summary</h2>")


def test_provenance_without_the_file_paths(rated):
    folder, _ = rated
    report = evaluate(load_predictions(folder / "p.jsonl"), load_truth(folder / "m.jsonl"),
                      EvalConfig(n_resamples=0))
    assert report.provenance["predictions"] is None and report.provenance["truth"] is None
    assert report.provenance["models"] == ["org/scorer-7b"]  # from Predictions.models
    assert "(not given)" in _terminal(report)
    assert report.confusion["visual"]["predicted"] == "R(MOS)"  # no rows: no rating words


def test_confusion_of_rating_words_and_of_predicted_mos(rated):
    folder, report = rated
    index = {word: k for k, word in enumerate(RATINGS)}

    def expected(pairs):
        matrix = [[0] * 5 for _ in RATINGS]
        for true, predicted in pairs:
            matrix[index[true]][index[predicted]] += 1
        return matrix

    truth = ["Bad", "Poor", "Fair", "Good", "Excellent", "Excellent"]
    words = report.confusion["visual"]
    assert words["predicted"] == "rating" and words["true"] == "R(MOS)"
    assert words["matrix"] == expected(zip(truth, [w for _, _, w in RATED.values()], strict=True))
    assert (words["n"], words["agreement"], words["within_one"]) == (6, 4 / 6, 1.0)
    derived = evaluate(load_predictions(folder / "p.jsonl"), load_truth(folder / "m.jsonl"),
                       EvalConfig(n_resamples=0)).confusion["visual"]
    by_mos = ["Bad", "Poor", "Fair", "Excellent", "Excellent", "Fair"]
    assert derived["matrix"] == expected(zip(truth, by_mos, strict=True))
    assert (derived["agreement"], derived["within_one"]) == (4 / 6, 5 / 6)
    assert json.loads(report_to_json(report))["confusion"]["visual"]["matrix"] == words["matrix"]
    html = render_html(report)
    assert html.count('aria-label="confusion') == 1
    assert "predicted = each row's rating word" in html and "true = R(human MOS)" in html
    assert html.count('class="diag"') == 5


def test_html_opens_with_one_summary_table(corpus, tmp_path):
    report = corpus[3]
    html = render_html(report)
    summary = html[html.index("<h2>Summary</h2>") : html.index("<h2>visual</h2>")]
    assert summary.count("<table") == 1 and "<img" not in summary
    for dimension, entry in report.correlation.items():
        inst, model = entry["instance"], entry["model"]
        row = summary[summary.index(f'<td class="dim">{dimension}</td>') :]
        row = row[: row.index("</tr>")]
        for value in (inst["srcc"], inst["plcc"], inst["krcc"], inst["rmse"], model["srcc"],
                      model["plcc"]):
            assert f"{value:.3f}" in row
        assert f"[{inst['srcc_ci'][0]:.2f}, {inst['srcc_ci'][1]:.2f}]" in row
    sections = [html.index(f"<h2>{d}</h2>") for d in ("visual", "dynamic", "alignment", "overall")]
    assert sections == sorted(sections)  # the summary's order, not alphabetical
    assert html.count('class="grid"') == 4 and html.count('aria-label="confusion') == 4
    path, truth = _videogen_predictions(tmp_path)
    preference = render_html(evaluate(load_predictions(path), truth, FAST))
    summary = preference[preference.index("<h2>Summary</h2>") :]
    assert "w/ ties" in summary and "w/o ties" in summary
    assert summary.index("0.600") < summary.index("preference details")  # visual w/ ties 3/5


def _check_whole(text, report):
    """Every metric of ``report`` appears in ``text`` in full, and nothing is cut."""
    assert "…" not in text
    for entry in report.correlation.values():
        inst = entry["instance"]
        for value in (inst["srcc"], inst["plcc"], inst["krcc"], inst["rmse"]):
            assert f"{value:.3f}" in text
        assert f"[{inst['plcc_ci'][0]:.2f}, {inst['plcc_ci'][1]:.2f}]" in text
        assert f"{entry['model']['srcc']:.3f}" in text
    for entry in report.preference.values():
        assert f"{entry['accuracy_with_ties']:.3f}" in text
    for dimension in (*report.correlation, *report.preference):
        assert dimension in text


@pytest.mark.parametrize("terminal,width", [(False, 80), (True, 80), (True, 50), (False, 40)])
def test_terminal_tables_never_cut_a_cell(corpus, terminal, width):
    report = corpus[3]
    text = _terminal(report, width, terminal)
    _check_whole(text, report)
    rich = terminal and width >= 80  # a terminal too narrow for the tables gets markdown
    assert ("| dimension" in text) != rich
    if rich:
        assert all(len(line) <= width for line in text.splitlines() if "─" in line)


def test_terminal_integer_scale_and_preference_at_80_columns(tmp_path):
    truth = load_truth(FIXTURES / "videoscore_bench_v2.json", "videoscore-bench-v2")
    visual = {"vf2_00017": 0.75, "vf2_00018": 0.5, "vf2_00019": 0.35, "vf2_00020": 1.0}
    path = _write_predictions(tmp_path / "p.jsonl", {k: (v, 0.1, 0.9) for k, v in visual.items()})
    report = evaluate(load_predictions(path), truth, FAST)
    for terminal in (False, True):
        text = _terminal(report, 80, terminal)
        assert "…" not in text and "accuracy ±1" in text
        assert f"{report.correlation['alignment']['relaxed_accuracy']:.3f}" in text
    path, truth = _videogen_predictions(tmp_path, "vg.jsonl")
    report = evaluate(load_predictions(path), truth, FAST)
    for terminal in (False, True):
        _check_whole(_terminal(report, 80, terminal), report)
