"""Shared fixtures. Every test is offline: no hub, no network."""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# `--model tiny` must mean the random tiny model in tests, whatever `qsave demo --train` cached.
os.environ["QSAVE_CACHE"] = tempfile.mkdtemp(prefix="qsave-test-cache-")

import pytest

atexit.register(shutil.rmtree, os.environ["QSAVE_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny():
    """One tiny Qwen3-VL (model + real processor) per session; never train it in place."""
    from qsave.model.tiny import build_tiny

    return build_tiny(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The same tiny model saved as a checkpoint directory (save_pretrained)."""
    from qsave.model.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-checkpoint"), seed=0)


@pytest.fixture(scope="session")
def tiny_evaluator(tiny):
    """The scoring pipeline on the session's tiny model (random, seed 0), default ScorerSpec."""
    from helpers import evaluator_on

    return evaluator_on(tiny)


@pytest.fixture(scope="session")
def annotate_clips(tmp_path_factory):
    """The annotate tests' synthetic clips, laid out for the rating workflow (tests/annotate/
    annotate_harness.py; here because a conftest of its own would shadow this one's module)."""
    from annotate.annotate_harness import make_clips

    return make_clips(tmp_path_factory.mktemp("annotate-clips"))

