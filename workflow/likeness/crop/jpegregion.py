"""Decode only the part of a JPEG a crop needs, through libjpeg-turbo's TurboJPEG 2 API (ctypes).

A face crop uses a few percent of a 24-megapixel photo, yet a whole-photo decode pays the inverse DCT,
the colour conversion and the EXIF rotation for every pixel. Here the photo is first cut losslessly
(``tjTransform`` with ``TJXOPT_CROP``: entropy decoding and re-coding, no DCT) to the MCU-aligned region
around the crop, and only that small JPEG is decoded, at the same DCT scale OpenCV's IMREAD_REDUCED_*
would use. The region is cut in *stored* pixels, so the displayed-frame rectangle is mapped through the
EXIF orientation first and the orientation is applied to the decoded region afterwards.

Everything that can go wrong (no libturbojpeg on the system, a JPEG TurboJPEG refuses, CMYK, a warning
about damaged data) makes ``decode_region`` return None: the caller then decodes the whole photo with
OpenCV as before, so this module only ever makes the crop faster, never different or fragile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

import numpy as np

from likeness.geometry import Rect, apply_orientation

try:  # compiled by workflow/scripts/setup.sh against libjpeg-turbo's headers
    from likeness.crop import _jpegskip
except ImportError:  # not built here: decode_region's TurboJPEG path or a whole decode serves instead
    _jpegskip = None

# Shared-library names of the TurboJPEG API; the 2.x ABI (libturbojpeg.so.0) is what Debian 12 ships.
LIBRARY_NAMES = ("libturbojpeg.so.0", "libturbojpeg.so", "libturbojpeg.dylib", "turbojpeg.dll")

# Constants of turbojpeg.h (TurboJPEG 2.x API, also exported unchanged by libjpeg-turbo 3).
_TJXOP_NONE = 0
_TJXOPT_CROP = 1 << 2
_TJXOPT_COPYNONE = 1 << 6  # the EXIF block is not needed: the orientation is applied here
_TJPF_BGR = 1
# iMCU size per chroma subsampling (TJSAMP_444, 422, 420, GRAY, 440, 411): the lossless cut's grid.
_MCU_WIDTH = (8, 16, 16, 8, 8, 32)
_MCU_HEIGHT = (8, 8, 16, 8, 16, 8)


class _Region(ctypes.Structure):
    _fields_ = (("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int))


class _Transform(ctypes.Structure):
    _fields_ = (
        ("r", _Region),
        ("op", ctypes.c_int),
        ("options", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("customFilter", ctypes.c_void_p),
    )


class TurboJPEG:
    """The handful of TurboJPEG 2 functions this module calls, with their C signatures declared."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.lib = library
        handle = ctypes.c_void_p
        buffer = ctypes.POINTER(ctypes.c_ubyte)
        int_p = ctypes.POINTER(ctypes.c_int)
        signatures = {
            "tjInitTransform": ([], handle),
            "tjInitDecompress": ([], handle),
            "tjDestroy": ([handle], ctypes.c_int),
            "tjFree": ([buffer], None),
            "tjDecompressHeader3": (
                [handle, ctypes.c_char_p, ctypes.c_ulong, int_p, int_p, int_p, int_p],
                ctypes.c_int,
            ),
            "tjTransform": (
                [
                    handle,
                    ctypes.c_char_p,
                    ctypes.c_ulong,
                    ctypes.c_int,
                    ctypes.POINTER(buffer),
                    ctypes.POINTER(ctypes.c_ulong),
                    ctypes.POINTER(_Transform),
                    ctypes.c_int,
                ],
                ctypes.c_int,
            ),
            "tjDecompress2": (
                # handle, jpegBuf, jpegSize, dstBuf, width, pitch, height, pixelFormat, flags
                [handle, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p, *[ctypes.c_int] * 5],
                ctypes.c_int,
            ),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(library, name)  # AttributeError: not a TurboJPEG library
            function.argtypes = argtypes
            function.restype = restype
            setattr(self, name, function)


def load_library(names: tuple[str, ...]) -> TurboJPEG | None:
    """TurboJPEG from the first of ``names`` that loads and has the API; None when none does."""
    for name in names:
        try:
            return TurboJPEG(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue
    return None


@functools.cache
def _default_library() -> TurboJPEG | None:
    found = ctypes.util.find_library("turbojpeg")
    return load_library((*LIBRARY_NAMES, *([found] if found else [])))


def available() -> bool:
    """Whether region decoding can be used on this system."""
    return _default_library() is not None


# -- geometry (pure) --------------------------------------------------------------------------------------
def stored_rect(displayed: Rect, orientation: int, stored_width: int, stored_height: int) -> Rect:
    """The rectangle of stored pixels that ``apply_orientation`` turns into ``displayed``.

    ``displayed`` is half-open in the displayed frame (after the EXIF orientation); the stored image is
    ``stored_width`` x ``stored_height``. Orientations other than 1-8 count as 1, as in apply_orientation.
    """
    x0, y0, x1, y1 = displayed.x0, displayed.y0, displayed.x1, displayed.y1
    w, h = stored_width, stored_height
    if orientation == 2:  # mirrored left-right
        return Rect(w - x1, y0, w - x0, y1)
    if orientation == 3:  # turned 180 degrees
        return Rect(w - x1, h - y1, w - x0, h - y0)
    if orientation == 4:  # mirrored top-bottom
        return Rect(x0, h - y1, x1, h - y0)
    if orientation == 5:  # transposed: displayed (x, y) is stored (y, x)
        return Rect(y0, x0, y1, x1)
    if orientation == 6:  # displayed = stored turned 90 degrees clockwise: (x, y) is stored (y, h-1-x)
        return Rect(y0, h - x1, y1, h - x0)
    if orientation == 7:  # transverse: (x, y) is stored (w-1-y, h-1-x)
        return Rect(w - y1, h - x1, w - y0, h - x0)
    if orientation == 8:  # displayed = stored turned 90 degrees anticlockwise: (x, y) is stored (w-1-y, x)
        return Rect(w - y1, x0, w - y0, x1)
    return displayed


def mcu_aligned(rect: Rect, mcu_width: int, mcu_height: int) -> Rect:
    """``rect`` grown left and up to the iMCU grid: a lossless cut can only start on it."""
    return Rect(rect.x0 - rect.x0 % mcu_width, rect.y0 - rect.y0 % mcu_height, rect.x1, rect.y1)


def region_plan(
    region: Rect, orientation: int, stored_width: int, stored_height: int, scale: int, mcu: tuple[int, int]
) -> tuple[Rect, Rect]:
    """Where to cut and what to keep for ``region`` of the image decoded at 1/``scale`` (displayed frame).

    Returns (cut, keep): ``cut`` in full-resolution stored pixels, iMCU-aligned, for tjTransform;
    ``keep`` the stored-frame rectangle to take from the cut decoded at 1/scale, before orientation.
    """
    scaled_w, scaled_h = math.ceil(stored_width / scale), math.ceil(stored_height / scale)
    wanted = stored_rect(region, orientation, scaled_w, scaled_h)
    full = Rect(
        wanted.x0 * scale,
        wanted.y0 * scale,
        min(wanted.x1 * scale, stored_width),
        min(wanted.y1 * scale, stored_height),
    )
    cut = mcu_aligned(full, *mcu)
    # iMCU sides (8, 16, 32) are multiples of every DCT scale (1, 2, 4, 8): the cut starts on the grid
    # of the reduced image, so its reduced decode is the same pixels as the whole photo's.
    origin_x, origin_y = cut.x0 // scale, cut.y0 // scale
    keep = Rect(wanted.x0 - origin_x, wanted.y0 - origin_y, wanted.x1 - origin_x, wanted.y1 - origin_y)
    return cut, keep


# -- decoding ---------------------------------------------------------------------------------------------
def _header(tj: TurboJPEG, handle: int, data: bytes) -> tuple[int, int, int, int] | None:
    width, height, subsamp, colorspace = (ctypes.c_int() for _ in range(4))
    status = tj.tjDecompressHeader3(
        handle, data, len(data), *(ctypes.byref(v) for v in (width, height, subsamp, colorspace))
    )
    if status != 0:
        return None
    return width.value, height.value, subsamp.value, colorspace.value


def _cut(tj: TurboJPEG, data: bytes, cut: Rect) -> bytes | None:
    """The lossless crop of ``data`` to ``cut`` (stored pixels), as a small JPEG."""
    handle = tj.tjInitTransform()
    if not handle:
        return None
    out = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    transform = _Transform(
        _Region(cut.x0, cut.y0, cut.width, cut.height),
        _TJXOP_NONE,
        _TJXOPT_CROP | _TJXOPT_COPYNONE,
        None,
        None,
    )
    try:
        status = tj.tjTransform(handle, data, len(data), 1, ctypes.byref(out), ctypes.byref(size), transform, 0)
        if status != 0 or not out:
            return None
        return ctypes.string_at(out, size.value)
    finally:
        if out:
            tj.tjFree(out)
        tj.tjDestroy(handle)


def _decompress(tj: TurboJPEG, jpeg: bytes, scale: int) -> np.ndarray | None:
    """BGR pixels of ``jpeg`` decoded at 1/scale (TurboJPEG picks the DCT scale from the size asked)."""
    handle = tj.tjInitDecompress()
    if not handle:
        return None
    try:
        header = _header(tj, handle, jpeg)
        if header is None:
            return None
        width, height = math.ceil(header[0] / scale), math.ceil(header[1] / scale)
        pixels = np.empty((height, width, 3), np.uint8)
        status = tj.tjDecompress2(handle, jpeg, len(jpeg), pixels.ctypes.data, width, width * 3, height, _TJPF_BGR, 0)
        # A warning (damaged data) also returns -1: then OpenCV's whole decode decides what to do.
        return pixels if status == 0 else None
    finally:
        tj.tjDestroy(handle)


def decode_region(
    data: bytes, region: Rect, orientation: int, scale: int = 1, library: TurboJPEG | None = None
) -> np.ndarray | None:
    """Pixels of ``region`` of the JPEG ``data`` as OpenCV would show them, or None to fall back.

    ``region`` is in the displayed frame (EXIF ``orientation`` applied) of the image decoded at 1/``scale``
    (1, 2, 4 or 8): the same rectangle the caller would slice from ``cv2.imdecode(data, IMREAD_REDUCED_*)``.
    Returns a contiguous BGR array of ``region.height`` x ``region.width``; None when libturbojpeg is
    missing, the JPEG is one TurboJPEG cannot cut or decode (CMYK, damaged, odd subsampling), or the
    region lies outside the image.
    """
    tj = library or _default_library()
    if tj is None or scale not in (1, 2, 4, 8) or region.width < 1 or region.height < 1:
        return None
    handle = tj.tjInitDecompress()
    if not handle:
        return None
    try:
        header = _header(tj, handle, data)
    finally:
        tj.tjDestroy(handle)
    if header is None or not 0 <= header[2] < len(_MCU_WIDTH):
        return None
    stored_width, stored_height, subsamp, _colorspace = header
    cut, keep = region_plan(
        region, orientation, stored_width, stored_height, scale, (_MCU_WIDTH[subsamp], _MCU_HEIGHT[subsamp])
    )
    if cut.x0 < 0 or cut.y0 < 0 or cut.x1 > stored_width or cut.y1 > stored_height or keep.x0 < 0:
        return None
    small = _cut(tj, data, cut)
    if small is None:
        return None
    decoded = _decompress(tj, small, scale)
    if decoded is None or decoded.shape[0] < keep.y1 or decoded.shape[1] < keep.x1:
        return None
    stored = decoded[keep.y0 : keep.y1, keep.x0 : keep.x1]
    return np.ascontiguousarray(apply_orientation(stored, orientation))


def rows_available() -> bool:
    return _jpegskip is not None


def decode_rows(
    data: bytes, region: Rect, orientation: int, stored_width: int, stored_height: int
) -> np.ndarray | None:
    """Pixels of ``region`` (displayed frame, full scale), decoding only the stored rows and columns it needs.

    Unlike the lossless cut of :func:`decode_region`, which still entropy-decodes the whole file, the C
    helper (``_jpegskip.c``: libjpeg's jpeg_crop_scanline and jpeg_skip_scanlines) reconstructs only the
    crop's columns, passes over the rows above it and stops after its last row. None when the helper is
    not built, for CMYK JPEGs and on any decoder error or warning: the caller then decodes the whole photo.
    """
    if _jpegskip is None or region.width < 1 or region.height < 1:
        return None
    stored = stored_rect(region, orientation, stored_width, stored_height)
    if stored.x0 < 0 or stored.y0 < 0 or stored.x1 > stored_width or stored.y1 > stored_height:
        return None
    decoded = _jpegskip.decode_rows(data, stored.x0, stored.y0, stored.x1, stored.y1)
    if decoded is None:
        return None
    pixels, x_offset, width, height = decoded
    rows = np.frombuffer(pixels, np.uint8).reshape(height, width, 3)
    return np.ascontiguousarray(apply_orientation(rows[:, stored.x0 - x_offset : stored.x1 - x_offset], orientation))
