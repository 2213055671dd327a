"""Micro-batching: grouping by key, size and wait limits, failures, a bounded queue."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qsave.errors import ConfigError
from qsave.serve.batcher import BatcherConfig, MicroBatcher, Overloaded


class Recorder:
    """A process function that records its batches and can be held back."""

    def __init__(self, delay=0.0):
        self.batches, self.delay, self.gate = [], delay, threading.Event()
        self.gate.set()

    def __call__(self, items):
        self.gate.wait(10)
        self.batches.append(list(items))
        time.sleep(self.delay)
        return [("done", item) for item in items]


def test_concurrent_items_share_batches_and_get_their_own_results():
    process = Recorder(delay=0.05)
    batcher = MicroBatcher(process, BatcherConfig(max_batch_size=4, max_wait_s=0.2))
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: batcher.submit(i).result(10), range(10)))
    batcher.close()
    assert results == [("done", i) for i in range(10)]
    assert sorted(i for batch in process.batches for i in batch) == list(range(10))
    assert max(len(b) for b in process.batches) == 4 and len(process.batches) < 10


def test_items_of_different_keys_are_never_mixed_and_info_is_reported():
    process = Recorder()
    process.gate.clear()  # hold the worker so that everything queues up
    batcher = MicroBatcher(process, BatcherConfig(max_batch_size=8, max_wait_s=0.0))
    first = batcher.submit("a0", key="a", with_info=True)
    time.sleep(0.05)  # the worker has taken a0 and waits at the gate
    futures = [batcher.submit(f"{k}{i}", key=k, with_info=True) for i in range(3) for k in "ab"]
    process.gate.set()
    infos = [f.result(10)[1] for f in [first, *futures]]
    batcher.close()
    assert [sorted(b) for b in process.batches] == [["a0"], ["a0", "a1", "a2"], ["b0", "b1", "b2"]]
    assert [i.size for i in infos] == [1, 3, 3, 3, 3, 3, 3] and infos[0].id == 1
    assert all(i.queue_s >= 0 and i.run_s >= 0 for i in infos)


def test_a_failing_batch_fails_its_callers_and_the_worker_goes_on():
    calls = []

    def process(items):
        calls.append(items)
        if "bad" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher(process, BatcherConfig(max_batch_size=1, max_wait_s=0))
    with pytest.raises(ValueError, match="boom"):
        batcher.submit("bad").result(10)
    assert batcher.submit("good").result(10) == "good"
    wrong = MicroBatcher(lambda items: [], BatcherConfig(max_wait_s=0))
    with pytest.raises(Exception, match="0 results for 1 items"):
        wrong.submit("x").result(10)
    batcher.close()
    wrong.close()


def test_a_full_queue_refuses_and_cancelled_items_are_skipped():
    process = Recorder()
    process.gate.clear()
    batcher = MicroBatcher(process, BatcherConfig(max_batch_size=1, max_wait_s=0, max_queue=2))
    running = batcher.submit("first")
    time.sleep(0.05)
    waiting = [batcher.submit("second"), batcher.submit("third")]
    with pytest.raises(Overloaded, match="queue is full"):
        batcher.submit("fourth")
    assert batcher.depth == 2
    assert waiting[0].cancel()
    process.gate.set()
    assert running.result(10) == ("done", "first") and waiting[1].result(10) == ("done", "third")
    assert ["second"] not in process.batches
    batcher.close()
    with pytest.raises(Overloaded):
        batcher.submit("late")


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_wait_s": -1}, {"max_queue": 0}])
def test_config_is_checked(kwargs):
    with pytest.raises(ConfigError):
        BatcherConfig(**kwargs)


def test_a_cancelled_item_leaves_the_queue_at_once():
    process = Recorder()
    process.gate.clear()  # the worker holds its first batch
    batcher = MicroBatcher(process, BatcherConfig(max_batch_size=1, max_wait_s=0))
    running = batcher.submit("running")
    time.sleep(0.1)
    waiting = [batcher.submit(i) for i in range(3)]
    assert batcher.depth == 3
    assert waiting[1].cancel() and batcher.depth == 2 and batcher.cancelled == 1
    process.gate.set()
    assert running.result(5) == ("done", "running")
    assert [waiting[i].result(5) for i in (0, 2)] == [("done", 0), ("done", 2)]
    batcher.close()
    assert [b[0] for b in process.batches] == ["running", 0, 2]


def test_close_resolves_each_waiting_future_once_and_skips_cancelled_ones():
    process = Recorder()
    process.gate.clear()
    batcher = MicroBatcher(process, BatcherConfig(max_batch_size=1, max_wait_s=0))
    running = batcher.submit("running")
    time.sleep(0.1)
    gone, left = batcher.submit("gone"), batcher.submit("left")
    gone.cancel()
    threading.Timer(0.2, process.gate.set).start()
    batcher.close(timeout=None)  # joins the worker after its batch; no InvalidStateError
    assert running.result(0) == ("done", "running") and gone.cancelled()
    with pytest.raises(Overloaded, match="closed"):
        left.result(0)
    assert not batcher._thread.is_alive()
