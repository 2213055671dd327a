"""The annotation store on real SQLite files: the paper's workflow (training → pilot → formal,
gold and audits), assignment to 3/12/3 raters per split, restarts, parallel raters in threads
and processes, every refused input, passwords and sessions."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from qsave.annotate import schema
from qsave.annotate.config import PROJECT_FILE, REASONS, AnnotateConfig
from qsave.annotate.store import (
    DB_FILE,
    AnnotateError,
    Project,
    RatingInput,
    Role,
    Stage,
)
from qsave.data.defects import kinds_of
from qsave.data.describe import REASON_TEMPLATES
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS
from qsave.errors import ConfigError

PASSWORD = "correct horse"
GOOD = RatingInput("Good")
ALL_GOOD = {d.value: GOOD for d in DIMENSIONS}
ALL_BAD = {"visual": RatingInput("Bad", ("blur",)), "dynamic": RatingInput("Bad", ("stutter",)),
           "alignment": RatingInput("Bad", ("wrong_count",))}
REF_GOOD = {d.value: "Good" for d in DIMENSIONS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """16 synthetic clips of 16×16 px, 1 s (4 frames)."""
    out = tmp_path_factory.mktemp("annotate-corpus")
    written = write_corpus(out, SynthConfig(n=16, size=16, fps=4, seconds=1.0, raters=4,
                                            unreliable=0, raters_test=3))
    assert not written.errors
    return out


def videos_csv(corpus: Path, folder: Path, splits: list[tuple[str, int]]) -> Path:
    """A videos table of the corpus's first clips: ``splits`` gives (split, how many) in order."""
    manifest = pd.read_json(corpus / "manifest.jsonl", lines=True)
    wanted = [s for s, n in splits for _ in range(n)]
    table = manifest.head(len(wanted)).assign(split=wanted)
    table = table.rename(columns={"id": "video_id"})[["video_id", "path", "prompt",
                                                       "generator", "split"]]
    table["path"] = [str(corpus / p) for p in table["path"]]
    path = folder / "videos.csv"
    table.to_csv(path, index=False)
    return path


def make_project(folder: Path, corpus: Path, splits: list[tuple[str, int]], **config
                 ) -> Project:
    """A project of ``splits`` project videos plus one ``unused`` video as the pilot round."""
    project = Project.create(folder / "project", config=AnnotateConfig(**{"pilot_size": 1,
                                                                        **config}))
    project.import_videos(videos_csv(corpus, folder, [("unused", 1), *splits]))
    project.set_reference(project.videos()[0].id, REF_GOOD, "pilot")
    return project


def formal_rater(project: Project, name: str):
    """A rater past training and the pilot (one Good pilot video)."""
    user = project.finish_training(project.add_user(name, PASSWORD))
    pilot = project.next_assignment(user)
    assert pilot.kind == "pilot"
    assert project.submit(user, pilot.id, ALL_GOOD).passed is True
    return project.user(user.id)


def rate_all(project: Project, user, ratings=ALL_GOOD) -> list[str]:
    """Rate until no work is left; the videos rated, in order."""
    seen = []
    while (assignment := project.next_assignment(user)) is not None:
        assert project.submit(user, assignment.id, ratings) is None
        seen.append(assignment.video.id)
    return seen


