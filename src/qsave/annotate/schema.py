"""The tables of an annotation project (SQLAlchemy Core; portable SQL for SQLite and PostgreSQL).

Times are seconds since the epoch (``Float``), levels are stored as their 1..5 score, reason
codes as ``;``-joined text (the ``reason_labels`` format of ``qsave data``). No dialect-specific
type or syntax is used, so the same metadata creates the schema on either database.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(10), nullable=False),  # Role: owner, rater
    Column("stage", String(10), nullable=False),  # Stage: training, pilot, formal, paused, done
    Column("password_hash", String(200), nullable=False),  # argon2, never the password
    Column("pause_reason", String(20)),  # "pilot" or "audit" while paused
    Column("audit_from", Integer, nullable=False, default=0),  # audit gold after this assignment
    Column("created_at", Float, nullable=False),
)

videos = Table(
    "videos", metadata,
    Column("id", String(200), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),  # import order: assignment order
    Column("path", Text, nullable=False),
    Column("prompt", Text),
    Column("generator", String(200)),
    Column("split", String(10), nullable=False),  # train, test, rl (project videos) or unused
    Column("duration_s", Float),  # None when unknown: time ranges are not bounded above
)

examples = Table(  # training clips the owner marks: one level per (video, dimension)
    "examples", metadata,
    Column("video_id", String(200), ForeignKey("videos.id"), primary_key=True),
    Column("dimension", String(20), primary_key=True),
    Column("score", Integer, nullable=False),
    Column("note", Text, nullable=False, default=""),
)

references = Table(  # the owner's reference ratings: pilot round or gold (audit) videos
    "reference_ratings", metadata,
    Column("video_id", String(200), ForeignKey("videos.id"), primary_key=True),
    Column("dimension", String(20), primary_key=True),
    Column("score", Integer, nullable=False),
    Column("use", String(10), nullable=False),  # pilot or gold (one per video)
)

assignments = Table(
    "assignments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("video_id", String(200), ForeignKey("videos.id"), nullable=False),
    Column("kind", String(10), nullable=False),  # pilot, formal, gold (shown as formal)
    Column("created_at", Float, nullable=False),
    Column("submitted_at", Float),  # None while open
    UniqueConstraint("user_id", "video_id", name="one_view_per_rater"),  # never twice
)

ratings = Table(
    "ratings", metadata,
    Column("assignment_id", Integer, ForeignKey("assignments.id"), primary_key=True),
    Column("dimension", String(20), primary_key=True),
    Column("score", Integer, nullable=False),  # 1 (Bad) .. 5 (Excellent)
    Column("reason_labels", Text, nullable=False, default=""),  # ';'-joined reason codes
    Column("reason", Text, nullable=False, default=""),  # free text
    Column("start_s", Float),
    Column("end_s", Float),
)

sessions = Table(
    "sessions", metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie token
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

locks = Table(  # one row per lock; updating it serializes writers on PostgreSQL too
    "locks", metadata,
    Column("name", String(20), primary_key=True),
    Column("counter", Integer, nullable=False, default=0),
)
ASSIGN_LOCK = "assign"
