"""benchmarks/train_step.py dry-run on the tiny model (CPU): every mode runs the project's real
SFT and GRPO steps and reports its figures, and the fit table covers App. A's settings."""

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL = ["--shape", "tiny", "--device", "cpu", "--seq-seconds", "1", "--size", "64x48",
         "--generations", "2", "--new-tokens", "6"]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # train_step imports score_throughput beside it
    try:
        yield importlib.import_module("train_step")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def dry_run(bench, tmp_path_factory):
    path = tmp_path_factory.mktemp("train-step") / "step.json"
    out = bench.run([*SMALL, "--modes", "all", "--steps", "1", "--optimizer", "adamw8bit",
                     "--json", str(path)])
    return out, json.loads(path.read_text())


def test_every_mode_runs_a_step(dry_run):
    out, written = dry_run
    assert written == out
    assert set(out) == {"env", "clip", "model", "train_step", "fit"}
    assert {"torch", "transformers", "device", "dtype", "date"} <= set(out["env"])
    steps = out["train_step"]
    assert list(steps) == ["sft-lora", "sft-full", "grpo", "grpo-full"]
    for mode, r in steps.items():
        assert r["status"] == "ok", (mode, r["error"])
        assert r["step_seconds"] > 0 and len(r["step_times"]) == 1
        assert r["peak_memory_bytes"] > 0 and "RSS" in r["memory_kind"]
        assert r["tokens_per_s"] > 0 and r["sequence_tokens"] > out["clip"]["video_tokens"]
        assert r["optimizer"].startswith("adamw")


def test_sft_logs_a_finite_loss_and_lora_trains_fewer_parameters(dry_run):
    steps = dry_run[0]["train_step"]
    for mode in ("sft-lora", "sft-full"):
        r = steps[mode]
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert r["loss"] == pytest.approx(r["loss_parts"]["ce"] + r["loss_parts"]["mse"])
        # bitsandbytes is not installed here (or needs CUDA): AdamW, and the note says why
        assert "adamw8bit" in r["optimizer_note"] and "used adamw" in r["optimizer_note"]
    lora, full = steps["sft-lora"], steps["sft-full"]
    assert (lora["adapter"], full["adapter"]) == ("lora", "full")
    assert 0 < lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert steps["grpo"]["trainable_params"] == lora["trainable_params"]  # 1-GPU config's LoRA


def test_grpo_rollouts_have_the_fixed_length(dry_run):
    for mode in ("grpo", "grpo-full"):
        r = dry_run[0]["train_step"][mode]
        assert r["generated_length"] == 6 and r["generated_tokens"] == 2 * 6
        assert r["generated_tokens_per_s"] > 0 and math.isfinite(r["loss"])


def test_fit_table_covers_app_a(dry_run):
    out = dry_run[0]
    rows = out["fit"]
    assert [r["stage"] for r in rows] == ["SFT (stages 1, 3)"] * 3 + ["GRPO (stage 2)"] * 3
    assert all(r["fits"] is not None and r["memory_gib"] > 0 for r in rows)
    zero3 = [r for r in rows if "ZeRO-3" in r["setting"]]
    assert len(zero3) == 2 and all(r["basis"].startswith("estimate") for r in zero3)
    # App. A's ZeRO-3 estimate: 16 bytes per parameter plus the measured activations
    assert zero3[0]["memory_gib"] * 2**30 >= 16 * out["model"]["params"]
    assert all(r["basis"].startswith("measured") for r in rows if r not in zero3)
    assert "G = 2 x 6 tokens" in rows[-1]["setting"]


def test_a_setting_that_does_not_fit_gets_the_zero3_launch(bench, tmp_path):
    out = bench.run([*SMALL, "--budget-s", "0", "--capacity-gib", "0.001"])
    assert {r["status"] for r in out["train_step"].values()} == {"skipped: budget"}
    full = [r for r in out["fit"] if "lora" not in r["setting"].lower()]
    for row in full:
        assert row["basis"].startswith("estimate") and row["fits"] is False
        assert "configs/deepspeed-zero3.json + configs/accelerate-zero3.yaml" in row["needs"]
        assert ("accelerate launch --config_file configs/accelerate-zero3.yaml -m qsave.cli "
                "train --config configs/paper-appendix-a.yaml") in row["needs"]
    lora = [r for r in out["fit"] if "LoRA" in r["setting"]]
    assert len(lora) == 2 and all("LoRA with ZeRO-3 is not supported" in r["needs"] for r in lora)
    assert "fit on one GPU of 0.0 GiB" in bench.report(out)
