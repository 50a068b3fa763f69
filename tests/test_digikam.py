"""The digiKam export on a real SQLite file with digiKam's own schema (resources/digikam_sqlite.sql)."""

from __future__ import annotations

import sqlite3
import unicodedata

import pytest
import sqlalchemy as sa
from fixtures.databases import MariaDBDatabase, digikam_path_map, file_digest, write_digikam_sqlite
from fixtures.library import PERSON, build_cross_library
from fixtures.managers import write_digikam
from likeness.config import Section, validate_config
from likeness.errors import ConfigError
from likeness.export import digikam, photos, sourceapi, tsv


def _config(library, db, **extra) -> Section:
    """The config's source section as the workflow builds it: the schema's defaults, ``extra`` over them."""
    source = {"url": f"sqlite:///{db}", "path_map": digikam_path_map(library), **extra}
    return validate_config({"person": PERSON, "source": source}).source


@pytest.fixture(scope="module")
def digikam_library(tmp_path_factory):
    library = build_cross_library(tmp_path_factory.mktemp("digikam"))
    return library, write_digikam_sqlite(library)


def _by_file(export) -> dict:
    return {m.file_name: m for m in export.markers}


def test_export_lists_every_region_with_digikams_reasons(digikam_library):
    library, db = digikam_library
    export = sourceapi.read_export(_config(library, db), PERSON)
    assert export.subject.name == PERSON
    rows = _by_file(export)
    assert len(export.markers) == 13
    label_of = {photo.file_name: label for label, photo in library.photos.items()}
    reasons = {label_of[name]: row.reason for name, row in rows.items() if not row.usable}
    assert reasons == {
        "trashed": "image in digiKam's trash",
        "archived": "image hidden in digiKam",
        "rejected": "face ignored in digiKam",
    }
    assert {label_of[name] for name, row in rows.items() if row.usable} == library.usable_labels()
    # The file: album root (volume mount + specificPath) + album relativePath + image name.
    edge1 = rows["2023/01/IMG_1.jpg"]
    assert photos.roots(export)[edge1.file_root] == str(library.originals)
    for orientation in range(1, 9):
        photo = library.photos[f"edge{orientation}"]
        row = rows[photo.file_name]
        # ImageInformation holds the stored pixels; the row holds the displayed size.
        assert (row.file_width, row.file_height, row.file_orientation) == (photo.width, photo.height, orientation)
    assert edge1.taken_at == "2023-01-10T12:00:00Z" and edge1.subj_src == "manual"
    assert edge1.marker_src == "tagRegion"
    # Neighbours: the other people's and unknown faces in the same images.
    assert len({n.subj_uid for n in export.neighbours}) == 3  # the person, Anna, Unknown


def test_people_are_the_tags_under_people_and_not_unknown(digikam_library):
    _library, db = digikam_library
    with sqlite3.connect(db) as conn:
        tags = conn.execute("SELECT id, pid, name FROM Tags").fetchall()
        props = conn.execute("SELECT tagid, property FROM TagProperties").fetchall()
    names = sorted(s.name for s in digikam.people(tags, props))
    assert names == sorted(["Ana", "Anna", PERSON])
    nested = [*tags, (99, 3, "Zoë as a child"), (100, 0, "Holidays")]
    assert "Zoë as a child" in {s.name for s in digikam.people(nested, props)}
    assert "Holidays" not in {s.name for s in digikam.people(nested, props)}


@pytest.mark.parametrize("person", [PERSON.upper(), unicodedata.normalize("NFD", PERSON), "3"])
def test_person_by_name_or_tag_id(digikam_library, person):
    library, db = digikam_library
    assert sourceapi.read_export(_config(library, db), person).subject.name == PERSON


def test_unknown_person_is_one_line(digikam_library):
    library, db = digikam_library
    with pytest.raises(ConfigError, match=r"^config key 'person': no digiKam person is named 'Unknown'; closest:"):
        sourceapi.read_export(_config(library, db), "Unknown")


