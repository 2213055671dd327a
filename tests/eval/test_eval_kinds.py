"""Correlation per defect kind (qsave.eval.kinds) and its section in every `qsave eval` report.

Two small synthetic corpora (16×16 px, 4 frames): a dense one in which every clip has one
defect per dimension (visual blur, dynamic stutter, alignment a wrong colour or a wrong count)
at a uniform severity, and one drawn from the generators' sparse profiles, with clean
dimensions and clips carrying two kinds in one dimension. The browser check at the end renders
the section in headless Chromium (skipped without it), as tests/eval/test_report_browser.py
does for the rest of the report.
"""

import html as htmllib
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from helpers import score_row
from qsave.cli import main
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.errors import AnnotationError, ConfigError
from qsave.eval.benchmarks import load_predictions, load_truth
from qsave.eval.kinds import (
    CLEAN,
    KIND_RULE,
    KindConfig,
    kind_figures,
    kinds_by_video,
    manifest_kind_figures,
    row_kinds,
    srcc_by_kind,
)
from qsave.eval.report import EvalConfig, evaluate, print_report, render_html, report_to_json

SMALL = {"size": 16, "fps": 4, "seconds": 1.0}  # the smallest clips SynthConfig accepts
DENSE_KINDS = ("blur", "stutter", "wrong_color", "wrong_count")
TITLE = "correlation with MOS per defect kind"
NO_CI = KindConfig(n_resamples=0)


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """24 clips, each with one defect per dimension among DENSE_KINDS; its manifest."""
    folder = tmp_path_factory.mktemp("dense")
    corpus = write_corpus(folder, SynthConfig(n=24, every_dimension=True, kinds=DENSE_KINDS,
                                              **SMALL))
    assert not corpus.errors
    return corpus.manifest_path


@pytest.fixture(scope="module")
def sparse(tmp_path_factory) -> Path:
    """40 clips drawn from the generators' profiles: clean dimensions, some clips with two
    kinds in one dimension."""
    folder = tmp_path_factory.mktemp("sparse")
    corpus = write_corpus(folder, SynthConfig(n=40, seed=0, **SMALL))
    assert not corpus.errors
    return corpus.manifest_path


def _mirrored(rows: list[dict], reversed_kind: str = "wrong_count") -> dict[str, dict]:
    """dimension → id → predicted MOS: the human MOS, reversed (6 − MOS) for the alignment of
    ``reversed_kind`` clips."""
    out: dict[str, dict] = {"visual": {}, "dynamic": {}, "alignment": {}}
    for row in rows:
        for dim in out:
            kinds = {d["kind"] for d in row["defects"][dim]}
            flip = dim == "alignment" and reversed_kind in kinds
            out[dim][row["id"]] = 6 - row["mos"][dim] if flip else row["mos"][dim]
    return out


def _prediction_file(path: Path, predicted: dict[str, dict]) -> Path:
    """A `qsave score` file whose r̂ is (predicted MOS − 1) / 4 for every dimension."""
    ids = predicted["visual"]
    rows = [score_row(i, {d: (predicted[d][i] - 1) / 4 for d in predicted}) for i in ids]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --- kinds from the manifest --------------------------------------------------------------------
def test_each_clip_has_the_kinds_its_manifest_lists(dense):
    rows = _rows(dense)
    kinds = kinds_by_video(rows)
    assert set(kinds) == {"visual", "dynamic", "alignment"}
    assert set(kinds["visual"].values()) == {("blur",)}
    assert set(kinds["dynamic"].values()) == {("stutter",)}
    assert set(kinds["alignment"].values()) == {("wrong_color",), ("wrong_count",)}
    for row in rows:
        listed = row["defects"]["alignment"]
        assert len(listed) == 1 and kinds["alignment"][row["id"]] == (listed[0]["kind"],)


def test_clean_means_no_defect_and_two_kinds_count_under_each(sparse):
    rows = _rows(sparse)
    kinds = kinds_by_video(rows)
    for row in rows:  # a clean dimension is exactly one at MOS 5 (severities are ≥ 0.1)
        for dim in ("visual", "dynamic", "alignment"):
            assert (kinds[dim][row["id"]] == (CLEAN,)) == (row["mos"][dim] == 5.0)
    both = [row["id"] for row in rows if len(kinds["alignment"][row["id"]]) == 2]
    assert both, "the sparse corpus should have a clip with two alignment kinds"
    mos = {row["id"]: row["mos"]["alignment"] for row in rows}
    figures = {f.kind: f for f in kind_figures(mos, mos, kinds["alignment"], NO_CI)}
    for kind in kinds["alignment"][both[0]]:
        assert figures[kind].shared >= 1
    assert sum(f.n for f in figures.values()) == len(rows) + sum(
        len(k) - 1 for k in kinds["alignment"].values())
    assert list(figures) == [CLEAN, *sorted(set(figures) - {CLEAN})]


