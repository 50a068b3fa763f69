"""The source interface: which manager wrote a database, config errors, names, boxes and paths."""

from __future__ import annotations

import sqlite3
import unicodedata

import pytest
from fixtures.library import build_small_library, write_sqlite
from likeness import geometry
from likeness.config import Section, validate_config
from likeness.errors import ConfigError
from likeness.export import photos, records, sourceapi


def _config(url: str, **extra) -> Section:
    """The config's source section as the workflow builds it: the schema's defaults, ``extra`` over them."""
    return validate_config({"person": "Anna", "source": {"url": url, **extra}}).source


@pytest.mark.parametrize(
    ("tables", "kind"),
    [
        (["photos", "files", "markers", "subjects", "faces"], "photoprism"),
        (["asset", "asset_face", "person", "asset_exif"], "immich"),
        (["assets", "asset_faces", "person", "exif"], "immich"),  # refused later, with the release
        (["AlbumRoots", "Albums", "Images", "Tags", "ImageTagProperties"], "digikam"),
        (["something_else"], ""),
    ],
)
def test_kind_from_the_tables(tables, kind):
    assert sourceapi.detect_kind(tables) == kind


def test_a_database_of_no_known_manager_names_source_kind(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER)")
    with pytest.raises(ConfigError) as error:
        sourceapi.read_export(_config(f"sqlite:///{db}"), "Anna")
    assert str(error.value).startswith("config key 'source.kind': the database at sqlite:///")
    assert "\n" not in str(error.value)


def test_photoprism_needs_its_originals_folder(tmp_path):
    library = build_small_library(tmp_path / "lib", write_files=False)
    library.originals.mkdir(parents=True)
    db = write_sqlite(library)
    with pytest.raises(ConfigError, match=r"^config key 'source\.originals': is required for a PhotoPrism library"):
        sourceapi.read_export(_config(f"sqlite:///{db}", originals=""), "Anna")
    export = sourceapi.read_export(_config(f"sqlite:///{db}", originals=str(library.originals)), "Anna")
    assert photos.roots(export)["/"] == str(library.originals)
    with pytest.raises(ConfigError, match=r"^config key 'source\.kind': is 'immich' but the database has PhotoPrism's"):
        sourceapi.read_export(_config(f"sqlite:///{db}", kind="immich"), "Anna")


def test_names_compare_in_any_case_and_unicode_form():
    composed = "Zoë Ångström"
    assert records.name_key(unicodedata.normalize("NFD", composed).upper()) == records.name_key(composed)
    assert records.name_key("STRASSE") == records.name_key("straße")


@pytest.mark.parametrize("width", [640, 800, 1000, 2880, 4032, 6000, 9999])
def test_pixel_boxes_survive_photoprisms_float32_truncation(width):
    height = width * 3 // 4
    for x0, x1 in ((0, 1), (1, 2), (width // 3, width // 2), (width - 7, width), (width // 7, width - 1)):
        for y0, y1 in ((0, height), (height // 5, height // 3 + 1)):
            fractions = records.fractions_for_pixels(x0, y0, x1, y1, width, height)
            rect = geometry.marker_rect(*fractions, width, height)
            assert rect.as_list() == [x0, y0, x1, y1]


def test_a_path_that_climbs_out_of_its_mapped_folder_is_refused(tmp_path):
    root, relative = photos.split_by_path_map({"/data": str(tmp_path)}, "/data/../etc/passwd")
    assert (root, relative) == ("/data", "../etc/passwd")
    path, reason = photos.resolve_photo(photos.path_map_roots({"/data": str(tmp_path)}), root, relative)
    assert path == "" and "escapes its root" in reason
