"""The ``qsave`` command line (typer). Each command mirrors a library function.

Each sub-command below is a thin wrapper: parse flags, call the library, print with rich.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from qsave.annotate.cli import annotate_app
from qsave.errors import ConfigError, UsageError
from qsave.eval.prompt_shuffle import PromptShuffleConfig
from qsave.spec import ScorerSpec
from qsave.video.slowfast import MODES

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=HELP,
    help="qsave: score AI-generated videos on visual quality, dynamic quality and text-video "
         "alignment with a Q-Save evaluator; train, evaluate and serve it.",
)
data_app = typer.Typer(no_args_is_help=True, context_settings=HELP,
                       help="Synthetic clips, ratings → MOS, records.")
app.add_typer(data_app, name="data")
app.add_typer(annotate_app, name="annotate")


def _version(value: bool) -> None:
    if value:
        from qsave import __version__

        console.print(f"qsave {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
        = False) -> None:
    """qsave: score AI-generated videos with a Q-Save evaluator; train, evaluate, serve it."""
console = Console()  # results and tables
errors = Console(stderr=True, soft_wrap=True)  # errors, warnings, progress: never wrapped


# --- data synth (foundation) -------------------------------------------------------------
@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output directory for clips, manifest and ratings.")],
    count: Annotated[int | None, typer.Option("--count", help="Number of clips (default 24).")]
    = None,
    n: Annotated[int | None, typer.Option("--n", hidden=True, help="Old name of --count.")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the corpus (default 0).")] = None,
    size: Annotated[int | None, typer.Option(
        help="Frame width and height, pixels (default 64).")] = None,
    fps: Annotated[int | None, typer.Option(help="Frames per second (default 8).")] = None,
    seconds: Annotated[float | None, typer.Option(
        help="Duration of each clip, s (default 2.0).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of SynthConfig fields; flags override it.")
    ] = None,
) -> None:
    """Write synthetic AI-video-like clips with labelled defects, a manifest and ratings."""
    from qsave.data.annotations import staged
    from qsave.data.synthetic import SynthConfig, load_synth_config, write_corpus

    flags = {"n": count if count is not None else n, "seed": seed, "size": size, "fps": fps,
             "seconds": seconds}
    base = load_synth_config(config) if config else {}
    given = {k: v for k, v in flags.items() if v is not None}
    settings = SynthConfig.from_mapping({**base, **given})
    with staged() as stage:
        corpus = write_corpus(stage.folder(out), settings)
        for error in corpus.errors:
            console.print(f"[red]failed:[/red] {error}")
        if corpus.errors:
            console.print(f"[red]{len(corpus.errors)} clip(s) failed: nothing written to "
                          f"{out}[/red]")
            raise typer.Exit(1)
    written = [out / p.name for p in (corpus.manifest_path, corpus.ratings_path,
                                      corpus.raters_path)]
    console.print(f"wrote {len(corpus.clips)} clips, {', '.join(map(str, written))}",
                  soft_wrap=True)


# --- eval ----------------------------------------------------------------------------------
def _eval_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` adapter options; a value is read as JSON when it parses (2000, 0.5, true)."""
    import json

    from qsave.errors import ConfigError

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@app.command("eval")
def eval_(
    pred: Annotated[Path, typer.Option(help="Predictions JSONL written by `qsave score`.")],
    truth: Annotated[Path, typer.Option(help=(
        "Ground truth. The qsave truth format: a table (CSV, JSONL or Parquet) of MOS on 1–5 "
        "keyed by video id, its layout read from the columns: the MOS table of `qsave data "
        "mos` (video_id, dimension, mos; mos5 when present) or a videos table with MOS per "
        "dimension (manifest.jsonl of `qsave data synth`, the output of `qsave data split`); "
        "an optional prompt column. Without pairs, preference pairs are built from the MOS "
        "within each prompt (prompts from this file, else the prediction rows). A published "
        "benchmark's file: --benchmark. docs/eval.md"))],
    benchmark: Annotated[
        str | None, typer.Option(help="Truth file adapter (default qsave); a bad name lists all.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="qsave truth: evaluate only the rows of this split.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="Adapter option KEY=VALUE, e.g. n_videos=2000 (repeatable)."),
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Fixed tie threshold (default: EvalConfig, App. A).")
    ] = None,
    epsilon_scale: Annotated[
        str | None,
        typer.Option(help="Scale of ε and Δ: r (r̂, 0..1) or mos (1–5) (default: EvalConfig)."),
    ] = None,
    tie_margin: Annotated[
        float | None, typer.Option(help="Human tie of the pairs built from MOS: |ΔMOS| ≤ it, "
                                        "on 1–5 (default: EvalConfig, 4·ε of App. A).")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Truth file of a calibration split; ε is fitted on it.")
    ] = None,
    oracle: Annotated[
        bool, typer.Option(help="Fit ε on the test pairs themselves (reported as oracle).")
    ] = False,
    fit: Annotated[
        str | None, typer.Option(help="Logistic fit before PLCC: none, logistic4, logistic5.")
    ] = None,
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap resamples (default: EvalConfig).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Bootstrap seed (default: EvalConfig).")] = None,
    allow_extra: Annotated[
        bool, typer.Option(help="Report, instead of failing on, predictions of unknown ids.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report with plots.")] = None,
) -> None:
    """Compare predictions with human MOS or preferences (paper App. B, D.2)."""
    from dataclasses import replace

    from qsave.eval.benchmarks import load_predictions, load_truth
    from qsave.eval.report import EvalConfig, evaluate, print_report, report_to_json, write_html

    given = {"epsilon": epsilon, "epsilon_scale": epsilon_scale, "fit": fit,
             "n_resamples": bootstrap, "seed": seed, "tie_margin": tie_margin}
    config = replace(  # defaults are written once, in EvalConfig
        EvalConfig(),
        oracle=oracle,
        allow_extra=allow_extra,
        **{k: v for k, v in given.items() if v is not None},
    )
    options = _eval_options(option or [])
    truth_data = load_truth(truth, benchmark, **options, **({"split": split} if split else {}))
    calib = load_truth(calibration, benchmark, **options) if calibration else None
    report = evaluate(load_predictions(pred), truth_data, config, calib,
                      pred_path=pred, truth_path=truth, calibration_path=calibration)
    print_report(report, console)
    if json_out:
        json_out.write_text(report_to_json(report), encoding="utf-8")
        console.print(f"wrote {json_out}")
    if html:
        console.print(f"wrote {write_html(report, html)}")
    if report.n_missing or report.problems:
        console.print(
            f"[red]{report.n_missing} videos without a prediction, "
            f"{len(report.problems)} unreadable rows[/red]"
        )
        raise typer.Exit(code=1)


# --- data tooling ----------------------------------------------------------------------------
# qsave data mos|screen|split|records|report|export-verl: thin wrappers of qsave.data.annotations,
# .splits, .records, .report and qsave.train.verl. Flags left unset take the defaults of the
# config dataclasses. Each has one outcome: exit 0 with its warnings printed, or exit 1 with
# nothing written (outputs are staged beside their destination and moved there at the end).
_RatingsOpt = Annotated[Path, typer.Option(help="Ratings table (CSV/Parquet): video_id, "
                                                "rater_id, dimension, score [, reason].")]
_VideosOpt = Annotated[Path | None, typer.Option(help="Videos table (CSV/Parquet) or the "
                                                      "manifest.jsonl of `qsave data synth`; "
                                                      "its split sets each video's minimum "
                                                      "number of raters.")]
