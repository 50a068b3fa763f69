"""Text on the contact sheets: measured and drawn with a TrueType font (DejaVu Sans, bundled).

OpenCV's Hershey fonts know only ASCII, so names like "Zoë" or "李" lost their letters; Pillow renders
the bundled font (resources/fonts/, Bitstream Vera licence beside it) with FreeType. Every label is
measured: one too wide for its box is drawn smaller, down to three quarters of the size, and beyond
that wrapped onto more lines, so no label is cut.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from likeness import RESOURCES

FONT_PATH = RESOURCES / "fonts" / "DejaVuSans.ttf"
TEXT_RGB = (32, 32, 32)
SMALLEST_SHARE = 0.75  # a label shrinks to this share of its size before it wraps
ELLIPSIS = "…"


class Label(NamedTuple):
    """One line of text placed on a canvas: left edge, baseline, pixel size."""

    x: int
    baseline: int
    text: str
    size: int


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_PATH), size)


def clean(text: object) -> str:
    """One line: runs of white space (newlines, tabs) become one space, other control characters '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(text).split()))


def text_width(text: str, size: int) -> int:
    """Advance width of ``text`` in pixels at ``size``."""
    return round(font(size).getlength(clean(text)))


def font_size(line_height: int) -> int:
    """The font size of a line: three quarters of it, the rest is spacing between lines."""
    return max(8, round(line_height * 0.75))


def wrap_text(text: str, width: int, size: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than a line is broken between characters."""
    lines: list[str] = []
    current = ""
    for word in clean(text).split(" "):
        candidate = f"{current} {word}" if current else word
        if text_width(candidate, size) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for ch in word:
            if current and text_width(current + ch, size) > width:
                lines.append(current)
                current = ""
            current += ch
    if current:
        lines.append(current)
    return lines


def fit_line(text: str, width: int, size: int) -> list[tuple[str, int]]:
    """``text`` as (line, size) pairs that fit ``width``: as it is, smaller, or wrapped at the smallest size."""
    text = clean(text)
    smallest = max(8, round(size * SMALLEST_SHARE))
    for candidate in range(size, smallest - 1, -1):
        if text_width(text, candidate) <= width:
            return [(text, candidate)]
    return [(line, smallest) for line in wrap_text(text, width, smallest)]


def fit_lines(lines: Sequence[str], width: int, size: int) -> list[tuple[str, int]]:
    """Every line of a caption fitted to ``width`` (see :func:`fit_line`), in order."""
    return [part for line in lines for part in fit_line(line, width, size)]


def shorten(text: str, width: int, size: int) -> str:
    """``text`` cut with an ellipsis until it fits ``width`` (only for notes inside a full placeholder)."""
    text = clean(text)
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + ELLIPSIS, size) > width:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS


def draw_labels(canvas: np.ndarray, labels: Sequence[Label]) -> np.ndarray:
    """``canvas`` (BGR) with ``labels`` drawn on it, anti-aliased; a new array."""
    if not labels:
        return canvas
    image = Image.fromarray(np.ascontiguousarray(canvas[:, :, ::-1]))
    draw = ImageDraw.Draw(image)
    for label in labels:
        draw.text((label.x, label.baseline), clean(label.text), font=font(label.size), fill=TEXT_RGB, anchor="ls")
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
