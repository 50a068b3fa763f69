"""Pairs of faces within a distance, in O(n) memory: blocks of rows against every later face.

The stages' pairwise questions (near-duplicate hashes and embeddings, the reference's vote) are asked
of every pair, but never as one n x n (x d) array: a block of rows at a time, each block about
BLOCK_VALUES values whatever n is. Embedding distances are computed in float32 through the Gram matrix
(a matrix product, so fast), and every pair that the float32 error could put on the wrong side of the
limit is decided again in float64, exactly as the per-pair distance defines it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Values (float32 or uint64) in one block's distance array: ~8-16 MB, plus a few temporaries that size.
BLOCK_VALUES = 2_000_000


def block_rows(count: int) -> int:
    """Rows a block holds when each row has ``count`` values."""
    return max(1, BLOCK_VALUES // max(count, 1))


def gram_error(vectors32: np.ndarray, limit_sq: float) -> float:
    """A bound on the error of a squared distance computed in float32 through the Gram matrix.

    |a|^2 + |b|^2 - 2 a.b: each dot product of d terms is off by at most d * eps * |a| |b| (the classical
    bound), and the float64 -> float32 rounding of the inputs adds a few eps * |a|^2 (the squared
    limit stands in for tiny vectors). Eight times that is generous; pairs within it of the limit are
    decided in float64.
    """
    eps = float(np.finfo(np.float32).eps)
    largest = float(np.max(np.einsum("ij,ij->i", vectors32, vectors32))) if len(vectors32) else 0.0
    return 8.0 * (vectors32.shape[1] + 4) * eps * max(largest, limit_sq, 1e-30)


def pair_distances(vectors: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 distances of the pairs (rows[k], cols[k]): ``norm(vectors[col] - vectors[row])``."""
    return np.linalg.norm(vectors[cols] - vectors[rows], axis=1)


def embedding_pairs(vectors: np.ndarray, limit: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i, j), i < j, whose float64 distance ``norm(vectors[j] - vectors[i])`` <= ``limit``,
    as arrays, one block of rows at a time (rows in order, each row's partners ascending)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    count = len(vectors)
    if count < 2:
        return
    vectors32 = vectors.astype(np.float32)
    norms32 = np.einsum("ij,ij->i", vectors32, vectors32)
    limit_sq = limit * limit
    error = gram_error(vectors32, limit_sq)
    block = block_rows(count)
    for start in range(0, count - 1, block):
        stop = min(start + block, count - 1)
        # Only the partners after the block's first row: the upper triangle, half the work.
        squared = (
            norms32[start:stop, None] + norms32[None, start:] - 2.0 * (vectors32[start:stop] @ vectors32[start:].T)
        )
        rows, cols = np.nonzero(squared <= limit_sq + error)
        rows, cols = rows + start, cols + start
        later = cols > rows
        rows, cols = rows[later], cols[later]
        unsure = squared[rows - start, cols - start] > limit_sq - error
        if unsure.any():
            keep = ~unsure
            keep[unsure] = pair_distances(vectors, rows[unsure], cols[unsure]) <= limit
            rows, cols = rows[keep], cols[keep]
        yield rows, cols


def hash_pairs(hashes: np.ndarray, max_bits: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i, j), i < j, of 64-bit hashes at most ``max_bits`` bits apart, a block at a time."""
    count = len(hashes)
    block = block_rows(count)
    for start in range(0, count - 1, block):
        stop = min(start + block, count - 1)
        bits = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(bits <= max_bits)
        rows, cols = rows + start, cols + start
        later = cols > rows
        yield rows[later], cols[later]
