"""``qsave demo``: the README's main command, runnable anywhere, offline, on the CPU.

It writes a small synthetic corpus (clips with labelled defects and known MOS, see
:mod:`qsave.data.synthetic`) and scores the held-out clips on the three dimensions with the
embedded tiny Qwen3-VL, printing the predicted MOS beside the ground truth.

With ``train=True`` it first trains the tiny model through the paper's three stages (plus a
demo-only vision warm-up, :mod:`qsave.demo_recipe`), prints SRCC/PLCC per stage like
Table 4, and caches the checkpoint where ``--model tiny`` finds it; a second run only scores.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS
from qsave.evaluator import Evaluator, ScoreItem
from qsave.model.load import TINY_RANDOM_ID
from qsave.spec import TINY, tiny_demo_dir

DEMO_CORPUS = SynthConfig(n=8, seed=0, size=64, fps=8, seconds=2.0)  # 6 train, 1 test, 1 rl


def run_demo(
    workdir: Path,
    console: Console,
    corpus: SynthConfig = DEMO_CORPUS,
    train: bool = False,
    minutes: float = 10.0,
    ablation: bool = False,
) -> None:
    """Synthesize ``corpus`` under ``workdir`` and score its test clips with the tiny model
    (after training it through the three stages when ``train``; the clips then follow the
    training's corpus design, and the checkpoint's ``qsave_scorer.json`` its video settings)."""
    if train:
        from qsave.demo_recipe import DemoConfig, train_demo

        config = DemoConfig(minutes=minutes, ablation=ablation)
        train_demo(workdir / "train", console, config=config, checkpoint_dir=tiny_demo_dir())
        corpus = replace(corpus, kinds=config.kinds, every_dimension=config.every_dimension)
    written = write_corpus(workdir / "corpus", corpus)
    console.print(f"wrote {len(written.clips)} synthetic clips to {workdir / 'corpus'}")
    held_out = [clip for clip in written.clips if clip.split == "test"] or written.clips[:1]
    evaluator = Evaluator.from_pretrained(TINY)  # the trained demo's frames, when cached
    items = [ScoreItem(workdir / "corpus" / c.path, c.prompt, c.id) for c in held_out]
    results = list(evaluator.score_many(items))

    table = Table(title=f"tiny Qwen3-VL ({evaluator.info.id}): predicted MOS / ground truth")
    table.add_column("clip")
    table.add_column("prompt", max_width=40)
    for dimension in DIMENSIONS:
        table.add_column(dimension.value, justify="right")
    for clip, result in zip(held_out, results, strict=True):
        if not result.ok:
            table.add_row(clip.id, clip.prompt, *(["error"] * len(DIMENSIONS)))
            console.print(f"[red]{clip.id}: {result.error}")
            continue
        cells = [f"{result.scores[d].mos:.2f} / {clip.mos[d.value]:.2f}" for d in DIMENSIONS]
        table.add_row(clip.id, clip.prompt, *cells)
    console.print(table)
    if evaluator.info.id == TINY_RANDOM_ID:
        console.print(
            "[yellow]The tiny model has random weights: these scores mean nothing. "
            "They show the pipeline (decode → SlowFast → Qwen3-VL → rating-token expectation) "
            "end to end; `qsave demo --train` trains the tiny model first (see README)."
        )
