"""`qsave demo`, the README's main command, end to end on the CPU."""

from qsave.cli import main


def test_demo_scores_the_held_out_clips(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    manifest = tmp_path / "corpus" / "manifest.jsonl"
    assert manifest.is_file() and len(manifest.read_text().splitlines()) == 8
    assert "predicted MOS / ground truth" in out
    assert "random weights" in out  # the untrained model says so plainly
    assert "error" not in out
