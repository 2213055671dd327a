"""``qsave demo``: the README's first command, runnable anywhere, offline, on the CPU.

It scores every held-out clip of the demo corpus with the shipped ``tiny-demo`` model (the tiny
Qwen3-VL trained by :mod:`qsave.demo_recipe`, float16, in ``qsave/assets/tiny-demo`` with its
``provenance.json``) and prints the predicted MOS beside the ground truth, then the held-out
SRCC/PLCC per dimension. The held-out clips are the test split of the recipe's corpus
(``configs/synth-tiny-cpu.yaml``), drawn and encoded from the seed exactly as the training
wrote them: the same clips the provenance figures were measured on.

With ``train=True`` it retrains the model with the recipe (:func:`qsave.demo_recipe.train_demo`),
exports it like the shipped one (:func:`export_model`) to ``$QSAVE_CACHE/tiny-demo``, scores
the same clips with it and compares its figures with the shipped ones. ``--model tiny`` is
never affected: it is the random tiny model, always.

``scripts/ship_tiny_demo.py`` writes the shipped folder with the same :func:`export_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from qsave.data.synthetic import ClipRecord, SynthConfig, encode_mp4, plan_corpus, synthesize
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import QsaveError
from qsave.eval.kinds import CLEAN, KindConfig, manifest_kind_figures
from qsave.evaluator import Evaluator, ScoreItem
from qsave.scores import ModelInfo, VideoResult
from qsave.spec import (
    PROVENANCE_FILE,
    TINY_DEMO,
    TINY_DEMO_ID,
    shipped_tiny_demo_dir,
    tiny_demo_dir,
)

MAX_SHIPPED_BYTES = 10 * 1024 * 1024  # the shipped model folder, weights and all, stays under
MAX_HELD_OUT_BYTES = 6 * 1024 * 1024  # its encoded held-out clips stay under this
LEARNT_SRCC = 0.5  # a dimension counts as learnt on the held-out clips from this SRCC on


@dataclass
class HeldOut:
    """A model's scores on the held-out clips of the demo corpus, and its figures."""

    info: ModelInfo
    clips: list[ClipRecord]
    results: list[VideoResult]
    figures: dict[str, dict[str, Any]]  # dimension → {"srcc", "plcc", "n"}
    kinds: dict[str, dict[str, Any]]  # alignment defect kind → {"srcc", "plcc", "n"}

    def to_json(self) -> dict[str, Any]:
        """What ``qsave demo --json`` prints."""
        return {"model": self.info.id, "revision": self.info.revision, "n": len(self.clips),
                "dimensions": self.figures, "alignment_kinds": self.kinds}


def held_out_synth() -> SynthConfig:
    """The recipe's corpus design; its test split is the held-out set."""
    from qsave.demo_recipe import DemoConfig

    return DemoConfig().synth()


def write_held_out(folder: str | Path, synth: SynthConfig) -> list[ClipRecord]:
    """Draw and encode only the test clips of ``synth`` into ``folder/clips``, with a
    ``manifest.jsonl``: what :func:`qsave.data.synthetic.write_corpus` writes for them (each
    clip's frames come from the seed and its index). The frames are reproducible, the H.264
    bytes are not quite: libx264 under PyAV writes other bytes for a few clips in ten from run
    to run, which moves the held-out figures by up to ~0.01 SRCC — so the shipped model ships
    the encoded clips its figures were measured on (:func:`shipped_held_out_dir`)."""
    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    clips = []
    for plan in plan_corpus(synth):
        if plan.split != "test":
            continue
        record, frames = synthesize(plan, synth)
        encode_mp4(frames, folder / record.path, synth.fps, synth.crf)
        clips.append(record)
    (folder / "manifest.jsonl").write_text("".join(c.to_json() + "\n" for c in clips),
                                           encoding="utf-8")
    return clips


def read_held_out(folder: str | Path) -> list[ClipRecord]:
    """The clips of a held-out folder's ``manifest.jsonl`` (as :func:`write_held_out` wrote)."""
    from qsave.jsonl import read_jsonl

    read = read_jsonl(Path(folder) / "manifest.jsonl")
    if read.issues() or not read.rows:
        raise QsaveError(f"no readable held-out manifest in {folder}: {read.issues()[:3]}")
    return [ClipRecord(**row) for _, row in read.rows]