def test_unconfirmed_regions_only_when_asked(tmp_path):
    library = build_cross_library(tmp_path / "lib")
    library.faces["edge2"].review = True  # written as an autodetectedFace suggestion on the person's tag
    db = write_digikam_sqlite(library)
    rows = _by_file(sourceapi.read_export(_config(library, db), PERSON))
    assert rows["2023/02/IMG_2.jpg"].reason.startswith("not confirmed in digiKam (autodetectedFace")
    rows = _by_file(sourceapi.read_export(_config(library, db, include_unconfirmed=True), PERSON))
    assert rows["2023/02/IMG_2.jpg"].usable and rows["2023/02/IMG_2.jpg"].subj_src == ""


def test_opened_read_only_and_left_untouched(digikam_library):
    library, db = digikam_library
    before = file_digest(db)
    sourceapi.read_export(_config(library, db), PERSON)
    engine = sourceapi.make_engine(_config(library, db))
    with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.connect() as conn:
        conn.execute(sa.text("DELETE FROM ImageTagProperties"))
    assert file_digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["digikam4.db"]


def test_unmapped_volume_and_bad_regions_are_reasons(tmp_path):
    library = build_cross_library(tmp_path / "lib")
    db = write_digikam_sqlite(library)
    rows = _by_file(sourceapi.read_export(_config(library, db, path_map={}), PERSON))
    assert rows["2023/01/IMG_1.jpg"].reason.startswith("no folder for digiKam album root 'volumeid:?uuid=")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ImageTagProperties SET value = 'garbage' WHERE imageid = 1 AND property = 'tagRegion'")
        conn.execute(
            'UPDATE ImageTagProperties SET value = \'<rect x="900" y="10" width="50" height="50"/>\''
            " WHERE imageid = 2 AND property = 'tagRegion'"
        )
    rows = _by_file(sourceapi.read_export(_config(library, db), PERSON))
    assert rows["2023/01/IMG_1.jpg"].reason == "region value is not a <rect x= y= width= height=/>: 'garbage'"
    assert rows["2023/02/IMG_2.jpg"].reason == "region [900, 10, 50, 50] lies outside the 800x600 image"


def test_root_folders_from_the_identifier():
    roots = [
        {"id": 1, "identifier": "volumeid:?uuid=abcd", "specificPath": "/home/me/Pictures"},
        {"id": 2, "identifier": "volumeid:?path=%2Fmnt%2Fusb", "specificPath": "/"},
        {"id": 3, "identifier": "networkshareid:?mountpath=/mnt/nas", "specificPath": "/photos"},
    ]
    folders = digikam.root_folders(roots, {"volumeid:?uuid=abcd": "/media/disk"})
    assert folders[1] == ("volumeid:?uuid=abcd/home/me/Pictures", "/media/disk/home/me/Pictures")
    assert folders[2] == ("volumeid:?path=%2Fmnt%2Fusb", "/mnt/usb")
    assert folders[3] == ("networkshareid:?mountpath=/mnt/nas/photos", "/mnt/nas/photos")
    # A whole album root can be mapped too, by identifier + specificPath.
    exact = digikam.root_folders(roots[:1], {"volumeid:?uuid=abcd/home/me/Pictures": "/srv/pictures"})
    assert exact[1] == ("volumeid:?uuid=abcd/home/me/Pictures", "/srv/pictures")


def test_rect_parsing():
    assert digikam.parse_rect('<rect x="1" y="2" width="30" height="40"/>') == (1, 2, 30, 40)
    assert digikam.parse_rect("<rect x='1' y='2' width='3'/>") is None
    assert digikam.parse_rect("<circle/>") is None
    assert digikam.parse_rect(None) is None


