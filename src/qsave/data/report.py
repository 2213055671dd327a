"""The dataset report: MOS distributions, rater variance, agreement; PNG plots and HTML.

Plots follow the paper's App. C: MOS histograms per dimension (Fig. 6), per generator and
dimension with a kernel density curve (Fig. 7), the per-video rating variance (Fig. 9), and
each rater's agreement with the others (or with the expert ground truth when screened, with
the screening's drop_k and where it comes from). The perfect-score review queue (App. C.1) is
listed and written as ``review.csv`` for the experts to fill.
Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg), never through pyplot,
so no global backend is touched.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from qsave.data.annotations import (
    RATED_DIMENSIONS,
    AnnotationConfig,
    MosResult,
    ScreeningResult,
    inter_rater_agreement,
    overall_consistency,
    rater_agreement,
)
from qsave.data.review import FILLED, ReviewConfig, review_queue

BINS = np.linspace(1.0, 5.0, 17)  # 16 bins of 0.25 on the 1–5 MOS scale
PLOTS = ("mos_by_dimension", "mos_by_generator", "rater_variance", "rater_agreement")


@dataclass
class ReportFiles:
    html: Path
    plots: dict[str, Path]
    tables: dict[str, Path]  # mos, problems, agreement, raters, review (the queue to fill)
    review: pd.DataFrame  # the perfect-score review queue (App. C.1) written to review.csv


def _dimensions(mos: pd.DataFrame) -> list[str]:
    present = set(mos["dimension"])
    return [d for d in RATED_DIMENSIONS if d in present]


def _hist(ax, values: np.ndarray, title: str, density_curve: bool = False) -> None:
    """A MOS histogram (counts; one ``stairs`` artist) with an optional Gaussian KDE."""
    counts, edges = np.histogram(values, bins=BINS)
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.75)
    if density_curve and len(values) >= 3 and np.ptp(values) > 0:
        grid = np.linspace(1.0, 5.0, 120)
        scale = len(values) * (BINS[1] - BINS[0])  # density → counts per bin
        ax.plot(grid, stats.gaussian_kde(values)(grid) * scale, color="tab:orange")
    ax.set_title(title, fontsize=8, pad=2)
    ax.set_xlim(1.0, 5.0)
    ax.tick_params(labelsize=6)


def plot_mos_by_dimension(mos: pd.DataFrame, path: Path) -> Path:
    """Fig. 6: the MOS distribution of each dimension (overall included when rated)."""
    dims = _dimensions(mos)
    fig = Figure(figsize=(3.0 * max(len(dims), 1), 2.6))
    for i, dim in enumerate(dims):
        ax = fig.add_subplot(1, len(dims), i + 1)
        values = mos.loc[mos["dimension"] == dim, "mos5"].to_numpy(float)
        _hist(ax, values, f"{dim} (n={len(values)})", density_curve=True)
        ax.set_xlabel("MOS", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.88, bottom=0.18, wspace=0.2)
    fig.savefig(path, dpi=80)
    return path


def _ridge(ax, values: np.ndarray, base: float) -> None:
    """One generator's MOS histogram and KDE on a ridge at height ``base``, peak = 0.9."""
    counts, edges = np.histogram(values, bins=BINS)
    peak = max(int(counts.max()), 1)
    ax.stairs(base + 0.9 * counts / peak, edges, baseline=base, fill=True, color="tab:blue",
              alpha=0.7)
    if len(values) >= 3 and np.ptp(values) > 0:
        grid = np.linspace(1.0, 5.0, 120)
        density = stats.gaussian_kde(values)(grid) * len(values) * (BINS[1] - BINS[0])
        ax.plot(grid, base + 0.9 * density / peak, color="tab:orange", linewidth=1)


