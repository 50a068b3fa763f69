"""likeness.crop.quality on faces the tests draw: sharpness, exposure, perceptual hash."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fixtures.images import blurred, burst_shot, face_crop, with_second_face
from likeness.config import validate_config
from likeness.crop import quality

DEFAULTS = validate_config({"person": "P", "source": {"url": "sqlite:///index.db"}}).select


def test_measure_returns_json_serialisable_measurements() -> None:
    image, box = face_crop(512, seed=1)
    measured = quality.measure(image, box)
    assert set(measured) == {
        "sharpness", "brightness", "contrast", "clipped_dark", "clipped_bright", "phash", "face_side_px",
    }  # fmt: skip
    assert json.loads(json.dumps(measured)) == measured
    assert len(measured["phash"]) == 16
    int(measured["phash"], 16)
    assert measured["face_side_px"] == box[2] - box[0]


def test_blurred_face_is_much_less_sharp_and_below_the_default_threshold() -> None:
    image, box = face_crop(512, seed=1)
    sharp = quality.measure(image, box)["sharpness"]
    soft = quality.measure(blurred(image, sigma=4), box)["sharpness"]
    assert soft < sharp / 5
    assert soft < DEFAULTS.min_sharpness < sharp


def test_sharpness_is_comparable_across_crop_sizes() -> None:
    # The same drawing at two crop sizes, blurred by the same amount relative to its size, must
    # score alike: the face is measured at a fixed side, not at its native resolution.
    large, large_box = face_crop(1024, seed=3)
    small = cv2.resize(large, (384, 384), interpolation=cv2.INTER_AREA)
    small_box = tuple(round(v * 384 / 1024) for v in large_box)
    large_soft = quality.measure(blurred(large, sigma=6), large_box)["sharpness"]
    small_soft = quality.measure(blurred(small, sigma=6 * 384 / 1024), small_box)["sharpness"]
    assert 0.6 < small_soft / large_soft < 1.6
    # ... and the raw (unresampled) Laplacian variance would not have been comparable.
    raw_ratio = quality.laplacian_variance(
        cv2.cvtColor(blurred(small, sigma=6 * 384 / 1024), cv2.COLOR_BGR2GRAY)
    ) / quality.laplacian_variance(cv2.cvtColor(blurred(large, sigma=6), cv2.COLOR_BGR2GRAY))
    assert raw_ratio > 2


def test_sharpness_ignores_a_blurred_background() -> None:
    image, box = face_crop(512, seed=4)
    x0, y0, x1, y1 = box
    background_blurred = blurred(image, sigma=6)
    background_blurred[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    assert quality.measure(background_blurred, box)["sharpness"] == pytest.approx(
        quality.measure(image, box)["sharpness"]
    )


def test_exposure_measures_brightness_and_clipping_of_the_face() -> None:
    image, box = face_crop(512, seed=5)
    normal = quality.measure(image, box)
    dark = quality.measure(cv2.convertScaleAbs(image, alpha=0.2), box)
    bright = quality.measure(cv2.convertScaleAbs(image, alpha=2.5, beta=60), box)
    assert dark["brightness"] < DEFAULTS.brightness_min < normal["brightness"] < DEFAULTS.brightness_max
    assert bright["brightness"] > DEFAULTS.brightness_max
    assert bright["clipped_bright"] > 0.5 > normal["clipped_bright"]
    black = image.copy()
    black[box[1] : box[3], box[0] : box[2]] = 0
    assert quality.measure(black, box)["clipped_dark"] == 1.0
    assert normal["clipped_dark"] < DEFAULTS.max_clipped_share


def test_phash_separates_near_duplicates_from_other_photos() -> None:
    image, box = face_crop(512, seed=1)
    reference = quality.measure(image, box)["phash"]
    for index in range(1, 5):
        shot = quality.measure(burst_shot(image, index), box)["phash"]
        assert quality.hamming_distance(reference, shot) <= DEFAULTS.duplicate_distance
    resized = cv2.resize(image, (300, 300), interpolation=cv2.INTER_AREA)
    assert quality.hamming_distance(reference, quality.phash_hex(resized)) <= 2
    for seed in range(2, 8):
        other, other_box = face_crop(512, seed=seed)
        other_hash = quality.measure(other, other_box)["phash"]
        assert quality.hamming_distance(reference, other_hash) > DEFAULTS.duplicate_distance


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II basis, written out independently of OpenCV."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    basis = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    basis[0] /= np.sqrt(2)
    return basis


def test_phash_matches_an_independent_dct_computation() -> None:
    image, _ = face_crop(256, seed=6)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    reduced = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    basis = _dct_matrix(32)
    low = (basis @ reduced @ basis.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    expected = f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"
    assert quality.phash_hex(image) == expected


def test_second_face_changes_the_hash_but_not_the_face_measurements() -> None:
    image, box = face_crop(512, seed=1)
    crowded = with_second_face(image, face_side=120)
    alone = quality.measure(image, box)
    together = quality.measure(crowded, box)
    assert together["sharpness"] == alone["sharpness"]
    assert together["phash"] != alone["phash"]


def test_grey_input_and_partly_outside_face_box_are_accepted() -> None:
    image, (x0, y0, x1, y1) = face_crop(256, seed=2)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    from_grey = quality.measure(grey, (x0, y0, x1, y1))
    from_colour = quality.measure(image, (x0, y0, x1, y1))
    assert from_grey == from_colour
    clipped = quality.measure(image, (x0 - 500, y0, x1, y1))
    assert clipped["face_side_px"] == x1  # the box was clamped to start at column 0


@pytest.mark.parametrize(
    ("image", "box", "message"),
    [
        (np.zeros((64, 64, 3), np.float32), (0, 0, 32, 32), "8-bit"),
        (np.zeros((0, 0, 3), np.uint8), (0, 0, 32, 32), "empty"),
        (np.zeros((64, 64, 3), np.uint8), (100, 100, 200, 200), "does not overlap"),
        (np.zeros((64, 64, 3), np.uint8), (0, 0, 32), "four numbers"),
        (np.zeros((64, 64, 2), np.uint8), (0, 0, 32, 32), "shape"),
    ],
)
def test_unusable_input_is_one_readable_value_error(image: np.ndarray, box: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        quality.measure(image, box)
    assert "\n" not in str(caught.value)
