"""Write the same library (photos, people, face boxes) into Immich's and digiKam's schemas, for tests.

``synthlib.LibraryBuilder`` holds a PhotoPrism-shaped library: photos with their displayed size, EXIF
orientation and faces as fractions of the displayed image. Each face's pixel box is what PhotoPrism
itself computes from those fractions (``geometry.marker_rect``); the writers here store that same pixel
box the way each manager does, so that an export from any of the three must crop the same pixels:

* Immich (``resources/immich_schema.sql``, PostgreSQL): assets under a container path, the box in the
  pixels of the preview Immich detects on (long side ``IMMICH_PREVIEW_SIZE``, never enlarged);
* digiKam (``resources/digikam_sqlite.sql``): album roots, albums, images, a "People" tag tree and
  ``ImageTagProperties`` regions as ``<rect/>`` XML in displayed pixels.

Deterministic: ids are UUID5/sequence numbers derived from the PhotoPrism UIDs.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from likeness.geometry import Rect, marker_rect
from likeness.synthlib import RESOURCES, Face, LibraryBuilder, Photo

IMMICH_PREVIEW_SIZE = 1440  # Immich's default preview size (long side); faces are detected on the preview
IMMICH_UPLOAD = "/data"  # where the current compose file mounts UPLOAD_LOCATION (older ones: /usr/src/app/upload)
_NAMESPACE = uuid.UUID("6f1c0d1e-2b7a-4d55-9a51-5c1b9f0e7a10")


def stable_uuid(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name))


def pixel_box(face: Face, photo: Photo) -> Rect | None:
    """The face's box in displayed pixels, as PhotoPrism computes it (None when it has none)."""
    try:
        return marker_rect(face.x, face.y, face.w, face.h, photo.width, photo.height)
    except ValueError:
        return None


def stored_size(photo: Photo) -> tuple[int, int]:
    """The pixels as stored in the file: orientations 5-8 are turned by 90 degrees."""
    return (photo.height, photo.width) if photo.orientation in (5, 6, 7, 8) else (photo.width, photo.height)


def immich_preview_size(photo: Photo, preview: int = IMMICH_PREVIEW_SIZE) -> tuple[int, int]:
    scale = min(1.0, preview / max(photo.width, photo.height))
    return round(photo.width * scale), round(photo.height * scale)


def _run_ddl(engine: sa.Engine, ddl_file: Path) -> None:
    text = "\n".join(line for line in ddl_file.read_text().splitlines() if not line.strip().startswith("--"))
    with engine.begin() as conn:
        for statement in (s.strip() for s in text.split(";")):
            if statement:
                conn.exec_driver_sql(statement)


# -- Immich ----------------------------------------------------------------------------------------------
def immich_original_path(photo: Photo) -> str:
    folder = "sidecar" if photo.file_root == "sidecar" else "library"
    return str(PurePosixPath(IMMICH_UPLOAD) / folder / photo.file_name)


IMMICH_LAYOUTS = ("v1.137", "v3.2")  # asset_face.personId -> person.id; personGroupId -> person_group.id


def write_immich(builder: LibraryBuilder, engine: sa.Engine, layout: str = "v3.2", create: bool = True) -> None:
    """Immich's rows for the builder's library: one person per subject, one asset per photo.

    ``layout`` 'v1.137' is the schema of Immich v1.137.0 to v3.1, 'v3.2' adds the person groups of
    v3.2.0 and later (the person's id is its person group's). PhotoPrism's states map to Immich's:
    archived -> visibility 'archive', deleted file -> trash, missing flag -> offline, rejected marker
    -> deleted face, unnamed marker -> face without a person.
    """
    if create:
        _run_ddl(engine, RESOURCES / "immich_schema.sql")
        if layout == "v3.2":
            _run_ddl(engine, RESOURCES / "immich_v3.2_person_groups.sql")
    owner = stable_uuid("owner")
    with engine.begin() as conn:
        if layout == "v3.2":
            conn.execute(sa.text("INSERT INTO cluster_group (id) VALUES (:id)"), {"id": stable_uuid("cluster")})
        for subject in builder.subjects:
            if subject["deleted"]:
                continue
            params = {"id": stable_uuid(subject["subj_uid"]), "owner": owner, "name": subject["subj_name"]}
            if layout == "v3.2":
                conn.execute(
                    sa.text('INSERT INTO person_group (id, "clusterGroupId") VALUES (:id, :cluster)'),
                    {**params, "cluster": stable_uuid("cluster")},
                )
                conn.execute(
                    sa.text('INSERT INTO person ("personGroupId", "ownerId", name) VALUES (:id, :owner, :name)'),
                    params,
                )
            else:
                conn.execute(sa.text('INSERT INTO person (id, "ownerId", name) VALUES (:id, :owner, :name)'), params)
        person_column = "personGroupId" if layout == "v3.2" else "personId"
        for photo in builder.photos:
            _insert_immich_photo(conn, photo, owner, person_column)


