"""Read an image's stored size and EXIF orientation from its header, without decoding pixels.

Knowing the size before decoding lets the crop stage choose a reduced-size decode and check the photo
against PhotoPrism's ``file_width``/``file_height`` for the price of reading a few kilobytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# JPEG start-of-frame markers that carry the frame size (all SOFn except DHT, JPG, DAC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_HEADER_READ_LIMIT = 1 << 20  # EXIF thumbnails can be large; the frame header follows them


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg", "png" or "other"
    width: int  # stored pixels, before orientation
    height: int
    orientation: int  # EXIF orientation 1-8; 1 when absent
    channels: int = 3


def _exif_orientation(app1: bytes) -> int:
    """Orientation tag from an APP1 Exif payload (after the 'Exif\\0\\0' prefix); 1 when absent."""
    if len(app1) < 8:
        return 1
    order = app1[:2]
    if order == b"II":
        endian = "<"
    elif order == b"MM":
        endian = ">"
    else:
        return 1
    (ifd_offset,) = struct.unpack(endian + "I", app1[4:8])
    if ifd_offset + 2 > len(app1):
        return 1
    (count,) = struct.unpack(endian + "H", app1[ifd_offset : ifd_offset + 2])
    for index in range(count):
        entry = ifd_offset + 2 + 12 * index
        if entry + 12 > len(app1):
            break
        tag, typ, _n = struct.unpack(endian + "HHI", app1[entry : entry + 8])
        if tag == 0x0112 and typ == 3:
            (value,) = struct.unpack(endian + "H", app1[entry + 8 : entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_header(data: bytes) -> ImageHeader | None:
    pos = 2
    orientation = 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:])
        elif marker in _SOF_MARKERS and len(segment) >= 6:
            height, width = struct.unpack(">HH", segment[1:5])
            return ImageHeader("jpeg", width, height, orientation, channels=segment[5])
        elif marker == 0xDA:  # start of scan before any frame header: broken file
            return None
        pos += 2 + length
    return None


def _png_header(data: bytes) -> ImageHeader | None:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    # PNG orientation lives in an eXIf chunk; OpenCV applies it, so find it too.
    orientation = 1
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            orientation = _exif_orientation(data[pos + 8 : pos + 8 + length])
            break
        if kind == b"IDAT":
            break
        pos += 12 + length
    return ImageHeader("png", width, height, orientation)


def read_header(path: str | Path) -> ImageHeader | None:
    """Header of a JPEG or PNG file; None when the file is neither or its header is broken."""
    with open(path, "rb") as handle:
        data = handle.read(_HEADER_READ_LIMIT)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_header(data)
    return None
