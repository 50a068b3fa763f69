"""The training job's memory default (likeness.train.memory) and what the login side says after a submitted
training job failed (likeness.train.cluster); tests/test_slurm.py runs both on the real Slurm."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from likeness.config import validate_section
from likeness.train import cluster, memory

SBATCH_REFUSAL = """Error in rule train:
    message: SLURM sbatch failed. The error message was 'sbatch: error: Memory specification can not be satisfied
sbatch: error: Batch job submission failed: Requested node configuration is not available'.
    sbatch call:
        sbatch --job-name x --mem 32000 --gpus=1
    jobid: 7
    log: logs/train.log (check log file(s) for error details)
"""
NODE_FAILURE = """Error in rule train:
    message: SLURM-job '12' failed, SLURM status is: 'FAILED'.
    jobid: 7
    log: logs/train.log (check log file(s) for error details)
"""


def test_mem_mb_auto_is_what_the_job_needs_in_ram(tmp_path: Path) -> None:
    sdxl = validate_section("train", {"base_model": "stabilityai/stable-diffusion-xl-base-1.0"})
    assert sdxl.mem_mb == "auto"  # the default
    assert memory.job_memory_mb(sdxl, 30) == 24576  # the figure the schema and README quote
    assert memory.job_memory_mb(sdxl, 3000) > memory.job_memory_mb(sdxl, 30)  # the latents cache grows
    local = tmp_path / "model.safetensors"
    with local.open("wb") as handle:
        handle.truncate(2 * 1024**3)  # a 2 GiB file (sparse)
    small = validate_section("train", {"base_model": str(local), "resolution": 512})
    assert memory.job_memory_mb(small, 10) == 3 * 2048 + 4096 + 1024  # rounded up to whole GiB
    assert memory.job_memory_mb(validate_section("train", {"mem_mb": 12000}), 30) == 12000  # a number wins


def test_an_sbatch_memory_refusal_names_the_key(tmp_path: Path) -> None:
    train_log = tmp_path / "train.log"
    train_log.write_text("training is ready in results/train/x/ (no GPU found)\n")  # an earlier local run's
    lines = cluster.failure_lines(SBATCH_REFUSAL, train_log, time.time(), 32000)
    assert len(lines) == 2
    assert lines[0].startswith("likeness: the training job was not submitted: sbatch said 'sbatch: error: Memory")
    assert lines[0].endswith("Requested node configuration is not available'")
    assert lines[1].startswith("likeness: the job asked for train.mem_mb=32000 MB: set train.mem_mb")
    other = SBATCH_REFUSAL.replace("Memory specification can not be satisfied", "Invalid account")
    assert len(cluster.failure_lines(other, train_log, time.time(), 32000)) == 1  # no memory hint for that


def test_a_node_failure_prints_the_jobs_own_reason_from_this_run_only(tmp_path: Path) -> None:
    train_log = tmp_path / "train.log"
    train_log.write_text(
        "estimate: 30 steps\ntraining cannot run on this node (no GPU found (nvidia-smi -L)): submit it\n"
    )
    since = train_log.stat().st_mtime - 1
    lines = cluster.failure_lines(NODE_FAILURE, train_log, since, 600)
    assert lines == [
        "likeness: the training job failed on its node: training cannot run on this node (no GPU found"
        " (nvidia-smi -L)): submit it"
    ]
    # a log older than the run is not this job's: the lines point at the logs instead
    stale = cluster.failure_lines(NODE_FAILURE, train_log, since + 10, 600)
    assert len(stale) == 1 and "its log:" in stale[0] and "no GPU" not in stale[0]
    # another rule's failure is not the training's
    assert cluster.failure_lines(NODE_FAILURE.replace("rule train", "rule crop_face"), train_log, since, 600) == []


def test_the_status_comes_back_as_it_was_after_a_failed_job_removed_it(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"state": "ready", "readiness": "missing: no GPU found (nvidia-smi -L)"}))
    os.utime(status, (1_700_000_000, 1_700_000_000))
    snapshot = cluster.StatusSnapshot.take(status)
    assert not snapshot.restore()  # still there: nothing to do
    before = status.read_bytes()
    status.unlink()  # what Snakemake does with a failed job's output
    log = tmp_path / "snakemake.log"
    log.write_text(SBATCH_REFUSAL)
    lines = cluster.report_failure(snapshot, [str(log)], str(tmp_path / "train.log"), time.time(), 32000)
    assert status.read_bytes() == before and status.stat().st_mtime == 1_700_000_000
    assert lines[-1].endswith("is back as it was before this run (a failed job's output is removed)")
    assert not list(tmp_path.glob(".*.tmp"))
    # none before the run: none after it
    nothing = cluster.StatusSnapshot.take(tmp_path / "absent.json")
    assert not nothing.restore() and not (tmp_path / "absent.json").exists()


def test_the_earlier_log_is_set_aside_while_a_submitting_run_lasts(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "train.log"
    log.parent.mkdir()
    aside = cluster.LogAside(log)
    assert not aside.set_aside() and not aside.put_back()  # no log yet: nothing to do
    log.write_text("training is ready in results/train/x/ (no GPU found)\n")
    assert aside.set_aside() and not log.exists()
    assert aside.put_back() and "training is ready" in log.read_text()  # refused: the earlier log comes back
    assert aside.set_aside()
    log.write_text("")  # what Snakemake leaves behind a refused submission
    assert aside.put_back() and "training is ready" in log.read_text()
    assert aside.set_aside()
    log.write_text("training finished\n")  # the job wrote its own
    assert not aside.put_back()
    assert log.read_text() == "training finished\n" and "ready" in aside.aside.read_text()


def test_the_progress_relay_prints_each_new_progress_line_once(tmp_path):
    log = tmp_path / "train.log"
    relay = cluster.ProgressRelay(log, interval=60, emit=lambda line: None)
    assert relay.poll() is None  # no log yet: the job has not started on its node
    log.write_text("training run 3aef: 15 images, 1950 steps\nsteps:  0%|          | 0/1950\n")
    assert relay.poll() is None
    with log.open("a") as handle:
        # sd-scripts' bar ends in a carriage return: the job's own line follows it on the same line
        handle.write("steps: 10%|# | 195/1950\rtraining: epoch 1/10, step 195/1950, 1.45 s/step, ETA 0:42:25\n")
    assert relay.poll() == (
        f"likeness: on the cluster: epoch 1/10, step 195/1950, 1.45 s/step, ETA 0:42:25 (log: {log})"
    )
    assert relay.poll() is None  # nothing new since
    with log.open("a") as handle:
        handle.write("training: epoch 2/10, step 390/1950, 1.44 s/step, ETA 0:37:26\n")
    assert relay.poll().startswith("likeness: on the cluster: epoch 2/10, step 390/1950")


def test_the_progress_relay_runs_until_stopped(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("training: epoch 1/1, step 1/3, 1.00 s/step, ETA 0:00:02\n")
    shown: list[str] = []
    relay = cluster.ProgressRelay(log, interval=0, emit=shown.append)
    assert relay.interval == 1.0  # never a busy loop, whatever the environment asks
    relay.start()
    try:
        deadline = time.monotonic() + 30
        while not shown and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        relay.stop()
    assert shown == [f"likeness: on the cluster: epoch 1/1, step 1/3, 1.00 s/step, ETA 0:00:02 (log: {log})"]
    assert relay._thread is not None and not relay._thread.is_alive()
