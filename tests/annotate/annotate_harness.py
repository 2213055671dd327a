"""What the annotate web tests share: the clips' layout, a project laid out for the paper's
workflow, a real uvicorn server on loopback, and an HTTP client that logs in and posts forms
with their CSRF token like a browser does (the `clips` fixture is in conftest.py)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from qsave.annotate.app import create_app
from qsave.annotate.config import LEVELS, LOW_LEVELS, REASONS, AnnotateConfig
from qsave.annotate.store import Project
from qsave.dimensions import DIMENSIONS, mos_to_rating
from serve.harness import RunningServer

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
VIDEO_SRC = re.compile(r'<video id="player"[^>]* src="/video/([^"]+)"')
SYNTH = {"n": 8, "seed": 3, "size": 64, "fps": 8, "seconds": 2.0, "test_fraction": 0.0,
         "rl_fraction": 0.0}  # every clip in train: 3 raters each (a test video needs 12)


@dataclass(frozen=True)
class Layout:
    """Which clip does what. Train clips are the data set (3 raters each); the pilot round and
    the example are ``unused`` clips, never assigned as work; gold clips are train clips too, so
    the owner's reference covers rated videos (the expert truth of `qsave data screen`)."""

    train: tuple[str, ...] = tuple(f"syn-{i:05d}" for i in range(5))
    gold: tuple[str, ...] = ("syn-00003", "syn-00004")
    example: str = "syn-00005"
    pilot: tuple[str, ...] = ("syn-00006", "syn-00007")


LAYOUT = Layout()



def make_clips(root: Path) -> Path:
    """`qsave data synth` with a tiny config (8 clips of 2 s, 64×64) into ``root``, then a
    videos table (videos.jsonl beside it) with the layout's splits (the ``annotate_clips``
    fixture of tests/conftest.py)."""
    from qsave.cli import main

    config = root / "synth.json"
    config.write_text(json.dumps(SYNTH))
    assert main(["data", "synth", "--out", str(root), "--config", str(config)]) == 0
    unused = {LAYOUT.example, *LAYOUT.pilot}
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row["split"] = "unused" if row["id"] in unused else "train"
    (root / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def truth(clips: Path) -> dict[str, dict[str, str]]:
    """video_id → dimension → the level of the clip's synthetic MOS."""
    rows = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: {d.value: mos_to_rating(r["mos"][d.value]) for d in DIMENSIONS}
            for r in rows}


def build_project(folder: Path, clips: Path, config: AnnotateConfig,
                  raters: tuple[str, ...]) -> Project:
    """A project with the layout's videos, an owner ``olga``, the raters, the owner's pilot
    and gold references (the clips' true levels) and one training example."""
    project = Project.create(folder, config=config)
    project.import_videos(clips / "videos.jsonl")
    project.add_user("olga", PASSWORD, "owner")
    for name in raters:
        project.add_user(name, PASSWORD, "rater")
    levels = truth(clips)
    for video_id in LAYOUT.pilot:
        project.set_reference(video_id, levels[video_id], "pilot")
    for video_id in LAYOUT.gold:
        project.set_reference(video_id, levels[video_id], "gold")
    project.set_example(LAYOUT.example, "visual", levels[LAYOUT.example]["visual"], "look here")
    return project


class Recorder:
    """ASGI: the app, with every response's (method, path, status) kept in ``seen``, including
    responses a client that hung up never read."""

    def __init__(self, app) -> None:
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send) -> None:
        async def record(message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, record)


def serve(project: Project, secure_cookies: bool = False) -> RunningServer:
    """The app on loopback; ``server.seen`` lists every response's (method, path, status)."""
    recorder = Recorder(create_app(project, secure_cookies=secure_cookies))
    server = RunningServer(recorder)
    server.seen = recorder.seen
    return server


class Client:
    """A rater's or owner's HTTP client: cookies kept, the CSRF token of the last page sent
    with every form (as the hidden field of a browser's form would be)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.csrf = ""

    def get(self, url: str, **kwargs) -> httpx.Response:
        response = self.http.get(url, **kwargs)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, url: str, data: dict | None = None, csrf: bool = True) -> httpx.Response:
        fields = {**({"csrf_token": self.csrf} if csrf else {}), **(data or {})}
        response = self.http.post(url, data=fields)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/login")
        response = self.post("/login", {"name": name, "password": password})
        if response.status_code == 303:
            self.get("/", follow_redirects=True)  # a page of the session: its CSRF token
        return response

    def close(self) -> None:
        self.http.close()


def rating_form(levels: dict[str, str]) -> dict[str, str]:
    """The rate page's fields for these levels; a low level gets its dimension's first reason
    and a time range, as a careful rater would give."""
    form = {}
    for dim, level in levels.items():
        form[f"{dim}_level"] = level
        if level in LOW_LEVELS:
            form.update({f"{dim}_reason": REASONS[dim][0], f"{dim}_text": "seen early",
                         f"{dim}_start": "0.25", f"{dim}_end": "1.5"})
    return form


def shifted(levels: dict[str, str], shift: int) -> dict[str, str]:
    """Each level moved by ``shift`` steps, kept on the scale."""
    return {d: LEVELS[min(max(LEVELS.index(v) + shift, 0), len(LEVELS) - 1)]
            for d, v in levels.items()}


def work(client: Client, choose, limit: int = 50) -> dict[str, int]:
    """Follow a rater's pages until no work is left or they are paused: finish training, rate
    each video with ``choose(video_id) -> levels``. Returns counts of what happened."""
    seen = {"training": 0, "feedback": 0, "rated": 0, "paused": 0, "passed": 0}
    for _ in range(limit):
        response = client.get("/rate")
        if response.status_code == 200:
            assert "No work left" in response.text
            return seen
        assert response.status_code == 303, response.text
        where = response.headers["location"]
        if where == "/training":
            client.get("/training")
            assert client.post("/training").status_code == 303
            seen["training"] += 1
            continue
        if where == "/paused":
            seen["paused"] += 1
            return seen
        page = client.get(where)
        assert page.status_code == 200, page.text
        video_id = VIDEO_SRC.search(page.text).group(1)
        answer = client.post(where, rating_form(choose(video_id)))
        if answer.status_code == 200:
            assert "Pilot feedback" in answer.text
            seen["feedback"] += 1
            seen["passed"] += "You passed the pilot round" in answer.text
        else:
            assert answer.status_code == 303, answer.text
            seen["rated"] += 1
    raise AssertionError(f"still working after {limit} pages: {seen}")
