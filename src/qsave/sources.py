"""What to score: a video file, a folder of videos or a manifest → items with unique ids.

Ids never collide: a video found in a folder has the id of its path relative to that folder
without the suffix (``kling/0001``), a single file its stem, a manifest line its ``id`` (else its
``path`` without the suffix). Two inputs with one id are refused before any model loads, with
an error naming both paths.

>>> video_id("videos/kling/0001.mp4", "videos")
'kling/0001'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from qsave.errors import AnnotationError, DuplicateIdError, UsageError
from qsave.evaluator import ScoreItem
from qsave.jsonl import read_jsonl

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts",
                  ".m2ts", ".mts", ".flv", ".wmv", ".3gp", ".ogv")  # what FFmpeg commonly writes
MANIFEST_SUFFIXES = (".jsonl",)


def video_id(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The id of a video under ``root``: its relative path, POSIX separators, no suffix."""
    relative = PurePath(os.path.relpath(path, root))
    return relative.with_suffix("").as_posix()


@dataclass
class Sources:
    """What a source holds: the items to score, and the files of a folder that are not videos
    (by suffix, :data:`VIDEO_SUFFIXES`)."""

    items: list[ScoreItem]
    skipped: list[Path] = field(default_factory=list)


def scan(
    source: str | os.PathLike, prompt: str | None = None,
    prompts: str | os.PathLike | None = None, split: str | None = None,
) -> Sources:
    """The videos of a file, a directory (recursively, sorted) or a manifest JSONL.

    A manifest line has ``path`` (relative to the manifest's folder) and optionally ``id``,
    ``prompt`` and ``split`` (``split`` keeps the lines of that split only). ``prompt`` applies
    to every video without one; ``prompts`` is a JSONL file of
    ``{"id" | "path": …, "prompt": …}`` lines or a JSON object ``{id or file name: prompt}``.
    Raises ``UsageError`` for a missing source, a folder without videos, or a prompts file that
    matches none of them; ``DuplicateIdError`` when two inputs share an id.
    """
    source, skipped = Path(source), []
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file())
        paths = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        skipped = [p for p in files if p.suffix.lower() not in VIDEO_SUFFIXES]
        if not paths:
            raise UsageError(f"no videos in {source} ({len(skipped)} other file(s); video "
                             f"suffixes: {' '.join(VIDEO_SUFFIXES)})")
        items = [ScoreItem(str(p), id=video_id(p, source)) for p in paths]
    elif not source.exists():
        raise UsageError(f"no such file or folder: {source}")
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        items = _manifest_items(source, split)
    else:
        items = [ScoreItem(str(source), id=source.stem)]
    if split is not None and not (source.is_file() and source.suffix.lower() in
                                  MANIFEST_SUFFIXES):
        raise UsageError(f"--split {split!r} selects lines of a manifest; {source} is not one")
    check_unique_ids(items)
    table = _prompt_table(prompts) if prompts is not None else {}
    matched = 0
    for item in items:
        name = Path(item.path or "").name
        found = table.get(item.name) or table.get(name)
        matched += found is not None
        item.prompt = item.prompt or found or prompt
    if table and not matched:
        raise UsageError(f"the prompts of {prompts} match none of the {len(items)} video(s) "
                         "(by id or file name)")
    return Sources(items, skipped)


def items_from(
    source: str | os.PathLike, prompt: str | None = None,
    prompts: str | os.PathLike | None = None,
) -> list[ScoreItem]:
    """The items of :func:`scan`."""
    return scan(source, prompt, prompts).items


def check_unique_ids(items: list[ScoreItem]) -> None:
    """Raise ``DuplicateIdError`` naming both inputs when two items share an id."""
    seen: dict[str, ScoreItem] = {}
    clashes = []
    for item in items:
        first = seen.setdefault(item.name, item)
        if first is not item:
            clashes.append(f"{item.name!r}: {first.path or 'in memory'} and "
                           f"{item.path or 'in memory'}")
    if clashes:
        listing = "; ".join(clashes[:5]) + (f"; … {len(clashes) - 5} more" if len(clashes) > 5
                                            else "")
        raise DuplicateIdError(f"{len(clashes)} input id(s) used twice — ids must be unique: "
                              f"{listing}")


def _manifest_items(path: Path, split: str | None = None) -> list[ScoreItem]:
    items, splits = [], set()
    for number, row in _rows(path):
        splits.add(row.get("split"))
        if split is not None and row.get("split") != split:
            continue
        if not isinstance(row.get("path"), str):
            raise AnnotationError(f"{path}:{number}: a manifest line needs a 'path' string")
        video = Path(row["path"])
        full = video if video.is_absolute() else path.parent / video
        default_id = video_id(full, path.parent) if not video.is_absolute() else video.stem
        items.append(ScoreItem(str(full), row.get("prompt"), str(row.get("id") or default_id)))
    if split is not None and not items:
        found = sorted(str(s) for s in splits if s is not None)
        raise UsageError(f"no line of {path} is in split {split!r} (splits found: "
                         f"{', '.join(found) or 'none: the lines have no split field'})")
    return items


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a JSONL input file; any line that is not a JSON object is an error."""
    read = read_jsonl(path)
    problems = read.problems(str(path))
    if problems:
        raise AnnotationError("; ".join(problems))
    return read.rows


def _prompt_table(path: str | os.PathLike) -> dict[str, str]:
    """{id or file name: prompt} from a JSON object or JSONL lines with id/path + prompt."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such prompts file: {path}")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise AnnotationError(f"{path}: cannot read the prompts: {error}") from error
        if not isinstance(table, dict):
            raise AnnotationError(f"{path}: expected a JSON object {{name: prompt}}")
        return {str(k): str(v) for k, v in table.items()}
    table = {}
    for number, row in _rows(path):
        key = row.get("id") or (Path(row["path"]).name if row.get("path") else None)
        if key is None or not isinstance(row.get("prompt"), str):
            raise AnnotationError(
                f"{path}:{number}: a prompts line needs 'id' or 'path', and 'prompt'"
            )
        table[str(key)] = row["prompt"]
    return table
