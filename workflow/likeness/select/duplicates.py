"""Near-duplicates (reason 11): burst shots, re-saved copies and the same photo imported twice.

Faces whose perceptual hashes are within ``select.duplicate_distance`` bits, or whose identity embeddings
are within ``select.duplicate_identity_distance``, link into one group (chains included); only the
best-ranked face of a group can be selected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from likeness import identity
from likeness.config import Section
from likeness.crop.quality import hamming_distance
from likeness.select import pairs
from likeness.select.faces import Face
from likeness.tables import Reason


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

    def link(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    # Both passes run in blocks of rows (likeness.select.pairs): O(n) memory, never n x n at once.
    hashes = np.array([int(f.measurements["phash"], 16) for f in faces], dtype=np.uint64)
    for rows, cols in pairs.hash_pairs(hashes, max_distance):
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            link(i, j)
    embedded = [i for i, f in enumerate(faces) if f.identity is not None]
    if identity_distance > 0 and len(embedded) > 1:
        vectors = np.array([faces[i].identity.vector for i in embedded], dtype=np.float64)  # type: ignore[union-attr]
        for rows, cols in pairs.embedding_pairs(vectors, identity_distance):
            for k, m in zip(rows.tolist(), cols.tolist(), strict=True):
                link(embedded[k], embedded[m])
    groups: dict[int, list[Face]] = {}
    for i, face in enumerate(faces):
        groups.setdefault(root(i), []).append(face)
    return list(groups.values())


def exclude_duplicates(ordered: Sequence[Face], settings: Section) -> None:
    """Every face but the best of each group gets reason 11; the best lists the others."""
    for group in group_duplicates(ordered, settings.duplicate_distance, settings.duplicate_identity_distance):
        best = group[0]
        for other in group[1:]:
            bits = hamming_distance(best.measurements["phash"], other.measurements["phash"])
            if bits <= settings.duplicate_distance or best.identity is None or other.identity is None:
                text = f"duplicate of {best.marker_uid} ({bits} bits apart)"
            else:
                apart = identity.distance(best.identity.vector, other.identity.vector)
                text = f"duplicate of {best.marker_uid} (identity embeddings {apart:.3f} apart)"
            other.exclude(Reason.DUPLICATE, "", text=text)
            best.duplicates.append(other.marker_uid)
