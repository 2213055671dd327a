"""The reward server's Prometheus metrics, in a registry of their own (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from qsave.scores import VideoResult
from qsave.serve.batcher import BatchInfo


class Metrics:
    """Requests, items, batches, scores, and the server's load: items in flight, waiting for the
    model, decoding; work cancelled (by stage) and refused (by reason)."""

    def __init__(self, load: dict[str, Callable[[], float]]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("qsave_requests", "HTTP requests", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("qsave_request_seconds", "Request latency", ["endpoint"],
                                 registry=r, buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60,
                                                      120, 300))
        self.items = Counter("qsave_items", "Videos scored", ["outcome"], registry=r)
        self.cancelled = Counter(
            "qsave_cancelled_items", "Videos whose request timed out or hung up, by the stage "
            "they were stopped in (decode, queue; batch: finished, result dropped)", ["stage"],
            registry=r)
        self.refused = Counter("qsave_refused", "Requests or videos refused by a limit",
                               ["reason"], registry=r)
        self.batch_size = Histogram("qsave_batch_size", "Videos per forward batch", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.batch_seconds = Histogram("qsave_batch_seconds", "Model time per batch",
                                       registry=r)
        self.scores = Histogram("qsave_score", "Dimension scores r̂ (0..1)", ["dimension"],
                                registry=r, buckets=(.1, .2, .3, .4, .5, .6, .7, .8, .9, 1))
        helps = {"queue_depth": "Videos waiting for the model",
                 "decodes_in_progress": "Videos being decoded now",
                 "items_in_flight": "Videos admitted and not finished"}
        for name, read in load.items():
            Gauge(f"qsave_{name}", helps[name], registry=r).set_function(read)

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
