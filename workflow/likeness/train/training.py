"""Run the LoRA training: one run folder per input, resume after interruptions, never start by accident.

A run folder ``results/train/<run_id>/`` is named by a hash of everything that shapes the result (the
images and captions, the generated configs, the base model), so a changed dataset or config trains into a
new folder and earlier runs, their per-epoch LoRAs and samples stay. Inside it sd-scripts writes to
``output/``; after an interruption the same command resumes from the newest complete per-epoch state
(``--resume <state> --initial_epoch <E+1>``, the recipe that avoids sd-scripts' resume-counter bugs).

Before launching, the budget guard compares the estimate with ``train.max_gpu_hours``; where no GPU,
sd-scripts checkout or base model is available the stage stops at a ready-to-launch run folder
(``status.json`` state ``ready``), prints the estimate and one line on how to launch, and succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from likeness.atomic import atomic_write_bytes, atomic_write_json, write_if_changed
from likeness.config import section_settings
from likeness.errors import ConfigError, LikenessError
from likeness.train import base_model as bm
from likeness.train import estimate as est
from likeness.train import kohya, step_budget
from likeness.train import trainer_install as ti

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "train.schema.yaml"
LAUNCH_COMMAND = "snakemake --cores 2 train"  # what the README tells users to run; printed in the ready line
ALLOW_NO_GPU_ENV = "LIKENESS_ALLOW_NO_GPU"  # tests only: run the test double without a GPU
PROGRESS_INTERVAL_ENV = "LIKENESS_PROGRESS_SECONDS"
# The files accelerate.save_state writes for sd-scripts' LoRA training, in the order it writes them
# (train_state.json comes first, from sd-scripts' save hook; the RNG states come last).
STATE_FILES = (
    "train_state.json",
    "model.safetensors",
    "optimizer.bin",
    "scheduler.bin",
    "random_states_0.pkl",
)
TORCH_ZIP_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl")  # torch.save's zip container
HASH_LENGTH = 12
FINAL_STATES = ("ready", "done")
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
# Inside a run folder. The TOMLs name these relative to the run folder (sd-scripts runs with it as its
# working directory), so a run folder trains wherever it is unpacked.
RUN_DATASET, RUN_REG, RUN_OUTPUT, RUN_PROMPTS = "dataset", "reg", "output", "sample_prompts.txt"
MEASURED_NAME = "likeness_measured_speed.json"
RUN_LOG_NAME = "likeness_train.log"
# The train rule's readiness param (see readiness_param).
LAUNCHABLE = "ready to launch"


# --- config -------------------------------------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def train_config(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``train`` section with the schema's defaults filled in, validated (ConfigError names the key)."""
    import jsonschema

    schema = _schema()
    cfg = {key: spec.get("default") for key, spec in schema["properties"].items()}
    cfg.update(dict(raw or {}))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.path)
        if error.validator == "additionalProperties":
            unknown = sorted(set(cfg) - set(schema["properties"]))
            key = unknown[0] if unknown else key
            raise ConfigError(f"train.{key}", "unknown key")
        raise ConfigError(f"train.{key}" if key else "train", error.message)
    kohya.validate_extra(cfg.get("extra"))
    return cfg


# --- run plan -----------------------------------------------------------------------------------------------


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
    train_cfg: dict[str, Any]

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
        return Path(self.output_dir) / f"{self.output_name}.safetensors"

    @property
    def status_json(self) -> Path:
        return Path(self.run_dir) / "status.json"

    @property
    def measured_json(self) -> Path:
        """The measured speed, kept inside output/ so that it travels back with a pod's LoRA files."""
        return Path(self.output_dir) / MEASURED_NAME

    @classmethod
    def load(cls, run_dir: str | Path) -> RunPlan:
        data = json.loads((Path(run_dir) / "plan.json").read_text(encoding="utf-8"))
        data["train_sizes"] = [tuple(s) for s in data["train_sizes"]]
        data["reg_sizes"] = [tuple(s) for s in data["reg_sizes"]]
        data["run_dir"] = str(run_dir)  # where it is now, not where it was planned
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _collect_images(folder: Path, *, need_caption: bool) -> tuple[list[Path], list[str]]:
    """Usable images in sd-scripts' order, and one readable reason for each excluded file."""
    usable, excluded = [], []
    for image in est.list_images(folder):
        if need_caption and not image.with_suffix(".txt").is_file():
            excluded.append(f"{image.name}: no caption file {image.with_suffix('.txt').name}")
        elif est.read_image_size(image) is None:
            excluded.append(f"{image.name}: not a readable image")
        else:
            usable.append(image)
    return usable, excluded


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


