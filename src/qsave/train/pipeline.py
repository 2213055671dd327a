"""The three-stage recipe (paper Sec. 4.3, Table 4): SFT → GRPO → cool-off SFT in one run folder.

``<output_dir>/``
    ``config.yaml`` (the resolved config of the last call, every default filled in),
    ``train.log`` (every line the runs printed, with times), ``eval.json`` (held-out SRCC/PLCC
    after each stage, with ``eval.records``) and a folder per stage: ``final/`` (a checkpoint
    the next stage and ``qsave score`` load), ``checkpoint-*`` (resume), ``done.json``.

A stage's *fingerprint* hashes what decides its result: its config section, the model section,
the answer format, the tiny-model aids, the content of its input files and the previous
stage's fingerprint (``save_steps``, ``logging_steps`` and file paths left out). ``done.json``
records it. A finished stage whose fingerprint matches is skipped; one whose fingerprint
changed runs again, and so does every later stage (``resume_only`` refuses instead); the log
says which keys changed. An interrupted stage resumes from its newest ``checkpoint-*`` when its
fingerprint matches, else starts again.

>>> stage_dir("runs/x", "grpo").as_posix()
'runs/x/stage2-grpo'
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qsave.errors import ConfigError, QsaveError
from qsave.train.config import STAGES, TrainConfig

STAGE_DIRS = {"sft": "stage1-sft", "grpo": "stage2-grpo", "cooloff": "stage3-cooloff"}
DONE = "done.json"
STARTED = "started.json"  # the fingerprint of a stage's run in progress
LOG_FILE, CONFIG_FILE = "train.log", "config.yaml"
UNHASHED = ("save_steps", "logging_steps", "records", "deepspeed")  # do not change a result
TINY_MODELS = ("tiny", "tiny-demo")
STAGE_AIDS = {"sft": ("vision_warmup_steps", "vision_warmup_lr", "vision_warmup_batch",
                      "probe_weight", "grounding_weight", "mismatch_negatives"),
              "grpo": (),
              "cooloff": ("probe_weight", "grounding_weight", "mismatch_negatives",
                          "cooloff_resample", "cooloff_resample_records")}


def stage_dir(output_dir: str | Path, stage: str) -> Path:
    return Path(output_dir) / STAGE_DIRS[stage]


def stage_done(output_dir: str | Path, stage: str) -> Path | None:
    """The stage's final checkpoint when the stage finished, else None."""
    folder = stage_dir(output_dir, stage)
    return folder / "final" if (folder / DONE).is_file() else None


def parse_stage(stage: str) -> tuple[str, ...]:
    """``"all"`` → the three stages; a single name → itself (validated)."""
    if stage == "all":
        return STAGES
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}, all")
    return (stage,)


# ---- fingerprints ------------------------------------------------------------------------
def _flat(values: Any, prefix: str) -> dict[str, Any]:
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in UNHASHED:
                out.update(_flat(value, f"{prefix}.{key}"))
        return out
    return {prefix: values}


