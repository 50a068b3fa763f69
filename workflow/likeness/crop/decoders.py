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
from likeness.imageheader import ImageHeader, parse_header

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
    pixels: np.ndarray  # displayed frame (a view of the decoded buffer: the crop copies only its cut)
    how: str  # "heif", "avif" or "raw-demosaic"
    rgb: bool = False  # channels in RGB order (converted on the cut only: cheaper than a reversed view)

    def cut(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The region as a contiguous BGR array."""
        region = self.pixels[y0:y1, x0:x1]
        return cv2.cvtColor(region, cv2.COLOR_RGB2BGR) if self.rgb else np.ascontiguousarray(region)


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
    if header.format == "heif":
        stored, rgb = _heif_stored(data, header), False
    else:
        stored, rgb = _avif_stored(data), True
    return Decoded(geometry.apply_orientation(stored, orientation), header.format, rgb)


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
    return rgb


@dataclass
class RawPreview:
    """A RAW's full-size embedded JPEG preview, to be cut like any JPEG (region decode) in the RAW's frame."""

    jpeg: bytes
    header: ImageHeader  # the preview's stored size, the RAW's orientation (the preview's own EXIF is ignored)


def read_raw(data: bytes, expected: tuple[int, int], max_pixels: float) -> Decoded | RawPreview:
    """The RAW in LibRaw's frame: its full-size JPEG preview when it has one of ``expected`` size (not decoded
    here: the crop cuts it as a JPEG), else a demosaic. Any other size than ``expected`` (when known) is a
    reason, never a crop."""
    import rawpy

    with _open_raw(data) as raw:
        orientation = _FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1)
        full = geometry.displayed_size(raw.sizes.width, raw.sizes.height, orientation)
        if full[0] * full[1] > max_pixels:
            raise DecodeError(
                f"photo declares {full[0]}x{full[1]} pixels, over crop.max_megapixels ({max_pixels / 1e6:g} MP)"
            )
        want = expected if all(expected) else full
        preview = _full_size_preview(raw, orientation, want)
        if preview is not None:
            return preview
        if full != want:
            raise DecodeError(
                f"RAW decodes to {full[0]}x{full[1]} pixels (LibRaw) and has no {want[0]}x{want[1]} preview, "
                f"but the manager recorded {want[0]}x{want[1]}: its boxes do not fit this decode"
            )
        try:
            rgb = raw.postprocess(**RAW_POSTPROCESS)
        except (rawpy.LibRawError, ValueError) as exc:
            raise DecodeError(f"photo cannot be decoded: RAW: {exc}") from None
    if (rgb.shape[1], rgb.shape[0]) != want:
        raise DecodeError(f"RAW demosaiced to {rgb.shape[1]}x{rgb.shape[0]} pixels, expected {want[0]}x{want[1]}")
    return Decoded(rgb, "raw-demosaic", rgb=True)


def _open_raw(data: bytes):
    import rawpy

    try:
        return rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawError, ValueError, OSError) as exc:
        raise DecodeError(f"photo cannot be decoded: RAW ({type(exc).__name__}: {exc})") from None


def _full_size_preview(raw, orientation: int, want: tuple[int, int]) -> RawPreview | None:
    """The embedded JPEG preview, when it is exactly ``want`` once turned by the RAW's orientation; else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, ValueError):
        return None  # no preview, or one LibRaw cannot read: demosaic
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    jpeg = bytes(thumb.data)
    stored = parse_header(jpeg)
    if stored is None or stored.format != "jpeg":
        return None
    # The preview's own EXIF orientation (if any) is ignored: the RAW's decides, as Immich and digiKam do.
    header = ImageHeader("jpeg", stored.width, stored.height, orientation, stored.channels)
    if geometry.displayed_size(header.width, header.height, orientation) != want:
        return None
    return RawPreview(jpeg, header)
