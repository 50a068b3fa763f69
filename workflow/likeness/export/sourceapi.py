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

from collections.abc import Iterable

import sqlalchemy as sa

from likeness.config import Section
from likeness.errors import ConfigError
from likeness.export import database, photoprism
from likeness.export.database import explain_db_error, mask_url
from likeness.export.records import Export
from likeness.tables import MANAGER_NAMES

KINDS = ("photoprism", "immich", "digikam")


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
    elif kind == "immich":
        from likeness.export import immich

        export = immich.read_export(engine, person, source)
    else:
        from likeness.export import digikam

        export = digikam.read_export(engine, person, source)
    export.manager = kind
    return export
