"""Video preprocessing speed: qsave's SlowFast preparation against raw decoding and keye-vl-utils.

For each clip (synthetic 30 fps H.264 at 480p, 720p and 1080p, or files given with --clips) it
prints ms per clip for
  (a) the fastest raw decode of the same 8 fps frames (PyAV, threaded, only sampled frames
      converted; native size and qsave's downscaled size; decord too when --keye-venv has it),
  (b) qsave's full preprocessing: ``prepare_video`` (decode + SlowFast + processor inputs),
  (c) keye-vl-utils 1.5.2 ``fetch_video({"video": path, "fps": 8})``, run in its own virtual
      environment (--keye-venv; --setup-keye creates it with pip, sharing this env's torch),
and the ratios b/a (goal ≤ 1.15) and b/c (goal ≤ 0.6). It also prints a1, b1:
the raw decode and ``prepare_video`` with one decoder thread (``DecodeConfig(threads=1)``), so
that on a 2-core machine qsave's conversion thread has a core of its own, as it would on a
machine with a core to spare (not measured here).

    python benchmarks/preprocess.py --setup-keye --keye-venv /tmp/keye-venv
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from qsave.video.decode import DecodeConfig, output_size
from qsave.video.inputs import VideoConfig, prepare_video

SIZES = {480: (480, 854), 720: (720, 1280), 1080: (1080, 1920)}
KEYE_PACKAGES = ["keye-vl-utils==1.5.2", "decord==0.6.0", "opencv-python-headless", "einops"]
FPS = 8.0


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


def timed_together(functions: dict, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` wall time in ms of each function, runs interleaved after a warm-up.

    Interleaving and the minimum keep background load on a shared machine from favouring one
    side: each function gets the same chances at a quiet moment.
    """
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append((time.perf_counter() - start) * 1000)
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
    row = {"clip": path.name, **timed_together(functions, repeats)}
    prepared = prepare_video(path)
    row["qsave_slow"], row["qsave_frames"] = sum(prepared.plan.slow), len(prepared.plan.slow)
    row["tokens"] = prepared.num_tokens
    keye = keye_times(venv, path, repeats)
    row.update({f"keye_{k}" if not k.startswith("keye") else k: v for k, v in keye.items()})
    raws = [row["raw_native"], row["raw_scaled"], *([keye["decord"]] if "decord" in keye else [])]
    row["raw"] = min(raws)
    return row


def print_row(row: dict) -> None:
    keye = row.get("keye")
    b_c = f"{row['qsave'] / keye:5.2f}" if keye else "  n/a"
    print(
        f"{row['clip']:>14}  a={row['raw']:7.0f}  b={row['qsave']:7.0f}  "
        f"c={keye or float('nan'):7.0f}  b/a={row['qsave'] / row['raw']:5.2f}  b/c={b_c}  "
        f"(raw native {row['raw_native']:.0f}, scaled {row['raw_scaled']:.0f}, "
        f"decord {row.get('keye_decord', float('nan')):.0f}; slow frames qsave "
        f"{row['qsave_slow']}/{row['qsave_frames']}, keye {row.get('keye_slow', '-')}/"
        f"{row.get('keye_frames', '-')}; {row['tokens']} tokens; one decoder thread, a core left "
        f"for qsave's worker: a1={row['raw_1thread']:.0f} b1={row['qsave_1thread']:.0f} "
        f"b1/a1={row['qsave_1thread'] / row['raw_1thread']:.2f})",
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
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--workdir", type=Path, help="keep the generated clips here (reused)")
    args = parser.parse_args(argv)
    if args.setup_keye and args.keye_venv and not (args.keye_venv / "bin" / "python").exists():
        setup_keye(args.keye_venv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        clips = args.clips or [_clip(workdir, s, args.seconds) for s in args.sizes]
        print("ms per clip, best of N; a raw decode, b qsave prepare_video, c keye fetch_video")
        for clip in clips:
            rows.append(bench_clip(clip, args.repeats, args.keye_venv))
            print_row(rows[-1])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