def shipped_held_out_dir() -> Path:
    """The encoded held-out clips the shipped model's provenance figures were measured on
    (package data beside the model folder, written by ``scripts/ship_tiny_demo.py``)."""
    return shipped_tiny_demo_dir().with_name("tiny-demo-held-out")


def held_out_folder(workdir: str | Path, console: Console | None = None) -> Path:
    """The shipped held-out clips, else (an installation without them) the same clips drawn
    again from the seed into ``workdir/held-out``."""
    shipped = shipped_held_out_dir()
    if (shipped / "manifest.jsonl").is_file():
        return shipped
    folder = Path(workdir) / "held-out"
    write_held_out(folder, held_out_synth())
    if console is not None:
        console.print(f"[yellow]the shipped held-out clips are missing: drew them again from "
                      f"the seed into {folder} (H.264 bytes may differ slightly, and so may the "
                      "figures)")
    return folder


def score_held_out(model: str, folder: str | Path) -> HeldOut:
    """Score every clip of the held-out ``folder`` with ``model`` (a model name or folder) on
    the CPU in float32, as the provenance figures were measured; SRCC/PLCC per dimension."""
    folder = Path(folder)
    clips = read_held_out(folder)
    evaluator = Evaluator.from_pretrained(model, device="cpu", dtype="float32")
    items = [ScoreItem(folder / c.path, c.prompt, c.id) for c in clips]
    results = list(evaluator.score_many(items))
    return HeldOut(evaluator.info, clips, results, held_out_figures(clips, results),
                   alignment_kind_figures(clips, results))


def held_out_figures(clips: list[ClipRecord], results: list[VideoResult]
                     ) -> dict[str, dict[str, Any]]:
    """SRCC and PLCC of predicted vs true MOS per dimension over the scored clips (n), as
    ``qsave train`` reports a stage's held-out figures."""
    from qsave.train.stage_eval import correlations

    return correlations(results, {c.id: c.mos for c in clips})


def alignment_kind_figures(clips: list[ClipRecord], results: list[VideoResult]
                           ) -> dict[str, dict[str, Any]]:
    """SRCC and PLCC of predicted vs true alignment MOS per alignment defect kind (wrong
    colour, shape, count, direction, missing object; :mod:`qsave.eval.kinds`); a kind with too
    few clips has None and its note."""
    predicted = {r.id: r.scores[Dimension.ALIGNMENT].mos for r in results if r.ok}
    figures = manifest_kind_figures(predicted, [asdict(c) for c in clips],
                                    Dimension.ALIGNMENT.value, KindConfig(n_resamples=0))
    return {f.kind: {"srcc": f.srcc, "plcc": f.plcc, "n": f.n, "note": f.note}
            for f in figures if f.kind != CLEAN}


