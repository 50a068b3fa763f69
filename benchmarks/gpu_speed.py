#!/usr/bin/env python3
"""Seconds per SDXL LoRA step and peak GPU memory on this machine, with the workflow's default configs.

    .venv/bin/python benchmarks/gpu_speed.py --sd-scripts DIR [--python PY] [--wheels DIR]
        [--base-model FILE] [--tokenizers DIR] [--resolution 1024] [--steps 30] [--warmup 5] [--cpu]

Runs offline. It needs an sd-scripts v0.10.1 checkout (``--sd-scripts``) and a Python with its
requirements (``--python``; default this one), or a Python with PyTorch plus a folder of the wheels the
rest of sd-scripts' requirements.txt needs (``--wheels``: a virtual environment over that Python's
packages is made in the work folder and filled from the folder with ``pip --no-index``). Without
``--base-model`` it first builds a full-size SDXL with random weights (SDXL's real architecture from
sd-scripts' own model classes, in the single-file layout: about 80 s, 6.9 GB on disk and 10 GB of memory):
per-step time and memory depend on the architecture and the config, not on the weights. ``--tokenizers``
is the CLIP tokenizer folder (``tokenizer_cache_dir``; see shared tools' make_clip_tokenizers.py);
without it sd-scripts fetches the tokenizers from the hub.

Then it prepares a run exactly as the workflow does (``likeness.train.runplan.prepare_run``, every
``train`` default except the paths and ``--resolution``) on demo portraits resized to the resolution, and
times it as ``snakemake calibrate`` does (likeness.train.calibrate: the run's train.toml stopped after
``--steps`` steps, nothing saved; the steps after ``--warmup`` timed; nvidia-smi's memory in use sampled
once a second). It prints the seconds per step, the peak memory and a row for resources/gpu_speeds.tsv.
``--cpu`` runs the CPU smoke test (fp32, AdamW, LoRA dim 4, no data-loader workers: what runs here).
No time is asserted anywhere; on an H100 the default run takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import cv2  # noqa: E402
from likeness.config import validate_section  # noqa: E402
from likeness.joblog import JobLog  # noqa: E402
from likeness.train import calibrate, gpus  # noqa: E402
from likeness.train.runplan import prepare_run  # noqa: E402

PORTRAITS = REPO / "resources" / "demo" / "portraits"

# Run with sd-scripts' Python: SDXL's architecture from sd-scripts' own classes, random weights, saved in
# the single-file (SAI) layout sd-scripts loads. The text encoders' configs are CLIP ViT-L/14's and
# OpenCLIP ViT-bigG/14's, as published with SDXL 1.0.
RANDOM_SDXL = r"""
import sys
sys.path.insert(0, sys.argv[1])
import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from library import model_util, sdxl_model_util, sdxl_original_unet

torch.manual_seed(0)
shared = {"vocab_size": 49408, "max_position_embeddings": 77, "pad_token_id": 1, "bos_token_id": 0,
          "eos_token_id": 2, "layer_norm_eps": 1e-5}
vit_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       hidden_act="quick_gelu", projection_dim=768, **shared)
vit_big_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                           hidden_act="gelu", projection_dim=1280, **shared)
models = (
    CLIPTextModel(vit_l).half(),
    CLIPTextModelWithProjection(vit_big_g).half(),
    sdxl_original_unet.SdxlUNet2DConditionModel().half(),
)
vae = AutoencoderKL(**model_util.create_vae_diffusers_config()).half()
count = sdxl_model_util.save_stable_diffusion_checkpoint(
    sys.argv[2], models[0], models[1], models[2], 0, 0, None, vae, torch.tensor(4.6052), {}
)
print(f"random-weight SDXL: {count} tensors in {sys.argv[2]}")
"""


def sd_python(args: argparse.Namespace, work: Path) -> str:
    """The Python that runs sd-scripts: --python as it is, or a venv over it filled from --wheels."""
    base = args.python or sys.executable
    if not args.wheels:
        return base
    venv = work / "venv"
    if not (venv / "bin" / "python").is_file():
        subprocess.run([base, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    requirements = Path(args.sd_scripts) / "requirements.txt"
    install = [python, "-m", "pip", "install", "--no-index", "--find-links", str(args.wheels), "-r", str(requirements)]
    # requirements.txt ends with "-e ." (sd-scripts' library package): pip resolves it from the checkout
    subprocess.run(install, check=True, cwd=args.sd_scripts)
    return python


def random_sdxl(python: str, sd_scripts: str, out: Path) -> Path:
    if not out.is_file():
        partial = out.with_suffix(".partial.safetensors")
        subprocess.run([python, "-c", RANDOM_SDXL, sd_scripts, str(partial)], check=True)
        partial.replace(out)
    return out


def demo_dataset(folder: Path, count: int, resolution: int) -> Path:
    """``count`` square crops of the demo's public-domain portraits at the training resolution, captioned."""
    folder.mkdir(parents=True, exist_ok=True)
    portraits = sorted(PORTRAITS.glob("*.jpg"))
    for index in range(count):
        image = cv2.imread(str(portraits[index % len(portraits)]))
        side = min(image.shape[:2])
        square = image[:side, :side]
        if index % 2:
            square = cv2.flip(square, 1)
        cv2.imwrite(str(folder / f"face{index:03d}.jpg"), cv2.resize(square, (resolution, resolution)))
        (folder / f"face{index:03d}.txt").write_text("ohwx, person, portrait, looking at viewer\n")
    return folder


