"""The HTTP reward server: ``qsave serve`` (paper Sec. 5, Table 5: the evaluator as a reward model).

Endpoints (FastAPI; the schema at ``/openapi.json`` is the contract, ``/docs`` renders it):

* ``POST /score`` — one video (a multipart upload ``video``, or ``path`` inside the configured
  ``allowed_root``), ``prompt``, ``dimensions``, ``explain``; returns the result record of
  ``qsave score`` (per-dimension score, MOS, probabilities, rating, entropy).
* ``POST /reward`` — a batch: uploads ``videos`` or ``paths`` (repeated fields), ``prompts``
  (repeated, aligned), optional ``weights`` (a JSON object); one scalar reward per item, the
  weighted mean of the dimension scores (App. D.2's *Overall* by default), and the parts.
* Both also take a JSON body (``Content-Type: application/json``; ``api.py``'s ``ScoreJson``
  and ``RewardJson``): the same fields, a video as ``path`` or base64 ``video_b64``, and on
  ``/reward`` a list of ``items`` (video and prompt); the same checks and the same answers.
* ``GET /health`` (503 "overloaded" when a new video would be refused) and ``GET /metrics``
  (Prometheus text), both without authentication.

Concurrent requests are micro-batched (``batcher.py``): videos decode in a pool of
``max_decodes`` threads, the forward passes run in one model thread. A video that cannot be
decoded or scored is a per-item ``error`` (HTTP 200; ``/reward`` gives it ``error_reward``),
never a failed batch.

Bounds, so that no request can take the server down:

* Before the body is read (``guard.py``): the bearer token (401), and without a token a
  loopback ``Host`` and no foreign ``Origin`` (403); the body's size (``max_request_mb``, 413)
  and arrival time (``request_timeout_s``, 408).
* Each field typed and ranged (``api.py``, 422 naming the field); each upload or base64 video
  at most ``max_video_mb`` (413; base64 measured before it is decoded); a ``path`` resolved
  (symbolic links included) inside ``allowed_root`` (403).
* Before a video is decoded: its header against the scorer's limits (pixels per frame, frames,
  duration) and the prompt against its character and token limits — on ``/score`` a 413 with
  the figures, on ``/reward`` that item's error.
* Admission: at most ``max_queue`` videos in flight (decoding, waiting, or in a batch); beyond,
  503 with ``Retry-After`` — ``/reward`` is admitted whole or not at all.
* A request that times out (504) or whose client hangs up has its work cancelled: the decode
  stops at the next packet, its queued items leave the queue, a running batch finishes and its
  result is dropped; ``qsave_cancelled_items`` counts them by stage.
"""


import asyncio
import base64
import json
import logging
import signal
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.routing import Match

from qsave.dimensions import DIMENSIONS
from qsave.errors import ConfigError, LimitError, QsaveError, error_class
from qsave.evaluator import Evaluator, Prepared, ScoreItem
from qsave.scores import VideoResult
from qsave.serve import api
from qsave.serve.batcher import BatcherConfig, BatchInfo, MicroBatcher, Overloaded
from qsave.serve.guard import MB, Guard, is_loopback
from qsave.serve.metrics import Metrics
from qsave.serve.reward import CollapseMonitor, RewardConfig, batch_stats, reward_of
from qsave.spec import ScorerSpec, parse_dimensions

log = logging.getLogger("qsave.serve")
CLIENT_GONE = 499  # nginx's "client closed request": the status recorded for a hung-up client
MULTIPART = "multipart/form-data"  # the requests' media type (uploads beside the fields)
HANGUP_POLL_S = 0.2  # how often a running request checks that its client is still there


