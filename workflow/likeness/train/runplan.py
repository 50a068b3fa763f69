"""The run folder: one per input, named by a hash of everything that shapes the trained LoRA.

A run folder ``results/train/<run_id>/`` holds dataset.toml, train.toml, sample_prompts.txt,
estimate.json, plan.json, the run's own copy of the images and captions (``dataset/``, where sd-scripts
also caches latents), the regularisation images (``reg/``) and ``output/`` for sd-scripts. A changed
dataset or config trains into a new folder; earlier runs, their per-epoch LoRAs and samples stay.
The TOMLs name paths relative to the run folder (sd-scripts runs inside it), so a run folder trains
wherever it is (a Slurm node mounting it elsewhere, a bundle unpacked on a rented GPU machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import write_if_changed
from likeness.config import Section, section_settings
from likeness.errors import ConfigError, LikenessError
from likeness.hub import file_sha256
from likeness.sdscripts import RELEASE, configs, images, names, prompts
from likeness.sdscripts.tomlfile import dumps_toml
from likeness.train import base_model as bm
from likeness.train import estimate as est
from likeness.train import gpus, step_budget

HASH_LENGTH = 12
# Where and how sd-scripts is installed and the base model cached: the machine's business, not the LoRA's.
INSTALL_KEYS = ("sd_scripts_repo", "sd_scripts_commit", "cache_dir", "torch", "torch_index_url", "hub_cache")
# Keys that do not shape the trained LoRA: taken from the current config when a planned run is launched;
# every other key comes from the plan, so the estimate always describes the configs in the run folder.
RUNTIME_KEYS = (
    "sd_scripts",
    "launcher",
    "python",
    "gpu",
    "gpu_hourly_cost",
    "currency",
    "max_gpu_hours",
    "submit",
    "submit_caption",
    "mem_mb",
    "cpus_per_gpu",
    *INSTALL_KEYS,
)
# Inside a run folder. TensorBoard's event files go inside output/: the folder a rented machine's
# results travel home in (pod.sh), with the LoRA files, the measured speed and the console log.
RUN_DATASET, RUN_REG, RUN_PROMPTS = "dataset", "reg", "sample_prompts.txt"
RUN_OUTPUT, RUN_LOGGING = tables.TRAIN_OUTPUT_DIR, tables.TRAIN_LOGGING_DIR
MEASURED_NAME = "likeness_measured_speed.json"
RUN_LOG_NAME = "likeness_train.log"


@dataclass
class RunPlan:
    """A run folder and what it was planned with. Paths inside it are derived from ``run_dir``, so a run
    folder can move (a bundle unpacked on a rented GPU machine, a shared folder mounted elsewhere)."""

    run_id: str
    run_dir: str
    output_name: str
    trigger: str
    class_word: str
    train_sizes: list[tuple[int, int]]
    reg_sizes: list[tuple[int, int]]
    sample_steps: list[int]  # sampling steps of each line of sample_prompts.txt
    excluded: list[str]
    train_cfg: dict[str, Any]  # the train settings that shape the LoRA, "auto" resolved

    @property
    def output_dir(self) -> str:
        return str(Path(self.run_dir) / RUN_OUTPUT)

    @property
    def dataset_toml(self) -> str:
        return str(Path(self.run_dir) / "dataset.toml")

    @property
    def train_toml(self) -> str:
        return str(Path(self.run_dir) / "train.toml")

    @property
    def sample_prompts(self) -> str:
        return str(Path(self.run_dir) / RUN_PROMPTS)

    @property
    def estimate_json(self) -> str:
        return str(Path(self.run_dir) / "estimate.json")

    @property
    def final_lora(self) -> Path:
        return Path(self.output_dir) / names.final_model(self.output_name)

    @property
    def status_json(self) -> Path:
        return Path(self.run_dir) / "status.json"

    @property
    def measured_json(self) -> Path:
        """The measured speed, kept inside output/ so that it travels back with a pod's LoRA files."""
        return Path(self.output_dir) / MEASURED_NAME

    @property
    def run_log(self) -> Path:
        """The console output of every launch of the run, beside its LoRA files (it travels back with them)."""
        return Path(self.output_dir) / RUN_LOG_NAME

    @classmethod
    def load(cls, run_dir: str | Path) -> RunPlan:
        data = json.loads((Path(run_dir) / "plan.json").read_text(encoding="utf-8"))
        data["train_sizes"] = [tuple(s) for s in data["train_sizes"]]
        data["reg_sizes"] = [tuple(s) for s in data["reg_sizes"]]
        data["run_dir"] = str(run_dir)  # where it is now, not where it was planned
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def settings(self, current: Section) -> Section:
        """The settings a launch of this run uses: the plan's, with the machine's keys from ``current``."""
        values = current.as_dict()
        return section_settings("train", {**values, **self.train_cfg, **{k: values[k] for k in RUNTIME_KEYS}})


