"""Choose the LoRA training set from the per-face crops: filter, drop near-duplicates, rank, keep top N.

Inputs are the crop stage's JSON records (``results/crops/<stem>.json``, measurements included),
the export's ``markers.tsv`` (the person's face markers: review flag, who named them, detector score,
taken_at) and ``neighbours.tsv`` (every valid face marker in the same files, to see other faces inside
a crop). Outputs, under ``out_dir`` (``results/dataset``):

* ``manifest.tsv``: the selected faces in rank order with their measurements and score;
* ``excluded.tsv``: every other face with the first reason that excluded it;
* ``images/``: exactly the selected crops, ``<stem>.<ext>`` (likeness.names), hard-linked where possible.

Every face gets the first reason of this fixed order (a face both blurred and crowded is "crowded"):

1. ``unreadable``: the export or the crop stage could not use it, its crop record is missing or broken;
2. ``stale``: a crop record whose marker is no longer in markers.tsv;
3. ``awaiting review``: PhotoPrism's marker_review flag (unless ``select.keep_review``);
4. ``not named by hand``: with ``select.manual_only``, matched by clustering instead of by the user;
5. ``date window``: taken_at outside [taken_after, taken_before);
6. ``too small``: native crop side below ``select.min_crop_side``;
7. ``crowded``: other faces cover more than ``select.max_other_face_share`` of the crop;
8. ``blurred``: sharpness below ``select.min_sharpness``;
9. ``exposure``: face too dark, too bright or too clipped;
10. ``not the same person``: the identity model (likeness.select.identity) puts the face farther than
    ``select.max_identity_distance`` from the person's reference (``select.identity_reference``);
11. ``duplicate``: a better face of the same near-duplicate group (perceptual hash within
    ``select.duplicate_distance`` bits, or identity embeddings within ``select.duplicate_identity_distance``)
    was kept;
12. ``day cap``: ``select.max_per_day`` better faces of the same calendar day were kept;
13. ``below top_n``: not among the ``select.top_n`` kept. With ``select.diversity`` (on by default) the
    ``top_n`` are spread over (year, head-pose bin) strata instead of being the top scores only: round
    after round each stratum gives its best remaining face (``spread``). Head pose is yaw and pitch from
    the identity model's landmarks, binned at 15 degrees (frontal/turned left/turned right x
    level/up/down).

The rank score (0-1, higher is better) is a weighted sum of terms that are each 0-1:

* sharpness 0.35: ``s / (s + 150)``, so the term is 0.5 at 150 and saturates for very sharp faces;
* resolution 0.25: ``min(native crop side, 1024) / 1024``, SDXL's training side;
* exposure 0.15: ``1 - |brightness - 128| / 128 - 2 * clipped share``, clamped to 0-1;
* crowding 0.10: ``1 - 4 * other face share``, clamped to 0-1;
* recency 0.10: ``1 - years before the newest face / 10``, clamped (no date: 0);
* detector confidence 0.05: PhotoPrism's marker score / 100, clamped (manual markers have 100).

Ties are broken by marker_uid, so identical inputs always give byte-identical outputs.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import importlib.util
import itertools
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from likeness import geometry, tables
from likeness.atomic import atomic_write_bytes, write_if_changed
from likeness.crop.quality import hamming_distance
from likeness.errors import ConfigError, LikenessError
from likeness.names import file_stem
from likeness.select import identity

# The fixed order of exclusion reasons; the first that applies is the one reported.
REASON_ORDER = (
    "unreadable",
    "stale",
    "awaiting review",
    "not named by hand",
    "date window",
    "too small",
    "crowded",
    "blurred",
    "exposure",
    "not the same person",
    "duplicate",
    "day cap",
    "below top_n",
)

# Rank score weights and shape constants (see the module docstring).
WEIGHTS = {
    "sharpness": 0.35,
    "resolution": 0.25,
    "exposure": 0.15,
    "crowding": 0.10,
    "recency": 0.10,
    "confidence": 0.05,
}
SHARPNESS_HALF = 150.0
TRAINING_SIDE = 1024
RECENCY_YEARS = 10.0

# Head-pose bins for select.diversity: yaw and pitch beyond this many degrees are "turned" / "up/down".
POSE_BIN_DEGREES = 15.0

# A neighbouring marker overlapping the face by at least this IoU is the same face marked twice.
SAME_FACE_IOU = 0.5

# Files in images/ that the sync manages; anything else there (captions, configs) is left alone.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

MARKER_COLUMNS = ("marker_uid", "marker_review", "subj_src", "score", "taken_at", "status", "reason")
NEIGHBOUR_COLUMNS = ("marker_uid", "file_uid", "x", "y", "w", "h")

MANIFEST_COLUMNS = (
    "rank", "marker_uid", "score", "image", "crop", "file_uid", "photo_uid", "subj_uid", "subj_src",
    "marker_src", "taken_at", "native_face_side", "native_crop_side", "output_side", "sharpness",
    "brightness", "contrast", "clipped_dark", "clipped_bright", "other_face_share", "phash", "pp_score",
    "pp_q", "duplicates", "source", "identity_distance", "face_found", "yaw", "pitch", "pp_face_dist",
    "pp_identity_distance", "identity_note",
)  # fmt: skip
EXCLUDED_COLUMNS = (
    "marker_uid", "reason_key", "reason", "score", "native_crop_side", "sharpness", "brightness",
    "clipped_dark", "clipped_bright", "other_face_share", "taken_at", "phash", "file_uid", "crop", "source",
    "identity_distance", "face_found", "yaw", "pitch", "pp_face_dist", "pp_identity_distance", "identity_note",
)  # fmt: skip


@dataclass(frozen=True)
class SelectSettings:
    """The ``select`` config section; defaults equal workflow/schemas/select.schema.yaml (tested)."""

    top_n: int = 100
    min_crop_side: int = 768
    max_other_face_share: float = 0.05
    min_sharpness: float = 30.0
    brightness_min: float = 40.0
    brightness_max: float = 220.0
    max_clipped_share: float = 0.1
    taken_after: dt.date | None = None
    taken_before: dt.date | None = None
    keep_review: bool = False
    manual_only: bool = False
    duplicate_distance: int = 8
    max_per_day: int = 0
    # "model": the identity model's own threshold; None: no identity check (said in the log)
    max_identity_distance: float | str | None = "model"
    identity_reference: str = "recent"
    identity_cache_dir: str = "cache/identity"
    duplicate_identity_distance: float = 0.08
    diversity: bool = True

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> SelectSettings:
        """Check the ``select`` section (already schema-validated or not) and fill defaults."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        for key in sorted(section):
            if key not in known:
                raise ConfigError(f"select.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        # null means "the default" (for the dates: no bound)
        values = {key: value for key, value in section.items() if value is not None}
        identity_distance = _identity_distance_setting(section)
        settings = cls(
            top_n=_int_setting(values, "top_n", cls.top_n, minimum=1),
            min_crop_side=_int_setting(values, "min_crop_side", cls.min_crop_side, minimum=1),
            max_other_face_share=_number_setting(values, "max_other_face_share", cls.max_other_face_share, 0, 1),
            min_sharpness=_number_setting(values, "min_sharpness", cls.min_sharpness, 0, None),
            brightness_min=_number_setting(values, "brightness_min", cls.brightness_min, 0, 255),
            brightness_max=_number_setting(values, "brightness_max", cls.brightness_max, 0, 255),
            max_clipped_share=_number_setting(values, "max_clipped_share", cls.max_clipped_share, 0, 1),
            taken_after=_date_setting(values, "taken_after"),
            taken_before=_date_setting(values, "taken_before"),
            keep_review=_bool_setting(values, "keep_review", cls.keep_review),
            manual_only=_bool_setting(values, "manual_only", cls.manual_only),
            duplicate_distance=_int_setting(values, "duplicate_distance", cls.duplicate_distance, 0, 64),
            max_per_day=_int_setting(values, "max_per_day", cls.max_per_day, minimum=0),
            max_identity_distance=identity_distance,
            identity_reference=_text_setting(values, "identity_reference", cls.identity_reference),
            identity_cache_dir=_text_setting(values, "identity_cache_dir", cls.identity_cache_dir),
            duplicate_identity_distance=_number_setting(
                values, "duplicate_identity_distance", cls.duplicate_identity_distance, 0, 2
            ),
            diversity=_bool_setting(values, "diversity", cls.diversity),
        )
        if settings.brightness_min > settings.brightness_max:
            raise ConfigError("select.brightness_min", "must not exceed select.brightness_max")
        if settings.taken_after and settings.taken_before and settings.taken_after >= settings.taken_before:
            raise ConfigError("select.taken_after", "must be earlier than select.taken_before")
        return settings


def _identity_distance_setting(section: Mapping[str, Any]) -> float | str | None:
    """Absent or "model": the model's threshold; null: the check is off; else a distance above 0."""
    if "max_identity_distance" not in section:
        return "model"
    value = section["max_identity_distance"]
    if value is None or value == "model":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError("select.max_identity_distance", f"must be a number above 0, 'model' or null, got {value!r}")
    return float(value)


def _text_setting(values: Mapping[str, Any], key: str, default: str) -> str:
    value = values.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"select.{key}", f"must be a non-empty text, got {value!r}")
    return value.strip()