def counts(project: Project) -> dict[str, int]:
    """Submitted project ratings per video (the dimension count divided out)."""
    per = Counter(r.video_id for r in project.rating_rows("project"))
    return {v: n // len(DIMENSIONS) for v, n in per.items()}


# --- settings --------------------------------------------------------------------------------
def test_config_defaults_are_the_papers_and_are_checked(tmp_path) -> None:
    config = AnnotateConfig()
    assert config.raters_per_split == {"train": 3, "test": 12, "rl": 3}
    with pytest.raises(ConfigError, match=r"raters_per_split\['test'\] \(11\) must be at least"):
        AnnotateConfig(raters_per_split={"train": 3, "test": 11, "rl": 3})
    with pytest.raises(ConfigError, match="pilot_pass"):
        AnnotateConfig(pilot_pass=1.5)
    project = Project.create(tmp_path, config=AnnotateConfig(gold_every=4))
    assert json.loads((tmp_path / PROJECT_FILE).read_text())["gold_every"] == 4
    assert Project.open(tmp_path).config == project.config
    with pytest.raises(AnnotateError, match="already holds an annotation project"):
        Project.create(tmp_path)
    with pytest.raises(AnnotateError, match="qsave annotate import"):
        Project.open(tmp_path / "nowhere")
    project.close()
    for path in tmp_path.glob(f"{DB_FILE}*"):
        path.unlink()
    with pytest.raises(AnnotateError, match=f"has project.json but no database {DB_FILE}"):
        Project.open(tmp_path)


def test_reason_codes_are_the_describers_and_the_defect_kinds() -> None:
    for dim in DIMENSIONS:
        codes = REASONS[dim.value]
        assert codes[-1] == "other"
        assert set(codes[:-1]) == set(kinds_of(dim))
        assert all(code in REASON_TEMPLATES for code in codes[:-1])


def test_sqlite_is_wal_with_busy_timeout_and_writes_begin_immediate(tmp_path) -> None:
    project = Project.create(tmp_path)
    with project.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    with project._write():  # nothing written yet, but the write lock is taken at BEGIN
        other = sqlite3.connect(tmp_path / DB_FILE, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    with project._read():  # a read transaction does not block a writer
        other = sqlite3.connect(tmp_path / DB_FILE, timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()


def test_schema_compiles_for_postgresql() -> None:
    dialect = postgresql.dialect()
    for table in schema.metadata.sorted_tables:
        ddl = str(sa.schema.CreateTable(table).compile(dialect=dialect))
        assert "AUTOINCREMENT" not in ddl  # SQLite-only keyword
    ddl = str(sa.schema.CreateTable(schema.assignments).compile(dialect=dialect))
    assert "UNIQUE (user_id, video_id)" in ddl


# --- the workflow ----------------------------------------------------------------------------
def test_training_pilot_formal_with_feedback(tmp_path, corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 2)], pilot_size=2)
    unused = project.videos()[0].id
    second = project.videos()[1].id  # a project video can be a pilot reference too
    project.set_reference(second, {"visual": "Excellent", "dynamic": "Poor",
                                   "alignment": "Good"}, "pilot")
    project.set_example(unused, "visual", "Excellent", "crisp edges")
    user = project.add_user("rita", PASSWORD)
    assert user.stage is Stage.TRAINING and project.next_assignment(user) is None
    page = project.training("visual")
    assert [t.level for t in page] == ["Bad", "Poor", "Fair", "Good", "Excellent"]
    assert page[4].examples[0].video.id == unused and page[4].examples[0].note == "crisp edges"
    assert page[4].criteria == DIMENSIONS[0].criteria and not page[0].examples
    user = project.finish_training(user)
    assert user.stage is Stage.PILOT
    first = project.next_assignment(user)
    assert (first.kind, first.video.id) == ("pilot", unused)
    feedback = project.submit(user, first.id, {**ALL_GOOD, "dynamic": RatingInput(
        "Bad", ("frozen",))})
    assert feedback.passed is None and (feedback.rated, feedback.of) == (1, 2)
    assert [(f.dimension, f.given, f.reference, f.within_one) for f in feedback.dimensions] == [
        ("visual", "Good", "Good", True), ("dynamic", "Bad", "Good", False),
        ("alignment", "Good", "Good", True)]
    assert feedback.share == pytest.approx(2 / 3)
    last = project.next_assignment(user)
    assert last.video.id == second
    feedback = project.submit(user, last.id, {**ALL_GOOD, "dynamic": RatingInput(
        "Fair", ("jitter",))})
    assert feedback.passed is True and feedback.share == pytest.approx(5 / 6)  # ≥ 0.7
    assert project.user(user.id).stage is Stage.FORMAL
    formal = project.next_assignment(user)
    third = project.videos()[2].id  # the pilot video `second` is never shown again
    assert (formal.kind, formal.video.id) == ("formal", third)
    project.submit(user, formal.id, ALL_GOOD)
    assert project.next_assignment(user) is None
    assert project.user(user.id).stage is Stage.DONE
    assert [r.kind for r in project.my_ratings(user)] == ["pilot"] * 6 + ["formal"] * 3


def test_a_failed_pilot_pauses_and_an_owner_resumes(tmp_path, corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 2)])
    user = project.finish_training(project.add_user("rita", PASSWORD))
    pilot = project.next_assignment(user)
    feedback = project.submit(user, pilot.id, ALL_BAD)  # Bad against Good: 2 levels off
    assert feedback.passed is False and feedback.share == 0.0
    paused = project.user(user.id)
    assert paused.stage is Stage.PAUSED and paused.pause_reason == "pilot"
    assert project.paused() == [paused] and project.next_assignment(user) is None
    owner = project.add_user("olga", PASSWORD, Role.OWNER)
    with pytest.raises(AnnotateError, match="only raters rate"):
        project.next_assignment(owner)
    assert project.resume(paused).stage is Stage.FORMAL
    assert project.next_assignment(user).kind == "formal"
    with pytest.raises(AnnotateError, match="is not paused"):
        project.resume(user)


