"""``qsave video``: one JSON line per file, a per-file error, non-zero exit on failure."""

from __future__ import annotations

import json

from videoclips import ClipSpec, write_clip

from qsave.cli import main


def test_video_command_plans_good_files_and_reports_bad_ones(tmp_path, capsys):
    good = write_clip(tmp_path / "a.mp4", ClipSpec(seconds=0.5))
    bad = tmp_path / "b.mp4"
    bad.write_text("no video here")
    code = main(["video", str(good), str(bad), "--frames"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert rows[0]["plan"]["frames"] == 4 and rows[0]["info"]["codec"] == "h264"
    assert [f[2] for f in rows[0]["frames"]] == ["S", "F", "F", "F"]  # a static grey clip
    assert rows[1] == {"video": str(bad), "error": rows[1]["error"]}
    assert rows[1]["error"].startswith(f"cannot open video {bad}")