def _int_setting(values: Mapping[str, Any], key: str, default: int, minimum: int, maximum: int | None = None) -> int:
    value = values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"select.{key}", f"must be a whole number, got {value!r}")
    _check_range(key, value, minimum, maximum)
    return value


def _number_setting(
    values: Mapping[str, Any], key: str, default: float, minimum: float, maximum: float | None
) -> float:
    value = values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"select.{key}", f"must be a number, got {value!r}")
    _check_range(key, value, minimum, maximum)
    return float(value)


def _check_range(key: str, value: float, minimum: float, maximum: float | None) -> None:
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"select.{key}", f"must be {bounds}, got {value!r}")


def _bool_setting(values: Mapping[str, Any], key: str, default: bool) -> bool:
    value = values.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"select.{key}", f"must be true or false, got {value!r}")
    return value


def _date_setting(values: Mapping[str, Any], key: str) -> dt.date | None:
    """A date written as YYYY-MM-DD; YAML turns an unquoted one into a date object, accept both."""
    value = values.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"select.{key}", f"must be a date like 2020-01-31 or null, got {value!r}")


# ---------------------------------------------------------------------------------------------------
# One face: what is known about it and why it is (not) selected


@dataclass
class Face:
    marker_uid: str
    marker: dict[str, str] | None = None
    record: dict[str, Any] | None = None
    crop_path: str = ""
    taken_at: dt.datetime | None = None
    other_face_share: float | None = None
    score: float | None = None
    reason_key: str = ""
    reason: str = ""
    duplicates: list[str] = field(default_factory=list)
    identity: identity.Embedding | None = None
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


