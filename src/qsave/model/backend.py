"""The transformers backend of the scoring pipeline (whisper's ``PyTorchInference``).

Score-only: the shared video prefix, two forward passes per batch whatever the number of
dimensions (:func:`qsave.model.scorer.score_shared`); for a think-first checkpoint with
``ThinkFirstReading.GENERATE``, the rating after a greedy analysis
(:func:`qsave.model.scorer.read_after_analysis`, Sec. 3.4.1); explain mode: a greedy rationale
per dimension (:func:`qsave.model.scorer.explain`).
"""

from __future__ import annotations

from collections.abc import Sequence

from qsave.dimensions import Dimension
from qsave.evaluator import Backend, Prepared
from qsave.model import scorer, speed
from qsave.model.load import LoadedModel, load
from qsave.scores import DimensionScore
from qsave.spec import ScorerSpec


class TransformersBackend(Backend):
    """A loaded Qwen3-VL (transformers) scoring by rating-token logits (Sec. 4.2.2)."""

    def __init__(self, loaded: LoadedModel, spec: ScorerSpec) -> None:
        self.loaded, self.spec, self.info = loaded, spec, loaded.info
        self.processor = loaded.processor
        self.setup = scorer.ScoringSetup(loaded.model, loaded.processor, loaded.rating_ids,
                                         spec.answer_format, spec.max_new_tokens,
                                         spec.think_first_reading, spec.speed)
        speed.apply(loaded.model, spec.speed)

    @classmethod
    def load(cls, spec: ScorerSpec) -> TransformersBackend:
        return cls(load(spec), spec)

    def score(self, items: Sequence[Prepared], dimensions: Sequence[Dimension],
              explain: bool) -> list[dict[Dimension, DimensionScore]]:
        videos = [scorer.VideoPrompt(item.video, item.result.prompt) for item in items]
        if explain:
            return scorer.explain(self.setup, videos, dimensions)
        if self.setup.generates_analysis:
            return scorer.read_after_analysis(self.setup, videos, dimensions)[0]
        return scorer.score_shared(self.setup, videos, dimensions)
