"""Figures for Snakemake's own report (``snakemake --report report.html``).

Every function reads the workflow's tables (or a training log) and writes one file through
``likeness.atomic``: contact sheets as PNG (tiles drawn with OpenCV, text with ``cv2.putText``), bar
charts and the loss curve as hand-written SVG (matplotlib is not a dependency), the training estimate
as a small HTML table. Output is deterministic: the same inputs give the same bytes, so a re-run that
changes nothing leaves the files (and their mtimes) alone.

Bad input never raises: a missing crop becomes a placeholder tile, an unreadable estimate becomes a
sentence in the HTML, a log without loss values gives an empty chart that says so.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.tables import REASON_ORDER

PathLike = str | os.PathLike[str]

# Colours are BGR (OpenCV's order).
BACKGROUND = (246, 246, 246)
TEXT = (32, 32, 32)
PLACEHOLDER = (208, 208, 214)
PLACEHOLDER_LINE = (178, 178, 186)
GAP = 6  # pixels around and between cells
FONT = cv2.FONT_HERSHEY_SIMPLEX


class Tile(NamedTuple):
    """One cell of a contact sheet.

    ``path`` None (or an unreadable image) draws a placeholder showing ``note`` (or "no image");
    ``path`` None with no lines and no note leaves the cell blank (used to align rows).
    """

    path: PathLike | None
    lines: Sequence[str]
    note: str = ""


# ---------------------------------------------------------------------------------------------------
# Contact sheets


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on a contact sheet; pure arithmetic, shared by drawing and tests."""

    count: int
    columns: int
    tile: int
    lines: int
    line_height: int
    title_height: int
    width: int

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns) if self.count else 0

    @property
    def cell_height(self) -> int:
        return self.tile + self.lines * self.line_height + (GAP // 2 if self.lines else 0)

    @property
    def height(self) -> int:
        body = self.rows * (self.cell_height + GAP) + GAP
        return self.title_height + max(body, GAP + self.line_height if not self.count else 0)

    def image_origin(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of tile ``index``'s image square."""
        row, column = divmod(index, self.columns)
        return GAP + column * (self.tile + GAP), self.title_height + GAP + row * (self.cell_height + GAP)

    def text_box(self, index: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the caption area under tile ``index``."""
        x, y = self.image_origin(index)
        return x, y + self.tile, self.tile, self.cell_height - self.tile


def _line_height(tile: int) -> int:
    return max(12, round(tile / 10))


def _font_scale(line_height: int) -> float:
    # Hershey simplex capitals are ~22 px tall at scale 1: leave a third of the line for spacing.
    return line_height / 40


def sheet_layout(count: int, columns: int = 8, tile: int = 160, lines: int = 0, title: str = "") -> SheetLayout:
    """The layout of a sheet of ``count`` tiles with ``lines`` caption lines under each."""
    if columns < 1 or tile < 16:
        raise ValueError("a contact sheet needs at least one column and tiles of 16 px or more")
    line_height = _line_height(tile)
    used_columns = max(1, min(columns, count))
    width = GAP + used_columns * (tile + GAP)
    title_height = 0
    if title:
        title_height = GAP + round(line_height * 1.5)
        title_width, _ = _text_size(title, _font_scale(line_height) * 1.25)
        width = max(width, title_width + 2 * GAP)
    return SheetLayout(count, used_columns, tile, lines, line_height, title_height, width)


def to_ascii(text: str) -> str:
    """What the Hershey fonts can draw: accents dropped (Zoë -> Zoe), anything else as '?'."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in " ".join(plain.split()))


def _text_size(text: str, scale: float) -> tuple[int, int]:
    (width, height), _ = cv2.getTextSize(to_ascii(text), FONT, scale, 1)
    return width, height


def fit_text(text: str, width: int, scale: float) -> str:
    """``text`` shortened with '..' until it is at most ``width`` pixels wide."""
    text = to_ascii(text)
    if _text_size(text, scale)[0] <= width:
        return text
    while text and _text_size(text + "..", scale)[0] > width:
        text = text[:-1]
    return text.rstrip() + ".."


def wrap_text(text: str, width: int, scale: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than a line is broken by characters."""
    lines: list[str] = []
    current = ""
    for word in to_ascii(text).split(" "):
        candidate = f"{current} {word}" if current else word
        if _text_size(candidate, scale)[0] <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for ch in word:
            if _text_size(current + ch, scale)[0] > width and current:
                lines.append(current)
                current = ""
            current += ch
    if current:
        lines.append(current)
    return lines


def _put_text(canvas: np.ndarray, text: str, x: int, baseline: int, scale: float) -> None:
    cv2.putText(canvas, to_ascii(text), (x, baseline), FONT, scale, TEXT, 1, cv2.LINE_AA)


def fit_image(image: np.ndarray, tile: int) -> np.ndarray:
    """``image`` scaled to fit a ``tile`` square (aspect kept, centred on the background)."""
    height, width = image.shape[:2]
    factor = tile / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, size, interpolation=interpolation)
    square = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
    top, left = (tile - size[1]) // 2, (tile - size[0]) // 2
    square[top : top + size[1], left : left + size[0]] = resized
    return square


def _read_tile_image(path: PathLike | None, tile: int) -> np.ndarray | None:
    if path is None or str(path) == "":
        return None
    if not Path(path).is_file():  # checked first: OpenCV would print a warning for every missing file
        return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return fit_image(image, tile)


def placeholder_tile(note: str, tile: int, scale: float, line_height: int) -> np.ndarray:
    """A grey square crossed out, with ``note`` wrapped inside: the face has no crop to show."""
    square = np.full((tile, tile, 3), PLACEHOLDER, dtype=np.uint8)
    cv2.line(square, (0, 0), (tile - 1, tile - 1), PLACEHOLDER_LINE, 1, cv2.LINE_AA)
    cv2.line(square, (0, tile - 1), (tile - 1, 0), PLACEHOLDER_LINE, 1, cv2.LINE_AA)
    cv2.rectangle(square, (0, 0), (tile - 1, tile - 1), PLACEHOLDER_LINE, 1)
    lines = wrap_text(note or "no image", tile - 8, scale)
    fitting = max(1, (tile - 8) // line_height)
    if len(lines) > fitting:
        lines = [*lines[: fitting - 1], fit_text(" ".join(lines[fitting - 1 :]), tile - 8, scale)]
    top = (tile - len(lines) * line_height) // 2
    for number, line in enumerate(lines):
        _put_text(square, line, 4, top + (number + 1) * line_height - line_height // 4, scale)
    return square


def render_contact_sheet(
    tiles: Sequence[Tile | tuple], columns: int = 8, tile: int = 160, title: str = ""
) -> np.ndarray:
    """The sheet as a BGR image: tiles in the given order, row by row, caption lines under each."""
    cells = [Tile(*entry) for entry in tiles]
    lines = max((len(cell.lines) for cell in cells), default=0)
    layout = sheet_layout(len(cells), columns, tile, lines, title)
    scale = _font_scale(layout.line_height)
    canvas = np.full((layout.height, layout.width, 3), BACKGROUND, dtype=np.uint8)
    if title:
        _put_text(canvas, title, GAP, layout.title_height - GAP // 2 - layout.line_height // 4, scale * 1.25)
    if not cells:
        _put_text(canvas, "nothing to show", GAP, layout.title_height + GAP + layout.line_height - 3, scale)
    for index, cell in enumerate(cells):
        x, y = layout.image_origin(index)
        blank = cell.path is None and not cell.lines and not cell.note
        if blank:
            continue
        square = _read_tile_image(cell.path, tile)
        if square is None:
            note = cell.note or ("unreadable image" if cell.path else "no image")
            square = placeholder_tile(note, tile, scale, layout.line_height)
        canvas[y : y + tile, x : x + tile] = square
        text_x, text_y, text_width, _ = layout.text_box(index)
        for number, line in enumerate(cell.lines):
            baseline = text_y + (number + 1) * layout.line_height - layout.line_height // 4
            _put_text(canvas, fit_text(line, text_width, scale), text_x, baseline, scale)
    return canvas


def _png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("OpenCV could not encode the contact sheet as PNG")
    return encoded.tobytes()


def contact_sheet(
    tiles: Sequence[Tile | tuple], out_png: PathLike, columns: int = 8, tile: int = 160, title: str = ""
) -> tuple[int, int]:
    """Write a contact sheet PNG of ``tiles`` ((image path or None, caption lines[, note]) each).

    Returns the sheet's (width, height). Sheets grow downwards without limit; callers cap the tile
    count where thousands are possible.
    """
    canvas = render_contact_sheet(tiles, columns, tile, title)
    write_if_changed(out_png, _png_bytes(canvas))
    return canvas.shape[1], canvas.shape[0]


# ---------------------------------------------------------------------------------------------------
# Tables


def read_tsv(path: PathLike) -> list[dict[str, str]]:
    """Rows of one of the workflow's tables (likeness.tables); a missing file reads as no rows."""
    if not Path(path).exists():
        return []
    return tables.read_table(path)


def _resolve(path: str, root: PathLike | None) -> Path | None:
    if not path:
        return None
    candidate = Path(path)
    return candidate if candidate.is_absolute() or root is None else Path(root) / candidate


def _date(taken_at: str) -> str:
    return taken_at[:10] if taken_at else "no date"


def _score_key(row: dict[str, str]) -> tuple[float, str]:
    try:
        score = float(row.get("score") or "nan")
    except ValueError:
        score = math.nan
    return (-score if not math.isnan(score) else math.inf, row.get("marker_uid", ""))


def selected_tiles(rows: Iterable[dict[str, str]], root: PathLike | None = None) -> list[Tile]:
    """One tile per selected face in rank order: '#rank  score', date, marker uid."""

    def rank(row: dict[str, str]) -> tuple[int, str]:
        value = row.get("rank", "")
        return (int(value) if value.isdigit() else 1 << 30, row.get("marker_uid", ""))

    def date_and_distance(row: dict[str, str]) -> str:
        # The identity distance to the person's reference (likeness.select.identity), when it was measured.
        distance = row.get("identity_distance") or ""
        text = _date(row.get("taken_at", "")) + (f"  id {float(distance):.2f}" if distance else "")
        return text + ("  PhotoPrism differs" if row.get("identity_note") else "")

    return [
        Tile(
            _resolve(row.get("crop", ""), root),
            [f"#{row.get('rank', '?')}  {row.get('score', '')}", date_and_distance(row), row.get("marker_uid", "")],
            "crop missing",
        )
        for row in sorted(rows, key=rank)
    ]  # fmt: skip


def selected_sheet(
    manifest_tsv: PathLike, out_png: PathLike, columns: int = 8, tile: int = 160, root: PathLike | None = None
) -> tuple[int, int]:
    """Contact sheet of the training set in rank order; crop paths relative to ``root`` (default cwd)."""
    tiles = selected_tiles(read_tsv(manifest_tsv), root)
    title = f"training set: {len(tiles)} face{'s' if len(tiles) != 1 else ''} in rank order"
    return contact_sheet(tiles, out_png, columns, tile, title)


def reason_slug(reason_key: str) -> str:
    """A file-name-safe form of a reason key: 'below top_n' -> 'below-top-n'."""
    return re.sub(r"[^a-z0-9]+", "-", reason_key.lower()).strip("-") or "other"


def _reason_order(key: str) -> tuple[int, str]:
    return (REASON_ORDER.index(key), key) if key in REASON_ORDER else (len(REASON_ORDER), key)


def excluded_groups(rows: Iterable[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Excluded rows by reason key, reasons in the selection's order, rows best score first."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row.get("reason_key") or "other", []).append(row)
    return {key: sorted(groups[key], key=_score_key) for key in sorted(groups, key=_reason_order)}


def excluded_tiles(rows: Iterable[dict[str, str]], root: PathLike | None = None) -> list[Tile]:
    """One tile per excluded face: reason, date, uid; no crop gives a placeholder naming the reason."""
    tiles = []
    for row in rows:
        key = row.get("reason_key") or ""
        reason = row.get("reason") or key or "excluded"
        # The sheet's title names the reason key: under the tile, its detail is what tells faces apart.
        if key and reason.startswith(f"{key}: "):
            reason = reason[len(key) + 2 :]
        # Where PhotoPrism's own embeddings disagree with the identity model, the tile says so.
        note = row.get("identity_note") or ""
        verdict = "same" if note.startswith("PhotoPrism's embeddings say the same") else "another"
        second = f"PhotoPrism: {verdict}" if note else _date(row.get("taken_at", ""))
        tiles.append(
            Tile(_resolve(row.get("crop", ""), root), [reason, second, row.get("marker_uid", "")], reason)
        )  # fmt: skip
    return tiles


def excluded_sheets(
    excluded_tsv: PathLike,
    out_dir: PathLike,
    columns: int = 8,
    tile: int = 160,
    limit: int = 400,
    root: PathLike | None = None,
) -> list[Path]:
    """One sheet per exclusion reason, ``out_dir/excluded_<reason-slug>.png``; returns their paths.

    At most ``limit`` tiles a sheet (the best-scored first; the title says how many are left out), so
    that a library with thousands of faces below top_n still gives a sheet a browser can show. Sheets
    of reasons that no longer occur are removed.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, rows in excluded_groups(read_tsv(excluded_tsv)).items():
        shown = rows[:limit]
        title = f"excluded, {key}: {len(rows)} face{'s' if len(rows) != 1 else ''}"
        if len(shown) < len(rows):
            title += f" (best {len(shown)} shown)"
        path = folder / f"excluded_{reason_slug(key)}.png"
        contact_sheet(excluded_tiles(shown, root), path, columns, tile, title)
        written.append(path)
    for stale in folder.glob("excluded_*.png"):
        if stale not in written:
            stale.unlink()
    return written


# ---------------------------------------------------------------------------------------------------
# SVG charts

_SVG_FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12"'
_CHAR_WIDTH = 7.2  # average width of a 12 px sans-serif character, for laying out labels


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def bar_chart_svg(items: Sequence[tuple[str, int]], title: str, empty_text: str) -> str:
    """A horizontal bar chart, one ``<rect class="bar">`` per item (in the given order)."""
    row_height, bar_height, bar_span = 22, 15, 360
    label_width = round(max((len(label) for label, _ in items), default=10) * _CHAR_WIDTH) + 12
    count_width = round(max((len(str(count)) for _, count in items), default=1) * _CHAR_WIDTH) + 12
    width = label_width + bar_span + count_width + 10
    top = 34
    height = top + max(1, len(items)) * row_height + 10
    largest = max((count for _, count in items), default=0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_SVG_FONT}>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{_attr(title)}</text>',
    ]
    if not items:
        parts.append(f'<text x="10" y="{top + 15}" fill="#555555">{_attr(empty_text)}</text>')
    for index, (label, count) in enumerate(items):
        y = top + index * row_height
        length = round(bar_span * count / largest, 1) if largest else 0
        parts += [
            f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end">{_attr(label)}</text>',
            f'<rect class="bar" x="{label_width}" y="{y}" width="{length}" height="{bar_height}" '
            f'fill="#4c78a8" data-label="{_attr(label)}" data-count="{count}">'
            f"<title>{_attr(label)}: {count}</title></rect>",
            f'<text class="count" x="{label_width + length + 5}" y="{y + 12}">{count}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def reason_counts(rows: Iterable[dict[str, str]]) -> list[tuple[str, int]]:
    """(reason key, faces) in the selection's reason order."""
    counts = Counter(row.get("reason_key") or "other" for row in rows)
    return [(key, counts[key]) for key in sorted(counts, key=_reason_order)]


def reasons_chart(excluded_tsv: PathLike, out_svg: PathLike) -> list[tuple[str, int]]:
    """Bar chart of exclusion reasons; returns the counts drawn."""
    counts = reason_counts(read_tsv(excluded_tsv))
    total = sum(count for _, count in counts)
    svg = bar_chart_svg(counts, f"Why faces were left out ({total} in all)", "no face was excluded")
    write_if_changed(out_svg, svg.encode("utf-8"))
    return counts


def caption_tags(caption: str) -> list[str]:
    """The tagger's tags of a caption: everything after the trigger word and the class word."""
    tokens = [token.strip() for token in caption.split(",")]
    return [token for token in tokens[2:] if token]


def tag_counts(rows: Iterable[dict[str, str]], top: int = 25) -> list[tuple[str, int]]:
    """The ``top`` most frequent tags (ties by name), counting each tag once per caption."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(set(caption_tags(row.get("caption", ""))))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def tags_chart(captions_tsv: PathLike, out_svg: PathLike, top: int = 25) -> list[tuple[str, int]]:
    """Bar chart of the most frequent caption tags; returns the counts drawn."""
    rows = read_tsv(captions_tsv)
    counts = tag_counts(rows, top)
    title = f"Most frequent caption tags (top {len(counts)}, {len(rows)} captions)"
    write_if_changed(out_svg, bar_chart_svg(counts, title, "no tags in the captions").encode("utf-8"))
    return counts


# ---------------------------------------------------------------------------------------------------
# Training estimate

_ESTIMATE_LABELS = {
    "gpu": "GPU",
    "images": "Images",
    "repeats": "Repeats",
    "batch_size": "Batch size",
    "steps_per_epoch": "Steps per epoch",
    "epochs": "Epochs",
    "total_steps": "Total steps",
    "seconds_per_step": "Seconds per step",
    "hours": "Estimated time",
    "cost": "Estimated cost",
}


def _format_value(key: str, value: Any, estimate: dict[str, Any]) -> str:
    if isinstance(value, bool) or value is None:
        return "yes" if value is True else "no" if value is False else "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if key == "hours":
            whole = round(value * 60)
            return f"{value:.2f} h ({whole // 60} h {whole % 60:02d} min)"
        if key == "cost":
            currency = estimate.get("currency")
            return f"{value:.2f} {currency}" if currency else f"{value:.2f}"
        if key == "seconds_per_step":
            return f"{value:.3g} s"
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def estimate_rows(estimate: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) per key: the known keys first in a fixed order, then the rest by name."""
    merged = {"currency"} if isinstance(estimate.get("cost"), int | float) else set()
    skip = merged | {"warning", "warnings"}
    keys = [key for key in _ESTIMATE_LABELS if key in estimate]
    keys += sorted(key for key in estimate if key not in _ESTIMATE_LABELS and key not in skip)
    rows = []
    for key in keys:
        value = estimate[key]
        if key == "cost" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        label = _ESTIMATE_LABELS.get(key, key.replace("_", " ").capitalize())
        rows.append((label, _format_value(key, value, estimate)))
    return rows


def _warnings(estimate: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("warning", "warnings"):
        value = estimate.get(key)
        if isinstance(value, str) and value.strip():
            found.append(value.strip())
        elif isinstance(value, list):
            found += [str(item) for item in value if str(item).strip()]
    return found


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Training estimate</title>
<style>
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 1em 0.3em 0; text-align: left; }
th { font-weight: normal; color: #555; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }
</style></head><body>
<h3>Training estimate</h3>
"""


def estimate_html(estimate_json: PathLike, out_html: PathLike) -> list[tuple[str, str]]:
    """A small HTML page with the training estimate (whatever keys the JSON holds); returns its rows."""
    try:
        estimate = json.loads(Path(estimate_json).read_text(encoding="utf-8"))
        problem = "" if isinstance(estimate, dict) else "the estimate is not a JSON object"
    except (OSError, ValueError) as error:
        estimate, problem = {}, f"the estimate could not be read ({type(error).__name__})"
    if problem:
        estimate = {}
    estimate = _estimate_of_status(estimate)
    rows = estimate_rows(estimate)
    parts = [_HTML_HEAD]
    if problem:
        parts.append(f'<p class="warning">{html.escape(problem)}: {html.escape(str(estimate_json))}</p>\n')
    parts += [f'<p class="warning">{html.escape(text)}</p>\n' for text in _warnings(estimate)]
    if rows:
        parts.append("<table>\n")
        for label, text in rows:
            parts.append(f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>\n")
        parts.append("</table>\n")
    parts.append("</body></html>\n")
    write_if_changed(out_html, "".join(parts).encode("utf-8"))
    return rows


# ---------------------------------------------------------------------------------------------------
# Loss curve

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tqdm's bar: "<n>/<total> [<elapsed><<remaining>, <rate>, key=value, ...]"; sd-scripts puts avr_loss
# (the running mean of the epoch's losses) into the postfix. \b keeps val_avr_loss-like keys out.
_PROGRESS = re.compile(r"(\d+)/(\d+)\s*\[[^\]]*?\bavr_loss=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def loss_curve(log_text: str) -> list[tuple[int, float]]:
    """(step, avr_loss) from sd-scripts' progress bar in a training log, sorted by step.

    tqdm redraws the bar with carriage returns, so one text line may hold many updates; the last value
    seen for a step wins (a resumed run appended to the same log overwrites the steps it repeats).
    """
    by_step: dict[int, float] = {}
    for line in re.split(r"[\r\n]+", _ANSI.sub("", log_text)):
        for match in _PROGRESS.finditer(line):
            loss = float(match.group(3))
            if math.isfinite(loss):
                by_step[int(match.group(1))] = loss
    return sorted(by_step.items())


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    # The round step nearest (in ratio) to an even split gives between about count/2 and 2*count ticks.
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda candidate: abs(math.log(candidate / raw)))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_text(value: float) -> str:
    return f"{value:.6g}"


def loss_svg(points: Sequence[tuple[int, float]], out_svg: PathLike) -> int:
    """Line chart of loss by step; returns how many points it drew."""
    width, height = 640, 320
    left, right, top, bottom = 64, 20, 36, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_SVG_FONT}>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">Training loss (avr_loss by step)</text>',
    ]
    if not points:
        parts += [f'<text x="{left}" y="{top + plot_h // 2}" fill="#555555">'
                  "no loss values in the training log yet</text>", "</svg>"]  # fmt: skip
        write_if_changed(out_svg, ("\n".join(parts) + "\n").encode("utf-8"))
        return 0
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    x_low, x_high = min(steps), max(steps)
    y_low, y_high = min(losses), max(losses)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high == y_low:
        pad = abs(y_low) * 0.1 or 0.1
        y_low, y_high = y_low - pad, y_high + pad

    def x_of(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * plot_w

    def y_of(loss: float) -> float:
        return top + (1 - (loss - y_low) / (y_high - y_low)) * plot_h

    axis = 'stroke="#999999"'
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" {axis}/>')
    for tick in nice_ticks(x_low, x_high):
        x = round(x_of(tick), 1)
        parts.append(f'<line x1="{x}" y1="{top + plot_h}" x2="{x}" y2="{top + plot_h + 4}" {axis}/>')
        parts.append(f'<text x="{x}" y="{top + plot_h + 17}" text-anchor="middle">{_tick_text(tick)}</text>')
    for tick in nice_ticks(y_low, y_high):
        y = round(y_of(tick), 1)
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{_tick_text(tick)}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">step</text>')
    coordinates = " ".join(f"{x_of(step):.1f},{y_of(loss):.1f}" for step, loss in points)
    parts.append(f'<polyline class="loss" fill="none" stroke="#4c78a8" stroke-width="1.5" points="{coordinates}"/>')
    if len(points) == 1:
        x, y = x_of(steps[0]), y_of(losses[0])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#4c78a8"/>')
    parts.append("</svg>")
    write_if_changed(out_svg, ("\n".join(parts) + "\n").encode("utf-8"))
    return len(points)


# ---------------------------------------------------------------------------------------------------
# Sample images

# sd-scripts (train_util.sample_images, v0.10.1) names samples
#   [<output_name>_]<e{epoch:06d} | {step:06d}>_<prompt:02d>_<YYYYmmddHHMMSS>[_<seed>].png
_SAMPLE_NAME = re.compile(
    r"^(?:(?P<name>.*)_)?(?P<epoch>e)?(?P<number>\d{6,})_(?P<prompt>\d{2,})_(?P<stamp>\d{14})"
    r"(?:_(?P<seed>\d+))?\.(?:png|jpe?g|webp)$",
    re.IGNORECASE,
)


class Sample(NamedTuple):
    by_epoch: bool  # False: sampled every n steps, number is the step
    number: int
    prompt: int
    stamp: str
    path: Path

    @property
    def label(self) -> str:
        if self.number == 0:
            return "before training"
        return f"epoch {self.number}" if self.by_epoch else f"step {self.number}"


def parse_sample_name(path: PathLike) -> Sample | None:
    """The epoch (or step), prompt index and time stamp in a sample image's name; None if not one."""
    match = _SAMPLE_NAME.match(Path(path).name)
    if not match:
        return None
    return Sample(
        match.group("epoch") is not None,
        int(match.group("number")),
        int(match.group("prompt")),
        match.group("stamp"),
        Path(path),
    )


def sample_groups(sample_dir: PathLike) -> list[tuple[str, list[Sample]]]:
    """Samples grouped by epoch (epochs first, then step-numbered groups), prompts in order.

    Where one epoch and prompt has several images (a resumed run sampled again), the newest wins.
    """
    folder = Path(sample_dir)
    newest: dict[tuple[bool, int, int], Sample] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        sample = parse_sample_name(path)
        if sample is None or not path.is_file():
            continue
        key = (sample.by_epoch, sample.number, sample.prompt)
        if key not in newest or (sample.stamp, path.name) > (newest[key].stamp, newest[key].path.name):
            newest[key] = sample
    groups: dict[tuple[bool, int], list[Sample]] = {}
    for key in sorted(newest, key=lambda k: (not k[0], k[1], k[2])):
        groups.setdefault(key[:2], []).append(newest[key])
    return [(samples[0].label, samples) for samples in groups.values()]


def samples_sheet(sample_dir: PathLike, out_png: PathLike, tile: int = 256, max_columns: int = 8) -> int:
    """One row per epoch (prompts side by side, a prompt's column stays the same); returns the groups.

    A missing or empty folder gives a sheet that says there are no samples yet.
    """
    groups = sample_groups(sample_dir)
    prompts = sorted({sample.prompt for _, samples in groups for sample in samples})
    columns = max(1, min(max_columns, len(prompts)))
    tiles: list[Tile] = []
    for label, samples in groups:
        by_prompt = {sample.prompt: sample for sample in samples}
        row = [Tile(by_prompt[p].path, [label, f"prompt {p}"]) if p in by_prompt else Tile(None, []) for p in prompts]
        # Pad to whole rows so that every epoch starts on a new row.
        row += [Tile(None, [])] * (-len(row) % columns)
        tiles += row
    title = f"samples by epoch ({len(groups)} round{'s' if len(groups) != 1 else ''})"
    if not groups:
        title = "no sample images yet"
    contact_sheet(tiles, out_png, columns, tile, title)
    return len(groups)


def loss_chart(log_path: PathLike, out_svg: PathLike) -> int:
    """``loss_svg(loss_curve(<log text>))``; a missing log draws the empty chart. Returns the points."""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    return loss_svg(loss_curve(text), out_svg)


# ---------------------------------------------------------------------------------------------------
# What the rules call


def _estimate_of_status(record: dict[str, Any]) -> dict[str, Any]:
    """The training job's status file holds the estimate under "estimate": show it with the run's state."""
    inner = record.get("estimate")
    if not isinstance(inner, dict):
        return record
    shown = {k: v for k, v in inner.items() if k not in ("lines", "overhead_seconds", "budget_warning")}
    if inner.get("budget_warning"):
        shown["warning"] = inner["budget_warning"]
    shown["training"] = f"{record.get('state', '?')} in {record.get('run_dir', '?')}/"
    return shown


def pose_counts(rows: Iterable[dict[str, str]]) -> list[tuple[str, int]]:
    """(head-pose bin, faces) of the selected faces, bins in a fixed order (likeness.select.selection.pose_bin)."""
    from likeness.tables import POSE_BIN_DEGREES

    counts: Counter[str] = Counter()
    for row in rows:
        try:
            yaw, pitch = float(row.get("yaw") or "nan"), float(row.get("pitch") or "nan")
        except ValueError:
            yaw = pitch = math.nan
        if math.isnan(yaw) or math.isnan(pitch):
            counts["unknown"] += 1
            continue
        turn = "frontal" if abs(yaw) < POSE_BIN_DEGREES else ("turned left" if yaw < 0 else "turned right")
        tilt = "level" if abs(pitch) < POSE_BIN_DEGREES else ("up" if pitch < 0 else "down")
        counts[f"{turn}, {tilt}"] += 1
    order = [f"{t}, {p}" for t in ("frontal", "turned left", "turned right") for p in ("level", "up", "down")]
    return [(label, counts[label]) for label in [*order, "unknown"] if counts[label]]


def pose_chart(manifest_tsv: PathLike, out_svg: PathLike) -> list[tuple[str, int]]:
    """Bar chart of the training set's head poses (yaw x pitch bins from the identity model)."""
    counts = pose_counts(read_tsv(manifest_tsv))
    total = sum(count for _, count in counts)
    svg = bar_chart_svg(counts, f"Head poses of the training set ({total} faces)", "no face selected")
    write_if_changed(out_svg, svg.encode("utf-8"))
    return counts


def headshot_tiles(record: dict[str, Any]) -> tuple[list[Tile], int]:
    """best_lora's record as a grid: one row per epoch, one column per prompt, each tile's identity
    distance (or why it has none) under it; the chosen epoch's tiles say so. Returns (tiles, columns)."""
    prompts = record.get("prompts") or []
    columns = max(1, len(prompts))
    tiles: list[Tile] = []
    for epoch, score in sorted((record.get("scores") or {}).items(), key=lambda item: int(item[0])):
        chosen = int(epoch) == record.get("epoch")
        median = score.get("median")
        head = f"epoch {epoch}" + (" CHOSEN" if chosen else "")
        for index, image in enumerate(score.get("images") or []):
            distance = image.get("distance")
            value = f"d {distance:.3f}" if distance is not None else (image.get("note") or "no score")
            summary = f"median {median:.3f}" if median is not None else "median -"
            tiles.append(Tile(image.get("path"), [head, f"prompt {index + 1}: {value}", summary], "missing"))
        tiles += [Tile(None, [])] * (-len(tiles) % columns)
    return tiles, columns


def headshots_sheet(best_json: PathLike, out_png: PathLike, tile: int = 200) -> int:
    """The headshot grid of best_lora's record; returns the rows (epochs) drawn."""
    try:
        record = json.loads(Path(best_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    tiles, columns = headshot_tiles(record)
    rows = len(record.get("scores") or {})
    title = (
        f"headshots: {rows} epochs x {columns} prompts, identity distance to the selected faces;"
        f" chosen: epoch {record.get('epoch')}"
        if rows
        else f"no scored headshots ({record.get('why') or record.get('reason') or 'best_lora has not run'})"
    )
    contact_sheet(tiles, out_png, columns, tile, title)
    return rows


def selection_figures(
    manifest_tsv: PathLike,
    excluded_tsv: PathLike,
    selected_png: PathLike,
    excluded_dir: PathLike,
    reasons_svg: PathLike,
    log_path: PathLike,
    poses_svg: PathLike | None = None,
) -> None:
    selected_sheet(manifest_tsv, selected_png)
    if poses_svg is not None:
        pose_chart(manifest_tsv, poses_svg)
    sheets = excluded_sheets(excluded_tsv, excluded_dir)
    counts = reasons_chart(excluded_tsv, reasons_svg)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(f"{len(sheets)} excluded sheet(s): {counts}\n", encoding="utf-8")


def training_done(status_json: PathLike) -> bool:
    try:
        return json.loads(Path(status_json).read_text(encoding="utf-8")).get("state") == "done"
    except (OSError, ValueError, AttributeError):
        return False


def training_figures(status_json: PathLike, train_log: PathLike, loss_svg: PathLike, samples_png: PathLike) -> None:
    """Loss curve from sd-scripts' log and the sample images of the run that the status file names."""
    status = json.loads(Path(status_json).read_text(encoding="utf-8"))
    loss_chart(train_log, loss_svg)
    samples_sheet(Path(status.get("run_dir", "")) / "output" / "sample", samples_png)
