"""Export a project as the tables ``qsave data mos|screen|records`` read (Sec. 3.3, App. C.1).

Written, all or nothing, into ``out_dir``:

- ``ratings.csv``: the project's ratings (formal and gold ratings of train/test/rl videos),
  ``video_id, rater_id, dimension, score`` (Bad = 1 … Excellent = 5), ``reason`` (free text),
  ``reason_labels`` (``;``-joined reason codes), ``reason_start_s, reason_end_s``;
- ``videos.csv``: the project's videos (``video_id, path, prompt, generator, split``);
- ``expert.csv``: the owner's reference ratings (``video_id, dimension, mos, use``), the
  expert truth of ``qsave data screen --truth``;
- ``review.csv``: every (video, dimension) all raters rated Excellent, in the format of
  ``qsave data mos --review`` (the experts fill ``adjusted_score``, App. C.1);
- ``calibration.csv``: pilot ratings and gold ratings of videos outside the project splits,
  kept apart from the data set (columns of ratings.csv plus ``kind``);
- ``summary.json``: counts, progress per split, agreement, the project's settings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from qsave.annotate.config import level_of, score_of
from qsave.annotate.store import PROJECT_SPLITS, Progress, Project, RatingRow
from qsave.data.annotations import staged, write_table
from qsave.data.review import review_queue

RATING_COLUMNS = ("video_id", "rater_id", "dimension", "score", "reason", "reason_labels",
                  "reason_start_s", "reason_end_s")
VIDEO_COLUMNS = ("video_id", "path", "prompt", "generator", "split")
FILES = ("ratings.csv", "videos.csv", "expert.csv", "review.csv", "calibration.csv",
         "summary.json")


def ratings_frame(rows: list[RatingRow], kind: bool = False) -> pd.DataFrame:
    """Rating rows as a ratings table (with the assignment kind when ``kind``)."""
    columns = [*RATING_COLUMNS, *(["kind"] if kind else [])]
    return pd.DataFrame([{
        "video_id": r.video_id, "rater_id": r.rater, "dimension": r.dimension,
        "score": r.score, "reason": r.reason, "reason_labels": ";".join(r.reason_labels),
        "reason_start_s": r.start_s, "reason_end_s": r.end_s, "kind": r.kind} for r in rows],
        columns=columns)


def videos_frame(project: Project) -> pd.DataFrame:
    """The project's videos (splits train, test, rl) as a videos table."""
    return pd.DataFrame([{"video_id": v.id, "path": str(v.path), "prompt": v.prompt,
                          "generator": v.generator, "split": v.split}
                         for v in project.videos() if v.split in PROJECT_SPLITS],
                        columns=list(VIDEO_COLUMNS))


def expert_frame(project: Project) -> pd.DataFrame:
    """The owner's reference ratings as an expert truth table (mos on 1..5)."""
    return pd.DataFrame([{"video_id": ref.video_id, "dimension": d, "mos": score_of(level),
                          "use": ref.use}
                         for ref in project.references() for d, level in ref.levels.items()],
                        columns=["video_id", "dimension", "mos", "use"])


def review_frame(ratings: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """The expert-review queue (qsave.data.review) of the project's ratings."""
    usable = ratings.assign(score=ratings["score"].astype(float))
    return review_queue(usable, videos)


def export(project: Project, out_dir: Path) -> dict[str, Path]:
    """Write the tables of the module docstring into ``out_dir``; returns name → path."""
    out_dir = Path(out_dir)
    ratings = ratings_frame(project.rating_rows("project"))
    videos = videos_frame(project)
    paths = {name: out_dir / name for name in FILES}
    with staged() as stage:
        write_table(ratings, stage.file(paths["ratings.csv"]))
        write_table(videos, stage.file(paths["videos.csv"]))
        write_table(expert_frame(project), stage.file(paths["expert.csv"]))
        write_table(review_frame(ratings, videos), stage.file(paths["review.csv"]))
        write_table(ratings_frame(project.rating_rows("calibration"), kind=True),
                    stage.file(paths["calibration.csv"]))
        stage.file(paths["summary.json"]).write_text(
            json.dumps(summary(project, ratings), indent=2) + "\n", encoding="utf-8")
    return paths


def summary(project: Project, ratings: pd.DataFrame) -> dict[str, object]:
    """Counts, progress per split, agreement (NaN written as null) and the settings."""
    progress = project.progress()
    return {
        "ratings": len(ratings),
        "rated_videos": int(ratings["video_id"].nunique()),
        "raters": int(ratings["rater_id"].nunique()),
        "splits": {s.split: {"videos": s.videos, "needed": s.needed, "done": s.done,
                             "complete": s.complete} for s in progress.splits},
        "raters_by_stage": _stages(progress),
        "alpha": {d: None if math.isnan(a) else round(a, 4)
                  for d, a in project.agreement().items()},
        "review_items": len(project.review_queue()),
        "references": {ref.video_id: {"use": ref.use, **ref.levels}
                       for ref in project.references()},
        "levels": {str(score): level_of(score) for score in range(1, 6)},
        "config": project.config.to_dict(),
    }


def _stages(progress: Progress) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rater in progress.raters:
        counts[rater.user.stage.value] = counts.get(rater.user.stage.value, 0) + 1
    return counts
