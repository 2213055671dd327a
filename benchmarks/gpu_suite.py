"""One GPU run of the scale figures (issue 21), within ~8 minutes on one H100/H200.

1. scoring near the limit (``score_throughput.py``): videos/s, TFLOP/s and MFU per batch size
   (1, 8, 16) for the SlowFast plan and uniform at the same budget, and the levers of
   ``qsave.model.speed``;
2. explain mode's generation speed (``explain_speed.py``): tokens/s per sequence at batch 1 and
   8, plain ``generate`` against the static KV cache and the compiled decoding step;
3. one training step (``train_step.py``): SFT (LoRA and full with gradient checkpointing) and a
   GRPO step with G = 8 rollouts of 256 tokens: peak memory, step time, tokens/s; which of
   App. A's settings fit one GPU.

Parts 1 and 2 share one model; it is freed before part 3 builds its own. Each part has a time
budget (``--budget-s`` split 40 / 20 / 40 %); a row past its budget is recorded as skipped, an
out-of-memory or failing row as such, and the run goes on. Everything lands in
``OUT/gpu_suite.json`` (``summary``: MFU per batch size, explain tokens/s, training step
memory and time; ``score``, ``explain``, ``train``: each script's full figures) and the
printed log.

The GPU machines lent to this project have no PyAV and an older transformers, and reach no
package registry. Bring the wheels with the run (see docs/gpu.md):

    python benchmarks/gpu_suite.py --shape 8b --device cuda --out out/         # the GPU run
    python benchmarks/gpu_suite.py --shape tiny --device cpu --out /tmp/suite  # the dry run

GPU figures: not measured yet (no GPU lent in the session that built this suite).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import explain_speed  # noqa: E402  (beside this file)
import score_throughput  # noqa: E402
import train_step  # noqa: E402

SHARES = {"score": 0.4, "explain": 0.2, "train": 0.4}  # of --budget-s
TINY_CLIP = ["--seconds", "2", "--size", "320x240"]  # the dry run's clip: seconds on 2 cores


def part_args(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each script's arguments: the issue's sizes on a GPU, small ones for the tiny dry run."""
    common = ["--shape", args.shape, "--device", args.device,
              *(["--dtype", args.dtype] if args.dtype else [])]
    budget = {part: ["--budget-s", f"{args.budget_s * share:.0f}"]
              for part, share in SHARES.items()}
    out = Path(args.out)
    if args.shape == "tiny":
        clip, repeats = TINY_CLIP, ["--repeats", "2"]
        score = ["--batch-sizes", "1", "4", "--levers", "pack", "vision-grouped", "full-logits"]
        explain = ["--new-tokens", "16", "--explain-tokens", "8", "--batch-sizes", "1", "2"]
        train = ["--seq-seconds", "1", "--size", "64x48", "--generations", "2",
                 "--new-tokens", "8", "--steps", "1"]
    else:
        clip, repeats = [], ["--repeats", "3"]
        score = ["--batch-sizes", "1", "8", "16", "--clips", "slowfast", "uniform-matched"]
        explain = ["--compile"]
        train = ["--steps", "2"]
    return {
        "score": [*common, *clip, *repeats, *score, *budget["score"],
                  "--json", str(out / "score.json")],
        "explain": [*common, *clip, *repeats, *explain, *budget["explain"],
                    "--json", str(out / "explain.json")],
        "train": [*common, *train, *budget["train"], "--json", str(out / "train.json")],
    }


def summary(score: dict, explain: dict, train: dict) -> dict:
    """The figures the issue asks for, from the three scripts' outputs."""
    mfu = {plan: {str(r["batch"]): r["shared"]["mfu"] if "shared" in r else r.get("status")
                  for r in rows} for plan, rows in score["rows"].items()}
    tokens = {name: {str(r["batch"]): r.get("tokens_per_s_per_sequence", r.get("status"))
                     for r in rows} for name, rows in explain["rows"].items()}
    steps = {mode: {key: r.get(key) for key in ("status", "peak_memory_gib", "step_seconds",
                                                 "tokens_per_s", "generated_tokens_per_s",
                                                 "optimizer")}
             for mode, r in train["train_step"].items()}
    return {"peak_tflops": score["peak_tflops"], "mfu_shared": mfu,
            "explain_tokens_per_s_per_sequence": tokens, "train_step": steps,
            "fit": [{k: row.get(k) for k in ("stage", "setting", "fits", "memory_gib", "basis",
                                             "needs")} for row in train["fit"]]}


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("tiny", "8b"), default="8b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--budget-s", type=float, default=420.0, help="all three parts together")
    p.add_argument("--out", required=True, help="folder for gpu_suite.json and each part's")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    parts, started, results = part_args(args), time.perf_counter(), {}
    device, dtype = score_throughput.device_and_dtype(args)
    model = score_throughput.build(args.shape, device, dtype)
    print(f"== built {args.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    print("== 1. scoring throughput", flush=True)
    results["score"] = score_throughput.run(parts["score"], model=model)
    print("== 2. explain mode", flush=True)
    results["explain"] = explain_speed.run(parts["explain"], model=model)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print("== 3. one training step", flush=True)
    results["train"] = train_step.run(parts["train"])
    print(train_step.report(results["train"]), flush=True)
    suite = {"summary": summary(results["score"], results["explain"], results["train"]),
             "seconds": time.perf_counter() - started, "argv": sys.argv[1:], **results}
    path = Path(args.out) / "gpu_suite.json"
    path.write_text(json.dumps(suite, indent=2, default=str))
    print(f"== wrote {path} after {suite['seconds']:.0f} s", flush=True)
    print(json.dumps(suite["summary"], indent=2, default=str))
    return suite


if __name__ == "__main__":
    run()