@pytest.mark.mariadb
def test_mariadb_database_gives_the_same_export_read_only(digikam_library):
    """digiKam on MySQL/MariaDB (its QMYSQL schema): the same rows as from SQLite, and nothing written."""
    library, db = digikam_library
    database = MariaDBDatabase()
    try:
        engine = database.writable_engine()
        write_digikam(library.builder, engine)
        engine.dispose()
        cursor = database.admin.cursor()
        tables = "AlbumRoots, Albums, Images, ImageInformation, Tags, TagProperties, ImageTagProperties"
        cursor.execute("CHECKSUM TABLE " + ", ".join(f"`{database.name}`.{t}" for t in tables.split(", ")))
        before = cursor.fetchall()
        from_mariadb = sourceapi.read_export(_config(library, db, url=database.url), PERSON.upper())
        from_sqlite = sourceapi.read_export(_config(library, db), PERSON)
        # Compared as written to results/export/ (NaN boxes of excluded rows are never equal to themselves).
        assert tsv.markers_tsv(from_mariadb.markers) == tsv.markers_tsv(from_sqlite.markers)
        assert tsv.neighbours_tsv(from_mariadb.neighbours) == tsv.neighbours_tsv(from_sqlite.neighbours)
        assert len(from_mariadb.usable) == 10
        engine = sourceapi.make_engine(_config(library, db, url=database.url))
        with pytest.raises(sa.exc.OperationalError, match="READ ONLY"), engine.connect() as conn:
            conn.execute(sa.text("DELETE FROM ImageTagProperties"))
        cursor.execute("CHECKSUM TABLE " + ", ".join(f"`{database.name}`.{t}" for t in tables.split(", ")))
        assert cursor.fetchall() == before
    finally:
        database.drop()


