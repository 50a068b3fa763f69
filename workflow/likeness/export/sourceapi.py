"""One export interface over the photo managers likeness reads: PhotoPrism, Immich and digiKam.

Every source answers the same three questions, read-only, in one connection:

* who the person is (``Subject``): by name (any case, any Unicode normal form) or by its id;
* the person's face regions (``MarkerRow``): the box as fractions of the original's *displayed* image
  (EXIF orientation applied), the file as a root key plus a root-relative path, the displayed size, the
  orientation, the date and the quality hints the manager has; each row that cannot be used keeps its
  reason;
* the other faces in the same files (``Neighbour``), for crowding checks.

Everything after the export reads only these records (``results/export/markers.tsv``), so the crop,
select, caption and train stages are the same for every source. ``source.kind`` picks the reader; when it
is left out, the tables in the database say which manager wrote it.
"""

from __future__ import annotations

import difflib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath

import sqlalchemy as sa

from likeness.config import Section
from likeness.errors import ConfigError
from likeness.export import database, photoprism
from likeness.export.database import explain_db_error, mask_url
from likeness.export.records import Export, Subject, name_key

KINDS = ("photoprism", "immich", "digikam")
MANAGER_NAMES = {"photoprism": "PhotoPrism", "immich": "Immich", "digikam": "digiKam"}


# -- the person ------------------------------------------------------------------------------------------
def resolve_subject(
    subjects: Iterable[Subject], person: str, manager: str, id_key: Callable[[str], str] = str.strip
) -> Subject:
    """The subject ``person`` names: its id (compared through ``id_key``), or its name (records.name_key).

    Several subjects with the same name (Immich keeps people per user) ask for the id; no match lists the
    closest names. Each error is one line naming the config key.
    """
    pool = list(subjects)
    wanted_id = id_key(person)
    # One subject may come in several rows (Immich v3.2: one name per user for the same person group).
    by_id = _first_per_uid(s for s in pool if wanted_id and id_key(s.uid) == wanted_id)
    if len(by_id) == 1:
        return by_id[0]
    wanted = name_key(person)
    by_name = _first_per_uid(s for s in pool if s.name and name_key(s.name) == wanted)
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        listed = ", ".join(f"{s.name} ({s.uid})" for s in by_name)
        raise ConfigError("person", f"'{person}' matches several {manager} people: {listed}; give the id")
    names = {name_key(s.name): s for s in pool if s.name}
    close = difflib.get_close_matches(wanted, list(names), n=5, cutoff=0.4)
    hint = ", ".join(f"{names[n].name} ({names[n].uid})" for n in close) or "none similar"
    raise ConfigError("person", f"no {manager} person is named '{person}'; closest: {hint}")


def _first_per_uid(subjects: Iterable[Subject]) -> list[Subject]:
    first: dict[str, Subject] = {}
    for subject in subjects:
        first.setdefault(subject.uid, subject)
    return list(first.values())


# -- boxes -----------------------------------------------------------------------------------------------
def fractions_for_pixels(x0: int, y0: int, x1: int, y1: int, width: int, height: int) -> tuple[float, ...]:
    """(x, y, w, h) fractions from which PhotoPrism's float32 truncation gives back exactly [x0, x1) x [y0, y1).

    The left and top edges sit half a pixel inside their pixel: ``int(W * x)`` then lands on ``x0`` however
    float32 rounds, where ``x0 / W`` could land on ``x0 - 1``. This is what makes a box read from Immich or
    digiKam crop the same pixels as the same box read from PhotoPrism.
    """
    return ((x0 + 0.5) / width, (y0 + 0.5) / height, (x1 - x0) / width, (y1 - y0) / height)


# -- paths -----------------------------------------------------------------------------------------------
def split_by_path_map(path_map: Mapping[str, str], stored_path: str) -> tuple[str, str]:
    """(prefix, relative path) for a path the manager stored, by the longest ``source.path_map`` prefix.

    ('', '') when no prefix covers it. The prefix becomes the file's root key, the folder it maps to the
    root on this machine, so ``photos.resolve_photo`` keeps the path inside that folder.
    """
    path = PurePosixPath(stored_path)
    best = ""
    for prefix in path_map:
        clean = prefix.rstrip("/") or "/"
        if (path == PurePosixPath(clean) or PurePosixPath(clean) in path.parents) and len(clean) > len(best):
            best = clean
    if not best:
        return "", ""
    return best, str(path.relative_to(best))


