"""Every unusual but legal row PhotoPrism can store, in one library and one run: reasons, never a stop.

One library, built here, holds at least one row of each class that once stopped the run for everyone:
a file name too long for the OS, a symlink loop in the originals, a folder that cannot be read, a box
value the database returns as text, file names with ``{...}`` (one of them naming the workflow's own
wildcard), marker UIDs with upper case, ``/``, ``..`` and spaces, file names with CR, LF, a tab, a
leading quote and a leading ``=``, JPEGs whose Exif segment follows an XMP segment (SHORT and LONG
orientation, decoded at reduced size), a 2 GiB video and a small one marked as photos, and a photo whose
PhotoPrism orientation disagrees with its EXIF. The database sits at a path with ``?`` and ``#`` and the
person is named in NFD, as a macOS keyboard types it.

Checked: the README command exits 0; no traceback in the console or the logs; every face has its
readable reason or a crop with the right pixels; every table under ``results/`` reads back to the same
rows with Python's csv module, with pandas and (for rows without quoted cells) with a plain split;
nothing is written outside the workflow's folders; the database is unchanged; a second run has nothing
to do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures.images import encode_jpeg_xmp_first
from fixtures.library import SmallLibrary, write_sqlite
from fixtures.ondisk import snapshot
from fixtures.runs import copy_workflow, snakemake, write_config
from likeness import names, tables
from synthlib.drawing import background, draw_face, encode_jpeg
from synthlib.photoprism import Face, LibraryBuilder, Photo

pytestmark = pytest.mark.snakemake

PERSON = "Zoë Åström"
WIDTH, HEIGHT = 480, 360
BOX = (0.35, 0.3, 0.25, 1 / 3)  # a 120 x 120 face in a 480 x 360 photo
RUNNING_AS_ROOT = os.geteuid() == 0
WRITABLE = ("results", "logs", ".snakemake", "cache")


@dataclass
class Case:
    reason: str = ""  # '' = must be cropped, with these displayed pixels
    displayed: np.ndarray | None = None


@dataclass
class UnusualLibrary:
    library: SmallLibrary
    database: Path
    cases: dict[str, Case] = field(default_factory=dict)  # marker UID -> expectation


def _canvas(seed: int, width: int = WIDTH, height: int = HEIGHT, box=BOX) -> np.ndarray:
    canvas = background(width, height, seed=seed)
    x, y, w, h = box
    side = int(min(w * width, h * height))
    draw_face(canvas, int((x + w / 2) * width), int((y + h / 2) * height), side, seed=seed)
    return canvas


def _build(root: Path) -> UnusualLibrary:
    builder = LibraryBuilder(seed=9)
    library = SmallLibrary(root=root, builder=builder)
    library.person_uid = builder.add_subject(PERSON, slug="zoe-astrom")
    builder.add_subject("Anna")
    cases: dict[str, Case] = {}
    seeds = iter(range(100, 200))
    sql_updates: list[tuple[str, tuple]] = []

    def add(file_name: str, *, data: bytes | None = None, uid: str = "", reason: str = "", displayed=None,
            orientation: int = 1, width: int = WIDTH, height: int = HEIGHT, box=BOX) -> Face:  # fmt: skip
        face = Face(*box, subject=library.person_uid, subj_src="manual", uid=uid)
        builder.add_photo(Photo(file_name, width, height, [face], orientation=orientation))
        if data is not None:
            path = library.originals / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        cases[face.uid] = Case(reason, displayed)
        return face

    def good(file_name: str, uid: str = "", orientation: int = 1) -> Face:
        canvas = _canvas(next(seeds))
        return add(file_name, data=encode_jpeg(canvas, orientation), uid=uid, displayed=canvas, orientation=orientation)

    good("2024/01/control.jpg")
    # 1. Rows that once crashed the parse.
    add("2024/02/" + "n" * 300 + ".jpg", reason="File name too long")
    (library.originals / "2024" / "02").mkdir(parents=True, exist_ok=True)
    (library.originals / "loop").symlink_to("loop2")
    (library.originals / "loop2").symlink_to("loop")
    add("loop/a.jpg", reason="symlink loop")
    private = good("private/a.jpg")
    if not RUNNING_AS_ROOT:  # root reads every folder: then the face must simply be cropped
        cases[private.uid].reason, cases[private.uid].displayed = "Permission denied", None
    boxed = good("2024/03/text-box.jpg")
    cases[boxed.uid] = Case("column x holds 'left', not a number")
    sql_updates.append(("UPDATE markers SET x = 'left' WHERE marker_uid = ?", (boxed.uid,)))
    # 2. File names Snakemake would read as patterns; one names the workflow's own wildcard.
    good("2024/04/party {2019}.jpg")
    good("2024/04/x {stem}.jpg")
    # 3. Marker UIDs no file may be named after.
    for uid in ["MRNS5C6I7LWUPPER", "m/../../../escaped", "..", "m with space", "mrns5c6i7lwupper"]:
        good(f"2024/05/{len(cases)}.jpg", uid=uid)
    # 4. File names that shift unquoted table rows.
    for name in ["cr\rname.jpg", '"quoted.jpg', "tab\tname.jpg", "new\nline.jpg", "=cmd|' calc'!A0.jpg"]:
        good(f"2024/06/{name}")
    # 5. Exif after an XMP segment, SHORT and LONG, on a photo decoded at reduced size (crop.size 256).
    for long_type in (False, True):
        canvas = _canvas(next(seeds), 2400, 1600, (0.4, 0.3, 0.15, 0.225))
        add(f"2024/07/xmp-{long_type}.jpg", data=encode_jpeg_xmp_first(canvas, 6, long_type), displayed=canvas,
            orientation=6, width=2400, height=1600, box=(0.4, 0.3, 0.15, 0.225))  # fmt: skip
    # 6. Videos marked as photos: a 2 GiB one (sparse, so it costs no disk) and a small one.
    add("2024/08/small-clip.jpg", data=b"\x00\x00\x00\x18ftypmp42" + bytes(4000), reason="a video (ISO media")
    add("2024/08/clip.jpg", reason="over crop.max_file_mb")
    with open(library.originals / "2024" / "08" / "clip.jpg", "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
        handle.truncate(2 * 2**30)
    # 9. PhotoPrism's orientation disagrees with the file's EXIF.
    turned = good("2024/09/turned.jpg", orientation=6)
    cases[turned.uid] = Case("EXIF orientation is 6 on disk but PhotoPrism indexed it as 8")
    sql_updates.append(("UPDATE files SET file_orientation = 8 WHERE file_name = ?", ("2024/09/turned.jpg",)))
    # And an ordinary missing file, next to all of them.
    add("2024/10/gone.jpg", reason="photo missing on disk")

    (library.originals / "private").chmod(0o000)
    database = write_sqlite(library)
    with sqlite3.connect(database) as connection:
        for statement, values in sql_updates:
            assert connection.execute(statement, values).rowcount == 1
    odd = database.with_name("index ?#1.db")  # 7. a database path with '?' and '#'
    database.rename(odd)
    return UnusualLibrary(library, odd, cases)


@pytest.fixture
def unusual(tmp_path):
    built = _build(tmp_path / "library")
    yield built
    (built.library.originals / "private").chmod(0o755)


def _expected_crop(displayed: np.ndarray, record: dict) -> np.ndarray:
    left, top, side, _ = record["crop_box"]
    region = displayed[top : top + side, left : left + side]
    out = record["output_side"]
    return cv2.resize(region, (out, out), interpolation=cv2.INTER_AREA)


def _read_three_ways(path: Path) -> list[list[str]]:
    """The table's rows as csv reads them, checked against pandas and (for unquoted rows) a plain split."""
    data = path.read_bytes()
    by_csv = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter="\t"))
    frame = pd.read_csv(io.BytesIO(data), sep="\t", dtype=str, keep_default_na=False)
    by_pandas = [list(frame.columns), *frame.values.tolist()] if len(frame) else [list(frame.columns)]
    assert by_pandas == by_csv, path
    plain = [line.split("\t") for line in data.decode("utf-8").split("\n")[:-1]]
    quoted_rows = [row for row in by_csv if any(tables.needs_quotes(cell) for cell in row)]
    if not quoted_rows:
        assert plain == by_csv, path
    else:
        assert all(row in plain for row in by_csv if row not in quoted_rows), path
    assert [dict(zip(by_csv[0], row, strict=True)) for row in by_csv[1:]] == tables.read_table(path)
    return by_csv


