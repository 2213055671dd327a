"""Where is the alignment signal lost? Linear probes on the language model's hidden states.

Issue 20 asks to measure before adding machinery. For each clip of ``--records`` (alignment
records of a ``qsave data records`` split) this reads the hidden state of every layer at the
rating position of the alignment question (rating-first; a think-first checkpoint gets the
forced empty analysis) twice: with the clip's own prompt and with the prompt of a clip of
another prompt group (a *mismatching* prompt: the video shows none of it; the derangement of
``qsave prompt-shuffle``). Then, with clips split in two halves (fit / held out), it reports
per layer:

- ``attribute acc``: held-out accuracy of logistic probes on the hidden states averaged over
  the video tokens, predicting the colour, shape, count and direction the prompt asks for
  (which the video shows outside a defect's window) — does the vision side carry them?
- ``match acc``: held-out accuracy of a logistic probe telling own from mismatching prompt on
  the state (chance 0.5) — does the state at the rating position condition on
  the prompt at all? (Its input is one state; the pair is never compared.)
- ``mos srcc``: held-out SRCC of a ridge probe from the own-prompt state to the alignment MOS;
- and the model's own reading: the mean drop of r̂ from own to mismatching prompt, with the
  fraction of clips where it drops (what ``qsave prompt-shuffle`` reports).

    python benchmarks/alignment_probe.py --model runs/x/stage3-cooloff/final \
        --records work/records/test.jsonl --format rating-first
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge

from qsave.data.records import load_records
from qsave.data.scene import COLORS, DIRECTIONS, SHAPES
from qsave.dimensions import Dimension
from qsave.eval.prompt_shuffle import derange_prompts
from qsave.model.load import load
from qsave.model.scorer import ScoringSetup, VideoPrompt, encode_independent, forward_independent
from qsave.prompts import AnswerFormat
from qsave.spec import ScorerSpec
from qsave.video.inputs import prepare_video

ATTRIBUTES = ("color", "shape", "count", "direction")


def prompt_attributes(prompt: str) -> dict[str, str]:
    """The scene attributes a synthetic prompt asks for (qsave.data.scene's vocabulary)."""
    words = prompt.lower().rstrip(".").replace(";", " ").split()
    return {"color": next(w for w in words if w in COLORS),
            "shape": next(w.rstrip("s") for w in words if w.rstrip("s") in SHAPES),
            "count": words[0],
            "direction": next(w for w in words if w in DIRECTIONS)}


@torch.inference_mode()
def states(setup: ScoringSetup, videos: list, prompts: list[str], batch: int = 8):
    """(layers+1, N, H) hidden states at the rating position, the same averaged over the video
    tokens, and (N,) r̂ of the alignment question."""
    hidden, pooled, scores = [], [], []
    for i in range(0, len(videos), batch):
        items = [VideoPrompt(v, p) for v, p in zip(videos[i:i + batch], prompts[i:i + batch],
                                                   strict=True)]
        encoded = encode_independent(setup, items, (Dimension.ALIGNMENT,))
        out = setup.model.model(**encoded.batch, output_hidden_states=True)
        mask = encoded.batch["attention_mask"]
        last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)
        rows = torch.arange(mask.shape[0])
        hidden.append(torch.stack([h[rows, last] for h in out.hidden_states]))
        video = (encoded.batch["input_ids"] == setup.model.config.video_token_id).unsqueeze(-1)
        pooled.append(torch.stack([(h * video).sum(1) / video.sum(1) for h in out.hidden_states]))
        scores += [s[Dimension.ALIGNMENT].score for s in forward_independent(setup, encoded)]
    return (torch.cat(hidden, dim=1).float().numpy(), torch.cat(pooled, dim=1).float().numpy(),
            np.array(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder, or tiny-demo")
    parser.add_argument("--records", required=True, help="records jsonl (alignment rows used)")
    parser.add_argument("--format", default="rating-first", choices=[f.value for f in AnswerFormat])
    parser.add_argument("--limit", type=int, default=400, help="clips at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    spec = ScorerSpec(model=args.model, answer_format=AnswerFormat(args.format), device="cpu")
    loaded = load(spec)
    setup = ScoringSetup(loaded.model, loaded.processor, loaded.rating_ids, spec.answer_format)
    records = [r for r in load_records(args.records).records if r.dimension == "alignment"]
    records = records[: args.limit]
    videos = [prepare_video(r.video, spec.video) for r in records]
    own = [r.prompt for r in records]
    shuffled = derange_prompts(own, args.seed)
    other = [shuffled[p] for p in own]
    h_own, v_own, s_own = states(setup, videos, own)
    h_other, _, s_other = states(setup, videos, other)
    asked = [prompt_attributes(p) for p in own]
    mos = np.array([r.mos for r in records])
    half = np.arange(len(records)) % 2 == 0
    rows = []
    for layer in range(h_own.shape[0]):
        x = np.concatenate([h_own[layer], h_other[layer]])
        y = np.concatenate([np.ones(len(records)), np.zeros(len(records))])
        fit = np.concatenate([half, half])
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(x[fit], y[fit])
        acc = float(clf.score(x[~fit], y[~fit]))
        ridge = Ridge(alpha=1.0).fit(h_own[layer][half], mos[half])
        srcc = float(spearmanr(ridge.predict(h_own[layer][~half]), mos[~half])[0])
        seen = {}
        for name in ATTRIBUTES:  # what the video tokens carry of what the prompt asks for
            labels = np.array([a[name] for a in asked])
            probe = LogisticRegression(max_iter=2000).fit(v_own[layer][half], labels[half])
            seen[name] = round(float(probe.score(v_own[layer][~half], labels[~half])), 3)
        rows.append({"layer": layer, "match_acc": round(acc, 3), "mos_srcc": round(srcc, 3),
                     "video_attribute_acc": seen})
    drop = s_own - s_other
    result = {
        "model": args.model, "clips": len(records), "layers": rows,
        "model_srcc": round(float(spearmanr(s_own, mos)[0]), 3),
        "mean_drop": round(float(drop.mean()), 4),
        "dropped_fraction": round(float((drop > 0).mean()), 3),
    }
    for row in rows:
        print(f"layer {row['layer']}: rating position: match acc {row['match_acc']:.3f}, "
              f"mos srcc {row['mos_srcc']:.3f}; video tokens: attribute acc "
              + ", ".join(f"{k} {v:.2f}" for k, v in row["video_attribute_acc"].items()))
    print(f"model: alignment SRCC {result['model_srcc']:.3f}, mean drop on a mismatching prompt "
          f"{result['mean_drop']:+.4f}, dropped on {result['dropped_fraction']:.0%} of clips")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
