"""Crop one face from its photo: decode no more than needed, apply its orientation, write atomically.

JPEG, PNG, WebP, TIFF and BMP are decoded by OpenCV (JPEG regions by libjpeg-turbo), HEIF, AVIF and camera
RAW by likeness.crop.decoders, each in the frame the photo's manager (the spec's ``manager``) shows it in.

The result of every face is a JSON record (``results/crops/<stem>.json``): either ``status: ok`` with the
crop image beside it, or ``status: excluded`` with the reason a user can read; an excluded face's image
is an empty file (the rule declares it, so it exists), never a crop: readers go by the record's status.
A bad photo never stops the run and never produces a garbage crop. Settings are the config's ``crop``
section (likeness.config); the rules' glue (job parameters, the job, the summary) is likeness.crop.jobs.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from likeness import geometry
from likeness.atomic import atomic_write_bytes, atomic_write_json
from likeness.config import Section
from likeness.crop import decoders, jpegregion, quality
from likeness.imageheader import ImageHeader, describe_unknown, parse_header, read_head
from likeness.names import file_stem

# OpenCV is told to ignore the EXIF orientation: it reads only some places an orientation can be stored
# (a JPEG with an XMP segment before its Exif segment decodes unrotated on the reduced-size path), so the
# orientation comes from likeness.imageheader alone and is applied here, on every decode path.
_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}
_ENCODE_FLAGS = {
    "jpg": [cv2.IMWRITE_JPEG_QUALITY],
    "png": [cv2.IMWRITE_PNG_COMPRESSION],
    "webp": [cv2.IMWRITE_WEBP_QUALITY],
}


# Decode only the region around the crop (libjpeg-turbo, likeness.crop.jpegregion) when the crop covers at
# most this share of the photo: the lossless cut still entropy-decodes the whole file, so for big crops
# the whole decode is as fast (benchmarks/README.md: break-even near 25% on a 24 MP photo).
REGION_DECODE_MAX_SHARE = 0.2


class Unusable(Exception):
    """This face cannot be cropped; the message is the reason recorded for it."""


# Each manager's name and what to do there when its record no longer fits the file. The names are also
# likeness.tables.MANAGER_NAMES: not imported, since every module the crop reaches is part of its code
# digest (_CROP_MODULES) and a change to the tables must not re-crop every face.
_MANAGERS = {
    "photoprism": ("PhotoPrism", "re-index the photo in PhotoPrism"),
    "immich": (
        "Immich",
        "refresh the asset's metadata and faces in Immich (asset menu > Refresh metadata, Refresh faces)",
    ),
    "digikam": (
        "digiKam",
        "reread the file's metadata in digiKam (Item > Reread Metadata From File) and rescan its faces",
    ),
}
# Formats decoded by likeness.crop.decoders rather than OpenCV.
_OWN_DECODERS = ("heif", "avif", "raw")


def _manager(spec: dict[str, Any]) -> tuple[str, str]:
    """(manager's name, what to do there) for the spec's ``manager`` ('' when unknown: a neutral wording)."""
    kind = spec.get("manager", "photoprism")  # specs written before the key existed were PhotoPrism's
    return _MANAGERS.get(kind, ("the photo manager", "re-index the photo in its manager"))


def _read_photo(path: str, settings: Section, manager: str = "photoprism") -> tuple[bytes, ImageHeader]:
    """The photo's bytes and header, read only after its size and header say it is a photo worth reading."""
    try:
        size = os.stat(path).st_size
        if size == 0:
            raise Unusable("photo file is empty (0 bytes)")
        if size > settings.max_file_mb * 2**20:
            raise Unusable(f"photo file is {size / 2**20:,.0f} MiB, over crop.max_file_mb ({settings.max_file_mb:g})")
        head = read_head(path)
        header = parse_header(head, path)
        if header is None:
            raise Unusable(f"photo cannot be decoded: {describe_unknown(head)}")
        if header.format == "tiff" and header.orientation != 1:
            # OpenCV's TIFF decoder turns some TIFFs itself (those it reads through libtiff's RGBA
            # interface) even when told to ignore the orientation, others not: the result is not known.
            sidecar = " (as PhotoPrism's sidecar)" if manager == "photoprism" else ""
            raise Unusable(
                f"photo is a TIFF with orientation {header.orientation}, which OpenCV decodes inconsistently; "
                f"a JPEG of it{sidecar} can be used"
            )
        width, height = geometry.displayed_size(header.width, header.height, header.orientation)
        if header.format in _OWN_DECODERS:
            width, height = header.width, header.height  # a quarter turn does not change the pixel count
        if width * height > settings.max_megapixels * 1e6:
            raise Unusable(
                f"photo declares {width}x{height} pixels, over crop.max_megapixels ({settings.max_megapixels:g} MP)"
            )
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise Unusable(f"cannot read photo: {exc.strerror or exc}") from None
    if header.format in ("heif", "avif"):
        # The Exif item may lie past the first megabyte read for the header: read it from the whole file.
        header = parse_header(data, path) or header
    _check_complete(data, header)
    return data, header


def _check_complete(data: bytes, header: ImageHeader) -> None:
    """Truncated files decode 'successfully' with grey rows in OpenCV: refuse them up front."""
    if header.format == "jpeg" and data.rfind(b"\xff\xd9") < 4:
        raise Unusable("photo is truncated: the JPEG has no end-of-image marker")
    if header.format == "png" and b"IEND" not in data[-64:]:
        raise Unusable("photo is truncated: the PNG has no IEND chunk")


def _decode(data: bytes, scale: int, orientation: int) -> np.ndarray:
    """The displayed image at 1/``scale``: OpenCV decodes the stored pixels, the orientation is applied here."""
    try:
        stored = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[scale])
    except cv2.error as exc:
        raise Unusable(f"photo cannot be decoded: {str(exc).strip().splitlines()[-1]}") from None
    if stored is None:
        raise Unusable("photo cannot be decoded (damaged, or an unsupported variant of its format)")
    return geometry.apply_orientation(stored, orientation)