def _insert_immich_photo(conn: sa.Connection, photo: Photo, owner: str, person_column: str) -> None:
    asset_id = stable_uuid(photo.photo_uid)
    taken = photo.taken_at
    conn.execute(
        sa.text(
            'INSERT INTO asset (id, "deviceAssetId", "ownerId", "deviceId", type, "originalPath", "fileCreatedAt",'
            ' "fileModifiedAt", checksum, "originalFileName", "isOffline", "deletedAt", "localDateTime", status,'
            " visibility, width, height)"
            " VALUES (:id, :device_asset, :owner, 'likeness-tests', 'IMAGE', :path, :taken, :taken, :checksum,"
            " :name, :offline, :deleted, :taken, CAST(:status AS assets_status_enum),"
            " CAST(:visibility AS asset_visibility_enum), :width, :height)"
        ),
        {
            "id": asset_id,
            "device_asset": photo.file_uid,
            "owner": owner,
            "path": immich_original_path(photo),
            "taken": taken,
            "checksum": bytes.fromhex(photo.file_hash) if photo.file_hash else b"\0" * 20,
            "name": PurePosixPath(photo.file_name).name,
            "offline": photo.file_missing_flag,
            "deleted": taken + timedelta(days=400) if photo.file_deleted else None,
            "status": "trashed" if photo.file_deleted else "active",
            "visibility": "archive" if photo.archived else "timeline",
            "width": photo.width,
            "height": photo.height,
        },
    )
    stored_w, stored_h = stored_size(photo)
    conn.execute(
        sa.text(
            'INSERT INTO asset_exif ("assetId", "exifImageWidth", "exifImageHeight", orientation, "dateTimeOriginal")'
            " VALUES (:id, :w, :h, :orientation, :taken)"
        ),
        {"id": asset_id, "w": stored_w, "h": stored_h, "orientation": str(photo.orientation), "taken": taken},
    )
    preview_w, preview_h = immich_preview_size(photo)
    for face in photo.faces:
        box = pixel_box(face, photo)
        if box is None:
            continue
        conn.execute(
            sa.text(
                f'INSERT INTO asset_face (id, "assetId", "{person_column}", "imageWidth", "imageHeight",'
                ' "boundingBoxX1", "boundingBoxY1", "boundingBoxX2", "boundingBoxY2", "sourceType", "deletedAt")'
                " VALUES (:id, :asset, :person, :iw, :ih, :x1, :y1, :x2, :y2, CAST(:src AS sourcetype), :deleted)"
            ),
            {
                "id": stable_uuid(face.uid),
                "asset": asset_id,
                "person": stable_uuid(face.subject) if face.subject else None,
                "iw": preview_w,
                "ih": preview_h,
                # In preview pixels: the top-left corner rounded down, the bottom-right one up.
                "x1": box.x0 * preview_w // photo.width,
                "y1": box.y0 * preview_h // photo.height,
                "x2": math.ceil(box.x1 * preview_w / photo.width),
                "y2": math.ceil(box.y1 * preview_h / photo.height),
                "src": "manual" if face.marker_src == "manual" else "machine-learning",
                "deleted": taken if face.invalid else None,
            },
        )


# -- digiKam ---------------------------------------------------------------------------------------------
DIGIKAM_VOLUME = "volumeid:?uuid=4a1e77c0-5b8d-4c1f-9e2a-1d3c5b7a9f00"


