"""Launch, resume and watch sd-scripts' training; what the train rule runs.

After an interruption the same command resumes from the newest complete per-epoch state (``--resume
<state> --initial_epoch <E+1>``, the recipe that avoids sd-scripts' resume-counter bugs). Before
launching, the budget guard compares the estimate with ``train.max_gpu_hours``; where no GPU, sd-scripts
checkout or base model is available the stage stops at a ready-to-launch run folder (status 'ready'),
logs the estimate and one line on how to launch, and succeeds; a submitted job (train.submit, a Slurm
node) fails instead, with its reason. A finished run is never planned again; one whose LoRA files were
copied back from another machine is recorded as done here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from likeness.atomic import atomic_write_json
from likeness.config import Section, validate_section
from likeness.errors import LikenessError
from likeness.joblog import PROGRESS_INTERVAL_ENV, JobLog, run_script
from likeness.sdscripts import names, progress
from likeness.sdscripts.states import find_resume_state
from likeness.summary import hint
from likeness.train import base_model as bm
from likeness.train import calibration as cal
from likeness.train import gpus
from likeness.train import readiness as rd
from likeness.train import status as st
from likeness.train import trainer_install as ti
from likeness.train.runplan import RUN_OUTPUT, RunPlan, as_plan, estimate_record, plan_estimate, prepare_run

# The target the ready and interrupted lines name, in this run's own command (likeness.summary.hint).
LAUNCH_TARGET = "train"
# The run folder's state when a launch cannot happen where the job runs (a submitted job without a GPU,
# trainer or base model; a base model that cannot be fetched): running the same job again cannot help.
UNAVAILABLE = "unavailable"
UNAVAILABLE_HINT = (
    "submit it where a GPU is visible to the job (a GPU partition: slurm_partition in profiles/slurm/config.yaml)"
    " with train.sd_scripts and train.base_model readable from the node"
)


def launch_command(cfg: Section, resume: tuple[Path, int] | None, model_file: str | None = None) -> list[str]:
    """sd-scripts' command line, run inside the run folder: its files are named relative to it.

    ``model_file``: the downloaded base model, which replaces the repo id that train.toml names
    (sd-scripts' command line wins over its config file)."""
    script = Path(cfg.sd_scripts).expanduser().resolve() / names.TRAIN_SCRIPT
    command = [*rd.launcher_argv(cfg), str(script), "--config_file", "train.toml", "--dataset_config", "dataset.toml"]
    if model_file:
        command += ["--pretrained_model_name_or_path", model_file]
    if resume:
        state_dir, epoch = resume
        command += ["--resume", f"{RUN_OUTPUT}/{state_dir.name}", "--initial_epoch", str(epoch + 1)]
    return command


def launch_command_preview(cfg: Section, plan: RunPlan) -> list[str]:
    sd_scripts = cfg.sd_scripts or "<train.sd_scripts>"
    if sd_scripts == "auto":  # where install_trainer puts it (the torch build follows the machine's driver)
        sd_scripts = f"{cfg.cache_dir}/sd-scripts-{cfg.sd_scripts_commit[:12]}-<torch build>/sd-scripts"
    resume = find_resume_state(plan.output_dir, plan.output_name)
    return launch_command(dataclasses.replace(cfg, sd_scripts=sd_scripts), resume)


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[bool]:
    """An exclusive lock on the run folder (released by the kernel even on SIGKILL)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _forward_signals(process: subprocess.Popen[bytes], received: list[int]) -> Iterator[None]:
    """Pass SIGINT/SIGTERM on to the training (it saves nothing on them; the last state stays the resume
    point) and remember them, so that this process exits as interrupted rather than as failed."""

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    except ValueError:  # not the main thread: signals reach the child through its process group anyway
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stream_child(process: subprocess.Popen[bytes], log: JobLog, run_log: TextIO, interval: float) -> str:
    """Copy the child's output to the job's log and the run's own log; log a progress line (steps, s/step,
    ETA) every ``interval`` s."""
    assert process.stdout is not None
    captured: list[str] = []
    pending = ""
    epoch = "?"
    last_print = 0.0
    fd = process.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        text = chunk.decode("utf-8", errors="replace")
        for handle in (log.file, run_log):
            handle.write(text)
            handle.flush()
        captured.append(text)
        pending += text
        *fragments, pending = progress.fragments(pending)
        for fragment in fragments:
            epoch = progress.parse_epoch(fragment) or epoch
            step = progress.parse_progress(fragment)
            now = time.monotonic()
            if step and (now - last_print >= interval or step.done == step.total):
                last_print = now
                log(
                    f"training: epoch {epoch}, step {step.done}/{step.total}, "
                    f"{step.seconds_per_step:.2f} s/step, ETA {step.left}"
                )
    return "".join(captured)


def run_training(
    plan: RunPlan | str | Path,
    current: Section,
    log: JobLog,
    *,
    status_path: str | Path | None = None,
    calibration_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    readiness: str | None = None,
) -> int:
    """Train (or resume) the run; returns the exit code for the Snakemake job.

    ``current``: the train settings now (the plan's own settings win, except the machine's keys);
    ``readiness``: the rule's readiness param, recorded in status.json (likeness.train.status).

    0: finished (status 'done'), or stopped at a ready-to-launch folder because the GPU, sd-scripts or the
    base model is missing here (status 'ready'). Non-zero: a submitted job (train.submit) that cannot train
    on its node, refused by the budget guard, another training holds the folder, or the training was
    interrupted or failed (run again to resume). The run folder's status.json says which.
    """
    plan = as_plan(plan)
    cfg = plan.settings(current)
    calibration_path = calibration_path or Path(plan.run_dir).parent / "calibration.tsv"
    # this is the training machine (a Slurm node too): train.gpu auto is the GPU it has
    estimate = plan_estimate(plan, cfg, calibration_path, gpus.query_gpus(env))
    for line in [*estimate.format_lines(), *(f"excluded: {reason}" for reason in plan.excluded)]:
        log(line)
    details = {} if readiness is None else {"readiness": readiness}
    if st.training_finished(plan):
        # The run folder's own status (the rule's output is gone: Snakemake removes it before the job runs)
        previous = st.read_record(plan.status_json)
        log.file.write(cal.kept_training_log(plan).decode("utf-8", errors="replace"))
        imported = cal.import_measured_speed(plan, calibration_path)
        if imported:
            log(f"measured {imported:.3f} s/step (recorded with the run); stored in {calibration_path}")
        elsewhere = (previous or {}).get("state") == "ready"
        extra = {"finished_elsewhere": True} if elsewhere else {}
        st.write_run_status(plan, status_path, "done", **details, **extra)
        if elsewhere:  # it stopped at 'ready' here, and its LoRA files were copied back (a rented GPU machine)
            log(f"training {plan.run_id} finished elsewhere: {plan.final_lora} recorded as done")
        else:
            log(f"training already finished: {plan.final_lora}")
        return 0
    # Nothing can start without a GPU, sd-scripts and a base model: then the run only prepares the
    # training (its estimate lines above carry any budget warning) and succeeds, as the demo must.
    run_env = dict(os.environ if env is None else env)
    missing = rd.missing_for_launch(cfg, run_env)
    if missing and cfg.submit:
        # A submitted job (train.submit, a Slurm node) that cannot train where it runs is a failure: a zero
        # exit would bill the allocation as a success, and the reason would sit in a log no one reads.
        reason = "; ".join(missing)
        st.write_run_status(plan, None, UNAVAILABLE, reason=reason, missing=missing)
        log(f"training cannot run on this node ({reason}): {UNAVAILABLE_HINT}")
        return 1
    if missing:
        (Path(plan.run_dir) / "READY").write_text(" ".join(launch_command_preview(cfg, plan)) + "\n")
        st.write_run_status(plan, status_path, "ready", missing=missing, estimate=estimate_record(estimate), **details)
        again = hint(LAUNCH_TARGET, env=run_env)
        log(f"training is ready in {plan.run_dir}/ ({'; '.join(missing)}): fix that and run `{again}`")
        return 0
    budget = estimate.budget_message()
    if budget:
        # Recorded in the run folder (pod.sh reads it): running again cannot help, a changed setting can.
        st.write_run_status(plan, None, "refused", reason=budget)
        log(f"training refused: {budget}")
        return 2
    with _run_lock(Path(plan.run_dir)) as locked:
        if not locked:
            log(f"training refused: another training is running in {plan.run_dir}/")
            return 3
        try:
            cfg, model_file, trainer = _launch_inputs(cfg, log, run_env)
        except LikenessError as error:  # the base model offline, the trainer's install failed: a setting's fix
            st.write_run_status(plan, None, UNAVAILABLE, reason=str(error))
            raise
        # which sd-scripts, torch and base model trained this run (a resume may use a newer install)
        record = {"sd_scripts": cfg.sd_scripts, "base_model": model_file or cfg.base_model, **trainer}
        atomic_write_json(Path(plan.run_dir) / "trainer.json", record)
        return _launch(plan, cfg, log, status_path, calibration_path, run_env, details, model_file)


def _launch_inputs(cfg: Section, log: JobLog, env: dict[str, str]) -> tuple[Section, str | None, dict[str, Any]]:
    """Install sd-scripts ("auto") and fetch the base model (a repo id): only now, right before the launch.

    Returns the settings pointing at the install, the downloaded model file (None for a local file, which
    train.toml already names) and the install's versions record (empty for a given checkout).
    """
    model_file = None
    if bm.is_repo_id(cfg.base_model):  # first: offline without it fails at once
        model_file = str(bm.resolve(cfg, log=log).absolute())
        log(f"base model: {model_file}")
    versions: dict[str, Any] = {}
    if cfg.sd_scripts == "auto":
        install = ti.ensure_installed(cfg, log.file, env=env, log=log)
        log(f"trainer: {ti.describe(install)} in {install.root}/")
        cfg, versions = ti.launch_settings(cfg, install), {"installed": install.versions}
    return cfg, model_file, versions


def _launch(
    plan: RunPlan,
    cfg: Section,
    log: JobLog,
    status_path: str | Path | None,
    calibration_path: str | Path,
    env: dict[str, str],
    details: Mapping[str, Any],
    model_file: str | None = None,
) -> int:
    with contextlib.suppress(FileNotFoundError):
        (Path(plan.run_dir) / "READY").unlink()
    resume = find_resume_state(plan.output_dir, plan.output_name)
    command = launch_command(cfg, resume, model_file)
    start_note = f"resuming from {resume[0].name} (epoch {resume[1] + 1})" if resume else "starting from epoch 1"
    log(f"training {plan.run_id}: {start_note}; log: {log.file.name}")
    st.write_run_status(plan, status_path, "running", command=command)
    # sd-scripts runs inside the run folder; its own folder on PYTHONPATH keeps its `library` package importable
    # whatever the launcher does with the working directory.
    sd_scripts = str(Path(cfg.sd_scripts).expanduser().resolve())
    python_path = os.pathsep.join(p for p in (sd_scripts, env.get("PYTHONPATH", "")) if p)
    env = {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
    interval = float(env.get(PROGRESS_INTERVAL_ENV, "30"))
    received: list[int] = []
    started = time.monotonic()
    header = f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')} {shlex.join(command)}\n"
    log.file.write(header)
    log.file.flush()
    try:
        process = subprocess.Popen(
            command, cwd=str(Path(plan.run_dir).resolve()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
    except OSError as error:
        log(f"training could not start: {error}")
        st.write_run_status(plan, status_path, "failed", error=str(error))
        return 1
    # Every launch of the run (a resume too) appends to the run's own log beside its LoRA files: it
    # travels back from a rented machine with them, and holds every epoch's output.
    with _forward_signals(process, received), cal.run_log_appender(plan, header) as run_log:
        output = _stream_child(process, log, run_log, interval)
        code = process.wait()
    elapsed = time.monotonic() - started
    if received:
        st.write_run_status(plan, status_path, "interrupted", signal=received[0])
        log(f"training interrupted by signal {received[0]}; run `{hint(LAUNCH_TARGET, env=env)}` again to resume")
        return 128 + received[0]
    if code != 0 or not st.training_finished(plan):
        latest = find_resume_state(plan.output_dir, plan.output_name)
        where = f"from epoch {latest[1] + 1}" if latest else "from the start (no complete state yet)"
        log(f"training stopped (exit code {code}; see {log.file.name}); running it again resumes {where}")
        st.write_run_status(plan, status_path, "failed", exit_code=code)
        return code or 1
    last = progress.measured_progress(output)
    measured = last.seconds_per_step if last else None
    if last:
        gpus_here = rd.detect_gpus(env)
        log(
            cal.record_measured_speed(
                plan, cfg, last.seconds_per_step, calibration_path, gpus_here, steps=last.done, env=env
            )
        )
    st.write_run_status(
        plan, status_path, "done", seconds=round(elapsed, 1), measured_seconds_per_step=measured, **details
    )
    log(f"training finished: {plan.final_lora}")
    return 0


def train_stage(
    cfg: Section,
    images_dir: str | Path,
    captions_dir: str | Path,
    *,
    trigger: str,
    class_word: str | None,
    status_path: str | Path,
    runs_root: str | Path,
    readiness: str | None = None,
    log: JobLog,
) -> int:
    """The train rule's job: prepare (or find) the run folder, then train, resume or stop."""
    plan = prepare_run(cfg, images_dir, captions_dir, trigger=trigger, class_word=class_word, runs_root=runs_root)
    return run_training(plan, cfg, log, status_path=status_path, readiness=readiness)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m likeness.train.launch``: the training stage from a config file's ``train`` section."""
    parser = argparse.ArgumentParser(prog="python -m likeness.train.launch", description=main.__doc__)
    parser.add_argument("--configfile", required=True, help="YAML config with a 'train' section")
    parser.add_argument("--dataset", required=True, help="folder of <stem>.jpg (+ <stem>.txt unless --captions)")
    parser.add_argument("--captions", default="", help="folder of the <stem>.txt captions (default: --dataset)")
    parser.add_argument("--trigger", required=True)
    parser.add_argument("--class-word", default="")
    parser.add_argument("--log", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--runs-root", default="results/train")
    args = parser.parse_args(argv)

    def job(*, log: JobLog) -> int:
        config = yaml.safe_load(Path(args.configfile).read_text(encoding="utf-8")) or {}
        return train_stage(
            validate_section("train", config.get("train")),
            args.dataset,
            args.captions or args.dataset,
            trigger=args.trigger,
            class_word=args.class_word or None,
            status_path=args.status,
            runs_root=args.runs_root,
            log=log,
        )

    return run_script(args.log, job)


if __name__ == "__main__":
    sys.exit(main())
