"""The one scoring pipeline: prepare video → backend → per-item error → retry → rows (Sec. 4.2).

Every caller scores through :class:`Evaluator`: ``qsave score``, the Ray actors, the reward
server's micro-batcher and :func:`qsave.reward`. The model side is a small :class:`Backend`
(whisper's ``Inference``): :class:`qsave.model.backend.TransformersBackend` (shared video
prefix, explain mode) or :class:`qsave.model.vllm.VllmBackend` (score-only). The pipeline
itself is torch-free; a backend is imported when a spec is loaded.

>>> evaluator = Evaluator.from_pretrained("tiny", device="cpu")
>>> evaluator.info.dtype, evaluator.settings(parse_dimensions(["visual"]), False)["dimensions"]
('float32', ['visual'])
"""

from __future__ import annotations

import io
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from qsave.dimensions import Dimension
from qsave.errors import ConfigError, PromptError, QsaveError
from qsave.prompts import AnswerFormat
from qsave.scores import DimensionScore, ItemError, ModelInfo, VideoResult, content_hash
from qsave.spec import ScorerSpec, ThinkFirstReading, parse_dimensions, resolve_spec
from qsave.video.inputs import PreparedVideo, prepare_video

# Failures of one batch that are retried video by video, so that one bad item cannot sink the
# others: our own errors, and torch/transformers' shape or value complaints about an input.
ITEM_ERRORS = (QsaveError, RuntimeError, ValueError)
Video = str | os.PathLike | BinaryIO | bytes | PreparedVideo  # what a ScoreItem may hold


@dataclass
class ScoreItem:
    """One video to score: a file, a stream, encoded bytes or a prepared video, its prompt."""

    video: Video
    prompt: str | None = None
    id: str | None = None  # default: the file's stem, else "video"
    content_hash: str | None = None  # the bytes' hash when already computed (resume)

    @property
    def name(self) -> str:
        if self.id is not None:
            return self.id
        return Path(self.video).stem if isinstance(self.video, str | os.PathLike) else "video"

    @property
    def path(self) -> str | None:
        return str(self.video) if isinstance(self.video, str | os.PathLike) else None


@dataclass
class Prepared:
    """A video ready for the backend: its result (scores still empty) and its frames."""

    result: VideoResult
    video: PreparedVideo


class Backend(ABC):
    """The model side of scoring: scores for prepared videos, one dict per video."""

    spec: ScorerSpec  # what the backend was loaded with
    info: ModelInfo  # recorded in every row
    explains: bool = True  # whether it can generate a rationale (explain mode)

    processor: Any  # the checkpoint's processor (its tokenizer counts prompt tokens)

    def prompt_tokens(self, text: str) -> int:
        """Tokens of a user prompt as the model's tokenizer counts them."""
        return len(self.processor.tokenizer.encode(text, add_special_tokens=False))

    @abstractmethod
    def score(self, items: Sequence[Prepared], dimensions: Sequence[Dimension],
              explain: bool) -> list[dict[Dimension, DimensionScore]]:
        """One dict per item (input order); raise to fail the batch (it is retried per item)."""


class PlannedBackend(Backend):
    """A backend not loaded yet: the spec and the info loading it will give, enough for the
    rows' resume keys (``qsave score`` checks what is left before it loads a model)."""

    def __init__(self, spec: ScorerSpec, info: ModelInfo) -> None:
        self.spec, self.info = spec, info

    def score(self, items: Sequence[Prepared], dimensions: Sequence[Dimension],
              explain: bool) -> list[dict[Dimension, DimensionScore]]:
        raise QsaveError("the model is not loaded (PlannedBackend only plans rows)")


def load_backend(spec: ScorerSpec) -> Backend:
    """The backend ``spec.backend`` names, loaded with ``spec``."""
    if spec.backend == "vllm":
        from qsave.model.vllm import VllmBackend

        return VllmBackend.load(spec)
    from qsave.model.backend import TransformersBackend

    return TransformersBackend.load(spec)


