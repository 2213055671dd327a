"""``qsave demo --train``: the tiny-model CPU recipe, run exactly as a user runs it.

It is ``qsave data synth --config configs/synth-tiny-cpu.yaml`` (the corpus), records of its
train / rl / test splits with the corpus's ground-truth MOS (``qsave data records`` on its
manifest), then ``qsave train --config configs/train-tiny-cpu.yaml`` (:func:`qsave.train.
pipeline.run_pipeline`) with those records and the test split as ``eval.records``: the paper's
three stages (Sec. 4.3) with the config's aids for tiny models (:mod:`qsave.train.aids`). The
two YAML files ship in ``qsave/assets/recipes`` (``configs/`` links to them).

With ``ablation`` stage 1 also runs on ``ablation_mode`` frames (the same 8 fps frames, one run
at one size within each clip's SlowFast token count): Table 4's "w/o SlowFast" row. The run
folder is resumable and fingerprinted like any ``qsave train`` run, so a second call with the
same recipe only scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsave.dimensions import DIMENSIONS

if TYPE_CHECKING:  # imported where used: qsave.data.synthetic loads scipy and PIL
    from qsave.data.synthetic import SynthConfig

RECIPES = Path(__file__).parent / "assets" / "recipes"
SYNTH_RECIPE = RECIPES / "synth-tiny-cpu.yaml"
TRAIN_RECIPE = RECIPES / "train-tiny-cpu.yaml"
STAGE_NAMES = {"sft": "1 SFT", "grpo": "2 GRPO", "cooloff": "3 cool-off SFT"}
SCALED = ("sft.max_steps", "grpo.max_steps", "cooloff.sft.max_steps", "aids.vision_warmup_steps")


@dataclass(frozen=True)
class DemoConfig:
    """What ``qsave demo --train`` adds to the two recipe files.

    ``step_scale`` multiplies every stage's step count; it is not a time budget (data,
    loading and scoring do not shrink).
    """

    step_scale: float = 1.0  # multiplies the recipe's step counts (1.0: the recipe)
    ablation: bool = False  # also train stage 1 w/o SlowFast at the same tokens (Table 4)
    ablation_mode: str = "uniform-matched"  # the frames of that row: all 16 at one size
    threads: int = 2  # torch CPU threads

    def synth(self) -> SynthConfig:
        """The corpus design (a ``SynthConfig`` of ``synth-tiny-cpu.yaml``); its test split is
        the held-out set."""
        from qsave.data.synthetic import SynthConfig, load_synth_config

        return SynthConfig.from_mapping(load_synth_config(SYNTH_RECIPE))

    def train(self, workdir: str | Path, frames: str | None = None) -> Any:
        """The training config (``train-tiny-cpu.yaml``) on the records in ``workdir``, steps
        scaled; ``frames`` replaces stage 1's video mode (the ablation)."""
        from qsave.train.config import load_train_config

        workdir = Path(workdir)
        records = workdir / "records"
        sets = [f"output_dir={workdir / ('run' if frames is None else 'run-' + frames)}",
                f"sft.records={records / 'train.jsonl'}", f"grpo.records={records / 'rl.jsonl'}",
                f"eval.records={records / 'test.jsonl'}"]
        config = load_train_config(TRAIN_RECIPE, sets)
        for key in SCALED:
            *parents, last = key.split(".")
            owner = config
            for part in parents:
                owner = getattr(owner, part)
            setattr(owner, last, max(1, round(getattr(owner, last) * self.step_scale)))
        if frames is not None:
            config.sft.video = {**config.sft.video, "mode": frames}
        return config

    def provenance(self, workdir: str | Path) -> dict[str, Any]:
        """The whole recipe: this config, the corpus design and the resolved training config."""
        train = self.train(workdir).to_dict()
        for key in ("output_dir",):
            train.pop(key)
        for section, key in (("sft", "records"), ("grpo", "records"), ("eval", "records")):
            train[section][key] = Path(train[section][key]).name
        return {"demo": asdict(self), "synth": json.loads(json.dumps(asdict(self.synth()))),
                "train": train}


@dataclass
class StageScore:
    """SRCC/PLCC of one stage on one dimension (held-out test clips)."""

    stage: str
    dimension: str
    srcc: float
    plcc: float
    unscored: int = 0  # test clips left out: their analysis did not close (think-first)


