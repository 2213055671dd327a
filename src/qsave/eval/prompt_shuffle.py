"""Prompt-sensitivity self-test: does a checkpoint read the prompt, and only for alignment?

Text-video alignment is judged against the generation prompt on three criteria (Sec. 3.4.1):
the *subjects* it names appear, their *attributes and counts* match, and the *actions and
camera* motion match. So a video scored with the prompt of another video should lose alignment,
while its visual and dynamic quality — judged on the pixels alone — should not move. This
module scores each video twice, with its own prompt and with a prompt of a *different* prompt
group (a seeded derangement over the distinct prompts: no video gets its own prompt back, nor
one equal to it), and checks, on r̂ (0..1, Sec. 4.2.2), own − shuffled:

- alignment drops: on more than ``min_drop_fraction`` of the videos (strictly), and on mean by
  more than ``min_mean_drop``;
- visual and dynamic quality stay put: mean |Δr̂| under ``max_quality_change`` each.

A model that ignores the prompt fails the first check; one that lets the prompt leak into its
quality judgement fails the second. ``qsave prompt-shuffle`` runs it (docs/eval.md).

>>> mapping = derange_prompts(["a cat", "a dog", "a cat", "a car"], seed=0)
>>> sorted(mapping), all(mapping[p] != p for p in mapping)
(['a car', 'a cat', 'a dog'], True)
>>> own = {"v1": {"visual": 0.6, "dynamic": 0.5, "alignment": 0.9},
...        "v2": {"visual": 0.4, "dynamic": 0.7, "alignment": 0.8}}
>>> other = {"v1": {"visual": 0.61, "dynamic": 0.5, "alignment": 0.3},
...          "v2": {"visual": 0.4, "dynamic": 0.69, "alignment": 0.7}}
>>> summary = summarize(own, other)
>>> round(summary.mean_drop, 3), summary.drop_fraction, summary.passed
(0.35, 1.0, True)
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import ConfigError, QsaveError, UsageError
from qsave.jsonl import write_jsonl
from qsave.scores import ItemError, VideoResult

if TYPE_CHECKING:  # the runner is handed an Evaluator; eval never imports the pipeline
    from rich.table import Table

    from qsave.evaluator import Evaluator, ScoreItem

QUALITY = (Dimension.VISUAL, Dimension.DYNAMIC)  # judged without the prompt: must not move
ScoreTable = Mapping[str, Mapping[str, float]]  # video id → dimension name → r̂


@dataclass(frozen=True)
class PromptShuffleConfig:
    """The self-test's seed and pass thresholds; ``qsave prompt-shuffle``'s flags mirror them."""

    seed: int = 0  # seed of the derangement of the distinct prompts
    min_drop_fraction: float = 0.75  # alignment r̂ must drop on more than this share of videos
    min_mean_drop: float = 0.05  # … and its mean drop (own − shuffled) must exceed this
    # (both well above chance: a model that ignores the prompt drops on about half of the
    # videos by about 0 on mean, and passed the looser 0.5 / 0 on 101 clips)
    max_quality_change: float = 0.02  # mean |Δr̂| of visual and of dynamic must stay under this

    def __post_init__(self) -> None:
        ConfigError.require_finite(self)
        if not 0.0 <= self.min_drop_fraction < 1.0:
            raise ConfigError(f"min_drop_fraction ({self.min_drop_fraction}) must be in [0, 1)")
        if not -1.0 <= self.min_mean_drop < 1.0:
            raise ConfigError(f"min_mean_drop ({self.min_mean_drop}) must be in [-1, 1): r̂ "
                              "lies in 0..1")
        if not 0.0 < self.max_quality_change <= 1.0:
            raise ConfigError(f"max_quality_change ({self.max_quality_change}) must be in "
                              "(0, 1]: r̂ lies in 0..1")


def derange_prompts(prompts: Iterable[str | None], seed: int) -> dict[str, str]:
    """{prompt: another prompt} over the distinct prompts given (empty ones and None are left
    out): one random cycle through them, so no prompt maps to itself, and videos sharing a
    prompt all get the same other one. A function of the set of prompts and ``seed`` only.
    Raises ``UsageError`` for fewer than two distinct prompts."""
    distinct = sorted({p for p in prompts if p})
    if len(distinct) < 2:
        raise UsageError(f"the prompt-shuffle test needs at least 2 distinct prompts, got "
                         f"{len(distinct)}: give each video its generation prompt (a manifest's "
                         "'prompt', --prompts)")
    order = distinct[:]
    random.Random(seed).shuffle(order)
    return dict(zip(order, order[1:] + order[:1], strict=True))


@dataclass(frozen=True)
class ShuffleRow:
    """One video: r̂ per dimension with its own prompt and with the shuffled one, or why not."""

    id: str
    path: str | None
    prompt: str | None
    shuffled_prompt: str | None
    own: dict[str, float] | None = None  # dimension → r̂ with its own prompt
    shuffled: dict[str, float] | None = None  # dimension → r̂ with the shuffled prompt
    error: ItemError | None = None  # why it is left out of the figures

    @classmethod
    def of(cls, own: VideoResult, shuffled: VideoResult) -> ShuffleRow:
        """The row of one video's two results (an error in either leaves it out)."""
        error = own.error or shuffled.error
        if error is not None:
            return cls(own.id, own.path, own.prompt, shuffled.prompt, error=error)
        return cls(own.id, own.path, own.prompt, shuffled.prompt, _r_hats(own), _r_hats(shuffled))

    def to_record(self) -> dict[str, Any]:
        """The row of ``--out`` (plain JSON values; ``error`` null or {type, message})."""
        return asdict(self)


