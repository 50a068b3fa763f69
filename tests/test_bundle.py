"""The training bundle's contents (likeness.train.bundle); tests/test_pod.py runs one end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from fixtures import REPO_ROOT
from fixtures.training import CLASS_WORD, TRIGGER, double_config, make_images
from likeness.config import validate_section
from likeness.errors import LikenessError
from likeness.train import bundle, pod, runplan
from likeness.train import status as st


def _workdir(tmp_path: Path, reg: bool) -> tuple[Path, dict, runplan.RunPlan]:
    workdir = tmp_path / "home"
    dataset = workdir / "results" / "dataset" / "images"
    make_images(dataset, 2)
    cfg = double_config(tmp_path)
    if reg:
        make_images(tmp_path / "my_reg_images", 3, captions=False, seed=7)
        cfg["reg_images"] = str(tmp_path / "my_reg_images")
    settings = validate_section("train", cfg)
    runs = workdir / "results" / "train"
    plan = runplan.prepare_run(settings, dataset, dataset, trigger=TRIGGER, class_word=CLASS_WORD, runs_root=runs)
    for name in ("export/markers.tsv", "export/neighbours.tsv", "dataset/manifest.tsv", "captions/captions.tsv"):
        (workdir / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / "results" / name).write_text("a\tb\n1\t2\n")
    run_dir = f"results/train/{plan.run_id}"
    status = workdir / "results" / "train" / "status.json"
    status.write_text(json.dumps({"state": "ready", "run_id": plan.run_id, "run_dir": run_dir}))
    config = {"person": "Jane", "source": {"url": "sqlite:////photos/index.db", "originals": "/photos"}, "train": cfg}
    return workdir, config, plan


def test_the_bundle_carries_what_the_training_stage_reads_and_pod_sh(tmp_path: Path) -> None:
    workdir, config, plan = _workdir(tmp_path, reg=True)
    lines: list[str] = []
    target = bundle.write_bundle(
        config, workdir / "results/train/status.json", REPO_ROOT, workdir / "results/train/bundle.json",
        workdir=workdir, log=lines.append,
    )  # fmt: skip
    assert target == workdir / "results" / "train" / f"{plan.run_id}.tar.gz"
    with tarfile.open(target) as archive:
        names = set(archive.getnames())
        pod = archive.getmember(f"{plan.run_id}/pod.sh")
        packed = yaml.safe_load(archive.extractfile(f"{plan.run_id}/config.yaml").read())  # type: ignore[union-attr]
    run_dir = f"results/train/{plan.run_id}"
    for name in ("Snakefile", "pyproject.toml", "workflow/scripts/setup.sh", "workflow/likeness/train/launch.py",
                 "profiles/default/config.yaml", bundle.MARKER, "results/export/markers.tsv",
                 f"{run_dir}/train.toml", f"{run_dir}/plan.json"):  # fmt: skip
        assert f"{plan.run_id}/{name}" in names, name
    assert pod.mode & 0o111, "pod.sh is executable"
    assert sum(n.startswith(f"{plan.run_id}/results/dataset/images/") for n in names) == 4  # 2 images, 2 captions
    assert sum(n.startswith(f"{plan.run_id}/{run_dir}/reg/") for n in names) == 3
    # the user's regularisation folder is not on the pod: the config names the run folder's copy
    assert packed["train"]["reg_images"] == f"{run_dir}/reg"
    assert packed["source"] == config["source"] and packed["person"] == "Jane"
    assert not any("__pycache__" in n or "/.snakemake" in n or n.endswith(".pyc") for n in names)
    record = json.loads((workdir / "results/train/bundle.json").read_text())
    assert record["run_id"] == plan.run_id and record["bundle"] == str(target)
    assert len(lines) == 1 and f"bash {plan.run_id}/pod.sh" in lines[0]
    assert not list((workdir / "results" / "train").glob(".*.tmp"))  # written under a temporary name


def test_a_bundle_needs_a_prepared_run(tmp_path: Path) -> None:
    workdir, config, plan = _workdir(tmp_path, reg=False)
    (Path(plan.run_dir) / "plan.json").unlink()
    with pytest.raises(LikenessError, match=r"plan\.json is missing"):
        bundle.write_bundle(
            config, workdir / "results/train/status.json", REPO_ROOT, tmp_path / "b.json", workdir=workdir
        )
    with pytest.raises(LikenessError, match="names no training run"):
        bundle.write_bundle(config, tmp_path / "none.json", REPO_ROOT, tmp_path / "b.json", workdir=workdir)


# --- pod.sh's side: pod.yaml, its last line ---------------------------------------------------------------


def test_pod_yaml_takes_machine_local_keys_only() -> None:
    pod.check_pod_config({"train": {"sd_scripts": "/opt/sd-scripts", "gpu": "H100", "max_gpu_hours": 3}})
    pod.check_pod_config(None)  # an empty pod.yaml
    for data, key in (
        ({"train": {"gpu": "H100", "base_model": "/models/other.safetensors"}}, "train.base_model"),
        ({"train": {"network_dim": 8}}, "train.network_dim"),
        ({"trigger": "sks"}, "trigger"),
        ({"select": {"top_n": 10}}, "select"),
    ):
        with pytest.raises(LikenessError) as error:
            pod.check_pod_config(data)
        message = str(error.value)
        assert message.startswith(f"config key '{key}': pod.yaml may not set it: it would change the run id")
        assert "\n" not in message and "train.sd_scripts" in message  # what it does take


def test_pod_sh_refuses_a_pod_yaml_with_base_model_in_one_line(tmp_path: Path) -> None:
    """pod.sh itself, with this checkout's environment (LIKENESS_VENV): it stops before Snakemake runs."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "workflow" / "scripts" / "pod.sh", folder / "pod.sh")
    (folder / "workflow").symlink_to(REPO_ROOT / "workflow")
    (folder / "config.yaml").write_text("trigger: ohwx\n")
    (folder / "pod.yaml").write_text(yaml.safe_dump({"train": {"gpu": "H100", "base_model": "/models/x.safetensors"}}))
    env = {**os.environ, "LIKENESS_VENV": sys.prefix}
    result = subprocess.run(["bash", str(folder / "pod.sh")], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pod.sh: config key 'train.base_model': pod.yaml may not set it: it would change the")
    assert not (folder / ".snakemake").exists()  # nothing ran


def _pod_folder(tmp_path: Path) -> tuple[Path, runplan.RunPlan]:
    workdir, _config, plan = _workdir(tmp_path, reg=False)
    run_dir = f"results/train/{plan.run_id}"
    (workdir / bundle.MARKER).write_text(json.dumps({"run_id": plan.run_id, "run_dir": run_dir}))
    return workdir, plan


def _last(workdir: Path, code: int, started: float) -> tuple[str, int]:
    return pod.last_line(pod.PodState.read(workdir, TRIGGER), code, started, workdir)


def test_pod_sh_says_resume_only_where_running_again_resumes(tmp_path: Path) -> None:
    workdir, plan = _pod_folder(tmp_path)
    started = time.time()
    # the bundled run folder's status (written at home) is older than this pod.sh: Snakemake stopped first
    st.write_run_status(plan, None, "ready", missing=["no GPU found (nvidia-smi -L)"])
    line, code = _last(workdir, 1, started + 5)
    assert code == 1 and line.startswith("pod.sh: Snakemake stopped before the training ran (exit code 1)")
    # the training job ran and stopped: each state's own advice
    budget = "estimated 3.10 GPU hours exceeds train.max_gpu_hours 2 by 1.10 h (55 %); to fit: train.max_train_epochs 6"
    st.write_run_status(plan, None, "refused", reason=budget)
    line, code = _last(workdir, 1, started)
    assert code == 1 and line == f"pod.sh: the training cannot run: {budget} (running again cannot help)"
    offline = "config key 'train.base_model': sd_xl_base_1.0.safetensors is not cached and the hub is offline"
    st.write_run_status(plan, None, "unavailable", reason=offline)
    line, _ = _last(workdir, 1, started)
    assert offline in line and "again" not in line.replace("running again cannot help", "")
    st.write_run_status(plan, None, "ready", missing=["no GPU found (nvidia-smi -L)"])
    line, _ = _last(workdir, 0, started)
    assert "cannot start here: no GPU found (nvidia-smi -L); fix that" in line and "resume" not in line
    st.write_run_status(plan, None, "failed", exit_code=137)
    line, code = _last(workdir, 137, started)
    assert code == 137
    assert line.endswith("run `bash pod.sh` again to resume from the start (no complete epoch yet)"), line
    # trained, but the headshots were refused by the budget: no resume
    st.write_run_status(plan, None, "done")
    headshots = workdir / "results" / "headshots" / "status.json"
    headshots.parent.mkdir(parents=True)
    headshots.write_text(json.dumps({"state": "refused", "reason": "estimated 1.2 GPU hours for 5 epochs' headshots"}))
    line, _ = _last(workdir, 2, started)
    assert (
        line
        == "pod.sh: the training is done, the headshots cannot run: estimated 1.2 GPU hours for 5 epochs' headshots"
    )
    headshots.write_text(json.dumps({"state": "failed", "epoch": 3}))
    assert _last(workdir, 1, started)[0].endswith("run `bash pod.sh` again to render the epochs still missing")


def test_pod_sh_packs_what_goes_home_when_done(tmp_path: Path) -> None:
    workdir, plan = _pod_folder(tmp_path)
    started = time.time()
    output = Path(plan.output_dir)
    (output / "face-000001-state").mkdir(parents=True)
    (output / "face-000001-state" / "optimizer.bin").write_bytes(b"resume state")
    for name in ("face-000001.safetensors", "face.safetensors", "likeness_measured_speed.json"):
        (output / name).write_bytes(name.encode())
    shots = workdir / "results" / "headshots" / plan.run_id / "abc" / "e000001"
    shots.mkdir(parents=True)
    (shots / "im_000001.png").write_bytes(b"png")
    lora = workdir / "results" / "lora"
    lora.mkdir(parents=True)
    (lora / "ohwx.safetensors").write_bytes(b"face-000001.safetensors")
    (lora / "ohwx.json").write_text(json.dumps({"state": "done", "epoch": 1}))
    st.write_run_status(plan, None, "done")
    lines, code = pod.finish(workdir, 0, started, TRIGGER)
    assert code == 0
    assert lines[-1].startswith("pod.sh: done: epoch 1 chosen; home.tar.gz holds what goes home; at home")
    assert f"`ssh <this machine> cat {workdir.resolve() / 'home.tar.gz'} | tar xzf -`" in lines[-1]
    with tarfile.open(workdir / "home.tar.gz") as archive:
        names = set(archive.getnames())
    run_dir = f"results/train/{plan.run_id}"
    assert names == {
        f"{run_dir}/output/face-000001.safetensors",
        f"{run_dir}/output/face.safetensors",
        f"{run_dir}/output/likeness_measured_speed.json",
        f"results/headshots/{plan.run_id}/abc/e000001/im_000001.png",
        "results/lora/ohwx.safetensors",
        "results/lora/ohwx.json",
    }  # no resume state, no photo of the person (the grid was not drawn here)
