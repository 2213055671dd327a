"""The public evaluator: load a checkpoint, score videos on the three dimensions (paper Sec. 4.2).

>>> evaluator = Evaluator.from_pretrained("tiny", device="cpu")
>>> evaluator.info.dtype, evaluator.settings(parse_dimensions(["visual"]), False)["dimensions"]
('float32', ['visual'])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qsave import errors
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import AnnotationError, ConfigError, QsaveError
from qsave.model import scorer
from qsave.model.load import TINY, LoadConfig, LoadedModel, ModelInfo, load
from qsave.prompts import AnswerFormat
from qsave.results import JsonlWriter, VideoResult, content_hash, done_keys, key_of
from qsave.video.inputs import PreparedVideo, VideoConfig, prepare_video

# Failures of one batch that are retried video by video, so that one bad item cannot sink the
# others: our own errors, and torch/transformers' shape or value complaints about an input.
ITEM_ERRORS = (QsaveError, RuntimeError, ValueError)


@dataclass
class ScoreItem:
    """One video to score: a file (or an already prepared video) and its generation prompt."""

    video: str | os.PathLike | PreparedVideo
    prompt: str | None = None
    id: str | None = None  # defaults to the file's stem
    content_hash: str | None = None  # the file's hash when already computed (resume)

    @property
    def name(self) -> str:
        if self.id is not None:
            return self.id
        return Path(self.video).stem if isinstance(self.video, str | os.PathLike) else "video"

    @property
    def path(self) -> str | None:
        return str(self.video) if isinstance(self.video, str | os.PathLike) else None


def parse_dimensions(dimensions: Iterable[str | Dimension] | None) -> tuple[Dimension, ...]:
    """Dimensions in the canonical order, without repeats; None means all three."""
    if dimensions is None:
        return DIMENSIONS
    chosen = {Dimension.parse(d) for d in dimensions}
    if not chosen:
        raise ConfigError("no dimension to score; valid dimensions: visual, dynamic, alignment")
    return tuple(d for d in DIMENSIONS if d in chosen)


class Evaluator:
    """Scores videos with a Q-Save checkpoint: score-only (one forward pass, the video encoded
    once for all dimensions) or with a greedy rationale (``explain=True``)."""

    def __init__(
        self, loaded: LoadedModel, video_config: VideoConfig | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        self.loaded = loaded
        self.video_config = video_config or VideoConfig()
        self.setup = scorer.ScoringSetup(
            loaded.model, loaded.processor, loaded.rating_ids,
            AnswerFormat(loaded.info.answer_format), max_new_tokens,
        )

    @classmethod
    def from_pretrained(
        cls, model: str = TINY, *, revision: str | None = None, adapter: str | None = None,
        device: str | None = None, dtype: str | None = None,
        answer_format: AnswerFormat | str = AnswerFormat.RATING_FIRST,
        video_config: VideoConfig | None = None, max_new_tokens: int = 256,
    ) -> Evaluator:
        """Load a hub id, a local directory, a LoRA ``adapter`` on it, or ``"tiny"``."""
        config = LoadConfig(model, revision, adapter, device, dtype, AnswerFormat(answer_format))
        return cls(load(config), video_config, max_new_tokens)

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info

    def settings(self, dimensions: Sequence[Dimension], explain: bool) -> dict[str, Any]:
        """What the scores depend on besides the model; recorded in every output row."""
        settings = {
            "dimensions": [d.value for d in dimensions],
            "explain": explain,
            "answer_format": self.setup.answer_format.value,
            "video": self.video_config.to_dict(),
        }
        if explain:
            settings["max_new_tokens"] = self.setup.max_new_tokens
        return settings

    def score(
        self, video: str | os.PathLike | PreparedVideo, prompt: str | None = None, *,
        dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
    ) -> VideoResult:
        """Score one video; a video that cannot be scored raises its ``QsaveError``."""
        result = next(self.score_many([ScoreItem(video, prompt)], dimensions=dimensions,
                                      explain=explain, batch_size=1))
        if not result.ok:
            raise _error_of(result)
        return result

    def score_many(
        self, items: Iterable[ScoreItem | str | os.PathLike], *, prompt: str | None = None,
        dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
        batch_size: int = 8, on_result: Callable[[VideoResult], None] | None = None,
    ) -> Iterator[VideoResult]:
        """Results in input order, ``batch_size`` videos per forward pass; a video that fails
        yields a result with ``error`` set and the others go on. ``prompt`` applies to paths
        given without one; ``on_result`` is called with each result (progress)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size ({batch_size}) must be at least 1")
        dims = parse_dimensions(dimensions)
        batch: list[ScoreItem] = []
        for raw in items:
            batch.append(raw if isinstance(raw, ScoreItem) else ScoreItem(raw, prompt))
            if len(batch) == batch_size:
                yield from self._batch(batch, dims, explain, on_result)
                batch = []
        if batch:
            yield from self._batch(batch, dims, explain, on_result)

    def _batch(self, batch, dims, explain, on_result) -> Iterator[VideoResult]:
        settings = self.settings(dims, explain)
        results = [self._prepare(item, settings) for item in batch]
        ready = [(r, v) for r, v in results if v is not None]
        self._score_all(ready, dims, explain)
        for result, _ in results:
            if on_result is not None:
                on_result(result)
            yield result

    def _prepare(self, item: ScoreItem, settings: dict) -> tuple[VideoResult, Any]:
        """A result shell and the prepared video (None, with the error set, when it fails)."""
        result = VideoResult(item.name, item.path, None, item.prompt,
                             model=self.info, settings=settings)
        try:
            if isinstance(item.video, PreparedVideo):
                return result, item.video
            result.content_hash = item.content_hash or content_hash(item.video)
            prepared = prepare_video(item.video, self.video_config)
        except (QsaveError, OSError) as error:
            result.error = f"{type(error).__name__}: {error}"
            return result, None
        result.video = prepared.settings.get("plan")
        return result, prepared

    def _score_all(self, ready: list[tuple[VideoResult, Any]], dims, explain: bool) -> None:
        """Score the batch at once; if that fails, video by video to find the bad one."""
        if not ready:
            return
        try:
            self._score_into(ready, dims, explain)
        except ITEM_ERRORS as error:
            if len(ready) == 1:
                ready[0][0].error = f"{type(error).__name__}: {error}"
                return
            for pair in ready:
                self._score_all([pair], dims, explain)

    def _score_into(self, ready: list[tuple[VideoResult, Any]], dims, explain: bool) -> None:
        items = [scorer.VideoPrompt(video, result.prompt) for result, video in ready]
        run = scorer.explain if explain else scorer.score_shared
        for (result, _), scores in zip(ready, run(self.setup, items, dims), strict=True):
            result.scores = scores


