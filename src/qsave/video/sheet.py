"""Contact sheets: the sampled frames of one clip in a grid, slow frames marked (Sec. 4.2.1).

One tile per sampled frame, in order, each resized to a common size (fast frames are given to
the model at a lower resolution than slow ones, so their tiles look softer). Slow frames get an
orange border and an "S" badge, fast frames a grey border and an "F"; the caption under each
tile is the frame's time and its similarity to the reference slow frame, the value the slow/fast
decision was made on (a frame is fast when it exceeds ``SlowFastConfig.frame_similarity``).

>>> layout = sheet_layout(10, aspect=16 / 9, columns=4, tile_width=160)
>>> (layout.columns, layout.rows, layout.tile, layout.size)
(4, 3, (160, 90), (702, 409))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from qsave.video.inputs import PreparedVideo
    from qsave.video.slowfast import SlowFastPlan

SLOW_COLOUR = (255, 140, 0)  # border and badge of slow frames (orange)
FAST_COLOUR = (110, 110, 110)  # border and badge of fast frames (grey)
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
BORDER = 4  # px of coloured border around each tile's image
GAP = 6  # px between cells and around the grid


@dataclass(frozen=True)
class SheetLayout:
    """Where each tile goes: cells of border + image + caption, after a header line."""

    count: int  # tiles
    columns: int  # tiles per row (at most ``count``)
    tile: tuple[int, int]  # (width, height) of each tile's image, px
    font_size: int  # px, captions and header

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    @property
    def caption(self) -> int:
        """Height of the caption strip under each image, px."""
        return self.font_size + 6

    @property
    def header(self) -> int:
        """Height of the header (title and legend), px."""
        return 2 * (self.font_size + 4)

    @property
    def cell(self) -> tuple[int, int]:
        """(width, height) of one cell: the bordered image and its caption."""
        return self.tile[0] + 2 * BORDER, self.tile[1] + 2 * BORDER + self.caption

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole sheet, px."""
        width = self.columns * self.cell[0] + (self.columns + 1) * GAP
        return width, self.header + self.rows * self.cell[1] + (self.rows + 1) * GAP

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of tile ``index``'s cell, i.e. the outer corner of its border."""
        row, column = divmod(index, self.columns)
        return (
            GAP + column * (self.cell[0] + GAP),
            self.header + GAP + row * (self.cell[1] + GAP),
        )


def sheet_layout(count: int, aspect: float, columns: int = 8, tile_width: int = 160) -> SheetLayout:
    """The grid for ``count`` tiles of ``tile_width`` px and ``aspect`` (width / height)."""
    if count < 1 or columns < 1 or tile_width < 16 or aspect <= 0:
        raise ValueError(
            f"a contact sheet needs count ({count}) and columns ({columns}) ≥ 1, tile_width "
            f"({tile_width}) ≥ 16 and aspect ({aspect}) > 0"
        )
    tile = (tile_width, max(1, round(tile_width / aspect)))
    return SheetLayout(count, min(columns, count), tile, max(10, tile_width // 12))


def plan_frames(prepared: PreparedVideo) -> list[np.ndarray]:
    """The sampled frames of ``prepared`` in order, each (h, w, 3) uint8 at its planned size.

    Taken from the run items (``prepared.videos``, one per run), without the temporal padding.
    """
    runs = prepared.plan.runs
    return [
        frame
        for video, run in zip(prepared.videos, runs, strict=True)
        for frame in video[: run.length]
    ]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_header(draw: ImageDraw.ImageDraw, layout: SheetLayout, title: str) -> None:
    font = _font(layout.font_size)
    draw.text((GAP, 2), title, fill=TEXT_COLOUR, font=font)
    legend = (
        "S (orange) = slow frame, F (grey) = fast; caption: time, similarity to the reference "
        "slow frame"
    )
    draw.text((GAP, layout.font_size + 6), legend, fill=TEXT_COLOUR, font=font)


def _draw_tile(
    sheet: Image.Image, layout: SheetLayout, index: int, frame: np.ndarray, plan: SlowFastPlan
) -> None:
    """Border, image, S/F badge and the caption (time, similarity) of tile ``index``."""
    draw, font = ImageDraw.Draw(sheet), _font(layout.font_size)
    (x, y), (width, height) = layout.origin(index), layout.tile
    slow = plan.slow[index]
    colour = SLOW_COLOUR if slow else FAST_COLOUR
    draw.rectangle((x, y, x + width + 2 * BORDER - 1, y + height + 2 * BORDER - 1), fill=colour)
    image = Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC)
    sheet.paste(image, (x + BORDER, y + BORDER))
    badge = layout.font_size + 4
    draw.rectangle((x + BORDER, y + BORDER, x + BORDER + badge, y + BORDER + badge), fill=colour)
    draw.text((x + BORDER + 3, y + BORDER + 1), "S" if slow else "F", fill=(0, 0, 0), font=font)
    text_y = y + height + 2 * BORDER + 2
    draw.text((x, text_y), f"{plan.timestamps[index]:.3f} s", fill=TEXT_COLOUR, font=font)
    similarity = f"{plan.similarity[index]:.3f}"
    right = x + width + 2 * BORDER - draw.textlength(similarity, font=font)
    draw.text((right, text_y), similarity, fill=colour if slow else TEXT_COLOUR, font=font)


def contact_sheet(
    frames: list[np.ndarray],
    plan: SlowFastPlan,
    path: str | Path,
    columns: int = 8,
    tile_width: int = 160,
    aspect: float | None = None,
    title: str = "",
) -> Path:
    """Write a PNG of ``frames`` (one per planned frame, in order) in a grid; returns ``path``.

    ``aspect``: width / height of the tiles; by default the slow size's (pass the video's own,
    since the plan's sizes are rounded to multiples of 32 px). ``title`` heads the sheet.
    """
    if len(frames) != len(plan.slow):
        raise ValueError(f"{len(frames)} frames for a plan of {len(plan.slow)} frames")
    aspect = aspect or plan.slow_size[1] / plan.slow_size[0]
    layout = sheet_layout(len(frames), aspect, columns, tile_width)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    _draw_header(ImageDraw.Draw(sheet), layout, title)
    for index, frame in enumerate(frames):
        _draw_tile(sheet, layout, index, frame, plan)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