@dataclass(frozen=True)
class ServeConfig:
    """The reward server; ``qsave serve`` flags mirror the fields (the model's through the
    scorer spec, whose ``limits`` bound each video and prompt)."""

    scorer: ScorerSpec = field(default_factory=ScorerSpec)  # model, backend, video, limits …
    host: str = "127.0.0.1"  # address to bind
    port: int = 8000  # port to bind (0: any free port)
    token: str | None = None  # bearer token required on /score and /reward; None: no auth
    allowed_root: str | None = None  # directory whose files may be scored by `path`
    max_video_mb: float = 256.0  # one uploaded (or base64) video at most (MiB)
    max_request_mb: float = 1024.0  # a whole request body at most (MiB)
    max_items: int = 64  # videos in one /reward request at most
    request_timeout_s: float = 300.0  # body upload, and scoring, each within this time
    max_batch_size: int = 8  # videos per forward pass at most
    max_wait_ms: float = 10.0  # how long a request waits for others to share its batch
    max_queue: int = 256  # videos in flight at most (decoding, waiting, in a batch); then 503
    max_decodes: int = 2  # videos decoded at once (threads; FFmpeg threads within each)
    weights: dict[str, float] = field(  # default reward weights per dimension
        default_factory=lambda: {d.value: 1.0 for d in DIMENSIONS})
    error_reward: float = 0.0  # the reward of a video that cannot be scored
    allow_unauthenticated: bool = False  # allow no token on a non-loopback address

    def __post_init__(self) -> None:
        ConfigError.require_finite(self)
        for name in ("max_video_mb", "max_request_mb", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be positive")
        for name in ("max_items", "max_decodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port ({self.port}) must be in 0..65535")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the token must not be empty")
        if self.token is None and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host!r} without a token: set QSAVE_SERVE_TOKEN or "
                "--token-file, bind 127.0.0.1, or pass --allow-unauthenticated")
        RewardConfig(self.weights, self.error_reward)  # validates the weights
        self.batcher  # validates the batching settings  # noqa: B018

    @property
    def batcher(self) -> BatcherConfig:
        return BatcherConfig(self.max_batch_size, self.max_wait_ms / 1000, self.max_queue)

    def public(self) -> dict[str, Any]:
        """The settings without the token (for logs)."""
        values = asdict(self)
        values["scorer"] = self.scorer.to_dict()
        values["token"] = "set" if self.token else None
        return values


# ---- scoring jobs -------------------------------------------------------------------------
@dataclass
class Job:
    """One prepared video waiting for the model, with what it is scored on."""

    prepared: Prepared
    dimensions: tuple  # tuple[Dimension, ...]
    explain: bool = False

    @property
    def key(self) -> tuple:
        return (self.dimensions, self.explain)


def score_jobs(evaluator: Evaluator, jobs: list[Job]) -> list[VideoResult]:
    """Score jobs of one key in one call (the batcher never mixes keys)."""
    first = jobs[0]
    return evaluator.score_prepared([job.prepared for job in jobs], first.dimensions,
                                    first.explain)


def resolve_inside(root: str | Path, raw: str) -> Path:
    """The file ``raw`` names under ``root``; ``PermissionError`` when it escapes the root
    (``..``, an absolute path elsewhere, a symbolic link pointing out, a NUL byte)."""
    if "\x00" in raw:
        raise PermissionError("the path contains a NUL byte")
    base = Path(root).resolve()
    target = (base / raw).resolve()
    if not target.is_relative_to(base):
        raise PermissionError(f"the path {raw!r} is outside the allowed root")
    return target


