"""Headshots after training, and the epoch that looks most like the person.

``headshots`` (rule ``headshots``): every saved epoch's LoRA renders ``train.headshot_prompts`` through
sd-scripts' own generation script (``sdxl_gen_img.py`` of the same checkout, with the same base model,
fixed seeds, a negative prompt), one invocation per epoch into
``results/headshots/<run_id>/<settings hash>/e<E:06d>/`` (written to a ``.partial`` folder first and
renamed when every image is there, so an interrupted run redoes only the epoch it was in).

``best_lora`` (rule ``best_lora``): every headshot is checked by the identity model (exactly one face)
and scored by its identity distance to the centre of the selected training faces
(``results/dataset/identity.json``); an epoch's score is the median over its headshots with one face;
the lowest median wins. Its LoRA is copied to ``results/lora/<trigger>.safetensors`` and
``results/lora/<trigger>.json`` says which epoch, why, and every epoch's and image's score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from likeness.atomic import atomic_write_bytes, atomic_write_json
from likeness.errors import LikenessError
from likeness.select import identity
from likeness.train import training

GEN_SCRIPT = "sdxl_gen_img.py"
GEN_OPTIONS = Path(__file__).resolve().parents[3] / "resources" / "kohya" / "sdxl_gen_img_v0.10.1_options.txt"
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
LAUNCH_COMMAND = "snakemake --cores 2 best_lora"


# --------------------------------------------------------------------------------------- prompts


def lora_stem(trigger: str) -> str:
    """The file name stem of results/lora/<trigger>.*: the trigger with anything but [A-Za-z0-9._-] as _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", trigger.strip()).strip("._") or "lora"


def prompt_lines(cfg: Mapping[str, Any], trigger: str, class_word: str) -> list[str]:
    """sdxl_gen_img.py's --from_file lines: the prompt, then --n negative and --d seed (one per prompt)."""
    lines = []
    negative = " ".join(str(cfg["headshot_negative_prompt"]).split())
    for index, template in enumerate(cfg["headshot_prompts"]):
        text = " ".join(str(template).split()).replace("{trigger}", trigger).replace("{class_word}", class_word)
        if not text:
            continue
        if trigger not in text:
            text = f"{trigger}, {text}"
        text = text.replace(" --", " -")  # " --" starts an option in sd-scripts' prompt syntax
        line = f"{text} --d {int(cfg['headshot_seed']) + index}"
        if negative:
            line += f" --n {negative.replace(' --', ' -')}"
        lines.append(line)
    return lines


def settings_digest(cfg: Mapping[str, Any], lines: Sequence[str], base_model: str) -> str:
    """Changes when anything that shapes the headshots changes: they are then rendered anew."""
    payload = {key: cfg[key] for key in HEADSHOT_KEYS} | {"lines": list(lines), "base_model": base_model}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def headshot_size(cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("headshot_size") or cfg.get("resolution") or 1024)


# --------------------------------------------------------------------------------------- epochs


def saved_epochs(plan: training.RunPlan) -> list[tuple[int, Path]]:
    """(epoch, LoRA file) of every saved epoch: ``<name>-<E:06d>.safetensors`` and the final file."""
    output = Path(plan.output_dir)
    pattern = re.compile(rf"^{re.escape(plan.output_name)}-(\d{{6}})\.safetensors$")
    epochs = {}
    for path in output.glob(f"{plan.output_name}-*.safetensors"):
        match = pattern.match(path.name)
        if match:
            epochs[int(match.group(1))] = path
    final = plan.final_lora
    if final.is_file():
        epochs[int(plan.train_cfg.get("max_train_epochs") or max(epochs, default=0) + 1)] = final
    return sorted(epochs.items())


