"""GRPO rewards (paper Sec. 4.3): R = R_acc + λ·R_fmt with λ = 0.5, as plain functions.

Two parsings, chosen by name (``GRPOConfig.reward_parsing``):

``strict`` (the default, the paper's wording)
    R_fmt = 1 when the whole answer is the format of Sec. 3.4.1 — ``<think>rationale</think>
    Rating`` (think-first) or ``Rating<think>rationale</think>`` (rating-first): one ``<think>``
    block with a non-blank rationale, one rating word on its side and nothing else, the end of
    turn aside. R_acc = 1 when the rating word where the format puts it — after a
    ``<think>…</think>`` block, or before one — is exactly the label's rating ("Fair", not
    "Fair." or "fair"). Leading chatter ("Sure! <think>…</think>Fair") keeps R_acc and costs
    R_fmt, as in Video-R1's rewards, which the paper follows.
``lenient`` (qsave ≤ 0.3)
    R_acc reads the word after the last ``</think>`` (a trailing "." allowed, no opening tag
    needed); R_fmt = 1 for any non-blank ``<think>`` block anywhere.

>>> accuracy_reward("<think>Sharp edges.</think>Good", "Good")
1.0
>>> accuracy_reward("<think>Sharp edges.</think>Good.", "Good")
0.0
>>> format_reward("Sure! <think>x</think>Good"), format_reward("<think>x</think>Good")
(0.0, 1.0)
>>> accuracy_reward("</think>Fair", "Fair", parsing="lenient")  # strict: 0.0
1.0
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

RewardFn = Callable[..., float]  # (completion, label rating, fmt, parsing) → reward
REWARDS: Registry[RewardFn] = Registry("reward")
register_reward = REWARDS.register
get_reward = REWARDS.lookup
FORMAT_WEIGHT = 0.5  # λ in R = R_acc + λ·R_fmt (Sec. 4.3, App. A)
PARSINGS = ("strict", "lenient")  # how completions are read; strict: the paper's format

_OPEN, _CLOSE = re.escape(THINK_OPEN), re.escape(THINK_CLOSE)
_WORD = "|".join(RATINGS)
_BLOCK = rf"{_OPEN}(?P<why>(?:(?!{_OPEN}|{_CLOSE}).)*){_CLOSE}"  # one block, no nested tags
_STRICT_FORMAT = {
    AnswerFormat.THINK_FIRST: re.compile(rf"\s*{_BLOCK}\s*(?P<rating>{_WORD})\s*", re.DOTALL),
    AnswerFormat.RATING_FIRST: re.compile(rf"\s*(?P<rating>{_WORD})\s*{_BLOCK}\s*", re.DOTALL),
}
_STRICT_RATING = {  # where the rating word is, the rest of the answer aside
    AnswerFormat.THINK_FIRST: re.compile(rf"{_OPEN}.*{_CLOSE}\s*(?P<rating>\S+)\s*$", re.DOTALL),
    AnswerFormat.RATING_FIRST: re.compile(rf"^\s*(?P<rating>\S+?)\s*{_OPEN}", re.DOTALL),
}
_THINK = re.compile(_OPEN + r"(.*?)" + _CLOSE, re.DOTALL)
_END = ("<|im_end|>", "<|endoftext|>")


def strip_turn_end(text: str) -> str:
    """The completion up to the end-of-turn token, stripped."""
    for end in _END:
        text = text.split(end, 1)[0]
    return text.strip()


def _check_parsing(parsing: str) -> None:
    if parsing not in PARSINGS:
        raise ConfigError(f"unknown reward parsing {parsing!r}; valid: {', '.join(PARSINGS)}")


def generated_rating(completion: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST,
                     parsing: str = "strict") -> str | None:
    """The rating word where the format puts it, or None.

    >>> generated_rating("Fair<think>x</think>", AnswerFormat.RATING_FIRST)
    'Fair'
    >>> generated_rating("<think>x</think> good") is None
    True
    """
    _check_parsing(parsing)
    text = strip_turn_end(completion)
    if parsing == "strict":
        found = _STRICT_RATING[fmt].search(text)
        word = found["rating"] if found else None
    elif fmt is AnswerFormat.THINK_FIRST:
        side = text.rsplit(THINK_CLOSE, 1)[1] if THINK_CLOSE in text else ""
        word = side.strip().rstrip(".").strip()
    else:
        side = text.split(THINK_OPEN, 1)[0] if THINK_OPEN in text else text
        word = side.strip().rstrip(".").strip()
    return word if word in RATINGS else None


@register_reward("accuracy")
def accuracy_reward(completion: str, label: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST,
                    parsing: str = "strict") -> float:
    """R_acc: 1 if the generated rating word equals the label's rating, else 0."""
    if label not in RATINGS:
        raise ConfigError(f"unknown label rating {label!r}; valid ratings: {', '.join(RATINGS)}")
    return 1.0 if generated_rating(completion, fmt, parsing) == label else 0.0


@register_reward("format")
def format_reward(completion: str, label: str | None = None,
                  fmt: AnswerFormat = AnswerFormat.THINK_FIRST, parsing: str = "strict") -> float:
    """R_fmt: 1 if the answer has the ``<think>`` tag with a rationale (strict: and is exactly
    the format, see the module docstring), else 0."""
    _check_parsing(parsing)
    if parsing == "lenient":
        return 1.0 if any(block.strip() for block in _THINK.findall(completion)) else 0.0
    found = _STRICT_FORMAT[fmt].fullmatch(strip_turn_end(completion))
    return 1.0 if found and found["why"].strip() else 0.0


def reward_components(
    completion: str, label: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST,
    format_weight: float = FORMAT_WEIGHT, parsing: str = "strict",
) -> dict[str, float]:
    """``{"accuracy", "format", "total"}`` for one completion, for logging."""
    acc = accuracy_reward(completion, label, fmt, parsing)
    fmt_r = format_reward(completion, label, fmt, parsing)
    return {"accuracy": acc, "format": fmt_r, "total": acc + format_weight * fmt_r}


@register_reward("total")
def total_reward(completion: str, label: str, fmt: AnswerFormat = AnswerFormat.THINK_FIRST,
                 parsing: str = "strict") -> float:
    """R = R_acc + 0.5·R_fmt (Sec. 4.3)."""
    return reward_components(completion, label, fmt, parsing=parsing)["total"]


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None
) -> float:
    """verl's custom reward signature (``custom_reward_function.name: compute_score``).

    ``extra_info["answer_format"]`` selects the format (think-first by default) and
    ``extra_info["reward_parsing"]`` the parsing (strict by default).
    """
    info = extra_info or {}
    fmt = AnswerFormat(info.get("answer_format", AnswerFormat.THINK_FIRST))
    return total_reward(solution_str, ground_truth, fmt, info.get("reward_parsing", "strict"))
