"""A PhotoPrism library whose named person has faces of two real people (the demo's public-domain portraits)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from synthlib.drawing import background, draw_face, paste_portrait
from synthlib.photoprism import RESOURCES, Face, LibraryBuilder, Photo, sqlite_engine

PORTRAITS = RESOURCES / "demo" / "portraits"


def relit(image: np.ndarray, gain: float, offset: float, tint: tuple[float, float, float]) -> np.ndarray:
    """The image under other lighting: brighter or darker, more or less contrast, a colour cast."""
    scaled = image.astype(np.float32) * gain * np.array(tint, np.float32) + offset
    return np.clip(scaled, 0, 255).astype(np.uint8)


def build_two_person_library(
    root: Path,
    n_person: int = 12,
    n_other: int = 5,
    seed: int = 5,
    width: int = 1600,
    height: int = 1200,
    photoprism_embeddings: bool = False,
) -> dict[str, str]:
    """A PhotoPrism library (SQLite + originals) whose subject "Grace Hopper" has faces of two real people.

    ``n_person`` photos show Grace Hopper and ``n_other`` show Eileen Collins, all named Grace Hopper (as
    PhotoPrism's clustering sometimes names a look-alike), each portrait pasted at a different size,
    angle, lighting and place, with EXIF orientations. Returns marker_uid -> the portrait truly shown.

    With ``photoprism_embeddings`` each marker also gets a 512-d embeddings_json and a face_dist as
    PhotoPrism's clustering would leave them when it mistook Eileen Collins for Grace Hopper: every
    embedding, hers too, close to one cluster centre (made-up vectors, not FaceNet's).
    """
    portraits = {name: cv2.imread(str(PORTRAITS / f"{name}.jpg")) for name in ("grace_hopper", "eileen_collins")}
    lib = LibraryBuilder(seed=seed)
    subject = lib.add_subject("Grace Hopper")
    lib.add_subject("Eileen Collins")
    rng = np.random.default_rng(seed)
    truth: dict[str, str] = {}
    people = ["grace_hopper"] * n_person + ["eileen_collins"] * n_other
    order = rng.permutation(len(people))
    for index, pick in enumerate(order):
        person = people[int(pick)]
        side = int(rng.integers(height // 6, height // 3))
        cx = int(rng.integers(side, width - side))
        cy = int(rng.integers(side, height - side))
        canvas = background(width, height, seed=seed * 100 + index)
        tint = tuple(float(v) for v in rng.uniform(0.85, 1.15, 3))
        portrait = relit(portraits[person], float(rng.uniform(0.7, 1.25)), float(rng.uniform(-25, 25)), tint)  # type: ignore[arg-type]
        paste_portrait(canvas, portrait, cx, cy, side, angle=float(rng.uniform(-12, 12)))
        photo = Photo(
            file_name=f"{2022 + index % 3}/IMG_{index:04d}.jpg",
            width=width,
            height=height,
            orientation=index % 8 + 1,
            taken_at=datetime(2022 + index % 3, 1 + index % 12, 1 + index % 28, 12, tzinfo=UTC),
        )
        face = Face((cx - side / 2) / width, (cy - side / 2) / height, side / width, side / height, subject=subject)
        face.score = int(rng.integers(60, 100))
        if photoprism_embeddings:
            centre = np.random.default_rng(seed + 1000).normal(0, 1, 512)
            vector = centre / np.linalg.norm(centre) + rng.normal(0, 0.25 / np.sqrt(512), 512)
            face.embedding = [float(v) for v in vector / np.linalg.norm(vector)]
            face.face_dist = 0.3
        photo.faces.append(face)
        lib.add_photo(photo)
        photo.file_hash = lib.write_photo(root / "originals" / photo.file_name, canvas, photo.orientation)
        truth[face.uid] = person
    lib.write_database(sqlite_engine(root / "storage" / "index.db"))
    (root / "storage" / "sidecar").mkdir(parents=True, exist_ok=True)
    return truth


def build_group_library(
    root: Path,
    n_group: int = 12,
    n_alone: int = 4,
    seed: int = 8,
    width: int = 1600,
    height: int = 1200,
) -> dict[str, list[str]]:
    """A PhotoPrism library of "Grace Hopper" (the demo portrait) mostly in company: group photos.

    ``n_group`` photos show her with 1 to 3 other people (drawn faces, unnamed markers) at several
    distances: right beside her (their heads in her crop), a little further, across the photo (outside
    it); ``n_alone`` photos show her alone. Returns {"group": her marker UIDs in group photos, "alone":
    the others, "others": every other person's marker UID}.
    """
    portrait = cv2.imread(str(PORTRAITS / "grace_hopper.jpg"))
    lib = LibraryBuilder(seed=seed)
    subject = lib.add_subject("Grace Hopper")
    rng = np.random.default_rng(seed)
    found: dict[str, list[str]] = {"group": [], "alone": [], "others": []}
    # Distances between face centres, in her face's sides: beside her, near, across the room.
    distances = (1.05, 1.2, 1.45, 2.0, 3.5)
    for index in range(n_group + n_alone):
        canvas = background(width, height, seed=seed * 100 + index)
        side = int(rng.integers(height // 6, height // 4))
        cx = int(rng.integers(width // 3, 2 * width // 3))
        cy = int(rng.integers(height // 3, 2 * height // 3))
        tint = tuple(float(v) for v in rng.uniform(0.9, 1.1, 3))
        paste_portrait(
            canvas,
            relit(portrait, float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15)), tint),
            cx,
            cy,
            side,  # type: ignore[arg-type]
        )
        photo = Photo(
            file_name=f"{2020 + index % 4}/GRP_{index:04d}.jpg",
            width=width,
            height=height,
            orientation=1,
            taken_at=datetime(2020 + index % 4, 1 + index % 12, 1 + index % 28, 15, tzinfo=UTC),
        )
        face = Face((cx - side / 2) / width, (cy - side / 2) / height, side / width, side / height, subject=subject)
        face.score = 90
        photo.faces.append(face)
        if index < n_group:  # 1, 2 or 3 others
            count = 1 + index % 3
            for number in range(count):  # on alternating sides, at cycling distances
                other = int(side * rng.uniform(0.6, 1.0))
                distance = distances[(index + 2 * number) % len(distances)] * side
                direction = (-1) ** (index + number)
                ox = int(np.clip(cx + direction * distance, other // 2 + 2, width - other // 2 - 2))
                oy = int(np.clip(cy + rng.uniform(-0.3, 0.3) * side, other // 2 + 2, height - other // 2 - 2))
                draw_face(canvas, ox, oy, other, seed=seed * 1000 + index * 10 + number)
                neighbour = Face((ox - other / 2) / width, (oy - other / 2) / height, other / width, other / height)
                neighbour.score = 60
                photo.faces.append(neighbour)
        lib.add_photo(photo)  # gives the markers their UIDs
        found["group" if index < n_group else "alone"].append(face.uid)
        found["others"] += [other_face.uid for other_face in photo.faces[1:]]
        photo.file_hash = lib.write_photo(root / "originals" / photo.file_name, canvas, photo.orientation)
    lib.write_database(sqlite_engine(root / "storage" / "index.db"))
    (root / "storage" / "sidecar").mkdir(parents=True, exist_ok=True)
    return found