_ScaleLow = Annotated[float | None, typer.Option(help="Lowest score of the declared scale.")]
_ScaleHigh = Annotated[float | None, typer.Option(help="Highest score of the declared scale.")]
_IntegerScores = Annotated[bool | None, typer.Option(help="Report non-integer scores.")]
_MinTrain = Annotated[int | None, typer.Option(help="Minimum raters per train video.")]
_MinTest = Annotated[int | None, typer.Option(help="Minimum raters per test video.")]
_MinRl = Annotated[int | None, typer.Option(help="Minimum raters per RL-set video.")]
_KnownRaters = Annotated[Path | None, typer.Option(help="Known rater ids (raters.json of "
                                                   "`qsave data synth`, or a table with "
                                                   "rater_id); others are reported.")]
_ProblemsOpt = Annotated[Path | None, typer.Option(
    "--problems", help="Write every problem found to this table (CSV/Parquet/JSONL), also "
                       "when the command fails.")]


def _given(**flags: object) -> dict[str, object]:
    """The flags the user set; the others keep the dataclass defaults."""
    return {k: v for k, v in flags.items() if v is not None}


def _data_inputs(ratings: Path, videos: Path | None, flags: dict[str, object],
                 raters: Path | None = None):
    """(ratings frame, videos frame or None, AnnotationConfig, known rater ids or None)."""
    from qsave.data.annotations import (
        AnnotationConfig,
        load_rater_ids,
        load_ratings,
        load_videos,
    )

    return (load_ratings(ratings), load_videos(videos) if videos else None,
            AnnotationConfig(**flags), load_rater_ids(raters) if raters else None)


def _data_mos(ratings, videos, settings, known, review: Path | None = None):
    """The checks and the MOS of `qsave data mos` (Sec. 3.3): (MosResult, MOS table, problems).
    `qsave data screen` runs the same on its input and on the screened ratings it writes."""
    from qsave.data.annotations import Problem, aggregate, read_table, with_video_columns
    from qsave.data.review import apply_review

    result = aggregate(ratings, videos, settings, known)
    mos, problems = result.mos, list(result.report.problems)
    if videos is None or videos["split"].isna().all():
        why = "no --videos" if videos is None else "the videos table has no split"
        problems.append(Problem("no_split", f"{why}: every video is held to "
                                f"{settings.min_raters(None)} raters, while a test video needs "
                                f"{settings.min_raters_test} (Sec. 3.3)", "videos",
                                severity="warning"))
    if review:
        mos, review_problems = apply_review(mos, read_table(review), settings)
        problems += review_problems
    return result, with_video_columns(mos, videos), problems


def _data_print_problems(problems: list, limit: int = 20, table: Path | None = None) -> None:
    """The first ``limit`` problems; the rest are counted and found in ``table`` if written."""
    from rich.markup import escape

    for problem in problems[:limit]:
        colour = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{colour}]{escape(str(problem))}[/{colour}]", soft_wrap=True)
    if len(problems) > limit:
        where = f"all of them in {table}" if table else "--problems FILE writes all of them"
        console.print(f"… and {len(problems) - limit} more ({where})", soft_wrap=True,
                      markup=False)


def _data_check(problems: list, table: Path | None, outputs: list[Path],
                hint: str | None = None) -> None:
    """Print the problems (every one to ``table`` when given); when any is an error, exit 1
    with none of ``outputs`` written."""
    from qsave.data.annotations import CheckReport, staged, write_table

    if table:
        with staged() as stage:
            write_table(CheckReport(problems).to_frame(), stage.file(table))
    _data_print_problems(problems, table=table)
    n_errors = sum(p.severity == "error" for p in problems)
    n_warnings = len(problems) - n_errors
    if n_errors:
        if hint:
            console.print(f"[red]{hint}[/red]", soft_wrap=True)
        console.print(f"[red]{n_errors} error(s), {n_warnings} warning(s): nothing written to "
                      f"{', '.join(map(str, outputs))}[/red]", soft_wrap=True)
        raise typer.Exit(1)
    if n_warnings:
        console.print(f"[yellow]{n_warnings} warning(s)[/yellow]")


@data_app.command("mos")
def data_mos(
    ratings: _RatingsOpt,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="MOS table to write (.csv, .parquet or .jsonl).")],
    videos: _VideosOpt = None,
    scale_low: _ScaleLow = None,
    scale_high: _ScaleHigh = None,
    integer_scores: _IntegerScores = None,
    min_raters_train: _MinTrain = None,
    min_raters_test: _MinTest = None,
    min_raters_rl: _MinRl = None,
    raters: _KnownRaters = None,
    review: Annotated[Path | None, typer.Option(help="A filled review.csv of `qsave data "
                                                "report`: its adjusted_score replaces the MOS "
                                                "(App. C.1 expert review).")] = None,
    problems: _ProblemsOpt = None,
) -> None:
    """Ratings → MOS per video and dimension, with a report of every problem (Sec. 3.3)."""
    from qsave.data.annotations import staged, write_table

    flags = _given(scale_low=scale_low, scale_high=scale_high, integer_scores=integer_scores,
                   min_raters_train=min_raters_train, min_raters_test=min_raters_test,
                   min_raters_rl=min_raters_rl)
    result, mos, found = _data_mos(*_data_inputs(ratings, videos, flags, raters), review)
    _data_check(found, problems, [out])
    with staged() as stage:
        write_table(mos, stage.file(out))
    console.print(f"wrote {out} ({len(mos)} MOS from {len(result.usable)} ratings)")
    if review:
        console.print(f"{int(mos['reviewed'].sum())} MOS adjusted by the expert review {review}")


_DropK = Annotated[int | None, typer.Option(
    help="Drop the k least accurate raters (default: ScreenConfig's, the paper's App. C.1 "
         "count with --truth, none against the leave-one-out MOS; the output says which).")]


def _data_truth(truth: Path | None):
    from qsave.data.annotations import read_table, truth_table

    return truth_table(read_table(truth)) if truth else None


