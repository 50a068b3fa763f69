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


def test_the_demos_group_photo_is_kept_by_masking_and_hatched_in_the_sheet(tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np
    from fixtures import REPO_ROOT
    from likeness import tables
    from likeness.report import sheets

    workdir = copy_workflow(tmp_path / "wf", extra=("config.yaml",))
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "resources/demo/build_demo.py"), str(workdir / "resources/demo/library")],
        check=True,
        capture_output=True,
    )
    snakemake(workdir, "--cores", "2", "results/report/selected.png")
    log = (workdir / "logs" / "select_faces.log").read_text().splitlines()[-1]
    assert log.startswith("kept 15 (1 by masking) of 22 faces"), log
    rows = tables.read_table(workdir / "results" / "dataset" / "manifest.tsv")
    group = [row for row in rows if row["source"].endswith("2022/07/IMG_2207.jpg")]
    assert len(group) == 1 and group[0]["image"].endswith(".png"), group
    alpha = cv2.imread(str(workdir / "results" / "dataset" / group[0]["image"]), cv2.IMREAD_UNCHANGED)[:, :, 3]
    assert alpha.min() == 0 and alpha.max() == 255
    # The report's sheet (8 columns, 160 px tiles) hatches that tile and only that one.
    sheet = cv2.imread(str(workdir / "results" / "report" / "selected.png"))
    layout = sheets.sheet_layout(len(rows), 8, 160, lines=3, title=f"training set: {len(rows)} faces in rank order")
    hatched = []
    for index in range(len(rows)):
        x, y = layout.image_origin(index)
        tile = sheet[y : y + 160, x : x + 160].astype(int)
        hatched.append(int((np.abs(tile - np.array(sheets.MASK_HATCH)).sum(axis=2) <= 6).sum()))
    rank = int(group[0]["rank"])
    assert hatched[rank - 1] > 300 and max(hatched[: rank - 1] + hatched[rank:]) < 20, hatched

    # select.crowded: exclude drops the same photo as crowded, as before masks existed.
    (workdir / "exclude.yaml").write_text("select:\n  crowded: exclude\n")
    snakemake(workdir, "--cores", "2", "results/dataset/manifest.tsv", "--configfile", "config.yaml", "exclude.yaml")
    excluded = {row["marker_uid"]: row for row in tables.read_table(workdir / "results" / "dataset" / "excluded.tsv")}
    assert excluded[group[0]["marker_uid"]]["reason_key"] == "crowded"
    log = (workdir / "logs" / "select_faces.log").read_text().splitlines()[-1]
    assert log.startswith("kept 14 of 22 faces") and "crowded 1" in log, log