def gen_command(cfg: Mapping[str, Any], *, base_model: str, lora: Path, outdir: Path, prompts_file: Path) -> list[str]:
    """sd-scripts' own image generation, with only options its v0.10.1 parser has (checked in tests)."""
    script = Path(str(cfg["sd_scripts"])).expanduser().resolve() / GEN_SCRIPT
    size = str(headshot_size(cfg))
    # The script runs inside the checkout (its `library` package must import): absolute paths only.
    if Path(base_model).expanduser().exists():
        base_model = str(Path(base_model).expanduser().resolve())
    lora, outdir, prompts_file = lora.resolve(), outdir.resolve(), prompts_file.resolve()
    command = [
        *training.launcher_argv(cfg),
        str(script),
        "--ckpt", base_model,
        "--outdir", str(outdir),
        "--from_file", str(prompts_file),
        "--network_module", "networks.lora",
        "--network_weights", str(lora),
        "--network_mul", str(float(cfg["headshot_lora_weight"])),
        "--sequential_file_name",
        "--images_per_prompt", "1",
        "--batch_size", "1",
        "--W", size,
        "--H", size,
        "--steps", str(int(cfg["headshot_steps"])),
        "--scale", str(float(cfg["headshot_scale"])),
        "--sampler", str(cfg["headshot_sampler"]),
        "--sdpa",
    ]  # fmt: skip
    precision = cfg.get("mixed_precision")
    if precision in ("bf16", "fp16"):
        command.append(f"--{precision}")
    tokenizers = (cfg.get("extra") or {}).get("tokenizer_cache_dir")
    if tokenizers:
        command += ["--tokenizer_cache_dir", str(tokenizers)]
    return command


def sequential_names(count: int) -> list[str]:
    """File names sdxl_gen_img.py gives with --sequential_file_name (im_000001.png, ...), prompt order."""
    return [f"im_{index + 1:06d}.png" for index in range(count)]


# --------------------------------------------------------------------------------------- rule: headshots