def test_gold_is_mixed_in_and_the_audit_pauses_a_rater(tmp_path, corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 6), ("unused", 3)], gold_every=2,
                           audit_min_gold=2, audit_pass=0.6)
    golds = [v.id for v in project.videos()[-3:]]  # gold videos outside the project splits
    for video in golds:
        project.set_reference(video, REF_GOOD, "gold")
    user = formal_rater(project, "rita")
    kinds, videos = [], []
    for _ in range(4):
        assignment = project.next_assignment(user)
        kinds.append(assignment.kind)  # gold looks formal to the rater
        videos.append(assignment.video.id)
        bad = assignment.video.id in golds
        project.submit(user, assignment.id, ALL_BAD if bad else ALL_GOOD)
    assert kinds == ["formal"] * 4
    assert videos[1] == golds[0] and videos[3] == golds[1]  # every 2nd assignment
    paused = project.user(user.id)  # 2 gold videos, none within ±1 level
    assert (paused.stage, paused.pause_reason) == (Stage.PAUSED, "audit")
    audit = project.audits()[0]
    assert (audit.gold_rated, audit.within_one, audit.paused) == (2, 0.0, True)
    assert project.next_assignment(user) is None
    assert project.rating_rows("calibration")[-1].kind == "gold"  # gold, outside the data set
    assert all(r.video_id not in golds for r in project.rating_rows("project"))
    project.resume(paused)
    audit = project.audits()[0]  # the audit counts again from the resume
    assert (audit.gold_rated, audit.within_one, audit.paused) == (0, None, False)
    assert project.next_assignment(user).video.id not in videos