def _with_training_copies(db) -> int:
    """digiKam's rows after confirming suggestions: each tagRegion gets a faceToTrain copy of its box (every
    other one spelled with its attributes in another order), which sorts before it by property."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT imageid, tagid, value FROM ImageTagProperties WHERE property = 'tagRegion'"
        ).fetchall()
        for number, (image, tag, value) in enumerate(rows):
            x, y, w, h = digikam.parse_rect(value)
            copy = value if number % 2 else f'<rect width="{w}" height="{h}" x="{x}" y="{y}"/>'
            conn.execute(
                "INSERT INTO ImageTagProperties (imageid, tagid, property, value) VALUES (?, ?, 'faceToTrain', ?)",
                (image, tag, copy),
            )
        regions = conn.execute(
            "SELECT COUNT(*) FROM ImageTagProperties p JOIN Tags t ON t.id = p.tagid"
            " WHERE t.name = ? AND p.property != 'faceToTrain'",
            (PERSON,),
        ).fetchone()[0]
    return regions


def test_a_training_copy_is_not_a_second_marker(tmp_path):
    """One marker per region: the faceToTrain copy of a confirmed face shares its uid and its manual flag."""
    library = build_cross_library(tmp_path / "lib")
    db = write_digikam_sqlite(library)
    before = {m.marker_uid: m for m in sourceapi.read_export(_config(library, db), PERSON).markers}
    regions = _with_training_copies(db)
    export = sourceapi.read_export(_config(library, db), PERSON)
    uids = [m.marker_uid for m in export.markers]
    assert len(uids) == len(set(uids)) == regions == len(before)  # the export's count is digiKam's regions
    for marker in export.markers:
        assert (marker.subj_src, marker.reason, marker.marker_src) == (
            before[marker.marker_uid].subj_src,
            before[marker.marker_uid].reason,
            before[marker.marker_uid].marker_src,
        )
    assert tsv.export_summary(export) == tsv.export_summary(type(export)(export.subject, list(before.values()), []))


def test_manual_only_keeps_every_confirmed_face(tmp_path):
    """With select.manual_only, every region confirmed in digiKam passes the "named by hand" filter, through
    the real export, markers.tsv, crop and select filters (the training copies are there too)."""
    from likeness.crop.cropping import crop_face
    from likeness.crop.jobs import spec_for
    from likeness.select.faces import gather_faces
    from likeness.select.filters import apply_filters, check_record, check_settings
    from likeness.tables import MARKER_COLUMNS, Reason, read_table

    library = build_cross_library(tmp_path / "lib")
    library.faces["edge2"].review = True  # a suggestion nobody confirmed: not named by hand
    db = write_digikam_sqlite(library)
    _with_training_copies(db)
    config = validate_config(
        {
            "person": PERSON,
            "source": {"url": f"sqlite:///{db}", "path_map": digikam_path_map(library)},
            "select": {"manual_only": True, "min_crop_side": 64, "max_clipped_share": 1.0, "min_sharpness": 0},
            "crop": {"size": 256},
        }
    )
    export = sourceapi.read_export(config.source, PERSON)
    photos.locate_photos(export, photos.roots(export))
    out = tmp_path / "out"
    out.mkdir()
    tsv.write_tables(export, str(out / "markers.tsv"), str(out / "neighbours.tsv"))
    records = []
    for marker in export.croppable:
        spec = spec_for(marker, export.manager)
        record_path = str(out / f"{marker.stem}.json")
        crop_face(spec, config.crop, str(out / f"{marker.stem}.jpg"), record_path)
        records.append(record_path)
    faces = gather_faces(records, read_table(out / "markers.tsv", MARKER_COLUMNS))
    window = check_settings(config.select)
    for face in faces:
        check_record(face, {})
        apply_filters(face, config.select, window)
    confirmed = {m.marker_uid for m in export.markers if m.usable and m.subj_src == "manual"}
    assert len(faces) == len(export.markers)
    not_by_hand = {f.marker_uid for f in faces if f.reason_key == Reason.NOT_NAMED_BY_HAND}
    assert confirmed and not (confirmed & not_by_hand)
    # With the size and exposure limits opened, the filters keep every confirmed face whose file is there.
    on_disk = confirmed - {m.marker_uid for m in export.markers if "not_on_disk" in m.file_name}
    assert {f.marker_uid: f.reason for f in faces if f.marker_uid in on_disk and f.reason_key} == {}
    cropped = {f.marker_uid for f in faces if f.record and f.record.get("status") == "ok"}
    assert confirmed - {m.marker_uid for m in export.markers if "not_on_disk" in m.file_name} <= cropped
    unconfirmed = {m.marker_uid for m in export.markers if m.file_name == library.photos["edge2"].file_name}
    assert all(f.reason_key == Reason.UNREADABLE for f in faces if f.marker_uid in unconfirmed)  # excluded at export


def test_the_database_orientation_wins_for_non_raw_files(tmp_path):
    """digiKam shows a JPEG in ImageInformation.orientation's frame (its rotate tool may have changed it
    without touching the file): the face is cropped in that frame, never refused with PhotoPrism advice."""
    from likeness.crop.cropping import crop_face
    from likeness.crop.jobs import spec_for

    library = build_cross_library(tmp_path / "lib")
    photo = library.photos["edge1"]
    # The file says 1; digiKam's database says 3 (the user rotated the image by 180 degrees in digiKam, which
    # turned its regions with it): the region is where the face is in the turned image.
    face = library.faces["edge1"]
    face.x, face.y = 1 - face.x - face.w, 1 - face.y - face.h
    photo.orientation = 3
    db = write_digikam_sqlite(library)
    config = validate_config(
        {"person": PERSON, "source": {"url": f"sqlite:///{db}", "path_map": digikam_path_map(library)}}
    )
    export = sourceapi.read_export(config.source, PERSON)
    photos.locate_photos(export, photos.roots(export))
    marker = next(m for m in export.markers if m.file_name == photo.file_name)
    assert marker.file_orientation == 3
    record = crop_face(spec_for(marker, export.manager), config.crop, str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
    assert record["status"] == "ok", record["reason"]
    import cv2
    import numpy as np

    crop = cv2.imread(str(tmp_path / "c.jpg"))
    turned = library.canvases["edge1"][::-1, ::-1]  # the drawn (file) image as digiKam shows it
    left, top, side, _ = record["crop_box"]
    expected = cv2.resize(turned[top : top + side, left : left + side], crop.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - expected.astype(int)).mean() < 6
