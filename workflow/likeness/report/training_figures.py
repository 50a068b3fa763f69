"""Figures of a training run: loss and learning rate by step, sample images by epoch, headshots by epoch.

Loss and learning rate come from the TensorBoard event files sd-scripts writes in the run folder
(likeness.sdscripts.tensorboard); the console log's progress bar is only for live progress. A run
without event files gives a chart that says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from likeness.atomic import write_if_changed
from likeness.joblog import JobLog
from likeness.report.charts import Series, line_chart_svg
from likeness.report.sheets import PathLike, Tile, contact_sheet
from likeness.sdscripts import tensorboard as tb

# --- loss and learning rate -------------------------------------------------------------------------


def training_series(run_dir: PathLike) -> tuple[dict[str, list[tuple[int, float]]], str]:
    """Every scalar series in the run folder's event files, and "" or why there are none to show."""
    files = tb.event_files(run_dir)
    if not files:
        return {}, "no TensorBoard event files in the run folder (sd-scripts' logging_dir)"
    try:
        series = tb.scalar_series(files)
    except (OSError, tb.EventFileError) as error:
        return {}, f"the event files could not be read: {error}"
    if not series.get(tb.LOSS_TAG) and not series.get(tb.AVERAGE_LOSS_TAG):
        return series, "the event files hold no loss values yet"
    return series, ""


def loss_svg(series: dict[str, list[tuple[int, float]]], out_svg: PathLike, empty_text: str) -> int:
    """Loss (each step's and the moving average) over the learning rate(s), by step; returns loss points."""
    loss = [
        Series("loss", series.get(tb.LOSS_TAG, []), "loss"),
        Series("average loss", series.get(tb.AVERAGE_LOSS_TAG, []), "loss-average"),
    ]
    rates = [Series(tag, series[tag], "lr") for tag in tb.learning_rate_tags(series)]
    svg = line_chart_svg("Training loss and learning rate by step", [("loss", loss), ("learning rate", rates)],
                         empty_text or "no values")  # fmt: skip
    write_if_changed(out_svg, svg.encode("utf-8"))
    return len(series.get(tb.LOSS_TAG, []))


def loss_chart(run_dir: PathLike, out_svg: PathLike) -> tuple[int, str]:
    """The loss chart of the run in ``run_dir``; returns (loss points, why there are none or "")."""
    series, why = training_series(run_dir)
    return loss_svg(series, out_svg, why), why


# --- sample images ----------------------------------------------------------------------------------

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


def training_figures(status_json: PathLike, loss_svg_path: PathLike, samples_png: PathLike, *, log: JobLog) -> None:
    """The report_training job: loss chart and sample sheet of the run that the status file names."""
    status = json.loads(Path(status_json).read_text(encoding="utf-8"))
    run_dir = Path(status.get("run_dir", ""))
    points, why = loss_chart(run_dir, loss_svg_path)
    log(f"loss chart: {points} steps" + (f" ({why})" if why else ""))
    rounds = samples_sheet(run_dir / "output" / "sample", samples_png)
    log(f"samples: {rounds} rounds")


# --- headshots (best_lora) --------------------------------------------------------------------------


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


def headshots_job(best_json: PathLike, out_png: PathLike, *, log: JobLog) -> None:
    """The report_headshots job."""
    log(f"{headshots_sheet(best_json, out_png)} epochs drawn")
