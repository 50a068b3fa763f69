"""install_trainer and the launch-time install/download through the snakemake CLI.

sd-scripts comes from a local git repository holding the TEST DOUBLE of its script, its requirements from
wheels built here (pip --no-index), the base model from a Hugging Face cache laid out here (HF_HUB_OFFLINE).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fixtures.library import build_small_library, write_sqlite
from fixtures.runs import copy_workflow, snakemake, write_config
from fixtures.training import (
    FILENAME,
    REPO_ID,
    REQUIREMENT,
    double_config,
    double_env,
    install_config,
    make_hub_cache,
    make_remote,
    make_wheels,
)
from fixtures.training import pip_env as make_pip_env
from likeness.train import trainer_install as ti

pytestmark = pytest.mark.snakemake

CONTENT = b"not SDXL: the test double never reads the model, the workflow checks its sha256" * 100


@pytest.fixture
def setup(tmp_path):
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    remote, commit = make_remote(tmp_path / "remote")
    wheels = make_wheels(tmp_path / "wheels")
    hub = tmp_path / "hub"
    snapshot = make_hub_cache(hub, CONTENT)
    train = double_config(
        workdir,
        **install_config(workdir, remote, commit, cache_dir="cache/train"),
        launcher="",
        python="",  # with "auto" the installed environment's python runs the script
        base_model=REPO_ID,
        base_model_sha256=hashlib.sha256(CONTENT).hexdigest(),
        max_train_epochs=2,
    )
    write_config(workdir, library.root, train=train)
    env = make_pip_env(wheels, {**double_env(), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"})
    env.pop("PYTHONPATH")  # as a user's shell: the installed script needs nothing of the workflow's
    return workdir, library, train, env, snapshot, commit


def test_install_by_name_then_the_training_launches_with_the_install_and_the_hub_file(setup):
    workdir, library, train, env, snapshot, commit = setup
    # the default target on this GPU-less machine installs nothing heavy...
    # (here LIKENESS_ALLOW_NO_GPU=1 stands in for a GPU, so the plain run would launch: ask by name first)
    result = snakemake(workdir, "--cores", "1", "install_trainer", env=env)
    assert "cloning sd-scripts v0.10.1" in result.stdout + result.stderr
    pointer = json.loads((workdir / "cache" / "train" / ti.POINTER).read_text())
    root = Path(pointer["root"])
    versions = json.loads((root / ti.VERSIONS).read_text())
    assert versions["sd_scripts_commit"] == commit and versions["packages"][REQUIREMENT] == "1.0"
    marker_mtime = (root / ti.MARKER).stat().st_mtime_ns
    install_log = (workdir / "logs" / "install_trainer.log").read_text()
    assert "clone --quiet --branch v0.10.1" in install_log and "-r requirements.txt" in install_log

    result = snakemake(workdir, "--cores", "2", env=env)
    status = json.loads((workdir / "results" / "train" / "status.json").read_text())
    assert status["state"] == "done", result.stdout + result.stderr
    assert (root / ti.MARKER).stat().st_mtime_ns == marker_mtime  # found, not installed again
    train_log = (workdir / "logs" / "train.log").read_text()
    launch = next(line for line in train_log.splitlines() if line.startswith("=== "))
    assert f"{root}/venv/bin/python" in launch or f"{root.resolve()}/venv/bin/python" in launch
    assert f"{root.name}/sd-scripts/sdxl_train_network.py" in launch
    assert f"--pretrained_model_name_or_path {snapshot}" in launch
    output = Path(status["run_dir"]) if Path(status["run_dir"]).is_absolute() else workdir / status["run_dir"]
    invocations = [
        json.loads(line) for line in (output / "output" / "double_invocations.jsonl").read_text().splitlines()
    ]
    argv = invocations[0]["argv"]
    assert argv[argv.index("--pretrained_model_name_or_path") + 1] == str(snapshot)
    # the run folder says which install and model trained it
    trainer = json.loads((output / "trainer.json").read_text())
    assert trainer["base_model"] == str(snapshot) and trainer["installed"] == versions
    assert trainer["sd_scripts"].endswith(f"{root.name}/sd-scripts")

    # the install depends on its own keys only: a new GPU price does not ask for it again
    write_config(workdir, library.root, train={**train, "gpu_hourly_cost": 9.0})
    assert "Nothing to be done" in snakemake(workdir, "-n", "install_trainer", env=env).stdout


def test_offline_without_the_base_model_in_the_cache_is_one_line(setup, tmp_path):
    workdir, _library, _train, env, _snapshot, _commit = setup
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-hub")
    result = snakemake(workdir, "--cores", "2", check=False, env=env)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    lines = [line for line in text.splitlines() if "config key 'train.base_model'" in line]
    assert lines and FILENAME in lines[0] and "offline" in lines[0], text
    assert not (workdir / "cache" / "train").exists() or not list((workdir / "cache" / "train").glob("sd-scripts-*"))


def test_without_a_gpu_the_defaults_list_every_job_and_download_nothing(tmp_path):
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, library.root)  # every train default: sd_scripts auto, SDXL from the hub, auto steps
    hub = tmp_path / "hub"
    hub.mkdir()
    env = {"HF_HUB_CACHE": str(hub), "CUDA_VISIBLE_DEVICES": ""}
    dry = snakemake(workdir, "-n", env=env).stdout
    for rule in ("export_markers", "crop_face", "select_faces", "caption_faces", "train"):
        assert rule in dry
    assert "training estimate, upper bound (RTX 4090, 1024 px, batch 1)" in dry
    assert "auto step budget for 5 images: train.num_repeats 40, train.max_train_epochs 10" in dry
    assert "install_trainer" not in dry  # only when asked by name

    result = snakemake(workdir, "--cores", "2", env=env)
    assert "training is ready in results/train/" in result.stdout + result.stderr
    assert not (workdir / "cache" / "train").exists() and not list(hub.iterdir())
    status = json.loads((workdir / "results" / "train" / "status.json").read_text())
    ready = (workdir / status["run_dir"] / "READY").read_text()
    assert "cache/train/sd-scripts-ae72efb92bab-<torch build>/sd-scripts/sdxl_train_network.py" in ready
