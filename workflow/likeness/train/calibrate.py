"""Measure the training's speed before paying for it (rule ``calibrate``, run by name only).

On the training machine, once sd-scripts and the base model are ready (installed and fetched as the
train job would), runs ``CALIBRATE_STEPS`` real steps of sd-scripts with the run's exact configs (the
run folder the train job will use, its dataset.toml, and its train.toml changed only to stop after those
steps and to save nothing but into a throw-away folder), times the steps after ``WARMUP_STEPS`` (the first
ones compile kernels and fill caches), watches the peak GPU memory (nvidia-smi, once a second), stores the
measurement in ``results/train/calibration.tsv`` and logs the estimate before and after. The estimate
judges it like any measurement (likeness.train.estimate.judge_measurement): the timed steps are
``MIN_MEASURED_STEPS``, so a plausible one replaces the table's figure for the train job that follows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.atomic import atomic_write_json
from likeness.config import Section
from likeness.joblog import JobLog
from likeness.sdscripts import progress
from likeness.sdscripts.tomlfile import dumps_toml
from likeness.train import calibration as cal
from likeness.train import estimate as est
from likeness.train import gpus
from likeness.train import readiness as rd
from likeness.train.launch import _launch_inputs, _run_lock, launch_command
from likeness.train.runplan import RunPlan, plan_estimate, prepare_run

WARMUP_STEPS = 10
# a few more than the timed steps the estimate wants: tqdm may skip a redraw at the warm-up's end
CALIBRATE_STEPS = WARMUP_STEPS + est.MIN_MEASURED_STEPS + 5
CALIBRATE_DIR = "calibrate"  # inside the run folder; removed after the measurement
# train.toml keys that save, sample or log: a calibration writes nothing the run keeps.
_NOT_IN_A_CALIBRATION = (
    "max_train_epochs",
    "save_every_n_epochs",
    "save_every_n_steps",
    "save_state",
    "save_state_on_train_end",
    "sample_prompts",
    "sample_every_n_epochs",
    "sample_every_n_steps",
    "sample_at_first",
    "logging_dir",
    "log_with",
)


def calibration_options(train_doc: Mapping[str, Any], steps: int, output_dir: str) -> dict[str, Any]:
    """The run's train.toml for ``steps`` steps into ``output_dir``, saving and sampling nothing else."""
    doc: dict[str, Any] = {}
    for key, value in train_doc.items():
        if isinstance(value, Mapping):
            doc[key] = {k: v for k, v in value.items() if k not in _NOT_IN_A_CALIBRATION}
        elif key not in _NOT_IN_A_CALIBRATION:
            doc[key] = value
    saving = doc.setdefault("saving", {})
    saving.update(output_dir=output_dir, output_name="calibration")
    doc.setdefault("training", {})["max_train_steps"] = int(steps)
    return {key: value for key, value in doc.items() if value != {}}


@dataclass(frozen=True)
class StepTimes:
    """When each progress line of the bar arrived: (monotonic seconds, steps done)."""

    marks: list[tuple[float, int]]

    def seconds_per_step(self, warmup: int) -> tuple[float, int] | None:
        """Seconds per step over the steps after ``warmup``, and how many that were; None when too few."""
        after = [(t, n) for t, n in self.marks if n >= warmup]
        if len(after) < 2 or after[-1][1] <= after[0][1]:
            return None
        (t0, n0), (t1, n1) = after[0], after[-1]
        return (t1 - t0) / (n1 - n0), n1 - n0


def _memory_used_mib(env: Mapping[str, str]) -> float | None:
    command = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False, env=dict(env))
        return max(float(v) for v in result.stdout.split()) if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


@contextlib.contextmanager
def peak_memory_watch(env: Mapping[str, str], interval: float = 1.0) -> Iterator[list[float]]:
    """The GPU memory in use (MiB, nvidia-smi's memory.used, the largest over the visible GPUs) sampled every
    ``interval`` s while the block runs; the list stays empty without nvidia-smi."""
    samples: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            used = _memory_used_mib(env)
            if used is None:
                return
            samples.append(used)
            stop.wait(interval)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=15)


