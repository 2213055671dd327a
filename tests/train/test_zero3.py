"""SFT and GRPO under DeepSpeed ZeRO-3 run for real on 2 CPU processes (DeepSpeed's CPU
accelerator, gloo), against the same 2 processes under DDP (tests/train/test_multiprocess.py).

configs/deepspeed-zero3.json with bf16 off (no bf16 on the CPU) is the DeepSpeed config of
both stages, as configs/accelerate-zero3.yaml and configs/paper-appendix-a.yaml make it:
SFT through the Trainer (``sft.deepspeed``), GRPO through ``accelerate`` (its ``auto`` values
filled by ``make_grpo_state``). The final checkpoints, whose weights ZeRO-3 partitions over
the processes, must load whole and equal the DDP run's: both runs average the same gradients
in fp32 (ZeRO reduce-scatters what DDP all-reduces) and take the same AdamW steps.
GRPO takes 4 prompts per step, so each process accumulates 2 micro-batches per update.
Measured: ZeRO-3 vs DDP final weights differ by 4.2e-6–1.5e-5 (SFT, over runs) and 1.4e-6
(GRPO), a step moved them by 1.5e-3. Wall time ≈ 110 s on 2 cores (DDP ≈ 45 s, ZeRO-3 ≈ 57 s,
mostly start-up).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_demo_fp32, torchrun
from qsave.data.records import write_records

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HERE = Path(__file__).parent
SFT_STEPS, GRPO_STEPS, PROMPTS, GROUP = 2, 2, 4, 4
WEIGHT_ATOL = 5e-5  # fp32 sums in another order (ZeRO-3 reduce-scatter); a step moves ~1.5e-3


@pytest.fixture(scope="module")
def folder(corpus_records, tmp_path_factory):
    """Records, an fp32 ZeRO-3 config and the two stages' configs (GRPO from the shipped
    tiny-demo, whose rollouts earn rewards that differ within a group)."""
    folder = tmp_path_factory.mktemp("zero3")
    write_records(corpus_records["train"][:8], folder / "records.jsonl")
    tiny_demo_fp32(folder)
    zero3 = json.loads((CONFIGS / "deepspeed-zero3.json").read_text())
    zero3["bf16"] = {"enabled": False}
    (folder / "zero3-fp32.json").write_text(json.dumps(zero3))
    optim = {"learning_rate": 1e-3, "warmup_ratio": 0.0}
    for name, deepspeed in (("ddp", None), ("zero3", "zero3-fp32.json")):
        sft = {"answer_format": "think-first", "model": {"model": "tiny", "seed": 0},
               "sft": {"records": "records.jsonl", "max_steps": SFT_STEPS, "batch_size": 1,
                       "effective_batch_size": 4, "save_steps": SFT_STEPS,
                       "deepspeed": deepspeed, "optim": optim}}
        grpo = {"answer_format": "rating-first",
                "model": {"model": str(folder / "tiny-demo-fp32"), "seed": 0},
                "grpo": {"records": "records.jsonl", "max_steps": GRPO_STEPS,
                         "save_steps": GRPO_STEPS, "prompts_per_step": PROMPTS,
                         "num_generations": GROUP, "micro_batch_size": 1,
                         "max_new_tokens": 8, "reward_parsing": "lenient", "optim": optim,
                         "temperature": 2.0}}  # varied ratings: rewards differ in a group
        (folder / f"sft-{name}.json").write_text(json.dumps(sft))
        (folder / f"grpo-{name}.json").write_text(json.dumps(grpo))
    return folder


def launch(folder: Path, name: str) -> Path:
    """Both stages on 2 CPU processes; under ZeRO-3 with the environment `accelerate launch`
    exports for configs/accelerate-zero3.yaml."""
    out = folder / name
    worker = HERE / ("zero3_worker.py" if name == "zero3" else "distributed_worker.py")
    env = {}
    if name == "zero3":
        env = {"DS_ACCELERATOR": "cpu", "ACCELERATE_USE_DEEPSPEED": "true",
               "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(folder / "zero3-fp32.json"),
               "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
               "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"}
    torchrun(worker, [out, folder / f"sft-{name}.json", folder / f"grpo-{name}.json"], 2, env)
    return out


@pytest.fixture(scope="module")
def runs(folder):
    return {name: launch(folder, name) for name in ("ddp", "zero3")}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_zero3_final_checkpoint_is_whole_and_equals_ddp(runs, folder, tiny_dir, stage):
    from transformers import Qwen3VLForConditionalGeneration

    final = runs["zero3"] / stage / "final"
    zero3 = load_file(final / "model.safetensors")
    ddp = load_file(runs["ddp"] / stage / "final" / "model.safetensors")
    start = tiny_dir if stage == "sft" else folder / "tiny-demo-fp32"
    initial = load_file(start / "model.safetensors")
    assert zero3.keys() == ddp.keys() == initial.keys()  # whole, under the model's own names
    assert all(zero3[k].shape == initial[k].shape for k in zero3)
    gap = max((zero3[k] - ddp[k]).abs().max().item() for k in zero3)
    moved = max((zero3[k] - initial[k]).abs().max().item() for k in zero3)
    assert gap <= WEIGHT_ATOL and gap * 25 < moved, f"ZeRO-3 vs DDP: {gap}; moved {moved}"
    loaded = Qwen3VLForConditionalGeneration.from_pretrained(final, dtype=torch.float32)
    assert all(torch.equal(loaded.state_dict()[k], zero3[k]) for k in zero3)
    assert (final / "qsave_scorer.json").is_file() and (final / "tokenizer.json").is_file()