def plot_mos_by_generator(mos: pd.DataFrame, videos: pd.DataFrame, path: Path) -> Path:
    """Fig. 7 as ridgelines: per dimension, one histogram + KDE per generator.

    Each ridge is scaled to its own tallest bin (the paper's Fig. 7 uses one panel per
    generator and dimension; ridges keep many generators readable and cheap to draw).
    """
    table = mos.merge(videos[["video_id", "generator"]], on="video_id", how="left")
    table["generator"] = table["generator"].fillna("(unknown)")
    generators, dims = sorted(table["generator"].unique()), _dimensions(mos)
    fig = Figure(figsize=(2.6 * max(len(dims), 1), 1.0 + 0.45 * max(len(generators), 1)))
    axes = fig.subplots(1, max(len(dims), 1), sharey=True, squeeze=False)[0]  # (dimensions,)
    for ax, dim in zip(axes, dims, strict=False):
        for i, generator in enumerate(generators):
            mask = (table["generator"] == generator) & (table["dimension"] == dim)
            _ridge(ax, table.loc[mask, "mos5"].to_numpy(float), float(i))
        ax.set_title(dim, fontsize=9)
        ax.set_xlim(1.0, 5.0)
        ax.set_xlabel("MOS", fontsize=8)
    counts = table.drop_duplicates("video_id")["generator"].value_counts()
    axes[0].set_yticks(np.arange(len(generators)) + 0.35,
                       [f"{g} (n={counts.get(g, 0)})" for g in generators], fontsize=7)
    fig.subplots_adjust(left=0.16, right=0.98, top=0.9, bottom=0.12, wspace=0.08)
    fig.savefig(path, dpi=80)
    return path


def plot_rater_variance(usable: pd.DataFrame, path: Path) -> Path:
    """Fig. 9: the histogram of each (video, dimension)'s rating variance (ddof=1)."""
    variance = usable.groupby(["video_id", "dimension"])["score"].var().dropna()
    fig = Figure(figsize=(4.5, 3.0), layout="tight")
    ax = fig.add_subplot()
    ax.hist(variance.to_numpy(float), bins=20, color="tab:green", alpha=0.8)
    ax.set_xlabel("variance of the ratings of one video and dimension")
    ax.set_ylabel("count")
    share = float((variance < 0.3).mean()) if len(variance) else math.nan
    ax.set_title(f"rater variance ({share:.0%} below 0.3)", fontsize=9)
    fig.savefig(path, dpi=90)
    return path


