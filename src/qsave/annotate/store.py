"""The annotation project: users, videos, assignments, ratings and sessions in SQL (Sec. 3).

A rater passes the paper's workflow (Sec. 3, Fig. 2) as stages: TRAINING (the five levels of
each dimension with the criteria and the owner's example clips), PILOT (the owner's reference
videos, with feedback; a share ``pilot_pass`` within ±1 level passes, else the rater is
PAUSED), FORMAL (project videos until each reaches its split's raters, Sec. 3.3; one gold
video every ``gold_every`` assignments; a rater whose gold ratings fall under ``audit_pass``
is PAUSED until an owner resumes them), DONE (no work left for them).

Storage: SQLAlchemy Core 2.x. The default URL is ``sqlite:///DIR/annotate.sqlite3`` (WAL
journal, a busy timeout, ``BEGIN IMMEDIATE`` for every write). The same tables and statements
run on PostgreSQL, e.g. ``postgresql+psycopg://user:password@host:5432/qsave`` (install a
driver such as ``psycopg``); there a write first updates the ``locks`` row, which serializes
assignment as ``BEGIN IMMEDIATE`` does on SQLite. ``UNIQUE(user_id, video_id)`` on assignments
is the last line against a rater seeing a video twice.

Which ratings are the project's (exported to ``ratings.csv``): formal and gold ratings of
videos whose split is train, test or rl. A gold video that is a project video counts as one
of its raters; a gold video of split ``unused`` and every pilot rating serve the audit and
the pilot only (exported apart, see :mod:`qsave.annotate.export`).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection, Engine

from qsave.annotate import schema as db
from qsave.annotate.config import (
    LEVELS,
    LOW_LEVELS,
    OTHER,
    PROJECT_FILE,
    REASONS,
    AnnotateConfig,
    level_of,
    score_of,
)
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import AnnotateError, AnnotationError, ConfigError

__all__ = ["AnnotateError", "Assignment", "Audit", "DimensionFeedback", "Example", "Feedback",
           "MyRating", "Progress", "Project", "RaterProgress", "RatingInput", "RatingRow",
           "Reference", "ReviewItem", "Role", "Session", "SplitProgress", "Stage",
           "TrainingLevel", "User", "Video"]

DB_FILE = "annotate.sqlite3"
URL_FILE = "database_url.txt"  # the database URL when it is not DB_FILE
DIMENSION_NAMES: tuple[str, ...] = tuple(d.value for d in DIMENSIONS)
PROJECT_SPLITS: tuple[str, ...] = ("train", "test", "rl")  # videos rated for the data set
UNUSED = "unused"  # imported for examples, pilot or gold only; never assigned as work
BUSY_TIMEOUT_MS = 30_000  # SQLite waits this long for another writer
RANGE_SLACK_S = 0.05  # a time range may end this far past the clip's known duration
REFERENCE_USES = ("pilot", "gold")
LEVEL_MEANINGS: dict[str, str] = {  # what each level says about the dimension's criteria
    "Excellent": "every criterion is met; there is nothing to fault",
    "Good": "the criteria are met, with minor flaws that are easy to miss",
    "Fair": "noticeable flaws against at least one criterion",
    "Poor": "clear flaws against several criteria, or a severe one",
    "Bad": "the criteria are broadly failed",
}


class Role(StrEnum):
    OWNER = "owner"
    RATER = "rater"


class Stage(StrEnum):
    TRAINING = "training"
    PILOT = "pilot"
    FORMAL = "formal"
    PAUSED = "paused"
    DONE = "done"  # no work left for this rater (new videos bring them back to FORMAL)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    stage: Stage
    pause_reason: str | None = None  # "pilot" or "audit" while paused


@dataclass(frozen=True)
class Video:
    id: str
    path: Path
    prompt: str | None
    generator: str | None
    split: str  # train, test, rl or unused
    duration_s: float | None = None


@dataclass(frozen=True)
class Assignment:
    id: int
    video: Video
    kind: str  # "pilot" or "formal" (a gold video looks formal to the rater)


@dataclass(frozen=True)
class RatingInput:
    """One dimension's rating as the rater gives it (Fig. 2, steps 1–2)."""

    level: str  # Bad … Excellent
    reasons: tuple[str, ...] = ()  # reason codes of the dimension (REASONS); needed below Good
    text: str = ""  # optional free text; needed with "other"
    start_s: float | None = None  # time range the reason is seen in, seconds
    end_s: float | None = None


@dataclass(frozen=True)
class DimensionFeedback:
    dimension: str
    given: str  # level
    reference: str  # the owner's level
    within_one: bool


@dataclass(frozen=True)
class Feedback:
    """A pilot rating against the owner's reference, and where the pilot round stands."""

    dimensions: tuple[DimensionFeedback, ...]
    passed: bool | None  # None until the pilot round is finished
    rated: int  # pilot videos rated so far
    of: int  # pilot videos in the round
    share: float  # share of the pilot ratings so far within ±1 level of the reference


@dataclass(frozen=True)
class Example:
    video: Video
    note: str


