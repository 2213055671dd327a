"""The reward server's contract: typed requests and responses, and the OpenAPI schema made true.

``/score`` and ``/reward`` take a multipart form (uploads, or paths) or the same fields as a JSON
body (paths, or base64 videos), one model for each. Every request field has a type and a range
(pydantic; the JSON models are strict: ``1`` is not ``true``), so a bad field is a 422 naming it
in FastAPI's standard body (``{"detail": [{"loc", "msg", "type"}]}``); every other refusal is
``{"detail": "<why>"}`` with its status, and each route lists every status it can answer.
The limits that depend on the server's settings (prompt length, items per request) are built
into the models by :func:`request_models`, so the schema states the running server's values.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin

from fastapi import UploadFile
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Json,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import models_json_schema

from qsave.dimensions import DIMENSIONS, RATINGS

DimensionName = Literal["visual", "dynamic", "alignment"]
assert set(DimensionName.__args__) == {d.value for d in DIMENSIONS}
MAX_WEIGHT = 1e6  # a reward weight at most (weights are relative; normalised by their maximum)
MAX_PATH_CHARS = 4096
MAX_ID_CHARS = 200

# standard base64, padded, no line breaks (what ``base64 -w0`` writes); anchored for the schema
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_BASE64 = re.compile(BASE64)


def _unicode(value: str) -> str:
    """Text that can be written back as UTF-8: a JSON ``"\\ud800"`` (a lone surrogate) cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("not valid Unicode text: a lone surrogate at character "
                         f"{error.start}") from None
    return value


def _base64(value: str) -> str:
    """Checked without decoding it (the server checks the size before it decodes)."""
    if not _BASE64.fullmatch(value):
        raise ValueError("not base64: the standard alphabet (A-Z a-z 0-9 + /), padded with = "
                         "to a multiple of 4 characters, without spaces or line breaks "
                         "(base64 -w0)")
    return value


Text = Annotated[str, AfterValidator(_unicode)]
PathText = Annotated[Text, Field(min_length=1, max_length=MAX_PATH_CHARS)]
IdText = Annotated[Text, Field(min_length=1, max_length=MAX_ID_CHARS)]
# strict: a JSON ``true`` is not the weight 1
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False, strict=True)]
WEIGHTS_SCHEMA = {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "properties": {d.value: {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT}
                   for d in DIMENSIONS},
    "not": {"additionalProperties": {"const": 0}},  # not all zero: at least one positive
    "description": "Relative weight per dimension (at least one positive); the reward is the "
                   "weighted mean of the dimension scores.",
    "examples": [{"visual": 1, "dynamic": 1, "alignment": 2}],
}
Weights = Annotated[Json[dict[DimensionName, Weight]], WithJsonSchema(
    {**WEIGHTS_SCHEMA, "description": WEIGHTS_SCHEMA["description"] + " Sent as a JSON part."})]
JsonWeights = Annotated[dict[DimensionName, Weight], WithJsonSchema(WEIGHTS_SCHEMA)]
Upload = Annotated[UploadFile, WithJsonSchema({"type": "string", "format": "binary",
                                               "contentMediaType": "application/octet-stream"})]


def _source(description: str, schema: dict[str, Any] | None = None, **constraints: Any) -> Any:
    """A JSON video source (``path``, ``video_b64``): optional, never null (a null would meet
    the schema's "required" of the exactly-one rule while giving no video); ``schema``: more
    keywords for its schema only."""

    def extra(field_schema: dict[str, Any]) -> None:
        field_schema.pop("default", None)
        field_schema.update(schema or {})

    return Field(None, description=description, json_schema_extra=extra, **constraints)


def _comma_separated(value: Any) -> Any:
    """``"visual,dynamic"`` (one form field) or repeated fields, both accepted."""
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, str) for v in values):
        return [part.strip() for v in values for part in v.split(",") if part.strip()]
    return value


def _exactly_one(*names: str) -> dict[str, Any]:
    """The schema's "one of these fields": a ``oneOf`` inside ``allOf``, as a ``oneOf`` at the
    top would make a generated client (openapi-python-client) take the form for a union of
    untyped bodies, with no form model to send."""
    return {"allOf": [{"oneOf": [{"required": [name]} for name in names]}]}


