"""The person's reference: the robust centre of the faces that stand for how the person looks.

Among the reference faces, the one with the most others within the threshold seeds a group, and the
mean of the faces within the threshold of the group's mean (twice refined) is the centre. A minority of
wrong faces, even a large one, does not move it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from likeness.errors import ConfigError
from likeness.select.identity import EmbeddingCache, IdentityModel, detect_faces
from likeness.tables import IMAGE_SUFFIXES

RECENT_YEARS = 3.0  # "recent": faces taken within this many years of the newest face ...
MIN_REFERENCE_FACES = 10  # ... but at least this many (the newest ones) when fewer are that recent


@dataclass(frozen=True)
class Reference:
    """The person's reference embedding and how it was made (for the log and the report)."""

    centre: np.ndarray
    source: str  # "recent", "all" or the folder
    faces: int  # faces it was chosen from
    members: int  # faces within the threshold of the centre
    description: str
    members_uids: frozenset[str] | None = None  # which faces those are, when they are faces of the library


def robust_centre(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The centre of the largest group of mutually similar faces, and that group's size.

    The face with the most others within ``threshold`` (ties: the smaller median distance) seeds the
    group; the centre is the mean of the faces within ``threshold`` of the group's mean, refined twice.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) == 0:
        raise ValueError("no faces to centre")
    pairwise = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
    counts = (pairwise <= threshold).sum(axis=1)
    medians = np.median(pairwise, axis=1)
    seed = min(range(len(vectors)), key=lambda i: (-counts[i], medians[i], i))
    members = pairwise[seed] <= threshold
    centre = vectors[members].mean(axis=0)
    for _ in range(2):
        near = np.linalg.norm(vectors - centre, axis=1) <= threshold
        if not near.any():
            break
        members = near
        centre = vectors[members].mean(axis=0)
    return centre.astype(np.float32), int(members.sum())


def recent_indices(taken: Sequence[dt.datetime | None]) -> list[int]:
    """Faces taken within RECENT_YEARS of the newest, or the MIN_REFERENCE_FACES newest if fewer."""
    dated = sorted((t, i) for i, t in enumerate(taken) if t is not None)
    if not dated:
        return list(range(len(taken)))
    newest = dated[-1][0]
    since = newest - dt.timedelta(days=365.25 * RECENT_YEARS)
    recent = [i for t, i in dated if t >= since]
    if len(recent) < MIN_REFERENCE_FACES:
        recent = [i for _, i in dated[-MIN_REFERENCE_FACES:]]
    return sorted(recent)


def reference_from_faces(
    vectors: Sequence[np.ndarray],
    taken: Sequence[dt.datetime | None],
    mode: str,
    threshold: float,
    uids: Sequence[str] | None = None,
) -> Reference:
    indices = recent_indices(taken) if mode == "recent" else list(range(len(vectors)))
    chosen = np.array([vectors[i] for i in indices])
    centre, members = robust_centre(chosen, threshold)
    near = np.linalg.norm(chosen - centre, axis=1) <= threshold
    members_uids = frozenset(uids[indices[k]] for k in np.flatnonzero(near)) if uids is not None else None
    if mode == "recent":
        dates = [taken[i] for i in indices if taken[i] is not None]
        since = f" taken since {min(dates):%Y-%m-%d}" if dates else ""
        what = f"{len(indices)} recent faces{since}"
    else:
        what = f"all {len(indices)} candidate faces"
    description = f"{what}, {members} of them within {threshold:.2f} form its centre"
    return Reference(centre, mode, len(indices), members, description, members_uids)


def reference_from_folder(folder: str, model: IdentityModel, cache: EmbeddingCache, threshold: float) -> Reference:
    """The largest face of each photo in ``folder`` (select.identity_reference) makes the reference."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("select.identity_reference", f"'{folder}' is not recent, all or a folder of photos")
    vectors = []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        faces = detect_faces(model, cache, path.read_bytes())
        if faces:
            largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            vectors.append(largest.vector)
    if not vectors:
        raise ConfigError("select.identity_reference", f"no face found in any photo of {folder}")
    centre, members = robust_centre(np.array(vectors), threshold)
    description = f"{len(vectors)} reference photos in {folder}, {members} within {threshold:.2f} form its centre"
    return Reference(centre, folder, len(vectors), members, description)
