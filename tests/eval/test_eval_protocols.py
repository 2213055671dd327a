"""The evaluation protocols in the harness and its reports: ε's scale, model-level preference
(App. B), the calibrated preference from rating distributions, VideoPhy2-test's Avg PLCC
(Table 10) and how "overall" was predicted (App. D.2), by hand on small files."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from helpers import score_row
from qsave.cli import main
from qsave.dimensions import RATINGS, WEIGHTS, Dimension
from qsave.errors import ConfigError
from qsave.eval.benchmarks import Predictions, load_predictions, load_truth
from qsave.eval.preference import PROB_FLOOR
from qsave.eval.report import EvalConfig, evaluate, print_report, render_html, report_to_json
from qsave.scores import DimensionScore, VideoResult

FIXTURES = Path(__file__).parent / "fixtures"
NO_CI = EvalConfig(n_resamples=0)
HEADER = "prompt,path_A,path_B,A_model,B_model,VQ,MQ,TA,Overall\n"


def _pairs_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A VideoGen-RewardBench file of visual (VQ) labels only: ``(A, B, label)``; a video
    ``gN_k`` belongs to generator ``gN``."""
    lines = [f"p,{a},{b},{a.split('_')[0]},{b.split('_')[0]},{label},,,\n" for a, b, label in rows]
    path.write_text(HEADER + "".join(lines))
    return path


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _terminal(report, terminal=False) -> str:
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=100, force_terminal=terminal,
                                 color_system=None))
    return buffer.getvalue()


# --- ε's scale ----------------------------------------------------------------------------------
# visual r̂ of A and B, and the human label: Δ on r̂ .02, .03, .03, -.10; on MOS 4·Δ
SCALE_PAIRS = [("g1_0", "g2_0", 0.52, 0.50, "same"), ("g1_1", "g2_1", 0.63, 0.60, "same"),
               ("g1_2", "g2_2", 0.43, 0.40, "A"), ("g1_3", "g2_3", 0.30, 0.40, "B")]


@pytest.fixture
def scale_files(tmp_path):
    truth = _pairs_csv(tmp_path / "pairs.csv", [(a, b, label) for a, b, _, _, label in SCALE_PAIRS])
    scores = {v: s for a, b, sa, sb, _ in SCALE_PAIRS for v, s in ((a, sa), (b, sb))}
    pred = _rows(tmp_path / "pred.jsonl", [score_row(v, {"visual": s}) for v, s in scores.items()])
    return pred, truth


def test_epsilon_scale_changes_the_accuracy_and_every_report_says_so(scale_files):
    pred, truth_path = scale_files
    truth = load_truth(truth_path, "videogen-rewardbench")
    reports = {s: evaluate(load_predictions(pred), truth, EvalConfig(n_resamples=0,
                                                                     epsilon_scale=s))
               for s in ("r", "mos")}
    # ε = .05 on r̂: tie, tie, tie, B → ✓ ✓ ✗ ✓; on MOS (Δ .08, .12, .12, -.4): A, A, A, B
    assert reports["r"].preference["visual"]["accuracy_with_ties"] == pytest.approx(3 / 4)
    assert reports["mos"].preference["visual"]["accuracy_with_ties"] == pytest.approx(2 / 4)
    for scale, text in (("r", "ε = 0.05 on r̂ (0..1), fixed (App. A)"),
                        ("mos", "ε = 0.05 on MOS (1–5) (= 0.0125 on r̂), fixed (App. A)")):
        report = reports[scale]
        payload = json.loads(report_to_json(report))
        assert payload["epsilon"] == {"value": 0.05, "scale": scale, "protocol": "fixed",
                                      "text": text}
        assert payload["config"]["epsilon_scale"] == scale
        assert payload["preference"]["visual"]["epsilon_scale"] == scale
        header = "ε (r̂)" if scale == "r" else "ε (MOS)"
        for terminal in (False, True):
            out = _terminal(report, terminal)
            assert f"epsilon      {text}" in out and header in out
        html = render_html(report)
        assert text in html and header in html


