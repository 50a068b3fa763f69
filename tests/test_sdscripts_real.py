"""Opt-in: the workflow drives the real sd-scripts v0.10.1 ``sdxl_train_network.py`` on the CPU with the
generated configs; the run is killed after epoch 1's state is saved, and running the workflow again resumes
with only epoch 2. The same run then renders headshots of both epochs with the real ``sdxl_gen_img.py``
(random weights, 256 px, 2 steps) and runs best_lora on them, so the whole path runs; those images show
no face, and their scores mean nothing.

Runs only when LIKENESS_SD_SCRIPTS points to a kohya-ss/sd-scripts checkout at tag v0.10.1 (CI has none).
Then it also needs (see shared/tools/README.md for building them offline):
  LIKENESS_SD_PYTHON      a Python with sd-scripts' requirements (torch, accelerate, ...); default: this one
  LIKENESS_SD_BASE_MODEL  an SDXL checkpoint, e.g. the random-weight one make_random_sdxl.py writes
  LIKENESS_SD_TOKENIZERS  the CLIP tokenizer folder make_clip_tokenizers.py writes (tokenizer_cache_dir)
About 22 s per step at 256 px on two cores: the whole test takes a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.runs import copy_workflow, snakemake, start_snakemake, wait_for, write_config
from fixtures.training import only_run_dir
from likeness.config import validate_section
from likeness.sdscripts.states import state_epoch
from likeness.train import estimate as est
from likeness.train import runplan, status
from synthlib.portraits import build_two_person_library

SD_SCRIPTS = os.environ.get("LIKENESS_SD_SCRIPTS", "")

pytestmark = [
    pytest.mark.sdscripts,
    pytest.mark.skipif(not SD_SCRIPTS, reason="opt-in: set LIKENESS_SD_SCRIPTS to an sd-scripts v0.10.1 checkout"),
]


def required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value or not Path(value).exists():
        pytest.fail(f"LIKENESS_SD_SCRIPTS is set, so {name} must name an existing path (see this file's docstring)")
    return value


def checkout_tag(path: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", path, "describe", "--tags", "--exact-match"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def last_launch(log_text: str) -> tuple[str, str]:
    """The command line and output of the newest launch in the stage's log."""
    header, _, body = log_text.rpartition("\n=== ")[2].partition("\n")
    return header, body


