"""Column values as the database drivers return them, read into the types the export records.

mysqlclient gives VARBINARY columns as bytes, SQLite keeps whatever it is given (NUMERIC affinity turns
UIDs into numbers, text lands in number columns), PostgreSQL gives uuids and datetimes. Each converter
accepts all of that; a value no column of the manager should hold raises :class:`ValueProblem`, which
the readers turn into a reason for the row (never an error for the run).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


class ValueProblem(ValueError):
    """A column holds a value that cannot be what the photo manager stores there."""


def as_text(value: Any) -> str:
    """VARBINARY columns arrive as bytes (mysqlclient) or as numbers (SQLite's NUMERIC affinity)."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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


def safe_int(value: Any) -> int:
    """An integer column; 0 for a value no integer column should hold (SQLite keeps whatever it is given)."""
    try:
        return as_int(value)
    except ValueProblem:
        return 0


def uid_text(value: Any) -> str:
    """A uuid (or any id) as lowercase letters and digits: marker UIDs name files and wildcards."""
    return "".join(ch for ch in as_text(value).lower() if ch.isalnum())


def as_timestamp(value: Any) -> str:
    """A photo's date as ISO 8601 UTC text ('' when unknown): MariaDB and PostgreSQL give datetime, SQLite text."""
    if value is None or value == "":
        return ""
    try:
        return _timestamp(value)
    except (ValueError, OverflowError, TypeError):
        return ""  # a date the manager could not have written (year 0, garbage): unknown, like an empty one


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