def crop_face(spec: dict[str, Any], settings: Section, image_path: str, record_path: str) -> dict[str, Any]:
    """Crop the face described by ``spec`` (a marker row plus its resolved photo path); write both files.

    ``spec`` keys: marker_uid, stem, file_uid, file_root, file_name, path, path_reason, x, y, w, h,
    file_width, file_height, file_orientation (see :func:`spec_for`). Returns the record that was written.
    """
    record: dict[str, Any] = {
        "marker_uid": spec["marker_uid"],
        "stem": spec.get("stem") or file_stem(spec["marker_uid"]),
        "status": "excluded",
        "reason": "",
        "image": None,
        "image_sha256": None,
        "source": {k: spec.get(k, "") for k in ("file_uid", "file_root", "file_name", "path")},
    }
    try:
        record.update(_crop(spec, settings, image_path))
        record["status"] = "ok"
    except (Unusable, geometry.GeometryError) as exc:
        record["reason"] = str(exc)
    except cv2.error as exc:  # a photo OpenCV chokes on is that photo's problem, not the run's
        record["reason"] = f"photo cannot be processed: {str(exc).strip().splitlines()[-1]}"
    if record["status"] != "ok":
        # The declared image of an excluded face: empty, so that it exists and no earlier crop survives.
        atomic_write_bytes(image_path, b"")
    atomic_write_json(record_path, record)
    return record


def _orientation(spec: dict[str, Any], header: ImageHeader) -> int:
    """The orientation a JPEG/PNG/WebP/TIFF is shown in: digiKam's database orientation where it holds one
    (digiKam shows non-RAW files so, loadsavethread.cpp), else the file's EXIF tag after checking that the
    manager saw the same (its boxes were drawn in that frame)."""
    recorded = int(spec.get("file_orientation") or 0)
    if spec.get("manager") == "digikam":
        return recorded if 1 <= recorded <= 8 else header.orientation
    if 1 <= recorded <= 8 and recorded != header.orientation:
        name, advice = _manager(spec)
        raise Unusable(
            f"photo's EXIF orientation is {header.orientation} on disk but {name} indexed it as "
            f"{recorded}: the marker's box would land elsewhere; {advice}"
        )
    return header.orientation