@data_app.command("screen")
def data_screen(
    ratings: _RatingsOpt,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Ratings without the dropped raters.")],
    truth: Annotated[Path | None, typer.Option(help="Expert ground truth of the calibration "
                                               "subset (video_id, dimension, mos) or a "
                                               "manifest; default: leave-one-out MOS.")] = None,
    rater_report: Annotated[Path | None, typer.Option(help="Per-rater report to write "
                                                      "(default: <out>.raters.csv).")] = None,
    mos: Annotated[Path | None, typer.Option(help="Also write the MOS of the screened ratings, "
                                             "as `qsave data mos` computes it.")] = None,
    drop_k: _DropK = None,
    min_srcc: Annotated[float | None, typer.Option(help="Drop raters under this SRCC.")] = None,
    max_mae: Annotated[float | None, typer.Option(help="Drop raters over this MAE.")] = None,
    rank_by: Annotated[str | None, typer.Option(help="Primary key: srcc or mae.")] = None,
    min_items: Annotated[int | None, typer.Option(help="Fewest calibration ratings to rank a "
                                                  "rater.")] = None,
    videos: _VideosOpt = None,
    scale_low: _ScaleLow = None,
    scale_high: _ScaleHigh = None,
    integer_scores: _IntegerScores = None,
    min_raters_train: _MinTrain = None,
    min_raters_test: _MinTest = None,
    min_raters_rl: _MinRl = None,
    raters: _KnownRaters = None,
    problems: _ProblemsOpt = None,
) -> None:
    """Sample and Scrutinize (App. C.1): rank raters by SRCC/MAE, drop the least accurate.

    The ratings and the screened ratings are checked as `qsave data mos` checks them; refuses
    (exit 1, nothing written) on an error in either, e.g. when the drop would leave a video
    under its split's minimum number of raters (Sec. 3.3: 3 train, 12 test).
    """
    from qsave.data.annotations import ROW, ScreenConfig, screen_raters, staged, write_table

    config = ScreenConfig(**_given(drop_k=drop_k, min_srcc=min_srcc, max_mae=max_mae,
                                   rank_by=rank_by, min_items=min_items))
    flags = _given(scale_low=scale_low, scale_high=scale_high, integer_scores=integer_scores,
                   min_raters_train=min_raters_train, min_raters_test=min_raters_test,
                   min_raters_rl=min_raters_rl)
    table, table_videos, settings, known = _data_inputs(ratings, videos, flags, raters)
    rater_report = rater_report or out.with_suffix(".raters.csv")
    outputs = [out, rater_report, *([mos] if mos else [])]
    result, _, found = _data_mos(table, table_videos, settings, known)
    if not result.report.ok:
        _data_check(found, problems, outputs, "the ratings have errors that `qsave data mos` "
                    "refuses; screening needs a valid ratings table")
    screening = screen_raters(result.usable, _data_truth(truth), config, table_videos, settings)
    console.print(screening.raters.to_string(index=False), soft_wrap=True, markup=False)
    console.print(screening.summary(), soft_wrap=True, markup=False)
    if drop_k is None and truth is None and min_srcc is None and max_mae is None:
        console.print(f"[yellow]nobody is dropped by default without --truth: App. C.1 drops "
                      f"the {config.drop_k_expert} least accurate raters against an expert "
                      "ground truth and gives no rule without one. --truth FILE applies it; "
                      "--drop-k N, --min-srcc or --max-mae drop raters against the others' "
                      "leave-one-out MOS (ranked above).[/yellow]", soft_wrap=True)
    if not screening.ok:
        short = sum(p.severity == "error" for p in screening.problems)
        _data_check(screening.problems, problems, outputs,
                    f"screening refused, nothing written: {short} video(s) would fall under "
                    "their minimum number of raters. Lower --drop-k (0 keeps every rater), "
                    "lower the --min-raters-* minimums, or collect more ratings.")
    kept = screening.apply(table).drop(columns=[ROW])  # numbered again, as the file will be
    _, recomputed, kept_problems = _data_mos(kept, table_videos, settings, known)
    console.print(f"the screened ratings, checked as `qsave data mos` checks them: "
                  f"{len(kept_problems)} problem(s)", soft_wrap=True, markup=False)
    _data_check([*screening.problems, *kept_problems], problems, outputs)
    with staged() as stage:
        write_table(kept, stage.file(out))
        write_table(screening.raters, stage.file(rater_report))
        if mos:
            write_table(recomputed, stage.file(mos))
    console.print(f"wrote {out} ({len(kept)} ratings, {len(screening.dropped)} rater(s) "
                  f"dropped) and {rater_report}"
                  + (f"; {mos} ({len(recomputed)} MOS)" if mos else ""),
                  soft_wrap=True, markup=False)


@data_app.command("split")
def data_split(
    videos: Annotated[Path, typer.Option(help="Videos table or manifest.jsonl.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Videos table with the split, split_reason and previous_split "
                            "columns (and n_raters when counted).")],
    ratings: Annotated[Path | None, typer.Option(
        help="Ratings table: each video's raters are counted against its split's minimum "
             "(Sec. 3.3: 12 per test video). Without it, a videos table's n_raters column.")]
    = None,
    resplit: Annotated[bool, typer.Option(
        help="Draw the split of videos that already have one again (moved videos are "
             "reported). Without it an existing split is kept.")] = False,
    allow_few_raters: Annotated[bool, typer.Option(
        help="Warn, instead of refusing, when a video has fewer raters than its split needs "
             "(e.g. a test video under 12).")] = False,
    test_fraction: Annotated[float | None, typer.Option(help="Share of test videos.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the split is a function of it.")] = None,
    rl_generator: Annotated[list[str] | None, typer.Option(help="A generator reserved for "
                                                           "the RL set (repeatable).")] = None,
    rl_prompt_fraction: Annotated[float | None, typer.Option(help="Share of the RL "
                                                             "generators' prompts used.")] = None,
    keep_rl: Annotated[bool | None, typer.Option(help="With --resplit: keep videos already in "
                                                 "split rl.")] = None,
    min_raters_train: _MinTrain = None,
    min_raters_test: _MinTest = None,
    min_raters_rl: _MinRl = None,
    problems: _ProblemsOpt = None,
) -> None:
    """80:20 split grouped by prompt, stratified by generator; the disjoint RL set (App. C.1).

    An existing split is kept (videos without one are assigned) unless --resplit; a video
    with fewer raters than its split needs is refused unless --allow-few-raters.
    """
    import pandas as pd

    from qsave.data.annotations import (
        AnnotationConfig,
        Problem,
        aggregate,
        load_ratings,
        load_videos,
        raters_per_video,
        staged,
        write_table,
    )
    from qsave.data.splits import SplitConfig, assign_splits, rater_problems

    config = SplitConfig(**_given(test_fraction=test_fraction, seed=seed, keep_rl=keep_rl,
                                  rl_prompt_fraction=rl_prompt_fraction, resplit=resplit,
                                  rl_generators=tuple(rl_generator) if rl_generator else None))
    settings = AnnotationConfig(**_given(min_raters_train=min_raters_train,
                                         min_raters_test=min_raters_test,
                                         min_raters_rl=min_raters_rl))
    table = load_videos(videos)
    result = assign_splits(table, config)
    found = list(result.problems)
    if ratings:
        counts = raters_per_video(aggregate(load_ratings(ratings), None, settings).usable)
    elif "n_raters" in table.columns:
        counts = pd.Series(pd.to_numeric(table["n_raters"]).fillna(0).to_numpy(),
                           index=table["video_id"])
    else:
        counts = None
        found.append(Problem("raters_not_checked", "rater counts not checked: pass --ratings "
                             f"(a test video needs {settings.min_raters_test} raters, Sec. 3.3)",
                             "videos", severity="warning"))
    if counts is not None:
        found += rater_problems(result.assignments, counts, settings,
                                "warning" if allow_few_raters else "error")
    console.print(result.summary().to_string(), soft_wrap=True, markup=False)
    moved = result.moved()
    if len(moved):
        ways = moved.groupby(["previous_split", "split"]).size()
        console.print(f"[yellow]{len(moved)} video(s) moved to another split ("
                      + ", ".join(f"{a} → {b}: {n}" for (a, b), n in ways.items())
                      + "); the previous_split column keeps their split before[/yellow]",
                      soft_wrap=True)
    else:
        console.print(f"no video moved ({int((result.assignments['reason'] == 'kept').sum())} "
                      "kept their split)", soft_wrap=True, markup=False)
    kinds = {p.kind for p in found if p.severity == "error"}
    hints = ["--allow-few-raters keeps a video short of raters, with a warning"
             ] if "too_few_raters" in kinds else []
    hints += ["--resplit draws every split again"] if kinds and not resplit else []
    _data_check(found, problems, [out], "; ".join(hints) or None)
    frame = result.assignments.set_index("video_id")
    split_table = result.apply(table).assign(
        split_reason=table["video_id"].map(frame["reason"]),
        previous_split=table["video_id"].map(frame["previous_split"]))
    if counts is not None:
        split_table["n_raters"] = table["video_id"].map(counts).fillna(0).astype(int)
    with staged() as stage:
        write_table(split_table, stage.file(out))
    console.print(f"wrote {out}")


