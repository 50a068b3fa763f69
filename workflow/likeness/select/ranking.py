"""Ranking and the final choice: the score, the per-day cap and top_n, spread over years and poses.

The rank score (0-1, higher is better) is a weighted sum of terms that are each 0-1:

* sharpness 0.35: ``s / (s + 150)``, so the term is 0.5 at 150 and saturates for very sharp faces;
* resolution 0.25: ``min(native crop side, 1024) / 1024``, SDXL's training side;
* exposure 0.15: ``1 - |brightness - 128| / 128 - 2 * clipped share``, clamped to 0-1;
* crowding 0.10: ``1 - 4 * other face share``, clamped to 0-1; with select.crowded: mask too (a face
  kept by masking its neighbours out still ranks below the same face alone: less of its crop trains);
* recency 0.10: ``1 - years before the newest face / 10``, clamped (no date: 0);
* detector confidence 0.05: PhotoPrism's marker score / 100, clamped (manual markers have 100).

Ties are broken by marker_uid, so identical inputs always give byte-identical outputs.

With ``select.diversity`` (on by default) the ``top_n`` are spread over (year, head-pose bin) strata
instead of being the top scores only: round after round each stratum gives its best remaining face
(``spread``). Head pose is yaw and pitch from the identity model's landmarks, binned at
likeness.tables.POSE_BIN_DEGREES (frontal/turned left/turned right x level/up/down).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from likeness import tables
from likeness.config import Section
from likeness.select.duplicates import exclude_duplicates
from likeness.select.faces import Face
from likeness.tables import Reason

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


def rank_score(face: Face, newest: dt.datetime | None) -> float:
    """The documented 0-1 score (module docstring); needs a record with valid measurements."""
    return round(sum(score_parts(face, newest).values()), 6)


def score_parts(face: Face, newest: dt.datetime | None) -> dict[str, float]:
    """Each term's share of the score: its weight times its 0-1 value, by name in WEIGHTS' order. They add
    up to the score (rank_score rounds their unrounded sum), so a reader sees why a face ranks where it does."""
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
    return {name: WEIGHTS[name] * terms[name] for name in WEIGHTS}


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


def pose_bin(face: Face) -> str:
    """The head-pose bin of a face: yaw (frontal within 15 degrees, turned left/right) x pitch
    (level within 15 degrees, up/down); "unknown" without the identity model's landmarks."""
    if face.identity is None:
        return "unknown"
    return tables.pose_bin(face.identity.yaw, face.identity.pitch)


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


def choose(candidates: list[Face], settings: Section) -> list[Face]:
    """Reasons 11-13 on faces that passed the filters; returns the selection in rank order."""
    ordered = sorted(candidates, key=rank_key)
    exclude_duplicates(ordered, settings)
    per_day: dict[dt.date, int] = {}
    pool: list[Face] = []
    for face in ordered:
        if face.reason_key:
            continue
        if settings.max_per_day and face.taken_at is not None:
            day = face.taken_at.date()
            if per_day.get(day, 0) >= settings.max_per_day:
                face.exclude(Reason.DAY_CAP, f"{settings.max_per_day} better faces kept from {day}")
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
            face.exclude(Reason.BELOW_TOP_N, f"rank {rank}; {how}")
    return selected
