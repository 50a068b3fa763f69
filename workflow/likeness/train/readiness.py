"""What a launch needs on this machine (a GPU, sd-scripts, a launcher, the base model) and the train
rule's readiness param (likeness.train.status)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from likeness.config import Section
from likeness.sdscripts import names
from likeness.train import base_model as bm
from likeness.train import status as st

ALLOW_NO_GPU_ENV = "LIKENESS_ALLOW_NO_GPU"  # tests only: run the test double without a GPU


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of the usable NVIDIA GPUs (``nvidia-smi -L``); the test override returns a pseudo entry."""
    env = os.environ if env is None else env
    if env.get(ALLOW_NO_GPU_ENV) == "1":
        return [f"no GPU check ({ALLOW_NO_GPU_ENV}=1)"]
    if env.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", result.stdout, re.M)]


def launcher_argv(cfg: Section) -> list[str]:
    """train.launcher split into words, or train.python (this interpreter when empty)."""
    argv = shlex.split(cfg.launcher) or [cfg.python or sys.executable]
    # A relative program path (".venv/bin/python") means the workflow's folder, not the run folder.
    if os.sep in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = os.path.abspath(argv[0])
    return argv


def base_model_problem(base_model: str) -> str | None:
    """Why the base model cannot be used (None when it is a local file/folder or a repo id, fetched at launch)."""
    if not base_model:
        return "train.base_model is not set"
    if bm.is_repo_id(base_model) or Path(base_model).expanduser().exists():
        return None
    return f"train.base_model {base_model!r} does not exist"


def missing_for_launch(cfg: Section, env: Mapping[str, str] | None = None, *, check_gpu: bool = True) -> list[str]:
    """What stops the training from running here (empty when it can run). ``check_gpu=False``: the job
    runs on another machine (a Slurm node), whose GPU this one cannot see."""
    missing = []
    if check_gpu and not detect_gpus(env):
        missing.append("no GPU found (nvidia-smi -L)")
    sd_scripts = cfg.sd_scripts
    if not sd_scripts:
        missing.append("train.sd_scripts is not set")
    elif sd_scripts != "auto" and not (Path(sd_scripts).expanduser() / names.TRAIN_SCRIPT).is_file():
        missing.append(f"train.sd_scripts {sd_scripts!r} has no {names.TRAIN_SCRIPT}")
    problem = base_model_problem(cfg.base_model)
    if problem:
        missing.append(problem)
    program = launcher_argv(cfg)[0]
    # with "auto" the launcher (accelerate, python) comes from the environment the install builds
    if sd_scripts != "auto" and not (shutil.which(program) or Path(program).is_file()):
        missing.append(f"launcher {program!r} not found (train.launcher / train.python)")
    return missing


def launch_readiness(cfg: Section, env: Mapping[str, str] | None = None) -> str:
    """What the launch depends on, in a few words: LAUNCHABLE or what is missing. With ``train.submit``
    (profiles/slurm) the GPU is the compute node's: this machine's is not looked for."""
    missing = missing_for_launch(cfg, env, check_gpu=not cfg.submit)
    return st.LAUNCHABLE if not missing else "missing: " + "; ".join(missing)


# The train rule's ``ready`` param for a run that stopped at 'ready' here and whose LoRA files were copied
# back (trained on a rented GPU machine): a value no job recorded before, so the train job runs once and
# records the training as done (no GPU needed), and every stage after it is planned in the same run.
COPIED_BACK = "trained elsewhere, LoRA copied back"


def readiness_param(cfg: Section, status_path: str | Path, env: Mapping[str, str] | None = None) -> str:
    """The train rule's ``ready`` param (likeness.train.status.readiness_param); COPIED_BACK for a 'ready'
    run whose final LoRA is now in its run folder."""
    status = st.read_record(status_path)
    if status and status.get("state") == "ready" and st.finished_run(status) is not None:
        return COPIED_BACK
    return st.readiness_param(
        status_path, lambda: launch_readiness(cfg, env), keep=lambda status: status.get("state") != "ready"
    )
