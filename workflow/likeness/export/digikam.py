"""Read a person's face regions from digiKam's database (SQLite ``digikam4.db``, or MySQL/MariaDB), read-only.

digiKam keeps a face as an ``ImageTagProperties`` row: the image, the person's tag, the state in
``property`` and the box in ``value`` as ``<rect x= y= width= height=/>``, in pixels of the image as
digiKam shows it (EXIF orientation applied: its rotate tool turns the regions with the image, see
TagRegion::adjustToOrientation). ``ImageInformation.width``/``height`` are the stored pixels, turned here
by the orientation. ``property = 'tagRegion'`` is a face the user confirmed; ``autodetectedFace`` and
``autodetectedPerson`` on a person's tag are suggestions nobody confirmed yet, ``faceToTrain`` a
training copy, ``ignoredFace`` a face the user ignored.

People are the tags under the "People" tag (or tags marked with the ``person`` tag property); digiKam's
own "Unknown" and "Unconfirmed" tags are not people. The file is the album root's folder + the album's
``relativePath`` + ``Images.name``; ``source.path_map`` maps the album root's ``identifier`` (the volume)
to the folder where that volume is mounted here, and the root's ``specificPath`` is appended.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from likeness import geometry
from likeness.config import Section
from likeness.export import database, photos, records
from likeness.export.records import Export, MarkerRow, Neighbour, Subject, region_marker
from likeness.export.values import as_text, as_timestamp, safe_int

MANAGER = "digiKam"
CONFIRMED = "tagRegion"
UNCONFIRMED = ("autodetectedFace", "autodetectedPerson")
REGION_PROPERTIES = (CONFIRMED, *UNCONFIRMED, "faceToTrain", "ignoredFace")
_NOT_PEOPLE = ("unknownPerson", "unconfirmedPerson")
_STATUS = {2: "image hidden in digiKam", 3: "image in digiKam's trash", 4: "image obsolete in digiKam"}

_TAGS_SQL = sa.text("SELECT id, pid, name FROM Tags ORDER BY id")
_TAG_PROPERTIES_SQL = sa.text("SELECT tagid, property FROM TagProperties")
_ROOTS_SQL = sa.text("SELECT id, label, status, identifier, specificPath FROM AlbumRoots ORDER BY id")

_REGIONS_SQL = sa.text(
    "SELECT p.imageid, p.tagid, p.property, p.value, i.id AS image_id, i.name, i.status, i.category,"
    " i.uniqueHash AS unique_hash, a.relativePath AS relative_path, a.albumRoot AS album_root,"
    " n.creationDate AS creation_date, n.orientation, n.width, n.height"
    " FROM ImageTagProperties p"
    " LEFT JOIN Images i ON i.id = p.imageid"
    " LEFT JOIN Albums a ON a.id = i.album"
    " LEFT JOIN ImageInformation n ON n.imageid = i.id"
    " WHERE p.tagid = :tagid AND p.property IN ('tagRegion', 'autodetectedFace', 'autodetectedPerson',"
    " 'faceToTrain', 'ignoredFace')"
    " ORDER BY p.imageid, p.property, p.value"
)

_NEIGHBOURS_SQL = sa.text(
    "SELECT p.imageid, p.tagid, p.property, p.value, n.orientation, n.width, n.height"
    " FROM ImageTagProperties p LEFT JOIN ImageInformation n ON n.imageid = p.imageid"
    " WHERE p.property IN ('tagRegion', 'autodetectedFace', 'autodetectedPerson') AND p.imageid IN"
    " (SELECT q.imageid FROM ImageTagProperties q WHERE q.tagid = :tagid AND q.property = 'tagRegion')"
    " ORDER BY p.imageid, p.tagid, p.value"
)


# -- people ----------------------------------------------------------------------------------------------
def people(tags: list[tuple[int, int, str]], tag_properties: list[tuple[int, str]]) -> list[Subject]:
    """Person tags: below a top-level "People" tag or marked ``person``; not Unknown/Unconfirmed."""
    parent = {tag_id: pid for tag_id, pid, _ in tags}
    names = {tag_id: name for tag_id, _, name in tags}
    roots = {tag_id for tag_id, pid, name in tags if not pid and name == "People"}
    marked = {tag_id for tag_id, prop in tag_properties if prop == "person"}
    excluded = {tag_id for tag_id, prop in tag_properties if prop in _NOT_PEOPLE}

    def under_people(tag_id: int) -> bool:
        seen: set[int] = set()
        current = parent.get(tag_id)
        while current and current not in seen:
            if current in roots:
                return True
            seen.add(current)
            current = parent.get(current)
        return False

    return [
        Subject(str(tag_id), "", names[tag_id])
        for tag_id in sorted(names)
        if tag_id not in excluded and tag_id not in roots and (tag_id in marked or under_people(tag_id))
    ]


# -- regions ---------------------------------------------------------------------------------------------
def parse_rect(value: Any) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) from ``<rect x=".." y=".." width=".." height=".."/>``; None if it is not one."""
    try:
        element = ET.fromstring(as_text(value).strip())
        if element.tag != "rect":
            return None
        return tuple(int(float(element.attrib[k])) for k in ("x", "y", "width", "height"))  # type: ignore[return-value]
    except (ET.ParseError, KeyError, ValueError):
        return None


