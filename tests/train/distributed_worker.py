"""One process of a multi-process training run, launched by tests/train/test_multiprocess.py:

    torchrun --standalone --nproc_per_node 2 tests/train/distributed_worker.py \
        OUT SFT_CONFIG GRPO_CONFIG

runs SFT (``train_sft``) into ``OUT/sft``, then GRPO (``train_grpo``) into ``OUT/grpo``, each
from the ``model`` and stage section of its training config, as ``qsave train`` runs its stages
one after the other in the same processes. Each process then writes ``<stage>/rank-<k>.json``:
a SHA-256 of its own model's weights at the end of the stage and, for GRPO, each step's
statistics (``grpo_step``'s, with the rewards over all processes that ``train_grpo`` adds) and
how many rollouts this process sampled. To see them, the real ``load_for_training`` and
``grpo_step`` are wrapped; the wrappers only keep what passes through.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from qsave.train import grpo, sft
from qsave.train.config import load_train_config


def weights_digest(model) -> str:
    """SHA-256 of every parameter's name and bytes, in name order."""
    digest = hashlib.sha256()
    for name, weight in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(weight.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def keep_models(module) -> list:
    """The models ``module.load_for_training`` returns from now on."""
    models, load = [], module.load_for_training

    def keeping(*args, **kwargs):
        loaded = load(*args, **kwargs)
        models.append(loaded[0])
        return loaded

    module.load_for_training = keeping
    return models


def run_sft(config_path: str, out: Path) -> dict:
    config, models = load_train_config(config_path), keep_models(sft)
    sft.train_sft(config.sft, config.model, out, config.answer_format)
    return {"weights": weights_digest(models[-1])}


def run_grpo(config_path: str, out: Path) -> dict:
    config, models = load_train_config(config_path), keep_models(grpo)
    steps, local_rollouts, step = [], [], grpo.grpo_step

    def keeping(*args, **kwargs):
        scored, stats = step(*args, **kwargs)
        steps.append(stats)  # train_grpo then updates its rewards to all processes'
        local_rollouts.append(len(scored))
        return scored, stats

    grpo.grpo_step = keeping
    grpo.train_grpo(config.grpo, config.model, out, config.answer_format, log=None)
    return {"weights": weights_digest(models[-1]), "steps": steps,
            "local_rollouts": local_rollouts}


def main(out: str, sft_config: str, grpo_config: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    for stage, run, config in (("sft", run_sft, sft_config), ("grpo", run_grpo, grpo_config)):
        folder = Path(out) / stage
        result = run(config, folder)
        (folder / f"rank-{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
