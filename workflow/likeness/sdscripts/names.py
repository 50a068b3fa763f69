"""File and folder names sd-scripts v0.10.1 writes (library/train_util.py, sdxl_gen_img.py).

With ``--output_name N``: per-epoch LoRA ``N-<E:06d>.safetensors``, the final one ``N.safetensors``;
with ``save_state``: per-epoch state folders ``N-<E:06d>-state/`` and the final ``N-state/``. Per-epoch
files are written every ``save_every_n_epochs`` epochs except after the last one, which writes the final
names. ``cache_latents_to_disk`` puts ``<stem>_<W>x<H>_sdxl.npz`` beside each image.
"""

from __future__ import annotations

import re

TRAIN_SCRIPT = "sdxl_train_network.py"
GEN_SCRIPT = "sdxl_gen_img.py"
NETWORK_MODULE = "networks.lora"
MODEL_SUFFIX = ".safetensors"
CAPTION_EXTENSION = ".txt"  # dataset.toml's caption_extension (sd-scripts' default is .caption)
SAMPLE_DIR = "sample"  # <output_dir>/sample/: the images of sample_prompts
# The files accelerate.save_state writes for sd-scripts' LoRA training, in the order it writes them
# (train_state.json comes first, from sd-scripts' save hook; the RNG states come last).
STATE_FILES = (
    "train_state.json",
    "model.safetensors",
    "optimizer.bin",
    "scheduler.bin",
    "random_states_0.pkl",
)
TRAIN_STATE_JSON = STATE_FILES[0]
STATE_MODEL = STATE_FILES[1]
TORCH_ZIP_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl")  # torch.save's zip container
TEXT_ENCODER_CACHE_SUFFIX = "_te_outputs.npz"


def epoch_model(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}{MODEL_SUFFIX}"


def final_model(output_name: str) -> str:
    return f"{output_name}{MODEL_SUFFIX}"


def epoch_state(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}-state"


def final_state(output_name: str) -> str:
    return f"{output_name}-state"


def epoch_of_model(output_name: str, file_name: str) -> int | None:
    """E of a per-epoch LoRA file name ``<output_name>-<E:06d>.safetensors`` (None for anything else)."""
    match = re.fullmatch(rf"{re.escape(output_name)}-(\d{{6}}){re.escape(MODEL_SUFFIX)}", file_name)
    return int(match.group(1)) if match else None


def epoch_of_state(output_name: str, folder_name: str) -> int | None:
    """E of a per-epoch state folder name ``<output_name>-<E:06d>-state`` (None for anything else)."""
    match = re.fullmatch(rf"{re.escape(output_name)}-(\d{{6}})-state", folder_name)
    return int(match.group(1)) if match else None


# Sample images (train_util.sample_images): "<output_name>_e<E:06d>_<prompt:02d>_<YYYYmmddHHMMSS>[_<seed>].png"
# per epoch, "<output_name>_<step:06d>_..." per step; an epoch or step of 0 is "before training".
SAMPLE_NAME = re.compile(
    r"^(?:(?P<name>.*)_)?(?P<epoch>e)?(?P<number>\d{6,})_(?P<prompt>\d{2,})_(?P<stamp>\d{14})"
    r"(?:_(?P<seed>\d+))?\.(?:png|jpe?g|webp)$",
    re.IGNORECASE,
)


def latent_cache(stem: str, width: int, height: int) -> str:
    """The SDXL latent cache sd-scripts writes beside an image with cache_latents_to_disk (bucket size)."""
    return f"{stem}_{width:04d}x{height:04d}_sdxl.npz"


def sequential_names(count: int) -> list[str]:
    """File names sdxl_gen_img.py gives with --sequential_file_name (im_000001.png, ...), prompt order."""
    return [f"im_{index + 1:06d}.png" for index in range(count)]