def base_model_problem(base_model: str) -> str | None:
    """Why the base model cannot be used (None when it is a local file/folder or a repo id, fetched at launch)."""
    if not base_model:
        return "train.base_model is not set"
    if bm.is_repo_id(base_model) or Path(base_model).expanduser().exists():
        return None
    return f"train.base_model {base_model!r} does not exist"


def _absolute_if_local(path_or_id: str) -> str:
    """A relative local path made absolute (sd-scripts runs inside the run folder); a repo id unchanged."""
    path = Path(path_or_id).expanduser()
    return str(path.resolve()) if path_or_id and path.exists() and not path.is_absolute() else path_or_id


def prepare_run(
    cfg: Mapping[str, Any],
    dataset_dir: str | Path,
    *,
    trigger: str,
    class_word: str | None = None,
    runs_root: str | Path = "results/train",
    calibration_path: str | Path | None = None,
) -> RunPlan:
    """Create (or find) the run folder for these inputs; never touches any other run folder.

    ``cfg`` is the ``train`` section (defaults are filled in here). The folder holds dataset.toml,
    train.toml, sample_prompts.txt, estimate.json, plan.json, the run's own copy of the images
    (``dataset/``, where sd-scripts also caches latents) and ``output/`` for sd-scripts.
    """
    cfg = train_config(cfg)
    dataset_dir = Path(dataset_dir)
    class_word = class_word or cfg["class_word"]
    images, excluded = _collect_images(dataset_dir, need_caption=True)
    if not images:
        raise LikenessError(f"no usable training images in {dataset_dir} ({len(excluded)} excluded)")
    reg_images: list[Path] = []
    if cfg["reg_images"]:
        reg_dir = Path(cfg["reg_images"]).expanduser()
        if not reg_dir.is_dir():
            raise ConfigError("train.reg_images", f"{reg_dir} is not a folder")
        if not class_word:
            raise ConfigError("train.class_word", "regularisation images need a class word")
        reg_images, reg_excluded = _collect_images(reg_dir, need_caption=False)
        excluded += [f"regularisation {reason}" for reason in reg_excluded]
    # "auto" repeats and epochs become numbers for this dataset: the configs, the run id and the plan
    # (and so every later estimate of this run) all see the same values.
    cfg = step_budget.resolve(cfg, len(images))
    prompts = kohya.sample_prompts_text(
        cfg["sample_prompts"], trigger=trigger, class_word=class_word, resolution=cfg["resolution"]
    )
    # The run id covers what shapes the trained LoRA, with the run's own paths left out (they contain it).
    placeholder_dataset = kohya.build_dataset_config(
        cfg, image_dir="<dataset>", reg_dir="<reg>" if reg_images else None, class_word=class_word
    )
    placeholder_train = kohya.build_train_options(
        cfg, output_dir="<output>", sample_prompts_path="<prompts>", logging_dir=None
    )
    fingerprint = {
        "sd_scripts_release": kohya.SD_SCRIPTS_RELEASE,
        "images": [(p.name, _sha256(p), _sha256(p.with_suffix(".txt"))) for p in images],
        "reg_images": [(p.name, _sha256(p)) for p in reg_images],
        "dataset_toml": kohya.dumps_toml(placeholder_dataset),
        "train_toml": kohya.dumps_toml(placeholder_train),
        "sample_prompts": prompts,
        "base_model": bm.identity(section_settings("train", cfg)),  # a local path, or repo@revision/file
    }
    run_id = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:HASH_LENGTH]
    run_dir = Path(runs_root) / run_id
    for image in images:
        _give_run_copy(image, run_dir / RUN_DATASET / image.name)
        _give_run_copy(image.with_suffix(".txt"), run_dir / RUN_DATASET / image.with_suffix(".txt").name)
    for image in reg_images:
        _give_run_copy(image, run_dir / RUN_REG / image.name, link=True)
        caption = image.with_suffix(".txt")
        if caption.is_file():
            _give_run_copy(caption, run_dir / RUN_REG / caption.name)
    # Paths relative to the run folder, sd-scripts' working directory: the folder can be trained wherever it
    # is (a Slurm node mounting it elsewhere, a bundle unpacked on a rented GPU machine).
    dataset_doc = kohya.build_dataset_config(
        cfg, image_dir=RUN_DATASET, reg_dir=RUN_REG if reg_images else None, class_word=class_word
    )
    train_doc = kohya.build_train_options(
        {**cfg, "base_model": _absolute_if_local(str(cfg["base_model"]))},
        output_dir=RUN_OUTPUT,
        sample_prompts_path=RUN_PROMPTS,
        logging_dir=None,
    )
    plan = RunPlan(
        run_id=run_id,
        run_dir=str(run_dir),
        output_name=cfg["output_name"],
        trigger=trigger,
        class_word=class_word,
        train_sizes=[est.read_image_size(p) for p in images],  # type: ignore[misc]
        reg_sizes=[est.read_image_size(p) for p in reg_images],  # type: ignore[misc]
        sample_steps=kohya.prompt_sampling_steps(prompts),
        excluded=excluded,
        train_cfg={k: v for k, v in cfg.items() if k not in RUNTIME_KEYS},
    )
    write_if_changed(plan.dataset_toml, kohya.dumps_toml(dataset_doc).encode())
    write_if_changed(plan.train_toml, kohya.dumps_toml(train_doc).encode())
    write_if_changed(plan.sample_prompts, prompts.encode())
    write_if_changed(run_dir / "plan.json", (json.dumps(asdict(plan), indent=2, sort_keys=True) + "\n").encode())
    estimate = plan_estimate(plan, cfg, calibration_path or Path(runs_root) / "calibration.tsv")
    write_if_changed(plan.estimate_json, (json.dumps(estimate_record(estimate), indent=2) + "\n").encode())
    (Path(plan.output_dir)).mkdir(parents=True, exist_ok=True)
    return plan


