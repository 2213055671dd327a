"""The reward server against hostile clients, over real HTTP on loopback (uvicorn in a thread)
with the tiny model: auth before the body, bounded decoding, cancelled abandoned work, honest
health, typed validation, loopback-only without a token."""

import asyncio
import copy
import json
import re
import socket
import threading
import time
from dataclasses import replace

import httpx
import pytest
from fastapi import HTTPException
from harness import RunningServer

from qsave.errors import ConfigError
from qsave.evaluator import Evaluator
from qsave.serve.server import ServeConfig, _all, create_app
from qsave.spec import InputLimits
from qsave.video.decode import DecodeLimits
from video.hostile import write_huge_clip, write_long_clip

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = InputLimits(video=DecodeLimits(max_duration_s=40.0), max_prompt_chars=3000,
                     max_prompt_tokens=300)


@pytest.fixture(scope="module")
def limited(tiny_evaluator):
    """The session's tiny model with small prompt limits (the same weights)."""
    backend = copy.copy(tiny_evaluator.backend)
    backend.spec = replace(backend.spec, limits=LIMITS)
    return Evaluator(backend)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A 16000×16000 clip, and a 30 s clip of 960×960 frames whose decode takes seconds."""
    root = tmp_path_factory.mktemp("hostile")
    write_huge_clip(root / "huge.avi")
    write_long_clip(root / "slow.mp4", frames=30 * 120, size=(960, 960), fps=120)
    return root


def started(evaluator, **settings):
    config = ServeConfig(**{"token": TOKEN, **settings})
    return RunningServer(create_app(config, evaluator))


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? ([0-9.e+]+)$" if labels else \
        rf"^{re.escape(name)} ([0-9.e+]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(match.lastindex)) if match else 0.0


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1)) / 1024


def test_a_tokenless_upload_is_refused_before_the_body(limited):
    with started(limited) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            start = time.perf_counter()
            raw.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 52428800\r\n"
                        b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n" + b"x" * 65536)
            answer = raw.recv(4096)
            elapsed = time.perf_counter() - start
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert elapsed < 1.0 and b"connection: close" in answer.lower()


def test_a_huge_resolution_is_refused_from_its_header(limited, hostile, clips):
    _, videos = clips
    huge = (hostile / "huge.avi").read_bytes()
    with started(limited) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        peak, base, stop = [0.0], rss_mb(), threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb())
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            response = http.post("/score", files={"video": ("huge.avi", huge)},
                                 data={"prompt": "p"}, headers=AUTH)
            files = [("videos", ("huge.avi", huge)), ("videos", ("ok.mp4",
                                                                 videos[0][0].read_bytes()))]
            batch = http.post("/reward", files=files, data={"prompts": ["p", videos[0][1]]},
                              headers=AUTH).json()
        finally:
            stop.set()
            watcher.join()
        assert metric(server.url, "qsave_refused_total", reason="video_limit") == 2
    assert response.status_code == 413
    assert "16000×16000" in response.json()["detail"] and "max_pixels" in response.json()["detail"]
    assert batch["items"][0]["error"]["type"] == "VideoLimitError"
    assert batch["items"][1]["error"] is None and batch["rewards"][1] > 0
    assert peak[0] - base < 150, f"RSS grew {peak[0] - base:.0f} MB for a refused clip"


def test_prompt_limits(limited, clips):
    _, videos = clips
    clip = {"video": ("a.mp4", videos[0][0].read_bytes())}
    with started(limited) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        too_long = http.post("/score", files=clip, data={"prompt": "a" * 3001}, headers=AUTH)
        assert too_long.status_code == 422
        assert too_long.json()["detail"][0]["loc"] == ["body", "prompt"]
        many_tokens = " ".join(["colour"] * 400)  # within 3000 characters, over 300 tokens
        response = http.post("/score", files=clip, data={"prompt": many_tokens}, headers=AUTH)
        assert response.status_code == 413 and "max_prompt_tokens (300)" in response.text
        assert metric(server.url, "qsave_refused_total", reason="prompt_limit") == 1


def test_a_client_that_hangs_up_has_its_decode_cancelled(limited, hostile):
    slow = (hostile / "slow.mp4").read_bytes()
    with started(limited, max_decodes=1) as server:
        host, port = server.url.removeprefix("http://").split(":")
        body = (b"--zz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cube\r\n"
                b"--zz\r\nContent-Disposition: form-data; name=\"video\"; filename=\"s.mp4\"\r\n"
                b"Content-Type: video/mp4\r\n\r\n" + slow + b"\r\n--zz--\r\n")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                        f"{TOKEN}\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            deadline = time.monotonic() + 10
            while metric(server.url, "qsave_decodes_in_progress") < 1:
                assert time.monotonic() < deadline, "the decode never started"
                time.sleep(0.02)
            hung_up = time.monotonic()
        while metric(server.url, "qsave_cancelled_items_total", stage="decode") < 1:
            assert time.monotonic() < hung_up + 5, "the decode was not cancelled"
            time.sleep(0.05)
        while metric(server.url, "qsave_decodes_in_progress") > 0:  # the thread stops too
            assert time.monotonic() < hung_up + 1.0, "the decode went on after the hang-up"
            time.sleep(0.02)
        assert metric(server.url, "qsave_items_in_flight") == 0
        assert metric(server.url, "qsave_items_total", outcome="ok") == 0


def test_a_timed_out_request_leaves_the_queue(limited, clips):
    """The model thread is busy with a long batch window; the request times out (504) and
    its queued item is taken out at once, not scored later."""
    root, videos = clips
    with started(limited, request_timeout_s=1.0, max_wait_ms=3000, max_batch_size=8,
                 allowed_root=str(root / "clips")) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post("/score", data={"path": videos[0][0].name, "prompt": "p"},
                             headers=AUTH)
        assert response.status_code == 504
        assert metric(server.url, "qsave_cancelled_items_total", stage="queue") == 1
        assert metric(server.url, "qsave_queue_depth") == 0
        time.sleep(3.5)  # past the batch window: nothing was scored for the gone request
        assert metric(server.url, "qsave_batch_size_count") == 0


def test_health_says_overloaded_and_reward_is_admitted_whole(limited, clips):
    root, videos = clips
    with started(limited, max_queue=2, max_wait_ms=2500, allowed_root=str(root / "clips")) as \
            server, httpx.Client(base_url=server.url, timeout=30) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["device"] == "cpu" and health.json()["decode_slots"] == 2
        three = {"paths": [v.name for v, _ in videos], "prompts": [p for _, p in videos]}
        refused = http.post("/reward", data=three, headers=AUTH)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert metric(server.url, "qsave_items_total", outcome="ok") == 0
        pair = {"paths": [v.name for v, _ in videos[:2]], "prompts": [p for _, p in videos[:2]]}
        with httpx.Client(base_url=server.url, timeout=30) as other:
            waiting = threading.Thread(target=other.post, args=("/reward",),
                                       kwargs={"data": pair, "headers": AUTH})
            waiting.start()
            deadline = time.monotonic() + 5
            while metric(server.url, "qsave_items_in_flight") < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            busy = http.get("/health")
            waiting.join()
        assert busy.status_code == 503 and busy.json()["status"] == "overloaded"
        assert busy.json()["in_flight"] == 2
        assert metric(server.url, "qsave_refused_total", reason="overloaded") == 1


@pytest.mark.parametrize("weights", ['"visual"', "null", "[1, 2]", '{"visual": {"a": [1]}}',
                                     '{"visual": 1e308}', '{"visual": -1}', '{"colour": 1}',
                                     '{"visual": 0}', "{not json", '{"visual": NaN}'])
def test_bad_weights_are_a_422_naming_the_field(limited, clips, weights):
    root, videos = clips
    with started(limited, allowed_root=str(root / "clips")) as server:
        response = httpx.post(f"{server.url}/reward", headers=AUTH, data={
            "paths": [videos[0][0].name], "weights": weights})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", "weights"]


@pytest.mark.parametrize("field", ["max_video_mb", "request_timeout_s", "max_wait_ms",
                                   "error_reward"])
def test_nan_and_inf_settings_are_refused_at_start(field):
    for value in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=field):
            ServeConfig(**{field: value})


def test_a_tokenless_server_answers_loopback_hosts_only(limited):
    with RunningServer(create_app(ServeConfig(), limited)) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        rebound = httpx.get(f"{server.url}/health", headers={"Host": "evil.example"})
        assert rebound.status_code == 403 and "loopback" in rebound.text
        cross = httpx.get(f"{server.url}/health", headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        local = httpx.get(f"{server.url}/health", headers={"Origin": "http://localhost:3000",
                                                           "Host": "localhost:8000"})
        assert local.status_code == 200


def test_schema_lists_every_status_and_types(limited):
    with started(limited) as server:
        schema = httpx.get(f"{server.url}/openapi.json").json()
    score = schema["paths"]["/score"]["post"]
    assert {"200", "400", "401", "403", "408", "413", "422", "503", "504"} <= set(
        score["responses"])
    form = schema["components"]["schemas"][
        score["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]]
    assert form["properties"]["video"]["format"] == "binary"
    assert form["properties"]["prompt"]["maxLength"] == 3000
    assert form["allOf"] == [{"oneOf": [{"required": ["video"]}, {"required": ["path"]}]}]
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert json.dumps(schema).count("HTTPBearer") >= 3  # the scheme and both scoring routes


def test_a_refused_part_cancels_the_rest_of_a_batch():
    """``/reward`` runs its items together; the first refusal cancels the others."""
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def refused():
        await asyncio.sleep(0.01)
        raise HTTPException(503, "overloaded")

    async def run():
        with pytest.raises(HTTPException) as refusal:
            await _all(iter([slow(), refused(), slow()]))
        return refusal.value.status_code

    assert asyncio.run(run()) == 503 and cancelled == [True, True]
