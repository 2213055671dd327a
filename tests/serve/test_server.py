"""The reward server over real HTTP on loopback (uvicorn in a thread, an ephemeral port)."""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import RunningServer

from qsave.errors import ConfigError
from qsave.serve.server import (
    RewardClient,
    ServeConfig,
    create_app,
    resolve_inside,
)

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tiny_evaluator, clips):
    root, _ = clips
    config = ServeConfig(token=TOKEN, allowed_root=str(root / "clips"), max_video_mb=0.05,
                         max_request_mb=0.25, max_items=4, max_batch_size=4, max_wait_ms=300)
    with RunningServer(create_app(config, tiny_evaluator)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


def upload(path, name=None):
    return {"video": (name or path.name, path.read_bytes(), "video/mp4")}


def test_health_metrics_and_schema_need_no_token(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["auth"] is True
    assert health["model"]["id"] == "qsave/tiny-random-seed0"
    schema = client.get("/openapi.json").json()
    assert {"/score", "/reward", "/health", "/metrics"} <= set(schema["paths"])
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "qsave_queue_depth" in metrics.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_scoring_endpoints_refuse_a_missing_or_wrong_token(client, clips, headers):
    _, videos = clips
    for endpoint in ("/score", "/reward"):
        response = client.post(endpoint, files=upload(videos[0][0]), headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"


def test_score_upload_matches_the_evaluator(client, clips, tiny_evaluator):
    _, videos = clips
    path, prompt = videos[0]
    response = client.post("/score", files=upload(path, "../../evil/name.mp4"),
                           data={"prompt": prompt, "dimensions": "alignment,visual"},
                           headers=AUTH)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["error"] is None and record["id"] == "name" and "path" not in record
    assert record["content_hash"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(record["scores"]) == ["visual", "alignment"]
    direct = tiny_evaluator.score(path, prompt, dimensions=["visual", "alignment"])
    for dimension, score in direct.scores.items():
        assert record["scores"][dimension.value]["score"] == pytest.approx(score.score, abs=1e-4)
    assert record["batch"]["size"] >= 1 and record["video"]["num_tokens"] > 0


def test_score_by_path_inside_the_root(client, clips):
    _, videos = clips
    response = client.post("/score", data={"path": videos[1][0].name, "dimensions": "visual"},
                           headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["error"] is None and response.json()["id"] == videos[1][0].stem
    missing = client.post("/score", data={"path": "missing.mp4", "prompt": "p"}, headers=AUTH)
    assert missing.status_code == 200 and missing.json()["error"]["type"] == "VideoNotFoundError"
    assert str(clips[0]) not in missing.json()["error"]["message"]


def test_path_traversal_is_refused(client, clips, tmp_path):
    root, videos = clips
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(videos[0][0].read_bytes())
    (root / "clips" / "link.mp4").symlink_to(outside)
    attempts = ["../manifest.jsonl", str(outside), "link.mp4", "sub/../../manifest.jsonl",
                "syn-00000.mp4\x00.txt", "/etc/passwd"]
    for attempt in attempts:
        response = client.post("/score", data={"path": attempt}, headers=AUTH)
        assert response.status_code in (403, 422), (attempt, response.text)
        assert response.status_code == 403 or "\x00" in attempt
    response = client.post("/reward", data={"paths": [videos[0][0].name, "../manifest.jsonl"]},
                           headers=AUTH)
    assert response.status_code == 403
    with pytest.raises(PermissionError):
        resolve_inside(root / "clips", "../clips/../manifest.jsonl")
    assert resolve_inside(root / "clips", "./a/../syn-00000.mp4").name == "syn-00000.mp4"


def test_oversized_uploads_and_bodies_are_refused(client, clips):
    big = os.urandom(80_000)  # above max_video_mb (0.05 MiB), below max_request_mb
    response = client.post("/score", files={"video": ("big.mp4", big)}, headers=AUTH)
    assert response.status_code == 413 and "max_video_mb" in response.text
    huge = os.urandom(300_000)  # above max_request_mb (0.25 MiB): refused by Content-Length
    response = client.post("/score", files={"video": ("huge.mp4", huge)}, headers=AUTH)
    assert response.status_code == 413 and "max_request_mb" in response.text

    def chunks():  # no Content-Length: counted while it streams in
        yield (b'--zzz\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
               b"Content-Type: video/mp4\r\n\r\n")
        for _ in range(40):
            yield b"x" * 10_000

    response = client.post("/score", content=chunks(), headers={
        **AUTH, "Content-Type": "multipart/form-data; boundary=zzz"})
    assert response.status_code == 413
    _, videos = clips
    too_many = [("videos", (p.name, p.read_bytes())) for p, _ in videos * 2]  # 6 > max_items
    response = client.post("/reward", files=too_many, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
        "body", "videos"]


def test_corrupt_video_is_a_per_item_error(client, clips):
    root, videos = clips
    corrupt = root / "clips" / "corrupt.mp4"
    response = client.post("/score", files=upload(corrupt), data={"prompt": "p"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["error"]["type"] == "VideoError" and response.json()["scores"] == {}
    files = [("videos", (p.name, p.read_bytes())) for p in (videos[0][0], corrupt, videos[2][0])]
    data = {"prompts": [videos[0][1], "anything", videos[2][1]]}
    body = client.post("/reward", files=files, data=data, headers=AUTH).json()
    assert len(body["rewards"]) == 3 and body["rewards"][1] == 0.0
    assert body["items"][1]["error"]["type"] == "VideoError"
    for item in (body["items"][0], body["items"][2]):
        assert item["error"] is None and set(item["scores"]) == {"visual", "dynamic", "alignment"}
        assert item["reward"] == pytest.approx(sum(item["scores"].values()) / 3)


def test_reward_weights_and_validation(client, clips):
    _, videos = clips
    data = {"paths": [videos[0][0].name], "prompts": [videos[0][1]],
            "weights": json.dumps({"visual": 3, "alignment": 1})}
    body = client.post("/reward", data=data, headers=AUTH).json()
    scores = body["items"][0]["scores"]
    assert set(scores) == {"visual", "alignment"}
    assert body["rewards"][0] == pytest.approx((3 * scores["visual"] + scores["alignment"]) / 4)
    for weights in ('{"visual": -1}', '{"colour": 1}', "[1, 2]", "{not json"):
        response = client.post("/reward", data={**data, "weights": weights}, headers=AUTH)
        assert response.status_code == 422, weights
    response = client.post("/reward", data={**data, "prompts": ["a", "b"]}, headers=AUTH)
    assert response.status_code == 422
    assert client.post("/score", data={}, headers=AUTH).status_code == 422
    response = client.post("/score", data={"path": videos[0][0].name, "dimensions": "colour"},
                           headers=AUTH)
    assert response.status_code == 422 and "'visual', 'dynamic' or 'alignment'" in response.text


def test_concurrent_requests_are_micro_batched(server, clips):
    _, videos = clips

    def post(index):
        path, prompt = videos[index % len(videos)]
        with httpx.Client(base_url=server.url, timeout=120) as http:
            return http.post("/score", files=upload(path), data={"prompt": prompt},
                             headers=AUTH)

    before = batch_count(server)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(post, range(6)))
    assert all(r.status_code == 200 and r.json()["error"] is None for r in responses)
    sizes = [r.json()["batch"]["size"] for r in responses]
    assert max(sizes) > 1, sizes
    batches = batch_count(server) - before
    assert batches == len({r.json()["batch"]["id"] for r in responses}) < 6


def batch_count(server):
    text = httpx.get(f"{server.url}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("qsave_batch_size_count"))
    return float(line.split()[-1])


def test_slow_scoring_times_out(tiny_evaluator, clips):
    _, videos = clips
    config = ServeConfig(request_timeout_s=0.01)
    with RunningServer(create_app(config, tiny_evaluator)) as running:
        response = httpx.post(f"{running.url}/score", files=upload(videos[0][0]),
                              data={"prompt": videos[0][1]}, timeout=60)
    assert response.status_code in (408, 504), response.text


def test_config_refuses_an_open_public_server():
    with pytest.raises(ConfigError, match="without a token"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", token="t").public()["token"] == "set"
    with pytest.raises(ConfigError, match="weights"):
        ServeConfig(weights={"visual": -1.0})


def test_reward_client_from_another_process_view(server, clips):
    _, videos = clips
    client = RewardClient(server.url, TOKEN, weights={"alignment": 1})
    rewards = client([videos[2][0]], [videos[2][1]])
    assert rewards == [client.last["items"][0]["scores"]["alignment"]]
    assert client.last["warnings"] == [] and client.last["weights"] == {"alignment": 1.0}
    client.close()
    with pytest.raises(Exception, match="401"):
        RewardClient(server.url, "wrong")([videos[2][0]], [None])