def write_digikam(builder: LibraryBuilder, engine: sa.Engine, create: bool = True) -> None:
    """digiKam's rows: two album roots on one volume (/originals and /storage/sidecar below its mount point).

    PhotoPrism's states map to digiKam's: deleted file -> trashed image, archived -> hidden image,
    rejected marker -> ignored face, review flag -> a suggestion (autodetectedFace) not confirmed yet,
    unnamed marker -> autodetectedFace on the "Unknown" tag.
    """
    mysql = engine.dialect.name in ("mysql", "mariadb")
    if create:
        _run_ddl(engine, RESOURCES / ("digikam_mysql.sql" if mysql else "digikam_sqlite.sql"))
    people = [s for s in builder.subjects if not s["deleted"]]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) VALUES"
                " (1, 'Originals', 0, 1, :vol, '/originals'), (2, 'Sidecar', 0, 1, :vol, '/storage/sidecar')"
            ),
            {"vol": DIGIKAM_VOLUME},
        )
        # MySQL's Tags keep a nested set (lft, rgt): People holds Unknown and one tag per person.
        nested = ", lft, rgt" if mysql else ""
        conn.execute(
            sa.text(f"INSERT INTO Tags (id, pid, name{nested}) VALUES (1, 0, 'People'{', 1, :rgt' if mysql else ''})"),
            {"rgt": 2 * len(people) + 4},
        )
        tags = [(2, "Unknown"), *((number, s["subj_name"]) for number, s in enumerate(people, start=3))]
        for tag_id, name in tags:
            conn.execute(
                sa.text(
                    f"INSERT INTO Tags (id, pid, name{nested}) VALUES (:id, 1, :name{', :lft, :rgt' if mysql else ''})"
                ),
                {"id": tag_id, "name": name, "lft": 2 * tag_id - 2, "rgt": 2 * tag_id - 1},
            )
        conn.execute(sa.text("INSERT INTO TagProperties (tagid, property, value) VALUES (2, 'unknownPerson', '')"))
        tag_of: dict[str, int] = {}
        for number, subject in enumerate(people, start=3):
            tag_of[subject["subj_uid"]] = number
            conn.execute(
                sa.text("INSERT INTO TagProperties (tagid, property, value) VALUES (:id, 'person', :name)"),
                {"id": number, "name": subject["subj_name"]},
            )
        albums: dict[tuple[int, str], int] = {}
        for image_id, photo in enumerate(builder.photos, start=1):
            _insert_digikam_photo(conn, image_id, photo, albums, tag_of)


def _insert_digikam_photo(
    conn: sa.Connection, image_id: int, photo: Photo, albums: dict[tuple[int, str], int], tag_of: dict[str, int]
) -> None:
    root = 2 if photo.file_root == "sidecar" else 1
    parent = str(PurePosixPath("/") / PurePosixPath(photo.file_name).parent)
    if (root, parent) not in albums:
        albums[(root, parent)] = len(albums) + 1
        conn.execute(
            sa.text("INSERT INTO Albums (id, albumRoot, relativePath) VALUES (:id, :root, :path)"),
            {"id": albums[(root, parent)], "root": root, "path": parent},
        )
    status = 3 if photo.file_deleted else (2 if photo.archived else 1)
    conn.execute(
        sa.text(
            "INSERT INTO Images (id, album, name, status, category, modificationDate, fileSize, uniqueHash)"
            " VALUES (:id, :album, :name, :status, 1, :date, 0, :hash)"
        ),
        {
            "id": image_id,
            "album": albums[(root, parent)],
            "name": PurePosixPath(photo.file_name).name,
            "status": status,
            "date": photo.taken_at.strftime("%Y-%m-%dT%H:%M:%S"),
            "hash": photo.file_hash,
        },
    )
    stored_w, stored_h = stored_size(photo)
    conn.execute(
        sa.text(
            "INSERT INTO ImageInformation (imageid, creationDate, orientation, width, height, format)"
            " VALUES (:id, :date, :orientation, :w, :h, 'JPG')"
        ),
        {
            "id": image_id,
            "date": photo.taken_at.strftime("%Y-%m-%dT%H:%M:%S.000"),
            "orientation": photo.orientation,
            "w": stored_w,
            "h": stored_h,
        },
    )
    tagged: set[int] = set()
    for face in photo.faces:
        box = pixel_box(face, photo)
        if box is None:
            continue
        tag = tag_of.get(face.subject, 2)
        if face.invalid:
            prop = "ignoredFace"
        elif tag == 2 or face.review:
            prop = "autodetectedFace"
        else:
            prop = "tagRegion"
            if tag not in tagged:
                tagged.add(tag)
                conn.execute(
                    sa.text("INSERT INTO ImageTags (imageid, tagid) VALUES (:image, :tag)"),
                    {"image": image_id, "tag": tag},
                )
        rect = f'<rect x="{box.x0}" y="{box.y0}" width="{box.width}" height="{box.height}"/>'
        conn.execute(
            sa.text("INSERT INTO ImageTagProperties (imageid, tagid, property, value) VALUES (:i, :t, :p, :v)"),
            {"i": image_id, "t": tag, "p": prop, "v": rect},
        )
