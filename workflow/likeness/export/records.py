"""The export's records, the same for every photo manager: the person, their face markers, the other faces.

Everything after the export reads only these (``results/export/markers.tsv`` and ``neighbours.tsv``,
whose columns are ``likeness.tables.MARKER_COLUMNS`` and ``NEIGHBOUR_COLUMNS``), so the crop, select,
caption and train stages are the same for every source. Readers build a :class:`MarkerRow` through
:func:`marker_row` (or :func:`region_marker`), which derive the file stem and the status.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Any

from likeness.names import file_stem

# A marker's status: usable, excluded by the manager's filters or an unusable value (no crop job), or
# its photo's path cannot be read (its crop job records the same reason).
OK = "ok"
EXCLUDED = "excluded"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Subject:
    """The person, as the manager names them: an id, PhotoPrism's slug ('' elsewhere), the name."""

    uid: str
    slug: str
    name: str
    photo_count: int = 0


def name_key(name: str) -> str:
    """How names are compared: Unicode NFC (macOS keyboards type NFD), case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


@dataclass
class MarkerRow:
    """One face marker of the person with what the manager knows about its file and photo.

    The fields, in order, are the columns of markers.tsv (likeness.tables.MARKER_COLUMNS).
    """

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
    path: str = ""  # the photo on this machine (likeness.export.photos); '' until located or when it cannot be
    status: str = OK  # OK, EXCLUDED or UNREACHABLE, with the reason
    reason: str = ""
    # PhotoPrism's own face recognition, recorded beside likeness's identity check (likeness.select.identity):
    # the marker's distance to its face cluster (-1: none) and its first embedding, base64 float32.
    face_dist: float = -1.0
    embedding: str = ""

    @property
    def usable(self) -> bool:
        return self.status == OK

    @property
    def croppable(self) -> bool:
        """Whether the face gets a crop job: its record then says what became of it."""
        return self.status in (OK, UNREACHABLE)


@dataclass(frozen=True)
class Neighbour:
    """Any valid face marker in one of the person's files (named or not): for crowding checks.

    The fields, in order, are the columns of neighbours.tsv (likeness.tables.NEIGHBOUR_COLUMNS).
    """

    marker_uid: str
    file_uid: str
    subj_uid: str
    x: float
    y: float
    w: float
    h: float


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


def marker_row(marker_uid: str, reason: str, **values: Any) -> MarkerRow:
    """The one way a reader builds a marker: its file stem from the UID, its status from ``reason`` ('' = ok)."""
    return MarkerRow(
        marker_uid=marker_uid,
        stem=file_stem(marker_uid),
        status=EXCLUDED if reason else OK,
        reason=reason,
        **values,
    )


Fractions = tuple[float, float, float, float]


def region_marker(marker_uid: str, reason: str, box: Fractions | None, side: int, **values: Any) -> MarkerRow:
    """A face region of a manager that keeps pixel boxes and no review state or detector score (Immich,
    digiKam): ``box`` as (x, y, w, h) fractions (None: not placed, NaN), ``side`` its longer side in pixels."""
    x, y, w, h = box if box is not None else (math.nan,) * 4
    return marker_row(marker_uid, reason, marker_review=0, score=0, q=0, size=side, x=x, y=y, w=w, h=h, **values)
