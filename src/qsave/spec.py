"""The scorer spec: everything that decides how a model scores, with its defaults written once.

``qsave score`` and ``qsave serve`` flags, the server's config, the Ray actors and
:meth:`qsave.Evaluator.from_pretrained` all build a :class:`ScorerSpec`; none restates a
default. ``qsave train`` and ``qsave demo --train`` save the part a checkpoint was trained with
(answer format, video preprocessing, rationale length, dimensions) as ``qsave_scorer.json``
beside the weights; :func:`resolve_spec` reads it back, so a model is scored with the frames and
answer format it was trained on (DESIGN.md, the scoring core). Explicit values still override
it; a checkpoint without the file (the untuned hub model) gets the defaults.

>>> spec = ScorerSpec()
>>> spec.model, spec.backend, spec.answer_format.value, spec.video.mode, spec.max_new_tokens
('tiny', 'transformers', 'rating-first', 'slowfast', 256)
>>> ScorerSpec.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import ConfigError, PromptLimitError
from qsave.prompts import AnswerFormat
from qsave.video.decode import DecodeLimits
from qsave.video.inputs import VideoConfig

TINY = "tiny"  # the model name of the embedded tiny Qwen3-VL, random weights (seed 0), always
TINY_DEMO = "tiny-demo"  # the model name of the tiny Qwen3-VL trained by the demo recipe, shipped
TINY_DEMO_ID = "qsave/tiny-demo"  # what rows say when the shipped tiny-demo model scored
PROVENANCE_FILE = "provenance.json"  # how a demo model was made and what it scored (held-out)
SPEC_FILE = "qsave_scorer.json"  # saved beside every checkpoint qsave trains
BACKENDS = ("transformers", "vllm")
DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # names --dtype accepts
CHECKPOINT_FIELDS = ("answer_format", "video", "max_new_tokens", "dimensions")  # what it saves


class ThinkFirstReading(StrEnum):
    """Where score-only reads the rating of a think-first checkpoint (``<think>analysis</think>
    Rating``, Sec. 3.4.1; the rating logits, Sec. 4.2.2). Explain mode always generates."""

    GENERATE = "generate"  # after a greedy analysis and the generated </think>, as trained
    EMPTY_THINK = "empty-think"  # after a forced empty <think></think>: no generation


VISION_ATTENTION = ("loop", "grouped")
GENERATION_CACHES = ("dynamic", "static")


@dataclass(frozen=True)
class SpeedOptions:
    """How the transformers backend runs the model (:mod:`qsave.model.speed`): levers measured
    by benchmarks/score_throughput.py and benchmarks/explain_speed.py, all off by default. No
    option changes a score beyond float rounding (tests/model/test_speed.py); none is saved
    with a checkpoint.

    >>> ScorerSpec(speed={"vision_attention": "grouped"}).to_dict()["speed"]["vision_attention"]
    'grouped'
    """

    pack_prefix: bool = False  # the batch's shared prefixes as one packed row
    vision_attention: str = "loop"  # "loop" (transformers', per frame) or "grouped" (per size)
    compile: bool = False  # torch.compile the language model, the vision tower, generation
    generation_cache: str = "dynamic"  # explain mode's KV cache: "dynamic" or "static"

    def __post_init__(self) -> None:
        if self.vision_attention not in VISION_ATTENTION:
            raise ConfigError(f"vision_attention {self.vision_attention!r} is not one of "
                              f"{list(VISION_ATTENTION)}")
        if self.generation_cache not in GENERATION_CACHES:
            raise ConfigError(f"generation_cache {self.generation_cache!r} is not one of "
                              f"{list(GENERATION_CACHES)}")


@dataclass(frozen=True)
class InputLimits:
    """What one input may cost; beyond it that item fails with a ``LimitError`` (the server
    answers 413) before any decoding or model work. Not saved with a checkpoint, not a scoring
    setting: a limit decides whether an input is scored, never how."""

    video: DecodeLimits = field(default_factory=DecodeLimits)  # pixels, frames, duration
    max_prompt_chars: int = 10_000  # characters of one prompt (checked before tokenizing)
    max_prompt_tokens: int = 2_048  # tokens of one prompt (the video prefix is ~10k tokens)

    def __post_init__(self) -> None:
        if isinstance(self.video, dict):
            object.__setattr__(self, "video", _from_fields(DecodeLimits, self.video, "video"))
        for name in ("max_prompt_chars", "max_prompt_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)!r}) must be a positive integer")

    def check_prompt(self, prompt: str | None, count_tokens: Any) -> None:
        """Raise ``PromptLimitError`` when ``prompt`` is over either limit; ``count_tokens``
        is called only on a prompt within the character limit."""
        if not prompt:
            return
        if len(prompt) > self.max_prompt_chars:
            raise PromptLimitError(f"the prompt has {len(prompt):,} characters, more than "
                                   f"max_prompt_chars ({self.max_prompt_chars:,})")
        tokens = count_tokens(prompt)
        if tokens > self.max_prompt_tokens:
            raise PromptLimitError(f"the prompt has {tokens:,} tokens, more than "
                                   f"max_prompt_tokens ({self.max_prompt_tokens:,})")


@dataclass(frozen=True)
class ScorerSpec:
    """How to load a model and score with it; the CLI's model flags mirror the fields."""

    model: str = TINY  # hub id, local directory, "tiny" (random) or "tiny-demo" (trained)
    backend: str = "transformers"  # "transformers" or "vllm" (score-only, where installed)
    revision: str | None = None  # hub revision (branch, tag or commit); None: the default
    adapter: str | None = None  # a LoRA adapter (directory or hub id) applied to `model`
    device: str | None = None  # None: cuda when available, else cpu (recorded in each row)
    dtype: str | None = None  # None: bfloat16 on cuda, float32 on cpu (recorded in each row)
    attn_implementation: str = "sdpa"  # transformers attention backend
    answer_format: AnswerFormat = AnswerFormat.RATING_FIRST  # where the rating is read
    video: VideoConfig = field(default_factory=VideoConfig)  # decoding, SlowFast, budget
    max_new_tokens: int = 256  # rationale length limit (explain; think-first "generate")
    think_first_reading: ThinkFirstReading = ThinkFirstReading.GENERATE  # score-only, think-first
    dimensions: tuple[Dimension, ...] = DIMENSIONS  # scored when a call names none
    limits: InputLimits = field(default_factory=InputLimits)  # what one input may cost
    speed: SpeedOptions = field(default_factory=SpeedOptions)  # transformers backend levers

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {list(DTYPES)}")
        try:
            object.__setattr__(self, "answer_format", AnswerFormat(self.answer_format))
        except ValueError:
            valid = ", ".join(f.value for f in AnswerFormat)
            raise ConfigError(f"unknown answer format {self.answer_format!r}; valid: "
                              f"{valid}") from None
        try:
            object.__setattr__(self, "think_first_reading",
                               ThinkFirstReading(self.think_first_reading))
        except ValueError:
            valid = ", ".join(r.value for r in ThinkFirstReading)
            raise ConfigError(f"unknown think-first reading {self.think_first_reading!r}; "
                              f"valid: {valid}") from None
        if (self.backend == "vllm" and self.answer_format is AnswerFormat.THINK_FIRST
                and self.think_first_reading is ThinkFirstReading.GENERATE):
            raise ConfigError("the vllm backend reads a think-first checkpoint only after an "
                              "empty <think></think>: set think_first_reading to empty-think, "
                              "or use the transformers backend")
        if isinstance(self.video, dict):
            object.__setattr__(self, "video", VideoConfig.from_dict(self.video))
        if isinstance(self.limits, dict):
            object.__setattr__(self, "limits", _from_fields(InputLimits, self.limits, "limits"))
        if isinstance(self.speed, dict):
            object.__setattr__(self, "speed", _from_fields(SpeedOptions, self.speed, "speed"))
        if self.backend == "vllm" and self.speed != SpeedOptions():
            raise ConfigError("speed options are the transformers backend's; vllm has its own "
                              "(leave speed at its defaults with --backend vllm)")
        object.__setattr__(self, "dimensions", parse_dimensions(self.dimensions))
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens ({self.max_new_tokens}) must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["answer_format"] = self.answer_format.value
        values["think_first_reading"] = self.think_first_reading.value
        values["dimensions"] = [d.value for d in self.dimensions]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ScorerSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise and list the valid ones."""
        return _from_fields(cls, values, "scorer")

    def scored_dimensions(self, dimensions: Any = None) -> tuple[Dimension, ...]:
        """``dimensions`` in canonical order, or the spec's own when None."""
        return parse_dimensions(self.dimensions if dimensions is None else dimensions)

    def checkpoint_dict(self) -> dict[str, Any]:
        """The fields a trained checkpoint carries (``qsave_scorer.json``)."""
        values = self.to_dict()
        return {name: values[name] for name in CHECKPOINT_FIELDS}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write :meth:`checkpoint_dict` as ``directory/qsave_scorer.json``."""
        path = Path(directory) / SPEC_FILE
        path.write_text(json.dumps(self.checkpoint_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _from_fields(cls: type, values: dict[str, Any], what: str) -> Any:
    """``cls(**values)`` with unknown keys a ``ConfigError`` listing the valid ones."""
    valid = sorted(f.name for f in fields(cls))
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {what} settings {unknown}; valid: {valid}")
    return cls(**values)


def parse_dimensions(dimensions: Any) -> tuple[Dimension, ...]:
    """Dimensions in the canonical order, without repeats; None means all three."""
    if dimensions is None:
        return DIMENSIONS
    chosen = {Dimension.parse(d) for d in dimensions}
    if not chosen:
        raise ConfigError("no dimension to score; valid dimensions: visual, dynamic, alignment")
    return tuple(d for d in DIMENSIONS if d in chosen)


def tiny_demo_dir() -> Path:
    """Where ``qsave demo --train`` saves the model it retrains: ``$QSAVE_CACHE`` (default
    ``~/.cache/qsave``) / ``tiny-demo``. Only ``--model <that folder>`` selects it; the names
    ``tiny`` and ``tiny-demo`` never do."""
    return Path(os.environ.get("QSAVE_CACHE", Path.home() / ".cache" / "qsave")) / "tiny-demo"


def shipped_tiny_demo_dir() -> Path:
    """The folder of the shipped ``tiny-demo`` model (package data, written by
    ``scripts/ship_tiny_demo.py``)."""
    return Path(__file__).resolve().parent / "assets" / "tiny-demo"


def checkpoint_dir(model: str) -> Path | None:
    """The local checkpoint folder ``model`` names: a directory, or for ``"tiny-demo"`` the
    shipped trained tiny model; None for a hub id and for ``"tiny"`` (random weights, always —
    a model retrained by ``qsave demo --train`` is selected by its folder, never by a name)."""
    if model == TINY:
        return None
    if model == TINY_DEMO:
        return shipped_tiny_demo_dir()
    return Path(model).resolve() if Path(model).is_dir() else None


def checkpoint_settings(model: str) -> tuple[dict[str, Any], Path | None]:
    """The checkpoint's saved scorer fields and the file they came from ({} and None if none)."""
    folder = checkpoint_dir(model)
    path = folder / SPEC_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}, None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read the scorer settings {path}: {error}") from error
    if not isinstance(values, dict) or set(values) - set(CHECKPOINT_FIELDS):
        raise ConfigError(f"{path}: expected an object with {list(CHECKPOINT_FIELDS)}, got "
                          f"{values!r}")
    return values, path


def resolve_spec(model: str | None = None, **overrides: Any) -> tuple[ScorerSpec, Path | None]:
    """The spec for ``model``: its checkpoint's saved settings over the defaults, then the
    explicit ``overrides`` (None values are left out; ``video`` is a VideoConfig, or a dict of
    its fields merged into the checkpoint's). Returns the spec and the settings file read."""
    model = model or TINY
    saved, source = checkpoint_settings(model)
    given = {k: v for k, v in overrides.items() if v is not None}
    video = VideoConfig.from_dict(saved.get("video", {}))
    extra = given.pop("video", None)
    if isinstance(extra, VideoConfig):
        video = extra
    elif extra:
        video = video.merged(extra)
    return ScorerSpec.from_dict({**saved, **given, "model": model, "video": video}), source
