"""One test library written into each photo manager's schema: PhotoPrism (SQLite), Immich (PostgreSQL), digiKam.

The same photos, people and face boxes go into all three databases (likeness.synthlib_sources), so that
the crops of the same person's faces must be the same bytes whichever database they were exported from.
The library has all eight EXIF orientations, a face at each edge and corner, a photo bigger than Immich's
preview (its box must be scaled), a trashed photo, an archived one, a photo whose file is missing on
disk, a rejected face, other people and unnamed faces beside the person's, and a non-ASCII name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import sqlalchemy as sa
from library_helpers import SmallLibrary, write_sqlite
from likeness import geometry
from likeness.synthlib import Face, LibraryBuilder, Photo, background, draw_face, sqlite_engine
from likeness.synthlib_sources import DIGIKAM_VOLUME, IMMICH_UPLOAD, write_digikam, write_immich
from psycopg import sql

PG_HOST = os.environ.get("LIKENESS_TEST_PG_HOST", "/var/run/postgresql")  # the admin connection's socket
PG_TCP_HOST = os.environ.get("LIKENESS_TEST_PG_TCP_HOST", "127.0.0.1")  # likeness's own connection
PG_PORT = int(os.environ.get("LIKENESS_TEST_PG_PORT", "5432"))
PERSON = "Zoë O'Brien"
# Where each face sits: every edge and corner, one per EXIF orientation (fractions of the displayed photo).
EDGE_FACES = {
    1: ("left edge", (0.0, 0.35, 0.2, 0.2667)),
    2: ("right edge", (0.8, 0.3, 0.2, 0.2667)),
    3: ("top edge", (0.4, 0.0, 0.2, 0.2667)),
    4: ("bottom edge", (0.4, 0.7333, 0.2, 0.2667)),
    5: ("top-left corner", (0.02, 0.03, 0.18, 0.24)),
    6: ("bottom-right corner", (0.78, 0.7, 0.22, 0.3)),
    7: ("top-right corner", (0.75, 0.02, 0.2, 0.26)),
    8: ("bottom-left corner", (0.03, 0.7, 0.2, 0.28)),
}


@dataclass
class CrossLibrary(SmallLibrary):
    canvases: dict[str, np.ndarray] = field(default_factory=dict)  # photo label -> displayed pixels drawn

    def usable_labels(self) -> set[str]:
        """Faces of the person every source must list as usable (the missing file fails at the crop)."""
        return {label for label in self.faces if label.startswith(("edge", "big", "missing_file"))}


def build_cross_library(root: Path) -> CrossLibrary:
    builder = LibraryBuilder(seed=13)
    library = CrossLibrary(root=root, builder=builder)
    library.person_uid = builder.add_subject(PERSON, slug="zoe-o-brien")
    library.other_uid = builder.add_subject("Anna")
    builder.add_subject("Ana")
    for orientation, (_where, (x, y, w, h)) in EDGE_FACES.items():
        face = Face(x, y, w, h, subject=library.person_uid, subj_src="manual", marker_src="manual", score=100)
        bystander = Face(0.4, 0.35, 0.15, 0.2, subject=library.other_uid if orientation % 2 else "")
        photo = Photo(
            f"2023/0{orientation}/IMG_{orientation}.jpg",
            800 if orientation % 3 else 640,
            600 if orientation % 3 else 480,
            [face, bystander],
            orientation=orientation,
            taken_at=datetime(2023, orientation, 10, 12, 0, tzinfo=UTC),
        )
        library.faces[f"edge{orientation}"] = face
        library.photos[f"edge{orientation}"] = photo
    # Bigger than Immich's 1440 px preview: its box is stored in preview pixels and must be scaled back.
    # Dyadic fractions, so the box is whole, even pixels in every schema.
    big_face = Face(0.375, 0.25, 0.125, 0.1875, subject=library.person_uid, subj_src="manual", score=100)
    library.faces["big"] = big_face
    library.photos["big"] = Photo("2024/01/big.jpg", 2880, 1920, [big_face], orientation=6)
    specials = {
        "trashed": Photo("2022/04/trashed.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25)], file_deleted=True),
        "archived": Photo("2022/02/archived.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25)], archived=True),
        "rejected": Photo("2022/01/rejected.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25, invalid=True)]),
        "missing_file": Photo("2022/05/not_on_disk.jpg", 800, 600, [Face(0.3, 0.3, 0.2, 0.25)]),
    }
    for label, photo in specials.items():
        photo.faces[0].subject = library.person_uid
        photo.faces[0].subj_src = "manual"
        library.faces[label] = photo.faces[0]
        library.photos[label] = photo
    for photo in library.photos.values():
        builder.add_photo(photo)
    for label, photo in library.photos.items():
        if label != "missing_file":
            library.canvases[label] = _write_photo(library, photo, seed=len(library.canvases))
    return library


def _write_photo(library: CrossLibrary, photo: Photo, seed: int) -> np.ndarray:
    canvas = background(photo.width, photo.height, seed=100 + seed)
    for number, face in enumerate(photo.faces):
        box = geometry.marker_rect(face.x, face.y, face.w, face.h, photo.width, photo.height)
        side = min(box.width, box.height)
        draw_face(canvas, (box.x0 + box.x1) // 2, (box.y0 + box.y1) // 2, side, seed=seed * 10 + number)
    root = library.sidecar if photo.file_root == "sidecar" else library.originals
    photo.file_hash = library.builder.write_photo(root / photo.file_name, canvas, photo.orientation)
    return canvas


def write_digikam_sqlite(library: SmallLibrary) -> Path:
    path = library.root / "digikam" / "digikam4.db"
    if path.exists():
        path.unlink()
    engine = sqlite_engine(path)
    write_digikam(library.builder, engine)
    engine.dispose()
    return path


def immich_path_map(library: SmallLibrary) -> dict[str, str]:
    return {f"{IMMICH_UPLOAD}/library": str(library.originals), f"{IMMICH_UPLOAD}/sidecar": str(library.sidecar)}


def digikam_path_map(library: SmallLibrary) -> dict[str, str]:
    return {DIGIKAM_VOLUME: str(library.root)}


def source_configs(library: SmallLibrary, immich_url: str) -> dict[str, dict]:
    """config.yaml's ``source`` section for each manager, all pointing at the same photo files."""
    return {
        "photoprism": {
            "url": f"sqlite:///{library.root / 'storage' / 'index.db'}",
            "originals": str(library.originals),
            "sidecar": str(library.sidecar),
        },
        "immich": {"url": immich_url, "path_map": immich_path_map(library)},
        "digikam": {
            "url": f"sqlite:///{library.root / 'digikam' / 'digikam4.db'}",
            "path_map": digikam_path_map(library),
        },
    }


