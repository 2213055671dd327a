"""Fixtures of the serve tests: an evaluator on the session's tiny model, a few short clips."""

import pytest

from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.evaluator import Evaluator
from qsave.model.load import LoadedModel, ModelInfo, rating_token_ids


@pytest.fixture(scope="session")
def tiny_evaluator(tiny):
    """An Evaluator on the session's tiny model (the random tiny model, seed 0)."""
    info = ModelInfo("qsave/tiny-random-seed0", None, "float32", "cpu")
    ids = rating_token_ids(tiny.processor.tokenizer, "rating-first")
    return Evaluator(LoadedModel(tiny.model, tiny.processor, ids, info))


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Three 0.5 s 64×64 synthetic clips (paths) with their prompts, and a corrupt file."""
    root = tmp_path_factory.mktemp("serve-clips")
    corpus = write_corpus(root, SynthConfig(n=3, seed=5, size=64, seconds=0.5))
    (root / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return root, [(root / c.path, c.prompt) for c in corpus.clips]