def plan_estimate(plan: RunPlan, cfg: Mapping[str, Any], calibration_path: str | Path | None) -> est.Estimate:
    return est.estimate(
        cfg, plan.train_sizes, plan.reg_sizes, calibration_path=calibration_path, sample_steps=plan.sample_steps
    )


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


# --- states -------------------------------------------------------------------------------------------------


def _valid_safetensors(path: Path) -> bool:
    """Header parses and the data it announces fits in the file (a file cut short by a kill does not)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                return False
            header = json.loads(handle.read(header_len))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return 8 + header_len + max(ends, default=0) <= size
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def state_epoch(state_dir: str | Path) -> int | None:
    """The epoch a saved state finished, or None when the state is incomplete (killed while saving)."""
    state_dir = Path(state_dir)
    if not all((state_dir / name).is_file() and (state_dir / name).stat().st_size > 0 for name in STATE_FILES):
        return None
    try:
        data = json.loads((state_dir / "train_state.json").read_text(encoding="utf-8"))
        epoch = data["current_epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return None
    if not _valid_safetensors(state_dir / "model.safetensors"):
        return None
    if not all(zipfile.is_zipfile(state_dir / name) for name in TORCH_ZIP_FILES):
        return None
    return epoch


def find_resume_state(output_dir: str | Path, output_name: str) -> tuple[Path, int] | None:
    """The newest complete per-epoch state ``<name>-<E:06d>-state`` and its epoch E (skips half-written)."""
    pattern = re.compile(rf"^{re.escape(output_name)}-(\d{{6}})-state$")
    candidates = []
    output = Path(output_dir)
    if output.is_dir():
        for entry in output.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_dir():
                candidates.append((int(match.group(1)), entry))
    for folder_epoch, folder in sorted(candidates, reverse=True):
        epoch = state_epoch(folder)
        if epoch is not None and epoch == folder_epoch:
            return folder, epoch
    return None


def training_finished(plan: RunPlan) -> bool:
    return _valid_safetensors(plan.final_lora)


# --- readiness ----------------------------------------------------------------------------------------------


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of the usable NVIDIA GPUs (``nvidia-smi -L``); the test override returns a pseudo entry."""
    env = os.environ if env is None else env
    if env.get(ALLOW_NO_GPU_ENV) == "1":
        return [f"no GPU check ({ALLOW_NO_GPU_ENV}=1)"]
    if env.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", result.stdout, re.M)]


def launcher_argv(cfg: Mapping[str, Any]) -> list[str]:
    launcher = shlex.split(str(cfg.get("launcher") or ""))
    argv = launcher or [str(cfg.get("python") or sys.executable)]
    # A relative program path (".venv/bin/python") means the workflow's folder, not the run folder.
    if os.sep in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = os.path.abspath(argv[0])
    return argv


