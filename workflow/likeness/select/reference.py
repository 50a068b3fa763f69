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
from likeness.identity import EmbeddingCache, IdentityModel, detect_faces
from likeness.select import pairs
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


# Faces that may seed the group: at most this many, evenly spaced over the input order (a deterministic
# cap). Each is still compared with every face, so the seed's count is over all faces; the cost of the
# vote is O(MAX_SEED_CANDIDATES x n) instead of O(n^2). Below the cap every face is a candidate.
MAX_SEED_CANDIDATES = 2000


def seed_candidates(count: int) -> np.ndarray:
    """The indices of the faces that may seed the group (all of them up to MAX_SEED_CANDIDATES)."""
    if count <= MAX_SEED_CANDIDATES:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, MAX_SEED_CANDIDATES).round().astype(np.int64))


def exact_distances(vectors: np.ndarray, row: int) -> np.ndarray:
    """Distances of one face to every face, in float64, computed as the seed choice defines them (the
    vote's blocks are float32 through the Gram matrix, likeness.select.pairs: O(n) memory)."""
    return np.linalg.norm(vectors[row] - vectors, axis=1)


def _vote(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each seed candidate: its exact count of faces within ``threshold`` and bounds on its median
    distance (the float32 median +- the error bound), computed a block of rows at a time.
    """
    count = len(vectors)
    candidates = seed_candidates(count)
    vectors32 = vectors.astype(np.float32)
    norms32 = np.einsum("ij,ij->i", vectors32, vectors32)
    limit_sq = threshold * threshold
    error = pairs.gram_error(vectors32, limit_sq)
    counts = np.zeros(len(candidates), dtype=np.int64)
    median_low = np.zeros(len(candidates))
    median_high = np.zeros(len(candidates))
    block = pairs.block_rows(count)
    middle = sorted({(count - 1) // 2, count // 2})
    for start in range(0, len(candidates), block):
        rows = candidates[start : start + block]
        squared = norms32[rows, None] + norms32[None, :] - 2.0 * (vectors32[rows] @ vectors32.T)
        np.maximum(squared, 0.0, out=squared)
        sure = (squared <= limit_sq - error).sum(axis=1)
        unsure_rows, unsure_cols = np.nonzero(np.abs(squared - limit_sq) <= error)
        if len(unsure_rows):
            near = pairs.pair_distances(vectors, unsure_cols, rows[unsure_rows]) <= threshold
            sure += np.bincount(unsure_rows[near], minlength=len(rows))
        counts[start : start + len(rows)] = sure
        # The median of the distances is the mean of the middle one or two; the sqrt keeps order, and a
        # squared distance off by at most ``error`` gives a distance within these bounds.
        mid = np.partition(squared, middle, axis=1)[:, middle].astype(np.float64)
        median_low[start : start + len(rows)] = np.sqrt(np.maximum(mid - error, 0.0)).mean(axis=1)
        median_high[start : start + len(rows)] = np.sqrt(mid + error).mean(axis=1)
    return candidates, counts, median_low, median_high


def robust_centre(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The centre of the largest group of mutually similar faces, and that group's size.

    The face with the most others within ``threshold`` (ties: the smaller median distance, then the
    earlier face) seeds the group; the centre is the mean of the faces within ``threshold`` of the
    group's mean, refined twice. Seeds are drawn from at most MAX_SEED_CANDIDATES faces (all of them
    below that). Memory is O(n) whatever n: the vote runs in blocks of float32 distances through the
    Gram matrix, and every comparison the float32 error could decide wrongly, and the median of every
    face still in the running, is recomputed in float64, so the result is that of the exact pairwise
    distances.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) == 0:
        raise ValueError("no faces to centre")
    candidates, counts, median_low, median_high = _vote(vectors, threshold)
    best = counts == counts.max()
    contenders = np.flatnonzero(best & (median_low <= median_high[best].min()))
    medians = {int(k): float(np.median(exact_distances(vectors, int(candidates[k])))) for k in contenders}
    seed = int(candidates[min(medians, key=lambda k: (medians[k], int(candidates[k])))])
    members = exact_distances(vectors, seed) <= threshold
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
