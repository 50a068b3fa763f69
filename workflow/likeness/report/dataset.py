"""Figures of the training set: the selected faces, the excluded ones by reason, head poses, caption tags.

Each reads one of the stages' tables (likeness.tables); a missing table reads as no rows, a missing crop
becomes a placeholder tile.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.joblog import JobLog
from likeness.report.charts import bar_chart_svg
from likeness.report.sheets import PathLike, Tile, contact_sheet
from likeness.sdscripts.images import has_alpha_mask
from likeness.tables import POSE_BINS, REASON_ORDER, pose_bin

# The caption stats' "model" of a run with the offline stand-in tagger (caption.standin) starts with this
# (the label likeness.caption.captions.locate_model gives it); the tag chart then says:
STANDIN_MODEL_PREFIX = "offline stand-in"
STANDIN_NOTE = "offline stand-in tagger (caption.standin): its tags mean nothing about the faces"


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


# --- selected faces ---------------------------------------------------------------------------------


def selected_tiles(
    rows: Iterable[dict[str, str]], root: PathLike | None = None, manifest_dir: PathLike | None = None
) -> list[Tile]:
    """One tile per selected face in rank order: '#rank  score', date, marker uid.

    A face kept by masking (select.crowded: mask) shows its dataset image, the PNG that carries the
    mask (its ``image`` column, relative to ``manifest_dir``), so the sheet hatches what the training
    ignores (likeness.report.sheets); its first line says "masked".
    """

    def rank(row: dict[str, str]) -> tuple[int, str]:
        value = row.get("rank", "")
        return (int(value) if value.isdigit() else 1 << 30, row.get("marker_uid", ""))

    def date_and_distance(row: dict[str, str]) -> str:
        # The identity distance to the person's reference (likeness.identity), when it was measured.
        distance = row.get("identity_distance") or ""
        text = _date(row.get("taken_at", "")) + (f"  id {float(distance):.2f}" if distance else "")
        return text + ("  PhotoPrism differs" if row.get("identity_note") else "")

    def masked_image(row: dict[str, str]) -> Path | None:
        image = row.get("image", "")
        if manifest_dir is None or not image.endswith(".png"):
            return None
        path = Path(manifest_dir) / image
        return path if has_alpha_mask(path) else None

    tiles = []
    for row in sorted(rows, key=rank):
        masked = masked_image(row)
        first = f"#{row.get('rank', '?')}  {row.get('score', '')}" + ("  masked" if masked else "")
        tiles.append(
            Tile(
                masked or _resolve(row.get("crop", ""), root),
                [first, date_and_distance(row), row.get("marker_uid", "")],
                "crop missing",
            )
        )
    return tiles


def selected_sheet(
    manifest_tsv: PathLike, out_png: PathLike, columns: int = 8, tile: int = 160, root: PathLike | None = None
) -> tuple[int, int]:
    """Contact sheet of the training set in rank order; crop paths relative to ``root`` (default cwd)."""
    tiles = selected_tiles(read_tsv(manifest_tsv), root, Path(manifest_tsv).parent)
    title = f"training set: {len(tiles)} face{'s' if len(tiles) != 1 else ''} in rank order"
    return contact_sheet(tiles, out_png, columns, tile, title)


# --- excluded faces ---------------------------------------------------------------------------------


def reason_slug(reason_key: str) -> str:
    """A file-name-safe form of a reason key: 'below top_n' -> 'below-top-n'."""
    return re.sub(r"[^a-z0-9]+", "-", reason_key.lower()).strip("-") or "other"


def _reason_order(key: str) -> tuple[int, str]:
    """Reasons in the order the selection tests them; unknown keys after them, by name."""

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


def reason_counts(rows: Iterable[dict[str, str]]) -> list[tuple[str, int]]:
    """(reason key, faces) in the selection's reason order."""
    counts = Counter(row.get("reason_key") or "other" for row in rows)
    return [(key, counts[key]) for key in sorted(counts, key=_reason_order)]


