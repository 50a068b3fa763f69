"""Read a person's face markers from PhotoPrism's database, read-only, MariaDB or SQLite.

One query for the subjects (to resolve the person), one for the person's face markers with their file
and photo, one for every other face in the same files (selection needs them to judge crowding).
PhotoPrism's own filters are applied in Python rather than in SQL so that every row the person has is
listed with the reason it is or is not used.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import math
import os
import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .atomic import write_if_changed
from .errors import ConfigError, SourceError

DEFAULT_PASSWORD_ENV = "LIKENESS_DB_PASSWORD"


# -- connection -----------------------------------------------------------------------------------------
def make_engine(
    url: str, password_env: str = DEFAULT_PASSWORD_ENV, option_file: str = "", lock_timeout: float = 10.0
) -> sa.Engine:
    """A read-only engine for ``source.url``.

    SQLite is opened through a ``file:...?mode=ro`` URI, so not even a journal can be written. MariaDB
    sessions are set to READ ONLY transactions on connect. The password never comes from the URL: it is
    read from the environment variable ``password_env`` or from a MySQL option file.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError("source.url", f"not a SQLAlchemy URL ({exc})") from None
    if parsed.password:
        raise ConfigError(
            "source.url",
            f"must not contain a password; put it in the environment variable {password_env} "
            "(source.password_env) or in a MySQL option file (source.option_file)",
        )
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed.database or "", lock_timeout)
    if backend in ("mysql", "mariadb"):
        return _mysql_engine(parsed, password_env, option_file)
    raise ConfigError("source.url", f"unsupported database '{backend}': use mysql+mysqldb:// or sqlite:///")


def _sqlite_engine(database: str, lock_timeout: float) -> sa.Engine:
    if not database or database == ":memory:":
        raise ConfigError("source.url", "give the path of PhotoPrism's index.db: sqlite:///path/to/index.db")
    path = Path(database).expanduser().resolve()
    if not path.is_file():
        raise ConfigError("source.url", f"no SQLite database at {path}")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        # PhotoPrism may be writing: wait for its lock a while before giving up with a clear message.
        return sqlite3.connect(uri, uri=True, timeout=lock_timeout, check_same_thread=False)

    return sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)


def _mysql_engine(parsed: sa.URL, password_env: str, option_file: str) -> sa.Engine:
    connect_args: dict[str, Any] = {"connect_timeout": 10}
    if "charset" not in parsed.query:
        connect_args["charset"] = "utf8mb4"
    password = os.environ.get(password_env, "")
    if password:
        connect_args["password"] = password
    if option_file:
        path = Path(option_file).expanduser()
        if not path.is_file():
            raise ConfigError("source.option_file", f"no MySQL option file at {path}")
        connect_args["read_default_file"] = str(path)
    engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)

    @sa.event.listens_for(engine, "connect")
    def _read_only(dbapi_connection, _record) -> None:  # every session refuses writes
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()

    return engine


def _explain_db_error(exc: Exception, url: str) -> SourceError:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    safe_url = sa.engine.make_url(url).render_as_string(hide_password=True)
    if "locked" in text:
        return SourceError(f"the PhotoPrism database {safe_url} is locked by another process: {text}")
    return SourceError(f"cannot read the PhotoPrism database {safe_url}: {text}")


# -- values as the drivers return them -------------------------------------------------------------------
def as_text(value: Any) -> str:
    """VARBINARY columns arrive as bytes (mysqlclient) or as numbers (SQLite's NUMERIC affinity)."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_int(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bytes):
        value = value.decode()
    return int(value)


def as_float(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)


def as_timestamp(value: Any) -> str:
    """``taken_at`` as ISO 8601 UTC text ('' when unknown): MariaDB gives datetime, SQLite text."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        text = as_text(value).strip().replace(" ", "T", 1)
        if "." in text:  # SQLite may carry nanoseconds, which fromisoformat does not take
            head, _, tail = text.partition(".")
            zone = "".join(ch for ch in tail if not ch.isdigit())
            text = head + zone
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return ""
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- subjects --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    uid: str
    slug: str
    name: str


_SUBJECTS_SQL = sa.text("SELECT subj_uid, subj_slug, subj_name FROM subjects WHERE deleted_at IS NULL")