def test_real_sd_scripts_trains_is_killed_and_the_workflow_resumes_with_only_epoch_two(tmp_path: Path) -> None:
    """The whole workflow (export, crop, select, caption, train) on two faces; SIGKILL after epoch 1's state."""
    assert (Path(SD_SCRIPTS) / "sdxl_train_network.py").is_file(), "LIKENESS_SD_SCRIPTS has no sdxl_train_network.py"
    tag = checkout_tag(SD_SCRIPTS)
    assert tag in (None, "v0.10.1"), f"the checkout is at {tag}, not v0.10.1"
    base_model = required_env("LIKENESS_SD_BASE_MODEL")
    tokenizers = required_env("LIKENESS_SD_TOKENIZERS")
    python = os.environ.get("LIKENESS_SD_PYTHON") or sys.executable

    # Two real faces (a demo portrait), so that the identity model scores the headshots too.
    build_two_person_library(tmp_path / "library", n_person=2, n_other=0)
    workdir = copy_workflow(tmp_path / "wf")
    cfg = {
        "sd_scripts": SD_SCRIPTS,
        "launcher": "",
        "python": python,
        "base_model": base_model,
        "gpu": "CPU",
        "max_gpu_hours": 0.0,
        "resolution": 256,
        "batch_size": 1,
        "num_repeats": 1,
        "max_train_epochs": 2,
        "network_dim": 4,
        "network_alpha": 1.0,
        "optimizer_type": "AdamW",  # bitsandbytes is not needed on the CPU
        "mixed_precision": "no",
        "save_precision": "float",
        "max_data_loader_n_workers": 0,
        "sample_every_n_epochs": 0,
        "output_name": "likeness",
        "extra": {"tokenizer_cache_dir": tokenizers},
        # Headshots with the random-weight model, as small and short as they go.
        "headshot_prompts": ["{trigger} {class_word}, professional headshot, studio grey backdrop"],
        "headshot_steps": 2,
        "headshot_size": 256,
    }
    write_config(
        workdir,
        tmp_path / "library",
        person="Grace Hopper",
        select={"top_n": 2, "max_identity_distance": "model"},
        train=cfg,
    )
    env = {
        "LIKENESS_ALLOW_NO_GPU": "1",  # the CPU stands in for the GPU here
        "LIKENESS_PROGRESS_SECONDS": "0",
        "HF_HUB_OFFLINE": "1",
    }
    runs = workdir / "results" / "train"
    log_path = workdir / "logs" / "train.log"

    first = start_snakemake(workdir, "--cores", "2", name="killed", env=env)
    try:
        wait_for(lambda: runs.is_dir() and any(p.is_dir() for p in runs.iterdir()), 300, "the run folder")
        output = only_run_dir(runs) / "output"
        wait_for(
            lambda: state_epoch(output / "likeness-000001-state") == 1 or first.process.poll() is not None,
            timeout=1800,
            what="epoch 1's state",
        )
    finally:
        first.stop()  # SIGKILL to the whole run (a no-op once it has ended)
    log_text = log_path.read_text(errors="replace")
    assert state_epoch(output / "likeness-000001-state") == 1, log_text[-3000:]
    assert not (output / "likeness.safetensors").exists(), "training finished before it could be killed"

    # The README command again (after the --unlock that Snakemake asks for after a SIGKILL).
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", env=env, timeout=1800)
    log_text = log_path.read_text(errors="replace")

    command, body = last_launch(log_text)
    print(f"resumed with: {command}")
    # sd-scripts runs inside the run folder, whose files the command names relative to it
    assert "--resume output/likeness-000001-state" in command
    assert "--initial_epoch 2" in command
    assert "epoch 2/2" in body and "epoch 1/2" not in body  # only the second epoch ran
    steps = re.search(r"steps for 2 epochs is[^:]*: (\d+)", body)
    plan = runplan.RunPlan.load(only_run_dir(runs))
    assert (
        steps
        and int(steps.group(1))
        == runplan.plan_estimate(plan, validate_section("train", plan.train_cfg | cfg), None).total_steps
    )
    assert status.training_finished(plan)
    assert list((output / "logs").rglob("events.out.tfevents.*"))  # TensorBoard: train.toml's logging_dir
    assert (output / "likeness-000001.safetensors").is_file()  # epoch 1's LoRA stays
    assert (output / "likeness.safetensors").is_file()
    assert json.loads((runs / "status.json").read_text())["state"] == "done"
    measured = est.load_calibration(runs / "calibration.tsv")  # s/step read from sd-scripts' own log
    assert [row.gpu for row in measured] == ["CPU"] and measured[0].source.startswith("measured")
    print(f"measured: {measured[0]}")

    # Headshots: the real sdxl_gen_img.py rendered one image per saved epoch, with the epoch's LoRA.
    shots = json.loads((workdir / "results" / "headshots" / "status.json").read_text())
    headshot_log = (workdir / "logs" / "headshots.log").read_text(errors="replace")
    assert shots["state"] == "done", headshot_log[-3000:]
    assert [e["epoch"] for e in shots["epochs"]] == [1, 2]
    for epoch in shots["epochs"]:  # paths relative to the workflow's folder, as every record has them
        assert [Path(p).name for p in epoch["images"]] == ["im_000001.png"]
        assert all((workdir / p).stat().st_size > 0 for p in epoch["images"])
    assert "sdxl_gen_img.py --ckpt" in headshot_log and "--network_weights" in headshot_log
    best = json.loads((workdir / "results" / "lora" / "ohwx.json").read_text())
    print(f"best_lora on random-weight headshots (meaningless): epoch {best['epoch']}: {best['why']}")
    assert best["state"] == "done" and best["epoch"] in (1, 2)
    chosen = workdir / best["source_lora"]
    assert (workdir / "results" / "lora" / "ohwx.safetensors").read_bytes() == chosen.read_bytes()