def _form_bool(value: Any) -> Any:
    """A form's boolean: ``true`` or ``false`` in any case (``str(True)`` too), not ``1``
    or ``yes``, which the schema's boolean does not allow."""
    return {"true": True, "false": False}.get(value.lower(), value) \
        if isinstance(value, str) else value


FormBool = Annotated[bool, BeforeValidator(_form_bool), Field(strict=True)]


def _positive_weight(weights: dict[str, float] | None) -> dict[str, float] | None:
    if weights is not None and not any(w > 0 for w in weights.values()):
        raise ValueError("at least one weight must be positive")
    return weights


class RequestModels(NamedTuple):
    """The request bodies of ``/score`` and ``/reward``: a multipart form and a JSON body each."""

    score_form: type[BaseModel]
    reward_form: type[BaseModel]
    score_json: type[BaseModel]
    reward_json: type[BaseModel]


def request_models(max_prompt_chars: int, max_items: int) -> RequestModels:
    """The request models with the server's limits in their fields and schema. The JSON models
    mirror the forms field by field, except that a video is a ``path`` or ``video_b64`` (no
    upload) and ``/reward`` takes ``items`` (each a video and its prompt) instead of aligned
    lists."""
    Prompt = Annotated[Text, Field(max_length=max_prompt_chars,
                                   description="The generation prompt (text only: control "
                                               "tokens in it are escaped).")]
    Dimensions = Annotated[list[DimensionName], Field(min_length=1, max_length=len(DIMENSIONS))]

    class ScoreForm(BaseModel):
        """One video: an upload ``video`` or a ``path`` inside the server's allowed root."""

        model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one("video", "path"))

        video: Upload | None = Field(None, description="The video file (give this or path).")
        path: PathText | None = Field(None, description="A file inside the allowed root (or "
                                                        "video).")
        prompt: Prompt | None = None
        dimensions: Dimensions | None = Field(
            None, description="Dimensions to score (repeated, or comma-separated); default all.")
        explain: FormBool = Field(False, description="Also generate a rationale per dimension.")
        id: IdText | None = Field(None, description="An id echoed in the result (default: the "
                                                    "file's stem).")

        _dimensions = field_validator("dimensions", mode="before")(_comma_separated)

        @model_validator(mode="after")
        def _one_source(self) -> ScoreForm:
            if (self.video is None) == (self.path is None):
                raise ValueError("give either an uploaded video or a path (not both)")
            return self

    class RewardForm(BaseModel):
        """A batch: uploads ``videos`` or ``paths`` (repeated), one prompt per video."""

        model_config = ConfigDict(extra="forbid",
                                  json_schema_extra=_exactly_one("videos", "paths"))

        videos: list[Upload] | None = Field(None, min_length=1, max_length=max_items,
                                            description="Video files (or paths).")
        paths: list[PathText] | None = Field(None, min_length=1, max_length=max_items,
                                             description="Files inside the allowed root (or "
                                                         "videos).")
        prompts: list[Prompt] | None = Field(None, min_length=1, max_length=max_items,
                                             description="One prompt per video, in order.")
        weights: Weights | None = None

        _weights = field_validator("weights")(_positive_weight)

        @model_validator(mode="after")
        def _aligned(self) -> RewardForm:
            if (self.videos is None) == (self.paths is None):
                raise ValueError("give either uploaded videos or paths (not both)")
            count = len(self.videos or self.paths or [])
            if self.prompts is not None and len(self.prompts) != count:
                raise ValueError(f"{count} videos but {len(self.prompts)} prompts")
            return self

    class JsonVideo(BaseModel):
        """A video in a JSON body: ``path`` inside the allowed root, or ``video_b64``."""

        model_config = ConfigDict(extra="forbid", strict=True,
                                  json_schema_extra=_exactly_one("path", "video_b64"))

        path: PathText = _source("A file inside the allowed root (or video_b64).")
        video_b64: Annotated[str, AfterValidator(_base64)] = _source(
            "The video file's bytes in base64 (or path); at most the server's max_video_mb "
            "once decoded. For small clips: base64 adds a third to the body.",
            {"pattern": BASE64, "contentEncoding": "base64"}, min_length=4)
        prompt: Prompt | None = None

        @model_validator(mode="after")
        def _one_source(self) -> JsonVideo:
            if (self.path is None) == (self.video_b64 is None):
                raise ValueError("give exactly one of path and video_b64")
            return self

    class ScoreJson(JsonVideo):
        """One video (``path`` or ``video_b64``), the fields of the form."""

        dimensions: Dimensions | None = Field(None, description="Dimensions to score; default "
                                                                "all.")
        explain: bool = Field(False, description="Also generate a rationale per dimension.")
        id: IdText | None = Field(None, description="An id echoed in the result (default: the "
                                                    "path's stem, or video-0).")

    class RewardJsonItem(JsonVideo):
        """One video of a batch (``path`` or ``video_b64``) and its prompt."""

    class RewardJson(BaseModel):
        """A batch: ``items`` (each a video and its prompt), optional ``weights``."""

        model_config = ConfigDict(extra="forbid", strict=True)

        items: list[RewardJsonItem] = Field(min_length=1, max_length=max_items,
                                            description="The videos, in order.")
        weights: JsonWeights | None = None

        _weights = field_validator("weights")(_positive_weight)

    return RequestModels(ScoreForm, RewardForm, ScoreJson, RewardJson)


