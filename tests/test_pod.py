"""A rented GPU machine, end to end with the sd-scripts test doubles: `snakemake bundle`, unpack the tarball in
another folder, run its pod.sh (it sets up its own environment with setup.sh; no database, no originals),
SIGKILL it mid-epoch and run it again (it resumes, renders the headshots and chooses the epoch there), unpack
its home.tar.gz at home with the one line it prints; one home run then records the training as done, imports
the measured speed and draws every figure, results/lora/ohwx.safetensors is the chosen epoch's file, and a
dry run plans nothing. pod.yaml refuses a key that would change the run id; pod.sh's last line says what helps."""

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
from fixtures.runs import KEEP_ALL, copy_workflow, kill_group, snakemake, start_group, wait_for, write_config
from fixtures.training import double_config, double_env, read_jsonl
from likeness.train import estimate as est
from synthlib.portraits import build_two_person_library

pytestmark = pytest.mark.snakemake

NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "LIKENESS_ALLOW_NO_GPU": "0"}
PROMPTS = [
    "{trigger} {class_word}, professional headshot, studio grey backdrop",
    "{trigger} {class_word}, corporate portrait, navy blazer",
]
BEST = 2  # the epoch the doubles make look most like the person (LIKENESS_DOUBLE_BEST_EPOCH)