def _sd_scripts_accepts(dataset_toml: Path, python: str) -> subprocess.CompletedProcess:
    """sd-scripts' own validator on a dataset.toml, as train_network.py builds it with masked_loss:
    ConfigSanitizer(DreamBooth, fine-tuning, ControlNet = masked_loss, dropout)."""
    script = (
        "import sys, toml\n"
        "from library.config_util import ConfigSanitizer\n"
        "doc = ConfigSanitizer(True, True, True, True).sanitize_user_config(toml.load(sys.argv[1]))\n"
        "print('alpha_mask', [s.get('alpha_mask') for d in doc['datasets'] for s in d['subsets']])\n"
    )
    return subprocess.run(
        [python, "-c", script, str(dataset_toml)], cwd=SD_SCRIPTS, capture_output=True, text=True, check=False
    )


def test_real_sd_scripts_trains_a_masked_dataset_with_masked_loss_and_resumes(tmp_path: Path) -> None:
    """Issue 18: a group photo kept by masking trains with masked_loss; sd-scripts caches its mask."""
    import tomllib

    import numpy as np
    from synthlib.portraits import build_group_library

    base_model = required_env("LIKENESS_SD_BASE_MODEL")
    tokenizers = required_env("LIKENESS_SD_TOKENIZERS")
    python = os.environ.get("LIKENESS_SD_PYTHON") or sys.executable
    # The person with a neighbour right beside her, and alone: one masked face, one plain one.
    found = build_group_library(tmp_path / "library", n_group=1, n_alone=1)
    workdir = copy_workflow(tmp_path / "wf")
    cfg = {
        "sd_scripts": SD_SCRIPTS,
        "launcher": "",
        "python": python,
        "base_model": base_model,
        "gpu": "CPU",
        "max_gpu_hours": 0.0,
        "resolution": 256,
        "batch_size": 1,
        "num_repeats": 1,
        "max_train_epochs": 2,
        "network_dim": 4,
        "network_alpha": 1.0,
        "optimizer_type": "AdamW",
        "mixed_precision": "no",
        "save_precision": "float",
        "max_data_loader_n_workers": 0,
        "sample_every_n_epochs": 0,
        "output_name": "likeness",
        "extra": {"tokenizer_cache_dir": tokenizers},
    }
    write_config(
        workdir, tmp_path / "library", person="Grace Hopper", select={"top_n": 2, "crowded": "mask"}, train=cfg
    )
    env = {"LIKENESS_ALLOW_NO_GPU": "1", "LIKENESS_PROGRESS_SECONDS": "0", "HF_HUB_OFFLINE": "1"}
    runs = workdir / "results" / "train"
    target = "results/train/status.json"

    first = start_snakemake(workdir, "--cores", "2", target, name="killed", env=env)
    try:
        wait_for(lambda: runs.is_dir() and any(p.is_dir() for p in runs.iterdir()), 300, "the run folder")
        run_dir = only_run_dir(runs)
        output = run_dir / "output"
        wait_for(
            lambda: state_epoch(output / "likeness-000001-state") == 1 or first.process.poll() is not None,
            timeout=1800,
            what="epoch 1's state",
        )
    finally:
        first.stop()
    log_path = workdir / "logs" / "train.log"
    assert state_epoch(output / "likeness-000001-state") == 1, log_path.read_text(errors="replace")[-3000:]
    assert not (output / "likeness.safetensors").exists(), "training finished before it could be killed"

    # The configs: masked_loss and alpha_mask, accepted by sd-scripts' own validator.
    train_toml = tomllib.loads((run_dir / "train.toml").read_text())
    dataset_toml = tomllib.loads((run_dir / "dataset.toml").read_text())
    assert train_toml["training"]["masked_loss"] is True
    assert dataset_toml["datasets"][0]["subsets"][0]["alpha_mask"] is True
    checked = _sd_scripts_accepts(run_dir / "dataset.toml", python)
    assert checked.returncode == 0 and "alpha_mask [True]" in checked.stdout, checked.stderr[-2000:]
    print(f"sd-scripts' ConfigSanitizer: {checked.stdout.strip()}")

    # sd-scripts loaded the mask: its latents cache holds it, 0 over the neighbour's head.
    dataset = run_dir / "dataset"
    masked_png = [p for p in dataset.glob("*.png")]
    assert [p.stem for p in masked_png] == found["group"]
    caches = {p.name.split("_")[0]: p for p in dataset.glob("*_sdxl.npz")}
    assert set(caches) == {*found["group"], *found["alone"]}, sorted(dataset.iterdir())
    with np.load(caches[found["group"][0]]) as npz:
        cached_mask = npz["alpha_mask"]
    with np.load(caches[found["alone"][0]]) as npz:
        plain_mask = npz["alpha_mask"]  # an image without alpha in an alpha_mask subset: all ones
    print(f"cached alpha_mask {cached_mask.shape}: min {cached_mask.min():.3f}, mean {cached_mask.mean():.3f}")
    assert cached_mask.shape == (256, 256) and cached_mask.min() == 0.0 and cached_mask.max() == 1.0
    assert (plain_mask == 1.0).all()

    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", target, env=env, timeout=1800)
    command, body = last_launch(log_path.read_text(errors="replace"))
    print(f"resumed with: {command}")
    assert "--resume output/likeness-000001-state" in command and "--initial_epoch 2" in command
    assert "epoch 2/2" in body and "epoch 1/2" not in body
    steps = re.search(r"steps for 2 epochs is[^:]*: (\d+)", body)
    plan = runplan.RunPlan.load(run_dir)
    estimate = runplan.plan_estimate(plan, validate_section("train", plan.train_cfg | cfg), None)
    assert steps and int(steps.group(1)) == estimate.total_steps
    print(f"sd-scripts' step count {steps.group(1)} = the estimate {estimate.total_steps}")
    assert (output / "likeness.safetensors").is_file()
    assert json.loads((runs / "status.json").read_text())["state"] == "done"


