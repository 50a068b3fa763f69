"""likeness.select.masks: other heads weigh 0, the person's face 1, checked pixel by pixel at image and 1/8 size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from likeness.sdscripts.images import has_alpha_mask
from likeness.select import masks

SIDE = 1024


def _inside(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Pixels (or latent cells) touching ``box``: any overlap with [x0, x1) x [y0, y1)."""
    rows, cols = np.indices(shape)
    x0, y0, x1, y1 = box
    return (cols + 1 > x0) & (cols < x1) & (rows + 1 > y0) & (rows < y1)


def _fully_inside(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    rows, cols = np.indices(shape)
    x0, y0, x1, y1 = box
    return (cols >= x0) & (cols + 1 <= x1) & (rows >= y0) & (rows + 1 <= y1)


def _scaled(box: tuple[float, ...], factor: float) -> tuple[float, float, float, float]:
    return tuple(v / factor for v in box)  # type: ignore[return-value]


# The person in the middle; neighbours at several distances and sizes (one partly outside the crop).
OWN = (380.0, 330.0, 640.0, 620.0)
OTHERS = [
    (700.0, 360.0, 940.0, 640.0),  # close beside the person, as large
    (60.0, 80.0, 180.0, 210.0),  # further back, smaller
    (900.0, 880.0, 1100.0, 1080.0),  # cut by the crop's corner
    (300.0, 700.0, 318.0, 720.0),  # a tiny face far in the background: still one latent pixel at least
]


@pytest.mark.parametrize("others", [OTHERS[:1], OTHERS[:2], OTHERS])
def test_other_heads_weigh_zero_and_the_face_one_at_image_and_latent_size(others) -> None:
    alpha = masks.alpha_channel(masks.loss_weights(SIDE, OWN, others))
    assert alpha.shape == (SIDE, SIDE) and alpha.dtype == np.uint8
    own = _inside(alpha.shape, OWN)
    for box in others:
        region = _inside(alpha.shape, box) & ~own
        assert region.any()
        assert (alpha[region] == 0).all(), box
        # and the grown head around it (hair above, ears beside) is 0 too
        head = _fully_inside(alpha.shape, masks.head_box(box)) & ~own
        assert (alpha[head] == 0).all()
    assert (alpha[own] == 255).all()

    latent = masks.latent_weights(alpha)
    assert latent.shape == (SIDE // 8, SIDE // 8)
    own_latent = _fully_inside(latent.shape, _scaled(OWN, 8))
    assert own_latent.any() and (latent[own_latent] == 1.0).all()
    for box in others:
        # every latent pixel the other face's box touches is 0 (the person's own box aside)
        region = _inside(latent.shape, _scaled(box, 8)) & ~_inside(latent.shape, _scaled(OWN, 8))
        assert region.any() and (latent[region] == 0.0).all(), box
    # far from every head the weight is 1
    assert latent[0, 127] == 1.0 and alpha[0, SIDE - 1] == 255


def test_the_edge_is_soft_over_a_few_latent_pixels() -> None:
    box = (400.0, 400.0, 600.0, 600.0)
    alpha = masks.alpha_channel(masks.loss_weights(SIDE, (0, 0, 0, 0), [box]))
    head = masks.head_box(box)
    row = alpha[500, int(head[2]) : int(head[2]) + 40].astype(int)
    feather = masks.FEATHER_LATENT_PIXELS * masks.LATENT_SCALE
    # rises monotonically from 0 at the head's edge to 255 one feather away, with steps in between
    assert row[0] < 20 and row[feather + 1] == 255
    assert (np.diff(row) >= 0).all()
    assert len(set(row[: feather + 1].tolist())) > feather // 2
    latent = masks.latent_weights(alpha)
    values = latent[500 // 8, int(head[2]) // 8 : int(head[2]) // 8 + 4]
    assert 0.0 < values[1] < 1.0  # the area resize keeps a graded edge, not a step


def test_head_growth_is_documented_and_at_least_a_latent_pixel() -> None:
    assert masks.head_box((100.0, 100.0, 200.0, 220.0)) == pytest.approx((65.0, 28.0, 235.0, 250.0))
    assert masks.head_box((100.0, 100.0, 110.0, 110.0)) == (92.0, 92.0, 118.0, 118.0)


def test_masked_share_and_a_crop_with_nothing_to_mask() -> None:
    assert masks.crop_mask(masks.CropFrame(0, 0, 1000, 500), (400, 400, 600, 600), []) is None
    # a neighbour whose head stays out of the crop: nothing to mask
    frame = masks.CropFrame(1000, 1000, 1000, 500)
    assert masks.crop_mask(frame, (1400, 1400, 1600, 1600), [(100, 100, 300, 300)]) is None
    alpha = masks.crop_mask(frame, (1400, 1400, 1600, 1600), [(1700, 1400, 1900, 1600)])
    assert alpha is not None and alpha.shape == (500, 500)
    # photo pixels halve in a 1000 -> 500 crop: the neighbour lands at x 350..450 of the crop
    assert (alpha[200:300, 350:450] == 0).all() and (alpha[200:300, 200:300] == 255).all()
    share = masks.masked_share(alpha)
    assert share == pytest.approx(1 - alpha.mean() / 255)
    assert 0.04 < share < 0.2


def test_masked_png_keeps_the_pixels_and_carries_the_mask(tmp_path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    crop = tmp_path / "crop.jpg"
    cv2.imwrite(str(crop), pixels)
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[:16, :16] = 0
    out = tmp_path / "face.png"
    out.write_bytes(masks.masked_png(str(crop), alpha))
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.shape == (64, 64, 4)
    assert np.array_equal(back[:, :, 3], alpha)
    assert np.array_equal(back[:, :, :3], cv2.imread(str(crop)))
    assert has_alpha_mask(out) and not has_alpha_mask(crop)
    opaque = tmp_path / "opaque.png"
    cv2.imwrite(str(opaque), pixels)
    assert not has_alpha_mask(opaque)
