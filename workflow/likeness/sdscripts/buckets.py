"""sd-scripts v0.10.1's bucketing and step count (library/train_util.py: BucketManager,
DreamBoothDataset, BaseDataset.make_buckets; train_network.py).

samples = images x repeats over the training subsets; regularisation images are added until they balance
that count; one batch list per bucket; steps per epoch = ceil(batches / processes / accumulation).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# bucket_reso_steps: SDXL needs a multiple of 32; the workflow writes 64 (the crops are square anyway).
RESO_STEPS = 64
SMALLEST_MIN_RESO = 256  # min_bucket_reso's default in sd-scripts


def bucket_limits(resolution: int, steps: int = RESO_STEPS) -> tuple[int, int]:
    """min/max bucket sizes sd-scripts accepts for ``resolution``: multiples of ``steps`` around it."""
    min_reso = max(steps, (min(SMALLEST_MIN_RESO, resolution) // steps) * steps)
    max_reso = math.ceil(resolution / steps) * steps
    return min_reso, max_reso


def bucket_settings(resolution: int, no_upscale: bool) -> BucketSettings:
    """The buckets of the dataset.toml the workflow writes (likeness.sdscripts.configs) for ``resolution``."""
    min_reso, max_reso = bucket_limits(resolution)
    return BucketSettings(resolution=resolution, no_upscale=no_upscale, min_reso=min_reso, max_reso=max_reso)


@dataclass(frozen=True)
class BucketSettings:
    """What decides the buckets: dataset.toml's resolution, enable_bucket, bucket_no_upscale,
    bucket_reso_steps, min_bucket_reso and max_bucket_reso."""

    resolution: int
    no_upscale: bool
    min_reso: int
    max_reso: int
    reso_steps: int = RESO_STEPS
    enable_bucket: bool = True


def _round_to_steps(value: float, steps: int) -> int:
    rounded = int(value + 0.5)
    return rounded - rounded % steps


def predefined_buckets(settings: BucketSettings) -> list[tuple[int, int]]:
    """The fixed bucket list sd-scripts uses when it may upscale: area <= resolution^2, step-aligned sides."""
    area = settings.resolution * settings.resolution
    steps = settings.reso_steps
    side = int(math.sqrt(area) // steps) * steps
    buckets = {(side, side)}
    width = settings.min_reso
    while width <= settings.max_reso:
        height = min(settings.max_reso, int((area // width) // steps) * steps)
        if height >= settings.min_reso:
            buckets.update({(width, height), (height, width)})
        width += steps
    return sorted(buckets)


def bucket_for(width: int, height: int, settings: BucketSettings) -> tuple[int, int]:
    """The bucket (width, height) sd-scripts puts an image of this size in."""
    if not settings.enable_bucket:
        return settings.resolution, settings.resolution
    aspect = width / height
    steps = settings.reso_steps
    if not settings.no_upscale:
        buckets = predefined_buckets(settings)
        if (width, height) in buckets:
            return width, height
        errors = [abs(w / h - aspect) for w, h in buckets]
        return buckets[errors.index(min(errors))]  # the first of equal errors, as numpy's argmin
    max_area = settings.resolution * settings.resolution
    if width * height > max_area:
        scaled_w = math.sqrt(max_area * aspect)
        scaled_h = max_area / scaled_w
        w_rounded = _round_to_steps(scaled_w, steps)
        h_for_w = _round_to_steps(w_rounded / aspect, steps)
        h_rounded = _round_to_steps(scaled_h, steps)
        w_for_h = _round_to_steps(h_rounded * aspect, steps)
        if abs(w_rounded / h_for_w - aspect) < abs(w_for_h / h_rounded - aspect):
            resized = (w_rounded, int(w_rounded / aspect + 0.5))
        else:
            resized = (int(h_rounded * aspect + 0.5), h_rounded)
    else:
        resized = (width, height)
    return resized[0] - resized[0] % steps, resized[1] - resized[1] % steps


def reg_repeats(n_reg_images: int, train_samples: int, reg_num_repeats: int = 1) -> list[int]:
    """Repeats per regularisation image (path order) after sd-scripts balances them against the train count.

    First pass: images join with their own repeats until the count is reached; later passes add one repeat
    at a time. Images never reached get 0 (unused).
    """
    repeats = [0] * n_reg_images
    if n_reg_images == 0 or reg_num_repeats < 1:
        return repeats
    total, first_pass = 0, True
    while total < train_samples:
        for i in range(n_reg_images):
            if first_pass:
                repeats[i] = reg_num_repeats
                total += reg_num_repeats
            else:
                repeats[i] += 1
                total += 1
            if total >= train_samples:
                break
        first_pass = False
    return repeats


@dataclass(frozen=True)
class StepPlan:
    n_images: int
    num_repeats: int
    train_samples: int
    n_reg_images: int
    reg_images_used: int
    reg_samples: int
    buckets: dict[tuple[int, int], int]
    batch_size: int
    gradient_accumulation_steps: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def samples_per_epoch(self) -> int:
        return self.train_samples + self.reg_samples


def plan_steps(
    train_sizes: Sequence[tuple[int, int]],
    *,
    num_repeats: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    epochs: int,
    reg_sizes: Sequence[tuple[int, int]] = (),
    settings: BucketSettings,
    num_processes: int = 1,
) -> StepPlan:
    """Exact steps per epoch and in total, as sd-scripts v0.10.1 counts them."""
    counts: Counter[tuple[int, int]] = Counter()
    for width, height in train_sizes:
        counts[bucket_for(width, height, settings)] += num_repeats
    train_samples = num_repeats * len(train_sizes)
    per_reg = reg_repeats(len(reg_sizes), train_samples)
    for (width, height), repeats in zip(reg_sizes, per_reg, strict=True):
        if repeats:
            counts[bucket_for(width, height, settings)] += repeats
    batches = sum(math.ceil(count / batch_size) for count in counts.values())
    steps_per_epoch = math.ceil(batches / num_processes / gradient_accumulation_steps)
    return StepPlan(
        n_images=len(train_sizes),
        num_repeats=num_repeats,
        train_samples=train_samples,
        n_reg_images=len(reg_sizes),
        reg_images_used=sum(1 for r in per_reg if r),
        reg_samples=sum(per_reg),
        buckets=dict(sorted(counts.items())),
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        batches_per_epoch=batches,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )
