"""The HTTP reward server: ``qsave serve`` (paper Sec. 5, Table 5: the evaluator as a reward model).

Endpoints (FastAPI; the schema at ``/openapi.json``, the interactive docs at ``/docs``):

* ``POST /score`` — one video (a multipart upload ``video``, or ``path`` inside the configured
  ``allowed_root``), ``prompt``, ``dimensions`` (comma-separated), ``explain``; returns the
  result record of ``qsave score`` (per-dimension score, MOS, probabilities, rating, entropy).
* ``POST /reward`` — a batch: uploads ``videos`` or ``paths`` (repeated fields), ``prompts``
  (repeated, aligned), optional ``weights`` (JSON object); returns one scalar reward per item,
  the weighted mean of the dimension scores (App. D.2's *Overall* by default), and the
  per-dimension values.
* ``GET /health`` and ``GET /metrics`` (Prometheus text format), both without authentication.

Concurrent requests are micro-batched (``batcher.py``): decoding runs in the request's worker
thread, the forward passes in one model thread. A video that cannot be decoded or scored is a
per-item ``error`` (HTTP 200; ``/reward`` gives it ``error_reward``), never a failed batch.

Limits: a bearer token (``Authorization: Bearer …``) on the scoring endpoints, compared in
constant time; without a token the server only binds loopback addresses. The request body is
capped (``max_request_mb``, 413) while it streams in, and must arrive within
``request_timeout_s`` (408); each upload is capped (``max_video_mb``, 413); a request's scoring
is bounded by ``request_timeout_s`` (504); a full queue answers 503. A ``path`` is resolved
(symbolic links included) and must stay inside ``allowed_root`` (403), and upload file names
are never used as paths.
"""

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from qsave.dimensions import DIMENSIONS
from qsave.errors import ConfigError, QsaveError
from qsave.evaluator import Evaluator, Prepared, ScoreItem
from qsave.scores import VideoResult
from qsave.serve.batcher import BatcherConfig, BatchInfo, MicroBatcher, Overloaded
from qsave.serve.reward import CollapseMonitor, RewardConfig, batch_stats, reward_of
from qsave.spec import ScorerSpec, parse_dimensions

log = logging.getLogger("qsave.serve")
MB = 1 << 20  # bytes in a mebibyte


@dataclass(frozen=True)
class ServeConfig:
    """The reward server; ``qsave serve`` flags mirror the fields (the model's through the
    scorer spec)."""

    scorer: ScorerSpec = field(default_factory=ScorerSpec)  # model, backend, video settings …
    host: str = "127.0.0.1"  # address to bind
    port: int = 8000  # port to bind (0: any free port)
    token: str | None = None  # bearer token required on /score and /reward; None: no auth
    allowed_root: str | None = None  # directory whose files may be scored by `path`
    max_video_mb: float = 256.0  # one uploaded video at most (MiB)
    max_request_mb: float = 1024.0  # a whole request body at most (MiB)
    max_items: int = 64  # videos in one /reward request at most
    request_timeout_s: float = 300.0  # body upload, and scoring, each within this time
    max_batch_size: int = 8  # videos per forward pass at most
    max_wait_ms: float = 10.0  # how long a request waits for others to share its batch
    max_queue: int = 256  # videos waiting at most; beyond that: 503
    weights: dict[str, float] = field(  # default reward weights per dimension
        default_factory=lambda: {d.value: 1.0 for d in DIMENSIONS})
    error_reward: float = 0.0  # the reward of a video that cannot be scored
    allow_unauthenticated: bool = False  # allow no token on a non-loopback address

    def __post_init__(self) -> None:
        for name in ("max_video_mb", "max_request_mb", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be positive")
        if self.max_items < 1:
            raise ConfigError(f"max_items ({self.max_items}) must be at least 1")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the token must not be empty")
        if self.token is None and not self.allow_unauthenticated and not _loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host!r} without a token: set --token (or "
                "QSAVE_SERVE_TOKEN), bind 127.0.0.1, or pass --allow-unauthenticated")
        RewardConfig(self.weights, self.error_reward)  # validates the weights

    @property
    def batcher(self) -> BatcherConfig:
        return BatcherConfig(self.max_batch_size, self.max_wait_ms / 1000, self.max_queue)

    def public(self) -> dict[str, Any]:
        """The settings without the token (for /health and logs)."""
        values = asdict(self)
        values["scorer"] = self.scorer.to_dict()
        values["token"] = "set" if self.token else None
        return values


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    return stem[:200] or fallback


