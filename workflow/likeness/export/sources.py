"""Read a person's face markers from PhotoPrism's database, read-only, MariaDB or SQLite.

One query for the subjects (to resolve the person), one for the person's face markers with their file
and photo, one for every other face in the same files (selection needs them to judge crowding).
PhotoPrism's own filters are applied in Python rather than in SQL so that every row the person has is
listed with the reason it is or is not used.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import math
import os
import re
import sqlite3
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.errors import ConfigError, SourceError
from likeness.names import file_stem

DEFAULT_PASSWORD_ENV = "LIKENESS_DB_PASSWORD"


# -- connection -----------------------------------------------------------------------------------------
def make_engine(
    url: str, password_env: str = DEFAULT_PASSWORD_ENV, option_file: str = "", lock_timeout: float = 10.0
) -> sa.Engine:
    """A read-only engine for ``source.url``.

    SQLite is opened through a ``file:...?mode=ro`` URI, so not even a journal can be written. MariaDB
    sessions are set to READ ONLY transactions on connect. The password never comes from the URL (neither
    its user part nor its query): it is read from the environment variable ``password_env`` or from a
    MySQL option file.
    """
    sqlite_path = sqlite_path_from_url(url)
    if sqlite_path is not None:
        return _sqlite_engine(sqlite_path, lock_timeout)
    parsed = parse_server_url(url, password_env)
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        return _mysql_engine(parsed, password_env, option_file)
    raise ConfigError("source.url", f"unsupported database '{backend}': use mysql+mysqldb:// or sqlite:///")


# Query parameters that carry a secret in some driver's URL syntax (mysqlclient: passwd, password).
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_SQLITE_PREFIX = re.compile(r"^sqlite(\+pysqlite)?:///", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` fit for a message: a password in it and every secret-bearing query value become ``***``.

    Text-based, so that it also masks URLs no parser accepts and leaves the rest exactly as written.
    """
    masked = _URL_PASSWORD.sub(r"\1***@", url)
    return _URL_SECRET_PARAMETER.sub(r"\1***", masked)


_URL_PASSWORD = re.compile(r"(^[^/?#]*//[^/?#:@]*:)[^/?#]*@")
_URL_SECRET_PARAMETER = re.compile(r"([?&;][^=&#;]*(?:pass|pwd|secret|token)[^=&#;]*=)[^&#;]*", re.IGNORECASE)


def sqlite_path_from_url(url: str) -> str | None:
    """The database file of an SQLite URL, or None for any other URL.

    Everything after ``sqlite:///`` is the path, taken literally (``?``, ``#`` and ``%`` are legal in file
    names); only when no file has that literal name is a ``?...`` tail read as a URL query and dropped.
    """
    match = _SQLITE_PREFIX.match(url)
    if not match:
        return None
    path = url[match.end() :]
    if "?" in path and not Path(path).expanduser().exists():
        head, _, query = path.partition("?")
        secret = [key for key, _ in urllib.parse.parse_qsl(query) if _SECRET_QUERY_KEY.search(key)]
        if secret:
            raise ConfigError("source.url", f"must not carry a password (query parameter '{secret[0]}')")
        path = head
    return path