def write_chart(
    out_svg: PathLike, counts: list[tuple[str, int]], title: str, empty_text: str, note: str = ""
) -> list[tuple[str, int]]:
    """Write ``counts`` as a bar chart (unchanged bytes keep the file's mtime); returns the counts."""
    write_if_changed(out_svg, bar_chart_svg(counts, title, empty_text, note).encode("utf-8"))
    return counts


def reasons_chart(excluded_tsv: PathLike, out_svg: PathLike) -> list[tuple[str, int]]:
    """Bar chart of exclusion reasons; returns the counts drawn."""
    counts = reason_counts(read_tsv(excluded_tsv))
    total = sum(count for _, count in counts)
    return write_chart(out_svg, counts, f"Why faces were left out ({total} in all)", "no face was excluded")


# --- head poses -------------------------------------------------------------------------------------


def pose_counts(rows: Iterable[dict[str, str]]) -> list[tuple[str, int]]:
    """(head-pose bin, faces) of the selected faces, bins in likeness.tables.POSE_BINS order."""
    counts: Counter[str] = Counter()
    for row in rows:
        try:
            yaw, pitch = float(row.get("yaw") or "nan"), float(row.get("pitch") or "nan")
        except ValueError:
            yaw = pitch = math.nan
        counts[pose_bin(yaw, pitch)] += 1
    return [(label, counts[label]) for label in POSE_BINS if counts[label]]


def pose_chart(manifest_tsv: PathLike, out_svg: PathLike) -> list[tuple[str, int]]:
    """Bar chart of the training set's head poses (yaw x pitch bins from the identity model)."""
    counts = pose_counts(read_tsv(manifest_tsv))
    total = sum(count for _, count in counts)
    return write_chart(out_svg, counts, f"Head poses of the training set ({total} faces)", "no face selected")


def selection_figures(
    manifest_tsv: PathLike,
    excluded_tsv: PathLike,
    selected_png: PathLike,
    excluded_dir: PathLike,
    reasons_svg: PathLike,
    poses_svg: PathLike,
    *,
    log: JobLog,
) -> None:
    """The report_selection job: the training set's sheet and pose chart, the excluded sheets and reasons."""
    selected_sheet(manifest_tsv, selected_png)
    pose_chart(manifest_tsv, poses_svg)
    sheets = excluded_sheets(excluded_tsv, excluded_dir)
    counts = reasons_chart(excluded_tsv, reasons_svg)
    log(f"{len(sheets)} excluded sheet(s): {counts}")


# --- caption tags -----------------------------------------------------------------------------------


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


def standin_tagged(stats_json: PathLike | None) -> bool:
    """Whether the caption stats (likeness.caption.captions) name the offline stand-in as their model."""
    if stats_json is None:
        return False
    try:
        stats: Any = json.loads(Path(stats_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stats, dict) and str(stats.get("model", "")).startswith(STANDIN_MODEL_PREFIX)


def tags_chart(
    captions_tsv: PathLike, out_svg: PathLike, top: int = 25, stats_json: PathLike | None = None
) -> list[tuple[str, int]]:
    """Bar chart of the most frequent caption tags; returns the counts drawn.

    When the stand-in tagger wrote the captions (``stats_json`` says so), the chart says its tags mean nothing.
    """
    rows = read_tsv(captions_tsv)
    counts = tag_counts(rows, top)
    title = f"Most frequent caption tags (top {len(counts)}, {len(rows)} captions)"
    note = STANDIN_NOTE if standin_tagged(stats_json) else ""
    return write_chart(out_svg, counts, title, "no tags in the captions", note)


def tags_job(captions_tsv: PathLike, stats_json: PathLike, out_svg: PathLike, top: int, *, log: JobLog) -> None:
    """The report_tags job."""
    counts = tags_chart(captions_tsv, out_svg, top, stats_json)
    log(f"{len(counts)} tags drawn" + (" (stand-in tagger)" if standin_tagged(stats_json) else ""))