# ---- metrics ------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics in a registry of their own (no global state)."""

    def __init__(self, depth: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qsave_requests", "HTTP requests", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("qsave_request_seconds", "Request latency", ["endpoint"],
                                 registry=r, buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60,
                                                      120, 300))
        self.items = Counter("qsave_items", "Videos scored", ["outcome"], registry=r)
        self.batch_size = Histogram("qsave_batch_size", "Videos per forward batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.batch_seconds = Histogram("qsave_batch_seconds", "Model time per batch",
                                       registry=r)
        self.scores = Histogram("qsave_score", "Dimension scores r̂ (0..1)", ["dimension"],
                                registry=r, buckets=(.1, .2, .3, .4, .5, .6, .7, .8, .9, 1))
        queue = Gauge("qsave_queue_depth", "Videos waiting for the model", registry=r)
        queue.set_function(depth)

    def on_batch(self, info: BatchInfo) -> None:
        self.batch_size.observe(info.size)
        self.batch_seconds.observe(info.run_s)

    def on_result(self, result: VideoResult) -> None:
        self.items.labels("error" if result.error else "ok").inc()
        for dimension, score in result.scores.items():
            self.scores.labels(dimension.value).observe(score.score)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# ---- request limits (pure ASGI, so nothing is read before the check) ---------------------
ROUTES = ("/score", "/reward", "/health", "/metrics")


