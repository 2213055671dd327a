"""What a researcher sees of `qsave score` and the CLI's conventions, through the real CLI on
real files: results on screen, one-line errors before any model loads, nothing of the user's
overwritten, no silent defaults, Ctrl-C that says what was saved."""

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

LOADING = "the tiny model is untrained"  # printed once the model is loaded


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("surface")
    write_corpus(root, SynthConfig(n=3, seed=7, seconds=0.5))
    return root


@pytest.fixture(autouse=True)
def no_cached_demo(monkeypatch, tmp_path):
    monkeypatch.setenv("QSAVE_CACHE", str(tmp_path / "cache"))


def clip(corpus) -> Path:
    return sorted((corpus / "clips").glob("*.mp4"))[0]


def test_scores_are_printed_with_a_summary_and_failures_on_stderr(corpus, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip(corpus).read_bytes())
    (folder / "b.ts").write_bytes(b"not a transport stream")  # scanned: .ts is a video suffix
    (folder / "notes.txt").write_text("hello")
    out = tmp_path / "out.jsonl"
    assert main(["score", str(folder), "-o", str(out), "--prompt", "a cube"]) == 1
    printed = capsys.readouterr()
    assert "visual" in printed.out and any(f"({word})" in printed.out for word in
                                           ("Bad", "Poor", "Fair", "Good", "Excellent"))
    assert "1 scored, 1 failed, 0 already in" in printed.out and "videos/s" in printed.out
    assert "skipped 1 file(s) that are not videos" in printed.out and "notes.txt" in printed.out
    assert f"failed: {folder / 'b.ts'}: VideoError" in printed.err
    assert main(["score", str(folder), "-o", str(out), "--prompt", "a cube", "--quiet"]) == 1
    quiet = capsys.readouterr()
    assert quiet.out == "" and f"failed: {folder / 'b.ts'}" in quiet.err


@pytest.mark.parametrize("args,message", [
    (["nope.mp4"], "no such file or folder: nope.mp4"),
    (["EMPTY"], "no videos in"),
    (["CLIP", "--batch-size", "0"], "--batch-size (0) must be at least 1"),
    (["CLIP", "--dimensions", "visual,colour"], "unknown dimension 'colour'"),
    (["CLIP", "--model", "./no_such_dir"], "no such folder, and not a hub id"),
    (["CLIP", "--prompts", "nope.jsonl"], "no such prompts file: nope.jsonl"),
    (["CLIP", "--prompts", "PROMPTS"], "match none of the 1 video(s)"),
])
def test_bad_inputs_are_one_line_usage_errors_before_the_model_loads(
        corpus, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "prompts.json").write_text(json.dumps({"other": "a cat"}))
    names = {"EMPTY": str(tmp_path / "empty"), "CLIP": str(clip(corpus)),
             "PROMPTS": str(tmp_path / "prompts.json")}
    out = tmp_path / "out.jsonl"
    assert main(["score", *[names.get(a, a) for a in args], "-o", str(out)]) == 2
    printed = capsys.readouterr()
    assert message in printed.err and printed.err.count("error:") == 1
    assert "Traceback" not in printed.err and LOADING not in printed.err and not out.exists()


