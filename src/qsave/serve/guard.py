"""What the reward server checks before it reads a request body (pure ASGI, so nothing is read
before the check): the bearer token, the ``Host`` and ``Origin`` of a tokenless server, the body's
size and the time it takes to arrive; and the per-request metrics.

A refusal answers at once with ``Connection: close``: a client without the token gets 401 from
the headers alone, however large the body it announced.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException

from qsave.loopback import is_loopback
from qsave.serve.metrics import Metrics

MB = 1 << 20  # bytes in a mebibyte
ROUTES = ("/score", "/reward", "/health", "/metrics")
AUTHENTICATED = ("/score", "/reward")


def host_of(value: str) -> str:
    """The host part of a ``Host`` header or an origin URL (no port, no brackets).

    >>> host_of("127.0.0.1:8000"), host_of("[::1]:80"), host_of("http://localhost:3000")
    ('127.0.0.1', '::1', 'localhost')
    """
    return urlsplit(value if "//" in value else f"//{value}").hostname or ""


def token_matches(header: bytes | None, token: str) -> bool:
    """An ``Authorization: Bearer <token>`` header, compared in constant time."""
    scheme, _, given = (header or b"").decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


class Guard:
    """Auth, host/origin, body size and upload time, before the application; request
    metrics after it."""

    def __init__(self, app: Any, config: Any, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self.max_bytes = int(config.max_request_mb * MB)
        self.local_only = config.token is None and is_loopback(config.host)

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
            refusal = self._refusal(scope)
            if refusal is not None:
                await self._reject(send_status, *refusal)
            else:
                await self.app(scope, self._limited(receive, start), send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def _refusal(self, scope: dict) -> tuple[int, str, dict[str, str]] | None:
        """(status, detail, headers) when the headers alone refuse the request."""
        headers = dict(scope.get("headers") or [])
        if self.config.token is None:
            host = host_of(headers.get(b"host", b"").decode("latin-1"))
            if self.local_only and not is_loopback(host):
                return 403, f"this server answers loopback hosts only, not {host!r}", {}
            origin = headers.get(b"origin")
            if origin is not None and not is_loopback(host_of(origin.decode("latin-1"))):
                return 403, "cross-site requests are refused (Origin is not loopback)", {}
        elif scope["path"] in AUTHENTICATED and not token_matches(headers.get(b"authorization"),
                                                                  self.config.token):
            return 401, "missing or invalid bearer token", {"www-authenticate": "Bearer"}
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            self.metrics.refused.labels("body_too_large").inc()
            return 413, self._too_large(), {}
        return None

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
            seen["complete"] = message["type"] != "http.request" or not message.get("more_body")
            if seen["bytes"] > self.max_bytes:
                self.metrics.refused.labels("body_too_large").inc()
                raise HTTPException(413, self._too_large())
            return message

        return limited

    @staticmethod
    async def _reject(send: Callable, status: int, detail: str, extra: dict[str, str]) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