# ---------------------------------------------------------------------------------------------------
# Reading the inputs


def read_tsv(path: str | os.PathLike[str], required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of one of the export's tables; a missing file or column is one readable error."""
    return tables.read_table(path, required)


def load_crop_record(path: str) -> tuple[str, dict[str, Any] | None, str]:
    """(marker_uid, record or None, error); the UID falls back to the file name when unreadable."""
    fallback_uid = Path(path).stem
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return fallback_uid, None, f"crop record {path}: {_one_line(error)}"
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


# ---------------------------------------------------------------------------------------------------
# Geometry: how much of the crop other faces cover

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels


def marker_rect(x: float, y: float, w: float, h: float, width: int, height: int) -> Rect | None:
    """PhotoPrism's pixel rectangle of a neighbour marker (likeness.geometry); None when it is unusable."""
    try:
        return tuple(geometry.marker_rect(x, y, w, h, width, height).as_list())  # type: ignore[return-value]
    except geometry.GeometryError:
        return None


def intersect(a: Rect, b: Rect) -> Rect | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def area(rect: Rect) -> int:
    return max(0, rect[2] - rect[0]) * max(0, rect[3] - rect[1])


def iou(a: Rect, b: Rect) -> float:
    overlap = intersect(a, b)
    if overlap is None:
        return 0.0
    union = area(a) + area(b) - area(overlap)
    return area(overlap) / union if union else 0.0


def union_area(rects: Sequence[Rect]) -> int:
    """Exact area covered by overlapping rectangles (coordinate compression; faces per file are few)."""
    if not rects:
        return 0
    xs = sorted({r[0] for r in rects} | {r[2] for r in rects})
    total = 0
    for left, right in itertools.pairwise(xs):
        spans = sorted((r[1], r[3]) for r in rects if r[0] <= left and r[2] >= right)
        covered, run_start, run_end = 0, None, None
        for top, bottom in spans:
            if run_end is None or top > run_end:
                if run_end is not None:
                    covered += run_end - run_start
                run_start, run_end = top, bottom
            else:
                run_end = max(run_end, bottom)
        if run_end is not None:
            covered += run_end - run_start
        total += covered * (right - left)
    return total


def other_face_share(
    face_uid: str,
    face_box: Rect,
    crop_box: Sequence[int],
    photo_size: tuple[int, int],
    neighbours: Iterable[Mapping[str, str]],
) -> float:
    """Share of the square crop covered by other faces of the same file (the face itself excluded).

    A neighbour that overlaps this face with IoU >= SAME_FACE_IOU is the same face marked twice
    (for instance a manual marker over a detected one) and does not count as another face.
    """
    left, top, side = int(crop_box[0]), int(crop_box[1]), int(crop_box[2])
    crop_rect: Rect = (left, top, left + side, top + side)
    width, height = photo_size
    covered: list[Rect] = []
    for row in neighbours:
        if row["marker_uid"] == face_uid:
            continue
        try:
            rect = marker_rect(float(row["x"]), float(row["y"]), float(row["w"]), float(row["h"]), width, height)
        except ValueError:  # an empty or non-numeric cell
            continue
        if rect is None or iou(rect, face_box) >= SAME_FACE_IOU:
            continue
        inside = intersect(rect, crop_rect)
        if inside is not None:
            covered.append(inside)
    return union_area(covered) / float(side * side) if side > 0 else 0.0


# ---------------------------------------------------------------------------------------------------
# Filters and ranking


def check_record(face: Face, neighbours_by_file: Mapping[str, list[dict[str, str]]]) -> None:
    """Reasons 1-2: is there a usable crop record, image and marker? Fills other_face_share."""
    record, marker = face.record, face.marker
    if record is None:
        return  # the loader has already excluded it
    if record.get("status") != "ok":
        face.exclude("unreadable", str(record.get("reason") or "excluded by the crop stage"))
        return
    image = record.get("image")
    if not isinstance(image, str) or not image:
        face.exclude("unreadable", "crop record names no image")
        return
    face.crop_path = image
    if not Path(image).is_file():
        face.exclude("unreadable", f"crop image {image} is missing")
        return
    problem = _measurement_problem(record)
    if problem:
        face.exclude("unreadable", problem)
        return
    if marker is None:
        face.exclude("stale", "marker is no longer in markers.tsv (deleted, rejected or reassigned)")
        return
    file_uid = str((record.get("source") or {}).get("file_uid") or "")
    face.other_face_share = other_face_share(
        face.marker_uid,
        tuple(int(v) for v in record["face_box"]),
        record["crop_box"],
        (int(record["photo_width"]), int(record["photo_height"])),
        neighbours_by_file.get(file_uid, []),
    )


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
    for key in ("sharpness", "brightness", "clipped_dark", "clipped_bright"):
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


def apply_filters(face: Face, settings: SelectSettings) -> None:
    """Reasons 3-9, in order; only the first that applies is kept."""
    if face.reason_key:
        return
    marker = face.marker or {}
    record = face.record or {}
    m = face.measurements
    if marker.get("marker_review", "0").strip() not in ("", "0") and not settings.keep_review:
        face.exclude("awaiting review", "PhotoPrism flags this marker for review (low detector score)")
    if settings.manual_only and marker.get("subj_src", "") != "manual":
        face.exclude("not named by hand", "matched by clustering, select.manual_only is on")
    if settings.taken_after or settings.taken_before:
        _check_date_window(face, settings)
    crop_side = int(record["native_crop_side"])
    if crop_side < settings.min_crop_side:
        face.exclude("too small", f"native crop {crop_side} px < {settings.min_crop_side}")
    share = face.other_face_share or 0.0
    if share > settings.max_other_face_share:
        face.exclude("crowded", f"other faces cover {share:.3f} of the crop > {settings.max_other_face_share}")
    if m["sharpness"] < settings.min_sharpness:
        face.exclude("blurred", f"sharpness {m['sharpness']:.1f} < {settings.min_sharpness}")
    if m["brightness"] < settings.brightness_min:
        face.exclude("exposure", f"too dark, brightness {m['brightness']:.1f} < {settings.brightness_min}")
    if m["brightness"] > settings.brightness_max:
        face.exclude("exposure", f"too bright, brightness {m['brightness']:.1f} > {settings.brightness_max}")
    clipped = m["clipped_dark"] + m["clipped_bright"]
    if clipped > settings.max_clipped_share:
        face.exclude("exposure", f"clipped share {clipped:.3f} > {settings.max_clipped_share}")


def _check_date_window(face: Face, settings: SelectSettings) -> None:
    if face.taken_at is None:
        face.exclude("date window", "no taken_at date")
        return
    day = face.taken_at.date()
    if settings.taken_after and day < settings.taken_after:
        face.exclude("date window", f"taken {day} before {settings.taken_after}")
    elif settings.taken_before and day >= settings.taken_before:
        face.exclude("date window", f"taken {day}, not before {settings.taken_before}")


def crop_face_box(record: Mapping[str, Any]) -> identity.Box:
    """The face box in the crop image's pixels (the record's boxes are in photo pixels)."""
    left, top, side = (int(v) for v in record["crop_box"][:3])
    scale = int(record.get("output_side") or side) / side
    x0, y0, x1, y1 = (int(v) for v in record["face_box"])
    return (
        round((x0 - left) * scale),
        round((y0 - top) * scale),
        round((x1 - left) * scale),
        round((y1 - top) * scale),
    )


def check_identity(faces: Sequence[Face], settings: SelectSettings, log: Any, workers: int = 1) -> dict[str, Any]:
    """Reason 10: embed every candidate (cached), build the reference, exclude faces too far from it.

    Returns what identity.json records: the model, threshold, reference and its centre.
    """
    if settings.max_identity_distance is None:
        installed = importlib.util.find_spec("dlib") is not None
        note = "" if installed else " (and the identity model is not installed)"
        log(f"identity check off: select.max_identity_distance is null{note}; faces of other people are not caught")
        return {"enabled": False}
    try:
        model = identity.load_model()
    except identity.IdentityModelMissing as error:
        hint = "to select without the identity check set select.max_identity_distance: null"
        raise LikenessError(f"{error}; {hint}") from None
    threshold = model.threshold if settings.max_identity_distance == "model" else float(settings.max_identity_distance)
    cache = identity.EmbeddingCache(settings.identity_cache_dir, model)
    candidates = [f for f in faces if not f.reason_key]
    started = time.monotonic()
    crops = [(f.crop_path, crop_face_box(f.record or {})) for f in candidates]
    for face, embedding in zip(candidates, identity.embed_crops(model, cache, crops, workers), strict=True):
        face.identity = embedding
        if embedding is None:
            face.exclude("unreadable", f"crop image {face.crop_path} cannot be read or decoded")
    embedded = [f for f in candidates if f.identity is not None and not f.reason_key]
    seconds = time.monotonic() - started
    speed = f", {seconds / cache.computed:.3f} s/face, {workers} process(es)" if cache.computed else ""
    log(f"identity: {len(embedded)} faces, {cache.hits} from cache, {cache.computed} computed ({model.name}{speed})")
    summary: dict[str, Any] = {"enabled": True, "model": model.name, "model_key": model.key, "threshold": threshold}
    if not embedded:
        return summary
    if settings.identity_reference in ("recent", "all"):
        reference = identity.reference_from_faces(
            [f.identity.vector for f in embedded],  # type: ignore[union-attr]
            [f.taken_at for f in embedded],
            settings.identity_reference,
            threshold,
            [f.marker_uid for f in embedded],
        )
    else:
        reference = identity.reference_from_folder(settings.identity_reference, model, cache, threshold)
    far = 0
    for face in embedded:
        face.identity_distance = round(identity.distance(face.identity.vector, reference.centre), 4)  # type: ignore[union-attr]
        if face.identity_distance > threshold:
            far += 1
            face.exclude(
                "not the same person",
                "",
                text=f"not the same person: distance {face.identity_distance:.2f} > {threshold:.2f} from the reference",
            )
    log(f"identity reference: {reference.description}; {far} faces farther than {threshold:.2f}")
    disagree = compare_with_photoprism(embedded, reference, threshold)
    if disagree:
        log(f"identity: PhotoPrism's own embeddings disagree on {len(disagree)} faces ({', '.join(disagree)})")
    summary["photoprism_disagrees"] = disagree
    summary.update(
        reference=reference.description,
        reference_centre=[round(float(v), 6) for v in reference.centre],
    )
    return summary


def compare_with_photoprism(faces: Sequence[Face], reference: identity.Reference, threshold: float) -> list[str]:
    """Where PhotoPrism stored its own embeddings (markers.embeddings_json), measure each face's distance
    to their centre over the same reference faces, and note the faces on which PhotoPrism
    (identity.PHOTOPRISM_CLUSTER_DIST) and the identity model come to different answers. Returns their UIDs.
    """
    vectors = {f.marker_uid: identity.decode_photoprism_embedding((f.marker or {}).get("embedding", "")) for f in faces}
    usable = [f for f in faces if vectors[f.marker_uid] is not None]
    sizes = {vectors[f.marker_uid].shape for f in usable}  # type: ignore[union-attr]
    if len(usable) < 2 or len(sizes) != 1:
        return []
    members = [f for f in usable if reference.members_uids is None or f.marker_uid in reference.members_uids]
    centre, _ = identity.robust_centre(
        np.array([vectors[f.marker_uid] for f in (members or usable)]), identity.PHOTOPRISM_CLUSTER_DIST
    )
    disagree = []
    for face in usable:
        pp = round(identity.distance(vectors[face.marker_uid], centre), 4)  # type: ignore[arg-type]
        face.pp_identity_distance = pp
        pp_same = pp <= identity.PHOTOPRISM_CLUSTER_DIST
        ours_same = (face.identity_distance or 0.0) <= threshold
        if pp_same != ours_same:
            face.identity_note = (
                f"PhotoPrism's embeddings say {'the same' if pp_same else 'another'} person"
                f" ({pp:.2f} {'<=' if pp_same else '>'} {identity.PHOTOPRISM_CLUSTER_DIST}),"
                f" the identity model {'the same' if ours_same else 'another'}"
                f" ({face.identity_distance:.2f} {'<=' if ours_same else '>'} {threshold:.2f})"
            )
            disagree.append(face.marker_uid)
    return disagree


def _selected_centre(selected: Sequence[Face], summary: Mapping[str, Any]) -> list[float] | None:
    """The robust centre of the selected faces: what a generated headshot is compared with."""
    vectors = [f.identity.vector for f in selected if f.identity is not None]
    if not vectors or not summary.get("enabled"):
        return None
    centre, _ = identity.robust_centre(np.array(vectors), float(summary["threshold"]))
    return [round(float(v), 6) for v in centre]


def rank_score(face: Face, newest: dt.datetime | None) -> float:
    """The documented 0-1 score (module docstring); needs a record with valid measurements."""
    m = face.measurements
    record = face.record or {}
    sharpness = max(0.0, float(m["sharpness"]))
    clipped = float(m["clipped_dark"]) + float(m["clipped_bright"])
    terms = {
        "sharpness": sharpness / (sharpness + SHARPNESS_HALF),
        "resolution": min(int(record["native_crop_side"]), TRAINING_SIDE) / TRAINING_SIDE,
        "exposure": _clamp01(1 - abs(float(m["brightness"]) - 128) / 128 - 2 * clipped),
        "crowding": _clamp01(1 - 4 * (face.other_face_share or 0.0)),
        "recency": _recency(face.taken_at, newest),
        "confidence": _clamp01(_to_float((face.marker or {}).get("score")) / 100),
    }
    return round(sum(WEIGHTS[name] * value for name, value in terms.items()), 6)


def _recency(taken_at: dt.datetime | None, newest: dt.datetime | None) -> float:
    if taken_at is None or newest is None:
        return 0.0
    years = (newest - taken_at).total_seconds() / (365.25 * 86400)
    return _clamp01(1 - years / RECENCY_YEARS)


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def _to_float(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def rank_key(face: Face) -> tuple[float, str]:
    return (-(face.score or 0.0), face.marker_uid)


def group_duplicates(faces: Sequence[Face], max_distance: int, identity_distance: float = 0.0) -> list[list[Face]]:
    """Near-duplicate groups: faces linked by chains of pHash distances <= max_distance, or of identity
    embeddings within ``identity_distance`` (the same picture re-saved, re-cropped or relit; 0 = off).

    ``faces`` must be in rank order; each group keeps that order, so its first face is its best.
    """
    count = len(faces)
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = np.array([int(f.measurements["phash"], 16) for f in faces], dtype=np.uint64)
    for i in range(count - 1):
        distances = np.bitwise_count(hashes[i + 1 :] ^ hashes[i])
        for offset in np.flatnonzero(distances <= max_distance):
            a, b = root(i), root(i + 1 + int(offset))
            if a != b:
                parent[max(a, b)] = min(a, b)
    embedded = [i for i, f in enumerate(faces) if f.identity is not None]
    if identity_distance > 0 and len(embedded) > 1:
        vectors = np.array([faces[i].identity.vector for i in embedded], dtype=np.float64)  # type: ignore[union-attr]
        for k, i in enumerate(embedded[:-1]):
            near = np.linalg.norm(vectors[k + 1 :] - vectors[k], axis=1) <= identity_distance
            for offset in np.flatnonzero(near):
                a, b = root(i), root(embedded[k + 1 + int(offset)])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[Face]] = {}
    for i, face in enumerate(faces):
        groups.setdefault(root(i), []).append(face)
    return list(groups.values())


def pose_bin(face: Face) -> str:
    """The head-pose bin of a face: yaw (frontal within 15 degrees, turned left/right) x pitch
    (level within 15 degrees, up/down); "unknown" without the identity model's landmarks."""
    if face.identity is None:
        return "unknown"
    yaw, pitch = face.identity.yaw, face.identity.pitch
    turn = "frontal" if abs(yaw) < POSE_BIN_DEGREES else ("turned left" if yaw < 0 else "turned right")
    tilt = "level" if abs(pitch) < POSE_BIN_DEGREES else ("up" if pitch < 0 else "down")
    return f"{turn}, {tilt}"


def spread(pool: Sequence[Face], top_n: int) -> list[Face]:
    """``top_n`` faces spread over (year, pose bin) strata: round after round, each stratum gives its
    best face not yet taken, strata in the order of their best face's rank. Returns rank order."""
    strata: dict[tuple[str, str], list[Face]] = {}
    for face in pool:  # rank order, so each stratum's list is best first
        year = str(face.taken_at.year) if face.taken_at else "undated"
        strata.setdefault((year, pose_bin(face)), []).append(face)
    queues = list(strata.values())
    taken: list[Face] = []
    depth = 0
    while len(taken) < top_n:
        row = [queue[depth] for queue in queues if depth < len(queue)]
        if not row:
            break
        taken.extend(row[: top_n - len(taken)])
        depth += 1
    return sorted(taken, key=rank_key)


def choose(candidates: list[Face], settings: SelectSettings) -> list[Face]:
    """Reasons 11-13 on faces that passed the filters; returns the selection in rank order."""
    ordered = sorted(candidates, key=rank_key)
    for group in group_duplicates(ordered, settings.duplicate_distance, settings.duplicate_identity_distance):
        best = group[0]
        for other in group[1:]:
            bits = hamming_distance(best.measurements["phash"], other.measurements["phash"])
            if bits <= settings.duplicate_distance or best.identity is None or other.identity is None:
                text = f"duplicate of {best.marker_uid} ({bits} bits apart)"
            else:
                apart = identity.distance(best.identity.vector, other.identity.vector)
                text = f"duplicate of {best.marker_uid} (identity embeddings {apart:.3f} apart)"
            other.exclude("duplicate", "", text=text)
            best.duplicates.append(other.marker_uid)
    per_day: dict[dt.date, int] = {}
    pool: list[Face] = []
    for face in ordered:
        if face.reason_key:
            continue
        if settings.max_per_day and face.taken_at is not None:
            day = face.taken_at.date()
            if per_day.get(day, 0) >= settings.max_per_day:
                face.exclude("day cap", f"{settings.max_per_day} better faces kept from {day}")
                continue
            per_day[day] = per_day.get(day, 0) + 1
        pool.append(face)
    if settings.diversity and len(pool) > settings.top_n:
        selected = spread(pool, settings.top_n)
        how = f"the {settings.top_n} kept are spread over years and head poses (select.diversity)"
    else:
        selected = pool[: settings.top_n]
        how = f"after the best {settings.top_n}"
    chosen = {id(face) for face in selected}
    for rank, face in enumerate(pool, start=1):
        if id(face) not in chosen:
            face.exclude("below top_n", f"rank {rank}; {how}")
    return selected


# ---------------------------------------------------------------------------------------------------
# Outputs


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def _fmt(value: Any, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}f}"
    return _one_line(value)