def test_every_video_reaches_its_splits_raters_and_no_rater_sees_one_twice(tmp_path,
                                                                           corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 2), ("test", 1), ("rl", 1)])
    split_of = {v.id: v.split for v in project.videos()}
    seen = {f"r{i:02d}": rate_all(project, formal_rater(project, f"r{i:02d}"))
            for i in range(13)}
    got = counts(project)
    need = {"train": 3, "test": 12, "rl": 3}
    assert {v: got[v] for v in got} == {v: need[s] for v, s in split_of.items() if s != "unused"}
    assert all(len(v) == len(set(v)) for v in seen.values())
    assert seen["r12"] == []  # nothing left for the 13th rater
    assert {u.stage for u in project.users(Role.RATER)} == {Stage.DONE}
    progress = {s.split: (s.videos, s.needed, s.done, s.complete)
                for s in project.progress().splits}
    assert progress == {"train": (2, 6, 6, 2), "test": (1, 12, 12, 1), "rl": (1, 3, 3, 1)}
    more = videos_csv(corpus, tmp_path, [("unused", 1), ("train", 2), ("test", 1), ("rl", 1),
                                         ("train", 1)])
    assert project.import_videos(more) == 1  # new work brings a DONE rater back
    rater = project.user_by_name("r00")
    assert project.next_assignment(rater).video.id == project.videos()[-1].id
    assert project.user(rater.id).stage is Stage.FORMAL


def test_open_assignment_survives_a_restart(tmp_path, corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 3)])
    user = formal_rater(project, "rita")
    held = project.next_assignment(user)
    assert project.next_assignment(user) == held  # a reload shows the same video
    project.close()
    reopened = Project.open(project.folder)  # the server restarts
    user = reopened.authenticate("rita", PASSWORD)
    assert reopened.next_assignment(user) == held
    reopened.submit(user, held.id, ALL_GOOD)
    assert reopened.next_assignment(user).id != held.id


# --- parallel raters -------------------------------------------------------------------------
WORKER = """
import json, sys, time
from pathlib import Path
from qsave.annotate.store import Project, RatingInput
folder, name, password, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
good = RatingInput("Good")
project = Project.open(Path(folder))
user = project.authenticate(name, password)
time.sleep(max(0.0, start - time.time()))
done = []
while (a := project.next_assignment(user)) is not None:
    time.sleep(0.01)
    project.submit(user, a.id, {"visual": good, "dynamic": good, "alignment": good})
    done.append([a.id, a.video.id])
print(json.dumps(done))
"""


def _rate_in_thread(folder: Path, name: str, start: float, out: dict) -> None:
    project = Project.open(folder)  # each client its own Project, as each server worker
    user = project.authenticate(name, PASSWORD)
    time.sleep(max(0.0, start - time.time()))
    done = []
    while (assignment := project.next_assignment(user)) is not None:
        time.sleep(0.01)
        project.submit(user, assignment.id, ALL_GOOD)
        done.append([assignment.id, assignment.video.id])
    project.close()
    out[name] = done


