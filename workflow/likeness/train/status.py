"""Status records of the GPU jobs (train, headshots) and the readiness param both rules share.

A GPU job that cannot launch here (no GPU, no sd-scripts, no base model) records 'ready' and succeeds.
Its rule has a ``ready`` param; Snakemake re-runs a job whose param differs from the one recorded when
the job last ran, so the value must come out the same before and after the job. The job writes the value
it ran with into its status ("readiness"); reading it back keeps a finished job finished whatever this
machine lacks later (no GPU, a deleted base model), while a job that stopped at 'ready' is planned again
once the launch has become possible here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from likeness import tables
from likeness.atomic import atomic_write_json
from likeness.errors import LikenessError
from likeness.sdscripts.states import valid_safetensors
from likeness.train.runplan import RunPlan

LAUNCHABLE = "ready to launch"  # the readiness value when nothing is missing


def read_record(path: str | Path) -> dict[str, Any] | None:
    """A JSON record (a status, identity.json), or None when it is absent or unreadable."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def require_record(path: str | Path) -> dict[str, Any]:
    """A JSON record that is an input of the job: its absence is an error."""
    record = read_record(path)
    if record is None:
        raise LikenessError(f"cannot read {path}: not a readable JSON object")
    return record


def write_status(path: str | Path, record: Mapping[str, Any], readiness: str | None) -> dict[str, Any]:
    """Write a record with the readiness value the job ran with (no timestamp unless the record has one)."""
    full = {**record, **({} if readiness is None else {"readiness": readiness})}
    atomic_write_json(path, full)
    return full


def readiness_param(status_path: str | Path, now: Callable[[], str], keep: Callable[[dict[str, Any]], bool]) -> str:
    """The rule's ``ready`` param. ``now``: what this machine would record (LAUNCHABLE or what is missing);
    ``keep(status)``: whether the job's result stands (finished, or arrived another way) whatever ``now``.

    Otherwise the value changes only when the launch has become possible here.
    """
    status = read_record(status_path)
    recorded = status.get("readiness") if status else None
    if status is None or not isinstance(recorded, str):
        return now()  # nothing run yet (or a status from before this param existed)
    if keep(status):
        return recorded
    current = now()
    return current if current == LAUNCHABLE else recorded


def write_run_status(plan: RunPlan, status_path: str | Path | None, state: str, **details: Any) -> dict[str, Any]:
    """The training's state in its run folder; the rule's output gets only a final state ('ready', 'done'):
    after a kill it is absent, so Snakemake simply runs the job again (which resumes) instead of asking
    for --rerun-incomplete."""
    record = {
        "state": state,
        "run_id": plan.run_id,
        "run_dir": plan.run_dir,
        "lora": str(plan.final_lora) if state == "done" else None,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        **details,
    }
    atomic_write_json(plan.status_json, record)
    if status_path and state in tables.TRAIN_FINAL_STATES:
        atomic_write_json(status_path, record)
    return record


def training_finished(plan: RunPlan) -> bool:
    return valid_safetensors(plan.final_lora)


def finished_run(status: Mapping[str, Any]) -> RunPlan | None:
    """The run a status names, when its final LoRA is there (None when not, or the plan is unreadable)."""
    try:
        plan = RunPlan.load(Path(str(status["run_dir"])))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return plan if training_finished(plan) else None
