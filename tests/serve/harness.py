"""A uvicorn server on a thread, on an ephemeral loopback port, for the serve tests."""

import threading
import time
from typing import Any

import uvicorn

from qsave.errors import QsaveError


class RunningServer:
    """A uvicorn server on a thread: ``url``, ``stop()``; a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="on", timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, name="qsave-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise QsaveError("the server did not start")
            time.sleep(0.02)
        address = self.server.servers[0].sockets[0].getsockname()
        self.url = f"http://{address[0]}:{address[1]}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