@dataclass(frozen=True)
class TrainingLevel:
    level: str
    meaning: str  # LEVEL_MEANINGS
    criteria: tuple[str, ...]  # the dimension's criteria (qsave.dimensions, Sec. 3.4.1)
    examples: tuple[Example, ...]  # clips the owner marked with this level


@dataclass(frozen=True)
class Reference:
    video_id: str
    use: str  # pilot or gold
    levels: dict[str, str]  # dimension → level


@dataclass(frozen=True)
class MyRating:
    assignment_id: int
    video_id: str
    kind: str  # pilot or formal (gold shown as formal)
    dimension: str
    level: str
    reasons: tuple[str, ...]
    text: str
    start_s: float | None
    end_s: float | None
    submitted_at: float


@dataclass(frozen=True)
class RatingRow:
    """One submitted rating as exported (rater: the user's name)."""

    video_id: str
    rater: str
    dimension: str
    score: int  # 1 (Bad) .. 5 (Excellent)
    reason_labels: tuple[str, ...]  # codes, "other" left out (its text is in ``reason``)
    reason: str
    start_s: float | None
    end_s: float | None
    kind: str  # pilot, formal or gold


@dataclass(frozen=True)
class SplitProgress:
    split: str
    videos: int
    needed: int  # ratings needed: videos × raters of the split
    done: int  # submitted ratings that count (at most the split's raters per video)
    complete: int  # videos with all their raters


@dataclass(frozen=True)
class RaterProgress:
    user: User
    done: int  # formal (and gold) videos rated
    pilot_share: float | None  # within ±1 level of the reference in the pilot round
    gold_rated: int  # gold videos rated since the last resume
    gold_share: float | None  # within ±1 level on those


@dataclass(frozen=True)
class Progress:
    splits: tuple[SplitProgress, ...]
    raters: tuple[RaterProgress, ...]


@dataclass(frozen=True)
class Audit:
    user: User
    gold_rated: int
    within_one: float | None  # None before any gold rating
    paused: bool


@dataclass(frozen=True)
class ReviewItem:
    video_id: str
    dimension: str
    n_raters: int


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: float


_HASHER = PasswordHasher()  # argon2id with argon2-cffi's defaults
_WORK = ("formal", "gold")  # assignment kinds that count as a project video's raters


