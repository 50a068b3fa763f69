"""The training stage through the snakemake CLI, with the sd-scripts test double (tests/doubles/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.library import build_small_library, write_sqlite
from fixtures.runs import copy_workflow, snakemake, start_snakemake, wait_for, write_config
from fixtures.training import double_config, double_env, read_jsonl

pytestmark = pytest.mark.snakemake


@pytest.fixture
def workflow(tmp_path):
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    return copy_workflow(tmp_path / "wf"), library


def _status(workdir: Path) -> dict:
    return json.loads((workdir / "results" / "train" / "status.json").read_text())


def _run_dirs(workdir: Path) -> list[Path]:
    return sorted(p for p in (workdir / "results" / "train").iterdir() if p.is_dir())


def test_dry_run_shows_the_training_job_and_its_estimate(workflow):
    workdir, library = workflow
    write_config(workdir, library.root, train={"gpu": "RTX 4090", "gpu_hourly_cost": 2.0, "num_repeats": 10})
    result = snakemake(workdir, "-n")
    text = result.stdout
    # The job's message replaces its rule header in the listing; the job table counts it.
    assert re.search(r"^train\s+1$", text, re.MULTILINE)
    # Before the selection has run the figures are those of the most faces it can keep, labelled so.
    assert re.search(r"^Job \d+: training estimate, upper bound \(RTX 4090, 1024 px, batch 1\):$", text, re.MULTILINE)
    assert "the selection runs first and keeps at most 5 images" in text
    # 5 usable faces at most, 10 repeats, batch 1, 10 epochs (the defaults): the step math in the dry run.
    assert "5 images x 10 repeats = 50 samples/epoch in 1 bucket(s) -> 50 batches = 50 steps/epoch" in text
    assert "x 10 epochs = 500 steps" in text
    assert re.search(r"resources: gpu=1, runtime=\d+ min", text)
    assert "cost:" in text and "x 2 USD/h" in text  # train.currency, default USD


def test_without_gpu_or_sd_scripts_the_run_prepares_training_and_exits_0(workflow):
    workdir, library = workflow
    write_config(workdir, library.root)
    result = snakemake(workdir, "--cores", "2")
    assert "training is ready in results/train/" in result.stdout + result.stderr
    status = _status(workdir)
    assert status["state"] == "ready" and status["lora"] is None
    run_dir = workdir / status["run_dir"]
    assert {"dataset.toml", "train.toml", "sample_prompts.txt", "estimate.json"} <= {p.name for p in run_dir.iterdir()}
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout
    # train.sd_scripts "auto" and the hub base model (the defaults) are fetched only for a launch
    assert status["missing"] == ["no GPU found (nvidia-smi -L)"]
    assert not (workdir / "cache" / "train").exists()


def test_budget_guard_refuses_and_the_dry_run_warns(workflow):
    workdir, library = workflow
    cfg = double_config(workdir, max_gpu_hours=0.001, gpu="RTX 4090", resolution=1024, max_train_epochs=10)
    write_config(workdir, library.root, train=cfg)
    dry = snakemake(workdir, "-n").stdout
    assert "exceeds train.max_gpu_hours 0.001" in dry
    result = snakemake(workdir, "--cores", "2", check=False, env=double_env())
    assert result.returncode != 0
    assert "exceeds train.max_gpu_hours 0.001 by" in result.stdout + result.stderr
    assert "to fit:" in result.stdout + result.stderr
    assert not list(workdir.glob("results/train/*/output/*.safetensors"))


def test_sigkill_mid_training_then_the_readme_command_resumes(workflow):
    workdir, library = workflow
    write_config(workdir, library.root, train=double_config(workdir, max_train_epochs=3))
    env = double_env(step_seconds=0.4)
    run = start_snakemake(workdir, "--cores", "2", name="killed", env=env)
    try:
        states = workdir / "results" / "train"
        wait_for(lambda: list(states.glob("*/output/face-000001-state/random_states_0.pkl")), 120, "epoch 1 state")
        steps = lambda: read_jsonl(next(states.glob("*/output")) / "double_steps.jsonl")  # noqa: E731
        wait_for(lambda: any(s.get("epoch") == 2 for s in steps()), 60, "a step of epoch 2")
    finally:
        run.stop()  # SIGKILL to the whole run

    # The lock SIGKILL left behind: Snakemake's own message says what to run.
    locked = snakemake(workdir, "--cores", "2", check=False, env=env)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", env=env)

    output = next((workdir / "results" / "train").glob("*/output"))
    invocations = read_jsonl(output / "double_invocations.jsonl")
    assert len(invocations) == 2
    resumed = invocations[1]["argv"]
    assert resumed[resumed.index("--resume") + 1].endswith("face-000001-state")
    assert resumed[resumed.index("--initial_epoch") + 1] == "2"
    assert (output / "face.safetensors").is_file()
    assert _status(workdir)["state"] == "done"


def test_a_config_change_trains_into_a_new_run_folder_and_keeps_the_old(workflow):
    workdir, library = workflow
    write_config(workdir, library.root, train=double_config(workdir, max_train_epochs=1))
    snakemake(workdir, "--cores", "2", env=double_env())
    (first,) = _run_dirs(workdir)
    first_files = {p.relative_to(first): p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    assert (first / "output" / "face.safetensors").is_file()

    write_config(workdir, library.root, train=double_config(workdir, max_train_epochs=1, network_dim=8))
    snakemake(workdir, "--cores", "2", env=double_env())
    runs = _run_dirs(workdir)
    assert len(runs) == 2 and first in runs
    assert {p.relative_to(first): p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == first_files
    second = next(r for r in runs if r != first)
    assert (second / "output" / "face.safetensors").is_file()
    assert _status(workdir)["run_dir"].endswith(second.name)


NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "LIKENESS_ALLOW_NO_GPU": "0"}


def planned_jobs(workdir: Path, env: dict[str, str]) -> dict[str, int]:
    """Rule -> job count from the dry run's job table (the train job's message replaces its rule header)."""
    text = snakemake(workdir, "-n", env=env).stdout
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
    return {rule: int(count) for rule, count in rows if rule != "total"}


def test_a_finished_training_is_never_planned_again(workflow):
    workdir, library = workflow
    cfg = double_config(workdir, max_train_epochs=1)
    write_config(workdir, library.root, train=cfg)
    snakemake(workdir, "--cores", "2", env=double_env())
    assert _status(workdir)["state"] == "done"
    snakemake(workdir, "--cores", "2", env=NO_GPU)  # the later stages: loss curve and samples
    assert (workdir / "results" / "report" / "loss.svg").is_file()
    # a machine without a GPU, then without the base model: the finished training stays finished
    assert planned_jobs(workdir, env=NO_GPU) == {}
    Path(cfg["base_model"]).unlink()
    assert planned_jobs(workdir, env=NO_GPU) == {}
    assert planned_jobs(workdir, env=double_env()) == {}
    # a changed config plans a new run
    write_config(workdir, library.root, train={**cfg, "network_dim": 8})
    assert "train" in planned_jobs(workdir, env=NO_GPU)


def test_a_ready_run_is_planned_again_once_it_can_launch(workflow):
    workdir, library = workflow
    write_config(workdir, library.root, train=double_config(workdir, max_train_epochs=1))
    snakemake(workdir, "--cores", "2", env=NO_GPU)
    assert _status(workdir)["state"] == "ready"
    assert planned_jobs(workdir, env=NO_GPU) == {}  # still no GPU: nothing to do
    assert "train" in planned_jobs(workdir, env=double_env())  # a GPU (the double's stand-in check)
    snakemake(workdir, "--cores", "2", env=double_env())
    assert _status(workdir)["state"] == "done"
    # the figures of a finished training (loss, samples, the headshot grid) were drawn in the same run
    assert planned_jobs(workdir, env=NO_GPU) == {}


def _dry_steps(text: str) -> tuple[int, bool]:
    """The dry run's total step count for the training and whether it is labelled an upper bound."""
    header = re.search(r"^Job \d+: training estimate(, upper bound)? \(", text, re.MULTILINE)
    assert header, text
    steps = re.search(r"x \d+ epochs = (\d+) steps$", text[header.start() :], re.MULTILINE)
    assert steps, text
    return int(steps.group(1)), bool(header.group(1))