def region_uid(image_id: Any, tag_id: Any, value: Any) -> str:
    """digiKam's regions have no id: image, tag and a digest of the box make one (letters and digits).

    The box is digested as its four numbers where it parses, so that the rows digiKam keeps for one region
    (its ``tagRegion`` and the ``faceToTrain`` copy, written by different code) get the same id however
    their XML is spelled; an unparsable value is digested as it is.
    """
    rect = parse_rect(value)
    text = ",".join(map(str, rect)) if rect is not None else as_text(value)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"i{safe_int(image_id)}t{safe_int(tag_id)}r{digest}"


# Which of a region's rows stands for it: a confirmed face first, then a suggestion, the training copy
# and an ignored face last (digiKam writes tagRegion and faceToTrain for one confirmed region).
_ROW_PRIORITY = {CONFIRMED: 0, "autodetectedPerson": 1, "autodetectedFace": 2, "faceToTrain": 3, "ignoredFace": 4}


def regions(rows: list[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], bool]]:
    """One (row, confirmed) per region: digiKam's rows grouped by image, tag and box.

    ``confirmed`` is whether any of the region's rows is a ``tagRegion``: a face confirmed from a
    suggestion keeps a ``faceToTrain`` copy until digiKam trains on it, which is the same region, not a
    second face. The row standing for the region is its most confirmed one (``_ROW_PRIORITY``).
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(region_uid(row["imageid"], row["tagid"], row["value"]), []).append(row)
    chosen = []
    for uid in sorted(grouped):
        group = sorted(grouped[uid], key=lambda r: _ROW_PRIORITY.get(as_text(r["property"]), 9))
        chosen.append((group[0], any(as_text(r["property"]) == CONFIRMED for r in group)))
    return chosen


def root_folders(roots: list[Mapping[str, Any]], path_map: Mapping[str, str]) -> dict[int, tuple[str, str]]:
    """Album root id -> (root key, folder here or '').

    The folder is ``path_map[identifier]`` (where the volume is mounted here) + ``specificPath``; an
    identifier that names a path itself (``volumeid:?path=...``, ``networkshareid:?mountpath=...``) needs
    no map entry.
    """
    folders: dict[int, tuple[str, str]] = {}
    for root in roots:
        identifier = as_text(root["identifier"])
        specific = as_text(root["specificPath"]) or "/"
        key = f"{identifier}{specific}" if specific != "/" else identifier
        mount = path_map.get(key) or path_map.get(identifier) or photos.unquote_volume_path(identifier)
        if key in path_map:
            folder = path_map[key]
        elif mount:
            folder = mount.rstrip("/") + "/" + specific.strip("/") if specific.strip("/") else mount
        else:
            folder = ""
        folders[safe_int(root["id"])] = (key, folder)
    return folders


def exclusion_reason(row: Mapping[str, Any], include_unconfirmed: bool) -> str:
    prop = as_text(row["property"])
    if prop in UNCONFIRMED and not include_unconfirmed:
        return f"not confirmed in digiKam ({prop}: a suggestion; confirm it, or set source.include_unconfirmed)"
    if prop == "faceToTrain":
        return "training copy of a region in digiKam (faceToTrain)"
    if prop == "ignoredFace":
        return "face ignored in digiKam"
    if row["image_id"] is None:
        return "region points to an image digiKam no longer has"
    status = safe_int(row["status"])
    if status in _STATUS:
        return _STATUS[status]
    if row["album_root"] is None:
        return "image removed from its album in digiKam"
    if safe_int(row["category"]) not in (0, 1):
        return "not a photo (digiKam category video, audio or other)"
    return ""


def marker_from_row(
    row: Mapping[str, Any],
    folders: Mapping[int, tuple[str, str]],
    include_unconfirmed: bool,
    confirmed: bool | None = None,
) -> MarkerRow:
    """The marker of one region (``row`` standing for it; ``confirmed``: any of its rows is a tagRegion)."""
    prop = as_text(row["property"])
    confirmed = prop == CONFIRMED if confirmed is None else confirmed
    reason = exclusion_reason(row, include_unconfirmed)
    orientation = safe_int(row["orientation"]) or 1
    width, height = geometry.displayed_size(safe_int(row["width"]), safe_int(row["height"]), orientation)
    rect = parse_rect(row["value"])
    fractions = None
    side = 0
    if not reason and rect is None:
        reason = f"region value is not a <rect x= y= width= height=/>: {as_text(row['value'])[:60]!r}"
    if not reason and not (width and height):
        reason = "the image's size is unknown in digiKam (ImageInformation width/height)"
    if not reason and rect is not None:
        left, top = max(0, rect[0]), max(0, rect[1])
        right, bottom = min(width, rect[0] + rect[2]), min(height, rect[1] + rect[3])
        if right <= left or bottom <= top:
            reason = f"region {list(rect)} lies outside the {width}x{height} image"
        else:
            fractions = records.fractions_for_pixels(left, top, right, bottom, width, height)
            side = max(right - left, bottom - top)
    key, folder = folders.get(safe_int(row["album_root"]), ("", ""))
    if not reason and not folder:
        reason = (
            f"no folder for digiKam album root '{key}': map its identifier to the folder where that "
            "volume is mounted in source.path_map"
        )
    relative = as_text(row["relative_path"]).strip("/")
    name = as_text(row["name"])
    image = f"i{safe_int(row['imageid'])}"
    return region_marker(
        region_uid(row["imageid"], row["tagid"], row["value"]),
        reason,
        fractions,
        side,
        file_uid=image,
        photo_uid=image,
        subj_uid=str(safe_int(row["tagid"])),
        marker_src=CONFIRMED if confirmed else prop,
        subj_src="manual" if confirmed else "",
        file_root=key,
        file_name=f"{relative}/{name}" if relative else name,
        file_hash=as_text(row["unique_hash"]),
        file_width=width,
        file_height=height,
        file_orientation=orientation,
        taken_at=as_timestamp(row["creation_date"]),
    )


def neighbour_from_row(row: Mapping[str, Any]) -> Neighbour | None:
    rect = parse_rect(row["value"])
    orientation = safe_int(row["orientation"]) or 1
    width, height = geometry.displayed_size(safe_int(row["width"]), safe_int(row["height"]), orientation)
    if rect is None or not width or not height:
        return None
    image = f"i{safe_int(row['imageid'])}"
    return Neighbour(
        region_uid(row["imageid"], row["tagid"], row["value"]),
        image,
        str(safe_int(row["tagid"])),
        rect[0] / width,
        rect[1] / height,
        rect[2] / width,
        rect[3] / height,
    )


def read_export(engine: sa.Engine, person: str, source: Section) -> Export:
    """Resolve ``person`` among digiKam's people tags and read their regions, in one read-only connection."""
    path_map = dict(source.path_map)
    try:
        with engine.connect() as conn:
            tags = [(safe_int(r.id), safe_int(r.pid), as_text(r.name)) for r in conn.execute(_TAGS_SQL)]
            properties = [(safe_int(r.tagid), as_text(r.property)) for r in conn.execute(_TAG_PROPERTIES_SQL)]
            subject = records.resolve_subject(people(tags, properties), person, MANAGER)
            folders = root_folders([dict(r._mapping) for r in conn.execute(_ROOTS_SQL)], path_map)
            params = {"tagid": int(subject.uid)}
            rows = [dict(r._mapping) for r in conn.execute(_REGIONS_SQL, params)]
            markers = [
                marker_from_row(row, folders, source.include_unconfirmed, confirmed) for row, confirmed in regions(rows)
            ]
            unique: dict[str, Neighbour] = {}
            for r in conn.execute(_NEIGHBOURS_SQL, params):
                neighbour = neighbour_from_row(r._mapping)
                if neighbour:  # a region with a suggestion row and a confirmed one is one face
                    unique.setdefault(neighbour.marker_uid, neighbour)
            neighbours = list(unique.values())
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise database.explain_db_error(exc, source.url, MANAGER) from None
    markers.sort(key=lambda m: m.marker_uid)
    roots = {key: folder for key, folder in folders.values() if folder}
    return Export(subject, markers, neighbours, roots=roots)