def _file_hash(path: str) -> str:
    """The content hash of a file, read once per version of it (path, size, mtime): a call
    plans, fingerprints and records each stage, and the previous stages' fingerprints too."""
    stat = Path(path).stat()
    return _hash_version(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash_version(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def stage_inputs(config: TrainConfig, stage: str) -> list[tuple[str, str]]:
    """The record files a stage reads, by key: its own, and for stage 3 the RL records (the
    rollouts' source) and, with the resampling or probe aids, the SFT records."""
    own = {"sft": "sft.records", "grpo": "grpo.records", "cooloff": "grpo.records"}[stage]
    keys = [own]
    if stage == "cooloff" and (config.aids.cooloff_resample or config.aids.probe_weight):
        keys.append("sft.records")  # resampled, or the probe's targets
    return [(key, getattr(config, key.split(".")[0]).records) for key in keys]


def stage_settings(config: TrainConfig, stage: str) -> dict[str, Any]:
    """What decides a stage's result, as flat ``key: value`` pairs (see the module doc)."""
    plain = config.to_dict()
    settings = {**_flat(plain["model"], "model"), "answer_format": plain["answer_format"],
                **{f"aids.{key}": plain["aids"][key] for key in STAGE_AIDS[stage]}}
    settings.update(_flat(plain[stage], stage))
    for key, path in stage_inputs(config, stage):
        settings[f"{key} (content)"] = _file_hash(path) if path and Path(path).is_file() else None
    index = STAGES.index(stage)
    if index:
        settings["previous stage"] = fingerprint(config, STAGES[index - 1])
    return settings


def fingerprint(config: TrainConfig, stage: str) -> str:
    text = json.dumps(stage_settings(config, stage), sort_keys=True, default=str)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key: old → new`` for each setting that differs.

    >>> changed_keys({"sft.epochs": 3, "a": 1}, {"sft.epochs": 1, "a": 1})
    ['sft.epochs: 3 → 1']
    """
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k, '(unset)')} → {after.get(k, '(unset)')}" for k in keys
            if before.get(k) != after.get(k)]


@dataclass
class StagePlan:
    """What a call does with one requested stage, and why."""

    stage: str
    action: str  # skip | run | resume | rerun | restart
    reason: str = ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def plan_stages(config: TrainConfig, stages: Sequence[str]) -> list[StagePlan]:
    """For each requested stage: skip (done, same fingerprint), run (new), resume (interrupted,
    same fingerprint), rerun (done with another fingerprint, or after a stage that reruns) or
    restart (interrupted with another fingerprint). Raises when a stage needs an earlier one
    that is neither requested nor finished with the current config."""
    plans: list[StagePlan] = []
    earlier_runs = False
    for stage in STAGES[:STAGES.index(stages[-1]) + 1]:
        folder = stage_dir(config.output_dir, stage)
        done, started = _read_json(folder / DONE), _read_json(folder / STARTED)
        current = fingerprint(config, stage)
        requested = stage in stages
        if done and done.get("fingerprint") == current and not earlier_runs:
            plan = StagePlan(stage, "skip", f"already done ({folder / 'final'})")
        elif done:
            diff = changed_keys(done.get("settings", {}), stage_settings(config, stage))
            plan = StagePlan(stage, "rerun", "its config or inputs changed since it finished: "
                             + "; ".join(diff[:8]) if diff else "an earlier stage runs again")
        elif started and any(folder.glob("checkpoint-*")):
            same = started.get("fingerprint") == current
            plan = StagePlan(stage, "resume" if same else "restart",
                             "interrupted; resuming from its newest checkpoint" if same else
                             "interrupted, and its config or inputs changed since: "
                             + "; ".join(changed_keys(started.get("settings", {}),
                                                      stage_settings(config, stage))[:8]))
        else:
            plan = StagePlan(stage, "run", "not run yet")
        if not requested and plan.action != "skip":
            raise ConfigError(
                f"stage {stages[0]!r} needs stage {stage!r} finished with this config, but "
                f"{stage} would {plan.action} ({plan.reason}); run --stage {stage} or all first")
        earlier_runs = earlier_runs or plan.action != "skip"
        if requested:
            plans.append(plan)
    return plans


# ---- checks before anything loads ---------------------------------------------------------
def check_inputs(config: TrainConfig, stages: Sequence[str]) -> list[str]:
    """Every file every requested stage needs, checked up front: one ConfigError listing each
    problem. Returns warnings (things that run but deserve a look)."""
    from qsave.data.records import load_records

    problems, warnings = [], []
    wanted = {key: path for stage in stages for key, path in stage_inputs(config, stage)}
    if config.eval.records:
        wanted["eval.records"] = config.eval.records
    counts = {}
    for key, path in wanted.items():
        if not path:
            problems.append(f"{key} is required by the requested stages ({', '.join(stages)})")
            continue
        try:
            counts[key] = len(load_records(path, check_files=True).records)
        except (OSError, QsaveError) as error:
            problems.append(f"{key} {path}: {error}")
            continue
        if not counts[key]:
            problems.append(f"{key} {path} holds no records")
    if "grpo" in stages and counts.get("grpo.records", 10**9) < config.grpo.prompts_per_step:
        problems.append(f"grpo.prompts_per_step ({config.grpo.prompts_per_step}) exceeds the "
                        f"{counts['grpo.records']} RL records in {config.grpo.records}")
    for key, section, stage in (("sft.deepspeed", config.sft, "sft"),
                                ("cooloff.sft.deepspeed", config.cooloff.sft, "cooloff")):
        if stage in stages and section.deepspeed and not Path(section.deepspeed).is_file():
            problems.append(f"{key} {section.deepspeed} does not exist")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    for key, section, stage in (("sft", config.sft, "sft"), ("cooloff.sft", config.cooloff.sft,
                                                             "cooloff")):
        if stage in stages:
            try:
                section.grad_accum(processes)
            except ConfigError as error:
                problems.append(f"{key}: {error}")
    model = config.model.model
    looks_local = model.startswith((".", "/", "~")) or Path(model).exists()
    if model not in TINY_MODELS and looks_local and not (Path(model) / "config.json").is_file():
        problems.append(f"model.model {model}: not a checkpoint folder (no config.json)")
    if problems:
        raise ConfigError("the training config cannot run:\n  " + "\n  ".join(problems))
    if config.aids.on and model not in TINY_MODELS:
        warnings.append(f"aids for tiny models are on ({', '.join(config.aids.on)}) with "
                        f"{model}: they are not the paper's recipe (TrainConfig.aids)")
    return warnings


# ---- the run ------------------------------------------------------------------------------
def main_process() -> bool:
    """The process that writes the run's files (rank 0 of ``torchrun``/``accelerate``)."""
    return os.environ.get("RANK", "0") == "0"


class RunLog:
    """Every line of a run, to ``echo`` and appended to ``<output_dir>/train.log`` with its
    time (main process only)."""

    def __init__(self, path: Path, echo: Callable[[str], Any] | None = print) -> None:
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        if not main_process():
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {line}\n")
        if self.echo:
            self.echo(line)


def run_pipeline(config: TrainConfig, stages: Sequence[str] = STAGES, log: Any = print,
                 resume_only: bool = False) -> dict[str, Path]:
    """Check, plan and run the given stages in order; returns each one's final checkpoint.

    ``resume_only`` refuses (before anything runs) when a finished or interrupted stage's
    config changed, instead of running it again."""
    warnings = check_inputs(config, stages)
    plans = plan_stages(config, stages)
    changed = [p for p in plans if p.action in ("rerun", "restart")]
    if resume_only and changed:
        raise ConfigError("--resume-only: " + "; ".join(f"{p.stage} would {p.action} "
                                                       f"({p.reason})" for p in changed))
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    log = RunLog(output / LOG_FILE, log)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the run's lines are its log; no bars in train.log
    if main_process():
        import yaml

        (output / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False),
                                          encoding="utf-8")
    log(f"run {output}: stages {', '.join(stages)}; resolved config in {output / CONFIG_FILE}")
    for warning in warnings:
        log(f"warning: {warning}")
    for plan in plans:
        log(f"{plan.stage}: {plan.action} — {plan.reason}")
    finals = {}
    for plan in plans:
        finals[plan.stage] = run_stage(config, plan.stage, log, plan.action)
    return finals


def run_stage(config: TrainConfig, stage: str, log: Any = print, action: str | None = None
              ) -> Path:
    """Run one stage as planned (:func:`plan_stages` when ``action`` is None); returns its
    final checkpoint. A rerun or restart removes the stage's old folder first (said in the
    log)."""
    if action is None:
        [plan] = plan_stages(config, (stage,))
        action = plan.action
    folder = stage_dir(config.output_dir, stage)
    if action == "skip":
        log(f"{stage}: already done ({folder / 'final'}), skipped")
        _evaluate(config, stage, folder / "final", log)
        return folder / "final"
    if action in ("rerun", "restart") and folder.exists() and main_process():
        log(f"{stage}: removing the previous run's {folder} (another config)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "fingerprint": fingerprint(config, stage),
              "settings": stage_settings(config, stage)}
    if main_process():
        (folder / STARTED).write_text(json.dumps(record, indent=1, default=str))
    init = None if stage == "sft" else str(stage_dir(config.output_dir,
                                                     STAGES[STAGES.index(stage) - 1]) / "final")
    clock = time.perf_counter()
    final = _train(config, stage, folder, init, log)
    if main_process():
        (folder / DONE).write_text(json.dumps(
            {**record, "checkpoint": str(final), "seconds": round(time.perf_counter() - clock, 1),
             "finished": datetime.now(UTC).isoformat(timespec="seconds")}, indent=1, default=str))
    log(f"{stage}: done, checkpoint {final}")
    _evaluate(config, stage, final, log)
    return final


def _train(config: TrainConfig, stage: str, folder: Path, init: str | None, log: Any) -> Path:
    from qsave.prompts import AnswerFormat
    from qsave.train.grpo import train_grpo
    from qsave.train.sft import train_sft

    if stage == "sft":
        return train_sft(config.sft, config.model, folder, config.answer_format, init,
                         aids=config.aids, log=log, name="sft")
    if stage == "grpo":
        return train_grpo(config.grpo, config.model, folder, config.answer_format, init, log=log)
    from qsave.data.records import load_records

    aids = config.aids
    sft = load_records(config.sft.records).records if (
        aids.cooloff_resample or aids.probe_weight) else []
    records = cooloff_data(config, folder, init, sft, log)
    return train_sft(config.cooloff.sft, config.model, folder, AnswerFormat.RATING_FIRST, init,
                     records=records, aids=config.aids,
                     probe_from=stage_dir(config.output_dir, "sft"),
                     probe_records=sft if aids.probe_weight else None,
                     log=log, name="cooloff")


def cooloff_data(config: TrainConfig, folder: Path, init: str | None, sft: list, log: Any
                 ) -> list:
    """Stage 3's records: the correct GRPO rollouts reformatted rating-first (Sec. 4.3); with
    ``aids.cooloff_resample`` (tiny models) also the correct ones of rollouts the GRPO policy
    samples on RL and ``sft`` records. Raises, naming the cause, when none is correct."""
    from qsave.data.records import load_records, write_records
    from qsave.train.cooloff import cooloff_records
    from qsave.train.grpo import load_rollouts, rollout_diagnosis

    rollouts = load_rollouts(stage_dir(config.output_dir, "grpo") / "rollouts.jsonl")
    source = load_records(config.grpo.records).records
    if config.aids.cooloff_resample:
        extra = _resample(config, init, source, sft, folder)
        log(f"cooloff: {len(extra)} more rollouts sampled by the GRPO policy (aid for tiny "
            "models: aids.cooloff_resample)")
        rollouts, source = rollouts + extra, source + sft
    records = cooloff_records(rollouts, source, config.cooloff)
    if not records:
        raise ConfigError(f"no correct GRPO rollouts to cool off on ({len(rollouts)} rollouts: "
                          f"{rollout_diagnosis(rollouts, config.grpo)}); train GRPO longer or "
                          "check the rewards")
    write_records(records, folder / "records.jsonl")
    log(f"cooloff: {len(records)} records from {len(rollouts)} rollouts")
    return records


def _resample(config: TrainConfig, init: str | None, rl: list, sft: list, folder: Path
              ) -> list:
    """The aid's rollouts: ``cooloff_resample`` per record over the RL records and shuffled
    SFT records, ``cooloff_resample_records`` at most (written to ``resampled.jsonl``)."""
    from dataclasses import replace

    import torch

    from qsave.jsonl import write_jsonl
    from qsave.train.common import VideoCache, load_for_training
    from qsave.train.grpo import sample_rollouts
    from qsave.video.inputs import VideoConfig

    aids = config.aids
    pool = rl + random.Random(config.model.seed + 3).sample(sft, len(sft))
    model, processor = load_for_training(replace(config.model, lora=False), init)
    torch.manual_seed(config.model.seed)
    sampling = replace(config.grpo, num_generations=max(2, aids.cooloff_resample))
    rollouts = sample_rollouts(model, processor, pool[:aids.cooloff_resample_records],
                               VideoCache(VideoConfig.from_dict(config.grpo.video)), sampling,
                               config.answer_format, chunk=16)
    write_jsonl(folder / "resampled.jsonl", [asdict(r) for r in rollouts])
    return rollouts


def _evaluate(config: TrainConfig, stage: str, final: Path, log: Any) -> None:
    """Held-out SRCC/PLCC of a stage's checkpoint into ``eval.json`` (``eval.records``);
    a stage already evaluated with the same fingerprint is not scored again."""
    if not config.eval.records or not main_process():
        return
    from qsave.train.stage_eval import evaluate_checkpoint

    path = Path(config.output_dir) / "eval.json"
    saved = _read_json(path) or {}
    print_ = fingerprint(config, stage)
    entry = saved.get(stage)
    if not (entry and entry.get("fingerprint") == print_
            and entry.get("records") == config.eval.records):
        entry = {"fingerprint": print_, "records": config.eval.records,
                 **evaluate_checkpoint(final, config.eval)}
        saved[stage] = entry
        path.write_text(json.dumps(saved, indent=1), encoding="utf-8")
    for dimension, values in entry["dimensions"].items():
        log(f"{stage}: held-out {dimension} SRCC {values['srcc']:.3f} PLCC "
            f"{values['plcc']:.3f} (n {values['n']})")
    if entry.get("unscored"):
        log(f"{stage}: {entry['unscored']} held-out clip(s) left out: {entry['unscored_why']}")
