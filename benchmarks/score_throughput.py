"""Three-dimension scoring throughput at the hardware's limit: videos/s, TFLOP/s and MFU.

Builds a model from a config — ``tiny`` (the offline tiny Qwen3-VL) or ``8b`` (the exact
Qwen3-VL-8B architecture, random weights) — synthesizes clips with PyAV (moving shapes over a
gradient, ``--seconds`` long), and measures, per clip plan and batch size:

- the shared prefix (video encoded once, three dimension suffixes continued from its KV cache)
  against three independent full passes per video (model only, end to end with the processor,
  and the whole ``Evaluator.score_many`` pipeline);
- achieved TFLOP/s of the shared mode: language model 2·N·tokens (N without the embeddings and
  lm_head; prefix and suffix tokens, padding excluded) plus the vision tower 2·N_vision·patches;
  attention's quadratic term is left out, so the figure is a lower bound;
- MFU: that figure over a bf16 (fp32 on cpu) matmul peak measured in the same run;
- the levers of ``qsave.model.speed`` and one baseline, each against the shared mode on the
  same inputs (videos/s, ratio, largest score difference): ``pack`` (the prefixes as one packed
  row), ``vision-grouped`` (one vision attention call per frame size), ``compile``
  (torch.compile), ``full-logits`` (the plain forward that materialises every position's
  vocabulary logits: what the prefill-only rating-row path avoids).

Clip plans: ``slowfast`` (the paper's plan and budgets), ``uniform-matched`` (every 8 fps frame
at one size within the same token budget, Sec. 4.2.1's ablation), ``mixed`` (SlowFast clips of
1 … ``--seconds`` s in one batch: the padding that packing removes).

Figures (random-weight 8B shape, bf16, sdpa, one H100, transformers 5.24, before this version
of the script): shared 2.6–2.9× faster than independent; 5.10 videos/s at batch 8 on a 5 s
854×480 clip (3,050 video tokens), about 350 TFLOP/s, 44 % of the ~790 TFLOP/s measured peak.
GPU figures of this version: not measured yet (no GPU lent in the session that built it; run
``benchmarks/gpu_suite.py``). Goal: ≥ 55 % MFU at batch 8, three dimensions, shared prefix.

    python benchmarks/score_throughput.py --shape tiny --device cpu --batch-sizes 1 2
    python benchmarks/score_throughput.py --shape 8b --device cuda --json out/score.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from qsave.dimensions import DIMENSIONS
from qsave.evaluator import Evaluator, ScoreItem
from qsave.model import scorer, speed
from qsave.model.backend import TransformersBackend
from qsave.model.load import LoadedModel, rating_token_ids
from qsave.model.tiny import build_processor, build_tiny, special_token_ids
from qsave.prompts import AnswerFormat
from qsave.scores import ModelInfo
from qsave.spec import ScorerSpec, SpeedOptions
from qsave.video.inputs import VideoConfig, prepare_video

PROMPT = "A red ball bounces across a wooden table while the camera slowly pans to the right."
# Qwen3-VL-8B-Instruct's config.json (text 36 × 4096, vision 27 × 1152, deepstack 8/16/24)
QWEN3_VL_8B_TEXT = dict(
    vocab_size=151936,
    hidden_size=4096,
    intermediate_size=12288,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=262144,
    rms_norm_eps=1e-6,
    attention_bias=False,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
)
QWEN3_VL_8B_VISION = dict(
    depth=27,
    hidden_size=1152,
    intermediate_size=4304,
    num_heads=16,
    in_channels=3,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=4096,
    num_position_embeddings=2304,
    deepstack_visual_indexes=[8, 16, 24],
    hidden_act="gelu_pytorch_tanh",
)


def clip_frames(seconds: float, width: int, height: int, fps: float,
                count: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames at ``fps`` (N = ``count``, else seconds · fps): a moving disc,
    a drifting gradient and a scene cut half-way (so SlowFast finds new slow frames)."""
    count = round(seconds * fps) if count is None else count
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        t = i / fps
        base = (xx + 40 * t) % width / width * 200 if i < count // 2 else yy / height * 160
        frame = np.stack([base, base[::-1] * 0.8, np.full_like(base, 60.0)], -1)
        cx, cy = width * (0.2 + 0.6 * t / seconds), height * (0.5 + 0.3 * np.sin(3 * t))
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (height / 8) ** 2] = (230, 30, 30)
        frames[i] = frame.astype(np.uint8)
    return frames


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 24) -> Path:
    """``clip_frames`` encoded as an H.264 file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in clip_frames(seconds, width, height, fps):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """``--device`` and ``--dtype`` (default: bfloat16 on cuda, else float32)."""
    device = torch.device(args.device)
    return device, getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda"
                                                 else "float32"))


def build_8b(device: torch.device, dtype: torch.dtype):
    """Qwen3-VL-8B's exact architecture with random weights, and the tiny processor (its
    special-token ids are set in the config, so the processor's tokens index the model)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    processor = build_processor()
    config = Qwen3VLConfig(
        text_config=QWEN3_VL_8B_TEXT,
        vision_config=QWEN3_VL_8B_VISION,
        **special_token_ids(processor.tokenizer),
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), processor