def _check_size(spec: dict[str, Any], width: int, height: int, what: str = "on disk") -> None:
    expected = (int(spec.get("file_width") or 0), int(spec.get("file_height") or 0))
    if all(expected) and (width, height) != expected:
        name, advice = _manager(spec)
        raise Unusable(
            f"photo is {width}x{height} {what} but {name} indexed it as "
            f"{expected[0]}x{expected[1]}: the file changed since indexing, "
            + ("re-index it" if spec.get("manager", "photoprism") in ("photoprism", "") else advice)
        )


def _crop(spec: dict[str, Any], settings: Section, image_path: str) -> dict[str, Any]:
    if spec.get("path_reason"):
        raise Unusable(spec["path_reason"])
    data, header = _read_photo(spec["path"], settings, spec.get("manager", "photoprism"))
    if header.format in _OWN_DECODERS:
        return _crop_decoded(spec, settings, image_path, data, header)
    orientation = _orientation(spec, header)
    if orientation != header.orientation:
        header = ImageHeader(header.format, header.width, header.height, orientation, header.channels)
    width, height = geometry.displayed_size(header.width, header.height, header.orientation)
    _check_size(spec, width, height)
    return _crop_jpeg_like(spec, settings, image_path, data, header)


def _crop_jpeg_like(
    spec: dict[str, Any], settings: Section, image_path: str, data: bytes, header: ImageHeader, label: str = ""
) -> dict[str, Any]:
    """A face from a file OpenCV decodes (a JPEG: only the region it needs); ``label`` names the decode."""
    width, height = geometry.displayed_size(header.width, header.height, header.orientation)
    face = geometry.marker_rect(spec["x"], spec["y"], spec["w"], spec["h"], width, height)
    square = geometry.square_crop(face, width, height, settings.factor)
    out_side = geometry.output_side(square.side, settings.size)
    scale = geometry.reduced_scale(square.side, out_side) if header.format == "jpeg" else 1

    pixels, decode_path = _region_pixels(data, header, square, scale, width * height)
    if pixels is None:
        decoded = _decode(data, scale, header.orientation)
        want = (math.ceil(height / scale), math.ceil(width / scale))
        if decoded.shape[:2] != want:
            raise Unusable(
                f"photo decoded to {decoded.shape[1]}x{decoded.shape[0]} pixels, expected "
                f"{want[1]}x{want[0]}: the file is damaged"
            )
        region = geometry.scale_rect(square.rect, scale, decoded.shape[1], decoded.shape[0])
        pixels = decoded[region.y0 : region.y1, region.x0 : region.x1]
    decode_path = f"{label}/{decode_path}" if label else decode_path
    return _finish(pixels, settings, image_path, face, square, out_side, (width, height), scale, decode_path)


def _crop_decoded(
    spec: dict[str, Any], settings: Section, image_path: str, data: bytes, header: ImageHeader
) -> dict[str, Any]:
    """A HEIF, AVIF or RAW face: the whole photo decoded in its manager's frame, then cut."""
    expected = (int(spec.get("file_width") or 0), int(spec.get("file_height") or 0))
    try:
        if header.format == "raw":
            decoded = decoders.read_raw(data, expected, settings.max_megapixels * 1e6)
            if isinstance(decoded, decoders.RawPreview):
                _check_complete(decoded.jpeg, decoded.header)
                return _crop_jpeg_like(spec, settings, image_path, decoded.jpeg, decoded.header, "raw-preview")
        else:
            if header.clean_aperture and spec.get("manager") == "digikam":
                raise Unusable(
                    "photo is a HEIF/AVIF with a clean-aperture crop (clap), which digiKam does not apply and "
                    "libheif does: the regions' frame is not known"
                )
            rule = "recorded" if spec.get("manager") == "digikam" else "container"
            orientation = decoders.display_orientation(header, rule, int(spec.get("file_orientation") or 0))
            decoded = decoders.decode_bmff(data, header, orientation)
    except decoders.DecodeError as exc:
        raise Unusable(str(exc)) from None
    pixels = decoded.pixels
    height, width = pixels.shape[:2]
    _check_size(spec, width, height, f"as {_manager(spec)[0]} shows it")
    face = geometry.marker_rect(spec["x"], spec["y"], spec["w"], spec["h"], width, height)
    square = geometry.square_crop(face, width, height, settings.factor)
    out_side = geometry.output_side(square.side, settings.size)
    region = square.rect
    cut = decoded.cut(region.y0, region.y1, region.x0, region.x1)
    return _finish(cut, settings, image_path, face, square, out_side, (width, height), 1, decoded.how)