def parse_server_url(url: str, password_env: str = DEFAULT_PASSWORD_ENV) -> sa.URL:
    """``source.url`` of a database server, checked: parseable, a valid port, no password anywhere in it."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise ConfigError("source.url", f"not a valid database URL: {mask_url(url)}") from None
    where = (
        "put it in the environment variable "
        f"{password_env} (source.password_env) or in a MySQL option file (source.option_file)"
    )
    if parsed.password is not None and parsed.password != "":
        raise ConfigError("source.url", f"must not contain a password; {where}")
    secret = [key for key in parsed.query if _SECRET_QUERY_KEY.search(key)]
    if secret:
        raise ConfigError("source.url", f"must not carry a password (query parameter '{secret[0]}'); {where}")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ConfigError("source.url", f"port {parsed.port} is not between 1 and 65535")
    return parsed


def _sqlite_engine(database: str, lock_timeout: float) -> sa.Engine:
    if not database or database == ":memory:":
        raise ConfigError("source.url", "give the path of PhotoPrism's index.db: sqlite:///path/to/index.db")
    path = Path(database).expanduser().resolve()
    if not path.is_file():
        raise ConfigError("source.url", f"no SQLite database at {path}")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        # PhotoPrism may be writing: wait for its lock a while before giving up with a clear message.
        connection = sqlite3.connect(uri, uri=True, timeout=lock_timeout, check_same_thread=False)
        # SQLite keeps whatever bytes it is given in a TEXT column; one name that is not UTF-8 must not
        # stop the whole query (sqlite3's default raises for it).
        connection.text_factory = _decode_text
        return connection

    return sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def credential_args(password_env: str, option_file: str, file_arg: str, file_kind: str) -> dict[str, str]:
    """The driver's connect arguments for the password: from the environment variable ``password_env``
    and/or a credentials file (``source.option_file``), never from the URL or config.yaml."""
    arguments: dict[str, str] = {}
    password = os.environ.get(password_env, "")
    if password:
        arguments["password"] = password
    if option_file:
        path = Path(option_file).expanduser()
        if not path.is_file():
            raise ConfigError("source.option_file", f"no {file_kind} at {path}")
        arguments[file_arg] = str(path)
    return arguments


def _mysql_engine(parsed: sa.URL, password_env: str, option_file: str) -> sa.Engine:
    connect_args: dict[str, Any] = {"connect_timeout": 10}
    if "charset" not in parsed.query:
        connect_args["charset"] = "utf8mb4"
    connect_args.update(credential_args(password_env, option_file, "read_default_file", "MySQL option file"))
    engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)

    @sa.event.listens_for(engine, "connect")
    def _read_only(dbapi_connection, _record) -> None:  # every session refuses writes
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()

    return engine


def _explain_db_error(exc: Exception, url: str) -> SourceError:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    safe_url = mask_url(url)
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


class ValueProblem(ValueError):
    """A column holds a value that cannot be what PhotoPrism stores there."""


def _number_text(value: Any) -> str:
    text = as_text(value).strip()
    return text if len(text) <= 40 else text[:37] + "..."


def as_int(value: Any) -> int:
    """An integer column (0 when empty); text holding an integer or a whole number is read too."""
    if value is None or value == "" or value == b"":
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        number = float(as_text(value).strip()) if not isinstance(value, float) else value
    except (ValueError, OverflowError):
        raise ValueProblem(f"'{_number_text(value)}', not a number") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueProblem(f"'{_number_text(value)}', not a whole number")
    return int(number)


def as_float(value: Any) -> float:
    """A FLOAT column (NaN when empty); text holding a number is read too (SQLite keeps what it is given)."""
    if value is None or value == "" or value == b"":
        return math.nan
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(value)
    try:
        return float(as_text(value).strip())
    except (ValueError, OverflowError):
        raise ValueProblem(f"'{_number_text(value)}', not a number") from None


def as_timestamp(value: Any) -> str:
    """``taken_at`` as ISO 8601 UTC text ('' when unknown): MariaDB gives datetime, SQLite text."""
    if value is None or value == "":
        return ""
    try:
        return _timestamp(value)
    except (ValueError, OverflowError, TypeError):
        return ""  # a date PhotoPrism could not have written (year 0, garbage): unknown, like an empty one


def _timestamp(value: Any) -> str:
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
    photo_count: int = 0


_SUBJECTS_SQL = sa.text("SELECT subj_uid, subj_slug, subj_name, photo_count FROM subjects WHERE deleted_at IS NULL")


def name_key(name: str) -> str:
    """How names are compared: Unicode NFC (macOS keyboards type NFD), case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


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
@dataclass
class MarkerRow:
    """One face marker of the person with what PhotoPrism knows about its file and photo."""

    marker_uid: str
    stem: str  # the face's file names (likeness.names.file_stem): the UID itself is any byte string
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
    path: str = ""  # the photo on this machine (locate_photos); '' until located or when it cannot be
    # "ok"; "excluded" by PhotoPrism's filters or an unusable value (no crop job); "unreachable": the
    # photo's path cannot be read (its crop job records the same reason)
    status: str = "ok"
    reason: str = ""
    # PhotoPrism's own face recognition, recorded beside likeness's identity check (likeness.select.identity):
    # the marker's distance to its face cluster (-1: none) and its first embedding, base64 float32.
    face_dist: float = -1.0
    embedding: str = ""

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    @property
    def croppable(self) -> bool:
        """Whether the face gets a crop job: its record then says what became of it."""
        return self.status in ("ok", UNREACHABLE)


UNREACHABLE = "unreachable"


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


