"""PhotoPrism libraries (database + originals + sidecar folder) for the demo, tests and benchmarks.

The database gets PhotoPrism's own DDL (resources/photoprism_{sqlite,mariadb}.sql) and rows shaped the
way PhotoPrism writes them: 16-character UIDs, '' rather than NULL for empty values, oriented
``file_width``/``file_height``, RAW originals whose markers sit on a sidecar JPEG. Photos are written as
real JPEGs whose stored pixels carry an EXIF orientation, so decoding must apply it to find the face.
Deterministic: the same calls give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from synthlib.drawing import encode_jpeg

RESOURCES = Path(__file__).resolve().parents[1]
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int, width: int) -> str:
    digits = ""
    while value:
        value, rem = divmod(value, 36)
        digits = _BASE36[rem] + digits
    return digits.rjust(width, "0")[-width:]


@dataclass
class Face:
    """A face marker: box in fractions of the displayed image, PhotoPrism's semantics."""

    x: float
    y: float
    w: float
    h: float
    subject: str = ""  # subject UID ('' = unnamed)
    marker_src: str = "image"
    subj_src: str = ""  # '' = matched by clustering, 'manual' = named by the user
    review: bool = False
    invalid: bool = False
    score: int = 60
    size: int = 160
    uid: str = ""
    face_dist: float = -1.0  # PhotoPrism's distance to the face cluster (-1: not matched)
    embedding: list[float] | None = None  # PhotoPrism's embedding, stored as embeddings_json [[...]]


@dataclass
class Photo:
    file_name: str
    width: int  # displayed (oriented) size, as files.file_width/file_height hold it
    height: int
    faces: list[Face] = field(default_factory=list)
    taken_at: datetime = datetime(2023, 7, 14, 16, 2, 33, tzinfo=UTC)
    orientation: int = 1
    file_root: str = "/"
    archived: bool = False
    file_missing_flag: bool = False
    file_deleted: bool = False
    file_hash: str = ""
    photo_uid: str = ""
    file_uid: str = ""
    original_raw: str = ""  # when set, the photo is a RAW original and file_name its sidecar JPEG


