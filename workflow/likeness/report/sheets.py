"""Contact sheets: a grid of image tiles with caption lines under each, written as PNG.

Tiles are drawn with OpenCV, text with a TrueType font (likeness.report.text). A missing crop becomes
a placeholder tile; the output is deterministic, and an unchanged sheet is not rewritten.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from likeness.atomic import write_if_changed
from likeness.report import text as tx

PathLike = str | os.PathLike[str]

# Colours are BGR (OpenCV's order).
BACKGROUND = (246, 246, 246)
PLACEHOLDER = (208, 208, 214)
PLACEHOLDER_LINE = (178, 178, 186)
GAP = 6  # pixels around and between cells
TITLE_SCALE = 1.25  # the title's font size relative to the captions'


class Tile(NamedTuple):
    """One cell of a contact sheet.

    ``path`` None (or an unreadable image) draws a placeholder showing ``note`` (or "no image");
    ``path`` None with no lines and no note leaves the cell blank (used to align rows).
    """

    path: PathLike | None
    lines: Sequence[str]
    note: str = ""


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on a contact sheet; pure arithmetic, shared by drawing and tests."""

    count: int
    columns: int
    tile: int
    lines: int
    line_height: int
    title_height: int
    width: int

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns) if self.count else 0

    @property
    def cell_height(self) -> int:
        return self.tile + self.lines * self.line_height + (GAP // 2 if self.lines else 0)

    @property
    def height(self) -> int:
        body = self.rows * (self.cell_height + GAP) + GAP
        return self.title_height + max(body, GAP + self.line_height if not self.count else 0)

    @property
    def font_size(self) -> int:
        return tx.font_size(self.line_height)

    def image_origin(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of tile ``index``'s image square."""
        row, column = divmod(index, self.columns)
        return GAP + column * (self.tile + GAP), self.title_height + GAP + row * (self.cell_height + GAP)

    def text_box(self, index: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the caption area under tile ``index``."""
        x, y = self.image_origin(index)
        return x, y + self.tile, self.tile, self.cell_height - self.tile


def line_height_of(tile: int) -> int:
    return max(12, round(tile / 10))


def title_size(line_height: int) -> int:
    return round(tx.font_size(line_height) * TITLE_SCALE)


def sheet_layout(count: int, columns: int = 8, tile: int = 160, lines: int = 0, title: str = "") -> SheetLayout:
    """The layout of a sheet of ``count`` tiles with ``lines`` caption lines under each."""
    if columns < 1 or tile < 16:
        raise ValueError("a contact sheet needs at least one column and tiles of 16 px or more")
    line_height = line_height_of(tile)
    used_columns = max(1, min(columns, count))
    width = GAP + used_columns * (tile + GAP)
    title_height = 0
    if title:
        title_height = GAP + round(line_height * 1.5)
        width = max(width, tx.text_width(title, title_size(line_height)) + 2 * GAP)
    return SheetLayout(count, used_columns, tile, lines, line_height, title_height, width)


def fit_image(image: np.ndarray, tile: int) -> np.ndarray:
    """``image`` scaled to fit a ``tile`` square (aspect kept, centred on the background)."""
    height, width = image.shape[:2]
    factor = tile / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, size, interpolation=interpolation)
    square = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
    top, left = (tile - size[1]) // 2, (tile - size[0]) // 2
    square[top : top + size[1], left : left + size[0]] = resized
    return square


# A loss mask (an image's alpha channel, select.crowded: mask) is shown dimmed and hatched.
MASK_HATCH = (40, 40, 190)  # BGR: dark red lines
MASK_HATCH_PERIOD = 8  # pixels between hatch lines, on the tile
MASK_DIM = 0.55  # share of the masked pixels' colour replaced by grey


def show_mask(tile_bgr: np.ndarray, tile_alpha: np.ndarray) -> np.ndarray:
    """The tile with the masked part dimmed in proportion to how little it weighs, and hatched where it
    weighs less than half: the reader sees what the training ignores."""
    ignored = 1.0 - tile_alpha.astype(np.float32)[:, :, np.newaxis] / 255.0
    grey = np.full_like(tile_bgr, 128)
    shown = tile_bgr.astype(np.float32) * (1 - MASK_DIM * ignored) + grey.astype(np.float32) * MASK_DIM * ignored
    shown = np.rint(shown).astype(np.uint8)
    rows, cols = np.indices(tile_alpha.shape)
    hatch = ((rows + cols) % MASK_HATCH_PERIOD == 0) & (tile_alpha < 128)
    shown[hatch] = MASK_HATCH
    return shown


def _read_tile_image(path: PathLike | None, tile: int) -> np.ndarray | None:
    if path is None or str(path) == "":
        return None
    if not Path(path).is_file():  # checked first: OpenCV would print a warning for every missing file
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED if str(path).endswith(".png") else cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4:
        alpha = fit_image(cv2.cvtColor(image[:, :, 3], cv2.COLOR_GRAY2BGR), tile)[:, :, 0]
        return show_mask(fit_image(np.ascontiguousarray(image[:, :, :3]), tile), alpha)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey or 16-bit PNGs: OpenCV's 8-bit BGR, as before
    return fit_image(image, tile)


def placeholder_tile(note: str, tile: int, line_height: int) -> tuple[np.ndarray, list[tx.Label]]:
    """A grey square crossed out, and ``note`` wrapped inside it (labels relative to the square)."""
    square = np.full((tile, tile, 3), PLACEHOLDER, dtype=np.uint8)
    cv2.line(square, (0, 0), (tile - 1, tile - 1), PLACEHOLDER_LINE, 1, cv2.LINE_AA)
    cv2.line(square, (0, tile - 1), (tile - 1, 0), PLACEHOLDER_LINE, 1, cv2.LINE_AA)
    cv2.rectangle(square, (0, 0), (tile - 1, tile - 1), PLACEHOLDER_LINE, 1)
    size = tx.font_size(line_height)
    lines = tx.fit_line(note or "no image", tile - 8, size)
    fitting = max(1, (tile - 8) // line_height)
    if len(lines) > fitting:  # a note longer than the square: the last line that fits ends in an ellipsis
        smallest = lines[-1][1]
        rest = " ".join(line for line, _ in lines[fitting - 1 :])
        lines = [*lines[: fitting - 1], (tx.shorten(rest, tile - 8, smallest), smallest)]
    top = (tile - len(lines) * line_height) // 2
    labels = [
        tx.Label(4, top + (number + 1) * line_height - line_height // 4, line, line_size)
        for number, (line, line_size) in enumerate(lines)
    ]
    return square, labels


def _shift(labels: Sequence[tx.Label], x: int, y: int) -> list[tx.Label]:
    return [label._replace(x=label.x + x, baseline=label.baseline + y) for label in labels]


def render_contact_sheet(
    tiles: Sequence[Tile | tuple], columns: int = 8, tile: int = 160, title: str = ""
) -> np.ndarray:
    """The sheet as a BGR image: tiles in the given order, row by row, caption lines under each."""
    cells = [Tile(*entry) for entry in tiles]
    line_height = line_height_of(tile)
    captions = [tx.fit_lines(cell.lines, tile, tx.font_size(line_height)) for cell in cells]
    lines = max((len(caption) for caption in captions), default=0)
    layout = sheet_layout(len(cells), columns, tile, lines, title)
    canvas = np.full((layout.height, layout.width, 3), BACKGROUND, dtype=np.uint8)
    labels: list[tx.Label] = []
    if title:
        baseline = layout.title_height - GAP // 2 - layout.line_height // 4
        labels.append(tx.Label(GAP, baseline, title, title_size(layout.line_height)))
    if not cells:
        baseline = layout.title_height + GAP + layout.line_height - 3
        labels.append(tx.Label(GAP, baseline, "nothing to show", layout.font_size))
    for index, (cell, caption) in enumerate(zip(cells, captions, strict=True)):
        x, y = layout.image_origin(index)
        if cell.path is None and not cell.lines and not cell.note:
            continue  # a blank cell
        square = _read_tile_image(cell.path, tile)
        if square is None:
            note = cell.note or ("unreadable image" if cell.path else "no image")
            square, inside = placeholder_tile(note, tile, layout.line_height)
            labels += _shift(inside, x, y)
        canvas[y : y + tile, x : x + tile] = square
        text_x, text_y, _, _ = layout.text_box(index)
        for number, (line, size) in enumerate(caption):
            baseline = text_y + (number + 1) * layout.line_height - layout.line_height // 4
            labels.append(tx.Label(text_x, baseline, line, size))
    return tx.draw_labels(canvas, labels)


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("OpenCV could not encode the contact sheet as PNG")
    return encoded.tobytes()


def contact_sheet(
    tiles: Sequence[Tile | tuple], out_png: PathLike, columns: int = 8, tile: int = 160, title: str = ""
) -> tuple[int, int]:
    """Write a contact sheet PNG of ``tiles`` ((image path or None, caption lines[, note]) each).

    Returns the sheet's (width, height). Sheets grow downwards without limit; callers cap the tile
    count where thousands are possible.
    """
    canvas = render_contact_sheet(tiles, columns, tile, title)
    write_if_changed(out_png, png_bytes(canvas))
    return canvas.shape[1], canvas.shape[0]
