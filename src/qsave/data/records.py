"""Training records (JSONL): one per video and dimension, in the CoT format of Sec. 3.4.1.

A record holds the chat messages (system optional; user: the video, then
``video_context(prompt)`` and ``dimension_question(dimension, fmt)`` in one text item;
assistant: the target), the target ``format_answer(rating, rationale, fmt)``, the MOS on 1–5,
its rating R(s) (Sec. 3.4.2) and the score r = (MOS − 1)/4 that the MSE loss regresses.
The generation prompt and the rationale are user text: both are escaped
(:func:`qsave.prompts.escape_text`), so a control token in them stays text.

The rationale carries evidence, never the label: the rating is read after it in the
think-first format, so a text that gave the rating away would teach a shortcut. It comes from
(``rationale_source``):

- MOS ≥ 4 (``strengths``): the describer's account of what the clip shows well, from its
  scene or prompt. These videos have no attribution by design (App. C.1), and an attribution
  or reasons given anyway are not used, so Good and Excellent get the same kind of text;
- MOS < 4: the video's attribution (``attribution``), else the raters' reasons turned into
  sentences by the describer (``rater_reasons``, Fig. 2 step 3), else the labelled defects of a
  synthetic manifest (``labelled_defects``), else a sentence that the dimension falls short
  (``unannotated``) and a ``missing_attribution`` warning.

The describer is ``RecordConfig.describer`` (:mod:`qsave.data.describe`; default
``"template"``). A rationale that names a rating word is reported (``rating_word`` warning).

>>> videos = pd.DataFrame([{"video_id": "v", "path": "v.mp4", "prompt": "A red kite rises."}])
>>> mos = pd.DataFrame({"video_id": ["v", "v"], "dimension": ["visual", "dynamic"],
...                     "mos5": [4.1, 2.0]})
>>> built = build_records(videos, mos, reasons={("v", "dynamic"): ["stutter"]})
>>> for record in built.records:  # doctest: +ELLIPSIS
...     print(record.rating, record.rationale_source, record.target)
Good strengths <think>The frames of "A red kite rises" are crisp, ...</think>Good
Poor rater_reasons <think>The subject stutters instead of moving smoothly.</think>Poor
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from qsave.data.annotations import LEARNED_DIMENSIONS, Problem
from qsave.data.describe import (
    DESCRIBERS,
    Clip,
    Describer,
    Reason,
    defect_reasons,
    make_describer,
    no_reason_given,
    rating_words,
)
from qsave.dimensions import MOS_MAX, MOS_MIN, Dimension, mos_to_rating, mos_to_score
from qsave.errors import AnnotationError
from qsave.jsonl import read_jsonl, write_jsonl
from qsave.prompts import (
    AnswerFormat,
    dimension_question,
    format_answer,
    parse_answer,
    video_context,
)

ATTRIBUTION_BELOW = 4.0  # App. C.1: attributions are collected for MOS < 4


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordConfig:
    """How training records are built (Sec. 3.4)."""

    answer_format: AnswerFormat = AnswerFormat.THINK_FIRST  # stage 1–2; rating-first: cool-off
    describer: str = "template"  # reasons / clip attributes → rationale (describe.DESCRIBERS)
    use_rater_reasons: bool = True  # use raters' reasons when there is no attribution
    system: str | None = None  # optional system message
    splits: tuple[str, ...] | None = None  # only videos of these splits; None: all
    dimensions: tuple[str, ...] = LEARNED_DIMENSIONS  # the evaluator learns these three

    def __post_init__(self) -> None:
        object.__setattr__(self, "answer_format", AnswerFormat(self.answer_format))
        DESCRIBERS.lookup(self.describer)
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
    rationale_source: str = "attribution"  # or strengths, rater_reasons, labelled_defects, …
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


def _rationale(video: Mapping, dim: Dimension, mos: float, reasons: dict,
               config: RecordConfig, describer: Describer) -> tuple[str | None, str]:
    """(rationale, source) in the order of the module docstring; (None, "") when a video with
    MOS < 4 has neither an attribution, nor reasons, nor labelled defects."""
    clip = Clip.from_row(video)
    if mos >= ATTRIBUTION_BELOW:
        return describer(dim, (), clip), "strengths"
    value = video.get(f"attribution_{dim.value}")
    if isinstance(value, str) and value.strip():
        return value.strip(), "attribution"
    given = reasons.get((video["video_id"], dim.value)) if config.use_rater_reasons else None
    if given:
        return describer(dim, [Reason(r) for r in given], clip), "rater_reasons"
    labelled = defect_reasons(video.get("defects"), dim)
    if labelled:
        return describer(dim, labelled, clip), "labelled_defects"
    return None, ""


def _record(video: Mapping, mos_row: Mapping, reasons: dict, config: RecordConfig,
            describer: Describer, problems: list[Problem]) -> TrainingRecord:
    dim = Dimension.parse(mos_row["dimension"])
    mos = float(mos_row["mos5"])
    rating = mos_to_rating(mos)
    rationale, source = _rationale(video, dim, mos, reasons, config, describer)
    where = {"table": "videos", "video_id": video["video_id"], "dimension": dim.value,
             "severity": "warning"}
    if rationale is None:
        rationale, source = no_reason_given(dim), "unannotated"
        problems.append(Problem("missing_attribution", f"video {video['video_id']!r} has "
                                f"{dim.value} MOS {mos:.2f} < {ATTRIBUTION_BELOW} but no "
                                "attribution, reasons or labelled defects; its rationale only "
                                "says that the dimension falls short", **where))
    found = rating_words(rationale)
    if found:
        problems.append(Problem("rating_word", f"the {dim.value} rationale ({source}) of video "
                                f"{video['video_id']!r} names the rating word(s) {found}; read "
                                "before the rating, it may give the rating away", **where))
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
                  reasons: dict[tuple[str, str], list[str]] | None = None,
                  describer: Describer | None = None) -> RecordsResult:
    """Training records for every (video, learned dimension) with a MOS (Sec. 3.4).

    ``mos`` is a MOS table with ``mos5`` (see :func:`qsave.data.annotations.compute_mos` or
    :func:`~qsave.data.annotations.mos_from_videos`); ``reasons`` the raters' reasons per
    (video, dimension) (:func:`~qsave.data.annotations.collect_reasons`). ``describer``
    replaces ``config.describer``, e.g. ``make_describer("lmm", loaded_model)``. A selected
    video without a MOS for a dimension, or a MOS of an unknown video, is reported and gets
    no record.
    """
    config = config or RecordConfig()
    reasons = reasons or {}
    describer = describer or make_describer(config.describer)
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
            records.append(_record(video, row, reasons, config, describer, problems))
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
