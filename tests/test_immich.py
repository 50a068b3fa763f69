"""The Immich export on the real PostgreSQL server, tables created from Immich's own migrations' DDL."""

from __future__ import annotations

import unicodedata

import pytest
import sqlalchemy as sa
from fixtures.databases import PG_PORT, PG_TCP_HOST, immich_path_map, write_immich_postgres
from fixtures.library import PERSON, build_cross_library
from fixtures.managers import IMMICH_LAYOUTS, stable_uuid
from likeness.config import Section, validate_config
from likeness.errors import ConfigError, SourceError
from likeness.export import immich, photos, records, sourceapi
from likeness.export.values import uid_text

pytestmark = pytest.mark.postgres
PASSWORD_ENV = "LIKENESS_TEST_PG_PASSWORD"


def _config(library, database, **extra) -> Section:
    """The config's source section as the workflow builds it: the schema's defaults, ``extra`` over them."""
    source = {"url": database.url, "password_env": PASSWORD_ENV, "path_map": immich_path_map(library), **extra}
    return validate_config({"person": PERSON, "source": source}).source


@pytest.fixture(scope="module", params=IMMICH_LAYOUTS)
def immich_library(request, tmp_path_factory):
    """The library in Immich's tables: the layout of v1.137.0 to v3.1, and that of v3.2.0 and later."""
    library = build_cross_library(tmp_path_factory.mktemp("immich"))
    database = write_immich_postgres(library, request.param)
    database.layout = request.param
    yield library, database
    database.drop()


def _add_person(database, person_id: str, owner: str, name: str) -> None:
    if database.layout == "v3.2":
        database.execute(
            'INSERT INTO person_group (id, "clusterGroupId") VALUES (%(id)s, %(cluster)s)',
            {"id": person_id, "cluster": stable_uuid("cluster")},
        )
        database.execute(
            'INSERT INTO person ("personGroupId", "ownerId", name) VALUES (%(id)s, %(owner)s, %(name)s)',
            {"id": person_id, "owner": owner, "name": name},
        )
    else:
        database.execute(
            'INSERT INTO person (id, "ownerId", name) VALUES (%(id)s, %(owner)s, %(name)s)',
            {"id": person_id, "owner": owner, "name": name},
        )


def _remove_person(database, person_id: str) -> None:
    if database.layout == "v3.2":
        database.execute("DELETE FROM person_group WHERE id = %(id)s", {"id": person_id})
    else:
        database.execute("DELETE FROM person WHERE id = %(id)s", {"id": person_id})


@pytest.fixture
def export_of(immich_library, monkeypatch):
    library, database = immich_library
    monkeypatch.setenv(PASSWORD_ENV, database.password)

    def read(person: str = PERSON, **extra) -> records.Export:
        return sourceapi.read_export(_config(library, database, **extra), person)

    return read


def _by_label(library, export) -> dict:
    uid_of = {label: uid_text(stable_uuid(face.uid)) for label, face in library.faces.items()}
    rows = {m.marker_uid: m for m in export.markers}
    return {label: rows[uid] for label, uid in uid_of.items()}


def test_export_lists_every_face_with_immichs_reasons(immich_library, export_of):
    library, _database = immich_library
    export = export_of()
    assert export.subject.name == PERSON
    assert export.subject.uid == uid_text(stable_uuid(library.person_uid))
    rows = _by_label(library, export)
    assert len(export.markers) == len(rows) == 13
    assert {label: rows[label].reason for label in ("trashed", "archived", "rejected")} == {
        "trashed": "asset in Immich's trash",
        "archived": "asset archived in Immich",
        "rejected": "face deleted in Immich",
    }
    assert {label for label, row in rows.items() if row.usable} == library.usable_labels()
    # Paths: the container's prefix is the root key, the rest stays relative to it.
    edge1 = rows["edge1"]
    assert (edge1.file_root, edge1.file_name) == ("/data/library", "2023/01/IMG_1.jpg")
    assert photos.roots(export)[edge1.file_root] == str(library.originals)
    # Displayed size and orientation come from asset.width/height and asset_exif.orientation.
    for orientation in range(1, 9):
        row, photo = rows[f"edge{orientation}"], library.photos[f"edge{orientation}"]
        assert (row.file_width, row.file_height, row.file_orientation) == (photo.width, photo.height, orientation)
    assert edge1.taken_at == "2023-01-10T12:00:00Z" and edge1.subj_src == "manual"
    # Neighbours: every visible face on the person's assets (the bystanders too), not the deleted face.
    neighbour_uids = {n.marker_uid for n in export.neighbours}
    bystanders = {uid_text(stable_uuid(p.faces[1].uid)) for p in library.photos.values() if len(p.faces) > 1}
    assert bystanders <= neighbour_uids
    assert rows["rejected"].marker_uid not in neighbour_uids


