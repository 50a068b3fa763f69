"""Measured speeds and runs finished elsewhere: what a finished training leaves for this machine.

A training that finishes here stores its measured seconds per step in ``results/train/calibration.tsv``
(the estimate then prefers it) and, beside its LoRA files in ``output/``, the speed and its console log,
so that copying output/ back from a rented machine brings both home. A run that stopped at 'ready' here
and whose LoRA was copied back is recorded as done by the next train job (likeness.train.readiness plans it
once; likeness.train.launch records it, imports the speed and restores the log, no GPU needed).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from likeness.atomic import atomic_write_json
from likeness.config import Section
from likeness.train import estimate as est
from likeness.train import gpus as gpu_names
from likeness.train import status as st
from likeness.train.runplan import RUNTIME_KEYS, RunPlan


def record_measured_speed(
    plan: RunPlan,
    cfg: Section,
    seconds: float,
    calibration_path: str | Path,
    gpus: Sequence[str],
    *,
    steps: int | None = None,
    peak_memory_gb: float | None = None,
    origin: str = "run",
    env: Mapping[str, str] | None = None,
) -> str:
    """Store a measured speed, with the GPU it ran on, its settings and the steps it timed, in the
    calibration table and beside the run's LoRA files; returns a sentence saying whether the estimate
    will use it (likeness.train.estimate.judge_measurement) or keeps it flagged."""
    table = est.load_speed_table()
    resolved = gpu_names.resolve(cfg.gpu, est.known_gpus(table), gpu_names.query_gpus(env))
    settings = cfg.as_dict()
    row = est.SpeedRow(
        gpu=resolved.name,
        vram_gb=resolved.memory_gb or 0.0,
        resolution=int(cfg.resolution),
        batch_size=int(cfg.batch_size),
        gradient_checkpointing="yes" if cfg.gradient_checkpointing else "no",
        seconds_per_step=round(seconds, 4),
        source=f"measured: {origin} {plan.run_id}, {datetime.now(UTC).date().isoformat()}",
        conditions=", ".join(gpus),
        steps=steps,
        settings=est.speed_settings(settings),
        peak_memory_gb=round(peak_memory_gb, 2) if peak_memory_gb is not None else None,
    )
    if origin == "run":  # a calibration's throw-away run is not the run's own measurement
        atomic_write_json(plan.measured_json, asdict(row))
    est.record_calibration(calibration_path, row)
    why = est.judge_measurement(row, [r for r in table if r.gpu == resolved.speed_of], row.settings)
    where = f"{row.seconds_per_step:g} s/step on {row.gpu} over {steps if steps is not None else '?'} steps"
    if why:
        return (
            f"measured {where}; stored in {calibration_path} but flagged, the estimate keeps the table's figure: {why}"
        )
    return f"measured {where}; stored in {calibration_path}, the next estimate uses it"


def import_measured_speed(plan: RunPlan, calibration_path: str | Path) -> float | None:
    """Store the speed a run measured elsewhere (output/likeness_measured_speed.json) in this machine's
    calibration table, once; returns the seconds per step it added."""
    try:
        data = json.loads(plan.measured_json.read_text(encoding="utf-8"))
        # the fields with defaults were added later: a record written before them has none
        row = est.SpeedRow(**{f.name: data[f.name] for f in fields(est.SpeedRow) if f.name in data})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any((known.gpu, known.source) == (row.gpu, row.source) for known in est.load_calibration(calibration_path)):
        return None
    est.record_calibration(calibration_path, row)
    return float(row.seconds_per_step)


@contextlib.contextmanager
def run_log_appender(plan: RunPlan, header: str) -> Iterator[TextIO]:
    """The run's own console log (output/likeness_train.log), open for appending one launch's output."""
    plan.run_log.parent.mkdir(parents=True, exist_ok=True)
    with plan.run_log.open("a", encoding="utf-8") as handle:
        handle.write(header)
        yield handle


def kept_training_log(plan: RunPlan) -> bytes:
    """The log of a run that finished elsewhere: the copy kept in output/, or a line saying it was not kept."""
    if plan.run_log.is_file():
        return plan.run_log.read_bytes()
    return f"training {plan.run_id} finished elsewhere; its log was not kept\n".encode()


def finished_elsewhere(cfg: Section, status_path: str | Path, inputs: Sequence[str | Path] = ()) -> bool:
    """The run status.json left at 'ready' has its LoRA now (trained on another machine, output/ copied back),
    and neither the config nor the ``inputs`` (the dataset) changed since it was planned: the next train job
    only records it as done, so the training's figures belong to this run's targets."""
    status = st.read_record(status_path)
    if not status or status.get("state") != "ready":
        return False
    try:
        plan = RunPlan.load(Path(str(status.get("run_dir", ""))))
        planned = (Path(plan.run_dir) / "plan.json").stat().st_mtime
        if any(Path(p).stat().st_mtime > planned for p in inputs):
            return False
    except (OSError, ValueError, TypeError, KeyError):
        return False
    # A setting left to "auto" (a step budget that follows the dataset) matches what the plan resolved it to.
    planned_values = plan.train_cfg
    changed = [
        key
        for key, value in cfg.as_dict().items()
        if key not in RUNTIME_KEYS and value != "auto" and planned_values.get(key) != value
    ]
    return not changed and st.training_finished(plan)
