"""Memory stays bounded at scale: the stages' pairwise work runs in blocks, never n x n x d at once.

Each memory test runs its work in a subprocess whose address space is capped (RLIMIT_AS) a few hundred
MB above what the interpreter holds after its imports, and shows that the code it replaces would not
fit under that same cap.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from likeness import identity
from likeness.identity import Embedding
from likeness.identity import workers as identity_workers
from likeness.select import pairs, reference
from likeness.select.duplicates import group_duplicates
from likeness.select.faces import Face
from likeness.select.reference import robust_centre
from synthlib.portraits import PORTRAITS

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
    """Run ``code`` after the cap: the address space the interpreter holds after importing numpy and
    the modules under test, plus ``ceiling_mb``. One BLAS thread, so that the cap is not spent on
    thread stacks."""
    prelude = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(WORKFLOW)!r})
        import numpy as np
        from likeness.select.duplicates import group_duplicates
        from likeness.select.faces import Face
        from likeness.identity import Embedding
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
    monkeypatch.setattr(pairs, "BLOCK_VALUES", 20)  # blocks of two rows
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


def pairwise_duplicate_groups(faces: list[Face], max_distance: int, identity_distance: float) -> list[list[str]]:
    """The groups as the row-by-row code before blocks found them: every pair, one pass each."""
    parent = list(range(len(faces)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    def link(i: int, j: int) -> None:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)

    hashes = [int(f.measurements["phash"], 16) for f in faces]
    vectors = np.array([f.identity.vector for f in faces], dtype=np.float64)  # type: ignore[union-attr]
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            if (hashes[i] ^ hashes[j]).bit_count() <= max_distance:
                link(i, j)
        if identity_distance > 0:
            for offset in np.flatnonzero(np.linalg.norm(vectors[i + 1 :] - vectors[i], axis=1) <= identity_distance):
                link(i, i + 1 + int(offset))
    groups: dict[int, list[str]] = {}
    for i, face in enumerate(faces):
        groups.setdefault(root(i), []).append(face.marker_uid)
    return list(groups.values())


def random_faces(count: int, seed: int) -> list[Face]:
    rng = np.random.default_rng(seed)
    base_hashes = rng.integers(0, 2**63, size=max(count // 4, 1), dtype=np.int64).astype(np.uint64)
    centres = rng.normal(0, 0.1, (max(count // 5, 1), 128))
    faces = []
    for index in range(count):
        flips = np.uint64(sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, 12)), replace=False)))
        phash = int(base_hashes[index % len(base_hashes)] ^ flips)
        vector = (centres[index % len(centres)] + rng.normal(0, 0.006, 128)).astype(np.float32)
        embedding = Embedding(vector, (0, 0, 1, 1), True, 0.0, 0.0)
        faces.append(Face(f"m{index:04d}", record={"measurements": {"phash": f"{phash:016x}"}}, identity=embedding))
    return faces


@pytest.mark.parametrize(("count", "block_values"), [(2, 20), (57, 20), (300, 1000), (300, 2_000_000)])
def test_duplicate_groups_in_blocks_are_those_of_every_pair(
    count: int, block_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    faces = random_faces(count, count)
    monkeypatch.setattr(pairs, "BLOCK_VALUES", block_values)
    for max_distance, identity_distance in [(0, 0.0), (6, 0.0), (6, 0.08), (3, 0.1)]:
        groups = [[f.marker_uid for f in group] for group in group_duplicates(faces, max_distance, identity_distance)]
        assert groups == pairwise_duplicate_groups(faces, max_distance, identity_distance)
    assert count < 50 or max(len(g) for g in groups) > 1  # the data has duplicates to find


def test_duplicate_groups_of_20000_faces_fit_300_mb() -> None:
    result = run_capped(
        """
        rng = np.random.default_rng(5)
        vectors = rng.normal(0, 0.1, (20000, 128)).astype(np.float32)
        vectors[1::2] = vectors[::2] + 0.001  # every face has one near-copy
        hashes = rng.integers(0, 2**63, size=20000, dtype=np.int64)
        faces = [
            Face(f"m{i:05d}", record={"measurements": {"phash": f"{int(h):016x}"}},
                 identity=Embedding(v, (0, 0, 1, 1), True, 0.0, 0.0))
            for i, (h, v) in enumerate(zip(hashes, vectors))
        ]
        groups = group_duplicates(faces, 0, 0.08)
        print(len(groups), max(len(g) for g in groups))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10000", "2"]


