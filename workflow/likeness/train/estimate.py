"""What the training will cost before it starts: exact step count, expected time on the GPU, money.

The step count follows sd-scripts v0.10.1 (train_util.DreamBoothDataset / BaseDataset.make_buckets and
train_network.py): images x repeats, regularisation images added until they balance that count, one
batch list per bucket, then gradient accumulation and epochs. The time per step comes from
``resources/gpu_speeds.tsv`` (published figures, each with its source) unless a finished run on the same
GPU measured it (``results/train/calibration.tsv``), which then takes precedence.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import atomic_write_bytes
from likeness.errors import ConfigError, LikenessError
from likeness.sdscripts.buckets import StepPlan, bucket_settings, plan_steps
from likeness.sdscripts.images import image_sizes
from likeness.sdscripts.prompts import prompt_sampling_steps, sample_prompts_text
from likeness.train import step_budget

REPO_ROOT = Path(__file__).resolve().parents[3]
GPU_SPEEDS_TSV = REPO_ROOT / "resources" / "gpu_speeds.tsv"

# Gradient checkpointing recomputes activations: the controlled H100/L40S sweep in gpu_speeds.tsv measured
# 1.080/0.606 and 1.029/0.585 s/step, i.e. about 1.77x. Used only when no row has the requested setting.
GRADIENT_CHECKPOINTING_FACTOR = 1.77

# Overheads as fractions of one training step (forward+backward of the U-Net at the training size).
# Rough rules of thumb, stated here so they can be checked: encoding one image with the VAE costs about a
# quarter of a step, one caption through both text encoders a twentieth, one sampling step (two U-Net
# forward passes for classifier-free guidance, no backward) about a third.
LATENT_CACHE_STEP_FRACTION = 0.25
TEXT_ENCODER_CACHE_STEP_FRACTION = 0.05
SAMPLING_STEP_FRACTION = 0.35
MODEL_LOAD_SECONDS = 60.0  # reading a 7 GB checkpoint and building the models
SAVE_LORA_SECONDS = 3.0
SAVE_STATE_SECONDS = 6.0
# Snakemake's runtime must not cut a slow run short: margin on the estimate plus a fixed allowance.
RUNTIME_MARGIN = 1.5
RUNTIME_EXTRA_MINUTES = 10


# --- image sizes ------------------------------------------------------------------------------------------


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def read_image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file header (JPEG, PNG), else by decoding; None when unreadable."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(256 * 1024)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"\xff\xd8"):
        size = _jpeg_size(head)
        if size:
            return size
    import cv2  # decode only when the header did not tell

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return None if image is None else (int(image.shape[1]), int(image.shape[0]))


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


def _row_from(record: Mapping[str, str]) -> SpeedRow:
    return SpeedRow(
        gpu=record["gpu"],
        vram_gb=float(record.get("vram_gb") or 0),
        resolution=int(record["resolution"]),
        batch_size=int(record["batch_size"]),
        gradient_checkpointing=record["gradient_checkpointing"],
        seconds_per_step=float(record["seconds_per_step"]),
        source=record["source"],
        conditions=record.get("conditions", ""),
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
)


def load_calibration(path: str | Path | None) -> list[SpeedRow]:
    """Measured rows (empty when the file does not exist or cannot be read)."""
    if not path:
        return []
    try:
        return [_row_from(r) for r in tables.read_table(path, CALIBRATION_FIELDS)]
    except (LikenessError, KeyError, ValueError):
        return []


def record_calibration(path: str | Path, row: SpeedRow) -> None:
    """Store a measured speed; it replaces an earlier measurement for the same GPU and conditions."""
    key = (row.gpu, row.resolution, row.batch_size, row.gradient_checkpointing)
    rows = [r for r in load_calibration(path) if (r.gpu, r.resolution, r.batch_size, r.gradient_checkpointing) != key]
    rows.append(row)
    atomic_write_bytes(
        path, tables.table_bytes(CALIBRATION_FIELDS, ([getattr(r, n) for n in CALIBRATION_FIELDS] for r in rows))
    )


def known_gpus(table: Sequence[SpeedRow]) -> list[str]:
    return sorted({row.gpu for row in table})


def _gc_label(gradient_checkpointing: bool) -> str:
    return "yes" if gradient_checkpointing else "no"


def lookup_speed(
    gpu: str,
    *,
    resolution: int,
    batch_size: int,
    gradient_checkpointing: bool,
    table: Sequence[SpeedRow],
    calibration: Sequence[SpeedRow] = (),
) -> tuple[float, str, SpeedRow]:
    """Seconds per step for these settings, a sentence saying where the figure comes from, and its row.

    A measured row for the GPU wins over the table. The closest row (same gradient checkpointing setting,
    then batch size, then resolution) is scaled: time grows with the pixel count; between two batch sizes
    it is interpolated, beyond them it grows in proportion to the batch (conservative).
    """
    measured = [r for r in calibration if r.gpu == gpu]
    rows = measured or [r for r in table if r.gpu == gpu]
    if not rows:
        raise ConfigError("train.gpu", f"unknown GPU {gpu!r}; known: {', '.join(known_gpus(table))}")
    wanted_gc = _gc_label(gradient_checkpointing)
    same_gc = [r for r in rows if r.gradient_checkpointing in (wanted_gc, "any")]
    pool = same_gc or rows

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
    origin = "measured" if measured else "table"
    text = (
        f"{origin}: {best.gpu}, {best.resolution} px, batch {best.batch_size}, gradient checkpointing "
        f"{best.gradient_checkpointing}, {best.seconds_per_step:g} s/step ({best.source})"
    )
    if notes:
        text += "; " + ", ".join(notes)
    return seconds, text, best


# --- memory -----------------------------------------------------------------------------------------------


def estimated_vram_gb(cfg: Mapping[str, Any]) -> float:
    """Rough peak GPU memory of an SDXL LoRA training with these settings (for a warning only).

    bf16 U-Net weights about 5 GB; activations per image at 1024 px about 1.5 GB with gradient checkpointing
    and 9 GB without (they grow with the pixel count); text encoders another 1.7 GB when their outputs are
    not cached; optimizer state of a LoRA is small.
    """
    resolution = int(cfg.get("resolution", 1024))
    batch = int(cfg.get("batch_size", 1))
    per_image = 1.5 if cfg.get("gradient_checkpointing", True) else 9.0
    gb = 5.5 + batch * per_image * (resolution / 1024) ** 2
    if not cfg.get("cache_text_encoder_outputs", True):
        gb += 1.7
    if not cfg.get("network_train_unet_only", True):
        gb += 1.0
    return gb


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
            f"  cost: {self.total_hours:.2f} h x {self.hourly_cost:g}/h = {self.cost:.2f}",
        ]
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        message = self.budget_message()
        if message:
            lines.append(f"  WARNING: {message}")
        return lines


def _configured_sample_steps(cfg: Mapping[str, Any], resolution: int) -> list[int]:
    """Sampling steps of each prompt line the run's sample_prompts.txt will hold (likeness.sdscripts.prompts)."""
    text = sample_prompts_text(cfg["sample_prompts"], trigger="t", class_word="c", resolution=resolution)
    return prompt_sampling_steps(text)


