"""Training records (JSONL): one per video and dimension, in the CoT format of Sec. 3.4.1.

A record holds the chat messages (system optional; user: the video, then
``video_context(prompt)`` and ``dimension_question(dimension, fmt)`` in one text item;
assistant: the target), the target ``format_answer(rating, rationale, fmt)``, the MOS on 1–5,
its rating R(s) (Sec. 3.4.2) and the score r = (MOS − 1)/4 that the MSE loss regresses.
The generation prompt and the rationale are user text: both are escaped
(:func:`qsave.prompts.escape_text`), so a control token in them stays text.

Rationale: the video's attribution for the dimension (App. C.1 collects one when MOS < 4),
else the raters' reasons, else a *rationale policy* (a registry; default ``"criteria"``).
The default policy states, for the rating, which of the dimension's three criteria hold:
a video with MOS ≥ 4 has no attribution by design, and its rationale says that the three
criteria show no noticeable defect (Excellent) or at most minor imperfections (Good).
A record whose MOS is below 4 and has no attribution still gets the policy's rationale, and
the build reports a ``missing_attribution`` warning.

>>> policy = get_rationale_policy("criteria")
>>> print(policy(Dimension.DYNAMIC, "Excellent"))  # doctest: +NORMALIZE_WHITESPACE
The dynamic quality meets all three criteria: smoothness, temporal coherence and
physical plausibility show no noticeable defects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from qsave.data.annotations import LEARNED_DIMENSIONS, Problem
from qsave.dimensions import MOS_MAX, MOS_MIN, RATINGS, Dimension, mos_to_rating, mos_to_score
from qsave.errors import AnnotationError
from qsave.jsonl import read_jsonl, write_jsonl
from qsave.prompts import (
    AnswerFormat,
    dimension_question,
    format_answer,
    parse_answer,
    video_context,
)
from qsave.registry import Registry

ATTRIBUTION_BELOW = 4.0  # App. C.1: attributions are collected for MOS < 4

# --- rationale policies (registry) ---------------------------------------------------------
RationalePolicy = Callable[[Dimension, str], str]  # (dimension, rating) → rationale
RATIONALE_POLICIES: Registry[RationalePolicy] = Registry("rationale policy")
register_rationale_policy = RATIONALE_POLICIES.register
get_rationale_policy = RATIONALE_POLICIES.lookup


def _criteria_names(dimension: Dimension) -> str:
    """"sharpness and clarity, artifacts and distortions and aesthetics and composition"."""
    names = [c.split(":", 1)[0].strip().lower() for c in dimension.criteria]
    return f"{', '.join(names[:-1])} and {names[-1]}"


@register_rationale_policy("criteria")
def criteria_rationale(dimension: Dimension, rating: str) -> str:
    """The default: name the dimension's three criteria (Sec. 3.4.1) and grade them."""
    names = _criteria_names(dimension)
    if rating == "Excellent":
        return (f"The {dimension.title} meets all three criteria: {names} show no noticeable "
                "defects.")
    if rating == "Good":
        return (f"The {dimension.title} is good: {names} show no clear defects, with at most "
                "minor imperfections.")
    return (f"The {dimension.title} is {rating.lower()}: it falls short on {names}, "
            "though no specific defect was annotated.")


@register_rationale_policy("brief")
def brief_rationale(dimension: Dimension, rating: str) -> str:
    """One short sentence that only restates the rating."""
    if RATINGS.index(rating) >= RATINGS.index("Good"):
        return f"No noticeable problems in {dimension.title}."
    return f"Noticeable problems in {dimension.title}."


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordConfig:
    """How training records are built (Sec. 3.4)."""

    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST  # stage 1–2; rating-first: cool-off
    rationale_policy: str = "criteria"  # policy for videos without an attribution
    use_rater_reasons: bool = True  # use raters' reasons when there is no attribution
    system: str | None = None  # optional system message
    splits: tuple[str, ...] | None = None  # only videos of these splits; None: all
    dimensions: tuple[str, ...] = LEARNED_DIMENSIONS  # the evaluator learns these three

    def __post_init__(self) -> None:
        object.__setattr__(self, "answer_format", AnswerFormat(self.answer_format))
        get_rationale_policy(self.rationale_policy)
        dims = tuple(Dimension.parse(d).value for d in self.dimensions)
        object.__setattr__(self, "dimensions", dims)
        if self.splits is not None:
            object.__setattr__(self, "splits", tuple(self.splits))


@dataclass
class TrainingRecord:
    """One (video, dimension) training example; its JSON line is ``asdict(record)``."""

    id: str
    video_id: str
    dimension: str
    video: str
    prompt: str | None
    generator: str | None
    split: str | None
    messages: list[dict]
    target: str
    answer_format: str
    rating: str
    mos: float
    score: float
    mos_std: float | None = None
    n_raters: int | None = None
    rationale_source: str = "attribution"
    extra: dict = field(default_factory=dict)