def _image_name(face: Face) -> str:
    """The training image's name: the face's file stem (likeness.names), never the raw marker UID."""
    suffix = Path(face.crop_path).suffix.lower() or ".jpg"
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
    }


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def manifest_bytes(selected: Sequence[Face]) -> bytes:
    rows = []
    for rank, face in enumerate(selected, start=1):
        cells = _measure_cells(face)
        cells.update(
            rank=str(rank),
            marker_uid=face.marker_uid,
            image=f"images/{_image_name(face)}",
            duplicates=",".join(sorted(face.duplicates)),
        )
        rows.append([cells[column] for column in MANIFEST_COLUMNS])
    return tables.table_bytes(MANIFEST_COLUMNS, rows)


def excluded_bytes(excluded: Sequence[Face]) -> bytes:
    order = {key: index for index, key in enumerate(REASON_ORDER)}
    rows = []
    for face in sorted(excluded, key=lambda f: (order[f.reason_key], f.marker_uid)):
        cells = _measure_cells(face)
        cells.update(marker_uid=face.marker_uid, reason_key=face.reason_key, reason=_one_line(face.reason))
        rows.append([cells[column] for column in EXCLUDED_COLUMNS])
    return tables.table_bytes(EXCLUDED_COLUMNS, rows)


def summary_line(kept: int, faces: Sequence[Face]) -> str:
    counts: dict[str, int] = {}
    for face in faces:
        if face.reason_key:
            counts[face.reason_key] = counts.get(face.reason_key, 0) + 1
    parts = [f"{key} {counts[key]}" for key in REASON_ORDER if counts.get(key)]
    line = f"kept {kept} of {len(faces)} faces"
    return f"{line}: {', '.join(parts)}" if parts else line


