"""Micro-batching of concurrent requests for the reward server (DESIGN.md, serve).

Scoring without a rationale is one batched forward pass (paper Sec. 4.2.2), so requests that
arrive together are scored together: a single worker thread owns the model, takes the first
waiting item, waits at most ``max_wait_s`` for more (up to ``max_batch_size``), runs them as one
batch and resolves each caller's future with its own result. Items of different kinds (other
dimensions, explain mode) are never mixed: a batch holds the items of one ``key``.

The queue is bounded: a full queue refuses new work at once (``Overloaded``, HTTP 503) rather
than letting latency grow without limit. A caller that gave up (its future cancelled) has its
item taken out of the queue at once (``cancelled`` counts them); an item already in a running
batch is finished. ``close`` resolves every waiting future exactly once.

>>> batcher = MicroBatcher(lambda items: [x * 2 for x in items], BatcherConfig(max_wait_s=0))
>>> batcher.submit(21).result(timeout=5)
42
>>> batcher.close()
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from qsave.errors import ConfigError, QsaveError

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(QsaveError):
    """The queue is full (or the batcher closed); the caller should retry later."""


@dataclass(frozen=True)
class BatcherConfig:
    """How requests are grouped into forward passes."""

    max_batch_size: int = 8  # items per forward pass at most
    max_wait_s: float = 0.01  # how long the first item of a batch waits for company
    max_queue: int = 256  # items waiting at most; beyond that submit() raises Overloaded

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size ({self.max_batch_size}) must be at least 1")
        if self.max_wait_s < 0:
            raise ConfigError(f"max_wait_s ({self.max_wait_s}) must not be negative")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue ({self.max_queue}) must be at least 1")


@dataclass
class BatchInfo:
    """What a caller learns about the batch its item went through."""

    id: int  # sequence number of the batch (1, 2, …)
    size: int  # items in the batch
    queue_s: float  # this item's wait from submit() to the start of its batch
    run_s: float  # the batch's processing time


@dataclass
class _Pending(Generic[T]):
    item: T
    key: Hashable
    future: Future
    with_info: bool = False
    submitted: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[T, R]):
    """Runs ``process(items) -> results`` (same length, same order) on batches of submitted
    items in one background thread. Each future resolves to ``(result, BatchInfo)`` when
    ``with_info`` is set in :meth:`submit`, else to the result."""

    def __init__(
        self, process: Callable[[list[T]], Sequence[R]], config: BatcherConfig = BatcherConfig(),
        on_batch: Callable[[BatchInfo], None] | None = None,
    ) -> None:
        self.process, self.config, self.on_batch = process, config, on_batch
        self._queue: deque[_Pending[T]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._batches = 0
        self.cancelled = 0  # items taken out of the queue because their caller gave up
        self._thread = threading.Thread(target=self._loop, name="qsave-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting (not yet in a running batch)."""
        return len(self._queue)

    def submit(self, item: T, key: Hashable = None, with_info: bool = False) -> Future:
        """Queue one item; raises ``Overloaded`` when the queue is full or closed."""
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise Overloaded("the batcher is closed")
            if len(self._queue) >= self.config.max_queue:
                raise Overloaded(f"the queue is full ({self.config.max_queue} items waiting)")
            self._queue.append(_Pending(item, key, future, with_info))
            self._ready.notify()
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        """Take a cancelled item out of the queue (its caller gave up)."""
        if not future.cancelled():
            return
        with self._ready:
            for pending in self._queue:
                if pending.future is future:
                    self._queue.remove(pending)
                    self.cancelled += 1
                    return

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking items, finish the batch in progress, fail every item still waiting
        (once each; a cancelled one is skipped)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join(timeout)
        with self._ready:
            waiting, self._queue = list(self._queue), deque()
        for pending in waiting:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(Overloaded("the batcher closed"))

    # ---- worker ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Pending[T]] | None:
        """The first waiting item and up to max_batch_size-1 more of its key, waiting at most
        max_wait_s after the first one arrived for the batch to fill."""
        with self._ready:
            while True:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return None
                deadline = self._queue[0].submitted + self.config.max_wait_s
                while (self._queue and not self._closed
                       and self._count_key(self._queue[0].key) < self.config.max_batch_size
                       and (left := deadline - time.perf_counter()) > 0):
                    self._ready.wait(left)
                if self._closed:
                    return None
                if self._queue:  # else every waiting caller gave up: wait for the next one
                    return self._take(self._queue[0].key)

    def _count_key(self, key: Hashable) -> int:
        return sum(1 for pending in self._queue if pending.key == key)

    def _take(self, key: Hashable) -> list[_Pending[T]]:
        """Remove and return up to max_batch_size live items of ``key``, in arrival order."""
        batch, rest = [], deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.key == key and len(batch) < self.config.max_batch_size:
                if pending.future.set_running_or_notify_cancel():  # False: the caller gave up
                    batch.append(pending)
            else:
                rest.append(pending)
        self._queue.extend(rest)
        return batch

    def _run(self, batch: list[_Pending[T]]) -> None:
        if not batch:
            return
        self._batches += 1
        start = time.perf_counter()
        try:
            results = list(self.process([pending.item for pending in batch]))
            if len(results) != len(batch):
                raise QsaveError(f"process returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # every caller of the batch gets the failure, then go on
            for pending in batch:
                pending.future.set_exception(error)
            return
        run_s = time.perf_counter() - start
        info = None
        for pending, result in zip(batch, results, strict=True):
            info = BatchInfo(self._batches, len(batch), start - pending.submitted, run_s)
            pending.future.set_result((result, info) if pending.with_info else result)
        if self.on_batch is not None and info is not None:
            self.on_batch(info)