def _pod(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`bash pod.sh` in its own process group, as a user runs it: it sets up its own environment (setup.sh,
    packages from the registry) in the unpacked folder, then trains."""
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LIKENESS_VENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    # cwd: pod.sh changes into its own folder itself
    return start_group(["bash", str(folder / "pod.sh")], folder.parent, env, subprocess.PIPE, subprocess.STDOUT)


def _planned(workdir: Path, env: dict[str, str]) -> str:
    return snakemake(workdir, "-n", env=env).stdout


def _job_counts(dry: str) -> dict[str, int]:
    """The dry run's "Job stats" table: rule -> count."""
    rows = re.finditer(r"^(\w+)\s+(\d+)$", dry, re.MULTILINE)
    return {m.group(1): int(m.group(2)) for m in rows if m.group(1) != "total"}


def test_bundle_trains_on_a_pod_resumes_after_a_kill_and_comes_home_done(tmp_path):
    library = tmp_path / "library"
    build_two_person_library(library, n_person=6, n_other=0)
    home = copy_workflow(tmp_path / "home")
    # At home: no trainer, no GPU. The base model is named the same on both machines (the run id covers it).
    cfg = double_config(
        tmp_path, sd_scripts="", max_train_epochs=3, headshot_prompts=PROMPTS, headshot_steps=2, headshot_size=256
    )
    write_config(
        home, library, person="Grace Hopper", select={**KEEP_ALL, "max_identity_distance": "model"},
        caption={"class_word": "woman"}, train=cfg,
    )  # fmt: skip
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
                   "results/dataset/identity.json", "results/captions/captions.tsv", f"{run_dir}/train.toml",
                   f"{run_dir}/dataset.toml"):  # fmt: skip
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
    library.rename(tmp_path / "library-away")
    # This machine's trainer (the test double) through pod.yaml, which only machine-local keys may change.
    # First with a budget the estimate exceeds: pod.sh sets itself up, is refused, and its last line names
    # the fix instead of a resume.
    pod_yaml = {"train": {"sd_scripts": str(DOUBLES), "gpu": "CPU"}}
    (pod / "pod.yaml").write_text(yaml.safe_dump({"train": {**pod_yaml["train"], "max_gpu_hours": 0.0001}}))
    env = {**double_env(step_seconds=0.5), "LIKENESS_DOUBLE_BEST_EPOCH": str(BEST)}
    refused = _pod(pod, env)
    log = refused.communicate(timeout=900)[0].decode(errors="replace")
    assert refused.returncode != 0, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("pod.sh: the training cannot run: estimated") and "train.max_gpu_hours" in last, last
    assert last.endswith("(running again cannot help)") and "resume" not in last
    (pod / "pod.yaml").write_text(yaml.safe_dump(pod_yaml))
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
    invocations = read_jsonl(output / "double_invocations.jsonl")
    assert len(invocations) == 2
    argv = invocations[1]["argv"]
    assert argv[argv.index("--resume") + 1] == "output/face-000001-state"
    assert argv[argv.index("--initial_epoch") + 1] == "2"
    assert (output / "face.safetensors").is_file() and list((output / "sample").glob("*.png"))
    measured = json.loads((output / "likeness_measured_speed.json").read_text())
    # The pod rendered the headshots and chose the epoch itself.
    chosen = json.loads((pod / "results" / "lora" / "ohwx.json").read_text())
    assert chosen["epoch"] == BEST, chosen["why"]
    assert (pod / "results" / "report" / "headshots.png").stat().st_size > 0
    # Its last line: done, and the one command that brings the result home.
    last = log.strip().splitlines()[-1]
    archive = pod / "home.tar.gz"
    assert last.startswith(f"pod.sh: done: epoch {BEST} chosen"), last
    assert f"`ssh <this machine> cat {archive} | tar xzf -`" in last
    with tarfile.open(archive) as packed:
        home_names = set(packed.getnames())
    expected = {"results/lora/ohwx.safetensors", "results/lora/ohwx.json", "results/report/headshots.png",
                f"{run_dir}/output/face.safetensors", f"{run_dir}/output/face-000002.safetensors",
                f"{run_dir}/output/likeness_measured_speed.json", f"{run_dir}/output/likeness_train.log"}  # fmt: skip
    assert expected <= home_names
    assert sum(n.startswith(f"results/headshots/{run_id}/") and n.endswith(".png") for n in home_names) == 3 * 2
    # not the person's photos, not the resume states, nothing else of the pod's folder
    assert not any("-state" in n or n.startswith(("results/dataset", "results/train/status")) for n in home_names)
    assert (pod / ".venv" / "bin" / "snakemake").is_file()  # pod.sh set the workflow up
    shutil.rmtree(pod / ".venv")  # 800 MB

    # Home again: the copy-back line (ssh replaced by the local file), then one run.
    (tmp_path / "library-away").rename(library)
    subprocess.run(f"cat {archive} | tar xzf -", shell=True, cwd=home, check=True)
    dry = _planned(home, NO_GPU)
    assert "this job records the run as done (no GPU needed)" in dry
    planned = _job_counts(dry)
    # the train job records the copied-back training; every stage after it is planned in the same run
    for rule in ("train", "headshots", "best_lora", "report_training", "report_headshots", "report_estimate"):
        assert planned.get(rule) == 1, (rule, planned)
    home_run = snakemake(home, "--cores", "2", env=NO_GPU)
    assert f"training {run_id} finished elsewhere" in home_run.stdout + home_run.stderr
    status = json.loads((home / "results" / "train" / "status.json").read_text())
    assert status["state"] == "done" and status["run_id"] == run_id and status["finished_elsewhere"]
    calibration = est.load_calibration(home / "results" / "train" / "calibration.tsv")
    assert [(r.gpu, r.seconds_per_step, r.source) for r in calibration] == [
        ("CPU", measured["seconds_per_step"], measured["source"])
    ]
    # every figure, from that one run: the loss curve (from the pod's log), samples, the headshot grid
    for figure in ("loss.svg", "samples.png", "headshots.png", "estimate.html"):
        assert (home / "results" / "report" / figure).stat().st_size > 0, figure
    assert "avr_loss" in (home / "logs" / "train.log").read_text()
    # the chosen LoRA is the chosen epoch's file, byte for byte; no headshot was rendered again at home
    record = json.loads((home / "results" / "lora" / "ohwx.json").read_text())
    assert record["epoch"] == BEST == chosen["epoch"]
    home_output = home / run_dir / "output"
    lora = (home / "results" / "lora" / "ohwx.safetensors").read_bytes()
    assert lora == (home_output / f"face-{BEST:06d}.safetensors").read_bytes()
    assert lora != (home_output / "face.safetensors").read_bytes()  # not simply the last epoch
    assert len(read_jsonl(next((home / "results" / "headshots").glob("*/*/double_gen_invocations.jsonl")))) == 3
    # done: nothing is planned, without a GPU or without the base model
    assert "Nothing to be done" in _planned(home, NO_GPU)
    Path(cfg["base_model"]).unlink()
    assert "Nothing to be done" in _planned(home, NO_GPU)
    # only a changed dataset or config plans a new run
    write_config(
        home, library, person="Grace Hopper", select={**KEEP_ALL, "max_identity_distance": "model"},
        caption={"class_word": "woman"}, train={**cfg, "network_dim": 8},
    )  # fmt: skip
    assert re.search(r"^Job \d+: training estimate", _planned(home, NO_GPU), re.MULTILINE)