def caption_of(image: Path, captions_dir: Path) -> Path:
    return captions_dir / f"{image.stem}{names.CAPTION_EXTENSION}"


def _collect_images(folder: Path, captions_dir: Path | None, what: str) -> tuple[list[Path], list[str]]:
    """The images sd-scripts will load, in its order, and one readable reason for each file left out.
    ``captions_dir``: where each image's caption must be (None: captions are optional)."""
    listing = images.list_folder(folder)
    usable, excluded = [], [f"{p.name}: ignored by sd-scripts {RELEASE} (suffix)" for p in listing.ignored]
    for image in listing.images:
        if captions_dir and not caption_of(image, captions_dir).is_file():
            excluded.append(f"{image.name}: no caption file {caption_of(image, captions_dir).name}")
        elif images.image_size(image) is None:
            excluded.append(f"{image.name}: not a readable image")
        else:
            usable.append(image)
    return usable, [f"{what}{reason}" for reason in excluded]


def _give_run_copy(source: Path, target: Path, *, link: bool = False) -> None:
    """Give the run its own copy of an input file, so that later changes to the dataset cannot alter a run
    (which may be resumed days later). ``link``: a hard link where possible, for large regularisation sets
    (safe against the workflow's atomic replacements, not against editing a file in place)."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        if not link:
            raise OSError("copy requested")
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def _absolute_if_local(path_or_id: str) -> str:
    """A relative local path made absolute (sd-scripts runs inside the run folder); a repo id unchanged."""
    path = Path(path_or_id).expanduser()
    return str(path.resolve()) if path_or_id and path.exists() and not path.is_absolute() else path_or_id


def prepare_run(
    cfg: Section,
    images_dir: str | Path,
    captions_dir: str | Path,
    *,
    trigger: str,
    class_word: str | None = None,
    runs_root: str | Path,
    calibration_path: str | Path | None = None,
) -> RunPlan:
    """Create (or find) the run folder for these inputs; never touches any other run folder.

    ``images_dir`` holds the crops, ``captions_dir`` their ``<stem>.txt`` captions (the same folder is
    fine); the run's ``dataset/`` gets both, as sd-scripts reads them.
    """
    images_dir, captions_dir = Path(images_dir), Path(captions_dir)
    class_word = class_word or cfg.class_word
    train_images, excluded = _collect_images(images_dir, captions_dir, "")
    if not train_images:
        raise LikenessError(f"no usable training images in {images_dir} ({len(excluded)} excluded)")
    reg_images: list[Path] = []
    if cfg.reg_images:
        reg_dir = Path(cfg.reg_images).expanduser()
        if not reg_dir.is_dir():
            raise ConfigError("train.reg_images", f"{reg_dir} is not a folder")
        if not class_word:
            raise ConfigError("train.class_word", "regularisation images need a class word")
        reg_images, reg_excluded = _collect_images(reg_dir, None, "regularisation ")
        excluded += reg_excluded
    # "auto" repeats and epochs become numbers for this dataset: the configs, the run id and the plan
    # (and so every later estimate of this run) all see the same values.
    cfg = step_budget.resolve(cfg, len(train_images))
    prompt_text = prompts.sample_prompts_text(
        cfg.sample_prompts, trigger=trigger, class_word=class_word, resolution=cfg.resolution
    )
    # Masked faces (select.crowded: mask) are PNGs whose alpha is the loss mask: train with masked_loss.
    masked = any(images.has_alpha_mask(p) for p in train_images)
    # The run id covers what shapes the trained LoRA, with the run's own paths left out (they contain it).
    placeholder_dataset = configs.build_dataset_config(
        cfg, image_dir="<dataset>", reg_dir="<reg>" if reg_images else None, class_word=class_word, masked=masked
    )
    placeholder_train = configs.build_train_options(
        cfg, output_dir="<output>", sample_prompts_path="<prompts>", logging_dir=None, masked=masked
    )
    fingerprint = {
        "sd_scripts_release": RELEASE,
        "images": [(p.name, file_sha256(p), file_sha256(caption_of(p, captions_dir))) for p in train_images],
        "reg_images": [(p.name, file_sha256(p)) for p in reg_images],
        "dataset_toml": dumps_toml(placeholder_dataset),
        "train_toml": dumps_toml(placeholder_train),
        "sample_prompts": prompt_text,
        "base_model": bm.identity(cfg),  # a local path, or repo@revision/file
    }
    run_id = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:HASH_LENGTH]
    run_dir = Path(runs_root) / run_id
    for image in train_images:
        _give_run_copy(image, run_dir / RUN_DATASET / image.name)
        caption = caption_of(image, captions_dir)
        _give_run_copy(caption, run_dir / RUN_DATASET / caption.name)
    for image in reg_images:
        _give_run_copy(image, run_dir / RUN_REG / image.name, link=True)
        caption = caption_of(image, image.parent)
        if caption.is_file():
            _give_run_copy(caption, run_dir / RUN_REG / caption.name)
    dataset_doc = configs.build_dataset_config(
        cfg, image_dir=RUN_DATASET, reg_dir=RUN_REG if reg_images else None, class_word=class_word, masked=masked
    )
    train_doc = configs.build_train_options(
        dataclasses.replace(cfg, base_model=_absolute_if_local(str(cfg.base_model))),
        output_dir=RUN_OUTPUT,
        sample_prompts_path=RUN_PROMPTS,
        logging_dir=RUN_LOGGING,
        masked=masked,
    )
    plan = RunPlan(
        run_id=run_id,
        run_dir=str(run_dir),
        output_name=cfg.output_name,
        trigger=trigger,
        class_word=class_word,
        train_sizes=[images.image_size(p) for p in train_images],  # type: ignore[misc]
        reg_sizes=[images.image_size(p) for p in reg_images],  # type: ignore[misc]
        sample_steps=prompts.prompt_sampling_steps(prompt_text),
        excluded=excluded,
        train_cfg={k: v for k, v in cfg.as_dict().items() if k not in RUNTIME_KEYS},
    )
    write_if_changed(plan.dataset_toml, dumps_toml(dataset_doc).encode())
    write_if_changed(plan.train_toml, dumps_toml(train_doc).encode())
    write_if_changed(plan.sample_prompts, prompt_text.encode())
    write_if_changed(run_dir / "plan.json", (json.dumps(asdict(plan), indent=2, sort_keys=True) + "\n").encode())
    estimate = plan_estimate(plan, cfg, calibration_path or Path(runs_root) / "calibration.tsv")
    write_if_changed(plan.estimate_json, (json.dumps(estimate_record(estimate), indent=2) + "\n").encode())
    Path(plan.output_dir).mkdir(parents=True, exist_ok=True)
    return plan


def plan_estimate(
    plan: RunPlan,
    cfg: Section,
    calibration_path: str | Path | None,
    detected: Sequence[gpus.DetectedGpu] | None = None,
) -> est.Estimate:
    """The run's estimate; ``detected``: the GPUs of the machine it trains on (for train.gpu: auto)."""
    values, steps = cfg.as_dict(), plan.sample_steps
    return est.estimate(
        values, plan.train_sizes, plan.reg_sizes, calibration_path=calibration_path, sample_steps=steps,
        detected=detected,
    )  # fmt: skip