def file_digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


class PostgresDatabase:
    """A throwaway database on the PostgreSQL server, and a login role that may only read it.

    The tests administer through the Unix socket as the OS user (a superuser role of that name, which
    .ci/run creates); likeness connects over TCP as the reader, with a password from the environment.
    """

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.name = f"likeness_test_{suffix}"
        self.reader = f"lk_reader_{suffix}"
        self.password = f"pa$$ w0rd;-- {suffix}"
        self.admin = psycopg.connect(host=PG_HOST, port=PG_PORT, dbname="postgres", autocommit=True)
        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(self.reader), sql.Literal(self.password))
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg:///{self.name}?host={PG_HOST}&port={PG_PORT}"

    @property
    def url(self) -> str:
        """likeness's URL: the reader role, no password (it comes from the environment)."""
        return f"postgresql+psycopg://{self.reader}@{PG_TCP_HOST}:{PG_PORT}/{self.name}"

    def writable_engine(self) -> sa.Engine:
        return sa.create_engine(self.admin_url, poolclass=sa.pool.NullPool)

    def grant_read(self) -> None:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=self.name, autocommit=True) as conn:
            conn.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(self.reader))
            )

    def digests(self) -> dict[str, str]:
        """A digest of every row of every table: equal before and after means nothing was written."""
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=self.name) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            return {
                table: conn.execute(
                    sql.SQL(
                        "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                        " FROM {} t"
                    ).format(sql.Identifier(table))
                ).fetchone()[0]
                for table in sorted(tables)
            }

    def execute(self, statement: str, params: dict | None = None) -> None:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=self.name, autocommit=True) as conn:
            conn.execute(statement, params)

    def fetch(self, statement: str, params: dict | None = None) -> list[tuple]:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=self.name) as conn:
            return conn.execute(statement, params).fetchall()

    def drop(self) -> None:
        self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        self.admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.reader)))
        self.admin.close()


def write_immich_postgres(library: SmallLibrary, layout: str = "v3.2") -> PostgresDatabase:
    """Immich's database on the PostgreSQL server: 'v3.2' (the current layout) or 'v1.137' (up to v3.1)."""
    database = PostgresDatabase()
    engine = database.writable_engine()
    write_immich(library.builder, engine, layout)
    engine.dispose()
    database.grant_read()
    return database


def write_all(library: SmallLibrary) -> tuple[Path, PostgresDatabase, Path]:
    """The PhotoPrism SQLite file, the Immich PostgreSQL database and the digiKam SQLite file."""
    return write_sqlite(library), write_immich_postgres(library), write_digikam_sqlite(library)
