"""The export's records, the same for every photo manager: the person, their face markers, the other faces.

Everything after the export reads only these (``results/export/markers.tsv`` and ``neighbours.tsv``,
whose columns are ``likeness.tables.MARKER_COLUMNS`` and ``NEIGHBOUR_COLUMNS``), so the crop, select,
caption and train stages are the same for every source. Readers build a :class:`MarkerRow` through
:func:`marker_row` (or :func:`region_marker`), which derive the file stem and the status; they find the
person with :func:`resolve_subject` and turn pixel boxes into PhotoPrism's fractions with
:func:`fractions_for_pixels`.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from likeness.errors import ConfigError
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
    # PhotoPrism's own face recognition, recorded beside likeness's identity check (likeness.identity):
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
    # Which manager wrote it ('photoprism', 'immich', 'digikam'; '' when read back from markers.tsv): the
    # crop stage shows HEIF and JPEG files in that manager's frame and words its reasons for it.
    manager: str = ""

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