def test_a_hub_id_offline_fails_at_once_with_what_to_do(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code = main(["score", str(clip(corpus)), "-o", str(tmp_path / "o.jsonl"), "--model",
                 "someone/not-cached-model"])
    assert code == 1 and time.perf_counter() - start < 10
    assert "not in the local Hugging Face cache" in capsys.readouterr().err


def test_nothing_of_the_user_is_overwritten(corpus, tmp_path, capsys):
    prompts = tmp_path / "myprompts.json"
    prompts.write_text('{"syn-00000": "a red cube"}')  # one line, no final newline
    manifest = corpus / "manifest.jsonl"
    before = manifest.read_bytes()
    for target in (prompts, manifest):
        assert main(["score", str(clip(corpus)), "-o", str(target), "--prompt", "p"]) == 2
        assert "not a qsave score file" in capsys.readouterr().err
    assert prompts.read_text() == '{"syn-00000": "a red cube"}' and manifest.read_bytes() == before
    assert main(["score", str(clip(corpus)), "-o", str(prompts / "x.jsonl")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_dash_writes_the_rows_to_stdout(corpus, capsys):
    assert main(["score", str(clip(corpus)), "-o", "-", "--prompt", "a cube", "-q"]) == 0
    printed = capsys.readouterr()
    row = json.loads(printed.out)
    assert row["id"] == clip(corpus).stem and set(row["scores"]) == {"visual", "dynamic",
                                                                       "alignment"}
    assert list(row["scores"]["visual"]["probs"]) == ["Bad", "Poor", "Fair", "Good", "Excellent"]
    assert not Path("-").exists()


def test_alignment_without_a_prompt_is_that_videos_error(corpus, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["score", str(clip(corpus)), "-o", str(out)]) == 1
    (row,) = [r for _, r in read_jsonl(out).rows]
    assert row["error"]["type"] == "PromptError" and "alignment" in row["error"]["message"]
    assert main(["score", str(clip(corpus)), "-o", str(out), "--dimensions", "visual"]) == 0


def test_a_missing_optional_dependency_is_a_hint(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without the [report] extra
    out = tmp_path / "out.jsonl"
    assert main(["score", str(clip(corpus)), "-o", str(out), "--dimensions", "visual"]) == 0
    code = main(["eval", "--pred", str(out), "--truth", str(corpus / "manifest.jsonl"),
                 "--html", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'qsave[report]'" in err and "Traceback" not in err
    monkeypatch.setenv("QSAVE_DEBUG", "1")
    with pytest.raises(ImportError):
        main(["eval", "--pred", str(out), "--truth", str(corpus / "manifest.jsonl"),
              "--html", str(tmp_path / "r.html")])


def test_version_and_short_help(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == \
        f"qsave {qsave.__version__}"
    assert main(["score", "-h"]) == 0 and "--out" in capsys.readouterr().out
    assert main(["data", "synth", "-h"]) == 0 and "--count" in capsys.readouterr().out
    for command in (["serve"], ["score"], ["eval"], ["data", "records"]):
        assert main([*command, "-h"]) == 0
        shown = capsys.readouterr().out
        assert not any(f"<{kind}>" in shown for kind in ("str", "bool", "int", "float")), shown


def test_ctrl_c_says_what_was_saved(corpus, tmp_path):
    out = tmp_path / "out.jsonl"
    source_root = str(Path(qsave.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": source_root, "HF_HUB_OFFLINE": "1"}
    args = ["score", str(corpus / "manifest.jsonl"), "-o", str(out), "--batch-size", "1",
            "--dimensions", "visual"]
    child = subprocess.Popen([sys.executable, "-c", f"from qsave.cli import main; "
                              f"raise SystemExit(main({args!r}))"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_file() and out.read_bytes().count(b"\n") >= 1):
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    code, err = child.wait(60), child.stderr.read()
    rows = out.read_bytes().count(b"\n")
    if code == 0:  # it finished before the signal landed: nothing to check
        pytest.skip("the run ended before Ctrl-C")
    assert code == 130 and f"interrupted: {rows} row(s) saved in {out}; run again to resume" \
        in err, err


def test_a_finished_run_is_resumed_without_loading_the_model(corpus, tmp_path, capsys,
                                                             monkeypatch):
    out = tmp_path / "out.jsonl"
    args = ["score", str(corpus / "manifest.jsonl"), "-o", str(out), "--dimensions", "visual"]
    assert main(args) == 0
    capsys.readouterr()

    def no_model(spec):
        raise AssertionError("the model was loaded although nothing was left to score")

    monkeypatch.setattr("qsave.evaluator.load_backend", no_model)
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "0 scored, 0 failed, 3 already in" in printed.out and LOADING not in printed.err


def test_the_demo_runs_on_the_plain_install(tmp_path):
    """README's first command installs qsave without extras: `qsave demo` must not need
    pandas (the [report] extra) nor the training stack."""
    from qsave.model.load import read_provenance
    from qsave.spec import shipped_tiny_demo_dir

    code = ("import sys; sys.modules['pandas'] = None; sys.modules['peft'] = None\n"
            "from qsave.cli import main\n"
            f"raise SystemExit(main(['demo', '--json', '-o', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    shipped = read_provenance(shipped_tiny_demo_dir())["held_out"]["n"]
    assert json.loads(done.stdout)["dimensions"]["visual"]["n"] == shipped
