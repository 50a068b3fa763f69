"""A second snakemake on a folder where one is running is refused, and the first run is unaffected.

The first run (``snakemake --cores 2`` on a 200-face library, long enough to be caught mid-way) is
started in the background; once it holds Snakemake's lock and has cropped some faces, a second
``snakemake --cores 1`` on the same folder must stop with Snakemake's own lock message without running
a job. The first run then finishes normally and its results equal those of a run nobody disturbed.
"""

from __future__ import annotations

import re

import pytest
from fixtures.library import build_many_faces_library, write_sqlite
from fixtures.ondisk import assert_same_results
from fixtures.runs import KEEP_ALL, copy_workflow, snakemake, start_snakemake, wait_for, write_config

pytestmark = pytest.mark.snakemake

N_FACES = 200


def _configure(workdir, library_root) -> None:
    caption = {"standin": True, "cache_dir": str(workdir / "cache" / "captions"), "class_word": "woman"}
    write_config(workdir, library_root, select=KEEP_ALL, caption=caption)


def test_second_run_is_refused_and_the_first_is_unaffected(tmp_path):
    library = build_many_faces_library(tmp_path / "library", N_FACES)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    _configure(workdir, library.root)
    crops = workdir / "results" / "crops"
    locks = workdir / ".snakemake" / "locks"

    def running_with_lock() -> bool:
        return locks.is_dir() and any(locks.iterdir()) and any(crops.glob("*.json"))

    first = start_snakemake(workdir, "--cores", "2", name="first")
    try:
        started = wait_for(running_with_lock, run=first)
        assert started, f"the first run ended before it could be caught:\n{first.output}"

        second = snakemake(workdir, "--cores", "1", check=False)

        # The second run was refused while the first was still running.
        assert first.process.poll() is None, "the first run ended before the second tried to lock"
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stderr
        # No job ran: a crop job would print its progress count (its rule block goes to the log file only).
        assert not re.search(r"\d+ of \d+ steps", second.stdout + second.stderr), "the refused run must run no job"
        returncode = first.wait(timeout=300)
    finally:
        first.stop()

    assert returncode == 0, first.output
    assert "Traceback" not in first.output and "Error in rule" not in first.output
    assert f"cropped {N_FACES} of {N_FACES} faces" in first.output
    assert not locks.exists() or not any(locks.iterdir()), "the first run releases its lock"

    undisturbed = copy_workflow(tmp_path / "undisturbed")
    _configure(undisturbed, library.root)
    snakemake(undisturbed, "--cores", "2")
    assert_same_results(undisturbed, workdir, N_FACES)
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout
