"""Load test of the reward server on loopback: throughput and p50/p99 latency of POST /score,
with micro-batching on against the same server with it off (max_batch_size=1), in one run.

Bounded: at most ``--requests`` requests per setting and ``--max-seconds`` of sending per
setting; the server binds 127.0.0.1 on an ephemeral port and nothing else is contacted.

    python benchmarks/serve_load.py --requests 24 --concurrency 6
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from qsave.data.synthetic import SynthConfig, write_corpus

LOOPBACK = "127.0.0.1"


@contextmanager
def served(flags: list[str]) -> Iterator[str]:
    """``qsave serve`` in a child process on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    url = f"http://{LOOPBACK}:{port}"
    child = subprocess.Popen([sys.executable, "-m", "qsave.cli", "serve", "--host", LOOPBACK,
                              "--port", str(port), *flags], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qsave serve did not start")
            time.sleep(0.2)
        yield url
    finally:
        child.terminate()
        child.wait(30)


def clips(root: Path, count: int, size: int, seconds: float) -> list[tuple[bytes, str]]:
    corpus = write_corpus(root, SynthConfig(n=count, seed=11, size=size, seconds=seconds))
    return [((root / c.path).read_bytes(), c.prompt) for c in corpus.clips]


def post(url: str, video: bytes, prompt: str) -> float:
    start = time.perf_counter()
    response = httpx.post(f"{url}/score", files={"video": ("clip.mp4", video)},
                          data={"prompt": prompt}, timeout=600)
    response.raise_for_status()
    if response.json()["error"] is not None:
        raise RuntimeError(response.json()["error"])
    return time.perf_counter() - start


def batch_mean(url: str) -> float:
    """Mean videos per forward batch, from /metrics."""
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("qsave_batch_size_sum", "qsave_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    return values["qsave_batch_size_sum"] / max(values["qsave_batch_size_count"], 1)


def load(flags: list[str], videos, requests: int, concurrency: int,
         max_seconds: float) -> dict[str, float]:
    """Send up to `requests` requests, `concurrency` at a time, for at most `max_seconds`."""
    with served(flags) as url:
        post(url, *videos[0])  # warm-up
        deadline = time.perf_counter() + max_seconds
        latencies: list[float] = []

        def one(index: int) -> None:
            if time.perf_counter() < deadline:
                latencies.append(post(url, *videos[index % len(videos)]))

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
        mean_batch = batch_mean(url)
        model = httpx.get(f"{url}/health").json()["model"]
    lat = np.asarray(latencies)
    return {"done": len(lat), "wall_s": wall, "throughput": len(lat) / wall,
            "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
            "batch": mean_batch, "model": model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--requests", type=int, default=24, help="per setting (bounded)")
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per setting")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="clip side in pixels")
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    args = parser.parse_args(argv)
    if args.requests > 10_000 or args.max_seconds > 3600:
        parser.error("bounded load only: --requests ≤ 10000 and --max-seconds ≤ 3600")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        videos = clips(Path(tmp), args.clips, args.size, args.seconds)
        rows = {}
        for name, batch in (("batching off", 1), ("micro-batching", args.max_batch_size)):
            wait = args.max_wait_ms if batch > 1 else 0.0
            flags = ["--model", args.model, "--max-batch-size", str(batch),
                     "--max-wait-ms", str(wait)]
            rows[name] = load(flags, videos, args.requests, args.concurrency, args.max_seconds)
    model = rows["micro-batching"]["model"]
    print(f"model {model['id']} on {model['device']}; {args.clips} clips "
          f"{args.size}x{args.size}, {args.seconds} s; concurrency {args.concurrency}")
    print(f"{'setting':<16}{'done':>6}{'videos/s':>10}{'p50 s':>8}{'p99 s':>8}{'batch':>7}")
    for name, row in rows.items():
        print(f"{name:<16}{row['done']:>6}{row['throughput']:>10.2f}{row['p50_s']:>8.2f}"
              f"{row['p99_s']:>8.2f}{row['batch']:>7.2f}")
    on, off = rows["micro-batching"], rows["batching off"]
    print(f"throughput ratio micro-batching / off: {on['throughput'] / off['throughput']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
