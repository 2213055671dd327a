"""Score rows: the per-dimension score, the per-video result, its typed error, the resume key.

Torch-free plain data (DESIGN.md, Conventions), written and read in one place: every consumer
(``qsave score``, ``qsave eval``, the reward server, ``qsave.reward``, Ray) goes through
:meth:`VideoResult.to_record` / :meth:`VideoResult.from_record` and :func:`read_results`.

A results file has one JSON line per video: ``id``, ``path``, ``content_hash``, ``prompt``,
``scores`` (dimension → ``score`` r̂ in 0..1, the expectation Σ p_j·w_j; ``mos`` = 1 + 4·r̂,
the same on the 1–5 scale; ``probs``, rating word → probability; ``rating``, the most likely
word, which may differ from the word nearest the MOS; ``entropy`` of ``probs`` in nats, high
for a low-confidence score; optional ``rationale``; Sec. 4.2.2), ``error`` (``{"type",
"message"}`` or null), ``model``, ``settings`` (what the scores depend on besides the model) and
``video`` (the frame plan).

>>> row = VideoResult("kling/0001", None, "sha256:ab", "a cat", error=ItemError("VideoError",
...                   "cannot decode")).to_record()
>>> row["error"]
{'type': 'VideoError', 'message': 'cannot decode'}
>>> VideoResult.from_record(row).error.to_exception()
VideoError('cannot decode')
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from qsave.dimensions import RATINGS, Dimension
from qsave.errors import AnnotationError, QsaveError, error_class
from qsave.jsonl import JsonlRead, read_jsonl

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a video
LOW_CONFIDENCE_NATS = 1.0  # entropy above which a score is marked uncertain (ln 5 = 1.61 max)


@dataclass(frozen=True)
class DimensionScore:
    """One dimension's score of one video (Sec. 4.2.2)."""

    score: float  # r̂ = Σ p_j·w_j in [0, 1]
    mos: float  # 1 + 4·r̂ on the 1–5 scale
    probs: tuple[float, ...]  # p_j over (Bad, Poor, Fair, Good, Excellent)
    rating: str  # the most likely rating word (ties: the higher rating)
    entropy: float  # −Σ p_j ln p_j, in nats (0 … ln 5)
    rationale: str | None = None  # the generated analysis in explain mode

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["probs"] = dict(zip(RATINGS, self.probs, strict=True))
        if self.rationale is None:
            del record["rationale"]
        return record

    @classmethod
    def from_dict(cls, values: Any) -> DimensionScore:
        """Inverse of :meth:`to_dict`; a malformed score raises ``AnnotationError``."""
        if not isinstance(values, dict):
            raise AnnotationError(f"a dimension score must be an object, got {values!r}")
        try:
            probs = values["probs"]  # a mapping; a list (Bad … Excellent) in older files
            probs = [probs[r] for r in RATINGS] if isinstance(probs, dict) else probs
            score = cls(float(values["score"]), float(values["mos"]),
                        tuple(float(p) for p in probs), str(values["rating"]),
                        float(values["entropy"]), values.get("rationale"))
        except (KeyError, TypeError, ValueError) as error:
            raise AnnotationError(f"malformed dimension score {values!r}: {error!r}") from None
        if len(score.probs) != len(RATINGS) or score.rating not in RATINGS:
            raise AnnotationError(f"malformed dimension score {values!r}")
        return score


@dataclass(frozen=True)
class ItemError:
    """Why one video has no scores: the exception's class name and its message."""

    type: str  # e.g. "VideoError"
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ItemError:
        return cls(type(error).__name__, str(error))

    def to_exception(self) -> QsaveError:
        """The qsave exception to raise for it (``QsaveError`` for a foreign type)."""
        kind = error_class(self.type)
        return kind(self.message) if kind.__name__ == self.type else kind(str(self))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True)
