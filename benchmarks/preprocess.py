"""Video preprocessing speed: qsave's SlowFast preparation against raw decoding and keye-vl-utils.

For each clip (synthetic 30 fps H.264 at 480p, 720p and 1080p, or files given with --clips) it
prints ms per clip for
  (a) the fastest raw decode of the same 8 fps frames (PyAV, threaded, only sampled frames
      converted; native size and qsave's downscaled size; decord too when --keye-venv has it),
  (b) qsave's full preprocessing: ``prepare_video`` (decode + SlowFast + processor inputs),
  (c) keye-vl-utils 1.5.2 ``fetch_video({"video": path, "fps": 8})``, run in its own virtual
      environment (--keye-venv; --setup-keye creates it with pip, sharing this env's torch),
and the ratios b/a (goal ≤ 1.15) and b/c (goal ≤ 0.6), in wall-clock time and, beside them, in
CPU time (user + system of this process, all threads; PyAV only for a): on a 2-core machine the
wall-clock b/a depends on whether a core is idle for qsave's conversion thread, the CPU time
does not. It also prints a1, b1: the raw decode and ``prepare_video`` with one decoder thread
(``DecodeConfig(threads=1)``), so that on a 2-core machine qsave's conversion thread has a core
of its own, as it would on a machine with a core to spare (not measured here).

Per clip it then prints the SlowFast labelling cost, ms per frame of ``Labeler.add`` over the
clip's similarity thumbnails, for the default measure (``ncc``) and for keye's rule with 14-px
patches (the previous default), each on its own thumbnail size.

Last, the throughput of scoring a folder: a pool of worker processes, one per core, each
single-threaded, over --pool-clips clips (the clips above, repeated), in clips per second for
``prepare_video`` and for the raw decode (native size), and their ratio.

    python benchmarks/preprocess.py --setup-keye --keye-venv /tmp/keye-venv
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from qsave.video.decode import DecodeConfig, decode_video, output_size
from qsave.video.inputs import VideoConfig, prepare_video
from qsave.video.slowfast import Labeler, SlowFastConfig, thumbnail_size

SIZES = {480: (480, 854), 720: (720, 1280), 1080: (1080, 1920)}
KEYE_PACKAGES = ["keye-vl-utils==1.5.2", "decord==0.6.0", "opencv-python-headless", "einops"]
FPS = 8.0
POOL_CLIPS_PER_WORKER = 4  # default --pool-clips: 4 clips per worker process


def _scene(index: int, height: int, width: int, fps: int) -> np.ndarray:
    """Camera-like content: a textured background panning, a moving disc, a cut every 4 s."""
    scene = index // (4 * fps)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shift = index * 3.0
    rng = np.random.default_rng(scene)
    f1, f2, f3 = rng.uniform(0.01, 0.05, 3)
    base = np.stack(
        [
            127 + 100 * np.sin(f1 * (xx + shift) + f2 * yy),
            127 + 100 * np.sin(f2 * (xx + shift) - f3 * yy + 1),
            127 + 100 * np.cos(f3 * (xx + shift) + f1 * yy),
        ],
        axis=-1,
    )
    cx, cy = (index * 7) % width, height / 2 + height / 4 * np.sin(index / 10)
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 8) ** 2
    base[disc] = (240, 240, 40)
    base += rng.normal(0, 4, base.shape[:2])[..., None]  # sensor noise
    return np.clip(base, 0, 255).astype(np.uint8)


def make_clip(path: Path, height: int, width: int, seconds: float, fps: int = 30) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(_scene(i, height, width, fps), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _clip(workdir: Path, size: int, seconds: float) -> Path:
    path = workdir / f"{size}p-{seconds:g}s.mp4"
    return path if path.exists() else make_clip(path, *SIZES[size], seconds)


def raw_decode(path: Path, max_side: int | None, threads: int = 0) -> int:
    """Decode in order with threads; convert the frame nearest each k/8 s (rgb24)."""
    reformatter, kept, target, previous = VideoReformatter(), 0, 0.0, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        for frame in container.decode(stream):
            while frame.time >= target:
                best = frame
                if previous is not None and target - previous.time <= frame.time - target:
                    best = previous
                h, w = output_size(best.height, best.width, max_side)
                reformatter.reformat(best, width=w, height=h, format="rgb24").to_ndarray()
                kept += 1
                target += 1 / FPS
            previous = frame
    return kept


def timed_together(functions: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best-of-``repeats`` wall and CPU time in ms of each function, interleaved after a warm-up.

    CPU time is ``time.process_time()``: user + system time of this process, all its threads.
    Interleaving and the minimum keep background load on a shared machine from favouring one
    side: each function gets the same chances at a quiet moment.
    """
    for function in functions.values():
        function()
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            cpu[name].append((time.process_time() - start_cpu) * 1000)
            wall[name].append((time.perf_counter() - start) * 1000)
    return _best(wall), _best(cpu)