@dataclass
class DemoReport:
    """Per-stage correlations (Table 4 layout), timings and where the checkpoint is."""

    scores: list[StageScore] = field(default_factory=list)
    n_test: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""
    notes: list[str] = field(default_factory=list)

    def table(self) -> Any:
        """A rich Table: one row per stage, SRCC/PLCC per dimension."""
        from rich.table import Table

        table = Table(title=f"tiny Qwen3-VL on {self.n_test} held-out synthetic clips")
        table.add_column("stage")
        for d in DIMENSIONS:
            table.add_column(f"{d.value} SRCC/PLCC", justify="right")
        for stage in dict.fromkeys(s.stage for s in self.scores):
            cells = {s.dimension: f"{s.srcc:.3f}/{s.plcc:.3f}" for s in self.scores
                     if s.stage == stage}
            table.add_row(stage, *(cells.get(d.value, "—") for d in DIMENSIONS))
        return table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_records(workdir: Path, synth: SynthConfig) -> dict[str, int]:
    """The corpus (written once per design, as ``qsave data synth`` writes it) and the
    records of its splits in ``workdir/records/{train,rl,test}.jsonl`` (the manifest's MOS,
    as ``qsave data records --videos manifest.jsonl``); returns the records per split."""
    from qsave.data.annotations import load_videos, mos_from_videos
    from qsave.data.records import RecordConfig, build_records
    from qsave.data.records import write_records as write
    from qsave.data.synthetic import write_corpus

    folder = workdir / "corpus"
    design = folder / "synth_config.json"
    wanted = json.loads(json.dumps(asdict(synth)))
    if not design.is_file() or json.loads(design.read_text()) != wanted:
        write_corpus(folder, synth)
        design.write_text(json.dumps(wanted))
    videos = load_videos(folder / "manifest.jsonl")
    records = build_records(videos, mos_from_videos(videos), RecordConfig()).records
    counts = {}
    for split in ("train", "rl", "test"):
        chosen = [r for r in records if r.split == split]
        write(chosen, workdir / "records" / f"{split}.jsonl")
        counts[split] = len(chosen)
    return counts


def train_demo(workdir: str | Path, console: Any = None, config: DemoConfig | None = None
               ) -> DemoReport:
    """Run the recipe (the stages already done with the same recipe are skipped), print the
    per-stage table and return it; the final checkpoint is ``report.checkpoint``."""
    import torch

    from qsave.train.pipeline import STAGES, run_pipeline, stage_dir

    config = config or DemoConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if console is None:
        from rich.console import Console

        console = Console()

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    torch.set_num_threads(config.threads)
    report, clock = DemoReport(), time.perf_counter()
    counts = write_records(workdir, config.synth())
    report.seconds["data"] = round(time.perf_counter() - clock, 1)
    report.n_test = counts["test"] // len(DIMENSIONS)
    train = config.train(workdir)
    if config.ablation:
        ablation = config.train(workdir, config.ablation_mode)
        run_pipeline(ablation, ("sft",), log)
        report.scores += _scores(ablation, {"sft": f"1 SFT w/o SlowFast ({config.ablation_mode})"})
    finals = run_pipeline(train, STAGES, log)
    report.scores += _scores(train, STAGE_NAMES)
    for stage in STAGES:
        done = json.loads((stage_dir(train.output_dir, stage) / "done.json").read_text())
        report.seconds[STAGE_NAMES[stage]] = done.get("seconds", 0.0)
    report.notes = _notes(train, report)
    report.checkpoint = str(finals["cooloff"])
    log("")
    console.print(report.table())
    for note in report.notes:
        log(f"note: {note}")
    return report


def _scores(train: Any, names: dict[str, str]) -> list[StageScore]:
    """The held-out figures of a run's ``eval.json``, one row per stage in ``names``."""
    saved = json.loads((Path(train.output_dir) / "eval.json").read_text())
    return [StageScore(names[stage], d, v["srcc"], v["plcc"], saved[stage]["unscored"])
            for stage in names for d, v in saved[stage]["dimensions"].items()]


def _notes(train: Any, report: DemoReport) -> list[str]:
    notes = [f"recipe: {SYNTH_RECIPE.name} + {TRAIN_RECIPE.name} with the aids for tiny "
             f"models {', '.join(train.aids.on)}",
             "1 SFT, 2 GRPO: read think-first, the rating after a generated <think> analysis",
             "3 cool-off SFT: read rating-first without generation (what `qsave score` does)"]
    for score in report.scores:
        if score.unscored and score.dimension == DIMENSIONS[0].value:
            notes.append(f"{score.stage}: {score.unscored} of {report.n_test} test clips left "
                         "out of its figures (analysis unclosed within max_new_tokens)")
    return notes