def build_messages(video: str, prompt: str | None, dimension: Dimension, fmt: AnswerFormat,
                   target: str | None = None, system: str | None = None) -> list[dict]:
    """Chat messages of Sec. 3.4.1: [system], user (video item, then text), [assistant]."""
    text = f"{video_context(prompt)}\n{dimension_question(dimension, fmt)}"
    messages: list[dict] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [{"type": "video", "video": video},
                                                 {"type": "text", "text": text}]})
    if target is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return messages


def _attribution(video: Mapping, dim: str, reasons: dict, config: RecordConfig) -> tuple:
    """(rationale, source) from the videos table, then the raters' reasons; else (None, "")."""
    value = video.get(f"attribution_{dim}")
    if isinstance(value, str) and value.strip():
        return value.strip(), "attribution"
    found = reasons.get((video["video_id"], dim)) if config.use_rater_reasons else None
    if found:
        return "; ".join(found) + ".", "rater_reasons"
    return None, ""


def _record(video: Mapping, mos_row: Mapping, reasons: dict, config: RecordConfig,
            problems: list[Problem]) -> TrainingRecord:
    dim = Dimension.parse(mos_row["dimension"])
    mos = float(mos_row["mos5"])
    rating = mos_to_rating(mos)
    rationale, source = _attribution(video, dim.value, reasons, config)
    if rationale is None:
        rationale = get_rationale_policy(config.rationale_policy)(dim, rating)
        source = f"policy:{config.rationale_policy}"
        if mos < ATTRIBUTION_BELOW:
            problems.append(Problem("missing_attribution", f"video {video['video_id']!r} has "
                                    f"{dim.value} MOS {mos:.2f} < {ATTRIBUTION_BELOW} but no "
                                    "attribution; the rationale policy was used", "videos",
                                    video_id=video["video_id"], dimension=dim.value,
                                    severity="warning"))
    fmt = config.answer_format
    target = format_answer(rating, rationale, fmt)
    std, n = mos_row.get("std"), mos_row.get("n_raters")
    return TrainingRecord(
        id=f"{video['video_id']}:{dim.value}", video_id=video["video_id"], dimension=dim.value,
        video=str(video["path"]), prompt=_text(video.get("prompt")),
        generator=_text(video.get("generator")), split=_text(video.get("split")),
        messages=build_messages(str(video["path"]), _text(video.get("prompt")), dim, fmt,
                                target, config.system),
        target=target, answer_format=fmt.value, rating=rating, mos=mos,
        score=mos_to_score(mos), mos_std=None if _nan(std) else float(std),
        n_raters=None if _nan(n) or not n else int(n), rationale_source=source)


def _text(value: object) -> str | None:
    return None if value is None or _nan(value) else str(value)


def _nan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass
class RecordsResult:
    records: list[TrainingRecord]
    problems: list[Problem]


def build_records(videos: pd.DataFrame, mos: pd.DataFrame, config: RecordConfig | None = None,
                  reasons: dict[tuple[str, str], list[str]] | None = None) -> RecordsResult:
    """Training records for every (video, learned dimension) with a MOS (Sec. 3.4).

    ``mos`` is a MOS table with ``mos5`` (see :func:`qsave.data.annotations.compute_mos` or
    :func:`~qsave.data.annotations.mos_from_videos`). A selected video without a MOS for a
    dimension, or a MOS of an unknown video, is reported and gets no record.
    """
    config = config or RecordConfig()
    reasons = reasons or {}
    chosen = videos.drop_duplicates("video_id")
    if config.splits is not None:
        chosen = chosen[chosen["split"].isin(config.splits)]
    wanted = mos[mos["dimension"].isin(config.dimensions)]
    by_key = {(r["video_id"], r["dimension"]): r for r in wanted.to_dict("records")}
    problems = [Problem("unknown_video", f"MOS for video {v!r} which is not in the videos "
                        "table", "mos", video_id=v)
                for v in sorted(set(wanted["video_id"]) - set(videos["video_id"]))]
    records = []
    for video in chosen.to_dict("records"):
        for dim in config.dimensions:
            row = by_key.get((video["video_id"], dim))
            if row is None:
                problems.append(Problem("missing_mos", f"video {video['video_id']!r} has no "
                                        f"{dim} MOS; no record", "videos",
                                        video_id=video["video_id"], dimension=dim))
                continue
            records.append(_record(video, row, reasons, config, problems))
    return RecordsResult(records, problems)