def test_preview_box_is_scaled_to_the_original(immich_library, export_of):
    library, database = immich_library
    big = _by_label(library, export_of())["big"]
    # Stored in the 1440x960 preview's pixels, read back as the 2880x1920 original's.
    stored = database.fetch(
        'SELECT "imageWidth", "imageHeight", "boundingBoxX1", "boundingBoxY1", "boundingBoxX2", "boundingBoxY2"'
        " FROM asset_face WHERE id = %(id)s",
        {"id": stable_uuid(library.faces["big"].uid)},
    )
    assert stored == [(1440, 960, 540, 240, 720, 420)]
    assert (big.file_width, big.file_height) == (2880, 1920)
    assert (big.x, big.y, big.w, big.h) == records.fractions_for_pixels(1080, 480, 1440, 840, 2880, 1920)
    assert big.size == 360


def test_scaling_widens_to_whole_pixels():
    # 1000 px preview of a 3000 px original: 101 -> 303, 202 -> 606 exactly; 333.x rounds outwards.
    assert immich.scale_box((101, 50, 202, 111), (1000, 500), (3000, 1500)) == (303, 150, 606, 333)
    assert immich.scale_box((1, 1, 3, 3), (7, 7), (10, 10)) == (1, 1, 5, 5)
    assert immich.scale_box((-5, -5, 1200, 700), (1000, 500), (2000, 1000)) == (0, 0, 2000, 1000)


@pytest.mark.parametrize(("stored", "expected"), [("6", 6), ("1", 1), ("90", 6), ("-90", 8), (None, 1), ("", 1)])
def test_orientation_values(stored, expected):
    assert immich.orientation_of(stored) == expected


@pytest.mark.parametrize(
    "person",
    [
        PERSON,
        PERSON.upper(),
        unicodedata.normalize("NFD", PERSON),  # 'e' + combining diaeresis
        unicodedata.normalize("NFD", PERSON.casefold()),
    ],
)
def test_person_by_name_in_any_case_and_unicode_form(immich_library, export_of, person):
    library, _database = immich_library
    assert export_of(person).subject.uid == uid_text(stable_uuid(library.person_uid))


def test_person_by_id_with_or_without_dashes(immich_library, export_of):
    library, _database = immich_library
    person_id = stable_uuid(library.person_uid)
    for given in (person_id, person_id.upper(), person_id.replace("-", "")):
        assert export_of(given).subject.name == PERSON


def test_unknown_person_is_one_line_with_the_closest_names(export_of):
    with pytest.raises(ConfigError) as error:
        export_of("Anne")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("config key 'person': no Immich person is named 'Anne'; closest:")
    assert "Anna (" in message and "Ana (" in message


def test_two_people_of_one_name_ask_for_the_id(immich_library, export_of):
    _library, database = immich_library
    twin = stable_uuid("second Anna")
    _add_person(database, twin, stable_uuid("second owner"), "ANNA")
    try:
        with pytest.raises(ConfigError, match=r"matches several Immich people: .*; give the id"):
            export_of("anna")
        assert export_of(twin).subject.name == "ANNA"
    finally:
        _remove_person(database, twin)


