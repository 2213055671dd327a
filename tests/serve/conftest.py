"""Fixtures of the serve tests: a few short clips (the evaluator is tests/conftest.py's)."""

import pytest

from qsave.data.synthetic import SynthConfig, write_corpus


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Three 0.5 s 64×64 synthetic clips (paths) with their prompts, and a corrupt file."""
    root = tmp_path_factory.mktemp("serve-clips")
    corpus = write_corpus(root, SynthConfig(n=3, seed=5, size=64, seconds=0.5))
    (root / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return root, [(root / c.path, c.prompt) for c in corpus.clips]
