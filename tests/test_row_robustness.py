"""Any value a PhotoPrism row can hold gives a reason, never an exception: names, UIDs, boxes, URLs.

Property tests throw arbitrary strings at the file-name, UID and person-name handling and arbitrary
values at the box columns; unit tests cover what a row or a config can hold that PhotoPrism's own tests
would not (a file name too long for the OS, a symlink loop, a folder that cannot be read, a password in a
URL's query, a name typed in another Unicode form).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import tempfile
import unicodedata
from pathlib import Path

import pytest
from fixtures.library import build_small_library, write_sqlite
from hypothesis import given, settings
from hypothesis import strategies as st
from likeness import names
from likeness.errors import ConfigError
from likeness.export import photoprism, photos, records, tsv
from likeness.export.database import make_engine, mask_url

ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
# Values a driver can hand back for a FLOAT or INTEGER column of a database that holds anything.
ANY_VALUE = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.booleans(),
)

# No test sets it: SQLite and the refused URLs need no password.
PASSWORD_ENV = "LIKENESS_TEST_UNSET_PASSWORD"


def _row(**values) -> dict:
    row = {
        "marker_uid": b"mrns5c6i7lw0aaaa",
        "file_uid": b"frns5c6i7lw0aaaa",
        "marker_src": b"image",
        "marker_review": 0,
        "marker_invalid": 0,
        "subj_uid": b"jrns5c6i7lw0aaaa",
        "subj_src": b"manual",
        "x": 0.1,
        "y": 0.2,
        "w": 0.3,
        "h": 0.3,
        "q": 10,
        "size": 100,
        "score": 50,
        "f_file_uid": b"frns5c6i7lw0aaaa",
        "file_name": b"2020/a.jpg",
        "file_root": b"/",
        "file_hash": b"0" * 40,
        "file_width": 400,
        "file_height": 300,
        "file_orientation": 1,
        "file_missing": 0,
        "file_deleted_at": None,
        "photo_uid": b"prns5c6i7lw0aaaa",
        "taken_at": "2020-01-01 00:00:00",
        "photo_deleted_at": None,
    }
    row.update(values)
    return row


# -- property tests ---------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["x", "y", "w", "h", "score", "q", "size", "file_width", "file_height",
                                        "file_orientation", "marker_review", "taken_at"]), ANY_VALUE))  # fmt: skip
def test_any_value_in_a_number_column_gives_a_row(values):
    marker = photoprism.marker_from_row(_row(**values))
    assert marker.status in ("ok", "excluded")
    if marker.status == "excluded":
        assert marker.reason
    tsv.markers_tsv([marker])  # and the row can be written


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_any_uid_gives_a_safe_distinct_stem(uid):
    stem = names.file_stem(uid)
    assert re.fullmatch(names.STEM_PATTERN, stem)
    results = Path("/work/results/crops")
    assert (results / f"{stem}.json").resolve().parent == results
    assert names.file_stem(uid.upper() + "X") != stem or uid.upper() + "X" == uid


def test_stems_of_plain_uids_are_the_uids_and_others_cannot_meet_them():
    assert names.file_stem("mrns5c6i7lw0aaaa") == "mrns5c6i7lw0aaaa"
    for uid in ["MRNS5C6I7LW0AAAA", "a/../../etc", "..", ".", "", "m1/m2", "Ünïcode", "a b"]:
        stem = names.file_stem(uid)
        assert "-" in stem and stem != uid and "/" not in stem and stem not in (".", "..")
    assert names.file_stem("M1") != names.file_stem("m1") == "m1"
    assert len({names.file_stem(f"x/{n}") for n in range(5000)}) == 5000


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_any_file_name_resolves_inside_its_root_or_gives_a_reason(tmp_path_factory, file_name):
    root = tmp_path_factory.getbasetemp() / "prop-root"
    (root / "2020").mkdir(parents=True, exist_ok=True)
    (root / "2020" / "a.jpg").write_bytes(b"x")
    path, reason = photos.resolve_photo({"/": str(root)}, "/", file_name)
    assert bool(path) != bool(reason)
    if path:
        assert Path(path).resolve().is_relative_to(root.resolve())


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_any_person_name_is_found_or_one_line(person):
    subjects = [records.Subject("j1", "zoe", "Zoë O'Brien", 3), records.Subject("j2", "ann", "Ann", 9)]
    try:
        found = photoprism.resolve_person(subjects, person)
    except ConfigError as error:
        assert "\n" not in str(error).replace(person, "")
        assert str(error).startswith("config key 'person': ")
    else:
        assert found in subjects


# -- names ------------------------------------------------------------------------------------------------
def test_a_name_typed_in_nfd_matches_the_nfc_subject():
    subjects = [records.Subject("j1", "zoe", unicodedata.normalize("NFC", "Zoë Åström"), 3)]
    typed = unicodedata.normalize("NFD", "zoë  åström")
    assert typed != subjects[0].name.lower()
    assert photoprism.resolve_person(subjects, typed).uid == "j1"


def test_nothing_similar_still_lists_the_subjects_with_most_photos():
    subjects = [
        records.Subject("j1", "ann", "Ann", 4),
        records.Subject("j2", "bob", "Bob", 120),
        records.Subject("j3", "cy", "Cy", 30),
    ]
    with pytest.raises(ConfigError) as error:
        photoprism.resolve_person(subjects, "Xavier Quint")
    message = str(error.value)
    assert (
        "closest: none is similar; the subjects with most photos: Bob (bob, 120 photos), Cy (cy, 30 photos)" in message
    )
    with pytest.raises(ConfigError, match=r"closest: Ann \(ann, 4 photos\)"):
        photoprism.resolve_person(subjects, "Anne")


def test_originals_that_do_not_exist_are_one_config_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^config key 'source.originals': no folder at"):
        photoprism.check_originals(str(tmp_path / "absent"))
    photoprism.check_originals(str(tmp_path))


# -- paths ------------------------------------------------------------------------------------------------
def test_paths_the_os_refuses_are_reasons(tmp_path):
    root = tmp_path / "originals"
    root.mkdir()
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    roots = {"/": str(root)}
    assert "symlink loop" in photos.resolve_photo(roots, "/", "loop-a/photo.jpg")[1]
    assert "File name too long" in photos.resolve_photo(roots, "/", "x" * 300 + ".jpg")[1]
    deep = "/".join(["d" * 200] * 30) + ".jpg"  # longer than PATH_MAX
    assert photos.resolve_photo(roots, "/", deep)[0] == ""
    assert "file_name is empty" in photos.resolve_photo(roots, "/", "a\x00b.jpg")[1]


def test_a_folder_that_cannot_be_read_is_a_reason():
    """Root reads every folder, so when the tests run as root the check runs as nobody (seteuid)."""
    base = Path(tempfile.mkdtemp(prefix="likeness-unreadable-", dir="/tmp"))
    try:
        root = base / "originals"
        (root / "private").mkdir(parents=True)
        (root / "private" / "a.jpg").write_bytes(b"x")
        (root / "private").chmod(0o000)
        base.chmod(0o755)
        root.chmod(0o755)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            path, reason = photos.resolve_photo({"/": str(root)}, "/", "private/a.jpg")
        finally:
            if as_root:
                os.seteuid(0)
        assert path == "" and "Permission denied" in reason, reason
    finally:
        (base / "originals" / "private").chmod(0o755)
        shutil.rmtree(base)


# -- URLs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "mysql+mysqldb://photoprism@127.0.0.1/photoprism?password=hunter2",
        "mysql+mysqldb://photoprism@127.0.0.1/photoprism?charset=utf8mb4&passwd=hunter2",
        "mysql+mysqldb://photoprism:hunter2@127.0.0.1/photoprism",
        "sqlite:///nonexistent/index.db?password=hunter2",
    ],
)
def test_a_password_anywhere_in_the_url_is_refused_and_never_printed(url):
    with pytest.raises(ConfigError) as error:
        make_engine(url, PASSWORD_ENV, "")
    message = str(error.value)
    assert message.startswith("config key 'source.url': must not")
    assert "hunter2" not in message and "\n" not in message


def test_a_bad_port_is_one_config_line():
    for url in ["mysql+mysqldb://u@127.0.0.1:port/db", "mysql+mysqldb://u@127.0.0.1:99999/db"]:
        with pytest.raises(ConfigError, match=r"^config key 'source.url': "):
            make_engine(url, PASSWORD_ENV, "")


def test_mask_url_hides_every_secret():
    assert mask_url("mysql://u:p@ss@h:3306/db?passwd=x&charset=utf8") == (
        "mysql://u:***@h:3306/db?passwd=***&charset=utf8"
    )
    assert mask_url("sqlite:////tmp/a?b#c.db") == "sqlite:////tmp/a?b#c.db"


def test_an_sqlite_path_with_question_mark_and_hash_works(tmp_path):
    library = build_small_library(tmp_path / "lib", write_files=False)
    database = write_sqlite(library)
    odd = database.with_name("index?#1.db")
    database.rename(odd)
    export = photoprism.read_export(make_engine(f"sqlite:///{odd}", PASSWORD_ENV, ""), library.person_uid)
    assert export.subject.uid == library.person_uid and export.markers
    assert not math.isnan(export.markers[0].x)


def test_a_name_that_is_not_utf8_does_not_stop_the_query(tmp_path):
    library = build_small_library(tmp_path / "lib", write_files=False)
    database = write_sqlite(library)
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE subjects SET subj_name = CAST(? AS TEXT) WHERE subj_uid = ?", (b"Ann\xe9", library.other_uid)
        )
    export = photoprism.read_export(make_engine(f"sqlite:///{database}", PASSWORD_ENV, ""), library.person_uid)
    assert export.subject.uid == library.person_uid
    with pytest.raises(ConfigError, match="Ann\ufffd"):
        photoprism.read_export(make_engine(f"sqlite:///{database}", PASSWORD_ENV, ""), "Annx")
