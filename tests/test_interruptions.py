"""Interrupted runs resume with the README command and end byte-identical to an uninterrupted run.

A 200-face library is run once without interruption (copy A, the reference). Each case starts
``snakemake --cores 2`` on a fresh copy B in its own process group, waits for a moment inside one stage
(a seeded number of crop records or stored tagger probabilities, or a stage's first output), sends
SIGINT (what Ctrl-C delivers: the whole group) or SIGKILL, and runs the README command again. After
SIGKILL the plain command must first be refused with Snakemake's lock message, which names
``--unlock``; the profile's ``rerun-incomplete`` means the user types nothing else.

Checked each time: every file under ``results/`` equals copy A's byte for byte (hidden temporaries
included; only the caption stats' timings and counters may differ), no file finished before the
interruption is rewritten unless Snakemake had marked its job incomplete, the resumed run crops
exactly the faces without a finished record, and the tagger runs only on images whose probabilities
were not stored yet.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.library import build_many_faces_library, write_sqlite
from fixtures.ondisk import FileState, assert_same_results, incomplete_outputs, snapshot
from fixtures.runs import KEEP_ALL, copy_workflow, snakemake, start_snakemake, wait_for, write_config
from likeness.atomic import remove_stale_temporaries

pytestmark = pytest.mark.snakemake

N_FACES = 200
README_COMMAND = ("--cores", "2")  # `snakemake --cores 2`, as the README says
MAX_PARALLEL_JOBS = 2  # --cores 2: at most two jobs can be cut off at once


def _configure(workdir: Path, library_root: Path) -> None:
    # The caption cache lives inside each copy, so copy B never borrows copy A's stored probabilities.
    caption = {"standin": True, "cache_dir": str(workdir / "cache" / "captions"), "class_word": "woman"}
    write_config(workdir, library_root, trigger="zqx", select=KEEP_ALL, caption=caption)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    library = build_many_faces_library(tmp_path_factory.mktemp("interruptions") / "library", N_FACES)
    write_sqlite(library)
    return library


@pytest.fixture(scope="module")
def reference(tmp_path_factory, library) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("reference") / "wf")
    _configure(workdir, library.root)
    snakemake(workdir, *README_COMMAND)
    assert len(list((workdir / "results" / "crops").glob("*.json"))) == N_FACES
    return workdir


# -- the moments at which a run is stopped ------------------------------------------------------------
def _stored_probabilities(workdir: Path) -> int:
    return len(list((workdir / "cache" / "captions").glob("wd14-*/*.npy")))


def _crop_records(workdir: Path) -> list[Path]:
    return list((workdir / "results" / "crops").glob("*.json"))


def _moment(stage: str, workdir: Path, rng: random.Random) -> Callable[[], bool]:
    """When to send the signal: a point inside ``stage``, drawn from ``rng``."""
    if stage == "export":  # the export job has started (Snakemake marks its outputs incomplete first)
        return lambda: EXPORT_TABLE in incomplete_outputs(workdir)
    if stage == "crop":  # some, not all, faces cropped
        wanted = rng.randint(N_FACES // 10, N_FACES * 3 // 5)
        return lambda: (workdir / "results" / "crops").is_dir() and len(_crop_records(workdir)) >= wanted
    if stage == "select":  # every face cropped and summarised: selection starts
        return (workdir / "results" / "crops" / "summary.tsv").exists
    if stage == "caption":  # the tagger has stored the probabilities of some batches (8 images each)
        wanted = rng.randint(8, 96)
        return lambda: _stored_probabilities(workdir) >= wanted
    raise ValueError(stage)


EXPORT_TABLE = "results/export/markers.tsv"


def _stage_unfinished(stage: str, workdir: Path) -> bool:
    """Whether ``stage``'s job is still running: checked while the run is frozen, just before SIGKILL."""
    if stage == "export":
        return EXPORT_TABLE in incomplete_outputs(workdir)
    if stage == "crop":
        return len(_crop_records(workdir)) < N_FACES
    if stage == "caption":
        return _stored_probabilities(workdir) < N_FACES
    raise ValueError(stage)


# -- what the resumed run did ---------------------------------------------------------------------------
_JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)
_UID = re.compile(r"^\s+wildcards: stem=([-\w]+)$", re.MULTILINE)


def _cropped_uids(output: str) -> set[str]:
    """The faces the run's log shows crop_face jobs for."""
    headers = list(_JOB_HEADER.finditer(output))
    uids = set()
    for index, header in enumerate(headers):
        if header.group(1) != "crop_face":
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(output)
        found = _UID.search(output, header.end(), end)
        assert found, output[header.start() : end]
        uids.add(found.group(1))
    return uids


def _may_be_rewritten(path: str, incomplete: set[str]) -> bool:
    """Whether a resumed run may rewrite ``path`` (relative): only when it belongs to a cut-off job."""
    if path in incomplete:
        return True
    if Path(path).name.startswith(".") and path.endswith(".tmp"):  # a killed writer's temporary file
        return True
    if any(path.startswith(out.rstrip("/") + "/") for out in incomplete):  # inside a directory() output
        return True
    if path.startswith("results/crops/") and path.endswith(".jpg"):  # the image beside its record
        return str(Path(path).with_suffix(".json")) in incomplete
    if path.startswith("results/dataset/images/"):  # synced by selection
        return "results/dataset/manifest.tsv" in incomplete
    if path.startswith("results/captions/text/"):  # written by the caption job
        return "results/captions/captions.tsv" in incomplete
    return False


def _relative_states(workdir: Path) -> dict[str, FileState]:
    return {
        str(Path(path).relative_to(workdir)): state
        for path, state in snapshot([workdir / "results"]).items()
        if Path(path).is_file()
    }


