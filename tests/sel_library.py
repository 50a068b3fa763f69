"""Test helper: write crop records, crop images, markers.tsv and neighbours.tsv the way the stages do.

Each face is one photo of ``photo_size`` pixels; its square crop sits at ``crop_origin`` with a native
side of ``native_crop_side`` and was resized to the drawn image's side. Geometry follows the interface
the crop and export stages share: face and crop boxes in photo pixels, neighbour markers as fractions of
the oriented photo.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from likeness.crop import quality

MARKER_HEADER = (
    "marker_uid", "file_uid", "photo_uid", "subj_uid", "marker_src", "subj_src", "marker_review", "score",
    "q", "size", "x", "y", "w", "h", "file_width", "file_height", "taken_at", "status", "reason",
)  # fmt: skip
NEIGHBOUR_HEADER = ("marker_uid", "file_uid", "subj_uid", "x", "y", "w", "h")


def uid(letter: str, number: int) -> str:
    """A 16-character PhotoPrism-style UID: type letter, 6 time characters, 9 digits."""
    return f"{letter}rt0000{number:09d}"


@dataclass
class PlannedFace:
    marker_uid: str
    image: np.ndarray | None
    face_box_crop: tuple[int, int, int, int] | None
    native_crop_side: int
    crop_origin: tuple[int, int]
    photo_size: tuple[int, int]
    file_uid: str
    marker: dict[str, Any]
    status: str = "ok"
    reason: str = ""
    export_reason: str = ""
    measurement_overrides: dict[str, Any] = field(default_factory=dict)
    other_faces: list[tuple[int, int, int, int]] = field(default_factory=list)  # photo pixels


class Library:
    """Collects faces, then writes the three inputs of run_selection under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faces: list[PlannedFace] = []
        self._next = 1

    def add(
        self,
        image: np.ndarray | None,
        face_box_crop: tuple[int, int, int, int] | None,
        *,
        native_crop_side: int = 1024,
        taken_at: str = "2023-07-14T12:00:00Z",
        review: int = 0,
        subj_src: str = "manual",
        score: int = 80,
        status: str = "ok",
        reason: str = "",
        export_reason: str = "",
        other_faces: list[tuple[int, int, int, int]] | None = None,
        measurement_overrides: dict[str, Any] | None = None,
        number: int | None = None,
    ) -> str:
        number = self._next if number is None else number
        self._next = max(self._next, number) + 1
        marker_uid = uid("m", number)
        face = PlannedFace(
            marker_uid=marker_uid,
            image=image,
            face_box_crop=face_box_crop,
            native_crop_side=native_crop_side,
            crop_origin=(300, 200),
            photo_size=(native_crop_side + 600, native_crop_side + 400),
            file_uid=uid("f", number),
            marker={
                "photo_uid": uid("p", number),
                "subj_uid": uid("j", 1),
                "marker_src": "image",
                "subj_src": subj_src,
                "marker_review": str(review),
                "score": str(score),
                "q": str(score * 3),
                "size": "160",
                "taken_at": taken_at,
            },
            status=status,
            reason=reason,
            export_reason=export_reason,
            measurement_overrides=measurement_overrides or {},
            other_faces=other_faces or [],
        )
        self.faces.append(face)
        return marker_uid

    def face_rect_photo(self, face: PlannedFace) -> tuple[int, int, int, int]:
        """The face box in photo pixels, scaled from the drawn crop back to the native crop."""
        assert face.image is not None and face.face_box_crop is not None
        scale = face.native_crop_side / face.image.shape[0]
        left, top = face.crop_origin
        x0, y0, x1, y1 = face.face_box_crop
        return (
            left + round(x0 * scale),
            top + round(y0 * scale),
            left + round(x1 * scale),
            top + round(y1 * scale),
        )

    def write(self, *, skip_records: tuple[str, ...] = ()) -> tuple[list[str], str, str]:
        """Write everything; return (crop JSON paths, markers.tsv, neighbours.tsv), paths relative to root."""
        crops = self.root / "results" / "crops"
        export = self.root / "results" / "export"
        crops.mkdir(parents=True, exist_ok=True)
        export.mkdir(parents=True, exist_ok=True)
        json_paths: list[str] = []
        marker_rows: list[list[str]] = []
        neighbour_rows: list[list[str]] = []
        for face in self.faces:
            width, height = face.photo_size
            if face.face_box_crop is not None and face.image is not None:
                rect = self.face_rect_photo(face)
                fractions = _fractions(rect, width, height)
                neighbour_rows.append([face.marker_uid, face.file_uid, face.marker["subj_uid"], *fractions])
                for index, other in enumerate(face.other_faces):
                    other_uid = f"{face.marker_uid[:-2]}x{index}"
                    neighbour_rows.append([other_uid, face.file_uid, "", *_fractions(other, width, height)])
            else:
                fractions = ["0.1", "0.1", "0.2", "0.2"]
            marker_rows.append(self._marker_row(face, fractions))
            if face.marker_uid in skip_records or face.export_reason:
                continue
            json_paths.append(self._write_record(face, crops))
        _write_tsv(export / "markers.tsv", MARKER_HEADER, marker_rows)
        _write_tsv(export / "neighbours.tsv", NEIGHBOUR_HEADER, neighbour_rows)
        return json_paths, "results/export/markers.tsv", "results/export/neighbours.tsv"

    def _marker_row(self, face: PlannedFace, fractions: list[str]) -> list[str]:
        width, height = face.photo_size
        values = {
            **face.marker,
            "marker_uid": face.marker_uid,
            "file_uid": face.file_uid,
            "x": fractions[0],
            "y": fractions[1],
            "w": fractions[2],
            "h": fractions[3],
            "file_width": str(width),
            "file_height": str(height),
            "status": "excluded" if face.export_reason else "ok",
            "reason": face.export_reason,
        }
        return [values[column] for column in MARKER_HEADER]

    def _write_record(self, face: PlannedFace, crops: Path) -> str:
        record: dict[str, Any] = {
            "marker_uid": face.marker_uid,
            "status": face.status,
            "reason": face.reason,
            "image": None,
            "image_sha256": None,
            "source": {
                "file_uid": face.file_uid,
                "file_root": "/",
                "file_name": f"2023/{face.marker_uid}.jpg",
                "path": f"/photos/originals/2023/{face.marker_uid}.jpg",
            },
            "photo_width": face.photo_size[0],
            "photo_height": face.photo_size[1],
        }
        if face.status == "ok" and face.image is not None and face.face_box_crop is not None:
            image_rel = f"results/crops/{face.marker_uid}.jpg"
            ok, encoded = cv2.imencode(".jpg", face.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            data = encoded.tobytes()
            (self.root / image_rel).write_bytes(data)
            rect = self.face_rect_photo(face)
            measurements = quality.measure(face.image, face.face_box_crop)
            measurements.update(face.measurement_overrides)
            record.update(
                image=image_rel,
                image_sha256=hashlib.sha256(data).hexdigest(),
                face_box=list(rect),
                crop_box=[*face.crop_origin, face.native_crop_side, face.native_crop_side],
                native_face_side=rect[2] - rect[0],
                native_crop_side=face.native_crop_side,
                output_side=face.image.shape[0],
                measurements=measurements,
            )
        path = crops / f"{face.marker_uid}.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        return f"results/crops/{face.marker_uid}.json"


def _fractions(rect: tuple[int, int, int, int], width: int, height: int) -> list[str]:
    """Fractions whose PhotoPrism pixel rectangle (float32, truncation) gives back ``rect``."""
    x0, y0, x1, y1 = rect
    # A quarter pixel inwards keeps truncation from landing one pixel short.
    return [
        f"{(x0 + 0.25) / width:.9f}",
        f"{(y0 + 0.25) / height:.9f}",
        f"{(x1 - x0) / width:.9f}",
        f"{(y1 - y0) / height:.9f}",
    ]


def _write_tsv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_tsv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
