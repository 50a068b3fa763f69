"""Read an image's stored size and EXIF orientation from its header, without decoding pixels.

Knowing the size before decoding lets the crop stage choose a reduced-size decode and check the photo
against the manager's recorded size for the price of reading a few kilobytes.

The format is sniffed from the bytes, never from the name alone: HEIF and AVIF by their ISO-BMFF ``ftyp``
brands (and the primary item's ``ispe``, ``irot``, ``imir`` and ``clap`` properties, and its Exif item),
camera RAW files by their TIFF-based signatures (DNG's DNGVersion tag, CR2's ``CR``, ORF, RW2, RAF, CR3's
``crx`` brand) or a RAW file name over a TIFF structure, so that a RAW never reaches OpenCV's TIFF decoder.
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
    format: str  # "jpeg", "png", "webp", "tiff", "bmp", "heif", "avif" or "raw"
    width: int  # stored pixels, before orientation (0 for a RAW: LibRaw says)
    height: int
    orientation: int  # EXIF orientation 1-8; 1 when absent
    channels: int = 3
    # HEIF/AVIF only: the container's own transforms (irot/imir) as the EXIF orientation that does the
    # same, and whether a clean-aperture crop (clap) applies; both are what libheif applies when decoding.
    container_orientation: int = 1
    clean_aperture: bool = False


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


def parse_header(data: bytes, name: str = "") -> ImageHeader | None:
    """Header of an image from its first bytes: JPEG, PNG, WebP, TIFF, BMP, HEIF, AVIF or a camera RAW;
    None for anything else (videos included). ``name`` (the file's name) only tells a RAW whose bytes
    look like any TIFF (NEF, ARW, PEF...) from a TIFF.

    This is the one place the workflow learns a photo's orientation: every decode path applies it.
    """
    if is_raw(data, name):
        return ImageHeader("raw", 0, 0, 1)
    if data[4:8] == b"ftyp":
        try:
            return bmff_header(data)
        except (IndexError, ValueError):  # a damaged box structure: not a photo likeness can read
            return None
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
        brands = ftyp_brands(data)
        if brands & (HEIF_BRANDS | AVIF_BRANDS):
            return "a HEIF/AVIF file whose image properties are damaged or missing"
        return f"a video (ISO media, brand '{data[8:12].decode('latin-1').strip()}'), not a still photo"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "a Matroska/WebM video"
    if data[:4] == b"RIFF":
        return "a RIFF file that is not WebP (AVI or WAV)"
    if data[:4] in (b"GIF8",):
        return "a GIF, which likeness does not decode"
    if data.startswith(b"\xff\xd8") or data.startswith(b"\x89PNG"):
        return "an image whose header is damaged"
    return "not a JPEG, PNG, WebP, TIFF, BMP, HEIF, AVIF or camera RAW image"


def read_head(path: str | Path) -> bytes:
    """The first bytes of a file: enough for any header this module reads."""
    with open(path, "rb") as handle:
        return handle.read(_HEADER_READ_LIMIT)


def read_header(path: str | Path) -> ImageHeader | None:
    """Header of the image file at ``path``; None when it is no supported image or its header is broken."""
    return parse_header(read_head(path))


# -- camera RAW ------------------------------------------------------------------------------------------
# The names digiKam, Immich and PhotoPrism treat as RAW; over a TIFF structure, the name decides.
RAW_EXTENSIONS = frozenset(
    [
        ".3fr",
        ".ari",
        ".arw",
        ".bay",
        ".cap",
        ".cr2",
        ".cr3",
        ".crw",
        ".dcr",
        ".dcs",
        ".dng",
        ".erf",
        ".fff",
        ".iiq",
        ".k25",
        ".kdc",
        ".mef",
        ".mos",
        ".mrw",
        ".nef",
        ".nrw",
        ".orf",
        ".ori",
        ".pef",
        ".raf",
        ".raw",
        ".rw2",
        ".rwl",
        ".sr2",
        ".srf",
        ".srw",
        ".x3f",
    ]
)
_DNG_VERSION, _SUBIFDS, _NEW_SUBFILE_TYPE = 0xC612, 0x014A, 0x00FE


def is_raw(data: bytes, name: str = "") -> bool:
    """A camera RAW file, by its signature (RAF, ORF, RW2, CR2, CR3, DNG), or a RAW name over a TIFF."""
    if data.startswith(b"FUJIFILMCCD-RAW") or data[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00"):
        return True
    if data[4:8] == b"ftyp":
        return b"crx " in ftyp_brands(data)
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    if data[8:10] == b"CR" or Path(name).suffix.lower() in RAW_EXTENSIONS:
        return True
    tags = _tiff_ifd0(data)
    # DNG; or a TIFF whose first image is a reduced-size preview with the full image in a SubIFD (NEF...).
    return _DNG_VERSION in _tiff_tag_ids(data) or (tags.get(_NEW_SUBFILE_TYPE) == 1 and _SUBIFDS in tags)


def _tiff_tag_ids(tiff: bytes) -> set[int]:
    """Every tag number of IFD0, whatever its type and count."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return set()
    endian = "<" if tiff[:2] == b"II" else ">"
    (ifd_offset,) = struct.unpack(endian + "I", tiff[4:8])
    if ifd_offset + 2 > len(tiff):
        return set()
    (count,) = struct.unpack(endian + "H", tiff[ifd_offset : ifd_offset + 2])
    ids = set()
    for index in range(count):
        entry = ifd_offset + 2 + 12 * index
        if entry + 2 > len(tiff):
            break
        ids.add(struct.unpack(endian + "H", tiff[entry : entry + 2])[0])
    return ids


# -- HEIF and AVIF (ISO base media file format) ----------------------------------------------------------
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"mif2", b"msf1", b"hevc", b"hevx"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
_IMAGE_ITEM_TYPES = {b"hvc1": "heif", b"av01": "avif", b"grid": "", b"iden": ""}


def ftyp_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF file's ``ftyp`` box (empty when it has none)."""
    if data[4:8] != b"ftyp":
        return set()
    size = int.from_bytes(data[0:4], "big")
    body = data[8 : min(size, len(data))]
    if len(body) < 4:
        return set()
    return {body[0:4]} | {body[i : i + 4] for i in range(8, len(body) - 3, 4)}


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]; stops at a malformed box."""
    found = []
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        found.append((kind, pos + header, pos + size))
        pos += size
    return found


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def _uint(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos : pos + size], "big") if size else 0


Grid = list[list[int]]


def _rot90(grid: Grid) -> Grid:
    """A quarter turn anticlockwise (numpy's rot90)."""
    return [list(row) for row in zip(*grid, strict=True)][::-1]


def _transpose(grid: Grid) -> Grid:
    return [list(row) for row in zip(*grid, strict=True)]


# What each EXIF orientation does to the stored pixels (likeness.geometry.apply_orientation, without numpy:
# this module is imported where numpy is not installed).
_EXIF_OPS = {
    1: lambda g: g,
    2: lambda g: [row[::-1] for row in g],
    3: lambda g: [row[::-1] for row in g[::-1]],
    4: lambda g: g[::-1],
    5: _transpose,
    6: lambda g: _rot90(_rot90(_rot90(g))),
    7: lambda g: _transpose([row[::-1] for row in g[::-1]]),
    8: _rot90,
}


def _orientation_of_transforms(transforms: list[tuple[str, int]]) -> int:
    """The EXIF orientation that does what irot (anticlockwise quarter turns) and imir do, in their order.

    imir's bit as libheif 1.23 decodes it (and pillow-heif writes it for EXIF orientation 2): 1 flips
    left-right, 0 top-bottom. tests/test_photo_formats.py checks every orientation against libheif.
    """
    grid = [[0, 1, 2], [3, 4, 5]]
    image = grid
    for kind, value in transforms:
        if kind == "irot":
            for _ in range(value % 4):
                image = _rot90(image)
        elif kind == "imir":
            image = [row[::-1] for row in image] if value == 1 else image[::-1]
    return next((o for o, op in _EXIF_OPS.items() if op(grid) == image), 1)


def bmff_header(data: bytes) -> ImageHeader | None:
    """The primary image of a HEIF or AVIF file: its stored size (ispe), the container's transforms and
    the Exif item's orientation tag; None for a video or a file without a readable primary image."""
    brands = ftyp_brands(data)
    if brands & AVIF_BRANDS:
        kind = "avif"
    elif brands & HEIF_BRANDS:
        kind = "heif"
    else:
        return None
    top = _boxes(data, 0, len(data))
    meta = next(((s, e) for k, s, e in top if k == b"meta"), None)
    if meta is None:
        return None
    start, end = meta[0] + 4, meta[1]  # meta is a full box: version and flags first
    pitm = _child(data, start, end, b"pitm")
    iprp = _child(data, start, end, b"iprp")
    if pitm is None or iprp is None:
        return None
    primary = _uint(data, pitm[0] + 4, 2 if data[pitm[0]] == 0 else 4)
    items = _item_types(data, _child(data, start, end, b"iinf"))
    if items.get(primary) in _IMAGE_ITEM_TYPES and _IMAGE_ITEM_TYPES[items[primary]]:
        kind = _IMAGE_ITEM_TYPES[items[primary]]
    ipco = _child(data, iprp[0], iprp[1], b"ipco")
    ipma = _child(data, iprp[0], iprp[1], b"ipma")
    if ipco is None or ipma is None:
        return None
    properties = _boxes(data, ipco[0], ipco[1])
    width = height = 0
    transforms: list[tuple[str, int]] = []
    clean_aperture = False
    for index in _associations(data, ipma).get(primary, []):
        if not 1 <= index <= len(properties):
            continue
        prop, s, e = properties[index - 1]
        if prop == b"ispe" and e - s >= 12:
            width, height = _uint(data, s + 4, 4), _uint(data, s + 8, 4)
        elif prop == b"irot" and e > s:
            transforms.append(("irot", data[s] & 0x03))
        elif prop == b"imir" and e > s:
            transforms.append(("imir", data[s] & 0x01))
        elif prop == b"clap":
            clean_aperture = True
    if not (width and height):
        return None
    exif = _exif_item(data, items, _child(data, start, end, b"iloc"))
    orientation = _exif_orientation(exif) if exif else 1
    container = _orientation_of_transforms(transforms)
    return ImageHeader(kind, width, height, orientation, container_orientation=container, clean_aperture=clean_aperture)


def _item_types(data: bytes, iinf: tuple[int, int] | None) -> dict[int, bytes]:
    """Item id -> item type (``hvc1``, ``av01``, ``grid``, ``Exif``...) from ``iinf``'s ``infe`` boxes."""
    if iinf is None:
        return {}
    start, end = iinf
    version = data[start]
    entries = start + 4 + (2 if version == 0 else 4)
    types = {}
    for kind, s, _e in _boxes(data, entries, end):
        if kind != b"infe" or data[s] < 2:
            continue
        id_size = 2 if data[s] == 2 else 4
        item = _uint(data, s + 4, id_size)
        types[item] = data[s + 4 + id_size + 2 : s + 4 + id_size + 6]
    return types


def _associations(data: bytes, ipma: tuple[int, int]) -> dict[int, list[int]]:
    """Item id -> its property indices (1-based, in order) from ``ipma``."""
    start, end = ipma
    version, flags = data[start], _uint(data, start + 1, 3)
    pos = start + 4
    count = _uint(data, pos, 4)
    pos += 4
    associations: dict[int, list[int]] = {}
    for _ in range(count):
        id_size = 2 if version < 1 else 4
        item = _uint(data, pos, id_size)
        pos += id_size
        n = data[pos] if pos < end else 0
        pos += 1
        indices = []
        for _ in range(n):
            if flags & 1:
                indices.append(_uint(data, pos, 2) & 0x7FFF)
                pos += 2
            else:
                indices.append(data[pos] & 0x7F)
                pos += 1
        associations[item] = indices
        if pos > end:
            break
    return associations


def _exif_item(data: bytes, items: dict[int, bytes], iloc: tuple[int, int] | None) -> bytes:
    """The TIFF structure of the Exif item (after its 4-byte offset field); b'' when absent or elsewhere."""
    exif_ids = [item for item, kind in items.items() if kind == b"Exif"]
    if not exif_ids or iloc is None:
        return b""
    start, _end = iloc
    version = data[start]
    pos = start + 4
    offset_size, length_size = data[pos] >> 4, data[pos] & 0x0F
    base_offset_size = data[pos + 1] >> 4
    index_size = data[pos + 1] & 0x0F if version in (1, 2) else 0
    pos += 2
    count_size = 2 if version < 2 else 4
    count = _uint(data, pos, count_size)
    pos += count_size
    for _ in range(count):
        item = _uint(data, pos, count_size)
        pos += count_size
        method = _uint(data, pos, 2) & 0x0F if version in (1, 2) else 0
        pos += 2 if version in (1, 2) else 0
        pos += 2  # data reference index
        base = _uint(data, pos, base_offset_size)
        pos += base_offset_size
        extents = _uint(data, pos, 2)
        pos += 2
        first: tuple[int, int] | None = None
        for _ in range(extents):
            pos += index_size
            offset = _uint(data, pos, offset_size)
            pos += offset_size
            length = _uint(data, pos, length_size)
            pos += length_size
            first = first or (base + offset, length)
        if item == exif_ids[0] and method == 0 and first:
            payload = data[first[0] : first[0] + first[1]]
            if len(payload) < 4:
                return b""
            skip = int.from_bytes(payload[:4], "big")
            return payload[4 + skip :]
    return b""