@data_app.command("records")
def data_records(
    videos: Annotated[Path, typer.Option(help="Videos table or manifest.jsonl.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Training records to write (JSONL).")],
    ratings: Annotated[Path | None, typer.Option(help="Ratings table; without it the videos "
                                                 "table's mos_<dimension> columns.")] = None,
    split: Annotated[list[str] | None, typer.Option(help="Only this split (repeatable).")] = None,
    answer_format: Annotated[str | None, typer.Option(help="think-first or rating-first.")] = None,
    describer: Annotated[str | None, typer.Option(help="Writes rationales from reasons and "
                                                  "clip attributes: template or lmm.")] = None,
    describer_model: Annotated[str | None, typer.Option(help="Checkpoint the lmm describer "
                                                        "writes with (hub id, folder, tiny).")
                               ] = None,
    system: Annotated[str | None, typer.Option(help="Optional system message.")] = None,
    absolute_paths: Annotated[bool, typer.Option(help="Store absolute video paths.")] = False,
    scale_low: _ScaleLow = None,
    scale_high: _ScaleHigh = None,
    min_raters_train: _MinTrain = None,
    min_raters_test: _MinTest = None,
    min_raters_rl: _MinRl = None,
    raters: _KnownRaters = None,
    problems: _ProblemsOpt = None,
) -> None:
    """One record per video and dimension in the CoT format of Sec. 3.4 (JSONL)."""
    from qsave.data.annotations import collect_reasons, load_videos, mos_from_videos, staged
    from qsave.data.describe import make_describer
    from qsave.data.records import RecordConfig, build_records, write_records

    config = RecordConfig(**_given(answer_format=answer_format, system=system,
                                   describer=describer,
                                   splits=tuple(split) if split else None))
    found: list = []
    if ratings:
        flags = _given(scale_low=scale_low, scale_high=scale_high,
                       min_raters_train=min_raters_train, min_raters_test=min_raters_test,
                       min_raters_rl=min_raters_rl)
        table_ratings, table, settings, known = _data_inputs(ratings, videos, flags, raters)
        result, mos, found = _data_mos(table_ratings, table, settings, known)
        reasons = collect_reasons(result.usable)
        if not result.report.ok:  # before a describer model loads
            _data_check(found, problems, [out])
    else:
        table = load_videos(videos)
        mos, reasons = mos_from_videos(table), {}
    loaded = None
    if describer_model:
        from qsave.model.load import load

        loaded = load(ScorerSpec(model=describer_model))
    built = build_records(table, mos, config, reasons, make_describer(config.describer, loaded))
    _data_check(found + built.problems, problems, [out])
    with staged() as stage:
        write_records(built.records, stage.file(out), relative_paths=not absolute_paths)
    console.print(f"wrote {len(built.records)} records to {out}")


@data_app.command("export-verl")
def data_export_verl(
    records: Annotated[Path, typer.Option(help="RL-set records (JSONL of `qsave data records`).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for train.parquet, qsave_reward.py, verl_overrides.txt.")],
    val_records: Annotated[Path | None, typer.Option(
        help="Validation records (JSONL); without them verl never validates.")] = None,
    model: _Model = None,
    revision: _Revision = None,
    video_mode: _VideoMode = None,
    video_config: _VideoConfig = None,
) -> None:
    """GRPO data for verl (Sec. 4.3) read with qsave's SlowFast frames and scoring prompt;
    --model: the checkpoint verl will train (its processor and saved video settings)."""
    import shutil

    from qsave.data.records import load_records

    rows = load_records(records).records  # checked before the model's settings are read
    val = load_records(val_records).records if val_records else ()
    from qsave.train.verl import export_verl, load_processor

    spec = _scorer_spec(model, None, revision, None, None, None, None, video_mode, video_config,
                        None)
    created = not out.exists()  # export_verl writes only once every row is prepared; a
    try:  # folder it made for a run that fails is removed
        done = export_verl(rows, out, load_processor(spec.model, spec.revision), spec.video, val)
    except BaseException:
        if created and out.is_dir():
            shutil.rmtree(out)
        raise
    console.print(f"wrote {done.rows} rows to {done.data} (longest prompt "
                  f"{done.max_prompt_tokens} tokens, at most {done.max_videos} video items)",
                  soft_wrap=True, markup=False)
    console.print(f"pass the overrides in {done.overrides} to verl (docs/verl.md)",
                  soft_wrap=True, markup=False)


@data_app.command("report")
def data_report(
    ratings: _RatingsOpt,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder for index.html, plots and tables.")],
    videos: _VideosOpt = None,
    truth: Annotated[Path | None, typer.Option(help="Expert ground truth: per-rater agreement "
                                               "against it instead of leave-one-out, and "
                                               "the screening it implies.")] = None,
    drop_k: _DropK = None,
    scale_low: _ScaleLow = None,
    scale_high: _ScaleHigh = None,
    min_raters_train: _MinTrain = None,
    min_raters_test: _MinTest = None,
    min_raters_rl: _MinRl = None,
    raters: _KnownRaters = None,
) -> None:
    """Dataset report: MOS distributions (Fig. 6, 7), rater variance (Fig. 9), agreement,
    screening and the perfect-score review queue (App. C.1, review.csv).

    The problems of the ratings are what it reports: they are listed (problems.csv) and the
    command still exits 0; it exits 1, writing nothing, only when it cannot make the report.
    """
    from qsave.data.annotations import ScreenConfig, aggregate, screen_raters, staged
    from qsave.data.report import write_report

    flags = _given(scale_low=scale_low, scale_high=scale_high,
                   min_raters_train=min_raters_train, min_raters_test=min_raters_test,
                   min_raters_rl=min_raters_rl)
    table_ratings, table, settings, known = _data_inputs(ratings, videos, flags, raters)
    result = aggregate(table_ratings, table, settings, known)
    screening = screen_raters(result.usable, _data_truth(truth),
                              ScreenConfig(**_given(drop_k=drop_k)), table,
                              settings) if truth or drop_k is not None else None
    with staged() as stage:
        files = write_report(stage.folder(out), result, table, screening, annotation=settings)
    found = result.report.problems
    console.print(f"wrote {out / files.html.name} ({len(found)} problem(s) listed)")
    _data_print_problems(found, table=out / files.tables["problems"].name)
    n_errors = len(result.report.errors)
    if n_errors:
        console.print(f"[yellow]{n_errors} error(s) in the ratings, listed in "
                      f"{out / files.tables['problems'].name}: `qsave data mos` refuses this "
                      "table until they are fixed[/yellow]", soft_wrap=True)
    if screening:
        console.print(f"screening: {screening.summary()}", soft_wrap=True, markup=False)
        if not screening.ok:
            short = sum(p.severity == "error" for p in screening.problems)
            console.print(f"[yellow]this drop would leave {short} video(s) under their minimum "
                          "number of raters (listed in the report); `qsave data screen` "
                          "refuses it[/yellow]", soft_wrap=True)
    short = int((files.review["raters_to_add"] > 0).sum())
    console.print(f"{len(files.review)} perfect-score video/dimension pair(s) queued for expert "
                  f"review (App. C.1; {short} with fewer raters than it asks): "
                  f"{out / files.tables['review'].name}", soft_wrap=True, markup=False)


