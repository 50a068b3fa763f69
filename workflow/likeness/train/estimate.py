"""What the training will cost before it starts: exact step count, expected time on the GPU, money.

The step count follows sd-scripts v0.10.1 (train_util.DreamBoothDataset / BaseDataset.make_buckets and
train_network.py): images x repeats, regularisation images added until they balance that count, one
batch list per bucket, then gradient accumulation and epochs. The time per step comes from
``resources/gpu_speeds.tsv`` (published figures, each with its source) unless a run on the same GPU with
the same settings measured it (``results/train/calibration.tsv``: a finished training, or the calibrate
rule). A measurement is judged before it replaces the table: it needs ``MIN_MEASURED_STEPS`` timed steps
and must lie within ``PLAUSIBLE_BAND`` of the table's figure for that GPU at its settings; otherwise it
is kept in the file, and the estimate's speed line names it and says why the table's figure was used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness import RESOURCES, tables
from likeness.atomic import atomic_write_bytes
from likeness.errors import ConfigError, LikenessError
from likeness.sdscripts.buckets import StepPlan, bucket_settings, plan_steps
from likeness.sdscripts.configs import caches_text_encoder_outputs, trains_unet_only
from likeness.sdscripts.images import image_sizes
from likeness.summary import hint
from likeness.train import budget_hints, gpus, overheads, step_budget

GPU_SPEEDS_TSV = RESOURCES / "gpu_speeds.tsv"

# Gradient checkpointing recomputes activations: the controlled H100/L40S sweep in gpu_speeds.tsv measured
# 1.080/0.606 and 1.029/0.585 s/step, i.e. about 1.77x. Used only when no row has the requested setting.
GRADIENT_CHECKPOINTING_FACTOR = 1.77

# Snakemake's runtime must not cut a slow run short: margin on the estimate plus a fixed allowance.
RUNTIME_MARGIN = 1.5
RUNTIME_EXTRA_MINUTES = 10

# A measured speed replaces the table only when it timed enough steps (a run's average includes its first,
# slow steps; fewer than this say little) and lies within this band of the table's figure for the same GPU
# and settings: a measurement 10x off (a test double, a different card, a run that spilled into system
# memory) is far likelier a mistake than a discovery, and would cut the price and the Slurm time limit.
MIN_MEASURED_STEPS = 50
PLAUSIBLE_BAND = (0.25, 4.0)


# --- speed table and calibration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeedRow:
    gpu: str
    vram_gb: float
    resolution: int
    batch_size: int
    gradient_checkpointing: str  # yes | no | any
    seconds_per_step: float
    source: str
    conditions: str = ""
    # measured rows only (calibration.tsv): the steps timed, the speed-relevant settings (speed_settings)
    # and the peak GPU memory; None/"" where unknown (a row written before they were recorded)
    steps: int | None = None
    settings: str = ""
    peak_memory_gb: float | None = None


def _optional(value: str | None, kind: type) -> Any:
    return kind(value) if value not in (None, "") else None


def _row_from(record: Mapping[str, str]) -> SpeedRow:
    return SpeedRow(
        gpu=record["gpu"],
        vram_gb=float(record.get("vram_gb") or 0),
        resolution=int(record["resolution"]),
        batch_size=int(record["batch_size"]),
        gradient_checkpointing=record["gradient_checkpointing"],
        seconds_per_step=float(record["seconds_per_step"]),
        source=record["source"],
        conditions=record.get("conditions", "") or "",
        steps=_optional(record.get("steps"), int),
        settings=record.get("settings", "") or "",
        peak_memory_gb=_optional(record.get("peak_memory_gb"), float),
    )


def load_speed_table(path: str | Path | None = None) -> list[SpeedRow]:
    return [_row_from(r) for r in tables.read_resource_table(path or GPU_SPEEDS_TSV)]


CALIBRATION_FIELDS = (
    "gpu",
    "vram_gb",
    "resolution",
    "batch_size",
    "gradient_checkpointing",
    "seconds_per_step",
    "source",
    "conditions",
    "steps",
    "settings",
    "peak_memory_gb",
)
# A calibration.tsv written before the last three columns existed is still read.
_CALIBRATION_REQUIRED = CALIBRATION_FIELDS[:8]


def load_calibration(path: str | Path | None) -> list[SpeedRow]:
    """Measured rows (empty when the file does not exist or cannot be read)."""
    if not path:
        return []
    try:
        return [_row_from(r) for r in tables.read_table(path, _CALIBRATION_REQUIRED)]
    except (LikenessError, KeyError, ValueError):
        return []


def _measurement_key(row: SpeedRow) -> tuple[Any, ...]:
    return (row.gpu, row.resolution, row.batch_size, row.gradient_checkpointing, row.settings)


def record_calibration(path: str | Path, row: SpeedRow) -> None:
    """Store a measured speed (every one is kept, plausible or not: the estimate judges them); it replaces
    an earlier measurement for the same GPU and settings."""
    key = _measurement_key(row)
    rows = [r for r in load_calibration(path) if _measurement_key(r) != key]
    rows.append(row)
    atomic_write_bytes(
        path, tables.table_bytes(CALIBRATION_FIELDS, ([getattr(r, n) for n in CALIBRATION_FIELDS] for r in rows))
    )


def known_gpus(table: Sequence[SpeedRow]) -> list[str]:
    return sorted({row.gpu for row in table})


def _gc_label(gradient_checkpointing: bool) -> str:
    return "yes" if gradient_checkpointing else "no"


def speed_settings(cfg: Mapping[str, Any]) -> str:
    """The settings besides resolution, batch size and gradient checkpointing that change the time of a
    step: a measurement counts only for the same ones."""
    extra = cfg.get("extra") or {}
    return (
        f"{cfg.get('mixed_precision')}, dim {cfg.get('network_dim')}, {cfg.get('optimizer_type')}"
        f", text encoders {'frozen' if trains_unet_only(extra) else 'trained'}"
        f"{', outputs cached' if caches_text_encoder_outputs(extra) else ''}"
    )


def _scaled(
    rows: Sequence[SpeedRow], resolution: int, batch_size: int, gradient_checkpointing: bool
) -> tuple[float, SpeedRow, list[str]]:
    """Seconds per step from the closest of ``rows`` (same gradient checkpointing setting, then batch size,
    then resolution), scaled: time grows with the pixel count; between two batch sizes it is interpolated,
    beyond them it grows in proportion to the batch (conservative). Returns the figure, its row, the notes."""
    wanted_gc = _gc_label(gradient_checkpointing)
    same_gc = [r for r in rows if r.gradient_checkpointing in (wanted_gc, "any")]
    pool = same_gc or list(rows)

    def distance(row: SpeedRow) -> tuple[float, float, int]:
        # a row stating the same checkpointing setting beats one that did not say ("any")
        return (
            abs(math.log(batch_size / row.batch_size)),
            abs(math.log(resolution / row.resolution)),
            0 if row.gradient_checkpointing == wanted_gc else 1,
        )

    best = min(pool, key=distance)
    notes = []
    seconds = best.seconds_per_step
    same_res = [r for r in pool if r.resolution == best.resolution]
    lower = max((r for r in same_res if r.batch_size < batch_size), key=lambda r: r.batch_size, default=None)
    upper = min((r for r in same_res if r.batch_size > batch_size), key=lambda r: r.batch_size, default=None)
    if best.batch_size != batch_size:
        if lower and upper:
            share = (batch_size - lower.batch_size) / (upper.batch_size - lower.batch_size)
            seconds = lower.seconds_per_step + share * (upper.seconds_per_step - lower.seconds_per_step)
            notes.append(f"interpolated between batch {lower.batch_size} and {upper.batch_size}")
        else:
            seconds *= batch_size / best.batch_size
            notes.append(f"scaled from batch {best.batch_size} in proportion")
    if best.resolution != resolution:
        seconds *= (resolution / best.resolution) ** 2
        notes.append(f"scaled from {best.resolution} px by pixel count")
    if best.gradient_checkpointing not in (wanted_gc, "any"):
        factor = GRADIENT_CHECKPOINTING_FACTOR if gradient_checkpointing else 1 / GRADIENT_CHECKPOINTING_FACTOR
        seconds *= factor
        notes.append(f"x{factor:.2f} for gradient checkpointing {wanted_gc}")
    return seconds, best, notes


def judge_measurement(row: SpeedRow, table_rows: Sequence[SpeedRow], settings: str = "") -> str:
    """Why a measured row must not replace the table ("" when it may): too few steps, other settings, or
    outside the plausible band of the table's figure for its GPU at the row's own conditions."""
    if settings and row.settings and row.settings != settings:
        return f"measured with other settings ({row.settings})"
    if row.steps is not None and row.steps < MIN_MEASURED_STEPS:
        return f"only {row.steps} steps timed (it takes {MIN_MEASURED_STEPS})"
    if table_rows:
        expected, _, _ = _scaled(table_rows, row.resolution, row.batch_size, row.gradient_checkpointing == "yes")
        ratio = row.seconds_per_step / expected
        low, high = PLAUSIBLE_BAND
        if not low <= ratio <= high:
            return (
                f"{ratio:.2g}x the table's {expected:.3g} s/step for these settings,"
                f" outside the plausible {low:g}x-{high:g}x"
            )
    return ""


def lookup_speed(
    gpu: str,
    *,
    resolution: int,
    batch_size: int,
    gradient_checkpointing: bool,
    table: Sequence[SpeedRow],
    calibration: Sequence[SpeedRow] = (),
    settings: str = "",
    speed_of: str | None = None,
) -> tuple[float, str, SpeedRow]:
    """Seconds per step for these settings, a sentence saying where the figure comes from, and its row.

    ``speed_of``: the table row to use for a GPU without one of its own (its class, likeness.train.gpus).
    A measured row for the GPU wins over the table once ``judge_measurement`` accepts it; the ones it
    refuses are named in the sentence with the reason. See ``_scaled`` for how a row is scaled.
    """
    table_rows = [r for r in table if r.gpu == (speed_of or gpu)]
    measured = [r for r in calibration if r.gpu == gpu]
    if not table_rows and not measured:
        raise ConfigError("train.gpu", f"unknown GPU {gpu!r}; known: {', '.join(known_gpus(table))}")
    verdicts = [(r, judge_measurement(r, table_rows, settings)) for r in measured]
    usable = [r for r, why in verdicts if not why]
    seconds, best, notes = _scaled(usable or table_rows, resolution, batch_size, gradient_checkpointing)
    origin = "measured" if usable else "table"
    text = (
        f"{origin}: {best.gpu}, {best.resolution} px, batch {best.batch_size}, gradient checkpointing "
        f"{best.gradient_checkpointing}, {best.seconds_per_step:g} s/step ({best.source})"
    )
    if notes:
        text += "; " + ", ".join(notes)
    for row, why in verdicts:
        if why:
            steps = f", {row.steps} steps" if row.steps is not None else ""
            text += f"; not used: measured {row.seconds_per_step:g} s/step ({row.source}{steps}): {why}"
    return seconds, text, best


# --- the estimate ------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    gpu: str
    resolution: int
    steps: StepPlan
    seconds_per_step: float
    speed_source: str
    overhead_seconds: dict[str, float]
    hourly_cost: float
    currency: str  # of hourly_cost and cost (train.currency)
    max_gpu_hours: float
    warnings: list[str] = field(default_factory=list)
    under_budget_hints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. what the auto step budget chose

    @property
    def steps_per_epoch(self) -> int:
        return self.steps.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps.total_steps

    @property
    def training_seconds(self) -> float:
        return self.total_steps * self.seconds_per_step

    @property
    def total_seconds(self) -> float:
        return self.training_seconds + sum(self.overhead_seconds.values())

    @property
    def total_hours(self) -> float:
        return self.total_seconds / 3600

    @property
    def cost(self) -> float:
        return self.total_hours * self.hourly_cost

    @property
    def runtime_minutes(self) -> int:
        return math.ceil(self.total_seconds * RUNTIME_MARGIN / 60) + RUNTIME_EXTRA_MINUTES

    @property
    def exceeds_budget(self) -> bool:
        return self.max_gpu_hours > 0 and self.total_hours > self.max_gpu_hours

    def budget_message(self) -> str | None:
        """One line: by how much the estimate exceeds train.max_gpu_hours and what would bring it under."""
        if not self.exceeds_budget:
            return None
        over = self.total_hours - self.max_gpu_hours
        fixed = sum(self.overhead_seconds.values()) / 3600
        hints = " or ".join(self.under_budget_hints) or (
            f"nothing smaller fits (model loading, caching and saving alone take {fixed:.2f} h): "
            "raise train.max_gpu_hours or pick a faster train.gpu"
        )
        return (
            f"estimated {self.total_hours:.2f} GPU hours exceeds train.max_gpu_hours {self.max_gpu_hours:g} "
            f"by {over:.2f} h ({100 * over / self.max_gpu_hours:.0f} %); to fit: {hints}"
        )

    def format_lines(self) -> list[str]:
        s = self.steps
        reg = (
            f" + {s.reg_samples} regularisation ({s.reg_images_used} of {s.n_reg_images} images)"
            if (s.n_reg_images)
            else ""
        )
        accum = f" / accumulation {s.gradient_accumulation_steps}" if s.gradient_accumulation_steps > 1 else ""
        overhead = ", ".join(f"{name} {secs / 60:.1f} min" for name, secs in self.overhead_seconds.items())
        lines = [
            f"training estimate ({self.gpu}, {self.resolution} px, batch {s.batch_size}):",
            f"  steps: {s.n_images} images x {s.num_repeats} repeats = {s.train_samples}"
            + (f"{reg} = {s.samples_per_epoch}" if reg else "")
            + f" samples/epoch in {len(s.buckets)} bucket(s) -> "
            f"{s.batches_per_epoch} batches"
            f"{accum} = {s.steps_per_epoch} steps/epoch x {s.epochs} epochs = {s.total_steps} steps",
            f"  speed: {self.seconds_per_step:.3g} s/step ({self.speed_source})",
            f"  time: {s.total_steps} steps x {self.seconds_per_step:.3g} s = "
            f"{self.training_seconds / 3600:.2f} h"
            f" + overhead {sum(self.overhead_seconds.values()) / 3600:.2f} h ({overhead})"
            f" = {self.total_hours:.2f} h",
            f"  cost: {self.total_hours:.2f} h x {self.hourly_cost:g} {self.currency}/h"
            f" = {self.cost:.2f} {self.currency}",
        ]
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        message = self.budget_message()
        if message:
            lines.append(f"  WARNING: {message}")
        return lines


def _as_sizes(images: int | Sequence[tuple[int, int]], resolution: int) -> list[tuple[int, int]]:
    """A count means that many square crops at the training resolution (what the crop stage makes)."""
    if isinstance(images, int):
        return [(resolution, resolution)] * images
    return [(int(w), int(h)) for w, h in images]


def estimate(
    cfg: Mapping[str, Any],
    images: int | Sequence[tuple[int, int]],
    reg_images: int | Sequence[tuple[int, int]] = 0,
    *,
    calibration_path: str | Path | None = None,
    table: Sequence[SpeedRow] | None = None,
    sample_steps: Sequence[int] | None = None,
    with_hints: bool = True,
    detected: Sequence[gpus.DetectedGpu] | None = None,
) -> Estimate:
    """Estimate for the ``train`` section and the training (and regularisation) image sizes or counts.

    ``detected``: the training machine's GPUs, for ``train.gpu: auto``; None looks on this machine unless
    the training is submitted elsewhere (``train.submit``), whose GPU cannot be seen from here."""
    table = list(table) if table is not None else load_speed_table()
    if detected is None and str(cfg["gpu"]).strip().lower() == gpus.AUTO and not cfg.get("submit"):
        detected = gpus.query_gpus()
    calibration = load_calibration(calibration_path)
    resolution = int(cfg["resolution"])
    train_sizes = _as_sizes(images, resolution)
    reg_sizes = _as_sizes(reg_images, resolution)
    # "auto" repeats/epochs follow the image count
    budget = step_budget.step_budget(cfg["num_repeats"], cfg["max_train_epochs"], len(train_sizes))
    cfg = {**cfg, "num_repeats": budget.num_repeats, "max_train_epochs": budget.max_train_epochs}
    plan = plan_steps(
        train_sizes,
        num_repeats=int(cfg["num_repeats"]),
        batch_size=int(cfg["batch_size"]),
        gradient_accumulation_steps=int(cfg["gradient_accumulation_steps"]),
        epochs=int(cfg["max_train_epochs"]),
        reg_sizes=reg_sizes,
        settings=bucket_settings(int(cfg["resolution"]), bool(cfg["bucket_no_upscale"])),
    )
    resolved = gpus.resolve(str(cfg["gpu"]), known_gpus(table), detected)
    gpu = resolved.name
    seconds, source, row = lookup_speed(
        gpu,
        resolution=resolution,
        batch_size=plan.batch_size,
        gradient_checkpointing=bool(cfg["gradient_checkpointing"]),
        table=table,
        calibration=calibration,
        settings=speed_settings(cfg),
        speed_of=resolved.speed_of,
    )
    if sample_steps is None:  # the prompts the run would get, with their own --s options
        sample_steps = overheads.configured_sample_steps(cfg, resolution)
    result = Estimate(
        gpu=gpu,
        resolution=resolution,
        steps=plan,
        seconds_per_step=seconds,
        speed_source=source,
        overhead_seconds=overheads.overheads(
            cfg, plan.n_images + plan.reg_images_used, plan.epochs, seconds, sample_steps
        ),
        hourly_cost=float(cfg["gpu_hourly_cost"]),
        currency=str(cfg["currency"]),
        max_gpu_hours=float(cfg["max_gpu_hours"]),
    )
    if resolved.note:
        result.notes.append(resolved.note)
    if source.startswith("table:") and row.source.startswith("estimate:"):
        # the card's first row states the figures (later rows of the same card say "as above")
        stated = next(r.conditions for r in table if r.gpu == row.gpu)
        result.notes.append(
            f"the {row.gpu} figure is an estimate, not a measurement ({stated}): "
            f"`{hint('calibrate', cores=1)}` on that GPU measures it"
        )
    note = budget.note(len(train_sizes))
    if note:
        result.notes.append(note)
    vram = resolved.memory_gb or max((r.vram_gb for r in table if r.gpu == gpu), default=row.vram_gb)
    needed = overheads.estimated_vram_gb(cfg)
    if vram > 0 and needed > vram:
        result.warnings.append(
            f"these settings need roughly {needed:.0f} GB of GPU memory, more than the {gpu}'s {vram:g} GB: "
            "training would spill into system memory and run 10-100x slower; turn on gradient checkpointing "
            "or lower train.batch_size"
        )
    if plan.n_images == 0:
        result.warnings.append("no training images")
    if with_hints and result.exceeds_budget:

        def hours_with(images: int, **changes: int) -> float:
            """The estimate's hours with the first ``images`` training images and changed settings."""
            changed = {**cfg, **changes}
            return estimate(changed, train_sizes[:images], reg_sizes, calibration_path=calibration_path,
                            table=table, sample_steps=sample_steps, with_hints=False,
                            detected=detected).total_hours  # fmt: skip

        result.under_budget_hints = budget_hints.under_budget_hints(cfg, len(train_sizes), hours_with, budget.auto_keys)
    return result