def _r_hats(result: VideoResult) -> dict[str, float]:
    return {d.value: result.scores[d].score for d in DIMENSIONS}


def run_prompt_shuffle(
    evaluator: Evaluator, items: Sequence[ScoreItem], shuffled: Mapping[str, str], *,
    batch_size: int = 8, on_result: Callable[[VideoResult], None] | None = None,
) -> list[ShuffleRow]:
    """Score every item on all three dimensions with its own prompt and with
    ``shuffled[prompt]`` (:func:`derange_prompts`), the two side by side in one batch stream;
    one row per item, in order. An item without a prompt cannot be tested (a ``PromptError``
    row); one that fails to score gets its error; neither stops the others."""
    testable = [item for item in items if item.prompt]
    pairs = (replace(item, prompt=prompt) for item in testable
             for prompt in (item.prompt, shuffled[item.prompt]))
    results = evaluator.score_many(pairs, dimensions=DIMENSIONS, batch_size=batch_size,
                                   on_result=on_result)
    rows = []
    for item in items:
        if not item.prompt:
            rows.append(ShuffleRow(item.name, item.path, None, None, error=ItemError(
                "PromptError", "no prompt for this video: the prompt-shuffle test compares "
                               "scores under its own prompt and another one")))
        else:
            rows.append(ShuffleRow.of(next(results), next(results)))
    return rows


def score_tables(rows: Iterable[ShuffleRow]) -> tuple[dict[str, dict[str, float]],
                                                       dict[str, dict[str, float]]]:
    """(own, shuffled) score tables of the rows that have scores."""
    scored = [row for row in rows if row.error is None]
    return ({r.id: r.own for r in scored if r.own is not None},
            {r.id: r.shuffled for r in scored if r.shuffled is not None})


@dataclass(frozen=True)
class Check:
    """One pass/fail check of the self-test."""

    name: str  # what is checked
    value: float  # the measured figure
    rule: str  # the comparison it must satisfy, e.g. "> 0.5"
    passed: bool


