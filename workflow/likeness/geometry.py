"""Crop geometry: PhotoPrism marker -> face rectangle in pixels -> square crop -> decode plan.

All coordinates here are in the *displayed* image, i.e. after the EXIF orientation is applied, which is
the frame PhotoPrism's markers use (see resources/photoprism_*.sql and the reference notes).
Every function is pure so that the maths can be tested without images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The reduced JPEG decodes that OpenCV offers (IMREAD_REDUCED_COLOR_2/4/8) map to libjpeg's DCT scaling.
REDUCED_SCALES = (8, 4, 2)


@dataclass(frozen=True)
class Rect:
    """Half-open pixel rectangle [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class SquareCrop:
    left: int
    top: int
    side: int

    @property
    def rect(self) -> Rect:
        return Rect(self.left, self.top, self.left + self.side, self.top + self.side)


class GeometryError(ValueError):
    """The marker cannot be turned into a usable rectangle; the message is the per-face reason."""


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def marker_rect(x: float, y: float, w: float, h: float, width: int, height: int) -> Rect:
    """The face rectangle in pixels exactly as PhotoPrism computes it.

    PhotoPrism clamps each of x, y, w, h to [0, 1] on its own, multiplies in float32 and truncates, then
    intersects with the image. A box that ends up empty (outside the image, zero or negative size, NaN)
    raises GeometryError with the reason.
    """
    values = {"x": x, "y": y, "w": w, "h": h}
    for name, value in values.items():
        if value is None or not math.isfinite(float(value)):
            raise GeometryError(f"marker box has a non-numeric {name} ({value!r})")
    if w <= 0 or h <= 0:
        raise GeometryError(f"marker box has zero or negative size (w={w}, h={h})")
    if x >= 1 or y >= 1 or x + w <= 0 or y + h <= 0:
        raise GeometryError(f"marker box lies outside the image (x={x}, y={y}, w={w}, h={h})")
    f32 = np.float32
    cx, cy, cw, ch = (f32(_clamp01(float(v))) for v in (x, y, w, h))
    fw, fh = f32(width), f32(height)
    x0, y0 = int(fw * cx), int(fh * cy)
    x1, y1 = int(fw * f32(cx + cw)), int(fh * f32(cy + ch))
    rect = Rect(max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    if rect.width < 1 or rect.height < 1:
        raise GeometryError(f"marker box lies outside the image (x={x}, y={y}, w={w}, h={h})")
    return rect


def square_crop(face: Rect, width: int, height: int, factor: float) -> SquareCrop:
    """A square centred on the face, side = face side x factor, shifted to stay inside the image.

    The square shrinks only when it cannot fit (side > the image's shorter side). The face side is the
    longer side of the face rectangle, so a slightly non-square detector box is never cut.
    """
    face_side = max(face.width, face.height)
    side = max(1, round(face_side * factor))
    side = min(side, width, height)
    centre_x = (face.x0 + face.x1) / 2
    centre_y = (face.y0 + face.y1) / 2
    left = round(centre_x - side / 2)
    top = round(centre_y - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return SquareCrop(left, top, side)


def output_side(native_side: int, target_side: int) -> int:
    """Final crop side: resize down to ``target_side``, never upscale."""
    return min(native_side, target_side)


def reduced_scale(native_side: int, out_side: int, allowed: tuple[int, ...] = REDUCED_SCALES) -> int:
    """Largest DCT scale 1/k whose reduced crop still has at least ``out_side`` pixels per side.

    Decoding at 1/k costs roughly 1/k^2 of the pixel work, and the crop is resized down anyway, so this
    loses nothing. Returns 1 when no reduction keeps enough pixels.
    """
    for scale in allowed:
        # libjpeg rounds scaled dimensions up; the crop inside spans floor(side / k) pixels at least.
        if native_side // scale >= out_side:
            return scale
    return 1


def scale_rect(rect: Rect, scale: int, width: int, height: int) -> Rect:
    """Map a full-resolution rectangle into an image decoded at 1/scale (``width`` x ``height``)."""
    if scale == 1:
        return rect
    x0 = min(rect.x0 // scale, width - 1)
    y0 = min(rect.y0 // scale, height - 1)
    x1 = min(max(x0 + 1, math.ceil(rect.x1 / scale)), width)
    y1 = min(max(y0 + 1, math.ceil(rect.y1 / scale)), height)
    side = min(x1 - x0, y1 - y0)
    return Rect(x0, y0, x0 + side, y0 + side)


def rect_in_crop(face: Rect, crop: SquareCrop, out_side: int) -> tuple[int, int, int, int]:
    """The face rectangle in the coordinates of the final (resized) crop, clamped to it."""
    ratio = out_side / crop.side

    def to_crop(value: int, origin: int) -> int:
        return round((value - origin) * ratio)

    x0 = max(0, to_crop(face.x0, crop.left))
    y0 = max(0, to_crop(face.y0, crop.top))
    x1 = min(out_side, to_crop(face.x1, crop.left))
    y1 = min(out_side, to_crop(face.y1, crop.top))
    return (x0, y0, x1, y1)


# EXIF orientation (tag 0x0112): how the stored pixels must be transformed to be displayed.
def apply_orientation(stored: np.ndarray, orientation: int) -> np.ndarray:
    """Displayed image from stored pixels, for EXIF orientations 1-8 (others count as 1)."""
    if orientation == 2:
        return stored[:, ::-1]
    if orientation == 3:
        return stored[::-1, ::-1]
    if orientation == 4:
        return stored[::-1]
    if orientation == 5:
        return np.swapaxes(stored, 0, 1)
    if orientation == 6:
        return np.rot90(stored, k=-1)
    if orientation == 7:
        return np.swapaxes(stored[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(stored, k=1)
    return stored


_INVERSE_ORIENTATION = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def stored_from_displayed(displayed: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels that display as ``displayed`` under ``orientation`` (for writing test photos)."""
    return apply_orientation(displayed, _INVERSE_ORIENTATION.get(orientation, 1))


def displayed_size(stored_width: int, stored_height: int, orientation: int) -> tuple[int, int]:
    """Displayed (width, height): orientations 5-8 swap the axes."""
    if orientation in (5, 6, 7, 8):
        return stored_height, stored_width
    return stored_width, stored_height
