"""How learnable is the demo's synthetic corpus? A no-network baseline for ``qsave demo --train``.

Hand-made clip statistics (per-frame gradient energy, Laplacian, 8-px block edges, grey-level
count, frame-to-frame and brightness differences; mean, std, min and max over the clip) and a
closed-form ridge regression fitted on the training clips predict the visual and dynamic MOS of
the held-out test clips. The clips are the demo's: its 240-clip corpus plus a 1200-clip pool
from seed + 1000 written as MP4 here, decoded with the demo's uniform 8 fps video settings. The
printed SRCC/PLCC per dimension is what the tiny Qwen3-VL of the demo (issue 7) should at least
reach; its goal is 0.8.

    python benchmarks/corpus_baseline.py --workdir /tmp/corpus-baseline
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qsave.data.annotations import load_videos, mos_from_videos
from qsave.data.records import RecordConfig, build_records
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.eval.metrics import plcc, srcc
from qsave.train.demo_recipe import DemoConfig
from qsave.video.inputs import VideoConfig, prepare_video

DIMENSIONS = ("visual", "dynamic")


def clip_statistics(path: str, config: VideoConfig) -> np.ndarray:
    """Summary statistics of one clip's grey frames, the inputs of the ridge baseline."""
    frames = np.concatenate(prepare_video(path, config).videos).astype(np.float32) / 255
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


def split_data(corpus: Path, split: str, config: VideoConfig, exclude: set[str] = frozenset()):
    """(statistics, MOS per dimension, prompts) of a corpus split, MOS from its raters."""
    videos = load_videos(corpus / "manifest.jsonl")
    records = build_records(videos, mos_from_videos(videos), RecordConfig()).records
    mos: dict[str, dict[str, float]] = {}
    prompts: dict[str, str] = {}
    for r in records:
        if r.split == split and r.prompt not in exclude:
            mos.setdefault(r.video, {})[r.dimension] = r.mos
            prompts[r.video] = r.prompt
    paths = sorted(mos)
    x = np.stack([clip_statistics(p, config) for p in paths])
    y = np.array([[mos[p][d] for d in DIMENSIONS] for p in paths])
    return x, y, {prompts[p] for p in paths}


def ridge(x: np.ndarray, y: np.ndarray, strength: float = 1.0):
    """Closed-form ridge on standardised inputs; returns the predictor."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    design = np.c_[(x - mean) / std, np.ones(len(x))]
    weights = np.linalg.solve(design.T @ design + strength * np.eye(design.shape[1]), design.T @ y)
    return lambda z: np.c_[(z - mean) / std, np.ones(len(z))] @ weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="corpora are written here")
    args = parser.parse_args(argv)
    demo = DemoConfig()
    synth = {"size": demo.size, "seconds": demo.seconds}
    corpus, pool = args.workdir / "corpus", args.workdir / "pool"
    for path, n, seed in ((corpus, demo.n_clips, demo.seed), (pool, demo.pool_clips,
                                                               demo.seed + 1000)):
        if not (path / "manifest.jsonl").is_file():
            write_corpus(path, SynthConfig(n=n, seed=seed, **synth))
    video = VideoConfig(mode=demo.video_mode, uniform_fps=demo.uniform_fps)
    x_test, y_test, held_out = split_data(corpus, "test", video)
    parts = [split_data(corpus, "train", video), split_data(pool, "train", video, held_out)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    predict = ridge(x_train, y_train)(x_test)
    print(f"ridge on hand-made clip statistics: {len(x_train)} training clips, "
          f"{len(x_test)} held-out test clips")
    for j, name in enumerate(DIMENSIONS):
        print(f"  {name:8s} SRCC {srcc(predict[:, j], y_test[:, j]):.3f}  "
              f"PLCC {plcc(predict[:, j], y_test[:, j]):.3f}  (the demo's goal: SRCC ≥ 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