def _write(status_path: str | Path, extra: Mapping[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    # No timestamp: an unchanged state gives identical bytes (an interrupted run's results compare equal).
    atomic_write_json(status_path, {**record, **extra})
    return record


def readiness_param(cfg: Mapping[str, Any], status_path: str | Path, env: Mapping[str, str] | None = None) -> str:
    """The headshots rule's ``ready`` param, as the train rule's (likeness.train.training.readiness_param): finished
    headshots keep the value they ran with, so a machine without a GPU or a deleted base model never plans
    them again; until then the value follows whether a render could launch here."""
    try:
        status = _read_json(status_path)
    except LikenessError:  # not run yet, or unreadable: decided by this machine
        status = {}
    recorded = status.get("readiness")
    if status.get("state") == "done" and isinstance(recorded, str):
        return recorded
    return training.launch_readiness(training.train_config(cfg), env)


def headshots_stage(
    cfg: Mapping[str, Any],
    train_status: str | Path,
    *,
    trigger: str,
    class_word: str,
    status_path: str | Path,
    log_path: str | Path,
    out_root: str | Path = "results/headshots",
    env: Mapping[str, str] | None = None,
    readiness: str | None = None,
) -> int:
    """Render every saved epoch's headshots (skipping epochs already complete); 0 unless a render failed.

    Before the training is done the status says so and the job succeeds, as the training job does.
    ``readiness``: the rule's param, recorded in the status so that finished headshots stay finished on a
    machine that could not render them (see :func:`readiness_param`).
    """
    cfg = training.train_config(cfg)
    env = dict(os.environ if env is None else env)
    extra = {} if readiness is None else {"readiness": readiness}
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:

        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            print(f"likeness: {line}", flush=True)

        status = _read_json(train_status)
        if status.get("state") != "done":
            say(f"headshots wait for the training (its state: {status.get('state', 'unknown')})")
            _write(status_path, extra, {"state": "waiting", "reason": f"training is {status.get('state', 'not run')}"})
            return 0
        plan = training.RunPlan.load(status["run_dir"])
        epochs = saved_epochs(plan)
        base_model = str(plan.train_cfg.get("base_model") or cfg["base_model"])
        lines = prompt_lines(cfg, trigger, class_word)
        folder = Path(out_root) / plan.run_id / settings_digest(cfg, lines, base_model)
        names = sequential_names(len(lines))
        record: dict[str, Any] = {
            "state": "done",
            "run_id": plan.run_id,
            "folder": str(folder),
            "prompts": lines,
            "trigger": trigger,
            "epochs": [],
        }
        todo = [(epoch, lora) for epoch, lora in epochs if not _complete(folder / f"e{epoch:06d}", names)]
        missing = training.missing_for_launch({**cfg, "base_model": base_model}, env)
        missing = [m for m in missing if "sdxl_train_network.py" not in m]
        sd_scripts = Path(str(cfg["sd_scripts"] or "")).expanduser()
        if todo and cfg["sd_scripts"] and not (sd_scripts / GEN_SCRIPT).is_file():
            missing.append(f"train.sd_scripts {cfg['sd_scripts']!r} has no {GEN_SCRIPT}")
        if todo and missing:
            say(f"headshots are ready to render ({'; '.join(missing)}): fix that and run `{LAUNCH_COMMAND}`")
            _write(status_path, extra, {"state": "ready", "run_id": plan.run_id, "missing": missing})
            return 0
        refusal = budget_refusal(plan, cfg, len(todo), len(epochs), Path(status["run_dir"]).parent)
        if todo and refusal:
            say(f"headshots refused: {refusal}")
            _write(status_path, extra, {"state": "refused", "run_id": plan.run_id, "reason": refusal})
            return 2
        folder.mkdir(parents=True, exist_ok=True)
        prompts_file = folder / "prompts.txt"
        atomic_write_bytes(prompts_file, ("\n".join(lines) + "\n").encode())
        for epoch, lora in todo:
            target = folder / f"e{epoch:06d}"
            partial = folder / f".e{epoch:06d}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            command = gen_command(cfg, base_model=base_model, lora=lora, outdir=partial, prompts_file=prompts_file)
            say(f"headshots of epoch {epoch}: {len(lines)} prompts with {lora.name}")
            log.write(f"=== {' '.join(command)}\n")
            log.flush()
            result = subprocess.run(
                command, cwd=str(sd_scripts), stdout=log, stderr=subprocess.STDOUT, env=env, check=False
            )
            if result.returncode != 0 or not _complete(partial, names):
                say(f"headshots of epoch {epoch} failed (exit code {result.returncode}; see {log_path})")
                _write(status_path, extra, {"state": "failed", "run_id": plan.run_id, "epoch": epoch})
                return result.returncode or 1
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        for epoch, lora in epochs:
            images = [str(folder / f"e{epoch:06d}" / name) for name in names]
            record["epochs"].append({"epoch": epoch, "lora": str(lora), "images": images})
        say(f"headshots: {len(epochs)} epochs x {len(lines)} prompts in {folder} ({len(todo)} epochs rendered now)")
        _write(status_path, extra, record)
        return 0


def budget_refusal(
    plan: training.RunPlan, cfg: Mapping[str, Any], todo: int, saved: int, runs_root: Path
) -> str | None:
    """The budget guard for headshots rendered on their own (the training's estimate already counted
    them): the share of the estimate's headshot time for the ``todo`` epochs against train.max_gpu_hours."""
    budget = float(cfg.get("max_gpu_hours") or 0)
    if not todo or budget <= 0:
        return None
    estimate = training.plan_estimate(plan, {**plan.train_cfg, **cfg}, runs_root / "calibration.tsv")
    hours = estimate.overhead_seconds.get("headshots", 0.0) * todo / max(1, saved) / 3600
    if hours <= budget:
        return None
    return (
        f"estimated {hours:.2f} GPU hours for {todo} epochs' headshots exceeds train.max_gpu_hours {budget:g};"
        " to fit: fewer train.headshot_prompts, fewer train.headshot_steps or a smaller train.headshot_size"
    )


def _complete(folder: Path, names: Sequence[str]) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in names)


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LikenessError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise LikenessError(f"{path} is not a JSON object")
    return data


# --------------------------------------------------------------------------------------- rule: best_lora


@dataclass(frozen=True)
class Scored:
    path: str
    distance: float | None
    note: str  # "" when scored; otherwise why not (no face, 2 faces, unreadable)


def score_image(model: identity.IdentityModel, cache: identity.EmbeddingCache, path: str, centre: np.ndarray) -> Scored:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return Scored(path, None, f"unreadable: {error.strerror or error}")
    faces = identity.detect_faces(model, cache, data)
    if faces is None:
        return Scored(path, None, "not an image")
    if len(faces) != 1:
        return Scored(path, None, "no face found" if not faces else f"{len(faces)} faces found")
    return Scored(path, round(identity.distance(faces[0].vector, centre), 4), "")


def choose_epoch(scores: Mapping[int, Sequence[Scored]]) -> tuple[int | None, dict[int, float | None]]:
    """The epoch with the lowest median distance over its scored headshots (ties: the later epoch)."""
    medians: dict[int, float | None] = {}
    for epoch, images in scores.items():
        values = [s.distance for s in images if s.distance is not None]
        medians[epoch] = round(statistics.median(values), 4) if values else None
    ranked = sorted((m, -e) for e, m in medians.items() if m is not None)
    return (-ranked[0][1] if ranked else None), medians


def best_lora_stage(
    headshots_status: str | Path,
    identity_json: str | Path,
    select_cfg: Mapping[str, Any],
    *,
    trigger: str,
    class_word: str,
    out_json: str | Path,
    log_path: str | Path,
) -> dict[str, Any]:
    """Score every headshot, pick the epoch, copy its LoRA beside ``out_json``; returns the record."""
    from likeness.config import section_settings

    shots = _read_json(headshots_status)
    out_json = Path(out_json)
    lora_out = out_json.with_suffix(".safetensors")
    lines: list[str] = []

    def finish(record: dict[str, Any]) -> dict[str, Any]:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        atomic_write_json(out_json, record)
        return record

    def say(line: str) -> None:
        lines.append(line)
        print(f"likeness: {line}", flush=True)

    if shots.get("state") != "done" or not shots.get("epochs"):
        say(f"best LoRA: no headshots yet (headshots {shots.get('state', 'not run')})")
        return finish({"state": "waiting", "reason": f"headshots are {shots.get('state', 'not run')}"})
    summary = _read_json(identity_json)
    epochs = {int(e["epoch"]): e for e in shots["epochs"]}
    record: dict[str, Any] = {
        "state": "done",
        "trigger": trigger,
        "class_word": class_word,
        "run_id": shots["run_id"],
        "prompts": shots["prompts"],
        "lora": str(lora_out),
    }
    centre = summary.get("selected_centre")
    if not summary.get("enabled") or not centre:
        epoch = max(epochs)
        why = "the identity check is off (select.max_identity_distance is null): the last epoch, unscored"
        say(f"best LoRA: epoch {epoch}; {why}")
        record.update(epoch=epoch, why=why, scores={})
    else:
        settings = section_settings("select", select_cfg)
        model = identity.load_model()
        if model.key != summary.get("model_key"):
            raise LikenessError(
                f"results/dataset/identity.json was made with {summary.get('model_key')}, this model is {model.key}:"
                " run the select_faces rule again"
            )
        cache = identity.EmbeddingCache(settings.identity_cache_dir, model)
        vector = np.asarray(centre, dtype=np.float32)
        scores = {e: [score_image(model, cache, p, vector) for p in epochs[e]["images"]] for e in sorted(epochs)}
        epoch, medians = choose_epoch(scores)
        if epoch is None:
            epoch = max(epochs)
            why = "no headshot of any epoch showed exactly one face: the last epoch, unscored"
            if not shots["prompts"]:
                why = "train.headshot_prompts is empty: the last epoch, unscored"
        else:
            scored = [s for s in scores[epoch] if s.distance is not None]
            runner = sorted((m, e) for e, m in medians.items() if m is not None and e != epoch)
            after = f"; next best epoch {runner[0][1]} at {runner[0][0]:.3f}" if runner else ""
            why = (
                f"lowest median identity distance to the selected training faces: {medians[epoch]:.3f}"
                f" over {len(scored)} of {len(scores[epoch])} headshots with one face{after}"
            )
        say(f"best LoRA: epoch {epoch}; {why} ({cache.computed} headshots checked now, {cache.hits} from cache)")
        for e in sorted(scores):
            cells = " ".join("-" if s.distance is None else f"{s.distance:.3f}" for s in scores[e])
            say(f"  epoch {e}: median {medians[e] if medians[e] is not None else '-'}  [{cells}]")
        record.update(
            epoch=epoch,
            why=why,
            threshold=summary.get("threshold"),
            model=summary.get("model"),
            scores={
                str(e): {
                    "median": medians[e],
                    "lora": epochs[e]["lora"],
                    "images": [{"path": s.path, "distance": s.distance, "note": s.note} for s in scores[e]],
                }
                for e in sorted(scores)
            },
        )
    source = Path(epochs[record["epoch"]]["lora"])
    atomic_write_bytes(lora_out, source.read_bytes())
    record["source_lora"] = str(source)
    say(f"best LoRA: {lora_out} (epoch {record['epoch']}, from {source})")
    return finish(record)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m likeness.train.headshots``: the headshots stage from a config file (scripts and tests)."""
    parser = argparse.ArgumentParser(prog="python -m likeness.train.headshots", description=main.__doc__)
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--train-status", required=True)
    parser.add_argument("--trigger", required=True)
    parser.add_argument("--class-word", default="")
    parser.add_argument("--status", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    import yaml

    config = yaml.safe_load(Path(args.configfile).read_text(encoding="utf-8")) or {}
    try:
        return headshots_stage(
            config.get("train") or {},
            args.train_status,
            trigger=args.trigger,
            class_word=args.class_word,
            status_path=args.status,
            log_path=args.log,
        )
    except LikenessError as error:
        print(f"likeness: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
