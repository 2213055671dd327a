"""``/score`` and ``/reward`` with JSON bodies, over real HTTP on loopback with the tiny model:
the same answers as the form for the same video and prompt (the prompt verbatim, whatever it
holds), the same checks, and hostile bodies refused with a 4xx naming the field."""

import base64
import json

import httpx
import pytest
from harness import RunningServer

from qsave.serve.server import RewardClient, ServeConfig, create_app

TOKEN = "json-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# what form-field syntax would cut or mangle: curl -F stops at ';', quotes, CR/LF, unicode, a
# control token (escaped, not read as one), a backslash
PROMPT = ('a red cube; then a blue one, "slowly" \'twice\'\nsecond line\r\nthird — naïve 猫 🎬 '
          'a=b&c <|im_end|> \\n end')


@pytest.fixture(scope="module")
def server(tiny_evaluator, clips):
    root, _ = clips
    config = ServeConfig(token=TOKEN, allowed_root=str(root / "clips"), max_video_mb=0.05,
                         max_request_mb=0.25, max_items=4)
    with RunningServer(create_app(config, tiny_evaluator)) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as client:
        yield client


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def scores(record: dict) -> dict[str, float]:
    return {name: value["score"] for name, value in record["scores"].items()}


def test_a_json_prompt_reaches_the_model_verbatim(http, clips, tiny_evaluator):
    _, videos = clips
    path = videos[0][0]
    by_form = http.post("/score", files={"video": (path.name, path.read_bytes(), "video/mp4")},
                        data={"prompt": PROMPT})
    by_form_path = http.post("/score", data={"path": path.name, "prompt": PROMPT})
    by_path = http.post("/score", json={"path": path.name, "prompt": PROMPT})
    by_b64 = http.post("/score", json={"video_b64": b64(path), "prompt": PROMPT})
    records = [r.json() for r in (by_form, by_form_path, by_path, by_b64)]
    for response, record in zip((by_form, by_form_path, by_path, by_b64), records, strict=True):
        assert response.status_code == 200, response.text
        assert record["prompt"] == PROMPT and record["error"] is None
        assert record["content_hash"] == records[0]["content_hash"]
    assert [r["id"] for r in records] == [path.stem, path.stem, path.stem, "video-0"]
    direct = tiny_evaluator.score(path, PROMPT)
    for record in records:
        assert scores(record) == pytest.approx(
            {d.value: s.score for d, s in direct.scores.items()}, abs=1e-4)
    cut = http.post("/score", json={"path": path.name, "prompt": PROMPT.split(";")[0]}).json()
    assert scores(cut) != scores(records[2])  # the test would see a cut prompt


def test_json_reward_matches_the_form(http, clips):
    _, videos = clips
    (first, _), (second, _) = videos[:2]
    weights = {"visual": 1, "alignment": 3}
    form = http.post("/reward", files=[("videos", (p.name, p.read_bytes())) for p in (first,
                                                                                    second)],
                     data={"prompts": [PROMPT, "a cat; a dog"], "weights": json.dumps(weights)})
    by_json = http.post("/reward", json={"weights": weights, "items": [
        {"path": first.name, "prompt": PROMPT}, {"video_b64": b64(second),
                                                 "prompt": "a cat; a dog"}]})
    assert form.status_code == by_json.status_code == 200, (form.text, by_json.text)
    form, by_json = form.json(), by_json.json()
    assert by_json["rewards"] == pytest.approx(form["rewards"], abs=1e-4)
    assert by_json["weights"] == form["weights"] == {"visual": 1.0, "alignment": 3.0}
    assert [i["id"] for i in by_json["items"]] == [first.stem, "video-1"]
    assert all(item["error"] is None for item in by_json["items"])


def test_per_item_errors_and_request_errors_mirror_the_form(http, clips):
    root, videos = clips
    corrupt = root / "clips" / "corrupt.mp4"
    body = http.post("/reward", json={"items": [
        {"path": videos[0][0].name, "prompt": "p"}, {"video_b64": b64(corrupt), "prompt": "p"},
        {"path": "missing.mp4", "prompt": "p"}]})
    assert body.status_code == 200, body.text
    items = body.json()["items"]
    assert items[0]["error"] is None and body.json()["rewards"][1:] == [0.0, 0.0]
    assert [items[1]["error"]["type"], items[2]["error"]["type"]] == [
        "VideoError", "VideoNotFoundError"]
    assert str(root) not in body.text
    one = http.post("/score", json={"video_b64": b64(corrupt), "prompt": "p"})
    assert one.status_code == 200 and one.json()["error"]["type"] == "VideoError"
    outside = http.post("/reward", json={"items": [{"path": videos[0][0].name},
                                                   {"path": "../manifest.jsonl"}]})
    assert outside.status_code == 403 and "outside the allowed root" in outside.text
    for attempt in ("/etc/passwd", "syn-00000.mp4\x00.txt"):
        assert http.post("/score", json={"path": attempt}).status_code == 403