def test_parallel_raters_in_threads_and_processes_never_double_assign(tmp_path,
                                                                      corpus) -> None:
    """6 raters at once (3 threads, 3 processes) on 12 train and 1 rl video: 39 ratings."""
    project = make_project(tmp_path, corpus, [("train", 12), ("rl", 1)])
    names = [f"p{i}" for i in range(6)]
    for name in names:
        formal_rater(project, name)
    start = time.time() + 4.0  # every client begins together, after the processes import
    processes = {name: subprocess.Popen(
        [sys.executable, "-c", WORKER, str(project.folder), name, PASSWORD, str(start)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names[3:]}
    done: dict[str, list] = {}
    threads = [threading.Thread(target=_rate_in_thread, args=(project.folder, n, start, done))
               for n in names[:3]]
    for thread in threads:
        thread.start()
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        done[name] = json.loads(out)
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(done) == names
    ids = [a for rows in done.values() for a, _ in rows]
    assert len(ids) == len(set(ids)) == 13 * 3  # every assignment submitted once
    for rows in done.values():  # no rater saw a video twice
        assert len({v for _, v in rows}) == len(rows)
    got = counts(project)
    assert sorted(set(got.values())) == [3] and len(got) == 13  # no video over-assigned
    assert len(project.rating_rows("project")) == 13 * 3 * 3  # no rating lost
    assert any(done[n] for n in names[:3]) and any(done[n] for n in names[3:])  # both rated
    assert {u.stage for u in project.users(Role.RATER)} == {Stage.DONE}


# --- bad input -------------------------------------------------------------------------------
BAD_RATINGS = [
    ({"visual": RatingInput("Great")}, "unknown level 'Great'; valid levels: Bad, Poor"),
    ({"visual": RatingInput("Fair")}, "a Fair visual rating needs a reason: one of blur"),
    ({"dynamic": RatingInput("Poor", ("blur",))}, r"unknown reason code\(s\) 'blur' for "
     "dynamic; valid: stutter"),
    ({"visual": RatingInput("Good", ("blur",))}, "reasons are given for Bad, Poor or Fair"),
    ({"alignment": RatingInput("Bad", ("other",))}, "the reason 'other' for alignment needs a "
     "description"),
    ({"visual": RatingInput("Good", text="x" * 2001)}, "the visual text has 2001 characters; "
     "the limit is 2000"),
    ({"visual": RatingInput("Poor", ("noise",), start_s=0.8, end_s=0.2)},
     r"time range \[0.8, 0.2\] is invalid"),
    ({"visual": RatingInput("Poor", ("noise",), start_s=0.2)}, "needs both start and end"),
    ({"visual": RatingInput("Poor", ("noise",), start_s=0.5, end_s=3.0)},
     r"ends after the clip \(1 s\)"),
    ({"visual": RatingInput("Poor", ("noise",), start_s=float("nan"), end_s=0.5)},
     "is invalid"),
    ({"overall": GOOD}, "unknown dimension 'overall'"),
]


@pytest.fixture()
def held(tmp_path, corpus):
    """(project, rater, their open formal assignment)."""
    project = make_project(tmp_path, corpus, [("train", 3)])
    user = formal_rater(project, "rita")
    return project, user, project.next_assignment(user)


@pytest.mark.parametrize("change,message", BAD_RATINGS, ids=lambda x: str(x)[:30])
def test_a_bad_rating_is_refused_and_loses_nothing(held, change, message) -> None:
    project, user, assignment = held
    with pytest.raises(AnnotateError, match=message):
        project.submit(user, assignment.id, {**ALL_GOOD, **change})
    assert project.next_assignment(user) == assignment  # still held, nothing stored
    assert not project.rating_rows("project")
    project.submit(user, assignment.id, ALL_GOOD)
    assert len(project.rating_rows("project")) == 3


def test_a_missing_dimension_is_refused(held) -> None:
    project, user, assignment = held
    with pytest.raises(AnnotateError, match="a rating is needed for dynamic, alignment"):
        project.submit(user, assignment.id, {"visual": GOOD})


def test_a_good_rating_with_a_reason_range_and_other_is_stored(held) -> None:
    project, user, assignment = held
    fair = RatingInput("Fair", ("stutter", "other", "stutter"), "  jerky start ", 0.0, 0.5)
    project.submit(user, assignment.id, {**ALL_GOOD, "dynamic": fair})
    row = next(r for r in project.rating_rows("project") if r.dimension == "dynamic")
    assert (row.score, row.reason_labels, row.reason, row.start_s, row.end_s) == (
        3, ("stutter",), "jerky start", 0.0, 0.5)  # "other" lives in the text
    mine = [r for r in project.my_ratings(user) if r.kind == "formal"]
    assert [r.dimension for r in mine] == ["visual", "dynamic", "alignment"]
    assert mine[1].reasons == ("stutter", "other")


def test_only_the_holder_submits_and_only_once(held) -> None:
    project, user, assignment = held
    other = formal_rater(project, "omar")
    with pytest.raises(AnnotateError, match=f"assignment {assignment.id} is not held by 'omar'"):
        project.submit(other, assignment.id, ALL_GOOD)
    with pytest.raises(AnnotateError, match="assignment 999 is not held"):
        project.submit(user, 999, ALL_GOOD)
    project.submit(user, assignment.id, ALL_GOOD)
    with pytest.raises(AnnotateError, match="submitted already; the first rating is kept"):
        project.submit(user, assignment.id, ALL_BAD)
    assert {r.score for r in project.rating_rows("project")} == {4}  # the first one


def test_import_is_idempotent_and_refuses_what_does_not_fit(tmp_path, corpus) -> None:
    project = Project.create(tmp_path / "project")
    table = videos_csv(corpus, tmp_path, [("train", 3)])
    assert project.import_videos(table) == 3
    assert project.import_videos(table) == 0
    synth = Project.create(tmp_path / "synth")
    assert synth.import_videos(corpus / "manifest.jsonl") == 16  # the synth manifest as it is
    assert {v.duration_s for v in synth.videos()} == {1.0}
    frame = pd.read_csv(table)
    frame.drop(columns="split").to_csv(tmp_path / "unsplit.csv", index=False)
    with pytest.raises(AnnotateError, match=r"no split column.*`qsave data split --videos"):
        project.import_videos(tmp_path / "unsplit.csv")
    frame.assign(split=["train", None, "train"]).to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(AnnotateError, match=r"1 video\(s\) without a split.*qsave data split"):
        project.import_videos(tmp_path / "gap.csv")
    moved = frame.assign(path=[frame["path"][1], *frame["path"][1:]])
    moved.to_csv(tmp_path / "moved.csv", index=False)
    with pytest.raises(AnnotateError, match=f"video '{frame['video_id'][0]}' is in the project "
                       "with path"):
        project.import_videos(tmp_path / "moved.csv")
    frame.assign(video_id="new", path=str(tmp_path / "gone.mp4")).head(1).to_csv(
        tmp_path / "gone.csv", index=False)
    with pytest.raises(AnnotateError, match=r"video file.* do not exist"):
        project.import_videos(tmp_path / "gone.csv")
    frame.assign(split="dev").to_csv(tmp_path / "dev.csv", index=False)
    with pytest.raises(AnnotateError, match="unknown split 'dev'"):
        project.import_videos(tmp_path / "dev.csv")
    frame.assign(split="test").to_csv(tmp_path / "resplit.csv", index=False)
    with pytest.raises(AnnotateError, match=r"split 'train'.* gives 'test'"):
        project.import_videos(tmp_path / "resplit.csv")
    assert len(project.videos()) == 3  # nothing of a refused import was added


def test_bad_owner_input(tmp_path, corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 1)])
    video = project.videos()[1].id
    with pytest.raises(AnnotateError, match="unknown level 'Superb'"):
        project.set_example(video, "visual", "Superb")
    with pytest.raises(AnnotateError, match="unknown dimension 'sound'"):
        project.set_example(video, "sound", "Good")
    with pytest.raises(AnnotateError, match="unknown video 'nope'"):
        project.set_example("nope", "visual", "Good")
    with pytest.raises(AnnotateError, match="lacks dynamic, alignment"):
        project.set_reference(video, {"visual": "Good"}, "gold")
    with pytest.raises(AnnotateError, match="unknown reference use 'exam'"):
        project.set_reference(video, REF_GOOD, "exam")


