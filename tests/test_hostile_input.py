"""Hostile input through the snakemake CLI: per-face reasons or one-line errors, never a traceback.

One library holds every hostile photo and marker at once, for a person whose name carries quotes,
``%``, ``;`` and ``--``: a zero-byte JPEG, a PNG declaring 30000 x 30000 pixels, a CMYK JPEG, a 16-bit
PNG, a grayscale JPEG, a JPEG named .png, file names with ``../`` and an absolute path, a symlink out of
the originals, and marker boxes with NaN, negative, zero and >1 values. The run must finish, give each
unusable face its reason in ``results/crops/summary.tsv`` and ``results/dataset/excluded.tsv``, crop the
unusual-but-valid images with the right colours, and write nothing outside ``results/``, ``logs/``,
``.snakemake/`` and the caption cache. Problems that stop the run (a person that is not there, a locked
or unreachable database, a config value of the wrong type) are one line starting with ``likeness:``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.images import write_cmyk_jpeg, write_png_header_only
from fixtures.library import SmallLibrary, write_sqlite
from fixtures.ondisk import snapshot
from fixtures.runs import KEEP_ALL, copy_workflow, snakemake, write_config
from synthlib.drawing import background, draw_face, encode_jpeg
from synthlib.photoprism import Face, LibraryBuilder, Photo

pytestmark = pytest.mark.snakemake

HOSTILE_PERSON = 'Zoë "Zed" O\'Brien; 100% -- DROP TABLE subjects;'
WIDTH, HEIGHT = 480, 360
FACE_BOX = (0.35, 0.3, 0.25, 1 / 3)  # a 120 x 120 face in the middle of a 480 x 360 photo
# The folders of the workflow copy a run may write to: its outputs, its logs, Snakemake's bookkeeping and
# the caption cache (write_config puts it in cache/captions). Python's __pycache__ folders are allowed
# too, where PYTHONDONTWRITEBYTECODE is not set.
WRITABLE = ("results", "logs", ".snakemake", "cache")


@dataclass
class Expectation:
    """What should become of one face: cropped (with the displayed pixels to compare) or a reason."""

    reason: str = ""  # '' = cropped
    displayed: np.ndarray | None = None
    grayscale: bool = False


@dataclass
class HostileLibrary:
    library: SmallLibrary
    outside: Path  # a photo outside the originals that no crop may read
    expected: dict[str, Expectation] = field(default_factory=dict)  # marker_uid -> expectation


def _canvas(seed: int) -> np.ndarray:
    canvas = background(WIDTH, HEIGHT, seed=seed)
    x, y, w, h = FACE_BOX
    draw_face(canvas, int((x + w / 2) * WIDTH), int((y + h / 2) * HEIGHT), int(w * WIDTH), seed=seed)
    return canvas


def _build(root: Path) -> HostileLibrary:
    builder = LibraryBuilder(seed=5)
    library = SmallLibrary(root=root, builder=builder)
    library.person_uid = builder.add_subject(HOSTILE_PERSON, slug="zed")
    builder.add_subject("Zoe O'Brien")  # a near namesake: the hostile name must not match it
    outside = root / "outside.jpg"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(encode_jpeg(_canvas(99)))
    hostile = HostileLibrary(library, outside)

    def add(file_name: str, faces: list[Face], write=None, width: int = WIDTH, height: int = HEIGHT) -> None:
        for face in faces:
            face.subject, face.subj_src = library.person_uid, "manual"
        orientation = 6 if file_name.endswith("control.jpg") else 1
        builder.add_photo(Photo(file_name, width, height, faces, orientation=orientation))
        if write is not None:
            path = library.originals / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)

    def photo_case(name: str, seed: int, write, reason: str = "", grayscale: bool = False) -> None:
        canvas = _canvas(seed)
        face = Face(*FACE_BOX)
        add(name, [face], write=lambda path: write(path, canvas))
        hostile.expected[face.uid] = Expectation(reason, None if reason else canvas, grayscale)

    photo_case("2024/01/control.jpg", 1, lambda p, c: p.write_bytes(encode_jpeg(c, orientation=6)))
    photo_case("2024/01/cmyk.jpg", 2, write_cmyk_jpeg)
    photo_case("2024/01/sixteen-bit.png", 3, lambda p, c: cv2.imwrite(str(p), c.astype(np.uint16) * 257))
    photo_case(
        "2024/01/grayscale.jpg",
        4,
        lambda p, c: cv2.imwrite(str(p), cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)),
        grayscale=True,
    )
    photo_case("2024/01/jpeg-named.png", 5, lambda p, c: p.write_bytes(encode_jpeg(c)))
    photo_case("2024/01/empty.jpg", 6, lambda p, _c: p.write_bytes(b""), "photo file is empty (0 bytes)")

    bomb = Face(*FACE_BOX)
    add("2024/02/bomb.png", [bomb], lambda p: write_png_header_only(p, 30000, 30000), 30000, 30000)
    hostile.expected[bomb.uid] = Expectation("declares 30000x30000 pixels, over crop.max_megapixels")

    for file_name, reason in [
        ("../outside.jpg", "escapes its root ('..')"),
        (str(outside), "is an absolute path"),
        ("2024/03/link.jpg", "resolves outside its root (symlink to"),
    ]:
        face = Face(*FACE_BOX)
        add(file_name, [face])
        hostile.expected[face.uid] = Expectation(reason)
    link = library.originals / "2024" / "03" / "link.jpg"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)

    # Marker boxes PhotoPrism should never store, on one good photo; the last one is partly outside the
    # image and is clamped the way PhotoPrism clamps it, so it is cropped.
    canvas = _canvas(7)
    boxes = {
        (math.nan, 0.3, 0.25, 0.33): "marker box has a non-numeric x",
        (0.35, 0.3, -0.25, 0.33): "marker box has zero or negative size",
        (0.35, 0.3, 0.0, 0.33): "marker box has zero or negative size",
        (1.3, 0.3, 0.25, 0.33): "marker box lies outside the image",
        (0.2, 1.5, 0.2, 0.2): "marker box lies outside the image",
        (-0.1, 0.3, 0.35, 0.33): "",
    }
    faces = [Face(*box) for box in boxes]
    add("2024/04/boxes.jpg", faces, write=lambda path: path.write_bytes(encode_jpeg(canvas)))
    for face, reason in zip(faces, boxes.values(), strict=True):
        hostile.expected[face.uid] = Expectation(reason, None if reason else canvas)
    write_sqlite(library)
    return hostile


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["marker_uid"]: row for row in csv.DictReader(handle, delimiter="\t")}


def _expected_crop(displayed: np.ndarray, record: dict, grayscale: bool) -> np.ndarray:
    left, top, side, _ = record["crop_box"]
    region = displayed[top : top + side, left : left + side]
    if grayscale:
        region = cv2.cvtColor(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    out = record["output_side"]
    return cv2.resize(region, (out, out), interpolation=cv2.INTER_AREA)


def _outside_writes(before: dict, after: dict, workdir: Path) -> set[str]:
    writable = [str(workdir / name) for name in WRITABLE]
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    # A folder's own mtime changes when an allowed folder is created in it: folders count only when
    # they appear or disappear, their files count by size, mtime and inode.
    changed = {path for path in changed if not (path in before and path in after and Path(path).is_dir())}
    return {
        path
        for path in changed
        if path not in writable
        and not any(path.startswith(folder + "/") for folder in writable)
        and "/__pycache__" not in path
    }


@pytest.fixture
def hostile(tmp_path) -> HostileLibrary:
    return _build(tmp_path / "library")


def test_hostile_photos_and_markers_get_reasons_and_nothing_else_is_written(tmp_path, hostile):
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, hostile.library.root, person=HOSTILE_PERSON, select=KEEP_ALL, crop={"size": 256})
    before = snapshot([tmp_path])

    run = snakemake(workdir, "--cores", "2")

    output = run.stdout + run.stderr
    assert "Traceback" not in output
    usable = [uid for uid, expectation in hostile.expected.items() if not expectation.reason]
    assert f"cropped {len(usable)} of {len(hostile.expected)} faces" in output
    summary = _rows(workdir / "results" / "crops" / "summary.tsv")
    excluded = _rows(workdir / "results" / "dataset" / "excluded.tsv")
    manifest = _rows(workdir / "results" / "dataset" / "manifest.tsv")
    assert set(summary) == set(hostile.expected)
    for uid, expectation in hostile.expected.items():
        if expectation.reason:
            assert summary[uid]["status"] == "excluded"
            assert expectation.reason in summary[uid]["reason"], summary[uid]
            assert expectation.reason in excluded[uid]["reason"], excluded[uid]
            # No crop: no job (excluded by the export), or the job's declared image left empty.
            image = workdir / "results" / "crops" / f"{uid}.jpg"
            assert not image.exists() or image.stat().st_size == 0
            continue
        # Unusual but valid: cropped, selected, with the photo's colours (not inverted CMYK, not noise).
        assert summary[uid]["status"] == "ok", summary[uid]
        assert uid in manifest
        record = json.loads((workdir / "results" / "crops" / f"{uid}.json").read_text())
        crop = cv2.imread(str(workdir / record["image"]), cv2.IMREAD_COLOR)
        expected = _expected_crop(expectation.displayed, record, expectation.grayscale)
        assert crop.shape == expected.shape
        difference = np.abs(crop.astype(np.int16) - expected.astype(np.int16)).mean()
        assert difference < 6, (summary[uid]["source"], difference)
    # Every caption belongs to a selected face; the trigger word leads it.
    captions = {p.stem: p.read_text() for p in (workdir / "results" / "captions" / "text").glob("*.txt")}
    assert set(captions) == set(manifest)
    assert all(text.startswith("ohwx, ") for text in captions.values())

    # No read outside the originals leaked a crop of the outside photo, and nothing outside the
    # workflow's own folders changed: not the library, not the database, not the workflow copy.
    assert _outside_writes(before, snapshot([tmp_path]), workdir) == set()
    # NaN boxes and odd values do not make the run unstable: a second run has nothing to do.
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout


def _last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def _assert_one_line_error(result, prefix: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert "Traceback" not in text
    line = _last_line(result)
    assert line.startswith(prefix), text
    return line


def test_hostile_person_names_are_plain_strings(tmp_path, hostile):
    workdir = copy_workflow(tmp_path / "wf")
    database = hostile.library.root / "storage" / "index.db"
    database_bytes = database.read_bytes()
    for name in ["Zed' OR '1'='1", "100%", "Zoë; DROP TABLE markers; --", 'Z"e"d --', "%_%"]:
        write_config(workdir, hostile.library.root, person=name)
        result = snakemake(workdir, "-n", check=False)
        expected = f"likeness: config key 'person': no PhotoPrism subject is named '{name}'"
        line = _assert_one_line_error(result, expected)
        assert "closest:" in line
    assert database.read_bytes() == database_bytes
    # The real name, quotes, '%', ';' and '--' included, selects exactly that subject's faces.
    write_config(workdir, hostile.library.root, person=HOSTILE_PERSON)
    dry_run = snakemake(workdir, "-n")
    # The dry run's job table: one crop job per face of that subject.
    assert re.search(r"^crop_face\s+(\d+)$", dry_run.stdout, re.MULTILINE).group(1) == str(len(hostile.expected))


def test_locked_database_is_one_line(tmp_path, hostile):
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, hostile.library.root, person=HOSTILE_PERSON)
    database = hostile.library.root / "storage" / "index.db"
    holder = sqlite3.connect(database)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # as PhotoPrism does while it writes an index batch
        # likeness waits for the lock (10 s, database.make_engine's lock_timeout) before giving up.
        result = snakemake(workdir, "-n", check=False)
    finally:
        holder.rollback()
        holder.close()
    line = _assert_one_line_error(result, f"likeness: the PhotoPrism database sqlite:///{database} is locked")
    assert "database is locked" in line
    assert not (workdir / "results").exists()


def test_unreachable_database_is_one_line(tmp_path, hostile):
    workdir = copy_workflow(tmp_path / "wf")
    url = "mysql+mysqldb://root@127.0.0.1:1/photoprism"
    write_config(workdir, hostile.library.root, person=HOSTILE_PERSON, source={"url": url})
    result = snakemake(workdir, "-n", check=False)
    line = _assert_one_line_error(result, f"likeness: cannot read the PhotoPrism database {url}: ")
    assert "Can't connect" in line
    assert not (workdir / "results").exists()


@pytest.mark.parametrize(
    ("section", "value", "key"),
    [
        ("person", 42, "person"),
        ("crop", {"size": "1024px"}, "crop.size"),
        ("crop", {"factor": [2, 2]}, "crop.factor"),
        ("select", {"top_n": 10.5}, "select.top_n"),
        ("select", {"manual_only": "yes"}, "select.manual_only"),
        ("caption", {"general_threshold": "high"}, "caption.general_threshold"),
        ("source", {"originals": 7}, "source.originals"),
    ],
)
def test_config_with_a_wrong_type_is_one_line_naming_the_key(tmp_path, hostile, section, value, key):
    workdir = copy_workflow(tmp_path / "wf")
    settings = {"person": HOSTILE_PERSON, section: value}
    write_config(workdir, hostile.library.root, **settings)
    result = snakemake(workdir, "-n", check=False)
    line = _assert_one_line_error(result, f"likeness: config key '{key}': ")
    assert "is not of type" in line