# --- score ---------------------------------------------------------------------------------
# The model flags of `qsave score` and `qsave serve`: each defaults to None, meaning "the
# checkpoint's saved setting (qsave_scorer.json), else ScorerSpec's default"; the defaults shown
# in --help are read from ScorerSpec, never restated.
_SPEC = ScorerSpec()
_Model = Annotated[str | None, typer.Option(
    help=f"Hub id, checkpoint directory, 'tiny' (random weights, for tests) or 'tiny-demo' "
         f"(the shipped model trained on the demo corpus) (default: {_SPEC.model}).")]
_Backend = Annotated[str | None, typer.Option(
    help=f"transformers, or vllm where installed (default: {_SPEC.backend}).")]
_Revision = Annotated[str | None, typer.Option(help="Hub revision of --model.")]
_Adapter = Annotated[str | None, typer.Option(help="LoRA adapter on --model.")]
_Device = Annotated[str | None, typer.Option(help="cuda, cpu, … (default: cuda if any, "
                                             "else cpu).")]
_Dtype = Annotated[str | None, typer.Option(help="bfloat16, float32 … (default: bfloat16 on "
                                            "cuda, float32 on cpu).")]
_AnswerFormat = Annotated[str | None, typer.Option(
    help=f"rating-first or think-first (default: the checkpoint's, else "
         f"{_SPEC.answer_format.value}).")]
_VideoMode = Annotated[str | None, typer.Option(
    help=f"Frames: {', '.join(MODES)} (default: the checkpoint's, else {_SPEC.video.mode}).")]
_VideoConfig = Annotated[Path | None, typer.Option(
    help="YAML/JSON of VideoConfig fields, merged over the checkpoint's video settings.")]
_MaxNewTokens = Annotated[int | None, typer.Option(
    help=f"Rationale length limit with --explain or --think-first-reading generate (default: "
         f"the checkpoint's, else {_SPEC.max_new_tokens}).")]
_ThinkFirstReading = Annotated[str | None, typer.Option(
    help=f"Think-first checkpoints without --explain: read the rating after a generated "
         f"analysis (generate) or after an empty <think></think> (empty-think) (default: "
         f"{_SPEC.think_first_reading.value}).")]
_Limits = Annotated[Path | None, typer.Option(
    help="YAML/JSON of InputLimits fields: max_prompt_chars (default "
         f"{_SPEC.limits.max_prompt_chars}), max_prompt_tokens ({_SPEC.limits.max_prompt_tokens})"
         f", video: max_pixels ({_SPEC.limits.video.max_pixels}), max_decoded_frames "
         f"({_SPEC.limits.video.max_decoded_frames}), max_duration_s "
         f"({_SPEC.limits.video.max_duration_s}). An input over a limit is that item's error.")]


def _scorer_spec(model, backend, revision, adapter, device, dtype, answer_format, video_mode,
                 video_config, max_new_tokens, limits=None, think_first_reading=None):
    """The ScorerSpec of the model flags over the checkpoint's saved settings (printed)."""
    from qsave.spec import resolve_spec

    video = _load_mapping(video_config, "video config") if video_config else {}
    if video_mode is not None:
        video["mode"] = video_mode
    spec, source = resolve_spec(model, backend=backend, revision=revision, adapter=adapter,
                                device=device, dtype=dtype, answer_format=answer_format,
                                video=video or None, max_new_tokens=max_new_tokens,
                                limits=_load_mapping(limits, "limits") if limits else None,
                                think_first_reading=think_first_reading)
    if source is not None:
        console.print(f"scorer settings of the checkpoint: {source} (answer format "
                      f"{spec.answer_format.value}, {spec.video.mode} frames)")
    return spec


def _load_mapping(path: Path, what: str) -> dict:
    """A YAML or JSON file holding one mapping."""
    import yaml

    from qsave.errors import ConfigError

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the {what} {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"the {what} {path} must hold a mapping of fields, got {values!r}")
    return values


@app.command("score")
def score_command(
    source: Annotated[Path, typer.Argument(help="A video, a directory of videos, or a manifest.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Results JSONL (appended, resumable; "
                                     "refused if it holds anything else); - for stdout.")],
    prompt: Annotated[str | None, typer.Option(help="Generation prompt for every video.")] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="Prompts per video: JSONL (id|path, prompt) or JSON map.")
    ] = None,
    split: Annotated[str | None, typer.Option(
        help="Manifests: score only the lines of this split (their 'split' field, e.g. test).")]
    = None,
    dimensions: Annotated[str | None, typer.Option(
        help="Comma-separated: visual,dynamic,alignment (default all). Alignment needs each "
             "video's prompt: a video without one gets a PromptError row.")] = None,
    explain: Annotated[bool, typer.Option(help="Also generate a rationale (greedy).")] = False,
    batch_size: Annotated[int, typer.Option(help="Videos per forward pass.")] = 8,
    csv: Annotated[Path | None, typer.Option(help="Also write a CSV of this run's rows.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
    = False,
    model: _Model = None,
    backend: _Backend = None,
    revision: _Revision = None,
    adapter: _Adapter = None,
    device: _Device = None,
    dtype: _Dtype = None,
    answer_format: _AnswerFormat = None,
    video_mode: _VideoMode = None,
    video_config: _VideoConfig = None,
    max_new_tokens: _MaxNewTokens = None,
    think_first_reading: _ThinkFirstReading = None,
    limits: _Limits = None,
    ray: Annotated[bool, typer.Option(help="Score on Ray Data (actors holding models).")] = False,
    ray_actors: _RayActors = None,
    ray_gpus: _RayGpus = None,
    ray_address: _RayAddress = None,
) -> None:
    """Score videos on visual quality, dynamic quality and text-video alignment (JSONL rows)."""
    import time

    from qsave.hub import check_model
    from qsave.results import check_output
    from qsave.scores import write_csv
    from qsave.sources import scan
    from qsave.spec import TINY, TINY_DEMO, parse_dimensions

    started = time.perf_counter()  # every input is checked before any model loads
    if batch_size < 1:
        raise UsageError(f"--batch-size ({batch_size}) must be at least 1")
    try:
        dims = parse_dimensions(dimensions.split(",")) if dimensions else None
    except ConfigError as error:
        raise UsageError(f"--dimensions: {error}") from None
    to_stdout = out == "-"
    if to_stdout and (ray or csv):
        raise UsageError("-o - (rows on stdout) does not resume: use a file with --ray or --csv")
    if not to_stdout:
        check_output(out)
    sources = scan(source, prompt, prompts, split)
    spec = _scorer_spec(model, backend, revision, adapter, device, dtype, answer_format,
                        video_mode, video_config, max_new_tokens, limits, think_first_reading)
    check_model(spec.model, (TINY, TINY_DEMO), spec.revision)
    if ray:
        run = _score_on_ray(sources.items, Path(out), spec, dims, explain, batch_size,
                            _given(actors=ray_actors, gpus_per_actor=ray_gpus,
                                   address=ray_address))
    else:
        run = _score_here(sources.items, out, spec, dims, explain, batch_size, quiet)
    if csv is not None:
        write_csv(run.results, csv)
    _report_run(run, out, sources.skipped, time.perf_counter() - started, quiet)
    if run.failed:
        raise SystemExit(1)


def _report_run(run, out: str, skipped: list[Path], seconds: float, quiet: bool) -> None:
    """The run's table (this run's rows), repairs, a summary line; failures on stderr."""
    from rich.markup import escape

    for result in run.failed:
        errors.print(f"[red]failed:[/red] {escape(result.path or result.id)}: "
                     f"{escape(str(result.error))}")
    if quiet:
        return
    printed = errors if out == "-" else _table_console()
    if run.results:
        printed.print(_results_table(run.results))
    for repair in run.repairs:
        printed.print(f"[yellow]repaired:[/yellow] {escape(repair)}")
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:5]) + (" …" if len(skipped) > 5 else "")
        printed.print(f"skipped {len(skipped)} file(s) that are not videos: {escape(shown)}")
    where = "stdout" if out == "-" else out
    rate = f", {run.written / seconds:.2f} videos/s" if run.written else ""
    printed.print(f"{run.written - len(run.failed)} scored, {len(run.failed)} failed, "
                  f"{run.skipped} already in {escape(where)}; {seconds:.1f} s{rate}")


