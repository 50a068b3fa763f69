"""Per-face image measurements: sharpness, exposure and a perceptual hash of one crop.

The crop stage calls :func:`measure` once, right after it writes a crop, and stores the result in the
crop's JSON record; the measurements therefore stay cached with the crop and are recomputed only when
the crop itself is rewritten. Selection (``likeness.select``) filters and ranks on them.

Every number is made comparable across faces of different sizes:

* sharpness and exposure look at the face box only (background blur from a shallow depth of field is
  wanted, not a defect), resampled to a fixed side of :data:`FACE_SIDE` pixels, so a 90-pixel face and
  a 900-pixel face are judged at the same scale;
* the perceptual hash looks at the whole crop, because near-duplicates (burst shots, re-saved copies,
  the same photo imported twice) repeat the whole framing, not only the face.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# Side, in pixels, that the face region is resampled to before sharpness and exposure are measured.
# 256 keeps the skin texture, eyelashes and hair strands a sharp face shows, and it costs well under
# a millisecond. The ``select.min_sharpness`` default is calibrated at this scale: change both together.
FACE_SIDE = 256

# Grey levels counted as clipped: at or below DARK_CLIP the shadows are crushed to black, at or above
# BRIGHT_CLIP the highlights are blown out. A few levels of margin absorb JPEG ringing around 0 and 255.
DARK_CLIP = 5
BRIGHT_CLIP = 250

# pHash geometry: the crop is reduced to 32 x 32 grey levels, and the lowest 8 x 8 DCT frequencies give
# 64 bits, one per coefficient (above or below their median).
PHASH_REDUCED_SIDE = 32
PHASH_BITS_SIDE = 8


def measure(crop_bgr: np.ndarray, face_box: tuple[int, int, int, int]) -> dict[str, Any]:
    """Measure one crop; ``face_box`` = (x0, y0, x1, y1) of the face in crop pixels.

    Returns a JSON-serialisable dict:

    * ``sharpness``: variance of the Laplacian of the grey face region resampled to FACE_SIDE pixels
      (higher is sharper; a blurred face scores a fraction of the same face in focus);
    * ``brightness``: mean grey level (0-255) of the face region;
    * ``contrast``: standard deviation of those grey levels;
    * ``clipped_dark`` / ``clipped_bright``: share (0-1) of face pixels at or below DARK_CLIP, at or
      above BRIGHT_CLIP;
    * ``phash``: 64-bit DCT perceptual hash of the whole crop, 16 lowercase hex characters;
    * ``face_side_px``: side of the face box inside the crop, in crop pixels (its longer side).

    Raises ValueError (one readable line) when the image is not an 8-bit picture or the face box does
    not overlap it; the crop stage turns that into an excluded record.
    """
    grey = _to_grey(crop_bgr)
    x0, y0, x1, y1 = _clamped_box(face_box, width=grey.shape[1], height=grey.shape[0])
    face = grey[y0:y1, x0:x1]
    face_fixed = _resample_to_side(face, FACE_SIDE)
    return {
        "sharpness": round(laplacian_variance(face_fixed), 3),
        "brightness": round(float(face.mean()), 3),
        "contrast": round(float(face.std()), 3),
        "clipped_dark": round(float(np.count_nonzero(face <= DARK_CLIP)) / face.size, 5),
        "clipped_bright": round(float(np.count_nonzero(face >= BRIGHT_CLIP)) / face.size, 5),
        "phash": phash_hex(grey),
        "face_side_px": int(max(x1 - x0, y1 - y0)),
    }


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian: the classic focus measure (edges and texture raise it)."""
    laplacian = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    return float(laplacian.var())


def phash_hex(image: np.ndarray) -> str:
    """DCT perceptual hash (64 bits, 16 hex characters) of a grey or BGR image.

    The image is reduced to 32 x 32 grey levels, transformed with a 2-D DCT, and each of the 8 x 8
    lowest frequencies becomes one bit: 1 when the coefficient lies above the median of the 63 AC
    coefficients (the DC term, the mean brightness, would only shift the median). Bits are read row by
    row, the first one the most significant. Re-compression, resizing and small shifts change few bits.
    """
    grey = _to_grey(image)
    reduced = cv2.resize(grey, (PHASH_REDUCED_SIDE, PHASH_REDUCED_SIDE), interpolation=cv2.INTER_AREA)
    frequencies = cv2.dct(reduced.astype(np.float32))[:PHASH_BITS_SIDE, :PHASH_BITS_SIDE].flatten()
    median = float(np.median(frequencies[1:]))
    value = 0
    for bit in frequencies > median:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming_distance(hash_a: str, hash_b: str) -> int:
    """Number of differing bits between two hex hashes."""
    return (int(hash_a, 16) ^ int(hash_b, 16)).bit_count()


def _to_grey(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("crop is not an 8-bit image")
    if image.size == 0:
        raise ValueError("crop is empty")
    if image.ndim == 2:
        grey = image
    elif image.ndim == 3 and image.shape[2] == 3:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        grey = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"crop has an unsupported shape {image.shape}")
    return grey


def _clamped_box(
    face_box: tuple[int, int, int, int] | list[int], *, width: int, height: int
) -> tuple[int, int, int, int]:
    """Intersect the face box with the image; a box that ends up empty is an error."""
    try:
        x0, y0, x1, y1 = (round(float(v)) for v in face_box)
    except (TypeError, ValueError) as error:
        raise ValueError(f"face box {face_box!r} is not four numbers") from error
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"face box {list(face_box)} does not overlap the {width}x{height} crop")
    return x0, y0, x1, y1


def _resample_to_side(region: np.ndarray, side: int) -> np.ndarray:
    """Resize to side x side: area averaging when shrinking (no aliasing), bilinear when enlarging."""
    shrinking = region.shape[0] * region.shape[1] >= side * side
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(region, (side, side), interpolation=interpolation)
