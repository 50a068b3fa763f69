"""The report's figures (contact sheets, charts, estimate, loss curve, samples) and the report itself."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.images import COLOURS, solid_png, textured_jpeg
from fixtures.stage_inputs import write_table
from fixtures.tb_events import write_events
from fixtures.training import sample_name
from likeness.report import charts, dataset, estimate_page, sheets, summary_page, text, training_figures
from likeness.tables import EXCLUDED_COLUMNS, MANIFEST_COLUMNS

SVG = "{http://www.w3.org/2000/svg}"


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def _colour_mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.array(colour, dtype=np.uint8), axis=2)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the True pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _is_background(region: np.ndarray) -> np.ndarray:
    return _colour_mask(region, sheets.BACKGROUND)


def _fitted_lines(captions: list[list[str]], tile: int) -> int:
    """How many text lines a sheet gives each cell: long labels wrap (likeness.report.text.fit_lines)."""
    size = text.font_size(sheets.line_height_of(tile))
    return max(len(text.fit_lines(lines, tile, size)) for lines in captions)


def _ink(region: np.ndarray) -> int:
    """Pixels of (anti-aliased) text: much darker than the background and the placeholder grey."""
    return int((region.astype(int).sum(axis=2) < 3 * 120).sum())


# ---------------------------------------------------------------------------------------------------
# contact_sheet


def test_sheet_places_every_tile_once_in_order(tmp_path):
    tile, columns = 48, 3
    paths = [solid_png(tmp_path / f"c{i}.png", colour) for i, colour in enumerate(COLOURS)]
    tiles = [(path, [f"tile {i}", "second line"]) for i, path in enumerate(paths)]
    size = sheets.contact_sheet(tiles, tmp_path / "sheet.png", columns=columns, tile=tile)
    sheet = _read(tmp_path / "sheet.png")
    assert size == (sheet.shape[1], sheet.shape[0])

    layout = sheets.sheet_layout(len(tiles), columns, tile, lines=2)
    assert (layout.width, layout.height) == size
    origins = []
    for index, colour in enumerate(COLOURS):
        mask = _colour_mask(sheet, colour)
        # Each colour fills exactly one whole tile: nothing clipped, nothing drawn over it.
        assert mask.sum() == tile * tile
        x, y, w, h = _bbox(mask)
        assert (w, h) == (tile, tile)
        assert (x, y) == layout.image_origin(index)
        origins.append((y, x))
    # Row-major order: 7 tiles in 3 columns give 3 rows.
    assert origins == sorted(origins)
    assert len({y for y, _ in origins}) == 3 and len({x for _, x in origins}) == columns


def test_sheet_grows_by_one_tile_per_column_and_row(tmp_path):
    path = solid_png(tmp_path / "c.png", COLOURS[0])
    sizes = {}
    for count in (1, 2, 4, 5):
        sizes[count] = sheets.contact_sheet([(path, ["x"])] * count, tmp_path / f"s{count}.png", columns=4, tile=40)
    column_step = sizes[2][0] - sizes[1][0]
    assert column_step > 40  # a tile plus a gap
    assert sizes[4][0] == sizes[1][0] + 3 * column_step
    assert sizes[5][0] == sizes[4][0]  # the fifth tile wraps
    assert sizes[4][1] == sizes[1][1]
    assert sizes[5][1] > sizes[4][1] + 40


def test_tile_pixels_are_the_resized_crop(tmp_path):
    crop = textured_jpeg(tmp_path / "crop.jpg", seed=3, side=300)
    tile = 120
    sheets.contact_sheet([(crop, ["#1"])], tmp_path / "sheet.png", columns=4, tile=tile)
    sheet = _read(tmp_path / "sheet.png")
    x, y = sheets.sheet_layout(1, 4, tile, lines=1).image_origin(0)
    expected = cv2.resize(_read(crop), (tile, tile), interpolation=cv2.INTER_AREA)
    assert np.array_equal(sheet[y : y + tile, x : x + tile], expected)


def test_wide_crop_is_letterboxed_in_the_middle(tmp_path):
    crop = solid_png(tmp_path / "wide.png", COLOURS[1], side=200, height=100)
    tile = 80
    sheets.contact_sheet([(crop, [])], tmp_path / "sheet.png", columns=1, tile=tile)
    sheet = _read(tmp_path / "sheet.png")
    x, y = sheets.sheet_layout(1, 1, tile).image_origin(0)
    bx, by, bw, bh = _bbox(_colour_mask(sheet, COLOURS[1]))
    assert (bw, bh) == (tile, tile // 2)
    assert (bx, by) == (x, y + (tile - tile // 2) // 2)


def test_caption_text_is_drawn_under_each_tile(tmp_path):
    paths = [solid_png(tmp_path / f"c{i}.png", COLOURS[i]) for i in range(3)]
    tiles = [(paths[0], ["#1  0.93", "2021-05-02"]), (paths[1], []), (paths[2], ["#3"])]
    sheets.contact_sheet(tiles, tmp_path / "sheet.png", columns=3, tile=64)
    sheet = _read(tmp_path / "sheet.png")
    layout = sheets.sheet_layout(3, 3, 64, lines=2)
    inked = []
    for index in range(3):
        x, y, w, h = layout.text_box(index)
        inked.append(int((~_is_background(sheet[y : y + h, x : x + w])).sum()))
    assert inked[0] > 0 and inked[2] > 0
    assert inked[1] == 0  # no lines, no ink
    # Two lines hold more ink than one.
    assert inked[0] > inked[2]


def test_missing_image_gives_a_placeholder_with_its_note(tmp_path):
    tiles = [(None, ["photo missing"], "photo missing on disk"), (tmp_path / "absent.jpg", ["gone"])]
    sheets.contact_sheet(tiles, tmp_path / "sheet.png", columns=2, tile=96)
    sheet = _read(tmp_path / "sheet.png")
    layout = sheets.sheet_layout(2, 2, 96, lines=1)
    for index in range(2):
        x, y = layout.image_origin(index)
        square = sheet[y : y + 96, x : x + 96]
        grey = _colour_mask(square, sheets.PLACEHOLDER).sum()
        assert grey > 96 * 96 // 2
        assert _ink(square) > 0


def test_blank_cells_stay_empty(tmp_path):
    path = solid_png(tmp_path / "c.png", COLOURS[0])
    sheets.contact_sheet([(None, []), (path, ["x"])], tmp_path / "sheet.png", columns=2, tile=40)
    sheet = _read(tmp_path / "sheet.png")
    x, y = sheets.sheet_layout(2, 2, 40, lines=1).image_origin(0)
    assert _is_background(sheet[y : y + 40, x : x + 40]).all()


def test_sheet_is_deterministic_and_not_rewritten(tmp_path):
    crop = textured_jpeg(tmp_path / "crop.jpg", seed=5)
    tiles = [(crop, ["Zoë O'Brien", "a caption far too long to fit under a small tile at all"])]
    out = tmp_path / "sheet.png"
    sheets.contact_sheet(tiles, out, tile=64)
    first, mtime = out.read_bytes(), out.stat().st_mtime_ns
    sheets.contact_sheet(tiles, out, tile=64)
    assert out.read_bytes() == first
    assert out.stat().st_mtime_ns == mtime
    other = tmp_path / "other.png"
    sheets.contact_sheet(tiles, other, tile=64)
    assert other.read_bytes() == first


def test_labels_shrink_then_wrap_and_lose_no_character():
    size, width = 12, 100
    assert text.fit_line("ok", width, size) == [("ok", size)]
    slightly = "m" * 10  # a little too wide at 12 px: drawn smaller on one line
    assert text.text_width(slightly, size) > width
    ((line, smaller),) = text.fit_line(slightly, width, size)
    assert line == slightly and smaller < size and text.text_width(line, smaller) <= width
    long = "unreadable: photo missing on disk: originals/2017/07/IMG_1008.jpg"
    wrapped = text.fit_line(long, width, size)
    assert len(wrapped) > 1
    assert all(text.text_width(part, part_size) <= width for part, part_size in wrapped)
    assert "".join(part for part, _ in wrapped).replace(" ", "") == long.replace(" ", "")
    assert text.clean("Zoë\tO’Brien\n李\x07") == "Zoë O’Brien 李?"


def test_non_ascii_names_are_drawn_with_their_own_letters(tmp_path):
    def ink(name: str) -> np.ndarray:
        sheets.contact_sheet([(None, [name], "x")], tmp_path / "sheet.png", columns=1, tile=96)
        sheet = _read(tmp_path / "sheet.png")
        x, y, w, h = sheets.sheet_layout(1, 1, 96, lines=1).text_box(0)
        return sheet[y : y + h, x : x + w]

    plain, accented, chinese = ink("Zoe"), ink("Zoë"), ink("李")
    assert not np.array_equal(plain, accented)  # the diaeresis is drawn, not dropped
    assert _ink(chinese) > 0 and not np.array_equal(chinese, ink("?"))


def test_long_tile_labels_are_wrapped_not_cut(tmp_path):
    uid = "pt7qk3zxm2abcdefghij0123456789"
    rows = [(None, ["#1  0.9312", uid], "crop missing"), (None, ["#2"], "crop missing")]
    sheets.contact_sheet(rows, tmp_path / "sheet.png", columns=2, tile=64)
    fitted = text.fit_lines(["#1  0.9312", uid], 64, text.font_size(sheets.line_height_of(64)))
    assert "".join(line for line, _ in fitted[1:]) == uid  # every character of the uid is drawn
    layout = sheets.sheet_layout(2, 2, 64, lines=len(fitted))
    assert _read(tmp_path / "sheet.png").shape[:2] == (layout.height, layout.width)


# ---------------------------------------------------------------------------------------------------
# selected and excluded sheets


def _manifest_rows(tmp_path: Path, count: int) -> list[dict[str, str]]:
    rows = []
    for index in range(count):
        uid = f"m{index:02d}"
        crop = solid_png(tmp_path / "results" / "crops" / f"{uid}.png", COLOURS[index])
        rows.append({
            "rank": str(index + 1), "marker_uid": uid, "score": f"{0.9 - index / 100:.4f}",
            "crop": str(crop.relative_to(tmp_path)), "taken_at": f"2021-0{index + 1}-02T10:00:00Z",
        })  # fmt: skip
    return rows


def test_selected_sheet_is_in_rank_order(tmp_path):
    rows = _manifest_rows(tmp_path, 5)
    manifest = write_table(tmp_path / "manifest.tsv", MANIFEST_COLUMNS, [rows[i] for i in (3, 0, 4, 2, 1)])
    out = tmp_path / "selected.png"
    size = dataset.selected_sheet(manifest, out, columns=3, tile=48, root=tmp_path)
    sheet = _read(out)
    assert size == (sheet.shape[1], sheet.shape[0])
    layout = sheets.sheet_layout(5, 3, 48, lines=3, title="training set: 5 faces in rank order")
    assert (layout.width, layout.height) == size
    for rank in range(5):
        mask = _colour_mask(sheet, COLOURS[rank])
        assert mask.sum() == 48 * 48
        assert _bbox(mask)[:2] == layout.image_origin(rank)


def test_selected_tiles_carry_rank_score_date_and_placeholder_for_missing_crop(tmp_path):
    rows = _manifest_rows(tmp_path, 2)
    rows[1]["crop"] = "results/crops/not-there.jpg"
    tiles = dataset.selected_tiles(rows, root=tmp_path)
    assert tiles[0].lines == ["#1  0.9000", "2021-01-02", "m00"]
    assert tiles[0].path == tmp_path / rows[0]["crop"]
    sheets.contact_sheet(tiles, tmp_path / "s.png", tile=48)
    sheet = _read(tmp_path / "s.png")
    x, y = sheets.sheet_layout(2, 8, 48, lines=3).image_origin(1)
    assert _colour_mask(sheet[y : y + 48, x : x + 48], sheets.PLACEHOLDER).sum() > 48 * 48 // 2


def _excluded_rows(tmp_path: Path) -> list[dict[str, str]]:
    crops = tmp_path / "crops"
    rows = [
        {"marker_uid": "a1", "reason_key": "too small", "reason": "too small: native crop 601 px < 768",
         "score": "0.5", "crop": str(solid_png(crops / "a1.png", COLOURS[0]))},
        {"marker_uid": "a2", "reason_key": "too small", "reason": "too small: native crop 640 px < 768",
         "score": "0.7", "crop": str(solid_png(crops / "a2.png", COLOURS[1]))},
        {"marker_uid": "a3", "reason_key": "too small", "reason": "too small: native crop 700 px < 768",
         "score": "0.6", "crop": str(solid_png(crops / "a3.png", COLOURS[2]))},
        {"marker_uid": "b1", "reason_key": "unreadable", "reason": "unreadable: photo missing on disk: x.jpg",
         "crop": ""},
        {"marker_uid": "b2", "reason_key": "unreadable", "reason": "unreadable: export: photo archived",
         "crop": ""},
        {"marker_uid": "c1", "reason_key": "below top_n", "reason": "below top_n: rank 61 > 60",
         "score": "0.8", "crop": str(solid_png(crops / "c1.png", COLOURS[3]))},
    ]  # fmt: skip
    return rows


def test_excluded_sheets_one_per_reason_with_safe_names(tmp_path):
    excluded = write_table(tmp_path / "excluded.tsv", EXCLUDED_COLUMNS, _excluded_rows(tmp_path))
    out_dir = tmp_path / "report" / "excluded"
    out_dir.mkdir(parents=True)
    (out_dir / "excluded_day-cap.png").write_bytes(b"stale")
    paths = dataset.excluded_sheets(excluded, out_dir, columns=4, tile=48)
    names = [path.name for path in paths]
    # Reasons in the selection's order; the stale sheet of a reason that no longer occurs is gone.
    assert names == ["excluded_unreadable.png", "excluded_too-small.png", "excluded_below-top-n.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)

    small = _read(out_dir / "excluded_too-small.png")
    too_small = [row for row in _excluded_rows(tmp_path) if row["reason_key"] == "too small"]
    lines = _fitted_lines([tile.lines for tile in dataset.excluded_tiles(too_small)], 48)
    layout = sheets.sheet_layout(3, 4, 48, lines=lines, title="excluded, too small: 3 faces")
    assert small.shape[:2] == (layout.height, layout.width)
    # Best score first: a2 (0.7), a3 (0.6), a1 (0.5).
    for position, colour in enumerate([COLOURS[1], COLOURS[2], COLOURS[0]]):
        assert _bbox(_colour_mask(small, colour))[:2] == layout.image_origin(position)

    unreadable = _read(out_dir / "excluded_unreadable.png")
    layout = sheets.sheet_layout(2, 4, 48, lines=3, title="excluded, unreadable: 2 faces")
    for position in range(2):
        x, y = layout.image_origin(position)
        square = unreadable[y : y + 48, x : x + 48]
        assert _colour_mask(square, sheets.PLACEHOLDER).sum() > 48 * 48 // 3
        assert _ink(square) > 0


def test_excluded_tile_text_drops_the_reason_key(tmp_path):
    tiles = dataset.excluded_tiles(_excluded_rows(tmp_path)[:1])
    assert tiles[0].lines[0] == "native crop 601 px < 768"


def test_excluded_sheet_caps_its_tiles(tmp_path):
    excluded = write_table(tmp_path / "excluded.tsv", EXCLUDED_COLUMNS, _excluded_rows(tmp_path)[:3])
    dataset.excluded_sheets(excluded, tmp_path / "out", columns=8, tile=48, limit=2)
    sheet = _read(tmp_path / "out" / "excluded_too-small.png")
    assert _colour_mask(sheet, COLOURS[1]).sum() == 48 * 48
    assert _colour_mask(sheet, COLOURS[2]).sum() == 48 * 48
    assert _colour_mask(sheet, COLOURS[0]).sum() == 0  # the lowest score is left out


SLUGS = [
    ("too small", "too-small"),
    ("below top_n", "below-top-n"),
    ("not named by hand", "not-named-by-hand"),
    ("../x", "x"),
    ("", "other"),
]


@pytest.mark.parametrize(("key", "slug"), SLUGS)
def test_reason_slug(key, slug):
    assert dataset.reason_slug(key) == slug


# ---------------------------------------------------------------------------------------------------
# SVG charts


def _bars(svg_path: Path) -> list[tuple[str, int, float]]:
    root = ET.parse(svg_path).getroot()
    return [
        (rect.get("data-label"), int(rect.get("data-count")), float(rect.get("width")))
        for rect in root.iter(f"{SVG}rect")
        if rect.get("class") == "bar"
    ]


def test_reasons_chart_one_bar_per_reason_with_counts(tmp_path):
    excluded = write_table(tmp_path / "excluded.tsv", EXCLUDED_COLUMNS, _excluded_rows(tmp_path))
    counts = dataset.reasons_chart(excluded, tmp_path / "reasons.svg")
    bars = _bars(tmp_path / "reasons.svg")
    assert [(label, count) for label, count, _ in bars] == counts
    assert counts == [("unreadable", 2), ("too small", 3), ("below top_n", 1)]
    widths = {label: width for label, _, width in bars}
    assert widths["too small"] == pytest.approx(3 * widths["below top_n"], rel=0.01)
    text = (tmp_path / "reasons.svg").read_text()
    assert "6 in all" in text


def test_reasons_chart_without_exclusions(tmp_path):
    excluded = write_table(tmp_path / "excluded.tsv", EXCLUDED_COLUMNS, [])
    assert dataset.reasons_chart(excluded, tmp_path / "reasons.svg") == []
    assert _bars(tmp_path / "reasons.svg") == []
    assert "no face was excluded" in (tmp_path / "reasons.svg").read_text()


def test_tags_chart_counts_tags_after_trigger_and_class(tmp_path):
    captions = [
        "ohwx, woman, glasses, smile, hat",
        "ohwx, woman, glasses, smile",
        "ohwx, woman, glasses, <b>&amp</b>",
        "ohwx, woman",
        "ohwx, woman, glasses, glasses",  # a repeated tag counts once per caption
    ]
    path = tmp_path / "captions.tsv"
    path.write_text("marker_uid\tcaption\n" + "".join(f"m{i}\t{c}\n" for i, c in enumerate(captions)))
    counts = dataset.tags_chart(path, tmp_path / "tags.svg", top=3)
    assert counts == [("glasses", 4), ("smile", 2), ("<b>&amp</b>", 1)]
    bars = _bars(tmp_path / "tags.svg")  # parses: the markup in a tag is escaped
    assert [(label, count) for label, count, _ in bars] == counts
    labels = {label for label, _, _ in bars}
    assert "ohwx" not in labels and "woman" not in labels


def test_tags_chart_of_the_standin_tagger_says_its_tags_mean_nothing(tmp_path):
    captions = tmp_path / "captions.tsv"
    captions.write_text("marker_uid\tcaption\nm1\tohwx, woman, tag_017\n")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"model": "offline stand-in (its tags mean nothing)", "captioned": 1}))
    dataset.tags_chart(captions, tmp_path / "standin.svg", stats_json=stats)
    (note,) = [el.text for el in ET.parse(tmp_path / "standin.svg").getroot().iter(f"{SVG}text")
               if el.get("class") == "note"]  # fmt: skip
    assert note == dataset.STANDIN_NOTE
    stats.write_text(json.dumps({"model": "SmilingWolf/wd-eva02-large-tagger-v3@abcdef1234", "captioned": 1}))
    dataset.tags_chart(captions, tmp_path / "real.svg", stats_json=stats)
    assert 'class="note"' not in (tmp_path / "real.svg").read_text()
    dataset.tags_chart(captions, tmp_path / "no-stats.svg", stats_json=tmp_path / "missing.json")
    assert 'class="note"' not in (tmp_path / "no-stats.svg").read_text()


# ---------------------------------------------------------------------------------------------------
# estimate


def _status_with_estimate(tmp_path: Path, **estimate: object) -> Path:
    record = {
        "gpu": "NVIDIA H100 80GB HBM3", "total_steps": 2800, "steps_per_epoch": 280, "epochs": 10,
        "seconds_per_step": 0.61, "total_hours": 1.75, "cost": 4.2, "resolution": 1024,
        "overhead_seconds": {"model loading": 60.0, "latent caching": 9.0, "saving": 90.0},
        "budget_warning": None, "lines": ["training estimate (...)"], **estimate,
    }  # fmt: skip
    status = {"state": "ready", "run_dir": "results/train/run-1", "estimate": record}
    (tmp_path / "status.json").write_text(json.dumps(status))
    return tmp_path / "status.json"


def test_estimate_html_shows_the_numbers_currency_overheads_and_budget(tmp_path):
    status = _status_with_estimate(tmp_path, warning="settings may not fit in 24 GB <check>")
    rows = dict(estimate_page.estimate_html(status, tmp_path / "estimate.html", "EUR", 2.0))
    page = (tmp_path / "estimate.html").read_text()
    for number in ("2800", "280", "10", "0.61", "1024", "NVIDIA H100 80GB HBM3"):
        assert f"<td>{number}" in page
    assert rows["Estimated time"] == "1.75 h (1 h 45 min)"
    assert rows["Estimated cost"] == "4.20 EUR"
    assert rows["Overhead: model loading"] == "1.0 min"
    assert rows["Overhead: latent caching"] == "0.1 min"
    assert rows["Overhead: saving"] == "1.5 min"
    assert rows["Overhead in all"] == "2.6 min"
    assert rows["Budget"] == "2 GPU hours (train.max_gpu_hours): the estimate fits (0.25 h to spare)"
    assert rows["Resolution"] == "1024"  # keys it does not know are shown too
    assert rows["Training"] == "ready in results/train/run-1/"
    assert "Lines" not in rows and "Overhead seconds" not in rows
    assert "settings may not fit in 24 GB &lt;check&gt;" in page
    assert "<check>" not in page


def test_estimate_html_says_when_the_budget_does_not_fit(tmp_path):
    status = _status_with_estimate(tmp_path, budget_warning="estimated 1.75 GPU hours exceeds 1")
    rows = dict(estimate_page.estimate_html(status, tmp_path / "estimate.html", "USD", 1.0))
    assert rows["Estimated cost"] == "4.20 USD"
    assert rows["Budget"] == "1 GPU hours (train.max_gpu_hours): the estimate does not fit: 0.75 h over"
    assert "estimated 1.75 GPU hours exceeds 1" in (tmp_path / "estimate.html").read_text()
    rows = dict(estimate_page.estimate_html(status, tmp_path / "estimate.html", "USD", 0.0))
    assert rows["Budget"] == "no limit (train.max_gpu_hours 0)"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", None])
def test_estimate_html_survives_bad_input(tmp_path, content):
    source = tmp_path / "estimate.json"
    if content is not None:
        source.write_text(content)
    assert estimate_page.estimate_html(source, tmp_path / "estimate.html", "USD", 4.0) == []
    page = (tmp_path / "estimate.html").read_text()
    assert 'class="warning"' in page and "estimate" in page


# ---------------------------------------------------------------------------------------------------
# loss and learning rate (TensorBoard event files in the run folder)


def test_loss_chart_draws_loss_average_and_learning_rate_by_step(tmp_path):
    losses = [0.1 + 0.05 / step for step in range(1, 41)]
    write_events(tmp_path / "run" / "logs" / "20260101000000" / "network_train", {
        "loss/current": list(enumerate(losses, 1)),
        "loss/average": [(step, 0.12) for step in range(1, 41)],
        "lr/unet": [(step, 1e-4 * (1 - step / 80)) for step in range(1, 41)],
    })  # fmt: skip
    points, why = training_figures.loss_chart(tmp_path / "run", tmp_path / "loss.svg")
    assert (points, why) == (40, "")
    root = ET.parse(tmp_path / "loss.svg").getroot()
    lines = {el.get("class"): el for el in root.iter(f"{SVG}polyline")}
    assert set(lines) == {"loss", "loss-average", "lr"}
    assert lines["lr"].get("data-name") == "lr/unet"
    vertices = [tuple(map(float, pair.split(","))) for pair in lines["loss"].get("points").split()]
    assert len(vertices) == 40
    xs = [x for x, _ in vertices]
    ys = [y for _, y in vertices]
    assert xs == sorted(xs) and len(set(xs)) == 40
    assert ys == sorted(ys)  # loss falls, so y (downwards in SVG) grows
    rates = [tuple(map(float, pair.split(","))) for pair in lines["lr"].get("points").split()]
    assert [x for x, _ in rates] == xs  # one step axis for both panels


def test_loss_chart_of_a_run_without_event_files_says_so(tmp_path):
    (tmp_path / "run").mkdir()
    points, why = training_figures.loss_chart(tmp_path / "run", tmp_path / "loss.svg")
    assert points == 0 and "no TensorBoard event files" in why
    page = (tmp_path / "loss.svg").read_text()
    assert "no TensorBoard event files" in page and "polyline" not in page
    ET.parse(tmp_path / "loss.svg")


def test_loss_chart_with_a_damaged_event_file_says_so(tmp_path):
    folder = tmp_path / "run" / "logs"
    write_events(folder, {"loss/current": [(1, 0.2), (2, 0.1)]})
    (event_file,) = folder.glob("events.out.tfevents.*")
    data = bytearray(event_file.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's payload: its checksum no longer matches
    event_file.write_bytes(bytes(data))
    points, why = training_figures.loss_chart(tmp_path / "run", tmp_path / "loss.svg")
    assert points == 0 and "could not be read" in why
    assert "could not be read" in (tmp_path / "loss.svg").read_text()


def test_the_training_doubles_event_files_give_the_loss_chart(tmp_path):
    import subprocess
    import sys

    from fixtures.training import DOUBLES, make_images

    make_images(tmp_path / "images", 3, size=64, captions=False)
    run = tmp_path / "run"
    (tmp_path / "dataset.toml").write_text(
        f'[general]\nresolution = 64\n\n[[datasets]]\n\n[[datasets.subsets]]\n'
        f'image_dir = "{tmp_path / "images"}"\nnum_repeats = 2\n'
    )  # fmt: skip
    (tmp_path / "train.toml").write_text(
        f'[saving]\noutput_dir = "{run / "output"}"\nlogging_dir = "{run / "logs"}"\n'
        "[training]\nmax_train_epochs = 2\nnetwork_train_unet_only = true\nunet_lr = 0.0002\n"
    )  # fmt: skip
    command = [sys.executable, str(DOUBLES / "sdxl_train_network.py"), "--config_file", str(tmp_path / "train.toml"),
               "--dataset_config", str(tmp_path / "dataset.toml")]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    points, why = training_figures.loss_chart(run, tmp_path / "loss.svg")
    assert (points, why) == (12, "")  # 3 images x 2 repeats, batch 1, 2 epochs
    series, _ = training_figures.training_series(run)
    assert [step for step, _ in series["loss/current"]] == list(range(1, 13))
    assert [value for _, value in series["lr/unet"]] == pytest.approx([0.0002] * 12)


def test_nice_ticks_are_round_and_cover_the_range():
    for low, high in [(0.0731, 0.1962), (0, 4000), (1, 37), (0.5, 0.52)]:
        ticks = charts.nice_ticks(low, high, count=5)
        assert low <= ticks[0] and ticks[-1] <= high
        assert 3 <= len(ticks) <= 11
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** np.floor(np.log10(step))
        assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6
        assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(ticks))
        # Round: every tick is a whole multiple of the step.
        assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)
    assert charts.nice_ticks(1, 1) == [1]


# ---------------------------------------------------------------------------------------------------
# samples


def test_parse_sample_name_both_forms():
    by_epoch = training_figures.parse_sample_name(sample_name(3, 1, "20240101120000"))
    assert (by_epoch.by_epoch, by_epoch.number, by_epoch.prompt, by_epoch.label) == (True, 3, 1, "epoch 3")
    by_step = training_figures.parse_sample_name(sample_name(120, 0, "20240101120000", by_epoch=False, seed=42))
    assert (by_step.by_epoch, by_step.number, by_step.prompt, by_step.label) == (False, 120, 0, "step 120")
    bare = training_figures.parse_sample_name(sample_name(0, 2, "20240101120000", output_name=""))
    assert (bare.number, bare.prompt, bare.label) == (0, 2, "before training")
    assert training_figures.parse_sample_name("ohwx_lora-000001.safetensors") is None
    assert training_figures.parse_sample_name("notes.png") is None


def test_samples_sheet_one_row_per_epoch_newest_wins(tmp_path):
    folder = tmp_path / "output" / "sample"
    expected = {}
    for epoch in (0, 1, 2):
        for prompt in (0, 1):
            colour = COLOURS[epoch * 2 + prompt]
            solid_png(folder / sample_name(epoch, prompt, f"2024010100000{epoch}"), colour, side=64)
            expected[(epoch, prompt)] = colour
    # A resumed run sampled epoch 1 prompt 0 again, later: that image wins.
    solid_png(folder / sample_name(1, 0, "20240102000000"), COLOURS[6], side=64)
    expected[(1, 0)] = COLOURS[6]
    (folder / "readme.txt").write_text("not a sample")
    # Epoch 3 has only prompt 1: its prompt-0 cell stays blank and prompt 1 keeps its column.
    solid_png(folder / sample_name(3, 1, "20240103000000"), (30, 30, 30), side=64)

    groups = training_figures.sample_groups(folder)
    assert [label for label, _ in groups] == ["before training", "epoch 1", "epoch 2", "epoch 3"]
    assert training_figures.samples_sheet(folder, tmp_path / "samples.png", tile=40) == 4
    sheet = _read(tmp_path / "samples.png")
    captions = [[label, f"prompt {prompt}"] for label, _ in groups for prompt in (0, 1)]
    layout = sheets.sheet_layout(8, 2, 40, lines=_fitted_lines(captions, 40), title="samples by epoch (4 rounds)")
    assert sheet.shape[:2] == (layout.height, layout.width)
    for (epoch, prompt), colour in expected.items():
        assert _bbox(_colour_mask(sheet, colour))[:2] == layout.image_origin(epoch * 2 + prompt)
    assert _colour_mask(sheet, COLOURS[2]).sum() == 0  # the older epoch-1 sample is not shown
    x, y = layout.image_origin(6)
    assert _is_background(sheet[y : y + 40, x : x + 40]).all()
    assert _bbox(_colour_mask(sheet, (30, 30, 30)))[:2] == layout.image_origin(7)


def test_samples_sheet_without_samples(tmp_path):
    assert training_figures.samples_sheet(tmp_path / "missing", tmp_path / "samples.png") == 0
    assert _read(tmp_path / "samples.png").size > 0


# ---------------------------------------------------------------------------------------------------
# Snakemake's report, through the CLI on a temporary copy of the workflow


@pytest.mark.snakemake
def test_snakemake_report_includes_every_figure(tmp_path):
    from fixtures.library import build_small_library, write_sqlite
    from fixtures.runs import copy_workflow, snakemake, write_config

    library = build_small_library(tmp_path / "library")
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    lenient = {"min_crop_side": 64, "min_sharpness": 0, "max_other_face_share": 1.0, "duplicate_distance": 0,
               "brightness_min": 0, "brightness_max": 255, "max_clipped_share": 1.0}  # fmt: skip
    write_config(workdir, library.root, select={**lenient, "top_n": 2})
    snakefile = workdir / "Snakefile"
    include = 'include: "workflow/rules/report.smk"'
    if include not in snakefile.read_text():
        snakefile.write_text(snakefile.read_text() + f"\n\n{include}\n")

    # What the caption and training stages would have written.
    captions = workdir / "results" / "captions" / "captions.tsv"
    captions.parent.mkdir(parents=True)
    captions.write_text("marker_uid\tcaption\nm1\tohwx, woman, glasses, smile\nm2\tohwx, woman, glasses\n")
    (captions.parent / "stats.json").write_text(json.dumps({"model": "offline stand-in (its tags mean nothing)"}))
    estimate = workdir / "results" / "train" / "estimate.json"
    estimate.parent.mkdir(parents=True)
    estimate.write_text(json.dumps({"gpu": "RTX 4090", "total_steps": 400, "hours": 0.16}))
    (workdir / "results" / "train" / "lora.safetensors").write_bytes(b"weights")
    samples = workdir / "results" / "train" / "output" / "sample"
    solid_png(samples / sample_name(1, 0, "20240101000000"), COLOURS[0], side=64)

    targets = [
        "results/report/selected.png", "results/report/excluded", "results/report/exclusion_reasons.svg",
        "results/report/caption_tags.svg", "results/report/estimate.html", "results/report/loss.svg",
        "results/report/samples.png", "results/report/summary.html", "results/report/selected_scores.html",
        "results/report/intro.rst",
    ]  # fmt: skip
    snakemake(workdir, "--cores", "2", *targets)
    sheets = sorted(p.name for p in (workdir / "results" / "report" / "excluded").glob("*.png"))
    assert "excluded_below-top-n.png" in sheets

    result = snakemake(workdir, "--report", "report.html", *targets)
    page = (workdir / "report.html").read_text()
    log = result.stdout + result.stderr
    for name in ["selected.png", *sheets, "exclusion_reasons.svg", "caption_tags.svg", "estimate.html",
                 "loss.svg", "samples.png", "summary.html", "selected_scores.html"]:  # fmt: skip
        assert f"Adding {name}" in log
        assert name in page
    assert "The training set in rank order" in page  # a caption from workflow/report/
    assert "marker uid of PhotoPrism (search it there" in page  # the caption names the export's manager
    # The report opens on the run's facts, naming the manager the export came from (this library's is
    # PhotoPrism: the template itself names none).
    intro = (workdir / "results" / "report" / "intro.rst").read_text()
    assert "face markers of one person in |source| into" in intro and ".. |source| replace:: PhotoPrism" in intro
    assert "* **Faces**: kept 2 of " in intro and "* **Source**: PhotoPrism" in intro
    assert "face markers of one person in PhotoPrism into a personal SDXL LoRA" in page
    assert "Chosen epoch" in page and "none chosen yet" in page
    manifest = dataset.read_tsv(workdir / "results" / "dataset" / "manifest.tsv")
    scores = (workdir / "results" / "report" / "selected_scores.html").read_text()
    for row in manifest:  # every selected face's score parts, as the selection wrote them
        assert row["score_sharpness"] and f"<td>{row['marker_uid']}</td>" in scores
        assert f'<td class="n">{row["score_resolution"]}</td>' in scores
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)


def test_selected_tiles_show_the_identity_distance_when_measured(tmp_path):
    rows = [
        {
            "rank": "1",
            "score": "0.9",
            "taken_at": "2021-01-02T00:00:00Z",
            "marker_uid": "m1",
            "identity_distance": "0.2345",
        }
    ]
    assert dataset.selected_tiles(rows, root=tmp_path)[0].lines == ["#1  0.9", "2021-01-02  id 0.23", "m1"]


def test_pose_chart_counts_the_bins(tmp_path):
    rows = [
        {"yaw": "2", "pitch": "-3"},
        {"yaw": "-30", "pitch": "0"},
        {"yaw": "40", "pitch": "20"},
        {"yaw": "1", "pitch": "1"},
        {"yaw": "", "pitch": ""},
    ]
    assert dataset.pose_counts(rows) == [
        ("frontal, level", 2),
        ("turned left, level", 1),
        ("turned right, down", 1),
        ("unknown", 1),
    ]
    manifest = write_table(tmp_path / "manifest.tsv", ["marker_uid", "yaw", "pitch"], [
        {"marker_uid": f"m{i}", **row} for i, row in enumerate(rows)
    ])  # fmt: skip
    dataset.pose_chart(manifest, tmp_path / "poses.svg")
    svg = (tmp_path / "poses.svg").read_text()
    assert 'data-label="turned left, level" data-count="1"' in svg and "Head poses of the training set (5 faces)" in svg


def test_headshot_grid_marks_the_chosen_epoch_and_every_score(tmp_path):
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    record = {
        "epoch": 2,
        "prompts": ["a", "b"],
        "scores": {
            "1": {"median": 0.4, "images": [{"path": str(image), "distance": 0.4, "note": ""},
                                             {"path": str(image), "distance": None, "note": "no face found"}]},
            "2": {"median": 0.1, "images": [{"path": str(image), "distance": 0.1, "note": ""},
                                             {"path": str(image), "distance": 0.12, "note": ""}]},
        },
    }  # fmt: skip
    tiles, columns = training_figures.headshot_tiles(record)
    assert columns == 2 and len(tiles) == 4
    assert tiles[1].lines == ["epoch 1", "prompt 2: no face found", "median 0.400"]
    assert tiles[2].lines == ["epoch 2 CHOSEN", "prompt 1: d 0.100", "median 0.100"]
    best = tmp_path / "best.json"
    best.write_text(json.dumps(record))
    assert training_figures.headshots_sheet(best, tmp_path / "grid.png", tile=64) == 2
    assert cv2.imread(str(tmp_path / "grid.png")) is not None


def test_the_selected_sheet_hatches_a_masked_faces_mask(tmp_path):
    from likeness.select import masks

    rows = _manifest_rows(tmp_path, 2)
    images = tmp_path / "images"
    images.mkdir()
    # m01 was kept by masking: its dataset image is a PNG whose alpha masks the right half.
    crop = tmp_path / rows[1]["crop"]
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[:, 32:] = 0
    jpeg = tmp_path / "m01.jpg"
    cv2.imwrite(str(jpeg), cv2.imread(str(crop)), [cv2.IMWRITE_JPEG_QUALITY, 100])
    (images / "m01.png").write_bytes(masks.masked_png(str(jpeg), cv2.resize(alpha, cv2.imread(str(jpeg)).shape[1::-1])))
    rows[0]["image"], rows[1]["image"] = "images/m00.jpg", "images/m01.png"
    manifest = write_table(tmp_path / "manifest.tsv", MANIFEST_COLUMNS, rows)
    out = tmp_path / "selected.png"
    dataset.selected_sheet(manifest, out, columns=2, tile=48, root=tmp_path)
    tiles = dataset.selected_tiles(rows, tmp_path, tmp_path)
    assert tiles[1].path == images / "m01.png" and tiles[1].lines[0].endswith("masked")
    assert tiles[0].path == tmp_path / rows[0]["crop"] and "masked" not in tiles[0].lines[0]
    sheet = _read(out)
    layout = sheets.sheet_layout(2, 2, 48, lines=3, title="training set: 2 faces in rank order")
    x, y = layout.image_origin(1)
    tile = sheet[y : y + 48, x : x + 48].astype(int)
    kept, masked = tile[:, 4:20], tile[:, 30:46]
    hatched = (np.abs(masked - np.array(sheets.MASK_HATCH)).sum(axis=2) == 0).sum()
    assert hatched >= 16 * 48 // sheets.MASK_HATCH_PERIOD  # the masked half carries hatch lines
    assert (np.abs(kept - np.array(sheets.MASK_HATCH)).sum(axis=2) == 0).sum() == 0
    # and is dimmed towards grey: further from the face's colour than the kept half
    colour = np.array(COLOURS[1])
    not_hatch = np.abs(masked - np.array(sheets.MASK_HATCH)).sum(axis=2) > 0
    assert np.abs(masked[not_hatch] - colour).mean() > np.abs(kept - colour).mean() + 20


# ---------------------------------------------------------------------------------------------------
# the first page: the run's facts, the intro naming the source, the selected faces' score parts


def _run_files(tmp_path: Path) -> dict[str, Path]:
    """What the stages write, for a run that chose epoch 3: 2 faces kept (1 masked), 3 excluded."""
    kept = [
        {"rank": "1", "marker_uid": "m1", "score": "0.8000", "image": "images/m1.jpg",
         "taken_at": "2021-05-01T10:00:00Z", "score_sharpness": "0.3000", "score_resolution": "0.2500",
         "score_exposure": "0.1500", "score_crowding": "0.0500", "score_recency": "0.0500",
         "score_confidence": "0.0000"},
        {"rank": "2", "marker_uid": "m2", "score": "0.5000", "image": "images/m2.png"},
    ]  # fmt: skip
    excluded = [
        {"marker_uid": "x1", "reason_key": "too small", "reason": "too small: 40 px"},
        {"marker_uid": "x2", "reason_key": "too small", "reason": "too small: 50 px"},
        {"marker_uid": "x3", "reason_key": "duplicate", "reason": "duplicate of m1"},
    ]
    run_dir = tmp_path / "results" / "train" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "estimate.json").write_text(json.dumps({"gpu": "RTX 4090", "cost": 0.92, "total_hours": 1.33}))
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"state": "done", "run_dir": str(run_dir)}))  # a finished run: no estimate in it
    best = tmp_path / "ohwx.json"
    best.write_text(json.dumps({
        "state": "done", "epoch": 3, "base_model": {"name": "stabilityai/stable-diffusion-xl-base-1.0"},
        "scores": {"2": {"median": 0.5, "scored": 6, "headshots": 6},
                   "3": {"median": 0.4123, "scored": 5, "headshots": 6}},
    }))  # fmt: skip
    return {
        "manifest": write_table(tmp_path / "manifest.tsv", MANIFEST_COLUMNS, kept),
        "excluded": write_table(tmp_path / "excluded.tsv", EXCLUDED_COLUMNS, excluded),
        "status_json": status,
        "best_lora_json": best,
    }


def test_the_summary_states_person_source_faces_cost_and_the_chosen_epoch(tmp_path):
    facts = summary_page.run_facts(person="Grace Hopper", source="Immich", currency="EUR", **_run_files(tmp_path))
    rows = dict(facts.rows)
    assert rows["Person"] == "Grace Hopper" and rows["Source"] == "Immich"
    assert rows["Faces"] == "kept 2 (1 by masking) of 5 faces"
    assert facts.excluded == [("too small", 2), ("duplicate", 1)]  # the selection's order, not the file's
    # a finished run's status holds no estimate: the run folder's estimate.json has it
    assert rows["Estimated cost"] == "0.92 EUR for 1.33 h (1 h 20 min) on RTX 4090"
    assert (
        rows["Chosen epoch"] == "epoch 3: median identity distance 0.412 to the selected faces, 5 of 6 headshots scored"
    )
    assert rows["Base model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    page = summary_page.summary_html(facts)
    assert '<th>too small</th><td class="n">2</td>' in page and "Grace Hopper" in page


def test_before_anything_ran_the_summary_says_not_yet(tmp_path):
    facts = summary_page.run_facts(
        person="p", source="digiKam", currency="USD", manifest=tmp_path / "none.tsv", excluded=tmp_path / "none.tsv",
        status_json=tmp_path / "none.json", best_lora_json=tmp_path / "none.json",
    )  # fmt: skip
    rows = dict(facts.rows)
    assert rows["Faces"] == "not selected yet" and rows["Training"] == "not prepared yet"
    assert rows["Estimated cost"].startswith("not estimated yet")
    assert rows["Chosen epoch"].startswith("none chosen yet")
    waiting = tmp_path / "waiting.json"
    waiting.write_text(json.dumps({"state": "waiting", "reason": "headshots are ready"}))
    assert summary_page.epoch_text(json.loads(waiting.read_text())) == "none chosen yet (headshots are ready)"


@pytest.mark.parametrize(
    ("manager", "kind", "name"),
    [("immich", "", "Immich"), ("digikam", "", "digiKam"), ("photoprism", "", "PhotoPrism"),
     ("", "immich", "Immich"), ("", "", "a photo manager")],
)  # fmt: skip
def test_the_source_is_the_exports_manager(manager, kind, name):
    assert summary_page.source_name(manager, kind) == name


def test_the_intro_names_the_source_and_opens_on_the_facts(tmp_path):
    from docutils.core import publish_parts
    from jinja2 import Environment

    template = (Path(__file__).parents[1] / "workflow" / "report" / "workflow.rst").read_text()
    assert "PhotoPrism" not in template  # the source comes from the export, never assumed
    facts = summary_page.run_facts(person="Ada {{ config }} *Lovelace*", source="digiKam", currency="EUR",
                                   **_run_files(tmp_path))  # fmt: skip
    intro = summary_page.intro_text(template, "digiKam", facts)
    # rendered as Snakemake renders the report's intro: Jinja, then docutils
    rendered = publish_parts(Environment().from_string(intro).render(snakemake=None), writer_name="html")["html_body"]
    text = re.sub(r"<[^>]+>", "", rendered)
    assert "face markers of one person in digiKam into a personal SDXL LoRA" in " ".join(text.split())
    assert "Ada {{ config }} *Lovelace*" in text  # neither Jinja nor rst markup: the name as typed
    assert "kept 2 (1 by masking) of 5 faces" in text and "too small 2, duplicate 1" in text
    assert "epoch 3: median identity distance 0.412" in text
    assert text.index("This run") < text.index("This report shows")  # the facts come first
    # the template as it is (before the summary job ran) renders too, naming no manager
    plain = publish_parts(template, writer_name="html")["html_body"]
    assert "in a photo manager&#x27;s library" in plain or "in a photo manager's library" in plain


def test_every_selected_face_shows_its_score_parts(tmp_path):
    files = _run_files(tmp_path)
    page = summary_page.scores_html(dataset.read_tsv(files["manifest"]))
    first = page.split("<tr>")[2]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", first)
    assert cells[:4] == ["1", "m1", "2021-05-01", "0.8000"]
    assert cells[4:] == ["0.3000", "0.2500", "0.1500", "0.0500", "0.0500", "0.0000"]
    assert abs(sum(map(float, cells[4:])) - float(cells[3])) < 1e-6  # the parts add up to the score
    assert "Sharpness" in page and "Confidence" in page


@pytest.mark.snakemake
def test_a_digikam_librarys_report_names_digikam(tmp_path):
    """The intro and the selected sheet's caption name the manager the export came from, not PhotoPrism."""
    import yaml
    from fixtures.databases import source_configs, write_digikam_sqlite
    from fixtures.library import PERSON, build_cross_library
    from fixtures.runs import copy_workflow, snakemake, write_config

    library = build_cross_library(tmp_path / "library")
    write_digikam_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir, library.root, person=PERSON)
    config["source"] = source_configs(library, "unused")["digikam"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    targets = ["results/report/intro.rst", "results/report/summary.html", "results/report/selected.png"]
    snakemake(workdir, "--cores", "2", *targets)
    intro = (workdir / "results" / "report" / "intro.rst").read_text()
    assert ".. |source| replace:: digiKam" in intro and "* **Source**: digiKam" in intro
    assert f"* **Person**: {PERSON}" in intro
    snakemake(workdir, "--report", "report.html", *targets)
    page = (workdir / "report.html").read_text()
    assert "face markers of one person in digiKam into a personal SDXL LoRA" in page
    assert "marker uid of digiKam (search it there" in page
    assert "PhotoPrism library" not in page and "PhotoPrism marker" not in page  # what the report said before
