"""The one table format: any string round-trips through Python's csv module and pandas alike.

What the module promises (likeness.tables): csv (delimiter tab, newline="") and pandas (sep tab, dtype
str, keep_default_na False) read every table back to the rows that were written; a plain split on LF and
tab gives the same cells for every row none of whose cells needed quotes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from likeness import tables
from likeness.errors import LikenessError

# Any text a database row can hold: every code point but surrogates (not encodable in UTF-8).
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
HOSTILE = [
    "photo\r.jpg",
    '"quoted" start.jpg',
    "tab\there.jpg",
    "line\nbreak.jpg",
    "=HYPERLINK(1)",
    "+1+1",
    "-cmd",
    "@SUM(A1)",
    "trailing\r\n",
    "nul\x00byte",
    "",
    " ",
    '"',
    "\u2028separator",
]
COLUMNS = ("marker_uid", "file_name", "reason")


def read_with_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter="\t"))


def read_with_pandas(data: bytes) -> list[list[str]]:
    frame = pd.read_csv(io.BytesIO(data), sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    return [list(frame.columns), *frame.astype(str).values.tolist()]


def read_naively(data: bytes) -> list[list[str]]:
    return [line.split("\t") for line in data.decode("utf-8").split("\n")[:-1]]


def check_round_trip(rows: list[list[str]]) -> None:
    data = tables.table_bytes(COLUMNS, rows)
    expected = [list(COLUMNS), *rows]
    assert read_with_csv(data) == expected
    assert [dict(zip(COLUMNS, row, strict=True)) for row in rows] == tables.parse_table(data.decode("utf-8"))
    # A plain split agrees on every row that needed no quotes (and the header).
    naive = read_naively(data)
    quoted = [any(tables.needs_quotes(cell) for cell in row) for row in expected]
    if not any(quoted):
        assert naive == expected
    else:
        plain_rows = [row for row, needs in zip(expected, quoted, strict=True) if not needs]
        assert all(row in naive for row in plain_rows)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_round_trip_with_csv_our_reader_and_pandas(value):
    rows = [["m1", value, "ok"], ["m2", "plain.jpg", value]]
    check_round_trip(rows)
    if "\x00" not in value:  # pandas' C parser ends a cell at NUL; the format itself carries it
        assert read_with_pandas(tables.table_bytes(COLUMNS, rows)) == [list(COLUMNS), *rows]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(ANY_TEXT, min_size=3, max_size=3), max_size=6))
def test_any_strings_round_trip(rows):
    check_round_trip(rows)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(ANY_TEXT.filter(lambda t: "\x00" not in t), min_size=3, max_size=3), min_size=1, max_size=4))
def test_pandas_reads_what_csv_reads(rows):
    data = tables.table_bytes(COLUMNS, rows)
    assert read_with_pandas(data) == read_with_csv(data) == [list(COLUMNS), *rows]


def test_a_carriage_return_does_not_shift_rows():
    """The failure this format fixes: an unquoted CR made csv (and pandas) see a phantom row."""
    data = tables.table_bytes(COLUMNS, [["m1", "a\rb.jpg", ""], ["m2", "c.jpg", ""]])
    assert [row[0] for row in read_with_csv(data)[1:]] == ["m1", "m2"]
    assert b'"a\rb.jpg"' in data


def test_numbers_with_a_sign_are_not_quoted_but_formulas_are():
    assert not tables.needs_quotes("-0.25") and not tables.needs_quotes("+3") and not tables.needs_quotes("1e-5")
    assert tables.needs_quotes("-cmd") and tables.needs_quotes("=1+1") and tables.needs_quotes("@x")


def test_read_table_errors_are_one_line(tmp_path: Path):
    missing = tmp_path / "absent.tsv"
    with pytest.raises(LikenessError, match="cannot read"):
        tables.read_table(missing)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("a\tb\n1\n")
    with pytest.raises(LikenessError, match="row 2 has 1 cells, the header 2"):
        tables.read_table(ragged)
    with pytest.raises(LikenessError, match="lacks the column"):
        tables.read_table(ragged, ("c",))
    assert tables.count_rows(missing) is None
    good = tmp_path / "good.tsv"
    tables.write_table(good, ("a", "b"), [["1", "x\ny"], ["2", ""]])
    assert tables.count_rows(good) == 2


def test_a_cell_over_the_csv_modules_default_limit_reads_back() -> None:
    """A duplicates cell of a 10,000-face burst group (about 170 kB) broke the caption stage at 20,000 faces."""
    from likeness import tables

    big = ",".join(f"marker{i:011d}" for i in range(10_000))
    assert len(big) > 131_072
    text = tables.table_bytes(("marker_uid", "duplicates"), [("a", big)]).decode()
    assert tables.parse_table(text) == [{"marker_uid": "a", "duplicates": big}]


@given(st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)))
@settings(max_examples=500)
def test_the_fast_path_for_numbers_writes_what_the_quoting_rule_writes(number):
    """tables._cell skips the quoting check for ints and finite floats; the cell must be the same."""
    text = str(number)
    expected = '"' + text.replace('"', '""') + '"' if tables.needs_quotes(text) else text
    assert tables.row_text([number]) == expected


def test_markers_tsv_writes_every_field_in_column_order():
    from likeness.export.records import MarkerRow
    from likeness.export.tsv import markers_tsv

    fields = {column: f"v{index}" for index, column in enumerate(tables.MARKER_COLUMNS)}
    numbers = {"marker_review": 1, "score": -2, "q": 3, "size": 4, "file_width": 5, "file_height": 6}
    numbers |= {"file_orientation": 7, "x": 0.5, "y": float("nan"), "w": 1e-05, "h": -0.25, "face_dist": -1.0}
    row = MarkerRow(**(fields | numbers))
    header, line = markers_tsv([row]).decode().splitlines()
    cells = dict(zip(header.split("\t"), line.split("\t"), strict=True))
    assert list(cells) == list(tables.MARKER_COLUMNS)
    assert cells["y"] == "" and cells["w"] == "1e-05" and cells["h"] == "-0.25" and cells["score"] == "-2"
    assert cells["file_name"] == fields["file_name"] and cells["reason"] == fields["reason"]
