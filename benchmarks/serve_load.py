"""Load test of the reward server on loopback: throughput and p50/p99 latency of POST /score,
with micro-batching on against the same server with it off (max_batch_size=1), and a hostile
mix: the same normal requests alone (clean) and while hostile clients run alongside.

    python benchmarks/serve_load.py --requests 24 --concurrency 6
    python benchmarks/serve_load.py --skip-batching --mix-requests 60 --skip-huge

The hostile clients:

* huge: a real 16000×16000 clip of a few flat-colour frames (FFV1 in Matroska, written here
  with PyAV; some 260 KB on disk, 384 MB per decoded frame), uploaded to /score;
* prompt: a real clip with a 1 MiB prompt;
* disconnect: a real clip sent over a raw socket that is closed right after the request;
* slow (only when the server has a token, the default): a multipart body declared as
  ``--slow-mb`` MiB, sent a little at a time without a token until the run ends.

Whatever each hostile request gets is recorded — a status code (``200+error`` where the HTTP
answer is 200 with a per-item error), a connection error by its type, ``closed by client``, or
``no answer`` (still waiting when the run ended) — so the benchmark runs against servers with or
without the pixel and prompt limits. The output is the batching table, then a table of the
normal requests (sent, done, failed, requests/s, p50 and p99 latency, the server's peak RSS so far)
clean and hostile, the ratio p99 hostile / clean (goal ≤ 2), the server's peak RSS (VmHWM of
the ``qsave serve`` child; goal < 2 GiB), whether it survived, and the hostile answers counted
by status, with the server's own count of cancelled and refused work (/metrics). A missed goal
is reported, not raised (exit status 0).

Measured (2 cores, tiny model, ``python benchmarks/serve_load.py``, two runs): p99 hostile /
clean 0.83 and 1.10, server peak RSS 889 and 891 MiB (about its idle size); every huge upload
413 from the header, every 1 MiB prompt 422, every hung-up request cancelled during its decode.
The server before these bounds: every normal request timed out behind one 1 MiB prompt, and
with short prompts p99 rose 4.7× and RSS reached 2.5–3.1 GiB.

Bounded: at most ``--requests`` requests per batching setting within ``--max-seconds``; the
hostile mix sends at most ``--mix-requests`` normal requests per run within ``--mix-seconds``,
and each hostile kind at most ``--hostile-requests`` requests (``--huge-requests`` huge ones),
one at a time, only while the normal requests of the hostile run are being sent. The defaults
finish within about five minutes on two cores. Each server binds 127.0.0.1 on an ephemeral port
and nothing else is contacted; the token is passed in the environment (``QSAVE_SERVE_TOKEN``),
never on the command line. Server logs go to a temporary file, whose tail is printed when a
server fails to start or dies.
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from qsave.data.synthetic import SynthConfig, write_corpus

LOOPBACK = "127.0.0.1"
MIB = 1 << 20
TOKEN_ENV = "QSAVE_SERVE_TOKEN"


@dataclass
class Served:
    """A running ``qsave serve`` child: its URL and process (the server itself, so its pid's
    /proc status is the server's memory)."""

    url: str
    child: subprocess.Popen
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@contextmanager
def served(flags: list[str], env: dict[str, str] | None = None,
           log_dir: Path | None = None) -> Iterator[Served]:
    """``qsave serve`` in a child process on a free loopback port, with ``env`` added to the
    environment and its output in a log file; yields it once /health answers."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    url = f"http://{LOOPBACK}:{port}"
    log = Path(tempfile.mkstemp(prefix="qsave-serve-", suffix=".log", dir=log_dir)[1])
    with log.open("wb") as sink:
        child = subprocess.Popen([sys.executable, "-m", "qsave.cli", "serve", "--host", LOOPBACK,
                                  "--port", str(port), *flags], stdout=sink, stderr=sink,
                                 env={**os.environ, **(env or {})})
    server = Served(url, child, log)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qsave serve did not start:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(30)
        if log_dir is None:
            log.unlink(missing_ok=True)


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


def cancelled_and_refused(url: str) -> dict[str, float]:
    """The server's cancelled items by stage and refusals by reason, from /metrics."""
    counts = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("qsave_cancelled_items_total{", "qsave_refused_total{")):
            name, value = line.rsplit(" ", 1)
            counts[name.removesuffix("_total").replace("_total{", "{")] = float(value)
    return counts


