"""Resumable results files: the one reader/writer, repairs, one row per input at the end."""

import json
import shutil

import pytest

from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.evaluator import ScoreItem
from qsave.jsonl import read_jsonl
from qsave.results import score_to_jsonl
from qsave.scores import VideoResult, read_results
from qsave.sources import items_from


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("results-clips")
    write_corpus(root, SynthConfig(n=3, seed=2, seconds=0.5))
    return root


@pytest.fixture(scope="module")
def reference(tiny_evaluator, corpus, tmp_path_factory):
    """The rows of one clean run over the manifest."""
    out = tmp_path_factory.mktemp("reference") / "out.jsonl"
    run = score_to_jsonl(tiny_evaluator, items_from(corpus / "manifest.jsonl"), out)
    assert (run.written, run.skipped, run.failed, run.repairs) == (3, 0, [], [])
    return [r.to_record() for r in run.results]


def rows_of(path):
    return [VideoResult.from_record(row) for _, row in read_jsonl(path).rows]


def assert_one_row_per_input(path, reference):
    rows = rows_of(path)
    assert sorted(r.id for r in rows) == sorted(r["id"] for r in reference)
    by_id = {r.id: r for r in rows}
    for expected in reference:
        got = by_id[expected["id"]]
        for dimension, score in got.scores.items():
            assert score.score == pytest.approx(expected["scores"][dimension.value]["score"],
                                                abs=1e-6)


def test_rows_round_trip_through_the_one_reader(reference):
    for row in reference:
        assert VideoResult.from_record(json.loads(json.dumps(row))).to_record() == row


def test_resume_after_a_garbage_line_reports_it_and_keeps_it(tiny_evaluator, corpus, reference,
                                                              tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(reference[0]) + "\n" + "}}} not a row {{{\n")
    run = score_to_jsonl(tiny_evaluator, items_from(corpus / "manifest.jsonl"), out)
    assert (run.written, run.skipped) == (2, 1)
    assert any(":2: not a valid row" in repair for repair in run.repairs)
    assert out.read_text().splitlines()[1] == "}}} not a row {{{"  # never deleted silently
    assert [n for n, _ in read_results(out).invalid] == [2]
    assert_one_row_per_input(out, reference)


def test_resume_after_a_row_cut_inside_a_multibyte_character(tiny_evaluator, corpus, reference,
                                                             tmp_path):
    items = items_from(corpus / "manifest.jsonl")
    for item in items:
        item.prompt = "un chat orangé — ☃"  # multi-byte characters, written unescaped
    out = tmp_path / "out.jsonl"
    first = score_to_jsonl(tiny_evaluator, items[:2], out)
    data = out.read_bytes()
    cut = data.rindex("☃".encode()) + 1  # inside the snowman's three bytes
    out.write_bytes(data[:cut])
    with pytest.raises(UnicodeDecodeError):
        data[:cut].decode("utf-8")
    run = score_to_jsonl(tiny_evaluator, items, out)
    assert (run.written, run.skipped) == (2, 1)
    assert any("cut a damaged last line (line 2" in repair for repair in run.repairs)
    rows = rows_of(out)
    assert [r.id for r in rows] == [i.name for i in items]
    assert rows[0].to_record() == first.results[0].to_record()  # the whole row survives as is
    assert read_results(out).invalid == [] and read_jsonl(out).tail is None


def test_a_fixed_file_replaces_its_error_row(tiny_evaluator, corpus, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    good = sorted((corpus / "clips").glob("*.mp4"))
    shutil.copy(good[0], clips / "a.mp4")
    (clips / "b.mp4").write_bytes(b"not a video")
    out = tmp_path / "out.jsonl"
    first = score_to_jsonl(tiny_evaluator, items_from(clips, "p"), out)
    assert [r.id for r in first.failed] == ["b"] and first.failed[0].error.type == "VideoError"
    shutil.copy(good[1], clips / "b.mp4")  # the user fixes the file
    second = score_to_jsonl(tiny_evaluator, items_from(clips, "p"), out)
    assert (second.written, second.skipped, second.replaced, second.failed) == (1, 1, 1, [])
    rows = rows_of(out)
    assert [r.id for r in rows] == ["a", "b"] and all(r.ok for r in rows)
    assert not out.with_suffix(".replaced.jsonl").exists()  # an error row holds no scores
    third = score_to_jsonl(tiny_evaluator, items_from(clips, "p"), out)
    assert (third.written, third.skipped, third.replaced) == (0, 2, 0)


def test_a_changed_file_replaces_its_row_and_the_old_scores_are_kept_aside(
        tiny_evaluator, corpus, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    good = sorted((corpus / "clips").glob("*.mp4"))
    shutil.copy(good[0], clips / "a.mp4")
    out = tmp_path / "out.jsonl"
    old = score_to_jsonl(tiny_evaluator, items_from(clips, "p"), out).results[0]
    shutil.copy(good[1], clips / "a.mp4")  # new content under the same id
    run = score_to_jsonl(tiny_evaluator, items_from(clips, "p"), out)
    assert (run.written, run.replaced) == (1, 1)
    [row] = rows_of(out)
    assert row.content_hash != old.content_hash
    assert rows_of(out.with_suffix(".replaced.jsonl"))[0].to_record() == old.to_record()


def test_other_settings_add_rows_and_failed_inputs_are_retried(tiny_evaluator, corpus, tmp_path):
    out = tmp_path / "out.jsonl"
    items = items_from(corpus / "manifest.jsonl")
    score_to_jsonl(tiny_evaluator, items, out)
    other = score_to_jsonl(tiny_evaluator, items[:1], out, dimensions=["visual"])
    assert (other.written, other.replaced) == (1, 0)
    assert len(rows_of(out)) == 4
    missing = ScoreItem(str(corpus / "clips" / "gone.mp4"), "p", id="gone")
    for _ in range(2):  # a failure is tried again, and still leaves a single row
        run = score_to_jsonl(tiny_evaluator, [missing], out)
        assert run.written == 1 and run.failed[0].error.type == "VideoNotFoundError"
    assert [r.id for r in rows_of(out)].count("gone") == 1