def test_mos_only_reports_state_epsilon_too():
    truth = load_truth(FIXTURES / "qsave_manifest.jsonl")
    truth.mos_pairs = False  # MOS only: no pairs built from it
    predictions = Predictions(scores={v: {"visual": 0.5} for v in truth.videos})
    report = evaluate(predictions, truth, NO_CI)
    assert not report.preference and not report.mos_pairs
    assert "epsilon      ε = 0.05 on r̂ (0..1), fixed (App. A)" in _terminal(report)
    assert "ε = 0.05 on r̂ (0..1), fixed (App. A)" in render_html(report)


def test_fitted_epsilon_is_stated_with_its_scale(scale_files):
    pred, truth_path = scale_files
    truth = load_truth(truth_path, "videogen-rewardbench")
    report = evaluate(load_predictions(pred), truth, EvalConfig(n_resamples=0, oracle=True,
                                                                epsilon_scale="mos"))
    # oracle on MOS Δ .08, .12, .12, -.4 (labels tie, tie, A, B): ε 0 → 2/4, .08 → 3/4,
    # .12 → 3/4, .4 → 2/4; the smallest best ε is .08
    visual = report.preference["visual"]
    assert visual["epsilon"] == pytest.approx(0.08) and visual["accuracy_with_ties"] == 0.75
    assert report.epsilon["value"] is None
    assert report.epsilon["text"] == "ε fitted per dimension on the test pairs themselves " \
                                     "(oracle), on MOS (1–5)"


