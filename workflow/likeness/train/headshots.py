"""Headshots after training (rule ``headshots``).

Every saved epoch's LoRA renders ``train.headshot_prompts`` through sd-scripts' own generation script
(``sdxl_gen_img.py`` of the same checkout, with the same base model, fixed seeds, a negative prompt), one
invocation per epoch into ``results/headshots/<run_id>/<settings hash>/e<E:06d>/`` (written to a
``.partial`` folder first and renamed when every image is there, so an interrupted run redoes only the
epoch it was in). likeness.train.best_epoch then picks the epoch that looks most like the person.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from likeness.atomic import atomic_write_bytes
from likeness.config import Section
from likeness.joblog import JobLog
from likeness.sdscripts import names
from likeness.sdscripts.states import saved_epochs
from likeness.summary import hint
from likeness.train import base_model as bm
from likeness.train import readiness as rd
from likeness.train import status as st
from likeness.train.runplan import RunPlan, plan_estimate

HEADSHOT_KEYS = (
    "headshot_prompts",
    "headshot_negative_prompt",
    "headshot_steps",
    "headshot_scale",
    "headshot_seed",
    "headshot_size",
    "headshot_sampler",
    "headshot_lora_weight",
)
# The target the ready line names, in this run's own command (likeness.summary.hint): the best epoch's
# LoRA, which renders the headshots it is chosen by.
LAUNCH_TARGET = "best_lora"


def prompt_lines(cfg: Section, trigger: str, class_word: str) -> list[str]:
    """sdxl_gen_img.py's --from_file lines: the prompt, then --n negative and --d seed (one per prompt)."""
    lines = []
    negative = " ".join(cfg.headshot_negative_prompt.split())
    for index, template in enumerate(cfg.headshot_prompts):
        text = " ".join(str(template).split()).replace("{trigger}", trigger).replace("{class_word}", class_word)
        if not text:
            continue
        if trigger not in text:
            text = f"{trigger}, {text}"
        text = text.replace(" --", " -")  # " --" starts an option in sd-scripts' prompt syntax
        line = f"{text} --d {cfg.headshot_seed + index}"
        if negative:
            line += f" --n {negative.replace(' --', ' -')}"
        lines.append(line)
    return lines


def settings_digest(cfg: Section, lines: Sequence[str], base_model: str) -> str:
    """Changes when anything that shapes the headshots changes: they are then rendered anew."""
    values = cfg.as_dict()
    payload = {key: values[key] for key in HEADSHOT_KEYS} | {"lines": list(lines), "base_model": base_model}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def headshot_size(cfg: Section) -> int:
    """train.headshot_size, 0 meaning the training resolution."""
    return cfg.headshot_size or cfg.resolution


def run_epochs(plan: RunPlan) -> list[tuple[int, Path]]:
    """(epoch, LoRA file) of every epoch the run saved; the final file is its last epoch."""
    last = int(plan.train_cfg["max_train_epochs"])
    return saved_epochs(plan.output_dir, plan.output_name, last)


def gen_command(cfg: Section, *, base_model: str, lora: Path, outdir: Path, prompts_file: Path) -> list[str]:
    """sd-scripts' own image generation, with only options its v0.10.1 parser has (checked in tests)."""
    script = Path(cfg.sd_scripts).expanduser().resolve() / names.GEN_SCRIPT
    size = str(headshot_size(cfg))
    # The script runs inside the checkout (its `library` package must import): absolute paths only.
    if Path(base_model).expanduser().exists():
        base_model = str(Path(base_model).expanduser().resolve())
    lora, outdir, prompts_file = lora.resolve(), outdir.resolve(), prompts_file.resolve()
    command = [
        *rd.launcher_argv(cfg),
        str(script),
        "--ckpt", base_model,
        "--outdir", str(outdir),
        "--from_file", str(prompts_file),
        "--network_module", names.NETWORK_MODULE,
        "--network_weights", str(lora),
        "--network_mul", str(float(cfg.headshot_lora_weight)),
        "--sequential_file_name",
        "--images_per_prompt", "1",
        "--batch_size", "1",
        "--W", size,
        "--H", size,
        "--steps", str(cfg.headshot_steps),
        "--scale", str(float(cfg.headshot_scale)),
        "--sampler", cfg.headshot_sampler,
        "--sdpa",
    ]  # fmt: skip
    if cfg.mixed_precision in ("bf16", "fp16"):
        command.append(f"--{cfg.mixed_precision}")
    tokenizers = cfg.extra.get("tokenizer_cache_dir")
    if tokenizers:
        command += ["--tokenizer_cache_dir", str(tokenizers)]
    return command


def readiness_param(cfg: Section, status_path: str | Path, env: Mapping[str, str] | None = None) -> str:
    """The headshots rule's ``ready`` param (likeness.train.status.readiness_param): finished headshots
    keep the value they ran with, so a machine without a GPU or a deleted base model never plans them
    again."""
    return st.readiness_param(
        status_path, lambda: rd.launch_readiness(cfg, env), keep=lambda status: status.get("state") == "done"
    )


def _complete(folder: Path, image_names: Sequence[str]) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in image_names)


