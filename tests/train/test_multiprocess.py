"""The multi-process path run for real: SFT and GRPO launched with ``torchrun`` on 2 CPU
processes (gloo) against 1 process on the same global batch, and the ZeRO-3 configs read by
DeepSpeed's and accelerate's own parsers.

The same global batch:

* SFT (transformers Trainer): 8 records, ``effective_batch_size`` 4, ``batch_size`` 1, so
  accumulation 4 on 1 process and 2 on 2. The Trainer draws one permutation per epoch from
  the seed and accelerate deals its batches out in turn (process k takes batches k, k + 2, …),
  so a step's 4 records are the same 4 on 1 or 2 processes; DDP's average of the processes'
  accumulated means is then the mean of the 4 gradients, summed in another order.
* GRPO: each of a step's 2 prompts samples with a seed of (seed, step, its place in the step),
  ``micro_batch_size`` 1, the loss normalised by the step's tokens on all processes.

Tolerances: the two runs differ only in the order fp32 gradients are summed (one process adds
g1 + g2 + g3 + g4; two all-reduce (g1 + g3) + (g2 + g4)), a few ulps. Losses must agree to a
relative 1e-5 (SFT, loss ≈ 7: ~150 fp32 ulps) or 1e-6 absolute (GRPO statistics, ≈ 1e-2),
final weights to 1e-5, a hundredth of a step's AdamW move at lr 1e-3. Measured: SFT losses
agree exactly (gradient norms to 2.4e-7, SFT weights to 3.9e-7); GRPO statistics, rollouts and
weights agree exactly. GRPO with one prompt per process is exact by construction: its loss
scaled by the power of two 2 scales every gradient exactly, and a + b = b + a.
Every process runs with ``OMP_NUM_THREADS=1``, so both runs use the same CPU kernels.
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import tiny_demo_fp32, torchrun
from qsave.data.records import write_records
from qsave.train.config import ModelConfig, SFTConfig, load_train_config
from qsave.train.grpo import load_rollouts
from qsave.train.sft import training_arguments

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
WORKER = Path(__file__).with_name("distributed_worker.py")
SFT_STEPS, GRPO_STEPS, PROMPTS, GROUP = 3, 2, 2, 4
LOSS_RTOL, STAT_ATOL, WEIGHT_ATOL = 1e-5, 1e-6, 1e-5


@pytest.fixture(scope="module")
def folder(corpus_records, tmp_path_factory):
    """Records and the two stages' training configs. GRPO starts from the shipped tiny-demo
    (float32 copy; it answers rating first), whose rollouts earn rewards that differ within a
    group; the random tiny model's earn none, and zero advantages would compare nothing."""
    folder = tmp_path_factory.mktemp("distributed")
    write_records(corpus_records["train"][:8], folder / "records.jsonl")
    tiny_demo_fp32(folder)
    optim = {"learning_rate": 1e-3, "warmup_ratio": 0.0}
    sft = {"answer_format": "think-first", "model": {"model": "tiny", "seed": 0},
           "sft": {"records": "records.jsonl", "max_steps": SFT_STEPS, "batch_size": 1,
                   "effective_batch_size": 4, "save_steps": SFT_STEPS, "logging_steps": 1,
                   "optim": optim}}
    grpo = {"answer_format": "rating-first",
            "model": {"model": str(folder / "tiny-demo-fp32"), "seed": 0},
            "grpo": {"records": "records.jsonl", "max_steps": GRPO_STEPS,
                     "save_steps": GRPO_STEPS,
                     "prompts_per_step": PROMPTS, "num_generations": GROUP,
                     "micro_batch_size": 1, "updates_per_batch": 2, "kl_beta": 0.1,
                     "max_new_tokens": 8, "reward_parsing": "lenient", "optim": optim,
                     "temperature": 2.0}}  # varied ratings: rewards differ in a group
    for name, config in (("sft", sft), ("grpo", grpo)):
        (folder / f"{name}.json").write_text(json.dumps(config))
    return folder


def launch(folder: Path, processes: int) -> Path:
    """Both stages in ``processes`` CPU processes (torchrun, gloo); their output folder."""
    out = folder / f"{processes}-process"
    torchrun(WORKER, [out, folder / "sft.json", folder / "grpo.json"], processes)
    return out


@pytest.fixture(scope="module")
def runs(folder):
    return {n: launch(folder, n) for n in (1, 2)}


def ranks(run: Path, stage: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / stage).glob("rank-*.json"))]


def assert_weights_agree(runs: dict, stage: str, initial: dict) -> None:
    """The final checkpoints of 1 and 2 processes agree, and training moved the weights."""
    one, two = (load_file(runs[n] / stage / "final" / "model.safetensors") for n in (1, 2))
    assert one.keys() == two.keys() == initial.keys()
    gap = max((one[k] - two[k]).abs().max().item() for k in one)
    moved = max((one[k] - initial[k]).abs().max().item() for k in one)
    assert gap <= WEIGHT_ATOL < moved / 100, f"1 vs 2 processes: {gap}; moved {moved}"