def test_cli_epsilon_scale(scale_files, tmp_path, capsys):
    pred, truth = scale_files
    args = ["eval", "--pred", str(pred), "--truth", str(truth), "--benchmark",
            "videogen-rewardbench", "--bootstrap", "0", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    default = json.loads((tmp_path / "r.json").read_text())
    assert default["epsilon"]["scale"] == "r"  # the EvalConfig default
    assert default["preference"]["visual"]["accuracy_with_ties"] == pytest.approx(3 / 4)
    assert main([*args, "--epsilon-scale", "mos"]) == 0
    mos = json.loads((tmp_path / "r.json").read_text())
    assert mos["config"]["epsilon_scale"] == "mos"
    assert mos["preference"]["visual"]["accuracy_with_ties"] == pytest.approx(2 / 4)
    assert "ε = 0.05 on MOS (1–5)" in capsys.readouterr().out
    assert main([*args, "--epsilon-scale", "percent"]) == 1
    assert "epsilon_scale ('percent') must be one of r, mos" in capsys.readouterr().err


def test_config_refuses_an_unknown_scale():
    with pytest.raises(ConfigError, match="must be one of r, mos"):
        EvalConfig(epsilon_scale="MOS")


# --- model level --------------------------------------------------------------------------------
def test_model_level_preference_on_videogen_rewardbench(tmp_path):
    truth = load_truth(FIXTURES / "videogen_rewardbench.csv", "videogen-rewardbench")
    visual = {"kling": 0.80, "gen3": 0.78, "pika": 0.40}
    pred = _rows(tmp_path / "p.jsonl", [score_row(v, {"visual": visual[t.generator]})
                                        for v, t in truth.videos.items()])
    model = evaluate(load_predictions(pred), truth, NO_CI).preference["visual"]["model"]
    # visual pairs: kling/gen3 A, kling/pika A, gen3/pika B, kling/gen3 same, pika/kling B
    # win rates: kling (1 + 1 + ½ + 1)/4, gen3 (0 + 0 + ½)/3, pika (0 + 1 + 0)/3
    rates = {g["generator"]: g["win_rate"] for g in model["generators"]}
    assert rates == pytest.approx({"kling": 7 / 8, "gen3": 1 / 6, "pika": 1 / 3})
    # (gen3, kling) -1, Δ -.02: tie ✗ (sign ✓); (gen3, pika) -1, Δ .38 ✗; (kling, pika) +1 ✓
    assert model["accuracy_with_ties"] == pytest.approx(1 / 3)
    assert model["accuracy_without_ties"] == pytest.approx(2 / 3)
    assert (model["n_generators"], model["n_generator_pairs"], model["epsilon"]) == (3, 3, 0.05)


def test_model_level_with_one_generator_says_so(tmp_path):
    truth = load_truth(_pairs_csv(tmp_path / "t.csv", [("g1_0", "g1_1", "A")]),
                       "videogen-rewardbench")
    pred = _rows(tmp_path / "p.jsonl", [score_row(v, {"visual": 0.5}) for v in truth.videos])
    report = evaluate(load_predictions(pred), truth, NO_CI)
    model = report.preference["visual"]["model"]
    assert model["n_pairs_skipped"] == 1 and "needs ≥ 2 generators" in model["note"]
    assert "visual: needs ≥ 2 generators" in _terminal(report)


# --- calibrated preference ----------------------------------------------------------------------
PROBS = {"g1_0": [0, 0, 0.5, 0.5, 0],  # Fair or Good
         "g2_0": [0, 0.2, 0.8, 0, 0],  # Poor or Fair
         "g3_0": [0, 0, 0, 0, 1.0]}  # surely Excellent


def _prob_row(video_id: str, probs: dict[str, list[float]]) -> dict:
    """A row whose r̂ is Σ p_j·w_j of its probabilities, as `qsave score` writes it."""
    scores = {}
    for name, p in probs.items():
        r_hat = float(np.dot(p, WEIGHTS))
        entropy = -sum(x * math.log(x) for x in p if x > 0)
        scores[Dimension(name)] = DimensionScore(r_hat, 1 + 4 * r_hat, tuple(p),
                                                 RATINGS[int(np.argmax(p))], entropy)
    return VideoResult(video_id, None, None, "p", scores).to_record()


def test_calibrated_preference_by_hand(tmp_path):
    truth = load_truth(_pairs_csv(tmp_path / "t.csv", [("g1_0", "g2_0", "A"),
                                                       ("g2_0", "g1_0", "same"),
                                                       ("g3_0", "g2_0", "B")]),
                       "videogen-rewardbench")
    pred = _rows(tmp_path / "p.jsonl", [_prob_row(v, {"visual": p}) for v, p in PROBS.items()])
    report = evaluate(load_predictions(pred), truth, NO_CI)
    calibrated = report.preference["visual"]["calibrated"]
    # (P(A>B), P(tie), P(B>A)): (.6, .4, 0) human A ✓; (0, .4, .6) human tie, predicted B ✗;
    # (1, 0, 0) human B ✗, P(label) = 0 → the floor
    floor = -math.log(PROB_FLOOR)
    assert calibrated["accuracy_with_ties"] == pytest.approx(1 / 3)
    assert calibrated["log_loss_with_ties"] == pytest.approx(
        -(math.log(0.6) + math.log(0.4)) / 3 + floor / 3)
    # without ties: pairs 1 and 3; P(label | no tie) = .6/.6 = 1 ✓, 0/1 ✗
    assert calibrated["accuracy_without_ties"] == 0.5
    assert calibrated["log_loss_without_ties"] == pytest.approx(floor / 2)
    assert calibrated["mean_p_tie"] == pytest.approx(0.8 / 3)
    for text in (_terminal(report), render_html(report)):
        assert f"{calibrated['log_loss_with_ties']:.3f}" in text
    assert json.loads(report_to_json(report))["preference"]["visual"]["calibrated"] == calibrated


def test_overall_is_calibrated_from_the_mean_of_the_dimensions(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "p,g1_0,g2_0,g1,g2,,,,A\n")
    truth = load_truth(path, "videogen-rewardbench")
    # A: visual Fair, dynamic Good or Excellent → mean level 2.5 or 3; B: Fair or Good, one
    # dimension only → 2 or 3. A > B: .5·.5 + .5·.5; tie (3, 3): .25; B > A (2.5, 3): .25
    rows = [_prob_row("g1_0", {"visual": [0, 0, 1, 0, 0], "dynamic": [0, 0, 0, 0.5, 0.5]}),
            _prob_row("g2_0", {"alignment": [0, 0, 0.5, 0.5, 0]})]
    report = evaluate(load_predictions(_rows(tmp_path / "p.jsonl", rows)), truth, NO_CI)
    calibrated = report.preference["overall"]["calibrated"]
    assert calibrated["accuracy_with_ties"] == 1.0
    assert calibrated["log_loss_with_ties"] == pytest.approx(-math.log(0.5))
    assert calibrated["mean_p_tie"] == pytest.approx(0.25)
    assert report.overall["videos_by_dimensions"] == {"visual+dynamic": 1, "alignment": 1}


def test_calibrated_preference_is_skipped_without_usable_probabilities(tmp_path):
    truth = load_truth(_pairs_csv(tmp_path / "t.csv", [("g1_0", "g2_0", "A")]),
                       "videogen-rewardbench")
    # no probabilities at all (predictions built in code): skipped, never a crash
    predictions = Predictions(scores={"g1_0": {"visual": 0.7}, "g2_0": {"visual": 0.2}})
    report = evaluate(predictions, truth, NO_CI)
    assert report.preference["visual"]["accuracy_with_ties"] == 1.0  # ε protocols unaffected
    skipped = report.preference["visual"]["calibrated"]["skipped"]
    assert skipped == "2 of 2 videos without usable rating probabilities " \
                      "(no rating probabilities: 2)"
    assert f"visual: skipped, {skipped}" in _terminal(report)
    assert "skipped:\n" + skipped in render_html(report)
    # probabilities that do not give the row's r̂ (flat .2 each, r̂ .7) are not used either
    rows = [score_row("g1_0", {"visual": 0.7}), _prob_row("g2_0", {"visual": PROBS["g2_0"]})]
    report = evaluate(load_predictions(_rows(tmp_path / "p.jsonl", rows)), truth, NO_CI)
    assert "1 of 2 videos" in report.preference["visual"]["calibrated"]["skipped"]
    assert "disagree with the score" in report.preference["visual"]["calibrated"]["skipped"]


# --- dimension averages and overall -------------------------------------------------------------
def test_videophy2_avg_is_the_mean_of_the_two_plcc(tmp_path):
    truth = load_truth(FIXTURES / "videophy2_test.csv", "videophy2-test")
    rng = np.random.default_rng(1)
    scores = {v: {"alignment": float(rng.uniform()), "dynamic": float(rng.uniform()),
                  "visual": 0.5} for v in truth.videos}
    pred = _rows(tmp_path / "p.jsonl", [score_row(v, s) for v, s in scores.items()])
    report = evaluate(load_predictions(pred), truth, NO_CI)
    ids = sorted(truth.videos)
    plcc = {d: stats.pearsonr([1 + 4 * scores[v][d] for v in ids],
                              [truth.mos[d][v] for v in ids]).statistic
            for d in ("alignment", "dynamic")}
    (average,) = report.averages
    assert (average["name"], average["metric"], average["dimensions"]) == (
        "Avg", "plcc", ("alignment", "dynamic"))
    assert average["values"] == pytest.approx(plcc)
    assert average["value"] == pytest.approx((plcc["alignment"] + plcc["dynamic"]) / 2)
    assert "Table 10" in average["source"]
    value = f"{average['value']:.3f}"
    assert json.loads(report_to_json(report))["averages"][0]["value"] == pytest.approx(
        average["value"])
    for terminal in (False, True):
        out = _terminal(report, terminal)
        assert "dimension averages" in out and value in out and "alignment + dynamic" in out
    html = render_html(report)
    assert "<h2>dimension averages</h2>" in html and value in html


def test_avg_is_undefined_when_a_part_is(tmp_path):
    truth = load_truth(FIXTURES / "videophy2_test.csv", "videophy2-test")
    constant = {v: {"alignment": 0.5, "dynamic": 0.1 * k} for k, v in enumerate(truth.videos)}
    pred = _rows(tmp_path / "p.jsonl", [score_row(v, s) for v, s in constant.items()])
    (average,) = evaluate(load_predictions(pred), truth, NO_CI).averages
    assert math.isnan(average["values"]["alignment"])  # constant predictions: PLCC undefined
    assert average["value"] is None


def test_overall_rule_and_partial_videos_are_reported(tmp_path):
    truth = load_truth(FIXTURES / "videogen_rewardbench.csv", "videogen-rewardbench")
    rows = [score_row(v, {"visual": 0.5, "alignment": 0.5} if k == 0 else None)
            for k, v in enumerate(truth.videos)]
    report = evaluate(load_predictions(_rows(tmp_path / "p.jsonl", rows)), truth, NO_CI)
    assert report.overall == {
        "prediction": "mean of the available dimension scores r̂ (App. D.2)",
        "videos_by_dimensions": {"visual+dynamic+alignment": 7, "visual+alignment": 1},
    }
    line = ("overall      mean of the available dimension scores r̂ (App. D.2); videos: "
            "visual+dynamic+alignment 7, visual+alignment 1")
    assert line in _terminal(report)
    assert json.loads(report_to_json(report))["overall"] == report.overall