def test_defects_as_json_text_read_alike():  # a `qsave data split` CSV cell
    defects = {"visual": [{"kind": "noise", "severity": 0.4}], "dynamic": [],
               "alignment": [{"kind": "wrong_shape"}, {"kind": "missing_object"}]}
    assert row_kinds(json.dumps(defects)) == row_kinds(defects) == {
        "visual": ("noise",), "dynamic": (CLEAN,), "alignment": ("missing_object", "wrong_shape")}


@pytest.mark.parametrize("defects, message", [
    ("not json", "not JSON"),
    ([{"kind": "blur"}], "must map dimensions"),
    ({"overall": []}, "unknown dimension overall"),
    ({"visual": [{"severity": 0.5}]}, "needs a kind name"),
    ({"visual": "blur"}, "must be a list"),
])
def test_malformed_defects_are_refused(defects, message):
    with pytest.raises(AnnotationError, match=message):
        row_kinds(defects)


def test_a_row_with_malformed_defects_is_skipped_with_its_reason(dense, tmp_path):
    rows = _rows(dense)
    rows[0]["defects"] = {"visual": [{"severity": 0.5}]}
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    truth = load_truth(path)
    assert len(truth.problems) == 1 and "needs a kind name" in truth.problems[0]
    assert rows[0]["id"] not in truth.videos and len(truth.defect_kinds["visual"]) == 23


# --- the figures --------------------------------------------------------------------------------
def test_predictions_equal_to_mos_give_one_and_reversed_minus_one(dense):
    rows = _rows(dense)
    mos = {dim: {row["id"]: row["mos"][dim] for row in rows} for dim in ("visual", "dynamic",
                                                                        "alignment")}
    figures = srcc_by_kind(_mirrored(rows), mos, kinds_by_video(rows), KindConfig(n_resamples=200))
    assert list(figures) == ["visual", "dynamic", "alignment"]
    alignment = {f.kind: f for f in figures["alignment"]}
    assert set(alignment) == {"wrong_color", "wrong_count"}
    color, count = alignment["wrong_color"], alignment["wrong_count"]
    assert color.n + count.n == 24 and min(color.n, count.n) >= 3
    assert color.srcc == pytest.approx(1) and color.plcc == pytest.approx(1)
    assert count.srcc == pytest.approx(-1) and count.plcc == pytest.approx(-1)
    assert color.srcc_ci == pytest.approx((1, 1)) and count.srcc_ci == pytest.approx((-1, -1))
    assert [f.srcc for f in figures["visual"]] == [pytest.approx(1)]  # blur, every clip
    assert color.note is None and color.missing == 0 and color.shared == 0


def test_per_kind_figures_match_scipy_on_noisy_predictions(sparse):
    rows = _rows(sparse)
    rng = np.random.default_rng(1)
    mos = {row["id"]: row["mos"]["visual"] for row in rows}
    pred = {i: m + rng.normal(0, 0.8) for i, m in mos.items()}
    kinds = kinds_by_video(rows)["visual"]
    checked = 0
    for figure in kind_figures(pred, mos, kinds, NO_CI):
        ids = [i for i in sorted(kinds) if figure.kind in kinds[i]]
        assert figure.n == len(ids)
        assert figure.mos_mean == pytest.approx(np.mean([mos[i] for i in ids]))
        if figure.srcc is None:
            continue
        p, t = [pred[i] for i in ids], [mos[i] for i in ids]
        assert figure.srcc == pytest.approx(stats.spearmanr(p, t).statistic)
        assert figure.plcc == pytest.approx(stats.pearsonr(p, t).statistic)
        checked += 1
    assert checked >= 3


