"""``qsave video``: a table per file (or a JSON line with --json), --frames, a contact sheet
(--sheet), a per-file error and a non-zero exit on failure (Sec. 4.2.1's SlowFast plan shown).

Every clip is a real file written by ``videoclips.write_clip`` and decoded by the real decoder.
"""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image
from videoclips import ClipSpec, corner, stripes, write_clip

from qsave.cli import main
from qsave.video.inputs import VideoConfig, prepare_video
from qsave.video.sheet import FAST_COLOUR, SLOW_COLOUR, sheet_layout

CUT_SPEC = ClipSpec(width=224, height=168, fps=15, seconds=2.0)  # 16 sampled frames at 8 fps


def cut(index: int, height: int, width: int) -> np.ndarray:
    """Two static scenes with a cut at frame 15 (1.0 s at 15 fps)."""
    return corner(index, height, width) if index < 15 else stripes(0, True, height, width)


def blinking(index: int, height: int, width: int) -> np.ndarray:
    """A static scene where a red square of 3×3 similarity patches (42 px) blinks every 4
    frames: the similarity to the first frame is a fraction like 183/192 = 0.953125."""
    frame = corner(0, height, width)
    if (index // 4) % 2:
        frame[-42:, -42:] = (200, 30, 30)
    return frame


def test_json_plans_good_files_and_reports_bad_ones(tmp_path, capsys):
    good = write_clip(tmp_path / "a.mp4", ClipSpec(seconds=0.5), lambda i, h, w: corner(0, h, w))
    bad = tmp_path / "b.mp4"
    bad.write_text("no video here")
    code = main(["video", str(good), str(bad), "--frames", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert rows[0]["plan"]["frames"] == 4 and rows[0]["info"]["codec"] == "h264"
    assert [f["slow"] for f in rows[0]["frames"]] == [True, True, False, False]  # a static clip:
    assert [f["reference"] for f in rows[0]["frames"]] == [True, False, False, False]  # one
    assert set(rows[0]["frames"][0]) == {"index", "time", "slow", "reference", "similarity",
                                             "size"}
    assert rows[1] == {"video": str(bad), "error": rows[1]["error"]}
    assert rows[1]["error"].startswith(f"cannot open video {bad}")


def test_json_frames_round_times_and_similarities(tmp_path, capsys):
    clip = write_clip(tmp_path / "a.mp4", ClipSpec(width=224, height=168, fps=30), blinking)
    assert main(["video", str(clip), "--frames", "--json"]) == 0
    out = capsys.readouterr().out
    row = json.loads(out)
    times = [f["time"] for f in row["frames"]]
    similarities = [f["similarity"] for f in row["frames"]]
    assert times == [round(t, 3) for t in times] and 0.133 in times  # 4/30 s
    assert similarities == [round(s, 4) for s in similarities] and similarities[0] == 1.0
    exact = prepare_video(clip).plan.similarity
    assert similarities == [round(s, 4) for s in exact]
    assert any(s != round(s, 4) for s in exact), exact  # e.g. 0.953125: the rounding is tested
    assert row["info"]["avg_fps"] == round(row["info"]["avg_fps"], 3)
    assert not re.search(r"\d\.\d{5,}", out), out  # no float noise anywhere in the line


def test_table_lists_slow_times_and_sizes_without_truncating(tmp_path, capsys):
    clip = write_clip(tmp_path / "a.mp4", ClipSpec(fps=4, seconds=12.0))
    bad = tmp_path / "bad.mp4"
    bad.write_text("no video here")
    plan = prepare_video(clip, VideoConfig(mode="uniform")).plan  # every frame slow, 2 fps
    slow_times = ", ".join(f"{t:.3f}" for t, s in zip(plan.timestamps, plan.references,
                                                       strict=True) if s)
    assert sum(plan.slow) >= 20 and len(slow_times) > 120  # wider than an 80-column console
    assert main(["video", str(clip), str(bad), "--frames", "--mode", "uniform"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(slow_times in line and "new slow frames at" in line for line in lines), lines
    summary = "\n".join(lines)
    h, w = plan.slow_size
    assert f"{h}×{w}, {plan.slow_tokens} tokens" in summary
    assert re.search(r"slow budget\s+│ 8192", summary) and re.search(r"fast budget\s+│ 2048",
                                                                       summary)
    assert str(clip) in summary and "…" not in summary
    frame_rows = [line for line in lines if re.match(r"│\s+\d+ │", line)]
    assert len(frame_rows) == len(plan.slow)
    assert any(line.startswith(f"failed: {bad}: cannot open video") for line in lines), lines


def test_sheet_marks_slow_tiles(tmp_path, capsys):
    clip = write_clip(tmp_path / "cut.mp4", CUT_SPEC, cut)
    png = tmp_path / "sheet.png"
    assert main(["video", str(clip), "--sheet", str(png)]) == 0
    assert f"contact sheet: {png}" in capsys.readouterr().out
    plan = prepare_video(clip).plan
    assert plan.slow[0] and plan.slow[8] and not plan.slow[2]  # the cut at 1.0 s is slow
    layout = sheet_layout(len(plan.slow), aspect=CUT_SPEC.width / CUT_SPEC.height)
    assert (layout.columns, layout.rows) == (8, 2)
    image = Image.open(png).convert("RGB")
    assert image.size == layout.size
    for index, slow in enumerate(plan.slow):
        x, y = layout.origin(index)
        assert image.getpixel((x + 1, y + 1)) == (SLOW_COLOUR if slow else FAST_COLOUR), index


def test_sheet_per_file_in_a_directory(tmp_path, capsys):
    clips = [write_clip(tmp_path / f"{name}.mp4", CUT_SPEC, cut) for name in ("a", "b")]
    out = tmp_path / "sheets"
    assert main(["video", *map(str, clips), "--sheet", str(out), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["sheet"] for row in rows] == [str(out / "a.png"), str(out / "b.png")]
    assert all(Image.open(out / name).format == "PNG" for name in ("a.png", "b.png"))
    same_stem = [str(clips[0]), str(tmp_path / "sub" / "a.mp4")]
    assert main(["video", *same_stem, "--sheet", str(out)]) == 2  # two a.png: refused