class ModelInfo:
    """What every output row says about the model that scored it."""

    id: str  # hub id, absolute directory, or the tiny model's id
    revision: str | None  # commit hash when known
    dtype: str
    device: str
    adapter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoResult:
    """The result for one video: scores per dimension, or the error that stopped it."""

    id: str
    path: str | None
    content_hash: str | None  # "sha256:<hex>" of the file's bytes
    prompt: str | None
    scores: dict[Dimension, DimensionScore] = field(default_factory=dict)
    error: ItemError | None = None
    model: dict[str, Any] | None = None  # ModelInfo.to_dict()
    settings: dict[str, Any] = field(default_factory=dict)  # what the scores depend on
    video: dict[str, Any] | None = None  # the video's frame plan summary (slow/fast, tokens)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """The JSONL row (plain JSON values)."""
        return {
            "id": self.id,
            "path": self.path,
            "content_hash": self.content_hash,
            "prompt": self.prompt,
            "scores": {d.value: s.to_dict() for d, s in self.scores.items()},
            "error": asdict(self.error) if self.error else None,
            "model": self.model,
            "settings": self.settings,
            "video": self.video,
        }

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> VideoResult:
        """Inverse of :meth:`to_record`; a row that is not one raises ``AnnotationError``."""
        if not isinstance(row.get("id"), str) or not row["id"]:
            raise AnnotationError("a score row needs an 'id' string")
        scores, error = row.get("scores") or {}, row.get("error")
        if not isinstance(scores, dict):
            raise AnnotationError(f"row {row['id']!r}: 'scores' must be an object")
        if error is not None and not (isinstance(error, dict) and set(error) == {"type",
                                                                                 "message"}):
            raise AnnotationError(f"row {row['id']!r}: 'error' must be null or "
                                  f"{{'type', 'message'}}, got {error!r}")
        if error is None and not scores:
            raise AnnotationError(f"row {row['id']!r} has neither scores nor an error")
        try:
            parsed = {Dimension.parse(d): DimensionScore.from_dict(s) for d, s in scores.items()}
        except QsaveError as problem:
            raise AnnotationError(f"row {row['id']!r}: {problem}") from None
        return cls(row["id"], row.get("path"), row.get("content_hash"), row.get("prompt"),
                   parsed, ItemError(**error) if error else None, row.get("model"),
                   row.get("settings") or {}, row.get("video"))

    @property
    def input_key(self) -> str:
        """Which input under which scoring: id, prompt, model and settings (not the bytes)."""
        how = json.dumps([self.id, self.prompt, self.model, self.settings], sort_keys=True)
        return hashlib.sha256(how.encode()).hexdigest()[:24]

    @property
    def key(self) -> str:
        """The resume key: the content hash (else the path), plus :attr:`input_key`."""
        return f"{self.content_hash or f'path:{self.path}'}|{self.input_key}"


def content_hash(source: str | os.PathLike | BinaryIO | bytes) -> str:
    """``sha256:<hex>`` of a file's (or a stream's, or a buffer's) bytes, read in chunks; a
    stream goes back to where it was."""
    digest = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        digest.update(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    else:
        start = source.tell()
        while chunk := source.read(HASH_CHUNK):
            digest.update(chunk)
        source.seek(start)
    return f"sha256:{digest.hexdigest()}"


@dataclass
class ResultsFile:
    """A results file as read: rows (line number, result), lines that are not rows, and what
    :func:`read_results` found about the file's end."""

    rows: list[tuple[int, VideoResult]] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)  # complete, but not a row
    lines: JsonlRead = field(default_factory=JsonlRead)

    def problems(self, name: str) -> list[str]:
        """Invalid lines and a damaged tail, as ``name:line: message`` texts, by line."""
        return JsonlRead(bad=self.invalid, tail=self.lines.tail).problems(name)


def read_results(path: str | os.PathLike) -> ResultsFile:
    """Every line of a results file: valid rows, and each other line with its line number."""
    lines = read_jsonl(path)
    results = ResultsFile(lines=lines, invalid=list(lines.bad))
    for number, row in lines.rows:
        try:
            results.rows.append((number, VideoResult.from_record(row)))
        except AnnotationError as error:
            results.invalid.append((number, str(error)))
    results.invalid.sort()
    return results


def write_csv(results: Iterable[VideoResult], path: str | os.PathLike) -> Path:
    """One row per video: id, path, prompt, then score / mos / rating per dimension, error."""
    results = list(results)
    dims = [d for d in Dimension if any(d in r.scores for r in results)]
    columns = ["id", "path", "prompt"]
    columns += [f"{d.value}_{k}" for d in dims for k in ("score", "mos", "rating")] + ["error"]
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for result in results:
            row = {"id": result.id, "path": result.path, "prompt": result.prompt,
                   "error": str(result.error) if result.error else None}
            for d, score in result.scores.items():
                row.update({f"{d.value}_score": score.score, f"{d.value}_mos": score.mos,
                            f"{d.value}_rating": score.rating})
            writer.writerow(row)
    return path