class LibraryBuilder:
    """Collects subjects and photos, then writes the database rows (and, separately, the files)."""

    def __init__(self, seed: int = 7, epoch: datetime = datetime(2023, 1, 1, tzinfo=UTC)) -> None:
        self._random = random.Random(seed)
        self._epoch = int(epoch.timestamp())
        self._counter = 0
        self.subjects: list[dict] = []
        self.photos: list[Photo] = []

    def uid(self, letter: str) -> str:
        """A PhotoPrism-style UID: type letter, 6 base36 chars of Unix time, 9 random base36 chars."""
        self._counter += 1
        stamp = _base36(self._epoch + self._counter, 6)
        tail = "".join(self._random.choice(_BASE36) for _ in range(9))
        return f"{letter}{stamp}{tail}"

    def add_subject(self, name: str, slug: str | None = None, src: str = "manual", deleted: bool = False) -> str:
        uid = self.uid("j")
        slug = slug if slug is not None else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.subjects.append(
            {"subj_uid": uid, "subj_name": name, "subj_slug": slug, "subj_src": src, "deleted": deleted}
        )
        return uid

    def add_photo(self, photo: Photo) -> Photo:
        photo.photo_uid = photo.photo_uid or self.uid("p")
        photo.file_uid = photo.file_uid or self.uid("f")
        for face in photo.faces:
            face.uid = face.uid or self.uid("m")
        self.photos.append(photo)
        return photo

    # -- files -------------------------------------------------------------------------------------
    @staticmethod
    def write_photo(path: Path, displayed_bgr: np.ndarray, orientation: int = 1, quality: int = 90) -> str:
        """Write a JPEG for ``displayed_bgr``; returns its SHA-1 (PhotoPrism's file_hash)."""
        data = encode_jpeg(displayed_bgr, orientation, quality)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return hashlib.sha1(data).hexdigest()

    # -- database ----------------------------------------------------------------------------------
    def create_schema(self, engine: sa.Engine) -> None:
        dialect = "mariadb" if engine.dialect.name in ("mysql", "mariadb") else "sqlite"
        ddl = (RESOURCES / f"photoprism_{dialect}.sql").read_text()
        statements = [s.strip() for s in ddl.split(";") if s.strip()]
        with engine.begin() as conn:
            for statement in statements:
                body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
                if body.strip():
                    conn.exec_driver_sql(body)

    def write_database(self, engine: sa.Engine, create: bool = True) -> None:
        if create:
            self.create_schema(engine)
        now = "2024-01-01 00:00:00"
        # PhotoPrism keeps each subject's photo and file counts up to date; one file per photo here.
        photos_of: dict[str, int] = {}
        for photo in self.photos:
            for uid in {face.subject for face in photo.faces if face.subject}:
                photos_of[uid] = photos_of.get(uid, 0) + 1
        with engine.begin() as conn:
            for subject in self.subjects:
                conn.execute(
                    sa.text(
                        "INSERT INTO subjects (subj_uid, subj_type, subj_src, subj_slug, subj_name, subj_alias,"
                        " file_count, photo_count, thumb, thumb_src, created_at, updated_at, deleted_at)"
                        " VALUES (:uid, 'person', :src, :slug, :name, '', :count, :count, '', '', :now, :now, :deleted)"
                    ),
                    {
                        "count": photos_of.get(subject["subj_uid"], 0),
                        "uid": subject["subj_uid"],
                        "src": subject["subj_src"],
                        "slug": subject["subj_slug"],
                        "name": subject["subj_name"],
                        "now": now,
                        "deleted": now if subject["deleted"] else None,
                    },
                )
            for photo in self.photos:
                self._insert_photo(conn, photo, now)

    def _insert_photo(self, conn: sa.Connection, photo: Photo, now: str) -> None:
        taken = photo.taken_at.strftime("%Y-%m-%d %H:%M:%S")
        result = conn.execute(
            sa.text(
                "INSERT INTO photos (uuid, taken_at, taken_at_local, taken_src, photo_uid, photo_type, photo_title,"
                " photo_path, photo_name, original_name, photo_favorite, photo_private, photo_quality,"
                " photo_faces, photo_resolution, created_at, updated_at, deleted_at)"
                " VALUES ('', :taken, :taken, 'meta', :uid, 'image', '', :path, :name, '', 0, 0, 3, :faces, 24,"
                " :now, :now, :deleted)"
            ),
            {
                "taken": taken,
                "uid": photo.photo_uid,
                "path": str(Path(photo.file_name).parent),
                "name": Path(photo.file_name).stem,
                "faces": len(photo.faces),
                "now": now,
                "deleted": now if photo.archived else None,
            },
        )
        photo_id = result.lastrowid
        conn.execute(
            sa.text(
                "INSERT INTO files (photo_id, photo_uid, photo_taken_at, file_uid, file_name, file_root,"
                " original_name, file_hash, file_size, file_codec, file_type, media_type, file_mime,"
                " file_primary, file_sidecar, file_missing, file_portrait, file_video, file_width, file_height,"
                " file_orientation, file_orientation_src, file_aspect_ratio, file_error, mod_time,"
                " created_at, updated_at, deleted_at)"
                " VALUES (:pid, :puid, :taken, :fuid, :name, :root, :original, :hash, 0, 'jpeg', 'jpg', 'image',"
                " 'image/jpeg', 1, 0, :missing, :portrait, 0, :w, :h, :orientation, 'meta', :aspect, '', 0,"
                " :now, :now, :deleted)"
            ),
            {
                "pid": photo_id,
                "puid": photo.photo_uid,
                "taken": taken,
                "fuid": photo.file_uid,
                "name": photo.file_name,
                "root": photo.file_root,
                "original": photo.original_raw,
                "hash": photo.file_hash,
                "missing": int(photo.file_missing_flag),
                "portrait": int(photo.height > photo.width),
                "w": photo.width,
                "h": photo.height,
                "orientation": photo.orientation,
                "aspect": round(photo.width / photo.height, 2),
                "now": now,
                "deleted": now if photo.file_deleted else None,
            },
        )
        for face in photo.faces:
            thumb = "{}-{:03x}{:03x}{:03x}{:03x}".format(
                photo.file_hash or "0" * 40,
                *(max(0, min(4095, int(1000 * v))) for v in _finite((face.x, face.y, face.w, face.h))),
            )
            q = int(np.log(max(face.score, 1)) * face.size * _finite((face.w,))[0] / 2)
            conn.execute(
                sa.text(
                    "INSERT INTO markers (marker_uid, file_uid, marker_type, marker_src, marker_name, marker_review,"
                    " marker_invalid, subj_uid, subj_src, face_id, face_dist, embeddings_json, x, y, w, h, q, size,"
                    " score, thumb, matched_at, created_at, updated_at)"
                    " VALUES (:uid, :fuid, 'face', :msrc, '', :review, :invalid, :subj, :ssrc, '', :face_dist,"
                    " :embeddings, :x, :y, :w, :h, :q, :size, :score, :thumb, NULL, :now, :now)"
                ),
                {
                    "uid": face.uid,
                    "fuid": photo.file_uid,
                    "msrc": face.marker_src,
                    "review": int(face.review),
                    "invalid": int(face.invalid),
                    "subj": face.subject,
                    "ssrc": face.subj_src,
                    "x": face.x,
                    "y": face.y,
                    "w": face.w,
                    "h": face.h,
                    "q": q,
                    "size": face.size,
                    "score": face.score,
                    "thumb": thumb,
                    "now": now,
                    "face_dist": face.face_dist,
                    "embeddings": None
                    if face.embedding is None
                    else json.dumps([[round(float(v), 6) for v in face.embedding]]).encode(),
                },
            )


def _finite(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(v if np.isfinite(v) else 0.0 for v in values)


def sqlite_engine(path: Path) -> sa.Engine:
    """A writable engine for building a fixture database (likeness itself only ever opens it read-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(f"sqlite:///{path}")