def estimate_record(estimate: est.Estimate) -> dict[str, Any]:
    return {
        "gpu": estimate.gpu,
        "steps_per_epoch": estimate.steps_per_epoch,
        "total_steps": estimate.total_steps,
        "epochs": estimate.steps.epochs,
        "seconds_per_step": estimate.seconds_per_step,
        "speed_source": estimate.speed_source,
        "overhead_seconds": estimate.overhead_seconds,
        "total_hours": estimate.total_hours,
        "cost": estimate.cost,
        "runtime_minutes": estimate.runtime_minutes,
        "budget_warning": estimate.budget_message(),
        "lines": estimate.format_lines(),
    }


@dataclass(frozen=True)
class DryRun:
    """What the dry run shows for the training job, from one estimate (computed while the Snakefile is read)."""

    lines: list[str]
    runtime_minutes: int  # Snakemake's ``runtime`` resource
    headshots_runtime_minutes: int = est.RUNTIME_EXTRA_MINUTES  # the headshots job's

    @property
    def message(self) -> str:
        """The lines as a rule ``message:`` (braces escaped for format), with the job's resources: the
        runtime as Snakemake evaluates it for the job (exact once the selection has run)."""
        text = "\n".join(self.lines).replace("{", "{{").replace("}", "}}")
        return f"{text}\n  resources: gpu=1, runtime={{resources.runtime}} min"


