"""likeness.select: filters, near-duplicates, ranking, outputs and the images folder, on drawn faces."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fixtures.images import blurred, burst_shot, face_crop, with_second_face
from fixtures.stage_inputs import Library, read_tsv_rows
from likeness.config import Section, section_settings, validate_config
from likeness.crop import quality
from likeness.errors import ConfigError, LikenessError
from likeness.select import crowding
from likeness.select.duplicates import group_duplicates
from likeness.select.faces import Face
from likeness.select.filters import check_settings
from likeness.select.job import SelectOutputs, run_selection
from likeness.select.ranking import choose

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "select.schema.yaml"
OUT = "results/dataset"
# Drawn faces are not people: the identity check is tested on real portraits (test_identity.py).
NO_ID = {"max_identity_distance": None}
MINIMAL_CONFIG = {"person": "Grace Hopper", "source": {"url": "sqlite:///index.db"}}


@pytest.fixture
def lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Library:
    # Crop records name their images relative to the workflow root, as in the real workflow.
    monkeypatch.chdir(tmp_path)
    return Library(tmp_path)


def select_settings(cfg: dict | None = None) -> Section:
    """The select section as the workflow validates it: the schema's defaults, NO_ID, then ``cfg``."""
    return validate_config({**MINIMAL_CONFIG, "select": {**NO_ID, **(cfg or {})}}).select


def outputs(out: str = OUT) -> SelectOutputs:
    """The select rule's outputs, laid out under ``out`` as the workflow lays them out."""
    folder = Path(out)
    return SelectOutputs(folder / "manifest.tsv", folder / "excluded.tsv", folder / "identity.json", folder / "images")


def select(paths: list[str], markers: str, neighbours: str, cfg: dict | None = None, out: str = OUT) -> str:
    return run_selection(paths, markers, neighbours, select_settings(cfg), outputs(out), log=lambda line: None)


def run(library: Library, cfg: dict | None = None, out: str = OUT, **write_kwargs) -> str:
    paths, markers, neighbours = library.write(**write_kwargs)
    return select(paths, markers, neighbours, cfg, out)


def manifest(out: str = OUT) -> list[dict[str, str]]:
    return read_tsv_rows(Path(out) / "manifest.tsv")


def excluded(out: str = OUT) -> dict[str, dict[str, str]]:
    return {row["marker_uid"]: row for row in read_tsv_rows(Path(out) / "excluded.tsv")}


def kept_uids(out: str = OUT) -> list[str]:
    return [row["marker_uid"] for row in manifest(out)]


def distinct_face(seed: int, side: int = 512) -> tuple:
    return face_crop(side, seed=seed)


def add_distinct(library: Library, seed: int, **kwargs) -> str:
    image, box = distinct_face(seed)
    return library.add(image, box, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Config


def test_the_schema_documents_every_key_and_refuses_unknown_ones() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["additionalProperties"] is False
    assert all(spec.get("description") for spec in schema["properties"].values())


def test_snakemake_validate_fills_defaults_and_catches_mistakes() -> None:
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = yaml.safe_load(SCHEMA.read_text())
    section: dict = {"top_n": 40}
    validate(section, str(SCHEMA))
    assert section["top_n"] == 40
    assert section["min_crop_side"] == schema["properties"]["min_crop_side"]["default"]
    assert section_settings("select", section).top_n == 40

    unquoted = yaml.safe_load("taken_after: 2020-01-31\ntaken_before: '2024-01-01'\n")
    validate(unquoted, str(SCHEMA))
    window = check_settings(section_settings("select", unquoted))
    assert window.after == dt.date(2020, 1, 31)
    assert window.before == dt.date(2024, 1, 1)

    bad_sections = ({"top_nn": 5}, {"taken_after": 2020}, {"taken_after": "31.01.2020"}, {"top_n": 0},
                    {"keep_review": "yes"}, {"max_other_face_share": 1.5})  # fmt: skip
    for bad in bad_sections:
        with pytest.raises(WorkflowError, match="validating"):
            validate(dict(bad), str(SCHEMA))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        # the schema's findings (likeness.config.validate_config)
        ({"top_nn": 5}, "select.top_nn"),
        ({"top_n": 0}, "select.top_n"),
        ({"top_n": True}, "select.top_n"),
        ({"max_other_face_share": 2}, "select.max_other_face_share"),
        ({"keep_review": "maybe"}, "select.keep_review"),
        ({"taken_after": "last year"}, "select.taken_after"),
        ({"max_identity_distance": "close"}, "select.max_identity_distance"),
        ({"max_identity_distance": 0}, "select.max_identity_distance"),
        ({"identity_reference": " "}, "select.identity_reference"),
        # what the schema cannot express (likeness.select.filters.check_settings)
        ({"taken_after": "2024-02-30"}, "select.taken_after"),
        ({"taken_after": "2024-01-01", "taken_before": "2020-01-01"}, "select.taken_after"),
        ({"brightness_min": 200, "brightness_max": 100}, "select.brightness_min"),
    ],
)
def test_config_errors_name_the_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_settings(select_settings(section))
    assert caught.value.key == key
    assert f"'{key}'" in str(caught.value)