# Beyond this many images the auto step budget is at its floor of MIN_EPOCHS epochs of one repeat, so the
# steps only grow with the image count (and with fixed repeats and epochs they always do).
_AUTO_BUDGET_SETTLED = 600


def upper_bound_estimate(
    cfg: Mapping[str, Any],
    max_images: int,
    reg_images: int | Sequence[tuple[int, int]] = 0,
    *,
    calibration_path: str | Path | None = None,
) -> Estimate:
    """The longest training a selection of 1 to ``max_images`` crops at the training resolution can make:
    for the dry run before the selection (re-)runs. The auto step budget does not grow with the image count
    (6 images can train more steps than 14), so every count up to where it settles is tried."""
    table = load_speed_table()
    counts = {*range(1, min(max_images, _AUTO_BUDGET_SETTLED) + 1), max_images} if max_images > 0 else {0}

    def seconds(images: int) -> float:
        return estimate(
            cfg, images, reg_images, calibration_path=calibration_path, table=table, with_hints=False
        ).total_seconds

    longest = max(sorted(counts), key=seconds)
    return estimate(cfg, longest, reg_images, calibration_path=calibration_path, table=table)


def estimate_for_folders(
    cfg: Mapping[str, Any],
    image_dir: str | Path,
    *,
    assumed_images: int = 0,
    calibration_path: str | Path | None = None,
) -> tuple[Estimate, str]:
    """Estimate from the dataset folder when it exists (dry runs before it is built assume a count).

    Returns the estimate and a note saying where the image count came from.
    """
    sizes = image_sizes(image_dir)
    reg_dir = str(cfg["reg_images"] or "")
    reg_sizes = image_sizes(reg_dir) if reg_dir else []
    if sizes:
        note = f"{len(sizes)} images in {image_dir}"
        images: int | list[tuple[int, int]] = sizes
    else:
        note = f"dataset not built yet: assuming {assumed_images} images"
        images = assumed_images
    return estimate(cfg, images, reg_sizes, calibration_path=calibration_path), note