def _error_of(result: VideoResult) -> QsaveError:
    name, _, message = (result.error or "").partition(": ")
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, QsaveError):
        return kind(message)
    return QsaveError(result.error)


__all__ = ["Evaluator", "ScoreItem", "VideoResult", "parse_dimensions"]


# ---- inputs and result files (what `qsave score` does, as library functions) -------------
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")
MANIFEST_SUFFIXES = (".jsonl",)


def items_from(
    source: str | os.PathLike, prompt: str | None = None,
    prompts: str | os.PathLike | None = None,
) -> list[ScoreItem]:
    """The videos of a file, a directory (recursively, sorted) or a manifest JSONL.

    A manifest line has ``path`` (relative to the manifest's folder) and optionally ``id`` and
    ``prompt``. ``prompt`` applies to every video without one; ``prompts`` is a JSONL file of
    ``{"id" | "path": …, "prompt": …}`` lines or a JSON object ``{id or file name: prompt}``.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        items = [ScoreItem(str(p)) for p in paths]
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        items = _manifest_items(source)
    else:
        items = [ScoreItem(str(source))]
    table = _prompt_table(prompts) if prompts is not None else {}
    for item in items:
        name = Path(item.path or "").name
        item.prompt = item.prompt or table.get(item.name) or table.get(name) or prompt
    return items


def _manifest_items(path: Path) -> list[ScoreItem]:
    items = []
    for number, row in enumerate(_json_lines(path), start=1):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise AnnotationError(f"{path}:{number}: a manifest line needs a 'path' string")
        video = Path(row["path"])
        video = video if video.is_absolute() else path.parent / video
        items.append(ScoreItem(str(video), row.get("prompt"), row.get("id")))
    return items


def _json_lines(path: Path) -> list[Any]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}:{number}: not JSON: {error}") from error
    return rows


def _prompt_table(path: str | os.PathLike) -> dict[str, str]:
    """{id or file name: prompt} from a JSON object or JSONL lines with id/path + prompt."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        table = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(table, dict):
            raise AnnotationError(f"{path}: expected a JSON object {{name: prompt}}")
        return {str(k): str(v) for k, v in table.items()}
    table = {}
    for number, row in enumerate(_json_lines(path), start=1):
        key = row.get("id") or (Path(row["path"]).name if row.get("path") else None)
        if key is None or not isinstance(row.get("prompt"), str):
            raise AnnotationError(
                f"{path}:{number}: a prompts line needs 'id' or 'path', and 'prompt'"
            )
        table[str(key)] = row["prompt"]
    return table


@dataclass
class FileRun:
    """What :func:`score_to_jsonl` did: rows written now, rows already there, failures."""

    written: int = 0
    skipped: int = 0
    failed: list[str] | None = None  # ids of the inputs whose row is an error (old or new)
    records: list[dict[str, Any]] | None = None  # the rows of this run's inputs, input order


def pending_items(
    evaluator: Evaluator, items: Sequence[ScoreItem], out: str | os.PathLike,
    dimensions: Sequence[Dimension], explain: bool,
) -> tuple[list[ScoreItem], dict[int, dict[str, Any]]]:
    """Split inputs into those still to score and (index → row) of those already in ``out``."""
    done, todo, old = done_keys(out), [], {}
    settings, model = evaluator.settings(dimensions, explain), evaluator.info.to_dict()
    for index, item in enumerate(items):
        if item.path is not None and item.content_hash is None and Path(item.path).is_file():
            item.content_hash = content_hash(item.path)
        probe = {"id": item.name, "content_hash": item.content_hash, "path": item.path,
                 "prompt": item.prompt, "model": model, "settings": settings}
        if key_of(probe) in done:
            old[index] = done[key_of(probe)]
        else:
            todo.append(item)
    return todo, old


def score_to_jsonl(
    evaluator: Evaluator, items: Sequence[ScoreItem], out: str | os.PathLike, *,
    dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
    batch_size: int = 8, on_result: Callable[[VideoResult], None] | None = None,
) -> FileRun:
    """Score the inputs not yet in ``out`` and append one row each, fsynced as it is done."""
    dims = parse_dimensions(dimensions)
    todo, old = pending_items(evaluator, items, out, dims, explain)
    new: list[dict[str, Any]] = []
    with JsonlWriter(out) as writer:
        for result in evaluator.score_many(todo, dimensions=dims, explain=explain,
                                           batch_size=batch_size, on_result=on_result):
            record = result.to_record()
            writer.write(record)
            new.append(record)
    fresh = iter(new)
    records = [old[i] if i in old else next(fresh) for i in range(len(items))]
    failed = [r["id"] for r in records if r.get("error")]
    return FileRun(len(new), len(old), failed, records)