def _interrupt(workdir: Path, stage: str, signum: int, attempt: int = 0) -> bool:
    """Run the README command and interrupt it inside ``stage``; False when a SIGKILL came too late.

    The signal goes to Snakemake's own process group (the run is ``python -m snakemake`` started in a new
    session, no wrapper shell). Before a SIGKILL the group is frozen with SIGSTOP and the stage is checked
    to be unfinished, so the kill provably lands inside the job; SIGKILL ends stopped processes at once.
    """
    run = start_snakemake(workdir, *README_COMMAND, name=f"{stage}-{signum}-{attempt}")
    landed = True
    try:
        assert os.getpgid(run.process.pid) == run.process.pid, "the run leads its own process group"
        command = Path(f"/proc/{run.process.pid}/cmdline").read_bytes().split(b"\0")
        assert command[1:3] == [b"-m", b"snakemake"], command
        moment = _moment(stage, workdir, random.Random(f"{stage}/{signum}/{attempt}"))
        assert wait_for(moment, timeout=180, run=run), f"the run ended before the {stage} moment:\n{run.output}"
        if signum == signal.SIGKILL:
            run.signal_group(signal.SIGSTOP)
            landed = _stage_unfinished(stage, workdir)
        run.signal_group(signum)
        returncode = run.wait(timeout=180)
    finally:
        run.stop()
    if signum == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        assert returncode == 1, run.output
        assert "Terminating processes on user request" in run.output
    return landed


def _interrupt_inside(tmp_path: Path, library, stage: str, signum: int, attempts: int = 5) -> Path:
    """A fresh copy whose run was interrupted inside ``stage``; a short job (the export's tables take a
    few milliseconds) can end between the moment and the freeze: then a fresh copy tries again."""
    for attempt in range(attempts):
        workdir = copy_workflow(tmp_path / f"wf{attempt}")
        _configure(workdir, library.root)
        if _interrupt(workdir, stage, signum, attempt):
            print(f"{stage}: {signal.Signals(signum).name} landed inside the job on attempt {attempt + 1}")
            return workdir
    raise AssertionError(f"the {stage} job finished before SIGKILL in all {attempts} attempts")


CASES = [
    ("export", signal.SIGKILL),
    ("crop", signal.SIGINT),
    ("crop", signal.SIGKILL),
    ("select", signal.SIGINT),
    ("caption", signal.SIGINT),
    ("caption", signal.SIGKILL),
]


@pytest.mark.parametrize(("stage", "signum"), CASES, ids=[f"{s}-{signal.Signals(n).name}" for s, n in CASES])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, library, reference, stage, signum):
    workdir = _interrupt_inside(tmp_path, library, stage, signum)

    # The run really was cut short: the default target is unfinished.
    incomplete = incomplete_outputs(workdir)
    captions = "results/captions/captions.tsv"
    assert captions in incomplete or not (workdir / captions).exists()
    before = _relative_states(workdir)
    finished_records = {
        Path(name).stem
        for name in before
        if name.startswith("results/crops/") and name.endswith(".json") and name not in incomplete
    }
    # Each crop job declares its record and its image: at most that many jobs were cut off.
    cut_off_crops = {Path(name).stem for name in incomplete if name.startswith("results/crops/")}
    assert len(cut_off_crops) <= MAX_PARALLEL_JOBS, cut_off_crops
    stored = _stored_probabilities(workdir)

    if signum == signal.SIGKILL:
        # The lock survives SIGKILL: the README command is refused with Snakemake's message naming the fix.
        refused = snakemake(workdir, *README_COMMAND, check=False)
        assert refused.returncode != 0
        assert "Directory cannot be locked" in refused.stderr
        assert "--unlock" in refused.stderr
        assert _relative_states(workdir) == before, "a refused run must not touch results/"
        snakemake(workdir, "--unlock")
    else:
        locks = workdir / ".snakemake" / "locks"
        assert not locks.exists() or not any(locks.iterdir()), "SIGINT releases the lock"

    logs_before = set((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    snakemake(workdir, *README_COMMAND)
    # The console shows one line per crop job; Snakemake's log file of the run keeps every per-job block,
    # which names the job's wildcards (for _cropped_uids).
    (resumed_log,) = set((workdir / ".snakemake" / "log").glob("*.snakemake.log")) - logs_before

    assert_same_results(reference, workdir, N_FACES)
    # No finished work redone: the faces cropped now are exactly those without a finished record ...
    all_uids = {p.stem for p in _crop_records(reference)}
    assert _cropped_uids(resumed_log.read_text()) == all_uids - finished_records
    # ... no file finished before the interruption changed unless its job had been cut off ...
    after = _relative_states(workdir)
    rewritten = {name for name, state in before.items() if after.get(name) != state}
    assert {name for name in rewritten if not _may_be_rewritten(name, incomplete)} == set()
    # ... and the tagger ran only on the images whose probabilities were not stored yet.
    reference_stats = json.loads((reference / "results/captions/stats.json").read_text())
    resumed_stats = json.loads((workdir / "results/captions/stats.json").read_text())
    assert resumed_stats["model_runs"] + stored == reference_stats["model_runs"]


def test_temporary_files_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    results = tmp_path / "results"
    images = results / "dataset" / "images"
    debris = [results / "crops" / ".m1.json.k2j_9xqz.tmp", images / ".m1.jpg.4242.tmp"]
    kept = [results / "crops" / "m1.json", images / "m1.txt", results / ".keep"]
    for path in debris + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert remove_stale_temporaries(results) == len(debris)
    assert [p for p in debris if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert remove_stale_temporaries(tmp_path / "absent") == 0