ROWS_SHOWN = 40  # rows of the results table on the terminal; the file has them all


def _results_table(results) -> Any:
    """MOS (rating word) per dimension per video; "?" marks a low-confidence score."""
    from rich.table import Table

    from qsave.scores import LOW_CONFIDENCE_NATS

    dims = list(dict.fromkeys(d for r in results for d in r.scores))
    table = Table(title=f"MOS 1–5 (most likely rating); ? = entropy > {LOW_CONFIDENCE_NATS} "
                        "nats", title_justify="left")
    table.add_column("video")
    for dimension in dims:
        table.add_column(dimension.value, justify="right")
    for result in results[:ROWS_SHOWN]:
        if result.error is not None:
            table.add_row(result.id, *[f"[red]{result.error.type}[/red]"] * len(dims))
            continue
        cells = []
        for dimension in dims:
            score = result.scores.get(dimension)
            mark = "?" if score is not None and score.entropy > LOW_CONFIDENCE_NATS else ""
            cells.append(f"{score.mos:.2f} ({score.rating}){mark}" if score else "–")
        table.add_row(result.id, *cells)
    if len(results) > ROWS_SHOWN:
        table.caption = f"… and {len(results) - ROWS_SHOWN} more rows in the output"
    return table


_PIPE_WIDTH = 1 << 16  # console width when stdout is not a terminal: no table cell is cut


def _table_console() -> Console:
    """The console for tables: the terminal's, or one that never cuts a cell when piped."""
    return console if console.is_terminal else Console(width=_PIPE_WIDTH)


def _score_here(items, out: str, spec, dims, explain, batch_size, quiet):
    """``qsave score`` in this process, with a progress bar of the inputs left to score;
    ``out`` ``-`` writes the rows to stdout instead of a file (no resume)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from qsave.evaluator import Evaluator, PlannedBackend
    from qsave.model.load import TINY_RANDOM_ID, expected_info
    from qsave.results import score_to_jsonl

    def load() -> Evaluator:
        evaluator = Evaluator.from_spec(spec)
        if evaluator.info.id == TINY_RANDOM_ID and not quiet:
            errors.print("[yellow]note:[/yellow] the tiny model is untrained: its scores mean "
                         "nothing (--model tiny-demo is the trained one)")
        return evaluator

    info = expected_info(spec)  # known without loading: the output is checked first
    planned = Evaluator(PlannedBackend(spec, info)) if info is not None and out != "-" else None
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    saved = [0]
    with Progress(*columns, console=errors, transient=True, disable=quiet) as progress:
        task = progress.add_task("scoring", total=None)

        def advance(result) -> None:
            saved[0] += 1
            progress.advance(task)

        try:
            if out == "-":
                return _score_to_stdout(load(), items, dims, explain, batch_size, advance,
                                        lambda n: progress.update(task, total=n))
            return score_to_jsonl(planned or load(), items, out, dimensions=dims,
                                  explain=explain, batch_size=batch_size, on_result=advance,
                                  on_start=lambda n: progress.update(task, total=n),
                                  load=load if planned else None)
        except KeyboardInterrupt:
            progress.stop()
            if out == "-":
                errors.print(f"interrupted: {saved[0]} row(s) printed")
            else:  # the file's own count: Ctrl-C can land after a row's write, before advance
                rows = Path(out).read_bytes().count(b"\n") if Path(out).is_file() else 0
                errors.print(f"interrupted: {rows} row(s) saved in {out}; run again to resume")
            raise SystemExit(130) from None


def _score_to_stdout(evaluator, items, dims, explain, batch_size, on_result, on_start):
    """Rows as JSON lines on stdout, in input order (nothing resumed, nothing written)."""
    from qsave.jsonl import dumps
    from qsave.results import FileRun, hash_items

    hash_items(items)
    on_start(len(items))
    results = []
    for result in evaluator.score_many(items, dimensions=dims, explain=explain,
                                       batch_size=batch_size, on_result=on_result):
        print(dumps(result.to_record()), flush=True)
        results.append(result)
    return FileRun(results, written=len(results), skipped=0)


def _score_on_ray(items, out, spec, dims, explain, batch_size, ray_flags):
    """``qsave score --ray``: the same rows, scored by a pool of Ray actors."""
    from qsave.serve.distributed import RayConfig, score_with_ray

    config = RayConfig(batch_size=batch_size, **ray_flags)
    console.print(f"scoring {len(items)} video(s) with the {spec.backend} backend on Ray "
                  f"({config.actors} actor(s))")
    return score_with_ray(items, out, spec, dimensions=dims, explain=explain, config=config)


# --- prompt-shuffle ------------------------------------------------------------------------
# The prompt-sensitivity self-test (qsave.eval.prompt_shuffle): the inputs and model flags of
# `qsave score`; its thresholds mirror PromptShuffleConfig, whose defaults --help shows.
_SHUFFLE = PromptShuffleConfig()


@app.command("prompt-shuffle")
def prompt_shuffle_command(
    source: Annotated[Path, typer.Argument(
        help="A video, a directory of videos, or a manifest; each video needs its prompt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help=(
        "Per-video rows (id, prompt, shuffled prompt, own and shuffled r̂ per dimension): "
        "JSON lines, or a JSON array for a .json path; replaced."))],
    prompt: Annotated[str | None, typer.Option(help="Generation prompt for every video "
                                               "without one.")] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="Prompts per video: JSONL (id|path, prompt) or JSON map.")
    ] = None,
    split: Annotated[str | None, typer.Option(
        help="Manifests: only the lines of this split (their 'split' field, e.g. test).")]
    = None,
    seed: Annotated[int | None, typer.Option(
        help=f"Seed of the derangement of the distinct prompts (default {_SHUFFLE.seed}).")]
    = None,
    min_drop_fraction: Annotated[float | None, typer.Option(
        help=f"Alignment r̂ must drop on more than this share of the videos (default "
             f"{_SHUFFLE.min_drop_fraction}).")] = None,
    min_mean_drop: Annotated[float | None, typer.Option(
        help=f"Alignment r̂'s mean drop must exceed this (default {_SHUFFLE.min_mean_drop}).")]
    = None,
    max_quality_change: Annotated[float | None, typer.Option(
        help=f"Visual and dynamic mean |Δr̂| must each stay under this (default "
             f"{_SHUFFLE.max_quality_change}).")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary as JSON.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Videos per forward pass.")] = 8,
    model: _Model = None,
    backend: _Backend = None,
    revision: _Revision = None,
    adapter: _Adapter = None,
    device: _Device = None,
    dtype: _Dtype = None,
    answer_format: _AnswerFormat = None,
    video_mode: _VideoMode = None,
    video_config: _VideoConfig = None,
    max_new_tokens: _MaxNewTokens = None,
    think_first_reading: _ThinkFirstReading = None,
    limits: _Limits = None,
) -> None:
    """Prompt-sensitivity self-test: score each video with its own prompt and with another
    video's; alignment must drop, visual and dynamic quality must not move (exit 1 if not)."""
    import json

    from rich.progress import Progress

    from qsave.eval.prompt_shuffle import (
        derange_prompts,
        run_prompt_shuffle,
        score_tables,
        summarize,
        summary_table,
        write_rows,
    )
    from qsave.evaluator import Evaluator
    from qsave.hub import check_model
    from qsave.sources import scan
    from qsave.spec import TINY, TINY_DEMO

    if batch_size < 1:
        raise UsageError(f"--batch-size ({batch_size}) must be at least 1")
    try:
        config = PromptShuffleConfig(**_given(
            seed=seed, min_drop_fraction=min_drop_fraction, min_mean_drop=min_mean_drop,
            max_quality_change=max_quality_change))
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if out.resolve() in {p.resolve() for p in (source, prompts) if p is not None}:
        raise UsageError(f"--out {out} is an input of this run; name another file")
    items = scan(source, prompt, prompts, split).items
    shuffled = derange_prompts((item.prompt for item in items), config.seed)
    spec = _scorer_spec(model, backend, revision, adapter, device, dtype, answer_format,
                        video_mode, video_config, max_new_tokens, limits, think_first_reading)
    check_model(spec.model, (TINY, TINY_DEMO), spec.revision)
    evaluator = Evaluator.from_spec(spec)
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task("own and shuffled prompt",
                                 total=2 * sum(bool(item.prompt) for item in items))
        rows = run_prompt_shuffle(evaluator, items, shuffled, batch_size=batch_size,
                                  on_result=lambda _: progress.advance(task))
    write_rows(rows, out)
    failed = [row for row in rows if row.error is not None]
    for row in failed:
        errors.print(f"failed: {row.path or row.id}: {row.error}", markup=False)
    summary = summarize(*score_tables(rows), config)
    _table_console().print(summary_table(summary))
    console.print(f"wrote {out} ({len(rows)} rows, {len(failed)} failed)", soft_wrap=True,
                  markup=False)
    if json_out:
        report = {"model": evaluator.info.to_dict(), "failed": len(failed), **summary.to_json()}
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}", soft_wrap=True, markup=False)
    if failed or not summary.passed:
        raise SystemExit(1)