def _run_timed(command: list[str], cwd: Path, env: dict[str, str], log: JobLog) -> tuple[int, StepTimes, str]:
    """Run the calibration, its output into the job's log; the arrival time of every progress line."""
    marks: list[tuple[float, int]] = []
    captured: list[str] = []
    process = subprocess.Popen(command, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert process.stdout is not None
    pending = ""
    while chunk := os.read(process.stdout.fileno(), 65536):
        now = time.monotonic()
        text = chunk.decode("utf-8", errors="replace")
        log.file.write(text)
        log.file.flush()
        captured.append(text)
        *fragments, pending = progress.fragments(pending + text)
        for fragment in fragments:
            step = progress.parse_progress(fragment)
            if step and (not marks or step.done > marks[-1][1]):
                marks.append((now, step.done))
    return process.wait(), StepTimes(marks), "".join(captured)


def _price(estimate: est.Estimate) -> str:
    return (
        f"{estimate.seconds_per_step:.3g} s/step, {estimate.total_hours:.2f} h,"
        f" {estimate.cost:.2f} {estimate.currency}, Slurm/Snakemake runtime {estimate.runtime_minutes} min"
    )


def calibrate_run(
    plan: RunPlan,
    current: Section,
    log: JobLog,
    *,
    out_json: str | Path,
    calibration_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    steps: int = CALIBRATE_STEPS,
    warmup: int = WARMUP_STEPS,
) -> int:
    """Time ``steps`` real steps of the run ``plan`` here; 0 when measured (``out_json`` says what)."""
    run_env = dict(os.environ if env is None else env)
    cfg = plan.settings(current)
    calibration_path = calibration_path or Path(plan.run_dir).parent / "calibration.tsv"
    here = gpus.query_gpus(run_env)
    before = plan_estimate(plan, cfg, calibration_path, here)
    missing = rd.missing_for_launch(cfg, run_env)
    if missing:
        log(f"calibration refused: it runs on the training machine, and here {'; '.join(missing)}")
        return 1
    with _run_lock(Path(plan.run_dir)) as locked:
        if not locked:
            log(f"calibration refused: a training is running in {plan.run_dir}/")
            return 3
        cfg, model_file, _ = _launch_inputs(cfg, log, run_env)
        work = Path(plan.run_dir) / CALIBRATE_DIR
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            train_doc = tomllib.loads(Path(plan.train_toml).read_text(encoding="utf-8"))
            options = calibration_options(train_doc, steps, f"{CALIBRATE_DIR}/output")
            (work / "train.toml").write_text(dumps_toml(options), encoding="utf-8")
            command = launch_command(cfg, None, model_file)
            command[command.index("--config_file") + 1] = f"{CALIBRATE_DIR}/train.toml"
            sd_scripts = str(Path(cfg.sd_scripts).expanduser().resolve())
            python_path = os.pathsep.join(p for p in (sd_scripts, run_env.get("PYTHONPATH", "")) if p)
            child_env = {**run_env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
            log(f"calibration of {plan.run_id}: {steps} steps ({warmup} warm-up), the run's configs, output {work}/")
            with peak_memory_watch(run_env) as memory:
                code, times, _ = _run_timed(command, Path(plan.run_dir).resolve(), child_env, log)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # throw-away: nothing of the run is in it
    measured = times.seconds_per_step(warmup)
    if code != 0 or measured is None:
        log(f"calibration failed (exit code {code}; {len(times.marks)} progress lines); see {log.file.name}")
        return code or 1
    seconds, timed = measured
    peak_gb = round(max(memory) / 1024, 2) if memory else None
    verdict = cal.record_measured_speed(
        plan, cfg, seconds, calibration_path, rd.detect_gpus(run_env), steps=timed, peak_memory_gb=peak_gb,
        origin="calibration of", env=run_env,
    )  # fmt: skip
    log(verdict)
    log(f"peak GPU memory: {f'{peak_gb:g} GB' if peak_gb is not None else 'not measured (no nvidia-smi)'}")
    after = plan_estimate(plan, cfg, calibration_path, here)
    for line in after.format_lines():
        log(line)
    log(f"price before: {_price(before)}")
    log(f"price now:    {_price(after)}")
    atomic_write_json(
        out_json,
        {
            "run_id": plan.run_id,
            "gpu": after.gpu,
            "seconds_per_step": round(seconds, 4),
            "steps_timed": timed,
            "warmup_steps": warmup,
            "peak_memory_gb": peak_gb,
            "verdict": verdict,
            "before": {"seconds_per_step": before.seconds_per_step, "hours": before.total_hours, "cost": before.cost},
            "after": {"seconds_per_step": after.seconds_per_step, "hours": after.total_hours, "cost": after.cost},
            "speed_source": after.speed_source,
        },
    )
    return 0


def calibrate_stage(
    cfg: Section,
    images_dir: str | Path,
    captions_dir: str | Path,
    *,
    trigger: str,
    class_word: str | None,
    runs_root: str | Path,
    out_json: str | Path,
    log: JobLog,
) -> int:
    """The calibrate rule's job: the run folder the train job will use (made now if new), then the timing."""
    plan = prepare_run(cfg, images_dir, captions_dir, trigger=trigger, class_word=class_word, runs_root=runs_root)
    return calibrate_run(plan, cfg, log, out_json=out_json)