def load(flags: list[str], videos, requests: int, concurrency: int,
         max_seconds: float) -> dict[str, float]:
    """Send up to `requests` requests, `concurrency` at a time, for at most `max_seconds`."""
    with served(flags) as server:
        url = server.url
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


def batching(args: argparse.Namespace, videos) -> None:
    """The batching on/off comparison."""
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
    print(f"throughput ratio micro-batching / off: {on['throughput'] / off['throughput']:.2f}",
          flush=True)


# ---- the hostile mix ----------------------------------------------------------------------
def write_huge(path: Path, side: int, frames: int) -> int:
    """A real ``side``×``side`` clip of ``frames`` flat-colour frames (FFV1 in Matroska: it
    encodes that size in seconds and compresses flat colour to a few tens of KB a frame);
    checked by reading its header back. Returns its size in bytes."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        # FFV1 needs slices of at most ~5 Mpixel each at this size: 8×8 slices of 2000².
        stream.options = {"slices": "64" if side > 4000 else "4", "level": "3"}
        frame = av.VideoFrame(side, side, "yuv420p")
        for value, plane in zip((120, 90, 160), frame.planes, strict=True):
            np.frombuffer(plane, np.uint8)[:] = value
        for index in range(frames):
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if (stream.codec_context.width, stream.codec_context.height) != (side, side):
            raise RuntimeError(f"{path} is not {side}x{side}")
    return path.stat().st_size


def peak_rss(pid: int) -> int | None:
    """The peak resident set (VmHWM) of process ``pid`` in bytes; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssWatch:
    """Samples the server's VmHWM every ``period`` s, so the last value survives its death."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        self.pid, self.period, self.peak = pid, period, peak_rss(pid) or 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> int:
        value = peak_rss(self.pid)
        if value is not None:
            self.peak = max(self.peak, value)
        return self.peak

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            self.sample()

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.sample()


def outcome_of(response: httpx.Response) -> str:
    """A status code, or ``200+error`` for a 200 answer carrying a per-item error."""
    if response.status_code == 200:
        try:
            if response.json().get("error") is not None:
                return "200+error"
        except ValueError:
            return "200 (not JSON)"
    return str(response.status_code)


def normal_load(url: str, videos, headers: dict[str, str], requests: int, concurrency: int,
                max_seconds: float) -> dict:
    """Normal /score requests: up to `requests`, `concurrency` at a time, started within
    `max_seconds`; latencies of the successful ones, the others counted by outcome."""
    deadline = time.perf_counter() + max_seconds
    latencies: list[float] = []
    failures: Counter[str] = Counter()

    def one(index: int) -> None:
        if time.perf_counter() >= deadline:
            return
        video, prompt = videos[index % len(videos)]
        start = time.perf_counter()
        try:
            response = httpx.post(f"{url}/score", files={"video": ("clip.mp4", video)},
                                  data={"prompt": prompt}, headers=headers,
                                  timeout=max_seconds)
            outcome = outcome_of(response)
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        if outcome == "200":
            latencies.append(time.perf_counter() - start)
        else:
            failures[outcome] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"sent": len(latencies) + sum(failures.values()), "done": len(latencies),
            "failed": sum(failures.values()), "failures": failures,
            "wall_s": wall, "throughput": len(latencies) / wall,
            "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99))}


def raw_request(server: Served, fields: dict, files: dict, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 POST /score request as bytes (multipart built by httpx)."""
    request = httpx.Request("POST", f"{server.url}/score", data=fields, files=files,
                            headers=headers)
    body = request.read()
    head = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items()
                   if name.lower() != "connection")
    return f"POST /score HTTP/1.1\r\n{head}Connection: close\r\n\r\n".encode() + body


def status_line(data: bytes) -> str:
    """The status code of a raw HTTP answer's first line, else what came."""
    parts = data.split(b"\r\n", 1)[0].split()
    return parts[1].decode() if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else \
        "garbled answer"


