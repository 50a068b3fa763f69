#!/usr/bin/env python3
"""Build the offline demo PhotoPrism library, deterministically, into resources/demo/library/.

    python resources/demo/build_demo.py [OUT_DIR]

What it holds (all of it made from the two public-domain portraits in resources/demo/portraits/ and
faces drawn with OpenCV):
- storage/index.db: PhotoPrism's real SQLite schema with subjects, photos, files and markers;
- originals/: 40 JPEG photos of two named people (Grace Hopper, Eileen Collins) and unnamed people,
  with EXIF orientations 1 to 8, so decoding must rotate them to find the faces;
- a RAW original (originals/2021/05/IMG_4410.CR2) whose face marker sits on its sidecar JPEG
  (storage/sidecar/2021/05/IMG_4410.CR2.jpg, root 'sidecar'), as PhotoPrism does for RAW and HEIC;
- the cases likeness must handle: a marker the user rejected (marker_invalid), an archived photo, a
  file PhotoPrism marks missing, a file that is gone from disk, a truncated JPEG, a marker in review;
- a group photo (originals/2022/07/IMG_2207.jpg): Grace Hopper between two unnamed people, one so
  close that her crop holds half his head. select.crowded: exclude drops it as crowded; with the
  default, mask, it is kept with his head masked out of the loss (hatched in the report's sheet).
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
# The fake-library builder (resources/synthlib) and the likeness package's geometry it uses.
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "workflow")]

from synthlib.drawing import background, draw_face, paste_portrait  # noqa: E402
from synthlib.photoprism import Face, LibraryBuilder, Photo, sqlite_engine  # noqa: E402

WIDTH, HEIGHT = 2400, 1800


def _portraits() -> dict[str, np.ndarray]:
    return {name: cv2.imread(str(HERE / "portraits" / f"{name}.jpg")) for name in ("grace_hopper", "eileen_collins")}


def _place(builder_photo: Photo, canvas: np.ndarray, cx: int, cy: int, side: int, face: Face) -> None:
    """Record a face marker whose box is the square of ``side`` pixels centred at (cx, cy)."""
    height, width = canvas.shape[:2]
    face.x, face.y = (cx - side / 2) / width, (cy - side / 2) / height
    face.w, face.h = side / width, side / height
    builder_photo.faces.append(face)


def build(out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    originals, sidecar, storage = out / "originals", out / "storage" / "sidecar", out / "storage"
    portraits = _portraits()
    lib = LibraryBuilder(seed=2024)
    people = {
        "grace_hopper": lib.add_subject("Grace Hopper"),
        "eileen_collins": lib.add_subject("Eileen Collins"),
    }
    lib.add_subject("Zoë O'Brien")  # a name with an apostrophe and a non-ASCII letter, no photos
    rng = np.random.default_rng(11)
    start = datetime(2016, 3, 5, 10, 0, tzinfo=UTC)

    for index in range(40):
        orientation = index % 8 + 1
        landscape = index % 3 != 2
        width, height = (WIDTH, HEIGHT) if landscape else (HEIGHT, WIDTH)
        canvas = background(width, height, seed=index)
        taken = start + timedelta(days=int(index * 61 + rng.integers(0, 5)), hours=int(rng.integers(0, 9)))
        photo = Photo(
            file_name=f"{taken:%Y/%m}/IMG_{1000 + index}.jpg",
            width=width,
            height=height,
            orientation=orientation,
            taken_at=taken,
        )
        person = "grace_hopper" if index % 2 == 0 else "eileen_collins"
        side = int(rng.integers(260, 620))
        margin = side // 2 + 4
        # Faces near the edges and corners too: the crop must shift to stay inside the photo.
        cx = int(rng.integers(margin, width - margin)) if index % 5 else margin
        cy = int(rng.integers(margin, height - margin)) if index % 7 else height - margin
        paste_portrait(canvas, portraits[person], cx, cy, side, angle=float(rng.uniform(-8, 8)))
        _place(
            photo,
            canvas,
            cx,
            cy,
            side,
            Face(
                0,
                0,
                0,
                0,
                subject=people[person],
                subj_src="manual" if index % 4 == 0 else "",
                score=int(rng.integers(40, 100)),
                size=side // 4,
            ),
        )
        if index % 3 == 0:  # an unnamed bystander, far enough not to overlap the person
            other_side = int(rng.integers(150, 300))
            ox = other_side if cx > width / 2 else width - other_side
            oy = other_side if cy > height / 2 else height - other_side
            draw_face(canvas, ox, oy, other_side, seed=100 + index)
            _place(photo, canvas, ox, oy, other_side, Face(0, 0, 0, 0, score=50, size=other_side // 4))
        if index == 5:
            photo.faces[0].invalid = True  # the user rejected this face in PhotoPrism
        if index == 6:
            photo.archived = True
        if index == 7:
            photo.file_missing_flag = True
        if index == 9:
            photo.faces[0].review = True
            photo.faces[0].score = 25
        lib.add_photo(photo)
        path = originals / photo.file_name
        photo.file_hash = lib.write_photo(path, canvas, orientation)
        if index == 8:  # gone from disk although PhotoPrism still lists it
            path.unlink()
        if index == 10:  # cut off mid-transfer
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    # A RAW original: PhotoPrism detects faces on its sidecar JPEG, and the marker points there.
    canvas = background(WIDTH, HEIGHT, seed=99)
    raw = Photo(
        file_name="2021/05/IMG_4410.CR2.jpg",
        width=WIDTH,
        height=HEIGHT,
        file_root="sidecar",
        orientation=6,
        taken_at=datetime(2021, 5, 2, 9, 30, tzinfo=UTC),
        original_raw="IMG_4410.CR2",
    )
    paste_portrait(canvas, portraits["grace_hopper"], 1300, 800, 500)
    _place(raw, canvas, 1300, 800, 500, Face(0, 0, 0, 0, subject=people["grace_hopper"], subj_src="manual"))
    lib.add_photo(raw)
    raw.file_hash = lib.write_photo(sidecar / raw.file_name, canvas, raw.orientation)
    (originals / "2021/05").mkdir(parents=True, exist_ok=True)
    (originals / "2021/05/IMG_4410.CR2").write_bytes(b"II*\x00 demo RAW placeholder: PhotoPrism reads its sidecar JPEG")

    _group_photo(lib, originals, portraits["grace_hopper"], people["grace_hopper"])

    lib.write_database(sqlite_engine(storage / "index.db"))
    return out


def _group_photo(lib: LibraryBuilder, originals: Path, portrait: np.ndarray, subject: str) -> None:
    """Grace Hopper at a table with two others: a neighbour's head in her crop (module docstring)."""
    canvas = background(WIDTH, HEIGHT, seed=77)
    group = Photo(
        file_name="2022/07/IMG_2207.jpg",
        width=WIDTH,
        height=HEIGHT,
        orientation=1,
        taken_at=datetime(2022, 7, 16, 13, 5, tzinfo=UTC),
    )
    paste_portrait(canvas, portrait, 1200, 900, 420, angle=3.0)
    _place(group, canvas, 1200, 900, 420, Face(0, 0, 0, 0, subject=subject, subj_src="manual", score=90, size=105))
    # The neighbour beside her (half his head inside her crop) and a friend further off on the right.
    for cx, cy, side, seed in ((770, 1010, 300, 501), (1930, 700, 260, 502)):
        draw_face(canvas, cx, cy, side, seed=seed)
        _place(group, canvas, cx, cy, side, Face(0, 0, 0, 0, score=60, size=side // 4))
    lib.add_photo(group)
    group.file_hash = lib.write_photo(originals / group.file_name, canvas, group.orientation)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "library"
    built = build(target)
    print(f"demo library in {built}")