def empty_field_errors(form_model: type[BaseModel], form: Any) -> list[dict[str, Any]]:
    """A 422's problems for the single-valued fields of ``form`` (the raw multipart form) sent
    empty where their schema refuses an empty value (``id=``, ``explain=``, ``weights=``).

    FastAPI takes an empty form field as one left out, which would let them through as their
    default; an empty ``prompt`` is a prompt left out, as its schema allows."""
    problems = []
    for name, value in form.multi_items():
        field = form_model.model_fields.get(name)
        if value != "" or field is None or _is_list(field.annotation):
            continue  # an empty item of a list reaches the model, which checks it
        try:
            TypeAdapter(Annotated[field.annotation, field]).validate_python("")
        except ValidationError as error:
            first = error.errors()[0]
            problems.append({"loc": ["body", name], "msg": first["msg"], "type": first["type"]})
    return problems


def _is_list(annotation: Any) -> bool:
    return any(get_origin(a) is list for a in (annotation, *get_args(annotation)))


# ---- responses ----------------------------------------------------------------------------
class Message(BaseModel):
    """Why a request was refused (every status but 422)."""

    detail: str = Field(examples=["missing or invalid bearer token"])


class ItemErrorModel(BaseModel):
    """Why one video has no scores: the error's class and message."""

    type: str = Field(examples=["VideoError"])
    message: str


Probability = Annotated[float, Field(ge=0, le=1)]


class RatingProbs(BaseModel):
    """The softmax over the five rating tokens (Sec. 4.2.2)."""

    Bad: Probability
    Poor: Probability
    Fair: Probability
    Good: Probability
    Excellent: Probability


class DimensionScoreModel(BaseModel):
    """One dimension's score (Sec. 4.2.2)."""

    score: float = Field(ge=0, le=1, description="r̂ = Σ p_j·w_j (0..1)")
    mos: float = Field(ge=1, le=5, description="1 + 4·r̂")
    probs: RatingProbs = Field(description="Probability of each rating word")
    rating: Literal[RATINGS] = Field(description="The most likely rating word")  # type: ignore[valid-type]
    entropy: float = Field(ge=0, description="−Σ p_j ln p_j (nats)")
    rationale: str | None = Field(None, description="The generated analysis (explain)")


class ModelInfoModel(BaseModel):
    """The model that scored."""

    id: str
    revision: str | None
    dtype: str
    device: str | None
    adapter: str | None = None


class BatchModel(BaseModel):
    """The forward batch a video went through."""

    id: int
    size: int
    queue_s: float
    run_s: float


MODEL_EXAMPLE = {"id": "Qwen/Qwen3-VL-8B-Instruct", "revision": None, "dtype": "bfloat16",
                 "device": "cuda:0", "adapter": None}