@dataclass
class Hostile:
    """Hostile clients, one thread per kind (``slow_clients`` for the slow body), each sending
    at most ``cap`` requests one at a time while ``running``; outcomes counted per kind."""

    server: Served
    cap: int
    pause: float
    timeout: float
    outcomes: dict[str, Counter] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    running: threading.Event = field(default_factory=threading.Event)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[tuple[str, threading.Thread, list]] = field(default_factory=list)

    def add(self, kind: str, label: str, client: Callable[[], str], cap: int | None = None
            ) -> None:
        """Start a thread that calls ``client`` (one request; returns its outcome)."""
        self.outcomes.setdefault(kind, Counter())
        self.labels[kind] = label
        busy: list = [False]

        def loop() -> None:
            for _ in range(self.cap if cap is None else cap):
                if not self.running.is_set():
                    return
                busy[0] = True
                try:
                    outcome = client()
                except (OSError, httpx.HTTPError) as error:
                    outcome = type(error).__name__
                with self.lock:
                    busy[0] = False
                    if self.closed:
                        return
                    self.outcomes[kind][outcome] += 1
                if self.running.wait(0) and self.pause:
                    time.sleep(self.pause)

        thread = threading.Thread(target=loop, name=f"hostile-{kind}", daemon=True)
        self.threads.append((kind, thread, busy))
        thread.start()

    def start(self) -> None:
        self.running.set()

    def finish(self, grace: float) -> None:
        """Stop starting requests; wait up to ``grace`` s for those in flight, then count the
        unanswered ones as ``no answer`` (their threads are left to end with the server)."""
        self.running.clear()
        end = time.monotonic() + grace
        for _, thread, _ in self.threads:
            thread.join(max(end - time.monotonic(), 0))
        with self.lock:
            self.closed = True
            for kind, thread, busy in self.threads:
                if thread.is_alive() and busy[0]:
                    self.outcomes[kind]["no answer"] += 1

    # ---- the clients ----------------------------------------------------------------------
    def upload(self, video: bytes, name: str, prompt: str, headers: dict[str, str]
               ) -> Callable[[], str]:
        def client() -> str:
            response = httpx.post(f"{self.server.url}/score", files={"video": (name, video)},
                                  data={"prompt": prompt}, headers=headers,
                                  timeout=self.timeout)
            return outcome_of(response)

        return client

    def disconnect(self, video: bytes, prompt: str, headers: dict[str, str]
                   ) -> Callable[[], str]:
        """Sends a whole request with a real clip and closes the socket at once."""
        data = raw_request(self.server, {"prompt": prompt}, {"video": ("clip.mp4", video)},
                           headers)

        def client() -> str:
            with socket.create_connection((LOOPBACK, self.server.port), timeout=10) as sock:
                sock.sendall(data)
            return "closed by client"

        return client

    def slow(self, declared_mb: float, chunk: int, interval: float) -> Callable[[], str]:
        """A multipart upload of ``declared_mb`` MiB without a token, ``chunk`` bytes every
        ``interval`` s, until the server answers or closes, or the run ends."""
        boundary = "qsave-slow-" + secrets.token_hex(8)
        preamble = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
                    f"filename=\"slow.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    ).encode()
        epilogue = f"\r\n--{boundary}--\r\n".encode()
        payload = int(declared_mb * MIB)
        head = (f"POST /score HTTP/1.1\r\nHost: {LOOPBACK}:{self.server.port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(preamble) + payload + len(epilogue)}\r\n"
                "Connection: close\r\n\r\n").encode()

        def answer(sock: socket.socket) -> str:
            try:
                data = sock.recv(4096)
            except OSError as error:
                return type(error).__name__
            return status_line(data) if data else "closed by server"

        def client() -> str:
            with socket.create_connection((LOOPBACK, self.server.port), timeout=10) as sock:
                sock.sendall(head + preamble)
                sent, block = 0, b"\0" * chunk
                while self.running.is_set() and sent < payload:
                    readable, _, _ = select.select([sock], [], [], interval)
                    if readable:
                        return answer(sock)
                    try:
                        sock.sendall(block[:payload - sent])
                    except OSError as error:
                        got = answer(sock)
                        return got if got.isdigit() else type(error).__name__
                    sent += len(block)
                if sent >= payload:
                    sock.sendall(epilogue)
                    sock.settimeout(self.timeout)
                    return answer(sock)
                return "no answer"

        return client


