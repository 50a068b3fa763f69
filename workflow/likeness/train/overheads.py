"""What a training costs besides its steps, and the GPU memory it needs: rules of thumb for the estimate.

Every overhead is priced in seconds from the measured (or table) time of one training step, so that a
faster card makes them shorter too. likeness.train.estimate adds them to the steps' time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from likeness.sdscripts.configs import caches_text_encoder_outputs, trains_unet_only
from likeness.sdscripts.prompts import prompt_sampling_steps, sample_prompts_text

# Overheads as fractions of one training step (forward+backward of the U-Net at the training size).
# Rough rules of thumb, stated here so they can be checked: encoding one image with the VAE costs about a
# quarter of a step, one caption through both text encoders a twentieth, one sampling step (two U-Net
# forward passes for classifier-free guidance, no backward) about a third.
LATENT_CACHE_STEP_FRACTION = 0.25
TEXT_ENCODER_CACHE_STEP_FRACTION = 0.05
SAMPLING_STEP_FRACTION = 0.35
MODEL_LOAD_SECONDS = 60.0  # reading a 7 GB checkpoint and building the models
SAVE_LORA_SECONDS = 3.0
SAVE_STATE_SECONDS = 6.0


def estimated_vram_gb(cfg: Mapping[str, Any]) -> float:
    """Rough peak GPU memory of an SDXL LoRA training with these settings (for a warning only).

    bf16 U-Net weights about 5 GB; activations per image at 1024 px about 1.5 GB with gradient checkpointing
    and 9 GB without (they grow with the pixel count); text encoders another 1.7 GB when their outputs are
    not cached; optimizer state of a LoRA is small.
    """
    resolution = int(cfg["resolution"])
    batch = int(cfg["batch_size"])
    per_image = 1.5 if cfg["gradient_checkpointing"] else 9.0
    gb = 5.5 + batch * per_image * (resolution / 1024) ** 2
    # These two are sd-scripts options that train.extra may set (likeness.sdscripts.configs turns them on).
    if not caches_text_encoder_outputs(cfg["extra"]):
        gb += 1.7
    if not trains_unet_only(cfg["extra"]):
        gb += 1.0
    return gb


def configured_sample_steps(cfg: Mapping[str, Any], resolution: int) -> list[int]:
    """Sampling steps of each prompt line the run's sample_prompts.txt will hold (likeness.sdscripts.prompts)."""
    text = sample_prompts_text(cfg["sample_prompts"], trigger="t", class_word="c", resolution=resolution)
    return prompt_sampling_steps(text)


def overheads(
    cfg: Mapping[str, Any], unique_images: int, epochs: int, seconds_per_step: float, sample_steps: Sequence[int]
) -> dict[str, float]:
    """Seconds of each overhead by name, in the order the run meets them; ``unique_images`` counts the
    training and the regularisation images that are used (each is cached once)."""
    flips = 2 if cfg["flip_aug"] else 1
    every_save = max(1, int(cfg["save_every_n_epochs"]))
    saves = sum(1 for e in range(1, epochs) if e % every_save == 0) + 1  # per-epoch saves + the final one
    sample_every = int(cfg["sample_every_n_epochs"] or 0)
    sample_events = epochs // sample_every if sample_every > 0 else 0
    seconds = {
        "model loading": MODEL_LOAD_SECONDS,
        "latent caching": unique_images * flips * LATENT_CACHE_STEP_FRACTION * seconds_per_step,
    }
    if caches_text_encoder_outputs(cfg["extra"]):
        seconds["text-encoder caching"] = unique_images * TEXT_ENCODER_CACHE_STEP_FRACTION * seconds_per_step
    if sample_events and sample_steps:
        seconds["samples"] = sample_events * sum(sample_steps) * SAMPLING_STEP_FRACTION * seconds_per_step
    seconds["saving"] = saves * (SAVE_LORA_SECONDS + SAVE_STATE_SECONDS)
    # The headshots rule renders every saved LoRA's headshots afterwards on the same GPU: one
    # sdxl_gen_img.py run per saved epoch (it loads the base model each time), priced like samples.
    prompts = [p for p in cfg["headshot_prompts"] or [] if str(p).strip()]
    if prompts:
        resolution = int(cfg["resolution"])
        side = int(cfg["headshot_size"] or 0) or resolution
        area = (side / resolution) ** 2
        per_image = int(cfg["headshot_steps"]) * SAMPLING_STEP_FRACTION * seconds_per_step * area
        seconds["headshots"] = saves * (MODEL_LOAD_SECONDS + len(prompts) * per_image)
    return seconds