def _now() -> float:
    return time.time()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _engine(url: str) -> Engine:
    """An engine; on SQLite: WAL, busy timeout, and BEGIN IMMEDIATE for write transactions."""
    engine = sa.create_engine(url)
    if engine.dialect.name != "sqlite":
        return engine

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # transactions are begun below, not by pysqlite
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.info.get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Project:
    """One annotation project: a folder with ``project.json`` and (by default) the SQLite file."""

    def __init__(self, folder: Path, url: str, config: AnnotateConfig) -> None:
        self.folder = Path(folder)
        self.url = url
        self.config = config
        self.engine = _engine(url)

    # --- lifecycle -----------------------------------------------------------------------
    @staticmethod
    def default_url(folder: Path) -> str:
        return f"sqlite:///{Path(folder).resolve() / DB_FILE}"

    @classmethod
    def create(cls, folder: Path, url: str | None = None,
               config: AnnotateConfig | None = None) -> Project:
        """A new project in ``folder``; an existing project there is an error."""
        folder = Path(folder)
        config = config or AnnotateConfig()
        if (folder / PROJECT_FILE).exists():
            raise AnnotateError(f"{folder} already holds an annotation project; open it instead")
        folder.mkdir(parents=True, exist_ok=True)
        url = url or cls.default_url(folder)
        project = cls(folder, url, config)
        db.metadata.create_all(project.engine)
        with project._write() as c:
            if c.execute(sa.select(db.locks.c.name)).first() is None:
                c.execute(sa.insert(db.locks).values(name=db.ASSIGN_LOCK, counter=0))
        config.write(folder)
        if url != cls.default_url(folder):
            (folder / URL_FILE).write_text(url + "\n", encoding="utf-8")
        return project

    @classmethod
    def open(cls, folder: Path, url: str | None = None) -> Project:
        """The project in ``folder``; a folder without one names the commands that make it.

        ``url``: the database, when it is not the folder's SQLite file; without it, the URL
        given at :meth:`create` (kept in ``DIR/database_url.txt``: prefer a URL without a
        password there, e.g. PostgreSQL with a ``~/.pgpass`` file).
        """
        folder = Path(folder)
        if not (folder / PROJECT_FILE).is_file():
            raise AnnotateError(f"no annotation project in {folder}: create one with `qsave "
                                "annotate import --project DIR MANIFEST`")
        try:
            config = AnnotateConfig.read(folder)
        except ConfigError as error:
            raise AnnotateError(str(error)) from error
        url_file = folder / URL_FILE
        if url is None and url_file.is_file():
            url = url_file.read_text(encoding="utf-8").strip()
        if url is None:
            url = cls.default_url(folder)
            if not (folder / DB_FILE).is_file():
                raise AnnotateError(f"{folder} has {PROJECT_FILE} but no database {DB_FILE}")
        return cls(folder, url, config)

    @classmethod
    def open_or_create(cls, folder: Path, config: AnnotateConfig | None = None,
                       url: str | None = None) -> Project:
        folder = Path(folder)
        return cls.open(folder) if (folder / PROJECT_FILE).is_file() else cls.create(
            folder, url=url, config=config)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite, the lock row elsewhere."""
        with self.engine.connect() as connection:
            connection.info["write"] = True
            try:
                with connection.begin():
                    if self.engine.dialect.name != "sqlite":
                        connection.execute(sa.update(db.locks).where(
                            db.locks.c.name == db.ASSIGN_LOCK).values(
                            counter=db.locks.c.counter + 1))
                    yield connection
            finally:
                connection.info["write"] = False

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    # --- users ---------------------------------------------------------------------------
    def add_user(self, name: str, password: str, role: Role | str = Role.RATER) -> User:
        """A new user; the password is stored as an argon2 hash only."""
        name = name.strip()
        if not name or len(name) > 100:
            raise AnnotateError(f"a user name needs 1 to 100 characters, got {name!r}")
        if len(password) < self.config.min_password:
            raise AnnotateError(f"a password needs at least {self.config.min_password} "
                                "characters")
        try:
            role = Role(role)
        except ValueError:
            raise AnnotateError(f"unknown role {role!r}; valid: owner, rater") from None
        stage = Stage.TRAINING if role is Role.RATER else Stage.FORMAL
        hashed = _HASHER.hash(password)
        with self._write() as c:
            if c.execute(sa.select(db.users.c.id).where(db.users.c.name == name)).first():
                raise AnnotateError(f"user {name!r} exists already")
            result = c.execute(sa.insert(db.users).values(
                name=name, role=role.value, stage=stage.value, password_hash=hashed,
                audit_from=0, created_at=_now()))
            return User(int(result.inserted_primary_key[0]), name, role, stage)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password matches (its hash renewed when argon2's settings moved)."""
        with self._read() as c:
            row = c.execute(sa.select(db.users).where(db.users.c.name == name.strip())).first()
        if row is None:
            _HASHER.hash(password)  # the same work as a known name: no timing hint
            return None
        try:
            _HASHER.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if _HASHER.check_needs_rehash(row.password_hash):
            with self._write() as c:
                c.execute(sa.update(db.users).where(db.users.c.id == row.id).values(
                    password_hash=_HASHER.hash(password)))
        return _user(row)

    def user(self, user_id: int) -> User:
        with self._read() as c:
            row = c.execute(sa.select(db.users).where(db.users.c.id == user_id)).first()
        if row is None:
            raise AnnotateError(f"no user with id {user_id}")
        return _user(row)

    def user_by_name(self, name: str) -> User | None:
        with self._read() as c:
            row = c.execute(sa.select(db.users).where(db.users.c.name == name.strip())).first()
        return None if row is None else _user(row)

    def users(self, role: Role | str | None = None) -> list[User]:
        query = sa.select(db.users).order_by(db.users.c.id)
        if role is not None:
            query = query.where(db.users.c.role == Role(role).value)
        with self._read() as c:
            return [_user(row) for row in c.execute(query)]

    # --- videos, examples, references ----------------------------------------------------
    def import_videos(self, table_path: Path) -> int:
        """Add the videos of a videos table (``qsave.data.annotations.load_videos``); returns
        how many are new. Idempotent by video_id; a known id with another path, prompt,
        generator or split is an error, as is a video without a split."""
        rows = _read_videos(Path(table_path))
        with self._write() as c:
            known = {r.id: r for r in c.execute(sa.select(db.videos))}
            seq = max((r.seq for r in known.values()), default=0)
            new = []
            for row in rows:
                if row["id"] in known:
                    _check_same(known[row["id"]], row, table_path)
                    continue
                seq += 1
                new.append({**row, "seq": seq})
            if new:
                c.execute(sa.insert(db.videos), new)
        return len(new)

    def video(self, video_id: str) -> Video:
        with self._read() as c:
            return self._video(c, video_id)

    def videos(self) -> list[Video]:
        with self._read() as c:
            return [_video(r) for r in c.execute(sa.select(db.videos).order_by(db.videos.c.seq))]

    def set_example(self, video_id: str, dimension: str, level: str, note: str = "") -> None:
        """Mark ``video_id`` as a training example of ``level`` in ``dimension`` (owner)."""
        dimension, score = _dimension(dimension), score_of(level)
        with self._write() as c:
            self._video(c, video_id)
            key = (db.examples.c.video_id == video_id) & (db.examples.c.dimension == dimension)
            c.execute(sa.delete(db.examples).where(key))
            c.execute(sa.insert(db.examples).values(video_id=video_id, dimension=dimension,
                                                    score=score, note=note))

    def set_reference(self, video_id: str, levels: Mapping[str, str], use: str) -> None:
        """The owner's reference ratings of a video (every dimension), for the pilot or gold."""
        if use not in REFERENCE_USES:
            raise AnnotateError(f"unknown reference use {use!r}; valid: pilot, gold")
        scores = {_dimension(d): score_of(level) for d, level in levels.items()}
        missing = [d for d in DIMENSION_NAMES if d not in scores]
        if missing:
            raise AnnotateError(f"reference of {video_id!r} lacks {', '.join(missing)}")
        with self._write() as c:
            self._video(c, video_id)
            c.execute(sa.delete(db.references).where(db.references.c.video_id == video_id))
            c.execute(sa.insert(db.references), [
                {"video_id": video_id, "dimension": d, "score": s, "use": use}
                for d, s in scores.items()])

    def references(self) -> list[Reference]:
        with self._read() as c:
            rows = c.execute(sa.select(db.references, db.videos.c.seq).join(db.videos).order_by(
                db.videos.c.seq, db.references.c.dimension)).all()
        found: dict[str, Reference] = {}
        for row in rows:
            ref = found.setdefault(row.video_id, Reference(row.video_id, row.use, {}))
            ref.levels[row.dimension] = level_of(row.score)
        return list(found.values())

    def training(self, dimension: str) -> list[TrainingLevel]:
        """The training page of a dimension: each level (Bad … Excellent), what it means, the
        dimension's criteria and the owner's example clips."""
        dim = Dimension.parse(_dimension(dimension))
        with self._read() as c:
            rows = c.execute(sa.select(db.examples, db.videos).join(db.videos).where(
                db.examples.c.dimension == dim.value).order_by(db.videos.c.seq)).all()
        return [TrainingLevel(level, LEVEL_MEANINGS[level], dim.criteria, tuple(
            Example(_video(r), r.note) for r in rows if r.score == score_of(level)))
            for level in LEVELS]

    # --- the workflow --------------------------------------------------------------------
    def finish_training(self, user: User) -> User:
        """TRAINING → PILOT (a rater past training keeps their stage)."""
        with self._write() as c:
            row = self._rater_row(c, user)
            if row.stage == Stage.TRAINING:
                c.execute(sa.update(db.users).where(db.users.c.id == row.id).values(
                    stage=Stage.PILOT.value))
        return self.user(user.id)

    def next_assignment(self, user: User) -> Assignment | None:
        """The rater's open assignment, else a new one; None when there is no work for them.

        PILOT: the next video of the pilot round; FORMAL: a gold video every ``gold_every``
        assignments, else the first project video (import order) that the rater has not seen
        and that has fewer raters than its split needs (submitted ratings and assignments
        younger than ``assignment_hours``). Serialized with every other write.
        """
        with self._write() as c:
            row = self._rater_row(c, user)
            held = c.execute(sa.select(db.assignments).where(
                (db.assignments.c.user_id == row.id)
                & db.assignments.c.submitted_at.is_(None))).first()
            if held is not None:
                return Assignment(held.id, self._video(c, held.video_id), _shown(held.kind))
            if row.stage == Stage.PILOT:
                video_id, kind = self._next_pilot(c, row.id), "pilot"
            elif row.stage in (Stage.FORMAL, Stage.DONE):
                video_id, kind = self._next_formal(c, row.id)
                stage = Stage.DONE if video_id is None else Stage.FORMAL
                c.execute(sa.update(db.users).where(db.users.c.id == row.id).values(
                    stage=stage.value))
            else:
                return None
            if video_id is None:
                return None
            result = c.execute(sa.insert(db.assignments).values(
                user_id=row.id, video_id=video_id, kind=kind, created_at=_now()))
            return Assignment(int(result.inserted_primary_key[0]), self._video(c, video_id),
                              _shown(kind))

    def submit(self, user: User, assignment_id: int,
               ratings: Mapping[str, RatingInput]) -> Feedback | None:
        """Store the ratings of a held assignment (every dimension). A pilot rating returns
        :class:`Feedback`; a gold rating runs the audit. Submitting twice is an error and the
        first rating is kept."""
        with self._write() as c:
            held = c.execute(sa.select(db.assignments).where(
                db.assignments.c.id == assignment_id)).first()
            if held is None or held.user_id != user.id:
                raise AnnotateError(f"assignment {assignment_id} is not held by {user.name!r}")
            if held.submitted_at is not None:
                raise AnnotateError(f"assignment {assignment_id} was submitted already; the "
                                    "first rating is kept")
            video = self._video(c, held.video_id)
            rows = [_rating_row(assignment_id, d, r, video, self.config)
                    for d, r in _complete(ratings).items()]
            done = c.execute(sa.update(db.assignments).where(
                (db.assignments.c.id == assignment_id)
                & db.assignments.c.submitted_at.is_(None)).values(submitted_at=_now()))
            if done.rowcount != 1:
                raise AnnotateError(f"assignment {assignment_id} was submitted already")
            c.execute(sa.insert(db.ratings), rows)
            if held.kind == "pilot":
                return self._pilot_feedback(c, user.id, assignment_id)
            self._audit(c, user.id)
            return None

    # --- what a user may see -------------------------------------------------------------
    def can_view(self, user: User, video_id: str) -> bool:
        """Owners see every video; a rater the videos of their assignments and the examples."""
        with self._read() as c:
            fresh = c.execute(sa.select(db.users).where(db.users.c.id == user.id)).first()
            if fresh is None:
                return False
            if fresh.role == Role.OWNER:
                return c.execute(sa.select(db.videos.c.id).where(
                    db.videos.c.id == video_id)).first() is not None
            held = sa.select(db.assignments.c.id).where(
                (db.assignments.c.user_id == user.id) & (db.assignments.c.video_id == video_id))
            example = sa.select(db.examples.c.video_id).where(
                db.examples.c.video_id == video_id)
            return (c.execute(held).first() or c.execute(example).first()) is not None

    def my_ratings(self, user: User) -> list[MyRating]:
        """The user's own submitted ratings, oldest first (gold shown as formal)."""
        a, r = db.assignments, db.ratings
        with self._read() as c:
            rows = c.execute(sa.select(a, r).join(r, r.c.assignment_id == a.c.id).where(
                a.c.user_id == user.id).order_by(a.c.submitted_at, a.c.id)).all()
        rows = sorted(rows, key=lambda x: (x.submitted_at, x.id,
                                           DIMENSION_NAMES.index(x.dimension)))
        return [MyRating(row.assignment_id, row.video_id, _shown(row.kind), row.dimension,
                         level_of(row.score), _codes(row.reason_labels), row.reason,
                         row.start_s, row.end_s, row.submitted_at) for row in rows]

    # --- the owner's view ----------------------------------------------------------------
    def rating_rows(self, which: str = "project") -> list[RatingRow]:
        """Submitted ratings: ``"project"`` (formal and gold ratings of train/test/rl
        videos: the data set) or ``"calibration"`` (pilot ratings, and gold ratings of videos
        outside the project splits)."""
        a, r, v, u = db.assignments, db.ratings, db.videos, db.users
        project = a.c.kind.in_(_WORK) & v.c.split.in_(PROJECT_SPLITS)
        if which not in ("project", "calibration"):
            raise AnnotateError(f"unknown rating set {which!r}; valid: project, calibration")
        query = (sa.select(a.c.video_id, a.c.kind, u.c.name, r).select_from(
            a.join(r, r.c.assignment_id == a.c.id).join(v, v.c.id == a.c.video_id).join(
                u, u.c.id == a.c.user_id))
            .where(project if which == "project" else ~project)
            .order_by(v.c.seq, u.c.name, r.c.dimension))
        with self._read() as c:
            return [RatingRow(row.video_id, row.name, row.dimension, row.score,
                              tuple(x for x in _codes(row.reason_labels) if x != OTHER),
                              row.reason, row.start_s, row.end_s, row.kind)
                    for row in c.execute(query)]

    def progress(self) -> Progress:
        """Per split: videos, ratings needed and done; per rater: stage, done, agreement."""
        with self._read() as c:
            counts = self._rater_counts(c)
            videos = c.execute(sa.select(db.videos.c.id, db.videos.c.split).where(
                db.videos.c.split.in_(PROJECT_SPLITS))).all()
            splits = []
            for split in PROJECT_SPLITS:
                need = self.config.raters_needed(split)
                mine = [min(counts.get(v.id, 0), need) for v in videos if v.split == split]
                splits.append(SplitProgress(split, len(mine), need * len(mine), sum(mine),
                                            sum(n == need for n in mine)))
            raters = []
            for row in c.execute(sa.select(db.users).where(
                    db.users.c.role == Role.RATER.value).order_by(db.users.c.id)).all():
                gold_videos, gold_share = self._gold_stats(c, row.id, row.audit_from)
                raters.append(RaterProgress(_user(row), self._done(c, row.id),
                                            self._pilot_stats(c, row.id)[1], gold_videos,
                                            gold_share))
        return Progress(tuple(splits), tuple(raters))

    def agreement(self) -> dict[str, float]:
        """Krippendorff's interval alpha per dimension over the project's ratings (NaN when
        no video has two ratings)."""
        from qsave.data.annotations import krippendorff_alpha

        units: dict[tuple[str, str], list[float]] = {}
        for row in self.rating_rows("project"):
            units.setdefault((row.dimension, row.video_id), []).append(row.score)
        return {d: krippendorff_alpha([s for (dim, _), s in units.items() if dim == d])
                for d in DIMENSION_NAMES}

    def audits(self) -> list[Audit]:
        """Each rater's gold record since their last resume, and whether they are paused."""
        with self._read() as c:
            rows = c.execute(sa.select(db.users).where(
                db.users.c.role == Role.RATER.value).order_by(db.users.c.id)).all()
            return [Audit(_user(r), *self._gold_stats(c, r.id, r.audit_from),
                          r.stage == Stage.PAUSED) for r in rows]

    def paused(self) -> list[User]:
        return [u for u in self.users(Role.RATER) if u.stage is Stage.PAUSED]

    def resume(self, user: User) -> User:
        """A paused rater back to FORMAL (owner); the audit counts gold from here on."""
        with self._write() as c:
            row = self._rater_row(c, user)
            if row.stage != Stage.PAUSED:
                raise AnnotateError(f"rater {row.name!r} is not paused (stage {row.stage})")
            last = c.execute(sa.select(sa.func.max(db.assignments.c.id))).scalar() or 0
            c.execute(sa.update(db.users).where(db.users.c.id == row.id).values(
                stage=Stage.FORMAL.value, pause_reason=None, audit_from=last))
        return self.user(user.id)

    def review_queue(self) -> list[ReviewItem]:
        """Every (video, dimension) of the project whose ratings are complete (its split's
        raters) and all Excellent (App. C.1: perfect-score videos go to an expert review)."""
        found: dict[tuple[str, str], list[int]] = {}
        for row in self.rating_rows("project"):
            found.setdefault((row.video_id, row.dimension), []).append(row.score)
        split = {v.id: v.split for v in self.videos()}
        top = len(LEVELS)
        return [ReviewItem(v, d, len(s)) for (v, d), s in found.items()
                if min(s) == top and len(s) >= self.config.raters_needed(split[v])]

    # --- sessions ------------------------------------------------------------------------
    def create_session(self, user: User) -> tuple[str, str]:
        """A new login: (token for the cookie, CSRF token); only the token's sha256 is kept."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = _now()
        with self._write() as c:
            c.execute(sa.delete(db.sessions).where(db.sessions.c.expires_at <= now))
            c.execute(sa.insert(db.sessions).values(
                token_hash=_token_hash(token), user_id=user.id, csrf_token=csrf,
                expires_at=now + self.config.session_hours * 3600))
        return token, csrf

    def session(self, token: str) -> Session | None:
        """The live session of a cookie token (None when unknown or expired)."""
        s, u = db.sessions, db.users
        with self._read() as c:
            row = c.execute(sa.select(s.c.csrf_token, s.c.expires_at, u).join(
                u, u.c.id == s.c.user_id).where(s.c.token_hash == _token_hash(token))).first()
        if row is None or row.expires_at <= _now():
            return None
        return Session(_user(row), row.csrf_token, row.expires_at)

    def end_session(self, token: str) -> None:
        with self._write() as c:
            c.execute(sa.delete(db.sessions).where(db.sessions.c.token_hash ==
                                                   _token_hash(token)))

    # --- internals -----------------------------------------------------------------------
    def _video(self, c: Connection, video_id: str) -> Video:
        row = c.execute(sa.select(db.videos).where(db.videos.c.id == video_id)).first()
        if row is None:
            raise AnnotateError(f"unknown video {video_id!r}")
        return _video(row)

    def _rater_row(self, c: Connection, user: User) -> sa.Row:
        row = c.execute(sa.select(db.users).where(db.users.c.id == user.id)).first()
        if row is None:
            raise AnnotateError(f"no user with id {user.id}")
        if row.role != Role.RATER:
            raise AnnotateError(f"{row.name!r} is an owner; only raters rate")
        return row

    def _seen(self, user_id: int) -> sa.Select:
        return sa.select(db.assignments.c.video_id).where(db.assignments.c.user_id == user_id)

    def _pilot_round(self, c: Connection) -> list[str]:
        """The pilot round: the first ``pilot_size`` pilot reference videos (import order)."""
        r, v = db.references, db.videos
        rows = c.execute(sa.select(v.c.id).where(v.c.id.in_(sa.select(r.c.video_id).where(
            r.c.use == "pilot"))).order_by(v.c.seq).limit(self.config.pilot_size)).all()
        return [row.id for row in rows]

    def _next_pilot(self, c: Connection, user_id: int) -> str | None:
        round_ = self._pilot_round(c)
        if not round_:
            raise AnnotateError("the pilot round has no reference videos yet: an owner marks "
                                "them (reference ratings with use 'pilot')")
        seen = set(c.execute(self._seen(user_id)).scalars())
        return next((v for v in round_ if v not in seen), None)

    def _next_formal(self, c: Connection, user_id: int) -> tuple[str | None, str]:
        """(video, kind) of the next formal assignment; (None, "") when no work is left."""
        v, a = db.videos, db.assignments
        fresh = _now() - self.config.assignment_hours * 3600  # older open ones hold no slot
        taken = (sa.select(a.c.video_id, sa.func.count().label("n"))
                 .where(a.c.kind.in_(_WORK) & (a.c.submitted_at.is_not(None)
                                               | (a.c.created_at > fresh)))
                 .group_by(a.c.video_id).subquery())
        need = sa.case({s: self.config.raters_needed(s) for s in PROJECT_SPLITS},
                       value=v.c.split, else_=0)
        regular = c.execute(sa.select(v.c.id).select_from(
            v.outerjoin(taken, taken.c.video_id == v.c.id)).where(
            v.c.split.in_(PROJECT_SPLITS) & v.c.id.not_in(self._seen(user_id))
            & (sa.func.coalesce(taken.c.n, 0) < need)).order_by(v.c.seq).limit(1)).first()
        if regular is None:
            return None, ""
        count = c.execute(sa.select(sa.func.count()).where(
            (a.c.user_id == user_id) & a.c.kind.in_(_WORK))).scalar() or 0
        if self.config.gold_every and (count + 1) % self.config.gold_every == 0:
            gold = c.execute(sa.select(v.c.id).where(v.c.id.in_(sa.select(
                db.references.c.video_id).where(db.references.c.use == "gold"))
                & v.c.id.not_in(self._seen(user_id))).order_by(v.c.seq).limit(1)).first()
            if gold is not None:
                return gold.id, "gold"
        return regular.id, "formal"

    def _compared(self, c: Connection, user_id: int, kinds: tuple[str, ...], use: str,
                  after: int = 0) -> list[sa.Row]:
        """(video_id, assignment_id, dimension, given score, reference score) of the user's
        submitted ratings of ``kinds`` on videos with a ``use`` reference."""
        a, r, ref = db.assignments, db.ratings, db.references
        return c.execute(sa.select(a.c.video_id, a.c.id, r.c.dimension, r.c.score,
                                   ref.c.score.label("reference")).select_from(
            a.join(r, r.c.assignment_id == a.c.id).join(
                ref, (ref.c.video_id == a.c.video_id) & (ref.c.dimension == r.c.dimension)))
            .where((a.c.user_id == user_id) & a.c.kind.in_(kinds) & (ref.c.use == use)
                   & (a.c.id > after))).all()

    def _pilot_stats(self, c: Connection, user_id: int) -> tuple[int, float | None]:
        rows = self._compared(c, user_id, ("pilot",), "pilot")
        return len({r.video_id for r in rows}), _share(rows)

    def _gold_stats(self, c: Connection, user_id: int, after: int) -> tuple[int, float | None]:
        rows = self._compared(c, user_id, _WORK, "gold", after)
        return len({r.video_id for r in rows}), _share(rows)

    def _pilot_feedback(self, c: Connection, user_id: int, assignment_id: int) -> Feedback:
        rows = self._compared(c, user_id, ("pilot",), "pilot")
        mine = sorted((r for r in rows if r.id == assignment_id),
                      key=lambda r: DIMENSION_NAMES.index(r.dimension))
        items = tuple(DimensionFeedback(r.dimension, level_of(r.score), level_of(r.reference),
                                        abs(r.score - r.reference) <= 1) for r in mine)
        rated, of = len({r.video_id for r in rows}), len(self._pilot_round(c))
        share = _share(rows) or 0.0
        passed = None
        if rated >= of:
            passed = share >= self.config.pilot_pass
            if passed:
                c.execute(sa.update(db.users).where(db.users.c.id == user_id).values(
                    stage=Stage.FORMAL.value))
            else:
                self._pause(c, user_id, "pilot")
        return Feedback(items, passed, rated, of, share)

    def _audit(self, c: Connection, user_id: int) -> None:
        """Pause the rater when enough gold is rated and too little of it within ±1 level."""
        after = c.execute(sa.select(db.users.c.audit_from).where(
            db.users.c.id == user_id)).scalar() or 0
        rated, share = self._gold_stats(c, user_id, after)
        if rated >= self.config.audit_min_gold and share is not None \
                and share < self.config.audit_pass:
            self._pause(c, user_id, "audit")

    def _pause(self, c: Connection, user_id: int, reason: str) -> None:
        """PAUSED, and any open assignment released for other raters."""
        c.execute(sa.update(db.users).where(db.users.c.id == user_id).values(
            stage=Stage.PAUSED.value, pause_reason=reason))
        c.execute(sa.delete(db.assignments).where(
            (db.assignments.c.user_id == user_id) & db.assignments.c.submitted_at.is_(None)))

    def _rater_counts(self, c: Connection) -> dict[str, int]:
        """Submitted formal and gold assignments per video."""
        a = db.assignments
        return dict(c.execute(sa.select(a.c.video_id, sa.func.count()).where(
            a.c.kind.in_(_WORK) & a.c.submitted_at.is_not(None)).group_by(a.c.video_id)).all())

    def _done(self, c: Connection, user_id: int) -> int:
        a = db.assignments
        return c.execute(sa.select(sa.func.count()).where(
            (a.c.user_id == user_id) & a.c.kind.in_(_WORK)
            & a.c.submitted_at.is_not(None))).scalar() or 0


# --- rows and checks ---------------------------------------------------------------------
def _user(row: sa.Row) -> User:
    return User(row.id, row.name, Role(row.role), Stage(row.stage), row.pause_reason)


def _video(row: sa.Row) -> Video:
    return Video(row.id, Path(row.path), row.prompt, row.generator, row.split, row.duration_s)


def _shown(kind: str) -> str:
    """The kind a rater sees: gold looks formal."""
    return "pilot" if kind == "pilot" else "formal"


def _codes(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(";") if x)


def _share(rows: list[sa.Row]) -> float | None:
    """Share of the rows whose score is within one level of the reference."""
    if not rows:
        return None
    return sum(abs(r.score - r.reference) <= 1 for r in rows) / len(rows)


def _dimension(name: str) -> str:
    if name not in DIMENSION_NAMES:
        raise AnnotateError(f"unknown dimension {name!r}; valid: {', '.join(DIMENSION_NAMES)}")
    return name


def _complete(ratings: Mapping[str, RatingInput]) -> dict[str, RatingInput]:
    """The ratings of exactly the three dimensions."""
    for name in ratings:
        _dimension(name)
    missing = [d for d in DIMENSION_NAMES if d not in ratings]
    if missing:
        raise AnnotateError(f"a rating is needed for {', '.join(missing)}")
    return {d: ratings[d] for d in DIMENSION_NAMES}


def _rating_row(assignment_id: int, dimension: str, rating: RatingInput, video: Video,
                config: AnnotateConfig) -> dict[str, object]:
    """The ratings-table row of one dimension's input; every problem is an AnnotateError."""
    score = score_of(rating.level)
    reasons = tuple(dict.fromkeys(rating.reasons))
    unknown = [r for r in reasons if r not in REASONS[dimension]]
    if unknown:
        raise AnnotateError(f"unknown reason code(s) {', '.join(map(repr, unknown))} for "
                            f"{dimension}; valid: {', '.join(REASONS[dimension])}")
    if rating.level in LOW_LEVELS and not reasons:
        raise AnnotateError(f"a {rating.level} {dimension} rating needs a reason: one of "
                            f"{', '.join(REASONS[dimension])}")
    if reasons and rating.level not in LOW_LEVELS:
        raise AnnotateError(f"reasons are given for Bad, Poor or Fair only; the {dimension} "
                            f"rating is {rating.level}")
    if OTHER in reasons and not rating.text.strip():
        raise AnnotateError(f"the reason 'other' for {dimension} needs a description")
    if len(rating.text) > config.max_free_text:
        raise AnnotateError(f"the {dimension} text has {len(rating.text)} characters; the "
                            f"limit is {config.max_free_text}")
    _check_range(dimension, rating.start_s, rating.end_s, video.duration_s)
    return {"assignment_id": assignment_id, "dimension": dimension, "score": score,
            "reason_labels": ";".join(reasons), "reason": rating.text.strip(),
            "start_s": rating.start_s, "end_s": rating.end_s}