SCORE_EXAMPLE = {"score": 0.71, "mos": 3.84,
                 "probs": {"Bad": 0.01, "Poor": 0.05, "Fair": 0.2, "Good": 0.52,
                           "Excellent": 0.22},
                 "rating": "Good", "entropy": 1.19}


class ScoreResponse(BaseModel):
    """The row of ``qsave score`` (without the server-side path), and its batch."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "clip", "content_hash": "sha256:9f2c…", "prompt": "a red cube slides left",
        "scores": {"visual": SCORE_EXAMPLE}, "error": None, "model": MODEL_EXAMPLE,
        "settings": {"dimensions": ["visual"], "explain": False}, "video": {"num_tokens": 4120},
        "batch": {"id": 12, "size": 4, "queue_s": 0.01, "run_s": 0.35}}]})

    id: str
    content_hash: str | None
    prompt: str | None
    scores: dict[DimensionName, DimensionScoreModel]
    error: ItemErrorModel | None
    model: ModelInfoModel | None
    settings: dict[str, Any]
    video: dict[str, Any] | None = Field(description="The frame plan (slow/fast, tokens)")
    batch: BatchModel | None


class RewardItemModel(BaseModel):
    """One video's reward, its dimension scores, its error."""

    id: str
    content_hash: str | None
    reward: float
    scores: dict[DimensionName, float]
    error: ItemErrorModel | None


class RewardResponse(BaseModel):
    """One reward per video (input order) and the parts."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "rewards": [0.64, 0.0], "weights": {"visual": 1.0, "dynamic": 1.0, "alignment": 1.0},
        "items": [{"id": "0", "content_hash": "sha256:9f2c…", "reward": 0.64, "error": None,
                   "scores": {"visual": 0.71, "dynamic": 0.58, "alignment": 0.63}},
                  {"id": "1", "content_hash": "sha256:41aa…", "reward": 0.0, "scores": {},
                   "error": {"type": "VideoError", "message": "no decodable video frames"}}],
        "model": MODEL_EXAMPLE, "warnings": []}]})

    rewards: list[float]
    items: list[RewardItemModel]
    weights: dict[DimensionName, float]
    model: ModelInfoModel
    warnings: list[str] = Field(description="Reward-collapse warnings (App. G)")


class HealthResponse(BaseModel):
    """Whether the server takes work now, and what it holds."""

    status: Literal["ok", "overloaded"]
    model: ModelInfoModel
    device: str | None
    auth: bool
    in_flight: int = Field(description="Videos admitted and not finished")
    max_queue: int
    queue: int = Field(description="Videos waiting for the model")
    decodes_in_progress: int
    decode_slots: int


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of the statuses a route can answer besides 200 and 422."""
    reasons = {400: "Malformed body (multipart or JSON)", 401: "Missing or invalid bearer token",
               403: "Path outside the allowed root, or a cross-site/foreign-host request",
               408: "The body did not arrive in time", 413: "Too large: body, upload, video "
               "(pixels, frames, duration) or prompt over the server's limits",
               415: "Not a multipart/form-data body", 503: "Overloaded: retry later",
               504: "Scoring took longer than the request timeout"}
    return {status: {"model": Message, "description": reasons[status]} for status in statuses}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a form route that takes ``model`` as a JSON body too (its
    schema is added by :func:`fix_schema`)."""
    return {"requestBody": {"content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def fix_schema(schema: dict[str, Any], json_models: tuple[type[BaseModel], ...] = ()
               ) -> dict[str, Any]:
    """The generated schema with the JSON bodies' models added (FastAPI lists only the form
    routes), and optional form fields without their ``null`` branch (a form field is left
    out, never null)."""
    _, definitions = models_json_schema([(model, "validation") for model in json_models],
                                        ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.get("$defs", {}))  # the names ScoreJson… are unique
    for name, component in components.items():
        if not name.endswith("Form"):
            continue
        for field in component.get("properties", {}).values():
            branches = field.get("anyOf")
            if branches and {"type": "null"} in branches and len(branches) == 2:
                field.update(next(b for b in branches if b != {"type": "null"}))
                del field["anyOf"]
    return schema
