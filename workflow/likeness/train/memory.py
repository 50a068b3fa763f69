"""The training job's host memory (``train.mem_mb: auto``, Snakemake's ``mem_mb``, sbatch ``--mem``).

What the job needs in RAM, not on the GPU: sd-scripts reads the SDXL checkpoint into memory and builds the
U-Net and both text encoders from it in float32 before moving them to the GPU, so at its peak the file's
fp16 weights and the float32 models (twice the file's size) are in RAM together, about three times the
file. Python, torch, the CUDA context and the data loader add a fixed 4 GiB, and the cached latents (4
float32 channels at 1/8 of the resolution per image) the rest. For SDXL base 1.0 (6.94 GB) and 30 images at
1024 px that is 24 GiB, rounded up to whole GiB. A cluster whose nodes have less refuses the job at
submission; the refusal names train.mem_mb (likeness.train.cluster).
"""

from __future__ import annotations

import math
from pathlib import Path

from likeness.config import Section
from likeness.train import base_model as bm

# sd_xl_base_1.0.safetensors, the default train.base_model's file: the size assumed for a repo id that is
# not downloaded yet (the job downloads it on the node).
SDXL_BASE_BYTES = 6_938_078_334
MODEL_COPIES = 3  # the fp16 file's weights plus the float32 models built from them
FIXED_MB = 4096  # Python, torch, the CUDA context, the data loader's workers
MIB = 1024 * 1024


def model_bytes(base_model: str) -> int:
    """The base model's size: its file (a folder: every file in it), or the SDXL base's for a repo id."""
    path = Path(base_model).expanduser()
    if bm.is_repo_id(base_model) or not path.exists():
        return SDXL_BASE_BYTES
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def latents_mb(images: int, resolution: int) -> float:
    """The latents cache in RAM: 4 float32 channels at 1/8 of the resolution, per image."""
    return images * 4 * (resolution // 8) ** 2 * 4 / MIB


def job_memory_mb(cfg: Section, images: int) -> int:
    """``train.mem_mb``: an integer as given; "auto" from the base model and the dataset, in whole GiB."""
    if cfg.mem_mb != "auto":
        return int(cfg.mem_mb)
    needed = MODEL_COPIES * model_bytes(cfg.base_model) / MIB + FIXED_MB + latents_mb(images, int(cfg.resolution))
    return math.ceil(needed / 1024) * 1024
