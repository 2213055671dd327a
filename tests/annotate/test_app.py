"""The annotate web app over real HTTP on loopback (uvicorn in a thread, an ephemeral port):
logins and cookies, CSRF, what a rater may fetch, the owner page, audits, hostile clients and a
restart."""

import math
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from annotate_harness import (
    LAYOUT,
    PASSWORD,
    VIDEO_SRC,
    Client,
    build_project,
    rating_form,
    serve,
    shifted,
    truth,
)

from qsave.annotate.config import LEVELS, AnnotateConfig
from qsave.annotate.store import Project
from qsave.cli import main as qsave

# gold_every=1: a rater's first formal video is gold, so one rating reaches the audit;
# audit_min_gold=1: that one gold video judges them.
CONFIG = AnnotateConfig(pilot_size=2, gold_every=1, audit_min_gold=1)
RATERS = ("ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon")


@dataclass(frozen=True)
class Site:
    project: Project
    url: str
    levels: dict[str, dict[str, str]]
    seen: list[tuple[str, str, int]]  # every response's (method, path, status)


@pytest.fixture(scope="module")
def site(annotate_clips, tmp_path_factory):
    project = build_project(tmp_path_factory.mktemp("site"), annotate_clips, CONFIG, RATERS)
    with serve(project) as server:
        yield Site(project, server.url, truth(annotate_clips), server.seen)
    project.close()
    assert not [s for s in server.seen if s[2] >= 500], "a request got a 5xx"


def to_formal(site: Site, name: str) -> tuple[Client, str, str]:
    """Log ``name`` in, pass training and the pilot with the true levels; (client, path of the
    first formal assignment, its video id)."""
    client = Client(site.url)
    assert client.login(name).status_code == 303
    assert client.post("/training").status_code == 303
    for _ in LAYOUT.pilot:
        where = client.get("/rate").headers["location"]
        video_id = VIDEO_SRC.search(client.get(where).text).group(1)
        assert client.post(where, rating_form(site.levels[video_id])).status_code == 200
    where = client.get("/rate").headers["location"]
    return client, where, VIDEO_SRC.search(client.get(where).text).group(1)


def far(levels: dict[str, str]) -> dict[str, str]:
    """Levels at least two steps from ``levels`` (an audit failure)."""
    return {d: "Bad" if LEVELS.index(v) >= 2 else "Excellent" for d, v in levels.items()}


def cookie(response: httpx.Response, name: str) -> str:
    return next(c for c in response.headers.get_list("set-cookie") if c.startswith(name + "="))


def test_login_cookies_are_http_only_and_strict(site):
    client = Client(site.url)
    login_cookie = cookie(client.get("/login"), "qsave_login").lower()
    assert "httponly" in login_cookie and "samesite=strict" in login_cookie
    wrong = client.post("/login", {"name": "ann", "password": "not the password"})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    right = client.post("/login", {"name": "ann", "password": PASSWORD})
    assert right.status_code == 303 and right.headers["location"] == "/training"
    session = cookie(right, "qsave_session").lower()
    assert "httponly" in session and "samesite=strict" in session and "secure" not in session
    assert client.get("/training").status_code == 200
    with serve(site.project, secure_cookies=True) as secure:
        assert "; secure" in cookie(httpx.get(f"{secure.url}/login"), "qsave_login").lower()


def test_a_post_without_its_csrf_token_is_refused(site):
    client, other = Client(site.url), Client(site.url)
    client.login("ben")
    other.login("cat")
    for token in (None, "forged", other.csrf):
        data = {} if token is None else {"csrf_token": token}
        refused = client.post("/training", data, csrf=False)
        assert refused.status_code == 403 and "security token" in refused.text
    assert site.project.user_by_name("ben").stage == "training"
    fresh = Client(site.url)
    fresh.get("/login")
    refused = fresh.post("/login", {"name": "ben", "password": PASSWORD}, csrf=False)
    assert refused.status_code == 403 and "qsave_session" not in str(refused.headers)
    assert client.post("/training").status_code == 303  # with the token: accepted


