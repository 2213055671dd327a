"""`qsave score`: inputs, rows per input, exit code, CSV, resume after a kill -9."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qsave
from qsave.cli import main
from qsave.data.synthetic import SynthConfig, write_corpus
from qsave.jsonl import read_jsonl
from qsave.scores import VideoResult


def read_records(path):
    return [row for _, row in read_jsonl(path).rows]


def key_of(row):
    return VideoResult.from_record(row).key


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-clips")
    write_corpus(root, SynthConfig(n=3, seed=3, seconds=0.5))
    return root


@pytest.fixture(autouse=True)
def no_cached_demo(monkeypatch, tmp_path):
    monkeypatch.setenv("QSAVE_CACHE", str(tmp_path / "cache"))  # --model tiny: the random one


def test_manifest_rows_csv_and_rerun(corpus, tmp_path):
    out, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    args = ["score", str(corpus / "manifest.jsonl"), "-o", str(out), "--model", "tiny",
            "--dimensions", "visual,alignment", "--batch-size", "2"]
    assert main([*args, "--csv", str(table)]) == 0
    rows = list(read_records(out))
    manifest = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [m["id"] for m in manifest]
    assert [r["prompt"] for r in rows] == [m["prompt"] for m in manifest]
    assert all(set(r["scores"]) == {"visual", "alignment"} and r["error"] is None for r in rows)
    with table.open() as handle:
        lines = list(csv.DictReader(handle))
    assert [line["id"] for line in lines] == [r["id"] for r in rows]
    assert float(lines[0]["visual_mos"]) == pytest.approx(rows[0]["scores"]["visual"]["mos"])
    assert main(args) == 0  # resumed: nothing left to do, nothing appended
    assert list(read_records(out)) == rows


def test_a_bad_input_is_a_row_and_a_non_zero_exit(corpus, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.mp4").write_bytes((corpus / "clips" / "syn-00000.mp4").read_bytes())
    (clips / "b.mp4").write_bytes(b"garbage")
    (clips / "c.mp4").write_bytes((clips / "a.mp4").read_bytes())  # same bytes, its own row
    out = tmp_path / "out.jsonl"
    args = ["score", str(clips), "-o", str(out), "--prompt", "two cubes", "--explain",
            "--max-new-tokens", "2", "--dimensions", "dynamic"]
    assert main(args) == 1
    printed = capsys.readouterr().err
    assert f"failed: {clips / 'b.mp4'}: VideoError: cannot open video" in printed
    rows = {r["id"]: r for r in read_records(out)}
    assert set(rows) == {"a", "b", "c"} and rows["a"]["content_hash"] == rows["c"]["content_hash"]
    assert rows["b"]["error"] and not rows["b"]["scores"]
    assert isinstance(rows["a"]["scores"]["dynamic"]["rationale"], str)
    assert rows["a"]["prompt"] == "two cubes" and rows["a"]["settings"]["explain"] is True
    assert main(args) == 1  # resumed: b is tried again, and its new row replaces the old one
    assert len(list(read_records(out))) == 3


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_same_rows(tmp_path):
    corpus = tmp_path / "corpus"  # enough clips that the kill lands mid-run
    write_corpus(corpus, SynthConfig(n=12, seed=3, seconds=0.5))
    out, reference = tmp_path / "killed.jsonl", tmp_path / "reference.jsonl"
    args = ["score", str(corpus / "manifest.jsonl"), "--batch-size", "1", "--dimensions", "visual"]
    assert main([*args, "-o", str(reference)]) == 0
    source_root = str(Path(qsave.__file__).resolve().parents[1])  # importable without install
    path = os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "QSAVE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": path}
    code = f"from qsave.cli import main; main({[*args, '-o', str(out)]!r})"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if out.is_file() and out.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the child finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    written = list(read_records(out))
    assert 1 <= len(written) < 12
    assert main([*args, "-o", str(out)]) == 0
    rows, expected = list(read_records(out)), list(read_records(reference))
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    assert len({key_of(r) for r in rows}) == len(rows)
    assert rows[: len(written)] == written  # written rows survive the kill unchanged
    for row, ref in zip(rows, expected, strict=True):
        assert row["scores"]["visual"]["score"] == pytest.approx(ref["scores"]["visual"]["score"])


def test_limits_make_a_hostile_file_or_prompt_an_error_row(corpus, tmp_path):
    """A 16000×16000 file in a folder is refused from its header (the others are scored), and
    `--limits` bounds prompts too."""
    from video.hostile import write_huge_clip

    folder = tmp_path / "clips"
    folder.mkdir()
    write_huge_clip(folder / "huge.avi")
    (folder / "ok.mp4").write_bytes(next((corpus / "clips").glob("*.mp4")).read_bytes())
    out = tmp_path / "out.jsonl"
    assert main(["score", str(folder), "-o", str(out), "--model", "tiny", "--prompt", "p"]) == 1
    rows = {row["id"]: row for row in read_records(out)}
    assert rows["huge"]["error"]["type"] == "VideoLimitError"
    assert "max_pixels" in rows["huge"]["error"]["message"] and rows["ok"]["error"] is None
    limits = tmp_path / "limits.yaml"
    limits.write_text("max_prompt_tokens: 4\nvideo:\n  max_pixels: 100000000000\n")
    prompted = tmp_path / "prompted.jsonl"
    assert main(["score", str(folder / "ok.mp4"), "-o", str(prompted), "--model", "tiny",
                 "--limits", str(limits), "--prompt", "a red cube slides left slowly"]) == 1
    row, = read_records(prompted)
    assert row["error"]["type"] == "PromptLimitError" and "max_prompt_tokens (4)" in \
        row["error"]["message"]
