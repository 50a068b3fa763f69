"""Read a person's faces from Immich's PostgreSQL database, read-only.

Supported: Immich v1.137.0 and later, whose tables are ``asset``, ``asset_face``, ``person`` and
``asset_exif`` (the 2025 migration 1752267649968-StandardizeNames renamed them from ``assets``,
``asset_faces`` and ``exif``). Two layouts of people are read:

* v1.137.0 to v3.1: ``asset_face.personId`` -> ``person.id``;
* v3.2.0 and later (face cluster groups): ``asset_face.personGroupId`` -> ``person_group.id``, and each
  user's ``person`` row (name, hidden) is keyed by ``(ownerId, personGroupId)``; the person's id is then
  the person group's id.

The columns read and the migrations they come from are listed in ``resources/immich_schema.sql`` and
``resources/immich_v3.2_person_groups.sql``. Columns that later releases added (``asset.width``/``height``,
``asset_face.isVisible``, the ``asset_edit`` table) are used when they exist.

Immich's face box is in the pixels of the image the detector saw (``imageWidth`` x ``imageHeight``, the
preview, already turned upright): it is scaled to the original's displayed size, widened to whole pixels
(floor for the top-left corner, ceiling for the bottom-right one) so the face is never cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from likeness import geometry
from likeness.config import Section
from likeness.errors import ConfigError, SourceError
from likeness.export import database, photos, records
from likeness.export.records import Export, MarkerRow, Neighbour, Subject, region_marker
from likeness.export.values import as_text, as_timestamp, uid_text

MANAGER = "Immich"
# EXIF orientation as Immich stores it (text): the EXIF numbers, or degrees for some videos and HEIFs.
_ORIENTATIONS = {"90": 6, "-90": 8, "270": 8, "180": 3, "-180": 3, "0": 1}


# -- connection -----------------------------------------------------------------------------------------
def make_engine(url: str, password_env: str, option_file: str) -> sa.Engine:
    """A read-only engine: every session starts with ``default_transaction_read_only = on``.

    The password comes from the environment variable ``password_env``, or from libpq's own sources: a
    ``.pgpass`` file (``source.option_file``, else ``~/.pgpass``/``PGPASSFILE``) or a service file
    (``?service=name`` in the URL). A URL with a password is refused.
    """
    try:
        password_in_url = bool(sa.engine.make_url(url).password)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        password_in_url = False  # parse_server_url below says what is wrong with it, masked
    if password_in_url:
        raise ConfigError(
            "source.url",
            f"must not contain a password; put it in the environment variable {password_env} "
            "(source.password_env) or in a .pgpass file (source.option_file)",
        )
    parsed = database.parse_server_url(url, password_env)  # no secret query parameters, a valid port
    driver = parsed.get_driver_name()
    if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
        raise ConfigError("source.url", f"use postgresql+psycopg:// for Immich (the {driver} driver is not installed)")
    parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {"connect_timeout": 10, "options": "-c default_transaction_read_only=on"}
    connect_args.update(database.credential_args(password_env, option_file, "passfile", ".pgpass file"))
    return sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)


# -- schema ----------------------------------------------------------------------------------------------
_COLUMNS_SQL = sa.text(
    "SELECT table_name, column_name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name IN ('asset', 'asset_face', 'asset_exif', 'person')"
)


def person_column(columns: set[tuple[str, str]]) -> str:
    """The face's person: ``personGroupId`` from v3.2.0 on, ``personId`` before."""
    return "personGroupId" if ("asset_face", "personGroupId") in columns else "personId"


def check_schema(tables: set[str], columns: set[tuple[str, str]]) -> None:
    """One line when this is not a release likeness reads."""
    if "asset_faces" in tables and "asset_face" not in tables:
        raise SourceError(
            "this Immich database is from a release before v1.137.0 (tables asset_faces, assets); "
            "likeness reads Immich v1.137.0 and later: upgrade Immich first"
        )
    missing = [t for t in ("asset", "asset_face", "asset_exif", "person") if t not in tables]
    if not missing and not {("asset_face", "personId"), ("asset_face", "personGroupId")} & columns:
        raise SourceError(
            "this Immich database's asset_face has neither personId (v1.137.0 to v3.1) nor personGroupId "
            "(v3.2): a newer layout than likeness reads (Immich v1.137.0 to v3.2)"
        )
    group_layout = person_column(columns) == "personGroupId"
    needed = [
        ("asset_face", person_column(columns)),
        ("person", "personGroupId" if group_layout else "id"),
        ("asset_face", "imageWidth"),
        ("asset_face", "boundingBoxX1"),
        ("asset", "originalPath"),
        ("asset", "visibility"),
        ("asset_exif", "orientation"),
    ]
    missing += [f"{t}.{c}" for t, c in needed if t not in missing and (t, c) not in columns]
    if missing:
        raise SourceError(
            f"this Immich database lacks {', '.join(missing)}; likeness reads the tables of Immich v1.137.0 "
            "to v3.2 and later (see resources/immich_schema.sql)"
        )


