"""Ratings → MOS, table checks and rater screening (paper Sec. 3.3 and App. C.1).

A *ratings table* has one row per rating: ``video_id, rater_id, dimension, score`` and
optionally ``reason`` (free text) and ``reason_labels`` (labels separated by ``;`` or ``|``).
A *videos table* has ``video_id, path, prompt, generator`` and optionally ``split``
(``train``/``test``/``rl``, or ``unused`` from :mod:`qsave.data.splits`); the JSONL manifest of
``qsave data synth`` is read as one. Nested fields (a manifest's ``scene``, ``defects``) are
written to CSV as JSON text and read back as they were.

Every problem is reported as a :class:`Problem` in a :class:`CheckReport`; a rating row
that cannot be used for a MOS is listed there (``excluded_rows``), never dropped silently.

>>> ratings = pd.DataFrame({"video_id": ["a", "a", "a"], "rater_id": ["r1", "r2", "r3"],
...                         "dimension": ["visual"] * 3, "score": [4, 5, 9]})
>>> result = aggregate(ratings)
>>> result.report.counts()  # the 9, then too few raters left; no dynamic/alignment ratings
{'out_of_range': 1, 'too_few_raters': 1, 'missing_dimension': 2}
>>> result.mos[["video_id", "dimension", "mos", "n_raters"]].to_dict("records")
[{'video_id': 'a', 'dimension': 'visual', 'mos': 4.5, 'n_raters': 2}]
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from qsave.dimensions import DIMENSIONS, MOS_MAX, MOS_MIN
from qsave.errors import AnnotationError, ConfigError
from qsave.jsonl import read_jsonl

OVERALL = "overall"  # the fourth rated dimension, kept for analysis only (Sec. 3.3, App. D.2)
LEARNED_DIMENSIONS: tuple[str, ...] = tuple(d.value for d in DIMENSIONS)
RATED_DIMENSIONS: tuple[str, ...] = (*LEARNED_DIMENSIONS, OVERALL)
SPLITS: tuple[str, ...] = ("train", "test", "rl")  # rl: the separate GRPO set of App. C.1
UNUSED = "unused"  # a video no split may take (qsave.data.splits: it would join RL and SFT)
VIDEO_SPLITS: tuple[str, ...] = (*SPLITS, UNUSED)  # the split values a videos table may hold
RATING_COLUMNS = ("video_id", "rater_id", "dimension", "score")
VIDEO_COLUMNS = ("video_id", "path", "prompt", "generator")
ROW = "_row"  # 1-based data row of the source table (header excluded), kept through every step


# --- configuration and problems ------------------------------------------------------------
@dataclass(frozen=True)
class AnnotationConfig:
    """How a ratings table is checked and aggregated (Sec. 3.3, App. C.1)."""

    scale_low: float = 1.0  # lowest score of the declared rating scale
    scale_high: float = 5.0  # highest score of the declared rating scale
    integer_scores: bool = False  # report non-integer scores (a discrete 5-level scale)
    min_raters_train: int = 3  # Sec. 3.3: at least three raters per training video
    min_raters_test: int = 12  # Sec. 3.3: at least twelve raters per test video
    min_raters_rl: int = 3  # App. C.1: the RL set follows the SFT annotation standard
    min_raters_unsplit: int = 3  # videos without a split are held to the training minimum

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale_low) and math.isfinite(self.scale_high)):
            raise ConfigError(f"scale ({self.scale_low}, {self.scale_high}) must be finite")
        if self.scale_low >= self.scale_high:
            raise ConfigError(
                f"scale_low ({self.scale_low}) must be below scale_high ({self.scale_high})"
            )
        for name in ("min_raters_train", "min_raters_test", "min_raters_rl", "min_raters_unsplit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least 1")

    def min_raters(self, split: object) -> int:
        """The minimum number of raters for a video of this split."""
        return {
            "train": self.min_raters_train,
            "test": self.min_raters_test,
            "rl": self.min_raters_rl,
        }.get(str(split), self.min_raters_unsplit)

    def to_mos5(self, value: float | np.ndarray | pd.Series) -> float | np.ndarray | pd.Series:
        """A value of the declared scale mapped linearly onto the 1–5 MOS scale of Sec. 3.4.2."""
        span = self.scale_high - self.scale_low
        return MOS_MIN + (MOS_MAX - MOS_MIN) * (value - self.scale_low) / span


@dataclass(frozen=True)
class Problem:
    """One problem of an input table; ``rows`` are 1-based data rows of ``table``."""

    kind: str  # e.g. out_of_range, duplicate, unknown_video, missing_dimension, too_few_raters
    message: str
    table: str = "ratings"
    rows: tuple[int, ...] = ()
    video_id: str | None = None
    dimension: str | None = None
    severity: str = "error"  # "error": data is unusable as given; "warning": worth a look

    def __str__(self) -> str:
        where = f" ({self.table} row {', '.join(map(str, self.rows))})" if self.rows else ""
        return f"{self.severity} [{self.kind}]{where}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "table": self.table,
            "rows": list(self.rows),
            "video_id": self.video_id,
            "dimension": self.dimension,
            "message": self.message,
        }


@dataclass
class CheckReport:
    """Every problem found, and the rating rows that were not used for a MOS."""

    problems: list[Problem] = field(default_factory=list)
    excluded_rows: tuple[int, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when no problem is an error (warnings allowed)."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        counts: dict[str, int] = {}
        for problem in self.problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return counts

    def extend(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)

    def raise_if_errors(self) -> None:
        """Raise one :class:`AnnotationError` that lists every error."""
        if self.errors:
            lines = "\n".join(f"  {p}" for p in self.errors)
            raise AnnotationError(f"{len(self.errors)} problem(s) in the annotations:\n{lines}")

    def to_frame(self) -> pd.DataFrame:
        columns = ["kind", "severity", "table", "rows", "video_id", "dimension", "message"]
        return pd.DataFrame([p.to_dict() for p in self.problems], columns=columns)


# --- loading -------------------------------------------------------------------------------
def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, Parquet or JSONL table, every column as read; a file error names the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".json"):
            return _read_jsonl(path)
    except AnnotationError:
        raise
    except (OSError, ValueError) as error:
        raise AnnotationError(f"cannot read table {path}: {error}") from error
    raise AnnotationError(f"unsupported table format {path.suffix!r} of {path}; use .csv, "
                          ".parquet or .jsonl")


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV, Parquet or JSONL (by suffix), without the internal ``_row``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.drop(columns=[ROW], errors="ignore")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        nested = [c for c in frame.columns if frame[c].dtype == object
                  and frame[c].map(lambda v: isinstance(v, dict | list)).any()]
        frame = frame.assign(**{c: frame[c].map(_json_cell) for c in nested})
        frame.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        raise AnnotationError(f"unsupported table format {path.suffix!r} of {path}; use .csv, "
                              ".parquet or .jsonl")
    return path


def _json_cell(value: object) -> object:
    """A dict or list as JSON text (a CSV cell); any other value as it is."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