def _in_writable(path: Path, workdir: Path) -> bool:
    """Inside one of the folders a run may write (or a Python byte-code cache)."""
    return "__pycache__" in path.parts or any(
        path == workdir / name or workdir / name in path.parents for name in WRITABLE
    )


def _outside(tmp_path: Path, workdir: Path) -> dict:
    """Every path outside the run's own folders; files and links with their size, mtime and inode.

    A folder's mtime changes when a run creates results/ in it: folders count only by being there.
    """
    states = snapshot([tmp_path], skip=lambda p: _in_writable(p, workdir))
    return {
        path: (None if Path(path).is_dir() and not Path(path).is_symlink() else state) for path, state in states.items()
    }


def _rows_by_uid(path: Path) -> dict[str, dict[str, str]]:
    return {row["marker_uid"]: row for row in tables.read_table(path)}


def test_every_unusual_row_gets_a_reason_or_a_correct_crop_in_one_run(tmp_path, unusual):
    workdir = copy_workflow(tmp_path / "wf")
    nfd_person = unicodedata.normalize("NFD", PERSON.upper())
    write_config(workdir, unusual.library.root, person=nfd_person, source={"url": f"sqlite:///{unusual.database}"})
    database_bytes = unusual.database.read_bytes()
    outside_before = _outside(tmp_path, workdir)

    run = snakemake(workdir, "--cores", "2")  # raises unless it exits 0

    console = run.stdout + run.stderr
    assert "Traceback" not in console
    for log in (workdir / "logs").rglob("*"):
        assert not log.is_file() or "Traceback" not in log.read_text(errors="replace"), log

    markers = _rows_by_uid(workdir / "results" / "export" / "markers.tsv")
    summary = _rows_by_uid(workdir / "results" / "crops" / "summary.tsv")
    excluded = _rows_by_uid(workdir / "results" / "dataset" / "excluded.tsv")
    manifest = _rows_by_uid(workdir / "results" / "dataset" / "manifest.tsv")
    assert set(markers) == set(unusual.cases)
    report = []
    for uid, case in unusual.cases.items():
        stem = names.file_stem(uid)
        assert markers[uid]["stem"] == stem
        if case.reason:
            # The reason is in the export (or the crop record) and in what selection excluded.
            record_reason = summary[uid]["reason"] if uid in summary else markers[uid]["reason"]
            assert case.reason in record_reason, (uid, record_reason)
            assert case.reason in excluded[uid]["reason"], (uid, excluded[uid])
            if uid in summary:
                record = json.loads((workdir / "results" / "crops" / f"{stem}.json").read_text())
                assert record["marker_uid"] == uid and case.reason in record["reason"]
            report.append(f"{uid!r}: {record_reason[:90]}")
            continue
        assert summary[uid]["status"] == "ok", (uid, summary[uid])
        assert uid in manifest
        record = json.loads((workdir / "results" / "crops" / f"{stem}.json").read_text())
        assert record["marker_uid"] == uid
        crop = cv2.imread(str(workdir / record["image"]), cv2.IMREAD_COLOR)
        expected = _expected_crop(case.displayed, record)
        difference = np.abs(crop.astype(np.int16) - expected.astype(np.int16)).mean()
        assert difference < 6, (uid, record["source"], difference)
        assert (workdir / "results" / "captions" / "text" / f"{stem}.txt").is_file()
        report.append(f"{uid!r}: cropped via {record['decode']} ({difference:.1f} mean difference)")
    print("\n".join(report))

    # Every table reads back the same three ways, with no phantom or lost rows.
    for table in sorted((workdir / "results").rglob("*.tsv")):
        rows = _read_three_ways(table)
        if table.name in ("markers.tsv", "summary.tsv", "manifest.tsv", "excluded.tsv", "captions.tsv"):
            uids = [row[rows[0].index("marker_uid")] for row in rows[1:]]
            assert len(uids) == len(set(uids)) and set(uids) <= set(unusual.cases), table

    # Nothing outside the workflow's own folders changed or appeared: not the library, not the workflow copy
    # (a UID such as 'm/../../../escaped' names no file outside results/).
    assert _outside(tmp_path, workdir) == outside_before
    assert unusual.database.read_bytes() == database_bytes
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"originals": "/nonexistent/originals"}, "likeness: config key 'source.originals': no folder at"),
        (
            {"url": "mysql+mysqldb://photoprism@127.0.0.1:3306/photoprism?passwd=hunter2"},
            "likeness: config key 'source.url': must not carry a password (query parameter 'passwd')",
        ),
        ({"url": "mysql+mysqldb://photoprism@127.0.0.1:33o6/photoprism"}, "likeness: config key 'source.url': "),
    ],
    ids=["missing-originals", "password-in-query", "bad-port"],
)
def test_source_config_errors_are_one_line(tmp_path, unusual, source, expected):
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, unusual.library.root, person=PERSON, source=source)
    result = snakemake(workdir, "-n", check=False)
    text = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in text and "hunter2" not in text
    assert result.stderr.strip().splitlines()[-1].startswith(expected), text
    assert not (workdir / "results").exists()
