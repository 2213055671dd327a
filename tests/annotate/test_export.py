"""An annotation project rated to completion through the store (13 simulated raters on
`qsave data synth` clips), exported, and read unchanged by `qsave data mos`, `qsave data screen
--truth expert.csv` and `qsave data records` through the real CLI; the review queue of videos
every rater rated Excellent goes through `qsave data mos --review`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from qsave.annotate.config import LEVELS, AnnotateConfig
from qsave.annotate.export import FILES, RATING_COLUMNS, export
from qsave.annotate.store import Project, RatingInput, Role, Stage
from qsave.cli import main
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS

PASSWORD = "correct horse"
DIMS = tuple(d.value for d in DIMENSIONS)
SPLITS = [("unused", 2), ("train", 5), ("test", 1), ("rl", 1)]  # unused: the pilot round
NEED = {"train": 4, "test": 13, "rl": 4}  # one more than the paper's minimum: room to screen


def _run(*args: object) -> int:
    return main(["data", *map(str, args)])


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    """9 synthetic clips of 16×16 px, 1 s, with their splits of SPLITS."""
    out = tmp_path_factory.mktemp("export-corpus")
    corpus = write_corpus(out, SynthConfig(n=9, size=16, fps=4, seconds=1.0, raters=4,
                                           unreliable=0, raters_test=3, seed=3))
    assert not corpus.errors
    table = pd.read_json(out / "manifest.jsonl", lines=True)
    table["split"] = [s for s, n in SPLITS for _ in range(n)]
    table["path"] = [str(out / p) for p in table["path"]]
    return table.rename(columns={"id": "video_id"})


def truth(clip: pd.Series, dim: str) -> int:
    """The clip's true level (1..5) in a dimension: its synthetic MOS, rounded."""
    return min(max(round(clip["mos"][dim]), 1), 5)


def rating(clip: pd.Series, dim: str, score: int) -> RatingInput:
    """What a careful rater enters: the level and, below Good, the clip's defects as reasons
    with the first one's time range (or "other" with a description)."""
    level = LEVELS[score - 1]
    if score > 3:
        return RatingInput(level)
    defects = clip["defects"][dim]
    if not defects:
        return RatingInput(level, ("other",), "looks off to me")
    first = defects[0]
    return RatingInput(level, tuple(d["kind"] for d in defects), "",
                       round(first["start"], 3), round(min(first["end"], 1.0), 3))


def simulate(project: Project, clips: pd.DataFrame, name: str, seed: int,
             sloppy: bool = False) -> None:
    """One rater through training, the pilot (true levels) and every formal video they get:
    the true level, one level off a quarter of the time; a sloppy rater the mirror image."""
    rng = random.Random(seed)
    user = project.finish_training(project.add_user(name, PASSWORD))
    while (assignment := project.next_assignment(user)) is not None:
        clip = clips.loc[assignment.video.id]
        scores = {d: truth(clip, d) for d in DIMS}
        if assignment.kind == "formal":
            scores = {d: 6 - s if sloppy else min(max(s + rng.choice((0, 0, 0, -1, 1)), 1), 5)
                      for d, s in scores.items()}
        feedback = project.submit(user, assignment.id,
                                  {d: rating(clip, d, s) for d, s in scores.items()})
        if assignment.kind == "pilot":
            assert feedback is not None and feedback.passed in (None, True)
    assert project.user(user.id).stage is Stage.DONE