def build(shape: str, device: torch.device, dtype: torch.dtype):
    if shape == "8b":
        return build_8b(device, dtype)
    tiny = build_tiny(seed=0)
    return tiny.model.to(device=device, dtype=dtype).eval(), tiny.processor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops(model, encoded: scorer.Encoded) -> float:
    """≈ 2 · parameters · tokens for the language model (embeddings and the unused lm_head
    left out) and the vision encoder (per patch); attention's quadratic term is left out."""
    text = model.model.language_model
    text_params = sum(p.numel() for p in text.parameters()) - text.embed_tokens.weight.numel()
    vision_params = sum(p.numel() for p in model.model.visual.parameters())
    tokens = int(encoded.batch["attention_mask"].sum())
    tokens += sum(len(s) for s in encoded.suffixes or [])
    patches = encoded.batch["pixel_values_videos"].shape[0]
    return 2.0 * (text_params * tokens + vision_params * patches)


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """TFLOP/s of a large square matmul in ``dtype``: the peak the MFU is taken against."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds / 1e12


def forward_full_logits(setup: scorer.ScoringSetup, encoded: scorer.Encoded) -> list[dict]:
    """The shared mode through the plain ``ForConditionalGeneration`` forward: logits over the
    whole vocabulary at every prefix and suffix position (the baseline of the prefill-only
    path, which computes five rating rows at one position)."""
    from transformers import DynamicCache

    with torch.inference_mode():
        batch, model = encoded.batch, setup.model
        cache = DynamicCache(config=model.config.get_text_config())
        model(**batch, cache=cache, use_cache=True, logits_to_keep=0)
        repeats = len(encoded.dimensions)
        ids, mask, lengths = scorer._pad_right(encoded.suffixes, setup.processor.tokenizer
                                               .pad_token_id, setup.device)
        cache.batch_repeat_interleave(repeats)
        start = batch["position_ids"].amax(dim=(0, 2)) + 1
        steps = torch.arange(ids.shape[1], device=setup.device)
        positions = (start.repeat_interleave(repeats)[:, None] + steps).expand(3, -1, -1)
        prefix_mask = batch["attention_mask"].repeat_interleave(repeats, dim=0)
        logits = model(input_ids=ids, attention_mask=torch.cat([prefix_mask, mask], dim=1),
                       position_ids=positions, cache=cache, use_cache=True,
                       logits_to_keep=0).logits
        rows = torch.arange(ids.shape[0], device=setup.device)
        rating = logits[rows, lengths - 1][:, list(setup.rating_ids)]
        return scorer._regroup(scorer.scores_from_logits(rating), encoded.count,
                               encoded.dimensions)


def uncompile(model) -> None:
    """Undo ``nn.Module.compile`` on the language model and the vision tower."""
    for module in (model.model.language_model, model.model.visual):
        module._compiled_call_impl = None


LEVERS = ("pack", "vision-grouped", "compile", "full-logits")


def lever_setup(setup: scorer.ScoringSetup, lever: str) -> tuple[scorer.ScoringSetup, object]:
    """The setup of one lever and the forward function it is timed with."""
    options = {"pack": SpeedOptions(pack_prefix=True),
               "vision-grouped": SpeedOptions(vision_attention="grouped"),
               "compile": SpeedOptions(compile=True)}.get(lever, SpeedOptions())
    speed.apply(setup.model, options)
    forward = forward_full_logits if lever == "full-logits" else scorer.forward_shared
    return dataclasses.replace(setup, speed=options), forward


def score_gap(a: list[dict], b: list[dict]) -> float:
    return max(abs(x[d].score - y[d].score) for x, y in zip(a, b, strict=True) for d in x)


def measure(setup, videos, batch: int, repeats: int, args, peak: float) -> dict:
    """One clip plan at one batch size: the shared mode (videos/s, TFLOP/s, MFU), the
    independent passes, the pipeline, and each lever against the shared mode."""
    items = [scorer.VideoPrompt(videos[i % len(videos)], PROMPT) for i in range(batch)]
    row: dict = {"batch": batch}
    encoded = scorer.encode_shared(setup, items, DIMENSIONS)
    reference = scorer.forward_shared(setup, encoded)
    seconds = timed(lambda: scorer.forward_shared(setup, encoded), setup.device, repeats)
    tflops = matmul_flops(setup.model, encoded) / seconds / 1e12
    row["shared"] = {"seconds": seconds, "videos_per_s": batch / seconds, "tflops": tflops,
                     "mfu": tflops / peak,
                     "tokens": int(encoded.batch["attention_mask"].sum())
                     + sum(map(len, encoded.suffixes)),
                     "padding": int((1 - encoded.batch["attention_mask"]).sum())}
    row["shared"]["e2e_seconds"] = timed(
        lambda: scorer.forward_shared(setup, scorer.encode_shared(setup, items, DIMENSIONS)),
        setup.device, repeats)
    row["levers"] = {}
    for lever in args.levers:
        fast, forward = lever_setup(setup, lever)
        try:
            scores = forward(fast, encoded)
            lever_seconds = timed(lambda f=fast, fw=forward: fw(f, encoded), setup.device,
                                  repeats)
            row["levers"][lever] = {"seconds": lever_seconds, "videos_per_s": batch / lever_seconds,
                                    "speedup": seconds / lever_seconds,
                                    "mfu": tflops * seconds / lever_seconds / peak,
                                    "max_score_gap": score_gap(scores, reference)}
        except torch.OutOfMemoryError:
            row["levers"][lever] = {"status": "oom"}
            torch.cuda.empty_cache()
        except Exception as error:  # one lever failing must not end a GPU run
            row["levers"][lever] = {"status": f"error: {error!r}"}
        finally:
            speed.apply(setup.model, SpeedOptions())
            if lever == "compile":
                uncompile(setup.model)
    del encoded
    if args.independent:
        encoded = scorer.encode_independent(setup, items, DIMENSIONS)
        scores = scorer.forward_independent(setup, encoded)
        ind = timed(lambda: scorer.forward_independent(setup, encoded), setup.device, repeats)
        row["independent"] = {"seconds": ind, "videos_per_s": batch / ind,
                              "shared_speedup": ind / seconds,
                              "max_score_gap": score_gap(scores, reference)}
        del encoded
    evaluator = Evaluator(TransformersBackend(
        LoadedModel(setup.model, setup.processor, setup.rating_ids,
                    ModelInfo("benchmark", None, str(setup.model.dtype), str(setup.device))),
        ScorerSpec(answer_format=setup.answer_format)))
    pipeline_items = [ScoreItem(it.video, PROMPT, id=str(i)) for i, it in enumerate(items)]
    pipe = timed(lambda: list(evaluator.score_many(pipeline_items, batch_size=batch)),
                 setup.device, repeats)
    row["pipeline"] = {"seconds": pipe, "videos_per_s": batch / pipe,
                       "over_bare_e2e": pipe / row["shared"]["e2e_seconds"]}
    return row


def report(clip: str, r: dict) -> None:
    b, sh = r["batch"], r["shared"]
    print(f"{clip:15s} batch {b:2d}: shared {sh['videos_per_s']:8.2f} videos/s "
          f"{sh['tflops']:8.3g} TFLOP/s  MFU {100 * sh['mfu']:5.1f} %  "
          f"({sh['tokens']} tokens, {sh['padding']} padding; end to end "
          f"{b / sh['e2e_seconds']:.2f} videos/s)")
    if "independent" in r:
        ind = r["independent"]
        print(f"{'':15s}           independent {ind['videos_per_s']:8.2f} videos/s  shared is "
              f"{ind['shared_speedup']:.2f}x faster (max |Δscore| {ind['max_score_gap']:.1e})")
    pipe = r["pipeline"]
    print(f"{'':15s}           pipeline {pipe['videos_per_s']:8.2f} videos/s "
          f"({pipe['over_bare_e2e']:.2f}x the bare shared end to end)")
    for lever, lr in r["levers"].items():
        if "status" in lr:
            print(f"{'':15s}           lever {lever:14s} {lr['status']}")
            continue
        print(f"{'':15s}           lever {lever:14s} {lr['videos_per_s']:8.2f} videos/s  "
              f"{lr['speedup']:5.2f}x  MFU {100 * lr['mfu']:5.1f} %  "
              f"max |Δscore| {lr['max_score_gap']:.1e}")


def clip_videos(plan: str, seconds: float, width: int, height: int, folder: Path) -> list:
    """Prepared videos of one plan: one clip, or (``mixed``) clips of 1 … ``seconds`` s."""
    if plan == "mixed":
        lengths = [float(s) for s in range(1, max(2, int(seconds)) + 1)]
        mode = "slowfast"
    else:
        lengths, mode = [seconds], plan
    return [prepare_video(write_clip(folder / f"{plan}-{i}.mp4", length, width, height),
                          VideoConfig(mode=mode)) for i, length in enumerate(lengths)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("tiny", "8b"), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--clips", nargs="+", default=["slowfast", "uniform-matched", "mixed"],
                   choices=("slowfast", "uniform-matched", "mixed"))
    p.add_argument("--levers", nargs="*", default=list(LEVERS), choices=LEVERS)
    p.add_argument("--no-independent", dest="independent", action="store_false")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", default="854x480", help="clip width x height")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip the remaining rows once this many seconds have passed")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p


def run(argv: list[str] | None = None, model=None) -> dict:
    """Measure and print; returns the figures (``--json`` writes them). ``model``: an already
    built ``(model, processor)`` of ``--shape`` (benchmarks/gpu_suite.py shares one)."""
    args = parser().parse_args(argv)
    started = time.perf_counter()
    device, dtype = device_and_dtype(args)
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clips = {plan: clip_videos(plan, args.seconds, width, height, Path(tmp))
                 for plan in args.clips}
    model, processor = model or build(args.shape, device, dtype)
    processor.tokenizer.padding_side = "left"
    fmt = AnswerFormat.RATING_FIRST
    setup = scorer.ScoringSetup(model, processor, rating_token_ids(processor.tokenizer, fmt), fmt)
    peak = matmul_peak(device, dtype)
    figures = {"env": environment(args, model, device, dtype), "peak_tflops": peak,
               "clips": {plan: [v.settings["plan"] for v in videos]
                         for plan, videos in clips.items()},
               "rows": {plan: [] for plan in clips}, "skipped": []}
    env = figures["env"]
    print(f"model {args.shape}: {env['params_b']:.3f} B params, {dtype}, {env['device_name']}, "
          f"attention {env['attention']}; torch {env['torch']}, transformers "
          f"{env['transformers']}; matmul peak {peak:.3g} TFLOP/s")
    for plan, videos in clips.items():
        print(f"clip {plan}: {args.seconds:g} s {width}x{height} -> "
              f"{'; '.join(str(v.settings['plan']) for v in videos)}")
        for batch in args.batch_sizes:
            if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
                figures["skipped"].append(f"{plan} batch {batch}: budget")
                continue
            try:
                row = measure(setup, videos, batch, args.repeats, args, peak)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                row = {"batch": batch, "status": "oom"}
                print(f"{plan:15s} batch {batch:2d}: out of memory")
            else:
                report(plan, row)
            figures["rows"][plan].append(row)
    if device.type == "cuda":
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"peak GPU memory {figures['peak_memory_gib']:.1f} GiB")
    figures["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return figures


def environment(args, model, device: torch.device, dtype: torch.dtype) -> dict:
    import transformers

    return {"shape": args.shape, "device": str(device), "dtype": str(dtype),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or "cpu"),
            "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
            "attention": model.config._attn_implementation, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:]}


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