def hostile_mix(args: argparse.Namespace, videos, tmp: Path) -> None:
    """Normal requests on one server, clean and then with hostile clients alongside."""
    token = None if args.no_token else secrets.token_urlsafe(24)
    env = {TOKEN_ENV: token} if token else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    flags = ["--model", args.model, "--max-batch-size", str(args.max_batch_size),
             "--max-wait-ms", str(args.max_wait_ms), *args.serve_arg]
    huge = None
    if not args.skip_huge:
        path = tmp / "huge.mkv"
        start = time.perf_counter()
        size = write_huge(path, args.huge_side, args.huge_frames)
        huge = path.read_bytes()
        print(f"\nhuge clip: {args.huge_side}x{args.huge_side}, {args.huge_frames} frames, "
              f"FFV1 in .mkv, {size} bytes (written in {time.perf_counter() - start:.1f} s)",
              flush=True)
    long_prompt = ("a hostile prompt " * (args.prompt_kib * 1024 // 17 + 1))[
        :args.prompt_kib * 1024]
    video, prompt = videos[0]
    rows, status = {}, {}
    with served(flags, env) as server:
        watch = RssWatch(server.child.pid)
        try:
            warm = httpx.post(f"{server.url}/score", files={"video": ("clip.mp4", video)},
                              data={"prompt": prompt}, headers=headers, timeout=120)
            warm.raise_for_status()
            model = httpx.get(f"{server.url}/health").json()["model"]
            rows["clean"] = normal_load(server.url, videos, headers, args.mix_requests,
                                        args.concurrency, args.mix_seconds)
            rows["clean"]["rss"] = watch.sample()

            hostile = Hostile(server, args.hostile_requests, args.hostile_pause,
                              args.hostile_timeout)
            hostile.start()
            if huge is not None:
                hostile.add("huge", f"huge {args.huge_side}x{args.huge_side} upload",
                            hostile.upload(huge, "huge.mkv", prompt, headers),
                            cap=args.huge_requests)
            hostile.add("prompt", f"prompt of {args.prompt_kib} KiB",
                        hostile.upload(video, "clip.mp4", long_prompt, headers))
            hostile.add("disconnect", "disconnect after sending",
                        hostile.disconnect(video, prompt, headers))
            if token:
                for index in range(args.slow_clients):
                    hostile.add(f"slow{index}", "slow body, no token",
                                hostile.slow(args.slow_mb, args.slow_chunk_kib * 1024,
                                             args.slow_interval))
            time.sleep(args.hostile_lead)
            rows["hostile"] = normal_load(server.url, videos, headers, args.mix_requests,
                                          args.concurrency, args.mix_seconds)
            hostile.finish(args.hostile_grace)
            rows["hostile"]["rss"] = watch.sample()
            alive = server.child.poll() is None
            work = {}
            if alive:
                try:
                    alive = httpx.get(f"{server.url}/health", timeout=10).status_code == 200
                    work = cancelled_and_refused(server.url)
                except httpx.HTTPError:
                    alive = False
        finally:
            peak = watch.close()
        if not alive:
            print(f"server log tail:\n{server.log_tail()}")
        status = {"alive": alive, "exit": server.child.poll()}

    print(f"\nhostile mix: model {model['id']} on {model['device']}; normal requests "
          f"{args.mix_requests} per run, concurrency {args.concurrency}; micro-batching "
          f"({args.max_batch_size}, {args.max_wait_ms} ms); token "
          f"{'in ' + TOKEN_ENV if token else 'none'}")
    print(f"{'run':<10}{'sent':>6}{'done':>6}{'failed':>8}{'req/s':>8}{'p50 s':>8}{'p99 s':>8}"
          f"{'peak RSS MiB':>14}")
    for name, row in rows.items():
        print(f"{name:<10}{row['sent']:>6}{row['done']:>6}{row['failed']:>8}"
              f"{row['throughput']:>8.2f}"
              f"{row['p50_s']:>8.2f}{row['p99_s']:>8.2f}{row['rss'] / MIB:>14.0f}")
    for name, row in rows.items():
        if row["failures"]:
            print(f"normal failures ({name}): " + ", ".join(
                f"{k} ×{v}" for k, v in sorted(row["failures"].items())))
    ratio = rows["hostile"]["p99_s"] / rows["clean"]["p99_s"]
    shown = "n/a, no normal request succeeded" if np.isnan(ratio) else f"{ratio:.2f}"
    print(f"p99 hostile / clean: {shown} (goal ≤ 2: {'met' if ratio <= 2 else 'missed'})")
    print(f"server peak RSS: {peak / MIB:.0f} MiB (goal < 2048 MiB: "
          f"{'met' if peak < 2 * 1024 * MIB else 'missed'})")
    print(f"server alive after the hostile run: {'yes' if status['alive'] else 'no'}"
          + ("" if status["exit"] is None else f" (exit status {status['exit']})"))
    print("server's own count (/metrics): " + (", ".join(
        f"{name} ×{value:.0f}" for name, value in work.items()) or "none"))
    print("hostile answers by status:")
    by_label: dict[str, Counter] = {}
    for kind, counts in hostile.outcomes.items():
        by_label.setdefault(hostile.labels[kind], Counter()).update(counts)
    for label, counts in by_label.items():
        shown = ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items())) or "none sent"
        print(f"  {label:<30}{sum(counts.values()):>4} sent: {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--requests", type=int, default=24, help="per batching setting")
    parser.add_argument("--concurrency", type=int, default=6, help="normal clients at once")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per batching setting")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="clip side in pixels")
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    parser.add_argument("--skip-batching", action="store_true",
                        help="leave out the batching on/off comparison")
    parser.add_argument("--skip-hostile", action="store_true", help="leave out the hostile mix")
    parser.add_argument("--mix-requests", type=int, default=120,
                        help="normal requests per hostile-mix run (clean, hostile)")
    parser.add_argument("--mix-seconds", type=float, default=90.0,
                        help="normal requests start within this per run; also their timeout")
    parser.add_argument("--skip-huge", action="store_true", help="no huge-resolution uploads")
    parser.add_argument("--huge-side", type=int, default=16000, help="huge clip side (pixels)")
    parser.add_argument("--huge-frames", type=int, default=4)
    parser.add_argument("--huge-requests", type=int, default=4, help="huge uploads at most")
    parser.add_argument("--prompt-kib", type=int, default=1024, help="long prompt length")
    parser.add_argument("--hostile-requests", type=int, default=30,
                        help="requests per hostile kind (and slow client) at most")
    parser.add_argument("--hostile-pause", type=float, default=0.25,
                        help="seconds between one client's hostile requests")
    parser.add_argument("--hostile-timeout", type=float, default=60.0,
                        help="a hostile request's timeout (s)")
    parser.add_argument("--hostile-lead", type=float, default=1.0,
                        help="seconds hostile clients run before the normal requests")
    parser.add_argument("--hostile-grace", type=float, default=10.0,
                        help="wait for hostile requests in flight after the normal ones (s)")
    parser.add_argument("--no-token", action="store_true",
                        help="serve without a token (and so without the slow client)")
    parser.add_argument("--slow-clients", type=int, default=1)
    parser.add_argument("--slow-mb", type=float, default=256.0, help="declared body (MiB)")
    parser.add_argument("--slow-chunk-kib", type=int, default=64)
    parser.add_argument("--slow-interval", type=float, default=0.5, help="seconds per chunk")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="an extra `qsave serve` argument for the hostile-mix server "
                             "(repeat: --serve-arg=--max-video-mb --serve-arg=64)")
    args = parser.parse_args(argv)
    if args.requests > 10_000 or args.max_seconds > 3600:
        parser.error("bounded load only: --requests ≤ 10000 and --max-seconds ≤ 3600")
    if (args.mix_requests > 10_000 or args.mix_seconds > 3600 or args.hostile_requests > 1000
            or args.huge_requests > 100 or args.slow_clients > 16
            or args.hostile_timeout > 600 or args.hostile_grace > 600):
        parser.error("bounded load only: --mix-requests ≤ 10000, --mix-seconds ≤ 3600, "
                     "--hostile-requests ≤ 1000, --huge-requests ≤ 100, --slow-clients ≤ 16, "
                     "--hostile-timeout and --hostile-grace ≤ 600")
    if any(arg.startswith("--token") for arg in args.serve_arg):
        parser.error("the token goes in the environment only (QSAVE_SERVE_TOKEN), "
                     "never in --serve-arg")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop(TOKEN_ENV, None)  # each server gets the token this benchmark chooses
    with tempfile.TemporaryDirectory() as tmp:
        videos = clips(Path(tmp), args.clips, args.size, args.seconds)
        if not args.skip_batching:
            batching(args, videos)
        if not args.skip_hostile:
            hostile_mix(args, videos, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
