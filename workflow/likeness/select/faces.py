"""One face as the selection sees it, and the inputs that make the faces: crop records and markers.tsv."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.identity import Embedding
from likeness.tables import Reason


def one_line(value: Any) -> str:
    """Any text as one line: runs of white space (line ends included) become one space."""
    return " ".join(str(value).split())


@dataclass
class Face:
    """What is known about one face and why it is (not) selected."""

    marker_uid: str
    marker: dict[str, str] | None = None
    record: dict[str, Any] | None = None
    crop_path: str = ""
    taken_at: dt.datetime | None = None
    other_face_share: float | None = None
    other_faces: list[tuple[int, int, int, int]] = field(default_factory=list)  # photo pixels
    masked: bool = False  # select.crowded: mask gives other heads in the crop weight 0 (likeness.select.masks)
    masked_share: float | None = None  # the loss weight the mask takes away (likeness.select.masks)
    score: float | None = None
    score_parts: dict[str, float] = field(default_factory=dict)  # each term's weighted share (ranking.score_parts)
    reason_key: str = ""
    reason: str = ""
    duplicates: list[str] = field(default_factory=list)
    identity: Embedding | None = None
    identity_distance: float | None = None
    pp_identity_distance: float | None = None  # PhotoPrism's own embedding, to its own reference centre
    identity_note: str = ""  # where PhotoPrism's embeddings and the identity model disagree

    @property
    def measurements(self) -> dict[str, Any]:
        return (self.record or {}).get("measurements") or {}

    def exclude(self, key: str, detail: str, *, text: str | None = None) -> None:
        """Record the first reason only: later filters never overwrite it.

        The reason reads "<key>: <detail>" unless ``text`` gives the whole sentence.
        """
        if not self.reason_key:
            self.reason_key = key
            self.reason = text or (f"{key}: {detail}" if detail else key)


def load_crop_record(path: str) -> tuple[str, dict[str, Any] | None, str]:
    """(marker_uid, record or None, error); the UID falls back to the file name when unreadable."""
    fallback_uid = Path(path).stem
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return fallback_uid, None, f"crop record {path}: {one_line(error)}"
    if not isinstance(record, dict):
        return fallback_uid, None, f"crop record {path} is not a JSON object"
    uid = record.get("marker_uid")
    return (uid if isinstance(uid, str) and uid else fallback_uid), record, ""


def parse_taken_at(text: str) -> dt.datetime | None:
    """PhotoPrism's taken_at (UTC) as ISO text, 'YYYY-MM-DD HH:MM:SS+00:00' or '...Z'; '' -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            value = dt.datetime.fromisoformat(text[:10])
        except ValueError:
            return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def gather_faces(crop_json_paths: Sequence[str], markers: Sequence[dict[str, str]]) -> list[Face]:
    """One Face per marker UID seen in markers.tsv or among the crop records, sorted by UID."""
    faces: dict[str, Face] = {}
    for row in markers:
        uid = row["marker_uid"].strip()
        if uid and uid not in faces:
            faces[uid] = Face(uid, marker=row, taken_at=parse_taken_at(row.get("taken_at", "")))
    seen_records: set[str] = set()
    for path in sorted(str(p) for p in crop_json_paths):
        uid, record, error = load_crop_record(path)
        if uid in seen_records:
            continue  # two records claim one marker: the first in path order wins, deterministically
        seen_records.add(uid)
        face = faces.setdefault(uid, Face(uid))
        face.record = record
        if error:
            face.exclude(Reason.UNREADABLE, error)
    for face in faces.values():
        if face.record is None and not face.reason_key:
            marker = face.marker or {}
            if marker.get("status", "ok") not in ("", "ok"):
                face.exclude(Reason.UNREADABLE, f"export: {marker.get('reason') or marker.get('status')}")
            else:
                face.exclude(Reason.UNREADABLE, "no crop record")
    return [faces[uid] for uid in sorted(faces)]