# --- video ---------------------------------------------------------------------------------
_VIDEO_JSON = Annotated[bool, typer.Option(
    "--json", help="One JSON line per file (video, info, plan[, frames][, sheet]) instead of "
    "tables.")]
_VIDEO_FRAMES = Annotated[bool, typer.Option(
    help="Also list every sampled frame: stream index, time, S/F, size, similarity.")]
_VIDEO_SHEET = Annotated[Path | None, typer.Option(
    help="Write a contact sheet PNG of the sampled frames, slow frames marked. With several "
    "files, or when PATH is a directory or has no suffix, one <stem>.png per file inside PATH "
    "(created).")]


@app.command("video")
def video_command(
    paths: Annotated[list[Path], typer.Argument(help="Video files to decode and plan.")],
    mode: Annotated[str | None, typer.Option(
        help=f"Frames: {', '.join(MODES)} (default: {_SPEC.video.mode}).")] = None,
    frames: _VIDEO_FRAMES = False,
    json_lines: _VIDEO_JSON = False,
    sheet: _VIDEO_SHEET = None,
) -> None:
    """Decode and plan each video with the default VideoConfig (SlowFast, Sec. 4.2.1): a table
    per file, or one JSON line with --json; exit code 1 when any file failed."""
    import json

    from rich.markup import escape

    from qsave.errors import VideoError
    from qsave.video import describe
    from qsave.video.inputs import VideoConfig, prepare_video

    config, failed = VideoConfig(**_given(mode=mode)), 0
    out = _table_console()
    for path, target in zip(paths, _sheet_targets(paths, sheet), strict=True):
        try:
            prepared = prepare_video(path, config)
        except VideoError as error:
            failed += 1
            if json_lines:
                print(json.dumps({"video": str(path), "error": str(error)}))
            else:
                out.print(f"[red]failed:[/red] {escape(str(path))}: {escape(str(error))}")
            continue
        written = describe.write_sheet(path, prepared, target) if target else None
        if json_lines:
            print(json.dumps(describe.video_row(path, prepared, frames, written)))
        else:
            describe.print_video(out, path, prepared, frames, written)
    if failed:
        raise SystemExit(1)


def _sheet_targets(paths: list[Path], sheet: Path | None) -> list[Path | None]:
    """Each file's contact sheet: ``sheet`` itself for one file, else ``sheet/<stem>.png``."""
    if sheet is None:
        return [None] * len(paths)
    if len(paths) == 1 and sheet.suffix and not sheet.is_dir():
        return [sheet]
    targets = [sheet / f"{path.stem}.png" for path in paths]
    clashes = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashes:
        raise typer.BadParameter(f"several files would write {clashes}; give them one at a "
                                 "time", param_hint="--sheet")
    return targets





# --- train ---------------------------------------------------------------------------------
@app.command("train")
def train_command(
    config: Annotated[Path, typer.Option(help="Training config YAML/JSON (see configs/; "
                                         "docs/train-your-own.md explains every key).")],
    stage: Annotated[
        str, typer.Option(help="sft, grpo, cooloff, or all (finished stages are skipped).")
    ] = "all",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key, KEY=VALUE with a dotted key and a YAML value, e.g. "
                      "--set sft.records=work/train.jsonl (paths relative to the working "
                      "directory; repeatable).")] = None,
    resume_only: Annotated[bool, typer.Option(
        help="Refuse, instead of running again, a stage whose config or inputs changed since "
             "it ran.")] = False,
) -> None:
    """Train an evaluator: SFT (CE + MSE) → GRPO → cool-off SFT, a checkpoint per stage.

    Every key is checked and every input file read before a model loads. The run folder keeps
    the resolved config (config.yaml), a log (train.log) and per stage a done.json with the
    fingerprint of its config and inputs: a stage whose config changed runs again, and so do
    the later ones."""
    from rich.markup import escape

    from qsave.train.config import load_train_config
    from qsave.train.pipeline import parse_stage, run_pipeline

    settings = load_train_config(config, set_ or [])
    stages = parse_stage(stage)

    def log(line: str) -> None:
        colour = "yellow" if line.startswith("warning:") else None
        shown = escape(line)
        console.print(f"[{colour}]{shown}[/{colour}]" if colour else shown, soft_wrap=True)

    finals = run_pipeline(settings, stages, log=log, resume_only=resume_only)
    for name, path in finals.items():
        console.print(f"{name}: {path}", soft_wrap=True, markup=False)


