"""Decode the photos OpenCV cannot: HEIF (pillow-heif, libheif), AVIF (Pillow's own plugin, libavif) and
camera RAW (rawpy, LibRaw), into the frame the photo manager's face boxes refer to.

Each decoder answers a :class:`Decoded` image whose orientation is already applied, with a word saying
how it was read (the crop record's ``decode``). What the displayed frame is differs by manager and format,
and each rule below follows what that manager's own decoder does (README, "Photo formats"):

* HEIF and AVIF can state an orientation twice: the container's transforms (``irot``/``imir``, which
  libheif applies) and an EXIF tag. Immich decodes originals with sharp/libvips, whose HEIF loader lets
  libheif apply the container's transforms and then removes the EXIF orientation ("EXIF orientation tags
  are only informational", libvips heifload.c); its face detection runs on that preview. PhotoPrism's
  HEIF conversion also uses libheif's transforms. digiKam's HEIF loader decodes with
  ``ignore_transformations = 1`` (dimgheifloader_load.cpp) and then turns the stored pixels by the
  orientation its database holds (ImageInformation.orientation, else the EXIF tag: Exiv2 reads no irot).
  So: rule ``container`` (Immich, PhotoPrism) or ``recorded`` (digiKam) below.
* RAW: LibRaw's flip (the RAW's own orientation tag), applied by LibRaw's processing; digiKam does the same
  ("Raw files are already rotated properly by dcraw", loadsavethread.cpp) and Immich turns the embedded
  preview it extracts by the RAW's EXIF orientation, so every manager shows a RAW in that frame.
  A RAW is read from its full-size embedded JPEG preview when there is one whose size, turned by the
  flip, is LibRaw's full output size (fast, and the camera's own rendering); else it is demosaiced.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np

from likeness import geometry
from likeness.imageheader import ImageHeader

# LibRaw's flip (dcraw's) for each EXIF orientation is "50132467"[orientation & 7]: the inverse here.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}
# The demosaic's settings: camera white balance, sRGB primaries and tone curve, no histogram-driven
# brightening (a photo's crops must not change with what else is in the frame), 8 bits.
RAW_POSTPROCESS = {"use_camera_wb": True, "no_auto_bright": True, "gamma": (2.4, 12.92), "output_bps": 8}


class DecodeError(Exception):
    """The file cannot be decoded; the message is the reason recorded for the face."""


@dataclass
class Decoded:
    pixels: np.ndarray  # BGR, displayed frame
    how: str  # "heif", "avif", "raw-preview" or "raw-demosaic"


def display_orientation(header: ImageHeader, rule: str, recorded: int) -> int:
    """The orientation that turns a HEIF/AVIF's stored pixels into the manager's displayed image.

    ``rule`` 'container': the container's transforms (Immich, PhotoPrism); 'recorded': the manager's
    recorded orientation (digiKam's database), else the EXIF tag.
    """
    if rule == "recorded":
        return recorded if 1 <= recorded <= 8 else header.orientation
    return header.container_orientation


def decode_bmff(data: bytes, header: ImageHeader, orientation: int) -> Decoded:
    """A HEIF (pillow-heif) or AVIF (Pillow) image turned by ``orientation`` from its stored pixels."""
    stored = _heif_stored(data, header) if header.format == "heif" else _avif_stored(data)
    return Decoded(np.ascontiguousarray(geometry.apply_orientation(stored, orientation)), header.format)


def _heif_stored(data: bytes, header: ImageHeader) -> np.ndarray:
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True, bgr_mode=True)
        pixels = np.asarray(heif)
    except (ValueError, RuntimeError, OSError, SyntaxError) as exc:
        raise DecodeError(f"photo cannot be decoded: HEIF: {str(exc).strip() or type(exc).__name__}") from None
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise DecodeError(f"photo cannot be decoded: HEIF image of shape {pixels.shape}")
    # libheif has applied irot/imir: undo them to get the stored pixels (a view, nothing is copied).
    return geometry.apply_orientation(pixels[..., :3], _INVERSE[header.container_orientation])


def _avif_stored(data: bytes) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["AVIF"]) as image:
            rgb = np.asarray(image.convert("RGB"))  # Pillow leaves irot/imir to the caller: stored pixels
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(f"photo cannot be decoded: AVIF: {str(exc).strip() or type(exc).__name__}") from None
    return rgb[..., ::-1]


def raw_size(data: bytes) -> tuple[int, int]:
    """LibRaw's displayed (width, height) of a RAW, without decoding it."""
    with _open_raw(data) as raw:
        sizes = raw.sizes
        return geometry.displayed_size(sizes.width, sizes.height, _FLIP_TO_ORIENTATION.get(sizes.flip, 1))


def decode_raw(data: bytes, expected: tuple[int, int]) -> Decoded:
    """The RAW in LibRaw's frame: its full-size JPEG preview when it has one of ``expected`` size, else a
    demosaic. A result of any other size than ``expected`` (when known) is a reason, never a crop."""
    import rawpy

    with _open_raw(data) as raw:
        orientation = _FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1)
        full = geometry.displayed_size(raw.sizes.width, raw.sizes.height, orientation)
        want = expected if all(expected) else full
        preview = _full_size_preview(raw, orientation, want)
        if preview is not None:
            return Decoded(preview, "raw-preview")
        if full != want:
            raise DecodeError(
                f"RAW decodes to {full[0]}x{full[1]} pixels (LibRaw) and has no {want[0]}x{want[1]} preview, "
                f"but the manager recorded {want[0]}x{want[1]}: its boxes do not fit this decode"
            )
        try:
            rgb = raw.postprocess(**RAW_POSTPROCESS)
        except (rawpy.LibRawError, ValueError) as exc:
            raise DecodeError(f"photo cannot be decoded: RAW: {exc}") from None
    pixels = np.ascontiguousarray(rgb[..., ::-1])
    if (pixels.shape[1], pixels.shape[0]) != want:
        raise DecodeError(f"RAW demosaiced to {pixels.shape[1]}x{pixels.shape[0]} pixels, expected {want[0]}x{want[1]}")
    return Decoded(pixels, "raw-demosaic")


def _open_raw(data: bytes):
    import rawpy

    try:
        return rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawError, ValueError, OSError) as exc:
        raise DecodeError(f"photo cannot be decoded: RAW ({type(exc).__name__}: {exc})") from None


def _full_size_preview(raw, orientation: int, want: tuple[int, int]) -> np.ndarray | None:
    """The embedded JPEG preview turned by the RAW's orientation, when it is exactly ``want``; else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, ValueError):
        return None  # no preview, or one LibRaw cannot read: demosaic
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    # The preview's own EXIF orientation (if any) is ignored: the RAW's decides, as Immich and digiKam do.
    stored = cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if stored is None:
        return None
    pixels = geometry.apply_orientation(stored, orientation)
    if (pixels.shape[1], pixels.shape[0]) != want:
        return None
    return np.ascontiguousarray(pixels)
