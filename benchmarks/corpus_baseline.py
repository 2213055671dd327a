"""How learnable is the demo's synthetic corpus? A no-network baseline for ``qsave demo --train``.

Hand-made clip statistics (per-frame gradient energy, Laplacian, 8-px block edges, grey-level
count, frame-to-frame and brightness differences; mean, std, min and max over the clip) and a
closed-form ridge regression fitted on the training clips predict the visual and dynamic scores
of the held-out test clips. The clips are the demo recipe's (``DemoConfig().synth()``, the
1,440-clip ``synth-tiny-cpu.yaml``; ``--clips`` writes fewer), written with its records by
:func:`qsave.demo_recipe.write_records`: fitted on the ``train`` split (stage 1's records),
tested on the ``test`` split, decoded with stage 1's video settings (``sft.video`` of
``train-tiny-cpu.yaml``). The printed SRCC/PLCC per dimension (of the 0..1 scores, a linear map
of the MOS) is what the tiny Qwen3-VL of the demo should at least reach; its goal is 0.8.

    python benchmarks/corpus_baseline.py --workdir /tmp/corpus-baseline
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from qsave.data.records import load_records
from qsave.demo_recipe import DemoConfig, write_records
from qsave.eval.metrics import plcc, srcc
from qsave.train.aids import clip_targets
from qsave.train.common import VideoCache
from qsave.video.inputs import PreparedVideo, VideoConfig

DIMENSIONS = ("visual", "dynamic")


def clip_statistics(video: PreparedVideo) -> np.ndarray:
    """Summary statistics of one clip's grey frames, the inputs of the ridge baseline."""
    frames = np.concatenate(video.videos).astype(np.float32) / 255
    grey = frames.mean(-1)  # (T, H, W)
    dx = np.abs(np.diff(grey, axis=2))
    lap = np.abs(4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
                 - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
    per_frame = [
        dx.mean((1, 2)),
        np.abs(np.diff(grey, axis=1)).mean((1, 2)),
        lap.mean((1, 2)),
        dx[:, :, 7::8].mean((1, 2)) / (dx.mean((1, 2)) + 1e-6),  # edges on the 8-px block grid
        np.array([len(np.unique((g * 255).astype(np.uint8))) / 256 for g in grey]),
    ]
    per_step = [np.abs(np.diff(grey, axis=0)).mean((1, 2)), np.abs(np.diff(grey.mean((1, 2))))]
    out = [f(x) for x in per_frame for f in (np.mean, np.std, np.min, np.max)]
    out += [f(x) for x in per_step for f in (np.mean, np.std, np.min, np.max)]
    out += [(x < 1e-3).mean() for x in per_step]  # share of (nearly) frozen steps
    return np.array(out)


def features_and_mos(records, videos: VideoCache) -> tuple[np.ndarray, np.ndarray]:
    """(statistics, 0..1 score per dimension) of every clip of ``records``."""
    targets = clip_targets(records)
    paths = sorted(targets)
    x = np.stack([clip_statistics(videos.get(p)) for p in paths])
    return x, np.array([[targets[p][d] for d in DIMENSIONS] for p in paths])


def ridge(x: np.ndarray, y: np.ndarray, strength: float = 1.0):
    """Closed-form ridge on standardised inputs; returns the predictor."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    design = np.c_[(x - mean) / std, np.ones(len(x))]
    weights = np.linalg.solve(design.T @ design + strength * np.eye(design.shape[1]), design.T @ y)
    return lambda z: np.c_[(z - mean) / std, np.ones(len(z))] @ weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="the corpus and its records are written here")
    parser.add_argument("--clips", type=int, default=None,
                        help="clips in the corpus (default: the recipe's)")
    args = parser.parse_args(argv)
    demo = DemoConfig()
    synth = demo.synth() if args.clips is None else replace(demo.synth(), n=args.clips)
    write_records(args.workdir, synth)
    videos = VideoCache(VideoConfig.from_dict(demo.train(args.workdir).sft.video))
    records = args.workdir / "records"
    x_train, y_train = features_and_mos(load_records(records / "train.jsonl").records, videos)
    x_test, y_test = features_and_mos(load_records(records / "test.jsonl").records, videos)
    predict = ridge(x_train, y_train)(x_test)
    print(f"ridge on hand-made clip statistics: {len(x_train)} training clips, "
          f"{len(x_test)} held-out test clips ({synth.n}-clip corpus)")
    for j, name in enumerate(DIMENSIONS):
        print(f"  {name:8s} SRCC {srcc(predict[:, j], y_test[:, j]):.3f}  "
              f"PLCC {plcc(predict[:, j], y_test[:, j]):.3f}  (the demo's goal: SRCC ≥ 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