@pytest.mark.slow
def test_sft_on_two_processes_matches_one(runs, tiny_dir):
    two = ranks(runs[2], "sft")
    assert len(two) == 2 and two[0]["weights"] == two[1]["weights"]
    history = {}
    for n in (1, 2):
        state = runs[n] / "sft" / f"checkpoint-{SFT_STEPS}" / "trainer_state.json"
        history[n] = [row for row in json.loads(state.read_text())["log_history"]
                      if "loss" in row]
    assert [row["step"] for row in history[2]] == list(range(1, SFT_STEPS + 1))
    for single, double in zip(history[1], history[2], strict=True):
        assert double["learning_rate"] == single["learning_rate"]
        assert double["loss"] == pytest.approx(single["loss"], rel=LOSS_RTOL)
    assert_weights_agree(runs, "sft", load_file(tiny_dir / "model.safetensors"))


@pytest.mark.slow
def test_grpo_on_two_processes_matches_one(runs, folder):
    (one,), two = ranks(runs[1], "grpo"), ranks(runs[2], "grpo")
    assert one["local_rollouts"] == [PROMPTS * GROUP] * GRPO_STEPS
    # the step's prompts were split: each process sampled half of them
    assert [r["local_rollouts"] for r in two] == [[PROMPTS // 2 * GROUP] * GRPO_STEPS] * 2
    assert two[0]["weights"] == two[1]["weights"]
    assert two[0]["steps"] == two[1]["steps"]  # every process has the step's statistics
    for single, double in zip(one["steps"], two[0]["steps"], strict=True):
        assert double == pytest.approx(single, abs=STAT_ATOL)
    rollouts = [load_rollouts(runs[n] / "grpo" / "rollouts.jsonl") for n in (1, 2)]
    assert len(rollouts[1]) == GRPO_STEPS * PROMPTS * GROUP  # written once, by one process
    assert rollouts[1] == rollouts[0]  # the same samples, rewards and advantages
    assert any(r.advantage != 0 for r in rollouts[0])  # so the policy had a gradient
    assert_weights_agree(runs, "grpo", load_file(folder / "tiny-demo-fp32" / "model.safetensors"))


def test_the_zero3_json_passes_deepspeeds_own_parser(tiny, tmp_path):
    """configs/deepspeed-zero3.json with its "auto" values filled the way the Trainer fills
    them (``HfTrainerDeepSpeedConfig``) for the TrainingArguments of an SFTConfig."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed "
                        "(DS_BUILD_OPS=0 pip install deepspeed: no CUDA needed)")
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError
    from transformers.integrations.deepspeed import (
        HfTrainerDeepSpeedConfig,
        unset_hf_deepspeed_config,
    )

    config = SFTConfig(batch_size=2)
    args = training_arguments(config, ModelConfig(), tmp_path)
    filled = HfTrainerDeepSpeedConfig(str(CONFIGS / "deepspeed-zero3.json"))
    try:  # the object registers itself globally: models built meanwhile would be ZeRO-3's
        filled.trainer_config_process(args)
        filled.trainer_config_finalize(args, tiny.model, num_training_steps=10)
    finally:
        unset_hf_deepspeed_config()
    parsed = DeepSpeedConfig(filled.config)
    assert parsed.zero_optimization_stage == 3
    assert (parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu,
            parsed.gradient_accumulation_steps) == (8, 2, config.grad_accum(1))
    assert parsed.gradient_clipping == config.optim.max_grad_norm
    assert parsed.bfloat16_config.enabled == args.bf16
    assert parsed.zero_config.gather_16bit_weights_on_model_save  # a whole model on save
    with pytest.raises(ValidationError, match="overlap_comms"):  # the parser rejects a typo
        DeepSpeedConfig({**filled.config, "zero_optimization": {"stage": 3,
                                                                "overlap_comms": True}})


def test_the_accelerate_zero3_config_loads_and_finds_the_json():
    """accelerate's own loader reads configs/accelerate-zero3.yaml; its DeepSpeed file, read
    from where ``accelerate launch`` runs (the repository root, as the launch line in
    paper-appendix-a.yaml shows), is the one that config's SFT stages give the Trainer."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cluster = load_config_from_file(str(CONFIGS / "accelerate-zero3.yaml"))
    assert cluster.distributed_type == DistributedType.DEEPSPEED
    json_file = CONFIGS.parent / cluster.deepspeed_config["deepspeed_config_file"]
    assert json_file.resolve() == (CONFIGS / "deepspeed-zero3.json").resolve()
    train = load_train_config(CONFIGS / "paper-appendix-a.yaml")
    for stage in (train.sft, train.cooloff.sft):
        assert Path(stage.deepspeed).resolve() == json_file.resolve()
