"""What would bring an estimate under train.max_gpu_hours: fewer epochs, fewer repeats or fewer images.

Each hint is the largest value below the current one whose estimate fits, found by bisection (an
estimate grows with each of these knobs). The caller (likeness.train.estimate) supplies the estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol


class HoursWith(Protocol):
    """Estimated hours with the first ``images`` training images and some settings changed."""

    def __call__(self, images: int, **changes: int) -> float: ...


def largest_fitting(current: int, hours_of: Callable[[int], float], budget_hours: float) -> int | None:
    """The largest value below ``current`` whose estimate fits the budget (None when even 1 does not)."""
    low, high = 1, current - 1  # estimates grow with each of these knobs: search for the boundary
    best = None
    while low <= high:
        middle = (low + high) // 2
        if hours_of(middle) <= budget_hours:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def under_budget_hints(
    cfg: Mapping[str, Any], images: int, hours_with: HoursWith, auto_keys: Sequence[str] = ()
) -> list[str]:
    """One hint per knob that alone can bring the estimate under the budget, with its current value."""
    budget = float(cfg["max_gpu_hours"])
    epochs = int(cfg["max_train_epochs"])
    repeats = int(cfg["num_repeats"])
    hints = []
    fit = largest_fitting(epochs, lambda e: hours_with(images, max_train_epochs=e), budget)
    if fit:
        hints.append(f"train.max_train_epochs {fit} (now {epochs})")
    fit = largest_fitting(repeats, lambda r: hours_with(images, num_repeats=r), budget)
    if fit:
        hints.append(f"train.num_repeats {fit} (now {repeats})")
    fit = largest_fitting(images, lambda n: hours_with(n), budget)
    if fit:
        # with num_repeats "auto" fewer images would get more repeats: the hint holds for fixed repeats
        pinned = f" with train.num_repeats {repeats}" if "num_repeats" in auto_keys else ""
        hints.append(f"at most {fit} training images (now {images}){pinned}")
    return hints