def _finish(
    pixels: np.ndarray,
    settings: Section,
    image_path: str,
    face: geometry.Rect,
    square: geometry.SquareCrop,
    out_side: int,
    size: tuple[int, int],
    scale: int,
    decode_path: str,
) -> dict[str, Any]:
    """Resize, encode and write the crop; the record's fields."""
    width, height = size
    if pixels.shape[0] != out_side or pixels.shape[1] != out_side:
        pixels = cv2.resize(pixels, (out_side, out_side), interpolation=cv2.INTER_AREA)

    encoded = _encode(pixels, settings)
    atomic_write_bytes(image_path, encoded)
    face_in_crop = geometry.rect_in_crop(face, square, out_side)
    return {
        "image": image_path,
        "image_sha256": hashlib.sha256(encoded).hexdigest(),
        "photo_width": width,
        "photo_height": height,
        "face_box": face.as_list(),
        "crop_box": [square.left, square.top, square.side, square.side],
        "face_in_crop": list(face_in_crop),
        "native_face_side": max(face.width, face.height),
        "native_crop_side": square.side,
        "output_side": out_side,
        "decode_scale": scale,
        "decode": decode_path,
        "measurements": _measure(pixels, face_in_crop),
    }


def _measure(pixels: np.ndarray, face_in_crop: tuple[int, int, int, int]) -> dict[str, Any]:
    """Selection's measurements, computed while the crop is in memory: cached with the crop itself."""
    try:
        return quality.measure(pixels, face_in_crop)
    except ValueError as exc:
        raise Unusable(f"crop cannot be measured: {exc}") from None


def _region_pixels(
    data: bytes, header: ImageHeader, square: geometry.SquareCrop, scale: int, photo_pixels: int
) -> tuple[np.ndarray | None, str]:
    """The crop's pixels decoded alone, and how ("rows" or "cut"); (None, "whole"): decode the whole photo.

    Both region paths answer None for what they cannot decode (no library, CMYK, damaged data): the whole
    decode then decides, with its own checks.
    """
    if header.format != "jpeg" or scale != 1:
        return None, "whole"  # a reduced decode costs about what a region decode does (benchmarks/README.md)
    pixels = jpegregion.decode_rows(data, square.rect, header.orientation, header.width, header.height)
    if pixels is not None:
        return pixels, "rows"
    if square.side * square.side > REGION_DECODE_MAX_SHARE * photo_pixels:
        return None, "whole"
    pixels = jpegregion.decode_region(data, square.rect, header.orientation)
    return (pixels, "cut") if pixels is not None else (None, "whole")


def _encode(pixels: np.ndarray, settings: Section) -> bytes:
    extension = "." + settings.format
    params = [*_ENCODE_FLAGS[settings.format], settings.quality] if settings.format != "png" else []
    ok, buffer = cv2.imencode(extension, np.ascontiguousarray(pixels), params)
    if not ok:
        raise Unusable(f"could not encode the crop as {settings.format}")
    return buffer.tobytes()


# The modules whose code decides a crop's pixels and record: every likeness module crop_face reaches
# (tests/test_crop.py checks) but atomic.py, config.py and errors.py (how files land, the settings'
# type: their values are a param, the error classes). Snakemake's code trigger sees only the rule's
# own text, so the crop rule carries this digest as a param: changing any of them re-crops.
_CROP_MODULES = (
    "crop/cropping.py",
    "geometry.py",
    "imageheader.py",
    "names.py",
    "crop/jpegregion.py",
    "crop/_jpegskip.c",
    "crop/quality.py",
    "crop/decoders.py",
)


def code_digest() -> str:
    """A short digest of the code of every module in _CROP_MODULES: the crop rule's code param."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _CROP_MODULES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:16]