def _best(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: min(values) for name, values in times.items()}


KEYE_SCRIPT = textwrap.dedent(
    """
    import json, statistics, sys, time
    import numpy as np
    from keye_vl_utils.vision_process import fetch_video
    import decord
    path, repeats = sys.argv[1], int(sys.argv[2])
    def keye():
        return fetch_video({"video": path, "fps": 8.0})
    def dec():
        vr = decord.VideoReader(path, num_threads=0)
        n, fps = len(vr), vr.get_avg_fps()
        idx = np.linspace(0, n - 1, int(n / fps * 8)).round().astype(int)
        return vr.get_batch(idx.tolist()).asnumpy()
    out = {}
    for name, fn in (("keye", keye), ("decord", dec)):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append((time.perf_counter() - t) * 1000)
        out[name] = min(times)
    frames, kwargs = keye()
    out["keye_slow"] = int((kwargs["frame_types"] == 0).sum())
    out["keye_frames"] = int(len(kwargs["frame_types"]))
    print(json.dumps(out))
    """
)


def setup_keye(venv: Path) -> None:
    """A separate venv with keye-vl-utils and decord; torch etc. come from this environment."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    pth = next((venv / "lib").glob("python*/site-packages")) / "qsave_base.pth"
    pth.write_text(site + "\n")
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", *KEYE_PACKAGES, "requests"]
    subprocess.run(pip, check=True)


def keye_times(venv: Path | None, path: Path, repeats: int) -> dict:
    if venv is None:
        return {}
    command = [str(venv / "bin" / "python"), "-c", KEYE_SCRIPT, str(path), str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"keye-vl-utils failed on {path}: {result.stderr[-500:]}", file=sys.stderr)
        return {}
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_clip(path: Path, repeats: int, venv: Path | None) -> dict:
    max_side = DecodeConfig().max_side
    one_thread = VideoConfig(decode=DecodeConfig(threads=1))
    functions = {
        "raw_native": lambda: raw_decode(path, None),
        "raw_scaled": lambda: raw_decode(path, max_side),
        "qsave": lambda: prepare_video(path),
        "raw_1thread": lambda: raw_decode(path, None, threads=1),
        "qsave_1thread": lambda: prepare_video(path, one_thread),
    }
    wall, cpu = timed_together(functions, repeats)
    row = {"clip": path.name, **wall, **{f"cpu_{name}": ms for name, ms in cpu.items()}}
    prepared = prepare_video(path)
    row["qsave_slow"], row["qsave_frames"] = sum(prepared.plan.slow), len(prepared.plan.slow)
    row["tokens"] = prepared.num_tokens
    keye = keye_times(venv, path, repeats)
    row.update({f"keye_{k}" if not k.startswith("keye") else k: v for k, v in keye.items()})
    raws = [row["raw_native"], row["raw_scaled"], *([keye["decord"]] if "decord" in keye else [])]
    row["raw"] = min(raws)
    row["cpu_raw"] = min(row["cpu_raw_native"], row["cpu_raw_scaled"])  # PyAV only
    row["label_ms_per_frame"] = label_times(path, repeats)
    return row


# --- SlowFast labelling cost per frame-similarity measure ----------------------------------


def similarity_measures() -> dict[str, SlowFastConfig]:
    """The default measure and keye's rule as the previous default ran it (14-px patches), for
    the labelling cost per frame."""
    return {"ncc": SlowFastConfig(), "keye@14px": SlowFastConfig(similarity="keye",
                                                                  similarity_patch=14)}


def thumbnails(frames: np.ndarray, config: SlowFastConfig) -> list[np.ndarray]:
    """(h, w, 3) uint8 RGB similarity thumbnails of ``frames`` ((N, H, W, 3)), INTER_AREA."""
    h, w = thumbnail_size(*frames.shape[1:3], config)
    return [cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) for frame in frames]


def _labelling(config: SlowFastConfig, thumbs: list[np.ndarray]):
    def label() -> None:
        labeler = Labeler(config)
        for thumb in thumbs:
            labeler.add(thumb)

    return label


def label_times(path: Path, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` wall ms per frame of ``Labeler.add`` for each similarity measure,
    over the thumbnails of the frames ``prepare_video`` samples (8 fps, at most 1280 px)."""
    frames = decode_video(path).frames  # (N, H, W, 3)
    measures = similarity_measures()
    functions = {name: _labelling(c, thumbnails(frames, c)) for name, c in measures.items()}
    wall, _ = timed_together(functions, repeats)
    return {name: ms / len(frames) for name, ms in wall.items()}


# --- throughput of a pool of single-threaded worker processes ------------------------------