@pytest.fixture(scope="module")
def v3_2_library(tmp_path_factory):
    library = build_cross_library(tmp_path_factory.mktemp("immich-v3.2"))
    database = write_immich_postgres(library, "v3.2")
    yield library, database
    database.drop()


def test_v3_2_each_user_may_name_the_same_person_group(v3_2_library, monkeypatch):
    """From v3.2.0 on, users of one cluster group share a person group and each keeps a name for it."""
    library, database = v3_2_library
    monkeypatch.setenv(PASSWORD_ENV, database.password)

    def export_of(person: str) -> records.Export:
        return sourceapi.read_export(_config(library, database), person)

    group = stable_uuid(library.person_uid)
    database.execute(
        'INSERT INTO person ("personGroupId", "ownerId", name) VALUES (%(id)s, %(owner)s, \'Mum\')',
        {"id": group, "owner": stable_uuid("second owner")},
    )
    try:
        by_own_name, by_other_name = export_of(PERSON), export_of("mum")
        assert by_own_name.subject.uid == by_other_name.subject.uid == uid_text(group)
        assert len(by_other_name.usable) == len(library.usable_labels())
    finally:
        database.execute("DELETE FROM person WHERE name = 'Mum'")


def test_session_is_read_only_and_the_database_unchanged(immich_library, export_of, monkeypatch):
    _library, database = immich_library
    before = database.digests()
    export_of()
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    engine = immich.make_engine(database.url, PASSWORD_ENV, "")
    with pytest.raises(sa.exc.InternalError, match="read-only transaction"), engine.connect() as conn:
        conn.execute(sa.text('UPDATE asset_face SET "boundingBoxX1" = 0'))
    assert database.digests() == before
    assert set(before) >= {"asset", "asset_face", "asset_exif", "person", "asset_edit"}


def test_password_comes_from_the_environment_or_a_pgpass_file(immich_library, monkeypatch, tmp_path):
    _library, database = immich_library
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    with immich.make_engine(database.url, PASSWORD_ENV, "").connect() as conn:
        assert conn.connection.dbapi_connection.info.password == database.password
        assert conn.execute(sa.text("SELECT current_user")).scalar() == database.reader
    monkeypatch.delenv(PASSWORD_ENV)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:{database.name}:{database.reader}:{database.password.replace(':', chr(92) + ':')}\n")
    passfile.chmod(0o600)
    with immich.make_engine(database.url, PASSWORD_ENV, str(passfile)).connect() as conn:
        assert conn.connection.dbapi_connection.info.password == database.password
    # A libpq service file names host, port, database and user: the URL only names the service.
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        f"[likeness]\nhost={PG_TCP_HOST}\nport={PG_PORT}\ndbname={database.name}\nuser={database.reader}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    with immich.make_engine("postgresql+psycopg:///?service=likeness", PASSWORD_ENV, str(passfile)).connect() as conn:
        assert conn.execute(sa.text("SELECT current_user, current_database()")).one() == (
            database.reader,
            database.name,
        )
    with pytest.raises(ConfigError, match=r"config key 'source\.url': must not contain a password"):
        immich.make_engine(database.url.replace("@", ":secret@"), PASSWORD_ENV, "")
    with pytest.raises(ConfigError, match=r"config key 'source\.url': must not carry a password"):
        immich.make_engine(database.url + "?password=secret", PASSWORD_ENV, "")
    with pytest.raises(ConfigError, match=r"config key 'source\.option_file': no \.pgpass file"):
        immich.make_engine(database.url, PASSWORD_ENV, str(tmp_path / "nope"))


def test_connection_errors_are_one_line_without_the_password(immich_library, monkeypatch):
    library, database = immich_library
    monkeypatch.setenv(PASSWORD_ENV, database.password)
    config = _config(library, database, url=database.url.replace(database.name, database.name + "_gone"))
    with pytest.raises(SourceError) as error:
        sourceapi.read_export(config, PERSON)
    message = str(error.value)
    assert "\n" not in message and database.password not in message
    assert message.startswith("cannot read the Immich database postgresql+psycopg://")


