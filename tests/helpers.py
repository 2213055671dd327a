"""Helpers shared by the tests (importable: pyproject puts tests/ on the path)."""

from qsave.dimensions import DIMENSIONS
from qsave.scores import DimensionScore, ItemError, VideoResult


def evaluator_on(tiny, **spec):
    """An Evaluator on ``tiny`` (transformers backend) with the given ScorerSpec fields."""
    from qsave.evaluator import Evaluator
    from qsave.model.backend import TransformersBackend
    from qsave.model.load import TINY_RANDOM_ID, LoadedModel, rating_token_ids
    from qsave.scores import ModelInfo
    from qsave.spec import ScorerSpec

    scorer = ScorerSpec(**spec)
    ids = rating_token_ids(tiny.processor.tokenizer, scorer.answer_format)
    info = ModelInfo(TINY_RANDOM_ID, None, "float32", "cpu")
    return Evaluator(TransformersBackend(LoadedModel(tiny.model, tiny.processor, ids, info),
                                         scorer))


def score_row(video_id, scores=None, error=None, path=None, **fields):
    """A ``qsave score`` row written by the one writer: ``scores`` maps dimension names to r̂
    (all three at 0.5 by default), ``error`` a message (type VideoError)."""
    values = scores if scores is not None else {d.value: 0.5 for d in DIMENSIONS}
    typed = ItemError("VideoError", error) if error else None
    result = VideoResult(video_id, path, fields.pop("content_hash", None),
                         fields.pop("prompt", "p"), error=typed, **fields)
    if error is None:
        result.scores = {d: dimension_score(values[d.value]) for d in DIMENSIONS
                         if d.value in values}
    return result.to_record()


def dimension_score(r_hat):
    """A DimensionScore of r̂ (its other fields consistent with a flat distribution)."""
    return DimensionScore(r_hat, 1 + 4 * r_hat, (0.2,) * 5, "Fair", 1.6094)


TORCHRUN_TIMEOUT_S = 240  # one launch of the multi-process tests runs SFT and GRPO


def tiny_demo_fp32(folder):
    """A float32 copy of the shipped tiny-demo in ``folder``: GRPO starts from it in the
    multi-process tests, since its rollouts earn rewards that differ within a group (the random
    tiny model's earn none, and zero advantages would compare nothing)."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from qsave.spec import shipped_tiny_demo_dir

    out = folder / "tiny-demo-fp32"
    demo = Qwen3VLForConditionalGeneration.from_pretrained(shipped_tiny_demo_dir(),
                                                           dtype=torch.float32)
    demo.save_pretrained(out)
    AutoProcessor.from_pretrained(shipped_tiny_demo_dir()).save_pretrained(out)
    return out


def torchrun(worker, args, processes=2, env=None):
    """Run ``worker`` with ``args`` in ``processes`` CPU processes (torchrun, gloo); fails the
    test with the output's tail when it does not exit 0."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", str(worker), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=TORCHRUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def prepared_clips(root, per_length):
    """``per_length`` synthetic clips of 0.5 s and as many of 1 s (a batch of both needs
    padding), decoded and SlowFast-planned, with their prompts, as ``scorer.VideoPrompt``s."""
    from qsave.data.synthetic import SynthConfig, write_corpus
    from qsave.model import scorer
    from qsave.video.inputs import VideoConfig, prepare_video

    prepared = []
    for seconds, seed in ((0.5, 0), (1.0, 1)):
        corpus = write_corpus(root / str(seed), SynthConfig(n=per_length, seed=seed,
                                                            seconds=seconds))
        for clip in corpus.clips:
            video = prepare_video(root / str(seed) / clip.path, VideoConfig())
            prepared.append(scorer.VideoPrompt(video, clip.prompt))
    return prepared