# ---------------------------------------------------------------------------------------------------
# Filters, one at a time: a good face is kept, the offending one gets the expected first reason


def test_too_small_crop_is_excluded(lib: Library) -> None:
    good = add_distinct(lib, 1)
    small = add_distinct(lib, 2, native_crop_side=600)
    line = run(lib)
    assert kept_uids() == [good]
    assert excluded()[small]["reason_key"] == "too small"
    assert "600" in excluded()[small]["reason"]
    assert line == "kept 1 of 2 faces: too small 1"
    run(lib, {"min_crop_side": 512}, out="relaxed")
    assert set(kept_uids("relaxed")) == {good, small}


def test_sharp_face_kept_and_the_same_face_blurred_excluded(lib: Library) -> None:
    image, box = distinct_face(1)
    sharp = lib.add(image, box)
    soft = lib.add(blurred(image, sigma=4), box)
    run(lib)
    assert kept_uids() == [sharp]
    assert excluded()[soft]["reason_key"] == "blurred"


def test_crop_with_a_second_face_inside_is_crowded(lib: Library) -> None:
    image, box = distinct_face(3)
    crowded_image = with_second_face(image)
    # The second face drawn at (0.82, 0.8) of the 512 crop, a third of its side; the crop is
    # 1024 native pixels at (300, 200) of the photo, so scale 2.
    centre_x, centre_y, half = 300 + round(0.82 * 1024), 200 + round(0.8 * 1024), (512 // 3)
    second = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
    crowded = lib.add(crowded_image, box, other_faces=[second])
    alone = add_distinct(lib, 4)
    run(lib, {"crowded": "exclude"})
    assert kept_uids() == [alone]
    row = excluded()[crowded]
    assert row["reason_key"] == "crowded"
    # The visible part of the second face's square box: it sticks out past the crop's right/bottom edge.
    visible = (min(second[2], 1324) - second[0]) * (min(second[3], 1224) - second[1])
    assert float(row["other_face_share"]) == pytest.approx(visible / 1024**2, abs=2e-3)

    # With crowded: mask (the default) the same face is kept, its image a PNG carrying the mask.
    summary = run(lib)
    assert sorted(kept_uids()) == sorted([alone, crowded])
    assert summary.startswith("kept 2 (1 by masking) of 2 faces")
    masked_row = next(row for row in manifest() if row["marker_uid"] == crowded)
    assert masked_row["image"].endswith(".png")
    assert float(masked_row["other_face_share"]) == pytest.approx(visible / 1024**2, abs=2e-3)
    alpha = cv2.imread(str(Path(OUT) / masked_row["image"]), cv2.IMREAD_UNCHANGED)[:, :, 3]
    # The drawn crop is 512 px for 1024 native: the second face's box at half scale is 0 in the mask,
    # except where it overlaps the person's own face box, which always weighs 1.
    x0, y0 = ((second[0] - 300) // 2, (second[1] - 200) // 2)
    own = np.zeros(alpha.shape, bool)
    own[box[1] : box[3], box[0] : box[2]] = True
    second_region = np.zeros(alpha.shape, bool)
    second_region[y0:, x0:] = True
    assert (alpha[second_region & ~own] == 0).all()
    assert (alpha[own] == 255).all()
    alone_row = next(row for row in manifest() if row["marker_uid"] == alone)
    assert alone_row["image"].endswith(".jpg")
    # A second run leaves the masked PNG as it is (same bytes, same inode and mtime).
    png = Path(OUT) / masked_row["image"]
    before = png.stat()
    run(lib)
    after = png.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Back to crowded: exclude, the PNG leaves the images folder.
    run(lib, {"crowded": "exclude"})
    assert not png.exists() and sorted(p.suffix for p in (Path(OUT) / "images").iterdir()) == [".jpg"]


def test_a_crop_the_masks_would_mostly_blank_stays_crowded(lib: Library) -> None:
    image, box = distinct_face(3)
    # Three faces as large as the crop's third around the person: their heads take most of the crop.
    others = [(300, 200, 640, 540), (984, 200, 1324, 540), (300, 884, 640, 1224)]
    crowded = lib.add(image, box, other_faces=others)
    run(lib)
    row = excluded()[crowded]
    assert row["reason_key"] == "crowded"
    share = float(row["reason"].split("would take ")[1].split(" ")[0])
    assert share > 0.35
    assert "> 0.35" in row["reason"]
    run(lib, {"max_masked_share": 0.9})
    assert kept_uids() == [crowded]


def test_coverage_ignores_the_face_itself_and_a_second_marker_on_the_same_face(lib: Library) -> None:
    image, box = distinct_face(5)
    uid = lib.add(image, box)
    face = lib.faces[-1]
    x0, y0, x1, y1 = lib.face_rect_photo(face)
    face.other_faces = [(x0 + 10, y0 + 5, x1 + 10, y1 + 5)]  # the same face marked again, slightly off
    run(lib)
    assert kept_uids() == [uid]
    assert float(manifest()[0]["other_face_share"]) == 0.0


def test_other_face_share_geometry() -> None:
    neighbours = [
        # The face's own marker: skipped by its UID (placed away from face_box so only the UID can tell).
        {"marker_uid": "self", "x": "0.0", "y": "0.06", "w": "0.03", "h": "0.03"},
        {"marker_uid": "a", "x": "0.05", "y": "0.05", "w": "0.1", "h": "0.1"},  # px 50..150
        {"marker_uid": "b", "x": "0.1", "y": "0.1", "w": "0.1", "h": "0.1"},  # px 100..200, overlaps a
        {"marker_uid": "far", "x": "0.8", "y": "0.8", "w": "0.1", "h": "0.1"},  # outside the crop
    ]
    share = crowding.other_face_share("self", (0, 0, 50, 50), [0, 0, 100, 100], (1000, 1000), neighbours)
    # Only a's part inside the crop (50..100 squared) counts; b starts at the crop's edge.
    assert share == pytest.approx(2500 / 10000)
    assert crowding.union_area([(0, 0, 10, 10), (5, 5, 15, 15), (20, 0, 30, 10)]) == 100 + 100 - 25 + 100
    # PhotoPrism clamps each fraction, then truncates and clamps the rectangle to the image.
    assert crowding.marker_rect(0.9, -0.1, 0.3, 0.5, 1000, 800) == (900, 0, 1000, 400)


def test_exposure_filters(lib: Library) -> None:
    image, box = distinct_face(6)
    good = lib.add(image, box)
    dark = lib.add(cv2.convertScaleAbs(distinct_face(7)[0], alpha=0.2), box)
    clipped = add_distinct(lib, 8, measurement_overrides={"clipped_bright": 0.3})
    run(lib)
    assert kept_uids() == [good]
    assert excluded()[dark]["reason_key"] == "exposure"
    assert "too dark" in excluded()[dark]["reason"]
    assert excluded()[clipped]["reason_key"] == "exposure"
    assert "clipped" in excluded()[clipped]["reason"]


def test_date_window(lib: Library) -> None:
    old = add_distinct(lib, 1, taken_at="2012-05-01T10:00:00Z")
    recent = add_distinct(lib, 2, taken_at="2022-05-01 10:00:00+00:00")
    undated = add_distinct(lib, 3, taken_at="")
    late = add_distinct(lib, 4, taken_at="2024-01-01T00:00:00Z")
    run(lib, {"taken_after": "2020-01-01", "taken_before": dt.date(2024, 1, 1)})
    assert kept_uids() == [recent]
    reasons = excluded()
    assert {reasons[u]["reason_key"] for u in (old, undated, late)} == {"date window"}
    run(lib, {}, out="nowindow")
    assert set(kept_uids("nowindow")) == {old, recent, undated, late}


def test_review_and_manual_only(lib: Library) -> None:
    named = add_distinct(lib, 1, subj_src="manual")
    clustered = add_distinct(lib, 2, subj_src="")
    review = add_distinct(lib, 3, review=1)
    run(lib)
    assert set(kept_uids()) == {named, clustered}
    assert excluded()[review]["reason_key"] == "awaiting review"
    run(lib, {"keep_review": True, "manual_only": True}, out="strict")
    assert set(kept_uids("strict")) == {named, review}
    assert excluded("strict")[clustered]["reason_key"] == "not named by hand"


def test_first_reason_wins(lib: Library) -> None:
    image, box = distinct_face(1)
    small_and_blurred = lib.add(blurred(image, sigma=4), box, native_crop_side=500, review=1)
    run(lib)
    assert excluded()[small_and_blurred]["reason_key"] == "awaiting review"
    run(lib, {"keep_review": True}, out="review")
    assert excluded("review")[small_and_blurred]["reason_key"] == "too small"


def test_unreadable_faces_are_listed_with_their_reason(lib: Library) -> None:
    good = add_distinct(lib, 1)
    crop_failed = lib.add(None, None, status="excluded", reason="cannot decode photo")
    export_failed = lib.add(None, None, export_reason="marker no longer fits the file")
    # What the manager did with the photo is counted in its own words, not as "unreadable".
    lib.add(None, None, export_reason="photo archived in PhotoPrism")
    lib.add(None, None, export_reason="asset in Immich's trash")
    lib.add(None, None, status="excluded", reason="photo missing on disk: /photos/a.jpg")
    no_record = add_distinct(lib, 2)
    broken = add_distinct(lib, 3)
    vanished = add_distinct(lib, 4)
    paths, markers, neighbours = lib.write(skip_records=(no_record,))
    Path(f"results/crops/{broken}.json").write_text("{not json", encoding="utf-8")
    Path(f"results/crops/{vanished}.jpg").unlink()
    line = select(paths, markers, neighbours)
    reasons = excluded()
    assert kept_uids() == [good]
    assert reasons[crop_failed]["reason"] == "unreadable: cannot decode photo"
    assert reasons[export_failed]["reason"] == "unreadable: export: marker no longer fits the file"
    assert reasons[no_record]["reason"] == "unreadable: no crop record"
    assert reasons[broken]["reason"].startswith("unreadable: crop record")
    assert "missing" in reasons[vanished]["reason"]
    assert line == "kept 1 of 9 faces: archived 1, trashed 1, missing 1, unreadable 5"


def test_crop_record_without_a_marker_is_stale(lib: Library) -> None:
    good = add_distinct(lib, 1)
    gone = add_distinct(lib, 2)
    paths, markers_path, neighbours = lib.write()
    rows = Path(markers_path).read_text().splitlines()
    Path(markers_path).write_text("\n".join(r for r in rows if gone not in r) + "\n")
    select(paths, markers_path, neighbours)
    assert kept_uids() == [good]
    assert excluded()[gone]["reason_key"] == "stale"


def test_missing_input_table_is_one_readable_error(lib: Library) -> None:
    add_distinct(lib, 1)
    paths, _, neighbours = lib.write()
    with pytest.raises(LikenessError, match="cannot read") as caught:
        select(paths, "results/export/nope.tsv", neighbours)
    assert "\n" not in str(caught.value)
    Path("bad.tsv").write_text("marker_uid\tscore\nm1\t3\n")
    with pytest.raises(LikenessError, match="lacks the column"):
        select(paths, "bad.tsv", neighbours)


# ---------------------------------------------------------------------------------------------------
# Near-duplicates, ranking, top_n, per-day cap


def test_burst_forms_one_group_and_only_its_best_is_kept(lib: Library) -> None:
    image, box = distinct_face(1)
    # The burst's best frame is the full-size one; the others are re-compressed, shifted, smaller.
    burst = [lib.add(burst_shot(image, i), box, native_crop_side=900 - 20 * i) for i in range(1, 4)]
    best = lib.add(image, box, native_crop_side=1024)
    other = add_distinct(lib, 2)
    line = run(lib)
    assert set(kept_uids()) == {best, other}
    reasons = excluded()
    for uid in burst:
        assert reasons[uid]["reason_key"] == "duplicate"
        assert reasons[uid]["reason"].startswith(f"duplicate of {best}")
    best_row = next(row for row in manifest() if row["marker_uid"] == best)
    assert best_row["duplicates"].split(",") == sorted(burst)
    assert line == "kept 2 of 5 faces: duplicate 3"
    run(lib, {"duplicate_distance": 0}, out="nodedup")
    assert len(kept_uids("nodedup")) > 2


def test_the_same_photo_imported_twice_is_a_duplicate(lib: Library) -> None:
    image, box = distinct_face(2)
    first = lib.add(image, box, number=10)
    second = lib.add(image.copy(), box, number=11)
    run(lib)
    assert kept_uids() == [first]  # equal scores: the smaller UID wins
    assert excluded()[second]["reason"].startswith(f"duplicate of {first}")


def test_group_duplicates_links_chains_and_keeps_rank_order() -> None:
    def face(uid: str, phash: str) -> Face:
        return Face(uid, record={"measurements": {"phash": phash}})

    faces = [face("a", "0000000000000000"), face("b", "00000000000000ff"), face("c", "000000000000ffff"),
             face("d", "ffffffffffffffff")]  # fmt: skip
    groups = group_duplicates(faces, 8)
    assert [[f.marker_uid for f in group] for group in groups] == [["a", "b", "c"], ["d"]]
    assert quality.hamming_distance("0000000000000000", "000000000000ffff") == 16


def test_ranking_prefers_sharper_larger_recent_faces(lib: Library) -> None:
    large = add_distinct(lib, 1, native_crop_side=1024, taken_at="2023-01-01T00:00:00Z")
    medium = add_distinct(lib, 2, native_crop_side=900, taken_at="2023-01-01T00:00:00Z")
    image, box = distinct_face(3)
    softer = lib.add(blurred(image, sigma=1.2), box, native_crop_side=1024, taken_at="2023-01-01T00:00:00Z")
    old = add_distinct(lib, 4, native_crop_side=1024, taken_at="2014-01-01T00:00:00Z")
    run(lib)
    rows = manifest()
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4"]
    order = [row["marker_uid"] for row in rows]
    assert order.index(large) < order.index(medium)
    assert order.index(large) < order.index(softer)
    assert order.index(large) < order.index(old)


def test_equal_scores_are_ordered_by_marker_uid(lib: Library) -> None:
    fixed = {"sharpness": 500.0, "brightness": 128.0, "clipped_dark": 0.0, "clipped_bright": 0.0}
    uids = [add_distinct(lib, seed, number=20 - seed, measurement_overrides=fixed) for seed in (1, 2, 3)]
    run(lib)
    rows = manifest()
    assert len({row["score"] for row in rows}) == 1
    assert kept_uids() == sorted(uids)


def test_top_n_keeps_the_best(lib: Library) -> None:
    sides = {1: 1024, 2: 800, 3: 950, 4: 870}
    uids = {seed: add_distinct(lib, seed, native_crop_side=side) for seed, side in sides.items()}
    run(lib)
    full_order = kept_uids()
    line = run(lib, {"top_n": 2}, out="top2")
    assert kept_uids("top2") == full_order[:2]
    reasons = excluded("top2")
    assert {reasons[uid]["reason_key"] for uid in full_order[2:]} == {"below top_n"}
    assert line == "kept 2 of 4 faces: below top_n 2"
    assert set(uids.values()) == set(full_order)


def test_max_per_day_caps_one_event(lib: Library) -> None:
    wedding = [
        add_distinct(lib, seed, taken_at=f"2023-06-10T1{seed}:00:00Z", native_crop_side=1024 - seed)
        for seed in (1, 2, 3)
    ]
    holiday = add_distinct(lib, 4, taken_at="2023-08-01T09:00:00Z")
    run(lib)
    assert len(kept_uids()) == 4
    best_wedding = next(uid for uid in kept_uids() if uid in wedding)
    line = run(lib, {"max_per_day": 1}, out="capped")
    assert set(kept_uids("capped")) == {best_wedding, holiday}
    assert line == "kept 2 of 4 faces: day cap 2"


# ---------------------------------------------------------------------------------------------------
# Outputs: stability, images folder


def test_every_face_is_listed_once_and_reruns_are_byte_identical(lib: Library) -> None:
    for seed in range(1, 6):
        add_distinct(lib, seed, native_crop_side=700 + 80 * seed)
    image, box = distinct_face(9)
    lib.add(blurred(image, sigma=5), box)
    lib.add(burst_shot(distinct_face(1)[0], 2), distinct_face(1)[1], native_crop_side=700)
    paths, markers, neighbours = lib.write()
    first_line = select(paths, markers, neighbours, {"top_n": 3}, OUT)
    listed = kept_uids() + list(excluded())
    assert sorted(listed) == sorted(f.marker_uid for f in lib.faces)
    first = {name: (Path(OUT) / name).read_bytes() for name in ("manifest.tsv", "excluded.tsv")}
    stamps = {name: (Path(OUT) / name).stat().st_mtime_ns for name in first}

    second_line = select(list(reversed(paths)), markers, neighbours, {"top_n": 3}, OUT)
    assert second_line == first_line
    for name, data in first.items():
        assert (Path(OUT) / name).read_bytes() == data
        assert (Path(OUT) / name).stat().st_mtime_ns == stamps[name]  # unchanged content: not rewritten

    select(list(reversed(paths)), markers, neighbours, {"top_n": 3}, "elsewhere")
    for name, data in first.items():
        assert (Path("elsewhere") / name).read_bytes() == data


def _images(out: str = OUT) -> dict[str, os.stat_result]:
    folder = Path(out) / "images"
    return {p.name: p.stat() for p in folder.iterdir()}


def test_images_folder_holds_exactly_the_selection_as_hard_links(lib: Library) -> None:
    uids = [add_distinct(lib, seed, native_crop_side=1024 - 10 * seed) for seed in range(1, 6)]
    run(lib, {"top_n": 4})
    images = _images()
    assert sorted(images) == sorted(f"{uid}.jpg" for uid in kept_uids())
    for row in manifest():
        linked = Path(OUT) / row["image"]
        assert os.path.samefile(linked, row["crop"])
    (dropped,) = set(uids) - set(kept_uids())
    assert excluded()[dropped]["reason_key"] == "below top_n"
    assert f"{dropped}.jpg" not in images


def test_changing_the_selection_touches_only_the_changed_files(lib: Library) -> None:
    for seed in range(1, 6):
        add_distinct(lib, seed, native_crop_side=1024 - 10 * seed)
    paths, markers, neighbours = lib.write()
    select(paths, markers, neighbours, {"top_n": 4}, OUT)
    order = kept_uids()
    images_dir = Path(OUT) / "images"
    # What later stages leave next to the images: a caption and latent caches.
    caption = images_dir / f"{order[0]}.txt"
    caption.write_text("ohwx person\n")
    stale_cache = images_dir / f"{order[1]}_1024x1024_sdxl.npz"
    stale_cache.write_bytes(b"old latents")
    dropped_cache = images_dir / f"{order[3]}_1024x1024_sdxl.npz"
    dropped_cache.write_bytes(b"old latents")
    interrupted = images_dir / f".{order[0]}.jpg.4242.tmp"
    interrupted.write_bytes(b"half a link")
    before = _images()

    # The crop of order[1] is rewritten (atomically, new inode) with new pixels, and top_n shrinks to 3.
    crop = Path(f"results/crops/{order[1]}.jpg")
    image = cv2.imread(str(crop))
    cv2.rectangle(image, (0, 0), (40, 40), (0, 0, 255), -1)
    tmp = crop.with_suffix(".tmp.jpg")
    cv2.imwrite(str(tmp), image)
    os.replace(tmp, crop)
    record_path = Path(f"results/crops/{order[1]}.json")
    record = json.loads(record_path.read_text())
    record["image_sha256"] = "changed"
    record_path.write_text(json.dumps(record))

    select(paths, markers, neighbours, {"top_n": 3}, OUT)
    after = _images()
    assert f"{order[3]}.jpg" not in after
    assert not dropped_cache.exists()
    untouched = [f"{order[0]}.jpg", f"{order[2]}.jpg"]
    for name in untouched:
        assert after[name].st_ino == before[name].st_ino
        assert after[name].st_mtime_ns == before[name].st_mtime_ns
    replaced = images_dir / f"{order[1]}.jpg"
    assert after[replaced.name].st_ino != before[replaced.name].st_ino
    assert replaced.read_bytes() == crop.read_bytes()
    assert not stale_cache.exists()
    assert caption.read_text() == "ohwx person\n"
    assert not interrupted.exists()
    assert sorted(p for p in after if p.endswith(".jpg")) == sorted(f"{u}.jpg" for u in kept_uids())


def test_copies_when_hard_links_fail_and_keeps_identical_copies(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    uids = [add_distinct(lib, seed) for seed in (1, 2)]
    paths, markers, neighbours = lib.write()

    def refuse(*_args, **_kwargs) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    select(paths, markers, neighbours)
    before = _images()
    for uid in uids:
        copy = Path(OUT) / "images" / f"{uid}.jpg"
        crop = Path(f"results/crops/{uid}.jpg")
        assert not os.path.samefile(copy, crop)
        assert copy.read_bytes() == crop.read_bytes()
    select(paths, markers, neighbours)
    after = _images()
    assert {n: s.st_mtime_ns for n, s in after.items()} == {n: s.st_mtime_ns for n, s in before.items()}


def test_choose_breaks_score_ties_by_marker_uid_whatever_the_input_order() -> None:
    def face(uid: str, phash: str) -> Face:
        return Face(uid, record={"measurements": {"phash": phash}}, score=0.5)

    faces = [face("m3", "ffffffffffffffff"), face("m1", "0000000000000000"), face("m2", "00000000ffffffff")]
    chosen = choose(faces, select_settings({"top_n": 2}))
    assert [f.marker_uid for f in chosen] == ["m1", "m2"]
    assert faces[0].reason_key == "below top_n"


def test_each_kept_faces_row_carries_the_parts_its_score_adds_up_from(lib: Library) -> None:
    from likeness import tables
    from likeness.select.ranking import WEIGHTS

    assert tuple(WEIGHTS) == tables.SCORE_PARTS  # the manifest's score_* columns are the ranking's terms
    sharp = add_distinct(lib, 1)
    smaller = add_distinct(lib, 2, native_crop_side=700)  # kept, but its resolution part is lower
    run(lib, {"min_crop_side": 512})
    rows = {row["marker_uid"]: row for row in manifest()}
    for row in rows.values():
        parts = {part: float(row[f"score_{part}"]) for part in tables.SCORE_PARTS}
        assert abs(sum(parts.values()) - float(row["score"])) <= 6 * 5e-5  # each part rounded to 4 places
        assert all(0 <= parts[part] <= WEIGHTS[part] + 1e-9 for part in parts)
    assert float(rows[smaller]["score_resolution"]) == pytest.approx(0.25 * 700 / 1024, abs=1e-4)
    assert float(rows[sharp]["score_resolution"]) > float(rows[smaller]["score_resolution"])