def _markers_sql(columns: set[tuple[str, str]], has_edits: bool) -> sa.TextClause:
    # Optional columns are chosen from fixed names, never from input.
    visible = 'f."isVisible"' if ("asset_face", "isVisible") in columns else "TRUE"
    width = 'a."width"' if ("asset", "width") in columns else "NULL::integer"
    height = 'a."height"' if ("asset", "height") in columns else "NULL::integer"
    edits = 'EXISTS (SELECT 1 FROM asset_edit ed WHERE ed."assetId" = a.id)' if has_edits else "FALSE"
    person = person_column(columns)
    return sa.text(
        f'SELECT f.id AS face_id, f."assetId" AS face_asset_id, f."{person}" AS person_id,'
        ' f."imageWidth" AS iw, f."imageHeight" AS ih,'
        ' f."boundingBoxX1" AS x1, f."boundingBoxY1" AS y1, f."boundingBoxX2" AS x2, f."boundingBoxY2" AS y2,'
        f' f."sourceType"::text AS source_type, f."deletedAt" AS face_deleted_at, {visible} AS face_visible,'
        ' a.id AS asset_id, a."originalPath" AS original_path, a.type AS asset_type,'
        ' a."deletedAt" AS asset_deleted_at, a.status::text AS asset_status, a.visibility::text AS visibility,'
        ' a."isOffline" AS is_offline, a.checksum, a."fileCreatedAt" AS file_created_at,'
        f" {width} AS width, {height} AS height, {edits} AS edited,"
        ' e."exifImageWidth" AS exif_width, e."exifImageHeight" AS exif_height, e.orientation,'
        ' e."dateTimeOriginal" AS date_time_original'
        " FROM asset_face f"
        ' LEFT JOIN asset a ON a.id = f."assetId"'
        ' LEFT JOIN asset_exif e ON e."assetId" = a.id'
        f' WHERE f."{person}" = :person_id'
        " ORDER BY f.id"
    )


def _neighbours_sql(columns: set[tuple[str, str]]) -> sa.TextClause:
    visible = ' AND n."isVisible"' if ("asset_face", "isVisible") in columns else ""
    person = person_column(columns)
    return sa.text(
        f'SELECT n.id, n."assetId" AS asset_id, n."{person}" AS person_id, n."imageWidth" AS iw,'
        ' n."imageHeight" AS ih, n."boundingBoxX1" AS x1, n."boundingBoxY1" AS y1,'
        ' n."boundingBoxX2" AS x2, n."boundingBoxY2" AS y2'
        f' FROM asset_face n WHERE n."deletedAt" IS NULL{visible} AND n."assetId" IN'
        f' (SELECT m."assetId" FROM asset_face m WHERE m."{person}" = :person_id)'
        ' ORDER BY n."assetId", n.id'
    )


# -- rows ------------------------------------------------------------------------------------------------
def orientation_of(value: Any) -> int:
    text = as_text(value).strip()
    if text.isdigit() and 1 <= int(text) <= 8:
        return int(text)
    return _ORIENTATIONS.get(text, 1)


def original_size(row: Mapping[str, Any], orientation: int) -> tuple[int, int]:
    """The original's displayed size: ``asset.width/height`` (upright) where present, else EXIF's turned."""
    if row["width"] and row["height"]:
        return int(row["width"]), int(row["height"])
    if row["exif_width"] and row["exif_height"]:
        return geometry.displayed_size(int(row["exif_width"]), int(row["exif_height"]), orientation)
    return 0, 0


def in_detection_frame(size: tuple[int, int], detected: tuple[int, int]) -> tuple[int, int]:
    """The original's size turned to the frame the detector saw, when Immich recorded it turned the other way.

    Immich records ``asset.width``/``height`` turned by the EXIF orientation tag, but its decoder (libvips)
    ignores that tag in a HEIF whose container states no rotation (an EXIF-only file), so the preview the
    faces were detected on, and the boxes, are in the stored frame. A portrait size with a landscape
    detection image (or the reverse) is that case: the boxes belong to the turned size.
    """
    (width, height), (iw, ih) = size, detected
    if iw and ih and iw != ih and width != height and (iw > ih) != (width > height):
        return height, width
    return width, height