def test_a_pilot_without_references_says_so(tmp_path) -> None:
    project = Project.create(tmp_path)
    user = project.finish_training(project.add_user("rita", PASSWORD))
    with pytest.raises(AnnotateError, match="pilot round has no reference videos"):
        project.next_assignment(user)


# --- who sees what ---------------------------------------------------------------------------
def test_a_rater_sees_only_their_videos_and_the_examples(tmp_path, corpus) -> None:
    project = make_project(tmp_path, corpus, [("train", 4)])
    ids = [v.id for v in project.videos()]
    project.set_example(ids[4], "dynamic", "Poor")
    rita, omar = formal_rater(project, "rita"), formal_rater(project, "omar")
    owner = project.add_user("olga", PASSWORD, Role.OWNER)
    held = project.next_assignment(rita).video.id
    assert project.can_view(rita, held) and project.can_view(rita, ids[0])  # held, pilot
    assert project.can_view(rita, ids[4])  # a training example
    assert not project.can_view(rita, ids[2]) and not project.can_view(omar, held)
    assert all(project.can_view(owner, v) for v in ids)
    assert not project.can_view(owner, "nope")
    assert {r.video_id for r in project.my_ratings(omar)} == {ids[0]}  # own ratings only


# --- passwords and sessions ------------------------------------------------------------------
def test_passwords_are_argon2_hashes_and_sessions_expire(tmp_path) -> None:
    project = Project.create(tmp_path, config=AnnotateConfig(session_hours=1 / 3600))
    user = project.add_user("rita", PASSWORD)
    with pytest.raises(AnnotateError, match="exists already"):
        project.add_user("rita", PASSWORD)
    with pytest.raises(AnnotateError, match="at least 8 characters"):
        project.add_user("omar", "short")
    assert project.authenticate("rita", PASSWORD) == user
    assert project.authenticate("rita", "wrong password") is None
    assert project.authenticate("nobody", PASSWORD) is None
    token, csrf = project.create_session(user)
    assert project.session(token).user == user
    assert project.session(token).csrf_token == csrf  # a forged one gets 403: test_app.py
    assert project.session("forged") is None
    with project.engine.connect() as c:
        stored = c.execute(sa.select(schema.users.c.password_hash)).scalar()
        hashes = c.execute(sa.select(schema.sessions.c.token_hash)).scalars().all()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert hashes == [hashlib.sha256(token.encode()).hexdigest()]
    files = [p.read_bytes() for p in tmp_path.glob(f"{DB_FILE}*")]  # with the WAL
    assert files and not any(token.encode() in data for data in files)
    project.end_session(token)
    assert project.session(token) is None
    token, _ = project.create_session(user)
    time.sleep(1.1)  # past session_hours
    assert project.session(token) is None