@dataclass(frozen=True)
class SyncReport:
    added: tuple[str, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]


def sync_images(wanted: Mapping[str, str], images_dir: str | os.PathLike[str]) -> SyncReport:
    """Make ``images_dir`` hold exactly ``wanted`` (file name -> crop path), touching only changes.

    A file already holding the crop's bytes (the same inode or an identical copy) is left alone, so
    its mtime and inode stay. New or changed crops are hard-linked (atomically: link to a temporary
    name, then rename) or, where the filesystem refuses links, copied atomically. Image files no longer
    wanted are removed, and so are the latent caches sd-scripts keeps beside a removed or replaced
    image (``<stem>_<W>x<H>_sdxl.npz``, ``<stem>.npz``), which would otherwise train on the old pixels.
    Captions and other files are left to the stages that write them; temporary files of an interrupted
    sync (``.*.tmp``) are removed.
    """
    folder = Path(images_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)  # a temporary link or copy from an interrupted run
    present = {p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    removed = sorted(present - set(wanted))
    for name in removed:
        (folder / name).unlink(missing_ok=True)
        _drop_latent_caches(folder, Path(name).stem)
    added, replaced = [], []
    for name in sorted(wanted):
        source, target = Path(wanted[name]), folder / name
        if name in present:
            if _same_file_content(source, target):
                continue
            replaced.append(name)
            _drop_latent_caches(folder, target.stem)
        else:
            added.append(name)
        _place(source, target)
    return SyncReport(tuple(added), tuple(replaced), tuple(removed))


def _same_file_content(source: Path, target: Path) -> bool:
    try:
        return os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)
    except OSError:
        return False


