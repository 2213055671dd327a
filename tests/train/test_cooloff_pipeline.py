"""Stage 3 data (reformatting the correct rollouts), the training config, the pipeline's
stage bookkeeping and the cool-off stage run from hand-made rollouts."""

import json
from dataclasses import asdict

import pytest

from qsave.data.records import load_records
from qsave.errors import ConfigError
from qsave.prompts import AnswerFormat, parse_answer
from qsave.spec import resolve_spec
from qsave.train.config import CooloffConfig, TrainConfig, load_train_config
from qsave.train.cooloff import cooloff_records, reformat, select_rollouts
from qsave.train.grpo import Rollout
from qsave.train.pipeline import (
    DONE,
    fingerprint,
    parse_stage,
    run_stage,
    stage_dir,
    stage_done,
)


def _rollout(record, completion, accuracy, fmt, step=0):
    return Rollout(step, record.id, record.video_id, record.dimension, record.video,
                   record.prompt, record.rating, record.mos, completion, accuracy, fmt,
                   accuracy + 0.5 * fmt, 0.0)


def test_reformat_moves_the_rating_first():
    expected = "Poor<think>Blur at 1 s.</think>"
    assert reformat("<think>Blur at 1 s.</think>Poor<|im_end|>") == expected
    assert reformat("Poor<think>x</think>") is None  # not the stage 1–2 format
    assert reformat("<think>a</think><think>b</think>Good") is None


def test_only_correct_well_formed_rollouts_become_records(corpus_records):
    record = corpus_records["train"][0]
    good = f"<think>Looks {record.rating.lower()}.</think>{record.rating}"
    rollouts = [
        _rollout(record, good, 1.0, 1.0),
        _rollout(record, good, 1.0, 1.0),  # duplicate completion
        _rollout(record, f"<think></think>{record.rating}", 1.0, 0.0),  # no rationale
        _rollout(record, "<think>wrong.</think>Bad", 0.0, 1.0),  # wrong rating
    ]
    assert select_rollouts(rollouts, CooloffConfig(max_per_prompt=3)) == [rollouts[0]]
    [made] = cooloff_records(rollouts, [record], CooloffConfig())
    assert made.target == f"{record.rating}<think>Looks {record.rating.lower()}.</think>"
    assert made.answer_format == AnswerFormat.RATING_FIRST.value
    assert made.mos == record.mos and made.rating == record.rating
    assert made.messages[-1]["content"][0]["text"] == made.target
    question = made.messages[0]["content"][1]["text"]
    assert question.endswith("Rating<think>Your analysis here</think>")
    assert parse_answer(made.target, AnswerFormat.RATING_FIRST).ok


def test_train_config_from_yaml(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("output_dir: out\nmodel: {model: tiny}\nsft:\n  records: r.jsonl\n"
                    "  optim: {learning_rate: 2e-5}\ngrpo: {num_generations: 8}\n")
    config = load_train_config(path)
    assert config.output_dir == str(tmp_path / "out")
    assert config.sft.records == str(tmp_path / "r.jsonl")
    assert config.sft.optim.learning_rate == 2e-5 and config.grpo.num_generations == 8
    path.write_text("model: {model: tiny}\nsft: {alpha: 0, beta: 0}\n")
    with pytest.raises(ConfigError, match=r"alpha \(0.0\) and beta \(0.0\)"):
        load_train_config(path)


def test_stage_order_and_names(tmp_path):
    assert parse_stage("all") == ("sft", "grpo", "cooloff")
    with pytest.raises(ConfigError, match="unknown stage 'rl'; valid: sft, grpo, cooloff, all"):
        parse_stage("rl")
    config = TrainConfig(output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs stage 'sft' finished with this config"):
        run_stage(config, "grpo", log=lambda *_: None)


def test_cooloff_stage_runs_on_the_correct_rollouts_and_is_skipped_when_done(
    tmp_path, corpus_records, tiny_dir
):
    from qsave.data.records import write_records

    records = corpus_records["train"][:2]
    rl_path = write_records(records, tmp_path / "rl.jsonl")
    config = TrainConfig.from_mapping({
        "output_dir": str(tmp_path / "run"), "model": {"model": "tiny"},
        "grpo": {"records": str(rl_path)},
        "cooloff": {"sft": {"max_steps": 1, "batch_size": 1, "effective_batch_size": 1,
                            "save_steps": 10}},
    })
    for stage in ("sft", "grpo"):  # earlier stages done, pointing at the tiny checkpoint
        folder = stage_dir(config.output_dir, stage)
        folder.mkdir(parents=True)
        (folder / "final").symlink_to(tiny_dir, target_is_directory=True)
        (folder / DONE).write_text(json.dumps({"stage": stage,
                                               "fingerprint": fingerprint(config, stage)}))
    rollouts = [_rollout(r, f"<think>Judged.</think>{r.rating}", 1.0, 1.0) for r in records]
    rollouts.append(_rollout(records[0], "<think>No.</think>Bad", 0.0, 1.0))
    (stage_dir(config.output_dir, "grpo") / "rollouts.jsonl").write_text(
        "".join(json.dumps(asdict(r)) + "\n" for r in rollouts))
    lines = []
    final = run_stage(config, "cooloff", log=lines.append)
    assert (final / "config.json").is_file() and stage_done(config.output_dir, "cooloff") == final
    assert resolve_spec(str(final))[0].answer_format.value == "rating-first"  # the cool-off
    made = load_records(stage_dir(config.output_dir, "cooloff") / "records.jsonl").records
    assert [r.target for r in made] == [f"{r.rating}<think>Judged.</think>" for r in records]
    assert "cooloff: 2 records from 3 rollouts" in lines
    run_stage(config, "cooloff", log=lines.append)
    assert lines[-1].startswith("cooloff: already done")