def _launch_estimate(workdir: Path) -> dict:
    """What the launch computed and recorded in the run folder (estimate.json)."""
    return json.loads((workdir / _status(workdir)["run_dir"] / "estimate.json").read_text())


def _trained_steps(workdir: Path) -> int:
    """Steps the test double ran in the run folder status.json names (one record per step)."""
    return len(read_jsonl(workdir / _status(workdir)["run_dir"] / "output" / "double_steps.jsonl"))


def test_the_dry_run_prices_what_trains_or_labels_an_upper_bound(workflow):
    """Fixed repeats and epochs with batch 2 and accumulation 2: from a 2-face selection to every face the
    dry run gives an upper bound (the selection re-runs) and the launch prints the exact count; a changed
    train key (the selection stays) gives the exact count before anything runs."""
    workdir, library = workflow
    fixed = {"num_repeats": 3, "max_train_epochs": 2, "batch_size": 2, "gradient_accumulation_steps": 2}
    write_config(workdir, library.root, train=double_config(workdir, **fixed), select={"top_n": 2})
    snakemake(workdir, "--cores", "2", env=double_env())
    assert _trained_steps(workdir) == _launch_estimate(workdir)["total_steps"]

    write_config(workdir, library.root, train=double_config(workdir, **fixed))  # select.top_n back to default
    dry = snakemake(workdir, "-n", env=double_env()).stdout
    bound, is_bound = _dry_steps(dry)
    assert is_bound and "the selection runs first and keeps at most" in dry
    run = snakemake(workdir, "--cores", "2", env=double_env())
    trained = _trained_steps(workdir)
    assert 0 < trained <= bound
    launch = _launch_estimate(workdir)
    assert launch["total_steps"] == trained
    assert f"= {trained} steps" in run.stdout + run.stderr  # the launch prints the exact figures
    assert f"runtime={launch['runtime_minutes']} min" in run.stdout + run.stderr  # the job's re-evaluated runtime

    write_config(workdir, library.root, train=double_config(workdir, **{**fixed, "num_repeats": 5}))
    exact, is_bound = _dry_steps(snakemake(workdir, "-n", env=double_env()).stdout)
    assert not is_bound
    snakemake(workdir, "--cores", "2", env=double_env())
    assert exact == _trained_steps(workdir) != trained