def test_groups_without_a_correlation_say_why():
    kinds = {"a": ("blur",), "b": ("blur",), "c": (CLEAN,), "d": (CLEAN,), "e": (CLEAN,),
             "f": ("noise",), "g": ("noise",), "h": ("noise",), "i": ("noise",)}
    mos = {"a": 2.0, "b": 3.0, "c": 5.0, "d": 5.0, "e": 5.0, "f": 1.0, "g": 2.0, "h": 3.0,
           "i": 4.0}
    pred = {"a": 2.0, "b": 3.0, "c": 4.0, "d": 4.5, "e": 4.8, "f": 3.0, "g": 3.0,
            "h": math.nan}  # h: NaN, i: no prediction
    figures = {f.kind: f for f in kind_figures(pred, mos, kinds)}
    assert figures["blur"].note == "fewer than 3 clips" and figures["blur"].srcc is None
    assert figures[CLEAN].note == "MOS all equal (5.00)" and figures[CLEAN].plcc is None
    assert figures[CLEAN].pred_mean == pytest.approx(4.4333, abs=1e-4)
    noise = figures["noise"]
    assert (noise.n, noise.missing, noise.note) == (2, 2, "fewer than 3 clips")
    pred.update(h=3.0)
    assert {f.kind: f.note for f in kind_figures(pred, mos, kinds)}["noise"] == (
        "predictions all equal")
    with pytest.raises(ConfigError, match="min_clips"):
        KindConfig(min_clips=2)


def test_manifest_figures_for_the_demo(dense):
    rows = _rows(dense)
    predicted = _mirrored(rows)["alignment"]
    from_path = manifest_kind_figures(predicted, dense, "alignment", NO_CI)
    assert from_path == manifest_kind_figures(predicted, rows, "alignment", NO_CI)
    assert {f.kind: round(f.srcc, 6) for f in from_path} == {"wrong_color": 1, "wrong_count": -1}
    with pytest.raises(ConfigError, match="no defect kinds for dimension 'overall'"):
        manifest_kind_figures(predicted, dense, "overall")
    with pytest.raises(AnnotationError, match="no defects"):
        manifest_kind_figures(predicted, [{k: v for k, v in r.items() if k != "defects"}
                                          for r in rows], "alignment")
    with pytest.raises(AnnotationError, match="no prediction id is a manifest id"):
        manifest_kind_figures({"elsewhere": 3.0}, rows, "alignment")


# --- the report ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_report(dense, tmp_path_factory):
    """`qsave eval` of the mirrored predictions against the dense manifest: JSON, HTML and the
    terminal output."""
    folder = tmp_path_factory.mktemp("cli")
    pred = _prediction_file(folder / "pred.jsonl", _mirrored(_rows(dense)))
    return folder, pred


def test_eval_reports_the_kinds_in_json_terminal_and_html(dense, cli_report, capsys):
    folder, pred = cli_report
    code = main(["eval", "--pred", str(pred), "--truth", str(dense), "--bootstrap", "100",
                 "--json", str(folder / "r.json"), "--html", str(folder / "r.html")])
    assert code == 0
    section = json.loads((folder / "r.json").read_text())["defect_kinds"]
    assert section["rule"] == KIND_RULE and section["min_clips"] == 3
    alignment = {f["kind"]: f for f in section["dimensions"]["alignment"]}
    assert alignment["wrong_color"]["srcc"] == pytest.approx(1)
    assert alignment["wrong_count"]["srcc"] == pytest.approx(-1)
    assert alignment["wrong_count"]["srcc_ci"] == pytest.approx([-1, -1])
    terminal = capsys.readouterr().out
    assert f"qsave: {TITLE} (95% CI)" in terminal
    assert re.search(r"wrong_count\s+\|?\s*\d+\s+\|?\s*0\s+\|?\s*-1\.000", terminal), terminal
    page = (folder / "r.html").read_text()
    assert "<h2>per defect kind</h2>" in page and '<table class="kinds">' in page
    assert page.count('<td class="text">wrong_color</td>') == 1
    assert KIND_RULE in htmllib.unescape(page)


def test_rich_table_of_the_kinds_on_a_wide_terminal(dense, cli_report):
    _, pred = cli_report
    report = evaluate(load_predictions(pred), load_truth(dense), EvalConfig(n_resamples=0))
    console = Console(record=True, width=200, force_terminal=True)
    print_report(report, console)
    text = console.export_text()
    assert f"{TITLE} (no CI)" in text and "| wrong_color" not in text  # rich, not markdown
    assert re.search(r"alignment\s+wrong_color\s+\d+\s+0\s+1\.000\s+1\.000", text), text


