"""The training on a real single-node Slurm (munge, slurmdbd, slurmctld, slurmd; .ci/start-slurm.sh).

`snakemake --profile profiles/slurm` runs every stage here and submits only the training through sbatch,
with the estimate's runtime as its time limit and one `gpu` GRES; sacct shows the job; the sd-scripts test
double trains on the node. After `scancel` of the running job, the same command resumes from the newest
complete state. In CI (CI=true) this test never skips: .ci/run starts the cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.library import build_small_library, write_sqlite
from fixtures.runs import copy_workflow, snakemake, start_snakemake, wait_for, write_config
from fixtures.training import double_config, double_env, read_jsonl

pytestmark = [pytest.mark.slurm, pytest.mark.snakemake]


def _cluster_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and any(s in result.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not _cluster_up():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Slurm cluster answers: .ci/run must start it (.ci/start-slurm.sh)")
        pytest.skip("no Slurm cluster here (bash .ci/start-slurm.sh starts one, as root)")


def _slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def _jobs_in(workdir: Path) -> list[str]:
    """Slurm job ids whose working directory is ``workdir``, oldest first (squeue: pending or running)."""
    lines = _slurm("squeue", "-h", "-o", "%i|%Z").splitlines()
    return [i for i, d in (line.split("|", 1) for line in lines) if Path(d) == workdir]


def _sacct(job_id: str, wanted: str) -> dict[str, str]:
    """sacct's record of a job, once it shows ``wanted`` as its state (the database lags a little)."""
    fields = "JobID,JobName,State,ExitCode,Timelimit,AllocTRES,WorkDir"
    deadline = time.monotonic() + 60
    while True:
        out = _slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", fields)
        rows = [dict(zip(fields.split(","), line.split("|"), strict=True)) for line in out.splitlines() if line]
        if rows and rows[0]["State"].startswith(wanted):
            # what the note quotes: sacct's own lines
            print(_slurm("sacct", "-X", "-j", job_id, "-o", "JobID,State,ExitCode,Timelimit,AllocTRES%45,WorkDir%50"))
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"sacct never showed job {job_id} as {wanted}: {rows}")
        time.sleep(0.5)


PROFILE_RUN = ("--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "1",
               "--slurm-keep-successful-logs")  # fmt: skip


def test_training_is_submitted_to_slurm_cancelled_and_resumed(tmp_path):
    library = build_small_library(tmp_path / "library", n_photos=3)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf").resolve()
    # Small enough for the test node (2 CPUs): the defaults ask for what SDXL needs and 4 CPUs per GPU.
    cfg = double_config(workdir, max_train_epochs=3, mem_mb=600, cpus_per_gpu=1)
    # taken_after leaves out the January face: the selection keeps fewer faces than the dry run can know of.
    write_config(workdir, library.root, train=cfg, select={"taken_after": "2023-01-31"})
    env = double_env(step_seconds=1.0)  # LIKENESS_ALLOW_NO_GPU=1: the node's GPU is a stand-in file
    dry = snakemake(workdir, "--profile", "profiles/slurm", "-n", env=env).stdout
    assert "training estimate, upper bound (" in dry, dry
    (bound_runtime,) = (int(m) for m in re.findall(r"resources: gpu=1, runtime=(\d+) min", dry))

    first = start_snakemake(workdir, *PROFILE_RUN, name="cancelled", env=env)
    output = None
    try:
        runs = workdir / "results" / "train"
        wait_for(lambda: list(runs.glob("*/output/face-000001-state/random_states_0.pkl")), 300, "epoch 1's state")
        output = next(runs.glob("*/output"))
        wait_for(lambda: any(s["epoch"] == 2 for s in read_jsonl(output / "double_steps.jsonl")), 60, "epoch 2")
        (job_id,) = _jobs_in(workdir)
        shown = _slurm("scontrol", "show", "job", job_id)
        assert re.search(r"TresPerJob=gres(/|:)gpu:1", shown), shown
        # -t comes from the exact count (the runtime is evaluated again once the selection has run)
        runtime = json.loads((output.parent / "estimate.json").read_text())["runtime_minutes"]
        assert re.search(rf"TimeLimit=(\d+-)?0*{runtime // 60}:{runtime % 60:02d}:00", shown), shown
        assert runtime < bound_runtime
        subprocess.run(["scancel", job_id], check=True)
        returncode = first.wait(timeout=180)
    finally:
        first.stop()  # nothing of the run outlives the test (a no-op once it has ended)
    log = first.output
    assert returncode != 0, log
    assert f"SLURM jobid {job_id}" in log
    cancelled = _sacct(job_id, "CANCELLED")
    assert "gres/gpu=1" in cancelled["AllocTRES"] and Path(cancelled["WorkDir"]) == workdir
    assert not (output / "face.safetensors").exists()
    killed_at = max(s["epoch"] for s in read_jsonl(output / "double_steps.jsonl"))

    # The same command again: a new job resumes from the newest complete state.
    second = snakemake(workdir, *PROFILE_RUN, check=False, env=env)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    (resumed_id,) = re.findall(r"submitted with SLURM jobid (\d+)", log)
    # While the job ran, its progress reached this console from its log (a line a minute by default).
    relay_line = r"^likeness: on the cluster: epoch (\d+)/3, step (\d+)/(\d+), .* \(log: logs/train\.log\)$"
    relayed = re.findall(relay_line, log, re.MULTILINE)
    assert relayed, log
    completed = _sacct(resumed_id, "COMPLETED")
    assert "gres/gpu=1" in completed["AllocTRES"] and completed["ExitCode"] == "0:0"
    invocations = read_jsonl(output / "double_invocations.jsonl")
    assert len(invocations) == 2
    argv = invocations[1]["argv"]
    resumed_from = int(argv[argv.index("--initial_epoch") + 1]) - 1
    assert argv[argv.index("--resume") + 1] == f"output/face-{resumed_from:06d}-state"
    assert 1 <= resumed_from < killed_at
    assert {s["epoch"] for s in read_jsonl(output / "double_steps.jsonl") if s["pid"] == invocations[1]["pid"]} == set(
        range(resumed_from + 1, 4)
    )
    assert (output / "face.safetensors").is_file()
    status = json.loads((workdir / "results" / "train" / "status.json").read_text())
    assert status["state"] == "done"
    # Only the training went to the cluster; its job parsed the workflow from the export, not the database.
    slurm_logs = workdir / ".snakemake" / "slurm_logs"
    assert sorted(p.name for p in slurm_logs.iterdir()) == ["rule_train"]
    job_log = (slurm_logs / "rule_train" / f"{resumed_id}.log").read_text()
    assert "no database here: the job list comes from results/export/" in job_log
    # Finished: the dry run of the same profile plans nothing (the login node has no GPU either).
    dry = snakemake(workdir, "--profile", "profiles/slurm", "-n", env={"CUDA_VISIBLE_DEVICES": ""})
    assert "Nothing to be done" in dry.stdout  # the loss curve and samples were drawn in the same run
    assert not re.search(r"^train\s+\d+$", dry.stdout, re.MULTILINE), dry.stdout


