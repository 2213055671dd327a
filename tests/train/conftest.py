"""Fixtures of the training tests: a small synthetic corpus and its records (built once)."""

import pytest


@pytest.fixture(scope="session")
def corpus_records(tmp_path_factory):
    """Think-first training records of an 8-clip synthetic corpus, keyed by split."""
    from qsave.data.annotations import load_videos, mos_from_videos
    from qsave.data.records import build_records
    from qsave.data.synthetic import SynthConfig, write_corpus

    out = tmp_path_factory.mktemp("train-corpus")
    write_corpus(out, SynthConfig(n=8, seed=3, size=64, seconds=1.0))
    videos = load_videos(out / "manifest.jsonl")
    records = build_records(videos, mos_from_videos(videos)).records
    return {s: [r for r in records if r.split == s] for s in ("train", "test", "rl")} | {
        "all": records, "dir": out}
