"""The selection's tables and identity.json, as bytes: written only when they change (likeness.atomic)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.names import file_stem
from likeness.select.faces import Face, one_line
from likeness.tables import EXCLUDED_COLUMNS, MANIFEST_COLUMNS, REASON_ORDER


def _fmt(value: Any, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}f}"
    return one_line(value)


def image_name(face: Face) -> str:
    """The training image's name: the face's file stem (likeness.names), never the raw marker UID."""
    # A masked face's image is a PNG whose alpha channel is its loss mask (likeness.select.masks).
    suffix = ".png" if face.masked else (Path(face.crop_path).suffix.lower() or ".jpg")
    return f"{file_stem(face.marker_uid)}{suffix}"


def _measure_cells(face: Face) -> dict[str, str]:
    m = face.measurements
    record = face.record or {}
    marker = face.marker or {}
    source = record.get("source") or {}
    return {
        "sharpness": _fmt(_num(m.get("sharpness")), 1),
        "brightness": _fmt(_num(m.get("brightness")), 1),
        "contrast": _fmt(_num(m.get("contrast")), 1),
        "clipped_dark": _fmt(_num(m.get("clipped_dark")), 4),
        "clipped_bright": _fmt(_num(m.get("clipped_bright")), 4),
        "other_face_share": _fmt(face.other_face_share, 4),
        "phash": _fmt(m.get("phash")),
        "score": _fmt(face.score, 4),
        "taken_at": face.taken_at.isoformat() + "Z" if face.taken_at else "",
        "native_face_side": _fmt(record.get("native_face_side")),
        "native_crop_side": _fmt(record.get("native_crop_side")),
        "output_side": _fmt(record.get("output_side")),
        "file_uid": _fmt(source.get("file_uid") or marker.get("file_uid")),
        "photo_uid": _fmt(marker.get("photo_uid")),
        "subj_uid": _fmt(marker.get("subj_uid")),
        "subj_src": _fmt(marker.get("subj_src")),
        "marker_src": _fmt(marker.get("marker_src")),
        "pp_score": _fmt(marker.get("score")),
        "pp_q": _fmt(marker.get("q")),
        "crop": _fmt(face.crop_path),
        "source": _fmt(source.get("path")),
        "identity_distance": _fmt(face.identity_distance, 4),
        "face_found": "" if face.identity is None else ("yes" if face.identity.detected else "no"),
        "yaw": "" if face.identity is None else _fmt(face.identity.yaw, 1),
        "pitch": "" if face.identity is None else _fmt(face.identity.pitch, 1),
        "pp_face_dist": _fmt(marker.get("face_dist")),
        "pp_identity_distance": _fmt(face.pp_identity_distance, 4),
        "identity_note": face.identity_note,
        **{f"score_{part}": _fmt(face.score_parts.get(part), 4) for part in tables.SCORE_PARTS},
    }


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def manifest_bytes(selected: Sequence[Face], images_folder: str) -> bytes:
    """The manifest's rows in rank order; ``images_folder``: the images folder as seen from the manifest."""
    rows = []
    for rank, face in enumerate(selected, start=1):
        cells = _measure_cells(face)
        cells.update(
            rank=str(rank),
            marker_uid=face.marker_uid,
            image=f"{images_folder}/{image_name(face)}",
            duplicates=",".join(sorted(face.duplicates)),
        )
        rows.append([cells[column] for column in MANIFEST_COLUMNS])
    return tables.table_bytes(MANIFEST_COLUMNS, rows)


def excluded_bytes(excluded: Sequence[Face]) -> bytes:
    order = {key: index for index, key in enumerate(REASON_ORDER)}
    rows = []
    for face in sorted(excluded, key=lambda f: (order[f.reason_key], f.marker_uid)):
        cells = _measure_cells(face)
        cells.update(marker_uid=face.marker_uid, reason_key=face.reason_key, reason=one_line(face.reason))
        rows.append([cells[column] for column in EXCLUDED_COLUMNS])
    return tables.table_bytes(EXCLUDED_COLUMNS, rows)


def summary_line(selected: Sequence[Face], faces: Sequence[Face]) -> str:
    """The select job's line: kept_line over every face of the person."""
    parts = tables.exclusion_parts((face.reason_key, face.reason) for face in faces)
    by_masking = sum(1 for face in selected if face.masked)
    return tables.kept_line(len(selected), by_masking, len(faces), parts)


def identity_json_bytes(summary: Mapping[str, Any]) -> bytes:
    """identity.json: what the identity check used (likeness.select.identity_check), sorted keys."""
    return (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode()