def test_assets_immich_would_not_show_are_excluded_with_reasons(immich_library, export_of):
    library, database = immich_library
    assets = {label: stable_uuid(library.photos[label].photo_uid) for label in ("edge1", "edge2", "edge3", "edge4")}
    changes = [
        ('UPDATE asset SET "isOffline" = true WHERE id = %(id)s', "edge1", "asset offline in Immich"),
        ("UPDATE asset SET visibility = 'hidden' WHERE id = %(id)s", "edge2", "asset hidden in Immich"),
        ("UPDATE asset SET visibility = 'locked' WHERE id = %(id)s", "edge3", "asset in Immich's locked folder"),
        (
            "INSERT INTO asset_edit (\"assetId\", action, parameters, index) VALUES (%(id)s, 'crop', '{}', 0)",
            "edge4",
            "asset edited in Immich",
        ),
    ]
    before = database.digests()
    try:
        for statement, label, _reason in changes:
            database.execute(statement, {"id": assets[label]})
        rows = _by_label(library, export_of())
        for _statement, label, reason in changes:
            assert rows[label].reason.startswith(reason), rows[label].reason
        assert rows["edge5"].usable
    finally:
        database.execute(
            "UPDATE asset SET \"isOffline\" = false, visibility = 'timeline' WHERE id = ANY(%(ids)s)",
            {"ids": list(assets.values())},
        )
        database.execute("DELETE FROM asset_edit")
    assert database.digests() == before


def test_path_outside_the_path_map_is_a_reason(immich_library, export_of):
    library, _database = immich_library
    rows = _by_label(library, export_of(path_map={"/data/sidecar": "/nowhere"}))
    assert rows["edge1"].reason.startswith("originalPath '/data/library/2023/01/IMG_1.jpg' is under")


def test_longest_path_map_prefix_wins():
    path_map = {"/usr/src/app/upload": "/a", "/usr/src/app/upload/library/admin": "/b", "/mnt/photos/": "/c"}
    assert photos.split_by_path_map(path_map, "/usr/src/app/upload/library/admin/2023/x.jpg") == (
        "/usr/src/app/upload/library/admin",
        "2023/x.jpg",
    )
    assert photos.split_by_path_map(path_map, "/mnt/photos/a.jpg") == ("/mnt/photos", "a.jpg")
    assert photos.split_by_path_map(path_map, "/mnt/photosx/a.jpg") == ("", "")


def test_releases_before_the_rename_get_one_line(immich_library, monkeypatch):
    library, database = immich_library
    old = write_immich_postgres(library, database.layout)
    try:
        for new_name, old_name in (("asset_face", "asset_faces"), ("asset", "assets"), ("asset_exif", "exif")):
            old.execute(f'ALTER TABLE "{new_name}" RENAME TO "{old_name}"')
        monkeypatch.setenv(PASSWORD_ENV, old.password)
        with pytest.raises(SourceError) as error:
            sourceapi.read_export(_config(library, old), PERSON)
        assert str(error.value) == (
            "this Immich database is from a release before v1.137.0 (tables asset_faces, assets); "
            "likeness reads Immich v1.137.0 and later: upgrade Immich first"
        )
    finally:
        old.drop()


def test_a_layout_newer_than_v3_2_gets_one_line(v3_2_library, monkeypatch):
    library, _ = v3_2_library
    newer = write_immich_postgres(library, "v3.2")
    try:
        newer.execute('ALTER TABLE asset_face RENAME COLUMN "personGroupId" TO "faceClusterId"')
        monkeypatch.setenv(PASSWORD_ENV, newer.password)
        with pytest.raises(SourceError, match=r"^this Immich database's asset_face has neither personId"):
            sourceapi.read_export(_config(library, newer), PERSON)
    finally:
        newer.drop()


def test_a_kind_the_tables_contradict_is_one_line(immich_library, export_of):
    with pytest.raises(ConfigError, match=r"config key 'source\.kind': is 'digikam' but the database has Immich's"):
        export_of(kind="digikam")