def _place(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        # Another filesystem, or one without hard links: fall back to an atomic copy.
        atomic_write_bytes(target, source.read_bytes())
        return
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _drop_latent_caches(folder: Path, stem: str) -> None:
    for cache in folder.glob(f"{stem}*.npz"):
        if cache.name == f"{stem}.npz" or cache.name.startswith(f"{stem}_"):
            cache.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# The entry point for the Snakemake rule


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
            face.exclude("unreadable", error)
    for face in faces.values():
        if face.record is None and not face.reason_key:
            marker = face.marker or {}
            if marker.get("status", "ok") not in ("", "ok"):
                face.exclude("unreadable", f"export: {marker.get('reason') or marker.get('status')}")
            else:
                face.exclude("unreadable", "no crop record")
    return [faces[uid] for uid in sorted(faces)]


def run_selection(
    crop_json_paths: Sequence[str],
    markers_tsv: str | os.PathLike[str],
    neighbours_tsv: str | os.PathLike[str],
    cfg: Mapping[str, Any] | None,
    out_dir: str | os.PathLike[str] = "results/dataset",
    log: Any = None,
    workers: int = 1,
) -> str:
    """Select the training set and write manifest.tsv, excluded.tsv and images/ under ``out_dir``.

    ``cfg`` is the ``select`` config section. Relative crop image paths in the records are resolved
    against the working directory (the workflow's root). The TSVs are rewritten only when their
    content changes; images/ is synced file by file. ``log`` (a callable taking one line) gets the
    identity check's line; ``workers`` processes embed new faces. Returns the one-line summary,
    e.g. "kept 60 of 214 faces: too small 80, blurred 30, duplicate 20".
    """
    settings = SelectSettings.from_config(cfg)
    markers = read_tsv(markers_tsv, MARKER_COLUMNS)
    neighbours_by_file: dict[str, list[dict[str, str]]] = {}
    for row in read_tsv(neighbours_tsv, NEIGHBOUR_COLUMNS):
        neighbours_by_file.setdefault(row["file_uid"], []).append(row)

    faces = gather_faces(crop_json_paths, markers)
    dated = [f.taken_at for f in faces if f.taken_at is not None]
    newest = max(dated) if dated else None
    for face in faces:
        check_record(face, neighbours_by_file)
        if not face.reason_key:
            # Scored before the filters so that excluded.tsv shows the score of filtered faces too.
            face.score = rank_score(face, newest)
        apply_filters(face, settings)
    identity_summary = check_identity(faces, settings, log or (lambda line: None), workers)
    selected = choose([f for f in faces if not f.reason_key], settings)
    identity_summary["selected_centre"] = _selected_centre(selected, identity_summary)

    out = Path(out_dir)
    sync_images({_image_name(f): f.crop_path for f in selected}, out / "images")
    write_if_changed(out / "manifest.tsv", manifest_bytes(selected))
    write_if_changed(out / "excluded.tsv", excluded_bytes([f for f in faces if f.reason_key]))
    write_if_changed(out / "identity.json", (json.dumps(identity_summary, indent=1, sort_keys=True) + "\n").encode())
    return summary_line(len(selected), faces)


def run_selection_job(
    crop_json_paths: Sequence[str],
    markers_tsv: str,
    neighbours_tsv: str,
    cfg: Mapping[str, Any],
    log_path: str,
    out_dir: str = "results/dataset",
    workers: int = 1,
) -> str:
    """The select rule's body: select, then print and log the one summary line of this run."""
    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(text)
        print(f"likeness: {text}", flush=True)

    line = run_selection(crop_json_paths, markers_tsv, neighbours_tsv, cfg, out_dir, log, workers)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text("".join(f"{text}\n" for text in [*lines, line]))
    print(f"likeness: {line}", flush=True)
    return line
