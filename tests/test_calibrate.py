"""The calibrate rule with the sd-scripts test double: real steps with the run's configs, timed after a
warm-up, judged like any measurement, and then used by the train job (through the snakemake CLI)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from fixtures.library import build_small_library, write_sqlite
from fixtures.runs import copy_workflow, snakemake, write_config
from fixtures.training import double_config, double_env, read_jsonl
from likeness.config import validate_section
from likeness.train import calibrate
from likeness.train import estimate as est


def test_the_calibration_config_is_the_runs_own_stopped_after_its_steps() -> None:
    train_doc = {
        "model": {"pretrained_model_name_or_path": "/m.safetensors"},
        "training": {"max_train_epochs": 10, "mixed_precision": "bf16", "gradient_checkpointing": True},
        "saving": {
            "output_dir": "output",
            "output_name": "face",
            "save_every_n_epochs": 1,
            "save_state": True,
            "logging_dir": "output/logs",
        },
        "sample": {"sample_prompts": "sample_prompts.txt", "sample_every_n_epochs": 1},
    }
    options = calibrate.calibration_options(train_doc, 65, "calibrate/output")
    assert options["training"] == {"mixed_precision": "bf16", "gradient_checkpointing": True, "max_train_steps": 65}
    assert options["saving"] == {"output_dir": "calibrate/output", "output_name": "calibration"}
    assert options["model"] == train_doc["model"]
    assert "sample" not in options  # nothing sampled, nothing saved beside the run's own files


def test_step_times_leave_the_warm_up_out() -> None:
    # a slow first step (kernel compilation), then 1 s a step
    marks = [(0.0, 1), (9.0, 2)] + [(9.0 + n - 2, n) for n in range(3, 31)]
    seconds, timed = calibrate.StepTimes(marks).seconds_per_step(warmup=10)
    assert seconds == pytest.approx(1.0) and timed == 20
    assert calibrate.StepTimes(marks[:3]).seconds_per_step(warmup=10) is None
    assert calibrate.CALIBRATE_STEPS - calibrate.WARMUP_STEPS > est.MIN_MEASURED_STEPS  # enough to be used


@pytest.mark.snakemake
def test_calibrate_measures_with_the_runs_configs_and_train_then_uses_it(tmp_path: Path) -> None:
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    # H100 at 256 px without checkpointing: the table says 0.606 x (256/1024)^2 = 0.038 s/step, which the
    # double's 0.03 s/step is plausibly near (a measurement the estimate may use)
    train = double_config(workdir, gpu="H100", gradient_checkpointing=False, max_train_epochs=2, gpu_hourly_cost=3.0)
    write_config(workdir, library.root, train=train)
    env = double_env(step_seconds=0.03)
    before = snakemake(workdir, "-n", env=env).stdout
    assert "speed: 0.0379 s/step (table: H100" in before

    result = snakemake(workdir, "--cores", "1", "calibrate", env=env)
    log = (workdir / "logs" / "calibrate.log").read_text()
    print(log[-3000:])
    record = json.loads((workdir / "results" / "train" / "calibrate.json").read_text())
    assert record["steps_timed"] >= est.MIN_MEASURED_STEPS and record["warmup_steps"] == calibrate.WARMUP_STEPS
    assert 0.03 <= record["seconds_per_step"] < 0.1
    assert "the next estimate uses it" in record["verdict"] and "price now:" in log and "price before:" in log
    assert "peak GPU memory: not measured (no nvidia-smi)" in log  # no GPU here
    assert record["after"]["cost"] != record["before"]["cost"]
    # the double ran once, with the run's dataset.toml and a train.toml stopped after the calibration's steps
    run_dir = next(p for p in (workdir / "results" / "train").iterdir() if p.is_dir())
    assert not (run_dir / calibrate.CALIBRATE_DIR).exists()  # the throw-away folder is gone
    assert not list((run_dir / "output").glob("*.safetensors"))  # nothing of the run trained yet
    calibration = est.load_calibration(workdir / "results" / "train" / "calibration.tsv")
    (row,) = calibration
    assert row.gpu == "H100" and row.steps == record["steps_timed"] and row.source.startswith("measured: calibration")
    assert row.settings == est.speed_settings(validate_section("train", train).as_dict())
    assert result.returncode == 0

    # train then uses it: the dry run's estimate and the training job's own
    after = snakemake(workdir, "-n", env=env).stdout
    assert f"speed: {row.seconds_per_step:.3g} s/step (measured: H100" in after
    snakemake(workdir, "--cores", "2", "train", env=env)
    train_log = (workdir / "logs" / "train.log").read_text()
    assert f"(measured: H100, 256 px, batch 1, gradient checkpointing no, {row.seconds_per_step:g} s/step" in train_log
    invocations = read_jsonl(run_dir / "output" / "double_invocations.jsonl")
    assert len(invocations) == 1 and "--max_train_steps" not in invocations[0]["argv"]
    assert tomllib.loads((run_dir / "train.toml").read_text())["training"]["max_train_epochs"] == 2


@pytest.mark.snakemake
def test_calibrate_without_a_gpu_says_it_belongs_on_the_training_machine(tmp_path: Path) -> None:
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, library.root, train=double_config(workdir))
    env = {**double_env(), "LIKENESS_ALLOW_NO_GPU": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = snakemake(workdir, "--cores", "1", "calibrate", check=False, env=env)
    assert result.returncode != 0
    log = (workdir / "logs" / "calibrate.log").read_text()
    assert "calibration refused: it runs on the training machine, and here no GPU found (nvidia-smi -L)" in log
    assert not (workdir / "results" / "train" / "calibration.tsv").exists()
