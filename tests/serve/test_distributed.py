"""Ray Data scoring end to end on a local Ray cluster (CPU, the tiny model), resuming, and the
same rows from every caller of the scoring pipeline: CLI, Ray, the server and qsave.reward."""

import os

import httpx
import pytest
from harness import RunningServer

from qsave.cli import main
from qsave.errors import ConfigError
from qsave.evaluator import ScoreItem
from qsave.jsonl import read_jsonl
from qsave.results import score_to_jsonl
from qsave.serve.distributed import RayConfig, rows_of, score_with_ray
from qsave.serve.reward import RewardModel
from qsave.serve.server import ServeConfig, create_app
from qsave.sources import items_from
from qsave.spec import ScorerSpec

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
    corrupt = ScoreItem(str(root / "clips" / "corrupt.mp4"), "a prompt")
    items = [*items_from(root / "manifest.jsonl")[:2], corrupt]
    local = score_to_jsonl(tiny_evaluator, items, tmp_path / "local.jsonl", batch_size=2)
    lines = (tmp_path / "local.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "ray.jsonl"  # a killed run: one whole row and half of the next
    out.write_text(lines[0] + lines[1][:40])

    config = RayConfig(actors=1, batch_size=2, cpus_per_actor=1)
    run = score_with_ray(items, out, ScorerSpec("tiny"), config=config)
    assert (run.written, run.skipped, [r.id for r in run.failed]) == (2, 1, ["corrupt"])
    assert any("cut a damaged last line" in repair for repair in run.repairs)
    assert [r.id for r in run.results] == [i.name for i in items]
    assert run.results[-1].error.type == "VideoError" and run.results[-1].scores == {}
    for remote, mine in zip(run.results, local.results, strict=True):
        assert remote.model == mine.model and remote.settings == mine.settings
        assert remote.content_hash == mine.content_hash
        for dimension, score in mine.scores.items():
            assert remote.scores[dimension].score == pytest.approx(score.score, abs=1e-4)
    rows = [row for _, row in read_jsonl(out).rows]
    assert sorted(r["id"] for r in rows) == sorted(i.name for i in items)
    # the same resume keys: `qsave score` on the Ray output skips the scored videos, tries the
    # failed one again, and still leaves one row per input
    again = score_to_jsonl(tiny_evaluator, items, out, batch_size=2)
    assert (again.written, again.skipped, again.replaced) == (1, len(items) - 1, 1)
    assert sorted(row["id"] for _, row in read_jsonl(out).rows) == sorted(i.name for i in items)


def test_inputs_and_settings_are_checked():
    with pytest.raises(ConfigError, match="backend"):
        ScorerSpec(backend="onnx")
    with pytest.raises(ConfigError):
        RayConfig(actors=0)
    assert RayConfig(gpus_per_actor=1).remote_args() == {"num_cpus": 1.0, "num_gpus": 1}
    with pytest.raises(ConfigError, match="no path"):
        rows_of([ScoreItem(object())])


@pytest.mark.timeout(600)  # a Ray actor, a server and the CLI, each loading the tiny model
def test_cli_ray_server_and_reward_give_the_same_scores(ray_session, clips, tiny_evaluator,
                                                        tmp_path):
    """One clip set through each caller of the pipeline: max |Δr̂| ≤ 1e-6 against the CLI."""
    root, videos = clips
    manifest = root / "manifest.jsonl"
    cli_out, ray_out = tmp_path / "cli.jsonl", tmp_path / "ray.jsonl"
    assert main(["score", str(manifest), "-o", str(cli_out), "--model", "tiny"]) == 0
    cli = {row["id"]: row for _, row in read_jsonl(cli_out).rows}
    items = items_from(manifest)
    ray_rows = score_with_ray(items, ray_out, ScorerSpec("tiny"),
                              config=RayConfig(actors=1, batch_size=8)).results
    with RunningServer(create_app(ServeConfig(max_wait_ms=500), tiny_evaluator)) as server:
        served = [httpx.post(f"{server.url}/score", timeout=120,
                             files={"video": (path.name, path.read_bytes())},
                             data={"prompt": prompt, "id": path.stem}).json()
                  for path, prompt in videos]
        rewarded = httpx.post(f"{server.url}/reward", timeout=120,
                              files=[("videos", (p.name, p.read_bytes())) for p, _ in videos],
                              data={"prompts": [prompt for _, prompt in videos]}).json()
    in_process = RewardModel(tiny_evaluator).details([p for p, _ in videos],
                                                     [prompt for _, prompt in videos])
    gaps = []
    for k, item in enumerate(items):
        reference = cli[item.name]["scores"]
        for dimension, score in reference.items():
            gaps += [abs(ray_rows[k].scores[dimension].score - score["score"]),
                     abs(served[k]["scores"][dimension]["score"] - score["score"]),
                     abs(rewarded["items"][k]["scores"][dimension] - score["score"]),
                     abs(in_process[k].scores[dimension] - score["score"])]
        assert served[k]["settings"] == cli[item.name]["settings"]
        assert served[k]["content_hash"] == cli[item.name]["content_hash"]
    assert len(gaps) == 4 * 3 * len(items) and max(gaps) <= 1e-6
