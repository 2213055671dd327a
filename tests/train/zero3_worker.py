"""One process of a DeepSpeed ZeRO-3 run on the CPU, launched by tests/train/test_zero3.py:

    torchrun --standalone --nproc_per_node 2 tests/train/zero3_worker.py \
        OUT SFT_CONFIG GRPO_CONFIG

with ``DS_ACCELERATOR=cpu`` and the variables ``accelerate launch --config_file
configs/accelerate-zero3.yaml`` exports (``ACCELERATE_USE_DEEPSPEED``,
``ACCELERATE_DEEPSPEED_CONFIG_FILE``, …). It runs what ``distributed_worker.py`` runs (SFT,
then GRPO, in the same processes). One thing differs from a GPU host: without a GPU accelerate
names no process-group backend for DeepSpeed, and with none it counts one process; here it
gets gloo, the backend DeepSpeed's CPU accelerator itself uses without oneCCL.
"""

import sys

from accelerate.state import PartialState
from distributed_worker import main


def _gloo_backend(self, cpu=False, sagemaker_dp=False, backend=None):
    found, kind = _PREPARE_BACKEND(self, cpu, sagemaker_dp, backend)
    return found or "gloo", kind


_PREPARE_BACKEND = PartialState._prepare_backend

if __name__ == "__main__":  # patched only here: pytest imports this file to look for doctests
    PartialState._prepare_backend = _gloo_backend
    main(*sys.argv[1:])
