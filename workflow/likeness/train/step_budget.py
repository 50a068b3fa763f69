"""``train.num_repeats: auto`` and ``train.max_train_epochs: auto``: a step budget that follows the dataset.

sd-scripts counts one epoch as images x num_repeats samples (train_util.DreamBoothDataset), so with fixed
repeats the training length grows with the dataset: 10 repeats x 10 epochs is 1,400 steps for the demo's 14
faces but 10,000 for 100 faces, far past what a face needs and past the default 4 GPU-hour budget on a 4090.
The auto rule instead aims at a fixed number of image views, the same for every dataset size:

    target: TARGET_SAMPLES_PER_EPOCH (200) views per epoch x AUTO_EPOCHS (10) epochs = 2,000 views
    repeats = clamp(round(200 / images), 1, MAX_REPEATS)
    epochs  = clamp(round(2,000 / (images x repeats)), MIN_EPOCHS, 10)

so epochs stay at 10 unless rounding the repeats or a set of more than about 200 images makes one epoch
clearly bigger than 200 views. At batch size 1 a view is a step, so 14 faces train 14 x 14 x 10 = 1,960
steps, 20 faces 20 x 10 x 10 = 2,000 and 100 faces 100 x 2 x 10 = 2,000. Regularisation images add
their own views on top (sd-scripts balances them against the training views), and a larger batch makes
fewer, bigger steps; both follow sd-scripts' own arithmetic in the estimate.

Where the numbers come from (common practice for a person/face LoRA, not a law):
- Issue 11 of this project states the common practice this follows: an SDXL face LoRA wants roughly 1,500
  to 3,000 steps at batch 1. kohya_ss community guides train faces with 20-100 images on a RTX 3090/4090
  (e.g. aituts.com/sdxl-lora: "50-100 training images focused on face", RTX 3090/4090 or A100; the
  Civitai SDXL character-LoRA guides rent a RTX 4090 for the same).
- sd-scripts' own default, ``max_train_steps = 1600`` (library/train_util.py), sits at the low end, and
  "3000 steps in under an hour" on a 4090 (kohya-ss/sd-scripts #690) at the high end of a one-hour run.
- sd-scripts' dataset-config examples use ``num_repeats = 10`` for a subject's images (docs/train_README):
  200 views per epoch for 20 images, the per-epoch target here.
- 10 epochs keep the workflow's per-epoch LoRAs and samples useful for picking the best epoch (an under-
  or over-trained face is easy to see in the samples) and make an interruption cost at most a tenth.
- A 4090 runs about 1.45 s/step at 1024 px (resources/gpu_speeds.tsv), so 2,000 steps are about 0.8 h:
  well inside the default ``train.max_gpu_hours`` of 4 for 20 or 100 faces (tests/test_step_budget.py).
Explicit integers in the config always win.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from likeness.config import Section

AUTO = "auto"
TARGET_SAMPLES_PER_EPOCH = 200
AUTO_EPOCHS = 10
MIN_EPOCHS = 4  # fewer would leave too few per-epoch LoRAs to choose from on very large sets
MAX_REPEATS = 50  # a handful of images repeated more than this only memorises them


@dataclass(frozen=True)
class StepBudget:
    num_repeats: int
    max_train_epochs: int
    auto_keys: tuple[str, ...]  # which of the two were "auto"

    def note(self, n_images: int) -> str | None:
        """One line for the estimate saying what the auto rule chose, or None when nothing was auto."""
        if not self.auto_keys:
            return None
        chosen = ", ".join(
            f"train.{key} {getattr(self, key)}" for key in ("num_repeats", "max_train_epochs") if key in self.auto_keys
        )
        target = TARGET_SAMPLES_PER_EPOCH * AUTO_EPOCHS
        return f"auto step budget for {n_images} images: {chosen} (aims at about {target} image views)"


def auto_repeats(n_images: int) -> int:
    """Repeats that bring one epoch close to TARGET_SAMPLES_PER_EPOCH views."""
    if n_images <= 0:
        return 1
    return max(1, min(MAX_REPEATS, round(TARGET_SAMPLES_PER_EPOCH / n_images)))


def auto_epochs(n_images: int, num_repeats: int) -> int:
    """AUTO_EPOCHS, fewer (not below MIN_EPOCHS) when one epoch alone is far above the per-epoch target."""
    per_epoch = max(1, n_images * num_repeats)
    target_total = TARGET_SAMPLES_PER_EPOCH * AUTO_EPOCHS
    return max(MIN_EPOCHS, min(AUTO_EPOCHS, round(target_total / per_epoch)))


def step_budget(num_repeats: int | str, max_train_epochs: int | str, n_images: int) -> StepBudget:
    """The repeats and epochs for ``n_images`` training images: explicit values kept, "auto" resolved."""
    auto_keys = tuple(
        key for key, value in (("num_repeats", num_repeats), ("max_train_epochs", max_train_epochs)) if value == AUTO
    )
    repeats = auto_repeats(n_images) if num_repeats == AUTO else int(num_repeats)
    epochs = auto_epochs(n_images, repeats) if max_train_epochs == AUTO else int(max_train_epochs)
    return StepBudget(num_repeats=repeats, max_train_epochs=epochs, auto_keys=auto_keys)


def resolve(cfg: Section, n_images: int) -> Section:
    """The ``train`` settings with num_repeats and max_train_epochs as integers for this many images."""
    budget = step_budget(cfg.num_repeats, cfg.max_train_epochs, n_images)
    return dataclasses.replace(cfg, num_repeats=budget.num_repeats, max_train_epochs=budget.max_train_epochs)
