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
_ORIENTATION_TAG = 0x0112
_TIFF_WIDTH, _TIFF_HEIGHT = 0x0100, 0x0101


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg", "png", "webp", "tiff" or "bmp"
    width: int  # stored pixels, before orientation
    height: int
    orientation: int  # EXIF orientation 1-8; 1 when absent
    channels: int = 3


def _tiff_ifd0(tiff: bytes) -> dict[int, int]:
    """The SHORT and LONG values of IFD0 of a TIFF structure (an Exif payload or a whole TIFF file)."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return {}
    endian = "<" if tiff[:2] == b"II" else ">"
    (ifd_offset,) = struct.unpack(endian + "I", tiff[4:8])
    if ifd_offset + 2 > len(tiff):
        return {}
    (count,) = struct.unpack(endian + "H", tiff[ifd_offset : ifd_offset + 2])
    values: dict[int, int] = {}
    for index in range(count):
        entry = ifd_offset + 2 + 12 * index
        if entry + 12 > len(tiff):
            break
        tag, typ, n = struct.unpack(endian + "HHI", tiff[entry : entry + 8])
        # Orientation is a SHORT by the standard, but some writers store it as a LONG: read both.
        if n == 1 and typ == 3:
            (values[tag],) = struct.unpack(endian + "H", tiff[entry + 8 : entry + 10])
        elif n == 1 and typ == 4:
            (values[tag],) = struct.unpack(endian + "I", tiff[entry + 8 : entry + 12])
    return values


def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag (0x0112) from a TIFF structure (an Exif payload after 'Exif\\0\\0'); 1 when absent."""
    value = _tiff_ifd0(tiff).get(_ORIENTATION_TAG, 1)
    return value if 1 <= value <= 8 else 1


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


def _webp_header(data: bytes) -> ImageHeader | None:
    """Size from the VP8/VP8L/VP8X chunk, orientation from an EXIF chunk (extended WebP only)."""
    width = height = 0
    orientation = 1
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        payload = data[pos + 8 : pos + 8 + length]
        if kind == b"VP8X" and len(payload) >= 10:
            width = 1 + int.from_bytes(payload[4:7], "little")
            height = 1 + int.from_bytes(payload[7:10], "little")
        elif kind == b"VP8 " and len(payload) >= 10 and not width:
            width, height = (v & 0x3FFF for v in struct.unpack("<HH", payload[6:10]))
        elif kind == b"VP8L" and len(payload) >= 5 and not width:
            (bits,) = struct.unpack("<I", payload[1:5])
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif kind == b"EXIF":
            orientation = _exif_orientation(payload[6:] if payload.startswith(b"Exif\x00\x00") else payload)
        pos += 8 + length + (length & 1)
    return ImageHeader("webp", width, height, orientation) if width and height else None


def _tiff_header(data: bytes) -> ImageHeader | None:
    values = _tiff_ifd0(data)
    width, height = values.get(_TIFF_WIDTH, 0), values.get(_TIFF_HEIGHT, 0)
    orientation = values.get(_ORIENTATION_TAG, 1)
    return ImageHeader("tiff", width, height, orientation if 1 <= orientation <= 8 else 1) if width and height else None


def _bmp_header(data: bytes) -> ImageHeader | None:
    if len(data) < 26:
        return None
    (info_size,) = struct.unpack("<I", data[14:18])
    if info_size < 40:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return ImageHeader("bmp", abs(width), abs(height), 1) if width and height else None


def parse_header(data: bytes) -> ImageHeader | None:
    """Header of an image from its first bytes: JPEG, PNG, WebP, TIFF or BMP; None for anything else.

    This is the one place the workflow learns a photo's orientation: every decode path applies it.
    """
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_header(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_header(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_header(data)
    if data[:2] == b"BM":
        return _bmp_header(data)
    return None


def describe_unknown(data: bytes) -> str:
    """What a file that is not a supported image seems to be, for the reason a user reads."""
    if data[4:8] == b"ftyp":
        return "a video or HEIF/AVIF file (ISO media); PhotoPrism keeps a JPEG of it in the sidecar folder"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "a Matroska/WebM video"
    if data[:4] == b"RIFF":
        return "a RIFF file that is not WebP (AVI or WAV)"
    if data[:4] in (b"GIF8",):
        return "a GIF, which likeness does not decode"
    if data.startswith(b"\xff\xd8") or data.startswith(b"\x89PNG"):
        return "an image whose header is damaged"
    return "not a JPEG, PNG, WebP, TIFF or BMP image"


def read_head(path: str | Path) -> bytes:
    """The first bytes of a file: enough for any header this module reads."""
    with open(path, "rb") as handle:
        return handle.read(_HEADER_READ_LIMIT)


def read_header(path: str | Path) -> ImageHeader | None:
    """Header of the image file at ``path``; None when it is no supported image or its header is broken."""
    return parse_header(read_head(path))