def _check_range(dimension: str, start: float | None, end: float | None,
                 duration: float | None) -> None:
    if start is None and end is None:
        return
    if start is None or end is None:
        raise AnnotateError(f"the {dimension} time range needs both start and end, or neither")
    if not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start < end:
        raise AnnotateError(f"the {dimension} time range [{start}, {end}] is invalid: it "
                            "needs 0 ≤ start < end (seconds)")
    if duration is not None and end > duration + RANGE_SLACK_S:
        raise AnnotateError(f"the {dimension} time range [{start}, {end}] ends after the "
                            f"clip ({duration:g} s)")


def _check_same(known: sa.Row, row: dict[str, object], table: Path) -> None:
    """A video imported again must match what is stored."""
    for field in ("path", "prompt", "generator", "split"):
        if known._mapping[field] != row[field]:
            why = ("a video keeps its split (Sec. 3.3: raters are counted per split)"
                   if field == "split" else "a video id names one clip: give another clip a "
                   "new id")
            raise AnnotateError(f"video {known.id!r} is in the project with {field} "
                                f"{known._mapping[field]!r}; {table} gives {row[field]!r}: "
                                f"{why}")


def _read_videos(path: Path) -> list[dict[str, object]]:
    """The rows of a videos table to import; a missing split names `qsave data split`."""
    from qsave.data.annotations import check_videos, load_videos, read_table

    try:
        table, columns = load_videos(path), read_table(path).columns
    except AnnotationError as error:
        raise AnnotateError(f"cannot import {path}: {error}") from error
    if "split" not in columns:
        raise AnnotateError(f"{path} has no split column: assign train/test/rl first with "
                            f"`qsave data split --videos {path} --out VIDEOS.csv` (Sec. 3.3)")
    problems = check_videos(table)
    unsplit = table.loc[table["split"].isna(), "video_id"].tolist()
    if unsplit:
        problems = [f"{len(unsplit)} video(s) without a split, e.g. {unsplit[:5]}: run "
                    "`qsave data split` on the table first", *map(str, problems)]
    if problems:
        raise AnnotateError(f"cannot import {path}:\n  " + "\n  ".join(map(str, problems)))
    missing = [p for p in table["path"] if not Path(p).is_file()]
    if missing:
        raise AnnotateError(f"{len(missing)} video file(s) of {path} do not exist, e.g. "
                            f"{missing[:3]}")
    seconds = table["seconds"] if "seconds" in table.columns else [None] * len(table)
    return [{"id": row.video_id, "path": str(row.path), "prompt": _text(row.prompt),
             "generator": _text(row.generator), "split": row.split,
             "duration_s": _duration(Path(row.path), known)}
            for row, known in zip(table.itertuples(), seconds, strict=True)]


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip() or None


def _duration(path: Path, known: object) -> float | None:
    """The clip's duration: the table's ``seconds`` when given, else what the container says."""
    try:
        value = float(known)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / av.time_base
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, OSError) as error:
        raise AnnotateError(f"cannot open video {path}: {error}") from error
    return None