def test_a_rater_cannot_fetch_another_raters_assignment_or_video(site):
    ann, where, video_id = to_formal(site, "ann")
    page = ann.get(where).text
    assert "gold" not in page.lower() and "reference" not in page.lower()  # gold looks formal
    video = ann.get(f"/video/{video_id}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    ben = Client(site.url)
    ben.login("ben")  # in training: holds no video
    assert ben.get(f"/video/{video_id}").status_code == 404
    assert ben.get(where).status_code == 404
    assert ben.post(where, rating_form(site.levels[video_id])).status_code == 404
    cat, _, _ = to_formal(site, "cat")  # holds an assignment of its own
    assert cat.get(where).status_code == 404
    assert cat.post(where, rating_form(site.levels[video_id])).status_code == 404
    assert cat.get("/rate/999999").status_code == 404 and cat.get("/rate/abc").status_code == 404
    assert site.project.my_ratings(site.project.user_by_name("ann"))[-1].kind == "pilot"
    example = ben.get(f"/video/{LAYOUT.example}", headers={"Range": "bytes=0-99"})
    assert example.status_code == 206 and len(example.content) == 100  # training example
    assert example.headers["content-range"].startswith("bytes 0-99/")
    anonymous = httpx.get(f"{site.url}/video/{video_id}")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    assert ben.get("/owner").status_code == 403


def test_owner_page_shows_progress_agreement_and_audits(site):
    for name, shift in (("fay", 0), ("gus", -1)):  # two raters, two videos each
        client, where, video_id = to_formal(site, name)
        for _ in range(2):
            assert client.post(where, rating_form(shifted(site.levels[video_id], shift))
                               ).status_code == 303
            where = client.get("/rate").headers["location"]
            video_id = VIDEO_SRC.search(client.get(where).text).group(1)
    owner = Client(site.url)
    assert owner.login("olga").headers["location"] == "/owner"
    page = owner.get("/owner").text
    progress = site.project.progress()
    train = next(s for s in progress.splits if s.split == "train")
    assert f"{train.done} / {train.needed}" in page and train.done >= 2
    alphas = site.project.agreement()
    assert not math.isnan(alphas["visual"])
    for dim, alpha in alphas.items():
        shown = "–" if math.isnan(alpha) else f"{alpha:.3f}"
        assert f'<td class="alpha">{shown}</td>' in page, dim
    assert "Audits" in page and "<td>fay</td>" in page and "<td>gus</td>" in page
    saved = owner.post("/owner/example", {"video_id": "syn-00006", "dimension": "dynamic",
                                          "level": "Poor", "note": "stutters"})
    assert saved.status_code == 303 and saved.headers["location"] == "/owner?done=example"
    assert "Training example saved." in owner.get(saved.headers["location"]).text
    rater = Client(site.url)
    rater.login("ben")
    assert "stutters" in rater.get("/training").text
    bad = owner.post("/owner/example", {"video_id": "syn-00006", "dimension": "dynamic",
                                        "level": "Terrible"})
    assert bad.status_code == 400 and "unknown level" in bad.text.lower()
    unknown = owner.post("/owner/reference", {"video_id": "nope", "use": "gold",
                                              **site.levels["syn-00001"]})
    assert unknown.status_code == 400 and "unknown video" in unknown.text.lower()


def test_a_rater_failing_the_audit_is_paused_and_resumed(site):
    dan, where, video_id = to_formal(site, "dan")
    assert video_id in LAYOUT.gold
    assert dan.post(where, rating_form(far(site.levels[video_id]))).status_code == 303
    assert dan.get("/rate").headers["location"] == "/paused"
    assert "Your rating is paused" in dan.get("/paused").text
    owner = Client(site.url)
    owner.login("olga")
    page = owner.get("/owner").text
    dan_id = site.project.user_by_name("dan").id
    assert f'name="user_id" value="{dan_id}"' in page and "dan (audit)" in page
    assert owner.post("/owner/resume", {"user_id": str(dan_id)}).status_code == 303
    assert site.project.user_by_name("dan").stage == "formal"
    assert dan.get("/rate").headers["location"].startswith("/rate/")


def test_hostile_forms_get_a_clear_4xx_and_lose_nothing(site):
    eve, where, video_id = to_formal(site, "eve")
    before = len(site.project.my_ratings(site.project.user_by_name("eve")))
    form = {"content-type": "application/x-www-form-urlencoded"}
    huge = eve.http.post(where, content=b"a=" + b"x" * 200_000, headers=form)
    assert huge.status_code == 413 and "larger than" in huge.text
    many = eve.post(where, {f"f{i}": "1" for i in range(200)})
    assert many.status_code == 413 and "fields" in many.text
    assert eve.http.post(where, json={"visual_level": "Good"}).status_code == 415
    no_reason = eve.post(where, {**rating_form(site.levels[video_id]), "visual_level": "Bad",
                                 "visual_reason": ""})
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    long_text = eve.post(where, {**rating_form(site.levels[video_id]), "visual_level": "Poor",
                                 "visual_reason": "blur", "visual_text": "x" * 2001})
    assert long_text.status_code == 400 and "limit is 2000" in long_text.text
    bad_time = eve.post(where, {**rating_form(site.levels[video_id]), "visual_level": "Poor",
                                "visual_reason": "blur", "visual_start": "soon"})
    assert bad_time.status_code == 400 and "number of seconds" in bad_time.text
    refused = site.seen.count(("POST", where, 400))
    hang_up(site.url, where, eve)
    deadline = time.monotonic() + 10
    while site.seen.count(("POST", where, 400)) == refused:  # a 400 nobody reads
        assert time.monotonic() < deadline, site.seen[-5:]
        time.sleep(0.05)
    assert eve.get("/rate").headers["location"] == where  # still open, nothing saved
    assert len(site.project.my_ratings(site.project.user_by_name("eve"))) == before
    assert eve.post(where, rating_form(site.levels[video_id])).status_code == 303
    again = eve.post(where, rating_form(far(site.levels[video_id])))
    assert again.status_code == 409 and "first rating is kept" in again.text
    mine = site.project.my_ratings(site.project.user_by_name("eve"))
    assert len(mine) == before + 3
    assert {r.dimension: r.level for r in mine[-3:]} == site.levels[video_id]


def hang_up(url: str, path: str, client: Client) -> None:
    """Send the headers and a third of a form's body, then close the connection."""
    parts = urlsplit(url)
    body = f"csrf_token={client.csrf}&visual_level=Good&dynamic_level=Good".encode()
    token = client.http.cookies["qsave_session"]
    head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nCookie: qsave_session={token}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {3 * len(body)}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port)) as raw:
        raw.sendall(head + body)