def dry_run(cfg: Section, images_dir: str | Path, *, max_images: int | None, runs_root: str | Path) -> DryRun:
    """The estimate for ``snakemake -n`` and the train job's ``runtime``; names the files sd-scripts would
    not load.

    ``max_images`` None: the selection is up to date, so the dataset folder is what will train and the
    figures are exact. Otherwise the selection runs first and keeps at most ``max_images`` faces: the figures
    are the longest training such a selection can make, labelled an upper bound.
    """
    calibration = Path(runs_root) / "calibration.tsv"
    if max_images is None:
        estimate, counted = est.estimate_for_folders(cfg.as_dict(), images_dir, calibration_path=calibration)
        note = f"exact: {counted}, the selection is up to date"
        lines = estimate.format_lines()
    else:
        reg_dir = Path(cfg.reg_images).expanduser() if cfg.reg_images else None
        reg_sizes = images.image_sizes(reg_dir) if reg_dir else []
        estimate = est.upper_bound_estimate(cfg.as_dict(), max_images, reg_sizes, calibration_path=calibration)
        note = (
            f"upper bound: the selection runs first and keeps at most {max_images} images; these figures are "
            f"the longest training such a selection can make ({estimate.steps.n_images} images). The train job's time "
            "limit and its launch use the exact count"
        )
        lines = estimate.format_lines()
        lines[0] = lines[0].replace("training estimate (", f"training estimate, {UPPER_BOUND} (", 1)
    headshots = estimate.overhead_seconds.get("headshots", 0.0)
    headshot_minutes = math.ceil(headshots * est.RUNTIME_MARGIN / 60) + est.RUNTIME_EXTRA_MINUTES
    ignored = [images.ignored_note(images.list_folder(images_dir), "dataset")] if max_images is None else []
    if cfg.reg_images:
        ignored.append(images.ignored_note(images.list_folder(Path(cfg.reg_images).expanduser()), "regularisation"))
    notes = [f"  WARNING: {line}" for line in ignored if line]
    return DryRun([*lines, f"  ({note})", *notes], estimate.runtime_minutes, headshot_minutes)


UPPER_BOUND = "upper bound"


def declared_inputs(cfg: Section, manifest: str, captions_table: str) -> dict[str, str]:
    """The train rule's inputs that say when the training's data changed.

    The images and caption folders (select_faces' and caption_faces' directory() outputs, which the rule
    declares beside these) are touched by every run of their jobs, so their changes are taken from the
    two tables that list their contents; Snakemake compares those by checksum. Regularisation images are
    the user's folder. The base model and sd-scripts are tools the job checks itself, not data: a deleted
    base model must not plan a finished training again.
    """
    inputs = {"manifest": manifest, "captions_table": captions_table}
    if cfg.reg_images:
        inputs["reg_images"] = str(Path(cfg.reg_images).expanduser())
    return inputs


def most_images(top_n: int, faces: int) -> int:
    """The most images a selection can keep: select.top_n of the faces there are."""
    return min(top_n, faces)


def expected_images(manifest: str | Path, top_n: int, faces: int) -> int:
    """Images the training will see, for the job's memory: the manifest's rows once selection ran, else at
    most select.top_n of the faces there are."""
    rows = tables.count_rows(manifest)
    return rows if rows is not None else min(top_n, faces)


def as_plan(plan: RunPlan | str | Path) -> RunPlan:
    return plan if isinstance(plan, RunPlan) else RunPlan.load(plan)