def scale_box(box: tuple[int, int, int, int], detected: tuple[int, int], size: tuple[int, int]) -> tuple[int, ...]:
    """The detector's box in the original's displayed pixels, widened to whole pixels, clamped."""
    (x1, y1, x2, y2), (iw, ih), (width, height) = box, detected, size
    left = max(0, (x1 * width) // iw)
    top = max(0, (y1 * height) // ih)
    right = min(width, -((-x2 * width) // iw))
    bottom = min(height, -((-y2 * height) // ih))
    return left, top, right, bottom


def exclusion_reason(row: Mapping[str, Any]) -> str:
    """Why Immich's own views would not show this face on a photo (or why likeness cannot place it)."""
    if row["asset_id"] is None:
        return "face points to an asset Immich no longer has"
    if row["face_deleted_at"] is not None:
        return "face deleted in Immich"
    if not row["face_visible"]:
        return "face hidden in Immich (outside the asset's edited crop)"
    if row["asset_deleted_at"] is not None or (row["asset_status"] or "active") != "active":
        return "asset in Immich's trash"
    if row["is_offline"]:
        return "asset offline in Immich (its file is gone from the external library)"
    visibility = row["visibility"] or "timeline"
    if visibility == "archive":
        return "asset archived in Immich"
    if visibility == "hidden":
        return "asset hidden in Immich"
    if visibility == "locked":
        return "asset in Immich's locked folder"
    if (row["asset_type"] or "IMAGE") != "IMAGE":
        return f"asset is a {str(row['asset_type']).lower()}, not a photo"
    if row["edited"]:
        return "asset edited in Immich (crop/rotate): its face boxes belong to the edited image"
    if not row["iw"] or not row["ih"] or row["iw"] <= 0 or row["ih"] <= 0:
        return "face has no detection image size (imageWidth/imageHeight)"
    return ""


def marker_from_row(row: Mapping[str, Any], path_map: Mapping[str, str], subj_src: str) -> MarkerRow:
    reason = exclusion_reason(row)
    orientation = orientation_of(row["orientation"])
    width, height = original_size(row, orientation)
    if row["iw"] and row["ih"]:
        width, height = in_detection_frame((width, height), (int(row["iw"]), int(row["ih"])))
    fractions = None
    side = 0
    if not reason and not (width and height):
        reason = "the original's size is unknown in Immich (no width/height, no EXIF size)"
    if not reason:
        box = (int(row["x1"]), int(row["y1"]), int(row["x2"]), int(row["y2"]))
        left, top, right, bottom = scale_box(box, (int(row["iw"]), int(row["ih"])), (width, height))
        if right <= left or bottom <= top:
            reason = f"face box {list(box)} lies outside the {row['iw']}x{row['ih']} detection image"
        else:
            fractions = records.fractions_for_pixels(left, top, right, bottom, width, height)
            side = max(right - left, bottom - top)
    original_path = as_text(row["original_path"])
    root, relative = photos.split_by_path_map(path_map, original_path) if original_path else ("", "")
    if not reason and not root:
        reason = (
            f"originalPath '{original_path}' is under no source.path_map prefix "
            "(map the folder Immich sees, such as /data, to where the files are here)"
        )
    checksum = row["checksum"]
    taken = row["date_time_original"] or row["file_created_at"]
    return region_marker(
        uid_text(row["face_id"]),
        reason,
        fractions,
        side,
        file_uid=uid_text(row["face_asset_id"]),
        photo_uid=uid_text(row["asset_id"]),
        subj_uid=uid_text(row["person_id"]),
        marker_src=as_text(row["source_type"]),
        subj_src=subj_src,
        file_root=root,
        file_name=relative or original_path,
        file_hash=bytes(checksum).hex() if checksum is not None else "",
        file_width=width,
        file_height=height,
        file_orientation=orientation,
        taken_at=as_timestamp(taken),
    )


def neighbour_from_row(row: Mapping[str, Any]) -> Neighbour | None:
    iw, ih = row["iw"] or 0, row["ih"] or 0
    if iw <= 0 or ih <= 0:
        return None
    return Neighbour(
        uid_text(row["id"]),
        uid_text(row["asset_id"]),
        uid_text(row["person_id"]),
        row["x1"] / iw,
        row["y1"] / ih,
        (row["x2"] - row["x1"]) / iw,
        (row["y2"] - row["y1"]) / ih,
    )


def _id_key(value: str) -> str:
    """Person ids compare with or without dashes, in any case."""
    return uid_text(value.strip())


def read_export(engine: sa.Engine, person: str, source: Section) -> Export:
    """Resolve ``person`` among Immich's people and read their faces, in one read-only connection."""
    path_map = dict(source.path_map)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            columns = {(r.table_name, r.column_name) for r in conn.execute(_COLUMNS_SQL)}
            check_schema(tables, columns)
            # From v3.2.0 on, a person is a person group; each user keeps a row (name) for it.
            key = '"personGroupId"' if person_column(columns) == "personGroupId" else "id"
            people = [
                Subject(str(r.id), "", as_text(r.name))
                for r in conn.execute(sa.text(f"SELECT {key} AS id, name FROM person ORDER BY {key}, name"))
            ]
            subject = records.resolve_subject(people, person, MANAGER, _id_key)
            params = {"person_id": subject.uid}
            subj_src = "manual" if subject.name else ""
            markers = [
                marker_from_row(r._mapping, path_map, subj_src)
                for r in conn.execute(_markers_sql(columns, "asset_edit" in tables), params)
            ]
            neighbours = [
                n for n in (neighbour_from_row(r._mapping) for r in conn.execute(_neighbours_sql(columns), params)) if n
            ]
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise database.explain_db_error(exc, source.url, MANAGER) from None
    subject = Subject(uid_text(subject.uid), "", subject.name)
    return Export(subject, markers, neighbours, roots=photos.path_map_roots(path_map))
