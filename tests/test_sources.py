"""The PhotoPrism export on real SQLite files and on the real MariaDB server, read-only."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re

import pytest
import sqlalchemy as sa
from fixtures.databases import MariaDBDatabase
from fixtures.library import build_small_library, write_sqlite
from likeness import tables
from likeness.errors import ConfigError, SourceError
from likeness.export import photoprism, records, tsv
from likeness.export.database import make_engine

# No test sets it: SQLite and the refused URLs need no password.
PASSWORD_ENV = "LIKENESS_TEST_UNSET_PASSWORD"


def _export_checks(export: records.Export, library) -> None:
    by_uid = {m.marker_uid: m for m in export.markers}
    assert export.subject.uid == library.person_uid
    assert export.subject.name == "Zoë O'Brien"
    # every marker of the person is listed, the unusable ones with PhotoPrism's reason
    assert len(export.markers) == 4 + 5
    reasons = {label: by_uid[library.faces[label].uid].reason for label in ("invalid", "archived", "missing")}
    assert reasons == {
        "invalid": "rejected in PhotoPrism (marker_invalid)",
        "archived": "photo archived in PhotoPrism",
        "missing": "file marked missing in PhotoPrism",
    }
    assert len(export.usable) == 6
    # rows in a stable order, text decoded from VARBINARY (bytes on MariaDB, numbers on SQLite)
    assert [m.marker_uid for m in export.markers] == sorted(by_uid)
    digits = by_uid[library.faces["digits"].uid]
    assert digits.file_name == "2019" and isinstance(digits.file_name, str)
    sidecar = by_uid[library.faces["sidecar"].uid]
    assert sidecar.file_root == "sidecar"
    face0 = by_uid[library.faces["face0"].uid]
    assert face0.taken_at == "2023-01-10T12:00:00Z"
    assert face0.subj_src == "manual" and face0.score == 80
    assert face0.file_width == 800 and face0.file_height == 600
    assert math.isclose(face0.x, 0.3, rel_tol=1e-6)
    # neighbours: every valid face in the person's files, the bystanders included, not the rejected one
    neighbour_uids = {n.marker_uid for n in export.neighbours}
    assert library.faces["face0"].uid in neighbour_uids
    assert library.faces["invalid"].uid not in neighbour_uids
    bystanders = {f.uid for p in library.photos.values() for f in p.faces[1:]}
    assert bystanders <= neighbour_uids


@pytest.fixture
def sqlite_library(tmp_path):
    library = build_small_library(tmp_path / "lib", write_files=False)
    return library, write_sqlite(library)


def test_sqlite_export(sqlite_library):
    library, db = sqlite_library
    export = photoprism.read_export(make_engine(f"sqlite:///{db}", PASSWORD_ENV, ""), "zoë o'brien")
    _export_checks(export, library)


def test_sqlite_is_opened_read_only_and_left_untouched(sqlite_library):
    _library, db = sqlite_library
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns)
    engine = make_engine(f"sqlite:///{db}", PASSWORD_ENV, "")
    photoprism.read_export(engine, "zoe-o-brien")
    with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.connect() as conn:
        conn.execute(sa.text("DELETE FROM markers"))
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["index.db"]  # no journal, no WAL


@pytest.mark.parametrize("person", ["Zoë O'Brien", "ZOË O'BRIEN", "zoe-o-brien"])
def test_person_by_name_slug_or_uid(sqlite_library, person):
    library, db = sqlite_library
    engine = make_engine(f"sqlite:///{db}", PASSWORD_ENV, "")
    assert photoprism.read_export(engine, person).subject.uid == library.person_uid
    assert photoprism.read_export(engine, library.person_uid).subject.uid == library.person_uid


def test_unknown_person_lists_closest_subjects(sqlite_library):
    _library, db = sqlite_library
    with pytest.raises(ConfigError) as error:
        photoprism.read_export(make_engine(f"sqlite:///{db}", PASSWORD_ENV, ""), "Anne")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("config key 'person': no PhotoPrism subject is named 'Anne'")
    assert re.search(r"closest: .*Anna \(anna, \d+ photos\)", message)
    assert re.search(r"closest: .*Ana \(ana, \d+ photos\)", message)


@pytest.mark.parametrize("hostile", ["x' OR '1'='1", "100%", "a; DROP TABLE markers; --", 'say "hi"'])
def test_hostile_person_names_are_plain_strings(sqlite_library, hostile):
    _library, db = sqlite_library
    with pytest.raises(ConfigError, match="no PhotoPrism subject"):
        photoprism.read_export(make_engine(f"sqlite:///{db}", PASSWORD_ENV, ""), hostile)


def test_ambiguous_name_asks_for_the_uid():
    subjects = [records.Subject("j1", "sam", "Sam"), records.Subject("j2", "sam-2", "sam")]
    with pytest.raises(ConfigError, match="matches several subjects: Sam \\(j1\\), sam \\(j2\\); give the UID"):
        photoprism.resolve_person(subjects, "SAM")


def test_url_with_password_is_refused():
    with pytest.raises(ConfigError, match=r"config key 'source\.url': must not contain a password"):
        make_engine("mysql+mysqldb://photoprism:secret@127.0.0.1/photoprism", PASSWORD_ENV, "")


def test_missing_sqlite_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'source\.url': no SQLite database at"):
        make_engine(f"sqlite:///{tmp_path}/nope/index.db", PASSWORD_ENV, "")


def test_locked_sqlite_database_is_one_line(sqlite_library):
    import sqlite3

    _library, db = sqlite_library
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        engine = make_engine(f"sqlite:///{db}", PASSWORD_ENV, "", lock_timeout=0.2)
        with pytest.raises(SourceError, match="is locked by another process"):
            photoprism.read_export(engine, "Anna")
    finally:
        holder.rollback()
        holder.close()


def test_tables_are_rewritten_only_when_the_data_changed(sqlite_library, tmp_path):
    _library, db = sqlite_library
    export = photoprism.read_export(make_engine(f"sqlite:///{db}", PASSWORD_ENV, ""), "Zoë O'Brien")
    markers, neighbours = tmp_path / "m.tsv", tmp_path / "n.tsv"
    tsv.write_tables(export, str(markers), str(neighbours))
    header = markers.read_text().splitlines()[0].split("\t")
    assert header[:4] == ["marker_uid", "stem", "file_uid", "photo_uid"] and "reason" in header
    stamp = markers.stat().st_mtime_ns
    tsv.write_tables(export, str(markers), str(neighbours))
    assert markers.stat().st_mtime_ns == stamp
    assert len(markers.read_text().splitlines()) == 1 + len(export.markers)


@pytest.mark.mariadb
def test_mariadb_export_is_read_only():
    database = MariaDBDatabase()
    try:
        library = build_small_library_for_mariadb(database)
        before = database.checksums()
        engine = make_engine(database.url, PASSWORD_ENV, "")
        export = photoprism.read_export(engine, "zoë o'brien", database.url)
        _export_checks(export, library)
        with pytest.raises(sa.exc.OperationalError, match="READ ONLY"), engine.connect() as conn:
            conn.execute(sa.text("UPDATE markers SET x = 0"))
        assert database.checksums() == before
    finally:
        database.drop()


@pytest.mark.mariadb
def test_mariadb_password_comes_from_the_environment(monkeypatch):
    database = MariaDBDatabase()
    user = f"lk{database.name[-8:]}"
    cursor = database.admin.cursor()
    try:
        build_small_library_for_mariadb(database)
        cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pa$$ w0rd;--'")
        cursor.execute(f"GRANT SELECT ON `{database.name}`.* TO '{user}'@'%'")
        url = database.url.replace("root@", f"{user}@")
        with pytest.raises(SourceError, match="Access denied") as denied:
            photoprism.read_export(make_engine(url, "LK_TEST_PW", ""), "Anna", url)
        assert "pa$$" not in str(denied.value)
        monkeypatch.setenv("LK_TEST_PW", "pa$$ w0rd;--")
        export = photoprism.read_export(make_engine(url, "LK_TEST_PW", ""), "Anna", url)
        assert export.subject.name == "Anna"
    finally:
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        database.drop()


def build_small_library_for_mariadb(database: MariaDBDatabase):
    import tempfile
    from pathlib import Path

    library = build_small_library(Path(tempfile.mkdtemp()), write_files=False)
    engine = database.writable_engine()
    library.builder.write_database(engine)
    engine.dispose()
    return library


def test_the_written_export_reads_back_as_the_database_said(sqlite_library, tmp_path):
    """A job on another machine (a Slurm node, a rented GPU) parses the workflow from the exported tables."""
    library, db = sqlite_library
    export = photoprism.read_export(make_engine(f"sqlite:///{db}", PASSWORD_ENV, ""), "Zoë O'Brien")
    tsv.write_tables(export, str(tmp_path / "markers.tsv"), str(tmp_path / "neighbours.tsv"))
    back = tsv.read_tables(tmp_path / "markers.tsv", tmp_path / "neighbours.tsv", "Zoë O'Brien")
    assert back.markers == export.markers and back.neighbours == export.neighbours
    assert back.subject.uid == library.person_uid
    assert [m.marker_uid for m in back.usable] == [m.marker_uid for m in export.usable]
    assert tsv.export_digest(back) == tsv.export_digest(export)
    (tmp_path / "neighbours.tsv").unlink()
    with pytest.raises(SourceError, match=r"neighbours\.tsv is missing"):
        tsv.read_tables(tmp_path / "markers.tsv", tmp_path / "neighbours.tsv", "Zoë O'Brien")


def test_the_records_fields_are_the_tables_columns():
    """markers.tsv and neighbours.tsv are written from the records: the contract in likeness.tables is theirs."""
    assert tuple(f.name for f in dataclasses.fields(records.MarkerRow)) == tables.MARKER_COLUMNS
    assert tuple(f.name for f in dataclasses.fields(records.Neighbour)) == tables.NEIGHBOUR_COLUMNS


@pytest.mark.parametrize("url", ["postgres://immich@127.0.0.1/immich", "oracle://u@h/db"])
def test_an_unsupported_url_is_answered_with_every_supported_form(url):
    with pytest.raises(ConfigError) as error:
        make_engine(url, PASSWORD_ENV, "")
    message = str(error.value)
    assert message.startswith("config key 'source.url': unsupported database")
    for form in ("mysql+mysqldb://", "postgresql+psycopg://", "sqlite:///"):
        assert form in message
    assert "\n" not in message