@dataclass(frozen=True)
class ShuffleSummary:
    """The self-test's figures over ``n`` videos, on r̂ (own − shuffled prompt)."""

    n: int
    config: PromptShuffleConfig
    mean_drop: float  # alignment: mean of own − shuffled
    drop_fraction: float  # alignment: share of videos where it drops (strictly)
    sign_p: float  # one-sided sign test: P(at least this many drops | drops are coin flips)
    quality: dict[str, tuple[float, float]]  # visual/dynamic → (mean |Δr̂|, max |Δr̂|)
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values: what ``qsave prompt-shuffle --json`` writes."""
        return {
            "n": self.n, "seed": self.config.seed,
            "thresholds": {k: v for k, v in asdict(self.config).items() if k != "seed"},
            "alignment": {"mean_drop": self.mean_drop, "drop_fraction": self.drop_fraction,
                          "sign_test_p": self.sign_p},
            **{d: {"mean_abs_change": mean, "max_abs_change": largest}
               for d, (mean, largest) in self.quality.items()},
            "checks": [asdict(check) for check in self.checks],
            "passed": self.passed,
        }


def summarize(own: ScoreTable, shuffled: ScoreTable,
              config: PromptShuffleConfig | None = None) -> ShuffleSummary:
    """The figures and checks of two score tables of the same videos (id → dimension → r̂):
    scored with their own prompts and with shuffled ones."""
    config = config or PromptShuffleConfig()
    if set(own) != set(shuffled):
        odd = sorted(set(own) ^ set(shuffled))
        raise QsaveError(f"the two score tables must hold the same videos; {len(odd)} are in "
                         f"one only: {odd[:5]}")
    if not own:
        raise QsaveError("no video was scored with both prompts: nothing to summarise")
    ids = sorted(own)
    drops = [own[i][Dimension.ALIGNMENT] - shuffled[i][Dimension.ALIGNMENT] for i in ids]
    mean_drop = math.fsum(drops) / len(ids)
    drop_fraction = sum(d > 0 for d in drops) / len(ids)
    from scipy.stats import binomtest  # here: the CLI imports this module at start

    moved = [d for d in drops if d != 0]
    sign_p = float(binomtest(sum(d > 0 for d in moved), len(moved), 0.5,
                             alternative="greater").pvalue) if moved else 1.0
    quality = {}
    for dimension in QUALITY:
        changes = [abs(own[i][dimension] - shuffled[i][dimension]) for i in ids]
        quality[dimension.value] = (math.fsum(changes) / len(ids), max(changes))
    checks = (
        Check("alignment: share of videos whose r̂ drops", drop_fraction,
              f"> {config.min_drop_fraction:g}", drop_fraction > config.min_drop_fraction),
        Check("alignment: mean drop of r̂", mean_drop, f"> {config.min_mean_drop:g}",
              mean_drop > config.min_mean_drop),
        *(Check(f"{d}: mean |Δr̂|", mean, f"< {config.max_quality_change:g}",
                mean < config.max_quality_change) for d, (mean, _) in quality.items()),
    )
    return ShuffleSummary(len(ids), config, mean_drop, drop_fraction, sign_p, quality, checks)


def write_rows(rows: Iterable[ShuffleRow], path: str | os.PathLike) -> Path:
    """The rows as a JSON array (a ``.json`` path) or JSON lines (any other), atomically."""
    path, records = Path(path), [row.to_record() for row in rows]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        return path
    return write_jsonl(path, records)


def summary_table(summary: ShuffleSummary) -> Table:
    """The checks as a rich table: figure, rule, PASS/FAIL; the largest |Δr̂| beside them."""
    from rich.table import Table

    table = Table(title=f"prompt shuffle, {summary.n} video(s), seed {summary.config.seed}: "
                        "r̂ own − shuffled", title_justify="left")
    for column, justify in (("check", "left"), ("value", "right"), ("rule", "left"),
                            ("result", "left")):
        table.add_column(column, justify=justify)
    for check in summary.checks:
        verdict = "[green]PASS[/green]" if check.passed else "[red]FAIL[/red]"
        table.add_row(check.name, f"{check.value:.4f}", check.rule, verdict)
    table.caption = (f"alignment drops vs chance: sign test p = {summary.sign_p:.2g}; "
                     "largest |Δr̂|: " + ", ".join(
                         f"{d} {largest:.4f}" for d, (_, largest) in summary.quality.items()))
    return table
