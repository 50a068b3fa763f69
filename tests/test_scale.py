"""Memory stays bounded at scale: the stages' pairwise work runs in blocks, never n x n x d at once.

Each memory test runs its work in a subprocess whose address space is capped (RLIMIT_AS) a few hundred
MB above what the interpreter holds after its imports, and shows that the code it replaces would not
fit under that same cap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from likeness.select import reference
from likeness.select.reference import robust_centre

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"
CEILING_MB = 300


def pairwise_robust_centre(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The definition robust_centre keeps: every pairwise distance at once (n x n x d float64)."""
    vectors = np.asarray(vectors, dtype=np.float64)
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


def run_capped(code: str, ceiling_mb: int = CEILING_MB) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after the cap: the address space the interpreter holds after ``import numpy`` and
    likeness.select.reference, plus ``ceiling_mb``. One BLAS thread, so that the cap is not spent on
    thread stacks."""
    prelude = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(WORKFLOW)!r})
        import numpy as np
        from likeness.select.reference import robust_centre
        with open("/proc/self/status") as status:
            size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        limit = size_kb * 1024 + {ceiling_mb} * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=600
    )


def test_the_reference_of_3000_faces_fits_300_mb_where_the_pairwise_array_does_not() -> None:
    result = run_capped(
        """
        rng = np.random.default_rng(7)
        vectors = np.vstack([rng.normal(0.1, 0.03, (2000, 128)), rng.normal(-0.1, 0.03, (1000, 128))])
        centre, members = robust_centre(vectors, 0.6)
        print("members", members, "centre", round(float(np.abs(centre - 0.1).max()), 3))
        try:
            np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
        except MemoryError:
            print("pairwise: MemoryError")
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("members 2000 centre ")
    assert float(lines[0].split()[-1]) < 0.01  # the larger group's centre
    assert lines[1] == "pairwise: MemoryError"  # the code it replaces would not fit under this cap


@pytest.mark.parametrize("seed", range(12))
def test_the_blocked_reference_is_the_pairwise_one_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 300))
    dims = [2, 16, 128][seed % 3]
    vectors = rng.normal(0.0, [0.05, 0.1, 0.3][seed % 3], (count, dims))
    if seed % 2:
        vectors[: count // 3] += 1.0  # a large minority of someone else
    if seed % 4 == 0 and count > 4:
        vectors[1], vectors[3] = vectors[0], vectors[2]  # the same photo imported twice
    if seed % 5 == 0:
        vectors = np.round(vectors, 1)  # many equal distances: the ties decide
    threshold = [0.3, 0.6, 1.0][seed % 3]
    expected_centre, expected_members = pairwise_robust_centre(vectors, threshold)
    centre, members = robust_centre(vectors, threshold)
    assert members == expected_members
    assert centre.tobytes() == expected_centre.tobytes()


def test_distances_at_the_threshold_are_decided_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    # Faces exactly at the threshold from one another (a distance of 0.5 on one axis): float32 alone
    # could count them either way, the exact recount keeps the pairwise result.
    vectors = np.zeros((9, 128))
    vectors[:, 0] = np.arange(9) * 0.5
    monkeypatch.setattr(reference, "BLOCK_VALUES", 20)  # blocks of two rows
    assert robust_centre(vectors, 0.5)[1] == pairwise_robust_centre(vectors, 0.5)[1]
    assert robust_centre(vectors, 0.5)[0].tobytes() == pairwise_robust_centre(vectors, 0.5)[0].tobytes()


def test_above_the_cap_the_seed_comes_from_evenly_spaced_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "MAX_SEED_CANDIDATES", 50)
    assert list(reference.seed_candidates(50)) == list(range(50))
    spaced = reference.seed_candidates(1000)
    assert len(spaced) == 50 and spaced[0] == 0 and spaced[-1] == 999
    rng = np.random.default_rng(3)
    vectors = np.vstack([rng.normal(0.1, 0.03, (600, 128)), rng.normal(-0.1, 0.03, (400, 128))])
    rng.shuffle(vectors)
    centre, members = robust_centre(vectors, 0.6)
    assert members == 600 and np.abs(centre - 0.1).max() < 0.01