def test_the_caption_job_is_submitted_on_request(tmp_path):
    """train.submit_caption: the caption job goes to the cluster too; the per-face jobs still run here."""
    library = build_small_library(tmp_path / "library", n_photos=2)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf").resolve()
    train = double_config(workdir, max_train_epochs=1, mem_mb=600, cpus_per_gpu=1, submit_caption=True)
    write_config(workdir, library.root, train=train)
    run = snakemake(workdir, *PROFILE_RUN, check=False, env=double_env())
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) == 2
    for job_id in submitted:
        _sacct(job_id, "COMPLETED")
    slurm_logs = workdir / ".snakemake" / "slurm_logs"
    assert sorted(p.name for p in slurm_logs.iterdir()) == ["rule_caption_faces", "rule_train"]
    assert json.loads((workdir / "results" / "train" / "status.json").read_text())["state"] == "done"
    assert (workdir / "results" / "captions" / "captions.tsv").is_file()


def test_a_job_whose_node_has_no_gpu_for_it_fails_with_its_reason_on_the_login_console(tmp_path):
    """The node's GPU is not visible to the job (no LIKENESS_ALLOW_NO_GPU, CUDA_VISIBLE_DEVICES empty): the
    job fails (sacct FAILED, a non-zero exit code) and the login side prints why."""
    library = build_small_library(tmp_path / "library", n_photos=2)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf").resolve()
    write_config(workdir, library.root, train=double_config(workdir, max_train_epochs=1, mem_mb=600, cpus_per_gpu=1))
    env = {**double_env(), "LIKENESS_ALLOW_NO_GPU": "0", "CUDA_VISIBLE_DEVICES": ""}
    run = snakemake(workdir, *PROFILE_RUN, check=False, env=env)
    log = run.stdout + run.stderr
    assert run.returncode != 0, log
    (job_id,) = re.findall(r"submitted with SLURM jobid (\d+)", log)
    failed = _sacct(job_id, "FAILED")
    assert failed["ExitCode"] != "0:0"
    assert "likeness: the training job failed on its node: training cannot run on this node (no GPU found" in log
    run_status = json.loads(next((workdir / "results" / "train").glob("*/status.json")).read_text())
    assert run_status["state"] == "unavailable" and "no GPU found" in run_status["reason"]
    assert not list((workdir / "results" / "train").glob("*/output/*.safetensors"))  # nothing trained


def test_an_sbatch_memory_refusal_keeps_status_json_and_names_the_key(tmp_path):
    """A run here first (no GPU: the training stops at 'ready'), then the cluster profile with more memory than
    the node has: sbatch refuses; status.json stays as it was, and the console shows sbatch's error and the
    key to set, not the earlier run's log."""
    library = build_small_library(tmp_path / "library", n_photos=2)
    write_sqlite(library)
    workdir = copy_workflow(tmp_path / "wf").resolve()
    train = double_config(workdir, max_train_epochs=1, cpus_per_gpu=1, sd_scripts="")
    write_config(workdir, library.root, train=train)
    local = snakemake(workdir, "--cores", "2", env={"CUDA_VISIBLE_DEVICES": "", "LIKENESS_ALLOW_NO_GPU": "0"})
    assert "training is ready in results/train/" in local.stdout + local.stderr
    status = workdir / "results" / "train" / "status.json"
    before = status.read_bytes()
    write_config(workdir, library.root, train={**train, "sd_scripts": double_config(workdir)["sd_scripts"],
                                               "mem_mb": 10_000_000})  # fmt: skip
    run = snakemake(workdir, *PROFILE_RUN, check=False, env=double_env())
    log = run.stdout + run.stderr
    assert run.returncode != 0, log
    assert "likeness: the training job was not submitted: sbatch said" in log
    assert "Memory specification can not be satisfied" in log
    assert "the job asked for train.mem_mb=10000000 MB: set train.mem_mb" in log
    assert "training is ready in" not in log  # the earlier local run's log is not shown as this job's
    assert status.read_bytes() == before
    assert not re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert "training is ready in" in (workdir / "logs" / "train.log").read_text()  # the earlier log, back in place
