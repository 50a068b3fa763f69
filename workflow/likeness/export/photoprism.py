"""Read a person's face markers from PhotoPrism's database, read-only, MariaDB or SQLite.

One query for the subjects (to resolve the person), one for the person's face markers with their file
and photo, one for every other face in the same files (selection needs them to judge crowding).
PhotoPrism's own filters are applied in Python rather than in SQL so that every row the person has is
listed with the reason it is or is not used.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from likeness.config import Section
from likeness.errors import ConfigError
from likeness.export.database import explain_db_error
from likeness.export.records import EXCLUDED, Export, MarkerRow, Neighbour, Subject, marker_row, name_key
from likeness.export.values import ValueProblem, as_float, as_int, as_text, as_timestamp, safe_int

MANAGER = "PhotoPrism"


# -- subjects --------------------------------------------------------------------------------------------
_SUBJECTS_SQL = sa.text("SELECT subj_uid, subj_slug, subj_name, photo_count FROM subjects WHERE deleted_at IS NULL")


def resolve_person(subjects: Iterable[Subject], person: str) -> Subject:
    """The subject that ``person`` names: its UID, its slug, or its name (any case, any Unicode form).

    Matching happens in Python so that names with quotes, '%', ';' or '--' are plain strings and the
    comparison is the same on MariaDB (case-insensitive collation) and SQLite (case-sensitive).
    """
    wanted = person.strip()
    pool = list(subjects)
    for key in (lambda s: s.uid, lambda s: s.slug):
        exact = [s for s in pool if key(s) == wanted]
        if len(exact) == 1:
            return exact[0]
    folded = name_key(wanted)
    by_name = [s for s in pool if name_key(s.name) == folded]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        listed = ", ".join(f"{s.name} ({s.uid})" for s in by_name)
        raise ConfigError("person", f"'{person}' matches several subjects: {listed}; give the UID")
    raise ConfigError("person", f"no PhotoPrism subject is named '{person}'; {closest_subjects(pool, folded)}")


def closest_subjects(pool: Sequence[Subject], folded: str, limit: int = 5) -> str:
    """The subjects whose names are like ``folded``, most photos first; else the ones with most photos."""
    named = [s for s in pool if s.name]
    keys = {name_key(s.name): s for s in named}
    similar = {keys[k] for k in difflib.get_close_matches(folded, list(keys), n=limit, cutoff=0.4)}
    by_photos = sorted(similar or named, key=lambda s: (-s.photo_count, name_key(s.name)))[:limit]
    listed = ", ".join(f"{s.name} ({s.slug}, {s.photo_count} photos)" for s in by_photos)
    if not listed:
        return "the library has no named subjects"
    return f"closest: {listed}" if similar else f"closest: none is similar; the subjects with most photos: {listed}"


# -- markers ---------------------------------------------------------------------------------------------
_MARKERS_SQL = sa.text(
    "SELECT m.marker_uid, m.file_uid, m.marker_src, m.marker_review, m.marker_invalid, m.subj_uid, m.subj_src,"
    " m.x, m.y, m.w, m.h, m.q, m.size, m.score, m.face_dist, m.embeddings_json,"
    " f.file_uid AS f_file_uid, f.file_name, f.file_root, f.file_hash, f.file_width, f.file_height,"
    " f.file_orientation, f.file_missing, f.deleted_at AS file_deleted_at, f.photo_uid,"
    " p.taken_at, p.deleted_at AS photo_deleted_at"
    " FROM markers m"
    " LEFT JOIN files f ON f.file_uid = m.file_uid"
    " LEFT JOIN photos p ON p.id = f.photo_id"
    " WHERE m.subj_uid = :subj_uid AND m.marker_type = :face"
    " ORDER BY m.marker_uid"
)

_NEIGHBOURS_SQL = sa.text(
    "SELECT n.marker_uid, n.file_uid, n.subj_uid, n.x, n.y, n.w, n.h FROM markers n"
    " WHERE n.marker_type = :face AND n.marker_invalid = 0 AND n.file_uid IN"
    " (SELECT m.file_uid FROM markers m WHERE m.subj_uid = :subj_uid AND m.marker_type = :face)"
    " ORDER BY n.file_uid, n.marker_uid"
)


def exclusion_reason(row: Mapping[str, Any]) -> str:
    """PhotoPrism's own filters, as a reason a user can read ('' when the marker is usable)."""
    if as_int(row["marker_invalid"]):
        return "rejected in PhotoPrism (marker_invalid)"
    if not as_text(row["f_file_uid"]):
        return "marker points to a file PhotoPrism no longer has"
    if row["file_deleted_at"] is not None:
        return "file deleted in PhotoPrism"
    if as_int(row["file_missing"]):
        return "file marked missing in PhotoPrism"
    if row["photo_deleted_at"] is not None:
        return "photo archived in PhotoPrism"
    if as_text(row["photo_uid"]) == "":
        return "file belongs to no photo"
    return ""