def _pool_raw(path: str) -> int:
    """Pool worker: one decoder thread, the sampled frames converted at their native size
    (swscale's one-step downscale to rgb24 costs more than the whole decode at 1080p)."""
    return raw_decode(Path(path), None, threads=1)


def _pool_qsave(path: str) -> int:
    """Pool worker: ``prepare_video`` with one decoder thread (its conversion thread too)."""
    return prepare_video(path, VideoConfig(decode=DecodeConfig(threads=1))).num_tokens


def pool_throughput(clips: list[Path], count: int, repeats: int) -> dict:
    """Clips per second of one single-threaded worker process per core over ``count`` clips
    (``clips`` repeated), raw decode against ``prepare_video``, best of ``repeats``.

    The warm-up batch of ``timed_together`` starts the (spawned) workers and their imports.
    """
    workers = os.cpu_count() or 1
    paths = [str(clips[i % len(clips)]) for i in range(count)]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        batches = {
            "raw": lambda: list(pool.map(_pool_raw, paths)),
            "qsave": lambda: list(pool.map(_pool_qsave, paths)),
        }
        wall, _ = timed_together(batches, repeats)
    rates = {f"pool_{name}": count / (ms / 1000) for name, ms in wall.items()}
    return {"workers": workers, "clips": count, **rates}


def print_row(row: dict) -> None:
    keye = row.get("keye")
    b_c = f"{row['qsave'] / keye:5.2f}" if keye else "  n/a"
    cpu_b_a = row["cpu_qsave"] / row["cpu_raw"]
    cpu_b1_a1 = row["cpu_qsave_1thread"] / row["cpu_raw_1thread"]
    print(
        f"{row['clip']:>14}  wall a={row['raw']:7.0f}  b={row['qsave']:7.0f}  "
        f"c={keye or float('nan'):7.0f}  b/a={row['qsave'] / row['raw']:5.2f}  b/c={b_c}  |  "
        f"cpu a={row['cpu_raw']:7.0f}  b={row['cpu_qsave']:7.0f}  b/a={cpu_b_a:5.2f}  "
        f"(raw native {row['raw_native']:.0f}, scaled {row['raw_scaled']:.0f}, "
        f"decord {row.get('keye_decord', float('nan')):.0f}; slow frames qsave "
        f"{row['qsave_slow']}/{row['qsave_frames']}, keye {row.get('keye_slow', '-')}/"
        f"{row.get('keye_frames', '-')}; {row['tokens']} tokens; one decoder thread, a core left "
        f"for qsave's worker: a1={row['raw_1thread']:.0f} b1={row['qsave_1thread']:.0f} "
        f"b1/a1={row['qsave_1thread'] / row['raw_1thread']:.2f}, cpu "
        f"a1={row['cpu_raw_1thread']:.0f} b1={row['cpu_qsave_1thread']:.0f} "
        f"b1/a1={cpu_b1_a1:.2f})",
        flush=True,
    )
    labels = ", ".join(f"{name} {ms:.2f}" for name, ms in row["label_ms_per_frame"].items())
    print(f"{'':>14}  SlowFast labelling, ms per frame: {labels}", flush=True)


def print_pool(pool: dict) -> None:
    raw, qsave = pool["pool_raw"], pool["pool_qsave"]
    print(
        f"pool of {pool['workers']} single-threaded worker processes, {pool['clips']} clips, "
        f"clips/s, best of N: a raw decode {raw:.2f}, b qsave prepare_video {qsave:.2f}; "
        f"time per clip b/a = {raw / qsave:.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 720, 1080])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=Path, nargs="*", help="existing files instead")
    parser.add_argument("--keye-venv", type=Path, help="venv with keye-vl-utils and decord")
    parser.add_argument("--setup-keye", action="store_true", help="create --keye-venv first")
    parser.add_argument(
        "--pool-clips",
        type=int,
        default=POOL_CLIPS_PER_WORKER * (os.cpu_count() or 1),
        help="clips for the worker-pool throughput (default: %(default)s, 4 per core; 0 skips)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--workdir", type=Path, help="keep the generated clips here (reused)")
    args = parser.parse_args(argv)
    if args.setup_keye and args.keye_venv and not (args.keye_venv / "bin" / "python").exists():
        setup_keye(args.keye_venv)
    rows, pool = [], None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        clips = args.clips or [_clip(workdir, s, args.seconds) for s in args.sizes]
        print(
            "ms per clip, best of N; a raw decode, b qsave prepare_video, c keye fetch_video; "
            "wall clock, then CPU time (user + system, all threads of this process)"
        )
        for clip in clips:
            rows.append(bench_clip(clip, args.repeats, args.keye_venv))
            print_row(rows[-1])
        if args.pool_clips > 0:
            pool = pool_throughput(clips, args.pool_clips, args.repeats)
            print_pool(pool)
    if args.json:
        args.json.write_text(json.dumps({"clips": rows, "pool": pool}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
