"""Loss masks for crowded crops (select.crowded: mask): other people's heads weigh 0 in the training loss.

sd-scripts v0.10.1 with ``masked_loss`` multiplies the per-pixel loss by a mask that it area-resizes to
the latent size, 1/8 of the image (library/custom_train_functions.py ``apply_masked_loss``); with
``alpha_mask`` on a subset the mask is the image's alpha channel (0 ignored, 255 trained). So:

* every other face marker of the photo (named or not, the markers the crowding share reads) is grown
  to the head it belongs to: a face marker runs from the brows to the chin, the hair and ears are
  outside it. Each side grows by ``HEAD_GROWTH_SIDE`` of the marker's width, the top by
  ``HEAD_GROWTH_UP`` of its height (hair above the forehead is the largest part of a head outside the
  face box) and the bottom by ``HEAD_GROWTH_DOWN`` (chin, beard, the neck's start). Each margin is at
  least ``LATENT_SCALE`` pixels, so that a small face in the background still blanks every latent
  pixel its box touches;
* inside the grown box the weight is 0; outside it rises linearly to 1 over ``FEATHER_LATENT_PIXELS``
  latent pixels (8 image pixels each), a soft edge the area resize keeps instead of a hard step;
* the person's own face box always weighs 1: where a neighbour's head overlaps it, the person wins.

The masked share is the loss weight the mask takes away, ``1 - mean(weight)``; above
select.max_masked_share too little of the image is left to learn from and the face stays excluded as
crowded. The mask is computed in the crop's pixels as the dataset image has them (``output_side``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from likeness.errors import LikenessError

LATENT_SCALE = 8  # SDXL's VAE: one latent pixel per 8 x 8 image pixels
HEAD_GROWTH_SIDE = 0.35
HEAD_GROWTH_UP = 0.6
HEAD_GROWTH_DOWN = 0.25
FEATHER_LATENT_PIXELS = 2

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (x1, y1 exclusive), in crop pixels


@dataclass(frozen=True)
class CropFrame:
    """Where the crop lies in the photo: its square (left, top, side) and the written side."""

    left: int
    top: int
    side: int
    output_side: int

    def to_crop(self, rect: Sequence[float]) -> Box:
        """A photo-pixel rectangle in the written crop's pixels (not clipped)."""
        scale = self.output_side / self.side
        x0, y0, x1, y1 = (float(v) for v in rect)
        return ((x0 - self.left) * scale, (y0 - self.top) * scale, (x1 - self.left) * scale, (y1 - self.top) * scale)


def head_box(face: Box) -> Box:
    """A face marker's box grown to the head around it (module docstring)."""
    x0, y0, x1, y1 = face
    width, height = x1 - x0, y1 - y0
    side = max(HEAD_GROWTH_SIDE * width, LATENT_SCALE)
    up = max(HEAD_GROWTH_UP * height, LATENT_SCALE)
    down = max(HEAD_GROWTH_DOWN * height, LATENT_SCALE)
    return (x0 - side, y0 - up, x1 + side, y1 + down)


