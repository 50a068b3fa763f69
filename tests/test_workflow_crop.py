"""The export and crop stages through the snakemake CLI: complete dry runs and incremental re-runs."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fixtures.library import build_small_library, write_photo_file, write_sqlite
from fixtures.runs import copy_workflow, planned_jobs, snakemake, uids_of, write_config

pytestmark = pytest.mark.snakemake


@pytest.fixture
def workflow(tmp_path):
    library = build_small_library(tmp_path / "library")
    db = write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, library.root)
    return workdir, library, db


def _usable_uids(library) -> set[str]:
    excluded = {"invalid", "archived", "missing"}
    return {face.uid for label, face in library.faces.items() if label not in excluded}


def _db_execute(db, statement: str, **params) -> None:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def test_dry_run_on_a_fresh_folder_lists_every_crop_job(workflow):
    workdir, library, _db = workflow
    jobs = planned_jobs(workdir)
    assert uids_of(jobs, "crop_face") == _usable_uids(library)
    assert {"export_markers", "crop_face", "crop_summary", "select_faces", "all"} <= set(jobs)
    assert not (workdir / "results").exists(), "a dry run writes nothing"


def test_incremental_behaviour(workflow):
    workdir, library, db = workflow
    run = snakemake(workdir, "--cores", "2")
    assert "cropped 6 of 6 faces" in run.stdout + run.stderr
    records = {p.stem: json.loads(p.read_text()) for p in (workdir / "results" / "crops").glob("*.json")}
    assert set(records) == _usable_uids(library)

    # Unchanged database and photos: nothing to do.
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout

    # One marker added in the database: exactly one new crop job.
    photo = library.photos["photo1"]
    new_uid = "mzzzzzz000000001"
    _db_execute(
        db,
        "INSERT INTO markers (marker_uid, file_uid, marker_type, marker_src, marker_review, marker_invalid,"
        " subj_uid, subj_src, x, y, w, h, q, size, score) VALUES (:uid, :file, 'face', 'manual', 0, 0,"
        " :subj, 'manual', 0.05, 0.05, 0.1, 0.13, 10, 80, 100)",
        uid=new_uid,
        file=photo.file_uid,
        subj=library.person_uid,
    )
    jobs = planned_jobs(workdir)
    assert uids_of(jobs, "crop_face") == {new_uid}
    snakemake(workdir, "--cores", "2")

    # One marker's box changed: only that face is re-cropped.
    moved = library.faces["face2"].uid
    _db_execute(db, "UPDATE markers SET x = x + 0.02 WHERE marker_uid = :uid", uid=moved)
    assert uids_of(planned_jobs(workdir), "crop_face") == {moved}
    snakemake(workdir, "--cores", "2")

    # One photo replaced on disk: only its faces are re-cropped (the person's face on it, here one).
    write_photo_file(library, library.photos["photo3"], seed=5)
    assert uids_of(planned_jobs(workdir), "crop_face") == {library.faces["face3"].uid}
    snakemake(workdir, "--cores", "2")

    # A marker removed: its crop no longer reaches later stages.
    removed = library.faces["face0"].uid
    _db_execute(db, "DELETE FROM markers WHERE marker_uid = :uid", uid=removed)
    jobs = planned_jobs(workdir)
    assert "crop_face" not in jobs
    snakemake(workdir, "--cores", "2")
    summary = (workdir / "results" / "crops" / "summary.tsv").read_text()
    assert removed not in summary and new_uid in summary
    assert removed not in (workdir / "results" / "export" / "markers.tsv").read_text()


def test_bad_photos_are_reported_and_the_run_finishes(workflow):
    workdir, library, _db = workflow
    (library.originals / library.photos["photo0"].file_name).unlink()
    truncated = library.originals / library.photos["photo1"].file_name
    truncated.write_bytes(truncated.read_bytes()[:2000])
    # Asking for the crops alone also writes markers.tsv, where the faces without a crop job keep their reasons.
    run = snakemake(workdir, "results/crops/summary.tsv", "--cores", "2")
    markers = (workdir / "results" / "export" / "markers.tsv").read_text()
    assert "photo archived in PhotoPrism" in markers and "file marked missing in PhotoPrism" in markers
    summary = (workdir / "results" / "crops" / "summary.tsv").read_text()
    assert "photo missing on disk" in summary and "truncated" in summary
    assert "cropped 4 of 6 faces" in run.stdout + run.stderr
    # Every crop job writes what its rule declares: the record, the image (a crop when the record says
    # ok, else an empty file that is never a crop) and its log; Snakemake knows each image as an output.
    crops = workdir / "results" / "crops"
    listed = snakemake(workdir, "--summary").stdout
    for record_path in crops.glob("*.json"):
        record = json.loads(record_path.read_text())
        image = record_path.with_suffix(".jpg")
        assert (
            (image.stat().st_size > 0)
            == (record["status"] == "ok")
            == (record["image"] == f"results/crops/{image.name}")
        )
        assert f"results/crops/{image.name}" in listed
        assert (workdir / "logs" / "crop" / f"{record_path.stem}.log").read_text().startswith(record["marker_uid"])
    assert "9 face markers, 5 usable" in (workdir / "logs" / "export_markers.log").read_text()
    summary_log = (workdir / "logs" / "crop_summary.log").read_text()
    assert summary_log.startswith("cropped 4 of 6 faces")
    # The export's exclusions, counted by what happened to the photo: archived is not "unreadable".
    assert "the export gave 3 faces no crop job: 1 archived; 1 missing; 1 rejected" in summary_log


def test_config_errors_are_one_line_naming_the_key(workflow):
    workdir, library, _db = workflow
    write_config(workdir, library.root, crop={"size": "big"})
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "likeness: config key 'crop.size': 'big' is not of type integer"
    write_config(workdir, library.root, person="Nobody")
    result = snakemake(workdir, "-n", check=False)
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("likeness: config key 'person': no PhotoPrism subject is named 'Nobody'; closest:")
    )
