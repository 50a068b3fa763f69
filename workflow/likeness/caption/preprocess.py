"""WD14 preprocessing: decoded image bytes to the tagger's input tensor, as sd-scripts prepares it.

The rules follow sd-scripts' ``finetune/tag_images_by_wd14_tagger.py`` (v0.10.1) one by one, so that a
model behaves here as it does there: transparency composited on white, RGB to BGR, centred white
padding to a square, then area resizing when the square is at least the model's input size (the usual
case for face crops) and Pillow-style Lanczos when it must be enlarged, float32 in 0..255, NHWC. Pillow
is not a dependency, so its 8-bit Lanczos resampler is reproduced here (fixed-point, two passes).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

DEFAULT_INPUT_SIZE = 448
# Part of every probability cache key: bump it when preprocessing changes, so stored probabilities are
# recomputed.
PREPROCESS_VERSION = "sd-scripts-v0.10.1-wd14"


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode image bytes as stored (no EXIF rotation, alpha kept), like Pillow's ``Image.open``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        return None
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return image


def _to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def _div255_rounded(values: np.ndarray) -> np.ndarray:
    """Integer division by 255 rounded to nearest, as Pillow blends with a mask."""
    shifted = values + 128
    return ((shifted >> 8) + shifted) >> 8


def composite_on_white_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, gray+alpha, BGR, BGRA) as 8-bit BGR with transparency on white."""
    image = _to_8bit(image)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels in (2, 4):
        colour = image[:, :, :-1].astype(np.int32)
        alpha = image[:, :, -1:].astype(np.int32)
        blended = _div255_rounded(colour * alpha + 255 * (255 - alpha)).astype(np.uint8)
        image = blended
        channels -= 1
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels != 3:
        raise ValueError(f"unsupported number of channels: {channels}")
    return np.ascontiguousarray(image)


def pad_to_square_white(image: np.ndarray) -> np.ndarray:
    """Centre the image on a white square; an odd remainder goes to the right/bottom."""
    height, width = image.shape[:2]
    size = max(height, width)
    pad_x, pad_y = size - width, size - height
    left, top = pad_x // 2, pad_y // 2
    return np.pad(image, ((top, pad_y - top), (left, pad_x - left), (0, 0)), mode="constant", constant_values=255)


_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit resampling


def _lanczos3(x: np.ndarray) -> np.ndarray:
    inside = (x >= -3.0) & (x < 3.0)
    return np.where(inside, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def _pil_fixed_point_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, the source indices and fixed-point weights of Pillow's Lanczos filter."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 3.0 * filter_scale
    taps = math.ceil(support) * 2 + 1
    indices = np.zeros((out_size, taps), dtype=np.int64)
    weights = np.zeros((out_size, taps), dtype=np.int64)
    for out_x in range(out_size):
        centre = (out_x + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), in_size) - first
        offsets = np.arange(count)
        kernel = _lanczos3((offsets + first - centre + 0.5) / filter_scale)
        total = kernel.sum()
        if total != 0.0:
            kernel = kernel / total
        scaled = kernel * (1 << _PRECISION_BITS)
        weights[out_x, :count] = np.where(kernel < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5))
        indices[out_x, :count] = offsets + first
    return indices, weights


def _pil_resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    indices, weights = _pil_fixed_point_taps(image.shape[axis], out_size)
    source = np.moveaxis(image, axis, 0).astype(np.int64)
    accumulator = np.full((out_size, *source.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    extra_dims = (1,) * (source.ndim - 1)
    for tap in range(indices.shape[1]):
        accumulator += source[indices[:, tap]] * weights[:, tap].reshape(out_size, *extra_dims)
    result = np.clip(accumulator >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(result, 0, axis)


def pil_lanczos_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an 8-bit HxWxC image to size x size as Pillow's ``resize(..., LANCZOS)`` does."""
    horizontal = _pil_resample_axis(image, size, axis=1) if image.shape[1] != size else image
    return _pil_resample_axis(horizontal, size, axis=0) if image.shape[0] != size else horizontal


def preprocess(image: np.ndarray, input_size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """One decoded image as the tagger's HxWx3 float32 BGR input in 0..255."""
    square = pad_to_square_white(composite_on_white_bgr(image))
    if square.shape[0] >= input_size:
        resized = cv2.resize(square, (input_size, input_size), interpolation=cv2.INTER_AREA)
    else:
        resized = pil_lanczos_resize(square, input_size)
    return resized.astype(np.float32)
