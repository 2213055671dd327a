"""Rewards of Sec. 4.3 on hand-made completions."""

import pytest

from qsave.errors import ConfigError
from qsave.prompts import AnswerFormat
from qsave.train.rewards import (
    REWARDS,
    accuracy_reward,
    compute_score,
    format_reward,
    get_reward,
    register_reward,
    reward_components,
)

CASES = [  # completion, label, strict (R_acc, R_fmt), lenient (R_acc, R_fmt)
    ("<think>Edges are crisp.</think>Excellent", "Excellent", (1, 1), (1, 1)),
    ("<think>Edges are crisp.</think>Excellent<|im_end|>", "Excellent", (1, 1), (1, 1)),
    ("  <think>Edges are crisp.</think>\nExcellent \n", "Excellent", (1, 1), (1, 1)),
    ("<think>Strong blur.</think>Poor", "Fair", (0, 1), (0, 1)),
    ("<think></think>Fair", "Fair", (1, 0), (1, 0)),
    ("<think>   </think>Fair", "Fair", (1, 0), (1, 0)),
    ("Fair", "Fair", (0, 0), (0, 0)),  # no think block: no rating where the format puts it
    ("<think>ok</think>good", "Good", (0, 0), (0, 1)),  # case matters: not a rating word
    ("<think>ok</think>Good and more", "Good", (0, 0), (0, 1)),
    ("<think>unclosed Good", "Good", (0, 0), (0, 0)),
    # the lenient cases: the paper's format is not met
    ("<think>Soft edges.</think>Fair.", "Fair", (0, 0), (1, 1)),
    ("Sure! <think>Soft edges.</think>Fair", "Fair", (1, 0), (1, 1)),
    ("</think>Fair", "Fair", (0, 0), (1, 0)),
    ("<think>a</think><think>b</think>Fair", "Fair", (1, 0), (1, 1)),  # two blocks
    ("<think>a <think>b</think>Fair", "Fair", (1, 0), (1, 1)),  # a nested opening tag
]


@pytest.mark.parametrize(("completion", "label", "strict", "lenient"), CASES)
def test_rewards_on_hand_made_completions(completion, label, strict, lenient):
    for parsing, (acc, fmt) in (("strict", strict), ("lenient", lenient)):
        assert accuracy_reward(completion, label, parsing=parsing) == acc, parsing
        assert format_reward(completion, parsing=parsing) == fmt, parsing
        parts = reward_components(completion, label, parsing=parsing)
        assert parts == {"accuracy": acc, "format": fmt, "total": acc + 0.5 * fmt}


def test_strict_is_the_default_and_unknown_parsing_is_an_error():
    assert reward_components("Sure! <think>x</think>Fair", "Fair")["format"] == 0.0
    assert compute_score("qsave", "<think>x</think>Fair.", "Fair") == 0.0
    assert compute_score("qsave", "<think>x</think>Fair.", "Fair",
                         {"reward_parsing": "lenient"}) == 1.5
    with pytest.raises(ConfigError, match="unknown reward parsing 'loose'; valid: strict, lenient"):
        format_reward("<think>x</think>Fair", parsing="loose")


def test_rating_first_format_reads_the_word_before_the_rationale():
    text = "Poor<think>Stutter at 1 s.</think>"
    assert accuracy_reward(text, "Poor", AnswerFormat.RATING_FIRST) == 1.0
    assert format_reward(text, fmt=AnswerFormat.RATING_FIRST) == 1.0
    assert format_reward(text) == 0.0  # not think-first
    assert accuracy_reward(text, "Poor", AnswerFormat.THINK_FIRST) == 0.0
    info = {"answer_format": "rating-first"}
    assert compute_score("qsave", text, "Poor", info) == 1.5


def test_unknown_label_and_registry_errors():
    with pytest.raises(ConfigError, match="unknown label rating 'Great'"):
        accuracy_reward("<think>x</think>Good", "Great")
    with pytest.raises(ConfigError, match="valid: accuracy, format, total"):
        get_reward("nope")
    with pytest.raises(ConfigError, match="already registered"):
        register_reward("accuracy")(lambda *a: 0.0)
    assert set(REWARDS) == {"accuracy", "format", "total"}
