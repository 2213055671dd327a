"""The examples of docs/serve.md's "Requests" section, run as written against a real server on
loopback with the tiny model: each ``bash`` block with curl (the host, port, token and files
are the page's: the server's URL replaces ``http://127.0.0.1:8000``, ``$QSAVE_SERVE_TOKEN`` is
set, ``clip.mp4`` and ``step7/*.mp4`` exist), each ``python`` block in this process, and each
``json`` answer shown checked against the response models (the 422 against the server's own)."""

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from harness import RunningServer

from qsave.serve import api
from qsave.serve.server import ServeConfig, create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "serve.md"
URL = "http://127.0.0.1:8000"  # the page's server
TOKEN = "doc-token"


def blocks(language: str) -> list[str]:
    """The fenced ``language`` blocks of the section "Requests", in order."""
    text = DOC.read_text()
    start = text.index("\n## Requests\n")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def served(tiny_evaluator, clips, tmp_path_factory):
    """The server (files under ``rollouts`` by path) and the examples' working folder."""
    _, videos = clips
    rollouts, work = tmp_path_factory.mktemp("rollouts"), tmp_path_factory.mktemp("work")
    (rollouts / "step7").mkdir()
    for index, (path, _) in enumerate(videos[:2]):
        shutil.copy(path, rollouts / "step7" / f"{index}.mp4")
    shutil.copy(videos[2][0], work / "clip.mp4")
    config = ServeConfig(token=TOKEN, allowed_root=str(rollouts))
    with RunningServer(create_app(config, tiny_evaluator)) as running:
        yield running, work


def check_score(record: dict, prompts: set[str]) -> None:
    api.ScoreResponse.model_validate(record)
    assert record["error"] is None and record["scores"], record
    assert record["prompt"] in prompts, (record["prompt"], prompts)  # verbatim, ';' and all


def check_reward(body: dict, count: int) -> None:
    api.RewardResponse.model_validate(body)
    assert len(body["rewards"]) == count and all(i["error"] is None for i in body["items"]), body
    assert body["weights"] == {"visual": 1.0, "alignment": 2.0}


def test_the_section_shows_every_endpoint_with_both_bodies():
    bash = blocks("bash")
    for endpoint in ("score", "reward"):
        uses = [b for b in bash if f"{URL}/{endpoint}" in b]
        assert any("application/json" in b for b in uses), endpoint
        assert any("application/json" not in b for b in uses), endpoint
    assert all(sum(f"{URL}/" in line for line in b.splitlines()) == 1 for b in bash)
    assert {"health", "metrics"} <= {e for b in bash for e in re.findall(rf"{URL}/(\w+)", b)}
    python = "\n".join(blocks("python"))
    assert all(word in python for word in ("httpx", "requests", "RewardClient", "by_path=True"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("index", range(len(blocks("bash"))))
def test_a_curl_example_works_as_written(served, index):
    server, work = served
    block = blocks("bash")[index]
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block.replace(URL, server.url)],
                         cwd=work, env={**os.environ, "QSAVE_SERVE_TOKEN": TOKEN},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    endpoint = re.search(rf"{URL}/(\w+)", block).group(1)
    if endpoint == "metrics":
        assert "qsave_queue_depth" in run.stdout
        return
    answer = json.loads(run.stdout)
    if endpoint == "score":
        form = re.findall(r"prompt=([^']*)'", block)
        sent = re.findall(r'"prompt": ("(?:[^"\\]|\\.)*")', block)
        check_score(answer, {*form, *map(json.loads, sent)})
    elif endpoint == "reward":
        check_reward(answer, 2)
    else:
        assert api.HealthResponse.model_validate(answer).status == "ok"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_a_python_example_works_as_written(served, index, monkeypatch):
    server, work = served
    code = blocks("python")[index]
    monkeypatch.chdir(work)
    monkeypatch.setenv("QSAVE_SERVE_TOKEN", TOKEN)
    namespace: dict = {"__name__": "docs_serve_example"}
    exec(compile(code.replace(URL, server.url), f"{DOC}, python block {index}", "exec"),
         namespace)
    prompts = {node.values[i].value for node in ast.walk(ast.parse(code))
               if isinstance(node, ast.Dict) for i, key in enumerate(node.keys)
               if isinstance(key, ast.Constant) and key.value == "prompt"
               and isinstance(node.values[i], ast.Constant)}
    checked = [name for name in ("record", "body", "rewards") if name in namespace]
    assert checked, "an example binds record, body or rewards"
    if "record" in namespace:
        check_score(namespace["record"], prompts)
    if "body" in namespace:
        check_reward(namespace["body"], 2)
    if "rewards" in namespace:
        rewards = namespace["rewards"]
        assert len(rewards) == 3 and all(0 < reward <= 1 for reward in rewards), rewards


@pytest.mark.parametrize("index", range(len(blocks("json"))))
def test_an_answer_shown_is_one_the_server_gives(served, index):
    answer = json.loads(blocks("json")[index])
    if "rewards" in answer:
        api.RewardResponse.model_validate(answer)
    elif "scores" in answer:
        api.ScoreResponse.model_validate(answer)
    elif "status" in answer:
        api.HealthResponse.model_validate(answer)
    else:  # the 422 shown is the server's answer to that body
        server, _ = served
        problem, = answer["detail"]
        response = httpx.post(f"{server.url}/reward", timeout=60, headers={
            "Authorization": f"Bearer {TOKEN}"}, json={"items": [
                {"path": "step7/0.mp4"}, {"video_b64": "AA AA"}]})
        assert response.status_code == 422 and response.json()["detail"] == [problem]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_dash_f_cuts_a_prompt_at_its_semicolon_as_the_page_says(served):
    server, _ = served
    prompt = "a red cube; the camera stays still"

    def recorded(*form: str) -> str:
        run = subprocess.run(["curl", "-sS", "--fail-with-body", "-H",
                              f"Authorization: Bearer {TOKEN}", "-F", "path=step7/0.mp4",
                              "-F", "dimensions=visual", *form, f"{server.url}/score"],
                             capture_output=True, text=True, timeout=120, check=True)
        return json.loads(run.stdout)["prompt"]

    assert recorded("-F", f"prompt={prompt}") == "a red cube"
    assert recorded("--form-string", f"prompt={prompt}") == prompt