def _marker_from_row(row: Mapping[str, Any]) -> MarkerRow:
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
    return MarkerRow(
        marker_uid=marker_uid,
        stem=file_stem(marker_uid),
        file_uid=as_text(row["file_uid"]),
        photo_uid=as_text(row["photo_uid"]),
        subj_uid=as_text(row["subj_uid"]),
        marker_src=as_text(row["marker_src"]),
        subj_src=as_text(row["subj_src"]),
        file_root=as_text(row["file_root"]) or "/",
        file_name=as_text(row["file_name"]),
        file_hash=as_text(row["file_hash"]),
        taken_at=as_timestamp(row["taken_at"]),
        status="excluded" if reason else "ok",
        reason=reason,
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
            marker.status, marker.reason = "excluded", f"file stem {marker.stem} is already used by marker {owner!r}"


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


def _count(value: Any) -> int:
    try:
        return as_int(value)
    except ValueProblem:
        return 0


@dataclass
class Export:
    subject: Subject
    markers: list[MarkerRow]
    neighbours: list[Neighbour]
    # Root key (MarkerRow.file_root) -> folder on this machine; set by likeness.export.sourceapi.read_export.
    roots: dict[str, str] | None = None

    @property
    def usable(self) -> list[MarkerRow]:
        return [m for m in self.markers if m.usable]

    @property
    def croppable(self) -> list[MarkerRow]:
        return [m for m in self.markers if m.croppable]


def locate_photos(export: Export, roots: Mapping[str, str]) -> None:
    """Find each usable marker's photo on this machine; a path that cannot be read makes it unreachable."""
    for marker in export.usable:
        marker.path, reason = resolve_photo(roots, marker.file_root, marker.file_name)
        if reason:
            marker.status, marker.reason = UNREACHABLE, reason


def read_export(engine: sa.Engine, person: str, url_for_messages: str = "") -> Export:
    """Resolve ``person`` and read their markers and the other faces of their files, in one connection."""
    try:
        with engine.connect() as conn:
            subjects = [
                Subject(as_text(r.subj_uid), as_text(r.subj_slug), as_text(r.subj_name), _count(r.photo_count))
                for r in conn.execute(_SUBJECTS_SQL)
            ]
            subject = resolve_person(subjects, person)
            params = {"subj_uid": subject.uid, "face": "face"}
            markers = [_marker_from_row(r._mapping) for r in conn.execute(_MARKERS_SQL, params)]
            neighbours = [_neighbour_from_row(r) for r in conn.execute(_NEIGHBOURS_SQL, params)]
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise _explain_db_error(exc, url_for_messages or str(engine.url)) from None
    _exclude_stem_collisions(markers)
    return Export(subject, markers, neighbours)


# -- where the photo is on disk ----------------------------------------------------------------------------
def roots_from_config(source_config: Mapping[str, str]) -> dict[str, str]:
    """PhotoPrism's file_root values and the folders they stand for on this machine."""
    return {
        "/": source_config["originals"],
        "sidecar": source_config.get("sidecar", ""),
        "import": source_config.get("import", ""),
    }


def check_originals(source_config: Mapping[str, str]) -> None:
    """A ``source.originals`` that is not a folder is a config error, not a run of 'missing' faces."""
    folder = source_config["originals"]
    try:
        is_folder = Path(folder).expanduser().is_dir()
    except (OSError, ValueError):
        is_folder = False
    if not is_folder:
        raise ConfigError("source.originals", f"no folder at {folder!r}: give the folder of PhotoPrism's originals")


def resolve_photo(roots: Mapping[str, str], file_root: str, file_name: str) -> tuple[str, str]:
    """(path, '') for a photo inside its root folder, or ('', reason) when it must not or cannot be read.

    ``file_name`` comes from the database: it must stay relative to its root, and a symlink must not lead
    out of the root, so that a crafted or stale row never makes likeness read files it was not given.
    Whatever the name holds (too long for the OS, a symlink loop, a folder that cannot be read), the
    answer is a reason, never an exception: this runs while the Snakefile is parsed.
    """
    root = roots.get(file_root or "/")
    if not root:
        return "", f"no folder configured for PhotoPrism root '{file_root}'"
    if not file_name or "\x00" in file_name:
        return "", "file_name is empty or invalid"
    try:
        return _resolve_inside(Path(root), file_name)
    except FileNotFoundError:
        return "", f"photo missing on disk: {Path(root) / file_name}"
    except RuntimeError:  # Python 3.11's resolve() on a symlink loop
        return "", f"file_name '{file_name}' is a symlink loop"
    except (OSError, ValueError) as error:
        detail = getattr(error, "strerror", None) or str(error)
        return "", f"photo cannot be reached: {detail}: {Path(root) / file_name}"


def _resolve_inside(root: Path, file_name: str) -> tuple[str, str]:
    if file_name.startswith(("/", "\\")) or Path(file_name).is_absolute():
        return "", f"file_name '{file_name}' is an absolute path; PhotoPrism stores paths relative to a root"
    if ".." in Path(file_name).parts:
        return "", f"file_name '{file_name}' escapes its root ('..')"
    path = root / file_name
    real_root = root.resolve()
    real_path = path.resolve(strict=True)  # OSError (missing, too long, a loop, no permission): a reason
    if real_path != real_root and real_root not in real_path.parents:
        return "", f"file_name '{file_name}' resolves outside its root (symlink to {real_path})"
    if not real_path.is_file():
        return "", f"photo is not a regular file: {path}"
    return str(path), ""


# -- tables under results/ -------------------------------------------------------------------------------
MARKER_COLUMNS = [f.name for f in fields(MarkerRow)]
NEIGHBOUR_COLUMNS = [f.name for f in fields(Neighbour)]


def _tsv(columns: list[str], records: Iterable[dict[str, Any]]) -> bytes:
    """A table of ``records``; a NaN box value (unknown) is an empty cell."""
    return tables.records_bytes(
        columns,
        ({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()} for record in records),
    )


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
    rows = tables.read_table(path, required=list(kinds))
    return [cls(**{k: _typed(kinds[k], v) for k, v in row.items() if k in kinds}) for row in rows]


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