def _overheads(
    cfg: Mapping[str, Any], plan: StepPlan, seconds_per_step: float, sample_steps: Sequence[int]
) -> dict[str, float]:
    unique_images = plan.n_images + plan.reg_images_used
    flips = 2 if cfg.get("flip_aug", False) else 1
    epochs = plan.epochs
    every_save = max(1, int(cfg.get("save_every_n_epochs", 1)))
    saves = sum(1 for e in range(1, epochs) if e % every_save == 0) + 1  # per-epoch saves + the final one
    sample_every = int(cfg.get("sample_every_n_epochs", 0) or 0)
    sample_events = epochs // sample_every if sample_every > 0 else 0
    overheads = {
        "model loading": MODEL_LOAD_SECONDS,
        "latent caching": unique_images * flips * LATENT_CACHE_STEP_FRACTION * seconds_per_step,
    }
    if cfg.get("cache_text_encoder_outputs", True):
        overheads["text-encoder caching"] = unique_images * TEXT_ENCODER_CACHE_STEP_FRACTION * seconds_per_step
    if sample_events and sample_steps:
        overheads["samples"] = sample_events * sum(sample_steps) * SAMPLING_STEP_FRACTION * seconds_per_step
    overheads["saving"] = saves * (SAVE_LORA_SECONDS + SAVE_STATE_SECONDS)
    # The headshots rule renders every saved LoRA's headshots afterwards on the same GPU: one
    # sdxl_gen_img.py run per saved epoch (it loads the base model each time), priced like samples.
    prompts = [p for p in cfg.get("headshot_prompts") or [] if str(p).strip()]
    if prompts:
        resolution = int(cfg.get("resolution", 1024))
        side = int(cfg.get("headshot_size") or 0) or resolution
        area = (side / resolution) ** 2
        per_image = int(cfg.get("headshot_steps", 30)) * SAMPLING_STEP_FRACTION * seconds_per_step * area
        overheads["headshots"] = saves * (MODEL_LOAD_SECONDS + len(prompts) * per_image)
    return overheads


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
) -> Estimate:
    """Estimate for the ``train`` section and the training (and regularisation) image sizes or counts."""
    table = list(table) if table is not None else load_speed_table()
    calibration = load_calibration(calibration_path)
    resolution = int(cfg.get("resolution", 1024))
    train_sizes = _as_sizes(images, resolution)
    reg_sizes = _as_sizes(reg_images, resolution)
    # "auto" repeats/epochs follow the image count
    budget = step_budget.step_budget(cfg["num_repeats"], cfg["max_train_epochs"], len(train_sizes))
    cfg = {**cfg, "num_repeats": budget.num_repeats, "max_train_epochs": budget.max_train_epochs}
    plan = plan_steps(
        train_sizes,
        num_repeats=int(cfg.get("num_repeats", 10)),
        batch_size=int(cfg.get("batch_size", 1)),
        gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps", 1)),
        epochs=int(cfg.get("max_train_epochs", 10)),
        reg_sizes=reg_sizes,
        settings=bucket_settings(int(cfg["resolution"]), bool(cfg["bucket_no_upscale"])),
    )
    gpu = str(cfg.get("gpu", "RTX 4090"))
    seconds, source, row = lookup_speed(
        gpu,
        resolution=resolution,
        batch_size=plan.batch_size,
        gradient_checkpointing=bool(cfg.get("gradient_checkpointing", True)),
        table=table,
        calibration=calibration,
    )
    if sample_steps is None:  # the prompts the run would get, with their own --s options
        sample_steps = _configured_sample_steps(cfg, resolution)
    result = Estimate(
        gpu=gpu,
        resolution=resolution,
        steps=plan,
        seconds_per_step=seconds,
        speed_source=source,
        overhead_seconds=_overheads(cfg, plan, seconds, sample_steps),
        hourly_cost=float(cfg.get("gpu_hourly_cost", 0.0) or 0.0),
        max_gpu_hours=float(cfg.get("max_gpu_hours", 0.0) or 0.0),
    )
    note = budget.note(len(train_sizes))
    if note:
        result.notes.append(note)
    vram = max((r.vram_gb for r in table if r.gpu == gpu), default=row.vram_gb)
    needed = estimated_vram_gb(cfg)
    if vram > 0 and needed > vram:
        result.warnings.append(
            f"these settings need roughly {needed:.0f} GB of GPU memory, more than the {gpu}'s {vram:g} GB: "
            "training would spill into system memory and run 10-100x slower; turn on gradient checkpointing "
            "or lower train.batch_size"
        )
    if plan.n_images == 0:
        result.warnings.append("no training images")
    if with_hints and result.exceeds_budget:
        result.under_budget_hints = _under_budget_hints(
            cfg, train_sizes, reg_sizes, calibration_path, table, sample_steps, budget.auto_keys
        )
    return result


