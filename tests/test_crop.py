"""Cropping real image files: every orientation on every decode path, and bad input with reasons."""

from __future__ import annotations

import ast
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.stage_inputs import face_spec
from likeness.config import Section, validate_config
from likeness.crop import cropping
from likeness.crop.cropping import crop_face
from likeness.export import photos
from likeness.imageheader import read_header
from synthlib.drawing import encode_jpeg

RED, BLUE = (0, 0, 255), (255, 0, 0)


def _settings(**values) -> Section:
    """The config's crop section as the workflow builds it: the schema's defaults with ``values`` over them."""
    return validate_config({"person": "p", "source": {"url": "sqlite:///unused.db"}, "crop": values}).crop


def _photo_with_face(width: int, height: int, face: tuple[int, int, int, int]) -> np.ndarray:
    """A grey photo with a blue face box whose top-left quadrant is red (so flips are visible)."""
    image = np.full((height, width, 3), 128, np.uint8)
    x0, y0, x1, y1 = face
    image[y0:y1, x0:x1] = BLUE
    image[y0 : (y0 + y1) // 2, x0 : (x0 + x1) // 2] = RED
    return image


def _crop(tmp_path: Path, spec: dict, settings: Section) -> dict:
    return crop_face(spec, settings, str(tmp_path / "out.jpg"), str(tmp_path / "out.json"))


def _mean(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [1024, 64], ids=["full-decode", "reduced-decode"])
def test_face_is_found_upright_for_every_orientation_and_decode_path(tmp_path, orientation, size):
    width, height, face = 1200, 800, (700, 200, 900, 400)
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode_jpeg(_photo_with_face(width, height, face), orientation, quality=95))
    assert read_header(path).orientation == orientation

    record = _crop(tmp_path, face_spec(path, face, width, height), _settings(size=size, factor=2.0))

    assert record["status"] == "ok", record["reason"]
    assert record["decode_scale"] == (1 if size == 1024 else 4)
    # Full scale decodes only the crop's rows and columns; a reduced decode takes the whole photo.
    assert record["decode"] == ("rows" if size == 1024 else "whole")
    assert record["photo_width"] == width and record["photo_height"] == height
    crop = cv2.imread(record["image"])
    assert crop.shape == (record["output_side"],) * 2 + (3,)
    x0, y0, x1, y1 = record["face_in_crop"]
    mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
    pad = max(1, (x1 - x0) // 8)
    top_left = crop[y0 + pad : mid_y - pad, x0 + pad : mid_x - pad]
    bottom_right = crop[mid_y + pad : y1 - pad, mid_x + pad : x1 - pad]
    assert np.abs(_mean(top_left) - RED).max() < 40
    assert np.abs(_mean(bottom_right) - BLUE).max() < 40


def test_record_describes_the_crop(tmp_path):
    width, height, face = 3000, 2000, (1000, 500, 1500, 1000)
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode_jpeg(_photo_with_face(width, height, face)))
    record = _crop(tmp_path, face_spec(path, face, width, height), _settings(size=512, factor=2.2))
    on_disk = json.loads((tmp_path / "out.json").read_text())
    assert on_disk == record
    assert record["native_face_side"] == 500
    assert record["native_crop_side"] == 1100
    assert record["crop_box"] == [700, 200, 1100, 1100]
    assert record["output_side"] == 512
    assert record["decode_scale"] == 2
    assert len(record["image_sha256"]) == 64


def test_small_crops_are_never_upscaled(tmp_path):
    width, height, face = 800, 600, (300, 200, 400, 300)
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode_jpeg(_photo_with_face(width, height, face)))
    record = _crop(tmp_path, face_spec(path, face, width, height), _settings(size=1024, factor=2.0))
    assert record["output_side"] == 200
    assert cv2.imread(record["image"]).shape[:2] == (200, 200)