def _distance_to_box(box: Box, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Euclidean distance from each pixel centre (``xs`` x ``ys``) to the box (0 inside)."""
    dx = np.maximum(np.maximum(box[0] - xs, 0.0), xs - box[2])
    dy = np.maximum(np.maximum(box[1] - ys, 0.0), ys - box[3])
    return np.hypot(dx[np.newaxis, :], dy[:, np.newaxis])


def loss_weights(side: int, own_face: Box, other_faces: Sequence[Box]) -> np.ndarray:
    """The mask of a ``side`` x ``side`` crop as float32 weights in [0, 1] (module docstring)."""
    weights = np.ones((side, side), dtype=np.float32)
    feather = float(FEATHER_LATENT_PIXELS * LATENT_SCALE)
    for face in other_faces:
        head = head_box(face)
        # Only the pixels within the feather of the head change: the rest of the crop stays 1.
        x0, y0 = max(0, int(np.floor(head[0] - feather))), max(0, int(np.floor(head[1] - feather)))
        x1, y1 = min(side, int(np.ceil(head[2] + feather))), min(side, int(np.ceil(head[3] + feather)))
        if x1 <= x0 or y1 <= y0:
            continue
        xs = np.arange(x0, x1, dtype=np.float64) + 0.5
        ys = np.arange(y0, y1, dtype=np.float64) + 0.5
        ramp = np.clip(_distance_to_box(head, xs, ys) / feather, 0.0, 1.0).astype(np.float32)
        np.minimum(weights[y0:y1, x0:x1], ramp, out=weights[y0:y1, x0:x1])
    ox0, oy0, ox1, oy1 = (max(0, round(v)) for v in own_face)
    weights[oy0:oy1, ox0:ox1] = 1.0
    return weights


def alpha_channel(weights: np.ndarray) -> np.ndarray:
    """The weights as sd-scripts reads an alpha channel: uint8, 0 = ignored, 255 = trained."""
    return np.rint(np.clip(weights, 0.0, 1.0) * 255.0).astype(np.uint8)


def masked_share(alpha: np.ndarray) -> float:
    """Share of the loss the mask removes: 1 - mean weight (alpha / 255)."""
    return float(1.0 - alpha.astype(np.float64).mean() / 255.0) if alpha.size else 0.0


def latent_weights(alpha: np.ndarray) -> np.ndarray:
    """The mask as sd-scripts applies it: alpha / 255 area-resized to 1/8 (torch ``interpolate(mode='area')``
    on a side divisible by 8 is the mean of each 8 x 8 block)."""
    height, width = alpha.shape
    rows, cols = height // LATENT_SCALE, width // LATENT_SCALE
    blocks = alpha[: rows * LATENT_SCALE, : cols * LATENT_SCALE].astype(np.float64) / 255.0
    return blocks.reshape(rows, LATENT_SCALE, cols, LATENT_SCALE).mean(axis=(1, 3))


def crop_mask(frame: CropFrame, own_face: Sequence[float], other_faces: Sequence[Sequence[float]]) -> np.ndarray | None:
    """The alpha mask of one crop (photo-pixel boxes in), or None when no other head reaches into the crop
    (a head just outside, whose soft edge alone would reach in, leaves the crop as it is)."""
    if not other_faces:
        return None
    alpha = alpha_channel(
        loss_weights(frame.output_side, frame.to_crop(own_face), [frame.to_crop(face) for face in other_faces])
    )
    # Only the soft edge of a head outside the crop reaching in: nothing of another person to mask.
    return alpha if int(alpha.min()) == 0 else None


def face_mask(record: Mapping[str, Any], other_faces: Sequence[Sequence[float]]) -> np.ndarray | None:
    """``crop_mask`` of a crop record (its crop_box, output_side and face_box)."""
    crop_box = [int(v) for v in record["crop_box"]]
    frame = CropFrame(crop_box[0], crop_box[1], crop_box[2], int(record.get("output_side") or crop_box[2]))
    return crop_mask(frame, [int(v) for v in record["face_box"]], other_faces)


class MaskedImageError(LikenessError):
    """A crop that cannot carry its mask (unreadable image)."""


# PNG's zlib level: 1 is about 3 times faster than OpenCV's default 3 for some 5 % more bytes.
PNG_COMPRESSION = 1


def masked_png(crop_path: str, alpha: np.ndarray) -> bytes:
    """The crop as an RGBA PNG whose alpha channel is the mask (what sd-scripts' ``alpha_mask`` reads).

    The colour pixels stay the crop's own (sd-scripts still feeds them to the model; only the loss is
    masked). Read without EXIF rotation, as sd-scripts' Pillow reads it.
    """
    pixels = cv2.imread(crop_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise MaskedImageError(f"crop image {crop_path} is not readable")
    height, width = pixels.shape[:2]
    if alpha.shape != (height, width):
        alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", np.dstack([pixels, alpha]), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise MaskedImageError(f"cannot encode the masked crop of {crop_path}")
    return encoded.tobytes()
