"""Score-only reading of a think-first checkpoint: after a generated analysis or an empty one.

A stage 1–2 checkpoint answers ``<think>analysis</think>Rating`` (Sec. 3.4.1); its score is
the softmax over the five rating logits at the rating position (Sec. 4.2.2). Score-only can
read that position after a greedy analysis and its generated ``</think>``
(``ThinkFirstReading.GENERATE``, the context training shows) or after a forced empty
``<think></think>`` (``EMPTY_THINK``: no generation, two passes per batch).

This trains the demo recipe's stage 1 — ``qsave train``'s sft stage (:func:`qsave.train.
pipeline.run_pipeline`) on ``train-tiny-cpu.yaml`` (vision warm-up, think-first SFT) at
``--step-scale`` of its steps, on the records of the recipe's corpus (``synth-tiny-cpu.yaml``,
1,440 clips; ``--clips`` writes fewer) — or skips it when ``--workdir`` holds that stage
finished with the same config, loads ``stage1-sft/final``, scores the held-out test clips both
ways through the scoring pipeline (``max_new_tokens`` of the recipe's ``eval``), and prints per
dimension SRCC/PLCC against MOS, the mean and largest |Δr̂| between the readings, how often
their most likely rating agrees, a paired bootstrap 95 % interval of SRCC(generate) −
SRCC(empty-think), the items that could not be read (an analysis that never closes) and the
seconds per clip (frames already decoded). The figures and every clip's r̂ go to
``--workdir/think_first_reading-scale<s>-seed<n>.json``.

    python benchmarks/think_first_reading.py                   # stage 1 at half its steps
    python benchmarks/think_first_reading.py --step-scale 0.25

Figures (CPU, 2 threads; docs/architecture.md, "Think-first reading"), measured with the
earlier in-script demo recipe (240 clips plus a 1200-clip pool, 42 held-out clips), not yet
with the YAML recipe: at step scale 0.5 the readings differ by |Δr̂| ≈ 0.5 on every dimension
(after an empty analysis the model answers about Good whatever the clip), dynamic SRCC 0.785
(generate) vs 0.269 (empty-think); at 0.25, 0.833 vs 0.759 with mean |Δr̂| 0.094. Generate:
0.07–0.10 s per clip, empty-think 0.02 s.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from qsave.data.records import load_records
from qsave.data.synthetic import SynthConfig
from qsave.demo_recipe import DemoConfig, write_records
from qsave.dimensions import DIMENSIONS, mos_to_score
from qsave.eval.metrics import plcc, srcc
from qsave.evaluator import Evaluator, ScoreItem
from qsave.spec import ThinkFirstReading
from qsave.train.common import VideoCache
from qsave.train.pipeline import DONE, run_pipeline, stage_dir

BOOTSTRAP = 2000  # paired resamples of the held-out clips for the SRCC difference


def stage1(workdir: Path, config: DemoConfig, synth: SynthConfig, seed: int):
    """The recipe's training config and its stage 1 checkpoint, trained by the pipeline's sft
    stage (skipped when a run in ``workdir`` finished it with the same config)."""
    write_records(workdir, synth)
    train = config.train(workdir)
    train.model.seed = seed
    train.output_dir = str(workdir / f"run-scale{config.step_scale:g}-seed{seed}")
    return train, run_pipeline(train, ("sft",))["sft"]


def read_both(checkpoint: Path, train, batch_size: int) -> dict:
    """Score the held-out clips with each reading; scores, errors and time per clip."""
    targets: dict[str, dict[str, float]] = {}
    prompts: dict[str, str | None] = {}
    for r in load_records(train.eval.records).records:
        targets.setdefault(r.video, {})[r.dimension] = mos_to_score(r.mos)
        prompts[r.video] = r.prompt
    overrides = {"max_new_tokens": train.eval.max_new_tokens} if train.eval.max_new_tokens else {}
    evaluators = {reading: Evaluator.from_pretrained(str(checkpoint), think_first_reading=reading,
                                                     **overrides) for reading in ThinkFirstReading}
    spec = evaluators[ThinkFirstReading.GENERATE].spec
    videos = VideoCache(spec.video)  # decoded once, with the checkpoint's video settings
    paths, runs = sorted(targets), {}
    items = [ScoreItem(videos.get(p), prompts[p], id=p) for p in paths]
    for reading, evaluator in evaluators.items():
        clock = time.perf_counter()
        results = list(evaluator.score_many(items, batch_size=batch_size))
        runs[reading.value] = {"seconds": time.perf_counter() - clock, "results": results}
    return {"paths": paths, "targets": targets, "runs": runs,
            "max_new_tokens": spec.max_new_tokens}


def figures(scored: dict) -> dict:
    """SRCC/PLCC per dimension and reading, |Δr̂| and rating agreement between the readings."""
    paths, targets, runs = scored["paths"], scored["targets"], scored["runs"]
    both = [i for i in range(len(paths)) if all(r["results"][i].ok for r in runs.values())]
    out: dict = {"n_clips": len(paths), "n_read_both_ways": len(both), "readings": {}}
    for name, run in runs.items():
        results = run["results"]
        errors = [f"{r.id}: {r.error}" for r in results if not r.ok]
        per_dim = {}
        for d in DIMENSIONS:
            ok = [i for i, r in enumerate(results) if r.ok]
            pred = [results[i].scores[d].score for i in ok]
            truth = [targets[paths[i]][d.value] for i in ok]
            per_dim[d.value] = {"srcc": round(float(srcc(pred, truth)), 4),
                                "plcc": round(float(plcc(pred, truth)), 4), "n": len(ok)}
        out["readings"][name] = {"dimensions": per_dim, "errors": errors,
                                 "seconds_per_clip": round(run["seconds"] / len(paths), 4)}
    a, b = (runs[r.value]["results"] for r in ThinkFirstReading)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(both), size=(BOOTSTRAP, len(both)))
    for d in DIMENSIONS:
        r_a = np.array([a[i].scores[d].score for i in both])
        r_b = np.array([b[i].scores[d].score for i in both])
        truth = np.array([targets[paths[i]][d.value] for i in both])
        gaps = [srcc(r_a[k], truth[k]) - srcc(r_b[k], truth[k]) for k in draws]
        low, high = np.nanpercentile(gaps, [2.5, 97.5])
        out.setdefault("between", {})[d.value] = {
            "mean_abs_delta_r": round(float(np.abs(r_a - r_b).mean()), 4),
            "max_abs_delta_r": round(float(np.abs(r_a - r_b).max()), 4),
            "same_rating": round(float(np.mean([a[i].scores[d].rating == b[i].scores[d].rating
                                                for i in both])), 4),
            "srcc_gap_95": [round(float(low), 4), round(float(high), 4)]}
    out["clips"] = {paths[i]: {name: {d.value: run["results"][i].scores[d].score
                                      for d in DIMENSIONS} for name, run in runs.items()}
                    for i in both}
    return out


def print_figures(report: dict) -> None:
    names = list(report["readings"])
    print(f"\n{report['n_clips']} held-out clips ({report['n_read_both_ways']} read both ways)")
    print(f"{'dimension':<10}" + "".join(f"{n + ' SRCC/PLCC':>26}" for n in names)
          + f"{'mean |Δr̂|':>12}{'max |Δr̂|':>11}{'same rating':>13}{'ΔSRCC 95%':>18}")
    for d in DIMENSIONS:
        cells = [report["readings"][n]["dimensions"][d.value] for n in names]
        between = report["between"][d.value]
        print(f"{d.value:<10}" + "".join(f"{c['srcc']:>19.3f}/{c['plcc']:.3f}" for c in cells)
              + f"{between['mean_abs_delta_r']:>12.4f}{between['max_abs_delta_r']:>11.4f}"
              + f"{between['same_rating']:>13.2f}"
              + "{:>10.3f}, {:.3f}".format(*between["srcc_gap_95"]))
    for n in names:
        run = report["readings"][n]
        print(f"{n}: {run['seconds_per_clip']:.3f} s per clip (3 dimensions), "
              f"{len(run['errors'])} clips not read {run['errors'][:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qsave-think-first-reading"))
    parser.add_argument("--step-scale", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="the corpus's and the model's")
    parser.add_argument("--clips", type=int, default=None,
                        help="clips in the corpus (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = DemoConfig(step_scale=args.step_scale, threads=args.threads)
    synth = replace(config.synth(), seed=args.seed, **({} if args.clips is None
                                                       else {"n": args.clips}))
    args.workdir.mkdir(parents=True, exist_ok=True)
    train, checkpoint = stage1(args.workdir, config, synth, args.seed)
    done = json.loads((stage_dir(train.output_dir, "sft") / DONE).read_text())
    scored = read_both(checkpoint, train, args.batch_size)
    report = figures(scored)
    report |= {"step_scale": args.step_scale, "seed": args.seed, "corpus_clips": synth.n,
               "checkpoint": str(checkpoint),
               "max_new_tokens": scored["max_new_tokens"],
               "train_seconds": round(done["seconds"])}
    print_figures(report)
    path = args.workdir / f"think_first_reading-scale{args.step_scale:g}-seed{args.seed}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