def _decode_json_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every value is a JSON object or array (nested fields written to CSV
    by :func:`write_table`) decoded back into dicts and lists."""
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty or not values.map(lambda v: isinstance(v, str)
                                          and v[:1] in "{[" and v[-1:] in "}]").all():
            continue
        try:
            frame[column] = frame[column].map(lambda v: v if _missing(v) else json.loads(v))
        except json.JSONDecodeError:
            continue
    return frame


@dataclass
class Staging:
    """Outputs written beside their destinations and moved into place together.

    :meth:`file` and :meth:`folder` give the temporary path to write; :meth:`commit` moves
    each over its destination (a folder's files into the destination folder), :meth:`discard`
    removes them. Through :func:`staged`, a command that fails writes nothing and leaves an
    existing output untouched.
    """

    moves: list[tuple[Path, Path]] = field(default_factory=list)

    def file(self, path: str | Path) -> Path:
        """A temporary file beside ``path``, with its suffix (the format is read from it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
        self.moves.append((temporary, path))
        return temporary

    def folder(self, path: str | Path) -> Path:
        """A temporary folder beside ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        temporary.mkdir()
        self.moves.append((temporary, path))
        return temporary

    def commit(self) -> None:
        for temporary, path in self.moves:
            if temporary.is_dir() and path.is_dir():
                _move_into(temporary, path)
            elif temporary.exists():
                os.replace(temporary, path)
        self.moves.clear()

    def discard(self) -> None:
        for temporary, _ in self.moves:
            if temporary.is_dir():
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                temporary.unlink(missing_ok=True)
        self.moves.clear()


def _move_into(source: Path, target: Path) -> None:
    """Move every file of ``source`` into ``target`` (same relative paths), then remove it."""
    for item in source.iterdir():
        if item.is_dir() and (target / item.name).is_dir():
            _move_into(item, target / item.name)
        else:
            os.replace(item, target / item.name)
    source.rmdir()


@contextmanager
def staged() -> Iterator[Staging]:
    """A :class:`Staging` committed when the block ends normally, discarded when it raises."""
    stage = Staging()
    try:
        yield stage
    except BaseException:
        stage.discard()
        raise
    stage.commit()


def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON lines; every malformed line is listed by its line number."""
    read = read_jsonl(path)
    bad = read.problems()
    if bad:
        raise AnnotationError(f"malformed JSON lines in {path}:\n  " + "\n  ".join(bad))
    rows = [row for _, row in read.rows]
    return pd.DataFrame(rows)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise AnnotationError(f"{what} lacks column(s) {', '.join(missing)}; found: {found}")


def normalize_ratings(frame: pd.DataFrame) -> pd.DataFrame:
    """Ratings with string ids, lower-case dimension names and a ``_row`` column.

    Scores are left as given; :func:`check_ratings` reports the ones that are not numbers.
    """
    _require_columns(frame, RATING_COLUMNS, "ratings table")
    out = frame.copy().reset_index(drop=True)
    if ROW not in out.columns:
        out[ROW] = np.arange(1, len(out) + 1)
    for column in ("video_id", "rater_id"):
        out[column] = out[column].map(_as_id)
    out["dimension"] = out["dimension"].map(_as_name)
    return out


def load_ratings(path: str | Path) -> pd.DataFrame:
    """Read and normalize a ratings table (CSV or Parquet)."""
    return normalize_ratings(read_table(path))


def load_rater_ids(path: str | Path) -> list[str]:
    """Known rater ids: the ``raters.json`` of ``qsave data synth`` (``{"raters": [{"id"}]}``),
    a JSON list, or a table with a ``rater_id`` (or ``id``) column."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise AnnotationError(f"cannot read raters {path}: {error}") from error
        items = data.get("raters", []) if isinstance(data, dict) else data
        return [_as_id(r["id"] if isinstance(r, dict) else r) for r in items]
    table = read_table(path)
    column = "rater_id" if "rater_id" in table.columns else "id"
    _require_columns(table, (column,), "raters table")
    return [_as_id(r) for r in table[column]]


def normalize_videos(frame: pd.DataFrame, base: Path | None = None) -> pd.DataFrame:
    """Videos with string ids and paths resolved against ``base`` (the table's folder).

    A manifest's ``id`` becomes ``video_id``; its ``mos`` and ``attributions`` dictionaries
    become ``mos_<dimension>`` and ``attribution_<dimension>`` columns.
    """
    out = _decode_json_columns(frame.copy().reset_index(drop=True))
    if "video_id" not in out.columns and "id" in out.columns:
        out = out.rename(columns={"id": "video_id"})
    _require_columns(out, VIDEO_COLUMNS, "videos table")
    out[ROW] = np.arange(1, len(out) + 1)
    out["video_id"] = out["video_id"].map(_as_id)
    if "split" not in out.columns:
        out["split"] = None
    out["split"] = out["split"].map(_as_name)
    if base is not None:
        out["path"] = out["path"].map(lambda p: p if _missing(p) else str(_resolve(base, p)))
    for prefix, column in (("mos", "mos"), ("attribution", "attributions")):
        if column in out.columns and out[column].map(lambda v: isinstance(v, dict)).any():
            out = _flatten_dict_column(out, column, prefix)
    return out


def load_videos(path: str | Path) -> pd.DataFrame:
    """Read a videos table (CSV, Parquet or the synthetic ``manifest.jsonl``)."""
    path = Path(path)
    return normalize_videos(read_table(path), base=path.parent)


def _flatten_dict_column(frame: pd.DataFrame, column: str, prefix: str) -> pd.DataFrame:
    values = frame[column].map(lambda v: v if isinstance(v, dict) else {})
    for dim in RATED_DIMENSIONS:
        frame[f"{prefix}_{dim}"] = values.map(lambda d, dim=dim: d.get(dim))
    return frame.drop(columns=[column])


def _resolve(base: Path, value: object) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else (base / path).resolve()


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _as_name(value: object) -> str | None:
    """A dimension or split name: stripped, lower case; None when empty."""
    return None if _missing(value) else str(value).strip().lower()


def _as_id(value: object) -> str | None:
    """An id as a string; ``3`` and ``3.0`` (Parquet floats) both become ``"3"``."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --- checks ----------------------------------------------------------------------------------
def check_videos(videos: pd.DataFrame) -> list[Problem]:
    """Problems of the videos table: missing fields, duplicate ids, unknown splits."""
    problems: list[Problem] = []
    for column in VIDEO_COLUMNS:
        for _, row in videos[videos[column].map(_missing)].iterrows():
            problems.append(Problem("missing_field", f"video {row['video_id']!r} has no {column}",
                                    "videos", (int(row[ROW]),), row["video_id"]))
    known = videos.dropna(subset=["video_id"])
    for video_id, group in known[known["video_id"].duplicated(keep=False)].groupby("video_id"):
        rows = tuple(int(r) for r in group[ROW])
        problems.append(Problem("duplicate_video", f"video id {video_id!r} appears {len(rows)} "
                                "times", "videos", rows, str(video_id)))
    bad_split = videos["split"].notna() & ~videos["split"].isin(VIDEO_SPLITS)
    for _, row in videos[bad_split].iterrows():
        problems.append(Problem("bad_split", f"unknown split {row['split']!r} of video "
                                f"{row['video_id']!r}; valid: {', '.join(VIDEO_SPLITS)}", "videos",
                                (int(row[ROW]),), row["video_id"]))
    return problems


@dataclass(frozen=True)
class _Known:
    """The ids a rating may refer to; None: not checked."""

    videos: set[str] | None = None
    raters: set[str] | None = None


def _row_problems(ratings: pd.DataFrame, known: _Known,
                  config: AnnotationConfig) -> tuple[list[Problem], pd.Series]:
    """Problems of single rating rows, and the mask of rows that pass every row check."""
    problems: list[Problem] = []
    scores = pd.to_numeric(ratings["score"], errors="coerce")
    valid = pd.Series(True, index=ratings.index)
    for index, row in ratings[_suspect_rows(ratings, scores, known, config)].iterrows():
        problem = _row_problem(row, scores[index], known, config)
        if problem is not None:
            problems.append(problem)
            valid[index] = False
    return problems, valid


def _suspect_rows(ratings: pd.DataFrame, scores: pd.Series, known: _Known,
                  config: AnnotationConfig) -> pd.Series:
    """A vectorized superset of the rows :func:`_row_problem` rejects (it words the message)."""
    suspect = ratings[["video_id", "rater_id", "dimension"]].isna().any(axis=1)
    suspect |= ~ratings["dimension"].isin(RATED_DIMENSIONS)
    if known.videos is not None:
        suspect |= ~ratings["video_id"].isin(known.videos)
    if known.raters is not None:
        suspect |= ~ratings["rater_id"].isin(known.raters)
    finite = np.isfinite(scores.to_numpy(dtype=float))
    suspect |= ~finite | ~scores.between(config.scale_low, config.scale_high)
    if config.integer_scores:
        suspect |= scores.mod(1).ne(0)
    return suspect


def _row_problem(row: pd.Series, score: float, known: _Known,
                 config: AnnotationConfig) -> Problem | None:
    """The first problem of one rating row, or None."""
    rows, video, dim = (int(row[ROW]),), row["video_id"], row["dimension"]

    def problem(kind: str, message: str) -> Problem:
        return Problem(kind, message, "ratings", rows, video, dim)

    missing = [c for c in RATING_COLUMNS if _missing(row[c])]
    if missing:
        return problem("missing_value", f"empty {', '.join(missing)}")
    if dim not in RATED_DIMENSIONS:
        return problem("unknown_dimension", f"unknown dimension {row['dimension']!r}; valid: "
                       f"{', '.join(RATED_DIMENSIONS)}")
    if known.videos is not None and video not in known.videos:
        return problem("unknown_video", f"video {video!r} is not in the videos table")
    if known.raters is not None and row["rater_id"] not in known.raters:
        return problem("unknown_rater", f"rater {row['rater_id']!r} is not in the raters list")
    if not math.isfinite(score):
        return problem("bad_score", f"score {row['score']!r} is not a number")
    if not config.scale_low <= score <= config.scale_high:
        return problem("out_of_range", f"score {score:g} of rater {row['rater_id']!r} is "
                       f"outside the scale [{config.scale_low:g}, {config.scale_high:g}]")
    if config.integer_scores and not float(score).is_integer():
        return problem("non_integer", f"score {score:g} is not one of the scale's levels")
    return None


def _duplicate_problems(ratings: pd.DataFrame, valid: pd.Series) -> list[Problem]:
    """Repeated (video, rater, dimension) ratings; the first is kept, the others excluded."""
    keys = ["video_id", "rater_id", "dimension"]
    candidates = ratings[valid]
    repeated = candidates[candidates.duplicated(keys, keep=False)]
    problems = []
    for (video, rater, dim), group in repeated.groupby(keys, sort=False):
        rows = tuple(int(r) for r in group[ROW])
        scores = ", ".join(str(s) for s in group["score"])
        problems.append(Problem("duplicate", f"rater {rater!r} rated {video!r}/{dim} "
                                f"{len(rows)} times (scores {scores}); the first (row {rows[0]}) "
                                "is kept", "ratings", rows, video, dim))
        valid[group.index[1:]] = False
    return problems


def _coverage_problems(valid: pd.DataFrame, videos: pd.DataFrame | None,
                       config: AnnotationConfig) -> list[Problem]:
    """Unrated videos, missing dimensions and too few raters, per video and dimension."""
    counts = valid.groupby(["video_id", "dimension"])["rater_id"].nunique()
    if videos is not None:
        video_rows = videos.dropna(subset=["video_id"]).drop_duplicates("video_id")
        split_of = dict(zip(video_rows["video_id"], video_rows["split"], strict=True))
        row_of = dict(zip(video_rows["video_id"], video_rows[ROW], strict=True))
    else:
        split_of = dict.fromkeys(valid["video_id"].unique())
        row_of = {}
    dims = [*LEARNED_DIMENSIONS, OVERALL] if OVERALL in set(valid["dimension"]) \
        else list(LEARNED_DIMENSIONS)
    table = counts.unstack("dimension") if len(counts) else pd.DataFrame(columns=dims)
    table = table.reindex(index=list(split_of), columns=dims).fillna(0).astype(int)
    need = pd.Series([config.min_raters(s) for s in split_of.values()], index=table.index)
    problems: list[Problem] = []
    for video in table.index[table.lt(need, axis=0).any(axis=1)]:  # (videos, dimensions)
        rows = (int(row_of[video]),) if video in row_of else ()
        have = {d: int(n) for d, n in table.loc[video].items()}
        problems.extend(_video_coverage(video, split_of[video], rows, have, config))
    return problems


def _video_coverage(video: str, split: object, rows: tuple[int, ...], have: dict[str, int],
                    config: AnnotationConfig) -> list[Problem]:
    """The coverage problems of one video, given its number of raters per dimension."""
    if not any(have.values()):
        return [Problem("unrated_video", f"video {video!r} has no usable rating", "videos",
                        rows, video)]
    need = config.min_raters(split)
    problems = []
    for dim, n in have.items():
        severity = "warning" if dim == OVERALL else "error"
        if n == 0:
            problems.append(Problem("missing_dimension", f"video {video!r} has no {dim} rating",
                                    "videos", rows, video, dim, severity))
        elif n < need:
            problems.append(Problem("too_few_raters", f"video {video!r} ({split or 'no split'}) "
                                    f"has {n} {dim} rater(s), needs {need}", "videos", rows,
                                    video, dim, severity))
    return problems


def check_ratings(ratings: pd.DataFrame, videos: pd.DataFrame | None = None,
                  config: AnnotationConfig | None = None,
                  raters: Iterable[str] | None = None) -> CheckReport:
    """Check a normalized ratings table (and its videos table) and report every problem.

    Row checks (first failing one per row): empty fields, unknown dimension, unknown video,
    unknown rater (when ``raters`` lists the known ones), non-numeric or out-of-range score,
    optionally non-integer score; then duplicate ratings; then per video: no ratings, missing
    dimensions, fewer raters than its split needs (Sec. 3.3: 3 train, 12 test). Rows failing
    a row check or repeated are excluded from the MOS.
    """
    config = config or AnnotationConfig()
    report = CheckReport()
    if videos is not None:
        report.extend(check_videos(videos))
    known = _Known(None if videos is None else set(videos["video_id"].dropna()),
                   None if raters is None else {_as_id(r) for r in raters})
    row_problems, valid = _row_problems(ratings, known, config)
    report.extend(row_problems)
    report.extend(_duplicate_problems(ratings, valid))
    report.extend(_coverage_problems(ratings[valid], videos, config))
    report.excluded_rows = tuple(int(r) for r in ratings.loc[~valid, ROW])
    return report


def usable_ratings(ratings: pd.DataFrame, report: CheckReport) -> pd.DataFrame:
    """The rows that a MOS may use (those not in ``report.excluded_rows``), scores as floats."""
    kept = ratings[~ratings[ROW].isin(set(report.excluded_rows))].copy()
    kept["score"] = pd.to_numeric(kept["score"]).astype(float)
    return kept


# --- MOS -------------------------------------------------------------------------------------
MOS_COLUMNS = ("video_id", "dimension", "mos", "std", "n_raters", "mos5")


def compute_mos(ratings: pd.DataFrame, config: AnnotationConfig | None = None) -> pd.DataFrame:
    """MOS per video and dimension from *usable* ratings (Sec. 3.3).

    ``mos`` is the mean on the declared scale, ``std`` the sample standard deviation (ddof=1,
    NaN for one rater), ``n_raters`` the count, ``mos5`` the MOS mapped onto 1–5 for R(s).
    """
    config = config or AnnotationConfig()
    if ratings.empty:
        return pd.DataFrame(columns=list(MOS_COLUMNS))
    grouped = ratings.groupby(["video_id", "dimension"], sort=True)["score"]
    table = grouped.agg(mos="mean", std="std", n_raters="count").reset_index()
    table["n_raters"] = table["n_raters"].astype(int)
    table["mos5"] = config.to_mos5(table["mos"])
    return table[list(MOS_COLUMNS)]


MOS_VIDEO_COLUMNS = ("split", "generator", "prompt")  # what a MOS table takes from the videos


def with_video_columns(mos: pd.DataFrame, videos: pd.DataFrame | None) -> pd.DataFrame:
    """The MOS table with each video's split, generator and prompt (those the videos table
    has): what ``qsave eval --split`` selects by, its model level groups by and its pairs
    are built within."""
    if videos is None:
        return mos
    columns = [c for c in MOS_VIDEO_COLUMNS if c in videos.columns and videos[c].notna().any()]
    if not columns:
        return mos
    return mos.merge(videos[["video_id", *columns]].drop_duplicates("video_id"), on="video_id",
                     how="left")


@dataclass
class MosResult:
    """The MOS table, the usable rating rows and the check report behind them."""

    mos: pd.DataFrame
    usable: pd.DataFrame
    report: CheckReport


def aggregate(ratings: pd.DataFrame, videos: pd.DataFrame | None = None,
              config: AnnotationConfig | None = None,
              raters: Iterable[str] | None = None) -> MosResult:
    """Check, then compute the MOS from every usable row (Sec. 3.3)."""
    config = config or AnnotationConfig()
    ratings = normalize_ratings(ratings)
    report = check_ratings(ratings, videos, config, raters)
    usable = usable_ratings(ratings, report)
    return MosResult(compute_mos(usable, config), usable, report)


def raters_per_video(usable: pd.DataFrame) -> pd.Series:
    """Each video's number of raters: the fewest over its rated learned dimensions (the count
    that :func:`check_ratings` holds to the split's minimum, Sec. 3.3)."""
    learned = usable[usable["dimension"].isin(LEARNED_DIMENSIONS)]
    counts = learned.groupby(["video_id", "dimension"])["rater_id"].nunique()
    return counts.groupby(level="video_id").min().astype(int).rename("n_raters")


def mos_from_videos(videos: pd.DataFrame) -> pd.DataFrame:
    """A MOS table (1–5) from a manifest's ``mos_<dimension>`` columns; n_raters unknown."""
    rows = []
    for dim in RATED_DIMENSIONS:
        column = f"mos_{dim}"
        if column not in videos.columns:
            continue
        for video, value in zip(videos["video_id"], videos[column], strict=True):
            if not _missing(value):
                rows.append((video, dim, float(value), math.nan, 0, float(value)))
    return pd.DataFrame(rows, columns=list(MOS_COLUMNS))


_LABEL_SPLIT = re.compile(r"[;|]")


def collect_reasons(ratings: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Raters' reasons per (video, dimension), most frequent first (Sec. 3.3, Fig. 2 step 2).

    Reads ``reason`` (free text) and ``reason_labels`` (``;``- or ``|``-separated labels).
    """
    found: dict[tuple[str, str], dict[str, int]] = {}
    for column in (c for c in ("reason", "reason_labels") if c in ratings.columns):
        given = ratings[~ratings[column].map(_missing)]
        for video, dim, value in zip(given["video_id"], given["dimension"], given[column],
                                     strict=True):
            parts = _LABEL_SPLIT.split(str(value)) if column == "reason_labels" else [str(value)]
            counts = found.setdefault((video, dim), {})
            for part in (p.strip() for p in parts):
                if part:
                    counts[part] = counts.get(part, 0) + 1
    return {key: sorted(c, key=lambda k, c=c: (-c[k], k)) for key, c in found.items()}


# --- rater screening: Sample and Scrutinize (App. C.1) -------------------------------------
RANK_KEYS = ("srcc", "mae")


@dataclass(frozen=True)
class ScreenConfig:
    """Sample and Scrutinize (App. C.1): rank raters on a calibration subset, drop the worst.

    ``drop_k=None`` takes the default of the reference: with an expert ground truth the
    paper's ``drop_k_expert``; against the leave-one-out MOS of the raters themselves (no
    expert subset) ``drop_k_consensus``, i.e. raters are ranked and reported, not dropped.
    App. C.1 gives a count only against the experts ("exclude the 6 least accurate
    annotators"), and Sec. 3.3 removes raters "who fail to meet reliability and completeness
    requirements" without a threshold: the paper has no rule for a corpus without experts,
    so none is invented here (``drop_k``, ``min_srcc`` or ``max_mae`` set one).
    """

    drop_k: int | None = None  # drop the k least accurate; None: the reference's default below
    drop_k_expert: int = 6  # App. C.1: "exclude the 6 least accurate annotators" (vs. experts)
    drop_k_consensus: int = 0  # no expert truth: the rank is against the raters' own consensus
    min_srcc: float | None = None  # also drop raters whose SRCC is below this
    max_mae: float | None = None  # also drop raters whose MAE is above this
    rank_by: str = "srcc"  # primary key: "srcc" (ties by MAE) or "mae" (ties by SRCC)
    min_items: int = 5  # raters with fewer calibration ratings are reported, not ranked

    def __post_init__(self) -> None:
        if self.rank_by not in RANK_KEYS:
            raise ConfigError(f"unknown rank_by {self.rank_by!r}; valid: {', '.join(RANK_KEYS)}")
        for name in ("drop_k", "drop_k_expert", "drop_k_consensus"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} ({value}) must be ≥ 0")
        if self.min_items < 2:
            raise ConfigError(f"min_items ({self.min_items}) must be ≥ 2 for a correlation")

    def resolve_drop_k(self, expert: bool) -> tuple[int, str]:
        """How many raters to drop by rank, and where that number comes from.

        >>> ScreenConfig().resolve_drop_k(expert=True)
        (6, 'App. C.1 default with an expert ground truth')
        >>> ScreenConfig(drop_k=0).resolve_drop_k(expert=True)
        (0, 'set explicitly')
        """
        if self.drop_k is not None:
            return self.drop_k, "set explicitly"
        if expert:
            return self.drop_k_expert, "App. C.1 default with an expert ground truth"
        return self.drop_k_consensus, ("default without an expert ground truth; App. C.1 drops "
                                       "raters only against experts, and the paper gives no "
                                       "rule without them")


@dataclass
class ScreeningResult:
    """Per-rater agreement with the reference, who is dropped, and why that many.

    ``problems`` holds warnings (unscreened raters) and errors: the videos that the drop would
    leave under their split's minimum number of raters. :meth:`apply` refuses while there is
    an error.
    """

    raters: pd.DataFrame  # rater_id, n_items, srcc, mae, rank, dropped, reason
    problems: list[Problem]
    reference: str  # "expert ground truth" or "leave-one-out MOS"
    drop_k: int  # raters dropped by rank
    drop_k_source: str  # where drop_k comes from (set, or the reference's default)

    @property
    def dropped(self) -> list[str]:
        return sorted(self.raters.loc[self.raters["dropped"], "rater_id"])

    @property
    def ok(self) -> bool:
        """True when dropping leaves every video its minimum number of raters."""
        return not any(p.severity == "error" for p in self.problems)

    def summary(self) -> str:
        """One line: the reference, drop_k and its source, who is dropped."""
        return (f"reference: {self.reference}; drop_k {self.drop_k} ({self.drop_k_source}); "
                f"dropped {len(self.dropped)} rater(s): {', '.join(self.dropped) or '–'}")

    def apply(self, ratings: pd.DataFrame) -> pd.DataFrame:
        """The ratings without the dropped raters (recompute the MOS from them).

        Raises :class:`AnnotationError` listing the videos left short when not :attr:`ok`.
        """
        errors = [p for p in self.problems if p.severity == "error"]
        if errors:
            listed = "\n".join(f"  {p}" for p in errors)
            raise AnnotationError(f"screening refused: dropping {', '.join(self.dropped)} would "
                                  f"leave {len(errors)} video(s) under their minimum number "
                                  f"of raters:\n{listed}")
        return ratings[~ratings["rater_id"].isin(set(self.dropped))].copy()


def truth_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Expert ground truth as (video_id, dimension, truth).

    Accepts a long table (``video_id, dimension`` and ``mos`` or ``score``), or a videos
    table with ``mos_<dimension>`` columns (the synthetic manifest's ground-truth MOS).
    """
    frame = frame.rename(columns={"id": "video_id"}) if "video_id" not in frame else frame
    if "mos" in frame.columns and frame["mos"].map(lambda v: isinstance(v, dict)).any():
        frame = _flatten_dict_column(frame.copy(), "mos", "mos")  # a raw manifest
    if "dimension" in frame.columns:
        value = "mos" if "mos" in frame.columns else "score"
        _require_columns(frame, ("video_id", "dimension", value), "ground-truth table")
        out = frame[["video_id", "dimension", value]].rename(columns={value: "truth"})
    else:
        out = mos_from_videos(frame).rename(columns={"mos": "truth"})[
            ["video_id", "dimension", "truth"]]
    out = out.assign(video_id=out["video_id"].map(_as_id),
                     dimension=out["dimension"].map(lambda d: str(d).strip().lower()),
                     truth=pd.to_numeric(out["truth"], errors="coerce"))
    if out["truth"].isna().any():
        bad = out[out["truth"].isna()].head(5).to_dict("records")
        raise AnnotationError(f"ground truth has non-numeric values, e.g. {bad}")
    return out.groupby(["video_id", "dimension"], as_index=False)["truth"].mean()


def leave_one_out_reference(ratings: pd.DataFrame) -> pd.Series:
    """For each usable rating, the mean of the *other* raters of the same item (NaN if none)."""
    keys = [ratings["video_id"], ratings["dimension"]]
    total = ratings.groupby(keys)["score"].transform("sum")
    count = ratings.groupby(keys)["score"].transform("count")
    return ((total - ratings["score"]) / (count - 1)).where(count > 1)


def rater_agreement(ratings: pd.DataFrame, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """SRCC and MAE of each rater against the reference, pooled over items and dimensions.

    The reference is the expert ``truth`` (App. C.1) on the calibration items it covers, or
    without it the leave-one-out MOS of the other raters.
    """
    if truth is None:
        paired = ratings.assign(truth=leave_one_out_reference(ratings))
    else:
        paired = ratings.merge(truth, on=["video_id", "dimension"], how="left")
    paired = paired.dropna(subset=["truth"])
    rows = []
    for rater in sorted(ratings["rater_id"].unique()):
        mine = paired[paired["rater_id"] == rater]
        rows.append({"rater_id": rater, "n_items": len(mine),
                     "srcc": _srcc(mine["score"], mine["truth"]),
                     "mae": float((mine["score"] - mine["truth"]).abs().mean())
                     if len(mine) else math.nan})
    return pd.DataFrame(rows, columns=["rater_id", "n_items", "srcc", "mae"])


def _srcc(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rho; NaN when there are under two items or either side is constant."""
    if len(a) < 2 or a.nunique() < 2 or b.nunique() < 2:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def screen_raters(ratings: pd.DataFrame, truth: pd.DataFrame | None = None,
                  config: ScreenConfig | None = None, videos: pd.DataFrame | None = None,
                  annotation: AnnotationConfig | None = None) -> ScreeningResult:
    """Sample and Scrutinize (App. C.1): rank raters by agreement and mark who is dropped.

    Raters are ranked from most to least accurate (SRCC descending, MAE ascending; an
    undefined SRCC ranks last). The ``drop_k`` last ones are dropped (see
    :meth:`ScreenConfig.resolve_drop_k`), and any rater under ``min_srcc`` or over
    ``max_mae``. Raters with under ``min_items`` calibration ratings are not ranked; they are
    kept and reported as a warning. A (video, dimension) that had its split's minimum number
    of raters (``annotation``, Sec. 3.3: 3 train, 12 test; ``videos`` gives the split) and
    would fall under it is an error: nothing is dropped silently.
    """
    config = config or ScreenConfig()
    drop_k, source = config.resolve_drop_k(expert=truth is not None)
    table = _rank_raters(rater_agreement(ratings, truth), config)
    n_ranked = int(table["rank"].notna().sum())
    table["reason"] = [_drop_reason(row, n_ranked, drop_k, source, config)
                       for _, row in table.iterrows()]
    table["dropped"] = table["reason"].astype(bool)
    problems = [Problem("unscreened", f"rater {r['rater_id']!r} has {r['n_items']} calibration "
                        f"rating(s), under {config.min_items}; kept without screening",
                        "ratings", severity="warning")
                for _, r in table[table["rank"].isna()].iterrows()]
    dropped = set(table.loc[table["dropped"], "rater_id"])
    problems += _shortfall_problems(ratings, dropped, videos, annotation or AnnotationConfig())
    return ScreeningResult(table[["rater_id", "n_items", "srcc", "mae", "rank", "dropped",
                                  "reason"]], problems,
                           "expert ground truth" if truth is not None else "leave-one-out MOS",
                           drop_k, source)


def _rank_raters(table: pd.DataFrame, config: ScreenConfig) -> pd.DataFrame:
    """The agreement table with a ``rank`` (1 = most accurate; NaN: too few items), sorted."""
    ranked = table[table["n_items"] >= config.min_items].copy()
    order = ["srcc", "mae"] if config.rank_by == "srcc" else ["mae", "srcc"]
    ranked["_srcc_key"] = -ranked["srcc"].fillna(-math.inf)
    keys = ["_srcc_key" if k == "srcc" else "mae" for k in order]
    ranked = ranked.sort_values([*keys, "rater_id"], na_position="last")
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    table = table.merge(ranked[["rater_id", "rank"]], on="rater_id", how="left")
    return table.sort_values(["rank", "rater_id"], na_position="last").reset_index(drop=True)


def _drop_reason(row: pd.Series, n_ranked: int, drop_k: int, source: str,
                 config: ScreenConfig) -> str:
    """Why this rater is dropped ("" when kept)."""
    if pd.isna(row["rank"]):
        return ""
    reasons = []
    if row["rank"] > n_ranked - drop_k:
        reasons.append(f"among the {drop_k} least accurate (rank {int(row['rank'])} of "
                       f"{n_ranked}; drop_k: {source})")
    if config.min_srcc is not None and not row["srcc"] >= config.min_srcc:
        reasons.append(f"SRCC {row['srcc']:.3f} < {config.min_srcc}")
    if config.max_mae is not None and not row["mae"] <= config.max_mae:
        reasons.append(f"MAE {row['mae']:.3f} > {config.max_mae}")
    return "; ".join(reasons)


def _shortfall_problems(ratings: pd.DataFrame, dropped: set[str], videos: pd.DataFrame | None,
                        config: AnnotationConfig) -> list[Problem]:
    """One problem per video with a dimension that meets its split's minimum number of raters
    and would not after the drop: an error, a warning when only ``overall`` falls short (as
    in :func:`check_ratings`)."""
    if not dropped:
        return []
    keys = ["video_id", "dimension"]
    before = ratings.groupby(keys)["rater_id"].nunique().rename("before")
    kept = ratings[~ratings["rater_id"].isin(dropped)]
    counts = before.to_frame().join(kept.groupby(keys)["rater_id"].nunique().rename("after"))
    counts = counts.fillna(0).astype(int).reset_index()
    split_of = {} if videos is None else dict(zip(videos["video_id"], videos["split"],
                                                  strict=True))
    counts["split"] = counts["video_id"].map(split_of)
    counts["need"] = counts["split"].map(config.min_raters)
    short = counts[(counts["before"] >= counts["need"]) & (counts["after"] < counts["need"])]
    problems = []
    for video, group in short.groupby("video_id", sort=True):
        split, need = group["split"].iloc[0], int(group["need"].iloc[0])
        split = split if isinstance(split, str) else "no split"
        by_count: dict[tuple[int, int], list[str]] = {}
        for dim, after, n in zip(group["dimension"], group["after"], group["before"],
                                 strict=True):
            by_count.setdefault((after, n), []).append(dim)
        kept_text = "; ".join(f"{after} of {n} raters on {', '.join(dims)}"
                              for (after, n), dims in by_count.items())
        severity = "warning" if set(group["dimension"]) == {OVERALL} else "error"
        problems.append(Problem("screening_shortfall", f"video {video!r} ({split}, needs "
                                f"{need}) would keep {kept_text} after screening", "ratings",
                                (), video, None, severity))
    return problems


# --- agreement statistics ------------------------------------------------------------------
def krippendorff_alpha(units: Iterable[Sequence[float]]) -> float:
    """Krippendorff's alpha with the interval metric: 1 − D_o / D_e.

    ``units`` holds the values given to each item (any number of raters; units with fewer
    than two values are not pairable and are ignored). Krippendorff (2011), "Computing
    Krippendorff's alpha-reliability", worked example: interval alpha = 0.849.
    """
    arrays = [np.asarray(u, dtype=float) for u in units]
    return _alpha_from_sums(np.array([u.size for u in arrays]),
                            np.array([u.sum() for u in arrays]),
                            np.array([(u**2).sum() for u in arrays]))


def _alpha_from_sums(count: np.ndarray, total: np.ndarray, squares: np.ndarray) -> float:
    """Interval alpha from each unit's number of values, sum and sum of squares.

    Σ_{i≠j}(v_i − v_j)² = 2·(m·Σv² − (Σv)²) within a unit (D_o, weighted 1/(m−1)) and over
    all pairable values (D_e); alpha = 1 − (n − 1)·Σ_u[…/(m_u − 1)] / […over all n values].
    """
    pairable = count >= 2
    count, total, squares = count[pairable], total[pairable], squares[pairable]
    n = count.sum()
    if n == 0:
        return math.nan
    observed = (2 * (count * squares - total**2) / (count - 1)).sum()
    expected = 2 * (n * squares.sum() - total.sum() ** 2) / (n - 1)
    if expected == 0:
        return math.nan
    return float(1 - observed / expected)


def inter_rater_agreement(usable: pd.DataFrame) -> pd.DataFrame:
    """Per dimension: Krippendorff's interval alpha, mean leave-one-out SRCC of the raters,
    mean per-video variance (App. C.1, Fig. 9) and the number of videos."""
    rows = []
    for dim, group in usable.groupby("dimension", sort=False):
        scores = group.assign(square=group["score"] ** 2).groupby("video_id")
        sums = scores.agg(count=("score", "size"), total=("score", "sum"),
                          squares=("square", "sum"), variance=("score", "var"))
        alpha = _alpha_from_sums(*(sums[c].to_numpy(float) for c in ("count", "total",
                                                                     "squares")))
        loo = rater_agreement(group)
        rows.append({"dimension": dim, "alpha": alpha,
                     "mean_rater_srcc": float(loo["srcc"].mean()),
                     "mean_variance": float(sums["variance"].mean()), "n_videos": len(sums)})
    order = {d: i for i, d in enumerate(RATED_DIMENSIONS)}
    table = pd.DataFrame(rows, columns=["dimension", "alpha", "mean_rater_srcc",
                                        "mean_variance", "n_videos"])
    return table.sort_values("dimension", key=lambda s: s.map(order)).reset_index(drop=True)


def overall_consistency(mos: pd.DataFrame) -> dict[str, float] | None:
    """How well the mean of the three learned dimensions predicts ``overall`` (App. D.2).

    Returns PLCC, SRCC and the number of videos, or None when there is no overall MOS.
    """
    wide = mos.pivot_table(index="video_id", columns="dimension", values="mos5")
    if OVERALL not in wide.columns or not set(LEARNED_DIMENSIONS) <= set(wide.columns):
        return None
    wide = wide.dropna(subset=[*LEARNED_DIMENSIONS, OVERALL])
    if len(wide) < 3:
        return None
    mean3 = wide[list(LEARNED_DIMENSIONS)].mean(axis=1)
    return {"plcc": float(stats.pearsonr(mean3, wide[OVERALL]).statistic),
            "srcc": float(stats.spearmanr(mean3, wide[OVERALL]).statistic),
            "n_videos": len(wide)}