class Evaluator:
    """Scores videos on the three dimensions: score-only (one forward pass, the video encoded
    once for all dimensions) or with a greedy rationale (``explain=True``)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @classmethod
    def from_pretrained(cls, model: str | None = None, **overrides: Any) -> Evaluator:
        """Load a hub id, a local directory, or ``"tiny"``, with the settings its checkpoint
        was trained with (``qsave_scorer.json``) unless ``overrides`` (ScorerSpec fields;
        ``video`` a VideoConfig or a dict of its fields) say otherwise."""
        return cls.from_spec(resolve_spec(model, **overrides)[0])

    @classmethod
    def from_spec(cls, spec: ScorerSpec) -> Evaluator:
        return cls(load_backend(spec))

    @property
    def spec(self) -> ScorerSpec:
        return self.backend.spec

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    def settings(self, dimensions: Sequence[Dimension], explain: bool) -> dict[str, Any]:
        """What the scores depend on besides the model; recorded in every output row."""
        settings = {
            "dimensions": [d.value for d in dimensions],
            "explain": explain,
            "answer_format": self.spec.answer_format.value,
            "video": self.spec.video.to_dict(),
            "backend": self.spec.backend,
        }
        if self.spec.answer_format is AnswerFormat.THINK_FIRST and not explain:
            settings["think_first_reading"] = self.spec.think_first_reading.value
        if explain or settings.get("think_first_reading") == ThinkFirstReading.GENERATE:
            settings["max_new_tokens"] = self.spec.max_new_tokens  # a generated text's limit
        return settings

    def score(self, video: Video, prompt: str | None = None, *,
              dimensions: Iterable[str | Dimension] | None = None,
              explain: bool = False) -> VideoResult:
        """Score one video; a video that cannot be scored raises its ``QsaveError``."""
        result = next(self.score_many([ScoreItem(video, prompt)], dimensions=dimensions,
                                      explain=explain, batch_size=1))
        if result.error is not None:
            raise result.error.to_exception()
        return result

    def score_many(
        self, items: Iterable[ScoreItem | str | os.PathLike], *, prompt: str | None = None,
        dimensions: Iterable[str | Dimension] | None = None, explain: bool = False,
        batch_size: int = 8, on_result: Callable[[VideoResult], None] | None = None,
    ) -> Iterator[VideoResult]:
        """Results in input order, ``batch_size`` videos per forward pass; a video that fails
        yields a result with ``error`` set and the others go on. ``prompt`` applies to paths
        given without one; ``dimensions`` defaults to the spec's; ``on_result`` is called with
        each result (progress)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size ({batch_size}) must be at least 1")
        if explain and not self.backend.explains:
            raise ConfigError(f"the {self.spec.backend} backend scores without a rationale; "
                              "use the transformers backend for explain mode")
        dims = self.spec.scored_dimensions(dimensions)
        batch: list[ScoreItem] = []
        for raw in items:
            batch.append(raw if isinstance(raw, ScoreItem) else ScoreItem(raw, prompt))
            if len(batch) == batch_size:
                yield from self._batch(batch, dims, explain, on_result)
                batch = []
        if batch:
            yield from self._batch(batch, dims, explain, on_result)

    def _batch(self, batch, dims, explain, on_result) -> Iterator[VideoResult]:
        shells = [self.prepare(item, dims, explain) for item in batch]
        self.score_prepared([s for s in shells if isinstance(s, Prepared)], dims, explain)
        for shell in shells:
            result = shell.result if isinstance(shell, Prepared) else shell
            if on_result is not None:
                on_result(result)
            yield result

    def shell(self, item: ScoreItem, dimensions: Sequence[Dimension],
              explain: bool) -> VideoResult:
        """The row ``item`` will get, before scoring (its resume key is already final)."""
        return VideoResult(item.name, item.path, item.content_hash, item.prompt,
                           model=self.info.to_dict(), settings=self.settings(dimensions, explain))

    def prepare(self, item: ScoreItem, dimensions: Sequence[Dimension], explain: bool,
                cancel: threading.Event | None = None) -> Prepared | VideoResult:
        """Check the prompt against the spec's limits, hash and decode one video (within
        them; ``cancel`` stops the decoding); its result with the error set when that fails."""
        result = self.shell(item, dimensions, explain)
        try:
            if Dimension.ALIGNMENT in dimensions and not item.prompt:
                raise PromptError("no prompt for this video: text-video alignment is scored "
                                  "against the generation prompt; give one, or leave "
                                  "alignment out of the dimensions")
            self.spec.limits.check_prompt(item.prompt, self.backend.prompt_tokens)
            video = item.video
            if not isinstance(video, PreparedVideo):
                source = io.BytesIO(video) if isinstance(video, bytes | bytearray) else video
                result.content_hash = result.content_hash or content_hash(source)
                video = prepare_video(source, self.spec.video, self.spec.limits.video, cancel)
        except QsaveError as error:
            result.error = ItemError.of(error)
            return result
        except OSError as error:  # unreadable or missing: a VideoError like a decode failure
            kind = "VideoNotFoundError" if isinstance(error, FileNotFoundError) else "VideoError"
            result.error = ItemError(kind, f"cannot read video {item.path or item.name}: "
                                           f"{error.strerror or error}")
            return result
        result.video = video.settings.get("plan")
        return Prepared(result, video)

    def score_prepared(self, ready: Sequence[Prepared], dimensions: Sequence[Dimension],
                       explain: bool) -> list[VideoResult]:
        """Score prepared videos at once; if that fails, video by video to find the bad one.
        Every result gets its scores or its error."""
        if not ready:
            return []
        try:
            scores = self.backend.score(ready, dimensions, explain)
        except ITEM_ERRORS as error:
            if len(ready) == 1:
                ready[0].result.error = ItemError.of(error)
            else:
                for one in ready:
                    self.score_prepared([one], dimensions, explain)
            return [p.result for p in ready]
        for prepared, per_video in zip(ready, scores, strict=True):
            prepared.result.scores = per_video
        return [p.result for p in ready]


__all__ = ["Backend", "Evaluator", "Prepared", "ScoreItem", "load_backend", "parse_dimensions"]
