"""The tagger's raw probabilities, stored per image and model, so that the model runs once per face.

``<caption.cache_dir>/<model_key>/<image_sha256>.npy`` holds one float32 vector. The model key names
the model's two files by content and the preprocessing version, so another model or changed
preprocessing never reads stale vectors; thresholds and tag lists are applied later, to stored vectors.
The cache lives outside results/ and survives ``--delete-all-output``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from likeness.atomic import atomic_write_bytes
from likeness.caption.model import ModelFiles
from likeness.caption.preprocess import PREPROCESS_VERSION
from likeness.hub import remembered_sha256

HASH_MEMO = "file_hashes.json"  # in caption.cache_dir: the model files' hashes (hub.remembered_sha256)


def model_key(files: ModelFiles, memo_path: Path) -> str:
    """Names the model's probabilities in the cache: its two files' contents and the preprocessing."""
    parts = [
        PREPROCESS_VERSION,
        remembered_sha256(files.onnx_path, memo_path),
        remembered_sha256(files.tags_path, memo_path),
    ]
    return "wd14-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class ProbabilityCache:
    """``<root>/<model_key>/<image_sha256>.npy``: one float32 vector per image and model."""

    def __init__(self, root: Path, key: str, n_tags: int) -> None:
        self.folder = root / key
        self.n_tags = n_tags

    def path(self, image_sha256: str) -> Path:
        return self.folder / f"{image_sha256}.npy"

    def get(self, image_sha256: str) -> np.ndarray | None:
        """The stored vector, or None when absent or unusable (then it is computed again)."""
        try:
            vector = np.load(self.path(image_sha256), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if vector.shape != (self.n_tags,) or not np.all(np.isfinite(vector)):
            return None
        return vector.astype(np.float32, copy=False)

    def put(self, image_sha256: str, vector: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self.path(image_sha256), buffer.getvalue())
