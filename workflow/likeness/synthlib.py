"""Build PhotoPrism libraries (database + originals + sidecar folder) for the demo, tests and benchmarks.

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
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import sqlalchemy as sa

from likeness.geometry import stored_from_displayed

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int, width: int) -> str:
    digits = ""
    while value:
        value, rem = divmod(value, 36)
        digits = _BASE36[rem] + digits
    return digits.rjust(width, "0")[-width:]


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the orientation tag right after SOI."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def encode_jpeg(displayed_bgr: np.ndarray, orientation: int = 1, quality: int = 90) -> bytes:
    """JPEG bytes whose stored pixels, once the EXIF orientation is applied, show ``displayed_bgr``."""
    stored = np.ascontiguousarray(stored_from_displayed(displayed_bgr, orientation))
    ok, buf = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    data = buf.tobytes()
    return with_exif_orientation(data, orientation) if orientation != 1 else data


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


# -- drawn faces -----------------------------------------------------------------------------------------
def draw_face(canvas: np.ndarray, cx: int, cy: int, side: int, seed: int, angle: float = 0.0) -> None:
    """Draw a recognisable, textured face centred at (cx, cy) whose box side is ``side`` pixels.

    Each seed gives a different skin tone, hair and eye colour, so faces differ for hashing and tagging.
    """
    rng = np.random.default_rng(seed)
    skin = tuple(int(v) for v in rng.integers(120, 230, 3))
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    eye = tuple(int(v) for v in rng.integers(20, 160, 3))
    half = side // 2
    layer = np.zeros((side * 2, side * 2, 3), np.uint8)
    mask = np.zeros((side * 2, side * 2), np.uint8)
    c = side
    cv2.ellipse(layer, (c, c - half // 3), (int(half * 1.05), int(half * 1.1)), 0, 180, 360, hair, -1)
    cv2.ellipse(layer, (c, c), (int(half * 0.82), half), 0, 0, 360, skin, -1)
    for dx in (-1, 1):
        ex = c + dx * half // 3
        cv2.ellipse(layer, (ex, c - half // 5), (half // 6, half // 10), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(layer, (ex, c - half // 5), max(2, half // 14), eye, -1)
        cv2.line(layer, (ex - half // 6, c - half // 3), (ex + half // 6, c - half // 3), hair, max(1, side // 40))
    cv2.line(
        layer, (c, c - half // 8), (c - half // 12, c + half // 5), tuple(v - 40 for v in skin), max(1, side // 60)
    )
    cv2.ellipse(layer, (c, c + half // 2), (half // 3, half // 8), 0, 0, 180, (60, 40, 160), max(2, side // 40))
    noise = rng.integers(-12, 13, layer.shape, dtype=np.int16)
    layer = np.clip(layer.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    cv2.ellipse(mask, (c, c), (int(half * 1.05), int(half * 1.12)), 0, 0, 360, 255, -1)
    if angle:
        matrix = cv2.getRotationMatrix2D((c, c), angle, 1.0)
        layer = cv2.warpAffine(layer, matrix, (side * 2, side * 2))
        mask = cv2.warpAffine(mask, matrix, (side * 2, side * 2))
    _paste(canvas, layer, mask, cx - c, cy - c)


def paste_portrait(canvas: np.ndarray, portrait: np.ndarray, cx: int, cy: int, side: int, angle: float = 0.0) -> None:
    """Paste a square portrait (face filling it) scaled to ``side`` and rotated, centred at (cx, cy)."""
    scaled = cv2.resize(
        portrait, (side, side), interpolation=cv2.INTER_AREA if side < portrait.shape[0] else cv2.INTER_CUBIC
    )
    mask = np.full((side, side), 255, np.uint8)
    if angle:
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        scaled = cv2.warpAffine(scaled, matrix, (side, side), borderMode=cv2.BORDER_REFLECT)
    _paste(canvas, scaled, mask, cx - side // 2, cy - side // 2)


def _paste(canvas: np.ndarray, layer: np.ndarray, mask: np.ndarray, left: int, top: int) -> None:
    height, width = canvas.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + layer.shape[1], width), min(top + layer.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return
    sub_layer = layer[y0 - top : y1 - top, x0 - left : x1 - left]
    sub_mask = mask[y0 - top : y1 - top, x0 - left : x1 - left] > 0
    canvas[y0:y1, x0:x1][sub_mask] = sub_layer[sub_mask]


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth, textured background so photos compress like photos rather than flat colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (max(2, height // 240), max(2, width // 240), 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-6, 7, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


# -- a library whose named person has faces of two real people ------------------------------------------
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
