"""The contracts between stages: every table's format, its columns, the exclusion reasons, image suffixes.

Stages and the report import the columns and reasons from here and nowhere else; a stage that writes a
table and the stage (or report) that reads it therefore cannot disagree.

The one format of every table the workflow writes and reads: tab-separated, quoted where needed.

Every ``.tsv`` under ``results/`` goes through :func:`table_bytes` and :func:`read_table`, so any string a
database row can hold (tabs, CR, LF, quotes, NUL, any Unicode) comes back exactly as it went in. The
format is the CSV dialect of RFC 4180 with a tab as the separator and LF after each row:

* a cell is written between double quotes (inner quotes doubled) when it holds a tab, CR, LF or double
  quote, or when it starts with ``=``, ``+``, ``-`` or ``@`` and is not a number, so that a spreadsheet
  importing the table with "quoted field as text" never runs it as a formula; every other cell is
  written as it is;
* readers that handle quoting read every table back to the same rows: Python's ``csv`` module
  (``delimiter="\\t"``, the file opened with ``newline=""``) and pandas (``sep="\\t"``, ``dtype=str``,
  ``keep_default_na=False``);
* a plain split on LF and tab gives the same cells for every row whose cells needed no quotes
  (:func:`needs_quotes`); UIDs, file stems and numbers never do.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness.atomic import write_if_changed
from likeness.errors import LikenessError

_SPECIAL = re.compile(r'[\t\r\n"]')
_FORMULA_LEADS = ("=", "+", "-", "@")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def needs_quotes(cell: str) -> bool:
    """Whether ``cell`` is written between quotes (see the module's description of the format)."""
    if _SPECIAL.search(cell):
        return True
    return cell.startswith(_FORMULA_LEADS) and not _NUMBER.match(cell)


def _cell(value: Any) -> str:
    # An int, or a finite float, is written as Python prints it, which never needs quotes (a sign is
    # followed by digits): the fast path for the numbers that make up most cells of the big tables.
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return str(value)
    text = "" if value is None else str(value)
    if needs_quotes(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def row_text(cells: Sequence[Any]) -> str:
    """One row as it appears in a table, without its line end."""
    return "\t".join(_cell(cell) for cell in cells)


def table_bytes(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """A header and ``rows`` (cells in ``columns`` order; None is written as an empty cell), UTF-8."""
    lines = [row_text(columns), *(row_text(row) for row in rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def records_bytes(columns: Sequence[str], records: Iterable[Mapping[str, Any]]) -> bytes:
    """Like :func:`table_bytes` for mappings; a missing key is an empty cell."""
    return table_bytes(columns, ([record.get(column) for column in columns] for record in records))


def write_table(path: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bool:
    """Write atomically unless the file already holds these bytes (its mtime then stays); whether it wrote."""
    return write_if_changed(path, table_bytes(columns, rows))


# The csv module refuses a cell over 128 KiB by default. A kept face's duplicates cell lists its whole group
# (a person photographed in bursts: thousands of UIDs at 20,000 faces), and the text is in memory anyway.
csv.field_size_limit(2**31 - 1)


def parse_table(text: str, source: str = "table", required: Sequence[str] = ()) -> list[dict[str, str]]:
    """The rows of a table's text as dicts; a missing column or a ragged row is one readable error."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True)
    try:
        rows = list(reader)
    except csv.Error as error:
        raise LikenessError(f"{source} is not a valid table: {error}") from None
    if not rows:
        raise LikenessError(f"{source} is empty: it has no header")
    header, body = rows[0], rows[1:]
    missing = [column for column in required if column not in header]
    if missing:
        raise LikenessError(f"{source} lacks the column(s) {', '.join(missing)}")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise LikenessError(f"{source}: row {number} has {len(row)} cells, the header {len(header)}")
    return [dict(zip(header, row, strict=True)) for row in body]


def read_table(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict[str, str]]:
    """The rows of the table at ``path``; a missing file, column or a broken row is one readable error."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise LikenessError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    return parse_table(text, str(path), required)


def read_resource_table(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict[str, str]]:
    """A table shipped in resources/: the same format, plus '#' note lines and blank lines, which are skipped."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            lines = [line for line in handle.read().split("\n") if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as error:
        raise LikenessError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    return parse_table("\n".join(lines) + "\n", str(path), required)


def count_rows(path: str | os.PathLike[str]) -> int | None:
    """How many rows a table has below its header; None when it cannot be read."""
    try:
        return len(read_table(Path(path)))
    except LikenessError:
        return None


# -- the tables that pass between stages -----------------------------------------------------------
# Each stage's section below holds the columns of the tables it writes (and any other value a later
# stage or the report reads). Keep one section per stage, in pipeline order.

# export (results/export/)
# markers.tsv: one row per face marker of the person (likeness.export.records.MarkerRow, same order).
MARKER_COLUMNS = (
    "marker_uid",
    "stem",
    "file_uid",
    "photo_uid",
    "subj_uid",
    "marker_src",
    "subj_src",
    "marker_review",
    "score",
    "q",
    "size",
    "x",
    "y",
    "w",
    "h",
    "file_root",
    "file_name",
    "file_hash",
    "file_width",
    "file_height",
    "file_orientation",
    "taken_at",
    "path",
    "status",
    "reason",
    "face_dist",
    "embedding",
)
# neighbours.tsv: every valid face in the person's files (likeness.export.records.Neighbour, same order).
NEIGHBOUR_COLUMNS = ("marker_uid", "file_uid", "subj_uid", "x", "y", "w", "h")

# crop (results/crops/)
# summary.tsv: one row per face, cropped or excluded with the reason its record gives.
CROP_SUMMARY_COLUMNS = ("marker_uid", "status", "reason", "native_crop_side", "output_side", "source")

# select (results/dataset/): the manifest, the excluded faces and why, the dataset images folder


class Reason:
    """The keys of the exclusion reasons (excluded.tsv's ``reason_key``); see REASON_ORDER."""

    UNREADABLE = "unreadable"
    STALE = "stale"
    AWAITING_REVIEW = "awaiting review"
    NOT_NAMED_BY_HAND = "not named by hand"
    DATE_WINDOW = "date window"
    TOO_SMALL = "too small"
    CROWDED = "crowded"
    BLURRED = "blurred"
    EXPOSURE = "exposure"
    NOT_THE_SAME_PERSON = "not the same person"
    DUPLICATE = "duplicate"
    DAY_CAP = "day cap"
    BELOW_TOP_N = "below top_n"


# The photo managers likeness reads (source.kind, Export.manager) and how each writes its own name: every
# reason a user reads names theirs.
MANAGER_NAMES = {"photoprism": "PhotoPrism", "immich": "Immich", "digikam": "digiKam"}

# What an ``unreadable`` face's reason says happened to its photo, in the manager's own words: the console's
# counts name these instead of "unreadable" (excluded.tsv keeps the key). First match wins, in this order.
PHOTO_STATE_WORDS = (
    ("archived", "archived"),
    ("trash", "trashed"),
    ("hidden", "hidden"),
    ("offline", "offline"),
    ("locked folder", "locked"),
    ("missing on disk", "missing"),
    ("marked missing", "missing"),
    ("deleted", "deleted"),
    ("rejected", "rejected"),
    ("ignored", "ignored"),
)


def photo_state(reason: str) -> str:
    """'archived', 'trashed', 'hidden', 'offline', 'missing'... for an unreadable face's reason; '' otherwise."""
    text = reason.casefold()
    return next((state for word, state in PHOTO_STATE_WORDS if word in text), "")


# The order in which the selection tests the reasons: a face gets the first that applies, and
# summaries, excluded.tsv and the report list them in this order.
REASON_ORDER = (
    Reason.UNREADABLE,
    Reason.STALE,
    Reason.AWAITING_REVIEW,
    Reason.NOT_NAMED_BY_HAND,
    Reason.DATE_WINDOW,
    Reason.TOO_SMALL,
    Reason.CROWDED,
    Reason.BLURRED,
    Reason.EXPOSURE,
    Reason.NOT_THE_SAME_PERSON,
    Reason.DUPLICATE,
    Reason.DAY_CAP,
    Reason.BELOW_TOP_N,
)


def exclusion_parts(reasons: Iterable[tuple[str, str]]) -> list[str]:
    """["archived 1", "missing 1", "unreadable 2", "too small 3"] from (reason_key, reason) pairs: a face the
    manager archived, trashed, hid, took offline or lost counts by that word (tables.photo_state), not as
    unreadable; the rest by reason in REASON_ORDER. The select job's line and the closing summary share it."""
    counts: dict[str, int] = {}
    states: dict[str, int] = {}
    for key, reason in reasons:
        state = photo_state(reason) if key == Reason.UNREADABLE else ""
        if state:
            states[state] = states.get(state, 0) + 1
        elif key:
            counts[key] = counts.get(key, 0) + 1
    order = dict.fromkeys(state for _word, state in PHOTO_STATE_WORDS)
    return [f"{state} {states[state]}" for state in order if states.get(state)] + [
        f"{key} {counts[key]}" for key in REASON_ORDER if counts.get(key)
    ]


def kept_line(kept: int, by_masking: int, faces: int, parts: Sequence[str]) -> str:
    """ "kept K (M by masking) of N faces: ..." (no parenthesis when no kept face was masked)."""
    masking = f" ({by_masking} by masking)" if by_masking else ""
    line = f"kept {kept}{masking} of {faces} faces"
    return f"{line}: {', '.join(parts)}" if parts else line


# Image files the workflow's own stages accept (the dataset images folder, reference photos), any case.
# sd-scripts has its own, case-sensitive list: that one belongs to the train stage.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# Head-pose bins (select.diversity, the report's pose chart): yaw and pitch beyond this many degrees
# are "turned left/right" and "up/down".
POSE_BIN_DEGREES = 15.0
# The bins in the order summaries and the report list them; a face without landmarks is "unknown".
POSE_BINS = (
    *(f"{turn}, {tilt}" for turn in ("frontal", "turned left", "turned right") for tilt in ("level", "up", "down")),
    "unknown",
)


def pose_bin(yaw: float, pitch: float) -> str:
    """The head-pose bin of a face's yaw and pitch in degrees (NaN: "unknown")."""
    if math.isnan(yaw) or math.isnan(pitch):
        return "unknown"
    turn = "frontal" if abs(yaw) < POSE_BIN_DEGREES else ("turned left" if yaw < 0 else "turned right")
    tilt = "level" if abs(pitch) < POSE_BIN_DEGREES else ("up" if pitch < 0 else "down")
    return f"{turn}, {tilt}"


# The rank score's parts (likeness.select.ranking.WEIGHTS, in that order): each term's weight times its 0-1
# value, so that a selected face's row (and the report) says what its score is made of; they add up to score.
SCORE_PARTS = ("sharpness", "resolution", "exposure", "crowding", "recency", "confidence")
SCORE_PART_COLUMNS = tuple(f"score_{part}" for part in SCORE_PARTS)
MANIFEST_COLUMNS = (
    "rank", "marker_uid", "score", "image", "crop", "file_uid", "photo_uid", "subj_uid", "subj_src",
    "marker_src", "taken_at", "native_face_side", "native_crop_side", "output_side", "sharpness",
    "brightness", "contrast", "clipped_dark", "clipped_bright", "other_face_share", "phash", "pp_score",
    "pp_q", "duplicates", "source", "identity_distance", "face_found", "yaw", "pitch", "pp_face_dist",
    "pp_identity_distance", "identity_note", *SCORE_PART_COLUMNS,
)  # fmt: skip
EXCLUDED_COLUMNS = (
    "marker_uid", "reason_key", "reason", "score", "native_crop_side", "sharpness", "brightness",
    "clipped_dark", "clipped_bright", "other_face_share", "taken_at", "phash", "file_uid", "crop", "source",
    "identity_distance", "face_found", "yaw", "pitch", "pp_face_dist", "pp_identity_distance", "identity_note",
)  # fmt: skip

# caption (results/captions/): captions.tsv, one row per captioned face (the caption file's text without
# its line end); the caption files themselves are results/captions/text/<stem>.txt
CAPTION_COLUMNS = ("marker_uid", "caption")

# train (results/train/)
# results/train/status.json (and headshots' status.json): "state" is one of these; "run_dir" names the
# run folder, whose sd-scripts output (LoRA files, samples/, logs/ with TensorBoard's event files) is in
# TRAIN_OUTPUT_DIR. "ready": prepared, not launched here; only "ready" and "done" reach the rule's output.
TRAIN_STATES = ("ready", "running", "interrupted", "failed", "done")
TRAIN_FINAL_STATES = ("ready", "done")
TRAIN_OUTPUT_DIR = "output"
TRAIN_LOGGING_DIR = f"{TRAIN_OUTPUT_DIR}/logs"