def _face_dist(value: Any) -> float:
    try:
        number = as_float(value)
    except (TypeError, ValueError):
        return -1.0
    return number if math.isfinite(number) else -1.0


def photoprism_embedding(value: Any) -> str:
    """PhotoPrism's embeddings_json (a JSON list of embeddings) -> its first embedding as base64 float32,
    '' when there is none or it cannot be read (the identity check then has nothing to compare)."""
    try:
        data = json.loads(as_text(value) or "null")
        vector = np.asarray(data[0] if data and isinstance(data[0], list) else data, dtype=np.float32)
    except (TypeError, ValueError, IndexError, KeyError):
        return ""
    if vector.ndim != 1 or vector.size < 2 or not np.all(np.isfinite(vector)):
        return ""
    return base64.b64encode(vector.tobytes()).decode("ascii")


_INT_COLUMNS = ("marker_review", "score", "q", "size", "file_width", "file_height", "file_orientation")
_BOX_COLUMNS = ("x", "y", "w", "h")


def marker_from_row(row: Mapping[str, Any]) -> MarkerRow:
    """A marker row as the export records it: any value a column can hold gives a row, never an error.

    A value that cannot be what PhotoPrism stores (text in a number column) excludes the marker with a
    reason naming the column; PhotoPrism's own filters come first, as they say more.
    """
    problems: list[str] = []

    def number(column: str, convert):
        try:
            return convert(row[column])
        except ValueProblem as problem:
            problems.append(f"column {column} holds {problem}")
            return convert(None)

    ints = {column: number(column, as_int) for column in _INT_COLUMNS}
    box = {column: number(column, as_float) for column in _BOX_COLUMNS}
    marker_uid = as_text(row["marker_uid"])
    reason = exclusion_reason(row) or (problems[0] if problems else "")
    if not marker_uid:
        reason = reason or "marker has no UID"
    return marker_row(
        marker_uid,
        reason,
        file_uid=as_text(row["file_uid"]),
        photo_uid=as_text(row["photo_uid"]),
        subj_uid=as_text(row["subj_uid"]),
        marker_src=as_text(row["marker_src"]),
        subj_src=as_text(row["subj_src"]),
        file_root=as_text(row["file_root"]) or "/",
        file_name=as_text(row["file_name"]),
        file_hash=as_text(row["file_hash"]),
        taken_at=as_timestamp(row["taken_at"]),
        **ints,
        **box,
        face_dist=_face_dist(row.get("face_dist")),
        embedding=photoprism_embedding(row.get("embeddings_json")),
    )


def _exclude_stem_collisions(markers: list[MarkerRow]) -> None:
    """Two UIDs that map to one file stem (a 64-bit digest collision): the later one is excluded."""
    owners: dict[str, str] = {}
    for marker in markers:
        owner = owners.setdefault(marker.stem, marker.marker_uid)
        if owner != marker.marker_uid and marker.usable:
            marker.status, marker.reason = EXCLUDED, f"file stem {marker.stem} is already used by marker {owner!r}"


def _neighbour_from_row(row: Any) -> Neighbour:
    def coordinate(value: Any) -> float:
        try:
            return as_float(value)
        except ValueProblem:
            return math.nan  # selection skips a neighbour box it cannot place

    return Neighbour(
        as_text(row.marker_uid),
        as_text(row.file_uid),
        as_text(row.subj_uid),
        *(coordinate(getattr(row, column)) for column in _BOX_COLUMNS),
    )


def read_export(engine: sa.Engine, person: str, url_for_messages: str = "") -> Export:
    """Resolve ``person`` and read their markers and the other faces of their files, in one connection."""
    try:
        with engine.connect() as conn:
            subjects = [
                Subject(as_text(r.subj_uid), as_text(r.subj_slug), as_text(r.subj_name), safe_int(r.photo_count))
                for r in conn.execute(_SUBJECTS_SQL)
            ]
            subject = resolve_person(subjects, person)
            params = {"subj_uid": subject.uid, "face": "face"}
            markers = [marker_from_row(r._mapping) for r in conn.execute(_MARKERS_SQL, params)]
            neighbours = [_neighbour_from_row(r) for r in conn.execute(_NEIGHBOURS_SQL, params)]
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise explain_db_error(exc, url_for_messages or str(engine.url), MANAGER) from None
    _exclude_stem_collisions(markers)
    return Export(subject, markers, neighbours)


# -- PhotoPrism's folders --------------------------------------------------------------------------------
def roots(source: Section) -> dict[str, str]:
    """PhotoPrism's file_root values and the folders they stand for on this machine."""
    return {"/": source.originals, "sidecar": source.sidecar, "import": source.import_}


def check_originals(folder: str) -> None:
    """A ``source.originals`` that is not a folder is a config error, not a run of 'missing' faces."""
    try:
        is_folder = Path(folder).expanduser().is_dir()
    except (OSError, ValueError):
        is_folder = False
    if not is_folder:
        raise ConfigError("source.originals", f"no folder at {folder!r}: give the folder of PhotoPrism's originals")
