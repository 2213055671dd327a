"""The three-stage recipe (paper Sec. 4.3, Table 4): SFT → GRPO → cool-off SFT.

Each stage writes ``<output_dir>/<stage folder>/final`` (a plain checkpoint the next stage and
``qsave score`` load) and a ``done.json`` marker. Running again skips finished stages and
resumes an interrupted one from its newest ``checkpoint-*``.

>>> stage_dir("runs/x", "grpo").as_posix()
'runs/x/stage2-grpo'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qsave.data.records import load_records, write_records
from qsave.errors import ConfigError
from qsave.prompts import AnswerFormat
from qsave.train.config import STAGES, TrainConfig
from qsave.train.cooloff import cooloff_records
from qsave.train.grpo import load_rollouts, train_grpo
from qsave.train.sft import train_sft

STAGE_DIRS = {"sft": "stage1-sft", "grpo": "stage2-grpo", "cooloff": "stage3-cooloff"}
DONE = "done.json"


def stage_dir(output_dir: str | Path, stage: str) -> Path:
    return Path(output_dir) / STAGE_DIRS[stage]


def stage_done(output_dir: str | Path, stage: str) -> Path | None:
    """The stage's final checkpoint when the stage finished, else None."""
    folder = stage_dir(output_dir, stage)
    return folder / "final" if (folder / DONE).is_file() else None


def _previous(config: TrainConfig, stage: str) -> str | None:
    """The checkpoint a stage starts from: the previous stage's result, else the base model."""
    index = STAGES.index(stage)
    if index == 0:
        return None
    found = stage_done(config.output_dir, STAGES[index - 1])
    if found is None:
        raise ConfigError(
            f"stage {stage!r} needs stage {STAGES[index - 1]!r} to have finished in "
            f"{config.output_dir}; run it first (--stage {STAGES[index - 1]} or all)"
        )
    return str(found)


def run_stage(config: TrainConfig, stage: str, log: Any = print) -> Path:
    """Run one stage (skipped when already done); returns its final checkpoint."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}, all")
    done = stage_done(config.output_dir, stage)
    if done is not None:
        log(f"{stage}: already done ({done}), skipped")
        return done
    folder = stage_dir(config.output_dir, stage)
    folder.mkdir(parents=True, exist_ok=True)
    init = _previous(config, stage)
    if stage == "sft":
        final = train_sft(config.sft, config.model, folder, config.answer_format, init)
    elif stage == "grpo":
        final = train_grpo(config.grpo, config.model, folder, config.answer_format, init, log=log)
    else:
        final = _run_cooloff(config, folder, init, log)
    (folder / DONE).write_text(json.dumps({"stage": stage, "checkpoint": str(final)}))
    log(f"{stage}: done, checkpoint {final}")
    return final


def _run_cooloff(config: TrainConfig, folder: Path, init: str | None, log: Any) -> Path:
    rollouts = load_rollouts(stage_dir(config.output_dir, "grpo") / "rollouts.jsonl")
    source = load_records(config.grpo.records).records
    records = cooloff_records(rollouts, source, config.cooloff)
    if not records:
        raise ConfigError(
            f"no correct GRPO rollouts to cool off on ({len(rollouts)} rollouts); train GRPO "
            "longer or check the rewards"
        )
    write_records(records, folder / "records.jsonl")
    log(f"cooloff: {len(records)} records from {len(rollouts)} rollouts")
    return train_sft(config.cooloff.sft, config.model, folder, AnswerFormat.RATING_FIRST, init,
                     records=records)


def run_pipeline(config: TrainConfig, stages: Sequence[str] = STAGES, log: Any = print
                 ) -> dict[str, Path]:
    """Run the given stages in order; returns each one's final checkpoint."""
    return {stage: run_stage(config, stage, log) for stage in stages}


def parse_stage(stage: str) -> tuple[str, ...]:
    """``"all"`` → the three stages; a single name → itself (validated)."""
    if stage == "all":
        return STAGES
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}, all")
    return (stage,)