def benchmark_settings(args: argparse.Namespace, python: str, base_model: Path) -> dict:
    settings = {
        "sd_scripts": str(Path(args.sd_scripts).resolve()),
        "launcher": "",
        "python": python,
        "base_model": str(base_model),
        "resolution": args.resolution,
        "max_gpu_hours": 0.0,
        "headshot_prompts": [],
    }
    if args.tokenizers:
        settings["extra"] = {"tokenizer_cache_dir": str(Path(args.tokenizers).resolve())}
    if args.cpu:  # what sd-scripts can run on a CPU (shared tools' README)
        settings |= {"mixed_precision": "no", "save_precision": "float", "optimizer_type": "AdamW",
                     "network_dim": 4, "network_alpha": 1.0, "max_data_loader_n_workers": 0}  # fmt: skip
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd-scripts", required=True, help="an sd-scripts v0.10.1 checkout")
    parser.add_argument("--python", help="a Python with sd-scripts' requirements (or PyTorch, with --wheels)")
    parser.add_argument("--wheels", help="a folder of wheels for sd-scripts' requirements beyond PyTorch")
    parser.add_argument("--base-model", help="an SDXL checkpoint to use instead of building a random one")
    parser.add_argument("--tokenizers", help="CLIP tokenizer folder (tokenizer_cache_dir), for offline runs")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--cpu", action="store_true", help="the CPU smoke test's settings (no GPU needed)")
    parser.add_argument("--workdir", help="work folder (default: a new temporary one; the random SDXL is kept there)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_speed-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu_speed: work folder {work}", flush=True)
    python = sd_python(args, work)
    if args.base_model:
        base_model = Path(args.base_model)
    else:
        base_model = random_sdxl(python, args.sd_scripts, work / "sdxl-random.safetensors")
    cfg = validate_section("train", benchmark_settings(args, python, base_model.resolve()))
    dataset = demo_dataset(work / "dataset", args.images, args.resolution)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1" if args.tokenizers else "0")}
    if args.cpu:
        env["LIKENESS_ALLOW_NO_GPU"] = "1"  # the CPU stands in for the GPU in the smoke test
    runs = work / "runs"
    plan = prepare_run(cfg, dataset, dataset, trigger="ohwx", class_word="person", runs_root=runs)
    record_path = work / "gpu_speed.json"
    with (work / "gpu_speed.log").open("w", encoding="utf-8") as handle:
        code = calibrate.calibrate_run(
            plan, cfg, JobLog(handle), out_json=record_path, calibration_path=runs / "calibration.tsv",
            env=env, steps=args.steps, warmup=args.warmup,
        )  # fmt: skip
    if code != 0:
        print(f"gpu_speed: the timed run failed (exit code {code}); see {work / 'gpu_speed.log'}", file=sys.stderr)
        return code
    record = json.loads(record_path.read_text())
    detected = gpus.query_gpus(env)
    card = detected[0].name if detected else "CPU"
    peak = record["peak_memory_gb"]
    memory = f"{peak:g} GB" if peak is not None else "not measured (no nvidia-smi)"
    print(
        f"gpu_speed: {card}, {args.resolution} px, batch {cfg.batch_size}, gradient checkpointing"
        f" {'yes' if cfg.gradient_checkpointing else 'no'}, {cfg.mixed_precision}, {cfg.optimizer_type}:"
        f" {record['seconds_per_step']:.4g} s/step over {record['steps_timed']} steps after {args.warmup} warm-up;"
        f" peak GPU memory {memory}"
    )
    row = [
        record["gpu"], f"{detected[0].memory_gb:g}" if detected and detected[0].memory_gb else "0",
        str(args.resolution), str(cfg.batch_size), "yes" if cfg.gradient_checkpointing else "no",
        f"{record['seconds_per_step']:.3g}",
        f"project measurement (benchmarks/gpu_speed.py, {datetime.now(UTC).date().isoformat()})",
        f"{card}; sd-scripts v0.10.1, random-weight SDXL, workflow defaults; {record['steps_timed']} steps"
        f" after {args.warmup} warm-up; peak memory {memory}",
    ]  # fmt: skip
    print("gpu_speeds.tsv row: " + "\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
