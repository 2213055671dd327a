"""The public Evaluator: typed results, per-item errors, batching, inputs and result files."""

import json

import pytest

from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import AnnotationError, ConfigError, QsaveError
from qsave.evaluator import Evaluator, ScoreItem, items_from, parse_dimensions, score_to_jsonl
from qsave.model.load import LoadedModel, ModelInfo, rating_token_ids
from qsave.results import key_of, read_records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluator-clips")
    write_corpus(root, SynthConfig(n=3, seed=2, seconds=0.5))
    (root / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    return root


@pytest.fixture(scope="module")
def evaluator(tiny):
    tokenizer = tiny.processor.tokenizer
    assert tokenizer.padding_side == "left"
    info = ModelInfo("qsave/tiny-random-seed0", None, "float32", "cpu")
    return Evaluator(LoadedModel(tiny.model, tiny.processor,
                                 rating_token_ids(tokenizer, "rating-first"), info))


def test_score_returns_a_typed_result(evaluator, corpus):
    clip = sorted((corpus / "clips").glob("syn-*.mp4"))[0]
    result = evaluator.score(clip, "a red ball moves left", dimensions=["alignment", "visual"])
    assert result.ok and result.id == clip.stem and result.path == str(clip)
    assert list(result.scores) == [Dimension.VISUAL, Dimension.ALIGNMENT]  # canonical order
    assert result.content_hash.startswith("sha256:")
    record = json.loads(json.dumps(result.to_record()))
    assert set(record["scores"]["visual"]) == {"score", "mos", "probs", "rating", "entropy"}
    assert record["model"]["id"] == "qsave/tiny-random-seed0"
    assert record["settings"]["dimensions"] == ["visual", "alignment"]
    assert record["settings"]["video"]["mode"] == "slowfast"
    assert record["video"]["num_tokens"] > 0


def test_score_raises_for_a_bad_video(evaluator, corpus):
    with pytest.raises(QsaveError):
        evaluator.score(corpus / "clips" / "broken.mp4")


def test_score_many_records_errors_and_keeps_order(evaluator, corpus):
    items = items_from(corpus / "clips", prompt="fallback prompt")
    assert items[0].name == "broken"
    seen = []
    results = list(evaluator.score_many(items, batch_size=4, on_result=seen.append))
    assert [r.id for r in results] == [i.name for i in items] == [r.id for r in seen]
    assert results[0].error.startswith("VideoError") and not results[0].scores
    assert all(r.ok and len(r.scores) == 3 for r in results[1:])
    one_by_one = list(evaluator.score_many(items[1:], batch_size=1))
    for a, b in zip(results[1:], one_by_one, strict=True):
        for d in DIMENSIONS:
            assert a.scores[d].score == pytest.approx(b.scores[d].score, abs=1e-4)


def test_items_from_manifest_and_prompt_files(corpus, tmp_path):
    items = items_from(corpus / "manifest.jsonl")
    manifest = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    assert [(i.id, i.prompt) for i in items] == [(m["id"], m["prompt"]) for m in manifest]
    assert all(i.path == str(corpus / m["path"]) for i, m in zip(items, manifest, strict=True))
    table = tmp_path / "prompts.json"
    table.write_text(json.dumps({"broken.mp4": "a broken clip"}))
    assert items_from(corpus / "clips" / "broken.mp4", "other", table)[0].prompt == "a broken clip"
    lines = tmp_path / "prompts.jsonl"
    lines.write_text(json.dumps({"id": "broken", "prompt": "by id"}) + "\n")
    assert items_from(corpus / "clips", None, lines)[0].prompt == "by id"
    lines.write_text("{not json\n")
    with pytest.raises(AnnotationError, match=r"prompts\.jsonl:1"):
        items_from(corpus / "clips", None, lines)


def test_parse_dimensions():
    assert parse_dimensions(None) == DIMENSIONS
    chosen = parse_dimensions(["Dynamic", "visual", "dynamic"])
    assert chosen == (Dimension.VISUAL, Dimension.DYNAMIC)
    with pytest.raises(ConfigError, match="valid dimensions"):
        parse_dimensions(["motion"])


def test_score_to_jsonl_resumes_without_duplicates(evaluator, corpus, tmp_path):
    items = items_from(corpus / "manifest.jsonl")
    full = score_to_jsonl(evaluator, items, tmp_path / "full.jsonl", batch_size=2)
    assert (full.written, full.skipped, full.failed) == (len(items), 0, [])
    out = tmp_path / "out.jsonl"
    first = score_to_jsonl(evaluator, items[:1], out)
    with out.open("a") as handle:  # a write killed midway: half a line, no newline
        handle.write(json.dumps(full.records[1])[:40])
    again = score_to_jsonl(evaluator, items_from(corpus / "manifest.jsonl"), out, batch_size=2)
    assert (first.written, again.written, again.skipped) == (1, len(items) - 1, 1)
    rows = list(read_records(out))
    assert [r["id"] for r in rows] == [r["id"] for r in full.records]
    assert len({key_of(r) for r in rows}) == len(rows)
    for row, reference in zip(rows, full.records, strict=True):
        for d, s in reference["scores"].items():
            assert row["scores"][d]["score"] == pytest.approx(s["score"], abs=1e-4)
    other = score_to_jsonl(evaluator, items[:1], out, dimensions=["visual"])  # new settings
    assert other.written == 1


def test_score_item_names():
    assert ScoreItem("/x/clip-1.mp4").name == "clip-1"
    assert ScoreItem("/x/clip-1.mp4", id="c1").name == "c1"
