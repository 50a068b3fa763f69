"""Pixels for fake photo libraries: drawn faces, backgrounds, pasted portraits, JPEGs with an EXIF orientation.

Deterministic: the same calls give the same pixels and bytes.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
from likeness.geometry import stored_from_displayed


def exif_orientation_payload(orientation: int, long_type: bool = False) -> bytes:
    """An Exif APP1 payload holding only the Orientation tag, as a SHORT (the standard) or a LONG."""
    typ, value = (4, struct.pack(">I", orientation)) if long_type else (3, struct.pack(">HH", orientation, 0))
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHI", 0x0112, typ, 1) + value
    return b"Exif\x00\x00" + tiff + b"\x00\x00\x00\x00"


def app1_segment(payload: bytes) -> bytes:
    """A JPEG APP1 segment (Exif or XMP) holding ``payload``."""
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the orientation tag right after SOI."""
    return jpeg[:2] + app1_segment(exif_orientation_payload(orientation)) + jpeg[2:]


def stored_jpeg(displayed_bgr: np.ndarray, orientation: int = 1, quality: int = 90) -> bytes:
    """JPEG bytes, without Exif, of the stored pixels that show ``displayed_bgr`` under ``orientation``."""
    stored = np.ascontiguousarray(stored_from_displayed(displayed_bgr, orientation))
    ok, buf = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_jpeg(displayed_bgr: np.ndarray, orientation: int = 1, quality: int = 90) -> bytes:
    """JPEG bytes whose stored pixels, once the EXIF orientation is applied, show ``displayed_bgr``."""
    data = stored_jpeg(displayed_bgr, orientation, quality)
    return with_exif_orientation(data, orientation) if orientation != 1 else data


def draw_face(canvas: np.ndarray, cx: int, cy: int, side: int, seed: int, angle: float = 0.0) -> None:
    """Draw a recognisable, textured face centred at (cx, cy) whose box side is ``side`` pixels.

    Each seed gives a different skin tone, hair and eye colour, so faces differ for hashing and tagging.
    """
    rng = np.random.default_rng(seed)
    skin = tuple(int(v) for v in rng.integers(120, 230, 3))
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    eye = tuple(int(v) for v in rng.integers(20, 160, 3))
    half = side // 2
    layer = np.zeros((side * 2, side * 2, 3), np.uint8)
    mask = np.zeros((side * 2, side * 2), np.uint8)
    c = side
    cv2.ellipse(layer, (c, c - half // 3), (int(half * 1.05), int(half * 1.1)), 0, 180, 360, hair, -1)
    cv2.ellipse(layer, (c, c), (int(half * 0.82), half), 0, 0, 360, skin, -1)
    for dx in (-1, 1):
        ex = c + dx * half // 3
        cv2.ellipse(layer, (ex, c - half // 5), (half // 6, half // 10), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(layer, (ex, c - half // 5), max(2, half // 14), eye, -1)
        cv2.line(layer, (ex - half // 6, c - half // 3), (ex + half // 6, c - half // 3), hair, max(1, side // 40))
    cv2.line(
        layer, (c, c - half // 8), (c - half // 12, c + half // 5), tuple(v - 40 for v in skin), max(1, side // 60)
    )
    cv2.ellipse(layer, (c, c + half // 2), (half // 3, half // 8), 0, 0, 180, (60, 40, 160), max(2, side // 40))
    noise = rng.integers(-12, 13, layer.shape, dtype=np.int16)
    layer = np.clip(layer.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    cv2.ellipse(mask, (c, c), (int(half * 1.05), int(half * 1.12)), 0, 0, 360, 255, -1)
    if angle:
        matrix = cv2.getRotationMatrix2D((c, c), angle, 1.0)
        layer = cv2.warpAffine(layer, matrix, (side * 2, side * 2))
        mask = cv2.warpAffine(mask, matrix, (side * 2, side * 2))
    _paste(canvas, layer, mask, cx - c, cy - c)


def paste_portrait(canvas: np.ndarray, portrait: np.ndarray, cx: int, cy: int, side: int, angle: float = 0.0) -> None:
    """Paste a square portrait (face filling it) scaled to ``side`` and rotated, centred at (cx, cy)."""
    scaled = cv2.resize(
        portrait, (side, side), interpolation=cv2.INTER_AREA if side < portrait.shape[0] else cv2.INTER_CUBIC
    )
    mask = np.full((side, side), 255, np.uint8)
    if angle:
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        scaled = cv2.warpAffine(scaled, matrix, (side, side), borderMode=cv2.BORDER_REFLECT)
    _paste(canvas, scaled, mask, cx - side // 2, cy - side // 2)


def _paste(canvas: np.ndarray, layer: np.ndarray, mask: np.ndarray, left: int, top: int) -> None:
    height, width = canvas.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + layer.shape[1], width), min(top + layer.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return
    sub_layer = layer[y0 - top : y1 - top, x0 - left : x1 - left]
    sub_mask = mask[y0 - top : y1 - top, x0 - left : x1 - left] > 0
    canvas[y0:y1, x0:x1][sub_mask] = sub_layer[sub_mask]


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth, textured background so photos compress like photos rather than flat colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (max(2, height // 240), max(2, width // 240), 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-6, 7, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
