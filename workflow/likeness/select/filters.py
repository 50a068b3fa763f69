"""Reasons 1-9: is a face's crop usable, and does it pass the ``select`` section's filters?

The schema (workflow/schemas/select.schema.yaml) has checked every key's type and range; what it
cannot express is checked here, once, by :func:`check_settings`: a valid calendar date and the
combinations of two keys.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.config import Section
from likeness.errors import ConfigError
from likeness.select import masks
from likeness.select.crowding import other_faces, share_of_crop
from likeness.select.faces import Face
from likeness.tables import Reason

MEASUREMENTS = ("sharpness", "brightness", "clipped_dark", "clipped_bright")  # the filters read these


@dataclass(frozen=True)
class DateWindow:
    """select.taken_after and select.taken_before as dates; None is no bound."""

    after: dt.date | None
    before: dt.date | None


def _date(value: Any, key: str) -> dt.date | None:
    """YAML reads an unquoted date as a date, a quoted one stays text (its form checked by the schema)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(key, f"must be a date like 2020-01-31 or null, got {value!r}") from None


def check_settings(settings: Section) -> DateWindow:
    """What the schema cannot check (one ConfigError naming the key); returns the date window."""
    if settings.brightness_min > settings.brightness_max:
        raise ConfigError("select.brightness_min", "must not exceed select.brightness_max")
    window = DateWindow(
        _date(settings.taken_after, "select.taken_after"), _date(settings.taken_before, "select.taken_before")
    )
    if window.after and window.before and window.after >= window.before:
        raise ConfigError("select.taken_after", "must be earlier than select.taken_before")
    return window


def check_record(face: Face, neighbours_by_file: Mapping[str, list[dict[str, str]]]) -> None:
    """Reasons 1-2: is there a usable crop record, image and marker? Fills other_face_share."""
    record, marker = face.record, face.marker
    if record is None:
        return  # the loader has already excluded it
    if record.get("status") != "ok":
        face.exclude(Reason.UNREADABLE, str(record.get("reason") or "excluded by the crop stage"))
        return
    image = record.get("image")
    if not isinstance(image, str) or not image:
        face.exclude(Reason.UNREADABLE, "crop record names no image")
        return
    face.crop_path = image
    if not Path(image).is_file():
        face.exclude(Reason.UNREADABLE, f"crop image {image} is missing")
        return
    problem = _measurement_problem(record)
    if problem:
        face.exclude(Reason.UNREADABLE, problem)
        return
    if marker is None:
        face.exclude(Reason.STALE, "marker is no longer in markers.tsv (deleted, rejected or reassigned)")
        return
    file_uid = str((record.get("source") or {}).get("file_uid") or "")
    face_box = tuple(int(v) for v in record["face_box"])
    photo_size = (int(record["photo_width"]), int(record["photo_height"]))
    face.other_faces = other_faces(face.marker_uid, face_box, photo_size, neighbours_by_file.get(file_uid, []))
    face.other_face_share = share_of_crop(face.other_faces, record["crop_box"])


def _measurement_problem(record: Mapping[str, Any]) -> str:
    """Why the record's numbers cannot be used, or '' when they can."""
    try:
        face_box = [int(v) for v in record["face_box"]]
        crop_box = [int(v) for v in record["crop_box"]]
        int(record["photo_width"]), int(record["photo_height"])
        int(record["native_crop_side"])
        if len(face_box) != 4 or len(crop_box) < 3:
            return "crop record has malformed face_box or crop_box"
    except (KeyError, TypeError, ValueError):
        return "crop record lacks sizes or boxes"
    measurements = record.get("measurements")
    if not isinstance(measurements, dict):
        return "crop record has no measurements"
    for key in MEASUREMENTS:
        value = measurements.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"crop record has no valid measurement {key}"
    phash = measurements.get("phash")
    if not isinstance(phash, str) or len(phash) != 16 or not _is_hex(phash):
        return "crop record has no valid phash"
    return ""


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def apply_filters(face: Face, settings: Section, window: DateWindow) -> None:
    """Reasons 3-9, in order; only the first that applies is kept."""
    if face.reason_key:
        return
    marker = face.marker or {}
    record = face.record or {}
    m = face.measurements
    # The schema's numbers may be whole (YAML's 30): the reasons always show them as decimals (30.0).
    max_share, min_sharpness = float(settings.max_other_face_share), float(settings.min_sharpness)
    darkest, brightest = float(settings.brightness_min), float(settings.brightness_max)
    max_clipped = float(settings.max_clipped_share)
    if marker.get("marker_review", "0").strip() not in ("", "0") and not settings.keep_review:
        face.exclude(Reason.AWAITING_REVIEW, "PhotoPrism flags this marker for review (low detector score)")
    if settings.manual_only and marker.get("subj_src", "") != "manual":
        face.exclude(Reason.NOT_NAMED_BY_HAND, "matched by clustering, select.manual_only is on")
    if window.after or window.before:
        _check_date_window(face, window)
    crop_side = int(record["native_crop_side"])
    if crop_side < settings.min_crop_side:
        face.exclude(Reason.TOO_SMALL, f"native crop {crop_side} px < {settings.min_crop_side}")
    if settings.crowded == "mask":
        _mask_or_exclude(face, float(settings.max_masked_share))
    else:
        share = face.other_face_share or 0.0
        if share > max_share:
            face.exclude(Reason.CROWDED, f"other faces cover {share:.3f} of the crop > {max_share}")
    if m["sharpness"] < min_sharpness:
        face.exclude(Reason.BLURRED, f"sharpness {m['sharpness']:.1f} < {min_sharpness}")
    if m["brightness"] < darkest:
        face.exclude(Reason.EXPOSURE, f"too dark, brightness {m['brightness']:.1f} < {darkest}")
    if m["brightness"] > brightest:
        face.exclude(Reason.EXPOSURE, f"too bright, brightness {m['brightness']:.1f} > {brightest}")
    clipped = m["clipped_dark"] + m["clipped_bright"]
    if clipped > max_clipped:
        face.exclude(Reason.EXPOSURE, f"clipped share {clipped:.3f} > {max_clipped}")


def _mask_or_exclude(face: Face, max_masked: float) -> None:
    """select.crowded: mask: the other heads get weight 0, or the face is crowded when too much is masked."""
    if face.reason_key or not face.other_faces:
        return
    alpha = masks.face_mask(face.record or {}, face.other_faces)
    if alpha is None:
        return
    face.masked_share = masks.masked_share(alpha)
    if face.masked_share > max_masked:
        face.exclude(
            Reason.CROWDED,
            f"masking the other heads would take {face.masked_share:.3f} of the crop > {max_masked}"
            f" (other faces cover {face.other_face_share or 0.0:.3f})",
        )
        return
    face.masked = True  # the mask itself is made again for the selected faces only (memory stays small)


def _check_date_window(face: Face, window: DateWindow) -> None:
    if face.taken_at is None:
        face.exclude(Reason.DATE_WINDOW, "no taken_at date")
        return
    day = face.taken_at.date()
    if window.after and day < window.after:
        face.exclude(Reason.DATE_WINDOW, f"taken {day} before {window.after}")
    elif window.before and day >= window.before:
        face.exclude(Reason.DATE_WINDOW, f"taken {day}, not before {window.before}")