def headshots_stage(
    cfg: Section,
    train_status: str | Path,
    *,
    trigger: str,
    class_word: str,
    status_path: str | Path,
    out_root: str | Path = "results/headshots",
    env: Mapping[str, str] | None = None,
    readiness: str | None = None,
    log: JobLog,
) -> int:
    """The headshots rule's job: render every saved epoch's headshots (skipping epochs already complete);
    0 unless a render failed. Before the training is done the status says so and the job succeeds, as the
    training job does. ``readiness``: the rule's param, recorded in the status."""
    env = dict(os.environ if env is None else env)
    status = st.require_record(train_status)
    if status.get("state") != "done":
        log(f"headshots wait for the training (its state: {status.get('state', 'unknown')})")
        record = {"state": "waiting", "reason": f"training is {status.get('state', 'not run')}"}
        st.write_status(status_path, record, readiness)
        return 0
    plan = RunPlan.load(status["run_dir"])
    epochs = run_epochs(plan)
    planned = plan.train_cfg  # what the run trained on, whatever the config says now
    base_model = str(planned.get("base_model") or cfg.base_model)
    lines = prompt_lines(cfg, trigger, class_word)
    folder = Path(out_root) / plan.run_id / settings_digest(cfg, lines, base_model)
    image_names = names.sequential_names(len(lines))
    todo = [(epoch, lora) for epoch, lora in epochs if not _complete(folder / f"e{epoch:06d}", image_names)]
    missing = rd.missing_for_launch(dataclasses.replace(cfg, base_model=base_model), env)
    missing = [m for m in missing if names.TRAIN_SCRIPT not in m]
    sd_scripts = Path(cfg.sd_scripts).expanduser()
    if todo and cfg.sd_scripts and not (sd_scripts / names.GEN_SCRIPT).is_file():
        missing.append(f"train.sd_scripts {cfg.sd_scripts!r} has no {names.GEN_SCRIPT}")
    if todo and missing:
        log(f"headshots are ready to render ({'; '.join(missing)}): fix that and run `{hint(LAUNCH_TARGET, env=env)}`")
        st.write_status(status_path, {"state": "ready", "run_id": plan.run_id, "missing": missing}, readiness)
        return 0
    refusal = budget_refusal(plan, cfg, len(todo), len(epochs), Path(status["run_dir"]).parent)
    if todo and refusal:
        log(f"headshots refused: {refusal}")
        st.write_status(status_path, {"state": "refused", "run_id": plan.run_id, "reason": refusal}, readiness)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    prompts_file = folder / "prompts.txt"
    atomic_write_bytes(prompts_file, ("\n".join(lines) + "\n").encode())
    for epoch, lora in todo:
        code = _render_epoch(cfg, base_model, lora, folder, epoch, prompts_file, image_names, env, log)
        if code:
            st.write_status(status_path, {"state": "failed", "run_id": plan.run_id, "epoch": epoch}, readiness)
            return code
    record: dict[str, Any] = {
        "state": "done",
        "run_id": plan.run_id,
        "folder": str(folder),
        "prompts": lines,
        "trigger": trigger,
        # What the run trained on (its plan's settings, not the config's now): best_lora records it beside
        # the chosen LoRA, which only works with that model.
        "base_model": bm.record(plan.settings(cfg)),
        "epochs": [
            {"epoch": epoch, "lora": str(lora), "images": [str(folder / f"e{epoch:06d}" / n) for n in image_names]}
            for epoch, lora in epochs
        ],
    }
    log(f"headshots: {len(epochs)} epochs x {len(lines)} prompts in {folder} ({len(todo)} epochs rendered now)")
    st.write_status(status_path, record, readiness)
    return 0


def _render_epoch(
    cfg: Section,
    base_model: str,
    lora: Path,
    folder: Path,
    epoch: int,
    prompts_file: Path,
    image_names: Sequence[str],
    env: Mapping[str, str],
    log: JobLog,
) -> int:
    """One sdxl_gen_img.py run into a .partial folder, renamed when every image is there; its exit code."""
    target = folder / f"e{epoch:06d}"
    partial = folder / f".e{epoch:06d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    command = gen_command(cfg, base_model=base_model, lora=lora, outdir=partial, prompts_file=prompts_file)
    log(f"headshots of epoch {epoch}: {len(image_names)} prompts with {lora.name}")
    log.file.write(f"=== {' '.join(command)}\n")
    log.file.flush()
    checkout = str(Path(cfg.sd_scripts).expanduser())
    result = subprocess.run(
        command, cwd=checkout, stdout=log.file, stderr=subprocess.STDOUT, env=dict(env), check=False
    )
    if result.returncode != 0 or not _complete(partial, image_names):
        log(f"headshots of epoch {epoch} failed (exit code {result.returncode}; see {log.file.name})")
        return result.returncode or 1
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return 0


def budget_refusal(plan: RunPlan, cfg: Section, todo: int, saved: int, runs_root: Path) -> str | None:
    """The budget guard for headshots rendered on their own (the training's estimate already counted
    them): the share of the estimate's headshot time for the ``todo`` epochs against train.max_gpu_hours."""
    budget = cfg.max_gpu_hours
    if not todo or budget <= 0:
        return None
    estimate = plan_estimate(plan, cfg, runs_root / "calibration.tsv")  # today's headshot settings
    hours = estimate.overhead_seconds.get("headshots", 0.0) * todo / max(1, saved) / 3600
    if hours <= budget:
        return None
    return (
        f"estimated {hours:.2f} GPU hours for {todo} epochs' headshots exceeds train.max_gpu_hours {budget:g};"
        " to fit: fewer train.headshot_prompts, fewer train.headshot_steps or a smaller train.headshot_size"
    )
