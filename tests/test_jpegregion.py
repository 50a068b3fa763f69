"""Region decoding (likeness.crop.jpegregion): the orientation maths, the same pixels as OpenCV, the fallbacks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from likeness.crop import jpegregion
from likeness.geometry import Rect, apply_orientation, displayed_size, stored_from_displayed
from synthlib.drawing import background, draw_face, encode_jpeg, with_exif_orientation

ORIENTATIONS = range(1, 9)
REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def _random_rects(rng: np.random.Generator, width: int, height: int, count: int) -> list[Rect]:
    rects = [Rect(0, 0, width, height), Rect(width - 1, height - 1, width, height)]
    for _ in range(count):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        rects.append(Rect(x0, y0, int(rng.integers(x0 + 1, width + 1)), int(rng.integers(y0 + 1, height + 1))))
    return rects


# -- pure geometry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_stored_rect_holds_exactly_the_displayed_pixels(orientation: int) -> None:
    stored = np.arange(7 * 11).reshape(7, 11)  # every pixel a different value; odd sides catch off-by-ones
    displayed = apply_orientation(stored, orientation)
    rng = np.random.default_rng(orientation)
    for rect in _random_rects(rng, displayed.shape[1], displayed.shape[0], 40):
        cut = jpegregion.stored_rect(rect, orientation, stored.shape[1], stored.shape[0])
        piece = stored[cut.y0 : cut.y1, cut.x0 : cut.x1]
        np.testing.assert_array_equal(
            apply_orientation(piece, orientation), displayed[rect.y0 : rect.y1, rect.x0 : rect.x1]
        )


def test_mcu_aligned_starts_on_the_grid_and_keeps_the_rect() -> None:
    rect = Rect(37, 21, 90, 70)
    aligned = jpegregion.mcu_aligned(rect, 16, 8)
    assert (aligned.x0 % 16, aligned.y0 % 8) == (0, 0)
    assert aligned.x0 <= rect.x0 < aligned.x0 + 16 and aligned.y0 <= rect.y0 < aligned.y0 + 8
    assert (aligned.x1, aligned.y1) == (rect.x1, rect.y1)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_region_plan_keeps_the_wanted_pixels_of_the_reduced_image(orientation: int, scale: int) -> None:
    width, height = 203, 117  # stored, not multiples of any MCU
    reduced = np.arange(math.ceil(height / scale) * math.ceil(width / scale)).reshape(
        math.ceil(height / scale), math.ceil(width / scale)
    )
    displayed = apply_orientation(reduced, orientation)
    for rect in _random_rects(
        np.random.default_rng(scale * 10 + orientation), displayed.shape[1], displayed.shape[0], 25
    ):
        cut, keep = jpegregion.region_plan(rect, orientation, width, height, scale, (16, 16))
        assert cut.x0 % 16 == 0 and cut.y0 % 16 == 0
        assert cut.x0 >= 0 and cut.y0 >= 0 and cut.x1 <= width and cut.y1 <= height
        # what a decode of the cut at 1/scale holds, from its own origin on
        piece = reduced[cut.y0 // scale :, cut.x0 // scale :][keep.y0 : keep.y1, keep.x0 : keep.x1]
        assert keep.y1 <= math.ceil(cut.height / scale) and keep.x1 <= math.ceil(cut.width / scale)
        np.testing.assert_array_equal(
            apply_orientation(piece, orientation), displayed[rect.y0 : rect.y1, rect.x0 : rect.x1]
        )


# -- decoding ------------------------------------------------------------------------------------------------
def _photo(width: int, height: int) -> np.ndarray:
    canvas = background(width, height, seed=3)
    draw_face(canvas, width // 3, height // 2, min(width, height) // 3, seed=5)
    draw_face(canvas, width - 90, height - 80, 120, seed=6)  # a face at the corner: partial MCUs
    return canvas


@pytest.fixture(scope="module")
def turbojpeg() -> jpegregion.TurboJPEG:
    library = jpegregion._default_library()
    assert library is not None, "libturbojpeg is needed for these tests (Debian: apt-get install libturbojpeg0)"
    return library


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("sampling", ["420", "444", "gray"])
def test_region_matches_opencv_whole_decode(
    turbojpeg: jpegregion.TurboJPEG, orientation: int, scale: int, sampling: str
) -> None:
    displayed = _photo(1003, 707)
    if sampling == "gray":
        displayed = cv2.cvtColor(cv2.cvtColor(displayed, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    data = _encode(displayed, orientation, sampling)
    whole = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[scale])
    height, width = whole.shape[:2]
    assert (width, height) == tuple(math.ceil(v / scale) for v in displayed_size(1003, 707, 1))
    regions = [
        Rect(300 // scale, 200 // scale, 620 // scale, 520 // scale),  # around the big face
        Rect(width - 150 // scale, height - 150 // scale, width, height),  # the corner face, to the edges
        Rect(0, 0, width, height),  # everything
        Rect(37 // scale, 5, 37 // scale + 9, 14),  # a few pixels off the MCU grid
    ]
    for region in regions:
        pixels = jpegregion.decode_region(data, region, orientation, scale, library=turbojpeg)
        assert pixels is not None
        expected = whole[region.y0 : region.y1, region.x0 : region.x1]
        assert pixels.shape == expected.shape
        assert pixels.flags.c_contiguous
        assert float(np.mean(cv2.absdiff(pixels, expected))) < 2.0, (orientation, scale, region)


def _encode(displayed: np.ndarray, orientation: int, sampling: str) -> bytes:
    if sampling == "420":
        return encode_jpeg(displayed, orientation)
    stored = np.ascontiguousarray(stored_from_displayed(displayed, orientation))
    if sampling == "gray":
        ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(stored, cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 90])
    else:
        flags = [
            cv2.IMWRITE_JPEG_QUALITY,
            90,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ]
        ok, buffer = cv2.imencode(".jpg", stored, flags)
    assert ok
    data = buffer.tobytes()
    return with_exif_orientation(data, orientation) if orientation != 1 else data


def test_damaged_or_foreign_data_falls_back(turbojpeg: jpegregion.TurboJPEG) -> None:
    data = encode_jpeg(_photo(640, 480), 6)
    region = Rect(10, 10, 200, 200)
    assert jpegregion.decode_region(data[: len(data) // 2], region, 6, library=turbojpeg) is None  # truncated
    assert jpegregion.decode_region(b"\x89PNG\r\n\x1a\n" + bytes(64), region, 1, library=turbojpeg) is None
    assert jpegregion.decode_region(data, Rect(0, 0, 641, 10), 6, library=turbojpeg) is None  # off the image
    assert jpegregion.decode_region(data, Rect(0, 0, 10, 481), 6, library=turbojpeg) is None
    assert jpegregion.decode_region(data, region, 6, scale=3, library=turbojpeg) is None  # no such DCT scale
    assert jpegregion.decode_region(data, region, 6, library=turbojpeg) is not None  # the same call, intact


def test_without_libturbojpeg_the_caller_is_told_to_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert jpegregion.load_library(("libturbojpeg-not-installed.so.9",)) is None
    assert jpegregion.load_library(("libm.so.6",)) is None  # a library, but not TurboJPEG
    monkeypatch.setattr(jpegregion, "_default_library", lambda: None)
    assert not jpegregion.available()
    assert jpegregion.decode_region(encode_jpeg(_photo(320, 240)), Rect(0, 0, 50, 50), 1) is None


# -- the row-skipping decoder (likeness/_jpegskip.c, built by setup.sh) -----------------------------------
def test_the_row_decoder_is_built():
    """setup.sh compiles it; without it crops still work, only slower, so make a missing build visible."""
    assert jpegregion.rows_available()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    "region", [Rect(30, 20, 130, 120), Rect(0, 0, 64, 64), Rect(136, 56, 200, 120), Rect(0, 0, 200, 120)]
)
def test_decode_rows_equals_a_whole_decode_for_every_orientation(orientation, region):
    displayed = _photo(200, 120)
    data = encode_jpeg(displayed, orientation, quality=95)
    stored_width, stored_height = (120, 200) if orientation in (5, 6, 7, 8) else (200, 120)
    rows = jpegregion.decode_rows(data, region, orientation, stored_width, stored_height)
    whole = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    expected = whole[region.y0 : region.y1, region.x0 : region.x1]
    assert rows is not None and rows.shape == expected.shape
    assert np.abs(rows.astype(int) - expected.astype(int)).mean() < 2


def test_decode_rows_refuses_what_it_cannot_decode():
    data = encode_jpeg(_photo(200, 120))
    assert jpegregion.decode_rows(data[: len(data) // 2], Rect(0, 0, 50, 50), 1, 200, 120) is None  # truncated
    assert jpegregion.decode_rows(b"not a jpeg", Rect(0, 0, 5, 5), 1, 200, 120) is None
    assert jpegregion.decode_rows(data, Rect(150, 0, 250, 50), 1, 200, 120) is None  # off the image
