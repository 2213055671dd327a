"""The HTML eval report laid out by a real browser (headless Chromium; skipped without it).

A probe script added to a copy of the report measures the page after layout and writes what it
found into the DOM, which ``chromium --dump-dom`` returns: the summary table comes before the
per-dimension sections, each section's scatter plot, ranking and confusion matrix sit side by
side on a wide window, nothing is wider than its box or the window, and every plot decoded.
``benchmarks/render_reports.py`` writes screenshots of the same reports to look at.
"""

import html as htmllib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from helpers import score_row
from qsave.dimensions import RATINGS
from qsave.eval.benchmarks import load_predictions, load_truth
from qsave.eval.report import EvalConfig, evaluate, write_html

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(n)), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="needs chromium (apt-get install -y chromium)"),
]
DIMENSIONS = ("visual", "dynamic", "alignment")
GENERATORS = ["Wan2.1-T2V-14B", "CogVideoX-5B", "LTX-Video", "g4", "g5", "g6"]

PROBE = """<script>
const box = e => e.getBoundingClientRect();
const grids = [...document.querySelectorAll('.grid')];
const summary = document.querySelector('table.summary');
const wide = [...document.querySelectorAll('.grid figure, .grid table')]
  .filter(e => e.scrollWidth > e.clientWidth + 1 || box(e).right > innerWidth + 1)
  .concat([summary.parentElement].filter(e => box(e).right > innerWidth + 1));
document.body.setAttribute('data-probe', JSON.stringify({
  width: innerWidth,
  page_scroll: document.documentElement.scrollWidth - innerWidth,
  summary_first: box(summary).bottom < box(grids[0]).top,
  summary_scrolls: getComputedStyle(summary.parentElement).overflowX === 'auto',
  summary_cut: summary.parentElement.scrollWidth > summary.parentElement.clientWidth + 1,
  rows: grids.map(g => new Set([...g.children].map(f => Math.round(box(f).top))).size),
  columns: grids.map(g => [...g.children].length),
  too_wide: wide.map(e => e.tagName + '.' + e.className),
  images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
  confusions: document.querySelectorAll('table.confusion').length,
}));
</script>"""


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    """A 36-video report with rating words, six generators (some long names) and a probe."""
    folder = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(3)
    manifest, rows = [], []
    for k in range(36):
        mos = {d: float(np.round(rng.uniform(1, 5), 2)) for d in DIMENSIONS}
        manifest.append({"id": f"v{k:02d}", "generator": GENERATORS[k % 6], "mos": mos,
                         "prompt": f"prompt {k}"})  # one video per prompt: no pairs from MOS
        r_hat = {d: float(np.clip((m - 1) / 4 + rng.normal(0, 0.15), 0, 1))
                 for d, m in mos.items()}
        row = score_row(f"v{k:02d}", r_hat, model={"id": "org/scorer-7b", "revision": None,
                                                   "dtype": "bf16", "device": "cuda",
                                                   "adapter": None})
        for d, value in r_hat.items():
            row["scores"][d]["rating"] = RATINGS[min(4, int(5 * value))]
        rows.append(row)
    (folder / "m.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    (folder / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate(load_predictions(folder / "p.jsonl"), load_truth(folder / "m.jsonl"),
                      EvalConfig(n_resamples=50), pred_path=folder / "p.jsonl",
                      truth_path=folder / "m.jsonl")
    page = write_html(report, folder / "report.html")
    probed = folder / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    return page, probed, report


def _chromium(*args: str) -> str:
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", *args], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


def _probe(path, width: int) -> dict:
    dom = _chromium(f"--window-size={width},2400", "--dump-dom", path.as_uri())
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(htmllib.unescape(found.group(1)))


def test_wide_window_puts_the_plots_side_by_side(report_html):
    _, probed, report = report_html
    probe = _probe(probed, 1400)
    assert probe["width"] == 1400 and probe["page_scroll"] <= 0
    assert probe["summary_first"]
    assert probe["columns"] == [3] * len(report.correlation)  # scatter, ranking, confusion
    assert probe["rows"] == [1] * len(report.correlation)  # … on one row
    assert probe["too_wide"] == [] and not probe["summary_cut"]
    assert probe["images"] and all(probe["images"])
    assert probe["confusions"] == len(report.correlation)


@pytest.mark.parametrize("width", [820, 1100])
def test_narrower_windows_wrap_without_cutting(report_html, width):
    _, probed, _ = report_html
    probe = _probe(probed, width)
    assert probe["page_scroll"] <= 0 and probe["too_wide"] == []
    assert all(rows > 1 for rows in probe["rows"])  # the three figures wrap onto more rows
    assert probe["summary_scrolls"]  # a summary wider than the window scrolls in its box


def test_screenshot(report_html, tmp_path):
    page, _, _ = report_html
    png = tmp_path / "report.png"
    _chromium(f"--screenshot={png}", "--window-size=1400,2400", page.as_uri())
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1400


PREFERENCE_PROBE = """<script>
const box = e => e.getBoundingClientRect();
const scroller = document.querySelector('table.summary').parentElement;
document.body.setAttribute('data-probe', JSON.stringify({
  page_scroll: document.documentElement.scrollWidth - innerWidth,
  summary_cut: scroller.scrollWidth > scroller.clientWidth + 1,
  summary_scrolls: getComputedStyle(scroller).overflowX === 'auto',
  visible_tables: [...document.querySelectorAll('table')].filter(t => t.checkVisibility()).length,
}));
</script>"""


@pytest.fixture(scope="module")
def preference_html(tmp_path_factory):
    """A VideoGen-RewardBench report of 40 pairs over five generators, rows with rating
    probabilities: instance, model-level and calibrated preference in one summary."""
    folder = tmp_path_factory.mktemp("preference")
    rng = np.random.default_rng(5)
    lines = ["prompt,path_A,path_B,A_model,B_model,VQ,MQ,TA,Overall"]
    rows = {}
    for k in range(40):
        a, b = f"{GENERATORS[k % 5]}/{k}a.mp4", f"{GENERATORS[(k + 1) % 5]}/{k}b.mp4"
        labels = rng.choice(["A", "B", "same"], 4)
        lines.append(f"p,{a},{b},{a.split('/')[0]},{b.split('/')[0]},{','.join(labels)}")
        for video in (a, b):
            probs = {d: rng.dirichlet(np.ones(5)) for d in DIMENSIONS}
            row = score_row(video, {d: float(p @ [0, .25, .5, .75, 1]) for d, p in probs.items()})
            for d, p in probs.items():
                row["scores"][d]["probs"] = dict(zip(RATINGS, p.tolist(), strict=True))
            rows[video] = row
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    (folder / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    report = evaluate(load_predictions(folder / "p.jsonl"),
                      load_truth(folder / "pairs.csv", "videogen-rewardbench"),
                      EvalConfig(n_resamples=0))
    page = write_html(report, folder / "report.html")
    probed = folder / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PREFERENCE_PROBE + "</body>"))
    return probed, report


@pytest.mark.parametrize("width", [1400, 480])
def test_preference_report_fits_the_window(preference_html, width):
    probed, report = preference_html
    assert all("skipped" not in e["calibrated"] for e in report.preference.values())
    probe = _probe(probed, width)
    assert probe["page_scroll"] <= 0 and probe["summary_scrolls"]
    assert probe["summary_cut"] == (width < 1400)  # whole on a wide window, else scrolls in its box
    # provenance, summary, details, model level, calibrated; the generator tables are folded
    assert probe["visible_tables"] == 5