def resolve_person(subjects: Iterable[Subject], person: str) -> Subject:
    """The subject that ``person`` names: its UID, its slug, or its name (case-insensitive).

    Matching happens in Python so that names with quotes, '%', ';' or '--' are plain strings and the
    comparison is the same on MariaDB (case-insensitive collation) and SQLite (case-sensitive).
    """
    wanted = person.strip()
    pool = list(subjects)
    for key in (lambda s: s.uid, lambda s: s.slug):
        exact = [s for s in pool if key(s) == wanted]
        if len(exact) == 1:
            return exact[0]
    folded = wanted.casefold()
    by_name = [s for s in pool if s.name.casefold() == folded]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        listed = ", ".join(f"{s.name} ({s.uid})" for s in by_name)
        raise ConfigError("person", f"'{person}' matches several subjects: {listed}; give the UID")
    names = {s.name.casefold(): s for s in pool if s.name}
    close = difflib.get_close_matches(folded, list(names), n=5, cutoff=0.4)
    hint = ", ".join(f"{names[n].name} ({names[n].slug})" for n in close) or "none similar"
    raise ConfigError("person", f"no PhotoPrism subject is named '{person}'; closest: {hint}")


# -- markers ---------------------------------------------------------------------------------------------
@dataclass
class MarkerRow:
    """One face marker of the person with what PhotoPrism knows about its file and photo."""

    marker_uid: str
    file_uid: str
    photo_uid: str
    subj_uid: str
    marker_src: str
    subj_src: str
    marker_review: int
    score: int
    q: int
    size: int
    x: float
    y: float
    w: float
    h: float
    file_root: str
    file_name: str
    file_hash: str
    file_width: int
    file_height: int
    file_orientation: int
    taken_at: str
    status: str = "ok"  # "ok" or "excluded"
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Neighbour:
    """Any valid face marker in one of the person's files (named or not): for crowding checks."""

    marker_uid: str
    file_uid: str
    subj_uid: str
    x: float
    y: float
    w: float
    h: float