# --- serve ---------------------------------------------------------------------------------
_RayActors = Annotated[int | None, typer.Option(help="--ray: scoring actors (default 1).")]
_RayGpus = Annotated[float | None, typer.Option(help="--ray: GPUs per actor (default 0).")]
_RayAddress = Annotated[str | None, typer.Option(help="--ray: cluster address (default: a local "
                                                 "cluster).")]


@app.command("serve")
def serve_command(
    model: _Model = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="File holding the bearer token for /score and /reward (or set QSAVE_SERVE_TOKEN; "
             "never on the command line, where ps shows it).")] = None,
    allowed_root: Annotated[Path | None, typer.Option(help="Directory whose files may be "
                                                      "scored by path.")] = None,
    max_video_mb: Annotated[float | None, typer.Option(
        help="One video at most, uploaded or in base64 (MiB).")] = None,
    max_request_mb: Annotated[float | None, typer.Option(help="A request body at most (MiB).")]
    = None,
    max_items: Annotated[int | None, typer.Option(help="Videos per /reward request.")] = None,
    request_timeout_s: Annotated[float | None, typer.Option(help="Upload and scoring time "
                                                            "limit (s).")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Videos per forward pass.")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Micro-batching window (ms).")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Videos in flight before 503.")] = None,
    max_decodes: Annotated[int | None, typer.Option(help="Videos decoded at once.")] = None,
    weights: Annotated[str | None, typer.Option(help='Reward weights, JSON: {"visual": 1, …}.')]
    = None,
    error_reward: Annotated[float | None, typer.Option(help="Reward of an unscorable video.")]
    = None,
    allow_unauthenticated: Annotated[bool | None, typer.Option(
        help="Serve without a token on a non-loopback address.")] = None,
    backend: _Backend = None,
    revision: _Revision = None,
    adapter: _Adapter = None,
    device: _Device = None,
    dtype: _Dtype = None,
    answer_format: _AnswerFormat = None,
    video_mode: _VideoMode = None,
    video_config: _VideoConfig = None,
    max_new_tokens: _MaxNewTokens = None,
    think_first_reading: _ThinkFirstReading = None,
    limits: _Limits = None,
) -> None:
    """Serve the evaluator over HTTP: /score, /reward (one reward per video), /health, /metrics."""
    import json

    from qsave.serve.server import ServeConfig, serve

    parsed = json.loads(weights) if weights else None
    scorer = _scorer_spec(model, backend, revision, adapter, device, dtype, answer_format,
                          video_mode, video_config, max_new_tokens, limits,
                          think_first_reading)
    config = ServeConfig(scorer=scorer, **_given(
        host=host, port=port, token=_serve_token(token_file), max_decodes=max_decodes,
        allowed_root=str(allowed_root) if allowed_root else None, max_video_mb=max_video_mb,
        max_request_mb=max_request_mb, max_items=max_items, request_timeout_s=request_timeout_s,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
        weights=parsed, error_reward=error_reward, allow_unauthenticated=allow_unauthenticated))
    console.print(f"serving {config.scorer.model} on http://{config.host}:{config.port} "
                  f"(auth: {'bearer token' if config.token else 'none'})")
    serve(config)


def _serve_token(token_file: Path | None) -> str | None:
    """The bearer token: the file's first line, else $QSAVE_SERVE_TOKEN, else None."""
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"cannot read --token-file {token_file}: {error}") from error
        if not lines or not lines[0].strip():
            raise ConfigError(f"--token-file {token_file} holds no token on its first line")
        return lines[0].strip()
    return os.environ.get("QSAVE_SERVE_TOKEN") or None


# --- demo ----------------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Working directory for the demo.")] = Path("qsave-demo"),
    train: Annotated[bool, typer.Option(
        help="Retrain the tiny model with the demo recipe first (CPU, ~10 min), save it to "
             "$QSAVE_CACHE/tiny-demo and compare it with the shipped one.")] = False,
    step_scale: Annotated[float, typer.Option(
        help="With --train: multiply every stage's step count (1.0: the recipe). Not a time "
             "budget: data and scoring do not shrink.", min=0.001)] = 1.0,
    ablation: Annotated[bool, typer.Option(
        help="With --train: also train stage 1 w/o SlowFast at the same tokens (Table 4).")]
    = False,
    json_: Annotated[bool, typer.Option("--json", help=(
        "Print only the held-out figures as one JSON object on stdout (per dimension: srcc, "
        "plcc, n); everything else goes to stderr."))] = False,
) -> None:
    """Score the demo corpus's held-out clips with the shipped tiny-demo model (or retrain it)
    and print predicted MOS / truth and the held-out SRCC/PLCC per dimension."""
    import json

    from qsave.demo import run_demo
    from qsave.demo_recipe import DemoConfig

    shown = Console(stderr=True) if json_ else console
    config = DemoConfig(step_scale=step_scale, ablation=ablation)
    held = run_demo(out, shown, train=config if train else None)
    if json_:
        print(json.dumps(held.to_json()))


EXTRAS = {"matplotlib": "report", "jinja2": "report", "pandas": "report", "pyarrow": "report",
          "peft": "train", "fastapi": "serve", "uvicorn": "serve", "httpx": "serve",
          "multipart": "serve", "prometheus_client": "serve", "ray": "ray",
          "sqlalchemy": "annotate", "argon2": "annotate"}  # module → extra


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qsave`` script: the exit code is non-zero when any input failed.

    Commands that finish with failed items exit 1. Every qsave error, file error or missing
    optional dependency is one line on stderr (``QSAVE_DEBUG=1`` shows the traceback): exit 2
    for usage errors (a missing input, a value out of range, duplicate ids), else 1.
    """
    from rich.markup import escape

    from qsave.errors import DuplicateIdError, QsaveError

    try:
        _plain_metavars(typer.main.get_command(app))(args=argv, prog_name="qsave")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except (QsaveError, OSError, ImportError) as error:
        if os.environ.get("QSAVE_DEBUG"):
            raise
        errors.print(f"[red]error:[/red] {escape(_one_line(error))}")
        return 2 if isinstance(error, DuplicateIdError | UsageError) else 1
    return 0


METAVARS = {"path": "PATH", "text": "TEXT", "str": "TEXT", "integer": "N", "int": "N",
            "float": "NUMBER", "boolean": "", "bool": ""}


def _plain_metavars(command: Any) -> Any:
    """``command`` (and its sub-commands) with help placeholders a person reads — PATH, TEXT,
    N, NUMBER, nothing for a boolean — instead of typer's ``<str>``/``<bool>`` types."""
    for param in command.params:
        if param.param_type_name == "option" and param.metavar is None:
            name = _type_name(param)
            param.metavar = METAVARS.get(name, name.upper())
    get_help_option = command.get_help_option  # --help is made per call, not a param

    def help_option(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_metavars(sub)
    return command


def _type_name(param: Any) -> str:
    """A parameter's type name (click's type before typer 0.28, typer's annotation after)."""
    kind = getattr(param, "type", None)
    if kind is not None:
        return kind.name
    return param.bare_type().lower() if hasattr(param, "bare_type") else ""


def _one_line(error: BaseException) -> str:
    """The message of ``error``; a missing optional dependency with the extra that has it."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        extra = EXTRAS.get(error.name.split(".")[0])
        if extra:
            return f"{error.name} is not installed: pip install 'qsave[{extra}]'"
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror or error}: {error.filename}"
    return str(error)


if __name__ == "__main__":
    raise SystemExit(main())