PROGRESS_LINE = re.compile(
    r"identity: (\d+) of 12 faces embedded, [0-9.]+ faces/s, (about [0-9a-z ]+ left|time left not known yet)$"
)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_identity_pass_logs_faces_done_rate_and_time_left(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = identity.load_model()
    portrait = cv2.imread(str(PORTRAITS / "grace_hopper.jpg"))
    crops = []
    for index in range(12):  # twelve sizes: twelve contents, none cached
        side = 300 - 10 * index
        path = tmp_path / f"crop{index}.jpg"
        cv2.imwrite(str(path), cv2.resize(portrait, (side, side)))
        crops.append((str(path), (0, 0, side, side)))
    monkeypatch.setenv("LIKENESS_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(identity_workers, "PARALLEL_MIN_FACES", 2)
    lines: list[str] = []
    cache = identity.EmbeddingCache(tmp_path / "cache", model)
    embeddings = identity_workers.embed_crops(model, cache, crops, workers, lines.append)
    assert all(e is not None for e in embeddings) and cache.computed == 12
    assert lines, "no progress line"
    done = [int(PROGRESS_LINE.match(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert done == sorted(done) and all(d < 12 for d in done)
    if workers == 1:  # in process: a line after each face but the last
        assert done == list(range(1, 12))
        assert all("about" in line for line in lines)


# A real stage function asked for more than any machine has: every one of 200 million faces voting
# for the reference (a view costs nothing; robust_centre's float64 copy is 205 GB).
TOO_MANY_FACES_JOB = """
def too_many_faces(log):
    from likeness.select.reference import robust_centre
    robust_centre(np.broadcast_to(np.float32(0.1), (200_000_000, 128)), 0.6)
"""


def test_a_job_out_of_memory_ends_with_one_line_naming_the_stage_and_a_key(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "select_faces.log"
    result = run_capped(
        TOO_MANY_FACES_JOB
        + f"""
from likeness.joblog import run_logged, run_script
from snakemake.exceptions import WorkflowError
try:
    run_logged({str(log)!r}, too_many_faces)
except WorkflowError as error:
    print("run_logged:", error.args[0])
print("run_script: exit", run_script({str(log)!r}, too_many_faces))
"""
    )
    assert result.returncode == 0, result.stderr
    line = "likeness: the select stage ran out of memory; to lower what it needs set --cores 1"
    assert result.stdout.splitlines()[0].startswith(f"run_logged: {line}")
    assert result.stdout.splitlines()[1] == "run_script: exit 1"
    assert result.stderr.startswith(line) and len(result.stderr.splitlines()) == 1
    assert (
        log.read_text().startswith("error: the select stage ran out of memory") and "Traceback" not in log.read_text()
    )


@pytest.mark.snakemake
def test_snakemake_shows_a_job_out_of_memory_as_one_line_and_no_traceback(tmp_path: Path) -> None:
    # A rule that runs the stage function as the workflow's rules do (run_logged, a run: job inside
    # Snakemake), under an address-space cap so that the allocation fails whatever the machine.
    (tmp_path / "Snakefile").write_text(
        "import numpy as np\nfrom likeness.joblog import run_logged\n"
        + TOO_MANY_FACES_JOB
        + textwrap.dedent(
            """
            rule select_faces:
                output:
                    "manifest.tsv",
                log:
                    "logs/select_faces.log",
                run:
                    run_logged(log[0], too_many_faces)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(WORKFLOW)}
    limit = 16 * 1024**3

    def cap() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--cores", "1", "--force-use-threads"],
        cwd=tmp_path, env=env, capture_output=True, text=True, preexec_fn=cap, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0
    lines = [line for line in output.splitlines() if "likeness:" in line]
    assert lines == ["likeness: the select stage ran out of memory; to lower what it needs set --cores 1"
                     " (one identity worker process) or select.taken_after (fewer faces)"], output  # fmt: skip
    assert "Traceback" not in output and "MemoryError" not in output