def missing_for_launch(
    cfg: Mapping[str, Any], env: Mapping[str, str] | None = None, *, check_gpu: bool = True
) -> list[str]:
    """What stops the training from running here (empty when it can run). ``check_gpu=False``: the job
    runs on another machine (a Slurm node), whose GPU this one cannot see."""
    missing = []
    if check_gpu and not detect_gpus(env):
        missing.append("no GPU found (nvidia-smi -L)")
    sd_scripts = str(cfg.get("sd_scripts") or "")
    if not sd_scripts:
        missing.append("train.sd_scripts is not set")
    elif sd_scripts != "auto" and not (Path(sd_scripts).expanduser() / "sdxl_train_network.py").is_file():
        missing.append(f"train.sd_scripts {sd_scripts!r} has no sdxl_train_network.py")
    problem = base_model_problem(str(cfg.get("base_model") or ""))
    if problem:
        missing.append(problem)
    program = launcher_argv(cfg)[0]
    # with "auto" the launcher (accelerate, python) comes from the environment the install builds
    if sd_scripts != "auto" and not (shutil.which(program) or Path(program).is_file()):
        missing.append(f"launcher {program!r} not found (train.launcher / train.python)")
    return missing


def launch_readiness(cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """What the launch depends on, in a few words: LAUNCHABLE or what is missing. With ``train.submit``
    (profiles/slurm) the GPU is the compute node's: this machine's is not looked for."""
    cfg = train_config(cfg)
    missing = missing_for_launch(cfg, env, check_gpu=not cfg["submit"])
    return LAUNCHABLE if not missing else "missing: " + "; ".join(missing)


def _read_status(status_path: str | Path) -> dict[str, Any] | None:
    try:
        record = json.loads(Path(status_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def finished_elsewhere(cfg: Mapping[str, Any], status_path: str | Path, inputs: Sequence[str | Path] = ()) -> bool:
    """The run status.json left at 'ready' has its LoRA now (trained on another machine, output/ copied back),
    and neither the config nor the ``inputs`` (the dataset's tables) changed since it was planned: the next
    train job only records it as done."""
    status = _read_status(status_path)
    if not status or status.get("state") != "ready":
        return False
    try:
        plan = RunPlan.load(Path(str(status.get("run_dir", ""))))
        planned = (Path(plan.run_dir) / "plan.json").stat().st_mtime
        if any(Path(p).stat().st_mtime > planned for p in inputs):
            return False
    except (OSError, ValueError, TypeError, KeyError):
        return False
    # A setting left to "auto" (a step budget that follows the dataset) matches what the plan resolved it to.
    changed = [
        key
        for key, value in train_config(cfg).items()
        if key not in RUNTIME_KEYS and value != "auto" and plan.train_cfg.get(key) != value
    ]
    return not changed and training_finished(plan)


def record_finished_elsewhere(
    status_path: str | Path, log_path: str | Path, calibration_path: str | Path, out: TextIO | None = None
) -> bool:
    """Mark the 'ready' run whose LoRA was copied back as done, as the train job would have: the rule's
    status (keeping the readiness value its job ran with, so Snakemake plans nothing), the training's
    log (from output/likeness_train.log) and its measured speed in this machine's calibration table.

    Called when a run starts (the Snakefile's onstart, holding the working directory's lock) only when
    ``finished_elsewhere`` said so while the Snakefile was read; returns whether it recorded anything.
    """
    out = out or sys.stdout
    status = _read_status(status_path)
    if not status or status.get("state") != "ready":
        return False
    try:
        plan = RunPlan.load(Path(str(status["run_dir"])))
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if not training_finished(plan):
        return False
    _restore_training_log(plan, log_path)
    imported = import_measured_speed(plan, calibration_path)
    details = {"readiness": status["readiness"]} if isinstance(status.get("readiness"), str) else {}
    _write_status(plan, status_path, "done", finished_elsewhere=True, **details)
    measured = f"; measured {imported:.3f} s/step, stored in {calibration_path}" if imported else ""
    out.write(f"likeness: training {plan.run_id} finished elsewhere: {plan.final_lora} recorded as done{measured}\n")
    return True


def readiness_param(cfg: Mapping[str, Any], status_path: str | Path, env: Mapping[str, str] | None = None) -> str:
    """The train rule's ``ready`` param: it changes only when a run that stopped at 'ready' can now go on.

    Snakemake re-runs a job whose param differs from the one recorded when the job last ran, so the value
    must come out the same before and after the job. The job writes the value it ran with into
    status.json ("readiness"); reading it back keeps a finished training finished whatever this machine
    lacks later (no GPU, a deleted base model). A 'ready' run is planned again when the launch has become
    possible here, unless its LoRA is already in the run folder (trained on a rented machine and copied
    back: ``record_finished_elsewhere`` marks it done when the next run starts, no job needed).
    """
    status = _read_status(status_path)
    recorded = status.get("readiness") if status else None
    if status is None or not isinstance(recorded, str):
        return launch_readiness(cfg, env)  # nothing run yet (or a status from before this param existed)
    if status.get("state") == "ready":
        run_dir = Path(str(status.get("run_dir", "")))
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            if training_finished(RunPlan.load(run_dir)):
                return recorded
        now = launch_readiness(cfg, env)
        if now == LAUNCHABLE:
            return now
    return recorded


def launch_command(
    cfg: Mapping[str, Any], plan: RunPlan, resume: tuple[Path, int] | None, model_file: str | None = None
) -> list[str]:
    """sd-scripts' command line, run inside the run folder: its files are named relative to it.

    ``model_file``: the downloaded base model, which replaces the repo id that train.toml names
    (sd-scripts' command line wins over its config file)."""
    script = Path(str(cfg["sd_scripts"])).expanduser().resolve() / "sdxl_train_network.py"
    command = [*launcher_argv(cfg), str(script), "--config_file", "train.toml", "--dataset_config", "dataset.toml"]
    if model_file:
        command += ["--pretrained_model_name_or_path", model_file]
    if resume:
        state_dir, epoch = resume
        state = f"{RUN_OUTPUT}/{state_dir.name}"
        command += ["--resume", state, "--initial_epoch", str(epoch + 1)]
    return command


# --- progress and measured speed ----------------------------------------------------------------------------

# sd-scripts' tqdm bar: "steps:  50%|#####     | 10/20 [00:30<00:30,  3.00s/it, avr_loss=0.1]"
TQDM_STEPS = re.compile(
    r"steps:\s*\d+%.*?\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+),\s*"
    r"(?P<rate>[\d.]+)(?P<unit>s/it|it/s)"
)
EPOCH_LINE = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    left: str
    seconds_per_step: float


def parse_progress(fragment: str) -> Progress | None:
    match = TQDM_STEPS.search(fragment)
    if not match:
        return None
    rate = float(match.group("rate"))
    if rate <= 0:
        return None
    seconds = rate if match.group("unit") == "s/it" else 1.0 / rate
    return Progress(int(match.group("n")), int(match.group("total")), match.group("left"), seconds)


def measured_seconds_per_step(log_text: str, min_steps: int = 2) -> float | None:
    """The average s/step of the last progress bar line (sd-scripts' bar uses smoothing=0: a run average).

    A resumed run's bar counts only the steps it ran, so the figure is that invocation's own average.
    """
    last = None
    for fragment in re.split(r"[\r\n]", log_text):
        progress = parse_progress(fragment)
        if progress and progress.done >= min_steps:
            last = progress
    return last.seconds_per_step if last else None


# --- running ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[bool]:
    """An exclusive lock on the run folder (released by the kernel even on SIGKILL)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _forward_signals(process: subprocess.Popen[bytes], received: list[int]) -> Iterator[None]:
    """Pass SIGINT/SIGTERM on to the training (it saves nothing on them; the last state stays the resume
    point) and remember them, so that this process exits as interrupted rather than as failed."""

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    except ValueError:  # not the main thread: signals reach the child through its process group anyway
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _write_status(plan: RunPlan, status_path: str | Path | None, state: str, **details: Any) -> dict[str, Any]:
    record = {
        "state": state,
        "run_id": plan.run_id,
        "run_dir": plan.run_dir,
        "lora": str(plan.final_lora) if state == "done" else None,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        **details,
    }
    atomic_write_json(plan.status_json, record)
    # The rule's output only ever holds a final state: after a kill it is absent, so Snakemake simply
    # runs the job again (which resumes) instead of asking for --rerun-incomplete.
    if status_path and state in FINAL_STATES:
        atomic_write_json(status_path, record)
    return record


def _stream_child(process: subprocess.Popen[bytes], log: Any, out: TextIO, interval: float) -> str:
    """Copy the child's output to the log; print a progress line (steps, s/step, ETA) every ``interval`` s."""
    assert process.stdout is not None
    captured: list[str] = []
    pending = ""
    epoch = "?"
    last_print = 0.0
    fd = process.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        text = chunk.decode("utf-8", errors="replace")
        captured.append(text)
        pending += text
        *fragments, pending = re.split(r"[\r\n]", pending)
        for fragment in fragments:
            epoch_match = EPOCH_LINE.match(fragment)
            if epoch_match:
                epoch = f"{epoch_match.group(1)}/{epoch_match.group(2)}"
                continue
            progress = parse_progress(fragment)
            now = time.monotonic()
            if progress and (now - last_print >= interval or progress.done == progress.total):
                last_print = now
                out.write(
                    f"training: epoch {epoch}, step {progress.done}/{progress.total}, "
                    f"{progress.seconds_per_step:.2f} s/step, ETA {progress.left}\n"
                )
                out.flush()
    return "".join(captured)


def run_training(
    plan: RunPlan | str | Path,
    cfg: Mapping[str, Any],
    log_path: str | Path,
    *,
    status_path: str | Path | None = None,
    calibration_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    readiness: str | None = None,
) -> int:
    """Train (or resume) the run; returns the exit code for the Snakemake job.

    ``readiness``: the rule's readiness param, recorded in status.json for ``readiness_param``.

    0: finished (status 'done'), or stopped at a ready-to-launch folder because the GPU, sd-scripts or the
    base model is missing here (status 'ready'). Non-zero: refused by the budget guard, another training
    holds the folder, or the training was interrupted or failed (run again to resume).
    """
    out = out or sys.stdout
    plan = plan if isinstance(plan, RunPlan) else RunPlan.load(plan)
    current = train_config(cfg)
    cfg = {**plan.train_cfg, **{key: current[key] for key in RUNTIME_KEYS}}
    runs_root = Path(plan.run_dir).parent
    calibration_path = calibration_path or runs_root / "calibration.tsv"
    estimate = plan_estimate(plan, cfg, calibration_path)
    for line in estimate.format_lines():
        out.write(line + "\n")
    for reason in plan.excluded:
        out.write(f"excluded: {reason}\n")

    details = {} if readiness is None else {"readiness": readiness}
    if training_finished(plan):
        _restore_training_log(plan, log_path)
        imported = import_measured_speed(plan, calibration_path)
        if imported:
            out.write(f"measured {imported:.3f} s/step (recorded with the run); stored in {calibration_path}\n")
        _write_status(plan, status_path, "done", **details)
        out.write(f"training already finished: {plan.final_lora}\n")
        return 0
    # Nothing can start without a GPU, sd-scripts and a base model: then the run only prepares the
    # training (its estimate lines above carry any budget warning) and succeeds, as the demo must.
    run_env = dict(os.environ if env is None else env)
    missing = missing_for_launch(cfg, run_env)
    if missing:
        (Path(plan.run_dir) / "READY").write_text(" ".join(launch_command_preview(cfg, plan)) + "\n")
        _write_status(plan, status_path, "ready", missing=missing, estimate=estimate_record(estimate), **details)
        out.write(f"training is ready in {plan.run_dir}/ ({'; '.join(missing)}): fix that and run `{LAUNCH_COMMAND}`\n")
        return 0
    budget = estimate.budget_message()
    if budget:
        out.write(f"training refused: {budget}\n")
        return 2

    with _run_lock(Path(plan.run_dir)) as locked:
        if not locked:
            out.write(f"training refused: another training is running in {plan.run_dir}/\n")
            return 3
        cfg, model_file, trainer = _launch_inputs(cfg, log_path, run_env, out)
        # which sd-scripts, torch and base model trained this run (a resume may use a newer install)
        record = {"sd_scripts": cfg["sd_scripts"], "base_model": model_file or cfg["base_model"], **trainer}
        atomic_write_json(Path(plan.run_dir) / "trainer.json", record)
        return _launch(plan, cfg, log_path, status_path, calibration_path, run_env, out, details, model_file)


def _launch_inputs(
    cfg: Mapping[str, Any], log_path: str | Path, env: dict[str, str], out: TextIO
) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """Install sd-scripts ("auto") and fetch the base model (a repo id): only now, right before the launch.

    Returns the config pointing at the install, the downloaded model file (None for a local file, which
    train.toml already names) and the install's versions record (empty for a given checkout).
    """

    def say(line: str) -> None:
        out.write(f"{line}\n")
        out.flush()

    model_file = None
    if bm.is_repo_id(str(cfg.get("base_model") or "")):  # first: offline without it fails at once
        model_file = str(bm.resolve(section_settings("train", cfg), log=say).absolute())
        say(f"base model: {model_file}")
    settings, versions = dict(cfg), {}
    if str(cfg.get("sd_scripts")) == "auto":
        install = ti.ensure_installed(cfg, log_path, env=env, log=say)
        say(f"trainer: {ti.describe(install)} in {install.root}/")
        settings, versions = ti.launch_settings(cfg, install), {"installed": install.versions}
    return settings, model_file, versions


def _restore_training_log(plan: RunPlan, log_path: str | Path) -> None:
    """The rule's log for a run that finished elsewhere: the copy of sd-scripts' log kept in output/."""
    run_log, log_path = Path(plan.output_dir) / RUN_LOG_NAME, Path(log_path)
    if run_log.is_file():
        if not log_path.is_file() or log_path.read_bytes() != run_log.read_bytes():
            atomic_write_bytes(log_path, run_log.read_bytes())
    elif not log_path.is_file():
        atomic_write_bytes(log_path, f"training {plan.run_id} finished elsewhere; its log was not kept\n".encode())


def import_measured_speed(plan: RunPlan, calibration_path: str | Path) -> float | None:
    """Store the speed a run measured elsewhere (output/likeness_measured_speed.json) in this machine's
    calibration table, once; returns the seconds per step it added."""
    try:
        data = json.loads(plan.measured_json.read_text(encoding="utf-8"))
        row = est.SpeedRow(**{f.name: data[f.name] for f in fields(est.SpeedRow)})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any((known.gpu, known.source) == (row.gpu, row.source) for known in est.load_calibration(calibration_path)):
        return None
    est.record_calibration(calibration_path, row)
    return float(row.seconds_per_step)


def declared_inputs(cfg: Mapping[str, Any], manifest: str, captions: str) -> dict[str, str]:
    """The train rule's inputs: every file the training reads from this workflow's data.

    The dataset folder holds exactly the crops the manifest lists, with the captions captions.tsv lists,
    so the two tables stand for it (listing each image would change the input list between the first run
    and the next, and Snakemake would plan the training again). Regularisation images are the user's
    folder. The base model and sd-scripts are tools the job checks itself, not data: a deleted base model
    must not plan a finished training again.
    """
    inputs = {"manifest": manifest, "captions": captions}
    reg_images = str(train_config(cfg)["reg_images"])
    if reg_images:
        inputs["reg_images"] = str(Path(reg_images).expanduser())
    return inputs


def launch_command_preview(cfg: Mapping[str, Any], plan: RunPlan) -> list[str]:
    sd_scripts = str(cfg.get("sd_scripts") or "<train.sd_scripts>")
    if sd_scripts == "auto":  # where install_trainer puts it (the torch build follows the machine's driver)
        sd_scripts = f"{cfg['cache_dir']}/sd-scripts-{str(cfg['sd_scripts_commit'])[:12]}-<torch build>/sd-scripts"
    return launch_command({**cfg, "sd_scripts": sd_scripts}, plan, find_resume_state(plan.output_dir, plan.output_name))


def _launch(
    plan: RunPlan,
    cfg: Mapping[str, Any],
    log_path: str | Path,
    status_path: str | Path | None,
    calibration_path: str | Path,
    env: dict[str, str],
    out: TextIO,
    details: Mapping[str, Any],
    model_file: str | None = None,
) -> int:
    with contextlib.suppress(FileNotFoundError):
        (Path(plan.run_dir) / "READY").unlink()
    resume = find_resume_state(plan.output_dir, plan.output_name)
    command = launch_command(cfg, plan, resume, model_file)
    start_note = f"resuming from {resume[0].name} (epoch {resume[1] + 1})" if resume else "starting from epoch 1"
    out.write(f"training {plan.run_id}: {start_note}; log: {log_path}\n")
    out.flush()
    _write_status(plan, status_path, "running", command=command)
    # sd-scripts runs inside the run folder; its own folder on PYTHONPATH keeps its `library` package importable
    # whatever the launcher does with the working directory.
    sd_scripts = str(Path(str(cfg["sd_scripts"])).expanduser().resolve())
    python_path = os.pathsep.join(p for p in (sd_scripts, env.get("PYTHONPATH", "")) if p)
    env = {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
    log_file = Path(log_path)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    interval = float(env.get(PROGRESS_INTERVAL_ENV, "30"))
    received: list[int] = []
    started = time.monotonic()
    with log_file.open("ab") as log:
        log.write(f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')} {shlex.join(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                cwd=str(Path(plan.run_dir).resolve()),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
        except OSError as error:
            out.write(f"training could not start: {error}\n")
            _write_status(plan, status_path, "failed", error=str(error))
            return 1
        with _forward_signals(process, received):
            output = _stream_child(process, log, out, interval)
            code = process.wait()
    elapsed = time.monotonic() - started
    if received:
        _write_status(plan, status_path, "interrupted", signal=received[0])
        out.write(f"training interrupted by signal {received[0]}; run `{LAUNCH_COMMAND}` again to resume\n")
        return 128 + received[0]
    if code != 0 or not training_finished(plan):
        latest = find_resume_state(plan.output_dir, plan.output_name)
        where = f"from epoch {latest[1] + 1}" if latest else "from the start (no complete state yet)"
        out.write(f"training stopped (exit code {code}; see {log_path}); running it again resumes {where}\n")
        _write_status(plan, status_path, "failed", exit_code=code)
        return code or 1
    measured = measured_seconds_per_step(output)
    if measured:
        row = est.SpeedRow(
            gpu=str(cfg["gpu"]),
            vram_gb=0.0,
            resolution=int(cfg["resolution"]),
            batch_size=int(cfg["batch_size"]),
            gradient_checkpointing="yes" if cfg["gradient_checkpointing"] else "no",
            seconds_per_step=round(measured, 4),
            source=f"measured: run {plan.run_id}, {datetime.now(UTC).date().isoformat()}",
            conditions=", ".join(detect_gpus(env)) or "",
        )
        # Beside the LoRA files too: copying output/ back from a rented machine brings the figure home.
        atomic_write_json(plan.measured_json, asdict(row))
        est.record_calibration(calibration_path, row)
        out.write(f"measured {measured:.3f} s/step on {cfg['gpu']}; stored in {calibration_path}\n")
    # The training's log beside its LoRA files too (the loss curve comes from it), for the same reason.
    atomic_write_bytes(Path(plan.output_dir) / RUN_LOG_NAME, log_file.read_bytes())
    _write_status(plan, status_path, "done", seconds=round(elapsed, 1), measured_seconds_per_step=measured, **details)
    out.write(f"training finished: {plan.final_lora}\n")
    return 0


def train_stage(
    cfg: Mapping[str, Any],
    dataset_dir: str | Path,
    *,
    trigger: str,
    class_word: str | None,
    log_path: str | Path,
    status_path: str | Path,
    runs_root: str | Path = "results/train",
    readiness: str | None = None,
) -> int:
    """What the Snakemake rule calls: prepare (or find) the run folder, then train, resume or stop."""
    plan = prepare_run(cfg, dataset_dir, trigger=trigger, class_word=class_word, runs_root=runs_root)
    return run_training(plan, cfg, log_path, status_path=status_path, readiness=readiness)


@dataclass(frozen=True)
class DryRun:
    """What the dry run shows for the training job, from one estimate (computed while the Snakefile is read)."""

    lines: list[str]
    runtime_minutes: int  # Snakemake's ``runtime`` resource
    headshots_runtime_minutes: int = est.RUNTIME_EXTRA_MINUTES  # the headshots job's (likeness.train.headshots)

    @property
    def message(self) -> str:
        """The lines as a rule ``message:`` (braces escaped for format), with the job's resources."""
        text = "\n".join([*self.lines, f"  resources: gpu=1, runtime={self.runtime_minutes} min"])
        return text.replace("{", "{{").replace("}", "}}")


def dry_run(
    cfg: Mapping[str, Any],
    dataset_dir: str | Path,
    *,
    assumed_images: int,
    runs_root: str | Path = "results/train",
) -> DryRun:
    """The estimate for ``snakemake -n``: counts the dataset when it exists, else ``assumed_images``."""
    cfg = train_config(cfg)
    estimate, note = est.estimate_for_folders(
        cfg, dataset_dir, assumed_images=assumed_images, calibration_path=Path(runs_root) / "calibration.tsv"
    )
    headshots = estimate.overhead_seconds.get("headshots", 0.0)
    headshot_minutes = math.ceil(headshots * est.RUNTIME_MARGIN / 60) + est.RUNTIME_EXTRA_MINUTES
    return DryRun([*estimate.format_lines(), f"  ({note})"], estimate.runtime_minutes, headshot_minutes)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m likeness.train.training``: the training stage from a config file (for a shell rule)."""
    parser = argparse.ArgumentParser(prog="python -m likeness.train.training", description=main.__doc__)
    parser.add_argument("--configfile", required=True, help="YAML config with a 'train' section")
    parser.add_argument("--dataset", required=True, help="folder of <uid>.jpg + <uid>.txt")
    parser.add_argument("--trigger", required=True)
    parser.add_argument("--class-word", default="")
    parser.add_argument("--log", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--runs-root", default="results/train")
    args = parser.parse_args(argv)
    try:
        config = yaml.safe_load(Path(args.configfile).read_text(encoding="utf-8")) or {}
        return train_stage(
            config.get("train") or {},
            args.dataset,
            trigger=args.trigger,
            class_word=args.class_word or None,
            log_path=args.log,
            status_path=args.status,
            runs_root=args.runs_root,
        )
    except LikenessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
