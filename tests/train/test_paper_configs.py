"""The shipped training configs hold the paper's App. A values, cited where they are set, and
the dataclass defaults are those values too (docs/paper-map.md lists each with its key)."""

import re
from pathlib import Path

import pytest
import yaml

from qsave.errors import ConfigError
from qsave.train.config import GRPOConfig, SFTConfig, TrainConfig, load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER_MAP = Path(__file__).resolve().parents[2] / "docs" / "paper-map.md"

# App. A (paper): key path → value
APPENDIX_A = {
    "sft.optim.learning_rate": 5e-6,
    "sft.optim.warmup_ratio": 0.03,
    "sft.epochs": 3,
    "sft.effective_batch_size": 8,
    "sft.alpha": 1.0,
    "sft.beta": 1.0,
    "model.bf16": True,
    "grpo.optim.learning_rate": 2e-6,
    "grpo.prompts_per_step": 256,
    "grpo.num_generations": 8,
    "grpo.format_weight": 0.5,
    "grpo.max_steps": 32,
}
CHANGED_FOR_ONE_GPU = {"sft.optim.learning_rate", "grpo.optim.learning_rate"}  # LoRA's rates


def value(config: TrainConfig, key: str):
    for part in key.split("."):
        config = getattr(config, part)
    return config


def cited_lines(path: Path) -> dict[str, str]:
    """The comment of each 'key: value' line of a YAML file, by key path."""
    stack: list[tuple[int, str]] = []
    out = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^(\s*)([a-z_]+):(.*)$", line)
        if not found:
            continue
        indent, key, rest = len(found[1]), found[2], found[3]
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, key))
        out[".".join(k for _, k in stack)] = rest
    return out


def test_the_eight_gpu_config_is_appendix_a():
    path = CONFIGS / "paper-appendix-a.yaml"
    config = load_train_config(path)
    comments = cited_lines(path)
    for key, expected in APPENDIX_A.items():
        assert value(config, key) == pytest.approx(expected), key
        if key in comments:  # written in the file: cited
            assert "App. A" in comments[key], f"{key} is not cited: {comments[key]!r}"
    assert not config.model.lora and config.sft.deepspeed.endswith("deepspeed-zero3.json")
    launcher = yaml.safe_load((CONFIGS / "accelerate-zero3.yaml").read_text())
    processes = launcher["num_processes"]
    assert (launcher["distributed_type"], processes) == ("DEEPSPEED", 8)
    assert launcher["deepspeed_config"]["deepspeed_config_file"] == "configs/deepspeed-zero3.json"
    # effective batch 8 = 1 per GPU × 8 GPUs, no accumulation
    assert config.sft.grad_accum(processes) * config.sft.batch_size * processes == 8
    assert config.grpo.prompts_per_step % processes == 0
    cooloff = config.cooloff.sft
    assert (cooloff.epochs, cooloff.effective_batch_size, cooloff.optim.learning_rate,
            cooloff.optim.warmup_ratio) == (3, 8, 5e-6, 0.03)


def test_the_one_gpu_config_keeps_every_value_it_can_and_says_what_it_changes():
    path = CONFIGS / "paper-appendix-a-1gpu.yaml"
    config = load_train_config(path)
    comments = cited_lines(path)
    for key, expected in APPENDIX_A.items():
        if key in CHANGED_FOR_ONE_GPU:
            assert value(config, key) != expected
            assert "CHANGED" in comments[key], key
        else:
            assert value(config, key) == pytest.approx(expected), key
    assert config.model.lora and "CHANGED" in comments["model.lora"]
    assert config.sft.deepspeed is None
    assert config.sft.grad_accum(1) == 8  # the effective batch by accumulation on one GPU


def test_the_code_defaults_are_appendix_a():
    config = TrainConfig()
    for key, expected in APPENDIX_A.items():
        if key != "model.bf16":  # None: bf16 where the device has it (CUDA), fp32 on a CPU
            assert value(config, key) == pytest.approx(expected), key
    # a config that gives some optimiser keys keeps the stage's other defaults
    grpo = GRPOConfig(optim={"warmup_steps": 3})
    assert (grpo.optim.learning_rate, grpo.optim.warmup_steps) == (2e-6, 3)
    sft = SFTConfig(optim={"warmup_steps": 5})
    assert (sft.optim.learning_rate, sft.optim.warmup_ratio) == (5e-6, 0.0)


def test_the_paper_map_lists_every_appendix_a_value_with_its_key():
    text = PAPER_MAP.read_text()
    for key in APPENDIX_A:
        assert f"`{key}`" in text, key


def test_the_trainer_gets_the_warm_up_ratio_and_the_accumulation(tmp_path):
    from qsave.train.config import ModelConfig
    from qsave.train.sft import training_arguments

    args = training_arguments(SFTConfig(), ModelConfig(), tmp_path)
    assert (args.learning_rate, args.num_train_epochs) == (5e-6, 3)
    assert args.get_warmup_steps(1000) == 30  # ratio 0.03 of the run's steps
    assert args.gradient_accumulation_steps == 8  # one process: 8 × batch 1
    # with 8 processes (WORLD_SIZE from the launcher) no accumulation; 3 cannot make 8
    assert SFTConfig().grad_accum(8) == 1
    with pytest.raises(ConfigError, match=r"not a multiple of batch_size × processes \(1 × 3\)"):
        SFTConfig().grad_accum(3)