def plot_rater_agreement(agreement: pd.DataFrame, path: Path, reference: str) -> Path:
    """Each rater's SRCC against the reference (leave-one-out MOS or expert truth)."""
    table = agreement.sort_values("srcc", na_position="first")
    fig = Figure(figsize=(5.0, 0.5 + 0.22 * max(len(table), 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(table["rater_id"].astype(str), table["srcc"].fillna(0.0), color="tab:purple")
    ax.set_xlabel(f"SRCC against {reference}")
    ax.set_xlim(-1.0, 1.0)
    ax.tick_params(axis="y", labelsize=7)
    fig.savefig(path, dpi=90)
    return path


_TEMPLATE = jinja2.Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}
.error{color:#a00}.warning{color:#a60}img{max-width:100%}</style></head><body>
<h1>{{ title }}</h1>
<h2>Summary</h2>{{ summary }}
<h2>Problems ({{ n_problems }})</h2>
{% if n_problems %}{{ problem_counts }}
<details><summary>every problem</summary>{{ problems }}</details>
{% else %}<p>No problems found.</p>{% endif %}
<h2>MOS per dimension (Fig. 6)</h2>{{ mos_stats }}
<img src="mos_by_dimension.png" alt="MOS per dimension">
<h2>MOS per generator (Fig. 7)</h2><img src="mos_by_generator.png" alt="MOS per generator">
<h2>Inter-rater agreement</h2>
<p>Krippendorff's alpha (interval), the raters' mean SRCC against the leave-one-out MOS of
the others, and the mean per-video variance (App. C.1, Fig. 9).</p>{{ agreement }}
<img src="rater_variance.png" alt="rater variance">
{% if overall %}<h2>Overall vs. the mean of the three dimensions (App. D.2)</h2>
<p>PLCC {{ "%.3f"|format(overall.plcc) }}, SRCC {{ "%.3f"|format(overall.srcc) }}
over {{ overall.n_videos }} videos.</p>{% endif %}
<h2>Raters ({{ reference }})</h2>
{% if screening %}<p>Sample and Scrutinize (App. C.1): {{ screening }}</p>
{% if n_refused %}<p class="error">Screening refused: dropping these raters would leave
{{ n_refused }} video(s) under their split's minimum number of raters.</p>
<details><summary>every video</summary>{{ refused }}</details>{% endif %}{% endif %}
{{ raters }}
<img src="rater_agreement.png" alt="rater agreement">
<h2>Perfect-score review queue ({{ n_review }})</h2>
<p>Video/dimension pairs that all their raters scored at the top of the scale. App. C.1 has
them rated by {{ review_raters }} raters, then reviewed and adjusted by domain experts: fill
<code>{{ filled }}</code> in <a href="review.csv">review.csv</a> and apply it with
<code>qsave data mos --review review.csv</code>.</p>
{% if n_review %}{{ review }}{% endif %}
</body></html>
""", autoescape=False)  # every table is escaped by DataFrame.to_html


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="–",
                         escape=True, border=0)


def _summary(result: MosResult, videos: pd.DataFrame | None) -> pd.DataFrame:
    usable = result.usable
    rows = [("ratings used", len(usable)),
            ("ratings excluded", len(result.report.excluded_rows)),
            ("raters", usable["rater_id"].nunique()),
            ("videos rated", usable["video_id"].nunique())]
    if videos is not None:
        rows.append(("videos in table", len(videos)))
        split = videos["split"].fillna("(none)")
        rows += [(f"videos in split {s}", int(n)) for s, n in split.value_counts().items()]
        rows.append(("generators", videos["generator"].nunique()))
    return pd.DataFrame(rows, columns=["quantity", "value"])


def _mos_stats(mos: pd.DataFrame) -> pd.DataFrame:
    grouped = mos.groupby("dimension")
    table = grouped.agg(videos=("mos5", "size"), mean=("mos5", "mean"), std=("mos5", "std"),
                        median=("mos5", "median"),
                        below_4=("mos5", lambda s: float((s < 4).mean())),
                        mean_raters=("n_raters", "mean")).reset_index()
    order = {d: i for i, d in enumerate(RATED_DIMENSIONS)}
    return table.sort_values("dimension", key=lambda s: s.map(order))


def write_report(out_dir: str | Path, result: MosResult, videos: pd.DataFrame | None = None,
                 screening: ScreeningResult | None = None,
                 title: str = "qsave dataset report",
                 annotation: AnnotationConfig | None = None,
                 review: ReviewConfig | None = None) -> ReportFiles:
    """Write the plots, CSV tables, ``review.csv`` and ``index.html`` into ``out_dir``.

    ``annotation`` gives the scale whose top makes a perfect score (default 1–5).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos_or_empty = videos if videos is not None else pd.DataFrame(
        {"video_id": result.mos["video_id"].unique(), "generator": None})
    agreement = inter_rater_agreement(result.usable)
    reference = f"{screening.reference} (screening)" if screening else "leave-one-out MOS"
    raters = screening.raters if screening else rater_agreement(result.usable)
    plots = {
        "mos_by_dimension": plot_mos_by_dimension(result.mos, out / "mos_by_dimension.png"),
        "mos_by_generator": plot_mos_by_generator(result.mos, videos_or_empty,
                                                  out / "mos_by_generator.png"),
        "rater_variance": plot_rater_variance(result.usable, out / "rater_variance.png"),
        "rater_agreement": plot_rater_agreement(raters, out / "rater_agreement.png", reference),
    }
    review = review or ReviewConfig()
    queue = review_queue(result.usable, videos, annotation, review)
    tables = {"mos": out / "mos.csv", "problems": out / "problems.csv",
              "agreement": out / "agreement.csv", "raters": out / "raters.csv",
              "review": out / "review.csv"}
    queue.to_csv(tables["review"], index=False)
    result.mos.to_csv(tables["mos"], index=False)
    result.report.to_frame().to_csv(tables["problems"], index=False)
    agreement.to_csv(tables["agreement"], index=False)
    raters.to_csv(tables["raters"], index=False)
    problems = result.report.to_frame()
    page = _TEMPLATE.render(
        title=html.escape(title), summary=_html_table(_summary(result, videos)),
        n_problems=len(problems), problems=_html_table(problems),
        problem_counts=_html_table(pd.DataFrame(sorted(result.report.counts().items()),
                                                columns=["kind", "count"])),
        mos_stats=_html_table(_mos_stats(result.mos)), agreement=_html_table(agreement),
        overall=overall_consistency(result.mos), reference=html.escape(reference),
        raters=_html_table(raters), **_screening_fields(screening),
        n_review=len(queue), review=_html_table(queue.drop(columns=[FILLED, "note"])),
        review_raters=review.min_raters, filled=FILLED)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return ReportFiles(index, plots, tables, queue)


def _screening_fields(screening: ScreeningResult | None) -> dict[str, object]:
    """The screening summary and the videos it would leave short, for the template."""
    if screening is None:
        return {"screening": "", "n_refused": 0, "refused": ""}
    refused = [p for p in screening.problems if p.kind == "screening_shortfall"]
    frame = pd.DataFrame([p.to_dict() for p in refused],
                         columns=["severity", "video_id", "message"])
    return {"screening": html.escape(screening.summary()),
            "n_refused": sum(p.severity == "error" for p in refused),
            "refused": _html_table(frame)}
