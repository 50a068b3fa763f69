"""Crop geometry: PhotoPrism's pixel rectangle, the square crop, reduced decoding and EXIF orientation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from likeness import geometry
from likeness.geometry import GeometryError, Rect, SquareCrop
from synthlib.drawing import encode_jpeg


def test_marker_rect_truncates_like_photoprism():
    # 0.1 * 1000 = 100, (0.1 + 0.25) * 1000 = 350 after float32 maths and truncation.
    assert geometry.marker_rect(0.1, 0.2, 0.25, 0.3, 1000, 500) == Rect(100, 100, 350, 250)
    # float32 products are truncated, not rounded: 0.3333 * 640 = 213.3 -> 213
    assert geometry.marker_rect(0.3333, 0.0, 0.1, 0.1, 640, 480).x0 == 213


def test_marker_rect_clamps_each_value_and_the_sum():
    # x + w beyond 1 is cut at the image edge; a negative x is clamped to 0 as PhotoPrism does.
    assert geometry.marker_rect(0.9, 0.9, 0.3, 0.3, 100, 100) == Rect(90, 90, 100, 100)
    assert geometry.marker_rect(-0.1, 0.5, 0.3, 0.2, 100, 100) == Rect(0, 50, 30, 70)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((math.nan, 0.1, 0.2, 0.2), "non-numeric x"),
        ((0.1, 0.1, 0.0, 0.2), "zero or negative size"),
        ((0.1, 0.1, 0.2, -0.1), "zero or negative size"),
        ((1.2, 0.1, 0.2, 0.2), "outside the image"),
        ((-0.5, 0.1, 0.2, 0.2), "outside the image"),
        ((0.1, math.inf, 0.2, 0.2), "non-numeric y"),
    ],
)
def test_unusable_boxes_raise_with_reason(box, reason):
    with pytest.raises(GeometryError, match=reason):
        geometry.marker_rect(*box, 1000, 800)


def test_square_crop_centred_when_it_fits():
    crop = geometry.square_crop(Rect(400, 300, 500, 400), 1000, 800, factor=2.0)
    assert crop == SquareCrop(350, 250, 200)


@pytest.mark.parametrize(
    ("face", "expected"),
    [
        (Rect(0, 0, 100, 100), SquareCrop(0, 0, 250)),  # top-left corner: shifted right and down
        (Rect(900, 700, 1000, 800), SquareCrop(750, 550, 250)),  # bottom-right corner
        (Rect(950, 300, 1000, 350), SquareCrop(875, 262, 125)),  # right edge
    ],
)
def test_square_crop_shifts_inside_at_edges_and_corners(face, expected):
    crop = geometry.square_crop(face, 1000, 800, factor=2.5)
    assert crop == expected
    assert crop.left >= 0 and crop.left + crop.side <= 1000
    assert crop.top >= 0 and crop.top + crop.side <= 800


def test_square_crop_shrinks_only_when_it_cannot_fit():
    # Portrait photo 600x900: a 500 px face at factor 2 wants 1000 px; the shorter side is 600.
    crop = geometry.square_crop(Rect(50, 200, 550, 700), 600, 900, factor=2.0)
    assert crop.side == 600
    assert crop.left == 0
    assert crop.top == 150  # still centred vertically on the face


def test_square_crop_uses_the_longer_side_of_a_non_square_box():
    crop = geometry.square_crop(Rect(100, 100, 160, 200), 1000, 1000, factor=1.0)
    assert crop.side == 100


def test_output_side_never_upscales():
    assert geometry.output_side(700, 1024) == 700
    assert geometry.output_side(3000, 1024) == 1024


@pytest.mark.parametrize(
    ("native", "out", "scale"),
    [(8192, 1024, 8), (8191, 1024, 4), (4096, 1024, 4), (2048, 1024, 2), (2047, 1024, 1), (700, 700, 1)],
)
def test_reduced_scale_keeps_enough_pixels(native, out, scale):
    assert geometry.reduced_scale(native, out) == scale


def test_scale_rect_maps_into_reduced_image():
    rect = geometry.scale_rect(Rect(100, 200, 900, 1000), 4, 500, 400)
    assert rect == Rect(25, 50, 225, 250)
    assert rect.width == rect.height


def test_rect_in_crop():
    assert geometry.rect_in_crop(Rect(400, 300, 500, 400), SquareCrop(350, 250, 200), 100) == (25, 25, 75, 75)


def _quadrant_image(width: int = 96, height: int = 64) -> np.ndarray:
    """Four distinct colours, so any flip or rotation is visible."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (0, 0, 255)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (255, 0, 0)
    image[height // 2 :, width // 2 :] = (255, 255, 255)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_opencv_decoding(tmp_path, orientation):
    """OpenCV applies EXIF orientation while decoding; our transform must agree for all eight."""
    stored = _quadrant_image()
    data = encode_jpeg(stored, orientation=1, quality=98)
    from synthlib.drawing import with_exif_orientation

    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(with_exif_orientation(data, orientation) if orientation != 1 else data)
    decoded = cv2.imread(str(path))
    expected = geometry.apply_orientation(
        cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), orientation
    )
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 2
    assert geometry.displayed_size(96, 64, orientation) == (decoded.shape[1], decoded.shape[0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_stored_from_displayed_round_trips(orientation):
    displayed = _quadrant_image(80, 48)
    stored = geometry.stored_from_displayed(displayed, orientation)
    assert np.array_equal(geometry.apply_orientation(stored, orientation), displayed)