def test_gpu_speed_benchmark_runs_on_the_cpu_as_its_own_smoke_test(tmp_path: Path) -> None:
    """benchmarks/gpu_speed.py with the real sd-scripts, at 256 px on the CPU, a few steps: the workflow's
    run folder and the calibration's timing, end to end (on a GPU the same command, without --cpu and at
    1024 px, gives the figures for resources/gpu_speeds.tsv). LIKENESS_SD_BASE_MODEL skips building the
    random SDXL (about 80 s and 10 GB of memory)."""
    command = [
        sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_speed.py"),
        "--sd-scripts", SD_SCRIPTS,
        "--python", os.environ.get("LIKENESS_SD_PYTHON") or sys.executable,
        "--base-model", required_env("LIKENESS_SD_BASE_MODEL"),
        "--tokenizers", required_env("LIKENESS_SD_TOKENIZERS"),
        "--cpu", "--resolution", "256", "--steps", "3", "--warmup", "1", "--images", "2",
        "--workdir", str(tmp_path / "bench"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, (tmp_path / "bench" / "gpu_speed.log").read_text(errors="replace")[-3000:]
    (summary,) = [line for line in result.stdout.splitlines() if line.startswith("gpu_speed: CPU, 256 px")]
    seconds = float(re.search(r": ([\d.]+) s/step over 2 steps after 1 warm-up", summary).group(1))
    assert seconds > 0 and "peak GPU memory not measured (no nvidia-smi)" in summary
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("gpu_speeds.tsv row: ")]
    cells = row.removeprefix("gpu_speeds.tsv row: ").split("\t")
    assert len(cells) == 8 and cells[2] == "256" and "project measurement (benchmarks/gpu_speed.py" in cells[6]
    # the run folder is the workflow's own, with its default train.toml
    run_dir = only_run_dir(tmp_path / "bench" / "runs")
    train_toml = (run_dir / "train.toml").read_text()
    assert 'optimizer_type = "AdamW"' in train_toml and "max_train_epochs" in train_toml
    assert not (run_dir / "calibrate").exists() and not list((run_dir / "output").glob("*.safetensors"))
