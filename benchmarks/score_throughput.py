"""Three-dimension scoring throughput: independent passes vs one shared video encoding.

Builds a model from a config — ``tiny`` (the offline tiny Qwen3-VL) or ``8b`` (the exact
Qwen3-VL-8B architecture, random weights) — synthesizes a SlowFast clip with PyAV (moving
shapes over a gradient, ``--seconds`` long), and measures videos/s for scoring visual, dynamic
and alignment with (a) three independent full passes per video (the video encoded three times)
and (b) the shared prefix (video encoded once, three suffixes continued from its KV cache), at
each batch size. It prints the model-only time (inputs already on the device), the end-to-end
time (processor + model; decoding excluded), and the ratio independent / shared; then the same
batch through the whole scoring pipeline (``Evaluator.score_many`` on the prepared video: rows
with per-item errors and retries), against the bare shared end-to-end time of the same run.

Reference: transformers' plain forward took 358 ms for three independent passes of such
a clip and 143 ms with a shared, batched prefix (H100, bf16, sdpa). Goals at the 8B shape on one
H100: shared ≥ 2.5× faster than independent, ≥ 12 videos/s.

    python benchmarks/score_throughput.py --shape tiny --device cpu --dtype float32
    python benchmarks/score_throughput.py --shape 8b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from qsave.dimensions import DIMENSIONS
from qsave.evaluator import Evaluator, ScoreItem
from qsave.model import scorer
from qsave.model.backend import TransformersBackend
from qsave.model.load import LoadedModel, rating_token_ids
from qsave.model.tiny import build_processor, build_tiny, special_token_ids
from qsave.prompts import AnswerFormat
from qsave.scores import ModelInfo
from qsave.spec import ScorerSpec
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


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 24) -> Path:
    """A clip with a moving disc, a drifting gradient and a scene cut half-way (H.264)."""
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frames = round(seconds * fps)
        for i in range(frames):
            t = i / fps
            base = (xx + 40 * t) % width / width * 200 if i < frames // 2 else yy / height * 160
            frame = np.stack([base, base[::-1] * 0.8, np.full_like(base, 60.0)], -1)
            cx, cy = width * (0.2 + 0.6 * t / seconds), height * (0.5 + 0.3 * np.sin(3 * t))
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (height / 8) ** 2] = (230, 30, 30)
            image = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


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


ENCODE = {"shared": scorer.encode_shared, "independent": scorer.encode_independent}
FORWARD = {"shared": scorer.forward_shared, "independent": scorer.forward_independent}


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


def measure(setup, video, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per batch for each mode, model only (inputs already encoded on the
    device) and end to end (processor included), the model-only TFLOP/s, and the largest
    difference between the two modes' scores."""
    items = [scorer.VideoPrompt(video, PROMPT) for _ in range(batch)]
    result, scores = {}, {}
    for mode in ("independent", "shared"):
        encoded = ENCODE[mode](setup, items, DIMENSIONS)
        scores[mode] = FORWARD[mode](setup, encoded)
        seconds = timed(lambda e=encoded, m=mode: FORWARD[m](setup, e), setup.device, repeats)
        result[f"{mode}_model"] = seconds
        result[f"{mode}_tflops"] = matmul_flops(setup.model, encoded) / seconds / 1e12
        del encoded
        end_to_end = lambda m=mode: FORWARD[m](setup, ENCODE[m](setup, items, DIMENSIONS))  # noqa: E731
        result[f"{mode}_e2e"] = timed(end_to_end, setup.device, repeats)
    evaluator = Evaluator(TransformersBackend(
        LoadedModel(setup.model, setup.processor, setup.rating_ids,
                    ModelInfo("benchmark", None, str(setup.model.dtype), str(setup.device))),
        ScorerSpec(answer_format=setup.answer_format)))
    pipeline_items = [ScoreItem(video, PROMPT, id=str(i)) for i in range(batch)]
    result["pipeline"] = timed(lambda: list(evaluator.score_many(pipeline_items, batch_size=batch)),
                               setup.device, repeats)
    result["max_score_gap"] = max(
        abs(x[d].score - y[d].score)
        for x, y in zip(scores["shared"], scores["independent"], strict=True)
        for d in DIMENSIONS
    )
    return result


def report(batch: int, r: dict[str, float]) -> None:
    for label in ("model", "e2e"):
        ind, sh = r[f"independent_{label}"], r[f"shared_{label}"]
        print(
            f"batch {batch:2d} {label:5s}: independent {1e3 * ind:9.1f} ms ({batch / ind:7.2f} "
            f"videos/s)  shared {1e3 * sh:9.1f} ms ({batch / sh:7.2f} videos/s)  "
            f"ratio {ind / sh:5.2f}x"
        )
    pipe, bare = r["pipeline"], r["shared_e2e"]
    print(f"batch {batch:2d} pipeline: Evaluator.score_many {1e3 * pipe:9.1f} ms "
          f"({batch / pipe:7.2f} videos/s)  bare shared e2e {1e3 * bare:9.1f} ms  "
          f"ratio {pipe / bare:5.2f}x")
    print(
        f"batch {batch:2d} model-only matmul throughput: independent "
        f"{r['independent_tflops']:.3g} TFLOP/s, shared {r['shared_tflops']:.3g} TFLOP/s; "
        f"max |score(independent) - score(shared)| = {r['max_score_gap']:.2e}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("tiny", "8b"), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, else float32")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="854x480", help="clip width x height")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", args.seconds, width, height)
        video = prepare_video(clip, VideoConfig(mode="slowfast"))
    start = time.perf_counter()
    model, processor = build(args.shape, device, dtype)
    processor.tokenizer.padding_side = "left"
    fmt = AnswerFormat.RATING_FIRST
    setup = scorer.ScoringSetup(model, processor, rating_token_ids(processor.tokenizer, fmt), fmt)
    params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"model {args.shape}: {params / 1e9:.3f} B params, {dtype}, {name}, "
        f"attention {model.config._attn_implementation}, built in "
        f"{time.perf_counter() - start:.1f} s; torch {torch.__version__}"
    )
    summary = video.settings["plan"]
    print(f"clip: {args.seconds:g} s {width}x{height} -> {summary}")
    for batch in args.batch_sizes:
        report(batch, measure(setup, video, batch, args.repeats))
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
