"""The export's two tables under results/export/: written (unchanged bytes keep their mtime), digested, read back.

``markers.tsv`` has the columns ``likeness.tables.MARKER_COLUMNS`` (one :class:`MarkerRow` a row),
``neighbours.tsv`` ``likeness.tables.NEIGHBOUR_COLUMNS``. A job on another machine (a Slurm node) or a
training bundle reads them back instead of asking the database again.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.errors import SourceError
from likeness.export.records import Export, MarkerRow, Neighbour, Subject


def _cell_value(value: Any) -> Any:
    """A NaN box value (unknown) is an empty cell."""
    return "" if isinstance(value, float) and math.isnan(value) else value


def _tsv(columns: Sequence[str], records: Iterable[Any]) -> bytes:
    """A table of dataclass ``records`` whose fields include ``columns``.

    The fields are read with getattr, not dataclasses.asdict: asdict deep-copies every value, which made
    this the largest part of the parse-time work at 10,000 faces (the digest is taken on every parse).
    """
    return tables.table_bytes(columns, ([_cell_value(getattr(r, c)) for c in columns] for r in records))


def markers_tsv(markers: Iterable[MarkerRow]) -> bytes:
    return _tsv(tables.MARKER_COLUMNS, markers)


def neighbours_tsv(neighbours: Iterable[Neighbour]) -> bytes:
    return _tsv(tables.NEIGHBOUR_COLUMNS, neighbours)


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


def run_export_job(export: Export, markers_path: str, neighbours_path: str, *, log: Callable[[str], None]) -> None:
    """The export rule's body: the two tables and a one-line summary in the log."""
    write_tables(export, markers_path, neighbours_path)
    log(export_summary(export))


# -- read back (a job on another machine, a training bundle) --------------------------------------------
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


def read_tables(markers: str | os.PathLike[str], neighbours: str | os.PathLike[str], person: str) -> Export:
    """What the main process exported (the export rule's two tables), for a parse without the database."""
    markers_path, neighbours_path = Path(markers), Path(neighbours)
    for path in (markers_path, neighbours_path):
        if not path.is_file():
            raise SourceError(f"{path} is missing: run the workflow once where the database is, which writes it")
    try:
        marker_rows = _read_rows(markers_path, MarkerRow)
        neighbour_rows = _read_rows(neighbours_path, Neighbour)
    except (OSError, ValueError, TypeError) as error:
        raise SourceError(f"{markers_path.parent}: the exported tables cannot be read ({error})") from None
    subject_uid = marker_rows[0].subj_uid if marker_rows else ""
    return Export(Subject(subject_uid, "", person), marker_rows, neighbour_rows)