def _write_png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def good_photo(tmp_path) -> tuple[Path, tuple[int, int, int, int]]:
    face = (300, 200, 500, 400)
    path = tmp_path / "good.jpg"
    path.write_bytes(encode_jpeg(_photo_with_face(1000, 800, face)))
    return path, face


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "photo missing on disk"),
        ("zero-bytes", "empty (0 bytes)"),
        ("truncated", "truncated"),
        ("not-an-image", "cannot be decoded"),
        ("size-mismatch", "PhotoPrism indexed it as 1000x900"),
        ("box-outside", "outside the image"),
        ("box-nan", "non-numeric"),
        ("bomb", "over crop.max_megapixels"),
    ],
)
def test_bad_input_is_excluded_with_a_reason(tmp_path, good_photo, case, reason):
    path, face = good_photo
    spec = face_spec(path, face, 1000, 800)
    if case == "missing":
        spec["path"], spec["path_reason"] = photos.resolve_photo({"/": str(tmp_path)}, "/", "gone.jpg")
    elif case == "zero-bytes":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif case == "not-an-image":
        path.write_bytes(b"this is a text file, not a photo\n" * 10)
    elif case == "size-mismatch":
        spec["file_height"] = 900
    elif case == "box-outside":
        spec["x"] = 1.5
    elif case == "box-nan":
        spec["w"] = float("nan")
    elif case == "bomb":
        bomb = tmp_path / "bomb.png"
        _write_png_header_only(bomb, 30000, 30000)
        spec["path"] = str(bomb)
    image = tmp_path / "out.jpg"
    image.write_bytes(b"an earlier crop of this face")

    record = _crop(tmp_path, spec, _settings())

    assert record["status"] == "excluded"
    assert reason in record["reason"]
    assert json.loads((tmp_path / "out.json").read_text())["reason"] == record["reason"]
    # The rule declares the image: an excluded face's is empty, so no stale crop survives.
    assert image.read_bytes() == b"", "a stale crop must not survive its face becoming unusable"
    assert record["image"] is None


@pytest.mark.parametrize("kind", ["grayscale-jpeg", "16-bit-png", "jpeg-named-png", "rgba-png"])
def test_unusual_but_valid_images_are_cropped(tmp_path, kind):
    width, height, face = 640, 480, (200, 150, 320, 270)
    photo = _photo_with_face(width, height, face)
    path = tmp_path / ("photo.png" if "png" in kind else "photo.jpg")
    if kind == "grayscale-jpeg":
        cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    elif kind == "16-bit-png":
        cv2.imwrite(str(path), photo.astype(np.uint16) * 257)
    elif kind == "jpeg-named-png":
        path.write_bytes(encode_jpeg(photo))
    elif kind == "rgba-png":
        cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA))
    record = _crop(tmp_path, face_spec(path, face, width, height), _settings(size=256, factor=2.0))
    assert record["status"] == "ok", record["reason"]
    assert cv2.imread(record["image"]).shape == (240, 240, 3)


def test_path_checks_keep_reads_inside_the_root(tmp_path):
    root = tmp_path / "originals"
    (root / "2020").mkdir(parents=True)
    (root / "2020" / "a.jpg").write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "2020" / "link.jpg")
    roots = {"/": str(root)}

    assert photos.resolve_photo(roots, "/", "2020/a.jpg") == (str(root / "2020" / "a.jpg"), "")
    for name, reason in [
        ("../secret.jpg", "escapes its root"),
        ("2020/../../secret.jpg", "escapes its root"),
        (str(outside), "absolute path"),
        ("2020/link.jpg", "resolves outside its root"),
        ("2020/none.jpg", "photo missing on disk"),
    ]:
        path, why = photos.resolve_photo(roots, "/", name)
        assert path == "" and reason in why, (name, why)
    assert "no folder configured" in photos.resolve_photo(roots, "sidecar", "2020/a.jpg")[1]


def _module_file(package: Path, parts: list[str]) -> str | None:
    """The file of a module below the package (a compiled helper: its C source), or None."""
    for suffix in (".py", ".c"):
        name = "/".join(parts) + suffix
        if parts and (package / name).is_file():
            return name
    return None


def _likeness_imports(source: Path, package: Path) -> set[str]:
    """The likeness modules ``source`` imports, as files under the package."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "likeness":
            parts = node.module.split(".")[1:]
            for alias in node.names:
                module = _module_file(package, [*parts, alias.name]) or _module_file(package, parts)
                if module:
                    found.add(module)
    return found


def test_the_code_digest_covers_every_module_that_decides_a_crop():
    """Changing any module crop_face reaches re-crops (the digest is the crop rule's code param)."""
    package = Path(cropping.__file__).resolve().parents[1]
    reached, todo = set(), ["crop/cropping.py"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            if module.endswith(".py"):
                todo.extend(_likeness_imports(package / module, package))
    # How files land, the settings' type (their values are a param), the error classes.
    not_deciding = {"atomic.py", "config.py", "errors.py"}
    assert reached - not_deciding == set(cropping._CROP_MODULES)
