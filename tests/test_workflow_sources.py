"""The same library in PhotoPrism, Immich (PostgreSQL) and digiKam: the workflow gives the same crops.

Each source's database is written from the same photos and boxes (tests/fixtures/); the
workflow runs through the snakemake CLI on each. Every source must list every crop job in a dry run,
crop every face to the same bytes, put each crop where the face is (position, size and orientation
checked against the drawn photo), and leave its database exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fixtures.databases import file_digest, source_configs, write_all
from fixtures.library import PERSON, build_cross_library
from fixtures.runs import copy_workflow, planned_jobs, snakemake, uids_of, write_config
from likeness import geometry
from likeness.config import validate_config
from likeness.export import records, sourceapi

pytestmark = [pytest.mark.snakemake, pytest.mark.postgres]
KINDS = ("photoprism", "immich", "digikam")
FACTOR = validate_config({"person": PERSON, "source": {"url": "sqlite:///unused.db"}}).crop.factor  # the default


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    library = build_cross_library(root / "library")
    photoprism_db, immich_db, digikam_db = write_all(library)
    env = {"LIKENESS_DB_PASSWORD": immich_db.password}
    sources = source_configs(library, immich_db.url)
    workdirs = {}
    for kind in KINDS:
        workdir = copy_workflow(root / f"wf-{kind}")
        config = write_config(workdir, library.root, person=PERSON)
        config["source"] = sources[kind]
        (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
        workdirs[kind] = workdir
    digests = {
        "photoprism": lambda: file_digest(photoprism_db),
        "immich": immich_db.digests,
        "digikam": lambda: file_digest(digikam_db),
    }
    yield library, workdirs, env, sources, digests
    immich_db.drop()


def _export(kind: str, sources: dict, env: dict, monkeypatch) -> records.Export:
    monkeypatch.setenv("LIKENESS_DB_PASSWORD", env["LIKENESS_DB_PASSWORD"])
    return sourceapi.read_export(validate_config({"person": PERSON, "source": dict(sources[kind])}).source, PERSON)


@pytest.mark.parametrize("kind", KINDS)
def test_dry_run_lists_every_crop_job(three, kind, monkeypatch):
    library, workdirs, env, sources, _digests = three
    usable = {m.marker_uid for m in _export(kind, sources, env, monkeypatch).usable}
    assert len(usable) == len(library.usable_labels()) == 10
    jobs = planned_jobs(workdirs[kind])  # the password is in this environment (monkeypatch, above)
    assert uids_of(jobs, "crop_face") == usable
    assert {"export_markers", "crop_face", "crop_summary", "select_faces", "all"} <= set(jobs)
    assert not (workdirs[kind] / "results").exists(), "a dry run writes nothing"


def _crops_by_file(workdir: Path) -> dict[str, dict]:
    """file_name -> crop record (with the image's bytes), read from the run's results."""
    crops = {}
    for record_path in sorted((workdir / "results" / "crops").glob("*.json")):
        record = json.loads(record_path.read_text())
        if record["status"] == "ok":
            record["bytes"] = (workdir / record["image"]).read_bytes()
        crops[record["source"]["file_name"]] = record
    return crops


_TURNS = [
    lambda a: a[:, ::-1],
    lambda a: a[::-1, :],
    lambda a: a[::-1, ::-1],
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 3),
    lambda a: np.rot90(a, 1)[::-1, :],
    lambda a: np.rot90(a, 3)[::-1, :],
]


def _check_crop(record: dict, image: np.ndarray, canvas: np.ndarray, face: geometry.Rect) -> None:
    """The crop is the square around the face, cut from the drawn photo the right way up."""
    height, width = canvas.shape[:2]
    square = geometry.square_crop(face, width, height, FACTOR)
    assert record["crop_box"] == [square.left, square.top, square.side, square.side]
    region = canvas[square.top : square.top + square.side, square.left : square.left + square.side]
    side = record["output_side"]
    assert image.shape == (side, side, 3)
    expected = region if side == square.side else cv2.resize(region, (side, side), interpolation=cv2.INTER_AREA)
    diff = float(np.abs(image.astype(np.int16) - expected.astype(np.int16)).mean())
    assert diff < 6, f"crop differs from the photo's pixels there (mean difference {diff:.1f})"
    for turn in _TURNS:  # mirrored or turned, it would not match: the orientation was applied
        other = float(np.abs(image.astype(np.int16) - turn(expected).astype(np.int16)).mean())
        assert other > 2 * diff + 4, f"a turned crop matches too ({other:.1f} vs {diff:.1f})"


def test_three_sources_give_the_same_crops(three):
    library, workdirs, env, _sources, digests = three
    before = {kind: digests[kind]() for kind in KINDS}
    results = {}
    for kind in KINDS:
        run = snakemake(workdirs[kind], "--cores", "2", "results/crops/summary.tsv", env=env)
        assert "cropped 9 of 10 faces" in run.stdout + run.stderr, kind
        results[kind] = _crops_by_file(workdirs[kind])
    for kind in KINDS:
        assert digests[kind]() == before[kind], f"the {kind} database changed"
    files = {photo.file_name: label for label, photo in library.photos.items() if label in library.usable_labels()}
    for kind in KINDS:
        assert set(results[kind]) == set(files), kind
    for file_name, label in files.items():
        records = {kind: results[kind][file_name] for kind in KINDS}
        if label == "missing_file":
            for record in records.values():
                assert record["status"] == "excluded" and record["reason"].startswith("photo missing on disk")
            continue
        assert {r["status"] for r in records.values()} == {"ok"}, records
        assert len({r["bytes"] for r in records.values()}) == 1, f"{file_name}: crops differ between sources"
        photo, face = library.photos[label], library.faces[label]
        rect = geometry.marker_rect(face.x, face.y, face.w, face.h, photo.width, photo.height)
        for kind, record in records.items():
            image = cv2.imdecode(np.frombuffer(record["bytes"], np.uint8), cv2.IMREAD_COLOR)
            try:
                _check_crop(record, image, library.canvases[label], rect)
            except AssertionError as error:
                raise AssertionError(f"{kind} {file_name}: {error}") from None


def test_whole_workflow_runs_on_immich(three):
    """Everything after the export is the same code: select, caption and the ready training run on Immich."""
    _library, workdirs, env, _sources, digests = three
    before = digests["immich"]()
    run = snakemake(workdirs["immich"], "--cores", "2", env=env)
    output = run.stdout + run.stderr
    # 3 excluded at export, 1 file missing on disk: each counted by what Immich did with it.
    assert "likeness: kept 9 of 13 faces: archived 1, trashed 1, missing 1, deleted 1" in output
    manifest = (workdirs["immich"] / "results" / "dataset" / "manifest.tsv").read_text().splitlines()
    assert len(manifest) == 1 + 9
    assert (workdirs["immich"] / "results" / "train" / "status.json").is_file()
    assert digests["immich"]() == before
    # The password was only in the environment: not in the config, logs, results or Snakemake's metadata.
    secret = env["LIKENESS_DB_PASSWORD"].encode()
    written = [p for p in workdirs["immich"].rglob("*") if p.is_file() and "workflow" not in p.parts]
    assert any(".snakemake" in p.parts for p in written)
    assert [p for p in written if secret in p.read_bytes()] == []
