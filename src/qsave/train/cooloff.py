"""Stage 3: the cool-off SFT data (paper Sec. 4.3).

The correct GRPO rollouts (R_acc = 1, with a non-empty rationale) are reformatted from
``<think>rationale</think>Rating`` to ``Rating<think>rationale</think>`` and become SFT
records in the rating-first format; stage 3 is SFT on them (:func:`qsave.train.sft.train_sft`).

>>> reformat("<think>The ball blurs.</think>Fair")
'Fair<think>The ball blurs.</think>'
>>> reformat("<think>x</think>") is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from qsave.data.records import TrainingRecord, build_messages
from qsave.dimensions import Dimension
from qsave.prompts import AnswerFormat, format_answer, parse_answer
from qsave.train.config import CooloffConfig
from qsave.train.grpo import Rollout
from qsave.train.rewards import strip_turn_end


def reformat(completion: str) -> str | None:
    """``<think>r</think>Rating`` → ``Rating<think>r</think>``; None if not well-formed."""
    parsed = parse_answer(strip_turn_end(completion), AnswerFormat.THINK_FIRST)
    if not parsed.ok:
        return None
    return format_answer(parsed.rating, parsed.rationale, AnswerFormat.RATING_FIRST)


def select_rollouts(rollouts: Sequence[Rollout], config: CooloffConfig) -> list[Rollout]:
    """The correct rollouts, at most ``max_per_prompt`` per (video, dimension), first kept."""
    kept: dict[str, list[Rollout]] = {}
    for r in rollouts:
        if r.accuracy < config.min_accuracy_reward or (config.require_format and r.format < 1):
            continue
        group = kept.setdefault(r.record_id, [])
        if len(group) < config.max_per_prompt and r.completion not in {g.completion for g in group}:
            group.append(r)
    return [r for group in kept.values() for r in group]


def cooloff_records(
    rollouts: Sequence[Rollout], source: Sequence[TrainingRecord], config: CooloffConfig,
    system: str | None = None,
) -> list[TrainingRecord]:
    """Rating-first SFT records from the selected rollouts; MOS and score from the source
    records (by record id)."""
    by_id = {r.id: r for r in source}
    records = []
    for n, rollout in enumerate(select_rollouts(rollouts, config)):
        target = reformat(rollout.completion)
        base = by_id.get(rollout.record_id)
        if target is None or base is None:
            continue
        fmt = AnswerFormat.RATING_FIRST
        messages = build_messages(base.video, base.prompt, Dimension.parse(base.dimension), fmt,
                                  target, system)
        records.append(replace(
            base, id=f"{base.id}:cooloff{n}", messages=messages, target=target,
            answer_format=fmt.value, rationale_source="grpo_rollout",
        ))
    return records
