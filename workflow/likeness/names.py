"""File names derived from database values: a face's file stem, whatever its marker UID holds.

Every per-face file (``results/crops/<stem>.json`` and ``.jpg``, ``results/dataset/images/<stem>.jpg`` and
``.txt``, ``logs/crop/<stem>.log``) is named by :func:`file_stem`, never by the UID itself: PhotoPrism's
``marker_uid`` is a free VARBINARY column, so a row can hold upper case, ``/``, ``..`` or anything else.
The UID is kept in the records and tables.
"""

from __future__ import annotations

import hashlib
import re

# PhotoPrism's own UIDs: a type letter and base36, 16 characters. They are their own stem, so the files
# of a normal library keep the names they always had.
_PLAIN_UID = re.compile(r"[0-9a-z]{1,64}")
_DIGEST_CHARS = 16
# What a stem looks like: a plain UID, or a readable part and a digest. Snakemake's wildcard constraint.
STEM_PATTERN = rf"[0-9a-z]+(-[0-9a-f]{{{_DIGEST_CHARS}}})?"


def file_stem(marker_uid: str) -> str:
    """A safe, collision-free file stem for ``marker_uid``.

    A plain UID (lower-case letters and digits, as PhotoPrism writes them) is its own stem. Any other
    value gets the lower-case letters and digits it has (at most 24) and a digest of the whole value,
    joined by ``-``: a plain UID never contains ``-``, so the two kinds cannot meet, and two different
    UIDs share a stem only if their SHA-256 digests share 64 bits. Stems are ASCII, lower case (so
    distinct on case-insensitive file systems too), never empty, never ``.``/``..``, and never hold a
    path separator.
    """
    if _PLAIN_UID.fullmatch(marker_uid):
        return marker_uid
    readable = "".join(ch for ch in marker_uid.lower() if ch.isascii() and ch.isalnum())[:24] or "marker"
    digest = hashlib.sha256(marker_uid.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{readable}-{digest}"
