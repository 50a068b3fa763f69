"""Builders for the caption tests: face images, a selection manifest, a stand-in tagger."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import cv2
import numpy as np


def face_image(seed: int, size: tuple[int, int] = (320, 256)) -> np.ndarray:
    """A BGR picture whose quadrants have distinct colours, so the stand-in's outputs differ."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    for top in (0, height // 2):
        for left in (0, width // 2):
            image[top : top + height // 2 + 1, left : left + width // 2 + 1] = rng.integers(0, 256, 3)
    return image


def write_dataset(root: Path, uids: list[str]) -> tuple[Path, Path]:
    """``results/dataset/images/<uid>.jpg`` and ``results/dataset/manifest.tsv`` for ``uids``."""
    images = root / "results" / "dataset" / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = ["marker_uid\timage\timage_sha256\tscore"]
    for uid in uids:
        path = images / f"{uid}.jpg"
        if not path.exists():
            ok, data = cv2.imencode(".jpg", face_image(zlib.crc32(uid.encode())))
            assert ok
            path.write_bytes(data.tobytes())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{uid}\tresults/crops/{uid}.jpg\t{digest}\t0.9")
    manifest = root / "results" / "dataset" / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest, images
