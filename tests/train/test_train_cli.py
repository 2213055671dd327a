"""`qsave train` through the real CLI: every key checked before a model loads, every input
file checked up front, a run folder that keeps its config, log and per-stage fingerprints,
GRPO logs that show what it does, warnings with causes, the tiny-model aids and the held-out
figures after each stage."""

import json
import time
from pathlib import Path

import pytest
import yaml

from qsave.cli import main
from qsave.data.records import write_records

RECIPE = "configs/train-tiny-cpu.yaml"


@pytest.fixture(scope="module")
def files(corpus_records, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-cli")
    train = corpus_records["train"]
    write_records(train[:6], folder / "train.jsonl")
    write_records(train[:4], folder / "rl.jsonl")
    write_records(corpus_records["test"][:3], folder / "test.jsonl")
    return folder


def config_file(folder, name="cfg.yaml", **sections):
    """A small training config: the tiny model, a few steps per stage."""
    values = {"output_dir": "run", "model": {"model": "tiny"},
              "sft": {"records": "train.jsonl", "max_steps": 2, "batch_size": 2,
                      "effective_batch_size": 2, "save_steps": 10, "logging_steps": 1},
              "grpo": {"records": "rl.jsonl", "max_steps": 1, "prompts_per_step": 1,
                       "num_generations": 2, "max_new_tokens": 8},
              "cooloff": {"sft": {"max_steps": 1, "batch_size": 1, "effective_batch_size": 1}}}
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / name
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_wrongly_typed_key_is_an_error_before_anything_loads(files, capsys):
    path = config_file(files, "typo.yaml", model={"lora": "flase"})
    started = time.perf_counter()
    assert main(["train", "--config", str(path)]) == 1
    assert "model.lora must be true or false, got 'flase'" in capsys.readouterr().err
    assert time.perf_counter() - started < 5  # no model, no torch training stack
    for value, expected in (("sft.max_steps=2.5", "sft.max_steps must be an integer"),
                            ("grpo.optim.betas=[0.9]", "grpo.optim.betas must be a list of 2"),
                            ("model.model=7", "model.model must be a string"),
                            ("answer_format=think", "answer_format must be one of")):
        assert main(["train", "--config", str(config_file(files)), "--set", value]) == 1
        assert expected in capsys.readouterr().err
    assert not (files / "run").exists()


def test_model_is_required_and_recipes_load(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("sft: {records: r.jsonl}\n")
    assert main(["train", "--config", str(path)]) == 1
    assert "model.model is required" in capsys.readouterr().err
    from qsave.train.config import load_train_config

    recipe = load_train_config(RECIPE, ["sft.records=x.jsonl"])
    assert recipe.model.model == "tiny" and recipe.aids.on == [
        "vision_warmup_steps", "probe_weight", "cooloff_resample"]
    assert recipe.sft.records == str(Path.cwd() / "x.jsonl")  # --set: the working directory


def test_every_file_of_every_stage_is_checked_up_front(files, capsys):
    path = config_file(files, "missing.yaml", grpo={"records": "nowhere.jsonl"},
                       eval={"records": "also-missing.jsonl"})
    assert main(["train", "--config", str(path), "--set", f"output_dir={files / 'r0'}"]) == 1
    err = capsys.readouterr().err
    assert "grpo.records" in err and "nowhere.jsonl" in err and "also-missing.jsonl" in err
    assert not (files / "r0").exists()  # nothing ran: SFT did not start before the check
    path = config_file(files, "greedy.yaml", grpo={"prompts_per_step": 50})
    assert main(["train", "--config", str(path), "--set", f"output_dir={files / 'r1'}"]) == 1
    assert "prompts_per_step (50) exceeds the 4 RL records" in capsys.readouterr().err


def test_the_run_folder_keeps_config_log_and_fingerprints(files, capsys):
    path = config_file(files, "run.yaml", eval={"records": "test.jsonl"})
    run = files / "run"
    assert main(["train", "--config", str(path), "--stage", "sft"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["sft"]["optim"]["learning_rate"] == 5e-6  # defaults written out
    assert resolved["sft"]["records"] == str(files / "train.jsonl")
    log = (run / "train.log").read_text()
    assert "sft step 2/2" in log and "loss_ce" in log and "sft step 2/2" in out
    done = json.loads((run / "stage1-sft" / "done.json").read_text())
    assert done["fingerprint"].startswith("sha256:") and done["seconds"] > 0
    assert done["settings"]["sft.records (content)"].startswith("sha256:")
    evaluated = json.loads((run / "eval.json").read_text())["sft"]
    assert set(evaluated["dimensions"]) == {"visual", "dynamic", "alignment"}
    assert "sft: held-out visual SRCC" in log

    assert main(["train", "--config", str(path), "--stage", "sft"]) == 0
    assert "sft: skip — already done" in capsys.readouterr().out

    changed = ["--set", "sft.max_steps=3"]
    assert main(["train", "--config", str(path), "--stage", "sft", "--resume-only",
                 *changed]) == 1
    err = capsys.readouterr().err
    assert "--resume-only: sft would rerun" in err and "sft.max_steps: 2 → 3" in err
    assert json.loads((run / "stage1-sft" / "done.json").read_text()) == done  # untouched
    assert main(["train", "--config", str(path), "--stage", "grpo", *changed]) == 1
    assert "needs stage 'sft' finished with this config" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--stage", "sft", *changed]) == 0
    out = capsys.readouterr().out
    assert "sft: rerun — its config or inputs changed since it finished: sft.max_steps: 2 → 3" \
        in out
    assert json.loads((run / "stage1-sft" / "done.json").read_text())["fingerprint"] != \
        done["fingerprint"]


def test_grpo_logs_its_rewards_and_warns_when_answers_are_cut(files, capsys):
    path = config_file(files, "grpo.yaml")
    run = files / "grpo-run"
    args = ["train", "--config", str(path), "--set", f"output_dir={run}"]
    assert main([*args, "--stage", "sft"]) == 0
    assert main([*args, "--stage", "grpo", "--set", "grpo.max_new_tokens=4"]) == 0
    log = (run / "train.log").read_text()
    [step] = [line for line in log.splitlines() if "grpo step 1/1" in line]
    for part in ("reward", "±", "accuracy", "format", "truncated", "clip", "ratio"):
        assert part in step
    assert "kl" not in step  # KL is off (kl_beta 0)
    assert "grpo.max_new_tokens (4) is shorter than the longest answer" in log
    assert "warning: no rollout earned accuracy or format reward" in log
    assert "cut at grpo.max_new_tokens (4)" in log and "raise grpo.max_new_tokens" in log
    assert main([*args, "--stage", "cooloff", "--set", "grpo.max_new_tokens=4"]) == 1
    err = capsys.readouterr().err
    assert "no correct GRPO rollouts to cool off on" in err and "raise grpo.max_new_tokens" in err


def test_the_aids_for_tiny_models_run_when_asked(files):
    path = config_file(files, "aids.yaml", aids={"vision_warmup_steps": 2, "probe_weight": 1.0,
                                                 "vision_warmup_batch": 2})
    run = files / "aids-run"
    assert main(["train", "--config", str(path), "--set", f"output_dir={run}",
                 "--stage", "sft"]) == 0
    log = (run / "train.log").read_text()
    assert "vision warm-up (aid for tiny models) step 2/2" in log and "loss_probe" in log
    assert (run / "stage1-sft" / "vision_probe.pt").is_file()
    path = config_file(files, "aids-big.yaml", model={"model": str(run / "stage1-sft" / "final")},
                       aids={"vision_warmup_steps": 2})
    assert main(["train", "--config", str(path), "--set", f"output_dir={files / 'aids-2'}",
                 "--set", "sft.max_steps=1", "--stage", "sft"]) == 0
    assert "warning: aids for tiny models are on (vision_warmup_steps)" in \
        (files / "aids-2" / "train.log").read_text()