def write_records(records: list[TrainingRecord], path: str | Path,
                  relative_paths: bool = True) -> Path:
    """Write JSONL; with ``relative_paths`` video paths are stored relative to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for record in records:
        row = asdict(record)
        if relative_paths and Path(record.video).is_absolute():
            row = _with_video(row, os.path.relpath(record.video, path.parent.resolve()))
        rows.append(row)
    return write_jsonl(path, rows)


def _with_video(row: dict, video: str) -> dict:
    """The record dictionary with its video reference (field and message item) replaced."""
    for message in row["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and item.get("type") == "video":
                    item["video"] = video
    row["video"] = video
    return row


# --- loading and validation ----------------------------------------------------------------
_REQUIRED = {"id": str, "video_id": str, "dimension": str, "video": str, "messages": list,
             "target": str, "answer_format": str, "rating": str, "mos": (int, float),
             "score": (int, float)}


def validate_record(row: object) -> list[str]:
    """Every problem of one parsed JSON line (empty when it is a valid record)."""
    if not isinstance(row, dict):
        return ["not a JSON object"]
    errors = [f"missing field {k!r}" for k in _REQUIRED if k not in row]
    errors += [f"field {k!r} should be {_type_name(t)}, got {type(row[k]).__name__}"
               for k, t in _REQUIRED.items() if k in row and not _is_type(row[k], t)]
    unknown = set(row) - {f.name for f in TrainingRecord.__dataclass_fields__.values()}
    errors += [f"unknown field {k!r}" for k in sorted(unknown)]
    if errors:
        return errors
    return _semantic_errors(row)


def _is_type(value: object, kind: type | tuple) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _type_name(kind: type | tuple) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _semantic_errors(row: dict) -> list[str]:
    """Dimension, scale, R(s), target format and messages agree with each other."""
    errors = []
    if row["dimension"] not in LEARNED_DIMENSIONS:
        errors.append(f"unknown dimension {row['dimension']!r}")
    try:
        fmt = AnswerFormat(row["answer_format"])
    except ValueError:
        return [*errors, f"unknown answer_format {row['answer_format']!r}"]
    mos = float(row["mos"])
    if not (math.isfinite(mos) and MOS_MIN <= mos <= MOS_MAX):
        return [*errors, f"mos {row['mos']!r} is outside [{MOS_MIN:g}, {MOS_MAX:g}]"]
    if row["rating"] != mos_to_rating(mos):
        errors.append(f"rating {row['rating']!r} is not R({mos:g}) = {mos_to_rating(mos)!r}")
    if not math.isclose(float(row["score"]), mos_to_score(mos), abs_tol=1e-6):
        errors.append(f"score {row['score']!r} is not (mos − 1)/4 = {mos_to_score(mos):g}")
    parsed = parse_answer(row["target"], fmt)
    if not parsed.ok:
        errors.append(f"target is not {fmt.template!r}: {parsed.error}")
    elif parsed.rating != row["rating"]:
        errors.append(f"target rates {parsed.rating!r}, record rating is {row['rating']!r}")
    return errors + _message_errors(row)


def _message_errors(row: dict) -> list[str]:
    messages = row["messages"]
    if not messages or not all(isinstance(m, dict) for m in messages):
        return ["messages must be a non-empty list of objects"]
    roles = [m.get("role") for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        return [f"message roles {roles} are not [system,] user, assistant"]
    errors = []
    user = messages[-2].get("content")
    videos = [i.get("video") for i in user if isinstance(i, dict) and i.get("type") == "video"] \
        if isinstance(user, list) else []
    if videos != [row["video"]]:
        errors.append(f"the user message's video items {videos} are not [{row['video']!r}]")
    answer = messages[-1].get("content")
    texts = [i.get("text") for i in answer if isinstance(i, dict)] \
        if isinstance(answer, list) else [answer]
    if texts != [row["target"]]:
        errors.append("the assistant message is not the target")
    return errors


@dataclass
class LoadedRecords:
    """Valid records and, in lenient mode, ``(line number, message)`` of each bad line."""

    records: list[TrainingRecord]
    errors: list[tuple[int, str]]


def load_records(path: str | Path, lenient: bool = False,
                 check_files: bool = False) -> LoadedRecords:
    """Read and validate a records file; relative video paths resolve against its folder.

    Strict (default): any bad line raises one :class:`AnnotationError` listing every bad
    line with its number. Lenient: the good records plus the errors.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"cannot read records {path}: no such file")
    read = read_jsonl(path)
    records, errors = [], read.issues()
    for number, row in read.rows:
        record, problems = _parse_row(row, path.parent, check_files)
        errors += [(number, p) for p in problems]
        if record is not None:
            records.append(record)
    errors.sort()
    if errors and not lenient:
        listing = "\n".join(f"  line {n}: {m}" for n, m in errors)
        raise AnnotationError(f"{len(errors)} problem(s) in records {path}:\n{listing}")
    return LoadedRecords(records, errors)


def _parse_row(row: dict, base: Path, check_files: bool) -> tuple[TrainingRecord | None, list]:
    problems = validate_record(row)
    if problems:
        return None, problems
    video = row["video"]
    if not Path(video).is_absolute():
        row = _with_video(row, str((base / video).resolve()))
    if check_files and not Path(row["video"]).is_file():
        return None, [f"video file {row['video']} does not exist"]
    return TrainingRecord(**row), []
