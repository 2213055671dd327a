"""A 3-rater session end to end: three scripted raters (HTTP clients in parallel threads)
against the real server on loopback pass training, the pilot round (with feedback) and the
formal rounds (gold mixed in); then `qsave annotate export` and the unchanged `qsave data mos`,
`qsave data screen --truth` and `qsave data records` run on the exported files.

Every project video is in the train split: a train video needs 3 raters (Sec. 3.3), which three
raters give, while a test video needs 12 and AnnotateConfig refuses fewer (so would `qsave data
mos`). The pilot clips and the training example are ``unused`` clips: they are never work and
never reach ratings.csv.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from annotate_harness import LAYOUT, PASSWORD, Client, serve, shifted, truth, work

from qsave.annotate.config import AnnotateConfig, score_of
from qsave.annotate.store import Project
from qsave.cli import main as qsave

# gold_every=2: each rater's 2nd and 4th formal videos are the two gold (train) clips, so the
# owner's references cover 6 ratings per rater, enough for `qsave data screen` to rank them.
SETTINGS = {"pilot_size": 2, "gold_every": 2}
RATERS = ("rita", "sam", "tess")


def offset(rater: int, video_id: str) -> int:
    """A rater's disagreement with the truth on a video: -1, 0 or +1 level (within one, so
    nobody fails the pilot or the audit, and the raters do not all agree)."""
    return (rater + int(video_id[-1])) % 3 - 1


def set_up(folder: Path, annotate_clips: Path, levels: dict, monkeypatch) -> Project:
    """The project as an owner makes it, with `qsave annotate`: import (creating it with the
    settings above), an owner (password file) and raters (password from the environment),
    pilot and gold references (a level table and a score table), one training example."""
    work_dir = folder.parent
    config = work_dir / "annotate.json"
    config.write_text(json.dumps(SETTINGS))
    assert qsave(["annotate", "import", "--project", str(folder),
                  str(annotate_clips / "videos.jsonl"), "--config", str(config)]) == 0
    secret = work_dir / "owner-password.txt"
    secret.write_text(PASSWORD + "\n")
    assert qsave(["annotate", "user", "--project", str(folder), "olga", "--role", "owner",
                  "--password-file", str(secret)]) == 0
    monkeypatch.setenv("QSAVE_ANNOTATE_PASSWORD", PASSWORD)
    for name in RATERS:
        assert qsave(["annotate", "user", "--project", str(folder), name]) == 0
    tables = {"pilot": pd.DataFrame([{"video_id": v, "dimension": d, "level": level}
                                     for v in LAYOUT.pilot for d, level in levels[v].items()]),
              "gold": pd.DataFrame([{"video_id": v, "dimension": d, "score": score_of(level)}
                                    for v in LAYOUT.gold for d, level in levels[v].items()])}
    for use, table in tables.items():
        table.to_csv(work_dir / f"{use}.csv", index=False)
        assert qsave(["annotate", "reference", "--project", str(folder),
                      str(work_dir / f"{use}.csv"), "--use", use]) == 0
    assert qsave(["annotate", "example", "--project", str(folder), LAYOUT.example,
                  "--dimension", "visual", "--level", levels[LAYOUT.example]["visual"]]) == 0
    return Project.open(folder)


def test_three_raters_rate_and_qsave_data_reads_the_export(annotate_clips, tmp_path, monkeypatch):
    levels = truth(annotate_clips)
    project = set_up(tmp_path / "project", annotate_clips, levels, monkeypatch)
    assert project.config == AnnotateConfig(**SETTINGS)
    assert {r.video_id: r.levels for r in project.references()} == {
        v: levels[v] for v in (*LAYOUT.gold, *LAYOUT.pilot)}
    with serve(project) as server:
        def session(rater: int) -> dict[str, int]:
            client = Client(server.url)
            assert client.login(RATERS[rater]).status_code == 303
            return work(client, lambda v: shifted(levels[v], offset(rater, v)))

        with ThreadPoolExecutor(len(RATERS)) as pool:
            seen = list(pool.map(session, range(len(RATERS))))
    assert not [s for s in server.seen if s[2] >= 500]
    for counts in seen:
        assert counts == {"training": 1, "feedback": len(LAYOUT.pilot), "passed": 1,
                          "rated": len(LAYOUT.train), "paused": 0}
    assert {u.stage for u in project.users("rater")} == {"done"}

    out = tmp_path / "export"
    assert qsave(["annotate", "export", "--project", str(project.folder), "--out", str(out)]) == 0
    ratings = pd.read_csv(out / "ratings.csv")
    n_ratings = len(LAYOUT.train) * len(RATERS) * 3  # videos × raters × dimensions
    assert len(ratings) == n_ratings and set(ratings["rater_id"]) == set(RATERS)
    per_video = ratings.groupby("video_id")["rater_id"].nunique()
    assert sorted(per_video.index) == list(LAYOUT.train) and (per_video == 3).all()
    assert not ratings.duplicated(["video_id", "rater_id", "dimension"]).any()
    low = ratings[ratings["score"] <= 3]
    assert len(low) and low["reason_labels"].notna().all()
    project.close()

    files = {name: str(out / name) for name in ("ratings.csv", "videos.csv", "expert.csv")}
    mos = tmp_path / "mos.csv"
    assert qsave(["data", "mos", "--ratings", files["ratings.csv"], "--videos",
                  files["videos.csv"], "--out", str(mos)]) == 0
    assert len(pd.read_csv(mos)) == len(LAYOUT.train) * 3
    screened = tmp_path / "screened.csv"
    # --drop-k 0: three raters per train video is the minimum, so nobody can be dropped
    assert qsave(["data", "screen", "--ratings", files["ratings.csv"], "--videos",
                  files["videos.csv"], "--truth", files["expert.csv"], "--drop-k", "0",
                  "--out", str(screened)]) == 0
    assert len(pd.read_csv(screened)) == n_ratings
    report = pd.read_csv(screened.with_suffix(".raters.csv"))
    assert set(report["rater_id"]) == set(RATERS)
    records = tmp_path / "records.jsonl"
    assert qsave(["data", "records", "--videos", files["videos.csv"], "--ratings",
                  files["ratings.csv"], "--out", str(records)]) == 0
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == len(LAYOUT.train) * 3
