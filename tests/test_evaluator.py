"""The scoring pipeline (Evaluator): typed results, per-item errors, batching, retries."""

import io
import json

import pytest

from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.dimensions import DIMENSIONS, Dimension
from qsave.errors import AnnotationError, ConfigError, QsaveError, VideoError
from qsave.evaluator import ScoreItem, parse_dimensions
from qsave.scores import ItemError
from qsave.sources import items_from


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluator-clips")
    write_corpus(root, SynthConfig(n=3, seed=2, seconds=0.5))
    (root / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    return root


@pytest.fixture(scope="module")
def evaluator(tiny_evaluator, tiny):
    assert tiny.processor.tokenizer.padding_side == "left"
    return tiny_evaluator


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
    assert record["settings"]["backend"] == "transformers"
    assert record["video"]["num_tokens"] > 0


def test_score_raises_the_typed_error_of_a_bad_video(evaluator, corpus):
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        evaluator.score(corpus / "clips" / "broken.mp4", "a prompt")


def test_bytes_and_streams_are_scored_like_the_file(evaluator, corpus):
    clip = sorted((corpus / "clips").glob("syn-*.mp4"))[0]
    by_path = evaluator.score(clip, "p")
    data = clip.read_bytes()
    results = list(evaluator.score_many([ScoreItem(data, "p", "b"),
                                         ScoreItem(io.BytesIO(data), "p", "s")], batch_size=1))
    for result in results:
        assert result.content_hash == by_path.content_hash and result.path is None
        for d in DIMENSIONS:
            assert result.scores[d].score == by_path.scores[d].score


def test_a_batch_failure_is_retried_item_by_item(evaluator, corpus, monkeypatch):
    clips = sorted((corpus / "clips").glob("syn-*.mp4"))[:2]
    backend, calls = evaluator.backend, []
    real = type(backend).score

    def flaky(self, items, dimensions, explain):
        calls.append(len(items))
        if len(items) > 1 or items[0].result.id == clips[0].stem:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, items, dimensions, explain)

    monkeypatch.setattr(type(backend), "score", flaky)
    first, second = evaluator.score_many(clips, prompt="p", batch_size=2)
    assert calls == [2, 1, 1]
    assert first.error == ItemError("RuntimeError", "CUDA out of memory (simulated)")
    assert second.ok and len(second.scores) == 3
    with pytest.raises(QsaveError, match="RuntimeError: CUDA out of memory"):
        raise first.error.to_exception()


def test_score_many_records_errors_and_keeps_order(evaluator, corpus):
    items = items_from(corpus / "clips", prompt="fallback prompt")
    assert items[0].name == "broken"
    seen = []
    results = list(evaluator.score_many(items, batch_size=4, on_result=seen.append))
    assert [r.id for r in results] == [i.name for i in items] == [r.id for r in seen]
    assert results[0].error.type == "VideoError" and not results[0].scores
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


def test_score_item_names():
    assert ScoreItem("/x/clip-1.mp4").name == "clip-1"
    assert ScoreItem("/x/clip-1.mp4", id="c1").name == "c1"
