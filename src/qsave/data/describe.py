"""Describers: the evidence about one dimension of a clip → the analysis of a training record.

Fig. 2, step 3 of the paper: the reasons raters select for low ratings are converted into
descriptions, which become the ``<think>analysis</think>`` of the CoT target (Sec. 3.4.1). A
*describer* does that conversion. It is given the dimension, the reasons (a reason code such
as ``"blur"`` or a rater's free text, each with a time range when one is known) and what is
known of the clip (:class:`Clip`: the synthetic scene, else the prompt). It is never given the
rating or the MOS, so its text can only carry the evidence, never the label.

Without reasons (MOS ≥ 4: no attribution by design, App. C.1) a describer says what the clip
shows well, drawn from the clip's own attributes; Good and Excellent get the same kind of text.

Describers are a registry (:data:`DESCRIBERS`):

- ``"template"`` (default): one clause per reason, from :data:`REASON_TEMPLATES` (a template
  per reason code; the codes are the defect kinds of :mod:`qsave.data.defects`), free text
  as written; without reasons, a description of the scene or the prompt;
- ``"lmm"``: a chat model (a Qwen3-VL loaded by :func:`qsave.model.load.load`) rewrites the
  template's facts as a short description, greedily, with the rating words banned.

>>> clip = Clip(scene=SceneSpec("red", "circle", 2, "right", "static", "cloudy sky"))
>>> describe = make_describer("template")
>>> describe(Dimension.DYNAMIC, [Reason("stutter", 1.25, 2.0), Reason("jerky start")], clip)
'The two red circles stutter instead of moving smoothly between 1.2 s and 2.0 s. Jerky start.'
>>> print(describe(Dimension.ALIGNMENT, [], clip))  # doctest: +NORMALIZE_WHITESPACE
As the prompt asks, two red circles move to the right over a cloudy sky,
filmed by a still camera.
>>> rating_words("Sharp, but a poor start; fairly good overall.")
['poor', 'good']
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qsave.data.scene import SceneSpec, number_word
from qsave.dimensions import RATINGS, Dimension
from qsave.errors import AnnotationError, ConfigError, ModelError
from qsave.prompts import escape_text
from qsave.registry import Registry

_RATING_WORD = re.compile(rf"\b({'|'.join(RATINGS)})\b", re.IGNORECASE)


def rating_words(text: str) -> list[str]:
    """The rating words (Bad … Excellent, any case, whole words) that ``text`` contains."""
    return [m.group(0) for m in _RATING_WORD.finditer(text)]


# --- what a describer is given -------------------------------------------------------------
@dataclass(frozen=True)
class Reason:
    """One reason for a low rating: a reason code (see :data:`REASON_TEMPLATES`) or free text,
    with the time range it was seen in, when known."""

    text: str  # a reason code such as "blur" or "wrong_count", or a rater's free text
    start: float | None = None  # seconds; given together with end
    end: float | None = None  # seconds, exclusive

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise AnnotationError("a reason needs a code or some text; got an empty one")
        if (self.start is None) != (self.end is None):
            raise AnnotationError(f"reason {self.text!r} needs both start and end, or neither")
        if self.start is not None and not 0 <= self.start < self.end:
            raise AnnotationError(f"reason {self.text!r} has an empty time range "
                                  f"[{self.start}, {self.end})")

    @property
    def code(self) -> str:
        """The text as a reason code: lower case, spaces and hyphens as underscores."""
        return re.sub(r"[\s-]+", "_", self.text.strip().lower())


@dataclass(frozen=True)
class Clip:
    """What is known of a clip: its generation prompt and, in the synthetic corpus, its scene."""

    prompt: str | None = None
    scene: SceneSpec | None = None

    @classmethod
    def from_row(cls, video: Mapping[str, Any]) -> Clip:
        """From a videos-table row: ``prompt``, and ``scene`` (the manifest's SceneSpec fields)."""
        prompt, scene = video.get("prompt"), video.get("scene")
        prompt = prompt.strip() if isinstance(prompt, str) and prompt.strip() else None
        if not isinstance(scene, Mapping):
            return cls(prompt)
        try:
            return cls(prompt, SceneSpec(**scene))
        except (TypeError, ConfigError) as error:
            raise AnnotationError(f"video {video.get('video_id')!r} has a bad scene {scene}: "
                                  f"{error}") from error


def defect_reasons(defects: object, dimension: Dimension) -> list[Reason]:
    """The labelled defects of a synthetic manifest row (``{dimension: [{kind, start, end,
    …}]}``) as reasons of ``dimension``, with their time ranges and without their severity."""
    if defects is None or (isinstance(defects, float) and math.isnan(defects)):
        return []
    if not isinstance(defects, Mapping):
        raise AnnotationError(f"defects should map dimensions to lists, got {defects!r}")
    return [Reason(d["kind"], d["start"], d["end"]) for d in defects.get(dimension.value, [])]


class Describer(Protocol):
    """Reasons (none: the clip shows no problem) and the clip → the analysis text."""

    def __call__(self, dimension: Dimension, reasons: Sequence[Reason], clip: Clip) -> str: ...


# --- the template describer ----------------------------------------------------------------
REASON_TEMPLATES: Registry[str] = Registry("reason code")  # code → clause ({subject}, {s}, {is_})
register_reason = REASON_TEMPLATES.add
for _code, _clause in (
    ("blur", "the picture is blurred, and edges and textures lose their detail"),
    ("noise", "grainy noise covers the picture"),
    ("blockiness", "compression blocks are visible"),
    ("banding", "smooth gradients break into visible colour bands"),
    ("lowres", "the picture is soft, as if upscaled from a low resolution"),
    ("stutter", "{subject} stutter{s} instead of moving smoothly"),
    ("frozen", "the video freezes"),
    ("jitter", "{subject} jitter{s} from frame to frame"),
    ("flicker", "the brightness flickers"),
    ("teleport", "{subject} jump{s} back and forth between positions"),
    ("deform", "the shape of {subject} wobbles, stretching and squashing"),
    ("wrong_color", "the colour of {subject} does not match the prompt"),
    ("wrong_shape", "the shape of {subject} does not match the prompt"),
    ("wrong_count", "the number of objects does not match the prompt"),
    ("wrong_direction", "{subject} move{s} in another direction than the prompt asks"),
    ("missing_object", "{subject} named in the prompt {is_} missing"),
):
    register_reason(_code, _clause)

CAMERA_WORDS: dict[str, str] = {  # each camera of qsave.data.scene.CAMERAS → who films it
    "static": "a still camera",
    "pan left": "a camera panning to the left",
    "pan right": "a camera panning to the right",
    "zoom in": "a camera slowly zooming in",
}


def _subject(clip: Clip) -> dict[str, str]:
    """The template fields of the clip's subject; "the subject" when the scene is unknown."""
    if clip.scene is None:
        return {"subject": "the subject", "s": "s", "is_": "is"}
    single = clip.scene.count == 1
    return {"subject": clip.scene.subject, "s": "s" if single else "", "is_": "is" if single
            else "are"}


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _sentence(text: str) -> str:
    text = text.strip()
    return _capital(text) + ("" if text[-1] in ".!?" else ".")


def _criteria_names(dimension: Dimension) -> str:
    """"sharpness and clarity, artifacts and distortions and aesthetics and composition"."""
    names = [c.split(":", 1)[0].strip().lower() for c in dimension.criteria]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _clause(reason: Reason, clip: Clip) -> str:
    """A reason as a clause: its code's template, or its free text; then its time range."""
    template = REASON_TEMPLATES.get(reason.code)
    clause = template.format(**_subject(clip)) if template else reason.text.strip().rstrip(".")
    if reason.start is None:
        return clause
    return f"{clause} between {reason.start:.1f} s and {reason.end:.1f} s"


def _strengths(dimension: Dimension, clip: Clip) -> str:
    """What the clip shows well in ``dimension``: its scene, else its prompt, else the
    dimension's criteria. The same text whatever the rating."""
    if clip.scene is not None:
        return _scene_strengths(dimension, clip.scene)
    if clip.prompt is not None:
        prompt = clip.prompt.rstrip(". ")
        return {
            Dimension.VISUAL: f'The frames of "{prompt}" are crisp, with clean edges, detailed '
                              "textures and no visible compression artifacts.",
            Dimension.DYNAMIC: f'The motion in "{prompt}" is fluid and stays coherent and '
                               "physically plausible from frame to frame.",
            Dimension.ALIGNMENT: f'The video shows what the prompt asks for: "{prompt}".',
        }[dimension]
    return f"The {dimension.title} holds up on {_criteria_names(dimension)}."


def _scene_strengths(dimension: Dimension, scene: SceneSpec) -> str:
    fields = _subject(Clip(scene=scene))
    subject = _capital(fields["subject"])
    toward = f"to the {scene.direction}" if scene.direction in ("left", "right") \
        else scene.direction
    if dimension is Dimension.VISUAL:
        return (f"{subject} stand{fields['s']} out with crisp edges against the "
                f"{scene.background}, whose texture keeps its fine detail; the colours are "
                "clean.")
    if dimension is Dimension.DYNAMIC:
        return (f"{subject} move{fields['s']} {toward} at an even pace, filmed by "
                f"{CAMERA_WORDS[scene.camera]}, and keep{fields['s']} the same shape, size and "
                "number from frame to frame.")
    noun = scene.shape if scene.count == 1 else f"{scene.shape}s"
    return (f"As the prompt asks, {number_word(scene.count)} {scene.color} {noun} "
            f"move{fields['s']} {toward} over a {scene.background}, filmed by "
            f"{CAMERA_WORDS[scene.camera]}.")


@dataclass(frozen=True)
class TemplateDescriber:
    """The default describer: a sentence per reason (template per code, or the free text);
    without reasons, the clip's strengths from its scene or prompt."""

    def __call__(self, dimension: Dimension, reasons: Sequence[Reason], clip: Clip) -> str:
        if not reasons:
            return _strengths(dimension, clip)
        return " ".join(_sentence(_clause(r, clip)) for r in reasons)


# --- the LMM describer ---------------------------------------------------------------------
@dataclass
class LmmDescriber:
    """A chat model writes the description from the template describer's facts (Fig. 2 step 3:
    reasons → descriptions by an LMM); greedy, text only, the rating words banned."""

    model: Any = field(repr=False)  # a transformers image-text-to-text model (Qwen3-VL)
    processor: Any = field(repr=False)  # its processor (chat template and tokenizer)
    max_new_tokens: int = 96  # length limit of one description

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens ({self.max_new_tokens}) must be at least 1")
        self._banned = _rating_token_sequences(self.processor.tokenizer)

    def prompt(self, dimension: Dimension, reasons: Sequence[Reason], clip: Clip) -> str:
        """The request: dimension, criteria, prompt, the facts to describe, the rules."""
        facts = TemplateDescriber()(dimension, reasons, clip)
        task = ("These problems were reported" if reasons else
                "No problem was reported; this is what the video shows")
        words = ", ".join(RATINGS)
        return (f"You write the analysis part of a {dimension.title} assessment of a "
                f"generated video.\nCriteria: {'; '.join(dimension.criteria)}.\n"
                f"Prompt of the video: {clip.prompt or 'unknown'}\n{task}: {facts}\n"
                "Describe this evidence in two or three plain sentences, keeping any times. "
                f"Do not give a rating and do not use the words {words}.")

    def __call__(self, dimension: Dimension, reasons: Sequence[Reason], clip: Clip) -> str:
        tokenizer = self.processor.tokenizer
        text = escape_text(self.prompt(dimension, reasons, clip), tokenizer)
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        chat = self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        batch = self.processor(text=[chat], return_tensors="pt").to(self.model.device)
        out = self.model.generate(**batch, do_sample=False, max_new_tokens=self.max_new_tokens,
                                  bad_words_ids=self._banned,
                                  pad_token_id=tokenizer.pad_token_id)
        new = out[0, batch["input_ids"].shape[1]:]
        answer = tokenizer.decode(new, skip_special_tokens=True).strip()
        if not answer:
            raise ModelError(f"the lmm describer wrote nothing for the {dimension.title} of "
                             f"{clip.prompt!r}")
        return answer


def _rating_token_sequences(tokenizer: Any) -> list[list[int]]:
    """Token sequences of the rating words (as written, lower and upper case, with and without
    a leading space), for ``generate(bad_words_ids=…)``."""
    variants = {f"{space}{form}" for word in RATINGS for form in (word, word.lower(),
                word.upper()) for space in ("", " ")}
    return [tokenizer.encode(v, add_special_tokens=False) for v in sorted(variants)]


# --- registry ------------------------------------------------------------------------------
def _template(model: Any = None) -> Describer:
    if model is not None:
        raise ConfigError("the template describer takes no model")
    return TemplateDescriber()


def _lmm(model: Any = None) -> Describer:
    if model is None:
        raise ConfigError("the 'lmm' describer writes with a model: load one "
                          "(qsave.model.load.load) and pass make_describer('lmm', loaded) to "
                          "build_records(describer=…), or run qsave data records --describer "
                          "lmm --describer-model CHECKPOINT")
    return LmmDescriber(model.model, model.processor)


DescriberFactory = Callable[[Any], Describer]  # (a loaded model or None) → describer
DESCRIBERS: Registry[DescriberFactory] = Registry("describer")
register_describer = DESCRIBERS.add  # register_describer("mine", factory)
register_describer("template", _template)
register_describer("lmm", _lmm)


def make_describer(name: str, model: Any = None) -> Describer:
    """The describer registered as ``name``; ``model``: a loaded model (``.model`` and
    ``.processor``, e.g. :class:`qsave.model.load.LoadedModel`) for a describer that needs one."""
    return DESCRIBERS.lookup(name)(model)


def no_reason_given(dimension: Dimension) -> str:
    """The analysis of a clip whose MOS is below 4 but whose problems nobody named; it says
    only that the dimension falls short (the same text for every rating below 4)."""
    return (f"The {dimension.title} falls short on {_criteria_names(dimension)}, though no "
            "specific problem was annotated.")
