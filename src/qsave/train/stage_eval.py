"""Held-out figures after a training stage (Table 4's layout): SRCC/PLCC per dimension.

A stage's checkpoint is scored the way ``qsave score`` scores it (:class:`qsave.Evaluator`
with the checkpoint's ``qsave_scorer.json``): stages 1–2 are think-first, so their rating is
read after a generated ``<think>`` analysis; stage 3 is rating-first, read without generation.
A clip whose analysis does not close within ``max_new_tokens`` has no rating to read; it is
left out of that stage's figures and counted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scipy import stats

from qsave.dimensions import DIMENSIONS
from qsave.errors import QsaveError, UnclosedAnalysisError
from qsave.evaluator import Evaluator, ScoreItem
from qsave.scores import VideoResult
from qsave.train.config import StageEvalConfig


def evaluate_checkpoint(checkpoint: str | Path, config: StageEvalConfig) -> dict[str, Any]:
    """Score ``config.records``' videos with ``checkpoint``; SRCC/PLCC of predicted vs record
    MOS per dimension, with the clips left out and why."""
    from qsave.data.records import load_records  # pandas: the demo imports this module without

    records = load_records(config.records).records
    truth: dict[str, dict[str, float]] = {}
    prompts: dict[str, str | None] = {}
    for r in records:
        truth.setdefault(r.video, {})[r.dimension] = r.mos
        prompts[r.video] = r.prompt
    given = {"max_new_tokens": config.max_new_tokens, "device": config.device}
    evaluator = Evaluator.from_pretrained(str(checkpoint),
                                          **{k: v for k, v in given.items() if v is not None})
    items = [ScoreItem(video, prompts[video], id=video) for video in truth]
    results = list(evaluator.score_many(items))
    failed = [r for r in results if not r.ok]
    unclosed = [r for r in failed if r.error.type == UnclosedAnalysisError.__name__]
    if len(failed) > len(unclosed):
        other = [f"{r.id}: {r.error}" for r in failed if r not in unclosed]
        raise QsaveError(f"the held-out clips could not be scored: {other[:3]}")
    figures = correlations(results, truth)
    spec = evaluator.spec
    return {"checkpoint": str(checkpoint), "answer_format": spec.answer_format.value,
            "max_new_tokens": spec.max_new_tokens, "dimensions": figures,
            "unscored": len(unclosed),
            "unscored_why": f"the <think> analysis did not close within max_new_tokens "
                            f"({spec.max_new_tokens}; raise eval.max_new_tokens)"
                            if unclosed else ""}


def correlations(results: list[VideoResult], truth: dict[str, dict[str, float]]
                 ) -> dict[str, dict[str, Any]]:
    """SRCC and PLCC of predicted vs true MOS per dimension over the scored results (n), the
    truth by result id and dimension (the held-out figures of a stage and of ``qsave demo``)."""
    figures = {}
    for d in DIMENSIONS:
        pairs = [(r.scores[d].mos, truth[r.id][d.value]) for r in results
                 if r.ok and d.value in truth[r.id]]
        pred, true = [p for p, _ in pairs], [t for _, t in pairs]
        figures[d.value] = {"srcc": _corr(stats.spearmanr, pred, true),
                            "plcc": _corr(stats.pearsonr, pred, true), "n": len(pairs)}
    return figures


def _corr(metric: Any, pred: list[float], truth: list[float]) -> float:
    """A correlation (scipy's; qsave.eval is not the training layer's to import) rounded to 4
    decimals; 0.0 when undefined (constant predictions, fewer than 3 clips)."""
    ok = len(pred) > 2 and len(set(pred)) > 1 and len(set(truth)) > 1
    value = metric(pred, truth).statistic if ok else 0.0
    return 0.0 if math.isnan(value) else round(float(value), 4)
