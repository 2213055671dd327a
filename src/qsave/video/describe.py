"""What ``qsave video`` shows about a prepared clip (Sec. 4.2.1): the decoded stream and the
SlowFast plan as tables, one JSON row with rounded numbers, and a contact sheet.

>>> rounded({"fps": 24.999999999999996, "sizes": [0.30000000000000004, 2], "ok": True})
{'fps': 25.0, 'sizes': [0.3, 2], 'ok': True}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qsave.video.inputs import PreparedVideo
from qsave.video.sheet import contact_sheet, plan_frames
from qsave.video.slowfast import SlowFastPlan


def write_sheet(path: Path, prepared: PreparedVideo, target: Path) -> Path:
    """The contact sheet of ``prepared``'s sampled frames, tiles at the video's aspect."""
    plan, info = prepared.plan, prepared.info
    title = f"{path.name}: {len(plan.slow)} frames sampled, {sum(plan.slow)} slow"
    return contact_sheet(plan_frames(prepared), plan, target, aspect=info.width / info.height,
                         title=title)


def rounded(value: Any, digits: int = 3) -> Any:
    """``value`` with every float rounded to ``digits`` decimals (dicts and lists walked)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item, digits) for item in value]
    return value


def frame_records(plan: SlowFastPlan) -> list[dict[str, Any]]:
    """One object per sampled frame: slow (at the slow size), reference (it started a new slow
    frame; the rest of its temporal patch is slow with it) and its similarity to the reference
    slow frame (Sec. 4.2.1)."""
    return [
        {"index": frame.source_index, "time": round(frame.timestamp, 3), "slow": frame.slow,
         "reference": reference, "similarity": round(similarity, 4), "size": list(frame.size)}
        for frame, reference, similarity in zip(plan.frames, plan.references, plan.similarity,
                                                strict=True)
    ]


def video_row(path: Path, prepared: PreparedVideo, frames: bool,
              sheet: Path | None) -> dict[str, Any]:
    """The --json record of one file: times and durations to 3 decimals, similarity to 4."""
    row = {"video": str(path), "info": rounded(dataclasses.asdict(prepared.info)),
           "plan": rounded(prepared.plan.summary())}
    if frames:
        row["frames"] = frame_records(prepared.plan)
    if sheet is not None:
        row["sheet"] = str(sheet)
    return row


def _hw(size) -> str:
    """``(height, width)`` as ``h×w``."""
    return f"{size[0]}×{size[1]}"


def info_rows(info) -> list[tuple[str, str]]:
    """The decoded stream, as (label, value) rows; problems only when there are any."""
    fps = f"{info.nominal_fps:.3f} nominal" if info.nominal_fps else "not declared"
    if info.avg_fps:
        fps += f", {info.avg_fps:.3f} measured"
    duration = f"{info.duration:.3f} s" if info.duration is not None else "not declared"
    rows = [
        ("codec", f"{info.codec} ({info.pix_fmt}), container {info.container}"),
        ("size (h×w)", _hw((info.height, info.width))
         + (f", rotated {info.rotation}°" if info.rotation else "")),
        ("fps", fps),
        ("duration", f"{duration}, {info.num_frames} frames decoded"),
    ]
    if info.corrupt_packets or info.truncated:
        rows.append(("problems", f"{info.corrupt_packets} corrupt packets, truncated: "
                     f"{info.truncated}, last error: {info.last_error}"))
    return rows


def plan_rows(plan: SlowFastPlan) -> list[tuple[str, str]]:
    """The SlowFast plan (Sec. 4.2.1) as (label, value) rows; budgets read from the summary."""
    summary, patch = plan.summary(), f"tokens per temporal patch ({plan.temporal_patch} frames)"
    times = ", ".join(f"{t:.3f}" for t, new in zip(plan.timestamps, plan.references,
                                                    strict=True) if new)
    rows = [
        ("frames sampled", f"{len(plan.slow)} ({sum(plan.slow)} slow, "
         f"{len(plan.slow) - sum(plan.slow)} fast, {len(plan.runs)} runs)"),
        ("new slow frames at (s)", times),
        ("slow size (h×w)", f"{_hw(plan.slow_size)}, {plan.slow_tokens} {patch}"),
        ("fast size (h×w)", f"{_hw(plan.fast_size)}, {plan.fast_tokens} {patch}"),
        ("video tokens", str(plan.num_tokens)),
    ]
    budgets = [(key.replace("_", " "), str(value)) for key, value in summary.items()
               if key.endswith("budget")]
    return rows + budgets


def frames_table(plan: SlowFastPlan) -> Table:
    """Every sampled frame: stream index, time, S/F, size, similarity to its slow frame."""
    table = Table()
    for name in ("#", "index", "time (s)", "S/F", "new", "size (h×w)",
                 "similarity to slow frame"):
        table.add_column(name, justify="left" if name == "S/F" else "right")
    for number, record in enumerate(frame_records(plan)):
        table.add_row(str(number), str(record["index"]), f"{record['time']:.3f}",
                      "[bold dark_orange]S[/]" if record["slow"] else "F",
                      "●" if record["reference"] else "", _hw(record["size"]),
                      f"{record['similarity']:.4f}")
    return table


def print_video(out: Console, path: Path, prepared: PreparedVideo, frames: bool,
                        sheet: Path | None) -> None:
    """The summary table of one file (stream and plan), then its frames if asked."""
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in [*info_rows(prepared.info), *plan_rows(prepared.plan)]:
        table.add_row(label, escape(value))
    out.print(escape(str(path)), style="bold")
    out.print(table)
    if frames:
        out.print("frames", style="bold")
        out.print(frames_table(prepared.plan))
    if sheet is not None:
        out.print(f"contact sheet: {escape(str(sheet))}")