@pytest.fixture(scope="module")
def exported(manifest, tmp_path_factory) -> tuple[Project, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("export-project")
    videos = folder / "videos.csv"
    manifest[["video_id", "path", "prompt", "generator", "split"]].to_csv(videos, index=False)
    project = Project.create(folder / "project", config=AnnotateConfig(
        raters_per_split=NEED, pilot_size=2, gold_every=2))
    assert project.import_videos(videos) == 9
    project.add_user("olga", PASSWORD, Role.OWNER)
    clips = manifest.set_index("video_id")
    ids = list(clips.index)
    for video_id, use in ((ids[0], "pilot"), (ids[1], "pilot"), (ids[2], "gold"),
                          (ids[3], "gold")):
        project.set_reference(video_id, {d: LEVELS[truth(clips.loc[video_id], d) - 1]
                                         for d in DIMS}, use)
    project.set_example(ids[0], "visual", LEVELS[truth(clips.loc[ids[0]], "visual") - 1])
    simulate(project, clips, "r00", 0, sloppy=True)  # honest in the pilot only
    for i in range(1, 13):
        simulate(project, clips, f"r{i:02d}", i)
    return project, export(project, folder / "out")


def test_export_writes_the_ratings_of_project_videos_only(exported, manifest) -> None:
    project, paths = exported
    kinds = {r.kind for r in project.rating_rows("project")}
    assert kinds == {"formal", "gold"}  # gold of project videos counts as their raters
    assert sorted(paths) == sorted(FILES) and all(p.is_file() for p in paths.values())
    ratings = pd.read_csv(paths["ratings.csv"])
    assert tuple(ratings.columns) == RATING_COLUMNS
    split_of = dict(zip(manifest["video_id"], manifest["split"], strict=True))
    per_video = ratings.groupby("video_id")["rater_id"].nunique()
    assert {v: n for v, n in per_video.items()} == {
        v: NEED[s] for v, s in split_of.items() if s != "unused"}
    assert (ratings.groupby(["video_id", "rater_id"]).size() == 3).all()
    assert set(ratings["score"]) <= {1, 2, 3, 4, 5}
    low = ratings[ratings["score"] <= 3]
    assert low["reason_labels"].notna().any() and not ratings["reason_labels"].str.contains(
        "other", na=False).any()  # "other" is in the free text, not among the codes
    assert (low["reason_labels"].notna() | low["reason"].notna()).all()
    timed = ratings.dropna(subset=["reason_start_s"])
    assert len(timed) and (timed["reason_start_s"] < timed["reason_end_s"]).all()
    calibration = pd.read_csv(paths["calibration.csv"])  # the pilot, kept apart
    assert set(calibration["kind"]) == {"pilot"} and len(calibration) == 13 * 2 * 3
    assert not set(calibration["video_id"]) & set(ratings["video_id"])
    videos = pd.read_csv(paths["videos.csv"])
    assert sorted(videos["video_id"]) == sorted(per_video.index)
    expert = pd.read_csv(paths["expert.csv"])
    assert len(expert) == 4 * 3 and set(expert["use"]) == {"pilot", "gold"}
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["ratings"] == len(ratings) and summary["raters"] == 13
    assert summary["splits"]["test"] == {"videos": 1, "needed": 13, "done": 13, "complete": 1}


def test_qsave_data_mos_reads_the_export(exported, tmp_path) -> None:
    _, paths = exported
    out = tmp_path / "mos.csv"
    assert _run("mos", "--ratings", paths["ratings.csv"], "--videos", paths["videos.csv"],
                "-o", out) == 0
    mos = pd.read_csv(out)
    ratings = pd.read_csv(paths["ratings.csv"])
    assert len(mos) == 7 * 3
    expected = ratings.groupby(["video_id", "dimension"])["score"].agg(["mean", "count"])
    got = mos.set_index(["video_id", "dimension"]).loc[expected.index]
    assert got["mos"].to_numpy() == pytest.approx(expected["mean"].to_numpy())
    assert (got["n_raters"].to_numpy() == expected["count"].to_numpy()).all()
    assert _run("mos", "--ratings", paths["ratings.csv"], "--videos", paths["videos.csv"],
                "--review", paths["review.csv"], "-o", tmp_path / "reviewed.csv") == 0


def test_qsave_data_screen_drops_the_sloppy_rater_against_the_owners_truth(exported,
                                                                           tmp_path) -> None:
    """The owner's gold references are the expert truth (App. C.1): the rater who mirrored
    every level ranks last and is the one dropped."""
    _, paths = exported
    out = tmp_path / "screened.csv"
    assert _run("screen", "--ratings", paths["ratings.csv"], "--truth", paths["expert.csv"],
                "--videos", paths["videos.csv"], "--drop-k", 1, "-o", out) == 0
    report = pd.read_csv(tmp_path / "screened.raters.csv")
    ranked = report.dropna(subset=["rank"]).sort_values("rank")
    assert len(ranked) >= 3 and ranked["rater_id"].iloc[-1] == "r00"
    assert report.loc[report["dropped"], "rater_id"].tolist() == ["r00"]
    screened, ratings = pd.read_csv(out), pd.read_csv(paths["ratings.csv"])
    assert "r00" not in set(screened["rater_id"])
    assert len(screened) == len(ratings) - (ratings["rater_id"] == "r00").sum()


def test_qsave_data_records_turns_the_raters_reasons_into_analyses(exported,
                                                                  tmp_path) -> None:
    _, paths = exported
    out = tmp_path / "records.jsonl"
    assert _run("records", "--videos", paths["videos.csv"], "--ratings", paths["ratings.csv"],
                "-o", out) == 0
    records = [json.loads(line) for line in out.open()]
    assert len(records) == 7 * 3
    sources = {r["rationale_source"] for r in records}
    assert sources == {"rater_reasons", "strengths"}
    mos = pd.read_csv(paths["ratings.csv"]).groupby(["video_id", "dimension"])["score"].mean()
    for record in records:
        low = mos[(record["video_id"], record["dimension"])] < 4
        assert record["rationale_source"] == ("rater_reasons" if low else "strengths")


def test_review_queue_lists_what_every_rater_rated_excellent(manifest, tmp_path) -> None:
    """3 raters: every rater Excellent on the first video; on the second all but one visual
    rating. The queue holds the first video's three dimensions and the second's other two,
    and an expert's adjusted_score reaches the MOS through `qsave data mos --review`."""
    videos = tmp_path / "videos.csv"
    table = manifest.head(4).assign(split=["unused", "train", "train", "train"])
    table[["video_id", "path", "prompt", "generator", "split"]].to_csv(videos, index=False)
    project = Project.create(tmp_path / "project", config=AnnotateConfig(pilot_size=1))
    project.import_videos(videos)
    first, second = table["video_id"][1:3]
    project.set_reference(table["video_id"][0], dict.fromkeys(DIMS, "Good"), "pilot")
    top, good = RatingInput("Excellent"), RatingInput("Good")
    for i in range(3):
        user = project.finish_training(project.add_user(f"r{i}", PASSWORD))
        while (assignment := project.next_assignment(user)) is not None:
            video = assignment.video.id
            levels = dict.fromkeys(DIMS, top if video in (first, second) else good)
            if video == second and i == 2:
                levels["visual"] = good
            project.submit(user, assignment.id, levels if assignment.kind == "formal"
                           else dict.fromkeys(DIMS, good))
    queue = {(r.video_id, r.dimension, r.n_raters) for r in project.review_queue()}
    assert queue == {(first, d, 3) for d in DIMS} | {(second, d, 3) for d in DIMS[1:]}
    alpha = project.agreement()
    assert set(alpha) == set(DIMS) and alpha["visual"] < 1.0
    paths = export(project, tmp_path / "out")
    review = pd.read_csv(paths["review.csv"])
    assert set(zip(review["video_id"], review["dimension"], strict=True)) == {
        (v, d) for v, d, _ in queue}
    assert (review["raters_to_add"] == 12 - 3).all()  # App. C.1 asks for 12 before the review
    review.loc[0, "adjusted_score"] = 4.5
    review.to_csv(tmp_path / "filled.csv", index=False)
    out = tmp_path / "mos.csv"
    assert _run("mos", "--ratings", paths["ratings.csv"], "--videos", paths["videos.csv"],
                "--review", tmp_path / "filled.csv", "-o", out) == 0
    mos = pd.read_csv(out).set_index(["video_id", "dimension"])
    assert mos.loc[(review["video_id"][0], review["dimension"][0]), "mos"] == 4.5
    assert int(mos["reviewed"].sum()) == 1
