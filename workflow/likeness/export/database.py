"""The photo manager's database, opened read-only: its URL checked, its password from outside the config.

SQLite is opened through a ``file:...?mode=ro`` URI, so not even a journal can be written; MariaDB
sessions refuse writes (READ ONLY transactions). The password never comes from the URL (neither its
user part nor its query) nor from config.yaml: it is read from the environment variable
``source.password_env`` or from a credentials file (``source.option_file``). A database error becomes
one line with the URL masked. PostgreSQL (Immich) is opened by likeness.export.immich with the same
checks.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from likeness.errors import ConfigError, SourceError


def make_engine(url: str, password_env: str, option_file: str, lock_timeout: float = 10.0) -> sa.Engine:
    """A read-only engine for ``source.url``: SQLite (PhotoPrism, digiKam) or MariaDB/MySQL."""
    sqlite_path = sqlite_path_from_url(url)
    if sqlite_path is not None:
        return _sqlite_engine(sqlite_path, lock_timeout)
    parsed = parse_server_url(url, password_env)
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        return _mysql_engine(parsed, password_env, option_file)
    raise ConfigError("source.url", f"unsupported database '{backend}': use {SUPPORTED_URL_FORMS}")


# Every URL form make_engine and likeness.export.immich open, for the one-line answer to any other.
SUPPORTED_URL_FORMS = (
    "mysql+mysqldb://user@host/db (PhotoPrism, digiKam on MariaDB/MySQL), "
    "postgresql+psycopg://user@host/db (Immich) or sqlite:///path/to/file.db (PhotoPrism, digiKam)"
)


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


def parse_server_url(url: str, password_env: str) -> sa.URL:
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
        raise ConfigError(
            "source.url",
            "give the path of the SQLite database (PhotoPrism's index.db, digiKam's digikam4.db): "
            "sqlite:///path/to/index.db",
        )
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


def explain_db_error(exc: Exception, url: str, manager: str) -> SourceError:
    """One line, the URL without any password: the driver's first line of the message."""
    text = str(getattr(exc, "orig", exc)).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    safe_url = mask_url(url)
    if "locked" in first:
        return SourceError(f"the {manager} database {safe_url} is locked by another process: {first}")
    return SourceError(f"cannot read the {manager} database {safe_url}: {first}")