def test_import_takes_a_database_url_and_the_project_keeps_it(tmp_path, corpus) -> None:
    """`qsave annotate import --database-url` creates the project on that database (here a
    SQLite file outside the folder; a PostgreSQL URL goes the same way) and reopening it
    finds the same rows; on an existing project the flag is ignored, and the output says so."""
    from qsave.cli import main as qsave

    elsewhere = tmp_path / "elsewhere.sqlite3"
    table, folder = videos_csv(corpus, tmp_path, [("train", 3)]), tmp_path / "project"
    url = f"sqlite:///{elsewhere}"
    assert qsave(["annotate", "import", "--project", str(folder), str(table),
                  "--database-url", url]) == 0
    assert elsewhere.is_file() and not (folder / "annotate.sqlite3").exists()
    with Project.open(folder) as project:
        assert project.url == url and len(project.videos()) == 3
    assert qsave(["annotate", "import", "--project", str(folder), str(table),
                  "--database-url", "sqlite:///other.db"]) == 0
    assert not Path("other.db").exists()


def test_an_abandoned_video_goes_to_another_rater(tmp_path, corpus) -> None:
    """A video left open longer than assignment_hours stops holding its slot; the rater who
    left it can still submit it, and the video then has one rating more than it needs."""
    project = make_project(tmp_path, corpus, [("train", 1)], assignment_hours=0.5 / 3600,
                           gold_every=0)
    holders = [formal_rater(project, f"h{i}") for i in range(3)]
    video = {project.next_assignment(h).video.id for h in holders}
    late = formal_rater(project, "late")
    assert project.next_assignment(late) is None  # three open assignments hold the 3 slots
    time.sleep(0.6)
    taken = project.next_assignment(late)
    assert taken is not None and {taken.video.id} == video
    for user in [*holders, late]:
        project.submit(user, project.next_assignment(user).id, ALL_GOOD)
    assert counts(project) == {taken.video.id: 4}