def test_an_ended_session_is_refused(site):
    client = Client(site.url)
    client.login("hal")
    token = client.http.cookies["qsave_session"]
    assert client.post("/logout").status_code == 303
    stale = Client(site.url)
    stale.http.cookies.set("qsave_session", token)
    refused = stale.post("/training", {"csrf_token": client.csrf}, csrf=False)
    assert refused.status_code == 401 and "Log in again" in refused.text
    assert stale.get("/training").headers["location"] == "/login"
    assert site.project.user_by_name("hal").stage == "training"


def test_the_queue_and_session_survive_a_restart(site):
    with serve(Project.open(site.project.folder)) as first:
        ivy = Client(first.url)
        ivy.login("ivy")
        ivy.post("/training")
        held = ivy.get("/rate").headers["location"]
    with serve(Project.open(site.project.folder)) as second:
        ivy.http.base_url = second.url
        assert ivy.get("/rate").headers["location"] == held
        assert ivy.get(held).status_code == 200


def test_serve_prints_its_url_and_cookie_mode_and_refuses_a_public_host(site):
    folder = str(site.project.folder)
    assert qsave(["annotate", "serve", "--project", folder, "--host", "0.0.0.0"]) == 2
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "from qsave.cli import main; raise SystemExit(main())",
               "annotate", "serve", "--project", folder, "--port", str(port), "--secure-cookies"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "cookies: Secure" in line, line
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/login")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert answer.status_code == 200 and "; secure" in cookie(answer, "qsave_login").lower()
    finally:
        process.terminate()
        process.wait(10)
