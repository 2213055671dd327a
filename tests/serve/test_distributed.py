"""Ray Data scoring end to end on a local Ray cluster (CPU, the tiny model), and resuming."""

import json
import os

import pytest

from qsave.errors import ConfigError
from qsave.evaluator import ScoreItem, items_from, score_to_jsonl
from qsave.results import read_records
from qsave.serve.distributed import ModelSpec, RayConfig, rows_of, score_with_ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """One local Ray session for the module (start-up is slow); no cached tiny checkpoint.
    The workers inherit the environment of the process that starts the cluster."""
    cache = tmp_path_factory.mktemp("empty-qsave-cache")
    saved = os.environ.get("QSAVE_CACHE")
    os.environ["QSAVE_CACHE"] = str(cache)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("QSAVE_CACHE", None)
    else:
        os.environ["QSAVE_CACHE"] = saved


def test_ray_scoring_resumes_and_matches_local_scoring(ray_session, clips, tiny_evaluator,
                                                       tmp_path):
    root, _ = clips
    corrupt = ScoreItem(str(root / "clips" / "corrupt.mp4"))
    items = [*items_from(root / "manifest.jsonl")[:2], corrupt]
    local = score_to_jsonl(tiny_evaluator, items, tmp_path / "local.jsonl", batch_size=2)
    lines = (tmp_path / "local.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "ray.jsonl"  # a killed run: one whole row and half of the next
    out.write_text(lines[0] + lines[1][:40])

    config = RayConfig(actors=1, batch_size=2, cpus_per_actor=1)
    run = score_with_ray(items, out, ModelSpec("tiny"), config=config)
    assert (run.written, run.skipped, run.failed) == (2, 1, ["corrupt"])
    assert [r["id"] for r in run.records] == [i.name for i in items]
    assert run.records[-1]["error"].startswith("VideoError") and run.records[-1]["scores"] == {}
    for remote, mine in zip(run.records, local.records, strict=True):
        assert remote["model"] == mine["model"] and remote["settings"] == mine["settings"]
        assert remote["content_hash"] == mine["content_hash"]
        for dimension, score in mine["scores"].items():
            assert remote["scores"][dimension]["score"] == pytest.approx(score["score"],
                                                                         abs=1e-4)
    rows = list(read_records(out))
    assert sorted(r["id"] for r in rows) == sorted(i.name for i in items)
    assert all(json.dumps(r) for r in rows)
    # the same resume keys: `qsave score` on the Ray output finds nothing left to do
    again = score_to_jsonl(tiny_evaluator, items, out, batch_size=2)
    assert (again.written, again.skipped) == (0, len(items))


def test_inputs_and_settings_are_checked():
    with pytest.raises(ConfigError, match="backend"):
        ModelSpec(backend="onnx")
    with pytest.raises(ConfigError):
        RayConfig(actors=0)
    assert RayConfig(gpus_per_actor=1).remote_args() == {"num_cpus": 1.0, "num_gpus": 1}
    with pytest.raises(ConfigError, match="no path"):
        rows_of([ScoreItem(object())])