class Guard:
    """Caps the body size and its upload time, and records request metrics."""

    def __init__(self, app: Any, config: ServeConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self.max_bytes = int(config.max_request_mb * MB)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ROUTES else "other"
        start, status = time.perf_counter(), {"code": 500}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                await self._reject(send_status, 413, self._too_large())
            else:
                await self.app(scope, self._limited(receive, start), send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def _too_large(self) -> str:
        return f"the request body exceeds max_request_mb ({self.config.max_request_mb} MiB)"

    def _limited(self, receive: Callable, start: float) -> Callable:
        """``receive`` that counts the body bytes and bounds the time the body takes to arrive
        (once the body is complete, later calls — disconnect listening — pass through)."""
        seen = {"bytes": 0, "complete": False}
        deadline = start + self.config.request_timeout_s

        async def limited() -> dict:
            if seen["complete"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.perf_counter(),
                                                                0.001))
            except TimeoutError:
                raise HTTPException(408, "the request body did not arrive in "
                                         f"{self.config.request_timeout_s} s") from None
            seen["bytes"] += len(message.get("body", b""))
            seen["complete"] = not message.get("more_body", False)
            if seen["bytes"] > self.max_bytes:
                raise HTTPException(413, self._too_large())
            return message

        return limited

    @staticmethod
    async def _reject(send: Callable, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ---- the application ----------------------------------------------------------------------
class Service:
    """What the endpoints share: the evaluator, its batcher, the metrics, the config."""

    def __init__(self, evaluator: Evaluator, config: ServeConfig) -> None:
        self.evaluator, self.config = evaluator, config
        self.reward = RewardConfig(config.weights, config.error_reward)
        self.monitor = CollapseMonitor()  # follows /reward batches (one RL step each)
        self.batcher: MicroBatcher | None = None
        self.metrics = Metrics(lambda: self.batcher.depth if self.batcher else 0)
        self.batcher = MicroBatcher(lambda jobs: score_jobs(evaluator, jobs), config.batcher,
                                    on_batch=self.metrics.on_batch)

    def prepare(self, source: Path | BinaryIO, name: str, prompt: str | None, dims: tuple,
                explain: bool) -> Job | VideoResult:
        """Hash and decode one video through the pipeline (in a worker thread); its result
        with the error when that fails."""
        prepared = self.evaluator.prepare(ScoreItem(source, prompt, name), dims, explain)
        if isinstance(prepared, VideoResult):
            prepared.error = replace(prepared.error,
                                     message=self._without_root(prepared.error.message))
            return prepared
        return Job(prepared, dims, explain)

    def _without_root(self, message: str) -> str:
        """An error text with the server's allowed root left out (no absolute paths leak)."""
        root = self.config.allowed_root
        return message.replace(str(Path(root).resolve()) + "/", "") if root else message

    async def run(self, job: Job | VideoResult, deadline: float
                  ) -> tuple[VideoResult, BatchInfo | None]:
        """The result of one video (scored through the batcher, or its error) and the batch
        it went through."""
        result, info = job, None
        if isinstance(job, Job):
            try:
                future = self.batcher.submit(job, job.key, with_info=True)
            except Overloaded as error:
                raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from error
            result, info = await asyncio.wait_for(asyncio.wrap_future(future),
                                                  max(deadline - time.perf_counter(), 0.001))
        self.metrics.on_result(result)
        return result, info

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def public_record(result: VideoResult, info: BatchInfo | None) -> dict[str, Any]:
    """The row of ``qsave score`` without the server-side path, with the batch it went in."""
    record = result.to_record()
    record.pop("path", None)
    record["batch"] = asdict(info) if info is not None else None
    return record


def create_app(config: ServeConfig, evaluator: Evaluator | None = None) -> Any:
    """The FastAPI application; ``evaluator`` defaults to loading ``config.scorer``."""
    from contextlib import asynccontextmanager

    if evaluator is None:
        evaluator = Evaluator.from_spec(config.scorer)
    service = Service(evaluator, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="qsave reward server", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n")[0])
    app.state.service = service
    _routes(app, service)
    app.add_middleware(Guard, config=config, metrics=service.metrics)
    return app


def _routes(app: Any, service: Service) -> None:
    """Register the endpoints."""
    authorized = _bearer_check(service.config)
    _score_route(app, service, authorized)
    _reward_route(app, service, authorized)
    _info_routes(app, service)


def _bearer_check(config: ServeConfig) -> Callable:
    """The auth dependency: the configured token, compared in constant time (401 if not)."""
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                          Depends(bearer)]) -> None:
        if config.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            raise HTTPException(401, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorized


def _dimensions_of(text: str | None) -> tuple:
    try:
        return parse_dimensions(text.split(",") if text else None)
    except ConfigError as error:
        raise HTTPException(422, str(error)) from error


async def _one(service: Service, source, name, prompt, dims, explain, deadline
               ) -> tuple[VideoResult, BatchInfo | None]:
    """Decode in a worker thread, then score through the batcher."""
    job = await run_in_threadpool(service.prepare, source, name, prompt, dims, explain)
    return await service.run(job, deadline)


async def _bounded(coroutine, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(coroutine, timeout)
    except TimeoutError:
        raise HTTPException(504, f"scoring took longer than {timeout} s") from None


def _score_route(app: Any, service: Service, authorized: Callable) -> None:
    config = service.config

    @app.post("/score", dependencies=[Depends(authorized)], summary="Score one video")
    async def score(
        video: Annotated[UploadFile | None, File(description="The video file.")] = None,
        path: Annotated[str | None, Form(description="A file inside the allowed root.")] = None,
        prompt: Annotated[str | None, Form(description="The generation prompt.")] = None,
        dimensions: Annotated[str | None, Form(description="Comma-separated; default all.")]
        = None,
        explain: Annotated[bool, Form(description="Also generate a rationale.")] = False,
        id: Annotated[str | None, Form(description="An id echoed in the result.")] = None,
    ) -> dict[str, Any]:
        """One video's scores per dimension (the record of ``qsave score``)."""
        (source, name), = _inputs([video] if video else None, [path] if path else None,
                                  config, [id] if id else None)
        dims, deadline = _dimensions_of(dimensions), time.perf_counter() + config.request_timeout_s
        result, info = await _bounded(
            _one(service, source, name, prompt or None, dims, explain, deadline),
            config.request_timeout_s)
        return public_record(result, info)


def _reward_route(app: Any, service: Service, authorized: Callable) -> None:
    config = service.config

    @app.post("/reward", dependencies=[Depends(authorized)], summary="Rewards for a batch")
    async def reward(
        videos: Annotated[list[UploadFile] | None, File(description="Video files.")] = None,
        paths: Annotated[list[str] | None, Form(description="Files inside the allowed root.")]
        = None,
        prompts: Annotated[list[str] | None, Form(description="One prompt per video.")] = None,
        weights: Annotated[str | None, Form(description='JSON, e.g. {"visual": 1}.')] = None,
    ) -> dict[str, Any]:
        """One scalar reward per video (weighted mean of the dimensions) and its parts."""
        inputs = _inputs(videos, paths, config)
        if prompts and len(prompts) != len(inputs):
            raise HTTPException(422, f"{len(inputs)} videos but {len(prompts)} prompts")
        rewarding = _reward_config(weights, service.reward)
        texts = [text or None for text in prompts] if prompts else [None] * len(inputs)
        deadline = time.perf_counter() + config.request_timeout_s
        done = await _bounded(asyncio.gather(*[
            _one(service, source, name, text, rewarding.dimensions, False, deadline)
            for (source, name), text in zip(inputs, texts, strict=True)]),
            config.request_timeout_s)
        results = [result for result, _ in done]
        items = [reward_of(result, rewarding) for result in results]
        warnings = service.monitor.update(batch_stats(items))
        for message in warnings:
            log.warning(message)
        return {"rewards": [item.reward for item in items],
                "items": [{"id": r.id, "content_hash": r.content_hash, **item.to_dict()}
                          for r, item in zip(results, items, strict=True)],
                "weights": rewarding.weights, "model": service.evaluator.info.to_dict(),
                "warnings": warnings}


def _info_routes(app: Any, service: Service) -> None:
    @app.get("/health", summary="Liveness and model")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.evaluator.info.to_dict(),
                "queue": service.batcher.depth, "auth": service.config.token is not None}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        body, media_type = service.metrics.render()
        return Response(body, media_type=media_type)


def _inputs(uploads, paths, config: ServeConfig, ids=None) -> list[tuple[Any, str]]:
    """(source, name) per input: uploads (size-checked) or paths (inside the root)."""
    uploads, paths = uploads or [], paths or []
    if bool(uploads) == bool(paths):
        raise HTTPException(422, "give either uploaded videos or paths (not both, not neither)")
    count = len(uploads) + len(paths)
    if count > config.max_items:
        raise HTTPException(413, f"{count} videos exceed max_items ({config.max_items})")
    names = ids or [None] * count
    if uploads:
        return [(_checked_upload(u, config), n or stem_of(u.filename, f"video-{i}"))
                for i, (u, n) in enumerate(zip(uploads, names, strict=True))]
    return [(_checked_path(p, config), n or Path(p).stem)
            for p, n in zip(paths, names, strict=True)]


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


def _reward_config(weights: str | None, default: RewardConfig) -> RewardConfig:
    if weights is None:
        return default
    try:
        parsed = json.loads(weights)
        if not isinstance(parsed, dict):
            raise ConfigError(f"weights must be a JSON object, got {weights!r}")
        return RewardConfig(parsed, default.error_reward)
    except (json.JSONDecodeError, ConfigError) as error:
        raise HTTPException(422, f"invalid weights: {error}") from error


# ---- running it ---------------------------------------------------------------------------
def serve(config: ServeConfig, evaluator: Any | None = None) -> None:
    """Load the model and serve until interrupted (``qsave serve``)."""
    import uvicorn

    app = create_app(config, evaluator)
    if config.token is None:
        log.warning("serving without authentication on %s", config.host)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                timeout_keep_alive=5)


class RewardClient:
    """Calls a reward server from generator-RL code in another process or machine.

    ``client(videos, prompts)`` uploads the video files and returns one reward per video;
    ``client.last`` keeps the whole answer (per-dimension scores, errors, collapse warnings).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0,
                 weights: dict[str, float] | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)
        self.weights = weights
        self.last: dict[str, Any] = {}

    def __call__(self, videos: list[str | Path], prompts: list[str | None]) -> list[float]:
        files = [("videos", (Path(v).name, Path(v).read_bytes(), "video/mp4")) for v in videos]
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
