"""The selection stage through the snakemake CLI: incremental, stable, and the images folder in sync."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fixtures.library import build_small_library, write_photo_file, write_sqlite
from fixtures.runs import copy_workflow, planned_jobs, snakemake, uids_of, write_config
from synthlib.photoprism import Face, Photo

pytestmark = pytest.mark.snakemake


def _manifest_uids(workdir) -> list[str]:
    lines = (workdir / "results" / "dataset" / "manifest.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True))["marker_uid"] for line in lines[1:]]


def _images(workdir) -> dict[str, int]:
    folder = workdir / "results" / "dataset" / "images"
    return {p.stem: p.stat().st_ino for p in folder.iterdir() if p.suffix == ".jpg"}


def test_selection_is_incremental_and_stable(tmp_path):
    library = build_small_library(tmp_path / "library")
    db = write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, library.root, select={"top_n": 3})

    run = snakemake(workdir, "--cores", "2")
    assert "likeness: kept 3 of 9 faces" in run.stdout
    first = _manifest_uids(workdir)
    assert len(first) == 3
    assert set(_images(workdir)) == set(first)
    manifest = workdir / "results" / "dataset" / "manifest.tsv"
    manifest_bytes, manifest_mtime = manifest.read_bytes(), manifest.stat().st_mtime_ns

    # Nothing changed: nothing runs, the manifest is byte-identical and untouched.
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout
    assert manifest.read_bytes() == manifest_bytes and manifest.stat().st_mtime_ns == manifest_mtime
    # The job wrote its declared log through likeness.joblog; the images folder is a declared output.
    assert (workdir / "logs" / "select_faces.log").read_text().splitlines()[-1].startswith("kept 3 of 9 faces")
    summary = snakemake(workdir, "--summary").stdout
    assert any(line.split("\t")[:3:2] == ["results/dataset/images", "select_faces"] for line in summary.splitlines())

    # The selection run again on its own: its tables keep their bytes (Snakemake touches them after the
    # job), and their checksums keep the later stages from running again.
    snakemake(workdir, "--cores", "2", "--forcerun", "select_faces", "results/dataset/manifest.tsv")
    assert manifest.read_bytes() == manifest_bytes
    assert set(_images(workdir)) == set(first)
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout

    # Raising top_n re-runs selection only; the images already selected are left as they are.
    inodes = _images(workdir)
    write_config(workdir, library.root, select={"top_n": 5})
    # (the caption job follows it, and tags only the new faces: see test_workflow_caption.py)
    assert "crop_face" not in planned_jobs(workdir)
    snakemake(workdir, "--cores", "2")
    second = _manifest_uids(workdir)
    assert second[:3] == first and len(second) == 5
    after = _images(workdir)
    assert set(after) == set(second)
    assert {uid: after[uid] for uid in first} == {uid: inodes[uid] for uid in first}

    # A new photo: only its face is cropped and measured, the old faces are not touched.
    builder = library.builder
    photo = Photo("2024/02/new.jpg", 800, 600, [Face(0.4, 0.3, 0.2, 0.26, subject=library.person_uid)])
    builder.add_photo(photo)
    write_photo_file(library, photo, seed=9)
    engine = sa.create_engine(f"sqlite:///{db}")
    fresh = type(builder)(seed=3)
    fresh.photos = [photo]
    fresh.write_database(engine, create=False)
    engine.dispose()
    jobs = planned_jobs(workdir)
    assert uids_of(jobs, "crop_face") == {photo.faces[0].uid}
    assert "select_faces" in jobs
    snakemake(workdir, "--cores", "2")
    assert (
        photo.faces[0].uid
        in (workdir / "results" / "dataset" / "manifest.tsv").read_text()
        + (workdir / "results" / "dataset" / "excluded.tsv").read_text()
    )