def stem_of(filename: str | None, fallback: str) -> str:
    """A display id from an upload's file name (never used as a path)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem[:api.MAX_ID_CHARS] or fallback


def limit_reason(result: VideoResult) -> str | None:
    """The metric label of a result refused by a limit (None when it was not)."""
    if result.error is None or not issubclass(error_class(result.error.type), LimitError):
        return None
    return "video_limit" if result.error.type == "VideoLimitError" else "prompt_limit"


# ---- the service --------------------------------------------------------------------------
class Service:
    """What the endpoints share: the evaluator, the decode pool, the batcher, the admission
    count, the metrics, the config."""

    def __init__(self, evaluator: Evaluator, config: ServeConfig) -> None:
        self.evaluator, self.config = evaluator, config
        self.reward = RewardConfig(config.weights, config.error_reward)
        self.monitor = CollapseMonitor()  # follows /reward batches (one RL step each)
        self.in_flight = 0  # videos admitted and not finished (event-loop thread only)
        self.decoding = 0  # videos being decoded now (decode threads)
        self._count = threading.Lock()
        self.decoder = ThreadPoolExecutor(config.max_decodes, thread_name_prefix="qsave-decode")
        self.metrics = Metrics({"queue_depth": lambda: self.batcher.depth,
                                "decodes_in_progress": lambda: self.decoding,
                                "items_in_flight": lambda: self.in_flight})
        self.batcher = MicroBatcher(lambda jobs: score_jobs(evaluator, jobs), config.batcher,
                                    on_batch=self.metrics.on_batch)

    @property
    def overloaded(self) -> bool:
        """True when one more video would be refused (503)."""
        return self.in_flight >= self.config.max_queue

    @contextmanager
    def admitted(self, count: int) -> Iterator[None]:
        """Hold ``count`` places in flight for a request, or refuse it whole (503)."""
        if self.in_flight + count > self.config.max_queue:
            self.metrics.refused.labels("overloaded").inc()
            raise HTTPException(503, f"overloaded: {self.in_flight} videos in flight, "
                                     f"max_queue {self.config.max_queue}; retry later",
                                headers={"Retry-After": "1"})
        self.in_flight += count
        try:
            yield
        finally:
            self.in_flight -= count

    def health(self) -> dict[str, Any]:
        info = self.evaluator.info
        return {"status": "overloaded" if self.overloaded else "ok", "model": info.to_dict(),
                "device": info.device, "auth": self.config.token is not None,
                "in_flight": self.in_flight, "max_queue": self.config.max_queue,
                "queue": self.batcher.depth, "decodes_in_progress": self.decoding,
                "decode_slots": self.config.max_decodes}

    def prepare(self, item: ScoreItem, dims: tuple, explain: bool,
                cancel: threading.Event) -> Job | VideoResult:
        """Check, hash and decode one video through the pipeline (in a decode thread); its
        result with the error when that fails."""
        with self._count:
            self.decoding += 1
        try:
            prepared = self.evaluator.prepare(item, dims, explain, cancel)
        finally:
            with self._count:
                self.decoding -= 1
        if isinstance(prepared, VideoResult):
            prepared.error = replace(prepared.error,
                                     message=self._without_root(prepared.error.message))
            return prepared
        return Job(prepared, dims, explain)

    def _without_root(self, message: str) -> str:
        """An error text with the server's allowed root left out (no absolute paths leak)."""
        root = self.config.allowed_root
        return message.replace(str(Path(root).resolve()) + "/", "") if root else message

    async def score_one(self, item: ScoreItem, dims: tuple, explain: bool
                        ) -> tuple[VideoResult, BatchInfo | None]:
        """Decode (in the pool) and score (through the batcher) one admitted video. Cancelled
        (its request timed out or hung up), it stops its decode or leaves the queue."""
        cancel, stage = threading.Event(), "decode"
        try:
            loop = asyncio.get_running_loop()
            job = await loop.run_in_executor(self.decoder, self.prepare, item, dims, explain,
                                             cancel)
            result, info = job, None
            if isinstance(job, Job):
                stage = "queue"
                try:
                    future = self.batcher.submit(job, job.key, with_info=True)
                except Overloaded as error:
                    raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from error
                try:
                    result, info = await asyncio.wrap_future(future)
                except asyncio.CancelledError:
                    stage = "queue" if future.cancel() else "batch"
                    raise
        except asyncio.CancelledError:
            cancel.set()
            self.metrics.cancelled.labels(stage).inc()
            raise
        self.metrics.on_result(result)
        if (reason := limit_reason(result)) is not None:
            self.metrics.refused.labels(reason).inc()
        return result, info

    async def attend(self, request: Request, work: Coroutine) -> Any:
        """``work``'s result; cancelled when the client hangs up or ``request_timeout_s``
        passes (504)."""
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(_hung_up(request))
        try:
            done, _ = await asyncio.wait({task, watch}, timeout=self.config.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task in done:
            return task.result()
        if watch in done:
            raise HTTPException(CLIENT_GONE, "the client closed the connection")
        raise HTTPException(504, f"scoring took longer than {self.config.request_timeout_s} s")

    def close(self) -> None:
        """Finish the batch in progress, fail what still waits, stop the decode pool."""
        self.batcher.close(timeout=None)
        self.decoder.shutdown(wait=True, cancel_futures=True)


async def _hung_up(request: Request) -> None:
    """Returns once the client has closed the connection."""
    while not await request.is_disconnected():
        await asyncio.sleep(HANGUP_POLL_S)


def public_record(result: VideoResult, info: BatchInfo | None) -> dict[str, Any]:
    """The row of ``qsave score`` without the server-side path, with the batch it went in."""
    record = result.to_record()
    record.pop("path", None)
    record["batch"] = asdict(info) if info is not None else None
    return record


# ---- the application ----------------------------------------------------------------------
def create_app(config: ServeConfig, evaluator: Evaluator | None = None) -> Any:
    """The FastAPI application; ``evaluator`` defaults to loading ``config.scorer``."""
    if evaluator is None:
        evaluator = Evaluator.from_spec(config.scorer)
    service = Service(evaluator, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="qsave reward server", version="2", lifespan=lifespan,
                  description=__doc__.split("\n\n")[0])
    app.state.service = service
    app.add_exception_handler(RequestValidationError, _invalid)
    auth = [Depends(HTTPBearer(description="QSAVE_SERVE_TOKEN of the server"))] \
        if config.token else []
    models = api.request_models(evaluator.spec.limits.max_prompt_chars, config.max_items)
    _score_routes(app, service, auth, models.score_form, models.score_json)
    _reward_routes(app, service, auth, models.reward_form, models.reward_json)
    _info_routes(app, service)
    schema = app.openapi
    app.openapi = lambda: app.openapi_schema or api.fix_schema(
        schema(), (models.score_json, models.reward_json))
    app.add_middleware(Guard, config=config, metrics=service.metrics)
    return app


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 with where and why for each problem, never the input itself (which may be huge or
    not JSON: a NaN)."""
    problems = [{"loc": list(e["loc"]), "msg": _message(e), "type": e["type"]}
                for e in error.errors()]
    return JSONResponse({"detail": problems}, status_code=422)


def _message(error: dict[str, Any]) -> str:
    """A problem's message; for a JSON body that does not parse, where it broke."""
    if error["type"] == "json_invalid":
        return f"{error['msg']}: {error.get('ctx', {}).get('error', '')}"
    return error["msg"]


class JsonRoute(APIRoute):
    """A route for JSON bodies (``Content-Type: application/json``) only: a request with
    another body goes on to the next route of its path and method (the form's), so it must
    be added before that one."""

    def matches(self, scope: dict) -> tuple[Match, dict]:
        match, child = super().matches(scope)
        if match is Match.FULL and not _is_json(scope):
            return Match.NONE, {}
        return match, child


def _is_json(scope: dict) -> bool:
    value = dict(scope.get("headers") or []).get(b"content-type", b"")
    return value.split(b";")[0].strip().lower() == b"application/json"


def _no_empty_fields(form_model: type) -> Any:
    """A dependency: 422 for a field sent empty where its schema refuses an empty value
    (FastAPI would take it as left out)."""

    async def check(request: Request) -> None:
        if problems := api.empty_field_errors(form_model, await request.form()):
            raise RequestValidationError(problems)

    return Depends(check)


def _score_routes(app: Any, service: Service, auth: list, form_model: type,
                  json_model: type) -> None:
    config = service.config
    refused = api.refusals(400, 401, 403, 408, 413, 503, 504)

    async def scored(request: Request, source: Any, name: str, body: Any) -> Any:
        """What both bodies share once their video is found."""
        item = ScoreItem(source, body.prompt or None, body.id or name)
        with service.admitted(1):
            result, info = await service.attend(request, service.score_one(
                item, parse_dimensions(body.dimensions), body.explain))
        if limit_reason(result) is not None:
            raise HTTPException(413, result.error.message)
        return public_record(result, info)

    async def score_json(request: Request, body: json_model) -> Any:
        (source, name), = _json_inputs([body], "", config)
        return await scored(request, source, name, body)

    app.router.add_api_route("/score", score_json, methods=["POST"], dependencies=auth,
                             response_model=api.ScoreResponse, include_in_schema=False,
                             route_class_override=JsonRoute)

    @app.post("/score", dependencies=[*auth, _no_empty_fields(form_model)],
              summary="Score one video", response_model=api.ScoreResponse, responses=refused,
              openapi_extra=api.json_body(json_model))
    async def score(request: Request,
                    form: Annotated[form_model, Form(media_type=MULTIPART)]) -> Any:
        """One video's scores per dimension (the record of ``qsave score``); a video or prompt
        over the server's limits is refused with 413, one that cannot be decoded gets
        ``error``. A multipart form, or the same fields as JSON (``ScoreJson``)."""
        (source, name), = _inputs([form.video] if form.video else None,
                                  [form.path] if form.path else None, config)
        return await scored(request, source, name, form)


def _reward_routes(app: Any, service: Service, auth: list, form_model: type,
                   json_model: type) -> None:
    config = service.config
    refused = api.refusals(400, 401, 403, 408, 413, 503, 504)

    async def rewarded(request: Request, inputs: list[tuple[Any, str]],
                       prompts: list[str | None], weights: dict[str, float] | None) -> Any:
        """What both bodies share once their videos are found."""
        rewarding = (service.reward if weights is None
                     else RewardConfig(weights, service.reward.error_reward))
        items = [ScoreItem(source, text or None, name)
                 for (source, name), text in zip(inputs, prompts, strict=True)]
        with service.admitted(len(items)):
            done = await service.attend(request, _all(
                service.score_one(item, rewarding.dimensions, False) for item in items))
        results = [result for result, _ in done]
        rewards = [reward_of(result, rewarding) for result in results]
        warnings = service.monitor.update(batch_stats(rewards))
        for message in warnings:
            log.warning(message)
        return {"rewards": [item.reward for item in rewards],
                "items": [{"id": r.id, "content_hash": r.content_hash, **item.to_dict()}
                          for r, item in zip(results, rewards, strict=True)],
                "weights": rewarding.weights, "model": service.evaluator.info.to_dict(),
                "warnings": warnings}

    async def reward_json(request: Request, body: json_model) -> Any:
        inputs = _json_inputs(body.items, "items", config)
        return await rewarded(request, inputs, [item.prompt for item in body.items],
                              body.weights)

    app.router.add_api_route("/reward", reward_json, methods=["POST"], dependencies=auth,
                             response_model=api.RewardResponse, include_in_schema=False,
                             route_class_override=JsonRoute)

    @app.post("/reward", dependencies=[*auth, _no_empty_fields(form_model)],
              summary="Rewards for a batch", response_model=api.RewardResponse,
              responses=refused, openapi_extra=api.json_body(json_model))
    async def reward(request: Request,
                     form: Annotated[form_model, Form(media_type=MULTIPART)]) -> Any:
        """One scalar reward per video (the weighted mean of its dimension scores) and its
        parts; a video that cannot be scored (undecodable, over a limit) gets ``error`` and
        the server's ``error_reward``. A multipart form, or the same fields as JSON
        (``RewardJson``: ``items``, each a video and its prompt)."""
        inputs = _inputs(form.videos, form.paths, config)
        return await rewarded(request, inputs, form.prompts or [None] * len(inputs),
                              form.weights)


async def _all(works: Iterator[Coroutine]) -> list[Any]:
    """Run ``works`` together; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(work) for work in works]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _info_routes(app: Any, service: Service) -> None:
    @app.get("/health", summary="Whether the server takes work", response_model=api.HealthResponse,
             responses={503: {"model": api.HealthResponse,
                              "description": "Overloaded: a new video would be refused"}})
    async def health() -> Any:
        body = service.health()
        return JSONResponse(body, status_code=503 if body["status"] == "overloaded" else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format"}})
    async def metrics() -> Response:
        body, media_type = service.metrics.render()
        return Response(body, media_type=media_type)


def _inputs(uploads, paths, config: ServeConfig) -> list[tuple[Any, str]]:
    """(source, name) per input: uploads (size-checked) or paths (inside the root)."""
    if uploads:
        return [(_checked_upload(u, config), stem_of(u.filename, f"video-{i}"))
                for i, u in enumerate(uploads)]
    return [(_checked_path(p, config), Path(p).stem) for p in paths]


def _json_inputs(videos: list[Any], where: str, config: ServeConfig) -> list[tuple[Any, str]]:
    """(source, name) per JSON video: a path (inside the root) or base64 (size-checked, then
    decoded); ``where`` names the list in errors (``items``, or "" for one video)."""
    inputs = []
    for i, video in enumerate(videos):
        if video.path is not None:
            inputs.append((_checked_path(video.path, config), Path(video.path).stem))
        else:
            field = f"{where}[{i}].video_b64" if where else "video_b64"
            inputs.append((_checked_base64(video.video_b64, field, config), f"video-{i}"))
    return inputs


def _checked_base64(text: str, field: str, config: ServeConfig) -> bytes:
    """The bytes of checked base64 text (``api._base64``), its size measured before it is
    decoded."""
    size = len(text) // 4 * 3 - text[-2:].count("=")
    if size > config.max_video_mb * MB:
        raise HTTPException(413, f"the video in {field} ({size} bytes) exceeds max_video_mb "
                                 f"({config.max_video_mb} MiB)")
    return base64.b64decode(text, validate=True)


def _checked_upload(upload: Any, config: ServeConfig) -> BinaryIO:
    limit = config.max_video_mb * MB
    size = upload.size if upload.size is not None else upload.file.seek(0, 2)
    if size > limit:
        raise HTTPException(413, f"the video {upload.filename!r} ({size} bytes) exceeds "
                                 f"max_video_mb ({config.max_video_mb} MiB)")
    upload.file.seek(0)
    return upload.file


def _checked_path(raw: str, config: ServeConfig) -> Path:
    if config.allowed_root is None:
        raise HTTPException(403, "scoring by path is disabled (the server has no allowed root)")
    try:
        return resolve_inside(config.allowed_root, raw)
    except PermissionError as error:
        raise HTTPException(403, str(error)) from error


# ---- running it ---------------------------------------------------------------------------
def serve(config: ServeConfig, evaluator: Any | None = None) -> None:
    """Load the model and serve until interrupted (``qsave serve``)."""
    import uvicorn

    app = create_app(config, evaluator)
    if config.token is None:
        log.warning("serving without authentication on %s (loopback hosts only)", config.host)
    # uvicorn drains the open requests on SIGTERM/SIGINT, then raises the signal again under
    # the handlers it found; these make that a clean exit (status 0) instead of a death by it.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda number, frame: log.info("stopped by signal %d", number))
    uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                timeout_keep_alive=5)


class RewardClient:
    """Calls a reward server from generator-RL code in another process or machine.

    ``client(videos, prompts)`` returns one reward per video; ``client.last`` keeps the whole
    answer (per-dimension scores, errors, collapse warnings). By default it uploads the files
    (a multipart form: the bytes as they are, each field as written); with ``by_path=True`` the
    videos are paths under the server's ``allowed_root``, sent as a JSON body (nothing is
    uploaded: for a generator that writes its rollouts where the server reads).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0,
                 weights: dict[str, float] | None = None, by_path: bool = False) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)
        self.weights = weights
        self.by_path = by_path
        self.last: dict[str, Any] = {}

    def __call__(self, videos: list[str | Path], prompts: list[str | None]) -> list[float]:
        if self.by_path:
            body: dict[str, Any] = {"items": [{"path": str(v), "prompt": p}
                                              for v, p in zip(videos, prompts, strict=True)]}
            if self.weights is not None:
                body["weights"] = self.weights
            response = self.http.post("/reward", json=body)
        else:
            files = [("videos", (Path(v).name, Path(v).read_bytes(), "video/mp4"))
                     for v in videos]
            data: dict[str, Any] = {"prompts": [p or "" for p in prompts]}
            if self.weights is not None:
                data["weights"] = json.dumps(self.weights)
            response = self.http.post("/reward", files=files, data=data)
        if response.status_code != 200:
            raise QsaveError(f"reward server answered {response.status_code}: {response.text}")
        self.last = response.json()
        return self.last["rewards"]

    def close(self) -> None:
        self.http.close()
