"""A rented GPU machine, end to end with the sd-scripts test double: `snakemake bundle`, unpack the tarball in
another folder, run its pod.sh (it sets up its own environment with setup.sh; no database, no originals),
SIGKILL it mid-epoch and run it again (it resumes), copy output/ back home; the home workflow then records
the training as done, imports the measured speed and draws the training figures, and a dry run plans no
training."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from fixtures import DOUBLES
from fixtures.library import build_small_library, write_sqlite
from fixtures.runs import copy_workflow, kill_group, snakemake, start_group, wait_for, write_config
from fixtures.training import double_config, double_env, read_jsonl
from likeness.train import estimate as est

pytestmark = pytest.mark.snakemake

NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "LIKENESS_ALLOW_NO_GPU": "0"}


def _pod(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`bash pod.sh` in its own process group, as a user runs it: it sets up its own environment (setup.sh,
    packages from the registry) in the unpacked folder, then trains."""
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LIKENESS_VENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    # cwd: pod.sh changes into its own folder itself
    return start_group(["bash", str(folder / "pod.sh")], folder.parent, env, subprocess.PIPE, subprocess.STDOUT)


def _planned(workdir: Path, env: dict[str, str]) -> str:
    return snakemake(workdir, "-n", env=env).stdout


def test_bundle_trains_on_a_pod_resumes_after_a_kill_and_comes_home_done(tmp_path):
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    home = copy_workflow(tmp_path / "home")
    # At home: no trainer, no GPU. The base model is named the same on both machines (the run id covers it).
    cfg = double_config(tmp_path, sd_scripts="", max_train_epochs=3)
    write_config(home, library.root, train=cfg)
    first = snakemake(home, "--cores", "2", env=NO_GPU)
    assert "training is ready in results/train/" in first.stdout + first.stderr
    status = json.loads((home / "results" / "train" / "status.json").read_text())
    run_id, run_dir = status["run_id"], status["run_dir"]

    bundled = snakemake(home, "--cores", "2", "bundle", env=NO_GPU)
    tarball = home / "results" / "train" / f"{run_id}.tar.gz"
    assert f"bundle {Path('results/train') / tarball.name}" in bundled.stdout + bundled.stderr
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for needed in ("pod.sh", "likeness-bundle.json", "config.yaml", "Snakefile", "pyproject.toml",
                   "workflow/scripts/setup.sh", "results/export/markers.tsv", "results/dataset/manifest.tsv",
                   "results/captions/captions.tsv", f"{run_dir}/train.toml", f"{run_dir}/dataset.toml"):  # fmt: skip
        assert f"{run_id}/{needed}" in names, needed
    images = {n for n in names if n.startswith(f"{run_id}/results/dataset/images/") and n.endswith(".jpg")}
    assert len(images) == len(list((home / "results" / "dataset" / "images").glob("*.jpg"))) > 0
    # no Snakemake metadata, no rule output of the training (the pod runs the job), no library
    assert not any("/.snakemake/" in n or "/library/" in n for n in names)
    assert f"{run_id}/results/train/status.json" not in names

    # The pod: another folder, and the library (database and originals) is out of reach.
    pod_root = tmp_path / "pod"
    pod_root.mkdir()
    with tarfile.open(tarball) as archive:
        archive.extractall(pod_root, filter="data")
    pod = pod_root / run_id
    library.root.rename(tmp_path / "library-away")
    # This machine's trainer (the test double) through pod.yaml, which only runtime keys may change.
    (pod / "pod.yaml").write_text(yaml.safe_dump({"train": {"sd_scripts": str(DOUBLES), "gpu": "CPU"}}))
    env = double_env(step_seconds=0.5)
    running = _pod(pod, env)
    output = pod / run_dir / "output"
    try:
        # the set-up (a fresh virtual environment) comes first
        wait_for(lambda: (output / "face-000001-state" / "random_states_0.pkl").is_file(), 900, "epoch 1's state")
        wait_for(lambda: any(s["epoch"] == 2 for s in read_jsonl(output / "double_steps.jsonl")), 60, "epoch 2")
    finally:
        kill_group(running)  # the machine restarts mid-epoch
    assert not (output / "face.safetensors").exists()

    again = _pod(pod, env)
    log = again.communicate(timeout=900)[0].decode(errors="replace")
    assert again.returncode == 0, log
    assert "no database here: the job list comes from results/export/" in log
    assert f"pod.sh: training done; LoRA files and samples in {run_dir}/output/" in log
    invocations = read_jsonl(output / "double_invocations.jsonl")
    assert len(invocations) == 2
    argv = invocations[1]["argv"]
    assert argv[argv.index("--resume") + 1] == "output/face-000001-state"
    assert argv[argv.index("--initial_epoch") + 1] == "2"
    assert (output / "face.safetensors").is_file() and list((output / "sample").glob("*.png"))
    measured = json.loads((output / "likeness_measured_speed.json").read_text())
    assert (pod / ".venv" / "bin" / "snakemake").is_file()  # pod.sh set the workflow up
    shutil.rmtree(pod / ".venv")  # 800 MB

    # Home again: copy output/ into the same run folder; the workflow records the run as done.
    library_root = tmp_path / "library-away"
    library_root.rename(library.root)
    shutil.copytree(output, home / run_dir / "output", dirs_exist_ok=True)
    dry = _planned(home, NO_GPU)
    # no training job: the loss curve and samples come next
    assert not re.search(r"^Job \d+: training estimate", dry, re.MULTILINE)
    assert re.search(r"^report_training\s+1$", dry, re.MULTILINE), dry
    home_run = snakemake(home, "--cores", "2", env=NO_GPU)
    assert f"likeness: training {run_id} finished elsewhere" in home_run.stdout + home_run.stderr
    status = json.loads((home / "results" / "train" / "status.json").read_text())
    assert status["state"] == "done" and status["run_id"] == run_id
    calibration = est.load_calibration(home / "results" / "train" / "calibration.tsv")
    assert [(r.gpu, r.seconds_per_step, r.source) for r in calibration] == [
        ("CPU", measured["seconds_per_step"], measured["source"])
    ]
    # later stages went on: the loss curve (from the pod's log, which came back in output/) and the samples
    snakemake(home, "--cores", "2", env=NO_GPU)  # the estimate page, after the status it shows changed
    assert (home / "results" / "report" / "loss.svg").is_file()
    assert (home / "results" / "report" / "samples.png").is_file()
    assert "avr_loss" in (home / "logs" / "train.log").read_text()
    # done: nothing is planned, without a GPU or without the base model
    assert "Nothing to be done" in _planned(home, NO_GPU)
    Path(cfg["base_model"]).unlink()
    assert "Nothing to be done" in _planned(home, NO_GPU)
    # only a changed dataset or config plans a new run
    write_config(home, library.root, train={**cfg, "network_dim": 8})
    assert re.search(r"^Job \d+: training estimate", _planned(home, NO_GPU), re.MULTILINE)