# ---- the shipped model -------------------------------------------------------------------
def export_model(checkpoint: str | Path, dest: str | Path, recipe: dict[str, Any],
                 held_out: str | Path, report: Any = None, name: str = TINY_DEMO_ID
                 ) -> tuple[HeldOut, dict[str, Any]]:
    """Write the trained ``checkpoint`` as a demo model folder: float16 safetensors, processor,
    ``qsave_scorer.json``, and ``provenance.json`` (``name``, the ``recipe`` (demo config,
    corpus design, resolved training config: ``DemoConfig.provenance``), git commit,
    the training's per-stage figures from ``report``, and the SRCC/PLCC per dimension of the
    exported float16 weights on the clips of ``held_out``, scored by :func:`score_held_out`).
    Replaces ``dest``; the returned scores name ``dest`` as their model."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    checkpoint, dest = Path(checkpoint), Path(dest)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float16)
    model.save_pretrained(staging)
    AutoProcessor.from_pretrained(checkpoint).save_pretrained(staging)
    shutil.copy2(checkpoint / "qsave_scorer.json", staging / "qsave_scorer.json")
    weights = hashlib.sha256((staging / "model.safetensors").read_bytes()).hexdigest()
    held = score_held_out(str(staging), held_out)
    failed = [f"{r.id}: {r.error}" for r in held.results if not r.ok]
    if failed:
        raise QsaveError(f"the exported model could not score held-out clips: {failed[:3]}")
    provenance = {
        "model": name,
        "revision": f"sha256:{weights[:16]}",  # of model.safetensors; rows record it
        "weights_sha256": weights,
        "dtype": "float16",
        "recipe": "qsave train with configs/train-tiny-cpu.yaml on a corpus of "
                  "configs/synth-tiny-cpu.yaml (qsave.demo_recipe; aids for tiny models)",
        "config": recipe,
        "seed": recipe["train"]["model"]["seed"],
        "git": _git_state(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "held_out": {
            "what": "the test split of the recipe's corpus (configs/synth-tiny-cpu.yaml); "
                    "the encoded clips ship in qsave/assets/tiny-demo-held-out; scored by "
                    "qsave.demo.score_held_out: CPU, float32, the checkpoint's "
                    "qsave_scorer.json; predicted MOS vs ground-truth MOS",
            "corpus": recipe["synth"],
            "n": len(held.clips),
            "clips": [c.id for c in held.clips],
            "dimensions": held.figures,
            "alignment_kinds": held.kinds,
        },
    }
    if report is not None:
        provenance["training"] = {
            "stages": [asdict(s) for s in report.scores],  # float32, during training
            "n_test": report.n_test, "seconds": report.seconds, "notes": report.notes}
    (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n",
                                           encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    held.info = replace(held.info, id=str(dest.resolve()), revision=provenance["revision"])
    return held, provenance


def folder_bytes(folder: str | Path) -> int:
    """The size of every file in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _git_state() -> dict[str, Any]:
    """The commit of the source tree qsave runs from, and whether it had uncommitted changes
    (read-only: no optional locks); None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30, env=env, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(changes) if commit else None,
            "note": "dirty: the weights were written from the commit's tree plus uncommitted "
                    "changes (they are committed together)" if changes else None}


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


# ---- qsave demo --------------------------------------------------------------------------
def run_demo(workdir: str | Path, console: Console, train: Any = None) -> HeldOut:
    """``qsave demo``: score the held-out clips with the shipped model (or, with ``train``, a
    :class:`qsave.demo_recipe.DemoConfig`, retrain it first and compare), print the table, the
    figures and what the model can do.
    ``console`` gets every line (``qsave demo --json`` passes a stderr console)."""
    workdir = Path(workdir)
    # the corpus design comes from the shipped provenance (what the shipped model's figures
    # were measured on), or from the recipe when retraining
    synth = _shipped_synth()
    shipped = _shipped_figures()
    if train is not None:
        from qsave.demo_recipe import train_demo

        config = train
        synth = config.synth()
        report = train_demo(workdir / "train", console, config=config)
        folder = held_out_folder(workdir, console)
        cache = tiny_demo_dir()
        held, _ = export_model(report.checkpoint, cache, config.provenance(workdir / "train"),
                               folder, report,
                               name=f"{TINY_DEMO_ID} (retrained by qsave demo --train)")
        console.print(f"saved the retrained model to {cache} (float16, provenance.json); "
                      f"score with it: --model {cache}")
    else:
        folder = held_out_folder(workdir, console)
        held = score_held_out(TINY_DEMO, folder)
    console.print(f"scored the {len(held.clips)} held-out clips of the demo corpus (seed "
                  f"{synth.seed}; test split, prompts unseen in training) in {folder}")
    console.print(clip_table(held))
    console.print(figures_table(held, shipped if train is not None else None))
    console.print(kinds_table(held))
    for result in held.results:
        if not result.ok:
            console.print(f"[red]{result.id}: {result.error}")
    console.print(can_and_cannot(held, synth))
    return held


def clip_table(held: HeldOut) -> Table:
    """One row per held-out clip: predicted MOS / ground truth per dimension."""
    revision = f" {held.info.revision}" if held.info.revision else ""
    table = Table(title=f"{held.info.id}{revision}: predicted MOS / ground truth")
    table.add_column("clip")
    for dimension in DIMENSIONS:
        table.add_column(dimension.value, justify="right")
    for clip, result in zip(held.clips, held.results, strict=True):
        if result.ok:
            table.add_row(clip.id, *(f"{result.scores[d].mos:.2f} / {clip.mos[d.value]:.2f}"
                                     for d in DIMENSIONS))
        else:
            table.add_row(clip.id, *(["error"] * len(DIMENSIONS)))
    return table


def figures_table(held: HeldOut, shipped: dict[str, Any] | None = None) -> Table:
    """SRCC/PLCC per dimension on the held-out clips (and the shipped model's, to compare)."""
    table = Table(title=f"{held.info.id}: held-out SRCC / PLCC per dimension "
                        f"({len(held.clips)} clips)")
    table.add_column("dimension")
    table.add_column("SRCC", justify="right")
    table.add_column("PLCC", justify="right")
    table.add_column("n", justify="right")
    if shipped is not None:
        table.add_column(f"shipped {TINY_DEMO} SRCC / PLCC", justify="right")
        table.add_column("Δ SRCC", justify="right")
    for name, values in held.figures.items():
        row = [name, f"{values['srcc']:.3f}", f"{values['plcc']:.3f}", str(values["n"])]
        if shipped is not None:
            ref = shipped.get(name)
            row += ([f"{ref['srcc']:.3f} / {ref['plcc']:.3f}",
                     f"{values['srcc'] - ref['srcc']:+.3f}"] if ref else ["missing", ""])
        table.add_row(*row)
    return table


def kinds_table(held: HeldOut) -> Table:
    """SRCC/PLCC of alignment per defect kind on the held-out clips."""
    table = Table(title=f"{held.info.id}: held-out alignment SRCC / PLCC per defect kind")
    for column, justify in (("kind", "left"), ("SRCC", "right"), ("PLCC", "right"),
                            ("n", "right")):
        table.add_column(column, justify=justify)
    for kind, values in held.kinds.items():
        if values["srcc"] is None:
            table.add_row(kind, "—", "—", f"{values['n']} ({values['note']})")
        else:
            table.add_row(kind, f"{values['srcc']:.3f}", f"{values['plcc']:.3f}",
                          str(values["n"]))
    return table


def can_and_cannot(held: HeldOut, synth: Any) -> str:
    """One sentence on what the demo model can and cannot do, from its figures."""
    learnt = [d for d, v in held.figures.items() if v["srcc"] >= LEARNT_SRCC]
    not_learnt = [d for d in held.figures if d not in learnt]
    can = (f"it ranks {' and '.join(learnt)} quality of such clips" if learnt
           else "it ranks no dimension of such clips")
    cannot = f", has not learnt {' or '.join(not_learnt)} (SRCC < {LEARNT_SRCC})" if not_learnt \
        else ""
    return (f"What it can and cannot do: a ~1M-parameter Qwen3-VL trained for minutes on "
            f"synthetic defects ({', '.join(synth.kinds)}) in {synth.size}×{synth.size}, "
            f"{synth.seconds:g}-second clips — {can}{cannot}, and its scores are meaningless on "
            "real footage (for real videos use a Qwen3-VL checkpoint: README, 'Scoring real "
            "videos on a GPU').")


def _shipped_synth() -> Any:
    """The corpus design the shipped model was trained on (its provenance's; read without the
    recipe module, which imports the training stack a plain install lacks)."""
    from types import SimpleNamespace

    from qsave.model.load import read_provenance

    return SimpleNamespace(**read_provenance(shipped_tiny_demo_dir())["config"]["synth"])


def _shipped_figures() -> dict[str, Any] | None:
    """The shipped model's held-out figures from its provenance (None when absent)."""
    from qsave.model.load import read_provenance

    try:
        return read_provenance(shipped_tiny_demo_dir())["held_out"]["dimensions"]
    except (QsaveError, KeyError, TypeError):
        return None