def _largest_fitting(current: int, build: Any, budget_hours: float) -> int | None:
    """The largest value below ``current`` whose estimate fits the budget (None when even 1 does not)."""
    low, high = 1, current - 1  # estimates grow with each of these knobs: search for the boundary
    best = None
    while low <= high:
        middle = (low + high) // 2
        if build(middle).total_hours <= budget_hours:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def _under_budget_hints(
    cfg: Mapping[str, Any],
    train_sizes: list[tuple[int, int]],
    reg_sizes: list[tuple[int, int]],
    calibration_path: str | Path | None,
    table: Sequence[SpeedRow],
    sample_steps: Sequence[int],
    auto_keys: Sequence[str] = (),
) -> list[str]:
    budget = float(cfg.get("max_gpu_hours", 0.0))

    def with_changes(images: list[tuple[int, int]] | None = None, **changes: int) -> Estimate:
        return estimate(
            {**cfg, **changes},
            images if images is not None else train_sizes,
            reg_sizes,
            calibration_path=calibration_path,
            table=table,
            sample_steps=sample_steps,
            with_hints=False,
        )

    hints = []
    epochs = int(cfg.get("max_train_epochs", 10))
    repeats = int(cfg.get("num_repeats", 10))
    fit = _largest_fitting(epochs, lambda e: with_changes(max_train_epochs=e), budget)
    if fit:
        hints.append(f"train.max_train_epochs {fit} (now {epochs})")
    fit = _largest_fitting(repeats, lambda r: with_changes(num_repeats=r), budget)
    if fit:
        hints.append(f"train.num_repeats {fit} (now {repeats})")
    fit = _largest_fitting(len(train_sizes), lambda n: with_changes(images=train_sizes[:n]), budget)
    if fit:
        # with num_repeats "auto" fewer images would get more repeats: the hint holds for fixed repeats
        pinned = f" with train.num_repeats {repeats}" if "num_repeats" in auto_keys else ""
        hints.append(f"at most {fit} training images (now {len(train_sizes)}){pinned}")
    return hints


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
    reg_dir = str(cfg.get("reg_images") or "")
    reg_sizes = image_sizes(reg_dir) if reg_dir else []
    if sizes:
        note = f"{len(sizes)} images in {image_dir}"
        images: int | list[tuple[int, int]] = sizes
    else:
        note = f"dataset not built yet: assuming {assumed_images} images"
        images = assumed_images
    return estimate(cfg, images, reg_sizes, calibration_path=calibration_path), note
