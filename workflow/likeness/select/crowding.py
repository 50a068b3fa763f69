"""How much of a face's crop other faces cover (reason "crowded" and the score's crowding term)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

from likeness import geometry

# A neighbouring marker overlapping the face by at least this IoU is the same face marked twice.
SAME_FACE_IOU = 0.5

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels


def marker_rect(x: float, y: float, w: float, h: float, width: int, height: int) -> Rect | None:
    """PhotoPrism's pixel rectangle of a neighbour marker (likeness.geometry); None when it is unusable."""
    try:
        return tuple(geometry.marker_rect(x, y, w, h, width, height).as_list())  # type: ignore[return-value]
    except geometry.GeometryError:
        return None


def intersect(a: Rect, b: Rect) -> Rect | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def area(rect: Rect) -> int:
    return max(0, rect[2] - rect[0]) * max(0, rect[3] - rect[1])


def iou(a: Rect, b: Rect) -> float:
    overlap = intersect(a, b)
    if overlap is None:
        return 0.0
    union = area(a) + area(b) - area(overlap)
    return area(overlap) / union if union else 0.0


def union_area(rects: Sequence[Rect]) -> int:
    """Exact area covered by overlapping rectangles (coordinate compression; faces per file are few)."""
    if not rects:
        return 0
    xs = sorted({r[0] for r in rects} | {r[2] for r in rects})
    total = 0
    for left, right in itertools.pairwise(xs):
        spans = sorted((r[1], r[3]) for r in rects if r[0] <= left and r[2] >= right)
        covered, run_start, run_end = 0, None, None
        for top, bottom in spans:
            if run_end is None or top > run_end:
                if run_end is not None:
                    covered += run_end - run_start
                run_start, run_end = top, bottom
            else:
                run_end = max(run_end, bottom)
        if run_end is not None:
            covered += run_end - run_start
        total += covered * (right - left)
    return total


def other_faces(
    face_uid: str, face_box: Rect, photo_size: tuple[int, int], neighbours: Iterable[Mapping[str, str]]
) -> list[Rect]:
    """Every other face marker of the file, in photo pixels, wherever it is (the face itself excluded).

    A neighbour that overlaps this face with IoU >= SAME_FACE_IOU is the same face marked twice
    (for instance a manual marker over a detected one) and does not count as another face.
    """
    width, height = photo_size
    found: list[Rect] = []
    for row in neighbours:
        if row["marker_uid"] == face_uid:
            continue
        try:
            rect = marker_rect(float(row["x"]), float(row["y"]), float(row["w"]), float(row["h"]), width, height)
        except ValueError:  # an empty or non-numeric cell
            continue
        if rect is None or iou(rect, face_box) >= SAME_FACE_IOU:
            continue
        found.append(rect)
    return found


def share_of_crop(others: Sequence[Rect], crop_box: Sequence[int]) -> float:
    """Share of the square crop that the rectangles ``others`` cover (their union)."""
    left, top, side = int(crop_box[0]), int(crop_box[1]), int(crop_box[2])
    crop_rect: Rect = (left, top, left + side, top + side)
    covered = [inside for inside in (intersect(rect, crop_rect) for rect in others) if inside is not None]
    return union_area(covered) / float(side * side) if side > 0 else 0.0


def other_face_share(
    face_uid: str,
    face_box: Rect,
    crop_box: Sequence[int],
    photo_size: tuple[int, int],
    neighbours: Iterable[Mapping[str, str]],
) -> float:
    """Share of the square crop covered by other faces of the same file (``other_faces``)."""
    return share_of_crop(other_faces(face_uid, face_box, photo_size, neighbours), crop_box)
