"""Orientation comes from one header reader and is applied by likeness on every decode path.

Real JPEGs whose Exif segment is not where OpenCV looks (after an XMP segment), Orientation stored as a
LONG, TIFFs (written by ImageMagick), and photos whose header says they are no
photo at all: each crop is upright on the full-scale row decode, the lossless cut and the reduced decode,
or the face is excluded with a reason before the file is read.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.images import IMAGEMAGICK_CONVERT, encode_jpeg_xmp_first
from fixtures.stage_inputs import face_spec
from likeness import imageheader
from likeness.config import Section, validate_config
from likeness.crop.cropping import crop_face
from likeness.geometry import stored_from_displayed
from synthlib.drawing import encode_jpeg

RED, BLUE = (0, 0, 255), (255, 0, 0)
WIDTH, HEIGHT, FACE = 1200, 800, (700, 200, 900, 400)


def _settings(**values) -> Section:
    """The config's crop section as the workflow builds it: the schema's defaults with ``values`` over them."""
    return validate_config({"person": "p", "source": {"url": "sqlite:///unused.db"}, "crop": values}).crop


def _displayed() -> np.ndarray:
    """A grey photo with a blue face whose top-left quadrant is red, so any flip or turn shows."""
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    x0, y0, x1, y1 = FACE
    image[y0:y1, x0:x1] = BLUE
    image[y0 : (y0 + y1) // 2, x0 : (x0 + x1) // 2] = RED
    return image


def _jpeg(orientation: int, *, xmp_first: bool, long_type: bool = False) -> bytes:
    if xmp_first:
        return encode_jpeg_xmp_first(_displayed(), orientation, long_type)
    return encode_jpeg(_displayed(), orientation, quality=95)


def _spec(path: Path, orientation: int | None = None) -> dict:
    return face_spec(path, FACE, WIDTH, HEIGHT, file_orientation=orientation or 0)


def _assert_upright(record: dict) -> None:
    assert record["status"] == "ok", record["reason"]
    crop = cv2.imread(record["image"])
    x0, y0, x1, y1 = record["face_in_crop"]
    mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
    pad = max(1, (x1 - x0) // 8)
    top_left = crop[y0 + pad : mid_y - pad, x0 + pad : mid_x - pad].reshape(-1, 3).mean(axis=0)
    bottom_right = crop[mid_y + pad : y1 - pad, mid_x + pad : x1 - pad].reshape(-1, 3).mean(axis=0)
    assert top_left[2] > 200 and top_left[0] < 60, top_left  # red where the face's top-left is
    assert bottom_right[0] > 200 and bottom_right[2] < 60, bottom_right  # blue elsewhere


# size 1024: full scale (the row decoder); 64: a reduced-size decode of the whole photo.
@pytest.mark.parametrize("size", [1024, 64], ids=["full-scale", "reduced"])
@pytest.mark.parametrize("long_type", [False, True], ids=["SHORT", "LONG"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_after_an_xmp_segment_is_applied_on_every_decode_path(tmp_path, orientation, long_type, size):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(orientation, xmp_first=True, long_type=long_type))
    assert imageheader.read_header(path).orientation == orientation
    record = crop_face(_spec(path, orientation), _settings(size=size, factor=2.0), str(tmp_path / "c.jpg"),
                       str(tmp_path / "c.json"))  # fmt: skip
    _assert_upright(record)
    assert record["decode"] == ("rows" if size == 1024 else "whole")


def test_the_lossless_cut_path_applies_the_orientation_too(tmp_path, monkeypatch):
    from likeness.crop import jpegregion

    monkeypatch.setattr(jpegregion, "_jpegskip", None)  # as where the C helper was not built
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(6, xmp_first=True))
    record = crop_face(_spec(path, 6), _settings(size=1024, factor=1.2), str(tmp_path / "c.jpg"),
                       str(tmp_path / "c.json"))  # fmt: skip
    assert record["decode"] == ("cut" if jpegregion.available() else "whole")
    _assert_upright(record)


def test_a_tiff_orientation_tag_is_read_and_a_turned_tiff_is_refused(tmp_path):
    """OpenCV turns some TIFFs by itself whatever the flags say, so only upright TIFFs are cropped."""
    for orientation, tag in ((6, "RightTop"), (1, "TopLeft")):
        stored_png = tmp_path / "stored.png"
        cv2.imwrite(str(stored_png), np.ascontiguousarray(stored_from_displayed(_displayed(), orientation)))
        path = tmp_path / f"photo-{orientation}.tif"
        # -orient sets the tag without turning the pixels, as a camera writes it.
        subprocess.run([IMAGEMAGICK_CONVERT, str(stored_png), "-orient", tag, str(path)], check=True)
        header = imageheader.read_header(path)
        assert (header.format, header.orientation) == ("tiff", orientation)
        record = crop_face(_spec(path, orientation), _settings(size=256, factor=2.0), str(tmp_path / "c.jpg"),
                           str(tmp_path / "c.json"))  # fmt: skip
        if orientation == 1:
            _assert_upright(record)
        else:
            assert record["status"] == "excluded"
            assert "TIFF with orientation 6" in record["reason"]


def test_webp_and_bmp_headers_give_their_size(tmp_path):
    for suffix in ("webp", "bmp"):
        path = tmp_path / f"photo.{suffix}"
        cv2.imwrite(str(path), _displayed())
        header = imageheader.read_header(path)
        assert (header.format, header.width, header.height) == (suffix, WIDTH, HEIGHT)
        record = crop_face(_spec(path, 1), _settings(size=256, factor=2.0), str(tmp_path / "c.jpg"),
                           str(tmp_path / "c.json"))  # fmt: skip
        _assert_upright(record)


def test_photoprism_orientation_that_disagrees_with_the_file_is_a_reason(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(6, xmp_first=False))
    # Same oriented size either way would hide it: the photo's box would land on another region.
    record = crop_face(_spec(path, 8), _settings(size=256), str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
    assert record["status"] == "excluded"
    assert "EXIF orientation is 6 on disk but PhotoPrism indexed it as 8" in record["reason"]


def test_a_video_named_as_a_photo_is_excluded_before_it_is_read(tmp_path):
    video = tmp_path / "clip.jpg"
    with open(video, "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
        handle.truncate(2 * 2**30)  # 2 GiB, sparse: no disk used, and it must not be read into memory
    record = crop_face(_spec(video), _settings(), str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
    assert record["status"] == "excluded"
    assert "over crop.max_file_mb (512)" in record["reason"]
    small = tmp_path / "small-clip.jpg"
    small.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    record = crop_face(_spec(small), _settings(), str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
    assert record["status"] == "excluded"
    assert "a video (ISO media, brand 'mp42'), not a still photo" in record["reason"]
