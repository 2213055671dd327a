"""The serve-side CLI: `qsave serve` checks its settings, `qsave score --backend vllm` says
what is missing (the Ray and server paths themselves are tested in their own modules)."""

import importlib.util
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from qsave.cli import main


def test_serve_refuses_a_public_address_without_a_token(capsys, monkeypatch):
    monkeypatch.delenv("QSAVE_SERVE_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    assert "without a token" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_score_with_the_vllm_backend_needs_vllm(capsys, clips, tmp_path):
    _, videos = clips
    code = main(["score", str(videos[0][0]), "-o", str(tmp_path / "out.jsonl"),
                 "--backend", "vllm"])
    assert code == 1 and "needs vLLM installed" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_score_rejects_an_unknown_backend(capsys, clips, tmp_path):
    _, videos = clips
    code = main(["score", str(videos[0][0]), "-o", str(tmp_path / "out.jsonl"),
                 "--backend", "onnx"])
    assert code == 1 and "unknown backend" in capsys.readouterr().err


def test_the_token_never_comes_from_the_command_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("QSAVE_SERVE_TOKEN", raising=False)
    assert main(["serve", "--token", "visible-in-ps"]) == 2
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", "--token-file", str(empty), "--host", "0.0.0.0"]) == 1
    assert "holds no token" in " ".join(capsys.readouterr().err.split())
    assert main(["serve", "--token-file", str(tmp_path / "missing")]) == 1
    assert "cannot read --token-file" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("flag", ["--max-video-mb", "--request-timeout-s", "--max-wait-ms"])
def test_nan_settings_are_refused_at_start(capsys, flag):
    assert main(["serve", flag, "nan", "--port", "0"]) == 1
    assert "must be a finite number" in " ".join(capsys.readouterr().err.split())


def test_sigterm_after_a_timed_out_request_drains_and_exits_0(clips, tmp_path):
    """A request times out (504) while its video waits for a batch; another is in flight when
    SIGTERM arrives: it is answered, the server shuts down cleanly and exits 0."""
    root, videos = clips
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    token = tmp_path / "token"
    token.write_text("drain-token\n")
    log = tmp_path / "serve.log"
    with open(log, "w") as sink:
        child = subprocess.Popen(
            [sys.executable, "-m", "qsave.cli", "serve", "--port", str(port), "--token-file",
             str(token), "--allowed-root", str(root / "clips"), "--request-timeout-s", "1",
             "--max-wait-ms", "2500"], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        auth = {"Authorization": "Bearer drain-token"}
        timed_out = httpx.post(f"{url}/score", data={"path": videos[0][0].name, "prompt": "p"},
                               headers=auth,
                               timeout=30)
        assert timed_out.status_code == 504
        with ThreadPoolExecutor(1) as pool:
            late = pool.submit(httpx.post, f"{url}/reward", data={"paths": [videos[1][0].name],
                                                                "prompts": ["p"]},
                               headers=auth, timeout=30)
            time.sleep(0.5)
            child.send_signal(signal.SIGTERM)
            answer = late.result()
        assert child.wait(60) == 0, log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
    assert answer.status_code == 504  # the batch window (2.5 s) is past its 1 s limit
    text = log.read_text()
    assert "Application shutdown complete" in text and "Traceback" not in text, text
