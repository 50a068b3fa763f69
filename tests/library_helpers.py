"""Small PhotoPrism libraries for tests, built with likeness.synthlib on SQLite or the MariaDB server."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import MySQLdb
import sqlalchemy as sa
from likeness.synthlib import Face, LibraryBuilder, Photo, background, draw_face, sqlite_engine

MARIADB_HOST = os.environ.get("LIKENESS_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("LIKENESS_TEST_MARIADB_PORT", "3306"))


@dataclass
class SmallLibrary:
    """What a test needs to know about the library it built."""

    root: Path
    builder: LibraryBuilder
    person_uid: str = ""
    other_uid: str = ""
    faces: dict[str, Face] = field(default_factory=dict)  # label -> face
    photos: dict[str, Photo] = field(default_factory=dict)  # label -> photo

    @property
    def originals(self) -> Path:
        return self.root / "originals"

    @property
    def sidecar(self) -> Path:
        return self.root / "storage" / "sidecar"


def build_small_library(root: Path, n_photos: int = 4, write_files: bool = True) -> SmallLibrary:
    """A person ("Zoë O'Brien") with ``n_photos`` usable faces plus one of each PhotoPrism exclusion."""
    builder = LibraryBuilder(seed=1)
    library = SmallLibrary(root=root, builder=builder)
    library.person_uid = builder.add_subject("Zoë O'Brien", slug="zoe-o-brien")
    library.other_uid = builder.add_subject("Anna")
    builder.add_subject("Ana")
    for index in range(n_photos):
        face = Face(0.3, 0.25, 0.2, 0.2 * 4 / 3, subject=library.person_uid, subj_src="manual", score=80)
        bystander = Face(0.65, 0.3, 0.15, 0.2, subject="" if index % 2 else library.other_uid)
        photo = Photo(
            file_name=f"2023/0{index + 1}/IMG_{index}.jpg",
            width=800,
            height=600,
            faces=[face, bystander],
            orientation=[1, 6, 3, 8][index % 4],
            taken_at=datetime(2023, index + 1, 10, 12, 0, tzinfo=UTC),
        )
        library.faces[f"face{index}"] = face
        library.photos[f"photo{index}"] = photo
    specials = {
        "invalid": Photo("2022/01/invalid.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25, invalid=True)]),
        "archived": Photo("2022/02/archived.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25)], archived=True),
        "missing": Photo("2022/03/missing.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25)], file_missing_flag=True),
        "digits": Photo("2019", 800, 600, [Face(0.4, 0.3, 0.2, 0.25)]),  # SQLite stores '2019' as a number
        "sidecar": Photo("2021/05/IMG_1.CR2.jpg", 800, 600, [Face(0.2, 0.2, 0.2, 0.25)], file_root="sidecar"),
    }
    for label, photo in specials.items():
        photo.faces[0].subject = library.person_uid
        library.faces[label] = photo.faces[0]
        library.photos[label] = photo
    for photo in library.photos.values():
        builder.add_photo(photo)
    if write_files:
        for photo in library.photos.values():
            write_photo_file(library, photo)
    return library


def write_photo_file(library: SmallLibrary, photo: Photo, seed: int = 0) -> None:
    """Draw the photo's faces at their marker boxes and write it with its EXIF orientation."""
    canvas = background(photo.width, photo.height, seed=hash(photo.file_name) % 1000 + seed)
    for number, face in enumerate(photo.faces):
        side = int(min(face.w * photo.width, face.h * photo.height))
        cx = int((face.x + face.w / 2) * photo.width)
        cy = int((face.y + face.h / 2) * photo.height)
        draw_face(canvas, cx, cy, side, seed=number + seed)
    root = library.sidecar if photo.file_root == "sidecar" else library.originals
    photo.file_hash = library.builder.write_photo(root / photo.file_name, canvas, photo.orientation)


def write_sqlite(library: SmallLibrary) -> Path:
    path = library.root / "storage" / "index.db"
    if path.exists():
        path.unlink()
    engine = sqlite_engine(path)
    library.builder.write_database(engine)
    engine.dispose()
    return path


class MariaDBDatabase:
    """A throwaway database on the MariaDB server (root, empty password, as CI has it)."""

    def __init__(self) -> None:
        self.name = f"likeness_test_{uuid.uuid4().hex[:10]}"
        self.admin = MySQLdb.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="")
        self.admin.cursor().execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@{MARIADB_HOST}:{MARIADB_PORT}/{self.name}"

    def writable_engine(self) -> sa.Engine:
        return sa.create_engine(self.url + "?charset=utf8mb4")

    def checksums(self) -> dict[str, int]:
        cursor = self.admin.cursor()
        cursor.execute(
            f"CHECKSUM TABLE `{self.name}`.photos, `{self.name}`.files, `{self.name}`.markers,"
            f" `{self.name}`.subjects, `{self.name}`.faces"
        )
        return {row[0]: row[1] for row in cursor.fetchall()}

    def drop(self) -> None:
        self.admin.cursor().execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self.admin.close()
