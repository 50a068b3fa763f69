"""Inputs for the report tests: crop JPEGs, manifest and excluded tables, sd-scripts-like logs and samples."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from likeness import tables

# The selection stage's own columns: the report reads what selection writes.
MANIFEST_COLUMNS = tables.MANIFEST_COLUMNS
EXCLUDED_COLUMNS = tables.EXCLUDED_COLUMNS

# Solid tile colours (BGR) far from the sheet background and the placeholder grey, one per test face.
COLOURS = [(0, 0, 200), (0, 200, 0), (200, 0, 0), (0, 200, 200), (200, 0, 200), (200, 200, 0), (90, 40, 10)]


def solid_png(path: Path, colour: tuple[int, int, int], side: int = 96, height: int | None = None) -> Path:
    """A lossless single-colour image, so its pixels survive resizing exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height or side, side, 3), colour, dtype=np.uint8))
    return path


def textured_jpeg(path: Path, seed: int, side: int = 300, height: int | None = None) -> Path:
    """A JPEG with structure at every scale (noise blurred at two radii), like a real crop."""
    rng = np.random.default_rng(seed)
    rows = height or side
    coarse = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (side, rows), interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(0, 60, (rows, side, 3), dtype=np.uint8)
    image = cv2.add(coarse, fine)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def write_table(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> Path:
    """A tab-separated table as the selection stage writes it (csv quoting, '\\n' line ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(name, "") for name in columns])
    return path


def tqdm_log(losses: Sequence[float], total: int | None = None, redraws: int = 2) -> str:
    """Text like sd-scripts' log: set-up lines, a caching bar, then the 'steps' bar redrawn with '\\r'.

    Each step is drawn ``redraws`` times; only the last drawing carries ``losses[step - 1]`` (the
    earlier ones carry a decoy that the parser must overwrite).
    """
    total = total or len(losses)
    parts = [
        "2024-01-01 00:00:00 INFO     loading model for process 0/1\n",
        "caching latents...\n",
        "\r  0%|          | 0/14 [00:00<?, ?it/s]\r100%|##########| 14/14 [00:02<00:00,  6.1it/s]\n",
        "epoch 1/2\n",
        f"\rsteps:   0%|          | 0/{total} [00:00<?, ?it/s]",
    ]
    for step, loss in enumerate(losses, start=1):
        percent = step * 100 // total
        bar = "█" * (percent // 10) + " " * (10 - percent // 10)
        for draw in range(redraws):
            value = loss if draw == redraws - 1 else loss + 7.5
            parts.append(
                f"\rsteps: {percent:3d}%|{bar}| {step}/{total} [00:{step:02d}<00:{total - step:02d},  "
                f"1.00s/it, avr_loss={value:.4g}]"
            )
        if step == len(losses) // 2:
            parts.append("\nepoch 2/2\n")
    parts.append("\n")
    return "".join(parts)


def sample_name(number: int, prompt: int, stamp: str, by_epoch: bool = True, output_name: str = "ohwx_lora",
                seed: int | None = None) -> str:  # fmt: skip
    """A sample image name as sd-scripts v0.10.1 writes it (train_util.sample_images)."""
    middle = f"e{number:06d}" if by_epoch else f"{number:06d}"
    prefix = f"{output_name}_" if output_name else ""
    suffix = f"_{seed}" if seed is not None else ""
    return f"{prefix}{middle}_{prompt:02d}_{stamp}{suffix}.png"