def test_a_data_split_table_carries_the_kinds_too(dense, cli_report):
    folder, _ = cli_report
    split = folder / "split.csv"
    assert main(["data", "split", "--videos", str(dense), "-o", str(split)]) == 0
    assert load_truth(split).defect_kinds == load_truth(dense).defect_kinds
    test_only = load_truth(split, split="test")
    assert set(test_only.defect_kinds["alignment"]) == set(test_only.videos)


def test_a_truth_without_defects_has_no_section(dense, cli_report, tmp_path):
    _, pred = cli_report
    bare = tmp_path / "manifest.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "defects"}) + "\n"
                            for row in _rows(dense)))
    truth = load_truth(bare)
    assert truth.defect_kinds == {}
    report = evaluate(load_predictions(pred), truth, EvalConfig(n_resamples=0))
    assert report.defect_kinds == {} and "defect_kinds" not in json.loads(report_to_json(report))
    console = Console(record=True, width=200, force_terminal=True)
    print_report(report, console)
    assert TITLE not in console.export_text()
    assert "per defect kind" not in render_html(report)
    assert report.correlation["alignment"]["instance"]["n"] == 24  # the rest as before


# --- in a browser -------------------------------------------------------------------------------
BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(n)), None)
needs_browser = pytest.mark.skipif(BROWSER is None,
                                   reason="needs chromium (apt-get install -y chromium)")

PROBE = """<script>
const box = e => e.getBoundingClientRect();
const kinds = document.querySelector('table.kinds');
const summary = document.querySelector('table.summary');
const grid = document.querySelector('.grid');
document.body.setAttribute('data-probe', JSON.stringify({
  found: !!kinds,
  visible: !!kinds && kinds.checkVisibility() && box(kinds).height > 0,
  rows: kinds ? kinds.rows.length : 0,
  after_summary: !!kinds && box(summary).bottom < box(kinds).top,
  before_plots: !!kinds && box(kinds).bottom < box(grid).top,
  page_scroll: document.documentElement.scrollWidth - innerWidth,
  scrolls: !!kinds && getComputedStyle(kinds.parentElement).overflowX === 'auto',
  cut: !!kinds && kinds.parentElement.scrollWidth > kinds.parentElement.clientWidth + 1,
  tinted: [...document.querySelectorAll('table.kinds td[style*="background"]')].length,
}));
</script>"""


@pytest.fixture(scope="module")
def kinds_page(sparse, tmp_path_factory):
    """The HTML report of noisy predictions on the sparse corpus, with the probe."""
    folder = tmp_path_factory.mktemp("browser-kinds")
    rows = _rows(sparse)
    rng = np.random.default_rng(2)
    predicted = {d: {r["id"]: float(np.clip(r["mos"][d] + rng.normal(0, 0.4), 1, 5))
                     for r in rows} for d in ("visual", "dynamic", "alignment")}
    pred = _prediction_file(folder / "pred.jsonl", predicted)
    report = evaluate(load_predictions(pred), load_truth(sparse), EvalConfig(n_resamples=50))
    probed = folder / "probed.html"
    probed.write_text(render_html(report).replace("</body>", PROBE + "</body>"))
    return probed, report


def _chromium(*args: str) -> str:
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", *args], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


def _probe(path: Path, width: int) -> dict:
    dom = _chromium(f"--window-size={width},2400", "--dump-dom", path.as_uri())
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(htmllib.unescape(found.group(1)))


@pytest.mark.slow
@needs_browser
@pytest.mark.parametrize("width", [1400, 480])
def test_the_kinds_table_renders_between_summary_and_plots(kinds_page, width):
    probed, report = kinds_page
    probe = _probe(probed, width)
    figures = sum(len(rows) for rows in report.defect_kinds["dimensions"].values())
    assert probe["found"] and probe["visible"] and probe["rows"] == figures + 1  # + header
    assert probe["after_summary"] and probe["before_plots"]
    assert probe["page_scroll"] <= 0 and probe["scrolls"]
    assert probe["cut"] == (width < 1400)  # whole on a wide window, else scrolls in its box
    with_correlation = sum(f["srcc"] is not None for rows in report.defect_kinds[
        "dimensions"].values() for f in rows)
    assert with_correlation >= 3 and probe["tinted"] == 2 * with_correlation  # SRCC and PLCC