_MARKERS_SQL = sa.text(
    "SELECT m.marker_uid, m.file_uid, m.marker_src, m.marker_review, m.marker_invalid, m.subj_uid, m.subj_src,"
    " m.x, m.y, m.w, m.h, m.q, m.size, m.score,"
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


def _marker_from_row(row: Mapping[str, Any]) -> MarkerRow:
    reason = exclusion_reason(row)
    return MarkerRow(
        marker_uid=as_text(row["marker_uid"]),
        file_uid=as_text(row["file_uid"]),
        photo_uid=as_text(row["photo_uid"]),
        subj_uid=as_text(row["subj_uid"]),
        marker_src=as_text(row["marker_src"]),
        subj_src=as_text(row["subj_src"]),
        marker_review=as_int(row["marker_review"]),
        score=as_int(row["score"]),
        q=as_int(row["q"]),
        size=as_int(row["size"]),
        x=as_float(row["x"]),
        y=as_float(row["y"]),
        w=as_float(row["w"]),
        h=as_float(row["h"]),
        file_root=as_text(row["file_root"]) or "/",
        file_name=as_text(row["file_name"]),
        file_hash=as_text(row["file_hash"]),
        file_width=as_int(row["file_width"]),
        file_height=as_int(row["file_height"]),
        file_orientation=as_int(row["file_orientation"]),
        taken_at=as_timestamp(row["taken_at"]),
        status="excluded" if reason else "ok",
        reason=reason,
    )


@dataclass
class Export:
    subject: Subject
    markers: list[MarkerRow]
    neighbours: list[Neighbour]

    @property
    def usable(self) -> list[MarkerRow]:
        return [m for m in self.markers if m.usable]


def read_export(engine: sa.Engine, person: str, url_for_messages: str = "") -> Export:
    """Resolve ``person`` and read their markers and the other faces of their files, in one connection."""
    try:
        with engine.connect() as conn:
            subjects = [
                Subject(as_text(r.subj_uid), as_text(r.subj_slug), as_text(r.subj_name))
                for r in conn.execute(_SUBJECTS_SQL)
            ]
            subject = resolve_person(subjects, person)
            params = {"subj_uid": subject.uid, "face": "face"}
            markers = [_marker_from_row(r._mapping) for r in conn.execute(_MARKERS_SQL, params)]
            neighbours = [
                Neighbour(
                    as_text(r.marker_uid),
                    as_text(r.file_uid),
                    as_text(r.subj_uid),
                    as_float(r.x),
                    as_float(r.y),
                    as_float(r.w),
                    as_float(r.h),
                )
                for r in conn.execute(_NEIGHBOURS_SQL, params)
            ]
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise _explain_db_error(exc, url_for_messages or str(engine.url)) from None
    return Export(subject, markers, neighbours)


# -- where the photo is on disk ----------------------------------------------------------------------------
def roots_from_config(source_config: Mapping[str, str]) -> dict[str, str]:
    """PhotoPrism's file_root values and the folders they stand for on this machine."""
    return {
        "/": source_config["originals"],
        "sidecar": source_config.get("sidecar", ""),
        "import": source_config.get("import", ""),
    }


def resolve_photo(roots: Mapping[str, str], file_root: str, file_name: str) -> tuple[str, str]:
    """(path, '') for a photo inside its root folder, or ('', reason) when it must not or cannot be read.

    ``file_name`` comes from the database: it must stay relative to its root, and a symlink must not lead
    out of the root, so that a crafted or stale row never makes likeness read files it was not given.
    """
    root = roots.get(file_root or "/")
    if not root:
        return "", f"no folder configured for PhotoPrism root '{file_root}'"
    if not file_name or "\x00" in file_name:
        return "", "file_name is empty or invalid"
    if file_name.startswith(("/", "\\")) or Path(file_name).is_absolute():
        return "", f"file_name '{file_name}' is an absolute path; PhotoPrism stores paths relative to a root"
    if ".." in Path(file_name).parts:
        return "", f"file_name '{file_name}' escapes its root ('..')"
    path = Path(root) / file_name
    real_root = Path(root).resolve()
    real_path = path.resolve()
    if real_path != real_root and real_root not in real_path.parents:
        return "", f"file_name '{file_name}' resolves outside its root (symlink to {real_path})"
    if not real_path.is_file():
        return "", f"photo missing on disk: {path}"
    return str(path), ""


# -- tables under results/ -------------------------------------------------------------------------------
MARKER_COLUMNS = [f.name for f in fields(MarkerRow)]
NEIGHBOUR_COLUMNS = [f.name for f in fields(Neighbour)]


def _tsv(columns: list[str], records: Iterable[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    return buffer.getvalue().encode("utf-8")


def markers_tsv(markers: Iterable[MarkerRow]) -> bytes:
    return _tsv(MARKER_COLUMNS, (asdict(m) for m in markers))


def neighbours_tsv(neighbours: Iterable[Neighbour]) -> bytes:
    return _tsv(NEIGHBOUR_COLUMNS, (asdict(n) for n in neighbours))


def write_tables(export: Export, markers_path: str, neighbours_path: str) -> None:
    """Write what the database said; unchanged tables keep their mtime so nothing downstream re-runs."""
    write_if_changed(markers_path, markers_tsv(export.markers))
    write_if_changed(neighbours_path, neighbours_tsv(export.neighbours))


def export_digest(export: Export) -> str:
    """A short content digest of what was read: the export rule's only param (no data in metadata)."""
    digest = hashlib.sha256(markers_tsv(export.markers) + neighbours_tsv(export.neighbours))
    return digest.hexdigest()[:16]


def export_summary(export: Export) -> str:
    excluded = Counter(m.reason for m in export.markers if not m.usable)
    parts = ", ".join(f"{reason}: {count}" for reason, count in sorted(excluded.items()))
    return (
        f"{export.subject.name} ({export.subject.uid}): {len(export.markers)} face markers, "
        f"{len(export.usable)} usable" + (f"; excluded {parts}" if parts else "")
    )


def run_export_job(export: Export, markers_path: str, neighbours_path: str, log_path: str) -> None:
    """The export rule's body: the two tables and a one-line summary in the log."""
    write_tables(export, markers_path, neighbours_path)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(export_summary(export) + "\n")


# -- the export, read back (a job on another machine, a training bundle) --------------------------------
def _typed(kind: Any, text: str) -> Any:
    """A TSV cell as the dataclass field's type ('' is NaN for floats, as markers_tsv writes NaN)."""
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", "str")
    if name == "int":
        return int(text) if text else 0
    if name == "float":
        return float(text) if text else math.nan
    return text


def _read_rows(path: Path, cls: type) -> list[Any]:
    kinds = {f.name: f.type for f in fields(cls)}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        return [cls(**{k: _typed(kinds[k], v or "") for k, v in row.items() if k in kinds}) for row in reader]


def read_tables(export_dir: str | os.PathLike[str], person: str) -> Export:
    """What the main process exported (markers.tsv, neighbours.tsv), for a parse without the database."""
    folder = Path(export_dir)
    markers_path, neighbours_path = folder / "markers.tsv", folder / "neighbours.tsv"
    for path in (markers_path, neighbours_path):
        if not path.is_file():
            raise SourceError(f"{path} is missing: run the workflow once where the database is, which writes it")
    try:
        markers = _read_rows(markers_path, MarkerRow)
        neighbours = _read_rows(neighbours_path, Neighbour)
    except (OSError, ValueError, TypeError) as error:
        raise SourceError(f"{folder}: the exported tables cannot be read ({error})") from None
    subject_uid = markers[0].subj_uid if markers else ""
    return Export(Subject(subject_uid, "", person), markers, neighbours)
