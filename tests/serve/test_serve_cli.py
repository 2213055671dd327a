"""The serve-side CLI: `qsave serve` checks its settings, `qsave score --backend vllm` says
what is missing (the Ray and server paths themselves are tested in their own modules)."""

import importlib.util

import pytest

from qsave.cli import main


def test_serve_refuses_a_public_address_without_a_token(capsys, monkeypatch):
    monkeypatch.delenv("QSAVE_SERVE_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    assert "without a token" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_score_with_the_vllm_backend_needs_vllm(capsys, clips, tmp_path):
    _, videos = clips
    code = main(["score", str(videos[0][0]), "-o", str(tmp_path / "out.jsonl"),
                 "--backend", "vllm"])
    assert code == 1 and "needs vLLM installed" in capsys.readouterr().out
    assert not (tmp_path / "out.jsonl").exists()


def test_score_rejects_an_unknown_backend(capsys, clips, tmp_path):
    _, videos = clips
    code = main(["score", str(videos[0][0]), "-o", str(tmp_path / "out.jsonl"),
                 "--backend", "onnx"])
    assert code == 1 and "unknown backend" in capsys.readouterr().out
