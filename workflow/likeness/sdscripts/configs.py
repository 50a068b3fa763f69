"""dataset.toml and train.toml for ``sdxl_train_network.py`` v0.10.1, built from the ``train`` settings.

Every document is checked against the release's option table (likeness.sdscripts.options) before it is
written: sd-scripts would silently keep a misspelt key or a wrongly typed value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from likeness.config import Section
from likeness.errors import ConfigError
from likeness.sdscripts import buckets, names
from likeness.sdscripts.options import check_dataset_config, check_train_options, validate_extra

# Options the workflow always writes the same way (not settings: changing them breaks a promise).
# SDXL's VAE overflows in half precision; it only runs while caching.
NO_HALF_VAE = True
# Text-encoder outputs are cached (they need frozen text encoders) unless train.extra says otherwise:
# the typical SDXL LoRA that fits a 24 GB card.
TRAIN_UNET_ONLY = True
CACHE_TEXT_ENCODER_OUTPUTS = True
SAMPLE_SAMPLER = "euler_a"


def trains_unet_only(extra: Mapping[str, Any]) -> bool:
    """Whether the text encoders stay frozen: ``train.extra``'s network_train_unet_only, else our default."""
    return bool(extra.get("network_train_unet_only", TRAIN_UNET_ONLY))


def caches_text_encoder_outputs(extra: Mapping[str, Any]) -> bool:
    """Whether sd-scripts caches the text encoders' outputs: ``train.extra``'s option, else our default."""
    return bool(extra.get("cache_text_encoder_outputs", CACHE_TEXT_ENCODER_OUTPUTS))


def build_train_options(
    cfg: Section,
    *,
    output_dir: str,
    sample_prompts_path: str | None,
    logging_dir: str | None,
    masked: bool = False,
) -> dict[str, Any]:
    """train.toml as nested tables (sd-scripts flattens them); defaults fit a 24 GB card.

    ``cfg`` is the ``train`` settings. ``logging_dir``: where sd-scripts writes its TensorBoard event files
    (loss, learning rate); with a logging_dir and no log_with, v0.10.1 logs to TensorBoard. ``masked``:
    at least one training image carries a loss mask (select.crowded: mask), so ``masked_loss = true``
    (sd-scripts then multiplies the loss by the mask at latent size); without one the file is as before.
    """
    extra = validate_extra(cfg.extra)
    train_unet_only, cache_te = trains_unet_only(extra), caches_text_encoder_outputs(extra)
    if cache_te and not train_unet_only:
        raise ConfigError(
            "train.cache_text_encoder_outputs", "needs train.network_train_unet_only (text encoders frozen)"
        )
    if cfg.lr_scheduler == "constant" and cfg.lr_warmup_steps > 0:
        raise ConfigError("train.lr_warmup_steps", "needs lr_scheduler 'constant_with_warmup' (or another)")
    options: dict[str, Any] = {
        "model": {
            "pretrained_model_name_or_path": str(cfg.base_model),
            "no_half_vae": NO_HALF_VAE,
        },
        "network": {
            "network_module": names.NETWORK_MODULE,
            "network_dim": int(cfg.network_dim),
            "network_alpha": float(cfg.network_alpha),
            "network_train_unet_only": train_unet_only,
        },
        "optimizer": {
            "optimizer_type": str(cfg.optimizer_type),
            "learning_rate": float(cfg.learning_rate),
            "lr_scheduler": str(cfg.lr_scheduler),
            "lr_warmup_steps": int(cfg.lr_warmup_steps),
        },
        "training": {
            "mixed_precision": str(cfg.mixed_precision),
            "save_precision": str(cfg.save_precision),
            "sdpa": True,
            "gradient_checkpointing": bool(cfg.gradient_checkpointing),
            "gradient_accumulation_steps": int(cfg.gradient_accumulation_steps),
            "max_train_epochs": int(cfg.max_train_epochs),
            "seed": int(cfg.seed),
            "cache_latents": True,
            "cache_latents_to_disk": True,
            "cache_text_encoder_outputs": cache_te,
            "cache_text_encoder_outputs_to_disk": cache_te,
            "max_data_loader_n_workers": int(cfg.max_data_loader_n_workers),
        },
        "saving": {
            "output_dir": output_dir,
            "output_name": str(cfg.output_name),
            "save_model_as": "safetensors",
            "save_every_n_epochs": int(cfg.save_every_n_epochs),
            "save_state": True,
        },
    }
    if masked:
        options["training"]["masked_loss"] = True
    if logging_dir:
        options["saving"]["logging_dir"] = logging_dir
    if sample_prompts_path and cfg.sample_every_n_epochs > 0:
        options["sample"] = {
            "sample_prompts": sample_prompts_path,
            "sample_every_n_epochs": int(cfg.sample_every_n_epochs),
            "sample_sampler": SAMPLE_SAMPLER,
        }
    if extra:
        _drop_overridden(options, extra)
        options["extra"] = extra
    problems = check_train_options(options)
    if problems:
        raise ConfigError("train", problems[0])
    return options


def _drop_overridden(options: dict[str, Any], extra: dict[str, Any]) -> None:
    """An option set in train.extra replaces the workflow's default (one key, one place in the file)."""
    for table in options.values():
        for key in list(table):
            if key in extra:
                del table[key]


def build_dataset_config(
    cfg: Section, *, image_dir: str, reg_dir: str | None, class_word: str, masked: bool = False
) -> dict[str, Any]:
    """dataset.toml: the crops as one subset (trigger kept first), regularisation images as an is_reg subset.

    Captions already start with the trigger word and the class word (the caption stage writes them);
    ``keep_tokens = 1`` keeps the trigger first if shuffling is ever switched on. ``masked``: some crops
    are PNGs whose alpha channel is their loss mask, so the crops' subset gets ``alpha_mask = true``
    (its JPEGs, without alpha, weigh 1 everywhere; sd-scripts also caches each mask in the latents'
    npz). The one subset keeps the DreamBooth layout: a ``conditioning_data_dir`` would switch the whole
    dataset to the ControlNet schema.
    """
    bucketing = buckets.bucket_settings(int(cfg.resolution), bool(cfg.bucket_no_upscale))
    general: dict[str, Any] = {
        "resolution": bucketing.resolution,
        "batch_size": int(cfg.batch_size),
        "enable_bucket": bucketing.enable_bucket,
        "bucket_no_upscale": bucketing.no_upscale,
        "bucket_reso_steps": bucketing.reso_steps,
        "min_bucket_reso": bucketing.min_reso,
        "max_bucket_reso": bucketing.max_reso,
        "caption_extension": names.CAPTION_EXTENSION,
        "keep_tokens": 1,
        "shuffle_caption": False,  # cached text-encoder outputs forbid shuffling
        "flip_aug": bool(cfg.flip_aug),
    }
    subsets: list[dict[str, Any]] = [{"image_dir": image_dir, "num_repeats": int(cfg.num_repeats)}]
    if masked:
        subsets[0]["alpha_mask"] = True
    if reg_dir:
        subsets.append(
            {
                "image_dir": reg_dir,
                "is_reg": True,
                "class_tokens": class_word,
                "num_repeats": 1,
                "keep_tokens": 0,
            }
        )
    doc = {"general": general, "datasets": [{"subsets": subsets}]}
    problems = check_dataset_config(doc)
    if problems:
        raise ConfigError("train", problems[0])
    return doc
