"""Render `qsave eval` HTML reports on real data and screenshot them in headless Chromium.

The layout check of the eval report (provenance, one summary table, plots side by side, rating
confusion matrices) is visual: this script writes the reports, screenshots each one with
``chromium --headless --screenshot`` at 1400 px wide, and prints where the PNGs are and how long
rendering took. Open the PNGs to look at them.

Reports written (into ``--workdir``):

* ``synth-tiny``: a ``qsave data synth`` corpus scored by ``qsave score --model tiny`` (random
  weights: the numbers mean nothing, the layout is real). Skipped with ``--no-score``.
* ``synth-noisy``: the same corpus, predictions = human MOS + noise, with rating words (a
  report whose plots and confusion matrices have structure).
* ``videoscore``: the VideoScore-Bench-v2 fixture (integer scale: accuracy columns).
* ``videogen``: the VideoGen-RewardBench fixture (preference only).

    python benchmarks/render_reports.py --workdir /tmp/eval-reports

Needs Debian's ``chromium`` for the screenshots (``apt-get install -y chromium``); without it
the HTML is still written.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from qsave.dimensions import RATINGS, Dimension, score_to_mos
from qsave.eval.benchmarks import load_predictions, load_truth
from qsave.eval.report import EvalConfig, evaluate, print_report, report_to_json, write_html
from qsave.scores import DimensionScore, ItemError, VideoResult

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "eval" / "fixtures"
MODEL = {"id": "demo/noisy-oracle", "revision": None, "dtype": "float32", "device": "cpu",
         "adapter": None}


def chromium() -> str | None:
    """The headless browser's executable, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 2400) -> Path:
    """A headless Chromium screenshot of ``html`` (the first ``height`` pixels)."""
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("no chromium: apt-get install -y chromium")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return png


def noisy_predictions(truth_path: Path, benchmark: str | None, out: Path, seed: int = 0) -> Path:
    """Rows for every truth video: r̂ = (MOS − 1)/4 + noise, a rating word near it, and one
    error row in thirteen (written with the one row type, :class:`VideoResult`)."""
    truth = load_truth(truth_path, benchmark)
    rng = np.random.default_rng(seed)
    lines = []
    for k, (video_id, video) in enumerate(sorted(truth.videos.items())):
        result = VideoResult(video_id, video.path, None, video.prompt, model=MODEL)
        if k % 13 == 5:
            result.error = ItemError("VideoError", "decode failed: moov atom not found")
        else:
            for dimension in ("visual", "dynamic", "alignment"):
                mos = truth.mos.get(dimension, truth.mos.get("overall", {})).get(video_id)
                mos = rng.uniform(1, 5) if mos is None else mos
                r_hat = float(np.clip((mos - 1) / 4 + rng.normal(0, 0.12), 0, 1))
                word = RATINGS[int(np.clip(round(4 * r_hat + rng.normal(0, 0.4)), 0, 4))]
                result.scores[Dimension(dimension)] = DimensionScore(
                    r_hat, score_to_mos(r_hat), (0.2,) * 5, word, 1.6)
        lines.append(json.dumps(result.to_record()) + "\n")
    out.write_text("".join(lines))
    return out


def qsave(*args: str) -> None:
    """Run the qsave CLI of this interpreter."""
    subprocess.run([sys.executable, "-m", "qsave.cli", *args], check=True,
                   capture_output=True, text=True)


def render(name: str, pred: Path, truth: Path, benchmark: str | None, workdir: Path,
           shoot: bool) -> None:
    """Evaluate, write JSON/HTML/terminal text, screenshot; print what was written."""
    start = time.perf_counter()
    report = evaluate(load_predictions(pred), load_truth(truth, benchmark),
                      EvalConfig(n_resamples=200, allow_extra=True),
                      pred_path=pred, truth_path=truth)
    html = write_html(report, workdir / f"{name}.html")
    (workdir / f"{name}.json").write_text(report_to_json(report))
    text = io.StringIO()
    print_report(report, Console(file=text, width=80))
    (workdir / f"{name}.txt").write_text(text.getvalue())
    seconds = time.perf_counter() - start
    line = f"{name:12} {html} ({html.stat().st_size / 1e3:.0f} kB, {seconds:.1f} s)"
    if shoot:
        png = screenshot(html, workdir / f"{name}.png")
        line += f"  screenshot {png}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eval-reports"))
    parser.add_argument("--n", type=int, default=40, help="clips of the synthetic corpus")
    parser.add_argument("--no-score", action="store_true", help="skip the tiny-model scoring")
    args = parser.parse_args()
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    shoot = chromium() is not None
    if not shoot:
        print("no chromium: writing the HTML without screenshots")
    corpus = workdir / "corpus"
    manifest = corpus / "manifest.jsonl"
    if not manifest.exists():
        qsave("data", "synth", "--out", str(corpus), "--n", str(args.n), "--seed", "1")
    jobs = []
    if not args.no_score:
        tiny = workdir / "pred-tiny.jsonl"
        if not tiny.exists():
            qsave("score", str(manifest), "--out", str(tiny), "--model", "tiny")
        jobs.append(("synth-tiny", tiny, manifest, None))
    jobs += [
        ("synth-noisy", noisy_predictions(manifest, None, workdir / "pred-noisy.jsonl"),
         manifest, None),
        ("videoscore", noisy_predictions(FIXTURES / "videoscore_bench_v2.json",
                                         "videoscore-bench-v2", workdir / "pred-vs.jsonl"),
         FIXTURES / "videoscore_bench_v2.json", "videoscore-bench-v2"),
        ("videogen", noisy_predictions(FIXTURES / "videogen_rewardbench.csv",
                                       "videogen-rewardbench", workdir / "pred-vg.jsonl"),
         FIXTURES / "videogen_rewardbench.csv", "videogen-rewardbench"),
    ]
    for job in jobs:
        render(*job, workdir, shoot)


if __name__ == "__main__":
    main()
