"""Typed per-video results and their JSONL / CSV files (DESIGN.md, Conventions).

One JSONL line per video: ``id``, ``path``, ``content_hash``, ``prompt``, ``scores``
(dimension → score record), ``error``, ``model``, ``settings``, ``video`` (its frame plan).
Lines are written as they are done (flush + fsync), so a killed run loses at most the item in
flight, and a rerun skips the videos already written, keyed by content hash, prompt, model and
settings.

>>> key_of({"content_hash": "sha256:ab", "prompt": "p", "model": {}, "settings": {}})[:7]
'sha256:'
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsave.dimensions import Dimension
from qsave.model.load import ModelInfo
from qsave.model.scorer import DimensionScore

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a video file


@dataclass
class VideoResult:
    """The result for one video: scores per dimension, or the error that stopped it."""

    id: str
    path: str | None
    content_hash: str | None  # "sha256:<hex>" of the file's bytes
    prompt: str | None
    scores: dict[Dimension, DimensionScore] = field(default_factory=dict)
    error: str | None = None
    model: ModelInfo | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] | None = None  # the video's frame plan summary (slow/fast, tokens)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """The JSONL record (plain JSON values)."""
        return {
            "id": self.id,
            "path": self.path,
            "content_hash": self.content_hash,
            "prompt": self.prompt,
            "scores": {d.value: s.to_dict() for d, s in self.scores.items()},
            "error": self.error,
            "model": self.model.to_dict() if self.model else None,
            "settings": self.settings,
            "video": self.video,
        }

    @property
    def key(self) -> str:
        return key_of(self.to_record())


def content_hash(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def key_of(record: dict[str, Any]) -> str:
    """The resume key of a record: what it scored (content, else path; and the input's id, so
    two copies of one file each keep their row) and how (prompt, model, settings)."""
    what = record.get("content_hash") or f"path:{record.get('path')}"
    how = json.dumps(
        [record.get("id"), record.get("prompt"), record.get("model"), record.get("settings")],
        sort_keys=True,
    )
    return f"{what}|{hashlib.sha256(how.encode()).hexdigest()[:16]}"


class JsonlWriter:
    """Appends records, each flushed and fsynced before the next item starts."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_tail(path: Path) -> None:
    """Cut a partial last line (a write killed midway) so appended lines stay whole."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The whole lines of a results file (a partial last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n") and line.strip():
                yield json.loads(line)


def done_keys(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Resume keys of the records already written, mapped to their records."""
    return {key_of(record): record for record in read_records(path)}


def write_csv(records: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """One row per video: id, path, prompt, then score / mos / rating per dimension, error."""
    records = list(records)
    dims = [d.value for d in Dimension if any(d.value in r["scores"] for r in records)]
    columns = ["id", "path", "prompt"]
    columns += [f"{d}_{k}" for d in dims for k in ("score", "mos", "rating")] + ["error"]
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for record in records:
            row = {k: record.get(k) for k in ("id", "path", "prompt", "error")}
            for d, score in record["scores"].items():
                row.update({f"{d}_{k}": score[k] for k in ("score", "mos", "rating")})
            writer.writerow(row)
    return path
