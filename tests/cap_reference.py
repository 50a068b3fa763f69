"""An independent implementation of sd-scripts' WD14 preprocessing rules, for comparison in tests.

Written from the rules, not from likeness.caption.preprocess: floating-point maths and explicit loops
where the module uses fixed-point arithmetic, np.pad and OpenCV. Results agree within 1 grey level (rounding).
"""

from __future__ import annotations

import math

import numpy as np


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 -> RGB uint8 with transparency over white, rounded to nearest."""
    if rgba.shape[2] == 3:
        return rgba.copy()
    colour = rgba[:, :, :3].astype(np.float64)
    alpha = rgba[:, :, 3:4].astype(np.float64) / 255.0
    return np.floor(colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


def centred_on_white_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = max(height, width)
    canvas = np.full((side, side, image.shape[2]), 255, dtype=image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def area_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Row i: the share of each source pixel inside output pixel i's footprint."""
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size))
    for out_index in range(out_size):
        start, end = out_index * scale, (out_index + 1) * scale
        for source in range(math.floor(start), min(math.ceil(end), in_size)):
            overlap = min(end, source + 1) - max(start, source)
            if overlap > 0:
                matrix[out_index, source] = overlap / scale
    return matrix


def area_resize(image: np.ndarray, size: int) -> np.ndarray:
    rows = area_matrix(image.shape[0], size)
    cols = area_matrix(image.shape[1], size)
    tall = np.einsum("ij,jkc->ikc", rows, image.astype(np.float64))
    result = np.einsum("ikc,lk->ilc", tall, cols)
    return np.clip(np.floor(result + 0.5), 0, 255).astype(np.uint8)


def lanczos_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's Lanczos (a=3) weights for enlarging, normalised per output pixel."""
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size))
    for out_index in range(out_size):
        centre = (out_index + 0.5) * scale
        for source in range(in_size):
            distance = source + 0.5 - centre
            if -3.0 <= distance < 3.0:
                matrix[out_index, source] = np.sinc(distance) * np.sinc(distance / 3.0)
        matrix[out_index] /= matrix[out_index].sum()
    return matrix


def lanczos_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Horizontal pass, rounded to 8 bits, then vertical pass (Pillow's order)."""
    wide = np.einsum("hwc,ow->hoc", image.astype(np.float64), lanczos_matrix(image.shape[1], size))
    wide = np.clip(np.floor(wide + 0.5), 0, 255)
    tall = np.einsum("hwc,oh->owc", wide, lanczos_matrix(image.shape[0], size))
    return np.clip(np.floor(tall + 0.5), 0, 255).astype(np.uint8)


def reference_tensor(rgb_or_rgba: np.ndarray, size: int = 448) -> np.ndarray:
    """Decoded RGB/RGBA/gray pixels -> float32 BGR [size, size, 3] following the rules."""
    image = rgb_or_rgba
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    if image.shape[2] == 2:  # gray + alpha
        image = np.concatenate([np.repeat(image[:, :, :1], 3, axis=2), image[:, :, 1:]], axis=2)
    rgb = composite_on_white(image)
    bgr = rgb[:, :, ::-1]
    square = centred_on_white_square(bgr)
    resized = area_resize(square, size) if square.shape[0] >= size else lanczos_resize(square, size)
    return resized.astype(np.float32)
