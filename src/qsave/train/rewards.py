"""GRPO rewards (paper Sec. 4.3): R = R_acc + 0.5·R_fmt, as plain reusable functions.

R_acc is 1 when the generated rating word equals the label's rating, R_fmt is 1 when a
non-empty ``<think>`` rationale is present. A registry holds the reward functions by name.

>>> accuracy_reward("<think>Sharp edges.</think>Good", "Good")
1.0
>>> format_reward("<think> </think>Good")
0.0
>>> total_reward("<think>Blurry.</think>Poor", "Fair")
0.5
>>> compute_score("qsave", "<think>Blurry.</think>Fair", "Fair")
1.5
"""

from __future__ import annotations

import re
from collections.abc import Callable

from qsave.dimensions import RATINGS
from qsave.errors import ConfigError
from qsave.prompts import THINK_CLOSE, THINK_OPEN, AnswerFormat
from qsave.registry import Registry

RewardFn = Callable[..., float]  # (completion, label rating, fmt) → reward
REWARDS: Registry[RewardFn] = Registry("reward")
register_reward = REWARDS.register
get_reward = REWARDS.lookup
FORMAT_WEIGHT = 0.5  # R = R_acc + 0.5·R_fmt (Sec. 4.3)

_THINK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.DOTALL)
_END = ("<|im_end|>", "<|endoftext|>")


def strip_turn_end(text: str) -> str:
    """The completion up to the end-of-turn token, stripped."""
    for end in _END:
        text = text.split(end, 1)[0]
    return text.strip()


def generated_rating(completion: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST) -> str | None:
    """The rating word where the format puts it: after ``</think>`` or before ``<think>``.

    >>> generated_rating("Fair<think>x</think>", AnswerFormat.RATING_FIRST)
    'Fair'
    >>> generated_rating("<think>x</think> good") is None
    True
    """
    text = strip_turn_end(completion)
    if fmt is AnswerFormat.THINK_FIRST:
        side = text.rsplit(THINK_CLOSE, 1)[1] if THINK_CLOSE in text else ""
    else:
        side = text.split(THINK_OPEN, 1)[0] if THINK_OPEN in text else text
    word = side.strip().rstrip(".").strip()
    return word if word in RATINGS else None


@register_reward("accuracy")
def accuracy_reward(
    completion: str, label: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST
) -> float:
    """R_acc: 1 if the generated rating word equals the label's rating, else 0."""
    if label not in RATINGS:
        raise ConfigError(f"unknown label rating {label!r}; valid ratings: {', '.join(RATINGS)}")
    return 1.0 if generated_rating(completion, fmt) == label else 0.0


@register_reward("format")
def format_reward(
    completion: str, label: str | None = None, fmt: AnswerFormat = AnswerFormat.THINK_FIRST
) -> float:
    """R_fmt: 1 if a non-empty ``<think>…</think>`` rationale is present, else 0."""
    return 1.0 if any(block.strip() for block in _THINK.findall(completion)) else 0.0


def reward_components(
    completion: str, label: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST,
    format_weight: float = FORMAT_WEIGHT,
) -> dict[str, float]:
    """``{"accuracy", "format", "total"}`` for one completion, for logging."""
    acc = accuracy_reward(completion, label, fmt)
    fmt_r = format_reward(completion, label, fmt)
    return {"accuracy": acc, "format": fmt_r, "total": acc + format_weight * fmt_r}


@register_reward("total")
def total_reward(
    completion: str, label: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST
) -> float:
    """R = R_acc + 0.5·R_fmt (Sec. 4.3)."""
    return reward_components(completion, label, fmt)["total"]


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None
) -> float:
    """verl's custom reward signature (``custom_reward_function.name: compute_score``).

    ``extra_info["answer_format"]`` selects the format; think-first by default.
    """
    fmt = AnswerFormat((extra_info or {}).get("answer_format", AnswerFormat.THINK_FIRST))
    return total_reward(solution_str, ground_truth, fmt)
