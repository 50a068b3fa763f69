"""Test helper: draw face-like crops with OpenCV so that quality and selection run on real pixels.

A drawn face has a textured skin ellipse, eyes with iris and pupil, brows, nose, mouth and hair strands,
on a background whose shapes depend on a seed: faces drawn with different seeds are different photos,
the same seed redrawn with a small shift or re-compressed is a burst shot or a re-saved copy.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def draw_face(canvas: np.ndarray, center: tuple[int, int], face_side: int, rng: np.random.Generator) -> Box:
    """Draw one face on ``canvas`` (in place); return its square box (x0, y0, x1, y1)."""
    cx, cy = center
    half = face_side // 2
    axes = (int(half * 0.8), half)
    skin = tuple(int(v) for v in rng.integers(120, 200, size=3))
    cv2.ellipse(canvas, (cx, cy), axes, 0, 0, 360, skin, -1, cv2.LINE_AA)
    _add_skin_texture(canvas, (cx, cy), axes, rng)
    eye_dy = int(half * 0.2)
    eye_dx = int(half * 0.35)
    eye_r = max(3, half // 7)
    for side in (-1, 1):
        eye = (cx + side * eye_dx, cy - eye_dy)
        cv2.ellipse(canvas, eye, (eye_r * 2, eye_r), 0, 0, 360, (240, 240, 240), -1, cv2.LINE_AA)
        cv2.circle(canvas, eye, eye_r, (60, 90, 40), -1, cv2.LINE_AA)
        cv2.circle(canvas, eye, max(1, eye_r // 2), (10, 10, 10), -1, cv2.LINE_AA)
        brow_y = eye[1] - eye_r * 2
        cv2.line(
            canvas,
            (eye[0] - eye_r * 2, brow_y),
            (eye[0] + eye_r * 2, brow_y - 2),
            (40, 30, 30),
            max(1, half // 25),
            cv2.LINE_AA,
        )
    nose_top = (cx, cy - eye_dy // 2)
    nose_tip = (cx - half // 12, cy + half // 4)
    cv2.line(canvas, nose_top, nose_tip, (90, 90, 110), max(1, half // 40), cv2.LINE_AA)
    cv2.ellipse(
        canvas,
        (cx, cy + half // 2),
        (half // 3, half // 8),
        0,
        0,
        180,
        (70, 60, 160),
        max(1, half // 20),
        cv2.LINE_AA,
    )
    for _ in range(60):
        x = int(cx + rng.integers(-axes[0], axes[0]))
        cv2.line(
            canvas,
            (x, cy - half),
            (x + int(rng.integers(-8, 9)), cy - half + int(half * 0.35)),
            (30, 30, 50),
            1,
            cv2.LINE_AA,
        )
    return (cx - half, cy - half, cx + half, cy + half)


def _add_skin_texture(
    canvas: np.ndarray, center: tuple[int, int], axes: tuple[int, int], rng: np.random.Generator
) -> None:
    """Fine pores and freckles: the detail that blur removes first."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.ellipse(mask, center, axes, 0, 0, 360, 255, -1)
    noise = rng.normal(0, 14, size=canvas.shape[:2]).astype(np.float32)
    textured = canvas.astype(np.float32) + noise[..., None]
    canvas[mask > 0] = np.clip(textured, 0, 255).astype(np.uint8)[mask > 0]


def draw_background(side: int, rng: np.random.Generator) -> np.ndarray:
    """A scene that differs per seed: coloured gradient, a few rectangles and circles."""
    top = rng.integers(30, 220, size=3)
    bottom = rng.integers(30, 220, size=3)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    canvas = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    canvas = np.ascontiguousarray(np.broadcast_to(canvas, (side, side, 3)))
    for _ in range(6):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x0, y0 = (int(v) for v in rng.integers(0, side, size=2))
        size = int(rng.integers(side // 8, side // 2))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x0, y0), (x0 + size, y0 + size), colour, -1)
        else:
            cv2.circle(canvas, (x0, y0), size // 2, colour, -1, cv2.LINE_AA)
    return canvas


def face_crop(side: int = 512, seed: int = 0, face_fraction: float = 0.4) -> tuple[np.ndarray, Box]:
    """A square crop with one centred face covering ``face_fraction`` of the side."""
    rng = np.random.default_rng(seed)
    canvas = draw_background(side, rng)
    box = draw_face(canvas, (side // 2, side // 2), int(side * face_fraction), rng)
    return canvas, box


def blurred(image: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def burst_shot(image: np.ndarray, index: int) -> np.ndarray:
    """A near-identical frame: shifted by a pixel or two, slightly brighter, JPEG re-compressed."""
    shift = np.float32([[1, 0, index % 3], [0, 1, (index * 2) % 3]])
    moved = cv2.warpAffine(image, shift, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
    brighter = cv2.convertScaleAbs(moved, alpha=1.0, beta=index * 2)
    ok, encoded = cv2.imencode(".jpg", brighter, [cv2.IMWRITE_JPEG_QUALITY, 85 - index])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def with_second_face(image: np.ndarray, seed: int = 99, face_side: int | None = None) -> np.ndarray:
    """Paint another, different face into the lower right part of the crop."""
    side = image.shape[0]
    other = image.copy()
    draw_face(other, (int(side * 0.82), int(side * 0.8)), face_side or side // 3, np.random.default_rng(seed))
    return other