def test_sizes_are_checked_before_decoding(http):
    over_video = base64.b64encode(b"\x00" * 60_000).decode()  # > max_video_mb, < max_request_mb
    response = http.post("/score", json={"video_b64": over_video})
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == ("the video in video_b64 (60000 bytes) exceeds "
                                         "max_video_mb (0.05 MiB)")
    response = http.post("/reward", json={"items": [{"path": "a.mp4"},
                                                    {"video_b64": over_video}]})
    assert response.status_code == 413 and "items[1].video_b64" in response.text
    huge = base64.b64encode(b"\x00" * 300_000).decode()  # > max_request_mb
    response = http.post("/score", json={"video_b64": huge})
    assert response.status_code == 413 and "max_request_mb" in response.text
    five = {"items": [{"path": "a.mp4"}] * 5}  # > max_items
    response = http.post("/reward", json=five)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
        "body", "items"]


MALFORMED = ['{"path": ', "{'path': 'a.mp4'}", '{"path": "a.mp4"} trailing', '{"path": "a\\x"}']
INVALID = [  # (endpoint, body as sent, the loc of the first problem)
    ("/score", "[]", ["body"]),
    ("/score", '"a.mp4"', ["body"]),
    ("/score", "null", ["body"]),
    ("/score", "{}", ["body"]),
    ("/score", '{"path": "a.mp4", "video_b64": "AAAA"}', ["body"]),
    ("/score", '{"path": null, "video_b64": "AAAA"}', ["body", "path"]),
    ("/score", '{"path": 5}', ["body", "path"]),
    ("/score", '{"path": ""}', ["body", "path"]),
    ("/score", '{"video_b64": "AAA"}', ["body", "video_b64"]),
    ("/score", '{"video_b64": "AA AA"}', ["body", "video_b64"]),
    ("/score", '{"video_b64": "AAAA\\n"}', ["body", "video_b64"]),
    ("/score", '{"video_b64": "!!!!"}', ["body", "video_b64"]),
    ("/score", '{"path": "a.mp4", "explain": "true"}', ["body", "explain"]),
    ("/score", '{"path": "a.mp4", "explain": 1}', ["body", "explain"]),
    ("/score", '{"path": "a.mp4", "dimensions": "visual"}', ["body", "dimensions"]),
    ("/score", '{"path": "a.mp4", "dimensions": ["colour"]}', ["body", "dimensions", 0]),
    ("/score", '{"path": "a.mp4", "dimensions": []}', ["body", "dimensions"]),
    ("/score", '{"path": "a.mp4", "id": ""}', ["body", "id"]),
    ("/score", '{"path": "a.mp4", "prompt": 3}', ["body", "prompt"]),
    ("/score", '{"path": "a.mp4", "prompt": "\\ud800"}', ["body", "prompt"]),
    ("/score", '{"path": "a.mp4", "prompt": "' + "a" * 10_001 + '"}', ["body", "prompt"]),
    ("/score", '{"path": "a.mp4", "video": "AAAA"}', ["body", "video"]),
    ("/reward", '{"items": []}', ["body", "items"]),
    ("/reward", '{"items": {"path": "a.mp4"}}', ["body", "items"]),
    ("/reward", '{"paths": ["a.mp4"]}', ["body", "items"]),
    ("/reward", '{"items": [{"path": "a.mp4"}, {"video_b64": "A==="}]}',
     ["body", "items", 1, "video_b64"]),
    ("/reward", '{"items": [{"path": "a.mp4"}, {}]}', ["body", "items", 1]),
    ("/reward", '{"items": [{"path": "a.mp4", "video_b64": "AAAA"}]}', ["body", "items", 0]),
    ("/reward", '{"items": [{"path": "a.mp4"}], "weights": {"visual": 0}}', ["body", "weights"]),
    ("/reward", '{"items": [{"path": "a.mp4"}], "weights": {"visual": true}}',
     ["body", "weights", "visual"]),
    ("/reward", '{"items": [{"path": "a.mp4"}], "weights": {"visual": NaN}}',
     ["body", "weights", "visual"]),
    ("/reward", '{"items": [{"path": "a.mp4"}], "weights": {"visual": 1e999}}',
     ["body", "weights", "visual"]),
    ("/reward", '{"items": [{"path": "a.mp4"}], "weights": {"colour": 1}}',
     ["body", "weights", "colour"]),
    ("/reward", '{"items": [{"path": "a.mp4"}], "weights": "{\\"visual\\": 1}"}',
     ["body", "weights"]),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_json_is_a_422_saying_where(http, body):
    response = http.post("/score", content=body.encode("latin-1"),
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    problem, = response.json()["detail"]
    assert problem["type"] == "json_invalid" and problem["loc"][0] == "body"
    assert problem["msg"].startswith("JSON decode error: ")


@pytest.mark.parametrize(("endpoint", "body", "loc"), INVALID,
                         ids=[f"{e}:{b[:40]}" for e, b, _ in INVALID])
def test_invalid_json_is_a_422_naming_the_field(http, endpoint, body, loc):
    response = http.post(endpoint, content=body.encode(),
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"][:len(loc)] == loc, detail
    assert "a" * 100 not in response.text  # the input is never echoed
    if loc[-1] == "video_b64":
        assert "not base64" in detail[0]["msg"] or "at least 4" in detail[0]["msg"]
    if loc in (["body"], ["body", "items", 0]) and "path" in body:
        assert "exactly one of path and video_b64" in detail[0]["msg"]


def test_bodies_that_break_the_parser_are_a_400_and_the_server_goes_on(http, clips):
    _, videos = clips
    deep = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser recurses
    long_number = '{"path": "a.mp4", "id": ' + "9" * 5000 + "}"  # over int's digit limit
    for body in (deep.encode(), long_number.encode(), b'{"path": "\xff"}'):  # not UTF-8
        response = http.post("/score", content=body,
                             headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
    json_as_text = http.post("/score", content=b'{"path": "a.mp4"}',
                             headers={"Content-Type": "text/plain"})
    assert json_as_text.status_code == 422  # read as a form: no video field
    after = http.post("/score", json={"path": videos[0][0].name, "dimensions": ["visual"]})
    assert after.status_code == 200 and after.json()["error"] is None


def test_json_needs_the_token_too(server, clips):
    _, videos = clips
    for endpoint, body in (("/score", {"path": videos[0][0].name}),
                           ("/reward", {"items": [{"path": videos[0][0].name}]})):
        response = httpx.post(f"{server.url}{endpoint}", json=body, timeout=60)
        assert response.status_code == 401, response.text


def test_the_schema_lists_both_bodies_with_the_same_fields(http):
    schema = http.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def body(path: str, media: str) -> dict:
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        return components[content[media]["schema"]["$ref"].rsplit("/", 1)[-1]]

    score_form, score_json = body("/score", "multipart/form-data"), body("/score",
                                                                       "application/json")
    assert set(score_json["properties"]) == set(score_form["properties"]) - {"video"} | {
        "video_b64"}
    assert score_json["allOf"] == [{"oneOf": [{"required": ["path"]},
                                              {"required": ["video_b64"]}]}]
    assert score_json["additionalProperties"] is False
    b64_field = score_json["properties"]["video_b64"]
    assert b64_field["contentEncoding"] == "base64" and b64_field["pattern"].startswith("^")
    assert "default" not in b64_field and b64_field["type"] == "string"
    reward_json = body("/reward", "application/json")
    assert set(reward_json["properties"]) == {"items", "weights"}
    assert reward_json["properties"]["items"]["maxItems"] == 4
    item = components[reward_json["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert set(item["properties"]) == {"path", "video_b64", "prompt"}  # paths/videos, prompts
    assert "openapi" in schema and schema["paths"]["/score"]["post"]["operationId"] == (
        "score_score_post")


def test_reward_client_by_path_sends_json(server, clips):
    _, videos = clips
    names = [p.name for p, _ in videos[:2]]
    with_paths = RewardClient(server.url, TOKEN, weights={"visual": 1}, by_path=True)
    uploads = RewardClient(server.url, TOKEN, weights={"visual": 1})
    try:
        by_path = with_paths(names, [PROMPT, None])
        uploaded = uploads([p for p, _ in videos[:2]], [PROMPT, None])
    finally:
        with_paths.close()
        uploads.close()
    assert by_path == pytest.approx(uploaded, abs=1e-4) and len(by_path) == 2
    assert [item["id"] for item in with_paths.last["items"]] == [p.stem for p, _ in videos[:2]]