def path_map_roots(path_map: Mapping[str, str]) -> dict[str, str]:
    return {(prefix.rstrip("/") or "/"): folder for prefix, folder in path_map.items()}


# -- which manager wrote this database -------------------------------------------------------------------
def detect_kind(table_names: Iterable[str]) -> str:
    """'photoprism', 'immich' or 'digikam' from the tables; '' when none fits."""
    tables = {t.lower() for t in table_names}
    if {"markers", "subjects", "files"} <= tables:
        return "photoprism"
    if {"asset_face", "person"} <= tables or {"asset_faces", "person"} <= tables:
        return "immich"
    if {"imagetagproperties", "albumroots", "tags"} <= tables:
        return "digikam"
    return ""


def is_postgres(url: str) -> bool:
    """A PostgreSQL URL (Immich); SQLite paths are taken literally (database.sqlite_path_from_url)."""
    return database.sqlite_path_from_url(url) is None and url.lower().startswith(("postgresql:", "postgresql+"))


def make_engine(source: Section) -> sa.Engine:
    """A read-only engine for ``source.url``: SQLite and MariaDB as for PhotoPrism, PostgreSQL for Immich."""
    if is_postgres(source.url):
        from likeness.export import immich

        return immich.make_engine(source.url, source.password_env, source.option_file)
    return database.make_engine(source.url, source.password_env, source.option_file)


def likely_manager(url: str, kind: str) -> str:
    """The manager to name in an error before the tables could be read: the kind, else a guess from the URL."""
    if kind:
        return MANAGER_NAMES[kind]
    if is_postgres(url):
        return MANAGER_NAMES["immich"]
    if "digikam" in url.lower():
        return MANAGER_NAMES["digikam"]
    return MANAGER_NAMES["photoprism"]


def table_names(engine: sa.Engine, url: str, kind: str) -> list[str]:
    try:
        return sa.inspect(engine).get_table_names()
    except sa.exc.SQLAlchemyError as exc:
        raise explain_db_error(exc, url, likely_manager(url, kind)) from None


def resolve_kind(source: Section, engine: sa.Engine) -> str:
    """``source.kind``, or the kind the tables show; a kind the tables contradict is one line."""
    found = detect_kind(table_names(engine, source.url, source.kind))
    kind = source.kind or found
    if not kind:
        raise ConfigError(
            "source.kind",
            f"the database at {mask_url(source.url)} has none of the "
            "tables of PhotoPrism (markers), Immich (asset_face) or digiKam (ImageTagProperties); "
            "check source.url or set source.kind",
        )
    if found and found != kind:
        raise ConfigError(
            "source.kind", f"is '{kind}' but the database has {MANAGER_NAMES[found]}'s tables (set it to '{found}')"
        )
    if kind == "photoprism":
        if not source.originals:
            raise ConfigError("source.originals", "is required for a PhotoPrism library (its originals folder)")
        photoprism.check_originals(source.originals)
    return kind


def read_export(source: Section, person: str) -> Export:
    """The export of ``person`` from whichever manager ``source`` (the config's source settings) points at."""
    if source.kind == "photoprism" or (not source.kind and source.originals):
        # source.originals is PhotoPrism's: a wrong folder is a config error before any database is opened.
        photoprism.check_originals(source.originals)
    engine = make_engine(source)
    kind = resolve_kind(source, engine)
    if kind == "photoprism":
        export = photoprism.read_export(engine, person, source.url)
        export.roots = photoprism.roots(source)
        return export
    if kind == "immich":
        from likeness.export import immich

        return immich.read_export(engine, person, source)
    from likeness.export import digikam

    return digikam.read_export(engine, person, source)


def roots(export: Export) -> dict[str, str]:
    """Root key -> folder on this machine, for ``photos.resolve_photo``."""
    return dict(export.roots or {})


def unquote_volume_path(identifier: str) -> str:
    """A folder the identifier names itself ('volumeid:?path=/home/me', 'networkshareid:?mountpath=/mnt/nas')."""
    _, _, query = identifier.partition("?")
    values = urllib.parse.parse_qs(query)
    return (values.get("path") or values.get("mountpath") or [""])[0]
